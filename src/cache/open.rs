//! Opening a cache: the file (reused, rebuilt or refused) or memory.

use std::sync::Mutex;

use super::state::State;
use super::writeback::Background;
use super::{CacheOptions, Core, Stats};
use crate::addrmap::AddrMap;
use crate::arena::ArenaOptions;
use crate::error::{Error, Result, Status};
use crate::format::Compat;
use crate::heap::Heap;
use crate::identity::Registry;
use crate::index::Index;
use crate::logging::Level;
use crate::store::{FileState, Source, Store, StoreOptions};

impl Core {
    pub(super) fn open(options: &CacheOptions) -> Result<Core> {
        let arena_options = match options.reservation {
            Some(r) => ArenaOptions::new().reservation(r),
            None => ArenaOptions::new(),
        };
        let mut state = State {
            arena: None,
            store: None,
            heap: Heap::default(),
            index: Index::default(),
            registry: Registry::default(),
            pending: Vec::new(),
            missed: Default::default(),
            aliases: AddrMap::new(),
            creating: Default::default(),
            arena_full: false,
            uncommitted: 0,
            names: Default::default(),
            finalized: false,
            stats: Stats::default(),
            notes: Vec::new(),
            programs: Default::default(),
            generation: super::lifetime::fork_generation(),
        };
        state.programs.size_cap = options.size_cap;
        state.programs.label = options.program.as_deref().map_or(0, crate::retention::label);
        let mut reason = None;
        let path = match &options.source {
            Some(Source::Path(p)) => Some(p.clone()),
            _ => None,
        };
        let where_ = || path.as_ref().map_or("the descriptor".to_string(), |p| p.display().to_string());
        let source = match &options.source {
            Some(_) if options.build_id.is_empty() => {
                // Without XNNPACK's build identifier a file could be reused by
                // another XNNPACK build: keep the weights in memory instead.
                reason = Some("no XNNPACK build identifier was given (use XNNCACHE_OPTIONS_INIT): packed weights stay in memory".into());
                None
            }
            other => other.as_ref(),
        };
        match source {
            None => {
                state.arena = Some(arena_options.anonymous().map_err(|e| {
                    Error::new(Status::XNNCACHE_OUT_OF_MEMORY, format!("cannot reserve address space: {e}"))
                })?);
                state.stats.file_state = FileState::XNNCACHE_FILE_NONE as u32;
            }
            Some(source) => {
                let store_options = StoreOptions {
                    source: source.clone(),
                    read_only: options.read_only,
                    verify: options.verify,
                    compat: Compat {
                        abi_generation: options.generation.number(),
                        build_id: options.build_id.clone(),
                        cpu_id: crate::identity::cpu_identity(),
                    },
                    file_mode: options.file_mode,
                    allow_foreign: options.allow_foreign,
                };
                match Store::open(&store_options, &arena_options) {
                    Ok(opened) => {
                        state.stats.file_state = opened.state as u32;
                        reason = opened.reason.map(|r| format!("{}: {r}", where_()));
                        if opened.state == FileState::XNNCACHE_FILE_UNUSABLE && options.require_file {
                            return Err(Error::new(Status::XNNCACHE_IO_ERROR, reason.unwrap_or_default()));
                        }
                        state.arena = opened.arena;
                        state.store = opened.store;
                        if let Some(committed) = opened.committed {
                            state.load(committed);
                        }
                    }
                    Err(e) if options.require_file => return Err(Error::io(format!("cannot use {}", where_()), &e)),
                    Err(e) => {
                        state.stats.file_state = FileState::XNNCACHE_FILE_UNUSABLE as u32;
                        reason = Some(format!("cannot use {}: {e}; packed weights go to the heap", where_()));
                    }
                }
            }
        }
        Ok(Core {
            generation: options.generation,
            path,
            compact_percent: options.compact_percent,
            sync_writeback: options.sync_writeback,
            yield_writeback: options.yield_writeback,
            state: Mutex::new(state),
            finalizing: Mutex::new(()),
            fallback_reason: Mutex::new(None),
            logged: Mutex::new(Vec::new()),
            background: Background::default(),
            born: super::lifetime::fork_generation(),
            write_back_thread: Default::default(),
            state_holder: Default::default(),
            finalizing_holder: Default::default(),
        }
        .with_reason(reason))
    }

    pub(super) fn with_reason(self, reason: Option<String>) -> Core {
        if let Some(r) = reason {
            self.fall_back("open", Level::XNNCACHE_LOG_WARN, r);
        }
        self
    }
}

