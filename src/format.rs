//! The cache file's format: two header slots, aligned payloads, and an index.
//!
//! ```text
//! offset 0      header slot 0   (HEADER_SIZE bytes)
//! offset 2048   header slot 1
//! DATA_START    payloads, each 64-byte aligned (staged in memory, then written with pwrite)
//!   ...         index block of the latest commit (and older, unreachable ones)
//! data_end      end of what the newest valid header covers
//! ```
//!
//! All integers are in the writer's byte order, which the header records; a
//! reader with another byte order, pointer width, format version, XNNPACK
//! build, CPU identity or provider ABI does not use the file.
//!
//! A commit never overwrites bytes a valid header points to: new payloads and
//! a new index go past the old `data_end`, are written back (`pwrite`, then
//! `fdatasync`), and only then is the *older* header slot overwritten with a
//! higher generation and synced. A crash before that last write leaves the
//! previous commit intact; a torn header slot fails its checksum and the other
//! slot still names the previous commit. Readers take the valid slot with the
//! highest generation, then check the index's checksum and every offset and
//! size in it before handing out a single pointer.

use std::collections::HashSet;

use xxhash_rust::xxh3::xxh3_128;

pub const MAGIC: [u8; 8] = *b"XNNCACHE";
/// An index that also records the programs its payloads belong to (written
/// since format version 3; see [`Program`]).
pub const INDEX_MAGIC: [u8; 8] = *b"XNNCIDX3";
/// Version 2's index: payloads, keys and names, no programs. Still read.
pub const INDEX_MAGIC_V2: [u8; 8] = *b"XNNCIDX2";
/// Version 1's index: payloads and keys, no names. Still read.
pub const INDEX_MAGIC_V1: [u8; 8] = *b"XNNCIDX1";
/// What this library writes; it reads every version from 1.
pub const FORMAT_VERSION: u32 = 3;
/// The longest name kept in an index (longer ones are registered, not listed).
pub const NAME_MAX: usize = 4096;
/// Written in native order: reads back as this value only in the same order.
pub const BYTE_ORDER_MARK: u32 = 0x0102_0304;
pub const HEADER_SIZE: usize = 256;
pub const SLOT_OFFSETS: [u64; 2] = [0, 2048];
/// Payloads start here: a multiple of every common page size (4, 16, 64 KiB),
/// so the payload region can be mapped on any of them.
pub const DATA_START: u64 = 64 << 10;
pub const PAYLOAD_ALIGN: u64 = 64;
pub const BUILD_ID_MAX: usize = 64;

/// What a file must match to be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compat {
    pub abi_generation: u32,
    /// XNNPACK's build identifier (`xnn_experimental_get_build_identifier_data`).
    pub build_id: Vec<u8>,
    /// Digest of the CPU features that select XNNPACK's kernels.
    pub cpu_id: u128,
}

/// One header slot, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub generation: u64,
    pub compat: Compat,
    pub index_offset: u64,
    pub index_size: u64,
    pub index_checksum: u64,
    pub data_end: u64,
}

/// Why a file (or a slot) is not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too short, wrong magic, bad checksum, impossible offsets: not a valid file.
    Corrupt(String),
    /// A valid file made for something else.
    Incompatible(String),
    /// A file others could have written: its bytes are not looked at.
    Untrusted(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Corrupt(m) | Refusal::Incompatible(m) | Refusal::Untrusted(m) => m,
        }
    }
}

fn corrupt<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Corrupt(m.into()))
}

/// A little cursor for fixed-layout records.
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at gave N bytes")
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
    fn u128(&mut self) -> u128 {
        u128::from_ne_bytes(self.take())
    }
}

impl<'a> Reader<'a> {
    /// The next `n` bytes; the caller checked that there are as many.
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut w = Writer(Vec::with_capacity(HEADER_SIZE));
        w.0.extend_from_slice(&MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(BYTE_ORDER_MARK);
        w.u32(usize::BITS);
        w.u32(self.compat.abi_generation);
        w.u64(self.generation);
        w.u128(self.compat.cpu_id);
        let id = &self.compat.build_id[..self.compat.build_id.len().min(BUILD_ID_MAX)];
        w.u32(id.len() as u32);
        let mut id_field = [0u8; BUILD_ID_MAX];
        id_field[..id.len()].copy_from_slice(id);
        w.0.extend_from_slice(&id_field);
        w.u64(self.index_offset);
        w.u64(self.index_size);
        w.u64(self.index_checksum);
        w.u64(self.data_end);
        w.0.resize(HEADER_SIZE - 8, 0);
        let sum = checksum(&w.0);
        w.u64(sum);
        w.0.try_into().expect("the header is HEADER_SIZE bytes")
    }

    /// Decodes and checks one slot: checksum first, then every field.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<Header, Refusal> {
        if bytes.len() < HEADER_SIZE {
            return corrupt("the file is shorter than its header");
        }
        let bytes = &bytes[..HEADER_SIZE];
        let (body, sum) = bytes.split_at(HEADER_SIZE - 8);
        if body[..8] != MAGIC {
            return corrupt("not an xnncache file (bad magic)");
        }
        if checksum(body) != u64::from_ne_bytes(sum.try_into().expect("8 bytes")) {
            return corrupt("header checksum mismatch");
        }
        let mut r = Reader(&body[8..]);
        let version = r.u32();
        let bom = r.u32();
        let bits = r.u32();
        if bom != BYTE_ORDER_MARK {
            return Err(Refusal::Incompatible("written with another byte order".into()));
        }
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(Refusal::Incompatible(format!("format version {version}, this library reads 1 to {FORMAT_VERSION}")));
        }
        if bits != usize::BITS {
            return Err(Refusal::Incompatible(format!("written by a {bits}-bit process")));
        }
        let abi_generation = r.u32();
        let generation = r.u64();
        let cpu_id = r.u128();
        let id_len = r.u32() as usize;
        let id_field: [u8; BUILD_ID_MAX] = r.take();
        if id_len > BUILD_ID_MAX {
            return corrupt("build identifier length out of range");
        }
        // Bytes no version of the format gives a meaning yet are zero: a
        // writer that sets them is not one this library understands.
        if id_field[id_len..].iter().any(|&b| b != 0) {
            return corrupt("nonzero bytes after the build identifier");
        }
        let h = Header {
            generation,
            compat: Compat { abi_generation, build_id: id_field[..id_len].to_vec(), cpu_id },
            index_offset: r.u64(),
            index_size: r.u64(),
            index_checksum: r.u64(),
            data_end: r.u64(),
        };
        if r.0.iter().any(|&b| b != 0) {
            return corrupt("nonzero reserved header bytes");
        }
        let index_end = h.index_offset.checked_add(h.index_size);
        if h.index_offset < DATA_START || index_end.is_none_or(|e| e > h.data_end) || h.data_end > file_len {
            return corrupt(format!(
                "index [{}, +{}) or data end {} outside the file ({} bytes)",
                h.index_offset, h.index_size, h.data_end, file_len
            ));
        }
        Ok(h)
    }

    /// Why this header's file cannot serve `want`, if it cannot.
    pub fn check_compat(&self, want: &Compat) -> Result<(), Refusal> {
        let have = &self.compat;
        if have.abi_generation != want.abi_generation {
            return Err(Refusal::Incompatible(format!(
                "built for provider ABI v{}, this process uses v{}",
                have.abi_generation, want.abi_generation
            )));
        }
        if have.build_id != want.build_id {
            return Err(Refusal::Incompatible("built by another XNNPACK build (build identifier differs)".into()));
        }
        if have.cpu_id != want.cpu_id {
            return Err(Refusal::Incompatible("built on another kind of CPU (CPU identity differs)".into()));
        }
        Ok(())
    }
}

/// What every format version keeps where it is in a header slot, so that
/// any version can tell which slot is the newest before decoding it (a rule
/// for every future version: docs/FORMAT.md, "One format per file"): the
/// magic at 0, the version at 8, the generation at 24, and the xxh3 of
/// everything before them in the slot's last 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotStamp {
    pub version: u32,
    pub generation: u64,
}

/// A slot's stamp, if its magic and checksum hold (of any format version);
/// `None` for a slot never written or torn.
pub fn slot_stamp(bytes: &[u8]) -> Option<SlotStamp> {
    let bytes = bytes.get(..HEADER_SIZE)?;
    let (body, sum) = bytes.split_at(HEADER_SIZE - 8);
    let valid = body[..8] == MAGIC && checksum(body) == u64::from_ne_bytes(sum.try_into().expect("8 bytes"));
    valid.then(|| {
        let mut r = Reader(&body[8..]);
        let version = r.u32();
        let _ = r.take::<12>(); // byte order, pointer width, ABI
        SlotStamp { version, generation: r.u64() }
    })
}

/// The newest valid slot of two, or why neither is usable.
pub fn pick_header(slots: [&[u8]; 2], file_len: u64) -> Result<(usize, Header), Refusal> {
    let decoded = [Header::decode(slots[0], file_len), Header::decode(slots[1], file_len)];
    let best = decoded
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.as_ref().ok().map(|h| (i, h.clone())))
        .max_by_key(|(_, h)| h.generation);
    match best {
        Some(b) => Ok(b),
        None => Err(decoded.into_iter().find_map(Result::err).expect("both slots failed")),
    }
}

/// A stored payload: where, how long, and the xxh3 of its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub offset: u64,
    pub size: u64,
    pub checksum: u64,
}

/// A persistent key and the payload (by position) it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef {
    pub key: u128,
    pub payload: u32,
}

/// The names of the registered weights a persistent key was made from (the
/// kernel's, and the bias's when it has one): what a host such as ExecuTorch
/// calls a packed weight. Listed by `xnncache_list_names`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyNames {
    pub weights: String,
    pub bias: Option<String>,
}

impl KeyNames {
    /// Names the index can hold: non-empty, no NUL (they go out as C
    /// strings), at most `NAME_MAX` bytes each.
    pub fn new(weights: &str, bias: Option<&str>) -> Option<KeyNames> {
        let fits = |n: &str| !n.is_empty() && n.len() <= NAME_MAX && !n.contains('\0');
        (fits(weights) && bias.is_none_or(fits)).then(|| KeyNames { weights: weights.to_string(), bias: bias.map(str::to_string) })
    }

    fn record_len(&self) -> usize {
        NAME_RECORD + self.weights.len() + self.bias.as_ref().map_or(0, String::len)
    }
}

/// A program: the packed weights that the runtime creations ended by one
/// finalize used (found, folded into or inserted), as the retention policy
/// sees them (`cache::programs`). Written since format version 3.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// xxh3-128 of the label the host gave (`xnncache_set_program`), 0: none.
    pub label: u128,
    /// xxh3-128 of the sorted multiset of (look-up seed, packed size) of its
    /// keys: what an update of the program packs again under new names.
    pub shape: u128,
    /// When a commit last wrote the program: a counter that grows by one at
    /// each commit of the file that records programs (kept by rewrites).
    pub sequence: u64,
    /// Its payloads, by position in the index, ascending.
    pub payloads: Vec<u32>,
}

impl Program {
    fn record_len(&self) -> usize {
        PROGRAM_RECORD + 4 * self.payloads.len()
    }
}

/// The index of one commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    pub payloads: Vec<Payload>,
    pub keys: Vec<KeyRef>,
    /// Names of some of `keys` (those made from named weights), by key.
    pub names: Vec<(u128, KeyNames)>,
    /// The programs its payloads belong to (a payload may belong to several,
    /// or, in a file written before version 3, to none).
    pub programs: Vec<Program>,
}

const PAYLOAD_RECORD: usize = 24;
const KEY_RECORD: usize = 24;
const INDEX_HEADER: usize = 8 + 8 + 8;
/// A name record's fixed part: key, length of each name.
const NAME_RECORD: usize = 16 + 4 + 4;
/// A program record's fixed part: label, shape, sequence, payload count, zero.
const PROGRAM_RECORD: usize = 16 + 16 + 8 + 4 + 4;

/// Where a compaction puts payloads of these sizes, one after the other
/// from `DATA_START`, each aligned: their offsets, and where the index goes.
pub fn compacted_layout(sizes: impl IntoIterator<Item = u64>) -> (Vec<u64>, u64) {
    let mut offset = DATA_START;
    let offsets = sizes
        .into_iter()
        .map(|size| {
            let at = offset;
            offset = (offset + size).div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN;
            at
        })
        .collect();
    (offsets, offset)
}

/// Bytes of an index block naming `payloads` payloads and `keys` keys, with
/// `names` and `programs`: the one place the index's size is computed (the
/// cache, the CLI).
pub fn index_len<'a>(payloads: usize, keys: usize, names: impl IntoIterator<Item = &'a KeyNames>, programs: impl IntoIterator<Item = &'a Program>) -> usize {
    INDEX_HEADER
        + payloads * PAYLOAD_RECORD
        + keys * KEY_RECORD
        + 8
        + names.into_iter().map(KeyNames::record_len).sum::<usize>()
        + 8
        + programs.into_iter().map(Program::record_len).sum::<usize>()
}

impl Index {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(self.encoded_len()));
        w.0.extend_from_slice(&INDEX_MAGIC);
        w.u64(self.payloads.len() as u64);
        w.u64(self.keys.len() as u64);
        for p in &self.payloads {
            w.u64(p.offset);
            w.u64(p.size);
            w.u64(p.checksum);
        }
        for k in &self.keys {
            w.u128(k.key);
            w.u32(k.payload);
            w.u32(0);
        }
        w.u64(self.names.len() as u64);
        for (key, names) in &self.names {
            let bias = names.bias.as_deref().unwrap_or("");
            w.u128(*key);
            w.u32(names.weights.len() as u32);
            w.u32(bias.len() as u32);
            w.0.extend_from_slice(names.weights.as_bytes());
            w.0.extend_from_slice(bias.as_bytes());
        }
        w.u64(self.programs.len() as u64);
        for p in &self.programs {
            w.u128(p.label);
            w.u128(p.shape);
            w.u64(p.sequence);
            w.u32(p.payloads.len() as u32);
            w.u32(0);
            for &i in &p.payloads {
                w.u32(i);
            }
        }
        w.0
    }

    pub fn encoded_len(&self) -> usize {
        index_len(self.payloads.len(), self.keys.len(), self.names.iter().map(|(_, n)| n), &self.programs)
    }

    /// Decodes an index block and checks it against its header: checksum,
    /// counts, every payload inside `[DATA_START, index_offset)`, aligned,
    /// non-empty and not overlapping another, every key naming a payload.
    pub fn decode(bytes: &[u8], header: &Header) -> Result<Index, Refusal> {
        if bytes.len() as u64 != header.index_size || checksum(bytes) != header.index_checksum {
            return corrupt("index checksum mismatch");
        }
        // Version 1: no names; 2: names; 3: names, then programs.
        let (named, with_programs) = match bytes.get(..8) {
            Some(m) if m == INDEX_MAGIC => (true, true),
            Some(m) if m == INDEX_MAGIC_V2 => (true, false),
            Some(m) if m == INDEX_MAGIC_V1 => (false, false),
            _ => return corrupt("bad index magic"),
        };
        if bytes.len() < INDEX_HEADER {
            return corrupt("bad index magic");
        }
        let mut r = Reader(&bytes[8..]);
        let (np, nk) = (r.u64(), r.u64());
        let records = np
            .checked_mul(PAYLOAD_RECORD as u64)
            .and_then(|a| nk.checked_mul(KEY_RECORD as u64).and_then(|b| a.checked_add(b)))
            .and_then(|n| n.checked_add(INDEX_HEADER as u64));
        // Version 1 ends with the keys; version 2 has at least a name count after them.
        let fits = match (records, named) {
            (Some(n), false) => n == bytes.len() as u64,
            (Some(n), true) => n.checked_add(8).is_some_and(|n| n <= bytes.len() as u64),
            (None, _) => false,
        };
        if !fits || np > u32::MAX as u64 {
            return corrupt("index counts do not match its size");
        }
        let mut payloads = Vec::with_capacity(np as usize);
        for _ in 0..np {
            let p = Payload { offset: r.u64(), size: r.u64(), checksum: r.u64() };
            let end = p.offset.checked_add(p.size);
            if p.size == 0 || p.offset < DATA_START || !p.offset.is_multiple_of(PAYLOAD_ALIGN) || end.is_none_or(|e| e > header.index_offset) {
                return corrupt(format!("payload [{}, +{}) out of bounds", p.offset, p.size));
            }
            payloads.push(p);
        }
        let mut by_offset: Vec<&Payload> = payloads.iter().collect();
        by_offset.sort_by_key(|p| p.offset);
        if by_offset.windows(2).any(|w| w[0].offset + w[0].size > w[1].offset) {
            return corrupt("payloads overlap");
        }
        let mut keys = Vec::with_capacity(nk as usize);
        for _ in 0..nk {
            let k = KeyRef { key: r.u128(), payload: r.u32() };
            if r.u32() != 0 {
                return corrupt("nonzero reserved field in a key record");
            }
            if k.payload as u64 >= np {
                return corrupt("a key names a payload that does not exist");
            }
            keys.push(k);
        }
        let names = if named { decode_names(&mut r, &keys)? } else { Vec::new() };
        let programs = if with_programs { decode_programs(&mut r, np)? } else { Vec::new() };
        if !r.0.is_empty() {
            return corrupt("bytes after the index's last record");
        }
        Ok(Index { payloads, keys, names, programs })
    }
}

/// The program records that end a version-3 index: each names existing
/// payloads, in ascending order, each once; reserved fields are zero.
fn decode_programs(r: &mut Reader<'_>, payloads: u64) -> Result<Vec<Program>, Refusal> {
    if r.0.len() < 8 {
        return corrupt("no program count after the names");
    }
    let count = r.u64();
    // Each record takes at least PROGRAM_RECORD bytes: a count past that is a lie.
    if count > (r.0.len() / PROGRAM_RECORD) as u64 {
        return corrupt("more program records than the index holds");
    }
    let mut programs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if r.0.len() < PROGRAM_RECORD {
            return corrupt("a program record runs past the index");
        }
        let (label, shape, sequence, n) = (r.u128(), r.u128(), r.u64(), r.u32() as usize);
        if r.u32() != 0 {
            return corrupt("nonzero reserved field in a program record");
        }
        if n.checked_mul(4).is_none_or(|b| b > r.0.len()) {
            return corrupt("a program's payload list runs past the index");
        }
        let list: Vec<u32> = (0..n).map(|_| r.u32()).collect();
        if list.windows(2).any(|w| w[0] >= w[1]) || list.last().is_some_and(|&last| last as u64 >= payloads) {
            return corrupt("a program names a payload that does not exist, twice, or out of order");
        }
        programs.push(Program { label, shape, sequence, payloads: list });
    }
    Ok(programs)
}

/// The name records that end a version-2 index: each for a distinct key of
/// the index, names valid as [`KeyNames::new`] requires, filling the rest of
/// the block exactly.
fn decode_names(r: &mut Reader<'_>, keys: &[KeyRef]) -> Result<Vec<(u128, KeyNames)>, Refusal> {
    let count = r.u64();
    if count > keys.len() as u64 {
        return corrupt("more names than keys");
    }
    let known: HashSet<u128> = keys.iter().map(|k| k.key).collect();
    let mut seen = HashSet::with_capacity(count as usize);
    let mut names = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if r.0.len() < NAME_RECORD {
            return corrupt("a name record runs past the index");
        }
        let (key, weights_len, bias_len) = (r.u128(), r.u32() as usize, r.u32() as usize);
        if weights_len.checked_add(bias_len).is_none_or(|n| n > r.0.len()) {
            return corrupt("a name runs past the index");
        }
        let weights = std::str::from_utf8(r.bytes(weights_len)).ok();
        let bias = std::str::from_utf8(r.bytes(bias_len)).ok();
        let (Some(weights), Some(bias)) = (weights, bias) else { return corrupt("a name is not UTF-8") };
        let Some(entry) = KeyNames::new(weights, (!bias.is_empty()).then_some(bias)) else {
            return corrupt("an empty, overlong or NUL-holding name");
        };
        if !known.contains(&key) {
            return corrupt("a name for a key the index lacks");
        }
        if !seen.insert(key) {
            // Builds up to 54a24d4 wrote a key that links two packings once
            // per link, with the same names: read as one record.
            if names.iter().any(|(k, n)| *k == key && *n == entry) {
                continue;
            }
            return corrupt("a key named twice, differently");
        }
        names.push((key, entry));
    }
    Ok(names)
}

/// The checksum of the file's header slots, index and payloads: XXH3-64.
/// Computed as XXH3-64 with seed 0, which the XXH3 specification defines to
/// be the same function, so that an app carries the code of one of the two
/// (the content sample of `index::sample_of` is seeded).
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, 0)
}

/// The stable identity of registered bytes: a name, or the bytes themselves.
/// A name's identity includes the buffer's size, so that a changed tensor
/// under an old name is not taken for the old one when its size differs.
pub fn identity_of_name(name: &str, size: u64) -> u128 {
    let mut buf = Vec::with_capacity(name.len() + 13);
    buf.extend_from_slice(b"name:");
    buf.extend_from_slice(&size.to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    xxh3_128(&buf)
}

pub fn identity_of_bytes(bytes: &[u8]) -> u128 {
    // Content and names live in separate spaces: a name cannot equal a digest.
    xxh3_128(bytes) ^ 0x5bd1_e995_0000_0000_0000_0000_0000_0001
}

/// The persistent key of a look-up: every part that selects a packing.
pub fn persistent_key(seed: u32, kernel: (u128, u64), bias: Option<(u128, u64)>, fingerprint: Option<u32>) -> u128 {
    let mut w = Writer(Vec::with_capacity(64));
    w.u32(seed);
    w.u128(kernel.0);
    w.u64(kernel.1);
    match bias {
        Some((id, off)) => {
            w.u32(1);
            w.u128(id);
            w.u64(off);
        }
        None => w.u32(0),
    }
    match fingerprint {
        Some(f) => {
            w.u32(1);
            w.u32(f);
        }
        None => w.u32(0),
    }
    xxh3_128(&w.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compat() -> Compat {
        Compat { abi_generation: 1, build_id: vec![7; 32], cpu_id: 42 }
    }

    /// Files written with `xxh3_64` stay readable: the checksum is the same
    /// function, at every length XXH3 treats differently.
    #[test]
    fn the_checksum_is_xxh3_64() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in (0..=260).chain([1023, 1024, 1025, 4096, 100_000, 300_000]) {
            assert_eq!(checksum(&bytes[..len]), xxhash_rust::xxh3::xxh3_64(&bytes[..len]), "length {len}");
        }
    }

    fn header(generation: u64) -> Header {
        Header { generation, compat: compat(), index_offset: DATA_START + 4096, index_size: 64, index_checksum: 9, data_end: DATA_START + 8192 }
    }

    #[test]
    fn headers_round_trip_and_the_newest_valid_slot_wins() {
        let len = DATA_START + 8192;
        let (a, b) = (header(3).encode(), header(4).encode());
        assert_eq!(Header::decode(&a, len).unwrap(), header(3));
        assert_eq!(pick_header([&a, &b], len).unwrap().0, 1);
        let mut torn = b;
        torn[100] ^= 1;
        assert_eq!(pick_header([&a, &torn], len).unwrap(), (0, header(3)));
        assert!(matches!(pick_header([&torn, &torn], len), Err(Refusal::Corrupt(_))));
    }

    #[test]
    fn every_flipped_header_byte_is_refused() {
        let h = header(1).encode();
        for i in 0..HEADER_SIZE {
            let mut bad = h;
            bad[i] ^= 0x40;
            assert!(Header::decode(&bad, DATA_START + 8192).is_err(), "byte {i}");
        }
        assert!(Header::decode(&h[..100], u64::MAX).is_err());
        assert!(Header::decode(&h, DATA_START).is_err(), "data end past the file");
    }

    /// Reserved bytes set by a writer (with a checksum that agrees) are refused.
    #[test]
    fn reserved_header_bytes_must_be_zero() {
        let resum = |mut b: [u8; HEADER_SIZE]| {
            let sum = checksum(&b[..HEADER_SIZE - 8]);
            b[HEADER_SIZE - 8..].copy_from_slice(&sum.to_ne_bytes());
            b
        };
        let h = header(1).encode();
        assert_eq!(Header::decode(&resum(h), DATA_START + 8192).unwrap(), header(1));
        // The reserved tail, and the build identifier field past its length.
        let id_pad = 8 + 4 * 4 + 8 + 16 + 4 + 32;
        for i in [id_pad, HEADER_SIZE - 9, HEADER_SIZE - 60] {
            let mut bad = h;
            bad[i] = 1;
            assert!(matches!(Header::decode(&resum(bad), DATA_START + 8192), Err(Refusal::Corrupt(_))), "byte {i}");
        }
    }

    #[test]
    fn compatibility_is_checked_field_by_field() {
        let h = header(1);
        assert!(h.check_compat(&compat()).is_ok());
        for other in [
            Compat { abi_generation: 3, ..compat() },
            Compat { build_id: vec![8; 32], ..compat() },
            Compat { cpu_id: 43, ..compat() },
        ] {
            assert!(matches!(h.check_compat(&other), Err(Refusal::Incompatible(_))));
        }
    }

    fn index() -> Index {
        Index {
            payloads: vec![Payload { offset: DATA_START, size: 1000, checksum: 1 }, Payload { offset: DATA_START + 1024, size: 64, checksum: 2 }],
            keys: vec![KeyRef { key: 5, payload: 0 }, KeyRef { key: 6, payload: 1 }, KeyRef { key: 7, payload: 1 }],
            names: vec![(6, KeyNames::new("fc1.weight", Some("fc1.bias")).unwrap()), (5, KeyNames::new("fc0.weight", None).unwrap())],
            programs: vec![Program { label: 0, shape: 11, sequence: 1, payloads: vec![0, 1] }, Program { label: 3, shape: 12, sequence: 2, payloads: vec![1] }],
        }
    }

    /// `index`'s version-2 encoding: no program section, the version-2 magic.
    fn v2(index: &Index) -> Vec<u8> {
        let mut b = Index { programs: vec![], ..index.clone() }.encode();
        b.truncate(b.len() - 8);
        b[..8].copy_from_slice(&INDEX_MAGIC_V2);
        b
    }

    fn header_for(bytes: &[u8]) -> Header {
        Header { index_offset: DATA_START + 4096, index_size: bytes.len() as u64, index_checksum: checksum(bytes), ..header(1) }
    }

    #[test]
    fn indexes_round_trip_and_are_checked() {
        let bytes = index().encode();
        assert_eq!(bytes.len(), index().encoded_len());
        assert_eq!(Index::decode(&bytes, &header_for(&bytes)).unwrap(), index());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Index::decode(&bad, &header_for(&bytes)).is_err(), "byte {i}");
        }
        // Checksummed but wrong: overlapping, misaligned, out of bounds, dangling.
        let mut overlap = index();
        overlap.payloads[1].offset = DATA_START + 960;
        let mut misaligned = index();
        misaligned.payloads[1].offset += 8;
        let mut outside = index();
        outside.payloads[1].offset = DATA_START + 4096;
        let mut dangling = index();
        dangling.keys[0].payload = 2;
        for bad in [overlap, misaligned, outside, dangling] {
            let b = bad.encode();
            assert!(matches!(Index::decode(&b, &header_for(&b)), Err(Refusal::Corrupt(_))), "{bad:?}");
        }
        // A key record's reserved half-word.
        let mut padded = index().encode();
        let last_key_byte = 24 + 2 * 24 + 3 * 24 - 1;
        padded[last_key_byte] = 1;
        assert!(matches!(Index::decode(&padded, &header_for(&padded)), Err(Refusal::Corrupt(_))));
    }

    /// Names are checked like every other field: a name for a key the index
    /// lacks, named twice differently, empty, with a NUL, not UTF-8, or running past (or
    /// short of) the block's end is refused; version 1's index (no names) is read.
    #[test]
    fn names_are_checked_and_version_1_is_read() {
        let named = |names: Vec<(u128, KeyNames)>| Index { names, ..index() };
        let raw = |weights: &str, bias: Option<&str>| KeyNames { weights: weights.into(), bias: bias.map(Into::into) };
        let long = "n".repeat(NAME_MAX + 1);
        for bad in [
            named(vec![(8, raw("w", None))]),
            named(vec![(5, raw("w", None)), (5, raw("v", None))]),
            named(vec![(5, raw("", None))]),
            named(vec![(5, raw("w\0x", None))]),
            named(vec![(5, raw("w", Some("b\0")))]),
            named(vec![(5, raw(&long, None))]),
        ] {
            let b = v2(&bad);
            assert!(matches!(Index::decode(&b, &header_for(&b)), Err(Refusal::Corrupt(_))), "{:?}", bad.names);
        }
        // The same record twice (a key linking two packings, as builds
        // up to 54a24d4 wrote it) is read as one.
        let twice = v2(&named(vec![(5, raw("w", None)), (5, raw("w", None))]));
        assert_eq!(Index::decode(&twice, &header_for(&twice)).unwrap().names, vec![(5, raw("w", None))]);
        let good = v2(&index());
        assert_eq!(Index::decode(&good, &header_for(&good)).unwrap(), Index { programs: vec![], ..index() }, "version 2 is read");
        let mut not_utf8 = good.clone();
        let at = not_utf8.len() - 1;
        not_utf8[at] = 0xFF;
        let mut trailing = good.clone();
        trailing.push(0);
        let short = good[..good.len() - 1].to_vec();
        for b in [not_utf8, trailing, short] {
            assert!(matches!(Index::decode(&b, &header_for(&b)), Err(Refusal::Corrupt(_))));
        }
        // Version 1: the same records without the name section, and its magic.
        let mut v1 = index().encode()[..24 + 2 * 24 + 3 * 24].to_vec();
        v1[..8].copy_from_slice(&INDEX_MAGIC_V1);
        assert_eq!(Index::decode(&v1, &header_for(&v1)).unwrap(), Index { names: vec![], programs: vec![], ..index() });
        v1.extend_from_slice(&0u64.to_ne_bytes());
        assert!(Index::decode(&v1, &header_for(&v1)).is_err(), "a version-1 index with a name count");
        assert!(KeyNames::new("w", Some("")).is_none() && KeyNames::new(&long, None).is_none());
    }

    /// Program records are checked like names: each payload it names must
    /// exist, ascending and once; reserved bytes are zero; the count cannot
    /// promise more records than the block holds.
    #[test]
    fn program_records_are_checked() {
        let with = |programs: Vec<Program>| Index { programs, ..index() };
        let p = |payloads: Vec<u32>| Program { label: 0, shape: 1, sequence: 1, payloads };
        for bad in [with(vec![p(vec![2])]), with(vec![p(vec![1, 0])]), with(vec![p(vec![1, 1])])] {
            let b = bad.encode();
            assert!(matches!(Index::decode(&b, &header_for(&b)), Err(Refusal::Corrupt(_))), "{:?}", bad.programs);
        }
        let empty = with(vec![p(vec![])]).encode();
        assert_eq!(Index::decode(&empty, &header_for(&empty)).unwrap().programs, vec![p(vec![])]);
        let good = index().encode();
        // The first record's reserved word (after label, shape, sequence, count).
        let first = good.len() - (PROGRAM_RECORD + 8) - (PROGRAM_RECORD + 4) ;
        let mut reserved = good.clone();
        reserved[first + 16 + 16 + 8 + 4] = 1;
        let mut lying = good.clone();
        let count_at = first - 8;
        lying[count_at..count_at + 8].copy_from_slice(&1000u64.to_ne_bytes());
        for b in [reserved, lying, good[..good.len() - 4].to_vec()] {
            assert!(matches!(Index::decode(&b, &header_for(&b)), Err(Refusal::Corrupt(_))));
        }
    }

    #[test]
    fn keys_separate_every_part() {
        let base = persistent_key(1, (2, 0), None, None);
        assert_ne!(base, persistent_key(2, (2, 0), None, None));
        assert_ne!(base, persistent_key(1, (3, 0), None, None));
        assert_ne!(base, persistent_key(1, (2, 64), None, None));
        assert_ne!(base, persistent_key(1, (2, 0), Some((0, 0)), None));
        assert_ne!(base, persistent_key(1, (2, 0), None, Some(0)));
        assert_ne!(identity_of_name("a", 1), identity_of_bytes(b"a"));
        assert_ne!(identity_of_name("a", 1), identity_of_name("a", 2));
    }
}
