//! A mirror of XNNPACK's weights-cache ABI, in all three generations.
//!
//! XNNPACK has grown the provider struct twice (see `XNNPACK-FACTS.md`):
//!
//! | generation | key                                   | provider                    |
//! |------------|---------------------------------------|-----------------------------|
//! | v1         | seed, kernel, bias                    | 7 slots                     |
//! | v2         | + `fingerprint_id`                    | 7 slots                     |
//! | v3         | + `fingerprint_id`                    | 8 slots (+ `alias_data`)    |
//!
//! One binary serves all three. The caller tells us which one it compiled
//! against by passing `sizeof` of both structs (`XNNCACHE_OPTIONS_INIT` does
//! this at the caller's site). We never read a key field the caller's
//! generation does not have, and we always allocate the provider at the v3
//! size, so a v3 XNNPACK reading `alias_data` never reads past our struct.

use core::ffi::{c_int, c_void};
use core::mem::size_of;

/// `enum xnn_status` values XNNPACK defines and we return.
pub type XnnStatus = c_int;
pub(crate) const XNN_STATUS_SUCCESS: XnnStatus = 0;
pub(crate) const XNN_STATUS_INVALID_PARAMETER: XnnStatus = 2;
pub(crate) const XNN_STATUS_INVALID_STATE: XnnStatus = 3;
pub(crate) const XNN_STATUS_OUT_OF_MEMORY: XnnStatus = 6;

/// `enum xnn_weights_cache_finalization_kind`.
pub type XnnFinalizationKind = c_int;

/// XNNPACK's `XNN_CACHE_NOT_FOUND`: the only "no" a look-up can answer.
pub(crate) const NOT_FOUND: usize = usize::MAX;

/// `struct xnn_weights_cache_look_up_key`, v1 (XNNPACK 2024-01 to 2025-10).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KeyV1 {
    pub seed: u32,
    pub kernel: *const c_void,
    pub bias: *const c_void,
}

/// `struct xnn_weights_cache_look_up_key`, v2 and v3 (2025-11 on).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KeyV2 {
    pub seed: u32,
    pub kernel: *const c_void,
    pub bias: *const c_void,
    pub fingerprint_id: u32,
}

pub type LookUpFn = unsafe extern "C" fn(*mut c_void, *const c_void) -> usize;
pub type ReserveSpaceFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type LookUpOrInsertFn = unsafe extern "C" fn(*mut c_void, *const c_void, *mut c_void, usize) -> usize;
pub type IsFinalizedFn = unsafe extern "C" fn(*mut c_void) -> bool;
pub type OffsetToAddrFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type DeleteCacheFn = unsafe extern "C" fn(*mut c_void) -> XnnStatus;
pub type AliasDataFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> XnnStatus;

/// `struct xnn_weights_cache_provider` as v1 and v2 declare it (no `alias_data`).
#[repr(C)]
pub struct ProviderV1 {
    pub context: *mut c_void,
    pub look_up: Option<LookUpFn>,
    pub reserve_space: Option<ReserveSpaceFn>,
    pub look_up_or_insert: Option<LookUpOrInsertFn>,
    pub is_finalized: Option<IsFinalizedFn>,
    pub offset_to_addr: Option<OffsetToAddrFn>,
    pub delete_cache: Option<DeleteCacheFn>,
}

/// `struct xnn_weights_cache_provider`, v3: the largest, and the one we allocate.
#[repr(C)]
pub struct ProviderV3 {
    pub context: *mut c_void,
    pub look_up: Option<LookUpFn>,
    pub reserve_space: Option<ReserveSpaceFn>,
    pub look_up_or_insert: Option<LookUpOrInsertFn>,
    pub is_finalized: Option<IsFinalizedFn>,
    pub offset_to_addr: Option<OffsetToAddrFn>,
    pub delete_cache: Option<DeleteCacheFn>,
    pub alias_data: Option<AliasDataFn>,
}

/// The provider ABI a caller compiled against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    V1,
    V2,
    V3,
}

impl Generation {
    /// The generation whose struct sizes are exactly these, if any.
    pub fn from_sizes(key_size: usize, provider_size: usize) -> Option<Generation> {
        let key_v1 = size_of::<KeyV1>();
        let key_v2 = size_of::<KeyV2>();
        let prov_v1 = size_of::<ProviderV1>();
        let prov_v3 = size_of::<ProviderV3>();
        match (key_size, provider_size) {
            (k, p) if k == key_v1 && p == prov_v1 => Some(Generation::V1),
            (k, p) if k == key_v2 && p == prov_v1 => Some(Generation::V2),
            (k, p) if k == key_v2 && p == prov_v3 => Some(Generation::V3),
            _ => None,
        }
    }

    /// `sizeof(struct xnn_weights_cache_look_up_key)` for this generation.
    pub fn key_size(self) -> usize {
        match self {
            Generation::V1 => size_of::<KeyV1>(),
            Generation::V2 | Generation::V3 => size_of::<KeyV2>(),
        }
    }

    /// `sizeof(struct xnn_weights_cache_provider)` for this generation.
    pub fn provider_size(self) -> usize {
        match self {
            Generation::V1 | Generation::V2 => size_of::<ProviderV1>(),
            Generation::V3 => size_of::<ProviderV3>(),
        }
    }

    /// 1, 2 or 3.
    pub fn number(self) -> u32 {
        match self {
            Generation::V1 => 1,
            Generation::V2 => 2,
            Generation::V3 => 3,
        }
    }

    pub fn has_fingerprint(self) -> bool {
        self != Generation::V1
    }

    pub fn name(self) -> &'static str {
        match self {
            Generation::V1 => "v1",
            Generation::V2 => "v2",
            Generation::V3 => "v3",
        }
    }
}

/// A look-up key with its pointers as plain numbers: what the index stores.
/// `fingerprint` is `None` for v1 callers, whose key has no such field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub seed: u32,
    pub kernel: usize,
    pub bias: usize,
    pub fingerprint: Option<u32>,
}

impl Key {
    /// Copies the fields `generation` declares out of a caller's key.
    ///
    /// # Safety
    /// `raw` must be non-null and point to a readable key of `generation`'s layout.
    pub unsafe fn read(raw: *const c_void, generation: Generation) -> Key {
        // SAFETY: the caller guarantees `raw` points to at least a v1 key, which is
        // a prefix of the v2 layout; unaligned reads make no alignment assumption.
        let v1 = unsafe { core::ptr::read_unaligned(raw as *const KeyV1) };
        let fingerprint = if generation.has_fingerprint() {
            // SAFETY: v2 and v3 callers pass a full v2 key (checked by `from_sizes`).
            Some(unsafe { core::ptr::read_unaligned(raw as *const KeyV2) }.fingerprint_id)
        } else {
            None
        };
        Key { seed: v1.seed, kernel: v1.kernel as usize, bias: v1.bias as usize, fingerprint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_follow_the_struct_sizes() {
        let ptr = size_of::<usize>();
        // seed + padding + two pointers (+ fingerprint + padding).
        assert_eq!(size_of::<KeyV1>(), 3 * ptr);
        assert_eq!(size_of::<KeyV2>(), 4 * ptr);
        assert_eq!(size_of::<ProviderV1>(), 7 * ptr);
        assert_eq!(size_of::<ProviderV3>(), 8 * ptr);
        for g in [Generation::V1, Generation::V2, Generation::V3] {
            assert_eq!(Generation::from_sizes(g.key_size(), g.provider_size()), Some(g));
        }
        assert_eq!(Generation::from_sizes(size_of::<KeyV1>(), size_of::<ProviderV3>()), None);
        assert_eq!(Generation::from_sizes(0, 0), None);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn sizes_match_the_facts_file_on_64_bit() {
        assert_eq!((size_of::<KeyV1>(), size_of::<ProviderV1>()), (24, 56));
        assert_eq!((size_of::<KeyV2>(), size_of::<ProviderV3>()), (32, 64));
    }

    #[test]
    fn a_v1_key_never_reads_a_fingerprint() {
        let k = KeyV1 { seed: 7, kernel: 16 as *const c_void, bias: core::ptr::null() };
        // SAFETY: `k` is a live v1 key.
        let key = unsafe { Key::read(&k as *const KeyV1 as *const c_void, Generation::V1) };
        assert_eq!(key, Key { seed: 7, kernel: 16, bias: 0, fingerprint: None });
        let k2 = KeyV2 { seed: 7, kernel: 16 as *const c_void, bias: 32 as *const c_void, fingerprint_id: 9 };
        // SAFETY: `k2` is a live v2 key.
        let key2 = unsafe { Key::read(&k2 as *const KeyV2 as *const c_void, Generation::V3) };
        assert_eq!(key2.fingerprint, Some(9));
        assert_eq!(key2.bias, 32);
    }
}
