//! Reading the small files the agent trusts (the cluster key, TLS keys and certificates):
//! only a regular file (a FIFO or a device such as `/dev/zero` is refused, and opening
//! never blocks), only the file that was opened is checked (the path may change
//! meanwhile), never more than a bound, and a secret only when group and others have no
//! access. Each caller turns a [`ReadError`] into its own error, naming the file.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// Not a regular file.
    NotAFile,
    /// Group or others may access a secret: its mode.
    Permissive(u32),
    /// Larger than the bound.
    TooLarge,
}

/// Read `path` (at most `max` bytes); with `secret`, refuse it when its mode gives group
/// or others any access.
pub fn read_bounded(path: &Path, max: u64, secret: bool) -> Result<Vec<u8>, ReadError> {
    // Checked before opening too: opening a FIFO for reading would block.
    if !std::fs::metadata(path).map_err(ReadError::Io)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(ReadError::Io)?;
    // What was opened is what counts (the path may have changed meanwhile).
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    let mode = meta.permissions().mode();
    if secret && mode & 0o077 != 0 {
        return Err(ReadError::Permissive(mode));
    }
    let mut raw = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(ReadError::Io)?;
    if raw.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    Ok(raw)
}
