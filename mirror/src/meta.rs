//! The persistent metadata of one mirror-disk volume on one server: a superblock with the
//! data generation ids, the disk state and the fencing epoch, and the persistent dirty
//! bitmap used for differential resync (what DRBD keeps in its metadata and activity log).
//!
//! Everything here is blocking std I/O (`read_at`/`write_at`, `sync_data`); async callers
//! use `spawn_blocking`.
//!
//! # File layout
//!
//! ```text
//! 0     superblock slot 0 (4 KiB)
//! 4096  superblock slot 1 (4 KiB)
//! 8192  bitmap, 4 KiB pages: bit i = region i, little-endian bit order
//!       (byte i/8, bit i%8), the same bytes as Bitmap::to_bytes, zero-padded to a page
//! ```
//!
//! A slot holds the magic `BATONMD1`, the format version (u32), the length of the
//! serialized [`Super`] (u32), a sequence number (u64), the [`Super`] in a fixed
//! little-endian binary form ([`SUPER_LEN`] bytes), zeroes, and a SHA-256 of the slot's
//! first 4064 bytes in its last 32 bytes. [`Meta::update`] writes the slot that does not
//! hold the current superblock with the sequence number plus one and syncs: a torn write
//! breaks only that slot's checksum, and [`Meta::open`] falls back to the other one (the
//! newest valid slot wins).
//!
//! # The bitmap on disk
//!
//! The bitmap pages carry no checksum (a checksum would turn a torn page into a lost
//! page): a 4 KiB page write is taken as atomic enough, and a torn page is harmless
//! either way. A page is always written whole from memory. The bits it sets (0 to 1)
//! belong to [`Bitmap::mark`] callers that have not returned yet, so their writes to the
//! volume have not started: a torn page loses only dirt for data never written. The
//! bits it clears (1 to 0, on the clear path [`Bitmap::persist`] or riding along with a
//! mark of the same page) are regions the peer confirmed: a torn page leaves them set,
//! which costs an extra region resynced, never lost dirt.
//!
//! In memory the bitmap is two bitsets of the same size: what the server knows (`mem`)
//! and what is durable on disk (`disk`, the last contents written and synced). A mark
//! whose bits are already set in `disk` costs no I/O; otherwise the changed pages are
//! written from `mem` and synced, with concurrent callers batched into one write and one
//! sync (group commit). After a bitmap write or sync fails, every later durable
//! operation of this [`Bitmap`] is refused ([`MetaError::Failed`]): after a failed
//! `fsync` nothing the page cache says can be trusted. Bits keep being set in memory
//! (nothing dirty is forgotten while the process runs); reopening the metadata retries.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

/// The first 8 bytes of each superblock slot.
pub const MAGIC: [u8; 8] = *b"BATONMD1";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of one superblock slot; slot 0 at offset 0, slot 1 at this offset.
pub const SLOT_SIZE: u64 = 4096;
/// Where the bitmap starts.
pub const BITMAP_OFFSET: u64 = 2 * SLOT_SIZE;
/// The bitmap is written in pages of this size.
pub const PAGE_SIZE: u64 = 4096;
/// Smallest region (bytes per bitmap bit).
pub const MIN_REGION_SIZE: u32 = 4096;
/// Largest region.
pub const MAX_REGION_SIZE: u32 = 64 << 20;
/// Most regions a volume may have (a 256 MiB bitmap; 1 TiB at 64 KiB regions is 2^24).
pub const MAX_REGIONS: u64 = 1 << 31;
/// Length of a serialized [`Super`] in a slot.
pub const SUPER_LEN: usize = 95;

const WORDS_PER_PAGE: usize = (PAGE_SIZE / 8) as usize;
const BITS_PER_PAGE: u64 = PAGE_SIZE * 8;
const HEADER_LEN: usize = 24;
const CHECKSUM_AT: usize = SLOT_SIZE as usize - 32;
/// Zeroes written per call when the bitmap is initialised.
const ZERO_CHUNK: u64 = 1 << 20;

/// The state of this server's copy of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskState {
    /// In sync with the peer, or the copy the peer syncs from.
    UpToDate,
    /// Was up to date when it lost the peer; may be behind.
    Consistent,
    /// Known to be behind the peer.
    Outdated,
    /// A resync target in progress (or never synced): unusable.
    Inconsistent,
}

impl DiskState {
    fn to_byte(self) -> u8 {
        match self {
            DiskState::UpToDate => 1,
            DiskState::Consistent => 2,
            DiskState::Outdated => 3,
            DiskState::Inconsistent => 4,
        }
    }

    fn from_byte(b: u8) -> Option<DiskState> {
        match b {
            1 => Some(DiskState::UpToDate),
            2 => Some(DiskState::Consistent),
            3 => Some(DiskState::Outdated),
            4 => Some(DiskState::Inconsistent),
            _ => None,
        }
    }
}

/// The superblock: what this server knows about its copy of the volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Super {
    /// Random at create; both sides of a mirror adopt the primary's at the first full
    /// sync (a peer with a different id holds a different volume).
    pub volume_id: [u8; 16],
    /// Volume bytes (fixed at create).
    pub size: u64,
    /// Bytes per bitmap bit: a power of two, 4 KiB ..= 64 MiB (fixed at create).
    pub region_size: u32,
    /// Current data generation (0 = never written / fresh).
    pub current: u64,
    /// Previous generations, newest first (0 = empty).
    pub history: [u64; 4],
    /// The peer's generation when last in sync.
    pub peer_current: u64,
    pub disk: DiskState,
    /// Highest group epoch seen (fencing: lower epochs are refused).
    pub max_epoch: u64,
    pub split_brain: bool,
    /// Role when last written.
    pub primary: bool,
    /// Unix ms of the last update (given by the caller).
    pub updated_ms: u64,
}

impl Super {
    /// Make `new` the current generation; the old current one (if any) goes to the front
    /// of `history` and the oldest entry drops off.
    pub fn push_generation(&mut self, new: u64) {
        if self.current != 0 {
            self.history = [
                self.current,
                self.history[0],
                self.history[1],
                self.history[2],
            ];
        }
        self.current = new;
    }

    /// Number of regions (bitmap bits) of this volume.
    pub fn regions(&self) -> u64 {
        self.size.div_ceil(u64::from(self.region_size))
    }

    fn encode(&self) -> [u8; SUPER_LEN] {
        let mut out = [0u8; SUPER_LEN];
        let mut at = 0usize;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.volume_id);
        put(&self.size.to_le_bytes());
        put(&self.region_size.to_le_bytes());
        put(&self.current.to_le_bytes());
        for h in self.history {
            put(&h.to_le_bytes());
        }
        put(&self.peer_current.to_le_bytes());
        put(&[self.disk.to_byte()]);
        put(&self.max_epoch.to_le_bytes());
        put(&[u8::from(self.split_brain)]);
        put(&[u8::from(self.primary)]);
        put(&self.updated_ms.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Result<Super, String> {
        if b.len() != SUPER_LEN {
            return Err(format!(
                "superblock is {} bytes, expected {SUPER_LEN}",
                b.len()
            ));
        }
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = &b[at..at + n];
            at += n;
            s
        };
        fn u64_of(s: &[u8]) -> u64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        }
        fn bool_of(s: &[u8], what: &str) -> Result<bool, String> {
            match s[0] {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(format!("{what} is {v}, not 0 or 1")),
            }
        }
        let mut volume_id = [0u8; 16];
        volume_id.copy_from_slice(take(16));
        let size = u64_of(take(8));
        let mut rs = [0u8; 4];
        rs.copy_from_slice(take(4));
        let region_size = u32::from_le_bytes(rs);
        let current = u64_of(take(8));
        let history = [
            u64_of(take(8)),
            u64_of(take(8)),
            u64_of(take(8)),
            u64_of(take(8)),
        ];
        let peer_current = u64_of(take(8));
        let disk_byte = take(1)[0];
        let disk = DiskState::from_byte(disk_byte)
            .ok_or_else(|| format!("unknown disk state {disk_byte}"))?;
        let max_epoch = u64_of(take(8));
        let split_brain = bool_of(take(1), "split_brain")?;
        let primary = bool_of(take(1), "primary")?;
        let updated_ms = u64_of(take(8));
        let s = Super {
            volume_id,
            size,
            region_size,
            current,
            history,
            peer_current,
            disk,
            max_epoch,
            split_brain,
            primary,
            updated_ms,
        };
        check_layout(s.size, s.region_size)?;
        Ok(s)
    }
}

/// A new data generation id: nonzero and different from `old`. `random` should be random
/// bits; it is returned as is when it qualifies.
pub fn new_generation(old: u64, random: u64) -> u64 {
    let mut g = random;
    // A full-period LCG step: of three consecutive values at most two are in {0, old}.
    while g == 0 || g == old {
        g = g
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    g
}

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("mirror metadata {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid metadata (bad magic, checksums, version, truncated).
    #[error("mirror metadata {} is corrupt: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    /// `create` found a file (or device) that is not empty / already holds metadata.
    #[error("mirror metadata {} already exists", .0.display())]
    Exists(PathBuf),
    /// The metadata does not describe what the caller expects (size, region size, a
    /// peer bitmap of another length).
    #[error("mirror metadata mismatch: {why}")]
    Mismatch { why: String },
    /// Invalid arguments (region size not a power of two, size 0, too many regions, a
    /// change of the layout in `update`).
    #[error("mirror metadata: invalid: {why}")]
    Invalid { why: String },
    /// Another handle (this process or another) has the metadata open.
    #[error("mirror metadata {} is in use by another handle", .0.display())]
    Locked(PathBuf),
    /// A range outside the volume.
    #[error("mirror metadata: range {offset}+{len} is outside the volume of {size} bytes")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// An earlier bitmap write or sync failed; this handle refuses durable operations
    /// until the metadata is reopened.
    #[error("mirror metadata {}: bitmap unusable after an earlier I/O error ({why}); reopen to retry", path.display())]
    Failed { path: PathBuf, why: String },
}

impl MetaError {
    /// Stable code for events and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            MetaError::Io { .. } => "mirror_meta_io",
            MetaError::Corrupt { .. } => "mirror_meta_corrupt",
            MetaError::Exists(_) => "mirror_meta_exists",
            MetaError::Mismatch { .. } => "mirror_meta_mismatch",
            MetaError::Invalid { .. } => "mirror_meta_invalid",
            MetaError::Locked(_) => "mirror_meta_locked",
            MetaError::OutOfRange { .. } => "mirror_meta_range",
            MetaError::Failed { .. } => "mirror_meta_failed",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a volume's layout: size > 0, region size a power of two in range, at most
/// [`MAX_REGIONS`] regions.
fn check_layout(size: u64, region_size: u32) -> Result<(), String> {
    if size == 0 {
        return Err("volume size is 0".into());
    }
    if !region_size.is_power_of_two() || !(MIN_REGION_SIZE..=MAX_REGION_SIZE).contains(&region_size)
    {
        return Err(format!(
            "region size {region_size} is not a power of two in {MIN_REGION_SIZE}..={MAX_REGION_SIZE}"
        ));
    }
    let regions = size.div_ceil(u64::from(region_size));
    if regions > MAX_REGIONS {
        return Err(format!(
            "{size} bytes at {region_size}-byte regions is {regions} regions, more than {MAX_REGIONS}"
        ));
    }
    Ok(())
}

/// Bitmap pages of a volume of `regions` regions (at least one).
fn bitmap_pages(regions: u64) -> u64 {
    regions.div_ceil(BITS_PER_PAGE).max(1)
}

fn encode_slot(seq: u64, s: &Super) -> Vec<u8> {
    let mut buf = vec![0u8; SLOT_SIZE as usize];
    buf[0..8].copy_from_slice(&MAGIC);
    buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf[12..16].copy_from_slice(&(SUPER_LEN as u32).to_le_bytes());
    buf[16..24].copy_from_slice(&seq.to_le_bytes());
    buf[HEADER_LEN..HEADER_LEN + SUPER_LEN].copy_from_slice(&s.encode());
    let sum = Sha256::digest(&buf[..CHECKSUM_AT]);
    buf[CHECKSUM_AT..].copy_from_slice(&sum);
    buf
}

/// A slot's sequence number and superblock, or why it is not valid.
fn decode_slot(buf: &[u8]) -> Result<(u64, Super), String> {
    if buf.len() != SLOT_SIZE as usize {
        return Err("short slot".into());
    }
    if buf[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    if Sha256::digest(&buf[..CHECKSUM_AT])[..] != buf[CHECKSUM_AT..] {
        return Err("checksum mismatch".into());
    }
    let mut w4 = [0u8; 4];
    w4.copy_from_slice(&buf[8..12]);
    let version = u32::from_le_bytes(w4);
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    w4.copy_from_slice(&buf[12..16]);
    let len = u32::from_le_bytes(w4) as usize;
    if len != SUPER_LEN {
        return Err(format!("superblock length {len}, expected {SUPER_LEN}"));
    }
    let mut w8 = [0u8; 8];
    w8.copy_from_slice(&buf[16..24]);
    let seq = u64::from_le_bytes(w8);
    let s = Super::decode(&buf[HEADER_LEN..HEADER_LEN + SUPER_LEN])?;
    Ok((seq, s))
}

/// Takes the exclusive advisory lock (flock) of the metadata file, so that two handles
/// (a stale agent and a new one, or two resources configured on one path) cannot both
/// write it. A filesystem without flock support is let through.
fn lock_file(file: &File, path: &Path) -> Result<(), MetaError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(MetaError::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), "mirror metadata: file locks unsupported here; not locked");
            Ok(())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// Makes a new directory entry durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// The metadata of one volume; owns the metadata file (exclusively locked while this
/// handle or any [`Arc<Bitmap>`] from it lives).
#[derive(Debug)]
pub struct Meta {
    path: PathBuf,
    sup: Super,
    seq: u64,
    /// The slot (0 or 1) holding `sup`.
    slot: u64,
    bitmap: Arc<Bitmap>,
}

impl Meta {
    /// Creates the metadata of a volume of `size` bytes: a superblock with
    /// `disk: Inconsistent`, generation 0, no history, epoch 0, not primary, and an
    /// all-clear bitmap (written out as zeroes, so later marks need no allocation).
    /// Refuses ([`MetaError::Exists`]) a regular file that is not empty or a block
    /// device whose slots already carry the magic. If it fails part way through on a
    /// regular file, the file is truncated back to empty (best effort).
    pub fn create(
        path: &Path,
        size: u64,
        region_size: u32,
        volume_id: [u8; 16],
        now_ms: u64,
    ) -> Result<Meta, MetaError> {
        check_layout(size, region_size).map_err(|why| MetaError::Invalid { why })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path))?;
        lock_file(&file, path)?;
        let md = file.metadata().map_err(io_err(path))?;
        let regions = size.div_ceil(u64::from(region_size));
        let pages = bitmap_pages(regions);
        let total = BITMAP_OFFSET + pages * PAGE_SIZE;
        let regular = md.file_type().is_file();
        if md.file_type().is_block_device() {
            let dev_len = (&file).seek(SeekFrom::End(0)).map_err(io_err(path))?;
            if dev_len < total {
                return Err(MetaError::Invalid {
                    why: format!(
                        "{} is {dev_len} bytes; the metadata needs {total}",
                        path.display()
                    ),
                });
            }
            for slot in 0..2 {
                let mut m = [0u8; 8];
                file.read_exact_at(&mut m, slot * SLOT_SIZE)
                    .map_err(io_err(path))?;
                if m == MAGIC {
                    return Err(MetaError::Exists(path.to_path_buf()));
                }
            }
        } else if !regular {
            return Err(MetaError::Invalid {
                why: format!(
                    "{} is neither a regular file nor a block device",
                    path.display()
                ),
            });
        } else if md.len() > 0 {
            return Err(MetaError::Exists(path.to_path_buf()));
        }
        let sup = Super {
            volume_id,
            size,
            region_size,
            current: 0,
            history: [0; 4],
            peer_current: 0,
            disk: DiskState::Inconsistent,
            max_epoch: 0,
            split_brain: false,
            primary: false,
            updated_ms: now_ms,
        };
        let write = || -> io::Result<()> {
            let zeroes = vec![0u8; ZERO_CHUNK.min(pages * PAGE_SIZE) as usize];
            let mut done = 0u64;
            while done < pages * PAGE_SIZE {
                let n = (pages * PAGE_SIZE - done).min(zeroes.len() as u64);
                file.write_all_at(&zeroes[..n as usize], BITMAP_OFFSET + done)?;
                done += n;
            }
            // Both slots valid: slot 0 (seq 1) is the current one.
            file.write_all_at(&encode_slot(0, &sup), SLOT_SIZE)?;
            file.write_all_at(&encode_slot(1, &sup), 0)?;
            file.sync_data()?;
            if regular {
                sync_parent(path)?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            if regular {
                let _ = file.set_len(0);
            }
            return Err(io_err(path)(e));
        }
        let words = pages as usize * WORDS_PER_PAGE;
        let bitmap = Bitmap::new(path, Arc::new(file), &sup, vec![0; words]);
        Ok(Meta {
            path: path.to_path_buf(),
            sup,
            seq: 1,
            slot: 0,
            bitmap: Arc::new(bitmap),
        })
    }

    /// Opens existing metadata: verifies magic, version and checksums of both slots and
    /// takes the valid one with the higher sequence number; loads the bitmap.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        lock_file(&file, path)?;
        // Whatever a crashed predecessor left in the page cache becomes durable, so what
        // is read below is what is on disk.
        file.sync_data().map_err(io_err(path))?;
        let corrupt = |why: String| MetaError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let read = |buf: &mut [u8], at: u64, what: &str| -> Result<(), MetaError> {
            file.read_exact_at(buf, at).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt(format!("file too short for the {what}"))
                } else {
                    io_err(path)(e)
                }
            })
        };
        let mut slots = vec![0u8; 2 * SLOT_SIZE as usize];
        read(&mut slots, 0, "superblocks")?;
        let (s0, s1) = slots.split_at(SLOT_SIZE as usize);
        let (slot, seq, sup) = match (decode_slot(s0), decode_slot(s1)) {
            (Ok((q0, a)), Ok((q1, b))) => {
                if q1 > q0 {
                    (1, q1, b)
                } else {
                    (0, q0, a)
                }
            }
            (Ok((q0, a)), Err(why)) => {
                tracing::warn!(path = %path.display(), %why, "mirror metadata: superblock slot 1 invalid; using slot 0");
                (0, q0, a)
            }
            (Err(why), Ok((q1, b))) => {
                tracing::warn!(path = %path.display(), %why, "mirror metadata: superblock slot 0 invalid; using slot 1");
                (1, q1, b)
            }
            (Err(w0), Err(w1)) => {
                return Err(corrupt(format!(
                    "no valid superblock (slot 0: {w0}; slot 1: {w1})"
                )))
            }
        };
        let regions = sup.regions();
        let pages = bitmap_pages(regions);
        let mut bytes = vec![0u8; (pages * PAGE_SIZE) as usize];
        read(&mut bytes, BITMAP_OFFSET, "bitmap")?;
        let mut words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect();
        // Bits past the last region are never written as 1; ignore them if present.
        for (w, word) in words.iter_mut().enumerate() {
            *word &= valid_mask(regions, w);
        }
        let bitmap = Bitmap::new(path, Arc::new(file), &sup, words);
        Ok(Meta {
            path: path.to_path_buf(),
            sup,
            seq,
            slot,
            bitmap: Arc::new(bitmap),
        })
    }

    /// The current superblock.
    pub fn super_block(&self) -> &Super {
        &self.sup
    }

    /// Changes the superblock durably: the slot not holding the current superblock is
    /// written with the sequence number plus one and synced before this returns. On
    /// error the in-memory superblock is unchanged (the new one may or may not be on
    /// disk). `size` and `region_size` are fixed at create: changing them is refused.
    pub fn update(&mut self, f: impl FnOnce(&mut Super)) -> Result<(), MetaError> {
        let mut next = self.sup.clone();
        f(&mut next);
        if next.size != self.sup.size || next.region_size != self.sup.region_size {
            return Err(MetaError::Invalid {
                why: "size and region_size are fixed at create".into(),
            });
        }
        let seq = self.seq.checked_add(1).ok_or_else(|| MetaError::Invalid {
            why: "superblock sequence number exhausted".into(),
        })?;
        let other = 1 - self.slot;
        let file = &self.bitmap.file;
        file.write_all_at(&encode_slot(seq, &next), other * SLOT_SIZE)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&self.path))?;
        self.sup = next;
        self.seq = seq;
        self.slot = other;
        Ok(())
    }

    /// The dirty bitmap, shared with the writers (an `Arc`, so it can move into
    /// `spawn_blocking` closures).
    pub fn bitmap(&self) -> Arc<Bitmap> {
        Arc::clone(&self.bitmap)
    }

    /// The metadata file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number of the current superblock (grows by one per update).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// [`MetaError::Mismatch`] unless the metadata is for a volume of `size` bytes at
    /// `region_size`.
    pub fn check(&self, size: u64, region_size: u32) -> Result<(), MetaError> {
        if self.sup.size != size || self.sup.region_size != region_size {
            return Err(MetaError::Mismatch {
                why: format!(
                    "{} is for {} bytes at {}-byte regions, expected {size} at {region_size}",
                    self.path.display(),
                    self.sup.size,
                    self.sup.region_size
                ),
            });
        }
        Ok(())
    }
}

/// The bits of word `w` that are regions (all but the last word: all).
fn valid_mask(regions: u64, w: usize) -> u64 {
    let start = w as u64 * 64;
    if start >= regions {
        0
    } else if regions - start >= 64 {
        u64::MAX
    } else {
        (1u64 << (regions - start)) - 1
    }
}

/// Bits `lo..=hi` of a word (`lo <= hi < 64`).
fn range_mask(lo: u64, hi: u64) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// One bit per region: set = the region may differ from the peer.
///
/// `Send + Sync` with interior locking. Durable operations ([`mark`](Self::mark),
/// [`mark_all`](Self::mark_all), [`merge`](Self::merge), [`persist`](Self::persist)) are
/// group-committed: one caller writes the pages and syncs for every caller waiting at
/// that moment.
///
/// [`clear_region`](Self::clear_region) must not race with a `mark` of the same region
/// whose write the peer has not acknowledged: the owner clears a region only for data the
/// peer confirmed and with no write to it in flight.
pub struct Bitmap {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    region_size: u32,
    regions: u64,
    state: Mutex<State>,
    committed: Condvar,
    syncs: AtomicU64,
    pages_written: AtomicU64,
    #[cfg(test)]
    hooks: TestHooks,
}

#[cfg(test)]
#[derive(Default)]
struct TestHooks {
    /// Sleep this long between writing pages and syncing (makes batching visible).
    sync_delay_ms: AtomicU64,
    /// Fail the next commit's write.
    fail_next: std::sync::atomic::AtomicBool,
}

struct State {
    /// What this server knows; whole pages (trailing bits zero).
    mem: Vec<u64>,
    /// The last contents written and synced, per page.
    disk: Vec<u64>,
    /// Set bits in `mem`.
    dirty: u64,
    /// Pages to write in the next commit.
    pending: BTreeSet<usize>,
    /// Commits started / finished (a commit's number is its epoch).
    started: u64,
    done: u64,
    committing: bool,
    failed: Option<Failure>,
    /// Regions set on disk ahead of a sequential writer (not dirty: nothing was written
    /// there yet), so that its next marks find their bits durable and cost no sync.
    /// Cleared by [`Bitmap::persist`].
    ahead: Vec<u64>,
    /// Regions marked ahead of a sequential writer (0: none).
    lookahead: u64,
    /// The region a sequential writer would mark next.
    seq_next: u64,
}

struct Failure {
    epoch: u64,
    why: String,
}

impl State {
    /// ORs `bits` into word `w` of `mem`; true if some of them are not durable yet (the
    /// page is then queued for the next commit).
    fn or_word(&mut self, w: usize, bits: u64) -> bool {
        let new = bits & !self.mem[w];
        self.dirty += u64::from(new.count_ones());
        self.mem[w] |= bits;
        if bits & !self.disk[w] != 0 {
            self.pending.insert(w / WORDS_PER_PAGE);
            true
        } else {
            false
        }
    }

    /// ORs regions `first..=last` into `mem`; true if a commit is needed.
    fn or_range(&mut self, first: u64, last: u64) -> bool {
        let mut need = false;
        for_words(first, last, |w, bits| need |= self.or_word(w, bits));
        need
    }

    /// A mark of `first..=last` needs a commit: if it continues a sequential run, set
    /// the next `lookahead` regions (up to `regions`) on disk with it.
    fn look_ahead(&mut self, first: u64, last: u64, regions: u64) {
        let sequential =
            self.lookahead > 0 && first <= self.seq_next && first + self.lookahead >= self.seq_next;
        self.seq_next = last + 1;
        if !sequential || last + 1 >= regions {
            return;
        }
        let end = (last + self.lookahead).min(regions - 1);
        let (mut pages, ahead, disk) = (Vec::new(), &mut self.ahead, &self.disk);
        for_words(last + 1, end, |w, bits| {
            ahead[w] |= bits;
            if bits & !disk[w] != 0 {
                pages.push(w / WORDS_PER_PAGE);
            }
        });
        self.pending.extend(pages);
        self.seq_next = end + 1;
    }
}

/// Calls `f(word, bits)` for the words covering regions `first..=last`.
fn for_words(first: u64, last: u64, mut f: impl FnMut(usize, u64)) {
    let (w0, w1) = ((first / 64) as usize, (last / 64) as usize);
    for w in w0..=w1 {
        let lo = if w == w0 { first % 64 } else { 0 };
        let hi = if w == w1 { last % 64 } else { 63 };
        f(w, range_mask(lo, hi));
    }
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("path", &self.path)
            .field("regions", &self.regions)
            .field("region_size", &self.region_size)
            .field("dirty", &self.dirty_count())
            .finish()
    }
}

impl Bitmap {
    /// `words`: the bitmap as read from disk (whole pages), both views.
    fn new(path: &Path, file: Arc<File>, sup: &Super, words: Vec<u64>) -> Bitmap {
        let dirty = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Bitmap {
            path: path.to_path_buf(),
            file,
            size: sup.size,
            region_size: sup.region_size,
            regions: sup.regions(),
            state: Mutex::new(State {
                ahead: vec![0; words.len()],
                lookahead: 0,
                seq_next: 0,
                disk: words.clone(),
                mem: words,
                dirty,
                pending: BTreeSet::new(),
                started: 0,
                done: 0,
                committing: false,
                failed: None,
            }),
            committed: Condvar::new(),
            syncs: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            #[cfg(test)]
            hooks: TestHooks::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections only do bit arithmetic on vectors sized at open; a
        // poisoned lock (a panic there) leaves bits at worst over-set, which is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of regions (bits).
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Bytes per region.
    pub fn region_size(&self) -> u32 {
        self.region_size
    }

    /// Length of [`to_bytes`](Self::to_bytes) (and of what [`merge`](Self::merge) takes).
    pub fn byte_len(&self) -> usize {
        self.regions.div_ceil(8) as usize
    }

    /// Marks `[offset, offset + len)` of the volume dirty. Returns only when every
    /// covered bit is durable: bits not yet set on disk are set, their pages written and
    /// synced, batched with concurrent callers. Bits already set on disk cost no I/O.
    /// `len == 0` does nothing.
    pub fn mark(&self, offset: u64, len: u64) -> Result<(), MetaError> {
        if len == 0 {
            return Ok(());
        }
        let end =
            offset
                .checked_add(len)
                .filter(|&e| e <= self.size)
                .ok_or(MetaError::OutOfRange {
                    offset,
                    len,
                    size: self.size,
                })?;
        let rs = u64::from(self.region_size);
        let (first, last) = (offset / rs, (end - 1) / rs);
        let mut st = self.lock();
        if !st.or_range(first, last) {
            return Ok(());
        }
        st.look_ahead(first, last, self.regions);
        self.commit_wait(st)
    }

    /// From now on, a mark that needs a sync and continues a sequential run of marks also
    /// sets the next `regions` regions on disk (not in memory: they are not dirty), so a
    /// sequential writer pays one sync per `regions` regions instead of one per new
    /// region. What it costs: after a crash of this server, those regions (at most
    /// `regions` per sequential writer, since the last [`persist`](Self::persist)) count
    /// as dirty and are copied by the next resync. 0 turns it off (the default).
    pub fn set_lookahead(&self, regions: u64) {
        self.lock().lookahead = regions;
    }

    /// Marks every region dirty, durably (e.g. at the start of a full sync).
    pub fn mark_all(&self) -> Result<(), MetaError> {
        let mut st = self.lock();
        if !st.or_range(0, self.regions - 1) {
            return Ok(());
        }
        self.commit_wait(st)
    }

    /// The peer confirmed region `idx`: cleared in memory now, on disk at the next
    /// [`persist`](Self::persist) (or with the next mark that writes its page). An index
    /// past the end is ignored.
    pub fn clear_region(&self, idx: u64) {
        if idx >= self.regions {
            return;
        }
        let mut st = self.lock();
        let (w, bit) = ((idx / 64) as usize, 1u64 << (idx % 64));
        if st.mem[w] & bit != 0 {
            st.mem[w] &= !bit;
            st.dirty -= 1;
        }
    }

    /// Writes every page whose on-disk form differs from memory (cleared bits, and bits
    /// set ahead of a sequential writer that it did not reach) and syncs. No I/O when nothing differs. Called periodically by the owner and at
    /// clean shutdown.
    pub fn persist(&self) -> Result<(), MetaError> {
        let mut st = self.lock();
        // Regions set ahead of a sequential writer and not written since are clean.
        st.ahead.fill(0);
        let st_ref = &mut *st;
        for (p, (m, d)) in st_ref
            .mem
            .chunks_exact(WORDS_PER_PAGE)
            .zip(st_ref.disk.chunks_exact(WORDS_PER_PAGE))
            .enumerate()
        {
            if m != d {
                st_ref.pending.insert(p);
            }
        }
        if st.pending.is_empty() {
            return Ok(());
        }
        self.commit_wait(st)
    }

    /// Whether region `idx` is dirty in memory (false past the end).
    pub fn is_dirty(&self, idx: u64) -> bool {
        if idx >= self.regions {
            return false;
        }
        self.lock().mem[(idx / 64) as usize] & (1u64 << (idx % 64)) != 0
    }

    /// Regions dirty in memory.
    pub fn dirty_count(&self) -> u64 {
        self.lock().dirty
    }

    /// The first dirty region with index `>= from`.
    pub fn next_dirty(&self, from: u64) -> Option<u64> {
        if from >= self.regions {
            return None;
        }
        let st = self.lock();
        let w0 = (from / 64) as usize;
        let first = st.mem[w0] & (u64::MAX << (from % 64));
        let (w, word) = if first != 0 {
            (w0, first)
        } else {
            let (i, word) = st.mem[w0 + 1..]
                .iter()
                .enumerate()
                .find(|(_, &word)| word != 0)?;
            (w0 + 1 + i, *word)
        };
        let idx = w as u64 * 64 + u64::from(word.trailing_zeros());
        (idx < self.regions).then_some(idx)
    }

    /// ORs in a peer's bitmap (the layout of [`to_bytes`](Self::to_bytes), exactly
    /// [`byte_len`](Self::byte_len) bytes), durably. Bits past the last region are
    /// ignored.
    pub fn merge(&self, other: &[u8]) -> Result<(), MetaError> {
        if other.len() != self.byte_len() {
            return Err(MetaError::Mismatch {
                why: format!(
                    "peer bitmap is {} bytes, this volume's is {} ({} regions)",
                    other.len(),
                    self.byte_len(),
                    self.regions
                ),
            });
        }
        let mut st = self.lock();
        let mut need = false;
        for (w, chunk) in other.chunks(8).enumerate() {
            let mut a = [0u8; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            let bits = u64::from_le_bytes(a) & valid_mask(self.regions, w);
            if bits != 0 {
                need |= st.or_word(w, bits);
            }
        }
        if !need {
            return Ok(());
        }
        self.commit_wait(st)
    }

    /// The in-memory bitmap: bit i (region i) is bit `i % 8` of byte `i / 8`;
    /// [`byte_len`](Self::byte_len) bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let st = self.lock();
        let n = self.byte_len();
        let mut out = Vec::with_capacity(n + 8);
        for w in &st.mem[..n.div_ceil(8)] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// Syncs of the metadata file done by this bitmap (for tests and metrics).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Bitmap pages written by this bitmap (for tests and metrics).
    pub fn pages_written(&self) -> u64 {
        self.pages_written.load(Ordering::Relaxed)
    }

    /// Waits until the pages queued so far are durable, committing them itself when no
    /// commit is running (group commit). `st` has the caller's pages in `pending`.
    fn commit_wait<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<(), MetaError> {
        // Every commit that starts from now on snapshots `mem` after our bits were set.
        let target = st.started + 1;
        loop {
            if let Some(f) = &st.failed {
                if f.epoch <= target {
                    return Err(MetaError::Failed {
                        path: self.path.clone(),
                        why: f.why.clone(),
                    });
                }
            }
            if st.done >= target {
                return Ok(());
            }
            if st.committing {
                st = self.committed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead the next commit: snapshot the queued pages, write them unlocked.
            st.committing = true;
            st.started += 1;
            let epoch = st.started;
            let pages: Vec<(usize, Vec<u64>)> = std::mem::take(&mut st.pending)
                .into_iter()
                .map(|p| {
                    let r = p * WORDS_PER_PAGE..(p + 1) * WORDS_PER_PAGE;
                    let words = st.mem[r.clone()]
                        .iter()
                        .zip(&st.ahead[r])
                        .map(|(m, a)| m | a)
                        .collect();
                    (p, words)
                })
                .collect();
            drop(st);
            let res = self.write_pages(&pages);
            st = self.lock();
            st.committing = false;
            st.done = epoch;
            let out = match res {
                Ok(()) => {
                    for (p, words) in &pages {
                        st.disk[p * WORDS_PER_PAGE..(p + 1) * WORDS_PER_PAGE]
                            .copy_from_slice(words);
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "mirror metadata: bitmap write failed; the bitmap refuses durable operations until reopened");
                    st.failed = Some(Failure {
                        epoch,
                        why: e.to_string(),
                    });
                    Err(io_err(&self.path)(e))
                }
            };
            self.committed.notify_all();
            // Our own pages were queued before this commit's snapshot, so `target` is
            // `epoch`: done.
            return out;
        }
    }

    /// Writes `pages` (runs of consecutive pages in one call each) and syncs.
    fn write_pages(&self, pages: &[(usize, Vec<u64>)]) -> io::Result<()> {
        #[cfg(test)]
        if self.hooks.fail_next.swap(false, Ordering::Relaxed) {
            return Err(io::Error::other("injected failure"));
        }
        let mut i = 0;
        let mut buf = Vec::new();
        while i < pages.len() {
            let first = pages[i].0;
            let mut j = i;
            buf.clear();
            while j < pages.len() && pages[j].0 == first + (j - i) {
                for w in &pages[j].1 {
                    buf.extend_from_slice(&w.to_le_bytes());
                }
                j += 1;
            }
            self.file
                .write_all_at(&buf, BITMAP_OFFSET + first as u64 * PAGE_SIZE)?;
            i = j;
        }
        self.pages_written
            .fetch_add(pages.len() as u64, Ordering::Relaxed);
        #[cfg(test)]
        {
            let ms = self.hooks.sync_delay_ms.load(Ordering::Relaxed);
            if ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        self.file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Regions of a store that may hold data (for the initial sync: copy only those), as a
/// bitmap in the layout of [`Bitmap::to_bytes`]. For a regular file the data extents come
/// from `lseek(SEEK_DATA/SEEK_HOLE)`; for a block device, another kind of file or a
/// filesystem without hole reporting, every region.
pub fn allocated_regions(store: &Path, size: u64, region_size: u32) -> Result<Vec<u8>, MetaError> {
    use nix::errno::Errno;
    use nix::unistd::{lseek, Whence};

    check_layout(size, region_size).map_err(|why| MetaError::Invalid { why })?;
    let rs = u64::from(region_size);
    let regions = size.div_ceil(rs);
    let mut out = vec![0u8; regions.div_ceil(8) as usize];
    let set = |out: &mut [u8], first: u64, last: u64| {
        for i in first..=last {
            out[(i / 8) as usize] |= 1 << (i % 8);
        }
    };
    let all = |mut out: Vec<u8>| {
        out.fill(0);
        set(&mut out, 0, regions - 1);
        out
    };
    let file = File::open(store).map_err(io_err(store))?;
    let md = file.metadata().map_err(io_err(store))?;
    if !md.file_type().is_file() {
        return Ok(all(out));
    }
    let fd = file.as_raw_fd();
    let unsupported = |e: Errno| matches!(e, Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS);
    let to_io = |e: Errno| io_err(store)(io::Error::from(e));
    let mut pos = 0u64;
    while pos < size {
        let Ok(at) = i64::try_from(pos) else {
            return Ok(all(out));
        };
        let data = match lseek(fd, at, Whence::SeekData) {
            Ok(d) => d as u64,
            // No data at or after `pos`.
            Err(Errno::ENXIO) => break,
            Err(e) if unsupported(e) => return Ok(all(out)),
            Err(e) => return Err(to_io(e)),
        };
        if data >= size {
            break;
        }
        let hole = match lseek(fd, data as i64, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(e) if unsupported(e) => return Ok(all(out)),
            Err(e) => return Err(to_io(e)),
        };
        let end = hole.min(size);
        if end <= data {
            // Not what lseek promises; do not loop on it.
            return Ok(all(out));
        }
        set(&mut out, data / rs, (end - 1) / rs);
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
