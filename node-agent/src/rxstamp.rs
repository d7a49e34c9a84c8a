//! Heartbeat arrival times from the kernel (`SO_TIMESTAMPNS`).
//!
//! A heartbeat counts as heard when it *arrived*, not when the agent read it: packets
//! that queued in the socket while the agent was stopped (SIGSTOP, a frozen VM, CPU
//! starvation) must not make a resumed server believe it still holds quorum. The kernel
//! stamps each datagram with the wall clock at arrival; the age `wall_now - stamp` is
//! subtracted from the monotonic clock at read time. A wall-clock step between arrival and
//! read distorts only that packet's age; the age is clamped to `[0, 60 s]`.

use crate::clock::Instant;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

const MAX_AGE: Duration = Duration::from_secs(60);

/// Ask the kernel to stamp arriving datagrams. Without it, [`recv`] falls back to the
/// read time (and says so once in the log).
pub fn enable(sock: &UdpSocket) -> bool {
    setsockopt(sock, sockopt::ReceiveTimestampns, &true).is_ok()
}

/// Receive one datagram: (length, sender, arrival instant on the monotonic clock).
pub async fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SocketAddr>, Instant)> {
    loop {
        sock.readable().await?;
        let res = sock.try_io(Interest::READABLE, || {
            let fd = sock.as_raw_fd();
            let mut iov = [IoSliceMut::new(buf)];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let msg =
                recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
                    .map_err(std::io::Error::from)?;
            let read_at = crate::clock::now();
            let mut arrived = read_at;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmTimestampns(ts) = c {
                        let stamp = Duration::new(
                            u64::try_from(ts.tv_sec()).unwrap_or(0),
                            u32::try_from(ts.tv_nsec()).unwrap_or(0),
                        );
                        let wall = crate::clock::wall()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default();
                        let age = wall.saturating_sub(stamp).min(MAX_AGE);
                        arrived = read_at.checked_sub(age).unwrap_or(read_at);
                    }
                }
            }
            let from = msg
                .address
                .and_then(|a| a.as_sockaddr_in().map(|v4| SocketAddr::V4((*v4).into())));
            Ok((msg.bytes, from, arrived))
        });
        match res {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_packets_keep_their_arrival_time() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(enable(&b));
        a.send_to(b"one", b.local_addr().unwrap()).await.unwrap();
        // The "agent" does not read for a while (as if stopped).
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 16];
        let (n, from, arrived) = recv(&b, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one");
        assert_eq!(from, Some(a.local_addr().unwrap()));
        let age = arrived.elapsed();
        assert!(age >= Duration::from_millis(250), "age {age:?}");
    }
}
