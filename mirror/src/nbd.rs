//! An NBD server (the protocol of the Linux kernel's nbd client, qemu and libnbd):
//! the fixed newstyle handshake and the transmission phase with simple replies.
//!
//! Handshake: the server offers `NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES`; a client
//! that does not answer with fixed newstyle is refused. Options: `NBD_OPT_GO` and
//! `NBD_OPT_INFO` (answered with `NBD_INFO_EXPORT` and `NBD_INFO_BLOCK_SIZE`),
//! `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`, `NBD_OPT_ABORT`; every other option gets
//! `NBD_REP_ERR_UNSUP` (structured replies, meta contexts, TLS), so clients fall back to
//! simple replies. Transmission: READ, WRITE (FUA), FLUSH, TRIM, WRITE_ZEROES (FUA), DISC;
//! a request outside the volume gets `EINVAL`, an unknown command `EINVAL`, a write to a
//! read-only export `EPERM`, a full store `ENOSPC`, other store errors `EIO`.
//!
//! Input is bounded: an option's data at most [`MAX_OPTION_LEN`], a request's payload at
//! most [`MAX_REQUEST`]; a client that breaks the protocol (wrong magic, oversize data) is
//! disconnected with a [`NbdError::Protocol`] naming what it sent. Up to
//! [`MAX_IN_FLIGHT`] requests of a connection run at once and are answered as they
//! finish; their buffers are reused from a per-connection pool.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::store::BlockStore;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;
const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
const FLAG_C_NO_ZEROES: u32 = 1 << 1;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

const TFLAG_HAS_FLAGS: u16 = 1 << 0;
const TFLAG_READ_ONLY: u16 = 1 << 1;
const TFLAG_SEND_FLUSH: u16 = 1 << 2;
const TFLAG_SEND_FUA: u16 = 1 << 3;
const TFLAG_SEND_TRIM: u16 = 1 << 5;
const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_FLAG_FUA: u16 = 1 << 0;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;

/// Largest option data accepted during the handshake (names are at most 4,096 bytes).
pub const MAX_OPTION_LEN: u32 = 16 * 1024;
/// Largest READ or WRITE payload (the block size limit announced to clients).
pub const MAX_REQUEST: u32 = 32 * 1024 * 1024;
/// Preferred block size announced to clients.
const PREFERRED_BLOCK: u32 = 4096;

/// One volume offered to clients.
#[derive(Clone)]
pub struct Export {
    pub name: String,
    pub store: Arc<dyn BlockStore>,
    pub read_only: bool,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("name", &self.name)
            .field("size", &self.store.size())
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Export {
    fn transmission_flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_TRIM
            | TFLAG_SEND_WRITE_ZEROES;
        if self.read_only {
            f |= TFLAG_READ_ONLY;
        }
        f
    }
}

/// Why a connection ended other than by the client's DISC or close.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("NBD connection: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol; it was disconnected.
    #[error("NBD client broke the protocol: {0}")]
    Protocol(String),
    /// A store operation panicked or was cancelled.
    #[error("NBD store task failed: {0}")]
    Task(String),
}

impl NbdError {
    /// Stable code for events.
    pub fn code(&self) -> &'static str {
        match self {
            NbdError::Io(_) => "nbd-io",
            NbdError::Protocol(_) => "nbd-protocol",
            NbdError::Task(_) => "nbd-task",
        }
    }
}

/// What one connection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// The export the client chose (`None`: it left during the handshake).
    pub export: Option<String>,
    pub requests: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// Serve one client on `stream`: the handshake, then its requests until it disconnects.
pub async fn serve<S>(mut stream: S, exports: &[Export]) -> Result<Served, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut served = Served::default();
    let Some(export) = handshake(&mut stream, exports).await? else {
        return Ok(served);
    };
    served.export = Some(export.name.clone());
    transmission(&mut stream, &export, &mut served).await?;
    Ok(served)
}

async fn handshake<S>(s: &mut S, exports: &[Export]) -> Result<Option<Export>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_u64(NBDMAGIC).await?;
    s.write_u64(IHAVEOPT).await?;
    s.write_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).await?;
    s.flush().await?;
    let client = s.read_u32().await?;
    if client & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Protocol(format!(
            "client flags {client:#x} without fixed newstyle"
        )));
    }
    if client & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(NbdError::Protocol(format!(
            "unknown client flags {client:#x}"
        )));
    }
    let no_zeroes = client & FLAG_C_NO_ZEROES != 0;
    loop {
        let magic = s.read_u64().await?;
        if magic != IHAVEOPT {
            return Err(NbdError::Protocol(format!("option magic {magic:#x}")));
        }
        let opt = s.read_u32().await?;
        let len = s.read_u32().await?;
        if len > MAX_OPTION_LEN {
            return Err(NbdError::Protocol(format!(
                "option {opt} with {len} bytes of data (at most {MAX_OPTION_LEN})"
            )));
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await?;
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                let Some(e) = find(exports, &name) else {
                    // The only answer this option allows to an unknown name.
                    return Err(NbdError::Protocol(format!("unknown export `{name}`")));
                };
                s.write_u64(e.store.size()).await?;
                s.write_u16(e.transmission_flags()).await?;
                if !no_zeroes {
                    s.write_all(&[0u8; 124]).await?;
                }
                s.flush().await?;
                return Ok(Some(e.clone()));
            }
            OPT_ABORT => {
                reply(s, opt, REP_ACK, &[]).await?;
                s.flush().await?;
                return Ok(None);
            }
            OPT_LIST => {
                if len != 0 {
                    reply_err(s, opt, REP_ERR_INVALID, "NBD_OPT_LIST takes no data").await?;
                    continue;
                }
                for e in exports {
                    let mut d = Vec::with_capacity(4 + e.name.len());
                    d.extend_from_slice(&u32_len(e.name.len()).to_be_bytes());
                    d.extend_from_slice(e.name.as_bytes());
                    reply(s, opt, REP_SERVER, &d).await?;
                }
                reply(s, opt, REP_ACK, &[]).await?;
            }
            OPT_INFO | OPT_GO => {
                let name = match parse_info_request(&data) {
                    Ok(n) => n,
                    Err(msg) => {
                        reply_err(s, opt, REP_ERR_INVALID, &msg).await?;
                        continue;
                    }
                };
                let Some(e) = find(exports, &name) else {
                    reply_err(s, opt, REP_ERR_UNKNOWN, &format!("no export `{name}`")).await?;
                    continue;
                };
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&e.store.size().to_be_bytes());
                info.extend_from_slice(&e.transmission_flags().to_be_bytes());
                reply(s, opt, REP_INFO, &info).await?;
                let mut bs = Vec::with_capacity(14);
                bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                bs.extend_from_slice(&1u32.to_be_bytes());
                bs.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                bs.extend_from_slice(&MAX_REQUEST.to_be_bytes());
                reply(s, opt, REP_INFO, &bs).await?;
                reply(s, opt, REP_ACK, &[]).await?;
                if opt == OPT_GO {
                    s.flush().await?;
                    return Ok(Some(e.clone()));
                }
            }
            _ => {
                reply_err(s, opt, REP_ERR_UNSUP, "option not supported by this server").await?;
            }
        }
        s.flush().await?;
    }
}

/// The export of `name`; the empty name is the first export (the default).
fn find<'a>(exports: &'a [Export], name: &str) -> Option<&'a Export> {
    if name.is_empty() {
        exports.first()
    } else {
        exports.iter().find(|e| e.name == name)
    }
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The export name of an `NBD_OPT_INFO` / `NBD_OPT_GO` request: 32-bit name length, the
/// name, 16-bit count of information requests, and that many 16-bit types (all answered
/// the same way: the export and the block sizes are always sent).
fn parse_info_request(data: &[u8]) -> Result<String, String> {
    let bad = || "malformed NBD_OPT_INFO/GO request".to_string();
    let name_len = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(bad)? as usize;
    let name = data.get(4..4 + name_len).ok_or_else(bad)?;
    let rest = &data[4 + name_len..];
    let n = rest
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or_else(bad)? as usize;
    if rest.len() != 2 + 2 * n {
        return Err(bad());
    }
    String::from_utf8(name.to_vec()).map_err(|_| "export name is not UTF-8".to_string())
}

async fn reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    opt: u32,
    kind: u32,
    data: &[u8],
) -> Result<(), NbdError> {
    s.write_u64(OPT_REPLY_MAGIC).await?;
    s.write_u32(opt).await?;
    s.write_u32(kind).await?;
    s.write_u32(u32_len(data.len())).await?;
    s.write_all(data).await?;
    Ok(())
}

async fn reply_err<S: AsyncWrite + Unpin>(
    s: &mut S,
    opt: u32,
    kind: u32,
    msg: &str,
) -> Result<(), NbdError> {
    reply(s, opt, kind, msg.as_bytes()).await
}

/// One request of the transmission phase.
struct Request {
    flags: u16,
    kind: u16,
    handle: u64,
    offset: u64,
    len: u32,
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<Request>, NbdError> {
    let mut h = [0u8; 28];
    match s.read_exact(&mut h).await {
        Ok(_) => {}
        // The client closed the connection between requests.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    let magic = u32_at(0);
    if magic != REQUEST_MAGIC {
        return Err(NbdError::Protocol(format!("request magic {magic:#x}")));
    }
    Ok(Some(Request {
        flags: u16_at(4),
        kind: u16_at(6),
        handle: u64_at(8),
        offset: u64_at(16),
        len: u32_at(24),
    }))
}

async fn simple_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    error: u32,
    handle: u64,
    data: Option<&[u8]>,
) -> Result<(), NbdError> {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&error.to_be_bytes());
    h[8..].copy_from_slice(&handle.to_be_bytes());
    s.write_all(&h).await?;
    if let Some(d) = data {
        s.write_all(d).await?;
    }
    s.flush().await?;
    Ok(())
}

fn errno(e: &std::io::Error) -> u32 {
    if e.kind() == std::io::ErrorKind::StorageFull {
        ENOSPC
    } else {
        EIO
    }
}

/// Requests of one connection served at the same time (the NBD client chooses its queue
/// depth; more wait in the socket).
pub const MAX_IN_FLIGHT: usize = 32;
/// Payload bytes of one connection's requests in flight at most (a request larger than
/// this runs alone).
const MAX_IN_FLIGHT_BYTES: u32 = 64 * 1024 * 1024;
/// Buffers larger than this are not kept for reuse.
const POOL_KEEP: usize = 1 << 20;

/// A finished request on its way to the reply writer.
struct Done {
    handle: u64,
    error: u32,
    kind: u16,
    len: u32,
    /// The connection's buffer (the read data when `error == 0` and `kind` is READ).
    buf: Vec<u8>,
    /// Released once the reply is written: the reader may take the next request.
    _slot: tokio::sync::OwnedSemaphorePermit,
    _bytes: tokio::sync::OwnedSemaphorePermit,
}

/// Buffers reused across requests, so that the hot path does not allocate.
#[derive(Default)]
struct Pool(std::sync::Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, mut b: Vec<u8>) {
        if b.capacity() <= POOL_KEEP {
            b.clear();
            let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() < MAX_IN_FLIGHT {
                v.push(b);
            }
        }
    }
}

/// Serve one request on the store (blocking: run on the blocking pool): the error code.
fn execute(export: &Export, r: &Request, buf: &mut Vec<u8>) -> u32 {
    let size = export.store.size();
    let fua = r.flags & CMD_FLAG_FUA != 0;
    let in_bounds = r
        .offset
        .checked_add(u64::from(r.len))
        .is_some_and(|end| end <= size);
    let st = export.store.as_ref();
    let res = match r.kind {
        CMD_READ => {
            if r.len > MAX_REQUEST || !in_bounds {
                return EINVAL;
            }
            buf.resize(r.len as usize, 0);
            st.read_at(buf, r.offset)
        }
        CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES if export.read_only => return EPERM,
        CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES if !in_bounds => return EINVAL,
        CMD_WRITE => st.write_at(buf, r.offset, fua),
        CMD_FLUSH => st.flush(),
        CMD_TRIM => {
            st.trim(r.offset, u64::from(r.len))
                .and_then(|()| if fua { st.flush() } else { Ok(()) })
        }
        CMD_WRITE_ZEROES => st.write_zeroes(r.offset, u64::from(r.len), fua),
        _ => return EINVAL,
    };
    res.err().map_or(0, |e| errno(&e))
}

/// The transmission phase, pipelined: a reader takes requests (and write payloads) off
/// the socket while up to [`MAX_IN_FLIGHT`] of them run on the store, and this task
/// writes the replies in the order they finish (NBD replies carry the request's handle),
/// flushing the socket once no other reply is ready. Replies of requests that overlap
/// are in the order of completion; NBD leaves the result of overlapping requests in
/// flight at the same time to the client, and the mirror's write path orders
/// overlapping writes itself. A FLUSH covers every write answered before it arrived.
/// DISC, the end of the stream or a protocol breach stops the reader; the requests
/// already taken are finished and answered first.
async fn transmission<S>(s: S, export: &Export, served: &mut Served) -> Result<(), NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let pool = Arc::new(Pool::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let bytes = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_BYTES as usize));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Done, NbdError>>(MAX_IN_FLIGHT);
    let reader = {
        let (pool, export) = (pool.clone(), export.clone());
        async move {
            // Owned here, so it is dropped when the reader stops: the writer ends once the
            // requests in flight (each holding a clone) are answered too.
            let tx = tx;
            let mut requests = 0u64;
            while let Some(r) = read_request(&mut rd).await? {
                requests += 1;
                if r.kind == CMD_DISC {
                    break;
                }
                if r.kind == CMD_WRITE && r.len > MAX_REQUEST {
                    return Err(NbdError::Protocol(format!(
                        "write of {} bytes (at most {MAX_REQUEST})",
                        r.len
                    )));
                }
                let weight = r.len.clamp(1, MAX_IN_FLIGHT_BYTES);
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let Ok(weight) = bytes.clone().acquire_many_owned(weight).await else {
                    break;
                };
                let mut buf = pool.take();
                if r.kind == CMD_WRITE {
                    buf.resize(r.len as usize, 0);
                    rd.read_exact(&mut buf).await?;
                }
                let (export, tx) = (export.clone(), tx.clone());
                let job = tokio::task::spawn_blocking(move || {
                    let error = execute(&export, &r, &mut buf);
                    (r, error, buf)
                });
                tokio::spawn(async move {
                    let done = job
                        .await
                        .map(|(r, error, buf)| Done {
                            handle: r.handle,
                            error,
                            kind: r.kind,
                            len: r.len,
                            buf,
                            _slot: slot,
                            _bytes: weight,
                        })
                        .map_err(|e| NbdError::Task(e.to_string()));
                    let _ = tx.send(done).await;
                });
            }
            Ok::<u64, NbdError>(requests)
        }
    };
    let writer = async {
        let mut result = Ok(());
        let mut stats = Served::default();
        while let Some(done) = rx.recv().await {
            let d = match done {
                Ok(d) => d,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if d.error != 0 {
                stats.errors += 1;
            } else if d.kind == CMD_READ {
                stats.bytes_read += u64::from(d.len);
            } else if d.kind == CMD_WRITE {
                stats.bytes_written += u64::from(d.len);
            }
            let data = (d.error == 0 && d.kind == CMD_READ).then_some(&d.buf[..]);
            if let Err(e) = simple_reply(&mut wr, d.error, d.handle, data).await {
                result = Err(e);
                break;
            }
            pool.give(d.buf);
            if rx.is_empty() {
                if let Err(e) = wr.flush().await {
                    result = Err(e.into());
                    break;
                }
            }
        }
        (result, stats)
    };
    let (read, (written, stats)) = tokio::join!(reader, writer);
    served.requests += read.as_ref().copied().unwrap_or(0);
    served.errors += stats.errors;
    served.bytes_read += stats.bytes_read;
    served.bytes_written += stats.bytes_written;
    written?;
    read.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_requests_parse_strictly() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(parse_info_request(&d).unwrap(), "vol");
        assert!(parse_info_request(&d[..d.len() - 1]).is_err());
        let mut long = d.clone();
        long.push(0);
        assert!(parse_info_request(&long).is_err());
        assert!(parse_info_request(&[0, 0, 0, 9, b'x']).is_err());
        assert!(parse_info_request(&[]).is_err());
        let mut empty = Vec::new();
        empty.extend_from_slice(&0u32.to_be_bytes());
        empty.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse_info_request(&empty).unwrap(), "");
    }

    /// A store whose read at offset 0 waits until a write has happened: served one
    /// request at a time, the read would wait forever.
    struct Gate {
        written: std::sync::Mutex<bool>,
        cv: std::sync::Condvar,
    }

    impl BlockStore for Gate {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
            let g = self.written.lock().unwrap();
            let (g, t) = self
                .cv
                .wait_timeout_while(g, std::time::Duration::from_secs(20), |w| !*w)
                .unwrap();
            assert!(*g && !t.timed_out(), "the write never ran beside the read");
            buf.fill(7);
            Ok(())
        }
        fn write_at(&self, _d: &[u8], _o: u64, _f: bool) -> std::io::Result<()> {
            *self.written.lock().unwrap() = true;
            self.cv.notify_all();
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&self, _o: u64, _l: u64, _f: bool) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn request(kind: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r
    }

    async fn reply(c: &mut tokio::io::DuplexStream) -> u64 {
        let mut h = [0u8; 16];
        tokio::time::timeout(std::time::Duration::from_secs(30), c.read_exact(&mut h))
            .await
            .expect("a reply within 30 s (requests served one at a time?)")
            .unwrap();
        assert_eq!(&h[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&h[4..8], &[0; 4], "error code");
        u64::from_be_bytes(h[8..].try_into().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_run_concurrently_and_replies_carry_their_handles() {
        let store = Arc::new(Gate {
            written: std::sync::Mutex::new(false),
            cv: std::sync::Condvar::new(),
        });
        let exports = vec![Export {
            name: "v".into(),
            store,
            read_only: false,
        }];
        let (mut c, srv) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { serve(srv, &exports).await });
        let mut hello = [0u8; 18];
        c.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello[..8], b"NBDMAGIC");
        c.write_u32(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .await
            .unwrap();
        c.write_u64(IHAVEOPT).await.unwrap();
        c.write_u32(OPT_EXPORT_NAME).await.unwrap();
        c.write_u32(1).await.unwrap();
        c.write_all(b"v").await.unwrap();
        assert_eq!(c.read_u64().await.unwrap(), 1 << 20);
        c.read_u16().await.unwrap();
        // The read (handle 1) waits for the write (handle 2) sent after it.
        c.write_all(&request(CMD_READ, 1, 0, 4)).await.unwrap();
        let mut w = request(CMD_WRITE, 2, 4096, 4);
        w.extend_from_slice(&[1, 2, 3, 4]);
        c.write_all(&w).await.unwrap();
        // Both are answered (a server taking one request at a time never answers the
        // read); in the order they finish, which either may win once the write ran.
        let mut seen = Vec::new();
        for _ in 0..2 {
            let h = reply(&mut c).await;
            if h == 1 {
                let mut data = [0u8; 4];
                c.read_exact(&mut data).await.unwrap();
                assert_eq!(data, [7; 4]);
            }
            seen.push(h);
        }
        seen.sort_unstable();
        assert_eq!(seen, [1, 2]);
        c.write_all(&request(CMD_DISC, 3, 0, 0)).await.unwrap();
        let served = server.await.unwrap().unwrap();
        assert_eq!(served.requests, 3);
        assert_eq!(
            (served.bytes_read, served.bytes_written, served.errors),
            (4, 4, 0)
        );
    }

    #[test]
    fn magics_are_the_protocols() {
        assert_eq!(&NBDMAGIC.to_be_bytes(), b"NBDMAGIC");
        assert_eq!(&IHAVEOPT.to_be_bytes(), b"IHAVEOPT");
        assert_eq!(OPT_REPLY_MAGIC, 0x3e889045565a9);
    }
}
