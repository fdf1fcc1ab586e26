//! Every XNNPACK packing path, through the cache, bit for bit against a
//! runtime created without one; then a second runtime over the same cache.

use std::sync::atomic::Ordering;

use xnncache_tests::models::*;
use xnncache_tests::xnnpack::{self, Path};
use xnncache_tests::{Cache, Counting, Model, TempDir};

/// Whether this XNNPACK calls `look_up` before packing `model`, as observed
/// through a counting provider, checked against what the pinned versions do.
fn observe_look_up(name: &str, model: &Model, path: Path) -> bool {
    let cache = Cache::open(None);
    let mut counting = Counting::wrap(cache.provider());
    model.run(counting.provider());
    let observed = counting.look_ups.load(Ordering::Relaxed) > 0;
    if let Some(expected) = xnnpack::looks_up(path) {
        assert_eq!(observed, expected, "{name}: XNNPACK {} does {}call look_up on the {path:?} path", xnnpack::PIN, if observed { "" } else { "not " });
    }
    observed
}

fn check(name: &str, model: Model, path: Path) {
    let looks_up = observe_look_up(name, &model, path);
    let expected = model.run(std::ptr::null_mut());
    let dir = TempDir::new(name);
    for cache in [Cache::open(Some(&dir.file("cache.bin"))), Cache::open(None)] {
        let first = model.run(cache.provider());
        assert_eq!(first, expected, "{name}: first runtime through the cache differs");
        let s1 = cache.stats();
        assert!(s1.entries > 0 && s1.stored_bytes > 0, "{name}: nothing was stored: {s1:?}");
        assert_eq!(s1.heap_fallback_bytes, 0, "{name}: {s1:?}");
        cache.finalize();

        let second = model.run(cache.provider());
        assert_eq!(second, expected, "{name}: second runtime through the cache differs");
        let s2 = cache.stats();
        assert_eq!(s2.entries, s1.entries, "{name}: the second runtime added entries");
        assert_eq!(s2.stored_bytes, s1.stored_bytes, "{name}: the second runtime stored bytes");
        match looks_up {
            true => {
                assert_eq!(s2.packed_bytes, s1.packed_bytes, "{name}: the second runtime packed again");
                assert!(s2.hits >= s1.hits + s1.entries, "{name}: look-ups did not hit: {s2:?}");
            }
            false => {
                // Packed again (XNNPACK never asked), then folded into the stored copy.
                let repacked = s2.packed_bytes - s1.packed_bytes;
                assert!(repacked > 0, "{name}");
                assert_eq!(s2.folded_bytes - s1.folded_bytes, repacked, "{name}: {s2:?}");
            }
        }
        // The finalized cache can still be set up again after more packing.
        cache.finalize();
    }
}

#[test]
fn fully_connected_f32_with_bias() {
    check("fc-f32-bias", fc_f32_bias(), Path::Gemm);
}

#[test]
fn fully_connected_f32_without_bias() {
    check("fc-f32-nobias", fc_f32_no_bias(), Path::Gemm);
}

#[test]
fn fully_connected_f32_transposed_weights() {
    check("fc-f32-transposed", fc_f32_transposed(), Path::Gemm);
}

#[test]
fn fully_connected_qd8_f32_qc8w() {
    check("fc-qd8-qc8w", fc_qd8_qc8w(), Path::Gemm);
}

#[test]
fn fully_connected_qd8_f32_qc4w() {
    check("fc-qd8-qc4w", fc_qd8_qc4w(), Path::Gemm);
}

#[test]
fn fully_connected_qs8() {
    check("fc-qs8", fc_qs8(), Path::Gemm);
}

#[test]
fn convolution_2d_nhwc() {
    check("conv2d", conv2d(), Path::Gemm);
}

#[test]
fn depthwise_convolution_2d() {
    check("depthwise", depthwise(), Path::Depthwise);
}

#[test]
fn channelwise_multiply_add() {
    check("vmulcaddc", channelwise_scale(), Path::Vmulcaddc);
}

#[test]
fn deconvolution_2d() {
    check("deconv2d", deconv2d(), Path::Deconvolution);
}

#[test]
fn a_model_with_every_path() {
    let model = mixed();
    let expected = model.run(std::ptr::null_mut());
    let dir = TempDir::new("mixed");
    let cache = Cache::open(Some(&dir.file("cache.bin")));
    for _ in 0..3 {
        assert_eq!(model.run(cache.provider()), expected);
        cache.finalize();
    }
    let s = cache.stats();
    assert_eq!(s.entries, 6, "six weights, each stored once: {s:?}");
}
