//! The reliability battery's sizes and figures.
//!
//! Each part runs at a smoke size inside `cargo test`, and at full size when
//! `XNNCACHE_BATTERY=full` (what `scripts/reliability.sh --full` sets). Its
//! figures are printed as one `BATTERY-FIGURES {json}` line on stderr and,
//! when `XNNCACHE_BATTERY_OUT` names a file, appended to it as one JSON line
//! (the script builds its table from those lines).

use std::io::Write;

/// Whether the full-size battery was asked for.
pub fn full() -> bool {
    std::env::var("XNNCACHE_BATTERY").is_ok_and(|v| v == "full")
}

/// `smoke` normally, `full` at full size; `XNNCACHE_BATTERY_<NAME>` overrides both.
pub fn size(name: &str, smoke: u64, full_size: u64) -> u64 {
    if let Some(v) = std::env::var(format!("XNNCACHE_BATTERY_{}", name.to_uppercase())).ok().and_then(|v| v.parse().ok()) {
        return v;
    }
    if full() {
        full_size
    } else {
        smoke
    }
}

/// The seed of a series: `XNNCACHE_BATTERY_SEED`, else a fixed one (so that
/// a smoke run is reproducible; the script passes a fresh seed and prints it).
pub fn seed() -> u64 {
    std::env::var("XNNCACHE_BATTERY_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// One figure: a name and a number or a string.
pub enum Value {
    N(u64),
    S(String),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::N(v)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::N(v as u64)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::S(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::S(v)
    }
}

/// Reports a part's figures (see the module's doc).
pub fn report(part: &str, figures: Vec<(&str, Value)>) {
    let mut json = format!("{{\"part\":\"{part}\",\"size\":\"{}\"", if full() { "full" } else { "smoke" });
    for (k, v) in figures {
        match v {
            Value::N(n) => json.push_str(&format!(",\"{k}\":{n}")),
            Value::S(s) => json.push_str(&format!(",\"{k}\":\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
        }
    }
    json.push('}');
    eprintln!("BATTERY-FIGURES {json}");
    if let Ok(out) = std::env::var("XNNCACHE_BATTERY_OUT") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out).expect("XNNCACHE_BATTERY_OUT");
        writeln!(f, "{json}").expect("write the figures");
    }
}

/// A uniform pick in `0..n`.
pub fn below(rng: &mut crate::Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// True with probability `percent` / 100.
pub fn chance(rng: &mut crate::Rng, percent: u64) -> bool {
    below(rng, 100) < percent
}
