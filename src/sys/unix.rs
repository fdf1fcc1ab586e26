//! POSIX memory and files: Linux, Android and Apple. What differs between
//! them (disk-block reservation, durability, write-back hints, 64-bit file
//! offsets, reopening a descriptor) is in `linux.rs` and `apple.rs`, used
//! here as `os`.
//!
//! Every function here takes raw addresses; `crate::arena::Arena` is what
//! makes sure they only ever name memory the arena reserved itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::os;
use super::{Existing, Ownership};

/// The page size, read once from the system (4 KiB on most Linux machines,
/// 16 KiB on Apple silicon and some Android devices).
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let n = if n > 0 { n as usize } else { 4096 };
            PAGE.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// File mappings align to pages here.
pub fn map_granularity() -> usize {
    page_size()
}

fn check(p: *mut libc::c_void) -> io::Result<*mut u8> {
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as *mut u8)
    }
}

/// Reserves `len` bytes of address space that no one else will be given:
/// inaccessible, uncommitted, and not counted against overcommit.
pub fn reserve(len: usize, _file_backed: bool) -> io::Result<*mut u8> {
    // SAFETY: a fresh PROT_NONE anonymous mapping at an address the kernel picks
    // touches no existing memory.
    check(unsafe {
        libc::mmap(core::ptr::null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    })
}

/// As [`reserve`], but placed so that `base % align == phase % align`
/// (`align` a power of two, a multiple of the page size): a file arena whose
/// segment starting at file offset `start` is reserved with `phase = start`
/// maps every 2 MiB-aligned stretch of the file at a 2 MiB-aligned address,
/// which lets the kernel map the file's large page-cache folios with one
/// PMD entry each (`FilePmdMapped` in smaps) instead of 512 page entries:
/// fewer faults on the first inference and fewer TLB misses on every one.
/// Reserves `align` more and gives the slack back.
pub fn reserve_with_phase(len: usize, file_backed: bool, align: usize, phase: usize) -> io::Result<*mut u8> {
    debug_assert!(align.is_power_of_two() && align.is_multiple_of(page_size()));
    let Some(padded) = len.checked_add(align) else {
        return reserve(len, file_backed);
    };
    let p = match reserve(padded, file_backed) {
        Ok(p) => p,
        Err(_) => return reserve(len, file_backed),
    };
    let lead = (phase % align).wrapping_sub(p as usize % align) & (align - 1);
    // SAFETY: `[p, p + padded)` is the reservation just made; the two slack
    // ranges outside `[p + lead, p + lead + len)` are page-aligned parts of it
    // that no one has been given.
    unsafe {
        if lead > 0 {
            release(p, lead, file_backed);
        }
        let tail = padded - lead - len;
        if tail > 0 {
            release(p.add(lead + len), tail, file_backed);
        }
        Ok(p.add(lead))
    }
}

/// Returns a reservation (and whatever is mapped inside it) to the system.
///
/// # Safety
/// No one may use any address in the range afterwards.
pub unsafe fn release(addr: *mut u8, len: usize, _file_backed: bool) {
    // SAFETY: the caller guarantees the range is ours and dead.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Makes `[addr, addr + len)` of an anonymous reservation writable memory.
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`] that holds
/// nothing anyone uses.
pub unsafe fn commit(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller's own unused range.
    unsafe { protect(addr, len, libc::PROT_READ | libc::PROT_WRITE) }
}

/// Makes `[addr, addr + len)` writable staging memory for the file's bytes at
/// `offset`: anonymous memory here, written to the file by [`write_back`].
///
/// # Safety
/// As for [`commit`].
pub unsafe fn stage(addr: *mut u8, len: usize, _file: &File, _offset: u64) -> io::Result<()> {
    // SAFETY: as guaranteed by the caller.
    unsafe { commit(addr, len) }
}

/// Writes staged bytes to the file and starts the disk on them.
///
/// # Safety
/// `[addr, addr + len)` must be staged memory whose bytes are complete.
pub unsafe fn write_back(addr: *const u8, len: usize, file: &File, offset: u64) -> io::Result<()> {
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { core::slice::from_raw_parts(addr, len) };
    write_all_at(file, bytes, offset)?;
    os::start_writeback(file, offset, len);
    Ok(())
}

/// After [`write_back`] and [`sync_data`]: maps the file's now clean pages
/// read-only over the staged range (`MAP_FIXED` replaces it atomically; the
/// bytes are identical). On failure the staged bytes are put back.
///
/// # Safety
/// The file must hold exactly the staged bytes at `offset`; no one may write
/// to the range.
pub unsafe fn seal_staged(addr: *mut u8, len: usize, file: &File, offset: u64) -> io::Result<()> {
    // SAFETY: replacing our own range with identical bytes.
    if let Err(e) = unsafe { map_file(addr, len, file, offset) } {
        // SAFETY: same range and bytes.
        unsafe { restore_from_file(addr, len, file, offset) };
        return Err(e);
    }
    Ok(())
}

/// Maps `len` bytes of `file` from `offset` over `addr`, shared, read-only.
///
/// # Safety
/// `[addr, addr + len)` must lie inside a reservation made by [`reserve`]
/// whose bytes nobody relies on, or that already hold these file bytes.
pub unsafe fn map_file(addr: *mut u8, len: usize, file: &File, offset: u64) -> io::Result<()> {
    // SAFETY: MAP_FIXED replaces only the caller's own range.
    let p = check(unsafe { os::mmap(addr as *mut libc::c_void, len, libc::PROT_READ, libc::MAP_SHARED | libc::MAP_FIXED, file.as_raw_fd(), offset)? })?;
    debug_assert_eq!(p, addr);
    Ok(())
}

/// After a failed `map_file` over live bytes (older kernels unmap before they
/// fail): maps anonymous memory back at `addr` and reads the bytes from the
/// file, where they were just written, then makes them read-only. Best effort.
///
/// # Safety
/// `[addr, addr + len)` must be the arena's own range whose bytes the file
/// holds at `offset`; no one may write to it.
unsafe fn restore_from_file(addr: *mut u8, len: usize, file: &File, offset: u64) {
    // SAFETY: MAP_FIXED over the caller's own range (see above).
    let p = unsafe {
        libc::mmap(addr as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return;
    }
    // SAFETY: the range was just mapped writable.
    let buf = unsafe { core::slice::from_raw_parts_mut(addr, len) };
    let _ = read_exact_at(file, buf, offset);
    // SAFETY: the caller's own range.
    let _ = unsafe { protect_readonly(addr, len) };
}

/// # Safety
/// The range must lie inside the arena's own mappings, and no one may access it
/// in a way the new protection forbids.
unsafe fn protect(addr: *mut u8, len: usize, prot: libc::c_int) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is ours and the new rights suit every user.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `[addr, addr + len)` read-only.
///
/// # Safety
/// The range must lie inside the arena's own mappings, and no one may write to it.
pub unsafe fn protect_readonly(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: as guaranteed by the caller.
    unsafe { protect(addr, len, libc::PROT_READ) }
}

/// Turns `[addr, addr + len)` back into an inaccessible reservation, dropping
/// whatever was mapped there.
///
/// # Safety
/// The range must lie inside the arena's own reservation, and no one may use
/// any address in it any more.
pub unsafe fn unmap_to_reserved(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: MAP_FIXED replaces only the caller's own, dead range.
    check(unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    })
    .map(|_| ())
}

/// Fresh, writable anonymous memory of `len` bytes (page-aligned), given back
/// to the system by [`unmap_anonymous`], not kept by the allocator.
pub fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping at an address the kernel picks.
    check(unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) })
}

/// # Safety
/// `[addr, addr + len)` must come from [`map_anonymous`] and be dead.
pub unsafe fn unmap_anonymous(addr: *mut u8, len: usize) {
    // SAFETY: as guaranteed by the caller.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Makes fresh writable memory resident ahead of its first write, in bulk.
///
/// # Safety
/// `[addr, addr + len)` must be writable memory of the arena's own.
pub unsafe fn prefault(addr: *mut u8, len: usize) {
    // SAFETY: as guaranteed by the caller.
    unsafe { os::prefault(addr, len) }
}

/// Whether every page of `[addr, addr + len)` is in memory (`mincore`);
/// false when that cannot be told.
///
/// # Safety
/// The range must be mapped; `addr` must be page-aligned.
pub unsafe fn is_resident(addr: *const u8, len: usize) -> bool {
    // SAFETY: as guaranteed by the caller.
    unsafe { residency(addr, len) }.is_some_and(|pages| pages.iter().all(|&p| p & 1 != 0))
}

/// Which pages of `[addr, addr + len)` are in memory (`mincore`: bit 0 of
/// each byte); `None` when that cannot be told.
///
/// # Safety
/// The range must be mapped; `addr` must be page-aligned.
pub unsafe fn residency(addr: *const u8, len: usize) -> Option<Vec<u8>> {
    let mut pages = vec![0u8; len.div_ceil(page_size())];
    // SAFETY: a mapped, page-aligned range (caller) and one byte per page of it.
    let known = unsafe { libc::mincore(addr as *mut libc::c_void, len, pages.as_mut_ptr().cast()) } == 0;
    known.then_some(pages)
}

/// Brings `[addr, addr + len)`, file pages mapped read-only, into memory:
/// for a warm launch's prefetch thread, whose runtimes will read them.
/// Best effort.
///
/// # Safety
/// The range must stay mapped for the duration of the call; `addr` must be
/// page-aligned.
pub unsafe fn bring_in(addr: *const u8, len: usize) {
    // SAFETY: as guaranteed by the caller; reading changes no byte.
    unsafe { os::populate_read(addr, len) };
}

/// Whether a warm launch maps a file that is in the page cache ahead of its
/// first inference (Linux and Android, where page faults are what a file
/// without large folios costs; see `cache::prefetch`).
pub fn maps_ahead() -> bool {
    os::MAPS_AHEAD
}

/// Whether any page of `[addr, addr + len)` is mapped by a 2 MiB page-table
/// entry (large page-cache folios); `None` where the system cannot say.
pub fn pmd_mapped(addr: usize, len: usize) -> Option<bool> {
    os::pmd_mapped(addr, len)
}

/// Starts reading part of `file` into the page cache through its descriptor
/// (no lock of the address space taken). Best effort.
pub fn will_need_file(file: &File, offset: u64, len: usize) {
    os::will_need_file(file, offset, len)
}

/// Maps `[addr, addr + len)`, file pages mapped read-only, by reading one
/// byte of each page: page faults, which take only the mapping's own lock,
/// where `MADV_POPULATE_READ` holds the whole address space's lock (and the
/// host's `mmap`/`munmap` calls sleep until it lets go).
///
/// # Safety
/// The range must be mapped readable and stay so for the duration of the
/// call, and its pages must be in the file (a page past the file's end
/// raises SIGBUS): callers touch only pages `mincore` found in the page cache.
pub unsafe fn touch_pages(addr: *const u8, len: usize) {
    let page = page_size();
    let mut at = 0;
    while at < len {
        // SAFETY: a mapped, readable byte (caller).
        unsafe { std::ptr::read_volatile(addr.add(at)) };
        at += page;
    }
}

/// Runs `f` when the process exits normally (`exit`, returning from `main`),
/// before its threads are stopped; once a shared library holding `f` is
/// unloaded, at its unloading (glibc and Bionic tie `atexit` to the caller's
/// object). Whether it was registered.
pub fn at_exit(f: extern "C" fn()) -> bool {
    // SAFETY: registers a function pointer; `f` lives as long as this code.
    unsafe { libc::atexit(f) == 0 }
}

/// Runs `prepare` in the thread that calls `fork()` before it forks, and
/// `parent` and `child` after it, in the parent and in the child
/// (`pthread_atfork`; glibc and Bionic unregister them when a shared
/// library holding them is unloaded). Whether they were registered.
pub fn at_fork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) -> bool {
    // SAFETY: registers three function pointers that live as long as this code.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// The calling thread, as a number that is never 0 and unique among the
/// process's live threads; readable at any moment, in an exit handler too
/// (when the thread's thread-locals may be gone).
pub fn thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let me = unsafe { libc::pthread_self() };
    #[allow(clippy::unnecessary_cast)] // an integer on Linux, a pointer on Apple
    let id = me as usize as u64;
    id
}

/// CPU time used so far by the whole process and by the calling thread: how
/// the write-back tells that the host is computing. `None` if unknown.
pub fn cpu_times() -> Option<(std::time::Duration, std::time::Duration)> {
    let read = |clock: libc::clockid_t| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into `t`.
        let read = unsafe { libc::clock_gettime(clock, &mut t) } == 0;
        #[allow(clippy::unnecessary_cast)] // the fields' types differ between targets
        read.then(|| std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    };
    Some((read(libc::CLOCK_PROCESS_CPUTIME_ID)?, read(libc::CLOCK_THREAD_CPUTIME_ID)?))
}

/// Lowers the calling thread's scheduling priority (the write-back thread:
/// inference running meanwhile comes first). Best effort.
pub fn lower_thread_priority() {
    os::lower_thread_priority()
}

/// Refuses a file end past `RLIMIT_FSIZE` before the kernel sees it: past the
/// limit, `write`, `ftruncate` and `fallocate` raise SIGXFSZ, which kills the
/// process by default. Every call that can grow a file checks here first.
fn within_size_limit(end: u64) -> io::Result<()> {
    match file_size_limit() {
        Some(limit) if end > limit => {
            Err(io::Error::new(io::ErrorKind::StorageFull, format!("the file-size limit (RLIMIT_FSIZE = {limit} bytes) is reached")))
        }
        _ => Ok(()),
    }
}

/// Gives `[offset, offset + len)` of the file real disk blocks, growing the
/// file if needed, so that a full disk is an error now, not later.
pub fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    within_size_limit(offset.saturating_add(len))?;
    os::allocate(file, offset, len)
}

/// Sets the file's length.
pub fn set_len(file: &File, len: u64) -> io::Result<()> {
    within_size_limit(len)?;
    os::set_len(file, len)
}

/// Whether `e` says the file could not change because it is mapped (never
/// here: POSIX truncates mapped files).
#[cfg(test)]
pub fn is_mapped_file_error(_e: &io::Error) -> bool {
    false
}

/// Waits until the file's data is on stable storage.
pub fn sync_data(file: &File) -> io::Result<()> {
    os::sync_data(file)
}

/// Reads exactly `buf.len()` bytes at `offset` (64-bit offsets on every target).
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    within_size_limit(offset.saturating_add(buf.len() as u64))?;
    file.write_all_at(buf, offset)
}

/// The largest file this process may write (`RLIMIT_FSIZE`), if limited.
/// Growing past it would raise SIGXFSZ, which kills by default, so the arena
/// checks it first and falls back to memory instead.
pub fn file_size_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    // rlim_t is 32 bits on some 32-bit targets, 64 on the others.
    #[allow(clippy::unnecessary_cast)]
    Some(lim.rlim_cur as u64)
}

/// (device, inode) of an open file.
pub fn file_id(file: &File) -> io::Result<(u64, u64)> {
    file.metadata().map(|m| (m.dev(), m.ino()))
}

/// (device, inode) of what `path` names now, if anything.
pub fn path_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn euid() -> libc::uid_t {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn fstat(file: &File) -> io::Result<libc::stat> {
    let mut st = unsafe_zeroed_stat();
    // SAFETY: fstat writes only into `st`.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The file-type bits of a `stat` (its and `S_IF*`'s widths differ between targets).
#[allow(clippy::unnecessary_cast)]
fn kind(st: &libc::stat) -> u32 {
    st.st_mode as u32 & libc::S_IFMT as u32
}

#[allow(clippy::unnecessary_cast)]
fn is_regular(st: &libc::stat) -> bool {
    kind(st) == libc::S_IFREG as u32
}

#[allow(clippy::unnecessary_cast)]
fn kind_name(st: &libc::stat) -> &'static str {
    match kind(st) {
        k if k == libc::S_IFDIR as u32 => "a directory",
        k if k == libc::S_IFIFO as u32 => "a FIFO",
        k if k == libc::S_IFSOCK as u32 => "a socket",
        k if k == libc::S_IFCHR as u32 => "a character device",
        k if k == libc::S_IFBLK as u32 => "a block device",
        _ => "not a regular file",
    }
}

/// Opens the file at `path` (following a symlink) without ever blocking: a
/// FIFO would block `open(2)` until a writer came. Anything but a regular
/// file is refused. One `fstat` gives the type, the owner, the length and
/// the identity the store needs. Asked for writing but not allowed (a read-only file, a
/// read-only mount), it is opened for reading. `None`: nothing is there.
pub fn open_existing(path: &Path, write: bool) -> io::Result<Option<Existing>> {
    let open = |write: bool| {
        OpenOptions::new().read(true).write(write).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC).open(path)
    };
    let (file, writable) = match open(write) {
        Ok(f) => (f, write),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // A socket cannot be opened at all; a directory not for writing.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::EISDIR)) => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())))
        }
        Err(e) if write && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ETXTBSY)) => match open(false) {
            Ok(f) => (f, false),
            Err(_) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let st = fstat(&file)?;
    if !is_regular(&st) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is {}, not a regular file", path.display(), kind_name(&st))));
    }
    // O_NONBLOCK stays set: it changes nothing for a regular file.
    Ok(Some(Existing { file, writable, ownership: ownership_of(&st), len: st.st_size as u64, id: stat_id(&st) }))
}

#[allow(clippy::unnecessary_cast)] // mode_t is u16 on Apple, u32 elsewhere
fn ownership_of(st: &libc::stat) -> Ownership {
    let mode = st.st_mode as u32;
    Ownership { trusted_owner: st.st_uid == euid() || st.st_uid == 0, writable_by_others: mode & 0o022 != 0, mode: mode & 0o7777 }
}

/// Creates a new file (failing if it exists) for reading and writing, with
/// permission bits `mode` (before the umask).
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(mode).custom_flags(libc::O_CLOEXEC).open(path)
}

/// Gives an open file these permission bits (a rebuild keeps the old file's).
pub fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Opens (creating, `mode`) the file whose lock is the writer lock. Never
/// through a symlink (a dangling one would make us create its target), and
/// only a regular file this user owns: a lock file planted by someone else
/// could otherwise be held by them forever.
pub fn open_lock_file(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(io::ErrorKind::InvalidInput, format!("the lock file {} is a symlink", path.display())),
            _ => e,
        })?;
    let st = fstat(&f)?;
    if !is_regular(&st) || st.st_uid != euid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the lock file {} is {}", path.display(), if st.st_uid != euid() { "owned by another user" } else { kind_name(&st) }),
        ));
    }
    Ok(f)
}

/// Deletes `temp`, a rebuild's temporary file left by process `pid`, if its
/// writer is gone: `pid` is not a live process here and nobody holds the
/// file's lock (a writer in another PID namespace still would). Returns
/// whether it was deleted.
pub fn remove_abandoned(temp: &Path, pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only asks whether the process exists.
    let dead = pid > 0 && unsafe { libc::kill(pid, 0) } != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    if !dead {
        return false;
    }
    let Ok(f) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC).open(temp) else { return false };
    match fstat(&f) {
        Ok(st) if is_regular(&st) && st.st_uid == euid() => {}
        _ => return false,
    }
    // Held until the unlink: a writer's lock lives as long as its file is open.
    matches!(try_lock(&f), Ok(true)) && std::fs::remove_file(temp).is_ok()
}

fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock takes a descriptor and flags, nothing else.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Takes the exclusive writer lock on `file` without waiting (false: another
/// open file description holds it). The lock belongs to the open file
/// description, so it is released when `file` closes.
pub fn try_lock(file: &File) -> io::Result<bool> {
    flock(file, libc::LOCK_EX | libc::LOCK_NB)
}

pub fn unlock(file: &File) {
    let _ = flock(file, libc::LOCK_UN);
}

/// Makes a rename in `path`'s folder durable. Best effort.
pub fn sync_dir(path: &Path) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Our own open file description of the caller's descriptor `fd` (flock
/// locks belong to a description, and a dup would share the caller's), and
/// whether it is writable: only if the caller's is, and `writable` asks.
pub fn reopen_descriptor(fd: i32, writable: bool) -> io::Result<(File, bool)> {
    // SAFETY: F_GETFL only reads the caller's descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_APPEND != 0 {
        // pwrite would ignore our offsets.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the descriptor was opened with O_APPEND"));
    }
    let writable = flags & libc::O_ACCMODE == libc::O_RDWR && writable;
    let path = os::descriptor_path(fd)?;
    let own = OpenOptions::new().read(true).write(writable).open(&path)?;
    // The path could name another file by now (renamed, replaced): make sure
    // it is the caller's.
    let mut st: libc::stat = unsafe_zeroed_stat();
    // SAFETY: fstat writes only into `st`.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if file_id(&own)? != stat_id(&st) {
        return Err(io::Error::new(io::ErrorKind::NotFound, "the descriptor's file is no longer at its path"));
    }
    Ok((own, writable))
}

/// (device, inode) from a `stat`, whose field types differ between targets.
#[allow(clippy::unnecessary_cast)] // a no-op on some targets, a widening on others
fn stat_id(st: &libc::stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: `stat` is plain old data; all zeros is a valid value.
    unsafe { core::mem::zeroed() }
}

/// A path from the C API's bytes: any bytes but NUL, as the OS takes them.
pub fn path_from_c(bytes: &[u8]) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// Ends this process at once, as a crash would (fault-injection tests).
#[cfg(feature = "fault-injection")]
pub fn kill_self() -> ! {
    // SAFETY: getpid and kill have no memory preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    std::process::abort()
}
