//! `alias_data` records, registrations and pointer-keyed look-ups must never
//! outlive the memory they name.
//!
//! A v3 XNNPACK converts fp16 constants to fp32 copies, calls
//! `alias_data(copy, original)`, and frees the copies with the runtime. When
//! another model's fp32 weights later land in that freed memory, a stale
//! alias would answer their look-up with the fp16 model's packing: wrong
//! outputs. Each scenario runs in a child process whose XNNPACK allocates
//! through a recycling allocator, so that the new weights are placed at
//! exactly the addresses of the freed copies (what malloc does by chance).

#[cfg(xnnpack_alias_data)]
mod v3 {
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use xnncache_tests::models::fc_f16_fallback;
    use xnncache_tests::{init_with_allocator, last_error, run_child, Cache, Counting, Model, Rng, TempDir};
    use xnnpack_sys as x;

    /// Blocks by address (with their sizes), and freed blocks by size: a
    /// freed block is handed out again for the next request of its size.
    #[derive(Default)]
    struct Recycler {
        live: HashMap<usize, usize>,
        free: HashMap<usize, Vec<usize>>,
    }

    static RECYCLER: Mutex<Option<Recycler>> = Mutex::new(None);

    fn with<T>(f: impl FnOnce(&mut Recycler) -> T) -> T {
        f(RECYCLER.lock().unwrap().get_or_insert_with(Recycler::default))
    }

    /// 64-byte aligned blocks of `size` bytes, reused after a free.
    fn take(size: usize) -> *mut c_void {
        if let Some(p) = with(|r| r.free.get_mut(&size).and_then(Vec::pop)) {
            with(|r| r.live.insert(p, size));
            return p as *mut c_void;
        }
        let mut p = std::ptr::null_mut();
        // SAFETY: plain allocation; never freed (the child process exits).
        assert_eq!(unsafe { libc::posix_memalign(&mut p, 64, size.max(1)) }, 0);
        with(|r| r.live.insert(p as usize, size));
        p
    }

    fn give(p: *mut c_void) {
        with(|r| {
            if let Some(size) = r.live.remove(&(p as usize)) {
                r.free.entry(size).or_default().push(p as usize);
            }
        });
    }

    unsafe extern "C" fn allocate(_: *mut c_void, size: usize) -> *mut c_void {
        take(size)
    }
    unsafe extern "C" fn reallocate(_: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
        let old = with(|r| r.live.get(&(p as usize)).copied()).unwrap_or(0);
        let q = take(size);
        if !p.is_null() {
            // SAFETY: both blocks hold at least min(old, size) bytes.
            unsafe { std::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old.min(size)) };
            give(p);
        }
        q
    }
    unsafe extern "C" fn deallocate(_: *mut c_void, p: *mut c_void) {
        give(p)
    }
    unsafe extern "C" fn aligned_allocate(_: *mut c_void, alignment: usize, size: usize) -> *mut c_void {
        assert!(alignment <= 64, "XNNPACK asked for {alignment}-byte alignment");
        take(size)
    }

    struct Shared(x::xnn_allocator);
    // SAFETY: the allocator's context is NULL and its functions are thread-safe.
    unsafe impl Sync for Shared {}

    static ALLOCATOR: Shared = Shared(x::xnn_allocator {
        context: std::ptr::null_mut(),
        allocate: Some(allocate),
        reallocate: Some(reallocate),
        deallocate: Some(deallocate),
        aligned_allocate: Some(aligned_allocate),
        aligned_deallocate: Some(deallocate),
    });

    /// Where the second model's filter and bias were placed.
    static FILTER: AtomicUsize = AtomicUsize::new(0);
    static BIAS: AtomicUsize = AtomicUsize::new(0);

    /// fp32 fully connected of the fp16 model's shape (so XNNPACK's seed is
    /// the same), whose weights are at FILTER and BIAS.
    fn fc_f32_placed() -> Model {
        Model::named("placed", |b| {
            let input = b.input(&[3, 256]);
            let filter = b.f32_const_at(&[320, 256], FILTER.load(Ordering::Relaxed) as *const u8);
            let bias = b.f32_const_at(&[320], BIAS.load(Ordering::Relaxed) as *const u8);
            let output = b.output(&[3, 320]);
            b.fully_connected(input, filter, Some(bias), output, 0);
        })
    }

    fn register(cache: &Cache, data: usize, size: usize, name: &str) {
        let name = std::ffi::CString::new(name).unwrap();
        let s = xnncache::capi::xnncache_register_weights(cache.0, data as *const c_void, size, name.as_ptr());
        assert_eq!(s, xnncache::Status::XNNCACHE_OK, "{}", last_error());
    }

    /// The scenario, in a child process. `T_VARIANT` says what happens
    /// between the fp16 model's runtime and the fp32 model's:
    /// - `finalize`: the first runtime runs, the cache is finalized;
    /// - `registered`: the first runtime is only created; the new weights are registered;
    /// - `ran`: the first runtime runs; the new weights are not registered;
    /// - `unregistered`: the first runtime is only created; the host
    ///   unregisters the freed copies' memory; the new weights are not registered.
    #[test]
    #[ignore = "run by freed_copies_reused_for_other_weights_are_never_answered_by_alias"]
    fn child_stale_alias() {
        init_with_allocator(Some(&ALLOCATOR.0));
        let variant = std::env::var("T_VARIANT").unwrap();
        let dir = TempDir::new(&format!("stale-alias-{variant}"));
        let path = std::ffi::CString::new(dir.file("c.xnncache").into_os_string().into_encoded_bytes()).unwrap();
        let cache = Cache::open_with(&xnncache_tests::options(Some(&path)));

        let a = fc_f16_fallback();
        a.register(&cache, true);
        let mut counting = Counting::wrap(cache.provider());
        match variant.as_str() {
            "finalize" | "ran" => {
                a.run(counting.provider());
            }
            _ => drop(a.create(counting.provider()).expect("create")),
        }
        if variant == "finalize" {
            cache.finalize();
        }
        // The runtime and its fp32 copies are gone; take their memory back.
        let pairs = counting.alias_pairs.lock().unwrap().clone();
        assert_eq!(pairs.len(), 2, "the fp16 filter and bias were not converted: {pairs:?}");
        let sizes: Vec<usize> = pairs.iter().map(|(copy, _)| with(|r| r.free.iter().find(|(_, v)| v.contains(copy)).map(|(&s, _)| s)).expect("the copy was freed")).collect();
        let placed: Vec<usize> = sizes.iter().map(|&s| take(s) as usize).collect();
        assert_eq!(placed, pairs.iter().map(|p| p.0).collect::<Vec<_>>(), "the new weights did not land on the freed copies");
        // The new model's weights, of the same shapes, other values.
        let (filter, bias) = if sizes[0] > sizes[1] { (placed[0], placed[1]) } else { (placed[1], placed[0]) };
        let mut rng = Rng::new(99);
        // SAFETY: the blocks hold the fp32 copies' sizes: 320x256 and 320 floats.
        unsafe {
            std::slice::from_raw_parts_mut(filter as *mut f32, 320 * 256).iter_mut().for_each(|v| *v = rng.f32() * 0.1);
            std::slice::from_raw_parts_mut(bias as *mut f32, 320).iter_mut().for_each(|v| *v = rng.f32());
        }
        FILTER.store(filter, Ordering::Relaxed);
        BIAS.store(bias, Ordering::Relaxed);
        match variant.as_str() {
            "finalize" | "registered" => {
                register(&cache, filter, 320 * 256 * 4, "b.filter");
                register(&cache, bias, 320 * 4, "b.bias");
            }
            "unregistered" => {
                for &p in &placed {
                    let s = xnncache::capi::xnncache_unregister_weights(cache.0, p as *const c_void, 4);
                    assert_eq!(s, xnncache::Status::XNNCACHE_OK);
                }
            }
            _ => {}
        }
        let b = fc_f32_placed();
        let expected = b.run(std::ptr::null_mut());
        let mut second = Counting::wrap(cache.provider());
        let got = b.run(second.provider());
        assert_eq!(got, expected, "{variant}: the new model's outputs through the cache differ");
        assert!(second.reserves.load(Ordering::Relaxed) > 0, "{variant}: the new model's weights were answered with another model's packing");
        println!("RESULT ok");
    }

    #[test]
    fn freed_copies_reused_for_other_weights_are_never_answered_by_alias() {
        for variant in ["finalize", "registered", "ran", "unregistered"] {
            let out = run_child("v3::child_stale_alias", &[("T_VARIANT", variant)], None);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("RESULT ok"),
                "{variant}: {:?}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Before v3 XNNPACK has no `alias_data`: the provider it is given has the
/// slot anyway (a v3 XNNPACK reads it), and this one never calls it.
#[cfg(not(xnnpack_alias_data))]
#[test]
fn this_xnnpack_has_no_alias_slot() {
    assert!(xnncache_tests::xnnpack::generation() < 3);
}
