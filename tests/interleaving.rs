//! Two caches on one path (standing in for two processes) and finalize
//! interleaved with packing, driven through the provider's slots by hand:
//! writer lock, stale files, pending reservations, write-back without a
//! commit, disk blocks behind growth, and a key both writers packed.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

use xnncache::capi::{xnncache_compact, xnncache_register_weights, xnncache_verify};
use xnncache::Status;
use xnncache_tests::{file_mapping_usage, last_error, options, slots, write_in_child, Cache, TempDir};

const NOT_FOUND: usize = usize::MAX;

/// Keys of the linked XNNPACK's layout: the caches here are opened with its sizes.
type Key = xnnpack_sys::xnn_weights_cache_look_up_key;

/// Write-back on the finalizing thread: these tests act at exact points of
/// it, from hooks that recognise the test's own thread.
fn open_path(path: &std::path::Path) -> Cache {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut o = options(Some(&c));
    o.flags |= xnncache::capi::XNNCACHE_FLAG_SYNC_WRITEBACK;
    Cache::open_with(&o)
}
fn register(c: &Cache, w: &[u8], name: &str) {
    let n = CString::new(name).unwrap();
    assert_eq!(xnncache_register_weights(c.0, w.as_ptr().cast(), w.len(), n.as_ptr()), Status::XNNCACHE_OK, "{}", last_error());
}
fn look_up(c: &Cache, k: &Key) -> usize {
    let p = slots(c);
    // SAFETY: our slot, with a key of the generation the cache was opened for.
    unsafe { (p.look_up.unwrap())(p.context, (k as *const Key).cast()) }
}
fn reserve(c: &Cache, n: usize) -> *mut u8 {
    let p = slots(c);
    // SAFETY: our slot.
    let r = unsafe { (p.reserve_space.unwrap())(p.context, n) } as *mut u8;
    assert!(!r.is_null());
    r
}
fn insert(c: &Cache, k: &Key, ptr: *mut u8, n: usize) -> usize {
    let p = slots(c);
    // SAFETY: our slot; `ptr` came from reserve on this cache with `n` bytes.
    unsafe { (p.look_up_or_insert.unwrap())(p.context, (k as *const Key).cast(), ptr.cast(), n) }
}
fn addr(c: &Cache, off: usize) -> *mut u8 {
    let p = slots(c);
    // SAFETY: our slot.
    unsafe { (p.offset_to_addr.unwrap())(p.context, off) as *mut u8 }
}
fn key(w: &[u8], seed: u32) -> Key {
    xnncache_tests::xnnpack::key(seed, w.as_ptr(), std::ptr::null())
}
/// Misses, reserves, fills with `byte`, inserts: what XNNPACK does for one weight.
fn pack(c: &Cache, w: &[u8], seed: u32, n: usize, byte: u8) -> usize {
    let k = key(w, seed);
    assert_eq!(look_up(c, &k), NOT_FOUND);
    let p = reserve(c, n);
    // SAFETY: n reserved bytes.
    unsafe { p.write_bytes(byte, n) };
    insert(c, &k, p, n)
}

/// A file with one committed entry (so that later handles open it REUSED).
fn seed_file(path: &std::path::Path) {
    let w0 = vec![1u8; 256];
    let c = open_path(path);
    register(&c, &w0, "w0");
    pack(&c, &w0, 9, 4096, 0x11);
    c.finalize();
}

/// Look-up miss and reserve on a thread of its own, which then "keeps
/// packing" (returns without inserting): another thread's reservation.
fn reserve_elsewhere(c: &Cache, w: &[u8], seed: u32, n: usize) -> *mut u8 {
    let kernel = w.as_ptr() as usize;
    let p = std::thread::scope(|s| {
        s.spawn(move || {
            let k = xnncache_tests::xnnpack::key(seed, kernel as *const u8, std::ptr::null());
            assert_eq!(look_up(c, &k), NOT_FOUND);
            reserve(c, n) as usize
        })
        .join()
        .unwrap()
    });
    p as *mut u8
}

/// While another thread still packs into the file, finalize seals (writes
/// back) what lies below its space but commits nothing: the index would lie
/// past bytes that are not written yet. The file keeps its last commit.
#[test]
fn finalize_seals_below_a_packing_thread_and_does_not_commit() {
    let dir = TempDir::new("nocommit");
    let path = dir.file("c.bin");
    seed_file(&path);
    let c = open_path(&path);
    let (w, w2) = (vec![3u8; 64], vec![4u8; 64]);
    register(&c, &w, "w");
    register(&c, &w2, "w2");
    let k = key(&w, 1);
    assert_eq!(look_up(&c, &k), NOT_FOUND);
    let n = 4 << 20;
    let p = reserve(&c, n);
    // SAFETY: n reserved bytes.
    unsafe { p.write_bytes(0x5a, n) };
    let off = insert(&c, &k, p, n);
    let q = reserve_elsewhere(&c, &w2, 2, 8192);
    c.finalize();
    assert_eq!(c.stats().commits, 0, "committed while another thread packs into the file");
    // Touch the entry: sealing maps the file's pages afresh.
    // SAFETY: the entry holds n bytes.
    assert!(unsafe { std::slice::from_raw_parts(addr(&c, off), n) }.iter().all(|&b| b == 0x5a));
    let (rss, dirty, _) = file_mapping_usage(&dir.0);
    assert!(rss >= n as u64 / 2, "the sealed pages are not the file's ({rss})");
    assert_eq!(dirty, 0, "finalized file pages are still dirty");
    // Another open still finds the last commit.
    let other = open_path(&path);
    assert_eq!(other.stats().file_state, xnncache::store::FileState::XNNCACHE_FILE_REUSED as u32, "{}", last_error());
    drop(other);
    // The packing thread finishes (from here); the next finalize commits both.
    // SAFETY: 8192 reserved bytes, still writable.
    unsafe { q.write_bytes(0x66, 8192) };
    insert(&c, &key(&w2, 2), q, 8192);
    c.finalize();
    assert_eq!(c.stats().commits, 1);
    drop(c);
    let again = open_path(&path);
    register(&again, &w, "w");
    assert_ne!(look_up(&again, &k), NOT_FOUND);
    assert_eq!(xnncache_verify(again.0), Status::XNNCACHE_OK, "{}", last_error());
}

/// Space another thread reserved (not yet inserted) when finalize runs stays
/// writable.
#[test]
fn a_pending_reservation_survives_finalize() {
    for file in [false, true] {
        let dir = TempDir::new(if file { "pendf" } else { "pendm" });
        let c = if file { open_path(&dir.file("c.bin")) } else { Cache::open(None) };
        let w = vec![3u8; 64];
        let k = key(&w, 1);
        let p = reserve_elsewhere(&c, &w, 1, 8192);
        c.finalize();
        assert_eq!(write_in_child(p), None, "file={file}: finalize sealed a pending reservation");
        // SAFETY: inside the 8192 reserved bytes.
        assert_eq!(write_in_child(unsafe { p.add(8191) }), None);
        // SAFETY: still ours, and writable (checked above).
        unsafe { p.write_bytes(0x77, 8192) };
        let off = insert(&c, &k, p, 8192);
        assert_ne!(off, NOT_FOUND);
        c.finalize();
        // SAFETY: the entry holds 8192 bytes.
        assert!(unsafe { std::slice::from_raw_parts(addr(&c, off), 8192) }.iter().all(|&b| b == 0x77));
    }
}

/// A reservation the finalizing thread itself still holds was abandoned
/// (XNNPACK reserves and inserts within one creation call): finalize gives
/// it back, so it blocks neither the seal nor the commit.
#[test]
fn finalize_drops_its_own_thread_s_abandoned_reservation() {
    let dir = TempDir::new("abandoned");
    let path = dir.file("c.bin");
    let c = open_path(&path);
    let w = vec![3u8; 64];
    register(&c, &w, "w");
    let k = key(&w, 1);
    assert_eq!(look_up(&c, &k), NOT_FOUND);
    reserve(&c, 8192); // an XNNPACK error path: never inserted
    c.finalize();
    assert_eq!(c.stats().commits, 1);
    assert!(xnncache::dropin::xnncache_weights_cache_is_finalized(xnncache::capi::xnncache_provider(c.0)));
}

/// Growth reserves disk blocks for every byte, so a full disk fails growth
/// (and the weights go to the heap) before anything is packed.
#[test]
fn file_growth_reserves_disk_blocks() {
    let dir = TempDir::new("blocks");
    let path = dir.file("c.bin");
    seed_file(&path);
    let c = open_path(&path);
    let w = vec![3u8; 64];
    register(&c, &w, "w");
    let k = key(&w, 1);
    assert_eq!(look_up(&c, &k), NOT_FOUND);
    let before = std::fs::metadata(&path).unwrap();
    let p = reserve(&c, 3 << 20); // grows the file by several MiB, mostly untouched
    let m = std::fs::metadata(&path).unwrap();
    let (grown, backed) = (m.len() - before.len(), (m.blocks() - before.blocks()) * 512);
    assert!(grown >= 3 << 20);
    assert!(backed >= grown, "sparse growth: {grown} bytes, {backed} allocated");
    // SAFETY: reserved bytes.
    unsafe { p.write_bytes(1, 16) };
}

/// While one handle packs into the file, another handle on the same path
/// must not get the same space.
#[test]
fn two_writers_never_share_file_space() {
    let dir = TempDir::new("lock");
    let path = dir.file("c.bin");
    seed_file(&path);
    let (c1, c2) = (open_path(&path), open_path(&path));
    let (w1, w2) = (vec![1u8; 64], vec![2u8; 64]);
    register(&c1, &w1, "w1");
    register(&c2, &w2, "w2");
    let (k1, k2) = (key(&w1, 1), key(&w2, 2));
    assert_eq!(look_up(&c1, &k1), NOT_FOUND);
    let p1 = reserve(&c1, 65536);
    // SAFETY: reserved bytes.
    unsafe { p1.write_bytes(0xa1, 65536) };
    assert_eq!(look_up(&c2, &k2), NOT_FOUND);
    let p2 = reserve(&c2, 65536);
    // SAFETY: reserved bytes.
    unsafe { p2.write_bytes(0xb2, 65536) };
    // SAFETY: c1's reservation is still 65536 bytes it alone writes.
    assert!(unsafe { std::slice::from_raw_parts(p1, 65536) }.iter().all(|&b| b == 0xa1), "c2 wrote into c1's space");
    insert(&c1, &k1, p1, 65536);
    insert(&c2, &k2, p2, 65536);
    c1.finalize();
    c2.finalize();
    assert_eq!(xnncache_verify(c1.0), Status::XNNCACHE_OK, "{}", last_error());
    drop((c1, c2));
    let c3 = open_path(&path);
    assert_eq!(xnncache_verify(c3.0), Status::XNNCACHE_OK, "{}", last_error());
}

/// After another handle compacts (renames a new file over the path), this
/// handle must not "commit" into the orphaned file.
#[test]
fn a_handle_whose_file_was_replaced_persists_nothing_more() {
    let dir = TempDir::new("stale");
    let path = dir.file("c.bin");
    seed_file(&path);
    let c1 = open_path(&path);
    {
        let c2 = open_path(&path);
        assert_eq!(xnncache_compact(c2.0), Status::XNNCACHE_OK, "{}", last_error());
    }
    let w = vec![3u8; 64];
    register(&c1, &w, "w");
    pack(&c1, &w, 1, 4096, 0x33);
    c1.finalize();
    let s = c1.stats();
    assert_eq!((s.commits, s.not_persisted), (0, 1), "{s:?}");
}

/// A handle that packed into heap scratch (lock busy) adopts the other
/// handle's commit of the same key and bytes at insert time; it must fold
/// into that entry, not store a second copy (the key would then name two
/// entries and never be found again). Found as a rare failure of
/// `two_processes_building_one_path_at_once`.
#[test]
fn a_key_both_writers_packed_stays_findable() {
    let dir = TempDir::new("dupkey");
    let path = dir.file("c.bin");
    seed_file(&path);
    let w = vec![5u8; 64];
    let (c1, c2) = (open_path(&path), open_path(&path));
    register(&c1, &w, "w");
    register(&c2, &w, "w");
    let k = key(&w, 1);
    assert_eq!(look_up(&c2, &k), NOT_FOUND);
    assert_eq!(look_up(&c1, &k), NOT_FOUND);
    let p1 = reserve(&c1, 4096); // c1 takes the writer lock
    let p2 = reserve(&c2, 4096); // lock busy: heap scratch
    // SAFETY: reserved bytes.
    unsafe {
        p1.write_bytes(0x42, 4096);
        p2.write_bytes(0x42, 4096);
    }
    insert(&c1, &k, p1, 4096);
    c1.finalize(); // commits and releases the lock
    insert(&c2, &k, p2, 4096); // takes the lock, adopts c1's commit, ...
    c2.finalize();
    drop((c1, c2));
    let c3 = open_path(&path);
    register(&c3, &w, "w");
    assert_ne!(look_up(&c3, &k), NOT_FOUND, "the key names two copies of the same bytes");
}

/// An insert that lands while finalize writes pages back outside the lock is
/// not in that commit: the writer lock stays held until a commit covers it,
/// so another process cannot append over it (or trim below it).
#[test]
fn an_insert_during_write_back_keeps_the_lock_until_committed() {
    let dir = TempDir::new("duringseal");
    let path = dir.file("c.bin");
    seed_file(&path);
    let c1 = open_path(&path);
    let (w1, w2, w3) = (vec![1u8; 64], vec![2u8; 64], vec![3u8; 64]);
    register(&c1, &w1, "a");
    register(&c1, &w2, "b");
    pack(&c1, &w1, 1, 8192, 0xA1);
    // At the first page written back, pack another weight into c1.
    let c1_addr = c1.0 as usize;
    let landed = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = landed.clone();
    let w2_addr = w2.as_ptr() as usize;
    // Tests run in parallel: act only on this test's thread.
    let me = std::thread::current().id();
    xnncache::fault::set_hook(Some(Box::new(move |point| {
        if std::thread::current().id() == me && point == "seal: staged bytes written to the file" && slot.lock().unwrap().is_none() {
            let c = Cache(c1_addr as *mut _);
            // SAFETY: w2 outlives the finalize this runs in.
            let w2 = unsafe { std::slice::from_raw_parts(w2_addr as *const u8, 64) };
            *slot.lock().unwrap() = Some(pack(&c, w2, 2, 256 << 10, 0xC3));
            std::mem::forget(c); // not ours to close
        }
    })));
    c1.finalize();
    xnncache::fault::set_hook(None);
    let off2 = landed.lock().unwrap().expect("the hook ran during the write-back");
    assert_eq!(c1.stats().commits, 1);
    // "Another process": cannot take the lock, so it neither appends over
    // c1's new weight nor trims the file below it.
    {
        let c2 = open_path(&path);
        register(&c2, &w3, "c");
        let off3 = pack(&c2, &w3, 3, 4096, 0xD4);
        assert!((off3 as isize) < 0, "c2 wrote into the file while c1 still uses space past its commit");
        c2.finalize();
        assert_eq!(c2.stats().commits, 0);
    }
    // SAFETY: c1's entry holds 256 KiB.
    assert!(unsafe { std::slice::from_raw_parts(addr(&c1, off2), 256 << 10) }.iter().all(|&b| b == 0xC3));
    c1.finalize();
    assert_eq!(c1.stats().commits, 2, "the second finalize commits the weight inserted during the first");
    drop(c1);
    let c3 = open_path(&path);
    assert_eq!(xnncache_verify(c3.0), Status::XNNCACHE_OK, "{}", last_error());
    register(&c3, &w2, "b");
    assert_ne!(look_up(&c3, &key(&w2, 2)), NOT_FOUND);
}

/// Two caches opened on one descriptor must not both get the writer lock
/// (flock locks belong to an open file description, which a dup shares).
#[test]
fn two_caches_on_one_descriptor_do_not_share_the_lock() {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("fdlock");
    let path = dir.file("c.bin");
    seed_file(&path);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut o = options(None);
    o.fd = f.as_raw_fd();
    let (c1, c2) = (Cache::open_with(&o), Cache::open_with(&o));
    let (w1, w2) = (vec![1u8; 64], vec![2u8; 64]);
    register(&c1, &w1, "a");
    register(&c2, &w2, "b");
    let o1 = pack(&c1, &w1, 1, 8192, 0xA1);
    let o2 = pack(&c2, &w2, 2, 8192, 0xB2);
    assert!((o2 as isize) < 0, "both caches got file space ({o1:#x}, {o2:#x})");
    c1.finalize();
    c2.finalize();
    // SAFETY: c1's entry holds 8192 bytes.
    assert!(unsafe { std::slice::from_raw_parts(addr(&c1, o1), 8192) }.iter().all(|&b| b == 0xA1));
    // A descriptor opened with O_APPEND is refused (pwrite would append).
    let appending = std::fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
    o.fd = appending.as_raw_fd();
    let c3 = Cache::open_with(&o);
    assert_eq!(c3.stats().file_state, xnncache::store::FileState::XNNCACHE_FILE_UNUSABLE as u32);
    assert!(last_error().contains("O_APPEND"), "{}", last_error());
}

/// Without XNNPACK's build identifier nothing touches a file.
#[test]
fn no_build_identifier_means_memory_only() {
    let dir = TempDir::new("nobuildid");
    let path = CString::new(dir.file("c.bin").to_str().unwrap()).unwrap();
    let mut o = options(Some(&path));
    o.build_id_size = 0;
    let c = Cache::open_with(&o);
    assert!(last_error().contains("build identifier"), "{}", last_error());
    let w = vec![3u8; 64];
    pack(&c, &w, 1, 8192, 0x11);
    c.finalize();
    assert_ne!(c.stats().backing, xnncache::cache::Backing::XNNCACHE_BACKING_FILE as u32);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0, "a file was created");
}

/// One registered weight packed two ways under one key (XNNPACK's seed is a
/// XOR of shapes: a square layer and its transposed twin, or a path that
/// packs without looking up): the key links two entries, and its names go
/// into the index once. Both the commit and a compaction's rewrite must give
/// an index the next launch reads (each wrote the name record twice, and the
/// next open rebuilt the file as corrupt).
#[test]
fn a_key_packed_two_ways_keeps_its_file() {
    let dir = TempDir::new("key-two-ways");
    let path = dir.file("cache.bin");
    let w = vec![3u8; 256];
    let reused = xnncache::store::FileState::XNNCACHE_FILE_REUSED as u32;
    {
        let c = open_path(&path);
        register(&c, &w, "square.weight");
        let first = pack(&c, &w, 5, 4096, 0x21);
        // Packed again, the other way, without a look-up: a second entry under the key.
        let p = reserve(&c, 4096);
        // SAFETY: 4096 reserved bytes.
        unsafe { p.write_bytes(0x22, 4096) };
        let second = insert(&c, &key(&w, 5), p, 4096);
        assert_ne!(first, second, "the second packing was folded into the first");
        c.finalize();
        assert_eq!(c.stats().commits, 1, "{}", last_error());
    }
    let one_name_record = || {
        let (header, _, index) = xnncache::store::read_any_committed(&std::fs::File::open(&path).unwrap()).unwrap();
        let len = xnncache::format::index_len(index.payloads.len(), index.keys.len(), index.names.iter().map(|(_, n)| n), &index.programs);
        (index.keys.len(), index.names.len(), header.index_size == len as u64)
    };
    assert_eq!(one_name_record(), (2, 1, true), "two links of one key, named once");
    for round in ["after the commit", "after a compaction"] {
        let c = open_path(&path);
        assert_eq!(c.stats().file_state, reused, "{round}: {}", last_error());
        assert_eq!(c.stats().loaded_entries, 2, "{round}");
        register(&c, &w, "square.weight");
        // Which of its packings a look-up means is unknown, so XNNPACK packs
        // again; both packings are found by content, nothing new is stored.
        for byte in [0x21u8, 0x22] {
            let p = reserve(&c, 4096);
            // SAFETY: 4096 reserved bytes.
            unsafe { p.write_bytes(byte, 4096) };
            let at = insert(&c, &key(&w, 5), p, 4096);
            // SAFETY: an inserted offset resolves to its entry's bytes.
            assert_eq!(unsafe { *addr(&c, at) }, byte, "{round}");
        }
        assert_eq!((c.stats().entries, c.stats().duplicates_folded), (2, 2), "{round}");
        if round == "after the commit" {
            // Both entries were used: the compaction keeps the key's two links.
            assert_eq!(xnncache_compact(c.0), Status::XNNCACHE_OK, "{}", last_error());
            drop(c);
            assert_eq!(one_name_record(), (2, 1, true), "the compaction named the key once");
        }
    }
}

/// A newer build's commit (a slot of a format version this library does not
/// write) lies past ours: its writer may map those bytes. Opening for
/// writing must not append after our older commit: the file is rebuilt
/// beside it and renamed over, and the old file's bytes never change.
#[test]
fn a_file_with_a_newer_format_is_never_written_into() {
    use xnncache::format::{slot_stamp, HEADER_SIZE, SLOT_OFFSETS};
    let dir = TempDir::new("newer-format");
    let path = dir.file("cache.bin");
    seed_file(&path);
    // What a later format would write in the other slot: a higher generation
    // under a checksum that holds, of version FORMAT_VERSION + 1.
    let mut bytes = std::fs::read(&path).unwrap();
    let (from, to) = (SLOT_OFFSETS[0] as usize, SLOT_OFFSETS[1] as usize);
    let mut slot = bytes[from..from + HEADER_SIZE].to_vec();
    slot[8..12].copy_from_slice(&(xnncache::format::FORMAT_VERSION + 1).to_ne_bytes());
    slot[24..32].copy_from_slice(&7u64.to_ne_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&slot[..HEADER_SIZE - 8]);
    slot[HEADER_SIZE - 8..].copy_from_slice(&sum.to_ne_bytes());
    assert_eq!(slot_stamp(&slot).map(|s| s.generation), Some(7));
    bytes[to..to + HEADER_SIZE].copy_from_slice(&slot);
    std::fs::write(&path, &bytes).unwrap();
    let old = std::fs::File::open(&path).unwrap(); // the newer build's file, as it maps it
    let before = bytes;

    let c = open_path(&path);
    assert_eq!(c.stats().file_state, xnncache::store::FileState::XNNCACHE_FILE_REBUILT_INCOMPATIBLE as u32, "{}", last_error());
    let w = vec![4u8; 256];
    register(&c, &w, "w1");
    pack(&c, &w, 3, 1 << 20, 0x44);
    c.finalize();
    assert_eq!(c.stats().commits, 1, "{}", last_error());
    let mut after = Vec::new();
    std::io::Read::read_to_end(&mut &old, &mut after).unwrap();
    assert!(after == before, "the newer build's file changed under it");
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), old.metadata().unwrap().ino(), "not rebuilt beside it");
}
