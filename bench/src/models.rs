//! The benchmark's models, generated in code with fixed seeds.
//!
//! `--scale F` multiplies every dimension by F (rounded up to a multiple of
//! 32), so the weights shrink by about F².

use std::sync::atomic::{AtomicU64, Ordering};

use xnncache_tests::{Builder, Model};

static SCALE_BITS: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0

pub fn set_scale(scale: f64) {
    SCALE_BITS.store(scale.to_bits(), Ordering::Relaxed);
}

fn dim(n: usize) -> usize {
    let scale = f64::from_bits(SCALE_BITS.load(Ordering::Relaxed));
    ((n as f64 * scale).ceil() as usize).max(32).div_ceil(32) * 32
}

#[allow(dead_code)] // the demo uses only llm-q4
pub const NAMES: [&str; 3] = ["llm-q4", "mlp-f32", "cnn-f32"];

pub fn by_name(name: &str) -> Option<Model> {
    match name {
        "llm-q4" => Some(Model::named("llm-q4", llm_q4)),
        "mlp-f32" => Some(Model::named("mlp-f32", mlp_f32)),
        "cnn-f32" => Some(Model::named("cnn-f32", cnn_f32)),
        _ => None,
    }
}

/// A decoder-like stack: 8 blocks of q/k/v/o (2048x2048) and a gated FFN
/// (gate and up 2048->5632, multiplied, then down 5632->2048), 4-bit
/// per-channel weights with dynamically quantized activations
/// (qd8-f32-qc4w): about 410 M weights.
fn llm_q4(b: &mut Builder) {
    let (d, f) = (dim(2048), dim(5632));
    let linear = |b: &mut Builder, x: u32, from: usize, to: usize| {
        let q = b.dynamic_qd8(x, &[1, from]);
        let w = b.qc4_const(&[to, from]);
        let y = b.tensor(&[1, to]);
        b.fully_connected(q, w, None, y, 0);
        y
    };
    let mut x = b.input(&[1, d]);
    for _ in 0..8 {
        for _ in 0..4 {
            x = linear(b, x, d, d); // q, k, v, o (attention itself is not packed)
        }
        let gate = linear(b, x, d, f);
        let up = linear(b, x, d, f);
        let h = b.tensor(&[1, f]);
        b.multiply(gate, up, h);
        x = linear(b, h, f, d);
    }
    let out = b.output(&[1, d]);
    let w = b.f32_const(&[d, d], 0.01);
    b.fully_connected(x, w, None, out, 0);
}

/// 24 fp32 fully connected layers of 2048x2048 with biases: about 400 MB packed.
fn mlp_f32(b: &mut Builder) {
    let d = dim(2048);
    let mut x = b.input(&[1, d]);
    for i in 0..24 {
        let w = b.f32_const(&[d, d], 0.02);
        let bias = b.f32_const(&[d], 0.1);
        let y = if i == 23 { b.output(&[1, d]) } else { b.tensor(&[1, d]) };
        b.fully_connected(x, w, Some(bias), y, 0);
        x = y;
    }
}

/// A convolutional network: NHWC 3x3 and 1x1 convolutions, two depthwise
/// convolutions and a deconvolution: about 27 M weights.
fn cnn_f32(b: &mut Builder) {
    let c = |n: usize| dim(n);
    let mut h = 32;
    let mut x = b.input(&[1, h, h, 8]);
    let mut cin = 8;
    // (kernel, stride, groups-as-depthwise, out channels)
    let layers: [(u32, u32, bool, usize); 10] = [
        (3, 1, false, c(64)),
        (3, 2, false, c(128)),
        (3, 1, true, c(128)),
        (1, 1, false, c(256)),
        (3, 2, false, c(512)),
        (3, 1, true, c(512)),
        (1, 1, false, c(1024)),
        (3, 1, false, c(1024)),
        (3, 1, false, c(1024)),
        (1, 1, false, c(2048)),
    ];
    for (k, stride, depthwise, cout) in layers {
        let hout = h.div_ceil(stride as usize);
        let y = b.tensor(&[1, hout, hout, cout]);
        let bias = b.f32_const(&[cout], 0.1);
        if depthwise {
            let w = b.f32_const(&[cout, k as usize, k as usize, 1], 0.1);
            b.conv2d(x, w, Some(bias), y, k, stride, cout as u32, 1, 1);
        } else {
            let w = b.f32_const(&[cout, k as usize, k as usize, cin], 0.05);
            b.conv2d(x, w, Some(bias), y, k, stride, 1, cin, cout);
        }
        x = y;
        h = hout;
        cin = cout;
    }
    let cout = c(512);
    let out = b.output(&[1, 2 * h, 2 * h, cout]);
    let w = b.f32_const(&[cout, 2, 2, cin], 0.02);
    b.deconv2d(x, w, None, out, cin, cout);
}
