//! Two runtimes over one cache, and one weight in two nodes: stored once.

use std::sync::atomic::{AtomicU64, Ordering};

use xnncache_tests::models::*;
use xnncache_tests::{Cache, TempDir};
use xnnpack_sys as x;

/// A provider that forwards to another and counts what XNNPACK asks of it:
/// an independent witness of packing, not our own stats.
#[repr(C)]
struct Counting {
    provider: x::xnn_weights_cache_provider,
    inner: x::xnn_weights_cache_t,
    reserves: AtomicU64,
    reserved_bytes: AtomicU64,
}

impl Counting {
    fn wrap(inner: x::xnn_weights_cache_t) -> Box<Counting> {
        let mut c = Box::new(Counting {
            // SAFETY: all-zero is a valid provider (NULL context and slots) until filled in below.
            provider: unsafe { std::mem::zeroed() },
            inner,
            reserves: AtomicU64::new(0),
            reserved_bytes: AtomicU64::new(0),
        });
        c.provider.context = &*c as *const Counting as *mut _;
        c.provider.look_up = Some(look_up);
        c.provider.reserve_space = Some(reserve_space);
        c.provider.look_up_or_insert = Some(look_up_or_insert);
        c.provider.is_finalized = Some(is_finalized);
        c.provider.offset_to_addr = Some(offset_to_addr);
        c
    }
    fn provider(&mut self) -> x::xnn_weights_cache_t {
        &mut self.provider
    }
}

fn inner(ctx: *mut std::ffi::c_void) -> &'static Counting {
    // SAFETY: the context is the boxed `Counting`, alive for the whole test.
    unsafe { &*(ctx as *const Counting) }
}

unsafe extern "C" fn look_up(ctx: *mut std::ffi::c_void, key: *const x::xnn_weights_cache_look_up_key) -> usize {
    let c = inner(ctx);
    // SAFETY: forwarding to the wrapped provider with XNNPACK's own arguments.
    unsafe { ((*c.inner).look_up.unwrap())((*c.inner).context, key) }
}
unsafe extern "C" fn reserve_space(ctx: *mut std::ffi::c_void, n: usize) -> *mut std::ffi::c_void {
    let c = inner(ctx);
    c.reserves.fetch_add(1, Ordering::Relaxed);
    c.reserved_bytes.fetch_add(n as u64, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { ((*c.inner).reserve_space.unwrap())((*c.inner).context, n) }
}
unsafe extern "C" fn look_up_or_insert(
    ctx: *mut std::ffi::c_void,
    key: *const x::xnn_weights_cache_look_up_key,
    ptr: *mut std::ffi::c_void,
    size: usize,
) -> usize {
    let c = inner(ctx);
    // SAFETY: as above.
    unsafe { ((*c.inner).look_up_or_insert.unwrap())((*c.inner).context, key, ptr, size) }
}
unsafe extern "C" fn is_finalized(ctx: *mut std::ffi::c_void) -> bool {
    let c = inner(ctx);
    // SAFETY: as above.
    unsafe { ((*c.inner).is_finalized.unwrap())((*c.inner).context) }
}
unsafe extern "C" fn offset_to_addr(ctx: *mut std::ffi::c_void, offset: usize) -> *mut std::ffi::c_void {
    let c = inner(ctx);
    // SAFETY: as above.
    unsafe { ((*c.inner).offset_to_addr.unwrap())((*c.inner).context, offset) }
}

#[test]
fn a_second_runtime_packs_nothing_the_first_packed() {
    let dir = TempDir::new("second-runtime");
    let cache = Cache::open(Some(&dir.file("cache.bin")));
    for model in [fc_f32_bias(), fc_qd8_qc8w(), fc_qd8_qc4w(), fc_qs8(), conv2d()] {
        let expected = model.run(std::ptr::null_mut());
        let mut first = Counting::wrap(cache.provider());
        assert_eq!(model.run(first.provider()), expected);
        assert!(first.reserves.load(Ordering::Relaxed) > 0, "the first runtime must pack");
        cache.finalize();
        let mut second = Counting::wrap(cache.provider());
        assert_eq!(model.run(second.provider()), expected);
        assert_eq!(second.reserves.load(Ordering::Relaxed), 0, "the second runtime reserved space to pack");
    }
}

#[test]
fn one_weight_in_two_nodes_and_a_copy_of_it_are_stored_once() {
    let model = shared_weights();
    let expected = model.run(std::ptr::null_mut());
    let cache = Cache::open(None);
    let mut counting = Counting::wrap(cache.provider());
    assert_eq!(model.run(counting.provider()), expected);
    let s = cache.stats();
    // Node 2 finds node 1's weight by look-up; node 3's copy is folded by content.
    assert_eq!(s.entries, 1, "{s:?}");
    assert_eq!(counting.reserves.load(Ordering::Relaxed), 2, "node 2 must not pack: {s:?}");
    assert_eq!(s.duplicates_folded, 1, "{s:?}");
    assert_eq!(s.stored_bytes, s.folded_bytes, "{s:?}");
    assert!(s.hits >= 1, "{s:?}");
}

#[test]
fn paths_without_look_up_fold_into_the_stored_copy() {
    let dir = TempDir::new("no-look-up");
    let cache = Cache::open(Some(&dir.file("cache.bin")));
    for model in [depthwise(), deconv2d()] {
        let expected = model.run(std::ptr::null_mut());
        assert_eq!(model.run(cache.provider()), expected);
        let s1 = cache.stats();
        let file1 = s1.file_size;
        cache.finalize();
        for _ in 0..3 {
            assert_eq!(model.run(cache.provider()), expected);
        }
        let s2 = cache.stats();
        assert_eq!((s2.entries, s2.stored_bytes), (s1.entries, s1.stored_bytes), "{s2:?}");
        assert_eq!(s2.duplicates_folded - s1.duplicates_folded, 3);
        // Scratch space was given back, so the file did not grow per runtime.
        assert!(s2.file_size <= file1 + 2 * 4096 * 3, "{} -> {}", file1, s2.file_size);
    }
}
