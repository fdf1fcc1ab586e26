//! `alias_data`: XNNPACK's fp32 copies of fp16/bf16 constants, and how long
//! a record that a copy means its original can be trusted.

use super::state::{Alias, State};
use super::{this_thread, Core, ThreadNo};
use crate::error::{Error, Result};

impl Core {
    /// `alias_data`: a key naming `alias` means `original`, for as long as
    /// the copy at `alias` lives.
    ///
    /// XNNPACK calls this at the start of a runtime's creation, for fp32
    /// copies it made of fp16/bf16 constants; the copies are freed with the
    /// runtime, and their memory may then hold other weights. We cannot see
    /// that free, so an alias lasts only as long as the creation that made
    /// it can: until `finalize`, until the same thread reshapes a runtime
    /// (`offset_to_addr`, never called during creation) or starts another
    /// creation (its next `alias_data` after a look-up or a packing), or
    /// until memory covering `alias` is registered or unregistered. Only the
    /// thread that was told uses it (XNNPACK calls from the creating thread).
    pub fn alias(&self, alias: usize, original: usize) -> Result<()> {
        if alias == 0 || original == 0 {
            return Err(Error::invalid("alias_data: NULL pointer"));
        }
        let mut st = self.locked();
        let me = this_thread();
        if st.creating.contains(&me) {
            // A new creation on this thread: the copies its earlier aliases
            // named may be gone with their runtime.
            st.end_creation(me);
        }
        // XNNPACK just allocated the copy: whatever was recorded about that
        // address before described memory that has been freed since.
        st.forget_memory(alias, 1);
        let original = st.resolve(original);
        if original == alias {
            return Ok(()); // aliasing a pointer to itself (or a cycle back to it) changes nothing
        }
        st.aliases.insert(alias, Alias { original, thread: me });
        Ok(())
    }

    /// The part of finalize that runs on the caller's thread: it ends the
    /// creations before it. Returns whether a write-back has anything to do.
    pub(super) fn end_creations(&self) -> bool {
        let mut st = self.locked();
        st.finalized = true;
        st.end_program();
        // XNNPACK's fp32 copies may be freed from here on (see `alias`).
        st.aliases.clear();
        st.creating.clear();
        // XNNPACK reserves and inserts within one creation call on one
        // thread: space this thread still holds was abandoned by an error
        // path. Give it back, so that it neither blocks the seal nor a commit.
        let me = this_thread();
        while let Some(i) = st.pending.iter().position(|p| p.thread == me) {
            let old = st.pending.swap_remove(i);
            st.give_back(old.offset, old.len);
        }
        // Staged pages to seal, entries to commit, or a writer lock to hand on.
        let staged = st.arena.as_ref().is_some_and(|a| a.unsealed() > 0);
        staged || st.uncommitted > 0 || st.store.as_ref().is_some_and(|s| s.is_locked() || s.generation() == 0)
    }
}

impl State {
    /// Follows this thread's `alias_data` links to the pointer the data was
    /// first known by. A registered pointer is never followed: registering
    /// memory says what it holds now, whatever an alias said before.
    pub(super) fn resolve(&self, mut p: usize) -> usize {
        let me = this_thread();
        // Bounded: a cycle cannot form (see `alias`), but never loop forever.
        for _ in 0..=self.aliases.len() {
            if self.registry.resolve(p).is_some() {
                break;
            }
            match self.aliases.get(p) {
                Some(a) if a.thread == me => p = a.original,
                _ => break,
            }
        }
        p
    }

    /// `thread`'s creation is over: the copies its aliases named may be freed.
    pub(super) fn end_creation(&mut self, thread: ThreadNo) {
        self.aliases.retain(|_, a| a.thread != thread);
        self.creating.remove(&thread);
    }

    /// Records that this thread is inside a creation (see [`Cache::alias`]).
    pub(super) fn note_creating(&mut self) {
        if !self.aliases.is_empty() {
            self.creating.insert(this_thread());
        }
    }

    /// Forgets every pointer-keyed record about `[start, start + size)`: the
    /// registration, aliases whose copy lies there, and in-process look-up
    /// keys holding pointers into it.
    pub(super) fn forget_memory(&mut self, start: usize, size: usize) {
        let end = start.saturating_add(size.max(1));
        self.registry.forget(start, end);
        for a in self.aliases.keys_between(start, end) {
            self.aliases.remove(a);
        }
        self.index.forget_pointers(start, end);
    }
}

