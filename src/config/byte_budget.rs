//! `--max-bytes-per-trigger`: the input bytes (keys and values) one batch may
//! read, so a producer of large messages cannot make a batch outgrow memory.
//! `auto` derives it from the memory the process may use (its cgroup's
//! limit, else the machine's): a sixteenth, between 16 MiB and 256 MiB. A
//! batch holds its input about three times over (raw, decoded, joined) and
//! the next batch's input is read ahead, so a sixteenth keeps both well
//! inside the limit.

use std::fmt;

use crate::error::{Error, Result};

const MIB: u64 = 1 << 20;
/// `auto`'s bounds.
const AUTO_MIN: u64 = 16 * MIB;
const AUTO_MAX: u64 = 256 * MIB;
/// The smallest budget accepted: one message of the largest size Kafka
/// allows by default.
const MIN: u64 = MIB;

/// The byte budget of a batch, and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBudget {
    /// `None`: unlimited.
    pub bytes: Option<u64>,
    /// Derived from memory (`auto`), for the start line.
    pub auto: bool,
}

impl ByteBudget {
    /// Parses `auto`, `unlimited` or a size (`64MiB`, `1GiB`, `500MB`, bytes).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim() {
            "auto" => Ok(ByteBudget { bytes: Some(auto_bytes(memory_limit())), auto: true }),
            "unlimited" => Ok(ByteBudget { bytes: None, auto: false }),
            v => match parse_size(v) {
                Some(n) if n >= MIN => Ok(ByteBudget { bytes: Some(n), auto: false }),
                Some(n) => {
                    Err(Error::config("--max-bytes-per-trigger", format!("{n} bytes is less than the 1MiB minimum")))
                }
                None => Err(Error::config(
                    "--max-bytes-per-trigger",
                    format!("'{v}' is not a size (e.g. 64MiB, 1GiB, 500MB), 'auto' or 'unlimited'"),
                )),
            },
        }
    }
}

impl fmt::Display for ByteBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.bytes, self.auto) {
            (None, _) => f.write_str("unlimited"),
            (Some(n), true) => write!(f, "auto ({})", size(n)),
            (Some(n), false) => f.write_str(&size(n)),
        }
    }
}

/// `n` bytes as people write it: whole MiB (or GiB) where exact.
pub fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= MIB && n % MIB == 0 => format!("{}MiB", n >> 20),
        n => format!("{n}B"),
    }
}

/// A sixteenth of `memory`, within `AUTO_MIN..=AUTO_MAX`.
fn auto_bytes(memory: Option<u64>) -> u64 {
    memory.map_or(AUTO_MAX, |m| m / 16).clamp(AUTO_MIN, AUTO_MAX)
}

/// The memory this process may use: its cgroup's limit (v2, then v1), else
/// the machine's total.
fn memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&n| n < 1 << 60);
    cgroup.or_else(|| {
        let meminfo = read("/proc/meminfo")?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// `64MiB`, `1GiB`, `500MB`, `2kB`, `1048576`: a number and an optional unit.
fn parse_size(value: &str) -> Option<u64> {
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(ByteBudget::parse("64MiB").unwrap().bytes, Some(64 << 20));
        assert_eq!(ByteBudget::parse("1GiB").unwrap().bytes, Some(1 << 30));
        assert_eq!(ByteBudget::parse("500MB").unwrap().bytes, Some(500_000_000));
        assert_eq!(ByteBudget::parse("2000000").unwrap().bytes, Some(2_000_000));
        assert_eq!(ByteBudget::parse("unlimited").unwrap().bytes, None);
        for bad in ["", "10", "64XB", "-1MiB", "1.5GiB"] {
            assert!(ByteBudget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteBudget::parse("64MiB").unwrap().to_string(), "64MiB");
    }

    #[test]
    fn auto_is_a_sixteenth_of_memory_within_bounds() {
        assert_eq!(auto_bytes(Some(1 << 30)), 64 << 20);
        assert_eq!(auto_bytes(Some(24 << 30)), 256 << 20);
        assert_eq!(auto_bytes(Some(128 << 20)), 16 << 20);
        assert_eq!(auto_bytes(None), 256 << 20);
        let auto = ByteBudget::parse("auto").unwrap();
        assert!(auto.auto && auto.bytes.is_some_and(|b| (AUTO_MIN..=AUTO_MAX).contains(&b)));
    }
}
