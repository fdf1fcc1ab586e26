//! Which packed weights a commit keeps (issue 25): the rule, on its own, so
//! that the cache (`cache::programs`) and the CLI's `inspect` apply the
//! same one.
//!
//! A *program* is what the runtime creations ended by one finalize used
//! (found, folded into or inserted): its packed weights, the host's label
//! if it gave one (`xnncache_set_program`), and its *shape*, the multiset
//! of (look-up seed, packed size) of its keys. The file records programs
//! in its index (format version 3). At each commit:
//!
//! 1. **Update.** A finalized program whose label equals a recorded
//!    program's label (or, both unlabelled, whose shape equals its shape)
//!    replaces it: a new version of a model packs the same shapes again
//!    under new names. What the old record held and no remaining program
//!    holds is dropped, unless this session used it.
//! 2. **Another program** (another label or shape) gets a record of its
//!    own; nothing is dropped. So programs launched alternately never
//!    drop each other, whatever their number.
//! 3. **Size cap** (optional): while the packed bytes kept would pass the
//!    cap, whole programs are dropped, least recently written first
//!    (weights of no program, from files written before version 3, before
//!    any), never one this commit writes nor a weight this session used.
//!
//! "Written" is all a file can know of use: a warm launch writes nothing
//! (issue 18), so a program's `sequence` grows only at commits that write
//! it anyway (its first launch, an update, a launch that added weights).
//!
//! Two unlabelled programs of one shape (two fine-tunes of one
//! architecture used alternately) look like an update of each other; a
//! host that runs such programs side by side labels them.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// A recorded program, over items of type `I` (entries in the cache,
/// payload numbers in the CLI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramOf<I> {
    /// Digest of the host's label, 0: none.
    pub label: u128,
    pub shape: u128,
    /// When a commit last wrote it (see the module's text).
    pub sequence: u64,
    pub items: Vec<I>,
}

/// One item the index holds: its packed size, and whether this commit may
/// drop it (committed before, and not used by this session).
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub size: u64,
    pub droppable: bool,
}

/// What a commit keeps.
#[derive(Debug)]
pub struct Plan<I> {
    /// The programs to record.
    pub programs: Vec<ProgramOf<I>>,
    /// Items to leave out of the index.
    pub dropped: Vec<I>,
    /// How many recorded programs the size cap dropped.
    pub capped_programs: usize,
}

/// The shape of a program: a digest of its (look-up seed, packed size)
/// pairs, in any order.
pub fn shape(mut pairs: Vec<(u32, u64)>) -> u128 {
    pairs.sort_unstable();
    let mut bytes = Vec::with_capacity(pairs.len() * 12);
    for (seed, size) in pairs {
        bytes.extend_from_slice(&seed.to_le_bytes());
        bytes.extend_from_slice(&size.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

/// The label's digest (never 0, which means "no label").
pub fn label(name: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(name.as_bytes()).max(1)
}

/// Applies the rule: `held` are the recorded programs, `finalized` the
/// programs this commit writes (label, shape, items; sequence ignored),
/// `items` every item the index holds. `cap` 0: no cap.
pub fn plan<I: Copy + Eq + Hash + Ord>(held: &[ProgramOf<I>], finalized: Vec<ProgramOf<I>>, items: &HashMap<I, Item>, cap: u64) -> Plan<I> {
    let mut programs: Vec<ProgramOf<I>> = held.to_vec();
    let next = programs.iter().map(|p| p.sequence).max().unwrap_or(0) + 1;
    let mut written: HashSet<usize> = HashSet::new();
    for f in finalized {
        let same = |p: &ProgramOf<I>| if f.label != 0 || p.label != 0 { p.label == f.label } else { p.shape == f.shape };
        let at = match programs.iter().position(same) {
            Some(i) => i,
            None => {
                programs.push(ProgramOf { items: Vec::new(), ..f.clone() });
                programs.len() - 1
            }
        };
        let mut items = f.items;
        items.sort_unstable();
        items.dedup();
        programs[at] = ProgramOf { label: f.label, shape: f.shape, sequence: next, items };
        written.insert(at);
    }
    let named = |programs: &[ProgramOf<I>]| -> HashSet<I> { programs.iter().flat_map(|p| p.items.iter().copied()).collect() };
    let droppable = |i: &I| items.get(i).is_some_and(|it| it.droppable);
    // Rules 1 and 2: what replaced records held and nothing holds now.
    let before = named(held);
    let mut now = named(&programs);
    let mut dropped: HashSet<I> = before.iter().filter(|i| !now.contains(i) && droppable(i)).copied().collect();
    // Rule 3.
    let mut capped_programs = 0;
    if cap > 0 {
        let kept_bytes = |dropped: &HashSet<I>| items.iter().filter(|(i, _)| !dropped.contains(i)).map(|(_, it)| it.size).sum::<u64>();
        let mut kept = kept_bytes(&dropped);
        if kept > cap {
            // Weights of no program first, as the oldest.
            let orphans: Vec<I> = items.keys().filter(|i| !now.contains(i) && !dropped.contains(i) && droppable(i)).copied().collect();
            for i in orphans {
                if kept <= cap {
                    break;
                }
                kept -= items[&i].size;
                dropped.insert(i);
            }
        }
        while kept > cap {
            let oldest = (0..programs.len()).filter(|i| !written.contains(i)).min_by_key(|&i| (programs[i].sequence, i));
            let Some(victim) = oldest else { break };
            let gone = programs.remove(victim);
            written = written.into_iter().map(|w| if w > victim { w - 1 } else { w }).collect();
            capped_programs += 1;
            now = named(&programs);
            for i in gone.items.into_iter().filter(|i| !now.contains(i) && droppable(i)) {
                if dropped.insert(i) {
                    kept -= items[&i].size;
                }
            }
        }
    }
    // A record keeps only what the index keeps.
    for p in &mut programs {
        p.items.retain(|i| items.contains_key(i) && !dropped.contains(i));
    }
    programs.retain(|p| !p.items.is_empty());
    let mut dropped: Vec<I> = dropped.into_iter().collect();
    dropped.sort_unstable();
    Plan { programs, dropped, capped_programs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &[(u32, u64, bool)]) -> HashMap<u32, Item> {
        list.iter().map(|&(i, size, droppable)| (i, Item { size, droppable })).collect()
    }

    fn p(label: u128, shape: u128, sequence: u64, items: &[u32]) -> ProgramOf<u32> {
        ProgramOf { label, shape, sequence, items: items.to_vec() }
    }

    #[test]
    fn an_update_replaces_its_program_and_another_program_is_kept() {
        let all = items(&[(1, 10, true), (2, 10, true), (3, 10, false), (4, 10, false)]);
        // Same shape, new items: 1 and 2 go.
        let update = plan(&[p(0, 7, 1, &[1, 2])], vec![p(0, 7, 0, &[3, 4])], &all, 0);
        assert_eq!(update.dropped, vec![1, 2]);
        assert_eq!(update.programs, vec![p(0, 7, 2, &[3, 4])]);
        // Another shape: nothing goes.
        let other = plan(&[p(0, 7, 1, &[1, 2])], vec![p(0, 8, 0, &[3, 4])], &all, 0);
        assert!(other.dropped.is_empty());
        assert_eq!(other.programs.len(), 2);
        // A label wins over the shape, both ways.
        assert!(plan(&[p(5, 7, 1, &[1, 2])], vec![p(6, 7, 0, &[3, 4])], &all, 0).dropped.is_empty());
        assert_eq!(plan(&[p(5, 7, 1, &[1, 2])], vec![p(5, 9, 0, &[3, 4])], &all, 0).dropped, vec![1, 2]);
        assert!(plan(&[p(5, 7, 1, &[1, 2])], vec![p(0, 7, 0, &[3, 4])], &all, 0).dropped.is_empty(), "an unlabelled program is not a labelled one");
    }

    #[test]
    fn what_the_session_used_or_another_program_holds_stays() {
        let all = items(&[(1, 10, false), (2, 10, true), (3, 10, false), (9, 10, true)]);
        let held = [p(0, 7, 1, &[1, 2, 9]), p(0, 8, 2, &[9])];
        let update = plan(&held, vec![p(0, 7, 0, &[3])], &all, 0);
        assert_eq!(update.dropped, vec![2], "1 was used, 9 is the other program's");
    }

    #[test]
    fn the_cap_drops_the_least_recently_written_programs_first() {
        let all = items(&[(1, 10, true), (2, 10, true), (3, 10, true), (4, 10, false)]);
        let held = [p(0, 1, 2, &[1]), p(0, 2, 1, &[2]), p(0, 3, 3, &[3])];
        // 40 bytes with the new program 4: a cap of 40 keeps everything.
        let at = plan(&held, vec![p(0, 4, 0, &[4])], &all, 40);
        assert!(at.dropped.is_empty());
        // One byte less: the oldest (sequence 1, program 2) goes, only it.
        let below = plan(&held, vec![p(0, 4, 0, &[4])], &all, 39);
        assert_eq!((below.dropped, below.capped_programs), (vec![2], 1));
        // A cap below what this commit writes drops every other program, not its own.
        let tiny = plan(&held, vec![p(0, 4, 0, &[4])], &all, 1);
        assert_eq!(tiny.dropped, vec![1, 2, 3]);
        assert_eq!(tiny.programs, vec![p(0, 4, 4, &[4])]);
        // Weights of no program go before any program.
        let orphans = items(&[(1, 10, true), (5, 10, true), (4, 10, false)]);
        assert_eq!(plan(&[p(0, 1, 1, &[1])], vec![p(0, 4, 0, &[4])], &orphans, 20).dropped, vec![5]);
    }

    #[test]
    fn shapes_ignore_order_and_count_repeats() {
        assert_eq!(shape(vec![(1, 64), (2, 128)]), shape(vec![(2, 128), (1, 64)]));
        assert_ne!(shape(vec![(1, 64)]), shape(vec![(1, 64), (1, 64)]));
        assert_ne!(shape(vec![(1, 64)]), shape(vec![(1, 128)]));
        assert_ne!(label("a"), 0);
    }
}
