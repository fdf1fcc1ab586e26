//! What macOS and iOS do their own way: no `posix_fallocate`,
//! `sync_file_range` or `fdatasync`; `F_PREALLOCATE`, `F_FULLFSYNC` and
//! `F_GETPATH` instead. `off_t` is 64 bits on every Apple target.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn off(n: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::FileTooLarge, "file offset past 2^63"))
}

/// # Safety
/// As for `mmap`: with `MAP_FIXED`, the range must be the caller's own.
pub(super) unsafe fn mmap(addr: *mut libc::c_void, len: usize, prot: libc::c_int, flags: libc::c_int, fd: i32, offset: u64) -> io::Result<*mut libc::c_void> {
    let offset = off(offset)?;
    // SAFETY: as guaranteed by the caller.
    Ok(unsafe { libc::mmap(addr, len, prot, flags, fd, offset) })
}

/// Reserves disk blocks for the file up to `offset + len` with
/// `F_PREALLOCATE` (contiguous if possible, else any), then sets its length:
/// a full disk fails here, before anything is packed.
pub(super) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let end = offset.checked_add(len).ok_or_else(|| io::Error::new(io::ErrorKind::FileTooLarge, "file range past 2^64"))?;
    let current = file.metadata()?.len();
    if end <= current {
        return Ok(());
    }
    let mut store = libc::fstore_t {
        fst_flags: libc::F_ALLOCATECONTIG | libc::F_ALLOCATEALL,
        fst_posmode: libc::F_PEOFPOSMODE,
        fst_offset: 0,
        fst_length: off(end - current)?,
        fst_bytesalloc: 0,
    };
    let fd = file.as_raw_fd();
    // SAFETY: F_PREALLOCATE reads and writes only `store`.
    let mut rc = unsafe { libc::fcntl(fd, libc::F_PREALLOCATE, &mut store) };
    if rc == -1 {
        store.fst_flags = libc::F_ALLOCATEALL;
        // SAFETY: as above.
        rc = unsafe { libc::fcntl(fd, libc::F_PREALLOCATE, &mut store) };
    }
    if rc == -1 {
        let e = io::Error::last_os_error();
        // A file system without preallocation (some network and FAT
        // volumes): the length alone, as plain writes would get.
        if e.raw_os_error() != Some(libc::ENOTSUP) {
            return Err(e);
        }
    }
    file.set_len(end)
}

pub(super) fn set_len(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}

/// `F_FULLFSYNC`: `fsync` on Apple leaves data in the drive's cache, so a
/// commit's order would not survive a power loss. Falls back to `fsync` on
/// file systems that refuse it.
pub(super) fn sync_data(file: &File) -> io::Result<()> {
    // SAFETY: F_FULLFSYNC takes only the descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_FULLFSYNC) } == 0 {
        return Ok(());
    }
    file.sync_all()
}

/// No asynchronous write-back request on Apple: the final sync does the work.
pub(super) fn start_writeback(_file: &File, _offset: u64, _len: usize) {}

/// The path of the file behind `fd` (`F_GETPATH`); no /proc here.
pub(super) fn descriptor_path(fd: i32) -> io::Result<std::path::PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: F_GETPATH writes at most PATH_MAX bytes and a NUL into `buf`.
    if unsafe { libc::fcntl(fd, libc::F_GETPATH, buf.as_mut_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(len);
    super::path_from_c(&buf)
}

/// Gives the calling thread the "utility" quality of service: the write-back
/// thread then yields to inference (and to the app's interactive work).
pub(super) fn lower_thread_priority() {
    // SAFETY: sets the calling thread's own QoS class; a failure leaves it as it was.
    unsafe { libc::pthread_set_qos_class_self_np(libc::qos_class_t::QOS_CLASS_UTILITY, 0) };
}

/// No populate call on Apple systems: pages fault one by one.
///
/// # Safety
/// The range must be writable memory of the caller's own.
pub(super) unsafe fn prefault(_addr: *mut u8, _len: usize) {}

/// Starts reading `[addr, addr + len)` of a file mapping (`MADV_WILLNEED`;
/// Apple systems have no populate call).
///
/// # Safety
/// The range must be mapped, page-aligned.
pub(super) unsafe fn populate_read(addr: *const u8, len: usize) {
    // SAFETY: as guaranteed by the caller; the advice changes no byte.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_WILLNEED) };
}

/// Not measured on Apple systems: a file in the page cache is not mapped
/// ahead (see `cache::prefetch`).
pub(super) const MAPS_AHEAD: bool = false;

/// Not known on Apple systems: no `PAGEMAP_SCAN`.
pub(super) fn pmd_mapped(_addr: usize, _len: usize) -> Option<bool> {
    None
}

/// Starts reading part of `file` into the page cache (`F_RDADVISE` would;
/// nothing yet). Best effort.
pub(super) fn will_need_file(_file: &File, _offset: u64, _len: usize) {}
