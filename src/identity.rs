//! Identities that survive a restart: of registered weights, and of the CPU.
//!
//! XNNPACK's look-up key holds pointers, which change at every launch. The
//! caller registers each constant buffer with a stable name (or lets us hash
//! its bytes); a pointer inside a registered buffer is then known as
//! (identity, offset), and a look-up key made of known pointers has a
//! persistent key (see [`crate::format::persistent_key`]).

use std::ops::Bound;
use std::sync::Arc;

use crate::addrmap::AddrMap;

use crate::abi::Key;
use crate::format::{identity_of_bytes, identity_of_name, persistent_key, KeyNames};

/// One registered buffer.
struct Registered {
    end: usize,
    identity: u128,
    name: Option<Arc<str>>,
}

/// Registered buffers by start address.
#[derive(Default)]
pub struct Registry {
    ranges: AddrMap<Registered>,
}

impl Registry {
    /// Registers `[data, data + size)`, replacing every earlier registration
    /// it overlaps (memory freed and reused for other weights).
    pub fn register(&mut self, data: usize, size: usize, name: Option<&str>, bytes: impl FnOnce() -> u128) -> u128 {
        let identity = match name {
            Some(n) => identity_of_name(n, size as u64),
            None => bytes(),
        };
        let end = data.saturating_add(size.max(1));
        self.forget(data, end);
        self.ranges.insert(data, Registered { end, identity, name: name.map(Arc::from) });
        identity
    }

    /// Drops every registration overlapping `[start, end)`: that memory was
    /// freed or now holds other data. Returns how many were dropped.
    pub fn forget(&mut self, start: usize, end: usize) -> usize {
        let overlapping: Vec<usize> = self.ranges.range(Bound::Unbounded, Bound::Excluded(end)).filter(|(_, r)| r.end > start).map(|(s, _)| s).collect();
        for &s in &overlapping {
            self.ranges.remove(s);
        }
        overlapping.len()
    }

    /// The identity and offset of a pointer inside a registered buffer.
    pub fn resolve(&self, p: usize) -> Option<(u128, u64)> {
        let (start, r) = self.ranges.at_or_below(p)?;
        (p < r.end).then(|| (r.identity, (p - start) as u64))
    }

    /// The name of the buffer that starts at `p`, if it was registered by name.
    fn name_at(&self, p: usize) -> Option<&str> {
        self.ranges.get(p)?.name.as_deref()
    }

    /// What a host calls the packed form of `key`: the name of the buffer its
    /// kernel starts, and of the one its bias starts (if that one has a name).
    pub fn names(&self, key: &Key) -> Option<KeyNames> {
        let bias = match key.bias {
            0 => None,
            b => self.name_at(b),
        };
        KeyNames::new(self.name_at(key.kernel)?, bias)
    }

    /// The persistent key of `key`, if its kernel and (non-NULL) bias are registered.
    pub fn persistent(&self, key: &Key) -> Option<u128> {
        let kernel = self.resolve(key.kernel)?;
        let bias = match key.bias {
            0 => None,
            b => Some(self.resolve(b)?),
        };
        Some(persistent_key(key.seed, kernel, bias, key.fingerprint))
    }
}

/// The content identity of `size` bytes at `data`.
///
/// # Safety
/// `data` must point to `size` readable bytes.
pub unsafe fn content_identity(data: *const u8, size: usize) -> u128 {
    // SAFETY: guaranteed by the caller.
    identity_of_bytes(unsafe { core::slice::from_raw_parts(data, size) })
}

/// A digest of what makes XNNPACK choose its microkernels on this CPU: the
/// vendor, family and model, and the instruction-set features the OS enables.
/// Two machines with the same digest pack weights the same way.
pub fn cpu_identity() -> u128 {
    // CPUID traps to the hypervisor in a VM: compute it once per process.
    static ID: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let bytes: Vec<u8> = crate::sys::cpu::cpu_words().iter().flat_map(|w| w.to_le_bytes()).collect();
        xxhash_rust::xxh3::xxh3_128(&bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_inside_registered_buffers_resolve() {
        let mut r = Registry::default();
        let a = r.register(1000, 100, Some("w"), || unreachable!());
        let b = r.register(2000, 50, None, || 77);
        assert_eq!(b, 77);
        assert_eq!(r.resolve(1000), Some((a, 0)));
        assert_eq!(r.resolve(1099), Some((a, 99)));
        assert_eq!(r.resolve(1100), None);
        assert_eq!(r.resolve(999), None);
        assert_eq!(r.resolve(2010), Some((77, 10)));
        let key = Key { seed: 1, kernel: 1000, bias: 0, fingerprint: None };
        assert!(r.persistent(&key).is_some());
        assert!(r.persistent(&Key { bias: 5000, ..key }).is_none(), "an unregistered bias makes the key in-process only");
        assert_ne!(r.persistent(&key), r.persistent(&Key { bias: 2000, ..key }));
        // New weights in reused memory, starting below the old buffer: the old
        // registration is gone, not shadowing part of the new one.
        let c = r.register(900, 300, Some("new"), || unreachable!());
        assert_eq!(r.resolve(1050), Some((c, 150)));
        assert_eq!(r.resolve(2010), Some((77, 10)));
        // Freed memory: nothing there resolves any more.
        assert_eq!(r.forget(2049, 2050), 1);
        assert_eq!(r.resolve(2010), None);
        assert_eq!(r.resolve(1050), Some((c, 150)));
        assert_eq!(r.forget(0, 899), 0);
    }

    #[test]
    fn the_cpu_identity_is_stable() {
        assert_eq!(cpu_identity(), cpu_identity());
    }
}
