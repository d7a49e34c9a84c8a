//! Reading the small files the agent trusts (the cluster key, TLS keys and certificates):
//! only a regular file (a FIFO or a device such as `/dev/zero` is refused, and opening
//! never blocks), only the file that was opened is checked (the path may change
//! meanwhile), never more than a bound, and a secret only when group and others have no
//! access. Each caller turns a [`ReadError`] into its own error, naming the file.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Replace `path` with `bytes` (mode `mode`) durably: a temporary file in the same
/// directory, fsync, rename, fsync of the directory. A reader sees the old or the new
/// file, never half of one; on failure the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "file".into());
    // Unique per process: servers sharing one directory (tests, a shared mount) must not
    // write the same temporary file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` at creation is masked by the umask: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
