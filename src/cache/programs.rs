//! What the cache records for the retention rule of [`crate::retention`]:
//! the weights each runtime creation uses, cut into programs at each
//! finalize, and the programs the file records; at a commit, the plan of
//! what its index keeps.
//!
//! Bookkeeping only rides on commits that happen anyway: a warm launch
//! (every weight found) records nothing and writes nothing.

use std::collections::HashMap;

use super::state::State;
use crate::format;
use crate::heap::is_heap_offset;
use crate::index::{EntryId, IndexKey, Map};
use crate::retention::{self, Item};

/// Programs over the cache's entries.
pub(super) type EntryProgram = retention::ProgramOf<EntryId>;

/// What the runtime creations since the last finalize used, and the
/// programs finalized and not yet committed.
#[derive(Default)]
pub(super) struct Programs {
    /// The file's programs as of the newest commit we know of.
    pub(super) held: Vec<EntryProgram>,
    /// Persistent keys used since the last finalize: their seed and entry.
    open: Map<u128, (u32, EntryId)>,
    /// Programs finalized since the last commit (sequence not set yet).
    pub(super) finalized: Vec<EntryProgram>,
    /// The label the host gave for the programs created from now on (0: none).
    pub(super) label: u128,
    /// Commit nothing past this many packed bytes (0: no cap).
    pub(super) size_cap: u64,
}

impl State {
    /// A runtime creation found, folded into or inserted entry `id` under `key`.
    pub(super) fn note_use(&mut self, key: &IndexKey, seed: u32, id: EntryId) {
        if let IndexKey::Persistent(k) = *key {
            self.programs.open.insert(k, (seed, id));
        }
    }

    /// At finalize: what was used since the last one is a program.
    pub(super) fn end_program(&mut self) {
        let open = std::mem::take(&mut self.programs.open);
        if open.is_empty() {
            return;
        }
        let file_entries: Vec<(u32, EntryId)> = open.into_values().filter(|&(_, id)| !is_heap_offset(self.index.get(id).offset)).collect();
        let shape = retention::shape(file_entries.iter().map(|&(seed, id)| (seed, self.index.get(id).size as u64)).collect());
        let items = file_entries.into_iter().map(|(_, id)| id).collect();
        self.programs.finalized.push(EntryProgram { label: self.programs.label, shape, sequence: 0, items });
    }

    /// The programs of a committed index (by payload position), as entries.
    pub(super) fn load_programs(&mut self, programs: &[format::Program], ids: &[EntryId]) {
        self.programs.held = programs
            .iter()
            .map(|p| EntryProgram { label: p.label, shape: p.shape, sequence: p.sequence, items: p.payloads.iter().map(|&i| ids[i as usize]).collect() })
            .collect();
    }

    /// The plan of the next commit: the programs it records and the entries
    /// it leaves out. Takes the finalized programs (they are the commit's).
    pub(super) fn plan_retention(&mut self, links: &[(u128, EntryId)]) -> retention::Plan<EntryId> {
        let items: HashMap<EntryId, Item> = links
            .iter()
            .map(|&(_, id)| self.index.get(id))
            .zip(links.iter().map(|&(_, id)| id))
            .filter(|(e, _)| !is_heap_offset(e.offset))
            .map(|(e, id)| (id, Item { size: e.size as u64, droppable: e.committed && !e.used }))
            .collect();
        let finalized = std::mem::take(&mut self.programs.finalized);
        retention::plan(&self.programs.held, finalized, &items, self.programs.size_cap)
    }
}

/// A plan's programs as the index records them: payload positions.
pub(super) fn recorded(programs: &[EntryProgram], position: &Map<usize, u32>) -> Vec<format::Program> {
    programs
        .iter()
        .map(|p| {
            let mut payloads: Vec<u32> = p.items.iter().filter_map(|&id| position.get(&(id as usize)).copied()).collect();
            payloads.sort_unstable();
            payloads.dedup();
            format::Program { label: p.label, shape: p.shape, sequence: p.sequence, payloads }
        })
        .filter(|p| !p.payloads.is_empty())
        .collect()
}
