//! The callbacks XNNPACK calls, one thin `extern "C"` function per slot of
//! `struct xnn_weights_cache_provider`. Each checks its pointers, calls the
//! [`Cache`], and never lets a panic cross into C.

use core::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::{Key, ProviderV3, XnnStatus, NOT_FOUND, XNN_STATUS_INVALID_PARAMETER, XNN_STATUS_SUCCESS};
use crate::cache::Cache;

/// Runs `f`, or returns `fallback` if it panics.
pub(crate) fn no_unwind<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// What the `delete_cache` slot calls: the owner of the cache closes it.
pub type DeleteCache = unsafe extern "C" fn(context: *mut c_void) -> XnnStatus;

/// A provider whose every slot, `alias_data` included, is set, with
/// `context` pointing to a [`Cache`] that outlives every runtime created with
/// it. Unused slots do not exist: all eight are ours.
pub fn provider_for(context: *mut c_void, delete_cache: DeleteCache) -> ProviderV3 {
    ProviderV3 {
        context,
        look_up: Some(look_up),
        reserve_space: Some(reserve_space),
        look_up_or_insert: Some(look_up_or_insert),
        is_finalized: Some(is_finalized),
        offset_to_addr: Some(offset_to_addr),
        delete_cache: Some(delete_cache),
        alias_data: Some(alias_data),
    }
}

/// The cache behind a provider's `context`.
///
/// # Safety
/// `context` is NULL or the `context` of a provider made by [`provider_for`],
/// whose cache is still open.
unsafe fn cache<'a>(context: *mut c_void) -> Option<&'a Cache> {
    // SAFETY: per the contract, a non-NULL context is a live `Cache`.
    unsafe { (context as *const Cache).as_ref() }
}

/// # Safety
/// `raw` is NULL or a key of the caller's generation.
unsafe fn key(cache: &Cache, raw: *const c_void) -> Option<Key> {
    // SAFETY: checked for NULL; the generation was declared by the caller at open.
    (!raw.is_null()).then(|| unsafe { Key::read(raw, cache.generation()) })
}

unsafe extern "C" fn look_up(context: *mut c_void, raw_key: *const c_void) -> usize {
    no_unwind(NOT_FOUND, || {
        // SAFETY: XNNPACK passes back the context we set and a key of its generation.
        let Some(cache) = (unsafe { cache(context) }) else { return NOT_FOUND };
        // SAFETY: as above.
        match unsafe { key(cache, raw_key) } {
            Some(k) => cache.look_up(k),
            None => NOT_FOUND,
        }
    })
}

unsafe extern "C" fn reserve_space(context: *mut c_void, n: usize) -> *mut c_void {
    no_unwind(core::ptr::null_mut(), || {
        // SAFETY: XNNPACK passes back the context we set.
        match unsafe { cache(context) } {
            Some(c) => c.reserve(n) as *mut c_void,
            None => core::ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn look_up_or_insert(context: *mut c_void, raw_key: *const c_void, ptr: *mut c_void, size: usize) -> usize {
    no_unwind(NOT_FOUND, || {
        // SAFETY: XNNPACK passes back the context we set and a key of its generation.
        let Some(cache) = (unsafe { cache(context) }) else { return NOT_FOUND };
        // SAFETY: as above.
        match unsafe { key(cache, raw_key) } {
            Some(k) => cache.look_up_or_insert(k, ptr as *const u8, size),
            None => NOT_FOUND,
        }
    })
}

/// Always true: packed weights never move, so setting up a runtime is safe at
/// any time, even while another thread packs new weights into the same cache.
/// `xnncache_finalize` is about clean pages, not about correctness.
/// (Nothing here can panic, so there is nothing to catch.)
unsafe extern "C" fn is_finalized(_context: *mut c_void) -> bool {
    true
}

unsafe extern "C" fn offset_to_addr(context: *mut c_void, offset: usize) -> *mut c_void {
    no_unwind(core::ptr::null_mut(), || {
        // SAFETY: XNNPACK passes back the context we set.
        match unsafe { cache(context) } {
            Some(c) => c.offset_to_addr(offset) as *mut c_void,
            None => core::ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn alias_data(context: *mut c_void, alias: *mut c_void, original: *mut c_void) -> XnnStatus {
    no_unwind(XNN_STATUS_INVALID_PARAMETER, || {
        // SAFETY: XNNPACK passes back the context we set.
        let Some(cache) = (unsafe { cache(context) }) else { return XNN_STATUS_INVALID_PARAMETER };
        match cache.alias(alias as usize, original as usize) {
            Ok(()) => XNN_STATUS_SUCCESS,
            Err(_) => XNN_STATUS_INVALID_PARAMETER,
        }
    })
}
