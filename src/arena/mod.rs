//! The arena: one growing run of bytes, backed by a file or by anonymous
//! memory, whose addresses never move once handed out.
//!
//! XNNPACK keeps the address of every packed weight for as long as a runtime
//! lives, so the arena can never `mremap`. Instead it reserves spans of
//! address space (`PROT_NONE`, costing no memory) and makes them usable piece
//! by piece as it grows. An offset in the arena is the offset in the file, and
//! `offset -> address` is one subtraction inside a segment.
//!
//! Reservations are made when needed, not up front: an existing file gets one
//! span of exactly its committed length (a launch that only reads reserves
//! nothing more), and the first byte handed out reserves the growth room
//! ([`ArenaOptions::reservation`], 1 GiB by default on 64-bit), twice the
//! previous span when that fills up. Address space is not free everywhere:
//! iOS caps an app's, 32-bit processes have 3 GiB, and qemu-user tracks every
//! reserved page of its guest.
//!
//! For a file, new space is *staged*: XNNPACK packs into anonymous memory at
//! the address the bytes will keep. (Not `MADV_HUGEPAGE`: with the common
//! `defrag = madvise` setting it makes faults compact memory synchronously,
//! measured here as 136 to 687 ms for the same 384 MiB build.) Sealing writes the staged bytes to the file, waits for the disk, and
//! maps the file's now clean pages read-only over the very same addresses
//! (`MAP_FIXED` replaces the mapping atomically; the bytes are identical).
//! Packing straight into a shared file mapping would dirty the page cache one
//! 4 KiB fault at a time, each costing ext4 a buffer-head walk (measured with
//! perf: block_dirty_folio, block_commit_write and __block_write_begin_int
//! took a quarter of a cold 384 MiB build), and a full disk would surface as
//! SIGBUS inside XNNPACK. Here no byte is ever written through a shared
//! mapping, and growth still reserves disk blocks with `posix_fallocate`
//! first, so a full disk shows up as an error before anything is packed.
//!
//! Sealing makes a prefix of the arena read-only and, for a file, clean: its
//! pages are the file's, on disk, and the kernel can drop them under pressure.

use std::fs::File;
use std::io;
use std::sync::Arc;

use crate::sys;

/// Smallest step by which a file arena grows.
pub(crate) const MIN_GROWTH: usize = 1 << 20;
/// Largest step by which a file arena grows beyond what was asked.
pub(crate) const MAX_GROWTH: usize = 64 << 20;
/// Sealing writes staged bytes in pieces of this size, starting the disk on
/// each before copying the next.
const WRITE_CHUNK: usize = 8 << 20;

#[cfg(target_pointer_width = "64")]
const DEFAULT_RESERVATION: usize = 1 << 30;
#[cfg(not(target_pointer_width = "64"))]
const DEFAULT_RESERVATION: usize = 256 << 20;
/// File segments are placed so that `address % LARGE_FOLIO == offset %
/// LARGE_FOLIO` (see `sys::reserve_with_phase`).
const LARGE_FOLIO: usize = 2 << 20;
/// Below this, a failed reservation is not retried at half the size.
const MIN_RESERVATION: usize = 16 << 20;

/// How to build an [`Arena`].
#[derive(Clone, Debug)]
pub struct ArenaOptions {
    reservation: usize,
    data_start: usize,
}

impl Default for ArenaOptions {
    fn default() -> Self {
        ArenaOptions { reservation: DEFAULT_RESERVATION, data_start: 0 }
    }
}

fn grow_error(e: GrowError) -> io::Error {
    match e {
        GrowError::File(e) | GrowError::AddressSpace(e) => e,
    }
}

impl ArenaOptions {
    pub fn new() -> ArenaOptions {
        ArenaOptions::default()
    }

    /// Address space reserved for growth when the arena first hands out a
    /// byte (a hint; later segments double).
    pub fn reservation(mut self, bytes: usize) -> ArenaOptions {
        self.reservation = bytes.max(MIN_RESERVATION);
        self
    }

    /// Offset of the first byte handed out; the bytes before it belong to the
    /// file format's header. Rounded up to a page.
    pub fn data_start(mut self, offset: usize) -> ArenaOptions {
        self.data_start = offset;
        self
    }

    /// An arena in anonymous memory.
    pub fn anonymous(&self) -> io::Result<Arena> {
        Arena::new(None, self, false)
    }

    /// An arena in `file`, which must be open for reading and writing and is
    /// treated as empty: its old contents past `data_start` are overwritten.
    pub fn file(&self, file: File) -> io::Result<Arena> {
        Arena::new(Some(file), self, true)
    }

    /// An arena over an existing file whose bytes up to `committed_end` are
    /// kept: they are mapped read-only (and count as sealed); new space, if
    /// `writable`, starts on the next page.
    pub fn existing(&self, file: File, committed_end: u64, writable: bool) -> io::Result<Arena> {
        let mut arena = Arena::new(Some(file), self, false)?;
        arena.writable = writable;
        let end = sys::to_usize(committed_end)?.checked_next_multiple_of(arena.page).ok_or_else(|| sys::too_large(committed_end))?;
        if end > arena.data_start {
            arena.map_existing(end).map_err(grow_error)?;
        }
        Ok(arena)
    }
}

/// A contiguous span of address space mapping offsets `[start, start + mapped)`.
struct Segment {
    base: *mut u8,
    start: usize,
    reserved: usize,
    mapped: usize,
}

impl Segment {
    fn reserved_end(&self) -> usize {
        self.start + self.reserved
    }
}

/// A free range of offsets `[start, end)` below the cursor, inside one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hole {
    start: usize,
    end: usize,
}

/// Work to make a range clean and read-only, done outside the cache's lock
/// because writing back hundreds of megabytes takes a while.
pub struct SealJob {
    /// Address, length and arena (file) offset of each range to seal.
    pieces: Vec<(*mut u8, usize, usize)>,
    /// The file the staged bytes go to, if any.
    file: Option<Arc<File>>,
}

// SAFETY: a job only names pages of the arena, which outlive it (the cache that
// owns the arena waits for its jobs), and the pages no longer change.
unsafe impl Send for SealJob {}

impl SealJob {
    pub fn bytes(&self) -> usize {
        self.pieces.iter().map(|p| p.1).sum()
    }

    /// For a file: writes the staged bytes to it, waits for the disk, and maps
    /// the file's clean pages read-only over the same addresses. For
    /// anonymous memory: makes the pages read-only.
    pub fn run(self) -> io::Result<()> {
        self.run_pausing(&mut || {})
    }

    /// [`SealJob::run`], calling `pause` before each piece of the file it
    /// writes, before the sync and before mapping the file's pages: the
    /// write-back waits there while the host computes.
    pub fn run_pausing(self, pause: &mut dyn FnMut()) -> io::Result<()> {
        if self.pieces.is_empty() {
            return Ok(()); // nothing new: no write-back, not even a sync
        }
        let Some(fd) = self.file else {
            for &(addr, len, _) in &self.pieces {
                // SAFETY: the range is a mapped part of the arena below its new
                // seal; nothing is allocated there again, so no one writes to it.
                unsafe { sys::protect_readonly(addr, len)? };
            }
            return Ok(());
        };
        for &(addr, len, offset) in &self.pieces {
            let mut done = 0;
            while done < len {
                // Pieces end on WRITE_CHUNK boundaries of the file (a multiple
                // of 2 MiB): the page cache then holds the file in large
                // folios that a later process maps with 2 MiB entries.
                let at = offset + done;
                let n = (WRITE_CHUNK - at % WRITE_CHUNK).min(len - done);
                pause();
                crate::fault::check("seal: write")?;
                // SAFETY: the range is staged memory of the arena, fully written
                // (XNNPACK finished packing everything below the seal).
                unsafe { sys::write_back(addr.add(done), n, &fd, (offset + done) as u64)? };
                done += n;
            }
            crate::fault::point("seal: staged bytes written to the file");
        }
        pause();
        crate::fault::check("seal: sync")?;
        sys::sync_data(&fd)?;
        crate::fault::point("seal: file synced");
        pause();
        for &(addr, len, offset) in &self.pieces {
            crate::fault::check("seal: map file pages")?;
            // SAFETY: the file now holds exactly these bytes at `offset`, so
            // turning the staging pages into the file's clean pages changes
            // nothing any reader can see.
            unsafe { sys::seal_staged(addr, len, &fd, offset as u64)? };
        }
        Ok(())
    }
}

/// Why the arena could not give more bytes.
#[derive(Debug)]
pub enum GrowError {
    /// The file cannot grow: disk full, file-size limit, or I/O error.
    File(io::Error),
    /// No address space could be reserved.
    AddressSpace(io::Error),
}

impl std::fmt::Display for GrowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrowError::File(e) => write!(f, "cannot grow the cache file: {e}"),
            GrowError::AddressSpace(e) => write!(f, "cannot reserve address space: {e}"),
        }
    }
}

pub struct Arena {
    file: Option<Arc<File>>,
    page: usize,
    /// Address space for the first growth segment.
    reservation: usize,
    segments: Vec<Segment>,
    /// End of what is mapped (and, for a file, its length).
    end: usize,
    /// Next never-used offset.
    cursor: usize,
    /// Freed ranges between `sealed` and `cursor`, reused first-fit.
    holes: Vec<Hole>,
    /// `[data_start, sealed)` is read-only.
    sealed: usize,
    data_start: usize,
    /// False for a file opened read-only: nothing is ever allocated in it.
    writable: bool,
}

// SAFETY: the raw pointers name mappings the arena owns; the arena is only used
// behind the cache's mutex.
unsafe impl Send for Arena {}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn round_down(n: usize, to: usize) -> usize {
    n / to * to
}

impl Arena {
    fn new(file: Option<File>, options: &ArenaOptions, truncate: bool) -> io::Result<Arena> {
        let page = sys::arena_granularity();
        let data_start = round_up(options.data_start, page);
        let arena = Arena {
            file: file.map(Arc::new),
            page,
            reservation: options.reservation.max(page),
            segments: Vec::new(),
            end: data_start,
            cursor: data_start,
            holes: Vec::new(),
            sealed: data_start,
            data_start,
            writable: true,
        };
        if let (Some(f), true) = (&arena.file, truncate) {
            // The bytes before `data_start` exist in the file but are not mapped.
            sys::set_len(f, data_start as u64)?;
        }
        Ok(arena)
    }

    pub fn is_file_backed(&self) -> bool {
        self.file.is_some()
    }

    /// Offset of the end of what is usable (staged or mapped).
    #[allow(clippy::len_without_is_empty)] // an arena is never empty: it starts at `data_start`
    pub fn len(&self) -> usize {
        self.end
    }

    /// Offset of the first byte that was never handed out.
    pub fn used(&self) -> usize {
        self.cursor
    }

    /// Whether bytes were handed out past `offset`'s page.
    pub fn used_past(&self, offset: u64) -> bool {
        usize::try_from(offset).is_ok_and(|o| self.cursor > o.saturating_add(self.page - 1) / self.page * self.page)
    }

    pub fn sealed(&self) -> usize {
        self.sealed
    }

    /// Bytes handed out that a seal has not yet made clean and read-only.
    pub fn unsealed(&self) -> usize {
        self.cursor.saturating_sub(self.sealed)
    }

    /// Reserves a fresh span of address space starting at offset `self.end`.
    fn add_segment(&mut self, want: usize) -> Result<(), GrowError> {
        let mut len = round_up(want, self.page);
        loop {
            // A file segment is placed so that file offsets and addresses agree
            // modulo 2 MiB (large page-cache folios can then be PMD-mapped).
            let reserved = if self.file.is_some() && cfg!(target_pointer_width = "64") {
                sys::reserve_with_phase(len, true, LARGE_FOLIO, self.end)
            } else {
                sys::reserve(len, self.file.is_some())
            };
            match reserved {
                Ok(base) => {
                    self.segments.push(Segment { base, start: self.end, reserved: len, mapped: 0 });
                    return Ok(());
                }
                Err(e) if len / 2 >= MIN_RESERVATION.max(self.page) => {
                    let _ = e;
                    len = round_up(len / 2, self.page);
                }
                Err(e) => return Err(GrowError::AddressSpace(e)),
            }
        }
    }

    /// Hands out `len` bytes aligned to `align` (a power of two), writable, with
    /// disk blocks reserved. Returns their offset.
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<usize, GrowError> {
        debug_assert!(align.is_power_of_two());
        if !self.writable {
            return Err(GrowError::File(io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "the cache file is open read-only")));
        }
        let len = len.max(1);
        if let Some(offset) = self.alloc_from_holes(len, align) {
            return Ok(offset);
        }
        let mut start = round_up(self.cursor, align);
        let seg_end = self.segments.last().map_or(0, Segment::reserved_end);
        if start.checked_add(len).is_none_or(|e| e > seg_end) {
            // Does not fit in this segment's address space (or there is none
            // yet): open a new one at the current end of the file. What is
            // left of this one is a hole.
            let grow = self.segments.last().map_or(0, |s| s.reserved).saturating_mul(2).max(self.reservation);
            self.add_segment(grow.max(len))?;
            self.add_hole(self.cursor, self.end);
            self.cursor = self.end;
            start = self.end;
        }
        self.ensure_mapped(start + len)?;
        self.cursor = start + len;
        Ok(start)
    }

    /// Like `alloc`, but past every byte handed out so far (never in a hole):
    /// where a commit's index goes, after every payload it names.
    pub fn alloc_at_end(&mut self, len: usize, align: usize) -> Result<usize, GrowError> {
        let holes = std::mem::take(&mut self.holes);
        let r = self.alloc(len, align);
        self.holes.extend(holes);
        r
    }

    fn alloc_from_holes(&mut self, len: usize, align: usize) -> Option<usize> {
        for i in 0..self.holes.len() {
            let h = self.holes[i];
            let start = round_up(h.start, align);
            if start.checked_add(len).is_some_and(|e| e <= h.end) {
                self.holes.remove(i);
                self.add_hole(h.start, start);
                self.add_hole(start + len, h.end);
                return Some(start);
            }
        }
        None
    }

    /// Makes offsets up to `need` mapped and backed, growing by an amortised step.
    fn ensure_mapped(&mut self, need: usize) -> Result<(), GrowError> {
        if need <= self.end {
            return Ok(());
        }
        let Some(seg) = self.segments.last() else { unreachable!("alloc opened a segment for `need`") };
        let step = (self.end - self.data_start).clamp(MIN_GROWTH, MAX_GROWTH);
        let exact = round_up(need, self.page);
        let generous = round_up(need.max(self.end + step), self.page).min(seg.reserved_end());
        let target = match &self.file {
            None => generous,
            Some(file) => {
                let limit = sys::file_size_limit().unwrap_or(u64::MAX);
                let fits = |t: usize| (t as u64) <= limit;
                let grown = [generous, exact]
                    .into_iter()
                    .filter(|&t| fits(t))
                    .find_map(|t| crate::fault::check("grow: allocate").and_then(|_| sys::allocate(file, self.end as u64, (t - self.end) as u64)).ok().map(|_| t));
                match grown {
                    Some(t) => t,
                    None if !fits(exact) => {
                        return Err(GrowError::File(io::Error::new(
                            io::ErrorKind::StorageFull,
                            format!("the file-size limit (RLIMIT_FSIZE = {limit} bytes) is reached"),
                        )))
                    }
                    None => {
                        // Report why the exact size failed.
                        let err = sys::allocate(file, self.end as u64, (exact - self.end) as u64)
                            .err()
                            .unwrap_or_else(|| io::Error::other("reserving disk blocks failed"));
                        return Err(GrowError::File(err));
                    }
                }
            }
        };
        let Some(seg) = self.segments.last_mut() else { unreachable!("alloc opened a segment for `need`") };
        // SAFETY: `[end, target)` lies inside the last segment's reservation (the
        // caller checked `need` fits and `target` is capped at its end) and
        // nothing has been mapped or handed out there yet.
        let addr = unsafe { seg.base.add(self.end - seg.start) };
        let len = target - self.end;
        // Staging (for a file, whose blocks are now reserved) or plain
        // anonymous memory: our own reservation made writable.
        match &self.file {
            // SAFETY: as above.
            Some(f) => unsafe { sys::stage(addr, len, f, self.end as u64) },
            // SAFETY: as above.
            None => unsafe { sys::commit(addr, len) },
        }
        .map_err(GrowError::AddressSpace)?;
        seg.mapped = target - seg.start;
        self.end = target;
        Ok(())
    }

    /// Maps the file's existing bytes up to `end` (a page multiple) read-only,
    /// as sealed: they belong to earlier commits and never change.
    fn map_existing(&mut self, end: usize) -> Result<(), GrowError> {
        let seg_end = self.segments.last().map_or(0, Segment::reserved_end);
        if end > seg_end {
            // The file as it is: no more address space than its length (and,
            // after another process's commit, twice the last span).
            let grow = self.segments.last().map_or(0, |s| s.reserved).saturating_mul(2);
            self.add_segment(grow.max(end - self.end))?;
        }
        let file = self.file.as_ref().expect("only file arenas have existing bytes");
        let Some(seg) = self.segments.last_mut() else { unreachable!("a segment was opened above") };
        let start = self.end;
        // SAFETY: `[start, end)` lies inside the last segment's reservation and
        // nothing is mapped or handed out there yet.
        let addr = unsafe { seg.base.add(start - seg.start) };
        // SAFETY: as above.
        unsafe { sys::map_file(addr, end - start, file, start as u64) }.map_err(GrowError::AddressSpace)?;
        seg.mapped = end - seg.start;
        self.end = end;
        self.cursor = self.cursor.max(end);
        self.sealed = self.sealed.max(end);
        Ok(())
    }

    /// Another process committed bytes up to `committed_end` past what we
    /// have used: map them (read-only, as sealed) in place of our unused
    /// staging, and allocate after them.
    pub fn adopt_committed(&mut self, committed_end: u64) -> Result<(), GrowError> {
        let end = sys::to_usize(committed_end)
            .and_then(|e| e.checked_next_multiple_of(self.page).ok_or_else(|| sys::too_large(committed_end)))
            .map_err(GrowError::File)?;
        if end <= self.cursor {
            return Ok(());
        }
        // Nothing of ours lies past the cursor (we write only under the lock).
        self.holes.clear();
        self.drop_mapping_beyond(round_up(self.cursor, self.page)).map_err(GrowError::AddressSpace)?;
        self.map_existing(end)
    }

    /// Turns `[keep, end)` back into reserved address space.
    fn drop_mapping_beyond(&mut self, keep: usize) -> io::Result<()> {
        for s in self.segments.iter_mut() {
            let lo = keep.max(s.start);
            let hi = (s.start + s.mapped).min(self.end);
            if lo < hi {
                // SAFETY: `[lo, hi)` is above every used byte, so nothing points there.
                unsafe { sys::unmap_to_reserved(s.base.add(lo - s.start), hi - lo)? };
                s.mapped = lo - s.start;
            }
        }
        self.end = self.end.min(keep);
        Ok(())
    }

    /// The file may have been shortened (by another process trimming its
    /// slack): forget our growth past `file_len`, so that growth reserves its
    /// disk blocks again.
    pub fn forget_beyond(&mut self, file_len: u64) -> io::Result<()> {
        // A length past the address space keeps everything we have.
        let keep = usize::try_from(file_len).ok().and_then(|l| l.checked_next_multiple_of(self.page)).unwrap_or(usize::MAX);
        let keep = keep.max(self.cursor).max(self.data_start);
        if keep >= self.end {
            return Ok(());
        }
        self.drop_mapping_beyond(round_up(keep, self.page))
    }

    /// Shortens the file to the used bytes (rounded to a page), giving back the
    /// growth slack. Only for the process that may write the file now.
    pub fn trim_file(&mut self) -> io::Result<()> {
        let Some(file) = self.file.clone() else { return Ok(()) };
        let keep = round_up(self.cursor, self.page);
        self.forget_beyond(keep as u64)?;
        sys::set_len(&file, keep as u64)
    }

    /// Gives `[offset, offset + len)` back. Space below the seal stays used:
    /// it is read-only now.
    pub fn free(&mut self, offset: usize, len: usize) {
        let start = offset.max(self.sealed);
        let end = offset.saturating_add(len);
        if start < end {
            self.add_hole(start, end);
        }
    }

    fn add_hole(&mut self, mut start: usize, mut end: usize) {
        if start >= end {
            return;
        }
        // Merge with neighbours in the same segment, so that space freed in
        // pieces can serve one larger request again.
        let seg = self.segment_index(start);
        let same_segment: Vec<bool> = self.holes.iter().map(|h| seg.is_some() && seg == self.segment_index(h.start)).collect();
        let mut i = 0;
        self.holes.retain(|h| {
            let merge = same_segment[i] && (h.end == start || h.start == end);
            i += 1;
            if merge {
                start = start.min(h.start);
                end = end.max(h.end);
            }
            !merge
        });
        let last_start = self.segments.last().map_or(0, |s| s.start);
        if end == self.cursor && start >= last_start {
            // Freed at the tail: just move the cursor back.
            self.cursor = start;
        } else {
            self.holes.push(Hole { start, end });
        }
    }

    fn segment_index(&self, offset: usize) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.start <= offset);
        (i > 0 && offset < self.segments[i - 1].reserved_end()).then(|| i - 1)
    }

    /// The address of `offset`, if it is mapped. O(log segments).
    pub fn addr(&self, offset: usize) -> Option<*mut u8> {
        let s = &self.segments[self.segment_index(offset)?];
        // SAFETY: `offset - start < mapped <= reserved`: inside the reservation.
        (offset - s.start < s.mapped).then(|| unsafe { s.base.add(offset - s.start) })
    }

    /// The offset of `addr`, if it lies in a mapped part of the arena.
    pub fn offset_of(&self, addr: *const u8) -> Option<usize> {
        let a = addr as usize;
        self.segments.iter().find_map(|s| {
            let base = s.base as usize;
            (a >= base && a - base < s.mapped).then(|| s.start + (a - base))
        })
    }

    /// Seals everything handed out so far below `limit` (an offset no one still
    /// writes at or above), up to a page boundary, and returns the work that
    /// makes it clean and read-only. The rest of a partly used last page is
    /// skipped, so that later allocations never share a page with sealed data.
    pub fn begin_seal(&mut self, limit: usize) -> SealJob {
        let new_sealed = if limit >= self.cursor {
            round_up(self.cursor, self.page)
        } else {
            round_down(limit, self.page)
        }
        .clamp(self.sealed, self.end);
        let mut pieces = Vec::new();
        for s in &self.segments {
            let lo = self.sealed.max(s.start);
            let hi = new_sealed.min(s.start + s.mapped);
            if lo < hi {
                // SAFETY: `[lo, hi)` is inside this segment's mapped part.
                pieces.push((unsafe { s.base.add(lo - s.start) }, hi - lo, lo));
            }
        }
        self.cursor = self.cursor.max(new_sealed);
        self.holes.retain_mut(|h| {
            h.start = h.start.max(new_sealed);
            h.start < h.end
        });
        self.sealed = new_sealed;
        SealJob { pieces, file: self.file.clone() }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for s in &self.segments {
            // SAFETY: the arena is being dropped, so no address inside it is used
            // any more (the cache outlives every runtime that borrowed it).
            unsafe { sys::release(s.base, s.reserved, self.file.is_some()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("xnncache-arena-{}-{name}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        (path, f)
    }

    #[test]
    fn addresses_are_stable_across_growth_and_segments() {
        let mut a = ArenaOptions::new().reservation(MIN_RESERVATION).anonymous().unwrap();
        let first = a.alloc(100, 64).unwrap();
        let p = a.addr(first).unwrap();
        // SAFETY: `p` is a writable arena address for 100 bytes.
        unsafe { p.write_bytes(0xAB, 100) };
        // Force a second segment.
        let big = a.alloc(MIN_RESERVATION, 64).unwrap();
        assert!(a.segments.len() >= 2);
        assert_eq!(a.addr(first), Some(p));
        // SAFETY: still mapped and untouched by later allocations.
        assert_eq!(unsafe { *p.add(99) }, 0xAB);
        let q = a.addr(big).unwrap();
        // SAFETY: `big` spans MIN_RESERVATION writable bytes.
        unsafe { q.add(MIN_RESERVATION - 1).write(1) };
        assert_eq!(a.offset_of(q), Some(big));
        assert_eq!(a.offset_of(p), Some(first));
    }

    #[test]
    fn address_space_is_reserved_when_needed() {
        let reserved = |a: &Arena| a.segments.iter().map(|s| s.reserved).sum::<usize>();
        // Nothing before the first byte is handed out; then the growth room.
        let mut a = ArenaOptions::new().reservation(MIN_RESERVATION).anonymous().unwrap();
        assert_eq!(reserved(&a), 0);
        a.alloc(100, 64).unwrap();
        assert_eq!(reserved(&a), MIN_RESERVATION);
        // An existing file: exactly its committed pages, until it grows.
        let (path, f) = temp_file("reserve");
        let mut w = ArenaOptions::new().data_start(4096).file(f.try_clone().unwrap()).unwrap();
        let at = w.alloc(3 << 20, 64).unwrap();
        let end = (at + (3 << 20)) as u64;
        w.begin_seal(usize::MAX).run().unwrap();
        drop(w);
        let mut e = ArenaOptions::new().data_start(4096).reservation(MIN_RESERVATION).existing(f, end, true).unwrap();
        let page = e.page;
        assert_eq!(reserved(&e), round_up(end as usize, page) - round_up(4096, page));
        let first = e.addr(at).unwrap();
        let more = e.alloc(1 << 20, 64).unwrap();
        assert!(reserved(&e) >= MIN_RESERVATION, "growth room once it writes");
        assert_eq!(e.addr(at).unwrap(), first, "existing bytes keep their address");
        assert!(e.addr(more).is_some());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn freed_tail_and_holes_are_reused() {
        let mut a = ArenaOptions::new().anonymous().unwrap();
        let x = a.alloc(128, 64).unwrap();
        let y = a.alloc(128, 64).unwrap();
        a.free(y, 128);
        assert_eq!(a.alloc(128, 64).unwrap(), y, "tail space comes back");
        let _z = a.alloc(64, 64).unwrap();
        a.free(x, 128);
        assert_eq!(a.alloc(64, 64).unwrap(), x, "a hole is reused first-fit");
        assert_eq!(a.alloc(64, 64).unwrap(), x + 64, "and its remainder too");
    }

    #[test]
    fn file_growth_is_amortised_and_trimmed_on_request() {
        let (path, f) = temp_file("grow");
        let mut a = ArenaOptions::new().file(f).unwrap();
        let mut grows = 0;
        let mut last = a.len();
        for _ in 0..1000 {
            a.alloc(4096 * 3, 64).unwrap();
            if a.len() != last {
                grows += 1;
                last = a.len();
            }
        }
        assert!(grows <= 6, "{grows} growths for 12 MB");
        let used = a.used();
        match a.trim_file() {
            Ok(()) => assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, round_up(used, sys::arena_granularity())),
            // Wine refuses to shorten a file while any view of it is mapped:
            // the slack stays, as it does when close cannot trim.
            Err(e) if sys::is_mapped_file_error(&e) => {}
            Err(e) => panic!("trim: {e}"),
        }
        // Growth after a trim maps fresh, backed pages again.
        let more = a.alloc(3 * MIN_GROWTH, 64).unwrap();
        // SAFETY: freshly allocated and mapped.
        unsafe { a.addr(more).unwrap().add(3 * MIN_GROWTH - 1).write(1) };
        drop(a);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn sealing_skips_to_the_next_page_and_never_reuses_sealed_space() {
        let (path, f) = temp_file("seal");
        let mut a = ArenaOptions::new().file(f).unwrap();
        let page = sys::arena_granularity();
        let x = a.alloc(100, 64).unwrap();
        let y = a.alloc(100, 64).unwrap();
        a.free(x, 100);
        let job = a.begin_seal(usize::MAX);
        assert_eq!(job.bytes(), page);
        job.run().unwrap();
        assert_eq!(a.sealed(), page);
        let z = a.alloc(64, 64).unwrap();
        assert!(z >= page && z != x && z != y);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn sealing_stops_below_a_pending_write() {
        let mut a = ArenaOptions::new().anonymous().unwrap();
        let page = sys::arena_granularity();
        a.alloc(page + 64, 64).unwrap();
        let pending = a.alloc(64, 64).unwrap();
        let job = a.begin_seal(pending);
        assert_eq!(job.bytes(), page);
        job.run().unwrap();
        let p = a.addr(pending).unwrap();
        // SAFETY: the pending range is above the seal, so still writable.
        unsafe { p.write(7) };
    }
}
