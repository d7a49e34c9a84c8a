//! The agent's recent log lines, kept in memory for `GET /v1/logs` (and so for
//! `baton support-bundle`, which collects every server's log through the API). Every
//! line the agent logs still goes to stderr (the journal under systemd); the last
//! [`KEPT`] lines are also kept here, each cut at [`MAX_LINE`] bytes.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Lines kept.
pub const KEPT: usize = 2000;
/// Longest line kept, in bytes (longer ones are cut and marked).
pub const MAX_LINE: usize = 4096;

fn ring() -> &'static Mutex<VecDeque<String>> {
    static RING: OnceLock<Mutex<VecDeque<String>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)))
}

/// Keep `text` (one or more lines).
pub fn keep(text: &str) {
    let mut r = ring().lock().unwrap_or_else(|p| p.into_inner());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let line = if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{} […]", &line[..cut])
        } else {
            line.to_string()
        };
        if r.len() == KEPT {
            r.pop_front();
        }
        r.push_back(line);
    }
}

/// The last `n` lines kept, oldest first.
pub fn tail(n: usize) -> Vec<String> {
    let r = ring().lock().unwrap_or_else(|p| p.into_inner());
    r.iter().skip(r.len().saturating_sub(n)).cloned().collect()
}

/// A `tracing_subscriber` writer: each event goes to stderr and into the ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee;

/// One event's bytes, written out when the event is complete.
pub struct TeeWriter(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = TeeWriter;

    fn make_writer(&'a self) -> TeeWriter {
        TeeWriter(Vec::with_capacity(256))
    }
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = std::io::stderr().write_all(&self.0);
        // Colour codes (on a terminal) are not kept.
        let text = String::from_utf8_lossy(&self.0);
        if text.contains('\x1b') {
            keep(&strip_ansi(&text));
        } else {
            keep(&text);
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_cut_and_without_colours() {
        for i in 0..KEPT + 5 {
            keep(&format!("line {i}\n"));
        }
        let t = tail(3);
        assert_eq!(
            t,
            vec![
                format!("line {}", KEPT + 2),
                format!("line {}", KEPT + 3),
                format!("line {}", KEPT + 4)
            ]
        );
        assert_eq!(tail(KEPT * 2).len(), KEPT);
        keep(&"é".repeat(MAX_LINE));
        assert!(tail(1)[0].len() <= MAX_LINE + 8 && tail(1)[0].ends_with("[…]"));
        assert_eq!(strip_ansi("\x1b[32m INFO\x1b[0m x"), " INFO x");
    }
}
