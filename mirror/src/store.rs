//! Where the volume's bytes live: a file or a block device, read and written at offsets.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A volume's backing store. Every call is bounded by the caller to `0..size()`.
pub trait BlockStore: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write `data` at `offset`; with `fua`, durable before returning.
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Write zeroes over `len` bytes at `offset` (`fua`: durable before returning).
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()>;
    /// The range's contents are no longer needed (a hint; reads may return anything
    /// until it is written again; this store writes zeroes so reads stay defined).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, false)
    }
}

/// A regular file (or a block device) of a fixed size.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    size: u64,
}

/// Zeroes written per call by [`FileStore::write_zeroes`].
const ZERO_CHUNK: usize = 1 << 20;

impl FileStore {
    /// Open `path` for reading and writing; its size is the volume's size (a file that
    /// does not exist is an error: creating and sizing the store is the resource's job).
    pub fn open(path: &Path) -> io::Result<FileStore> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(FileStore { file, size })
    }

    /// Open a file or a block device (whose size is found by seeking to its end); with
    /// `size`, the store must be at least that big and only its first `size` bytes are
    /// used.
    pub fn open_sized(path: &Path, size: Option<u64>) -> io::Result<FileStore> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let have = file.seek(SeekFrom::End(0))?;
        let size = match size {
            Some(s) if s > have => {
                return Err(io::Error::other(format!(
                    "it has {have} bytes, the volume needs {s}"
                )))
            }
            Some(s) => s,
            None => have,
        };
        Ok(FileStore { file, size })
    }
}

impl BlockStore for FileStore {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK))];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64);
            // `n` is at most ZERO_CHUNK, so it fits in usize.
            let n_usize = usize::try_from(n).unwrap_or(ZERO_CHUNK);
            self.file.write_all_at(&zeroes[..n_usize], offset + done)?;
            done += n;
        }
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }
}
