//! `xnncache`: looks into and maintains xnncache files without XNNPACK.
//!
//! - `xnncache inspect FILE`: both header slots, the commit in use, whether
//!   the file fits this machine (CPU identity) and, given `--build-id HEX`,
//!   that XNNPACK build; every entry with its size and keys; the bytes a
//!   compaction would give back; the programs the file records and what a
//!   launch would drop (an update of each program; with `--size-cap BYTES`,
//!   the programs a writing launch drops under that cap).
//! - `xnncache verify FILE`: every payload against its checksum.
//! - `xnncache compact FILE`: rewrites the file with only the payloads its
//!   keys reach, under the writer lock, and renames it over the old one.
//!
//! Exit codes: 0 fine; 1 the file is corrupt, fails a checksum, or does not
//! match what `--build-id` asked for; 2 a usage or I/O error. Every error
//! names the file and the reason. `--json` prints one JSON object on stdout.
//!
//! Only xnncache's public modules are used: [`xnncache::format`] for the
//! layout and [`xnncache::store`] for reading a commit and for compaction.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use xnncache::arena::ArenaOptions;
use xnncache::format::{self, Header, Index, Refusal};
use xnncache::store::{self, FileState, Source, Store, StoreOptions};

/// `println!` that ignores a closed stdout (`xnncache inspect f | head`):
/// the report is what it is, and the exit code must still say the result.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "xnncache",
    version,
    about = "Inspect, verify and compact xnncache files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Header, compatibility, entries with sizes, unreachable bytes.
    Inspect {
        file: PathBuf,
        /// XNNPACK's build identifier in hex: also report whether the file was built by that build.
        #[arg(long, value_name = "HEX", value_parser = parse_hex)]
        build_id: Option<BuildId>,
        /// Also report what the next writing launch drops with this size cap
        /// (the host's `size_cap`, in packed bytes).
        #[arg(long, value_name = "BYTES")]
        size_cap: Option<u64>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Checks every payload against its checksum (exit 1 if one differs).
    Verify {
        file: PathBuf,
        /// Also require that the file was built by this XNNPACK build on this kind of CPU.
        #[arg(long, value_name = "HEX", value_parser = parse_hex)]
        build_id: Option<BuildId>,
        #[arg(long)]
        json: bool,
    },
    /// Rewrites the file with only what its keys reach.
    Compact {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// XNNPACK's build identifier, as bytes (a newtype: clap reads a bare
/// `Vec` as a list of values).
#[derive(Clone)]
struct BuildId(Vec<u8>);

fn parse_hex(s: &str) -> Result<BuildId, String> {
    let s = s.trim_start_matches("0x");
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("expected an even number of hex digits".into());
    }
    if s.len() / 2 > format::BUILD_ID_MAX {
        return Err(format!(
            "a build identifier has at most {} bytes",
            format::BUILD_ID_MAX
        ));
    }
    Ok(BuildId(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("checked hex"))
            .collect(),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a command failed, and with which exit code.
enum Failure {
    /// The file is corrupt or does not match: exit 1.
    Bad(String),
    /// The file cannot be read or written, or the request is impossible: exit 2.
    Io(String),
}

/// A file's committed state, as read from disk.
struct Snapshot {
    len: u64,
    slots: [Result<Header, Refusal>; 2],
    /// The slot in use, its header and index.
    committed: Result<(usize, Header, Index), Refusal>,
}

fn open(path: &Path) -> Result<File, Failure> {
    File::open(path).map_err(|e| Failure::Io(format!("cannot open: {e}")))
}

fn read(file: &File) -> Result<Snapshot, Failure> {
    let len = file
        .metadata()
        .map_err(|e| Failure::Io(format!("cannot stat: {e}")))?
        .len();
    let slots = store::read_slots(file, len)
        .map_err(|e| Failure::Io(format!("cannot read the header: {e}")))?;
    // The file's own compatibility: we read it whatever it was made for.
    let committed = store::read_any_committed(file).map(|(h, s, i)| (s, h, i));
    Ok(Snapshot {
        len,
        slots,
        committed,
    })
}

/// What a compaction would leave: reachable payloads (ascending offsets),
/// keys renumbered to them, and the resulting file length.
struct Plan {
    payloads: Vec<format::Payload>,
    keys: Vec<(u128, u32)>,
    names: Vec<(u128, format::KeyNames)>,
    programs: Vec<format::Program>,
    len: u64,
}

fn plan(index: &Index) -> Plan {
    let mut reachable: Vec<u32> = index.keys.iter().map(|k| k.payload).collect();
    reachable.sort_unstable_by_key(|&p| index.payloads[p as usize].offset);
    reachable.dedup();
    let renumber = |p: u32| reachable.iter().position(|&q| q == p).expect("reachable") as u32;
    let payloads: Vec<format::Payload> = reachable
        .iter()
        .map(|&p| index.payloads[p as usize])
        .collect();
    let keys: Vec<(u128, u32)> = index
        .keys
        .iter()
        .map(|k| (k.key, renumber(k.payload)))
        .collect();
    let programs: Vec<format::Program> = index
        .programs
        .iter()
        .map(|p| {
            let mut payloads: Vec<u32> = p.payloads.iter().filter(|q| reachable.contains(q)).map(|&q| renumber(q)).collect();
            payloads.sort_unstable();
            format::Program { payloads, ..p.clone() }
        })
        .filter(|p| !p.payloads.is_empty())
        .collect();
    let (_, offset) = format::compacted_layout(payloads.iter().map(|p| p.size));
    let encoded = xnncache::format::index_len(payloads.len(), keys.len(), index.names.iter().map(|(_, n)| n), &programs) as u64;
    Plan {
        len: offset + encoded,
        payloads,
        keys,
        names: index.names.clone(),
        programs,
    }
}

fn compat_json(h: &Header, build_id: Option<&[u8]>) -> (Value, bool) {
    let cpu = h.compat.cpu_id == xnncache::identity::cpu_identity();
    let build = build_id.map(|b| b == h.compat.build_id.as_slice());
    let ok = cpu && build != Some(false);
    (
        json!({ "cpu_identity_matches": cpu, "build_id_matches": build }),
        ok,
    )
}

fn header_json(h: &Header) -> Value {
    json!({
        "generation": h.generation,
        "abi_generation": h.compat.abi_generation,
        "build_id": hex(&h.compat.build_id),
        "cpu_identity": format!("{:032x}", h.compat.cpu_id),
        "index_offset": h.index_offset,
        "index_size": h.index_size,
        "data_end": h.data_end,
    })
}

/// The programs of `index` and what a launch would drop (see
/// `xnncache::retention`): each program's bytes, and the bytes only it holds
/// (what an update of it drops); with a cap, what a launch that writes none
/// of these programs drops under it (a launch never drops its own).
fn programs_json(index: &Index, size_cap: Option<u64>) -> Value {
    use std::collections::{HashMap, HashSet};
    use xnncache::retention::{self, Item, ProgramOf};
    let reachable: HashSet<u32> = index.keys.iter().map(|k| k.payload).collect();
    let size = |p: u32| index.payloads[p as usize].size;
    let holders = |q: u32| index.programs.iter().filter(|p| p.payloads.contains(&q)).count();
    let programs: Vec<Value> = index
        .programs
        .iter()
        .map(|p| {
            json!({
                "label": if p.label == 0 { Value::Null } else { json!(format!("{:032x}", p.label)) },
                "shape": format!("{:032x}", p.shape),
                "sequence": p.sequence,
                "payloads": p.payloads.len(),
                "bytes": p.payloads.iter().map(|&q| size(q)).sum::<u64>(),
                "update_drops_bytes": p.payloads.iter().filter(|&&q| holders(q) == 1).map(|&q| size(q)).sum::<u64>(),
            })
        })
        .collect();
    let orphans: Vec<u32> = reachable.iter().copied().filter(|&q| holders(q) == 0).collect();
    let cap = size_cap.map(|cap| {
        let held: Vec<ProgramOf<u32>> = index
            .programs
            .iter()
            .map(|p| ProgramOf { label: p.label, shape: p.shape, sequence: p.sequence, items: p.payloads.clone() })
            .collect();
        let items: HashMap<u32, Item> = reachable.iter().map(|&q| (q, Item { size: size(q), droppable: true })).collect();
        let plan = retention::plan(&held, Vec::new(), &items, cap);
        json!({
            "size_cap": cap,
            "dropped_programs": plan.capped_programs,
            "dropped_payloads": plan.dropped.len(),
            "dropped_bytes": plan.dropped.iter().map(|&q| size(q)).sum::<u64>(),
        })
    });
    json!({
        "programs": programs,
        "payloads_of_no_program": orphans.len(),
        "bytes_of_no_program": orphans.iter().map(|&q| size(q)).sum::<u64>(),
        "under_size_cap": cap,
    })
}

fn inspect(path: &Path, build_id: Option<&[u8]>, size_cap: Option<u64>) -> Result<(Value, bool), Failure> {
    let snap = read(&open(path)?)?;
    let slots: Vec<Value> = snap
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            Ok(h) => json!({ "slot": i, "valid": true, "header": header_json(h) }),
            Err(r) => json!({ "slot": i, "valid": false, "reason": r.message() }),
        })
        .collect();
    let (slot, header, index) = snap
        .committed
        .map_err(|r| Failure::Bad(r.message().to_string()))?;
    let (compat, compatible) = compat_json(&header, build_id);
    let plan = plan(&index);
    let mut by_offset: Vec<(usize, &format::Payload)> = index.payloads.iter().enumerate().collect();
    by_offset.sort_by_key(|(_, p)| p.offset);
    let entries: Vec<Value> = by_offset
        .into_iter()
        .map(|(i, p)| {
            let keys: Vec<String> = index.keys.iter().filter(|k| k.payload as usize == i).map(|k| format!("{:032x}", k.key)).collect();
            let names: Vec<Value> = index
                .keys
                .iter()
                .filter(|k| k.payload as usize == i)
                .filter_map(|k| index.names.iter().find(|(key, _)| *key == k.key))
                .map(|(_, n)| json!({ "weights": n.weights, "bias": n.bias }))
                .collect();
            json!({ "offset": p.offset, "size": p.size, "checksum": format!("{:016x}", p.checksum), "keys": keys, "names": names })
        })
        .collect();
    let report = json!({
        "file": path.display().to_string(),
        "file_size": snap.len,
        "format_version": format::FORMAT_VERSION,
        "slot_in_use": slot,
        "header": header_json(&header),
        "slots": slots,
        "compatibility": compat,
        "entries": entries,
        "keys": index.keys.len(),
        "named_keys": index.names.len(),
        "payload_bytes": index.payloads.iter().map(|p| p.size).sum::<u64>(),
        "reachable_payload_bytes": plan.payloads.iter().map(|p| p.size).sum::<u64>(),
        "unreachable_bytes": snap.len.saturating_sub(plan.len),
        "bytes_past_data_end": snap.len.saturating_sub(header.data_end),
        "compacted_size": plan.len,
        "retention": programs_json(&index, size_cap),
    });
    Ok((report, compatible))
}

fn print_inspect(r: &Value) {
    let h = &r["header"];
    out!(
        "{}: xnncache file, format v{}, {} bytes",
        r["file"].as_str().unwrap_or(""),
        r["format_version"],
        r["file_size"]
    );
    out!(
        "  commit:        generation {} (slot {})",
        h["generation"],
        r["slot_in_use"]
    );
    for s in r["slots"].as_array().into_iter().flatten() {
        match s["valid"].as_bool() {
            Some(true) => out!(
                "  slot {}:        valid, generation {}",
                s["slot"],
                s["header"]["generation"]
            ),
            _ => match s["reason"].as_str().unwrap_or("") {
                r if r.starts_with("empty") => out!("  slot {}:        {r}", s["slot"]),
                r => out!("  slot {}:        not valid: {r}", s["slot"]),
            },
        }
    }
    out!("  provider ABI:  v{}", h["abi_generation"]);
    out!("  build id:      {}", h["build_id"].as_str().unwrap_or(""));
    out!(
        "  CPU identity:  {}",
        h["cpu_identity"].as_str().unwrap_or("")
    );
    let c = &r["compatibility"];
    let yes_no = |v: &Value| match v.as_bool() {
        Some(true) => "matches",
        Some(false) => "DIFFERS",
        None => "not checked (pass --build-id HEX)",
    };
    out!(
        "  this machine:  CPU identity {}",
        yes_no(&c["cpu_identity_matches"])
    );
    out!("  XNNPACK build: {}", yes_no(&c["build_id_matches"]));
    out!(
        "  index:         {} bytes at offset {}; data end {}",
        h["index_size"],
        h["index_offset"],
        h["data_end"]
    );
    let entries = r["entries"].as_array().cloned().unwrap_or_default();
    out!(
        "  entries:       {} payloads, {} keys, {} bytes",
        entries.len(),
        r["keys"],
        r["payload_bytes"]
    );
    for e in &entries {
        let keys = e["keys"].as_array().map_or(0, Vec::len);
        out!(
            "    @{:<10} {:>12} bytes  xxh3 {}  {}",
            e["offset"].as_u64().unwrap_or(0),
            e["size"].as_u64().unwrap_or(0),
            e["checksum"].as_str().unwrap_or(""),
            if keys == 0 {
                "unreachable".to_string()
            } else {
                format!("{keys} key(s)")
            }
        );
    }
    out!(
        "  unreachable:   {} bytes, {} of them past the data end (compacted size {})",
        r["unreachable_bytes"],
        r["bytes_past_data_end"],
        r["compacted_size"]
    );
    let ret = &r["retention"];
    let programs = ret["programs"].as_array().cloned().unwrap_or_default();
    out!(
        "  programs:      {} ({} bytes in no program)",
        programs.len(),
        ret["bytes_of_no_program"]
    );
    for p in &programs {
        out!(
            "    {} shape {:.8} written at {:<4} {:>5} payloads {:>12} bytes; an update drops {} bytes",
            p["label"].as_str().map_or("unlabelled".to_string(), |l| format!("label {:.8}", l)),
            p["shape"].as_str().unwrap_or(""),
            p["sequence"],
            p["payloads"],
            p["bytes"],
            p["update_drops_bytes"]
        );
    }
    if let Some(c) = ret["under_size_cap"].as_object() {
        out!(
            "  size cap {}:  the next writing launch drops {} program(s), {} payloads, {} bytes (at most: a launch never drops what it writes)",
            c["size_cap"],
            c["dropped_programs"],
            c["dropped_payloads"],
            c["dropped_bytes"]
        );
    }
}

fn verify(path: &Path, build_id: Option<&[u8]>) -> Result<(Value, bool), Failure> {
    let file = open(path)?;
    let snap = read(&file)?;
    let (_, header, index) = snap
        .committed
        .map_err(|r| Failure::Bad(r.message().to_string()))?;
    let mut bad = Vec::new();
    for p in &index.payloads {
        let bytes = store::read_payload(&file, p)
            .map_err(|e| Failure::Io(format!("cannot read the payload at {}: {e}", p.offset)))?;
        if bytes.is_none() {
            bad.push(json!({ "offset": p.offset, "size": p.size }));
        }
    }
    let (compat, compatible) = compat_json(&header, build_id);
    let ok = bad.is_empty() && (build_id.is_none() || compatible);
    let report = json!({
        "file": path.display().to_string(),
        "ok": ok,
        "payloads": index.payloads.len(),
        "bad_payloads": bad,
        "compatibility": if build_id.is_some() { compat } else { Value::Null },
    });
    Ok((report, ok))
}

fn compact(path: &Path) -> Result<Value, Failure> {
    let snap = read(&open(path)?)?;
    let (_, header, _) = snap
        .committed
        .map_err(|r| Failure::Bad(r.message().to_string()))?;
    let options = StoreOptions {
        source: Source::Path(path.to_path_buf()),
        read_only: false,
        verify: true,
        compat: header.compat.clone(),
        file_mode: xnncache::store::PRIVATE_FILE_MODE,
        allow_foreign: false,
    };
    let opened = Store::open(&options, &ArenaOptions::new())
        .map_err(|e| Failure::Io(format!("cannot open for writing: {e}")))?;
    let (Some(mut store), FileState::XNNCACHE_FILE_REUSED) = (opened.store, opened.state) else {
        let why = opened
            .reason
            .unwrap_or_else(|| "the file changed while it was read".into());
        return Err(Failure::Bad(why));
    };
    match store.try_lock() {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Failure::Io(
                "another process is writing it (writer lock busy), or it was replaced; try again"
                    .into(),
            ))
        }
        Err(e) => return Err(Failure::Io(format!("cannot take the writer lock: {e}"))),
    }
    // Under the lock nobody commits: read the newest commit again, from the
    // file the path names now (which the lock just checked is the store's).
    let file = open(path)?;
    let (_, _, index) = read(&file)?
        .committed
        .map_err(|r| Failure::Bad(r.message().to_string()))?;
    let plan = plan(&index);
    let mut bytes = Vec::with_capacity(plan.payloads.len());
    for p in &plan.payloads {
        let b = store::read_payload(&file, p)
            .map_err(|e| Failure::Io(format!("cannot read the payload at {}: {e}", p.offset)))?
            .ok_or_else(|| {
                Failure::Bad(format!(
                    "the payload at {} fails its checksum: not compacting a corrupt file",
                    p.offset
                ))
            })?;
        bytes.push((b, p.checksum));
    }
    let payloads: Vec<(&[u8], u64)> = bytes.iter().map(|(b, c)| (b.as_slice(), *c)).collect();
    let new_len = store
        .prepare_compaction()
        .and_then(|c| c.write(&payloads, &plan.keys, plan.names.clone(), plan.programs.clone()))
        .map_err(|e| Failure::Io(format!("cannot compact: {e}")))?;
    store.compacted();
    store.unlock();
    Ok(json!({
        "file": path.display().to_string(),
        "size_before": snap.len,
        "size_after": new_len,
        "payloads_before": index.payloads.len(),
        "payloads_after": plan.payloads.len(),
        "keys": plan.keys.len(),
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, json_out) = match &cli.command {
        Command::Inspect { file, json, .. }
        | Command::Verify { file, json, .. }
        | Command::Compact { file, json } => (file.clone(), *json),
    };
    let result = match &cli.command {
        Command::Inspect { build_id, size_cap, .. } => {
            inspect(&path, build_id.as_ref().map(|b| b.0.as_slice()), *size_cap).map(|(r, _)| {
                if !json_out {
                    print_inspect(&r);
                }
                (r, true)
            })
        }
        Command::Verify { build_id, .. } => {
            verify(&path, build_id.as_ref().map(|b| b.0.as_slice())).map(|(r, ok)| {
                if !json_out {
                    let n = r["payloads"].as_u64().unwrap_or(0);
                    let bad = r["bad_payloads"].as_array().map_or(0, Vec::len);
                    if bad == 0 {
                        out!("{}: {n} payloads, every checksum matches", path.display());
                    } else {
                        eprintln!(
                            "xnncache: {}: {bad} of {n} payloads fail their checksum",
                            path.display()
                        );
                    }
                    if build_id.is_some()
                        && !r["compatibility"]["cpu_identity_matches"]
                            .as_bool()
                            .unwrap_or(false)
                    {
                        eprintln!(
                            "xnncache: {}: built on another kind of CPU (CPU identity differs)",
                            path.display()
                        );
                    }
                    if r["compatibility"]["build_id_matches"].as_bool() == Some(false) {
                        eprintln!(
                        "xnncache: {}: built by another XNNPACK build (build identifier differs)",
                        path.display()
                    );
                    }
                }
                (r, ok)
            })
        }
        Command::Compact { .. } => compact(&path).map(|r| {
            if !json_out {
                out!(
                    "{}: compacted from {} to {} bytes ({} of {} payloads kept, {} keys)",
                    path.display(),
                    r["size_before"],
                    r["size_after"],
                    r["payloads_after"],
                    r["payloads_before"],
                    r["keys"]
                );
            }
            (r, true)
        }),
    };
    match result {
        Ok((report, ok)) => {
            if json_out {
                out!("{report:#}");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(failure) => {
            let (code, kind, reason) = match failure {
                Failure::Bad(r) => (1, "corrupt", r),
                Failure::Io(r) => (2, "io", r),
            };
            eprintln!("xnncache: {}: {reason}", path.display());
            if json_out {
                out!(
                    "{:#}",
                    json!({ "file": path.display().to_string(), "ok": false, "error": kind, "reason": reason })
                );
            }
            ExitCode::from(code)
        }
    }
}
