//! Durations as users write them (`warm_linger`, `$CAIRN_WARM_LINGER`,
//! `--warm-linger`): a non-negative number of seconds (`30`, `0.5`) or a
//! number with a unit, `ms`, `s` or `m` (`500ms`, `30s`, `2m`). One pure
//! parser for all three sources, its inverse for `cairn config show`, and
//! the config file's spelling ([`DurationText`]), which TOML may give as a
//! number or as a string.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Why a duration was refused: the syntax, said once for every source.
pub const DURATION_SYNTAX: &str =
    "expected seconds (30, 0.5) or a number with a unit ms, s or m (500ms, 30s, 2m)";
/// Why a negative duration was refused.
const NEGATIVE: &str = "must not be negative (0 turns it off)";
/// Why a duration past `Duration`'s range was refused.
const TOO_LONG: &str = "is too long";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parse a duration (pure). Whitespace around it is ignored; inside it,
/// none is allowed. Fractions are exact to the nanosecond (digits past it
/// are dropped), so `0.1` is 100 ms, not the nearest binary float.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(NEGATIVE);
    }
    // `ms` before `s`: "500ms" also ends with "s".
    let (number, unit_nanos) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000_000)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, NANOS_PER_SEC)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60 * NANOS_PER_SEC)
    } else {
        (text, NANOS_PER_SEC)
    };
    // The number, in billionths of the unit.
    let billionths = decimal_billionths(number)?;
    let nanos = billionths
        .checked_mul(unit_nanos)
        .map(|n| n / NANOS_PER_SEC)
        .ok_or(TOO_LONG)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| TOO_LONG)?;
    // Below NANOS_PER_SEC, so it fits.
    let sub = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| TOO_LONG)?;
    Ok(Duration::new(secs, sub))
}

/// `DIGITS[.DIGITS]` times 10^9, exactly. Anything else (a sign, an
/// exponent, `inf`, an empty part) is refused.
fn decimal_billionths(number: &str) -> Result<u128, &'static str> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(DURATION_SYNTAX);
    }
    // Leading zeros cost nothing; strip them so a long run of them cannot
    // overflow the parse.
    let whole = whole.trim_start_matches('0');
    // Only digits are left: a failed parse is an overflow.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| TOO_LONG)?
    };
    let mut sub: u128 = 0;
    let mut scale = NANOS_PER_SEC;
    for digit in fraction.unwrap_or("").bytes().take(9) {
        scale /= 10;
        sub += u128::from(digit - b'0') * scale;
    }
    whole
        .checked_mul(NANOS_PER_SEC)
        .and_then(|w| w.checked_add(sub))
        .ok_or(TOO_LONG)
}

/// A duration as [`parse_duration`] reads it back (pure): whole seconds
/// as `30s`, whole milliseconds as `500ms`, anything finer as decimal
/// seconds (`0.0005s`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        let fraction = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), fraction.trim_end_matches('0'))
    }
}

/// A duration as a config file writes it: a TOML number of seconds
/// (`warm_linger = 30`, `= 0.5`) or a string (`= "500ms"`). Kept as text
/// and read by [`parse_duration`] when the configuration is resolved, so a
/// bad one is reported like the other bad values: its file, key and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DurationText(pub String);

impl DurationText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for DurationText {
    fn from(text: &str) -> Self {
        DurationText(text.to_owned())
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationTextVisitor)
    }
}

struct DurationTextVisitor;

impl Visitor<'_> for DurationTextVisitor {
    type Value = DurationText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a duration: seconds as a number, or a string such as \"500ms\", \"30s\", \"2m\"",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(DurationText(v.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(DurationText(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(DurationText(v.to_string()))
    }

    // Rust prints the shortest text that reads back as the same float
    // (`0.1`, not `0.1000000000000000055…`), which the parser then takes
    // as written; `inf` and `NaN` come out as such and are refused there.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(DurationText(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn numbers_are_seconds_and_units_scale_them() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("30", Duration::from_secs(30)),
            ("0.5", ms(500)),
            ("0.1", ms(100)),
            ("1.25", ms(1250)),
            ("007", Duration::from_secs(7)),
            ("500ms", ms(500)),
            ("0ms", Duration::ZERO),
            ("1.5ms", Duration::from_micros(1500)),
            ("30s", Duration::from_secs(30)),
            ("0.25s", ms(250)),
            ("2m", Duration::from_secs(120)),
            ("1.5m", Duration::from_secs(90)),
            ("0m", Duration::ZERO),
            (" 30s\n", Duration::from_secs(30)),
            ("0.000000001", Duration::from_nanos(1)),
            // Finer than a nanosecond: dropped.
            ("0.0000000019", Duration::from_nanos(1)),
            ("0.0000000009", Duration::ZERO),
            ("0.5ms", Duration::from_micros(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for text in [
            "", " ", "s", "ms", "m", "x", "30x", "30 s", "30sec", "1h", "1.", ".5", "1..2",
            "1.2.3", "+5", "1e3", "inf", "NaN", "0x10", "3_000", "30S", "5mss", "٣",
        ] {
            assert_eq!(parse_duration(text), Err(DURATION_SYNTAX), "{text:?}");
        }
        for text in ["-1", "-0.5", "-30s", "-0"] {
            assert_eq!(parse_duration(text), Err(NEGATIVE), "{text:?}");
        }
    }

    #[test]
    fn values_past_the_range_are_too_long_not_a_panic() {
        let max_secs = u64::MAX.to_string();
        assert_eq!(parse_duration(&max_secs), Ok(Duration::from_secs(u64::MAX)));
        for text in [
            format!("{}0", u64::MAX),
            format!("{}m", u64::MAX),
            "9".repeat(60),
            format!("{}s", "9".repeat(40)),
        ] {
            assert_eq!(parse_duration(&text), Err(TOO_LONG), "{text:?}");
        }
        // Leading zeros are no length.
        let zeros = format!("{}1", "0".repeat(100));
        assert_eq!(parse_duration(&zeros), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn formatting_reads_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "120s"),
            (ms(500), "500ms"),
            (ms(1500), "1500ms"),
            (Duration::from_micros(500), "0.0005s"),
            (Duration::new(2, 1), "2.000000001s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct File {
        d: DurationText,
    }

    #[test]
    fn a_config_file_may_write_a_number_or_a_string() {
        let read = |toml_text: &str| {
            toml::from_str::<File>(toml_text)
                .map(|f| f.d.0)
                .map_err(|e| e.to_string())
        };
        assert_eq!(read("d = 30").as_deref(), Ok("30"));
        assert_eq!(read("d = 0.5").as_deref(), Ok("0.5"));
        assert_eq!(read("d = 0.1").as_deref(), Ok("0.1"));
        assert_eq!(read("d = \"2m\"").as_deref(), Ok("2m"));
        // Kept as written: the parser refuses these when resolving.
        assert_eq!(read("d = -3").as_deref(), Ok("-3"));
        assert_eq!(read("d = inf").as_deref(), Ok("inf"));
        for toml_text in ["d = true", "d = [1]", "d = { s = 1 }"] {
            let err = read(toml_text).expect_err(toml_text);
            assert!(err.contains("a duration"), "{err}");
        }
        assert_eq!(
            parse_duration(&read("d = 0.1").unwrap_or_default()),
            Ok(ms(100))
        );
    }
}
