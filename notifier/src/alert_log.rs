//! The local alert log: every event this server raised, one JSON object per line.
//!
//! Layout in the log directory: `alerts.jsonl` is written; when the next line would take
//! it past `max_bytes` it is renamed to `alerts.jsonl.1` (the older ones shift to `.2`,
//! `.3`, …) and a new `alerts.jsonl` is started. `keep` counts every file, the one being
//! written included, so at most `keep * max_bytes` (plus one line) is used.
//!
//! `seq` is assigned here and is monotonic across restarts and rotations: [`AlertLog::open`]
//! recovers the last one from the newest file that holds a readable line. A line torn by a
//! crash is skipped by every reader and terminated before the next append, so it can
//! never swallow the line after it.
//!
//! Everything is synchronous `std::fs`: call it from a blocking-safe place.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use baton_core::Event;
use thiserror::Error;

/// Name of the file being written; rotated files append `.1`, `.2`, … (`.1` is newest).
pub const FILE_NAME: &str = "alerts.jsonl";
/// Default size at which `alerts.jsonl` is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Default number of files kept, the one being written included.
pub const DEFAULT_KEEP: usize = 4;
/// Largest `seq` a readable line may carry (2^53: a thousand events a second for
/// 285,000 years). A line above it was not written by this log: it is skipped like a
/// torn one, so it can neither be read nor make the next `seq` overflow.
pub const MAX_SEQ: u64 = 1 << 53;

/// An alert log operation failed. `code()` is stable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AlertLogError {
    /// `max_bytes` or `keep` is zero.
    #[error("invalid alert log setting: {0}")]
    Invalid(String),
    /// A file system operation failed.
    #[error("alert log: could not {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The event could not be encoded as JSON.
    #[error("alert log: could not encode event {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

impl AlertLogError {
    /// Stable short code for events, the API and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AlertLogError::Invalid(_) => "alert-log-invalid",
            AlertLogError::Io { .. } => "alert-log-io",
            AlertLogError::Encode { .. } => "alert-log-encode",
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AlertLogError + 'a {
    move |source| AlertLogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the alert log without the writer: the API serves `baton alerts` from a reader so
/// that a long read never holds up the agent, which appends under its own lock. A read
/// that races a rotation may miss or repeat a few events (callers track `seq`).
#[derive(Debug, Clone)]
pub struct AlertReader {
    dir: PathBuf,
}

impl AlertReader {
    /// A reader of the log in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> AlertReader {
        AlertReader {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// Up to `limit` events with `seq > after_seq`, oldest first, across rotated files.
    pub fn read_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, AlertLogError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let files = self.files_oldest_first()?;
        // Files hold ascending seqs, so every file before the newest one that starts at or
        // before `after_seq + 1` holds only seqs <= after_seq: skip them unread.
        let mut start = 0;
        for (i, p) in files.iter().enumerate().rev() {
            if let Some(first) = first_seq_in(p)? {
                if first <= after_seq.saturating_add(1) {
                    start = i;
                    break;
                }
            }
        }
        for p in &files[start..] {
            let mut done = false;
            for_each_event(p, |ev| {
                if ev.seq > after_seq {
                    out.push(ev);
                }
                done = out.len() >= limit;
                !done
            })?;
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The last `n` events, oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<Event>, AlertLogError> {
        let mut out: VecDeque<Event> = VecDeque::with_capacity(n.min(4096));
        if n == 0 {
            return Ok(Vec::new());
        }
        for p in self.files_oldest_first()?.iter().rev() {
            let mut evs = Vec::new();
            for_each_event(p, |ev| {
                evs.push(ev);
                true
            })?;
            for ev in evs.into_iter().rev() {
                if out.len() >= n {
                    break;
                }
                out.push_front(ev);
            }
            if out.len() >= n {
                break;
            }
        }
        Ok(out.into())
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn rotated_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{FILE_NAME}.{n}"))
    }

    /// Indices of the rotated files present, ascending (`.1` first).
    fn rotated_indices(&self) -> Result<Vec<usize>, AlertLogError> {
        let prefix = format!("{FILE_NAME}.");
        let mut idx = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for entry in rd {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<usize>().ok())
            {
                if n > 0 {
                    idx.push(n);
                }
            }
        }
        idx.sort_unstable();
        Ok(idx)
    }

    /// Every log file, oldest first (`.N`, …, `.1`, `alerts.jsonl`).
    fn files_oldest_first(&self) -> Result<Vec<PathBuf>, AlertLogError> {
        let mut files: Vec<PathBuf> = self
            .rotated_indices()?
            .into_iter()
            .rev()
            .map(|n| self.rotated_path(n))
            .collect();
        files.push(self.current_path());
        Ok(files)
    }
}

/// The alert log of one server. Not shared between processes: the agent owns it.
#[derive(Debug)]
pub struct AlertLog {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// `alerts.jsonl`, opened for appending.
    file: File,
    /// Current length of `alerts.jsonl` as far as we know.
    size: u64,
    last_seq: u64,
    /// A write failed part-way: the file may end in a torn line that must be terminated
    /// (and its length re-read) before the next append.
    dirty: bool,
}

impl AlertLog {
    /// A reader of this log that does not hold the writer.
    pub fn reader(&self) -> AlertReader {
        AlertReader::new(&self.dir)
    }

    /// Up to `limit` events with `seq > after_seq`, oldest first, across rotated files.
    pub fn read_since(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, AlertLogError> {
        self.reader().read_since(after_seq, limit)
    }

    /// The last `n` events, oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<Event>, AlertLogError> {
        self.reader().tail(n)
    }

    fn current_path(&self) -> PathBuf {
        self.reader().current_path()
    }

    fn rotated_path(&self, n: usize) -> PathBuf {
        self.reader().rotated_path(n)
    }

    fn rotated_indices(&self) -> Result<Vec<usize>, AlertLogError> {
        self.reader().rotated_indices()
    }

    fn files_oldest_first(&self) -> Result<Vec<PathBuf>, AlertLogError> {
        self.reader().files_oldest_first()
    }

    /// Open (creating the directory and file if needed) the alert log in `dir`.
    ///
    /// Recovers the last `seq` from the existing files; lines that do not parse (a torn
    /// last line after a crash) are skipped.
    pub fn open(
        dir: impl AsRef<Path>,
        max_bytes: u64,
        keep: usize,
    ) -> Result<AlertLog, AlertLogError> {
        if max_bytes == 0 {
            return Err(AlertLogError::Invalid("max_bytes must be above 0".into()));
        }
        if keep == 0 {
            return Err(AlertLogError::Invalid("keep must be at least 1".into()));
        }
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let path = dir.join(FILE_NAME);
        let file = open_current(&path)?;
        let mut log = AlertLog {
            dir,
            max_bytes,
            keep,
            file,
            size: 0,
            last_seq: 0,
            dirty: true,
        };
        log.repair_tail()?;
        for p in log.files_oldest_first()?.iter().rev() {
            if let Some(seq) = max_seq_in(p)? {
                log.last_seq = seq;
                break;
            }
        }
        Ok(log)
    }

    /// Open with the default size and file count.
    pub fn open_default(dir: impl AsRef<Path>) -> Result<AlertLog, AlertLogError> {
        AlertLog::open(dir, DEFAULT_MAX_BYTES, DEFAULT_KEEP)
    }

    /// The directory holding the log files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `seq` of the last event appended (0 when the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Stamp `ev` with the next `seq`, append it as one line and return it.
    ///
    /// The line is handed to the kernel before this returns (visible to readers), but not
    /// fsynced; call [`AlertLog::sync`] where durability matters. A failed write still
    /// consumes the `seq`, so a seq is never used twice (a gap is harmless).
    pub fn append(&mut self, mut ev: Event) -> Result<Event, AlertLogError> {
        if self.dirty {
            self.repair_tail()?;
        }
        // `last_seq` is at most MAX_SEQ plus the appends of this process.
        ev.seq = self.last_seq.saturating_add(1);
        let mut line = serde_json::to_vec(&ev).map_err(|source| AlertLogError::Encode {
            id: ev.id.clone(),
            source,
        })?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.last_seq = ev.seq;
        if let Err(e) = self.file.write_all(&line) {
            self.dirty = true;
            return Err(io_err("append to", &self.current_path())(e));
        }
        self.size += len;
        Ok(ev)
    }

    /// fsync the file being written.
    pub fn sync(&self) -> Result<(), AlertLogError> {
        self.file
            .sync_data()
            .map_err(io_err("sync", &self.current_path()))
    }

    /// Shift `.n` to `.n+1` (dropping what would exceed `keep` files), move the current
    /// file to `.1` and start an empty one.
    fn rotate(&mut self) -> Result<(), AlertLogError> {
        for n in self.rotated_indices()?.into_iter().rev() {
            let from = self.rotated_path(n);
            if n + 1 >= self.keep {
                fs::remove_file(&from).map_err(io_err("remove", &from))?;
            } else {
                let to = self.rotated_path(n + 1);
                fs::rename(&from, &to).map_err(io_err("rename", &from))?;
            }
        }
        let current = self.current_path();
        let moved = if self.keep > 1 {
            fs::rename(&current, self.rotated_path(1))
        } else {
            fs::remove_file(&current)
        };
        match moved {
            Ok(()) => {}
            // Already moved by an earlier rotation that failed to create the new file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("rotate", &current)(e)),
        }
        self.file = open_current(&current)?;
        self.size = 0;
        self.dirty = true;
        self.repair_tail()
    }

    /// Re-read the length of the current file and terminate a torn last line.
    fn repair_tail(&mut self) -> Result<(), AlertLogError> {
        let path = self.current_path();
        let len = self.file.metadata().map_err(io_err("stat", &path))?.len();
        self.size = len;
        if len > 0 {
            let mut last = [0u8; 1];
            self.file
                .seek(SeekFrom::Start(len - 1))
                .map_err(io_err("seek in", &path))?;
            self.file
                .read_exact(&mut last)
                .map_err(io_err("read", &path))?;
            if last[0] != b'\n' {
                // The file is in append mode: this lands at the end whatever the position.
                self.file
                    .write_all(b"\n")
                    .map_err(io_err("append to", &path))?;
                self.size += 1;
            }
        }
        self.dirty = false;
        Ok(())
    }
}

fn open_current(path: &Path) -> Result<File, AlertLogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Call `f` on every event of the file that parses, in file order, until it returns false.
/// A missing file is empty.
fn for_each_event(path: &Path, mut f: impl FnMut(Event) -> bool) -> Result<(), AlertLogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::with_capacity(512);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read", path))?;
        if n == 0 {
            return Ok(());
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        // A torn or otherwise damaged line is skipped, not fatal.
        if let Ok(ev) = serde_json::from_slice::<Event>(line) {
            if ev.seq > MAX_SEQ {
                continue;
            }
            if !f(ev) {
                return Ok(());
            }
        }
    }
}

fn first_seq_in(path: &Path) -> Result<Option<u64>, AlertLogError> {
    let mut first = None;
    for_each_event(path, |ev| {
        first = Some(ev.seq);
        false
    })?;
    Ok(first)
}

fn max_seq_in(path: &Path) -> Result<Option<u64>, AlertLogError> {
    let mut max = None;
    for_each_event(path, |ev| {
        max = Some(max.map_or(ev.seq, |m: u64| m.max(ev.seq)));
        true
    })?;
    Ok(max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use baton_core::events::{GROUP_ACTIVATED, SERVER_DOWN};

    fn ev(i: u32) -> Event {
        Event::new(&GROUP_ACTIVATED, format!("group g{i} activated on node-1")).group("g")
    }

    fn seqs(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(|e| e.seq).collect()
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn append_assigns_seq_and_reopen_continues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = AlertLog::open_default(dir.path()).unwrap();
            assert_eq!(log.last_seq(), 0);
            for i in 1..=3 {
                let e = log.append(ev(i)).unwrap();
                assert_eq!(e.seq, u64::from(i));
            }
            log.sync().unwrap();
        }
        let mut log = AlertLog::open_default(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 3);
        let e = log.append(Event::new(&SERVER_DOWN, "node-2 down")).unwrap();
        assert_eq!(e.seq, 4);
        let all = log.read_since(0, 100).unwrap();
        assert_eq!(seqs(&all), vec![1, 2, 3, 4]);
        assert_eq!(all[3].id, "BTN-1102");
        assert_eq!(all[0].group.as_deref(), Some("g"));
        assert_eq!(seqs(&log.read_since(2, 100).unwrap()), vec![3, 4]);
        assert_eq!(seqs(&log.read_since(0, 2).unwrap()), vec![1, 2]);
        assert!(log.read_since(4, 10).unwrap().is_empty());
        assert_eq!(seqs(&log.tail(2).unwrap()), vec![3, 4]);
        assert_eq!(seqs(&log.tail(10).unwrap()), vec![1, 2, 3, 4]);
    }

    #[test]
    fn rotation_keeps_files_and_reads_span_them() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = serde_json::to_vec(&ev(1)).unwrap().len() as u64 + 1 + 4; // seq digits
                                                                                 // About three lines per file.
        let max = line_len * 3;
        let mut log = AlertLog::open(dir.path(), max, 3).unwrap();
        for i in 1..=40 {
            log.append(ev(i)).unwrap();
        }
        assert_eq!(
            file_names(dir.path()),
            vec!["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"]
        );
        for name in file_names(dir.path()) {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= max, "{len} > {max}");
        }
        let all = log.read_since(0, 1000).unwrap();
        assert!(all.len() >= 5 && all.len() < 40, "{}", all.len());
        // Contiguous, ascending, ending at the last seq, across the three files.
        let s = seqs(&all);
        assert_eq!(*s.last().unwrap(), 40);
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
        let first = s[0];
        // Starting in the oldest file, spanning into the current one.
        assert_eq!(
            seqs(&log.read_since(first, 1000).unwrap()),
            (first + 1..=40).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&log.read_since(38, 1000).unwrap()), vec![39, 40]);
        assert_eq!(
            seqs(&log.read_since(first, 3).unwrap()),
            vec![first + 1, first + 2, first + 3]
        );
        assert_eq!(seqs(&log.tail(5).unwrap()), vec![36, 37, 38, 39, 40]);
        drop(log);
        let mut log = AlertLog::open(dir.path(), max, 3).unwrap();
        assert_eq!(log.append(ev(41)).unwrap().seq, 41);
    }

    #[test]
    fn seq_survives_a_rotation_that_left_the_current_file_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = AlertLog::open_default(dir.path()).unwrap();
            for i in 1..=5 {
                log.append(ev(i)).unwrap();
            }
        }
        // As if the agent died right after renaming the current file.
        fs::rename(
            dir.path().join(FILE_NAME),
            dir.path().join(format!("{FILE_NAME}.1")),
        )
        .unwrap();
        let mut log = AlertLog::open_default(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 5);
        assert_eq!(log.append(ev(6)).unwrap().seq, 6);
        assert_eq!(seqs(&log.read_since(3, 10).unwrap()), vec![4, 5, 6]);
    }

    #[test]
    fn keep_one_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AlertLog::open(dir.path(), 200, 1).unwrap();
        for i in 1..=10 {
            log.append(ev(i)).unwrap();
        }
        assert_eq!(file_names(dir.path()), vec!["alerts.jsonl"]);
        assert_eq!(seqs(&log.tail(1).unwrap()), vec![10]);
    }

    #[test]
    fn torn_last_line_is_skipped_and_terminated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = AlertLog::open_default(dir.path()).unwrap();
            for i in 1..=3 {
                log.append(ev(i)).unwrap();
            }
        }
        // A crash in the middle of writing seq 4.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"BTN-2102","severity":"info","mod"#)
            .unwrap();
        drop(f);

        let mut log = AlertLog::open_default(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 3);
        assert_eq!(log.append(ev(4)).unwrap().seq, 4);
        assert_eq!(log.append(ev(5)).unwrap().seq, 5);
        let all = log.read_since(0, 100).unwrap();
        assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
        // The torn fragment stays on its own line.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 6);
        drop(log);
        assert_eq!(AlertLog::open_default(dir.path()).unwrap().last_seq(), 5);
    }

    #[test]
    fn garbage_lines_are_tolerated_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(
            &path,
            b"not json\n\n{\"id\":\"BTN-1001\",\"severity\":\"info\",\"module\":\"agent\",\"message\":\"up\",\"seq\":7}\n\xff\xfe\n",
        )
        .unwrap();
        let mut log = AlertLog::open_default(dir.path()).unwrap();
        assert_eq!(log.last_seq(), 7);
        assert_eq!(log.append(ev(1)).unwrap().seq, 8);
        assert_eq!(seqs(&log.read_since(0, 10).unwrap()), vec![7, 8]);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let e = AlertLog::open(dir.path(), 0, 4).unwrap_err();
        assert_eq!(e.code(), "alert-log-invalid");
        let e = AlertLog::open(dir.path(), 10, 0).unwrap_err();
        assert_eq!(e.code(), "alert-log-invalid");
    }
}
