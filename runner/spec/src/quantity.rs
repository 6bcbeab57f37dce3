//! Kubernetes-style quantities (`512Mi`, `500m`, `2`) and durations (`10m`, `1h30m`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written as a Kubernetes quantity: a plain integer or one with a
/// binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// CPU in millicores, written as a Kubernetes quantity: `500m`, `1`, `1.5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millicores(pub u64);

/// A duration in milliseconds, written as a sequence of `<integer><unit>` with units
/// `ms`, `s`, `m`, `h`: `30s`, `10m`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationMs(pub u64);

impl ByteSize {
    /// Size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl Millicores {
    /// CPU in thousandths of a core.
    pub fn millis(self) -> u64 {
        self.0
    }
}

impl DurationMs {
    /// Builds a duration from whole seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }
    /// Milliseconds.
    pub fn millis(self) -> u64 {
        self.0
    }
    /// As a std duration.
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

/// Why a quantity or duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(String);

fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    s.split_at(end)
}

/// Parses `digits[.digits]` scaled by `scale` (a power of ten multiple allowed for
/// fractions), refusing overflow and fractions finer than one unit.
fn scaled(number: &str, scale: u64, what: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError(format!("invalid {what} {number:?}"));
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    if !int_part.chars().all(|c| c.is_ascii_digit()) || !frac_part.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let overflow = || QuantityError(format!("{what} {number:?} is too large"));
    let whole: u64 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| overflow())? };
    let mut total = whole.checked_mul(scale).ok_or_else(overflow)?;
    // The fraction times the scale must come out whole: exact division, so that
    // binary scales work too (`1.5Gi`) and nothing is silently rounded.
    let fraction = frac_part.trim_end_matches('0');
    if !fraction.is_empty() {
        let finer = || QuantityError(format!("{what} {number:?} is finer than the smallest unit"));
        let denominator =
            u32::try_from(fraction.len()).ok().and_then(|digits| 10u128.checked_pow(digits)).ok_or_else(finer)?;
        let numerator =
            fraction.parse::<u128>().ok().and_then(|f| f.checked_mul(u128::from(scale))).ok_or_else(finer)?;
        if numerator % denominator != 0 {
            return Err(finer());
        }
        let part = u64::try_from(numerator / denominator).map_err(|_| overflow())?;
        total = total.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(total)
}

impl FromStr for ByteSize {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, suffix) = split_number(s);
        let scale: u64 = match suffix {
            "" => 1,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            other => {
                return Err(QuantityError(format!(
                    "unknown size suffix {other:?} in {s:?} (use Ki, Mi, Gi, Ti, k, M, G or T)"
                )));
            }
        };
        scaled(number, scale, "size").map(ByteSize)
    }
}

impl FromStr for Millicores {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, suffix) = split_number(s);
        match suffix {
            "" => scaled(number, 1000, "cpu").map(Millicores),
            "m" if !number.contains('.') => scaled(number, 1, "cpu").map(Millicores),
            _ => Err(QuantityError(format!(
                "invalid cpu quantity {s:?} (use cores like \"1\" or \"0.5\", or millicores like \"500m\")"
            ))),
        }
    }
}

impl FromStr for DurationMs {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let invalid = || {
            QuantityError(format!("invalid duration {s:?} (use units ms, s, m, h, e.g. \"30s\", \"10m\", \"1h30m\")"))
        };
        if s.is_empty() {
            return Err(invalid());
        }
        let mut rest = s;
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(invalid());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let factor: u64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(invalid()),
            };
            rest = &rest[unit_len..];
            let part =
                value.checked_mul(factor).ok_or_else(|| QuantityError(format!("duration {s:?} is too large")))?;
            total = total.checked_add(part).ok_or_else(|| QuantityError(format!("duration {s:?} is too large")))?;
        }
        Ok(DurationMs(total))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}")
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) { write!(f, "{}", self.0 / 1000) } else { write!(f, "{}m", self.0) }
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut secs = ms / 1000;
        let h = secs / 3600;
        secs %= 3600;
        let m = secs / 60;
        secs %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if secs > 0 {
            write!(f, "{secs}s")?;
        }
        Ok(())
    }
}

/// Accepts a YAML string or integer and parses it with `FromStr`.
fn from_scalar<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = QuantityError>,
{
    struct Scalar;
    impl serde::de::Visitor<'_> for Scalar {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a quantity string or integer")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    let text = deserializer.deserialize_any(Scalar)?;
    text.parse().map_err(serde::de::Error::custom)
}

macro_rules! string_quantity {
    ($ty:ty, $name:literal, $pattern:literal, integers: $integers:literal, $description:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                from_scalar(deserializer)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                if $integers {
                    json_schema!({
                        "description": $description,
                        "oneOf": [
                            { "type": "string", "pattern": $pattern },
                            { "type": "integer", "minimum": 0 }
                        ]
                    })
                } else {
                    json_schema!({ "description": $description, "type": "string", "pattern": $pattern })
                }
            }
        }
    };
}

string_quantity!(
    ByteSize,
    "ByteSize",
    "^([0-9]+|[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T))$",
    integers: true,
    "A size in bytes as a Kubernetes quantity, e.g. `512Mi`, `1Gi`, `100M`, or a plain byte count."
);
string_quantity!(
    Millicores,
    "Millicores",
    "^([0-9]+m|[0-9]+(\\.[0-9]{1,3})?)$",
    integers: true,
    "CPU as a Kubernetes quantity: cores (`1`, `0.5`) or millicores (`500m`)."
);
string_quantity!(
    DurationMs,
    "Duration",
    "^([0-9]+(ms|s|m|h))+$",
    integers: false,
    "A duration such as `30s`, `10m` or `1h30m` (units ms, s, m, h)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_binary_and_decimal_suffixes() {
        for (input, bytes) in [
            ("512Mi", 512 << 20),
            ("1Gi", 1 << 30),
            ("100M", 100_000_000),
            ("1.5Gi", 3 << 29),
            ("4096", 4096),
            ("2k", 2000),
        ] {
            assert_eq!(input.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{input}");
        }
        for bad in ["", "Mi", "12XB", "-1", "1.5", "99999999999999999999Ti", "1..2Mi"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn cpu_parses_cores_and_millicores() {
        assert_eq!("500m".parse::<Millicores>(), Ok(Millicores(500)));
        assert_eq!("2".parse::<Millicores>(), Ok(Millicores(2000)));
        assert_eq!("0.25".parse::<Millicores>(), Ok(Millicores(250)));
        assert!("0.0001".parse::<Millicores>().is_err());
        assert!("1.5m".parse::<Millicores>().is_err());
        assert!("2 cores".parse::<Millicores>().is_err());
    }

    #[test]
    fn durations_parse_and_print_round_trip() {
        for (input, ms, shown) in [
            ("30s", 30_000, "30s"),
            ("10m", 600_000, "10m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("250ms", 250, "250ms"),
            ("90s", 90_000, "1m30s"),
        ] {
            let d: DurationMs = input.parse().expect(input);
            assert_eq!(d, DurationMs(ms));
            assert_eq!(d.to_string(), shown);
        }
        for bad in ["", "10", "m", "10 m", "1d", "-5s", "5s3"] {
            assert!(bad.parse::<DurationMs>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn byte_size_display_picks_the_largest_exact_unit() {
        assert_eq!(ByteSize(512 << 20).to_string(), "512Mi");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }
}
