//! A provider that wraps another and counts what XNNPACK asks of it.

use std::sync::atomic::{AtomicU64, Ordering};

use xnnpack_sys as x;

/// A provider that forwards to another and counts what XNNPACK asks of it:
/// an independent witness of packing, not our own stats.
#[repr(C)]
pub struct Counting {
    provider: x::xnn_weights_cache_provider,
    inner: x::xnn_weights_cache_t,
    /// `reserve_space` calls: how often XNNPACK packed.
    pub reserves: AtomicU64,
    pub reserved_bytes: AtomicU64,
    /// `look_up` calls: whether XNNPACK asks before packing on a path.
    pub look_ups: AtomicU64,
    /// `alias_data` calls (v3 XNNPACK, forwarded when the inner provider has the slot).
    pub aliases: AtomicU64,
    /// The keys of every `look_up`, in call order.
    pub keys: std::sync::Mutex<Vec<x::xnn_weights_cache_look_up_key>>,
    /// Their (alias, original) pointers, in call order.
    pub alias_pairs: std::sync::Mutex<Vec<(usize, usize)>>,
}

impl Counting {
    pub fn wrap(inner: x::xnn_weights_cache_t) -> Box<Counting> {
        let mut c = Box::new(Counting {
            // SAFETY: all-zero is a valid provider (NULL context and slots) until filled in below.
            provider: unsafe { std::mem::zeroed() },
            inner,
            reserves: AtomicU64::new(0),
            reserved_bytes: AtomicU64::new(0),
            look_ups: AtomicU64::new(0),
            aliases: AtomicU64::new(0),
            keys: std::sync::Mutex::new(Vec::new()),
            alias_pairs: std::sync::Mutex::new(Vec::new()),
        });
        c.provider.context = &*c as *const Counting as *mut _;
        c.provider.look_up = Some(look_up);
        c.provider.reserve_space = Some(reserve_space);
        c.provider.look_up_or_insert = Some(look_up_or_insert);
        c.provider.is_finalized = Some(is_finalized);
        c.provider.offset_to_addr = Some(offset_to_addr);
        #[cfg(xnnpack_alias_data)]
        {
            // SAFETY: `inner` is a live provider of this XNNPACK's (v3) layout.
            if unsafe { (*inner).alias_data.is_some() } {
                c.provider.alias_data = Some(alias_data);
            }
        }
        c
    }
    pub fn provider(&mut self) -> x::xnn_weights_cache_t {
        &mut self.provider
    }
}

fn inner(ctx: *mut std::ffi::c_void) -> &'static Counting {
    // SAFETY: the context is the boxed `Counting`, alive for the whole test.
    unsafe { &*(ctx as *const Counting) }
}

unsafe extern "C" fn look_up(ctx: *mut std::ffi::c_void, key: *const x::xnn_weights_cache_look_up_key) -> usize {
    let c = inner(ctx);
    c.look_ups.fetch_add(1, Ordering::Relaxed);
    if !key.is_null() {
        // SAFETY: XNNPACK passes a key of its own layout.
        c.keys.lock().unwrap().push(unsafe { *key });
    }
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

#[cfg(xnnpack_alias_data)]
unsafe extern "C" fn alias_data(ctx: *mut std::ffi::c_void, alias: *mut std::ffi::c_void, original: *mut std::ffi::c_void) -> x::xnn_status {
    let c = inner(ctx);
    c.aliases.fetch_add(1, Ordering::Relaxed);
    c.alias_pairs.lock().unwrap().push((alias as usize, original as usize));
    // SAFETY: as above; set only when the inner provider has the slot.
    unsafe { ((*c.inner).alias_data.unwrap())((*c.inner).context, alias, original) }
}
