//! Every XNNPACK packing path, through the cache, bit for bit against a
//! runtime created without one; then a second runtime over the same cache.

use xnncache_tests::models::*;
use xnncache_tests::{Cache, Model, TempDir};

/// Whether XNNPACK 4ea82e5 calls `look_up` on this path before packing.
#[derive(Clone, Copy, PartialEq)]
enum LooksUp {
    Yes,
    No,
}

fn check(name: &str, model: Model, looks_up: LooksUp) {
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
            LooksUp::Yes => {
                assert_eq!(s2.packed_bytes, s1.packed_bytes, "{name}: the second runtime packed again");
                assert!(s2.hits >= s1.hits + s1.entries, "{name}: look-ups did not hit: {s2:?}");
            }
            LooksUp::No => {
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
    check("fc-f32-bias", fc_f32_bias(), LooksUp::Yes);
}

#[test]
fn fully_connected_f32_without_bias() {
    check("fc-f32-nobias", fc_f32_no_bias(), LooksUp::Yes);
}

#[test]
fn fully_connected_f32_transposed_weights() {
    check("fc-f32-transposed", fc_f32_transposed(), LooksUp::Yes);
}

#[test]
fn fully_connected_qd8_f32_qc8w() {
    check("fc-qd8-qc8w", fc_qd8_qc8w(), LooksUp::Yes);
}

#[test]
fn fully_connected_qd8_f32_qc4w() {
    check("fc-qd8-qc4w", fc_qd8_qc4w(), LooksUp::Yes);
}

#[test]
fn fully_connected_qs8() {
    check("fc-qs8", fc_qs8(), LooksUp::Yes);
}

#[test]
fn convolution_2d_nhwc() {
    check("conv2d", conv2d(), LooksUp::Yes);
}

#[test]
fn depthwise_convolution_2d() {
    check("depthwise", depthwise(), LooksUp::No);
}

#[test]
fn channelwise_multiply_add() {
    check("vmulcaddc", channelwise_scale(), LooksUp::No);
}

#[test]
fn deconvolution_2d() {
    check("deconv2d", deconv2d(), LooksUp::No);
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
