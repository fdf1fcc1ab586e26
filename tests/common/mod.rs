//! Shared pieces of the integration tests: models built from real XNNPACK
//! subgraphs, runtimes created with or without a weights cache, and a few
//! readings of `/proc`.
//!
//! A [`Model`] owns its constant data (weights, biases, scales) in buffers
//! that never move, and defines a fresh subgraph each time it is run: XNNPACK
//! mutates a subgraph while creating a runtime, so threads must not share one,
//! but they must share the weight pointers, which are XNNPACK's cache keys.

#![allow(clippy::missing_safety_doc)]
// Test helpers take raw pointers the tests got from XNNPACK or xnncache.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod battery;
mod counting;
mod watchdog;
pub mod launch;
pub mod models;

pub use counting::Counting;
pub use watchdog::{Held, Watchdog};

use std::ffi::CStr;
use std::ptr::{null, null_mut};
use std::sync::{Mutex, Once};

use xnnpack_sys as x;

pub use xnncache::{Backing, Stats};

/// The XNNPACK these tests link, and what it does: tests assert what this
/// XNNPACK does instead of assuming one version.
pub mod xnnpack {
    use super::x;

    /// `4ea82e5`, `92a7ad5` (chosen with `XNNCACHE_XNNPACK`) or `custom`.
    pub const PIN: &str = x::PIN;

    /// The provider ABI generation of the linked `xnnpack.h`: 1 (24-byte key),
    /// 2 (32-byte key with `fingerprint_id`), 3 (2 plus the `alias_data` slot).
    pub fn generation() -> u32 {
        let key = std::mem::size_of::<x::xnn_weights_cache_look_up_key>();
        let provider = std::mem::size_of::<x::xnn_weights_cache_provider>();
        match (key > 3 * std::mem::size_of::<usize>(), provider > 7 * std::mem::size_of::<usize>()) {
            (false, _) => 1,
            (true, false) => 2,
            (true, true) => 3,
        }
    }

    /// A look-up key of the linked XNNPACK's layout (what it would pass us).
    #[allow(clippy::needless_update)] // v1 keys have no other field
    pub fn key(seed: u32, kernel: *const u8, bias: *const u8) -> x::xnn_weights_cache_look_up_key {
        x::xnn_weights_cache_look_up_key { seed, kernel: kernel.cast(), bias: bias.cast(), ..Default::default() }
    }

    /// A packing path, by what XNNPACK does with it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Path {
        /// Fully connected (every weight type) and NHWC GEMM/IGEMM convolution.
        Gemm,
        /// Depthwise convolution (the dwconv packing).
        Depthwise,
        /// Per-channel 1x1 convolution packed for vmulcaddc.
        Vmulcaddc,
        Deconvolution,
    }

    /// Whether this XNNPACK calls `look_up` before packing on `path`, for the
    /// pinned versions (read in their sources and observed): the dwconv and
    /// vmulcaddc paths look up from XNNPACK's change of 2026-02 on, which
    /// 92a7ad5 has; deconvolution never does. `None` for another XNNPACK.
    pub fn looks_up(path: Path) -> Option<bool> {
        let newer = match PIN {
            "4ea82e5" => false,
            "92a7ad5" => true,
            _ => return None,
        };
        Some(match path {
            Path::Gemm => true,
            Path::Depthwise | Path::Vmulcaddc => newer,
            Path::Deconvolution => false,
        })
    }
}

/// Initialises XNNPACK once per process.
pub fn init() {
    init_with_allocator(None);
}

/// Initialises XNNPACK once per process, with `allocator` if this is the
/// first call (a test that needs to see XNNPACK's allocations calls it first).
pub fn init_with_allocator(allocator: Option<&'static x::xnn_allocator>) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: xnn_initialize accepts NULL for the default allocator, or
        // an allocator that lives for the whole process.
        let status = unsafe { x::xnn_initialize(allocator.map_or(null(), |a| a as *const _)) };
        assert_eq!(status, x::xnn_status_success, "xnn_initialize failed");
    });
}

/// A small deterministic generator (xorshift64*): test data without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

/// IEEE half precision of `f` (|f| < 2, as test data is), rounded toward
/// zero; tiny values become zero.
fn f16_bits(f: f32) -> u16 {
    let b = f.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

/// Constant buffers of a model, created on the first build and reused by
/// every later one, so their addresses stay the same.
#[derive(Default)]
struct Constants {
    buffers: Vec<Box<[u8]>>,
    /// A stable name a constant was given in the model's definition, if any.
    names: Vec<Option<&'static str>>,
}

/// What a model's `define` function uses to add values and nodes.
pub struct Builder<'a> {
    subgraph: x::xnn_subgraph_t,
    constants: &'a mut Constants,
    next_constant: usize,
    next_name: Option<&'static str>,
    rng: Rng,
    next_external: u32,
    inputs: Vec<(u32, Vec<usize>)>,
    outputs: Vec<(u32, Vec<usize>)>,
}

fn check(status: x::xnn_status, what: &str) {
    assert_eq!(status, x::xnn_status_success, "{what} failed with status {status}");
}

impl Builder<'_> {
    /// The next constant buffer: made by `make` the first time, the same
    /// bytes at the same address every later time.
    fn constant(&mut self, make: impl FnOnce(&mut Rng) -> Vec<u8>) -> *const u8 {
        let seed = 1000 + self.next_constant as u64;
        self.constant_seeded(seed, make)
    }

    /// Like `constant`, from a given seed: two constants with one seed hold
    /// the same bytes at different addresses.
    fn constant_seeded(&mut self, seed: u64, make: impl FnOnce(&mut Rng) -> Vec<u8>) -> *const u8 {
        let i = self.next_constant;
        self.next_constant += 1;
        let mut rng = Rng::new(seed);
        if i == self.constants.buffers.len() {
            let mut bytes = make(&mut rng);
            bytes.extend_from_slice(&[0u8; 64]); // XNNPACK may read a little past the end
            self.constants.buffers.push(bytes.into_boxed_slice());
            self.constants.names.push(self.next_name.take());
        }
        self.next_name = None;
        self.constants.buffers[i].as_ptr()
    }

    fn value(&mut self, datatype: x::xnn_datatype, dims: &[usize], data: *const u8, external: u32, flags: u32) -> u32 {
        let mut id = 0;
        // SAFETY: the subgraph is live; `dims` and `data` outlive the call (data outlives every runtime).
        check(
            unsafe { x::xnn_define_tensor_value(self.subgraph, datatype, dims.len(), dims.as_ptr(), data.cast(), external, flags, &mut id) },
            "xnn_define_tensor_value",
        );
        id
    }

    /// An fp32 input the test feeds with random data.
    pub fn input(&mut self, dims: &[usize]) -> u32 {
        let ext = self.next_external;
        self.next_external += 1;
        let id = self.value(x::xnn_datatype_fp32, dims, null(), ext, x::XNN_VALUE_FLAG_EXTERNAL_INPUT);
        self.inputs.push((id, dims.to_vec()));
        id
    }

    /// An fp32 output the test reads back.
    pub fn output(&mut self, dims: &[usize]) -> u32 {
        let ext = self.next_external;
        self.next_external += 1;
        let id = self.value(x::xnn_datatype_fp32, dims, null(), ext, x::XNN_VALUE_FLAG_EXTERNAL_OUTPUT);
        self.outputs.push((id, dims.to_vec()));
        id
    }

    /// An internal fp32 tensor.
    pub fn tensor(&mut self, dims: &[usize]) -> u32 {
        self.value(x::xnn_datatype_fp32, dims, null(), x::XNN_INVALID_VALUE_ID, 0)
    }

    /// An internal tensor of another type (fp16, bf16).
    pub fn typed_tensor(&mut self, datatype: x::xnn_datatype, dims: &[usize]) -> u32 {
        self.value(datatype, dims, null(), x::XNN_INVALID_VALUE_ID, 0)
    }

    /// Static fp16 data, uniform in [-scale, scale).
    pub fn f16_const(&mut self, dims: &[usize], scale: f32) -> u32 {
        let n: usize = dims.iter().product();
        let data = self.constant(|r| (0..n).flat_map(|_| f16_bits(r.f32() * scale).to_ne_bytes()).collect());
        self.value(x::xnn_datatype_fp16, dims, data, x::XNN_INVALID_VALUE_ID, 0)
    }

    /// Static bf16 data (the top half of fp32), uniform in [-scale, scale).
    pub fn bf16_const(&mut self, dims: &[usize], scale: f32) -> u32 {
        let n: usize = dims.iter().product();
        let data = self.constant(|r| (0..n).flat_map(|_| (((r.f32() * scale).to_bits() >> 16) as u16).to_ne_bytes()).collect());
        self.value(x::xnn_datatype_bf16, dims, data, x::XNN_INVALID_VALUE_ID, 0)
    }

    /// Static fp32 data the caller placed at `data` (it must outlive every
    /// runtime of the model); not one of the model's own constants.
    pub fn f32_const_at(&mut self, dims: &[usize], data: *const u8) -> u32 {
        self.value(x::xnn_datatype_fp32, dims, data, x::XNN_INVALID_VALUE_ID, 0)
    }

    /// An element-wise unary operator without parameters.
    pub fn unary(&mut self, op: x::xnn_unary_operator, input: u32, output: u32) {
        // SAFETY: live subgraph; NULL parameters are allowed for these operators.
        check(unsafe { x::xnn_define_unary(self.subgraph, op, null(), input, output, 0) }, "define unary");
    }

    /// Static fp32 data, uniform in [-scale, scale).
    pub fn f32_const(&mut self, dims: &[usize], scale: f32) -> u32 {
        let n: usize = dims.iter().product();
        let data = self.constant(|r| f32_bytes(&(0..n).map(|_| r.f32() * scale).collect::<Vec<_>>()));
        self.value(x::xnn_datatype_fp32, dims, data, x::XNN_INVALID_VALUE_ID, 0)
    }

    /// Static fp32 data made from `seed`: equal seeds, equal bytes, separate buffers.
    pub fn f32_const_seeded(&mut self, dims: &[usize], scale: f32, seed: u64) -> u32 {
        let n: usize = dims.iter().product();
        let data = self.constant_seeded(seed, |r| f32_bytes(&(0..n).map(|_| r.f32() * scale).collect::<Vec<_>>()));
        self.value(x::xnn_datatype_fp32, dims, data, x::XNN_INVALID_VALUE_ID, 0)
    }

    /// Gives the next constant a name (its identity when registered by name),
    /// so that two models can share it.
    pub fn named(&mut self, name: &'static str) -> &mut Self {
        self.next_name = Some(name);
        self
    }

    /// Per-channel scales for `channels` channels (a constant of its own).
    fn scales(&mut self, channels: usize) -> *const f32 {
        self.constant(|r| f32_bytes(&(0..channels).map(|_| 0.01 + 0.02 * r.f32().abs()).collect::<Vec<_>>())) as *const f32
    }

    /// Static int8 weights with one scale per output channel (dimension 0).
    pub fn qc8_const(&mut self, dims: &[usize]) -> u32 {
        let n: usize = dims.iter().product();
        let scale = self.scales(dims[0]);
        let data = self.constant(|r| r.bytes(n).into_iter().map(|b| (b as i8 / 2) as u8).collect());
        let mut id = 0;
        // SAFETY: live subgraph; dims, scales and data outlive the call and every runtime.
        check(
            unsafe {
                x::xnn_define_channelwise_quantized_tensor_value(
                    self.subgraph, x::xnn_datatype_qcint8, scale, dims.len(), 0, dims.as_ptr(), data.cast(), x::XNN_INVALID_VALUE_ID, 0, &mut id,
                )
            },
            "define qcint8",
        );
        id
    }

    /// Static 4-bit weights [out, in] (two per byte, zero point 8), one scale per output channel.
    pub fn qc4_const(&mut self, dims: &[usize]) -> u32 {
        assert_eq!(dims.len(), 2);
        assert_eq!(dims[1] % 2, 0, "4-bit rows hold whole bytes");
        let scale = self.scales(dims[0]);
        let data = self.constant(|r| r.bytes(dims[0] * dims[1] / 2));
        let mut id = 0;
        // SAFETY: as for qc8_const.
        check(
            unsafe {
                x::xnn_define_channelwise_quantized_tensor_value_v2(
                    self.subgraph, x::xnn_datatype_qcint4, 8, scale, 2, 0, dims.as_ptr(), data.cast(), x::XNN_INVALID_VALUE_ID, 0, &mut id,
                )
            },
            "define qcint4",
        );
        id
    }

    /// A per-tensor quantized int8 value: static (random) when `constant`, else internal.
    pub fn qs8(&mut self, dims: &[usize], scale: f32, zero_point: i32, constant: bool) -> u32 {
        let n: usize = dims.iter().product();
        let data = if constant { self.constant(|r| r.bytes(n)) } else { null() };
        let mut id = 0;
        // SAFETY: live subgraph; dims and data outlive the call and every runtime.
        check(
            unsafe {
                x::xnn_define_quantized_tensor_value(
                    self.subgraph, x::xnn_datatype_qint8, zero_point, scale, dims.len(), dims.as_ptr(), data.cast(), x::XNN_INVALID_VALUE_ID, 0, &mut id,
                )
            },
            "define qint8",
        );
        id
    }

    /// A static int32 bias with the given scale.
    pub fn qs32_const(&mut self, channels: usize, scale: f32) -> u32 {
        let data = self.constant(|r| (0..channels).flat_map(|_| ((r.next_u64() % 2001) as i32 - 1000).to_ne_bytes()).collect());
        let dims = [channels];
        let mut id = 0;
        // SAFETY: live subgraph; dims and data outlive the call and every runtime.
        check(
            unsafe {
                x::xnn_define_quantized_tensor_value(
                    self.subgraph, x::xnn_datatype_qint32, 0, scale, 1, dims.as_ptr(), data.cast(), x::XNN_INVALID_VALUE_ID, 0, &mut id,
                )
            },
            "define qint32",
        );
        id
    }

    /// A dynamically quantized int8 tensor, fed by converting `from` (fp32).
    pub fn dynamic_qd8(&mut self, from: u32, dims: &[usize]) -> u32 {
        let mut id = 0;
        // SAFETY: live subgraph; dims outlive the call.
        check(
            unsafe {
                x::xnn_define_dynamically_quantized_tensor_value(self.subgraph, x::xnn_datatype_qdint8, dims.len(), 1, dims.as_ptr(), x::XNN_INVALID_VALUE_ID, 0, &mut id)
            },
            "define qdint8",
        );
        self.convert(from, id);
        id
    }

    pub fn convert(&mut self, from: u32, to: u32) {
        // SAFETY: live subgraph; convert takes no parameters.
        check(unsafe { x::xnn_define_unary(self.subgraph, x::xnn_unary_convert, null(), from, to, 0) }, "define convert");
    }

    /// `output = a * b`, element by element.
    pub fn multiply(&mut self, a: u32, b: u32, output: u32) {
        // SAFETY: live subgraph; NULL parameters mean no clamping.
        check(unsafe { x::xnn_define_binary(self.subgraph, x::xnn_binary_multiply, null(), a, b, output, 0) }, "define multiply");
    }

    pub fn fully_connected(&mut self, input: u32, filter: u32, bias: Option<u32>, output: u32, flags: u32) {
        let bias = bias.unwrap_or(x::XNN_INVALID_VALUE_ID);
        // SAFETY: live subgraph; ids were defined in it.
        check(
            unsafe { x::xnn_define_fully_connected(self.subgraph, f32::NEG_INFINITY, f32::INFINITY, input, filter, bias, output, flags) },
            "define fully connected",
        );
    }

    /// A 2-D NHWC convolution, padding 1 on each side, stride `stride`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(&mut self, input: u32, filter: u32, bias: Option<u32>, output: u32, k: u32, stride: u32, groups: u32, cin: usize, cout: usize) {
        let bias = bias.unwrap_or(x::XNN_INVALID_VALUE_ID);
        let p = k / 2;
        // SAFETY: live subgraph; ids were defined in it.
        check(
            unsafe {
                x::xnn_define_convolution_2d(
                    self.subgraph, p, p, p, p, k, k, stride, stride, 1, 1, groups, cin, cout, f32::NEG_INFINITY, f32::INFINITY, input, filter, bias, output, 0,
                )
            },
            "define convolution",
        );
    }

    /// A 2x2 deconvolution with stride 2 (doubles height and width).
    pub fn deconv2d(&mut self, input: u32, filter: u32, bias: Option<u32>, output: u32, cin: usize, cout: usize) {
        let bias = bias.unwrap_or(x::XNN_INVALID_VALUE_ID);
        // SAFETY: live subgraph; ids were defined in it.
        check(
            unsafe {
                x::xnn_define_deconvolution_2d(
                    self.subgraph, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, cin, cout, f32::NEG_INFINITY, f32::INFINITY, input, filter, bias, output, 0,
                )
            },
            "define deconvolution",
        );
    }
}

/// A model: a function that defines its subgraph, and the constants it uses.
pub struct Model {
    name: &'static str,
    define: fn(&mut Builder),
    constants: Mutex<Constants>,
}

/// What a run produced: every output's bytes, in order.
#[derive(PartialEq, Eq, Clone)]
pub struct Outputs(pub Vec<Vec<u8>>);

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lens: Vec<usize> = self.0.iter().map(Vec::len).collect();
        write!(f, "Outputs(bytes {lens:?}, digest {:#018x})", self.digest())
    }
}

impl Outputs {
    /// A digest of every byte (FNV-1a), to compare runs in different processes.
    pub fn digest(&self) -> u64 {
        self.0.iter().flatten().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    }
}

/// A runtime created over a subgraph, with its external buffers.
pub struct Runtime {
    pub runtime: x::xnn_runtime_t,
    inputs: Vec<(u32, Vec<f32>)>,
    outputs: Vec<(u32, Vec<f32>)>,
}

// SAFETY: a runtime is used by one thread at a time; XNNPACK allows moving it.
unsafe impl Send for Runtime {}

impl Model {
    pub fn new(define: fn(&mut Builder)) -> Model {
        Model::named("model", define)
    }

    /// A model whose constants, registered by name, are called `<name>/<i>`
    /// unless the definition names them.
    pub fn named(name: &'static str, define: fn(&mut Builder)) -> Model {
        Model { name, define, constants: Mutex::new(Constants::default()) }
    }

    /// Makes the model's constants (once): afterwards they are in memory.
    pub fn materialize(&self) {
        if self.constants.lock().unwrap().buffers.is_empty() {
            // Define once to make the constants.
            let mut subgraph = null_mut();
            init();
            // SAFETY: out-pointer to a local; the subgraph is deleted below.
            check(unsafe { x::xnn_create_subgraph(16, 0, &mut subgraph) }, "xnn_create_subgraph");
            let mut constants = self.constants.lock().unwrap();
            let mut b = Builder { subgraph, constants: &mut constants, next_constant: 0, next_name: None, rng: Rng::new(7), next_external: 0, inputs: Vec::new(), outputs: Vec::new() };
            (self.define)(&mut b);
            // SAFETY: created above, used by no runtime.
            unsafe { x::xnn_delete_subgraph(subgraph) };
        }
    }

    /// Bytes of constant data (weights, biases, scales).
    pub fn constant_bytes(&self) -> usize {
        self.materialize();
        self.constants.lock().unwrap().buffers.iter().map(|b| b.len()).sum()
    }

    /// Registers every constant with `cache`: by name, or by content.
    pub fn register(&self, cache: &Cache, by_name: bool) {
        self.materialize();
        let constants = self.constants.lock().unwrap();
        for (i, (buf, name)) in constants.buffers.iter().zip(&constants.names).enumerate() {
            let name = by_name.then(|| std::ffi::CString::new(name.map_or_else(|| format!("{}/{i}", self.name), str::to_string)).unwrap());
            let s = xnncache::capi::xnncache_register_weights(cache.0, buf.as_ptr().cast(), buf.len(), name.as_ref().map_or(null(), |n| n.as_ptr()));
            assert_eq!(s, xnncache::Status::XNNCACHE_OK, "register: {}", last_error());
        }
    }

    /// Unregisters every constant from `cache` (before the model is dropped
    /// while the cache stays open).
    pub fn unregister(&self, cache: &Cache) {
        let constants = self.constants.lock().unwrap();
        for buf in &constants.buffers {
            let s = xnncache::capi::xnncache_unregister_weights(cache.0, buf.as_ptr().cast(), buf.len());
            assert_eq!(s, xnncache::Status::XNNCACHE_OK, "unregister: {}", last_error());
        }
    }

    /// Creates a runtime over a fresh subgraph, with `cache` (may be NULL).
    pub fn create(&self, cache: x::xnn_weights_cache_t) -> Result<Runtime, x::xnn_status> {
        init();
        let mut subgraph = null_mut();
        // SAFETY: out-pointer to a local.
        check(unsafe { x::xnn_create_subgraph(16, 0, &mut subgraph) }, "xnn_create_subgraph");
        let mut constants = self.constants.lock().unwrap();
        let mut b = Builder {
            subgraph,
            constants: &mut constants,
            next_constant: 0,
            next_name: None,
            rng: Rng::new(7),
            next_external: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        (self.define)(&mut b);
        let inputs: Vec<(u32, Vec<f32>)> =
            b.inputs.iter().map(|(id, dims)| (*id, (0..dims.iter().product::<usize>()).map(|_| b.rng.f32()).collect())).collect();
        let outputs = b.outputs.iter().map(|(id, dims)| (*id, vec![0f32; dims.iter().product()])).collect();
        drop(constants);
        let mut runtime = null_mut();
        // SAFETY: the subgraph is complete; the cache is NULL or a live provider.
        let status = unsafe { x::xnn_create_runtime_v4(subgraph, cache, null_mut(), null_mut(), 0, &mut runtime) };
        // SAFETY: the runtime keeps no reference to the subgraph.
        unsafe { x::xnn_delete_subgraph(subgraph) };
        if status != x::xnn_status_success {
            return Err(status);
        }
        Ok(Runtime { runtime, inputs, outputs })
    }

    /// Creates a runtime, runs it once, and deletes it.
    pub fn run(&self, cache: x::xnn_weights_cache_t) -> Outputs {
        let mut rt = self.create(cache).expect("xnn_create_runtime_v4");
        rt.infer().expect("inference")
    }
}

impl Runtime {
    /// Reshapes, sets up and invokes the runtime; returns the outputs' bytes.
    pub fn infer(&mut self) -> Result<Outputs, x::xnn_status> {
        let mut ext: Vec<x::xnn_external_value> = Vec::new();
        for (id, data) in &self.inputs {
            ext.push(x::xnn_external_value { id: *id, data: data.as_ptr() as *mut _ });
        }
        for (id, data) in &mut self.outputs {
            data.iter_mut().for_each(|v| *v = f32::NAN);
            ext.push(x::xnn_external_value { id: *id, data: data.as_mut_ptr().cast() });
        }
        // SAFETY: the runtime is live; external buffers outlive the invocation.
        unsafe {
            let s = x::xnn_reshape_runtime(self.runtime);
            if s != x::xnn_status_success {
                return Err(s);
            }
            let s = x::xnn_setup_runtime_v2(self.runtime, ext.len(), ext.as_ptr());
            if s != x::xnn_status_success {
                return Err(s);
            }
            let s = x::xnn_invoke_runtime(self.runtime);
            if s != x::xnn_status_success {
                return Err(s);
            }
        }
        Ok(Outputs(self.outputs.iter().map(|(_, d)| f32_bytes(d)).collect()))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: created by xnn_create_runtime_v4 and deleted once.
        unsafe { x::xnn_delete_runtime(self.runtime) };
    }
}

/// An open xnncache through its C API, closed on drop.
pub struct Cache(pub *mut xnncache::capi::xnncache);

// SAFETY: the C API is thread-safe.
unsafe impl Send for Cache {}
// SAFETY: the C API is thread-safe.
unsafe impl Sync for Cache {}

/// Options for the XNNPACK this test links (its key and provider sizes).
pub fn options(path: Option<&CStr>) -> xnncache::capi::xnncache_options {
    xnncache::capi::xnncache_options {
        options_size: std::mem::size_of::<xnncache::capi::xnncache_options>() as u32,
        key_size: std::mem::size_of::<x::xnn_weights_cache_look_up_key>() as u32,
        provider_size: std::mem::size_of::<x::xnn_weights_cache_provider>() as u32,
        flags: 0,
        path: path.map_or(null(), CStr::as_ptr),
        fd: -1,
        compact_percent: 0,
        build_id: build_id().as_ptr().cast(),
        build_id_size: build_id().len(),
        address_space: 0,
        size_cap: 0,
        program: null(),
    }
}

/// The linked XNNPACK's build identifier.
pub fn build_id() -> &'static [u8] {
    // SAFETY: XNNPACK returns a pointer to a static buffer of the given size.
    unsafe { std::slice::from_raw_parts(x::xnn_experimental_get_build_identifier_data() as *const u8, x::xnn_experimental_get_build_identifier_size()) }
}

impl Cache {
    pub fn open(path: Option<&std::path::Path>) -> Cache {
        let c = path.map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap());
        Cache::open_with(&options(c.as_deref()))
    }

    pub fn open_with(o: &xnncache::capi::xnncache_options) -> Cache {
        let mut h = null_mut();
        let s = xnncache::capi::xnncache_open(o, &mut h);
        assert_eq!(s, xnncache::Status::XNNCACHE_OK, "xnncache_open: {}", last_error());
        Cache(h)
    }

    pub fn provider(&self) -> x::xnn_weights_cache_t {
        xnncache::capi::xnncache_provider(self.0).cast()
    }

    pub fn finalize(&self) {
        self.start_finalize();
        self.wait();
    }

    /// Waits for the background write-back of every finalize so far.
    pub fn wait(&self) {
        let s = xnncache::capi::xnncache_wait(self.0, u32::MAX);
        assert_eq!(s, xnncache::Status::XNNCACHE_OK, "xnncache_wait: {}", last_error());
    }

    /// Finalize without waiting for the background write-back.
    pub fn start_finalize(&self) {
        let s = xnncache::capi::xnncache_finalize(self.0);
        assert_eq!(s, xnncache::Status::XNNCACHE_OK, "xnncache_finalize: {}", last_error());
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        assert_eq!(xnncache::capi::xnncache_stats(self.0, &mut s), xnncache::Status::XNNCACHE_OK);
        s
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        xnncache::capi::xnncache_close(self.0);
    }
}

/// A test that cannot run here because the machine lacks `what` (a right, a
/// tool): with `XNNCACHE_REQUIRE_ALL=1` (set by CI) it fails, saying so;
/// otherwise it prints SKIPPED on stderr, past the harness's capture, and the
/// caller returns having checked nothing.
pub fn cannot_run(what: &str) {
    if std::env::var("XNNCACHE_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("this test needs {what}, which this machine lacks (XNNCACHE_REQUIRE_ALL=1)");
    }
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {what}");
}

pub fn last_error() -> String {
    // SAFETY: xnncache_last_error returns a valid C string.
    unsafe { CStr::from_ptr(xnncache::capi::xnncache_last_error()) }.to_string_lossy().into_owned()
}

/// A fresh folder for one test's files, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let base = std::env::var_os("CARGO_TARGET_TMPDIR").map(Into::into).unwrap_or_else(std::env::temp_dir);
        let p = std::path::Path::new(&base).join(format!("xnncache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// A folder in the system's temporary folder (`/tmp`), which every user
    /// can reach, unlike the build's own (under root's home, say).
    pub fn public(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xnncache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One field (in bytes) of `/proc/self/smaps_rollup`, e.g. "Anonymous".
pub fn rollup(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").expect("/proc/self/smaps_rollup");
    smaps_field(&text, field)
}

fn smaps_field(text: &str, field: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0) * 1024)
        .sum()
}

/// What the mappings of some files occupy, from an smaps file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingUsage {
    pub rss: u64,
    pub pss: u64,
    /// Private_Dirty + Shared_Dirty.
    pub dirty: u64,
    pub mappings: usize,
}

/// Sums over the mappings of files under `path` (a file or a folder) in
/// `smaps` (e.g. `/proc/self/smaps`, or another process's).
pub fn mapping_usage(smaps: &str, path: &std::path::Path) -> MappingUsage {
    let text = std::fs::read_to_string(smaps).unwrap_or_else(|e| panic!("{smaps}: {e}"));
    let want = path.to_string_lossy();
    let mut usage = MappingUsage::default();
    let mut inside = false;
    let mut block = String::new();
    let mut flush = |block: &str, inside: bool| {
        if inside {
            usage.rss += smaps_field(block, "Rss");
            usage.pss += smaps_field(block, "Pss");
            usage.dirty += smaps_field(block, "Private_Dirty") + smaps_field(block, "Shared_Dirty");
            usage.mappings += 1;
        }
    };
    for line in text.lines() {
        let is_header = line.split_whitespace().next().is_some_and(|f| f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        if is_header {
            flush(&block, inside);
            block.clear();
            inside = line.split_whitespace().nth(5).is_some_and(|p| p == want || p.starts_with(&format!("{want}/")));
        } else {
            block.push_str(line);
            block.push('\n');
        }
    }
    flush(&block, inside);
    usage
}

/// This process's (Rss, dirty, number of mappings) for files under `path`. A
/// cache being rebuilt lives under a temporary name beside its path until its
/// first commit, so tests pass the folder.
pub fn file_mapping_usage(path: &std::path::Path) -> (u64, u64, usize) {
    let u = mapping_usage("/proc/self/smaps", path);
    (u.rss, u.dirty, u.mappings)
}

/// Sets this process's file-size limit (`RLIMIT_FSIZE`, soft and hard) to
/// `bytes`. Async-signal-safe: usable in a `pre_exec` hook.
pub fn limit_file_size(bytes: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: setrlimit is async-signal-safe and reads only `lim`.
    if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs the current test binary again with only `test` (an `#[ignore]`d
/// child test), with `env` set, after `pre_exec` in the child. Returns its status.
pub fn run_child(test: &str, env: &[(&str, &str)], pre_exec: Option<fn() -> std::io::Result<()>>) -> std::process::Output {
    run_child_from(&std::env::current_exe().unwrap(), test, env, pre_exec)
}

/// [`run_child`] with a copy of the test binary at `exe` (e.g. one that a
/// child acting as another user can reach).
pub fn run_child_from(exe: &std::path::Path, test: &str, env: &[(&str, &str)], pre_exec: Option<fn() -> std::io::Result<()>>) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(f) = pre_exec {
        // SAFETY: `f` only makes async-signal-safe system calls (setrlimit).
        unsafe { cmd.pre_exec(f) };
    }
    cmd.output().expect("spawn the test binary")
}

/// Writes one byte at `addr` (the value already there) in a forked child;
/// returns the signal that killed the child, or None if it exited normally.
pub fn write_in_child(addr: *mut u8) -> Option<i32> {
    // SAFETY: the child only reads and writes one byte and calls _exit, both
    // async-signal-safe, so forking a multi-threaded process is sound here.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v = std::ptr::read_volatile(addr);
            std::ptr::write_volatile(addr, v);
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
    }
}

/// The eight slots of a cache's provider, to drive them by hand.
pub fn slots(cache: &Cache) -> &xnncache::abi::ProviderV3 {
    // SAFETY: xnncache always allocates the provider at the v3 size.
    unsafe { &*(xnncache::capi::xnncache_provider(cache.0) as *const xnncache::abi::ProviderV3) }
}
