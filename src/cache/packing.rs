//! Steps 1 to 4: what the cache answers to XNNPACK's callbacks while it
//! creates runtimes (look up, reserve, insert) and runs them (addresses).

use super::state::{addr_of, entry_bytes, Pending, State};
use super::{Core, ALIGNMENT};
use crate::abi::{Key, NOT_FOUND};
use crate::heap::is_heap_offset;
use crate::identity::content_identity;
use crate::index::{Entry, EntryId, IndexKey};
use crate::logging::Level;

impl Core {
    /// Gives the constant buffer `data` a stable identity: `name` (e.g.
    /// ExecuTorch's named-data key), or with `None` a digest of its bytes. A
    /// later process that registers the same weights under the same identity
    /// finds their packed form by look-up. Register before creating the
    /// runtime that uses them.
    pub fn register(&self, data: &[u8], name: Option<&str>) {
        // SAFETY: a slice is readable for its length.
        unsafe { self.register_raw(data.as_ptr(), data.len(), name) }
    }

    /// [`Core::register`] for a buffer known by its address (the C API's).
    ///
    /// # Safety
    /// `data` must point to `size` readable bytes (only read when `name` is `None`).
    pub unsafe fn register_raw(&self, data: *const u8, size: usize, name: Option<&str>) {
        // Hash outside the lock: it reads the whole buffer.
        // SAFETY: guaranteed by the caller.
        let identity = name.is_none().then(|| unsafe { content_identity(data, size) });
        let mut st = self.locked();
        // The newest word on a piece of memory wins: records made before
        // this registration named whatever that memory held then.
        st.forget_memory(data as usize, size);
        st.registry.register(data as usize, size, name, || identity.expect("hashed above"));
    }

    /// Forgets `[data, data + size)`: its registration, aliases inside it, and
    /// look-up keys holding pointers into it. Call it before freeing weights
    /// you registered, or whenever memory that XNNPACK was given as weights
    /// is freed while the cache lives on. Packed entries stay (their bytes
    /// are still found by content and by persistent keys).
    pub fn unregister(&self, data: *const u8, size: usize) {
        self.locked().forget_memory(data as usize, size);
    }

    /// Step 1: the offset of the one entry `key` names, or `NOT_FOUND`.
    pub fn look_up(&self, asked: Key) -> usize {
        let mut st = self.locked();
        let key = st.index_key(asked);
        st.note_creating();
        st.stats.look_ups += 1;
        let me = super::this_thread();
        match st.index.look_up(&key) {
            Some(id) => {
                st.missed.remove(&me);
                let e = st.index.get_mut(id);
                e.used = true;
                let (offset, size) = (e.offset, e.size);
                st.stats.hits += 1;
                st.stats.found_bytes += size as u64;
                st.note_use(&key, asked.seed, id);
                // A file of format version 1 holds no names: the next commit
                // names what this process found.
                st.remember_names(asked, &key);
                offset
            }
            None => {
                st.missed.insert(me);
                NOT_FOUND
            }
        }
    }

    /// Step 2: `n` writable bytes to pack into, or NULL if memory ran out.
    pub fn reserve(&self, n: usize) -> *mut u8 {
        let mut st = self.locked();
        st.finalized = false;
        let me = super::this_thread();
        let packing_new = st.missed.remove(&me);
        if let Some(i) = st.pending.iter().position(|p| p.thread == me) {
            // The previous reservation of this thread was never inserted (an
            // error path in XNNPACK): reuse it if it is large enough.
            if st.pending[i].len >= n {
                return st.pending[i].addr;
            }
            let old = st.pending.swap_remove(i);
            st.give_back(old.offset, old.len);
        }
        // With a persistent file, weights a look-up just missed are packed
        // straight into it, and so is everything while this process builds
        // the file anyway (holds its writer lock and has grown the file: a
        // packing that folds gives its space back for the next). Otherwise (a launch that may write
        // nothing, e.g. paths XNNPACK never looks up) it is scratch until we
        // know, so that the file is not locked or grown for nothing.
        let building = !st.arena_full && st.store.as_ref().is_some_and(|s| s.is_locked()) && st.grown_past_commit();
        let in_arena = st.store.is_none() || building || (packing_new && st.may_write_file());
        let space = if in_arena { st.allocate(n) } else { st.heap.alloc(n, ALIGNMENT) };
        let Some((offset, addr)) = space else { return core::ptr::null_mut() };
        st.pending.push(Pending { offset, addr, len: n, thread: me });
        drop(st);
        if !is_heap_offset(offset) {
            // XNNPACK writes every byte of it (it zeroes the space before
            // packing): fault it in with one call, not one fault per page;
            // outside the lock, since that may take a while. The space is
            // this thread's until it inserts it.
            // SAFETY: `n` bytes of fresh, writable arena space.
            unsafe { crate::sys::prefault(addr, n) };
        }
        addr
    }

    /// Step 3: stores (or folds) the bytes XNNPACK packed at `ptr`, or with a
    /// NULL `ptr` answers like a look-up for `key` and `size`.
    pub fn look_up_or_insert(&self, asked: Key, ptr: *const u8, size: usize) -> usize {
        let mut st = self.locked();
        let key = st.index_key(asked);
        st.note_creating();
        if ptr.is_null() {
            let id = st.index.look_up_sized(&key, size).or_else(|| st.index.look_up(&key));
            return id.map_or(NOT_FOUND, |id| st.index.get(id).offset);
        }
        let pending = match st.pending.iter().position(|p| std::ptr::eq(p.addr, ptr)) {
            Some(i) => st.pending.swap_remove(i),
            None => match st.adopt(ptr, size) {
                Ok(offset) => return offset,
                Err(p) => p,
            },
        };
        // XNNPACK never packs past what it reserved; if it claims to, trust
        // only the reserved bytes.
        let size = size.min(pending.len);
        // SAFETY: `pending.addr` is arena or heap memory of at least `size`
        // bytes, which XNNPACK has finished writing.
        let bytes = unsafe { core::slice::from_raw_parts(pending.addr, size) };
        let sample = crate::index::sample_of(bytes);
        st.stats.packed_bytes += size as u64;
        let mut same = st.find_bytes(sample, bytes);
        if same.is_none() && is_heap_offset(pending.offset) && st.store.is_some() && !st.arena_full {
            // New bytes, as far as we know, that may go to the file: take the
            // writer lock first, so that what other processes committed
            // meanwhile is loaded and found, instead of being stored a second
            // time. (Bytes already stored fold without it: a launch that adds
            // nothing never takes the writer lock.)
            let known = st.index.entries().len();
            if st.may_write_file() && st.index.entries().len() > known {
                same = st.find_bytes(sample, bytes);
            }
        }
        st.remember_names(asked, &key);
        if let Some(id) = same {
            st.link(key, id);
            st.index.get_mut(id).used = true;
            st.note_use(&key, asked.seed, id);
            st.stats.duplicates_folded += 1;
            st.stats.folded_bytes += size as u64;
            st.give_back(pending.offset, pending.len);
            return st.index.get(id).offset;
        }
        let (offset, len) = st.place(&pending, size);
        let kept = size.div_ceil(ALIGNMENT) * ALIGNMENT;
        if is_heap_offset(offset) {
            st.stats.heap_fallback_bytes += size as u64;
        } else if kept < len {
            st.give_back(offset + kept, len - kept);
        }
        let persisted = matches!(key, IndexKey::Persistent(_)) && !is_heap_offset(offset) && st.store.is_some();
        if !persisted {
            st.stats.not_persisted += 1;
        }
        let id = st.index.insert(key, Entry::new(offset, size, sample));
        if persisted {
            st.uncommitted += 1;
            st.note_use(&key, asked.seed, id);
        }
        crate::fault::point("insert: entry stored");
        st.stats.entries += 1;
        st.stats.stored_bytes += size as u64;
        offset
    }

    /// Step 4: the address of an offset this cache returned, or NULL.
    pub fn offset_to_addr(&self, offset: usize) -> *mut u8 {
        let mut st = self.locked();
        if !st.aliases.is_empty() {
            // XNNPACK asks at reshape, after creation: this thread's creation
            // is over, and its runtime may be deleted (with the copies its
            // aliases named) before the next one.
            st.end_creation(super::this_thread());
        }
        addr_of(st.arena.as_ref(), &st.heap, offset).unwrap_or_else(core::ptr::null_mut)
    }

    /// True when a finalize came after the last packing.
    pub fn is_finalized(&self) -> bool {
        self.locked().finalized
    }
}

impl State {
    /// Arena space if the arena can give it, heap space otherwise.
    pub(super) fn allocate(&mut self, n: usize) -> Option<(usize, *mut u8)> {
        if let (Some(arena), false) = (self.arena.as_mut(), self.arena_full) {
            match arena.alloc(n, ALIGNMENT) {
                Ok(offset) => return arena.addr(offset).map(|a| (offset, a)),
                Err(e) => {
                    let what = if arena.is_file_backed() { "the cache file" } else { "anonymous memory" };
                    self.arena_full = true;
                    self.fall_back("grow", Level::XNNCACHE_LOG_ERROR, format!("{what} cannot grow ({e}); further packed weights go to the heap"));
                }
            }
        }
        self.heap.alloc(n, ALIGNMENT)
    }

    /// The entry holding exactly `bytes` (whose sample is `sample`), if any.
    fn find_bytes(&mut self, sample: u64, bytes: &[u8]) -> Option<EntryId> {
        self.sample_loaded();
        let State { index, arena, heap, .. } = self;
        index.find_content(sample, bytes.len(), |e| entry_bytes(arena.as_ref(), heap, e) == Some(bytes))
    }

    /// The key the index uses: persistent when the pointers are registered.
    pub(super) fn index_key(&self, key: Key) -> IndexKey {
        let key = self.unaliased(key);
        match self.registry.persistent(&key) {
            Some(p) => IndexKey::Persistent(p),
            None => IndexKey::Process(key),
        }
    }

    /// `key` with each pointer XNNPACK converted replaced by its original.
    fn unaliased(&self, key: Key) -> Key {
        if self.aliases.is_empty() {
            key
        } else {
            Key { kernel: self.resolve(key.kernel), bias: self.resolve(key.bias), ..key }
        }
    }

    /// Records the names behind a persistent key this process stores or
    /// links (the weights' and the bias's registered names), for the index.
    fn remember_names(&mut self, asked: Key, key: &IndexKey) {
        if let IndexKey::Persistent(p) = *key {
            if !self.names.contains_key(&p) {
                if let Some(names) = self.registry.names(&self.unaliased(asked)) {
                    self.names.insert(p, names);
                }
            }
        }
    }

    /// Where a new entry's bytes live: its reservation, or, for heap scratch
    /// when the file can take it, a copy in the file.
    pub(super) fn place(&mut self, pending: &Pending, size: usize) -> (usize, usize) {
        if is_heap_offset(pending.offset) && self.store.is_some() && !self.arena_full && self.may_write_file() {
            if let Some((offset, addr)) = self.allocate(size).filter(|(o, _)| !is_heap_offset(*o)) {
                // SAFETY: two distinct allocations of at least `size` bytes.
                unsafe { core::ptr::copy_nonoverlapping(pending.addr, addr, size) };
                self.heap.free(pending.offset);
                return (offset, size);
            }
        }
        (pending.offset, pending.len)
    }

    /// `look_up_or_insert` with a pointer we never handed out. If it is an
    /// entry's own address, that entry is the answer; otherwise the bytes are
    /// copied into fresh space and inserted like any packing.
    pub(super) fn adopt(&mut self, ptr: *const u8, size: usize) -> std::result::Result<usize, Pending> {
        let known = self.arena.as_ref().and_then(|a| a.offset_of(ptr)).or_else(|| self.heap.offset_of(ptr));
        if let Some(id) = known.and_then(|off| self.index.find_offset(off)) {
            return Ok(self.index.get(id).offset);
        }
        let space = if self.store.is_some() { self.heap.alloc(size, ALIGNMENT) } else { self.allocate(size) };
        match space {
            Some((offset, addr)) => {
                // SAFETY: XNNPACK passes `size` readable bytes at `ptr`; `addr` is
                // fresh space of `size` bytes that cannot overlap them.
                unsafe { core::ptr::copy_nonoverlapping(ptr, addr, size) };
                Err(Pending { offset, addr, len: size, thread: super::this_thread() })
            }
            None => Ok(NOT_FOUND),
        }
    }
}

