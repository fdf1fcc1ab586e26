//! What Linux and Android do their own way. Android's Bionic is Linux's
//! system-call set minus a few wrappers (no `sync_file_range` in the libc
//! crate), and its 32-bit targets need the `*64` calls for offsets past 2 GiB.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `mmap` with a 64-bit file offset on every Linux and Android target.
///
/// # Safety
/// As for `mmap`: with `MAP_FIXED`, the range must be the caller's own.
pub(super) unsafe fn mmap(addr: *mut libc::c_void, len: usize, prot: libc::c_int, flags: libc::c_int, fd: i32, offset: u64) -> io::Result<*mut libc::c_void> {
    let offset = libc::off64_t::try_from(offset).map_err(|_| io::Error::new(io::ErrorKind::FileTooLarge, "file offset past 2^63"))?;
    // SAFETY: as guaranteed by the caller.
    Ok(unsafe { libc::mmap64(addr, len, prot, flags, fd, offset) })
}

/// Reserves disk blocks with `posix_fallocate`, growing the file; on tmpfs,
/// checks the free space and grows the file (see [`reserve_in_memory`]).
pub(super) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if let Some(fs) = memory_filesystem(file) {
        return reserve_in_memory(file, fs, offset, len);
    }
    let too_large = || io::Error::new(io::ErrorKind::FileTooLarge, "file range past 2^63");
    let (offset, len) = (libc::off64_t::try_from(offset).map_err(|_| too_large())?, libc::off64_t::try_from(len).map_err(|_| too_large())?);
    loop {
        // SAFETY: posix_fallocate reads no memory of ours.
        match unsafe { libc::posix_fallocate64(file.as_raw_fd(), offset, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The free bytes of the memory filesystem (tmpfs, ramfs) holding `file`,
/// `None` for its limit where it has none; `None` for any other filesystem.
fn memory_filesystem(file: &File) -> Option<Option<u64>> {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    // SAFETY: an all-zero statfs is a valid value for fstatfs to fill.
    let mut st: libc::statfs64 = unsafe { core::mem::zeroed() };
    // SAFETY: fstatfs64 writes one statfs64 into `st`.
    if unsafe { libc::fstatfs64(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
    let kind = st.f_type as u64 & 0xffff_ffff;
    (kind == TMPFS_MAGIC || kind == RAMFS_MAGIC).then(|| {
        #[allow(clippy::unnecessary_cast)]
        let (blocks, free, size) = (st.f_blocks as u64, st.f_bavail as u64, st.f_bsize as u64);
        // A tmpfs mounted without a size (and ramfs) reports no blocks at all.
        (blocks > 0).then(|| free.saturating_mul(size))
    })
}

/// `allocate` on tmpfs: `posix_fallocate` there allocates and zeroes memory
/// pages at once (200 ms for 667 MiB here, on a cold launch's critical
/// path, where ext4 takes 1 ms), pages that the write-back's `pwrite` then
/// fills anyway and would have allocated itself. Nothing is ever written
/// through a shared mapping of the file (packing goes to anonymous staging
/// memory; the file's pages are mapped once written and synced), so a hole
/// cannot become a SIGBUS: checking the free space, then growing the length,
/// gives the same early "full". Another writer filling the tmpfs meanwhile
/// surfaces as ENOSPC from the write-back's `pwrite`, an error like any other.
fn reserve_in_memory(file: &File, free: Option<u64>, offset: u64, len: u64) -> io::Result<()> {
    let end = offset.checked_add(len).ok_or_else(|| io::Error::new(io::ErrorKind::FileTooLarge, "file range past 2^64"))?;
    if free.is_some_and(|free| free < len) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    if file.metadata()?.len() < end {
        set_len(file, end)?;
    }
    Ok(())
}

pub(super) fn set_len(file: &File, len: u64) -> io::Result<()> {
    // std calls ftruncate64 on these targets.
    file.set_len(len)
}

/// `fdatasync`: the data and the metadata needed to read it back.
pub(super) fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Starts writing `[offset, offset + len)` back without waiting, so that the
/// disk works while the next piece is copied (and a long write is not
/// throttled as a burst of dirty pages). A hint: errors are ignored, the
/// final `sync_data` reports them.
#[cfg(target_os = "linux")]
pub(super) fn start_writeback(file: &File, offset: u64, len: usize) {
    if let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) {
        // SAFETY: sync_file_range takes a descriptor and a range; it reads no memory of ours.
        unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
}

/// Bionic's libc binding has no `sync_file_range`: the final sync does all the work.
#[cfg(target_os = "android")]
pub(super) fn start_writeback(_file: &File, _offset: u64, _len: usize) {}

/// A path that opens the file behind descriptor `fd` anew.
pub(super) fn descriptor_path(fd: i32) -> io::Result<std::path::PathBuf> {
    Ok(format!("/proc/self/fd/{fd}").into())
}

/// Lowers the calling thread's priority (nice 10): the write-back thread
/// then takes what inference leaves. Linux and Android nice threads one by one.
pub(super) fn lower_thread_priority() {
    // SAFETY: gettid and setpriority read no memory of ours; a failure only
    // leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Faults in `[addr, addr + len)` for writing in one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14): one kernel entry instead of one page
/// fault per page. Best effort: older kernels refuse it and the pages fault
/// one by one as before.
///
/// # Safety
/// The range must be writable memory of the caller's own.
pub(super) unsafe fn prefault(addr: *mut u8, len: usize) {
    // SAFETY: as guaranteed by the caller; populating changes no byte.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
}

/// Reads `[addr, addr + len)` of a file mapping into memory and maps it
/// (`MADV_POPULATE_READ`, Linux 5.14), returning when the pages are there.
/// Older kernels refuse it: then `MADV_WILLNEED` starts the reads instead.
///
/// # Safety
/// The range must be mapped, page-aligned.
pub(super) unsafe fn populate_read(addr: *const u8, len: usize) {
    // SAFETY: as guaranteed by the caller; neither advice changes a byte.
    unsafe {
        if libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_READ) != 0 {
            libc::madvise(addr as *mut libc::c_void, len, libc::MADV_WILLNEED);
        }
    }
}

/// A file in the page cache is mapped ahead (see `cache::prefetch`).
pub(super) const MAPS_AHEAD: bool = true;

/// Whether any page of `[addr, addr + len)` is mapped by a PMD entry (a
/// 2 MiB page-table entry, which the kernel uses for large page-cache
/// folios): `PAGEMAP_SCAN` with `PAGE_IS_HUGE` on `/proc/self/pagemap`
/// (Linux 6.7). `None` where that cannot be asked (older kernels, no /proc).
pub(super) fn pmd_mapped(addr: usize, len: usize) -> Option<bool> {
    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }
    #[repr(C)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }
    // _IOWR('f', 16, struct pm_scan_arg) and PAGE_IS_HUGE, from <linux/fs.h>.
    const PAGEMAP_SCAN: u64 = (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;
    const PAGE_IS_HUGE: u64 = 1 << 6;
    let pagemap = File::open("/proc/self/pagemap").ok()?;
    let mut region = PageRegion { start: 0, end: 0, categories: 0 };
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: 0,
        start: addr as u64,
        end: (addr + len) as u64,
        walk_end: 0,
        vec: &mut region as *mut PageRegion as u64,
        vec_len: 1,
        max_pages: 0,
        category_inverted: 0,
        category_mask: PAGE_IS_HUGE,
        category_anyof_mask: 0,
        return_mask: PAGE_IS_HUGE,
    };
    // SAFETY: the ioctl reads `arg` and writes at most one region into
    // `region`; it reads page tables, never the memory itself.
    let found = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
    (found >= 0).then_some(found > 0)
}

/// Starts reading `[offset, offset + len)` of `file` into the page cache
/// (`POSIX_FADV_WILLNEED`) and returns before the reads complete. Through the
/// descriptor, not the mapping: it takes no lock of the address space, which
/// the host's own `mmap` calls would wait for. Best effort.
pub(super) fn will_need_file(file: &File, offset: u64, len: usize) {
    // SAFETY: a hint on a descriptor we hold; it changes no byte.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t, libc::POSIX_FADV_WILLNEED) };
}
