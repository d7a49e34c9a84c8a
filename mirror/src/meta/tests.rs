use std::sync::Barrier;

use proptest::prelude::*;

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const R64K: u32 = 64 * 1024;
const R4K: u32 = 4096;

fn create(dir: &tempfile::TempDir, size: u64, rs: u32) -> Meta {
    Meta::create(&dir.path().join("meta"), size, rs, [7; 16], 1000).unwrap()
}

fn reopen(m: Meta) -> Meta {
    let p = m.path().to_path_buf();
    drop(m);
    Meta::open(&p).unwrap()
}

fn dirty_list(b: &Bitmap) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(d) = b.next_dirty(i) {
        assert!(d >= i, "next_dirty({i}) = {d}");
        out.push(d);
        i = d + 1;
    }
    out
}

/// Overwrites `data` at `at` in the file.
fn poke(path: &Path, at: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, at).unwrap();
}

fn read_slot(path: &Path, slot: u64) -> Vec<u8> {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; SLOT_SIZE as usize];
    f.read_exact_at(&mut buf, slot * SLOT_SIZE).unwrap();
    buf
}

/// Rewrites a slot's checksum after a test changed its contents.
fn reseal(buf: &mut [u8]) {
    let sum = Sha256::digest(&buf[..CHECKSUM_AT]);
    buf[CHECKSUM_AT..].copy_from_slice(&sum);
}

#[test]
fn create_open_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta");
    let m = Meta::create(&path, 10 * GIB, R64K, [7; 16], 1234).unwrap();
    let s = m.super_block().clone();
    assert_eq!(
        s,
        Super {
            volume_id: [7; 16],
            size: 10 * GIB,
            region_size: R64K,
            current: 0,
            history: [0; 4],
            peer_current: 0,
            disk: DiskState::Inconsistent,
            max_epoch: 0,
            split_brain: false,
            primary: false,
            updated_ms: 1234,
        }
    );
    assert_eq!(m.seq(), 1);
    assert_eq!(m.path(), path);
    let b = m.bitmap();
    assert_eq!(b.regions(), 163_840);
    assert_eq!(b.region_size(), R64K);
    assert_eq!(b.dirty_count(), 0);
    assert_eq!(b.to_bytes(), vec![0u8; 20_480]);
    assert_eq!(b.next_dirty(0), None);
    // 163840 regions = 5 bitmap pages.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        BITMAP_OFFSET + 5 * PAGE_SIZE
    );
    drop(b);
    let m = reopen(m);
    assert_eq!(m.super_block(), &s);
    assert_eq!(m.seq(), 1);
    m.check(10 * GIB, R64K).unwrap();
    let e = m.check(10 * GIB + 1, R64K).unwrap_err();
    assert_eq!(e.code(), "mirror_meta_mismatch");
    assert_eq!(
        m.check(10 * GIB, R4K).unwrap_err().code(),
        "mirror_meta_mismatch"
    );
}

#[test]
fn create_refuses_existing_files_and_bad_layouts() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta");
    std::fs::write(&path, b"x").unwrap();
    let e = Meta::create(&path, GIB, R64K, [1; 16], 0).unwrap_err();
    assert!(matches!(e, MetaError::Exists(_)), "{e}");
    assert_eq!(e.code(), "mirror_meta_exists");
    // An existing empty file is used.
    std::fs::write(&path, b"").unwrap();
    let m = Meta::create(&path, GIB, R64K, [1; 16], 0).unwrap();
    drop(m);
    assert_eq!(
        Meta::create(&path, GIB, R64K, [1; 16], 0)
            .unwrap_err()
            .code(),
        "mirror_meta_exists"
    );
    Meta::open(&path).unwrap();

    let other = d.path().join("other");
    for (size, rs) in [
        (0, R64K),
        (GIB, 3000),
        (GIB, 2048),
        (GIB, 128 << 20),
        ((MAX_REGIONS + 1) * 4096, R4K),
    ] {
        let e = Meta::create(&other, size, rs, [1; 16], 0).unwrap_err();
        assert_eq!(e.code(), "mirror_meta_invalid", "{size} {rs}: {e}");
    }
    // The largest layout is accepted (not created here: 256 MiB of bitmap).
    check_layout(MAX_REGIONS * 4096, R4K).unwrap();
    check_layout(1, MAX_REGION_SIZE).unwrap();
}

#[test]
fn a_second_handle_is_locked_out() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, GIB, R64K);
    let path = m.path().to_path_buf();
    let e = Meta::open(&path).unwrap_err();
    assert_eq!(e.code(), "mirror_meta_locked", "{e}");
    // The bitmap keeps the file (and its lock) after the Meta is gone.
    let b = m.bitmap();
    drop(m);
    assert_eq!(Meta::open(&path).unwrap_err().code(), "mirror_meta_locked");
    drop(b);
    Meta::open(&path).unwrap();
}

#[test]
fn update_survives_reopen_and_a_torn_newest_slot_falls_back() {
    let d = tempfile::tempdir().unwrap();
    let mut m = create(&d, GIB, R64K);
    let g1 = new_generation(0, 42);
    m.update(|s| {
        s.push_generation(g1);
        s.disk = DiskState::UpToDate;
        s.updated_ms = 2000;
    })
    .unwrap();
    assert_eq!(m.seq(), 2);
    let older = m.super_block().clone();
    assert_eq!(older.current, 42);
    assert_eq!(older.history, [0; 4]);
    m.update(|s| {
        s.push_generation(new_generation(s.current, 43));
        s.max_epoch = 9;
        s.primary = true;
        s.peer_current = 42;
        s.volume_id = [9; 16];
        s.updated_ms = 3000;
    })
    .unwrap();
    let newest = m.super_block().clone();
    assert_eq!(newest.current, 43);
    assert_eq!(newest.history, [42, 0, 0, 0]);
    let mut m = reopen(m);
    assert_eq!(m.super_block(), &newest);
    assert_eq!(m.seq(), 3);
    let path = m.path().to_path_buf();
    drop(m);

    // Seq 1 went to slot 0, 2 to slot 1, 3 to slot 0: tear slot 0.
    assert_eq!(decode_slot(&read_slot(&path, 0)).unwrap().0, 3);
    poke(&path, 2000, &[0xAB; 100]);
    m = Meta::open(&path).unwrap();
    assert_eq!(m.super_block(), &older);
    assert_eq!(m.seq(), 2);
    // The next update rewrites the torn slot and wins.
    m.update(|s| s.split_brain = true).unwrap();
    let m = reopen(m);
    assert_eq!(m.seq(), 3);
    assert!(m.super_block().split_brain);
    assert_eq!(m.super_block().current, 42);
    assert!(decode_slot(&read_slot(&path, 0)).is_ok());
}

#[test]
fn update_refuses_a_layout_change_and_keeps_memory() {
    let d = tempfile::tempdir().unwrap();
    let mut m = create(&d, GIB, R64K);
    let before = m.super_block().clone();
    let e = m
        .update(|s| {
            s.size += 1;
            s.current = 5;
        })
        .unwrap_err();
    assert_eq!(e.code(), "mirror_meta_invalid");
    assert_eq!(m.super_block(), &before);
    assert_eq!(m.seq(), 1);
    let e = m.update(|s| s.region_size = R4K).unwrap_err();
    assert_eq!(e.code(), "mirror_meta_invalid");
    let m = reopen(m);
    assert_eq!(m.super_block(), &before);
}

#[test]
fn corrupt_superblocks_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("meta");
    let fresh = || {
        let _ = std::fs::remove_file(&path);
        drop(Meta::create(&path, GIB, R64K, [3; 16], 0).unwrap());
    };
    let corrupt_why = |path: &Path| match Meta::open(path) {
        Err(MetaError::Corrupt { why, .. }) => why,
        other => panic!("expected Corrupt, got {other:?}"),
    };

    // One bad slot: the other is used.
    fresh();
    poke(&path, 0, b"NOTMAGIC");
    Meta::open(&path).unwrap();

    // Both magics gone.
    poke(&path, SLOT_SIZE, b"NOTMAGIC");
    let why = corrupt_why(&path);
    assert!(why.contains("bad magic"), "{why}");
    assert_eq!(Meta::open(&path).unwrap_err().code(), "mirror_meta_corrupt");

    // A flipped bit in both slots.
    fresh();
    for slot in 0..2 {
        let mut s = read_slot(&path, slot);
        s[30] ^= 1;
        poke(&path, slot * SLOT_SIZE, &s);
    }
    let why = corrupt_why(&path);
    assert!(why.contains("checksum mismatch"), "{why}");

    // A newer format version, correctly sealed.
    fresh();
    for slot in 0..2 {
        let mut s = read_slot(&path, slot);
        s[8..12].copy_from_slice(&2u32.to_le_bytes());
        reseal(&mut s);
        poke(&path, slot * SLOT_SIZE, &s);
    }
    let why = corrupt_why(&path);
    assert!(why.contains("format version 2"), "{why}");

    // Sealed but nonsensical contents: unknown disk state, bad region size.
    fresh();
    let mut s = read_slot(&path, 0);
    s[HEADER_LEN + 16 + 8 + 4 + 8 + 32 + 8] = 9;
    reseal(&mut s);
    poke(&path, 0, &s);
    let mut s = read_slot(&path, 1);
    s[HEADER_LEN + 24..HEADER_LEN + 28].copy_from_slice(&3000u32.to_le_bytes());
    reseal(&mut s);
    poke(&path, SLOT_SIZE, &s);
    let why = corrupt_why(&path);
    assert!(why.contains("unknown disk state 9"), "{why}");
    assert!(why.contains("region size 3000"), "{why}");

    // Truncated bitmap, truncated superblocks.
    fresh();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(BITMAP_OFFSET + 100)
        .unwrap();
    let why = corrupt_why(&path);
    assert!(why.contains("too short for the bitmap"), "{why}");
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let why = corrupt_why(&path);
    assert!(why.contains("too short for the superblocks"), "{why}");

    // Not there at all: an I/O error.
    assert_eq!(
        Meta::open(&d.path().join("absent")).unwrap_err().code(),
        "mirror_meta_io"
    );
}

#[test]
fn marks_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, GIB, R64K);
    let b = m.bitmap();
    b.mark(0, 4096).unwrap();
    b.mark(5 * 64 * KIB + 10, 64 * KIB).unwrap(); // regions 5 and 6
    b.mark(GIB - 1, 1).unwrap(); // the last region
    assert_eq!(b.dirty_count(), 4);
    assert_eq!(dirty_list(&b), vec![0, 5, 6, 16_383]);
    drop(b);
    let m = reopen(m);
    let b = m.bitmap();
    assert_eq!(b.dirty_count(), 4);
    assert_eq!(dirty_list(&b), vec![0, 5, 6, 16_383]);
    assert!(b.is_dirty(5) && !b.is_dirty(4) && !b.is_dirty(7));
    assert!(!b.is_dirty(16_384) && !b.is_dirty(u64::MAX));
    assert_eq!(b.syncs(), 0);
}

#[test]
fn clears_reach_the_disk_only_with_persist() {
    let d = tempfile::tempdir().unwrap();
    // 262144 regions = 8 pages; region 40000 is on page 1.
    let m = create(&d, GIB, R4K);
    let b = m.bitmap();
    b.mark(3 * 4096, 1).unwrap();
    b.mark(40_000 * 4096, 2 * 4096).unwrap();
    b.clear_region(3);
    b.clear_region(3); // twice: no effect
    b.clear_region(10); // not dirty: no effect
    b.clear_region(1 << 40); // past the end: ignored
    assert!(!b.is_dirty(3));
    assert_eq!(b.dirty_count(), 2);
    drop(b);
    let m = reopen(m);
    let b = m.bitmap();
    assert_eq!(dirty_list(&b), vec![3, 40_000, 40_001]);
    b.clear_region(3);
    b.clear_region(40_001);
    b.persist().unwrap();
    assert_eq!(b.syncs(), 1);
    assert_eq!(b.pages_written(), 2);
    b.persist().unwrap(); // nothing differs: no I/O
    assert_eq!(b.syncs(), 1);
    drop(b);
    let m = reopen(m);
    let b = m.bitmap();
    assert_eq!(dirty_list(&b), vec![40_000]);
    assert_eq!(b.dirty_count(), 1);
}

#[test]
fn a_mark_of_bits_already_on_disk_does_no_io() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, GIB, R64K);
    let b = m.bitmap();
    b.mark(0, 64 * KIB).unwrap();
    assert_eq!((b.syncs(), b.pages_written()), (1, 1));
    b.mark(0, 64 * KIB).unwrap();
    b.mark(100, 10).unwrap();
    b.mark(64 * KIB - 1, 1).unwrap();
    assert_eq!((b.syncs(), b.pages_written()), (1, 1));
    // Region 1 is new.
    b.mark(0, 128 * KIB).unwrap();
    assert_eq!(b.syncs(), 2);
    // Cleared in memory but still set on disk: re-marking it needs no I/O.
    b.clear_region(0);
    assert!(!b.is_dirty(0));
    b.mark(0, 1).unwrap();
    assert!(b.is_dirty(0));
    assert_eq!(b.syncs(), 2);
    assert_eq!(b.dirty_count(), 2);
    b.persist().unwrap(); // memory equals disk again
    assert_eq!(b.syncs(), 2);
    // Once the clear is on disk, marking needs I/O again.
    b.clear_region(1);
    b.persist().unwrap();
    assert_eq!(b.syncs(), 3);
    b.mark(64 * KIB, 1).unwrap();
    assert_eq!(b.syncs(), 4);
    assert_eq!(b.dirty_count(), 2);
}

#[test]
fn a_sequential_writer_syncs_once_per_lookahead_and_a_crash_costs_at_most_that() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, GIB, R64K);
    let b = m.bitmap();
    b.set_lookahead(16);
    // 64 regions written in order, one region per mark.
    for r in 0..64u64 {
        b.mark(r * 64 * KIB, 64 * KIB).unwrap();
    }
    assert_eq!(b.dirty_count(), 64, "the look-ahead is not dirty in memory");
    // Region 0 (1..=16 set ahead), 17 (18..=33), 34 (35..=50), 51 (52..=67).
    assert_eq!(b.syncs(), 4, "one sync per 17 regions, not one per region");
    drop(b);
    // A crash now: the disk holds the written regions and at most 16 more.
    let m = reopen(m);
    let b = m.bitmap();
    let on_disk = dirty_list(&b);
    assert!(on_disk.starts_with(&(0..64).collect::<Vec<_>>()));
    assert!(on_disk.len() <= 64 + 16, "{on_disk:?}");
    // The same run with a persist before the crash: only what was written stays set.
    let d2 = tempfile::tempdir().unwrap();
    let m2 = create(&d2, GIB, R64K);
    let b2 = m2.bitmap();
    b2.set_lookahead(16);
    for r in 0..64u64 {
        b2.mark(r * 64 * KIB, 64 * KIB).unwrap();
    }
    b2.persist().unwrap();
    drop(b2);
    let m2 = reopen(m2);
    assert_eq!(dirty_list(&m2.bitmap()), (0..64).collect::<Vec<_>>());
    b.set_lookahead(16);
    // Scattered marks set nothing ahead.
    let before = b.syncs();
    for r in [1000u64, 500, 3000, 200] {
        b.mark(r * 64 * KIB, 1).unwrap();
    }
    assert_eq!(b.syncs() - before, 4);
    drop(b);
    let m = reopen(m);
    let mut want = on_disk.clone();
    want.extend([200, 500, 1000, 3000]);
    want.sort_unstable();
    assert_eq!(dirty_list(&m.bitmap()), want);
}

#[test]
fn concurrent_marks_are_batched_and_all_durable() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 50;
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, 64 * MIB, R64K); // 1024 regions
    let b = m.bitmap();
    b.hooks.sync_delay_ms.store(2, Ordering::Relaxed);
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (b, barrier) = (&b, &barrier);
            s.spawn(move || {
                for r in 0..ROUNDS {
                    barrier.wait();
                    let region = r * THREADS + t;
                    b.mark(region * 64 * KIB + 512, 4096).unwrap();
                    // Durable when mark returns: visible in the disk view.
                    let st = b.lock();
                    assert!(st.disk[(region / 64) as usize] & (1 << (region % 64)) != 0);
                }
            });
        }
    });
    let calls = THREADS * ROUNDS;
    let syncs = b.syncs();
    eprintln!("{calls} concurrent marks, {syncs} syncs");
    assert!(syncs < calls, "{syncs} syncs for {calls} marks");
    assert!(syncs <= calls / 2, "{syncs} syncs for {calls} marks");
    assert_eq!(b.dirty_count(), calls);
    drop(b);
    let m = reopen(m);
    let b = m.bitmap();
    assert_eq!(dirty_list(&b), (0..calls).collect::<Vec<_>>());
}

#[test]
fn after_a_failed_write_the_bitmap_refuses_durable_operations() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, GIB, R64K);
    let b = m.bitmap();
    b.mark(64 * KIB, 1).unwrap(); // region 1 durable
    b.hooks.fail_next.store(true, Ordering::Relaxed);
    let e = b.mark(0, 1).unwrap_err();
    assert_eq!(e.code(), "mirror_meta_io", "{e}");
    assert!(b.is_dirty(0), "the bit stays set in memory");
    for e in [
        b.mark(0, 1).unwrap_err(),
        b.mark(5 * 64 * KIB, 1).unwrap_err(),
        b.mark_all().unwrap_err(),
        b.merge(&vec![0xFF; b.byte_len()]).unwrap_err(),
    ] {
        assert_eq!(e.code(), "mirror_meta_failed", "{e}");
    }
    assert!(b.is_dirty(5), "still tracked in memory");
    b.clear_region(1);
    assert_eq!(b.persist().unwrap_err().code(), "mirror_meta_failed");
    // Bits already durable need no I/O and still succeed.
    b.mark(64 * KIB, 10).unwrap();
    // The superblock is independent.
    let mut m = m;
    m.update(|s| s.max_epoch = 3).unwrap();
    drop(b);
    let m = reopen(m);
    assert_eq!(dirty_list(&m.bitmap()), vec![1]);
    assert_eq!(m.super_block().max_epoch, 3);
}

#[test]
fn next_dirty_crosses_words_and_stops_at_the_last_partial_word() {
    let d = tempfile::tempdir().unwrap();
    // 200 regions, the last one partial: the last word has 8 valid bits.
    let m = create(&d, 200 * 4096 - 1000, R4K);
    let b = m.bitmap();
    assert_eq!(b.regions(), 200);
    for r in [0u64, 63, 64, 127, 130, 199] {
        b.mark(r * 4096, 1).unwrap();
    }
    let expect = [
        (0, Some(0)),
        (1, Some(63)),
        (63, Some(63)),
        (64, Some(64)),
        (65, Some(127)),
        (128, Some(130)),
        (131, Some(199)),
        (199, Some(199)),
        (200, None),
        (u64::MAX, None),
    ];
    for (from, want) in expect {
        assert_eq!(b.next_dirty(from), want, "from {from}");
    }
    b.clear_region(199);
    assert_eq!(b.next_dirty(131), None);
    drop(b);

    // Many zero words (and pages) skipped.
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, 100_000 * 4096, R4K);
    let b = m.bitmap();
    b.mark(99_999 * 4096, 4096).unwrap();
    assert_eq!(b.next_dirty(0), Some(99_999));
    assert_eq!(b.next_dirty(99_999), Some(99_999));
    assert_eq!(b.next_dirty(100_000), None);
}

#[test]
fn merge_ors_in_a_peer_bitmap_durably() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, 20 * 4096, R4K);
    let b = m.bitmap();
    assert_eq!(b.byte_len(), 3);
    b.mark(4096, 1).unwrap(); // region 1
                              // Peer: regions 0, 2, 15; the bits past region 19 are ignored.
    let peer = [0b0000_0101, 0b1000_0000, 0b1111_0000];
    b.merge(&peer).unwrap();
    assert_eq!(b.to_bytes(), vec![0b0000_0111, 0b1000_0000, 0]);
    assert_eq!(b.dirty_count(), 4);
    let syncs = b.syncs();
    b.merge(&peer).unwrap(); // nothing new
    b.merge(&[0, 0, 0]).unwrap();
    assert_eq!(b.syncs(), syncs);
    let e = b.merge(&[0, 0]).unwrap_err();
    assert_eq!(e.code(), "mirror_meta_mismatch", "{e}");
    assert_eq!(b.merge(&[0; 4]).unwrap_err().code(), "mirror_meta_mismatch");
    drop(b);
    let m = reopen(m);
    assert_eq!(m.bitmap().to_bytes(), vec![0b0000_0111, 0b1000_0000, 0]);
}

#[test]
fn ranges_cross_region_boundaries_and_reach_the_partial_last_region() {
    let d = tempfile::tempdir().unwrap();
    let size = 10 * 64 * KIB + 100; // 11 regions, the last one 100 bytes
    let m = create(&d, size, R64K);
    let b = m.bitmap();
    assert_eq!(b.regions(), 11);
    b.mark(64 * KIB - 1, 2).unwrap(); // regions 0 and 1
    b.mark(3 * 64 * KIB, 64 * KIB).unwrap(); // exactly region 3
    b.mark(size - 1, 1).unwrap(); // region 10
    b.mark(5 * 64 * KIB, 0).unwrap(); // empty: nothing
    assert_eq!(dirty_list(&b), vec![0, 1, 3, 10]);
    assert_eq!(b.to_bytes(), vec![0b0000_1011, 0b0000_0100]);
    for (off, len) in [(size - 1, 2), (size, 1), (u64::MAX, 2), (0, size + 1)] {
        let e = b.mark(off, len).unwrap_err();
        assert_eq!(e.code(), "mirror_meta_range", "{off}+{len}: {e}");
    }
    b.mark(0, size).unwrap();
    assert_eq!(b.dirty_count(), 11);
    b.clear_region(4);
    b.mark_all().unwrap();
    assert_eq!(b.dirty_count(), 11);
    assert_eq!(b.to_bytes(), vec![0xFF, 0b0000_0111]);
    drop(b);
    let m = reopen(m);
    assert_eq!(m.bitmap().to_bytes(), vec![0xFF, 0b0000_0111]);
    assert_eq!(m.bitmap().dirty_count(), 11);
}

#[test]
fn to_bytes_is_little_endian_bit_order() {
    let d = tempfile::tempdir().unwrap();
    let m = create(&d, 100 * 4096, R4K);
    let b = m.bitmap();
    for r in [0u64, 9, 70, 99] {
        b.mark(r * 4096, 1).unwrap();
    }
    let bytes = b.to_bytes();
    assert_eq!(bytes.len(), 13);
    for r in 0..100u64 {
        let bit = bytes[(r / 8) as usize] >> (r % 8) & 1 == 1;
        assert_eq!(bit, [0, 9, 70, 99].contains(&r), "region {r}");
    }
    // And the same bytes are on disk at the bitmap's offset.
    let f = File::open(m.path()).unwrap();
    let mut disk = vec![0u8; 13];
    f.read_exact_at(&mut disk, BITMAP_OFFSET).unwrap();
    assert_eq!(disk, bytes);
}

fn set_regions(bits: &[u8], regions: u64) -> Vec<u64> {
    (0..regions)
        .filter(|&r| bits[(r / 8) as usize] >> (r % 8) & 1 == 1)
        .collect()
}

#[test]
fn allocated_regions_of_a_sparse_file() {
    use nix::unistd::{lseek, Whence};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("store");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(10 * MIB).unwrap();
    f.write_all_at(&[1u8; 4096], MIB).unwrap(); // region 16
    f.write_all_at(&[2u8; 4096], 8 * MIB + 64 * KIB).unwrap(); // region 129
    f.sync_all().unwrap();
    // Does this filesystem report holes? (A file with holes, where SEEK_HOLE from 0 finds
    // one before the end.)
    let first_hole = lseek(f.as_raw_fd(), 0, Whence::SeekHole);
    let holes = matches!(first_hole, Ok(h) if (h as u64) < 10 * MIB);
    eprintln!("SEEK_HOLE from 0: {first_hole:?}; holes reported: {holes}");

    let got = allocated_regions(&path, 10 * MIB, R64K).unwrap();
    assert_eq!(got.len(), 20);
    let set = set_regions(&got, 160);
    if holes {
        assert!(set.contains(&16) && set.contains(&129), "{set:?}");
        // Allocation granularity may add a neighbour, not more.
        assert!(set.len() <= 4, "{set:?}");
        assert!(!set.contains(&0) && !set.contains(&60) && !set.contains(&159));
        // A size past the end of the file: nothing there.
        let got = allocated_regions(&path, 12 * MIB, R64K).unwrap();
        assert_eq!(set_regions(&got, 192), set);
        // All holes.
        let empty = d.path().join("empty");
        File::create(&empty).unwrap().set_len(MIB).unwrap();
        assert_eq!(allocated_regions(&empty, MIB, R64K).unwrap(), vec![0; 2]);
    } else {
        assert_eq!(set, (0..160).collect::<Vec<_>>());
    }

    // Not a regular file: every region (5 regions, trailing bits clear).
    assert_eq!(
        allocated_regions(Path::new("/dev/null"), 5 * 4096, R4K).unwrap(),
        vec![0b1_1111]
    );
    assert_eq!(
        allocated_regions(&path, MIB, 1000).unwrap_err().code(),
        "mirror_meta_invalid"
    );
    assert_eq!(
        allocated_regions(&d.path().join("absent"), MIB, R4K)
            .unwrap_err()
            .code(),
        "mirror_meta_io"
    );
}

#[test]
fn push_generation_keeps_four_previous() {
    let d = tempfile::tempdir().unwrap();
    let mut m = create(&d, GIB, R64K);
    for g in 1..=6 {
        m.update(|s| s.push_generation(g)).unwrap();
    }
    assert_eq!(m.super_block().current, 6);
    assert_eq!(m.super_block().history, [5, 4, 3, 2]);
}

#[test]
fn disk_state_serializes_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&DiskState::UpToDate).unwrap(),
        "\"up_to_date\""
    );
    for s in [
        DiskState::UpToDate,
        DiskState::Consistent,
        DiskState::Outdated,
        DiskState::Inconsistent,
    ] {
        assert_eq!(DiskState::from_byte(s.to_byte()), Some(s));
    }
}

/// A bitmap operation for the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Mark `len` bytes at `offset` (both reduced into the volume).
    Mark(u64, u64),
    Clear(u64),
    Persist,
    MarkAll,
    Merge(Vec<(u64, u64)>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u64>(), prop_oneof![1u64..20_000, 1u64..(1 << 29)])
            .prop_map(|(o, l)| Op::Mark(o, l)),
        4 => any::<u64>().prop_map(Op::Clear),
        1 => Just(Op::Persist),
        1 => Just(Op::MarkAll),
        1 => proptest::collection::vec((any::<u64>(), 1u64..3000), 0..4).prop_map(Op::Merge),
        1 => Just(Op::Reopen),
    ]
}

/// The model: what is in memory and what is on disk, one bool per region, the disk
/// written a page at a time from memory exactly like the implementation.
struct Model {
    mem: Vec<bool>,
    disk: Vec<bool>,
}

impl Model {
    fn page(&self, p: usize) -> std::ops::Range<usize> {
        let per = BITS_PER_PAGE as usize;
        p * per..((p + 1) * per).min(self.mem.len())
    }

    /// Sets `first..=last`; writes the pages holding bits not yet on disk.
    fn set(&mut self, first: usize, last: usize) {
        let mut pages = BTreeSet::new();
        for i in first..=last {
            self.mem[i] = true;
            if !self.disk[i] {
                pages.insert(i / BITS_PER_PAGE as usize);
            }
        }
        for p in pages {
            let r = self.page(p);
            self.disk[r.clone()].copy_from_slice(&self.mem[r]);
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.mem.len().div_ceil(8)];
        for (i, _) in self.mem.iter().enumerate().filter(|(_, &b)| b) {
            out[i / 8] |= 1 << (i % 8);
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn bitmap_matches_a_model(
        regions in prop_oneof![1u64..200, 1u64..70_000],
        short in 0u64..4096,
        ops in proptest::collection::vec(op(), 1..25),
    ) {
        let d = tempfile::tempdir().unwrap();
        let size = (regions * 4096 - short).max(1);
        let mut m = create(&d, size, R4K);
        let n = regions as usize;
        let mut model = Model { mem: vec![false; n], disk: vec![false; n] };
        for op in ops {
            let b = m.bitmap();
            match op {
                Op::Mark(o, l) => {
                    let offset = o % size;
                    let len = 1 + (l - 1) % (size - offset);
                    b.mark(offset, len).unwrap();
                    model.set((offset / 4096) as usize, ((offset + len - 1) / 4096) as usize);
                }
                Op::Clear(i) => {
                    let i = i % (regions + 2);
                    b.clear_region(i);
                    if i < regions {
                        model.mem[i as usize] = false;
                    }
                }
                Op::Persist => {
                    b.persist().unwrap();
                    model.disk.clone_from(&model.mem);
                }
                Op::MarkAll => {
                    b.mark_all().unwrap();
                    model.set(0, n - 1);
                }
                Op::Merge(runs) => {
                    let mut peer = Model { mem: vec![false; n], disk: vec![true; n] };
                    for (start, len) in runs {
                        let start = start % regions;
                        let end = (start + len).min(regions);
                        for i in start..end {
                            peer.mem[i as usize] = true;
                        }
                    }
                    b.merge(&peer.bytes()).unwrap();
                    let mut pages = BTreeSet::new();
                    for i in (0..n).filter(|&i| peer.mem[i]) {
                        model.mem[i] = true;
                        if !model.disk[i] {
                            pages.insert(i / BITS_PER_PAGE as usize);
                        }
                    }
                    for p in pages {
                        let r = model.page(p);
                        model.disk[r.clone()].copy_from_slice(&model.mem[r]);
                    }
                }
                Op::Reopen => {
                    drop(b);
                    m = reopen(m);
                    model.mem.clone_from(&model.disk);
                    let b = m.bitmap();
                    prop_assert_eq!(b.to_bytes(), model.bytes());
                    continue;
                }
            }
            prop_assert_eq!(b.to_bytes(), model.bytes());
            let count = model.mem.iter().filter(|&&x| x).count() as u64;
            prop_assert_eq!(b.dirty_count(), count);
            let first = model.mem.iter().position(|&x| x).map(|i| i as u64);
            prop_assert_eq!(b.next_dirty(0), first);
            // The disk view is the model's disk.
            let st = b.lock();
            for (i, &on) in model.disk.iter().enumerate() {
                prop_assert_eq!(st.disk[i / 64] >> (i % 64) & 1 == 1, on, "disk bit {}", i);
            }
        }
        // Finally the file itself holds the model's disk.
        let bytes_on_disk = Model { mem: model.disk.clone(), disk: vec![] }.bytes();
        let m = reopen(m);
        prop_assert_eq!(m.bitmap().to_bytes(), bytes_on_disk);
    }

    #[test]
    fn new_generation_is_fresh_and_nonzero(old in any::<u64>(), random in any::<u64>()) {
        let g = new_generation(old, random);
        prop_assert!(g != 0 && g != old);
        if random != 0 && random != old {
            prop_assert_eq!(g, random);
        }
    }

    #[test]
    fn super_encoding_round_trips(
        id in any::<[u8; 16]>(),
        regions in 1u64..MAX_REGIONS,
        shift in 12u32..=26,
        gens in any::<[u64; 6]>(),
        disk in 0usize..4,
        epoch in any::<u64>(),
        flags in any::<(bool, bool)>(),
        ms in any::<u64>(),
        seq in any::<u64>(),
    ) {
        let s = Super {
            volume_id: id,
            size: regions << shift,
            region_size: 1 << shift,
            current: gens[0],
            history: [gens[1], gens[2], gens[3], gens[4]],
            peer_current: gens[5],
            disk: [DiskState::UpToDate, DiskState::Consistent, DiskState::Outdated, DiskState::Inconsistent][disk],
            max_epoch: epoch,
            split_brain: flags.0,
            primary: flags.1,
            updated_ms: ms,
        };
        let slot = encode_slot(seq, &s);
        prop_assert_eq!(decode_slot(&slot), Ok((seq, s)));
    }
}

#[test]
fn new_generation_edge_cases() {
    for old in [0, 1, u64::MAX] {
        for random in [0, 1, old, u64::MAX] {
            let g = new_generation(old, random);
            assert!(g != 0 && g != old, "{old} {random} -> {g}");
        }
    }
}

/// `cargo test -p baton-mirror --lib --release -- --ignored --nocapture mark_throughput`
/// (BATON_META_BENCH_DIR chooses the filesystem; default the temp dir).
#[test]
#[ignore]
#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn mark_throughput() {
    use std::time::Instant;
    let d = match std::env::var_os("BATON_META_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let size = 256 * MIB;
    let n = size / (64 * KIB);
    let m = create(&d, size, R64K);
    let b = m.bitmap();

    let t = Instant::now();
    for i in 0..n {
        b.mark(i * 64 * KIB, 64 * KIB).unwrap();
    }
    let e = t.elapsed();
    eprintln!(
        "fresh, sequential 64 KiB writes: {n} marks in {e:?}: {:.0} marks/s ({:.1} MiB/s of writes), {} syncs, {:.1} us/mark",
        n as f64 / e.as_secs_f64(),
        (n * 64) as f64 / 1024.0 / e.as_secs_f64(),
        b.syncs(),
        e.as_secs_f64() * 1e6 / n as f64
    );

    let reps = 100u64;
    let syncs = b.syncs();
    let t = Instant::now();
    for _ in 0..reps {
        for i in 0..n {
            b.mark(i * 64 * KIB, 64 * KIB).unwrap();
        }
    }
    let e = t.elapsed();
    eprintln!(
        "re-marks (bits on disk): {} marks in {e:?}: {:.0} marks/s, {:.2} us/mark, {} syncs",
        reps * n,
        (reps * n) as f64 / e.as_secs_f64(),
        e.as_secs_f64() * 1e6 / (reps * n) as f64,
        b.syncs() - syncs
    );
    drop(b);
    drop(m);

    // 8 writers, each sequential over its own eighth, on a fresh bitmap: group commit.
    let d2 = match std::env::var_os("BATON_META_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let m = create(&d2, size, R64K);
    let b = m.bitmap();
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..8 {
            let b = &b;
            s.spawn(move || {
                for i in (w * n / 8)..((w + 1) * n / 8) {
                    b.mark(i * 64 * KIB, 64 * KIB).unwrap();
                }
            });
        }
    });
    let e = t.elapsed();
    eprintln!(
        "fresh, 8 concurrent sequential writers: {n} marks in {e:?}: {:.0} marks/s, {} syncs ({:.1} marks/sync)",
        n as f64 / e.as_secs_f64(),
        b.syncs(),
        n as f64 / b.syncs() as f64
    );
}
