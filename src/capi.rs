//! The C API: each function converts its arguments, calls safe Rust, and maps
//! the result to an `xnncache_status`. Nothing here panics across the boundary.

// C entry points take raw pointers by contract; each checks them (NULL,
// live handle) before use, as the C API documents.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use core::ffi::{c_char, c_int, c_void};
use std::cell::RefCell;
use std::ffi::{CStr, CString};

use crate::abi::Generation;
use crate::cache::{CacheOptions, Stats};
use crate::error::{xnncache_status, Error, Result, Status};
use crate::handles::{self, get as handle};
use crate::provider::no_unwind;
use crate::store::Source;

/// Fail with `XNNCACHE_IO_ERROR` instead of falling back to the heap when the
/// file cannot be used.
pub const XNNCACHE_FLAG_REQUIRE_FILE: u32 = 1;
/// Never write the file (e.g. a cache shipped inside an app bundle): a valid
/// file is mapped read-only, and weights it lacks are packed into memory.
pub const XNNCACHE_FLAG_READ_ONLY: u32 = 2;
/// Check every payload's checksum at open (a file that fails is rebuilt).
pub const XNNCACHE_FLAG_VERIFY: u32 = 4;
/// Write packed weights back and commit them inside `xnncache_finalize`
/// (which then returns the write-back's status) instead of in the background.
pub const XNNCACHE_FLAG_SYNC_WRITEBACK: u32 = 8;
/// Create the cache file readable by every user (0644 before the umask)
/// instead of by its owner only (0600): a bundle shared with a system service.
pub const XNNCACHE_FLAG_SHARE_READ: u32 = 16;
/// Use a cache file owned by another user (read-only, and only if no one but
/// its owner may write it) instead of refusing it.
pub const XNNCACHE_FLAG_ALLOW_FOREIGN_OWNER: u32 = 32;
/// Do not bring a reused file's packed weights into memory in the background
/// at open (by default a warm launch does, so that its first inference does
/// not fault them in page by page; chunks already in memory are skipped).
pub const XNNCACHE_FLAG_NO_PREFETCH: u32 = 64;
/// Start the background write-back as soon as a runtime is finalized, even
/// while the process computes. By default it waits until the process's other
/// threads are quiet (and pauses between 8 MiB pieces when they are busy
/// again), for at most 10 s after the finalize: the disk writes of a
/// write-back slowed a no-cache process's inference 1.8x on the machine it
/// was measured on. `xnncache_wait` and `xnncache_close` end the waiting.
pub const XNNCACHE_FLAG_EAGER_WRITEBACK: u32 = 128;
const KNOWN_FLAGS: u32 = XNNCACHE_FLAG_REQUIRE_FILE
    | XNNCACHE_FLAG_READ_ONLY
    | XNNCACHE_FLAG_VERIFY
    | XNNCACHE_FLAG_SYNC_WRITEBACK
    | XNNCACHE_FLAG_SHARE_READ
    | XNNCACHE_FLAG_ALLOW_FOREIGN_OWNER
    | XNNCACHE_FLAG_NO_PREFETCH
    | XNNCACHE_FLAG_EAGER_WRITEBACK;

/// How to open a cache. Start from `XNNCACHE_OPTIONS_INIT`, which records the
/// sizes of XNNPACK's structs as the caller's `xnnpack.h` declares them.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct xnncache_options {
    /// `sizeof(xnncache_options)` at the caller.
    pub options_size: u32,
    /// `sizeof(struct xnn_weights_cache_look_up_key)` at the caller.
    pub key_size: u32,
    /// `sizeof(struct xnn_weights_cache_provider)` at the caller.
    pub provider_size: u32,
    /// `XNNCACHE_FLAG_*` bits.
    pub flags: u32,
    /// The cache file, or NULL.
    pub path: *const c_char,
    /// Or a descriptor of it that the caller owns (and keeps open), or -1.
    /// With neither, packed weights live in anonymous memory.
    pub fd: i32,
    /// Automatic compaction at close: when at least this percentage of the
    /// file is not reachable from the weights this session used, the file is
    /// rewritten without them (0: never; `xnncache_compact` works anyway).
    pub compact_percent: u32,
    /// XNNPACK's build identifier (`xnn_experimental_get_build_identifier_data()`
    /// and `_size()`): a file written by another XNNPACK build is not used.
    pub build_id: *const c_void,
    pub build_id_size: usize,
    /// Address space reserved for new packed weights when the cache first
    /// adds one (0: 1 GiB on 64-bit, 256 MiB on 32-bit); twice as much again
    /// each time that fills up. A launch that adds nothing reserves only the
    /// file's length. Only address space: it costs no memory.
    pub address_space: u64,
    /// Packed bytes the file may keep (0: no cap). A commit that would keep
    /// more drops whole programs, least recently written first, never one it
    /// writes (see docs/FORMAT.md, "Retention"). Without a cap, a model
    /// update still drops the version it replaces.
    pub size_cap: u64,
    /// The label of the programs this cache creates, or NULL: see
    /// `xnncache_set_program`.
    pub program: *const c_char,
}

pub use crate::handles::{xnncache, XnnWeightsCacheProvider};

/// Opens a cache and gives it a handle; a fallback's reason (success, but
/// no file) goes to `xnncache_last_error`, which is empty after an open
/// without one.
pub(crate) fn open_handle(options: &CacheOptions) -> Result<*mut xnncache> {
    let h = handles::open(options)?;
    // The reason, or nothing: a host that reads the message after a
    // successful open must not find an earlier call's.
    set_last_error(&handles::get(h)?.cache.fallback_reason().unwrap_or_default());
    Ok(h)
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records this thread's message. Called from a host's thread-local
/// destructor after ours is gone, it records nothing (never a panic).
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| {
        if let Ok(mut e) = e.try_borrow_mut() {
            *e = c;
        }
    });
}

/// Closes a handle: its status, with the message recorded on failure.
pub(crate) fn close_handle(cache: *mut xnncache) -> Status {
    match handles::close(cache) {
        Ok(()) => Status::XNNCACHE_OK,
        Err(e) => fail(Error { message: format!("xnncache_close: {}", e.message), ..e }),
    }
}

/// Records `e` for `xnncache_last_error` and returns its status.
pub(crate) fn fail(e: Error) -> Status {
    set_last_error(&e.message);
    e.status
}

/// Runs an API body: its error or panic becomes a status and a message.
pub(crate) fn api(name: &str, f: impl FnOnce() -> Result<()>) -> Status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::XNNCACHE_OK,
        Ok(Err(e)) => fail(Error { message: format!("{name}: {}", e.message), ..e }),
        Err(_) => fail(Error::new(Status::XNNCACHE_INTERNAL_ERROR, format!("{name}: internal error (panic caught)"))),
    }
}

fn options_from_c(o: &xnncache_options) -> Result<CacheOptions> {
    if o.options_size == 0 || o.key_size == 0 || o.provider_size == 0 {
        return Err(Error::invalid("options were not initialised with XNNCACHE_OPTIONS_INIT"));
    }
    let generation = Generation::from_sizes(o.key_size as usize, o.provider_size as usize).ok_or_else(|| {
        Error::new(
            Status::XNNCACHE_UNSUPPORTED_ABI,
            format!(
                "unknown XNNPACK provider ABI: key {} bytes, provider {} bytes (known: v1 {}/{}, v2 {}/{}, v3 {}/{})",
                o.key_size,
                o.provider_size,
                Generation::V1.key_size(),
                Generation::V1.provider_size(),
                Generation::V2.key_size(),
                Generation::V2.provider_size(),
                Generation::V3.key_size(),
                Generation::V3.provider_size()
            ),
        )
    })?;
    if o.flags & !KNOWN_FLAGS != 0 {
        return Err(Error::invalid(format!("unknown flags {:#x}", o.flags & !KNOWN_FLAGS)));
    }
    // SAFETY: a non-NULL path is a NUL-terminated string by the API contract.
    let path = (!o.path.is_null()).then(|| crate::sys::path_from_c(unsafe { CStr::from_ptr(o.path) }.to_bytes())).transpose().map_err(|e| Error::invalid(format!("the path: {e}")))?;
    if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(Error::invalid("the path is empty"));
    }
    let source = match (path, o.fd) {
        (Some(_), fd) if fd >= 0 => return Err(Error::invalid("give a path or a descriptor, not both")),
        (Some(p), _) => Some(Source::Path(p)),
        (None, fd) if fd >= 0 => Some(Source::Fd(fd)),
        (None, -1) => None,
        (None, fd) => return Err(Error::invalid(format!("fd {fd}: use -1 for no descriptor"))),
    };
    if o.compact_percent > 100 {
        return Err(Error::invalid(format!("compact_percent {} is over 100", o.compact_percent)));
    }
    // SAFETY: a non-NULL program is a NUL-terminated string by the API contract.
    let program = (!o.program.is_null()).then(|| unsafe { CStr::from_ptr(o.program) }.to_string_lossy().into_owned());
    if program.as_deref() == Some("") {
        return Err(Error::invalid("the program label is empty (use NULL for none)"));
    }
    if o.build_id.is_null() && o.build_id_size != 0 || o.build_id_size > 4096 {
        return Err(Error::invalid("build_id and build_id_size do not agree"));
    }
    // SAFETY: a non-NULL build_id points to build_id_size bytes by the API contract.
    let build_id = if o.build_id.is_null() { Vec::new() } else { unsafe { core::slice::from_raw_parts(o.build_id as *const u8, o.build_id_size) }.to_vec() };
    Ok(CacheOptions {
        source,
        generation,
        require_file: o.flags & XNNCACHE_FLAG_REQUIRE_FILE != 0,
        read_only: o.flags & XNNCACHE_FLAG_READ_ONLY != 0,
        verify: o.flags & XNNCACHE_FLAG_VERIFY != 0,
        build_id,
        compact_percent: o.compact_percent,
        sync_writeback: o.flags & XNNCACHE_FLAG_SYNC_WRITEBACK != 0,
        file_mode: if o.flags & XNNCACHE_FLAG_SHARE_READ != 0 { 0o644 } else { crate::store::PRIVATE_FILE_MODE },
        allow_foreign: o.flags & XNNCACHE_FLAG_ALLOW_FOREIGN_OWNER != 0,
        prefetch: o.flags & XNNCACHE_FLAG_NO_PREFETCH == 0,
        yield_writeback: o.flags & XNNCACHE_FLAG_EAGER_WRITEBACK == 0,
        reservation: (o.address_space != 0).then(|| usize::try_from(o.address_space).unwrap_or(usize::MAX)),
        size_cap: o.size_cap,
        program,
    })
}

/// Opens a cache. With a path (or descriptor), a valid cache file is mapped
/// and its weights are found by look-up; a missing, corrupt or incompatible
/// one is rebuilt beside it and replaces it at the first commit. If the file
/// cannot be used at all, the cache still opens, on the heap,
/// `xnncache_stats` reports it, and `xnncache_last_error` says why (unless
/// `XNNCACHE_FLAG_REQUIRE_FILE` is set).
#[no_mangle]
pub extern "C" fn xnncache_open(options: *const xnncache_options, cache_out: *mut *mut xnncache) -> xnncache_status {
    api("xnncache_open", || {
        if options.is_null() || cache_out.is_null() {
            return Err(Error::invalid("options and cache_out must not be NULL"));
        }
        // SAFETY: checked for NULL; every version of the struct starts with
        // its size, so the first field is there whatever the caller's version.
        let size = unsafe { core::ptr::addr_of!((*options).options_size).read_unaligned() } as usize;
        if size < core::mem::size_of::<xnncache_options>() {
            // Read nothing past what the caller says it has: it may end at a page's end.
            return Err(Error::invalid(format!(
                "options_size {size} is smaller than this library's options ({}): initialise them with XNNCACHE_OPTIONS_INIT",
                core::mem::size_of::<xnncache_options>()
            )));
        }
        // SAFETY: checked for NULL, and the caller's struct covers ours
        // (a newer, larger one starts with the same fields). Copied, not
        // referenced: C may hand over a struct at any address (packed in its own).
        let opts = options_from_c(&unsafe { options.read_unaligned() })?;
        let h = open_handle(&opts)?;
        // SAFETY: checked for NULL; the caller passes a writable pointer (of any alignment).
        unsafe { cache_out.write_unaligned(h) };
        Ok(())
    })
}

/// The provider to pass to `xnn_create_runtime_v4`, or NULL for a bad handle.
/// It lives as long as the cache.
#[no_mangle]
pub extern "C" fn xnncache_provider(cache: *mut xnncache) -> *mut XnnWeightsCacheProvider {
    no_unwind(core::ptr::null_mut(), || match handle(cache) {
        Ok(h) => h.provider(),
        Err(e) => {
            fail(e);
            core::ptr::null_mut()
        }
    })
}

/// Ends the runtime creations before it. Call it after
/// `xnn_create_runtime_v4`: the runtime can run as soon as it returns. In the
/// background, a thread of the cache then writes every page packed so far to
/// the file, waits for the disk, commits the new entries, and swaps the
/// pages for the file's clean, read-only ones (the bytes never change under
/// a running runtime). `xnncache_wait` waits for that. Runtimes already
/// created keep working, and later ones may still add weights. With
/// `XNNCACHE_FLAG_SYNC_WRITEBACK` (or without a file) the work is done before
/// returning, and its status returned.
#[no_mangle]
pub extern "C" fn xnncache_finalize(cache: *mut xnncache) -> xnncache_status {
    api("xnncache_finalize", || handle(cache)?.cache.finalize())
}

/// Waits until everything finalized so far is written back and committed,
/// and a warm launch's prefetch of the file (`XNNCACHE_FLAG_NO_PREFETCH`) is
/// over, at most `timeout_ms` milliseconds (`UINT32_MAX`: no limit; 0: just ask).
/// Any timeout but 0 also ends the write-back's yielding to the process's
/// computation (see `XNNCACHE_FLAG_EAGER_WRITEBACK`): it runs at once.
/// `XNNCACHE_BUSY` if the time ran out (the write-back goes on);
/// `XNNCACHE_IO_ERROR` if the last write-back failed (runtimes keep their
/// weights in memory and the file keeps its previous commit; the message
/// says why). Call it e.g. before an iOS app goes to the background.
#[no_mangle]
pub extern "C" fn xnncache_wait(cache: *mut xnncache, timeout_ms: u32) -> xnncache_status {
    api("xnncache_wait", || {
        let timeout = (timeout_ms != u32::MAX).then(|| std::time::Duration::from_millis(timeout_ms.into()));
        handle(cache)?.cache.wait(timeout)
    })
}

/// Gives the constant buffer `[data, data + size)` a stable identity, so that
/// packed weights made from it are found again by a later process. `name`
/// (e.g. ExecuTorch's named-data key) is the identity; with NULL, a digest of
/// the bytes is. Register every weight and bias before creating the runtime.
#[no_mangle]
pub extern "C" fn xnncache_register_weights(cache: *mut xnncache, data: *const c_void, size: usize, name: *const c_char) -> xnncache_status {
    api("xnncache_register_weights", || {
        let h = handle(cache)?;
        if data.is_null() || size == 0 {
            return Err(Error::invalid("data must be non-NULL and size non-zero"));
        }
        // SAFETY: a non-NULL name is a NUL-terminated string by the API contract.
        let name = (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned());
        // SAFETY: the caller passes `size` readable bytes at `data`.
        unsafe { h.cache.register_raw(data as *const u8, size, name.as_deref()) };
        Ok(())
    })
}

/// Says that `[data, data + size)` no longer holds the weights it held:
/// call it before freeing (or reusing) memory you registered or gave
/// XNNPACK as weights while this cache stays open. Its registration, and
/// every look-up record naming pointers inside it, are dropped; packed
/// weights stay stored and are found again through their registered
/// identity. (Registering new weights over the same memory does the same.)
#[no_mangle]
pub extern "C" fn xnncache_unregister_weights(cache: *mut xnncache, data: *const c_void, size: usize) -> xnncache_status {
    api("xnncache_unregister_weights", || {
        let h = handle(cache)?;
        if data.is_null() || size == 0 {
            return Err(Error::invalid("data must be non-NULL and size non-zero"));
        }
        h.cache.unregister(data as *const u8, size);
        Ok(())
    })
}

/// Installs the process's log callback (NULL removes it). xnncache prints
/// nothing by itself; it reports every fallback (heap instead of file,
/// read-only, a rebuilt file, another process's writer lock, a failed
/// write-back) here, once per cache and kind, with its reason. The callback
/// may be called from any thread, including the cache's write-back thread;
/// `message` is valid during the call only. It runs with no lock of
/// xnncache held: it may call any xnncache function, on the cache that is
/// logging too (`xnncache_wait` called on the write-back thread itself
/// returns `XNNCACHE_BUSY` at once: that thread cannot wait for itself).
/// Rust hosts get the same messages through the `log` crate (target "xnncache").
#[no_mangle]
pub extern "C" fn xnncache_set_log_callback(callback: crate::logging::xnncache_log_callback, user_data: *mut c_void) -> xnncache_status {
    api("xnncache_set_log_callback", || {
        crate::logging::set_callback(callback, user_data);
        Ok(())
    })
}

/// Labels the program whose runtimes are created from now on, until the
/// next call (NULL: unlabelled). A program is what the runtime creations
/// ended by one `xnncache_finalize` used. Without labels, a program that
/// packs the same shapes as a recorded one under new names (a new version
/// of a model) replaces it, and its old packed weights are dropped; label
/// programs when two of one architecture (two fine-tunes, say) are used
/// side by side: then only a program with the same label replaces one.
#[no_mangle]
pub extern "C" fn xnncache_set_program(cache: *mut xnncache, label: *const c_char) -> xnncache_status {
    api("xnncache_set_program", || {
        let h = handle(cache)?;
        // SAFETY: a non-NULL label is a NUL-terminated string by the API contract.
        let label = (!label.is_null()).then(|| unsafe { CStr::from_ptr(label) }.to_string_lossy().into_owned());
        if label.as_deref() == Some("") {
            return Err(Error::invalid("the label is empty (use NULL for none)"));
        }
        h.cache.set_program(label.as_deref());
        Ok(())
    })
}

/// Checks every committed payload of the file against its checksum:
/// `XNNCACHE_CORRUPT` if one differs.
#[no_mangle]
pub extern "C" fn xnncache_verify(cache: *mut xnncache) -> xnncache_status {
    api("xnncache_verify", || handle(cache)?.cache.verify())
}

/// Rewrites the file with only the weights this session used and replaces it
/// atomically (runtimes keep working; this cache persists nothing afterwards).
#[no_mangle]
pub extern "C" fn xnncache_compact(cache: *mut xnncache) -> xnncache_status {
    api("xnncache_compact", || handle(cache)?.cache.compact().map(|_| ()))
}

/// Called by `xnncache_list_names` once per packed weight: the name its
/// weights were registered under, and its bias's (NULL when the packing has
/// no bias or the bias has no name). Both are valid during the call only.
#[allow(non_camel_case_types)]
pub type xnncache_name_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, weights_name: *const c_char, bias_name: *const c_char)>;

/// Lists the names of the packed weights this cache finds by look-up: those
/// the file's index held at open, and those stored since (names come from
/// `xnncache_register_weights`; weights registered without a name, or at an
/// offset inside a registered buffer, are not listed). Calls `callback`
/// once per name, in sorted order, on this thread, with no lock of
/// xnncache held. Reads the index only, never a payload.
#[no_mangle]
pub extern "C" fn xnncache_list_names(cache: *const xnncache, callback: xnncache_name_callback, user_data: *mut c_void) -> xnncache_status {
    api("xnncache_list_names", || {
        let h = handle(cache)?;
        let callback = callback.ok_or_else(|| Error::invalid("callback is NULL"))?;
        for names in h.cache.names() {
            // Names never hold a NUL: the index refuses them, and names given
            // to xnncache_register_weights are C strings.
            let (Ok(weights), Ok(bias)) = (CString::new(names.weights), names.bias.map(CString::new).transpose()) else { continue };
            let bias_ptr = bias.as_ref().map_or(core::ptr::null(), |b| b.as_ptr());
            // SAFETY: the host's callback, called as the API documents, with
            // strings that live until it returns.
            unsafe { callback(user_data, weights.as_ptr(), bias_ptr) };
        }
        Ok(())
    })
}

/// Fills `*stats`.
#[no_mangle]
pub extern "C" fn xnncache_stats(cache: *const xnncache, stats: *mut Stats) -> xnncache_status {
    api("xnncache_stats", || {
        let h = handle(cache)?;
        if stats.is_null() {
            return Err(Error::invalid("stats is NULL"));
        }
        // SAFETY: checked for NULL; the caller passes a writable struct (of any alignment).
        unsafe { stats.write_unaligned(h.cache.stats()) };
        Ok(())
    })
}

/// Closes a cache. Every runtime created with its provider must be deleted
/// first. The handle is invalid from here on (`XNNCACHE_INVALID_ARGUMENT`);
/// a call on it still running on another thread finishes normally, and the
/// cache is closed when it returns. A write-back still running is waited for (it ends in a commit that
/// the next launch finds); call `xnncache_wait` with a timeout first if the
/// host cannot wait that long. The previous commit is never lost.
#[no_mangle]
pub extern "C" fn xnncache_close(cache: *mut xnncache) {
    if !cache.is_null() {
        no_unwind(Status::XNNCACHE_INTERNAL_ERROR, || close_handle(cache));
    }
}

/// The name of a status, e.g. "XNNCACHE_IO_ERROR".
#[no_mangle]
pub extern "C" fn xnncache_status_name(status: c_int) -> *const c_char {
    const UNKNOWN: &CStr = c"XNNCACHE_UNKNOWN_STATUS";
    no_unwind(UNKNOWN.as_ptr(), || {
        let known = Status::ALL.iter().find(|s| **s as c_int == status);
        known.map_or(UNKNOWN, |s| s.c_name()).as_ptr()
    })
}

/// The message of the last failure (or fallback warning) on this thread, or
/// "". Valid until the next xnncache call on this thread.
#[no_mangle]
pub extern "C" fn xnncache_last_error() -> *const c_char {
    no_unwind(c"".as_ptr(), || {
        LAST_ERROR.try_with(|e| e.try_borrow().map_or(c"".as_ptr(), |e| e.as_ptr())).unwrap_or(c"".as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{KeyV1, ProviderV1};

    fn v1_options(path: *const c_char) -> xnncache_options {
        xnncache_options {
            options_size: core::mem::size_of::<xnncache_options>() as u32,
            key_size: core::mem::size_of::<KeyV1>() as u32,
            provider_size: core::mem::size_of::<ProviderV1>() as u32,
            flags: 0,
            path,
            fd: -1,
            compact_percent: 0,
            build_id: b"unit-test-build".as_ptr().cast(),
            build_id_size: 15,
            address_space: 0,
            size_cap: 0,
            program: core::ptr::null(),
        }
    }

    fn last_error() -> String {
        // SAFETY: xnncache_last_error returns a valid C string.
        unsafe { CStr::from_ptr(xnncache_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn status_names_match_the_enum() {
        for s in Status::ALL {
            // SAFETY: static C strings.
            let n = unsafe { CStr::from_ptr(xnncache_status_name(s as c_int)) };
            assert_eq!(n.to_str().unwrap(), s.name());
        }
        // SAFETY: static C string.
        assert_eq!(unsafe { CStr::from_ptr(xnncache_status_name(99)) }.to_str().unwrap(), "XNNCACHE_UNKNOWN_STATUS");
    }

    #[test]
    fn bad_arguments_get_a_status_and_a_message() {
        let mut out = core::ptr::null_mut();
        assert_eq!(xnncache_open(core::ptr::null(), &mut out), Status::XNNCACHE_INVALID_ARGUMENT);
        let mut o = v1_options(core::ptr::null());
        o.key_size = 0;
        assert_eq!(xnncache_open(&o, &mut out), Status::XNNCACHE_INVALID_ARGUMENT);
        assert!(last_error().contains("XNNCACHE_OPTIONS_INIT"), "{}", last_error());
        o.key_size = 40;
        assert_eq!(xnncache_open(&o, &mut out), Status::XNNCACHE_UNSUPPORTED_ABI);
        assert!(last_error().contains("unknown XNNPACK provider ABI"));
        let mut o = v1_options(core::ptr::null());
        o.flags = 0x100; // the first flag bit this library does not know
        assert_eq!(xnncache_open(&o, &mut out), Status::XNNCACHE_INVALID_ARGUMENT);
        assert_eq!(xnncache_finalize(core::ptr::null_mut()), Status::XNNCACHE_INVALID_ARGUMENT);
        let bogus = 0x1000 as *mut xnncache;
        assert_eq!(xnncache_finalize(bogus), Status::XNNCACHE_INVALID_ARGUMENT);
        assert!(xnncache_provider(bogus).is_null());
    }

    /// Program labels: NULL clears, "" is refused, in options as in the call.
    #[test]
    fn program_labels_are_checked() {
        let mut o = v1_options(core::ptr::null());
        o.program = c"".as_ptr();
        let mut c = core::ptr::null_mut();
        assert_eq!(xnncache_open(&o, &mut c), Status::XNNCACHE_INVALID_ARGUMENT);
        assert!(last_error().contains("program label"), "{}", last_error());
        o.program = c"llm".as_ptr();
        assert_eq!(xnncache_open(&o, &mut c), Status::XNNCACHE_OK);
        assert_eq!(xnncache_set_program(c, c"vision".as_ptr()), Status::XNNCACHE_OK);
        assert_eq!(xnncache_set_program(c, core::ptr::null()), Status::XNNCACHE_OK);
        assert_eq!(xnncache_set_program(c, c"".as_ptr()), Status::XNNCACHE_INVALID_ARGUMENT);
        assert_eq!(xnncache_set_program(core::ptr::null_mut(), c"x".as_ptr()), Status::XNNCACHE_INVALID_ARGUMENT);
        xnncache_close(c);
    }

    #[test]
    fn open_stats_close_and_double_close() {
        let o = v1_options(core::ptr::null());
        let mut c = core::ptr::null_mut();
        assert_eq!(xnncache_open(&o, &mut c), Status::XNNCACHE_OK);
        assert!(!xnncache_provider(c).is_null());
        let mut s = Stats::default();
        assert_eq!(xnncache_stats(c, &mut s), Status::XNNCACHE_OK);
        assert_eq!(s.backing, crate::cache::Backing::XNNCACHE_BACKING_MEMORY as u32);
        assert_eq!(s.abi_generation, 1);
        assert_eq!(xnncache_finalize(c), Status::XNNCACHE_OK);
        xnncache_close(c);
        assert_eq!(xnncache_stats(c, &mut s), Status::XNNCACHE_INVALID_ARGUMENT);
        xnncache_close(c); // a second close is reported, not a crash
        assert!(last_error().contains("not an open xnncache"));
    }

    #[test]
    fn an_unusable_path_falls_back_to_the_heap_unless_a_file_is_required() {
        let path = c"/proc/xnncache-cannot-create-this/cache.bin";
        let mut o = v1_options(path.as_ptr());
        let mut c = core::ptr::null_mut();
        assert_eq!(xnncache_open(&o, &mut c), Status::XNNCACHE_OK);
        assert!(last_error().contains("go to the heap"), "{}", last_error());
        let mut s = Stats::default();
        assert_eq!(xnncache_stats(c, &mut s), Status::XNNCACHE_OK);
        assert_eq!(s.backing, crate::cache::Backing::XNNCACHE_BACKING_HEAP as u32);
        xnncache_close(c);
        o.flags = XNNCACHE_FLAG_REQUIRE_FILE;
        assert_eq!(xnncache_open(&o, &mut c), Status::XNNCACHE_IO_ERROR);
    }
    /// A host's thread-local destructor that runs after ours (registered
    /// before them) may still call the C API: a file-backed cache is opened,
    /// finalized (its write-back thread started from there), waited for and
    /// closed there. A panic in a destructor aborts, in every build. Not on
    /// Windows, which runs thread-local destructors under the loader lock,
    /// where no new thread can start (so no write-back could finish there).
    #[test]
    #[cfg(unix)]
    fn the_c_api_works_from_a_thread_local_destructor_run_after_ours() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static DONE: AtomicU32 = AtomicU32::new(0);
        static OURS_GONE: AtomicU32 = AtomicU32::new(0);
        struct Host;
        impl Drop for Host {
            fn drop(&mut self) {
                OURS_GONE.store(u32::from(LAST_ERROR.try_with(|_| ()).is_err()), Ordering::SeqCst);
                // A file: finalize starts the write-back thread from here.
                let dir = std::env::temp_dir().join(format!("xnncache-tls-dtor-{}", std::process::id()));
                let _ = std::fs::create_dir_all(&dir);
                let path = CString::new(dir.join("cache.bin").into_os_string().into_encoded_bytes()).unwrap_or_default();
                let o = v1_options(path.as_ptr());
                let mut c = core::ptr::null_mut();
                let mut s = Stats::default();
                if xnncache_open(&o, &mut c) == Status::XNNCACHE_OK
                    && xnncache_stats(c, &mut s) == Status::XNNCACHE_OK
                    && s.backing == crate::cache::Backing::XNNCACHE_BACKING_FILE as u32
                    && xnncache_finalize(c) == Status::XNNCACHE_OK
                    && xnncache_wait(c, 1000) == Status::XNNCACHE_OK
                {
                    xnncache_close(c);
                    xnncache_close(c); // a second close is reported, in the message
                    if xnncache_stats(c, &mut s) == Status::XNNCACHE_INVALID_ARGUMENT {
                        let _ = xnncache_last_error();
                        DONE.store(1, Ordering::SeqCst);
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        thread_local! {
            static HOST: Host = const { Host };
        }
        std::thread::spawn(|| {
            HOST.with(|_| ()); // registered first, so destroyed after ours
            set_last_error("ours exists now");
            let _ = crate::cache::this_thread();
        })
        .join()
        .unwrap();
        assert_eq!(DONE.load(Ordering::SeqCst), 1);
        // Where destructors run in reverse order (Linux), ours were gone.
        if cfg!(target_os = "linux") {
            assert_eq!(OURS_GONE.load(Ordering::SeqCst), 1);
        }
    }
}
