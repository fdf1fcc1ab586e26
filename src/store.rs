//! The persistent file around the arena: open and validate, lock, commit,
//! trim and compact. The format itself is in [`crate::format`].
//!
//! Concurrency between processes, in three rules:
//! - readers never lock: a commit never changes bytes a valid header names,
//!   and a torn header fails its checksum;
//! - a process writes into the file only while it holds the writer lock
//!   (`flock` on `<path>.lock`, or on the descriptor itself), from its first
//!   new weight until the commit that publishes it;
//! - a file is never truncated below what its newest header names, nor
//!   rewritten in place: rebuilds and compactions write a new file and
//!   `rename` it over the old one, whose readers keep their mapping.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::arena::{Arena, ArenaOptions};
use crate::format::{self, Compat, Header, Index, Payload, Refusal, DATA_START, HEADER_SIZE, SLOT_OFFSETS};
use crate::sys;

/// Where the file comes from.
#[derive(Clone, Debug)]
pub enum Source {
    Path(PathBuf),
    /// A descriptor the caller owns; we work on our own open file
    /// description of its file.
    Fd(i32),
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub source: Source,
    pub read_only: bool,
    pub verify: bool,
    pub compat: Compat,
    /// Permission bits of the files we create (before the umask): 0600 unless
    /// the host shares the cache with other users.
    pub file_mode: u32,
    /// Use (read-only) a file owned by another user, if only its owner can write it.
    pub allow_foreign: bool,
}

/// Permission bits of new cache files by default: the packed weights of a
/// private model are no one else's to read.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// What opening found, for stats and messages.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum xnncache_file_state {
    /// No file (memory mode).
    XNNCACHE_FILE_NONE = 0,
    /// There was no file: a new one is built.
    XNNCACHE_FILE_NEW = 1,
    /// A valid file was found and mapped.
    XNNCACHE_FILE_REUSED = 2,
    /// The file was corrupt (or failed verification): a new one is built.
    XNNCACHE_FILE_REBUILT_CORRUPT = 3,
    /// The file was made for another XNNPACK build, CPU, format or ABI: a new one is built.
    XNNCACHE_FILE_REBUILT_INCOMPATIBLE = 4,
    /// The file cannot be used or replaced (read-only, a foreign descriptor,
    /// an unwritable folder, not a regular file, owned by another user):
    /// packed weights stay in memory.
    XNNCACHE_FILE_UNUSABLE = 5,
    /// Other users could write the file (group- or world-writable), so its
    /// bytes are not trusted: a new, private one is built.
    XNNCACHE_FILE_REBUILT_UNTRUSTED = 6,
}

pub use xnncache_file_state as FileState;

/// The result of opening.
pub struct Opened {
    pub store: Option<Store>,
    pub arena: Option<Arena>,
    /// The committed index whose payloads the arena maps.
    pub committed: Option<Index>,
    pub state: FileState,
    /// Why the file is not reused, in words.
    pub reason: Option<String>,
}

pub struct Store {
    path: Option<PathBuf>,
    /// Our own handle on the file the arena maps (shared with a
    /// [`Publication`] while it writes outside the cache's lock).
    file: Arc<File>,
    lock_file: Option<File>,
    locked: bool,
    /// A rebuild: our file lives here until its first commit renames it.
    temp: Option<PathBuf>,
    read_only: bool,
    compat: Compat,
    /// The newest commit we know of, and the slot it is in.
    head: Option<(Header, usize)>,
    /// The path now names another file (replaced by another process): stop writing.
    stale: bool,
    /// What the path named when we opened it (device, inode), if anything: a
    /// rebuild renames over it only if that is still so.
    path_id: Option<(u64, u64)>,
    /// Permission bits of the files we create (the lock, a compaction):
    /// those of the file we found, kept exactly (`keep_mode`), or the
    /// options' less the umask.
    mode: u32,
    keep_mode: bool,
}

/// Reads and validates everything a reader needs: header, then index.
pub fn read_committed(file: &File, compat: &Compat) -> Result<(Header, usize, Index), Refusal> {
    let len = file.metadata().map_err(|e| Refusal::Corrupt(format!("cannot stat: {e}")))?.len();
    read_committed_at(file, len, compat).map(|c| (c.header, c.slot, c.index))
}

/// A commit a reader may use, and whether a writer may append after it.
struct Committed {
    header: Header,
    slot: usize,
    index: Index,
    /// Why a writer must not append to this file, if it must not: the
    /// commit read is not the file's newest (a newer slot of another format
    /// version, or one whose index does not check out, lies past it: its
    /// writer may still map those bytes), or a slot of another format version
    /// is in the file (a build of that version would append after it, over
    /// ours). Such a file is rebuilt by a writer: one format per file.
    not_appendable: Option<Refusal>,
}

/// Why a writer may not append after the commit in `slot`, given what both
/// slots hold (see [`Committed::not_appendable`]).
fn append_refusal(head: &[u8], slot: usize) -> Option<Refusal> {
    let stamps = [0, 1].map(|i| format::slot_stamp(&head[SLOT_OFFSETS[i] as usize..][..HEADER_SIZE]));
    if let Some(other) = stamps.iter().flatten().find(|s| s.version != format::FORMAT_VERSION) {
        return Some(Refusal::Incompatible(format!(
            "the file holds a commit of format version {} and this library writes {}: a file holds one format, so it is rebuilt",
            other.version,
            format::FORMAT_VERSION
        )));
    }
    let used = stamps[slot].map_or(0, |s| s.generation);
    match stamps[1 - slot] {
        Some(newer) if newer.generation > used => Some(Refusal::Corrupt(format!(
            "the file's newest commit (generation {}) cannot be read, and a writer never appends over it: it is rebuilt",
            newer.generation
        ))),
        _ => None,
    }
}

/// [`read_committed`] for a file whose length is known.
fn read_committed_at(file: &File, len: u64, compat: &Compat) -> Result<Committed, Refusal> {
    // Mapped whole: a file larger than the address space (over 4 GiB on a
    // 32-bit target) cannot be used here, and no offset in it may be cut.
    if sys::to_usize(len).is_err() {
        return Err(Refusal::Incompatible(format!("the file's {len} bytes do not fit this {}-bit process", usize::BITS)));
    }
    let head = read_head(file, len).map_err(|e| Refusal::Corrupt(format!("cannot read the header: {e}")))?;
    let slot = |i: usize| &head[SLOT_OFFSETS[i] as usize..SLOT_OFFSETS[i] as usize + HEADER_SIZE];
    let (newest, header) = format::pick_header([slot(0), slot(1)], len)?;
    header.check_compat(compat)?;
    // The newest commit, or, if its index does not check out, the one before
    // it: a commit never overwrites what the older slot names.
    let mut first_error = None;
    for i in [newest, 1 - newest] {
        let Ok(h) = Header::decode(slot(i), len) else { continue };
        if i != newest && (h.generation >= header.generation || h.compat != header.compat) {
            continue;
        }
        match read_index(file, &h) {
            Ok(index) => return Ok(Committed { not_appendable: append_refusal(&head, i), header: h, slot: i, index }),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.expect("the newest slot was tried"))
}

/// Both header slots in one read (a short file leaves the missing part
/// zero: invalid).
fn read_head(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; SLOT_OFFSETS[1] as usize + HEADER_SIZE];
    let span = head.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    sys::read_exact_at(file, &mut head[..span], 0)?;
    Ok(head)
}

/// Each header slot of `file` (whose length is `len`), decoded on its own,
/// for tools that show both: a slot of zeros was never written.
pub fn read_slots(file: &File, len: u64) -> io::Result<[Result<Header, Refusal>; 2]> {
    let head = read_head(file, len)?;
    let slot = |i: usize| {
        let bytes = &head[SLOT_OFFSETS[i] as usize..][..HEADER_SIZE];
        if bytes.iter().all(|&b| b == 0) {
            return Err(Refusal::Corrupt("empty (never written)".into()));
        }
        Header::decode(bytes, len)
    };
    Ok([slot(0), slot(1)])
}

/// The newest commit of `file` whatever XNNPACK build, CPU or ABI it was
/// made for (tools read any file; a cache uses only its own).
pub fn read_any_committed(file: &File) -> Result<(Header, usize, Index), Refusal> {
    let len = file.metadata().map_err(|e| Refusal::Corrupt(format!("cannot stat: {e}")))?.len();
    let head = read_head(file, len).map_err(|e| Refusal::Corrupt(format!("cannot read the header: {e}")))?;
    let slot = |i: usize| &head[SLOT_OFFSETS[i] as usize..SLOT_OFFSETS[i] as usize + HEADER_SIZE];
    let (_, header) = format::pick_header([slot(0), slot(1)], len)?;
    read_committed_at(file, len, &header.compat).map(|c| (c.header, c.slot, c.index))
}

/// A payload's bytes read from `file` (not through a mapping: a tool's
/// read survives the file being cut under it), or `None` if they fail their
/// checksum.
pub fn read_payload(file: &File, p: &Payload) -> io::Result<Option<Vec<u8>>> {
    let size = usize::try_from(p.size).map_err(|_| sys::too_large(p.size))?;
    let mut bytes = vec![0u8; size];
    sys::read_exact_at(file, &mut bytes, p.offset)?;
    Ok((crate::format::checksum(&bytes) == p.checksum).then_some(bytes))
}

fn read_index(file: &File, header: &Header) -> Result<Index, Refusal> {
    let size = usize::try_from(header.index_size).map_err(|_| Refusal::Corrupt("index too large".into()))?;
    let mut bytes = vec![0u8; size];
    sys::read_exact_at(file, &mut bytes, header.index_offset).map_err(|e| Refusal::Corrupt(format!("cannot read the index: {e}")))?;
    Index::decode(&bytes, header)
}

/// Checks every payload's checksum through the arena's mapping.
pub fn verify_payloads(arena: &Arena, payloads: &[Payload]) -> Result<(), Refusal> {
    let bad = payloads
        .iter()
        .filter(|p| match arena.addr(p.offset as usize) {
            // SAFETY: validated payloads lie inside the mapped, committed region.
            Some(a) => crate::format::checksum(unsafe { core::slice::from_raw_parts(a, p.size as usize) }) != p.checksum,
            None => true,
        })
        .count();
    if bad == 0 {
        Ok(())
    } else {
        Err(Refusal::Corrupt(format!("{bad} of {} payloads fail their checksum", payloads.len())))
    }
}

/// `.<name>.<pid>.<n>.tmp` beside the cache file: a rebuild or compaction
/// in progress, renamed over the path when it commits.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    Ok(path.with_file_name(tmp))
}

/// The writer's process id, if `entry` is a temporary of `path` (see [`temp_path`]).
fn temp_owner(path: &Path, entry: &std::ffi::OsStr) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = entry.to_str()?.strip_prefix('.')?.strip_prefix(name)?.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('.')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Deletes the temporaries that killed writers left beside `path` (a live
/// writer keeps its own: see `sys::remove_abandoned`). Returns how many.
/// Run when this process is about to write (a rebuild, a compaction, the
/// first write to a reused file): leftovers live until the next writer.
pub fn remove_abandoned_temps(path: &Path) -> usize {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::fault::count("folder listed");
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| temp_owner(path, &e.file_name()).map(|pid| (e.path(), pid)))
        .filter(|(t, pid)| *pid != std::process::id() && sys::remove_abandoned(t, *pid))
        .count()
}

/// A new temporary beside `path`, with permission bits `mode` (less the
/// umask, or `exact`ly: a rebuild keeps the old file's bits), locked for as
/// long as it is open so that no other process takes it for abandoned.
fn create_temp(path: &Path, mode: u32, exact: bool) -> io::Result<(PathBuf, File)> {
    remove_abandoned_temps(path);
    let tmp = temp_path(path)?;
    let f = sys::create_new(&tmp, mode)?;
    let moded = if exact { sys::set_mode(&f, mode) } else { Ok(()) };
    let locked = moded.and_then(|_| sys::try_lock(&f));
    if !matches!(locked, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(locked.err().unwrap_or_else(|| io::Error::other("cannot lock a new temporary file")));
    }
    Ok((tmp, f))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn refusal_state(r: &Refusal) -> FileState {
    match r {
        Refusal::Corrupt(_) => FileState::XNNCACHE_FILE_REBUILT_CORRUPT,
        Refusal::Incompatible(_) => FileState::XNNCACHE_FILE_REBUILT_INCOMPATIBLE,
        Refusal::Untrusted(_) => FileState::XNNCACHE_FILE_REBUILT_UNTRUSTED,
    }
}

impl Store {
    /// Opens (or plans to build) the cache file.
    pub fn open(options: &StoreOptions, arena_options: &ArenaOptions) -> io::Result<Opened> {
        let arena_options = arena_options.clone().data_start(DATA_START as usize);
        let unusable = |reason: String| Opened { store: None, arena: None, committed: None, state: FileState::XNNCACHE_FILE_UNUSABLE, reason: Some(reason) };
        // `read_only`: never write the file we found (asked for, or not
        // allowed). `rebuild`: a new file may replace it.
        let mut read_only = options.read_only;
        let mut rebuild = !options.read_only;
        let mut refusal = None;
        // An existing file's permission bits, which a rebuild keeps exactly.
        let mut kept_mode = None;
        // `path_id`: what the path named when we opened it.
        let (path, file, len, path_id) = match &options.source {
            Source::Path(p) => {
                // Anything but a regular file (a FIFO, a device, a directory)
                // is an error here: packed weights go to the heap.
                let existing = sys::open_existing(p, !options.read_only)?;
                match existing {
                    None => (Some(p.clone()), None, 0, None),
                    Some(e) => {
                        read_only |= !e.writable;
                        let o = e.ownership;
                        // Another user's file is not ours to replace, nor to
                        // read unless the host allows it and only its owner can write it.
                        let readable_foreign = options.allow_foreign && !o.writable_by_others;
                        if !o.trusted_owner && !readable_foreign {
                            return Ok(unusable("the file is owned by another user: not trusted; packed weights stay in memory".into()));
                        }
                        if !o.trusted_owner {
                            (read_only, rebuild) = (true, false);
                        } else if o.writable_by_others {
                            refusal = Some(Refusal::Untrusted(format!("other users may write the file (mode {:o})", o.mode)));
                        } else {
                            kept_mode = Some(o.mode);
                        }
                        (Some(p.clone()), Some(e.file), e.len, Some(e.id))
                    }
                }
            }
            Source::Fd(fd) => {
                // Our own open file description of the same file: locks
                // belong to a description, and a dup (or the caller's own use,
                // or a second cache on the same descriptor) would share it.
                let (own, writable) = sys::reopen_descriptor(*fd, !options.read_only)?;
                read_only = !writable;
                rebuild = false;
                let len = own.metadata()?.len();
                (None, Some(own), len, None)
            }
        };
        let store = |file: File, temp: Option<PathBuf>, head: Option<(Header, usize)>, read_only: bool| Store {
            path_id,
            path: path.clone(),
            file: Arc::new(file),
            lock_file: None,
            locked: false,
            temp,
            read_only,
            compat: options.compat.clone(),
            head,
            stale: false,
            mode: kept_mode.unwrap_or(options.file_mode),
            keep_mode: kept_mode.is_some(),
        };

        // An existing, non-empty file: reuse it if it is valid and ours.
        if let (Some(f), true, None) = (&file, len > 0, &refusal) {
            let checked = read_committed_at(f, len, &options.compat).and_then(|c| {
                // A reader may use any valid commit; a writer only one it may append after.
                let (header, slot, index) = match c.not_appendable {
                    Some(why) if !read_only => return Err(why),
                    _ => (c.header, c.slot, c.index),
                };
                let arena = arena_options
                    .existing(f.try_clone().map_err(|e| Refusal::Corrupt(e.to_string()))?, header.data_end, !read_only)
                    .map_err(|e| match e.kind() {
                        // No room for it in this address space (a 32-bit
                        // process): a property of the process, not of the file.
                        io::ErrorKind::OutOfMemory | io::ErrorKind::FileTooLarge => Refusal::Incompatible(format!("cannot map the file here: {e}")),
                        _ => Refusal::Corrupt(format!("cannot map the file: {e}")),
                    })?;
                if options.verify {
                    verify_payloads(&arena, &index.payloads)?;
                }
                Ok((header, slot, index, arena))
            });
            match checked {
                Ok((header, slot, index, arena)) => {
                    let s = store(file.expect("checked above"), None, Some((header, slot)), read_only);
                    return Ok(Opened { store: Some(s), arena: Some(arena), committed: Some(index), state: FileState::XNNCACHE_FILE_REUSED, reason: None });
                }
                Err(r) => refusal = Some(r),
            }
        }
        let state = refusal.as_ref().map_or(FileState::XNNCACHE_FILE_NEW, refusal_state);
        let why = refusal.as_ref().map(|r| r.message().to_string());
        // Build a new file: beside the old one for a path, in place only for
        // an empty, writable descriptor (nobody can have mapped an empty file).
        let (file, temp) = match (&path, file) {
            (Some(p), _) if rebuild => {
                let (tmp, f) = create_temp(p, kept_mode.unwrap_or(options.file_mode), kept_mode.is_some())?;
                (f, Some(tmp))
            }
            (None, Some(f)) if refusal.is_none() && !read_only => (f, None),
            (None, _) => return Ok(unusable(format!("{}; a descriptor cannot be rebuilt: packed weights stay in memory", why.unwrap_or_default()))),
            (Some(_), _) => return Ok(unusable(format!("{}; read-only: packed weights stay in memory", why.as_deref().unwrap_or("no cache file")))),
        };
        let arena = match file.try_clone().and_then(|f| arena_options.file(f)) {
            Ok(a) => a,
            Err(e) => {
                if let Some(t) = &temp {
                    let _ = std::fs::remove_file(t);
                }
                return Err(e);
            }
        };
        let reason = why.map(|w| format!("{w}; rebuilding the cache file"));
        Ok(Opened { store: Some(store(file, temp, None, false)), arena: Some(arena), committed: None, state, reason })
    }

    pub fn can_write(&self) -> bool {
        !self.read_only && !self.stale
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Takes the writer lock without waiting. On success returns what other
    /// processes committed since we last looked (to merge), if anything.
    pub fn try_lock(&mut self) -> io::Result<Option<Option<(Header, Index)>>> {
        if !self.can_write() {
            return Ok(None);
        }
        if self.locked {
            return Ok(Some(None));
        }
        let lock = match &self.path {
            Some(p) => {
                if self.lock_file.is_none() {
                    crate::fault::count("lock file opened");
                    self.lock_file = Some(sys::open_lock_file(&lock_path(p), self.mode)?);
                }
                self.lock_file.as_ref().expect("just opened")
            }
            None => &*self.file,
        };
        crate::fault::count("writer lock taken");
        if !sys::try_lock(lock)? {
            return Ok(None);
        }
        self.locked = true;
        // About to write: clear what killed writers left (not at every open,
        // so that a launch that only reads lists no folder).
        if let (Some(p), None) = (&self.path, &self.temp) {
            remove_abandoned_temps(p);
        }
        // Does the path still name what we opened? A rebuild or compaction
        // elsewhere replaces it; then our file (or our rebuild, which would
        // discard that process's commits) must not be published.
        if let Some(p) = &self.path {
            let now = sys::path_id(p);
            let expected = if self.temp.is_some() { self.path_id } else { Some(sys::file_id(&self.file)?) };
            if now != expected {
                self.stale = true;
                self.unlock();
                return Ok(None);
            }
        }
        if self.temp.is_some() {
            return Ok(Some(None)); // our own new file: nobody else writes it
        }
        let mine = self.generation();
        let len = self.file_len();
        match read_committed_at(&self.file, len, &self.compat) {
            // Another process's newer commit, which we may append after: follow it.
            Ok(c) if c.not_appendable.is_none() && c.header.generation > mine => {
                self.head = Some((c.header.clone(), c.slot));
                Ok(Some(Some((c.header, c.index))))
            }
            // Nothing newer: our own view is still the file's newest commit
            // (or, for a descriptor built in place, there is none yet).
            Ok(c) if c.not_appendable.is_none() => Ok(Some(None)),
            _ if !self.written_since(mine, len) => Ok(Some(None)),
            // Something newer we may not append after (another format, an
            // index we cannot read): its writer may map the bytes past our
            // commit, so this process writes nothing more to the file.
            _ => {
                self.stale = true;
                self.unlock();
                Ok(None)
            }
        }
    }

    /// Whether a slot of the file holds a commit newer than generation `mine`
    /// (of any format version).
    fn written_since(&self, mine: u64, len: u64) -> bool {
        let Ok(head) = read_head(&self.file, len) else { return true };
        (0..2).filter_map(|i| format::slot_stamp(&head[SLOT_OFFSETS[i] as usize..][..HEADER_SIZE])).any(|s| s.generation > mine)
    }

    /// After a failed write-back: never commit again from this process (the
    /// file may lack bytes an index would name).
    pub fn poison(&mut self) {
        self.stale = true;
        self.unlock();
    }

    /// In a child of `fork()`, before this store is dropped: the child has
    /// our descriptors but not our lock (the `flock` belongs to the open file
    /// description it shares with the parent: unlocking here would unlock the
    /// parent), nor our rebuild's temporary (the parent's to publish or
    /// delete). Forget both; closing our descriptors releases nothing.
    pub fn leave_to_parent(&mut self) {
        self.locked = false;
        self.temp = None;
        self.stale = true;
    }

    pub fn unlock(&mut self) {
        if !self.locked {
            return;
        }
        sys::unlock(self.lock_file.as_ref().unwrap_or(&*self.file));
        self.locked = false;
    }

    pub fn generation(&self) -> u64 {
        self.head.as_ref().map_or(0, |(h, _)| h.generation)
    }

    /// The open file, for reads through its descriptor (a warm launch's
    /// prefetch).
    pub fn file_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Where the newest commit we know of ends (0 before the first).
    pub fn committed_end(&self) -> u64 {
        self.head.as_ref().map_or(0, |(h, _)| h.data_end)
    }

    /// Prepares the commit of payloads and an index already written back;
    /// [`Publication::write`] makes it durable (outside the cache's lock) and
    /// [`Store::published`] records it. Memory work only.
    pub fn prepare_publish(&self, index_offset: u64, index: &[u8], data_end: u64) -> Publication {
        debug_assert!(self.locked);
        let (generation, slot) = match &self.head {
            Some((h, s)) => (h.generation + 1, 1 - s),
            None => (1, 0),
        };
        let header = Header {
            generation,
            compat: self.compat.clone(),
            index_offset,
            index_size: index.len() as u64,
            index_checksum: crate::format::checksum(index),
            data_end,
        };
        let rename = self.temp.clone().zip(self.path.clone());
        Publication { file: Arc::clone(&self.file), header, slot, rename }
    }

    /// Records a publication that [`Publication::write`] made durable.
    pub fn published(&mut self, publication: Publication, written: Written) {
        if let Some(id) = written.renamed_to {
            // No longer a temporary: the path names our file now.
            self.temp = None;
            self.path_id = Some(id);
        }
        self.head = Some((publication.header, publication.slot));
    }

    /// At close: gives back growth slack past what the newest commit names, if
    /// we may write; deletes a rebuild that never committed.
    pub fn close(&mut self, arena: Option<&mut Arena>) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
            self.unlock();
            return;
        }
        // Only when there is slack, and only if we grew the file: a launch
        // that added nothing neither locks nor lists anything (and even a
        // same-length truncate bumps the mtime).
        let slack = |store: &Store, arena: &Arena| {
            let committed = store.committed_end();
            arena.used() as u64 >= committed && arena.len() > arena.used()
        };
        if let Some(arena) = arena.filter(|a| slack(self, a)) {
            if matches!(self.try_lock(), Ok(Some(_))) && slack(self, arena) && self.file_len() > self.committed_end() {
                let _ = arena.trim_file();
            }
        }
        self.unlock();
    }

    pub fn file_len(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    /// Prepares a rewrite of the file (see [`Compaction::write`]); memory work only.
    pub fn prepare_compaction(&self) -> io::Result<Compaction> {
        let path = self.path.clone().ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "a descriptor cannot be compacted"))?;
        Ok(Compaction { path, mode: self.mode, keep_mode: self.keep_mode, compat: self.compat.clone() })
    }

    /// After a [`Compaction`] was written: the path names the compacted file
    /// now, ours is the old one, which we no longer write.
    pub fn compacted(&mut self) {
        self.stale = true;
    }
}

/// A rewrite of the file, prepared under the cache's lock and written
/// outside it.
pub struct Compaction {
    path: PathBuf,
    mode: u32,
    keep_mode: bool,
    compat: Compat,
}

impl Compaction {
    /// Writes a new file holding only `payloads` (bytes, checksum), their
    /// keys, those keys' names and the programs they belong to (by payload
    /// position), and renames it over the path. The old
    /// file's readers keep theirs.
    pub fn write(&self, payloads: &[(&[u8], u64)], keys: &[(u128, u32)], names: Vec<(u128, format::KeyNames)>, programs: Vec<format::Program>) -> io::Result<u64> {
        let path = &self.path;
        let (tmp, f) = create_temp(path, self.mode, self.keep_mode)?;
        let result = (|| {
            let mut index = Index::default();
            let (offsets, offset) = format::compacted_layout(payloads.iter().map(|(b, _)| b.len() as u64));
            for ((bytes, checksum), at) in payloads.iter().zip(offsets) {
                sys::write_all_at(&f, bytes, at)?;
                index.payloads.push(Payload { offset: at, size: bytes.len() as u64, checksum: *checksum });
            }
            index.keys = keys.iter().map(|&(key, payload)| format::KeyRef { key, payload }).collect();
            index.names = names;
            index.programs = programs;
            let bytes = index.encode();
            sys::write_all_at(&f, &bytes, offset)?;
            let data_end = offset + bytes.len() as u64;
            crate::fault::point("compact: payloads and index written");
            sys::sync_data(&f)?;
            crate::fault::point("compact: payloads and index synced");
            let header = Header {
                generation: 1,
                compat: self.compat.clone(),
                index_offset: offset,
                index_size: bytes.len() as u64,
                index_checksum: crate::format::checksum(&bytes),
                data_end,
            };
            sys::write_all_at(&f, &header.encode(), SLOT_OFFSETS[0])?;
            crate::fault::point("compact: header written");
            sys::sync_data(&f)?;
            crate::fault::point("compact: header synced");
            std::fs::rename(&tmp, path)?;
            crate::fault::point("compact: renamed");
            sys::sync_dir(path);
            Ok(data_end)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// A commit on its way to the disk: everything it writes, so that the
/// writing needs no access to the [`Store`] (and no lock of the cache's).
/// Only one is in flight per store: the cache's write-backs are serialised.
pub struct Publication {
    file: Arc<File>,
    header: Header,
    slot: usize,
    /// A rebuild's temporary and the path it replaces once durable.
    rename: Option<(PathBuf, PathBuf)>,
}

/// What [`Publication::write`] did.
pub struct Written {
    /// The identity (device, inode) the path names after a rebuild's rename.
    renamed_to: Option<(u64, u64)>,
}

impl Publication {
    /// Makes the commit durable: syncs payloads and index, writes the older
    /// header slot, syncs it, and (for a rebuild) renames the new file over
    /// the old one. A failure leaves the other slot naming the previous commit.
    pub fn write(&self) -> io::Result<Written> {
        crate::fault::point("commit: before syncing payloads and index");
        crate::fault::check("commit: sync payloads and index")?;
        sys::sync_data(&self.file)?;
        crate::fault::point("commit: payloads and index synced");
        let encoded = self.header.encode();
        let slot = SLOT_OFFSETS[self.slot];
        crate::fault::check("commit: write header slot")?;
        sys::write_all_at(&self.file, &encoded[..HEADER_SIZE / 2], slot)?;
        crate::fault::point("commit: half a header slot written");
        sys::write_all_at(&self.file, &encoded[HEADER_SIZE / 2..], slot + HEADER_SIZE as u64 / 2)?;
        crate::fault::point("commit: header slot written");
        crate::fault::check("commit: sync header")?;
        sys::sync_data(&self.file)?;
        crate::fault::point("commit: header synced");
        let Some((tmp, path)) = &self.rename else { return Ok(Written { renamed_to: None }) };
        crate::fault::check("commit: rename")?;
        std::fs::rename(tmp, path)?;
        crate::fault::point("commit: renamed");
        // No longer a temporary that a cleaner must leave alone.
        sys::unlock(&self.file);
        sys::sync_dir(path);
        Ok(Written { renamed_to: Some(sys::file_id(&self.file)?) })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
        }
        self.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file past 4 GiB (sparse) whose header names an index beyond 32
    /// bits: used on 64-bit targets, refused as incompatible, with the
    /// reason, where it cannot be mapped (32-bit targets).
    #[test]
    fn a_file_past_4_gib_is_refused_only_where_it_cannot_be_mapped() {
        let path = std::env::temp_dir().join(format!("xnncache-store-4g-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let compat = Compat { abi_generation: 1, build_id: vec![1; 8], cpu_id: 5 };
        let index = Index { payloads: vec![Payload { offset: 5 << 30, size: 64, checksum: 0 }], keys: vec![], names: vec![], programs: vec![] };
        let bytes = index.encode();
        let index_offset = (5u64 << 30) + 4096;
        let data_end = index_offset + bytes.len() as u64;
        let header = Header { generation: 1, compat: compat.clone(), index_offset, index_size: bytes.len() as u64, index_checksum: crate::format::checksum(&bytes), data_end };
        let written = sys::write_all_at(&f, &header.encode(), SLOT_OFFSETS[0]).and_then(|_| sys::write_all_at(&f, &bytes, index_offset));
        if written.is_err() {
            // A file system without sparse files this large: nothing to check.
            let _ = std::fs::remove_file(&path);
            return;
        }
        let read = read_committed(&f, &compat);
        std::fs::remove_file(&path).unwrap();
        if usize::BITS < 64 {
            match read {
                Err(Refusal::Incompatible(why)) => assert!(why.contains("32-bit"), "{why}"),
                other => panic!("a 5 GiB file on a 32-bit target: {:?}", other.map(|r| r.0)),
            }
        } else {
            let (h, _, i) = read.expect("a 5 GiB file on a 64-bit target");
            assert_eq!((h.index_offset, i.payloads[0].offset), (index_offset, 5 << 30));
        }
    }
}
