//! The models the tests run: one per XNNPACK packing path, and mixes.
//!
//! Sizes are small enough for debug builds, large enough that every packed
//! weight spans several pages.

use super::{Builder, Model};
use xnnpack_sys as x;

const BATCH: usize = 3;
const IN: usize = 256;
const OUT: usize = 320;

fn fc_f32(b: &mut Builder, bias: bool, transposed: bool) {
    let input = b.input(&[BATCH, IN]);
    let filter = if transposed { b.f32_const(&[IN, OUT], 0.1) } else { b.f32_const(&[OUT, IN], 0.1) };
    let bias = bias.then(|| b.f32_const(&[OUT], 1.0));
    let output = b.output(&[BATCH, OUT]);
    let flags = if transposed { x::XNN_FLAG_TRANSPOSE_WEIGHTS } else { 0 };
    b.fully_connected(input, filter, bias, output, flags);
}

/// fp32 fully connected with bias.
pub fn fc_f32_bias() -> Model {
    Model::named("fc_f32_bias", |b| fc_f32(b, true, false))
}

/// fp32 fully connected without bias.
pub fn fc_f32_no_bias() -> Model {
    Model::named("fc_f32_no_bias", |b| fc_f32(b, false, false))
}

/// fp32 fully connected with [in, out] weights (`XNN_FLAG_TRANSPOSE_WEIGHTS`).
pub fn fc_f32_transposed() -> Model {
    Model::named("fc_f32_transposed", |b| fc_f32(b, true, true))
}

/// Dynamically quantized int8 activations, per-channel int8 weights (qd8-f32-qc8w).
pub fn fc_qd8_qc8w() -> Model {
    Model::named("fc_qd8_qc8w", |b| {
        let input = b.input(&[BATCH, IN]);
        let q = b.dynamic_qd8(input, &[BATCH, IN]);
        let filter = b.qc8_const(&[OUT, IN]);
        let bias = b.f32_const(&[OUT], 1.0);
        let output = b.output(&[BATCH, OUT]);
        b.fully_connected(q, filter, Some(bias), output, 0);
    })
}

/// Dynamically quantized int8 activations, per-channel 4-bit weights (qd8-f32-qc4w).
pub fn fc_qd8_qc4w() -> Model {
    Model::named("fc_qd8_qc4w", |b| {
        let input = b.input(&[BATCH, IN]);
        let q = b.dynamic_qd8(input, &[BATCH, IN]);
        let filter = b.qc4_const(&[OUT, IN]);
        let bias = b.f32_const(&[OUT], 1.0);
        let output = b.output(&[BATCH, OUT]);
        b.fully_connected(q, filter, Some(bias), output, 0);
    })
}

/// Quantized int8 everything (qs8), with fp32 converts at both ends.
pub fn fc_qs8() -> Model {
    Model::named("fc_qs8", |b| {
        let input = b.input(&[BATCH, IN]);
        let (in_scale, w_scale) = (0.02, 0.01);
        let q_in = b.qs8(&[BATCH, IN], in_scale, 1, false);
        b.convert(input, q_in);
        let filter = b.qs8(&[OUT, IN], w_scale, 0, true);
        let bias = b.qs32_const(OUT, in_scale * w_scale);
        let q_out = b.qs8(&[BATCH, OUT], 0.5, -3, false);
        b.fully_connected(q_in, filter, Some(bias), q_out, 0);
        let output = b.output(&[BATCH, OUT]);
        b.convert(q_out, output);
    })
}

/// NHWC 3x3 convolution (the GEMM/IGEMM path, which looks weights up).
pub fn conv2d() -> Model {
    Model::named("conv2d", |b| {
        let input = b.input(&[1, 12, 12, 16]);
        let filter = b.f32_const(&[32, 3, 3, 16], 0.1);
        let bias = b.f32_const(&[32], 1.0);
        let output = b.output(&[1, 12, 12, 32]);
        b.conv2d(input, filter, Some(bias), output, 3, 1, 1, 16, 32);
    })
}

/// Depthwise 3x3 convolution, defined as a convolution with one channel per
/// group: the path (dwconv) that never calls `look_up` on 4ea82e5. (That
/// version's `xnn_define_depthwise_convolution_2d` passes no weights cache to
/// its fp32 operator at all, so it cannot exercise the cache.)
pub fn depthwise() -> Model {
    Model::named("depthwise", |b| {
        let input = b.input(&[1, 12, 12, 64]);
        let filter = b.f32_const(&[64, 3, 3, 1], 0.1);
        let bias = b.f32_const(&[64], 1.0);
        let output = b.output(&[1, 12, 12, 64]);
        b.conv2d(input, filter, Some(bias), output, 3, 1, 64, 1, 1);
    })
}

/// A 1x1 convolution with one channel per group: a per-channel multiply-add
/// (vmulcaddc), another path without `look_up`.
pub fn channelwise_scale() -> Model {
    Model::named("channelwise_scale", |b| {
        let input = b.input(&[1, 12, 12, 64]);
        let filter = b.f32_const(&[64, 1, 1, 1], 1.0);
        let bias = b.f32_const(&[64], 1.0);
        let output = b.output(&[1, 12, 12, 64]);
        b.conv2d(input, filter, Some(bias), output, 1, 1, 64, 1, 1);
    })
}

/// 2x2 stride-2 deconvolution (never calls `look_up`).
pub fn deconv2d() -> Model {
    Model::named("deconv2d", |b| {
        let input = b.input(&[1, 8, 8, 32]);
        let filter = b.f32_const(&[48, 2, 2, 32], 0.1);
        let bias = b.f32_const(&[48], 1.0);
        let output = b.output(&[1, 16, 16, 48]);
        b.deconv2d(input, filter, Some(bias), output, 32, 48);
    })
}

/// Every path at once: fp32, qd8-qc8w and qd8-qc4w fully connected layers, a
/// convolution, a depthwise convolution and a deconvolution.
pub fn mixed() -> Model {
    Model::named("mixed", |b| {
        let input = b.input(&[1, 8, 8, 16]);
        let c1 = b.tensor(&[1, 8, 8, 32]);
        let w1 = b.f32_const(&[32, 3, 3, 16], 0.1);
        b.conv2d(input, w1, None, c1, 3, 1, 1, 16, 32);
        let c2 = b.tensor(&[1, 8, 8, 32]);
        let w2 = b.f32_const(&[32, 3, 3, 1], 0.1);
        let b2 = b.f32_const(&[32], 0.5);
        b.conv2d(c1, w2, Some(b2), c2, 3, 1, 32, 1, 1); // depthwise
        let c3 = b.tensor(&[1, 16, 16, 16]);
        let w3 = b.f32_const(&[16, 2, 2, 32], 0.1);
        b.deconv2d(c2, w3, None, c3, 32, 16);
        let out1 = b.output(&[1, 16, 16, 16]);
        let w4 = b.f32_const(&[16, 16], 0.2);
        b.fully_connected(c3, w4, None, out1, 0);

        let v = b.input(&[BATCH, IN]);
        let q = b.dynamic_qd8(v, &[BATCH, IN]);
        let h = b.tensor(&[BATCH, IN]);
        let w5 = b.qc8_const(&[IN, IN]);
        b.fully_connected(q, w5, None, h, 0);
        let q2 = b.dynamic_qd8(h, &[BATCH, IN]);
        let out2 = b.output(&[BATCH, OUT]);
        let w6 = b.qc4_const(&[OUT, IN]);
        let b6 = b.f32_const(&[OUT], 1.0);
        b.fully_connected(q2, w6, Some(b6), out2, 0);
    })
}

/// One weight used by two nodes, and a second weight with the same bytes at
/// another address: both must end up stored once.
pub fn shared_weights() -> Model {
    Model::named("shared_weights", |b| {
        let input = b.input(&[BATCH, IN]);
        let w = b.f32_const_seeded(&[IN, IN], 0.05, 42);
        let h1 = b.tensor(&[BATCH, IN]);
        b.fully_connected(input, w, None, h1, 0);
        let h2 = b.tensor(&[BATCH, IN]);
        b.fully_connected(h1, w, None, h2, 0); // same value, same pointer
        let w_copy = b.f32_const_seeded(&[IN, IN], 0.05, 42); // same bytes, other pointer
        let output = b.output(&[BATCH, IN]);
        b.fully_connected(h2, w_copy, None, output, 0);
    })
}

/// One large fp32 layer (about 4 MiB packed), for memory measurements.
pub fn large_fc() -> Model {
    Model::named("large_fc", |b| {
        let input = b.input(&[1, 1024]);
        let filter = b.f32_const(&[1024, 1024], 0.03);
        let output = b.output(&[1, 1024]);
        b.fully_connected(input, filter, None, output, 0);
    })
}

/// 20 MiB of f32 weights: past the size from which a warm launch maps a
/// file in the page cache ahead (`cache::prefetch`).
pub fn huge_fc() -> Model {
    Model::named("huge_fc", |b| {
        let input = b.input(&[1, 1024]);
        let filter = b.f32_const(&[5120, 1024], 0.03);
        let output = b.output(&[1, 5120]);
        b.fully_connected(input, filter, None, output, 0);
    })
}

fn shared_pair(b: &mut Builder, own_seed: u64) {
    let input = b.input(&[BATCH, IN]);
    let w = b.named("shared-embedding").f32_const_seeded(&[IN, IN], 0.05, 4242);
    let h = b.tensor(&[BATCH, IN]);
    b.fully_connected(input, w, None, h, 0);
    let own = b.f32_const_seeded(&[OUT, IN], 0.05, own_seed);
    let output = b.output(&[BATCH, OUT]);
    b.fully_connected(h, own, None, output, 0);
}

/// Two models with one constant in common (same name, same bytes, separate
/// buffers) and one of their own each.
pub fn shared_a() -> Model {
    Model::named("a", |b| shared_pair(b, 1))
}

pub fn shared_b() -> Model {
    Model::named("b", |b| shared_pair(b, 2))
}

/// Three versions of one model (issue 25): the same shapes, other weights.
/// Registered by content (`bycontent`), like ExecuTorch's constants, whose
/// names are digests of their bytes: a version's weights come under new names.
fn versioned(b: &mut Builder, seed: u64) {
    let input = b.input(&[BATCH, IN]);
    let w1 = b.f32_const_seeded(&[IN, IN], 0.05, seed);
    let h = b.tensor(&[BATCH, IN]);
    b.fully_connected(input, w1, None, h, 0);
    let w2 = b.f32_const_seeded(&[OUT, IN], 0.05, seed + 1);
    let bias = b.f32_const_seeded(&[OUT], 1.0, seed + 2);
    let output = b.output(&[BATCH, OUT]);
    b.fully_connected(h, w2, Some(bias), output, 0);
}

pub fn version_1() -> Model {
    Model::named("versioned", |b| versioned(b, 100))
}

pub fn version_2() -> Model {
    Model::named("versioned", |b| versioned(b, 200))
}

pub fn version_3() -> Model {
    Model::named("versioned", |b| versioned(b, 300))
}

/// A model by its name in the tests' child processes.
/// fp16 weights XNNPACK cannot run in fp16: a cube root (no fp16 kernel on
/// any CPU) in front of an fp16 fully-connected layer makes XNNPACK convert
/// the subgraph to fp32, copying the fp16 constants into new fp32 buffers
/// and telling a v3 provider so through `alias_data(copy, original)`.
#[cfg(xnnpack_cube_root)]
pub fn fc_f16_fallback() -> Model {
    Model::named("fc_f16_fallback", |b| {
        let f16 = x::xnn_datatype_fp16;
        let input = b.input(&[BATCH, IN]);
        let h = b.typed_tensor(f16, &[BATCH, IN]);
        b.convert(input, h);
        let r = b.typed_tensor(f16, &[BATCH, IN]);
        b.unary(x::xnn_unary_cube_root, h, r);
        let filter = b.f16_const(&[OUT, IN], 0.1);
        let bias = b.f16_const(&[OUT], 1.0);
        let y = b.typed_tensor(f16, &[BATCH, OUT]);
        b.fully_connected(r, filter, Some(bias), y, 0);
        let output = b.output(&[BATCH, OUT]);
        b.convert(y, output);
    })
}

/// The same with bf16 weights: XNNPACK falls back to fp32 where this CPU
/// has no bf16 kernel for a node.
#[cfg(xnnpack_cube_root)]
pub fn fc_bf16_fallback() -> Model {
    Model::named("fc_bf16_fallback", |b| {
        let bf16 = x::xnn_datatype_bf16;
        let input = b.input(&[BATCH, IN]);
        let h = b.typed_tensor(bf16, &[BATCH, IN]);
        b.convert(input, h);
        let r = b.typed_tensor(bf16, &[BATCH, IN]);
        b.unary(x::xnn_unary_cube_root, h, r);
        let filter = b.bf16_const(&[OUT, IN], 0.1);
        // XNNPACK's bf16 GEMM takes bf16 in and gives fp32 out.
        let output = b.output(&[BATCH, OUT]);
        b.fully_connected(r, filter, None, output, 0);
    })
}

pub fn by_name(name: &str) -> Model {
    match name {
        #[cfg(xnnpack_cube_root)]
        "f16" => fc_f16_fallback(),
        #[cfg(xnnpack_cube_root)]
        "bf16" => fc_bf16_fallback(),
        "mixed" => mixed(),
        "fc_f32" => fc_f32_bias(),
        "qc8" => fc_qd8_qc8w(),
        "qc4" => fc_qd8_qc4w(),
        "qs8" => fc_qs8(),
        "conv" => conv2d(),
        "deconv" => deconv2d(),
        "depthwise" => depthwise(),
        "large" => large_fc(),
        "huge" => huge_fc(),
        "shared_a" => shared_a(),
        "shared_b" => shared_b(),
        "v1" => version_1(),
        "v2" => version_2(),
        "v3" => version_3(),
        other => panic!("no model named {other}"),
    }
}
