//! The handles the C API gives out, and the only place they turn into caches.
//!
//! A handle is a token, not an address: an odd number drawn from a counter,
//! so a handle closed long ago does not name a cache opened since (even one
//! allocated at the same address), and a foreign pointer (aligned, so even)
//! never names one. On a 64-bit target the counter never wraps; on a 32-bit
//! one the tokens start over after 2^31 opens, skipping every token still
//! open, so a live cache is never replaced (a handle closed 2^31 opens ago
//! may then name a newer cache). The table maps tokens to the open
//! cache behind an `Arc`: a call clones the `Arc` under the table's lock and
//! releases the lock before doing anything, so a close that races the call
//! only removes the token; the cache is dropped when the last call using it
//! returns, never under it.
//!
//! XNNPACK does not go through this table: it calls the provider struct, whose
//! `context` is the cache itself, inside the `Arc`. Runtimes must be deleted
//! before their cache is closed, as with XNNPACK's own cache.

use core::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::{ProviderV3, XnnStatus, XNN_STATUS_INVALID_PARAMETER, XNN_STATUS_SUCCESS};
use crate::addrmap::AddrMap;
use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, Result};
use crate::provider::{no_unwind, provider_for};

/// An open cache. Opaque: an `xnncache*` is a handle, not an address, and a
/// closed one is never reused, so using it after `xnncache_close` is
/// `XNNCACHE_INVALID_ARGUMENT`, never a crash or another cache.
#[allow(non_camel_case_types)]
pub struct xnncache {
    _opaque: [u8; 0],
}

/// `struct xnn_weights_cache_provider`, declared by `xnnpack.h`.
#[repr(C)]
pub struct XnnWeightsCacheProvider {
    _opaque: [u8; 0],
}

/// What a handle names: the cache and the provider struct XNNPACK is given.
pub struct Open {
    provider: ProviderV3,
    pub cache: Cache,
}

// SAFETY: the provider struct is never written after `open` fills it; its
// only pointer is `context`, the `Cache` beside it, which is Send and Sync.
unsafe impl Send for Open {}
// SAFETY: as above: shared references only read the provider struct.
unsafe impl Sync for Open {}

impl std::ops::Deref for Open {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        &self.cache
    }
}

impl Open {
    /// The provider struct, as `xnn_weights_cache_t`. It lives as long as the
    /// cache (the `Arc`'s allocation never moves).
    pub fn provider(&self) -> *mut XnnWeightsCacheProvider {
        &self.provider as *const ProviderV3 as *mut XnnWeightsCacheProvider
    }
}

struct Table {
    /// The next handle's number; handles are `2 * n + 1`.
    next: u64,
    open: AddrMap<Arc<Open>>,
}

static TABLE: Mutex<Table> = Mutex::new(Table { next: 1, open: AddrMap::new() });

/// Held for a look-up or an insertion only: no call into a cache runs under it.
fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle table, locked across a `fork()` (see `cache::lifetime`).
pub(crate) fn freeze() -> Box<dyn std::any::Any> {
    Box::new(table())
}

/// Opens a cache and gives it a new handle.
pub fn open(options: &CacheOptions) -> Result<*mut xnncache> {
    let cache = Cache::open(options)?;
    let mut open = Arc::new(Open { provider: provider_for(core::ptr::null_mut(), delete_cache), cache });
    // The provider's context is the cache, inside the `Arc`'s allocation,
    // which never moves.
    let context = &open.cache as *const Cache as *mut c_void;
    match Arc::get_mut(&mut open) {
        Some(o) => o.provider.context = context,
        None => unreachable!("a new Arc is unique"),
    }
    Ok(register(open))
}

fn register(open: Arc<Open>) -> *mut xnncache {
    let mut t = table();
    // Ends: the table cannot hold every odd `usize` (each entry is an allocation).
    loop {
        let n = t.next;
        t.next = n.wrapping_add(1);
        // Odd, so never NULL nor an aligned pointer; wraps on 32-bit targets.
        let token = (n as usize).wrapping_mul(2) | 1;
        if t.open.get(token).is_none() {
            t.open.insert(token, open);
            return token as *mut xnncache;
        }
    }
}

/// The cache behind `handle`, kept alive while the caller uses it.
pub fn get(handle: *const xnncache) -> Result<Arc<Open>> {
    if handle.is_null() {
        return Err(Error::invalid("the cache is NULL"));
    }
    match table().open.get(handle as usize) {
        Some(open) => Ok(Arc::clone(open)),
        None => Err(Error::invalid("not an open xnncache (closed already, or not a handle from xnncache_open)")),
    }
}

/// Closes `handle`: the cache is dropped here, or by the last call still
/// using it when that call returns.
pub fn close(handle: *mut xnncache) -> Result<()> {
    let removed = table().open.remove(handle as usize);
    match removed {
        // Dropped outside the table's lock: closing waits for the write-back.
        Some(open) => {
            drop(open);
            Ok(())
        }
        None => Err(Error::invalid("not an open xnncache (closed already, or not a handle from xnncache_open)")),
    }
}

/// The handle whose provider struct is `provider`, for the drop-in layer.
pub fn of_provider(provider: *mut XnnWeightsCacheProvider) -> Result<(*mut xnncache, Arc<Open>)> {
    find(|open| open.provider() == provider).ok_or_else(|| Error::invalid("not a weights cache made by xnncache (or closed already)"))
}

fn find(matches: impl Fn(&Open) -> bool) -> Option<(*mut xnncache, Arc<Open>)> {
    table().open.iter().find(|(_, open)| matches(open)).map(|(token, open)| (token as *mut xnncache, Arc::clone(open)))
}

/// The provider's `delete_cache` slot (XNNPACK never calls it): closes the
/// handle whose cache is `context`.
unsafe extern "C" fn delete_cache(context: *mut c_void) -> XnnStatus {
    no_unwind(XNN_STATUS_INVALID_PARAMETER, || {
        let found = find(|open| core::ptr::eq(&open.cache, context as *const Cache));
        match found.map(|(token, _)| close(token)) {
            Some(Ok(())) => XNN_STATUS_SUCCESS,
            _ => XNN_STATUS_INVALID_PARAMETER,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Generation;

    fn memory_cache() -> *mut xnncache {
        open(&CacheOptions::memory(Generation::V1)).expect("an in-memory cache opens")
    }

    /// Where the counter wraps (after 2^31 opens on a 32-bit target, set
    /// here by hand), and where it comes back to a token still open, every
    /// cache keeps its own handle.
    #[test]
    fn a_wrapping_counter_never_replaces_an_open_cache() {
        let first = memory_cache();
        // The last odd `usize`, then the counter wraps to 1, 3, ...
        table().next = (usize::MAX / 2) as u64;
        let last = memory_cache();
        assert_eq!(last as usize, usize::MAX);
        // Pointed back at `first`'s token: it is skipped.
        table().next = (first as usize / 2) as u64;
        let again = memory_cache();
        assert_ne!(again, first);
        for h in [first, last, again] {
            assert!(get(h).is_ok(), "{h:?} lost its cache");
        }
        assert!(!core::ptr::eq(&get(first).unwrap().cache, &get(again).unwrap().cache));
        for h in [first, last, again] {
            close(h).unwrap();
        }
    }
}
