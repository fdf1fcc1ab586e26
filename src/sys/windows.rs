//! Windows: the arena's operations through `windows-sys`.
//!
//! Windows cannot map a file over memory that is already mapped (no
//! `MAP_FIXED`), so stable addresses come from *placeholders* (Windows 10
//! 1803 on): a file arena's reservation is one placeholder, split off piece
//! by piece and replaced by views of the file (`VirtualAlloc2`,
//! `MapViewOfFile3`, `UnmapViewOfFile2`), looked up at run time.
//!
//! Where placeholders are missing (Windows before 1803; Wine 8), a file
//! arena's reservation is one plain reservation per 64 KiB granule (its
//! segments are then at most 256 MiB): mapping a granule releases just it
//! and maps the view at its exact address (`MapViewOfFileEx`). Another
//! thread allocating into that one granule between the two calls makes the
//! mapping fail (growth reports an error and new weights go to the heap,
//! counted in `stats.heap_fallback_bytes`); memory that is not ours is never
//! touched: what the arena owns is recorded in `SPANS`.
//!
//! Staging differs from POSIX: new space is a writable view of the file
//! itself (its disk blocks are allocated first by extending the file), so
//! sealing is `FlushViewOfFile`, `FlushFileBuffers` and `VirtualProtect`,
//! with no copy and no remapping. Views are one allocation granule (64 KiB)
//! each and every section is sized to its view's end, so that any
//! granule-aligned tail can be unmapped and the file shortened after it.
//!
//! Anonymous arenas are a plain `VirtualAlloc` reservation committed piece
//! by piece. The writer lock is `LockFileEx` on one byte far past any data
//! (Windows locks are mandatory: locking real bytes would block readers).

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::{Existing, Ownership};

use windows_sys::core::BOOL;
use windows_sys::Win32::Foundation::{CloseHandle, ERROR_LOCK_VIOLATION, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, LockFileEx, ReOpenFile, UnlockFileEx, BY_HANDLE_FILE_INFORMATION, FILE_FLAG_BACKUP_SEMANTICS, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress, LoadLibraryW};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, FlushViewOfFile, MapViewOfFileEx, UnmapViewOfFile, VirtualAlloc, FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_MAPPED_VIEW_ADDRESS, VirtualFree, VirtualProtect, VirtualQuery, MEMORY_BASIC_INFORMATION, MEM_COMMIT,
    MEM_DECOMMIT, MEM_MAPPED, MEM_PRESERVE_PLACEHOLDER, MEM_RELEASE, MEM_REPLACE_PLACEHOLDER, MEM_RESERVE, MEM_RESERVE_PLACEHOLDER,
    PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

fn system_info() -> &'static (usize, usize) {
    static INFO: OnceLock<(usize, usize)> = OnceLock::new();
    INFO.get_or_init(|| {
        // SAFETY: SYSTEM_INFO is plain data; GetSystemInfo fills it in.
        let mut info: SYSTEM_INFO = unsafe { core::mem::zeroed() };
        // SAFETY: writes only into `info`.
        unsafe { GetSystemInfo(&mut info) };
        let page = (info.dwPageSize as usize).max(4096);
        (page, (info.dwAllocationGranularity as usize).max(page))
    })
}

/// The page size (4 KiB on x86-64 and arm64 Windows), read at run time.
pub fn page_size() -> usize {
    system_info().0
}

/// File views start at multiples of the allocation granularity (64 KiB).
pub fn map_granularity() -> usize {
    system_info().1
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn ok(b: BOOL) -> io::Result<()> {
    if b != 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

fn handle(f: &File) -> HANDLE {
    f.as_raw_handle() as HANDLE
}

type VirtualAlloc2Fn = unsafe extern "system" fn(HANDLE, *const c_void, usize, u32, u32, *mut c_void, u32) -> *mut c_void;
type MapViewOfFile3Fn = unsafe extern "system" fn(HANDLE, HANDLE, *const c_void, u64, usize, u32, u32, *mut c_void, u32) -> *mut c_void;
type UnmapViewOfFile2Fn = unsafe extern "system" fn(HANDLE, *mut c_void, u32) -> BOOL;

/// The placeholder functions, if this Windows has them.
struct Placeholders {
    virtual_alloc2: VirtualAlloc2Fn,
    map_view3: MapViewOfFile3Fn,
    unmap_view2: UnmapViewOfFile2Fn,
}

fn placeholders() -> io::Result<&'static Placeholders> {
    static API: OnceLock<Option<Placeholders>> = OnceLock::new();
    API.get_or_init(|| {
        let name: Vec<u16> = "kernelbase.dll\0".encode_utf16().collect();
        // SAFETY: a NUL-terminated UTF-16 name; kernelbase is loaded in every
        // process, LoadLibraryW only adds a reference if it is not found.
        let module = unsafe {
            let m = GetModuleHandleW(name.as_ptr());
            if m.is_null() {
                LoadLibraryW(name.as_ptr())
            } else {
                m
            }
        };
        if module.is_null() {
            return None;
        }
        // SAFETY: NUL-terminated names; a found address is the function of
        // that name, whose documented signature the types above spell.
        unsafe {
            let va2 = GetProcAddress(module, c"VirtualAlloc2".as_ptr().cast())?;
            let mv3 = GetProcAddress(module, c"MapViewOfFile3".as_ptr().cast())?;
            let uv2 = GetProcAddress(module, c"UnmapViewOfFile2".as_ptr().cast())?;
            Some(Placeholders {
                virtual_alloc2: core::mem::transmute::<unsafe extern "system" fn() -> isize, VirtualAlloc2Fn>(va2),
                map_view3: core::mem::transmute::<unsafe extern "system" fn() -> isize, MapViewOfFile3Fn>(mv3),
                unmap_view2: core::mem::transmute::<unsafe extern "system" fn() -> isize, UnmapViewOfFile2Fn>(uv2),
            })
        }
    })
    .as_ref()
    .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "this Windows has no memory placeholders (VirtualAlloc2, MapViewOfFile3): Windows 10 1803 or later maps the cache file"))
}

/// Whether this Windows can replace placeholders (probed once).
fn use_placeholders() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(api) = placeholders() else { return false };
        // SAFETY: a new placeholder at an address the system picks, freed at once.
        let p = unsafe { (api.virtual_alloc2)(core::ptr::null_mut(), core::ptr::null(), map_granularity(), MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS, core::ptr::null_mut(), 0) };
        if p.is_null() {
            return false;
        }
        // SAFETY: the placeholder just made.
        unsafe { VirtualFree(p, 0, MEM_RELEASE) };
        true
    })
}

/// Without placeholders, each 64 KiB granule of a file arena's reservation
/// is a reservation of its own (or a view, or lost to a race), so that
/// mapping one frees only that granule, for two system calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Granule {
    Reserved,
    View,
    /// Taken by another allocation between our calls: never touched again.
    Lost,
}

/// Placeholder-less file arena reservations by base address.
static SPANS: Mutex<BTreeMap<usize, Vec<Granule>>> = Mutex::new(BTreeMap::new());

/// One reservation per granule costs a system call each: without
/// placeholders the arena's segments stay at most this large (it halves
/// its request until it fits, and adds segments as it grows).
const MAX_GRANULAR_RESERVATION: usize = 256 << 20;

fn spans() -> std::sync::MutexGuard<'static, BTreeMap<usize, Vec<Granule>>> {
    SPANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The span holding `addr`: its base, if any.
fn span_base(map: &BTreeMap<usize, Vec<Granule>>, addr: usize) -> Option<usize> {
    map.range(..=addr).next_back().filter(|(&b, g)| addr < b + g.len() * map_granularity()).map(|(&b, _)| b)
}

fn reserve_at(addr: usize, len: usize) -> bool {
    // SAFETY: reserves free address space at `addr`, or fails.
    let p = unsafe { VirtualAlloc(addr as *const c_void, len, MEM_RESERVE, PAGE_NOACCESS) };
    p as usize == addr
}

/// Reserves `len` bytes as one reservation per granule.
fn reserve_granules(len: usize) -> io::Result<*mut u8> {
    if len > MAX_GRANULAR_RESERVATION {
        return Err(io::Error::new(io::ErrorKind::OutOfMemory, "without placeholders a file reservation is at most 256 MiB"));
    }
    let g = map_granularity();
    let n = len.div_ceil(g);
    for _ in 0..4 {
        // Find room, then take it granule by granule.
        // SAFETY: a new reservation at an address the system picks, released at once.
        let p = unsafe { VirtualAlloc(core::ptr::null(), n * g, MEM_RESERVE, PAGE_NOACCESS) } as usize;
        if p == 0 {
            return Err(last_error());
        }
        // SAFETY: the reservation just made.
        unsafe { VirtualFree(p as *mut c_void, 0, MEM_RELEASE) };
        let taken = (0..n).take_while(|&i| reserve_at(p + i * g, g)).count();
        if taken == n {
            spans().insert(p, vec![Granule::Reserved; n]);
            return Ok(p as *mut u8);
        }
        for i in 0..taken {
            // SAFETY: granules we reserved just now.
            unsafe { VirtualFree((p + i * g) as *mut c_void, 0, MEM_RELEASE) };
        }
    }
    Err(io::Error::other("address space kept being taken while reserving"))
}

/// Reserves address space: a placeholder for a file arena (views of the file
/// replace pieces of it), a plain reservation otherwise.
pub fn reserve(len: usize, file_backed: bool) -> io::Result<*mut u8> {
    if file_backed && !use_placeholders() {
        return reserve_granules(len);
    }
    let p = if file_backed {
        let api = placeholders()?;
        // SAFETY: a new placeholder at an address the system picks.
        unsafe { (api.virtual_alloc2)(core::ptr::null_mut(), core::ptr::null(), len, MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS, core::ptr::null_mut(), 0) }
    } else {
        // SAFETY: a new reservation at an address the system picks.
        unsafe { VirtualAlloc(core::ptr::null(), len, MEM_RESERVE, PAGE_NOACCESS) }
    };
    if p.is_null() {
        return Err(last_error());
    }
    Ok(p as *mut u8)
}

/// As [`reserve`]: Windows maps files with 4 KiB pages, so the placement
/// that lets Linux map large folios does not apply.
pub fn reserve_with_phase(len: usize, file_backed: bool, _align: usize, _phase: usize) -> io::Result<*mut u8> {
    reserve(len, file_backed)
}

/// Without placeholders: views of `file` from `offset` over the granules of
/// `[addr, addr + len)`, each freed just before its view takes its place;
/// the views stop at `file_end` (granules past it stay reserved).
fn map_granules(addr: usize, len: usize, file: &File, offset: u64, file_end: u64, writable: bool) -> io::Result<()> {
    let g = map_granularity();
    let mut map = spans();
    let base = span_base(&map, addr).ok_or_else(|| io::Error::other("address outside every file arena reservation"))?;
    let states = map.get_mut(&base).expect("found above");
    let first = (addr - base) / g;
    let count = len.div_ceil(g);
    let mut result = Ok(());
    let mut done = 0;
    for (i, state) in states.iter_mut().enumerate().skip(first).take(count) {
        let at = offset + ((i - first) * g) as u64;
        if at >= file_end {
            break;
        }
        if *state != Granule::Reserved {
            result = Err(io::Error::other("the arena's reserved address space was lost to another allocation"));
            break;
        }
        let gaddr = base + i * g;
        // SAFETY: our own reservation of one granule, holding nothing.
        unsafe { VirtualFree(gaddr as *mut c_void, 0, MEM_RELEASE) };
        let n = (file_end - at).min(g as u64) as usize;
        if let Err(e) = map_view_at(gaddr, n, file, at, writable) {
            *state = if reserve_at(gaddr, g) { Granule::Reserved } else { Granule::Lost };
            result = Err(e);
            break;
        }
        *state = Granule::View;
        done += 1;
    }
    if result.is_err() {
        for i in first..first + done {
            // SAFETY: views we just made, unused.
            unsafe { unmap_granule(base, states, i) };
        }
    }
    result
}

/// Turns granule `i`'s view back into a reservation of our own (or Lost).
///
/// # Safety
/// The view must be unused.
unsafe fn unmap_granule(base: usize, states: &mut [Granule], i: usize) {
    if states[i] != Granule::View {
        return;
    }
    let g = map_granularity();
    let gaddr = base + i * g;
    // SAFETY: as guaranteed by the caller.
    unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: gaddr as *mut c_void }) };
    states[i] = if reserve_at(gaddr, g) { Granule::Reserved } else { Granule::Lost };
}

/// A view of `len` bytes of `file` from `offset` at exactly `addr`, whose
/// section ends at `offset + len`.
fn map_view_at(addr: usize, len: usize, file: &File, offset: u64, writable: bool) -> io::Result<()> {
    let size = offset + len as u64;
    let (prot, access) = if writable { (PAGE_READWRITE, FILE_MAP_READ | FILE_MAP_WRITE) } else { (PAGE_READONLY, FILE_MAP_READ) };
    // SAFETY: a section of our own file handle; no name, default security.
    let section = unsafe { CreateFileMappingW(handle(file), core::ptr::null(), prot, (size >> 32) as u32, size as u32, core::ptr::null()) };
    if section.is_null() {
        return Err(last_error());
    }
    // SAFETY: maps at free address space the caller just released.
    let view = unsafe { MapViewOfFileEx(section, access, (offset >> 32) as u32, offset as u32, len, addr as *const c_void) };
    let err = last_error();
    // SAFETY: the view keeps the section alive.
    unsafe { CloseHandle(section) };
    if view.Value.is_null() {
        return Err(err);
    }
    if view.Value as usize != addr {
        // SAFETY: the view just made, elsewhere.
        unsafe { UnmapViewOfFile(view) };
        return Err(io::Error::other("the view landed at another address"));
    }
    Ok(())
}

fn query(addr: usize) -> io::Result<MEMORY_BASIC_INFORMATION> {
    // SAFETY: plain data, filled in by VirtualQuery.
    let mut q: MEMORY_BASIC_INFORMATION = unsafe { core::mem::zeroed() };
    // SAFETY: VirtualQuery only writes `q`.
    if unsafe { VirtualQuery(addr as *const c_void, &mut q, core::mem::size_of::<MEMORY_BASIC_INFORMATION>()) } == 0 {
        return Err(last_error());
    }
    Ok(q)
}

/// Calls `f(region, lo, hi)` for each region of uniform state that
/// intersects `[addr, addr + len)`, clipped to it. `f` may change the
/// region: the walk goes on after what it saw.
fn for_each_region(addr: *mut u8, len: usize, mut f: impl FnMut(&MEMORY_BASIC_INFORMATION, usize, usize) -> io::Result<()>) -> io::Result<()> {
    let end = addr as usize + len;
    let mut p = addr as usize;
    while p < end {
        let q = query(p)?;
        let hi = (q.BaseAddress as usize + q.RegionSize).min(end);
        f(&q, p, hi)?;
        p = hi;
    }
    Ok(())
}

/// Unmaps the view (or frees the private allocation) at `base` back to a placeholder.
///
/// # Safety
/// `base` must be the start of one of the arena's own views or allocations, unused.
unsafe fn to_placeholder(api: &Placeholders, q: &MEMORY_BASIC_INFORMATION) -> io::Result<()> {
    if q.Type == MEM_MAPPED {
        // SAFETY: as guaranteed by the caller.
        ok(unsafe { (api.unmap_view2)(GetCurrentProcess(), q.AllocationBase, MEM_PRESERVE_PLACEHOLDER) })
    } else {
        // SAFETY: as guaranteed by the caller.
        ok(unsafe { VirtualFree(q.AllocationBase, 0, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER) })
    }
}

/// Returns a reservation and everything mapped inside it to the system.
///
/// # Safety
/// No one may use any address in the range afterwards.
pub unsafe fn release(addr: *mut u8, len: usize, file_backed: bool) {
    if !file_backed {
        // SAFETY: our own reservation, dead.
        unsafe { VirtualFree(addr as *mut c_void, 0, MEM_RELEASE) };
        return;
    }
    if let Some(states) = spans().remove(&(addr as usize)) {
        let g = map_granularity();
        for (i, state) in states.iter().enumerate() {
            let gaddr = (addr as usize + i * g) as *mut c_void;
            match state {
                // SAFETY: our own dead view.
                Granule::View => unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: gaddr }) },
                // SAFETY: our own reservation of one granule.
                Granule::Reserved => unsafe { VirtualFree(gaddr, 0, MEM_RELEASE) },
                Granule::Lost => 1,
            };
        }
        return;
    }
    let Ok(api) = placeholders() else { return };
    // Views back to placeholders, then every placeholder freed.
    let _ = for_each_region(addr, len, |q, _, _| {
        if q.State == MEM_COMMIT {
            // SAFETY: a view of the arena's own, dead range.
            let _ = unsafe { to_placeholder(api, q) };
        }
        Ok(())
    });
    let _ = for_each_region(addr, len, |q, _, _| {
        // SAFETY: a placeholder inside our own, dead reservation.
        unsafe { VirtualFree(q.AllocationBase, 0, MEM_RELEASE) };
        Ok(())
    });
}

/// Makes `[addr, addr + len)` of an anonymous reservation writable memory.
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`] (not file
/// backed) that holds nothing anyone uses.
pub unsafe fn commit(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: commits pages of our own reservation.
    if unsafe { VirtualAlloc(addr as *const c_void, len, MEM_COMMIT, PAGE_READWRITE) }.is_null() {
        return Err(last_error());
    }
    Ok(())
}

/// Replaces the placeholder range `[addr, addr + len)` by a view of `file`
/// from `offset` (a multiple of the granularity).
///
/// # Safety
/// The range must be placeholder space of the arena's own reservation.
unsafe fn map_view(addr: *mut u8, len: usize, file: &File, offset: u64, writable: bool) -> io::Result<()> {
    let api = placeholders()?;
    // Split the range off as a placeholder of its own; this fails, harmlessly,
    // when it already is one (the replacement below then reports any problem).
    // SAFETY: placeholder space of our own reservation.
    unsafe { VirtualFree(addr as *mut c_void, len, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER) };
    let size = offset + len as u64;
    let prot = if writable { PAGE_READWRITE } else { PAGE_READONLY };
    // SAFETY: a section of our own file handle; no name, default security.
    let section = unsafe { CreateFileMappingW(handle(file), core::ptr::null(), prot, (size >> 32) as u32, size as u32, core::ptr::null()) };
    if section.is_null() {
        return Err(last_error());
    }
    // SAFETY: replaces exactly the placeholder split off above.
    let view = unsafe { (api.map_view3)(section, GetCurrentProcess(), addr as *const c_void, offset, len, MEM_REPLACE_PLACEHOLDER, prot, core::ptr::null_mut(), 0) };
    let err = last_error();
    // SAFETY: the view (if any) keeps the section alive; our handle is not needed.
    unsafe { CloseHandle(section) };
    if view.is_null() {
        return Err(err);
    }
    debug_assert_eq!(view as *mut u8, addr);
    Ok(())
}

/// Makes `[addr, addr + len)` writable views of the file's bytes at
/// `offset`, one granule each, whose disk blocks [`allocate`] reserved.
///
/// # Safety
/// The range must be unused placeholder space of a file arena's reservation.
pub unsafe fn stage(addr: *mut u8, len: usize, file: &File, offset: u64) -> io::Result<()> {
    let g = map_granularity();
    if !use_placeholders() {
        return map_granules(addr as usize, len, file, offset, u64::MAX, true);
    }
    let mut done = 0;
    while done < len {
        let n = g.min(len - done);
        // SAFETY: inside the caller's range.
        if let Err(e) = unsafe { map_view(addr.add(done), n, file, offset + done as u64, true) } {
            // SAFETY: the views just made are ours and unused.
            let _ = unsafe { unmap_to_reserved(addr, done) };
            return Err(e);
        }
        done += n;
    }
    Ok(())
}

/// Starts writing staged bytes (already in the file's pages) to disk.
///
/// # Safety
/// `[addr, addr + len)` must be staged views of the arena.
pub unsafe fn write_back(addr: *const u8, len: usize, _file: &File, _offset: u64) -> io::Result<()> {
    for_each_region(addr as *mut u8, len, |_, lo, hi| {
        // SAFETY: a range of one of our views.
        ok(unsafe { FlushViewOfFile(lo as *const c_void, hi - lo) })
    })
}

/// After [`write_back`] and [`sync_data`]: the staged views hold the file's
/// clean pages; they only become read-only.
///
/// # Safety
/// No one may write to the range any more.
pub unsafe fn seal_staged(addr: *mut u8, len: usize, _file: &File, _offset: u64) -> io::Result<()> {
    // SAFETY: as guaranteed by the caller.
    unsafe { protect_readonly(addr, len) }
}

/// Maps the file's committed bytes from `offset` read-only over placeholder
/// space. A read-only section cannot extend the file, so the view stops at
/// the file's end (the rest of the range stays reserved).
///
/// # Safety
/// The range must be unused placeholder space of a file arena's reservation.
pub unsafe fn map_file(addr: *mut u8, len: usize, file: &File, offset: u64) -> io::Result<()> {
    let file_len = file.metadata()?.len();
    let avail = usize::try_from(file_len.saturating_sub(offset)).unwrap_or(usize::MAX);
    let n = len.min(avail.div_ceil(page_size()) * page_size());
    if n == 0 {
        return Ok(());
    }
    let size_end = (offset + n as u64).min(file_len);
    if !use_placeholders() {
        // Views up to the file's end; the rest of its last granule cannot
        // be allocated by anyone else, and later granules stay reserved.
        return map_granules(addr as usize, len, file, offset, file_len, false);
    }
    // The section is sized to the file's end; the view covers whole pages.
    let api = placeholders()?;
    // SAFETY: placeholder space of our own reservation (see map_view).
    unsafe { VirtualFree(addr as *mut c_void, n, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER) };
    // SAFETY: a section of our own file handle.
    let section = unsafe { CreateFileMappingW(handle(file), core::ptr::null(), PAGE_READONLY, (size_end >> 32) as u32, size_end as u32, core::ptr::null()) };
    if section.is_null() {
        return Err(last_error());
    }
    // SAFETY: replaces exactly the placeholder split off above.
    let view = unsafe { (api.map_view3)(section, GetCurrentProcess(), addr as *const c_void, offset, n, MEM_REPLACE_PLACEHOLDER, PAGE_READONLY, core::ptr::null_mut(), 0) };
    let err = last_error();
    // SAFETY: the view keeps the section alive.
    unsafe { CloseHandle(section) };
    if view.is_null() {
        return Err(err);
    }
    Ok(())
}

/// Makes `[addr, addr + len)` read-only, view by view.
///
/// # Safety
/// The range must lie inside the arena's own mappings, and no one may write to it.
pub unsafe fn protect_readonly(addr: *mut u8, len: usize) -> io::Result<()> {
    for_each_region(addr, len, |_, lo, hi| {
        let mut old = 0;
        // SAFETY: committed pages of our own mapping.
        ok(unsafe { VirtualProtect(lo as *const c_void, hi - lo, PAGE_READONLY, &mut old) })
    })
}

/// Turns `[addr, addr + len)` back into reserved space: views become
/// placeholders again, anonymous pages are decommitted.
///
/// # Safety
/// The range must lie inside the arena's own reservation, start on a view
/// boundary, and no one may use any address in it any more.
pub unsafe fn unmap_to_reserved(addr: *mut u8, len: usize) -> io::Result<()> {
    {
        let mut map = spans();
        if let Some(base) = span_base(&map, addr as usize) {
            let g = map_granularity();
            let states = map.get_mut(&base).expect("found above");
            let first = (addr as usize - base) / g;
            for i in first..(first + len.div_ceil(g)).min(states.len()) {
                // SAFETY: the caller's dead range of our own views.
                unsafe { unmap_granule(base, states, i) };
            }
            return Ok(());
        }
    }
    for_each_region(addr, len, |q, lo, hi| {
        if q.State != MEM_COMMIT {
            return Ok(());
        }
        if q.Type == MEM_MAPPED {
            if (q.AllocationBase as usize) < addr as usize {
                return Err(io::Error::other("cannot unmap part of a file view"));
            }
            // SAFETY: a whole view inside the caller's dead range.
            unsafe { to_placeholder(placeholders()?, q) }
        } else {
            // SAFETY: committed anonymous pages of the caller's dead range.
            ok(unsafe { VirtualFree(lo as *mut c_void, hi - lo, MEM_DECOMMIT) })
        }
    })
}

/// Fresh, writable memory of `len` bytes (64 KiB-aligned), given back by
/// [`unmap_anonymous`].
pub fn map_anonymous(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a new allocation at an address the system picks.
    let p = unsafe { VirtualAlloc(core::ptr::null(), len, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) };
    if p.is_null() {
        Err(last_error())
    } else {
        Ok(p as *mut u8)
    }
}

/// # Safety
/// `addr` must come from [`map_anonymous`] and be dead.
pub unsafe fn unmap_anonymous(addr: *mut u8, _len: usize) {
    // SAFETY: as guaranteed by the caller.
    unsafe { VirtualFree(addr as *mut c_void, 0, MEM_RELEASE) };
}

/// Gives the file its disk blocks up to `offset + len`: setting the end of
/// a (non-sparse) file allocates them, so a full disk fails here.
pub fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let end = offset.checked_add(len).ok_or_else(|| io::Error::new(io::ErrorKind::FileTooLarge, "file range past 2^64"))?;
    if file.metadata()?.len() < end {
        file.set_len(end)?;
    }
    Ok(())
}

/// Sets the file's length (fails while a view maps past it: then the slack stays).
pub fn set_len(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}

/// Whether `e` is ERROR_USER_MAPPED_FILE: the file cannot be shortened while
/// a view maps it (Wine refuses whenever any view exists).
#[cfg(test)]
pub fn is_mapped_file_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_USER_MAPPED_FILE as i32)
}

/// `FlushFileBuffers`: data and metadata on stable storage.
pub fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends early")),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the write wrote nothing")),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// No per-process file-size limit on Windows.
pub fn file_size_limit() -> Option<u64> {
    None
}

/// (volume serial number, file index) of an open file.
pub fn file_id(file: &File) -> io::Result<(u64, u64)> {
    // SAFETY: plain data, filled in below.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { core::mem::zeroed() };
    // SAFETY: writes only into `info`.
    ok(unsafe { GetFileInformationByHandle(handle(file), &mut info) })?;
    Ok((info.dwVolumeSerialNumber as u64, ((info.nFileIndexHigh as u64) << 32) | info.nFileIndexLow as u64))
}

/// The identity of what `path` names now, if anything (opened without any
/// access right, so that it works whatever others have open).
pub fn path_id(path: &Path) -> Option<(u64, u64)> {
    let f = OpenOptions::new()
        .access_mode(0)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
        .ok()?;
    file_id(&f).ok()
}

fn shared(options: &mut OpenOptions) -> &mut OpenOptions {
    // Others may read, write, rename and delete the file while we have it
    // open: renaming a rebuild over the path must not fail because a reader
    // holds the old file.
    options.share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
}

/// Opens the file at `path`, for reading if writing is not allowed; refuses
/// anything but a regular file. `None`: nothing is there.
///
/// The owner is NOT checked here (docs/PLATFORMS.md, "What Windows does not
/// give", says so): every file the process can open counts as its own.
/// Windows folders carry ACLs inherited from their parent, and a per-user
/// folder (where apps keep caches) is not writable by other users.
pub fn open_existing(path: &Path, write: bool) -> io::Result<Option<Existing>> {
    let open = |write: bool| shared(OpenOptions::new().read(true).write(write)).open(path);
    let (file, writable) = match open(write) {
        Ok(f) => (f, write),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if write && e.kind() == io::ErrorKind::PermissionDenied => match open(false) {
            Ok(f) => (f, false),
            Err(_) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())));
    }
    let id = file_id(&file)?;
    Ok(Some(Existing { file, writable, ownership: Ownership { trusted_owner: true, writable_by_others: false, mode: 0 }, len: meta.len(), id }))
}

/// The new file inherits its folder's ACL; `mode` has no meaning here.
pub fn create_new(path: &Path, _mode: u32) -> io::Result<File> {
    shared(OpenOptions::new().read(true).write(true).create_new(true)).open(path)
}

pub fn set_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

pub fn open_lock_file(path: &Path, _mode: u32) -> io::Result<File> {
    let f = shared(OpenOptions::new().read(true).write(true).create(true).truncate(false)).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("the lock file {} is not a regular file", path.display())));
    }
    Ok(f)
}

/// Not attempted on Windows: our files are opened with delete sharing, so a
/// live writer's temporary could be deleted under it.
pub fn remove_abandoned(_temp: &Path, _pid: u32) -> bool {
    false
}

/// One byte at the top of the offset range: locks on Windows are mandatory,
/// so the lock must cover no byte anyone reads.
fn lock_overlapped() -> windows_sys::Win32::System::IO::OVERLAPPED {
    // SAFETY: plain data; all zeros is valid.
    let mut o: windows_sys::Win32::System::IO::OVERLAPPED = unsafe { core::mem::zeroed() };
    o.Anonymous.Anonymous.Offset = u32::MAX;
    o.Anonymous.Anonymous.OffsetHigh = i32::MAX as u32;
    o
}

/// Takes the exclusive writer lock without waiting (false: another handle holds it).
pub fn try_lock(file: &File) -> io::Result<bool> {
    let mut o = lock_overlapped();
    // SAFETY: a synchronous handle; `o` lives across the call.
    if unsafe { LockFileEx(handle(file), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &mut o) } != 0 {
        return Ok(true);
    }
    let e = last_error();
    if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        Ok(false)
    } else {
        Err(e)
    }
}

pub fn unlock(file: &File) {
    let mut o = lock_overlapped();
    // SAFETY: as for LockFileEx.
    unsafe { UnlockFileEx(handle(file), 0, 1, 0, &mut o) };
}

/// A rename on NTFS is journaled; there is no folder handle to flush.
pub fn sync_dir(_path: &Path) {}

/// Our own handle (and file object) on the caller's descriptor's file, so
/// that our lock is not the caller's; writable only if asked and allowed.
pub fn reopen_descriptor(fd: i32, writable: bool) -> io::Result<(File, bool)> {
    // Declared in here, where cbindgen (which writes our header from the
    // crate's top-level items) does not see it.
    extern "C" {
        /// The C runtime's handle behind a descriptor (msvc's and mingw's CRT have it).
        fn _get_osfhandle(fd: i32) -> isize;
    }
    // SAFETY: _get_osfhandle validates the descriptor and returns -1 for a bad one.
    let h = unsafe { _get_osfhandle(fd) } as HANDLE;
    if h == INVALID_HANDLE_VALUE || h.is_null() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{fd} is not an open descriptor")));
    }
    let share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    let reopen = |access: u32| {
        // SAFETY: the caller's live handle; ReOpenFile makes a new one.
        let own = unsafe { ReOpenFile(h, access, share, 0) };
        if own == INVALID_HANDLE_VALUE {
            Err(last_error())
        } else {
            // SAFETY: a new handle we own.
            Ok(unsafe { File::from_raw_handle(own as _) })
        }
    };
    if writable {
        if let Ok(f) = reopen(GENERIC_READ | GENERIC_WRITE) {
            return Ok((f, true));
        }
    }
    Ok((reopen(GENERIC_READ)?, false))
}

/// Paths from the C API are UTF-8 on Windows.
pub fn path_from_c(bytes: &[u8]) -> io::Result<PathBuf> {
    std::str::from_utf8(bytes).map(PathBuf::from).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"))
}

/// Ends this process at once, as a crash would (fault-injection tests).
#[cfg(feature = "fault-injection")]
pub fn kill_self() -> ! {
    std::process::abort()
}

/// Nothing to do: committed pages fault in one by one.
///
/// # Safety
/// `[addr, addr + len)` must be writable memory of the arena's own.
pub unsafe fn prefault(_addr: *mut u8, _len: usize) {}

/// No prefetch on Windows yet (`PrefetchVirtualMemory` would do): every
/// range counts as resident, so no prefetch thread starts, and pages fault
/// in as runtimes read them.
///
/// # Safety
/// None needed; the signature matches the other platforms'.
pub unsafe fn is_resident(_addr: *const u8, _len: usize) -> bool {
    true
}

/// See [`is_resident`]: nothing to do.
///
/// # Safety
/// None needed; the signature matches the other platforms'.
pub unsafe fn bring_in(_addr: *const u8, _len: usize) {}

/// No prefetch on Windows (see [`is_resident`]).
pub fn maps_ahead() -> bool {
    false
}

/// Not known on Windows.
///
/// # Safety
/// None needed; the signature matches the other platforms'.
pub unsafe fn residency(_addr: *const u8, _len: usize) -> Option<Vec<u8>> {
    None
}

/// Not known on Windows.
pub fn pmd_mapped(_addr: usize, _len: usize) -> Option<bool> {
    None
}

/// See [`is_resident`]: nothing to do.
pub fn will_need_file(_file: &std::fs::File, _offset: u64, _len: usize) {}

/// See [`is_resident`]: nothing to do.
///
/// # Safety
/// None needed; the signature matches the other platforms'.
pub unsafe fn touch_pages(_addr: *const u8, _len: usize) {}

/// Not on Windows: its write-back never yields (see [`cpu_times`]), so a
/// process exiting there loses what it had not written back, as before.
pub fn at_exit(_f: extern "C" fn()) -> bool {
    false
}

/// No `fork()` on Windows: nothing to register.
pub fn at_fork(_prepare: unsafe extern "C" fn(), _parent: unsafe extern "C" fn(), _child: unsafe extern "C" fn()) -> bool {
    false
}

/// The calling thread's identifier (never 0).
pub fn thread_id() -> u64 {
    // SAFETY: GetCurrentThreadId has no preconditions and cannot fail.
    u64::from(unsafe { windows_sys::Win32::System::Threading::GetCurrentThreadId() })
}

/// CPU time of the process and of the calling thread: not read on Windows
/// (not measured there), so the write-back never yields to the host's
/// computation and runs as soon as it is asked, as with
/// `XNNCACHE_FLAG_EAGER_WRITEBACK`.
pub fn cpu_times() -> Option<(std::time::Duration, std::time::Duration)> {
    None
}

/// Lowers the calling thread's priority (the write-back thread: inference
/// running meanwhile comes first). Best effort.
pub fn lower_thread_priority() {
    use windows_sys::Win32::System::Threading::{GetCurrentThread, SetThreadPriority, THREAD_PRIORITY_BELOW_NORMAL};
    // SAFETY: the pseudo-handle of the calling thread; a failure leaves its priority as it was.
    unsafe { SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_BELOW_NORMAL) };
}

/// The Arm features Windows reports, for the CPU identity.
#[cfg(target_arch = "aarch64")]
pub(crate) fn arm_features() -> Vec<u64> {
    use windows_sys::Win32::System::Threading::*;
    const FEATURES: [u32; 8] = [
        PF_ARM_V8_INSTRUCTIONS_AVAILABLE,
        PF_ARM_V8_CRYPTO_INSTRUCTIONS_AVAILABLE,
        PF_ARM_V8_CRC32_INSTRUCTIONS_AVAILABLE,
        PF_ARM_V81_ATOMIC_INSTRUCTIONS_AVAILABLE,
        PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE,
        PF_ARM_V83_JSCVT_INSTRUCTIONS_AVAILABLE,
        PF_ARM_V83_LRCPC_INSTRUCTIONS_AVAILABLE,
        PF_ARM_NEON_INSTRUCTIONS_AVAILABLE,
    ];
    let mut flags = 0u64;
    for (i, f) in FEATURES.iter().enumerate() {
        // SAFETY: takes a number, reads nothing of ours.
        if unsafe { IsProcessorFeaturePresent(*f) } != 0 {
            flags |= 1 << i;
        }
    }
    vec![6, flags]
}
