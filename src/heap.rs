//! Heap blocks: where packed weights go when the file cannot take them
//! (unwritable folder, full disk, file-size limit).
//!
//! Also the scratch space XNNPACK packs into when the packed bytes will most
//! likely fold into an entry the file already holds.
//!
//! Each block is one aligned allocation that never moves. Its offset, as
//! XNNPACK sees it, is its slot number with [`HEAP_TAG`] set, so arena offsets
//! and heap offsets never collide and neither can equal `SIZE_MAX`. Large
//! blocks are their own mappings, so that freeing one gives the memory back
//! to the system instead of leaving it in the allocator's free lists.

use std::alloc::{alloc, dealloc, Layout};

use crate::sys;

/// From this size on, a block is its own anonymous mapping.
const MAP_THRESHOLD: usize = 64 << 10;

/// The top bit of an offset marks a heap block.
pub const HEAP_TAG: usize = 1 << (usize::BITS - 1);
/// Slots stay well below `HEAP_TAG - 1`, so no heap offset is `SIZE_MAX`.
const MAX_SLOTS: usize = 1 << 30;

struct Block {
    ptr: *mut u8,
    layout: Layout,
    /// Mapped with `mmap` (page-aligned), not from the allocator.
    mapped: bool,
}

impl Block {
    fn new(layout: Layout) -> Option<Block> {
        if layout.size() >= MAP_THRESHOLD && layout.align() <= sys::page_size() {
            let ptr = sys::map_anonymous(layout.size()).ok()?;
            return Some(Block { ptr, layout, mapped: true });
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc(layout) };
        (!ptr.is_null()).then_some(Block { ptr, layout, mapped: false })
    }

    fn release(self) {
        if self.mapped {
            // SAFETY: our own mapping of exactly this size, no longer referenced.
            unsafe { sys::unmap_anonymous(self.ptr, self.layout.size()) };
        } else {
            // SAFETY: allocated with exactly this layout and no longer referenced.
            unsafe { dealloc(self.ptr, self.layout) };
        }
    }
}

#[derive(Default)]
pub struct Heap {
    slots: Vec<Option<Block>>,
    free_slots: Vec<usize>,
    live_bytes: usize,
}

// SAFETY: the blocks are plain memory owned by this struct, used behind the cache's mutex.
unsafe impl Send for Heap {}

pub fn is_heap_offset(offset: usize) -> bool {
    offset & HEAP_TAG != 0 && offset != usize::MAX
}

impl Heap {
    /// Allocates `len` bytes aligned to `align`; returns the tagged offset and the address.
    pub fn alloc(&mut self, len: usize, align: usize) -> Option<(usize, *mut u8)> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        if self.free_slots.is_empty() && self.slots.len() >= MAX_SLOTS {
            return None;
        }
        self.slots.try_reserve(1).ok()?;
        let block = Block::new(layout)?;
        let ptr = block.ptr;
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(block);
        self.live_bytes += layout.size();
        Some((HEAP_TAG | slot, ptr))
    }

    pub fn addr(&self, offset: usize) -> Option<*mut u8> {
        if !is_heap_offset(offset) {
            return None;
        }
        self.slots.get(offset & !HEAP_TAG)?.as_ref().map(|b| b.ptr)
    }

    /// The tagged offset of the block that starts at `addr`.
    pub fn offset_of(&self, addr: *const u8) -> Option<usize> {
        self.slots
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| std::ptr::eq(b.ptr, addr)))
            .map(|slot| HEAP_TAG | slot)
    }

    pub fn free(&mut self, offset: usize) {
        let slot = offset & !HEAP_TAG;
        if let Some(b) = self.slots.get_mut(slot).and_then(Option::take) {
            self.live_bytes -= b.layout.size();
            b.release();
            self.free_slots.push(slot);
        }
    }

    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // The cache is being dropped: no block is referenced any more.
        self.slots.iter_mut().filter_map(Option::take).for_each(Block::release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_tagged_and_slots_reused() {
        let mut h = Heap::default();
        let (a, pa) = h.alloc(100, 64).unwrap();
        assert!(is_heap_offset(a) && a != usize::MAX);
        assert_eq!(pa as usize % 64, 0);
        assert_eq!(h.addr(a), Some(pa));
        assert_eq!(h.offset_of(pa), Some(a));
        h.free(a);
        assert_eq!(h.addr(a), None);
        let (b, _) = h.alloc(10, 64).unwrap();
        assert_eq!(a, b);
        assert_eq!(h.live_bytes(), 10);
        assert!(!is_heap_offset(12345));
        assert!(!is_heap_offset(usize::MAX));
        let (big, pb) = h.alloc(MAP_THRESHOLD, 64).unwrap();
        assert_eq!(pb as usize % sys::page_size(), 0, "large blocks are their own mappings");
        // SAFETY: the block holds MAP_THRESHOLD writable bytes.
        unsafe { pb.add(MAP_THRESHOLD - 1).write(1) };
        h.free(big);
    }
}
