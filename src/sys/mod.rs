//! Everything that differs between operating systems, behind one small
//! interface that the arena, the heap and the store call. No other module
//! names an OS: `cfg` on the target lives here and in the files below.
//!
//! - [`unix`]: POSIX memory and files (Linux, Android, Apple), with the parts
//!   that differ in `linux.rs` (Linux and Android) and `apple.rs` (macOS, iOS).
//! - `windows.rs`: the same operations through `windows-sys`.
//! - [`cpu`]: what the CPU identity digests, per architecture and OS.
//!
//! The interface, implemented by each of them:
//!
//! | function | meaning |
//! |---|---|
//! | `page_size()` | the system's page size, read at run time |
//! | `map_granularity()` | what file mappings must align to (page; 64 KiB on Windows) |
//! | `reserve(len, file_backed)` / `release` | address space, inaccessible, no memory |
//! | `commit(addr, len)` | part of an anonymous reservation becomes writable memory |
//! | `stage(addr, len, file, offset)` | part of a file reservation becomes writable memory whose bytes go to the file at `offset` |
//! | `write_back(addr, len, file, offset)` | starts writing staged bytes to the file |
//! | `seal_staged(addr, len, file, offset)` | after `sync_data`: staged bytes become clean, read-only file pages at the same address |
//! | `map_file(addr, len, file, offset)` | committed bytes of the file, read-only, over reserved space |
//! | `protect_readonly` / `unmap_to_reserved` | as named |
//! | `map_anonymous` / `unmap_anonymous` | large heap blocks |
//! | `allocate`, `set_len`, `sync_data`, `file_size_limit` | disk blocks, length, durability, RLIMIT_FSIZE |
//! | `read_exact_at`, `write_all_at`, `file_id`, `path_id` | positioned I/O and file identity |
//! | `open_existing(path, write)` | a regular file, never blocking, with its [`Ownership`] |
//! | `create_new`, `set_mode`, `open_lock_file`, `try_lock`, `unlock`, `sync_dir` | the store's files and writer lock |
//! | `remove_abandoned(temp, pid)` | deletes a dead writer's temporary |
//! | `prefault`, `bring_in`, `lower_thread_priority` | performance hints (best effort) |
//! | `residency`, `touch_pages`, `will_need_file`, `pmd_mapped`, `maps_ahead` | a warm launch's prefetch: which pages are in memory, mapping them by faults, reading ahead through the descriptor, whether the kernel maps the file with 2 MiB entries |
//! | `at_exit`, `at_fork`, `thread_id`, `cpu_times` | process lifetimes: exit and fork handlers, which thread runs, CPU time |
//! | `reopen_descriptor(fd, writable)` | a private open file description of a caller's descriptor |
//! | `path_from_c(bytes)` | a path from the C API's bytes |

use std::io;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux;
#[cfg(any(target_os = "linux", target_os = "android"))]
use linux as os;

#[cfg(target_vendor = "apple")]
mod apple;
#[cfg(target_vendor = "apple")]
use apple as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

pub(crate) mod cpu;

/// What the store needs to know about a file before trusting its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ownership {
    /// Owned by this process's effective user, or by root (as ssh accepts).
    pub trusted_owner: bool,
    /// Someone other than the owner may write it (group or others).
    pub writable_by_others: bool,
    /// Permission bits, kept by a rebuild (0 where there are none).
    pub mode: u32,
}

/// An existing regular file opened for the store (`open_existing`), whether
/// we may write it, and who may change it.
pub(crate) struct Existing {
    pub file: std::fs::File,
    pub writable: bool,
    pub ownership: Ownership,
    /// Its length when opened.
    pub len: u64,
    /// Its identity (as `file_id`): what the path named when we opened it.
    pub id: (u64, u64),
}

/// A file offset or length as a `usize` (an arena offset, a mapping length),
/// or a clear error where it does not fit (a file over 4 GiB on a 32-bit
/// target): never truncated.
pub(crate) fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| too_large(n))
}

/// The error for a file offset or length this process cannot map.
pub(crate) fn too_large(n: u64) -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, format!("{n} bytes do not fit a {}-bit address space", usize::BITS))
}

// The initializer is const; clippy misreads the macro's expansion when std
// is built from source (-Zbuild-std, as scripts/check-targets.sh does).
#[allow(clippy::missing_const_for_thread_local)]
mod granularity_override {
    thread_local! {
        /// Tests run the arena and the store with larger pages than the
        /// machine's (16 KiB as on Apple silicon and some Android devices).
        pub(super) static GRANULARITY_OVERRIDE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }
}
use granularity_override::GRANULARITY_OVERRIDE;

/// What the arena aligns its mappings and seals to: the OS's mapping
/// granularity, or a larger power of two a test asked for on this thread.
pub(crate) fn arena_granularity() -> usize {
    GRANULARITY_OVERRIDE.with(|g| g.get()).unwrap_or_else(map_granularity)
}

/// Makes arenas created by this thread use `bytes` (a power of two and a
/// multiple of the real granularity) as their page size; `None` restores it.
#[cfg(test)]
pub(crate) fn override_granularity(bytes: Option<usize>) {
    if let Some(b) = bytes {
        assert!(b.is_power_of_two() && b.is_multiple_of(map_granularity()), "{b} is not a multiple of the mapping granularity");
    }
    GRANULARITY_OVERRIDE.with(|g| g.set(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Generation;
    use crate::cache::{Cache, CacheOptions};

    struct Granularity;
    impl Granularity {
        fn set(bytes: usize) -> Granularity {
            override_granularity(Some(bytes));
            Granularity
        }
    }
    impl Drop for Granularity {
        fn drop(&mut self) {
            override_granularity(None);
        }
    }

    #[test]
    fn oversized_offsets_are_refused_not_truncated() {
        assert_eq!(to_usize(4096).unwrap(), 4096);
        if usize::BITS < 64 {
            let e = to_usize(5 << 30).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        }
    }

    #[test]
    fn page_size_is_read_at_run_time() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096);
        assert_eq!(map_granularity() % p, 0);
    }

    /// The arena with 16 KiB pages: growth, holes, seals and reopening all
    /// land on 16 KiB boundaries, whatever the machine's page size.
    #[test]
    fn arena_with_16k_pages() {
        const PAGE: usize = 16 << 10;
        if !PAGE.is_multiple_of(map_granularity()) {
            return; // Windows maps at 64 KiB: 16 KiB pages cannot be emulated there
        }
        let _g = Granularity::set(PAGE);
        let path = std::env::temp_dir().join(format!("xnncache-sys-16k-arena-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let mut a = crate::arena::ArenaOptions::new().data_start(100).file(f).unwrap();
        let x = a.alloc(100, 64).unwrap();
        assert_eq!(x, PAGE, "data starts on a 16 KiB page");
        let p = a.addr(x).unwrap();
        // SAFETY: 100 freshly allocated, writable bytes.
        unsafe { p.write_bytes(0x5A, 100) };
        let job = a.begin_seal(usize::MAX);
        assert_eq!(job.bytes(), PAGE);
        job.run().unwrap();
        assert_eq!(a.sealed(), 2 * PAGE);
        assert_eq!(a.alloc(64, 64).unwrap(), 2 * PAGE, "after a seal, the next 16 KiB page");
        a.trim_file().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize % PAGE, 0);
        drop(a);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let b = crate::arena::ArenaOptions::new().data_start(100).existing(f, (PAGE + 100) as u64, true).unwrap();
        // SAFETY: the committed bytes are mapped read-only.
        assert_eq!(unsafe { *b.addr(PAGE + 99).unwrap() }, 0x5A);
        assert_eq!(b.sealed(), 2 * PAGE);
        drop(b);
        std::fs::remove_file(path).unwrap();
    }

    /// The store with 16 KiB pages: a cold build commits to the file, a
    /// second open reuses it and finds the weight where it was.
    #[test]
    fn store_with_16k_pages() {
        // Windows maps at 64 KiB: there the test runs the store at that size.
        let page = (16 << 10).max(map_granularity());
        let _g = Granularity::set(page);
        let path = std::env::temp_dir().join(format!("xnncache-sys-16k-store-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // The page-size override is this thread's: write back on it too.
        let options = CacheOptions { build_id: b"16k".to_vec(), sync_writeback: true, ..CacheOptions::file(&path, Generation::V1) };
        let weights = vec![3u8; 1000];
        let packed: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let key = |data: &[u8]| crate::abi::Key { seed: 9, kernel: data.as_ptr() as usize, bias: 0, fingerprint: None };
        let offset = {
            let cache = Cache::open(&options).unwrap();
            cache.register(&weights, Some("w"));
            assert_eq!(cache.look_up(key(&weights)), crate::abi::NOT_FOUND);
            let p = cache.reserve(packed.len());
            assert!(!p.is_null());
            // SAFETY: `reserve` handed out `packed.len()` writable bytes.
            unsafe { p.copy_from_nonoverlapping(packed.as_ptr(), packed.len()) };
            let offset = cache.look_up_or_insert(key(&weights), p, packed.len());
            assert_eq!(offset % 64, 0);
            cache.finalize().unwrap();
            let s = cache.stats();
            assert_eq!(s.backing, crate::cache::Backing::XNNCACHE_BACKING_FILE as u32);
            assert_eq!(s.sealed_bytes as usize % page, 0);
            offset
        };
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize % page, 0, "trimmed to a page");
        let cache = Cache::open(&options).unwrap();
        assert_eq!(cache.stats().file_state, crate::store::FileState::XNNCACHE_FILE_REUSED as u32);
        let other = vec![3u8; 1000];
        cache.register(&other, Some("w"));
        assert_eq!(cache.look_up(key(&other)), offset);
        let addr = cache.offset_to_addr(offset);
        // SAFETY: a found entry's address holds its packed bytes.
        assert_eq!(unsafe { core::slice::from_raw_parts(addr as *const u8, packed.len()) }, &packed[..]);
        drop(cache);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(format!("{}.lock", path.display()));
    }
}
