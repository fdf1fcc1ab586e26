//! One status enum for the whole C API, and the error type that carries it.

use std::fmt;

/// What an `xnncache_*` function reports. `XNNCACHE_OK` is 0; every other
/// value comes with a message readable through `xnncache_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum xnncache_status {
    /// Success.
    XNNCACHE_OK = 0,
    /// A NULL pointer, an empty path, an unknown flag.
    XNNCACHE_INVALID_ARGUMENT = 1,
    /// The struct sizes recorded by `XNNCACHE_OPTIONS_INIT` match no known
    /// generation of XNNPACK's provider ABI.
    XNNCACHE_UNSUPPORTED_ABI = 2,
    /// The file could not be created, grown or written back.
    XNNCACHE_IO_ERROR = 3,
    /// Memory or address space ran out.
    XNNCACHE_OUT_OF_MEMORY = 4,
    /// The call does not fit the object's state (e.g. a provider that is not ours).
    XNNCACHE_INVALID_STATE = 5,
    /// A bug inside xnncache was caught before it crossed the C boundary.
    XNNCACHE_INTERNAL_ERROR = 6,
    /// The cache file's bytes do not match their checksums.
    XNNCACHE_CORRUPT = 7,
    /// Another process holds the cache file's writer lock.
    XNNCACHE_BUSY = 8,
}

pub use xnncache_status as Status;

impl Status {
    /// Every status, for mapping numbers from C back to names.
    pub const ALL: [Status; 9] = [
        Status::XNNCACHE_OK,
        Status::XNNCACHE_INVALID_ARGUMENT,
        Status::XNNCACHE_UNSUPPORTED_ABI,
        Status::XNNCACHE_IO_ERROR,
        Status::XNNCACHE_OUT_OF_MEMORY,
        Status::XNNCACHE_INVALID_STATE,
        Status::XNNCACHE_INTERNAL_ERROR,
        Status::XNNCACHE_CORRUPT,
        Status::XNNCACHE_BUSY,
    ];

    /// The status's name as a C string, e.g. `XNNCACHE_IO_ERROR`.
    pub fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Status::XNNCACHE_OK => c"XNNCACHE_OK",
            Status::XNNCACHE_INVALID_ARGUMENT => c"XNNCACHE_INVALID_ARGUMENT",
            Status::XNNCACHE_UNSUPPORTED_ABI => c"XNNCACHE_UNSUPPORTED_ABI",
            Status::XNNCACHE_IO_ERROR => c"XNNCACHE_IO_ERROR",
            Status::XNNCACHE_OUT_OF_MEMORY => c"XNNCACHE_OUT_OF_MEMORY",
            Status::XNNCACHE_INVALID_STATE => c"XNNCACHE_INVALID_STATE",
            Status::XNNCACHE_INTERNAL_ERROR => c"XNNCACHE_INTERNAL_ERROR",
            Status::XNNCACHE_CORRUPT => c"XNNCACHE_CORRUPT",
            Status::XNNCACHE_BUSY => c"XNNCACHE_BUSY",
        }
    }

    pub fn name(self) -> &'static str {
        self.c_name().to_str().expect("status names are ASCII")
    }
}

/// An error: a status for programs and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::XNNCACHE_INVALID_ARGUMENT, message)
    }

    pub fn io(context: impl fmt::Display, err: &std::io::Error) -> Error {
        Error::new(Status::XNNCACHE_IO_ERROR, format!("{context}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
