//! Two caches on one path (standing in for two processes) and finalize
//! interleaved with packing, driven through the provider's slots by hand:
//! writer lock, stale files, pending reservations, write-back without a
//! commit, disk blocks behind growth, and a key both writers packed.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

use xnncache::abi::KeyV1;
use xnncache::capi::{xnncache_compact, xnncache_register_weights, xnncache_verify};
use xnncache::Status;
use xnncache_tests::{file_mapping_usage, last_error, options, slots, write_in_child, Cache, TempDir};

const NOT_FOUND: usize = usize::MAX;

fn open_path(path: &std::path::Path) -> Cache {
    Cache::open(Some(path))
}
fn register(c: &Cache, w: &[u8], name: &str) {
    let n = CString::new(name).unwrap();
    assert_eq!(xnncache_register_weights(c.0, w.as_ptr().cast(), w.len(), n.as_ptr()), Status::XNNCACHE_OK, "{}", last_error());
}
fn look_up(c: &Cache, k: &KeyV1) -> usize {
    let p = slots(c);
    // SAFETY: our slot, with a v1 key (the linked XNNPACK is v1).
    unsafe { (p.look_up.unwrap())(p.context, (k as *const KeyV1).cast()) }
}
fn reserve(c: &Cache, n: usize) -> *mut u8 {
    let p = slots(c);
    // SAFETY: our slot.
    let r = unsafe { (p.reserve_space.unwrap())(p.context, n) } as *mut u8;
    assert!(!r.is_null());
    r
}
fn insert(c: &Cache, k: &KeyV1, ptr: *mut u8, n: usize) -> usize {
    let p = slots(c);
    // SAFETY: our slot; `ptr` came from reserve on this cache with `n` bytes.
    unsafe { (p.look_up_or_insert.unwrap())(p.context, (k as *const KeyV1).cast(), ptr.cast(), n) }
}
fn addr(c: &Cache, off: usize) -> *mut u8 {
    let p = slots(c);
    // SAFETY: our slot.
    unsafe { (p.offset_to_addr.unwrap())(p.context, off) as *mut u8 }
}
fn key(w: &[u8], seed: u32) -> KeyV1 {
    KeyV1 { seed, kernel: w.as_ptr().cast(), bias: std::ptr::null() }
}
/// A file with one committed entry (so that later handles open it REUSED).
fn seed_file(path: &std::path::Path) {
    let w0 = vec![1u8; 256];
    let c = open_path(path);
    register(&c, &w0, "w0");
    let k = key(&w0, 9);
    assert_eq!(look_up(&c, &k), NOT_FOUND);
    let p = reserve(&c, 4096);
    // SAFETY: 4096 reserved bytes.
    unsafe { p.write_bytes(0x11, 4096) };
    insert(&c, &k, p, 4096);
    c.finalize();
}

/// Without a build id nothing is committed, so the seal's own write-back is
/// all there is: finalized pages must still be the file's, and clean.
#[test]
fn finalize_cleans_file_pages_even_without_a_commit() {
    let dir = TempDir::new("nocommit");
    let path = CString::new(dir.file("c.bin").to_str().unwrap()).unwrap();
    let mut o = options(Some(&path));
    o.build_id_size = 0;
    let c = Cache::open_with(&o);
    assert_eq!(c.stats().backing, xnncache::cache::Backing::XNNCACHE_BACKING_FILE as u32, "{}", last_error());
    let w = vec![3u8; 64];
    let k = key(&w, 1);
    assert_eq!(look_up(&c, &k), NOT_FOUND);
    let n = 4 << 20;
    let p = reserve(&c, n);
    // SAFETY: n reserved bytes.
    unsafe { p.write_bytes(0x5a, n) };
    let off = insert(&c, &k, p, n);
    c.finalize();
    assert_eq!(c.stats().commits, 0);
    // Touch the entry: sealing maps the file's pages afresh.
    // SAFETY: the entry holds n bytes.
    assert!(unsafe { std::slice::from_raw_parts(addr(&c, off), n) }.iter().all(|&b| b == 0x5a));
    let (rss, dirty, _) = file_mapping_usage(&dir.0);
    assert!(rss >= n as u64 / 2, "the sealed pages are not the file's ({rss})");
    assert_eq!(dirty, 0, "finalized file pages are still dirty");
}

/// Space reserved (not yet inserted) when finalize runs stays writable.
#[test]
fn a_pending_reservation_survives_finalize() {
    for file in [false, true] {
        let dir = TempDir::new(if file { "pendf" } else { "pendm" });
        let c = if file { open_path(&dir.file("c.bin")) } else { Cache::open(None) };
        let w = vec![3u8; 64];
        let k = key(&w, 1);
        assert_eq!(look_up(&c, &k), NOT_FOUND);
        let p = reserve(&c, 8192);
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
    let k = key(&w, 1);
    assert_eq!(look_up(&c1, &k), NOT_FOUND);
    let p = reserve(&c1, 4096);
    // SAFETY: reserved bytes.
    unsafe { p.write_bytes(0x33, 4096) };
    insert(&c1, &k, p, 4096);
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
