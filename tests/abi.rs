//! The provider's callbacks driven by hand with keys and providers of each ABI
//! generation: v1 (24-byte key, what XNNPACK 4ea82e5 passes), v2 (32-byte key
//! with `fingerprint_id`) and v3 (v2 plus the `alias_data` slot).

use std::ffi::c_void;
use std::mem::size_of;

use xnncache::abi::{KeyV1, KeyV2, ProviderV3};
use xnncache::capi::xnncache_open;
use xnncache_tests::{options, slots, Cache};

const NOT_FOUND: usize = usize::MAX;

fn open(key_size: usize, provider_size: usize) -> Cache {
    let mut o = options(None);
    o.key_size = key_size as u32;
    o.provider_size = provider_size as u32;
    Cache::open_with(&o)
}

/// Packs `bytes` like XNNPACK would: reserve, fill, insert.
fn pack(p: &ProviderV3, key: *const c_void, bytes: &[u8]) -> usize {
    // SAFETY: the slots are ours; the reserved space holds `bytes.len()` bytes.
    unsafe {
        let ptr = (p.reserve_space.unwrap())(p.context, bytes.len()) as *mut u8;
        assert!(!ptr.is_null());
        assert_eq!(ptr as usize % 64, 0, "packed weights must be 64-byte aligned");
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len());
        (p.look_up_or_insert.unwrap())(p.context, key, ptr.cast(), bytes.len())
    }
}

fn look_up(p: &ProviderV3, key: *const c_void) -> usize {
    // SAFETY: our slot, with a key of the generation the cache was opened for.
    unsafe { (p.look_up.unwrap())(p.context, key) }
}

fn read(p: &ProviderV3, offset: usize, len: usize) -> Vec<u8> {
    // SAFETY: `offset` came from this cache; the entry holds `len` bytes.
    unsafe { std::slice::from_raw_parts((p.offset_to_addr.unwrap())(p.context, offset) as *const u8, len).to_vec() }
}

/// A v1 key placed right before an inaccessible page: reading one byte past
/// its 24 bytes would crash the test.
struct GuardedKey {
    base: *mut u8,
    page: usize,
}

impl GuardedKey {
    fn new(key: KeyV1) -> GuardedKey {
        // SAFETY: plain anonymous mappings of our own; the second page is made inaccessible.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let base = libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            assert_ne!(base, libc::MAP_FAILED);
            let base = base as *mut u8;
            assert_eq!(libc::mprotect(base.add(page).cast(), page, libc::PROT_NONE), 0);
            std::ptr::write_unaligned(base.add(page - size_of::<KeyV1>()) as *mut KeyV1, key);
            GuardedKey { base, page }
        }
    }
    fn ptr(&self) -> *const c_void {
        // SAFETY: inside the first page.
        unsafe { self.base.add(self.page - size_of::<KeyV1>()).cast() }
    }
}

impl Drop for GuardedKey {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base.cast(), 2 * self.page) };
    }
}

#[test]
fn the_linked_xnnpack_has_a_known_generation() {
    let (key, provider) = (size_of::<xnnpack_sys::xnn_weights_cache_look_up_key>(), size_of::<xnnpack_sys::xnn_weights_cache_provider>());
    let generation = xnncache_tests::xnnpack::generation();
    let want = match generation {
        1 => (size_of::<KeyV1>(), 7 * size_of::<usize>()),
        2 => (size_of::<KeyV2>(), 7 * size_of::<usize>()),
        _ => (size_of::<KeyV2>(), size_of::<ProviderV3>()),
    };
    assert_eq!((key, provider), want, "XNNPACK {} (generation {generation})", xnncache_tests::xnnpack::PIN);
    match xnncache_tests::xnnpack::PIN {
        "4ea82e5" => assert_eq!(generation, 1),
        "92a7ad5" => assert_eq!(generation, 3),
        _ => {}
    }
    // A cache opened with those sizes reports the same generation.
    let mut o = options(None);
    (o.key_size, o.provider_size) = (key as u32, provider as u32);
    assert_eq!(Cache::open_with(&o).stats().abi_generation, generation);
}

#[test]
fn v1_keys_are_read_without_going_past_24_bytes() {
    let cache = open(size_of::<KeyV1>(), 56);
    let p = slots(&cache);
    let kernel = [1u8; 16];
    let key = GuardedKey::new(KeyV1 { seed: 5, kernel: kernel.as_ptr().cast(), bias: std::ptr::null() });
    assert_eq!(look_up(p, key.ptr()), NOT_FOUND);
    let bytes: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    let off = pack(p, key.ptr(), &bytes);
    assert_ne!(off, NOT_FOUND);
    assert_eq!(look_up(p, key.ptr()), off);
    assert_eq!(read(p, off, bytes.len()), bytes);
    assert_eq!(cache.stats().abi_generation, 1);
}

#[test]
fn v2_fingerprints_tell_packings_apart() {
    let cache = open(size_of::<KeyV2>(), 56);
    let p = slots(&cache);
    let kernel = [2u8; 16];
    let key = |fp| KeyV2 { seed: 9, kernel: kernel.as_ptr().cast(), bias: std::ptr::null(), fingerprint_id: fp };
    let (k1, k2) = (key(1), key(2));
    let a = pack(p, &k1 as *const KeyV2 as *const c_void, &[7u8; 640]);
    assert_eq!(look_up(p, &k1 as *const KeyV2 as *const c_void), a);
    assert_eq!(look_up(p, &k2 as *const KeyV2 as *const c_void), NOT_FOUND, "another fingerprint is another packing");
    let b = pack(p, &k2 as *const KeyV2 as *const c_void, &[8u8; 640]);
    assert_ne!(a, b);
    assert_eq!(look_up(p, &k2 as *const KeyV2 as *const c_void), b);
    assert_eq!(cache.stats().abi_generation, 2);
}

#[test]
fn v3_alias_data_resolves_to_the_original_entry() {
    assert_eq!(size_of::<ProviderV3>(), size_of::<[usize; 8]>(), "eight pointer-sized slots");
    let cache = open(size_of::<KeyV2>(), size_of::<ProviderV3>());
    let p = slots(&cache);
    assert!(p.alias_data.is_some(), "a v3 XNNPACK calls alias_data when it is set");
    let (original, alias) = ([3u8; 32], [3u8; 32]);
    let key = |k: &[u8; 32]| KeyV2 { seed: 1, kernel: k.as_ptr().cast(), bias: std::ptr::null(), fingerprint_id: 4 };
    let (ko, ka) = (key(&original), key(&alias));
    let off = pack(p, &ko as *const KeyV2 as *const c_void, &[5u8; 128]);
    assert_eq!(look_up(p, &ka as *const KeyV2 as *const c_void), NOT_FOUND);
    // SAFETY: our slot; both pointers are plain addresses to us.
    let status = unsafe { (p.alias_data.unwrap())(p.context, alias.as_ptr() as *mut c_void, original.as_ptr() as *mut c_void) };
    assert_eq!(status, 0);
    assert_eq!(look_up(p, &ka as *const KeyV2 as *const c_void), off);
    // SAFETY: as above; NULL pointers are refused, not dereferenced.
    let status = unsafe { (p.alias_data.unwrap())(p.context, std::ptr::null_mut(), original.as_ptr() as *mut c_void) };
    assert_ne!(status, 0);
    assert_eq!(cache.stats().abi_generation, 3);
}

#[test]
fn a_provider_is_always_allocated_at_the_v3_size() {
    // Even for a v1 caller, the eighth slot exists and is ours, so a v3
    // XNNPACK handed this provider reads memory that belongs to it.
    let cache = open(size_of::<KeyV1>(), 56);
    assert!(slots(&cache).alias_data.is_some());
}

#[test]
fn mismatched_sizes_are_refused() {
    for (k, p) in [(size_of::<KeyV1>(), size_of::<ProviderV3>()), (16, 56), (32, 72)] {
        let mut o = options(None);
        o.key_size = k as u32;
        o.provider_size = p as u32;
        let mut h = std::ptr::null_mut();
        assert_eq!(xnncache_open(&o, &mut h), xnncache::Status::XNNCACHE_UNSUPPORTED_ABI, "{k}/{p}");
        assert!(h.is_null());
    }
}

#[test]
fn the_callbacks_survive_what_xnnpack_may_pass() {
    let cache = open(size_of::<KeyV1>(), 56);
    let p = slots(&cache);
    let kernel = [4u8; 8];
    let key = KeyV1 { seed: 3, kernel: kernel.as_ptr().cast(), bias: std::ptr::null() };
    let kp = &key as *const KeyV1 as *const c_void;
    // SAFETY: our slots, called with NULL and unknown values on purpose.
    unsafe {
        assert_eq!((p.look_up.unwrap())(p.context, std::ptr::null()), NOT_FOUND);
        assert_eq!((p.look_up.unwrap())(std::ptr::null_mut(), kp), NOT_FOUND);
        assert!((p.offset_to_addr.unwrap())(p.context, 12345678).is_null());
        assert!((p.offset_to_addr.unwrap())(p.context, NOT_FOUND).is_null());
        // NULL ptr: a plain look-up.
        assert_eq!((p.look_up_or_insert.unwrap())(p.context, kp, std::ptr::null_mut(), 64), NOT_FOUND);
        assert!((p.is_finalized.unwrap())(p.context));
    }
    let bytes = [9u8; 200];
    let off = pack(p, kp, &bytes);
    // SAFETY: as above.
    unsafe {
        assert_eq!((p.look_up_or_insert.unwrap())(p.context, kp, std::ptr::null_mut(), 256), off, "NULL ptr after a hit");
        // A reserve that is never inserted is superseded by the next one, which reuses its space.
        let a = (p.reserve_space.unwrap())(p.context, 4096);
        let b = (p.reserve_space.unwrap())(p.context, 4096);
        assert_eq!(a, b);
        // Inserting bytes from memory we never handed out copies them.
        let foreign = vec![6u8; 256];
        let key2 = KeyV1 { seed: 4, ..key };
        let off2 = (p.look_up_or_insert.unwrap())(p.context, &key2 as *const KeyV1 as *const c_void, foreign.as_ptr() as *mut c_void, 256);
        assert_ne!(off2, NOT_FOUND);
        assert_eq!(read(p, off2, 256), foreign);
    }
}

#[test]
fn ambiguous_keys_are_not_answered_and_duplicates_fold() {
    let cache = open(size_of::<KeyV1>(), 56);
    let p = slots(&cache);
    let kernel = [1u8; 8];
    // XNNPACK's seed is a XOR of shapes: a transposed layer gets the same key.
    let key = KeyV1 { seed: 77, kernel: kernel.as_ptr().cast(), bias: std::ptr::null() };
    let kp = &key as *const KeyV1 as *const c_void;
    let a = pack(p, kp, &[1u8; 512]);
    assert_eq!(look_up(p, kp), a);
    let b = pack(p, kp, &[2u8; 512]);
    assert_ne!(a, b);
    assert_eq!(look_up(p, kp), NOT_FOUND, "two packings under one key: look_up must not guess");
    // Packing either again finds the right one by content.
    assert_eq!(pack(p, kp, &[2u8; 512]), b);
    assert_eq!(pack(p, kp, &[1u8; 512]), a);
    let s = cache.stats();
    assert_eq!((s.entries, s.duplicates_folded), (2, 2));
}

/// Keys XNNPACK itself made (recorded by a counting provider while a real
/// runtime packed), asked again with another `fingerprint_id`: an entry
/// packed for one packing is never answered for another, whether the key is
/// persistent (registered weights) or in-process.
#[cfg(xnnpack_fingerprint)]
#[test]
fn an_entry_is_never_answered_for_another_fingerprint() {
    use xnncache_tests::models::{fc_f32_bias, fc_qd8_qc4w};
    for registered in [false, true] {
        for model in [fc_f32_bias(), fc_qd8_qc4w()] {
            let cache = Cache::open(None);
            if registered {
                model.register(&cache, true);
            }
            let mut counting = xnncache_tests::Counting::wrap(cache.provider());
            model.run(counting.provider());
            let keys = counting.keys.lock().unwrap().clone();
            assert!(!keys.is_empty(), "XNNPACK looked nothing up");
            let p = slots(&cache);
            for key in keys {
                let ask = |k: &xnnpack_sys::xnn_weights_cache_look_up_key| look_up(p, (k as *const xnnpack_sys::xnn_weights_cache_look_up_key).cast());
                assert_ne!(ask(&key), NOT_FOUND, "the packing XNNPACK inserted is found by its own key");
                let other = xnnpack_sys::xnn_weights_cache_look_up_key { fingerprint_id: key.fingerprint_id ^ 1, ..key };
                assert_eq!(ask(&other), NOT_FOUND, "registered={registered}: answered for fingerprint {} with a packing for {}", other.fingerprint_id, key.fingerprint_id);
            }
        }
    }
}
