//! Sizes and durations as people write them in the configuration.
//!
//! Sizes: `"1GiB"`, `"16MiB"`, `"500MB"`, `"1.5GiB"` or a plain integer of
//! bytes. Binary units (KiB, MiB, GiB, TiB) are powers of two, decimal ones
//! (KB, MB, GB, TB) powers of ten.
//!
//! Durations: a number and a unit (`s`, `m`, `h`, `d`, `w`), possibly several
//! in a row: `"30d"`, `"12h"`, `"1d12h"`.

use std::fmt;

/// A number of bytes written as `"16MiB"`, `"500MB"` or `"1048576"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Reads a size as the configuration writes it; the error is the
    /// message to show, naming the units.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let bad = || {
            format!(
                "invalid size {text:?}: write a number and a unit, like \"16MiB\" or \"1GiB\" (units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            )
        };
        if num.is_empty() {
            return Err(bad());
        }
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let value: f64 = num.parse().map_err(|_| bad())?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("size {text:?} is too large"));
        }
        if num.contains('.') && bytes.fract() != 0.0 {
            return Err(format!("size {text:?} is not a whole number of bytes"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

/// `1536` → `"1.5 KiB"`; for messages and progress.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"16MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `"30d"`, `"12h"` or `"1d12h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    /// Reads a duration as the configuration writes it; the error is the
    /// message to show, naming the units.
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        let bad = || {
            format!(
                "invalid duration {text:?}: write a number and a unit, like \"30d\", \"12h\" or \"1d12h\" (units: s, m, h, d, w)"
            )
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            let n: u64 = num.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration {text:?} is too long"))?;
            num.clear();
        }
        if !num.is_empty() {
            return Err(bad());
        }
        Ok(HumanDuration(std::time::Duration::from_secs(total)))
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_written() {
        for (text, secs) in [
            ("30d", 30 * 86_400),
            ("12h", 43_200),
            ("1d12h", 129_600),
            ("90m", 5_400),
            ("2w", 1_209_600),
            ("45s", 45),
        ] {
            assert_eq!(
                HumanDuration::parse(text),
                Ok(HumanDuration(std::time::Duration::from_secs(secs))),
                "{text}"
            );
        }
        for text in ["", "d", "12", "3x", "1.5d", "-1d"] {
            assert!(
                HumanDuration::parse(text).expect_err(text).contains(text),
                "{text}"
            );
        }
    }

    #[test]
    fn sizes_parse_as_written() {
        let cases = [
            ("512", 512),
            ("0", 0),
            ("8MiB", 8 << 20),
            ("16 MiB", 16 << 20),
            ("1GiB", 1 << 30),
            ("1.5GiB", 3 << 29),
            ("500MB", 500_000_000),
            ("20kb", 20_000),
            ("3B", 3),
            ("2TiB", 2 << 40),
        ];
        for (text, want) in cases {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(want)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_the_text() {
        for text in ["", "MiB", "12XB", "-5MiB", "1.2.3GiB", "0.3B", "1e3"] {
            let err = ByteSize::parse(text).expect_err(text);
            assert!(err.contains(text), "{err}");
        }
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
