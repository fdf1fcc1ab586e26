//! The system calls behind the arena, one small function each.
//!
//! Every function here takes raw addresses; `super::Arena` is what makes sure
//! they only ever name memory the arena reserved itself.

use std::io;
use std::os::fd::RawFd;

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Reserves `len` bytes of address space that no one else will be given:
/// inaccessible, uncommitted, and not counted against overcommit.
pub fn reserve(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh PROT_NONE anonymous mapping at an address the kernel picks
    // touches no existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as *mut u8)
    }
}

/// Fresh, writable anonymous memory of `len` bytes (page-aligned), given back
/// to the system by [`release`], not kept by the allocator.
pub fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping at an address the kernel picks.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as *mut u8)
    }
}

/// Maps `len` bytes of `fd` from `offset` over `addr`, shared.
///
/// # Safety
/// `[addr, addr + len)` must lie inside a reservation made by [`reserve`] that
/// holds nothing anyone still reads or writes.
pub unsafe fn map_file(addr: *mut u8, len: usize, fd: RawFd, offset: u64, writable: bool) -> io::Result<()> {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: MAP_FIXED replaces only the caller's own, unused reservation.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        debug_assert_eq!(p as *mut u8, addr);
        Ok(())
    }
}

/// After a failed `map_file` over live bytes (older kernels unmap before they
/// fail): maps anonymous memory back at `addr` and reads the bytes from the
/// file, where they were just written, then makes them read-only. Best effort.
///
/// # Safety
/// `[addr, addr + len)` must be the arena's own range whose bytes the file
/// holds at `offset`; no one may write to it.
pub unsafe fn restore_from_file(addr: *mut u8, len: usize, fd: RawFd, offset: u64) {
    // SAFETY: MAP_FIXED over the caller's own range (see above).
    let p = unsafe {
        libc::mmap(addr as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return;
    }
    let mut done = 0;
    while done < len {
        // SAFETY: reads into the writable range just mapped.
        let n = unsafe { libc::pread(fd, addr.add(done) as *mut libc::c_void, len - done, (offset + done as u64) as libc::off_t) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        done += n as usize;
    }
    // SAFETY: the caller's own range.
    let _ = unsafe { protect(addr, len, false) };
}

/// Changes the protection of `[addr, addr + len)`.
///
/// # Safety
/// The range must lie inside the arena's own mappings, and no one may access it
/// in a way the new protection forbids.
pub unsafe fn protect(addr: *mut u8, len: usize, writable: bool) -> io::Result<()> {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: the caller guarantees the range is ours and the new rights suit every user.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns `[addr, addr + len)` back into an inaccessible reservation, dropping
/// whatever was mapped there.
///
/// # Safety
/// The range must lie inside the arena's own reservation, and no one may use
/// any address in it any more.
pub unsafe fn unmap_to_reserved(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: MAP_FIXED replaces only the caller's own, dead range.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Returns a reservation (and whatever is mapped inside it) to the system.
///
/// # Safety
/// No one may use any address in the range afterwards.
pub unsafe fn release(addr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is ours and dead.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Gives `[offset, offset + len)` of the file real disk blocks, growing the
/// file if needed, so that later stores through a mapping cannot raise SIGBUS
/// for want of space.
pub fn allocate(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: posix_fallocate reads no memory of ours.
        let rc = unsafe { libc::posix_fallocate(fd, offset as libc::off_t, len as libc::off_t) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(fd: RawFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: pwrite reads `buf.len()` bytes of `buf`.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote nothing"));
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

/// Starts writing `[offset, offset + len)` of the file back without waiting,
/// so that the disk works while the next piece is copied (and a long write
/// is not throttled as a burst of dirty pages). A hint: errors are ignored,
/// the final `sync_data` reports them.
pub fn start_writeback(fd: RawFd, offset: u64, len: usize) {
    // SAFETY: sync_file_range takes a descriptor and a range; it reads no memory of ours.
    unsafe { libc::sync_file_range(fd, offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Waits until the file's data is on disk.
pub fn sync_data(fd: RawFd) -> io::Result<()> {
    // SAFETY: fdatasync takes only a descriptor.
    if unsafe { libc::fdatasync(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the file's length (used to drop the unused tail at close).
pub fn set_len(fd: RawFd, len: u64) -> io::Result<()> {
    // SAFETY: ftruncate reads no memory of ours.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The largest file this process may write (`RLIMIT_FSIZE`), if limited.
/// Growing past it would raise SIGXFSZ, which kills by default, so the arena
/// checks it first and falls back to memory instead.
pub fn file_size_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(lim.rlim_cur)
    }
}
