//! Two runtimes over one cache, and one weight in two nodes: stored once.

use std::sync::atomic::Ordering;

use xnncache_tests::models::*;
use xnncache_tests::xnnpack::{self, Path};
use xnncache_tests::{Cache, Counting, TempDir};

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
    // Deconvolution never looks up; depthwise does not on older XNNPACK.
    let blind = [(depthwise(), Path::Depthwise), (deconv2d(), Path::Deconvolution)].into_iter().filter(|(_, p)| xnnpack::looks_up(*p) != Some(true));
    for (model, _) in blind {
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
