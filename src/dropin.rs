//! The drop-in layer: XNNPACK's own weights-cache functions, renamed
//! `xnn_` -> `xnncache_`, so porting code written for XNNPACK's cache is a
//! rename. The file comes from the environment variable `XNNCACHE_PATH`;
//! without it, packed weights live in anonymous memory.
//!
//! `xnncache.h` turns `xnncache_create_weights_cache(...)` and
//! `xnncache_create_weights_cache_with_size(...)` into macros that also pass
//! the caller's struct sizes and XNNPACK build identifier. Called as plain
//! symbols (e.g. through `dlsym`), they assume the v1 key of XNNPACK 4ea82e5
//! and, knowing no build identifier, keep packed weights in memory.

// C entry points take raw pointers by contract; each checks them (NULL,
// live handle) before use, as the C API documents.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use core::mem::size_of;

use crate::abi::{Generation, KeyV1, ProviderV1, XnnFinalizationKind, XnnStatus};
use crate::abi::{XNN_STATUS_INVALID_PARAMETER, XNN_STATUS_INVALID_STATE, XNN_STATUS_OUT_OF_MEMORY, XNN_STATUS_SUCCESS};
use crate::cache::CacheOptions;
use crate::capi::{close_handle, fail, open_handle, XnnWeightsCacheProvider};
use crate::handles;
use crate::error::{Error, Status};
use crate::provider::no_unwind;

/// The environment variable naming the drop-in layer's cache file.
pub const PATH_VARIABLE: &str = "XNNCACHE_PATH";

fn to_xnn_status(s: Status) -> XnnStatus {
    match s {
        Status::XNNCACHE_OK => XNN_STATUS_SUCCESS,
        Status::XNNCACHE_OUT_OF_MEMORY => XNN_STATUS_OUT_OF_MEMORY,
        Status::XNNCACHE_INVALID_STATE => XNN_STATUS_INVALID_STATE,
        _ => XNN_STATUS_INVALID_PARAMETER,
    }
}

fn create(key_size: u32, provider_size: u32, build_id: &[u8], size: usize, out: *mut *mut XnnWeightsCacheProvider) -> XnnStatus {
    let status = crate::capi::api("xnncache_create_weights_cache", || {
        if out.is_null() {
            return Err(Error::invalid("weights_cache_out is NULL"));
        }
        let generation = Generation::from_sizes(key_size as usize, provider_size as usize).ok_or_else(|| {
            Error::new(Status::XNNCACHE_UNSUPPORTED_ABI, format!("unknown provider ABI: key {key_size}, provider {provider_size} bytes"))
        })?;
        let mut options = match std::env::var_os(PATH_VARIABLE).filter(|p| !p.is_empty()) {
            Some(path) => CacheOptions::file(path, generation),
            None => CacheOptions::memory(generation),
        };
        options.build_id = build_id.to_vec();
        // XNNPACK's `size` is an initial capacity to avoid reallocations; the
        // arena never reallocates, so there is nothing to size.
        let _ = size;
        let h = open_handle(&options)?;
        let provider = handles::get(h)?.provider();
        // SAFETY: checked for NULL; the caller passes a writable pointer (of any alignment).
        unsafe { out.write_unaligned(provider) };
        Ok(())
    });
    to_xnn_status(status)
}

/// Like `xnn_create_weights_cache_with_size`; `size` is accepted and not
/// needed, since the cache grows without ever moving its contents.
#[no_mangle]
pub extern "C" fn xnncache_create_weights_cache_with_size(size: usize, weights_cache_out: *mut *mut XnnWeightsCacheProvider) -> XnnStatus {
    create(size_of::<KeyV1>() as u32, size_of::<ProviderV1>() as u32, &[], size, weights_cache_out)
}

/// Like `xnn_create_weights_cache`.
#[no_mangle]
pub extern "C" fn xnncache_create_weights_cache(weights_cache_out: *mut *mut XnnWeightsCacheProvider) -> XnnStatus {
    create(size_of::<KeyV1>() as u32, size_of::<ProviderV1>() as u32, &[], 0, weights_cache_out)
}

/// What the header's macros call: the create functions with the caller's
/// struct sizes and XNNPACK build identifier.
#[no_mangle]
pub extern "C" fn xnncache_create_weights_cache_for_abi(
    key_size: u32,
    provider_size: u32,
    build_id: *const core::ffi::c_void,
    build_id_size: usize,
    size: usize,
    weights_cache_out: *mut *mut XnnWeightsCacheProvider,
) -> XnnStatus {
    let id: &[u8] = if build_id.is_null() || build_id_size > 4096 {
        &[]
    } else {
        // SAFETY: the macro passes XNNPACK's own identifier and its size.
        unsafe { core::slice::from_raw_parts(build_id as *const u8, build_id_size) }
    };
    create(key_size, provider_size, id, size, weights_cache_out)
}

/// Like `xnn_finalize_weights_cache`. Both kinds seal (write back and
/// write-protect) what is packed; neither forbids later runtimes from adding
/// weights, since addresses never move.
///
/// A file that cannot take the commit (a full disk, a file-size limit) is not
/// a failure here: the packed weights are valid in memory, and XNNPACK's
/// callers take any error from this function as fatal. The reason is logged
/// once; `xnncache_finalize` and `xnncache_wait` still report it.
#[no_mangle]
pub extern "C" fn xnncache_finalize_weights_cache(weights_cache: *mut XnnWeightsCacheProvider, finalization_kind: XnnFinalizationKind) -> XnnStatus {
    let _ = finalization_kind;
    to_xnn_status(crate::capi::api("xnncache_finalize_weights_cache", || {
        let (_, open) = handles::of_provider(weights_cache)?;
        let cache = &open.cache;
        match cache.finalize() {
            Err(e) if e.status == Status::XNNCACHE_IO_ERROR => {
                let why = format!("{}; packed weights stay in memory, the file keeps its last commit", e.message);
                cache.log_once("finalize", crate::logging::Level::XNNCACHE_LOG_WARN, &why);
                Ok(())
            }
            other => other,
        }
    }))
}

/// Like `xnn_weights_cache_is_finalized`: true when a finalize came after
/// everything packed so far (its write-back may still be running).
#[no_mangle]
pub extern "C" fn xnncache_weights_cache_is_finalized(weights_cache: *mut XnnWeightsCacheProvider) -> bool {
    no_unwind(false, || match handles::of_provider(weights_cache) {
        Ok((_, open)) => open.cache.is_finalized(),
        Err(e) => {
            fail(e);
            false
        }
    })
}

/// The `xnncache` behind a weights cache made by
/// `xnncache_create_weights_cache`, for the rest of the C API
/// (`xnncache_stats`, `xnncache_verify`, `xnncache_list_names`,
/// `xnncache_wait`, ...). The handle is borrowed: it stays valid until the
/// weights cache is deleted, and `xnncache_delete_weights_cache` (not
/// `xnncache_close`) is what ends both.
#[no_mangle]
pub extern "C" fn xnncache_from_weights_cache(weights_cache: *mut XnnWeightsCacheProvider, cache_out: *mut *mut crate::capi::xnncache) -> crate::error::xnncache_status {
    crate::capi::api("xnncache_from_weights_cache", || {
        if cache_out.is_null() {
            return Err(Error::invalid("cache_out is NULL"));
        }
        let (handle, _) = handles::of_provider(weights_cache)?;
        // SAFETY: checked for NULL; the caller passes a writable pointer (of any alignment).
        unsafe { cache_out.write_unaligned(handle) };
        Ok(())
    })
}

/// Like `xnn_delete_weights_cache`.
#[no_mangle]
pub extern "C" fn xnncache_delete_weights_cache(weights_cache: *mut XnnWeightsCacheProvider) -> XnnStatus {
    no_unwind(XNN_STATUS_INVALID_PARAMETER, || match handles::of_provider(weights_cache) {
        Ok((h, open)) => {
            drop(open);
            to_xnn_status(close_handle(h))
        }
        Err(e) => to_xnn_status(fail(e)),
    })
}
