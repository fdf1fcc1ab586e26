//! Where xnncache's messages go: the `log` facade for Rust hosts, and a
//! callback a C host installs with `xnncache_set_log_callback`. Nothing is
//! printed by default.
//!
//! What is logged: every fallback (heap instead of file, read-only, a rebuilt
//! file, a writer lock held by another process, a failed write-back), once per
//! cache and kind, with its reason.

use core::ffi::{c_char, c_void};
use std::ffi::CString;
use std::sync::RwLock;

/// How much a message matters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum xnncache_log_level {
    /// Something failed; the cache fell back to a slower or less durable way.
    XNNCACHE_LOG_ERROR = 1,
    /// A fallback that the host may want to know about (e.g. a rebuilt file).
    XNNCACHE_LOG_WARN = 2,
    /// What the cache did (e.g. a file reused, a commit).
    XNNCACHE_LOG_INFO = 3,
}

pub use xnncache_log_level as Level;

/// A host's log callback: `message` is valid only during the call.
#[allow(non_camel_case_types)]
pub type xnncache_log_callback = Option<unsafe extern "C" fn(level: xnncache_log_level, message: *const c_char, user_data: *mut c_void)>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(xnncache_log_level, *const c_char, *mut c_void),
    user_data: usize,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Installs (or with `None` removes) the process's log callback.
pub fn set_callback(callback: xnncache_log_callback, user_data: *mut c_void) {
    let sink = callback.map(|callback| Sink { callback, user_data: user_data as usize });
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
}

/// The callback's lock, held across a `fork()` (see `cache::lifetime`).
pub(crate) fn freeze() -> Box<dyn std::any::Any> {
    Box::new(SINK.write().unwrap_or_else(|e| e.into_inner()))
}

/// Sends `message` to the `log` facade and to the host's callback.
pub fn emit(level: Level, message: &str) {
    let facade = match level {
        Level::XNNCACHE_LOG_ERROR => log::Level::Error,
        Level::XNNCACHE_LOG_WARN => log::Level::Warn,
        Level::XNNCACHE_LOG_INFO => log::Level::Info,
    };
    log::log!(target: "xnncache", facade, "{message}");
    // Copied out: the callback runs with no lock held, so it may install
    // another callback or call any function of the C API.
    let sink = *SINK.read().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = sink {
        let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the host gave us this function for exactly this call; the
        // message outlives the call.
        unsafe { (s.callback)(level, text.as_ptr(), s.user_data as *mut c_void) };
    }
}
