//! Go-syntax durations, as accepted by go-ldlm's `--lock_gc_interval 30m` and friends.
//!
//! [`parse_go_duration`] follows Go's `time.ParseDuration`: a sequence of decimal numbers, each
//! with an optional fraction and a required unit (`300ms`, `10s`, `1h30m`, `1.5h`,
//! `2h45m30.5s`). Units are `ns`, `us` (also `µs` and `μs`), `ms`, `s`, `m` and `h`. The
//! string `0` alone needs no unit. The largest accepted value is Go's, [`MAX_GO_DURATION`]
//! (about 292 years).
//!
//! Differences from Go, all deliberate:
//! - a leading `-` is an error (none of our options has a meaning for a negative duration),
//!   even for `-0`; a leading `+` is accepted as in Go;
//! - overflow is reported as [`DurationError::TooLarge`] rather than Go's generic message.
//!
//! Fractions are computed as Go computes them (through `float64`), so every string means the
//! same number of nanoseconds as in go-ldlm (`0.3333333333333333333h` is exactly `20m`).
//!
//! [`format_go_duration`] is Go's `Duration.String()`: `30m0s`, `1h0m0s`, `1.5s`, `300ms`,
//! `1.5µs`, `0s`. Its output always parses back to the same value.

use std::fmt::Write as _;
use std::time::Duration;

/// The largest duration Go can represent (`i64::MAX` nanoseconds, `2562047h47m16.854775807s`),
/// and so the largest [`parse_go_duration`] accepts.
pub const MAX_GO_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

/// Why a string is not a valid Go duration. Each message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `<number><unit>...` (empty, stray characters, a number without digits).
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit, such as `30` (only `0` alone may omit it).
    #[error("missing unit in duration {0:?} (use a duration like \"30s\")")]
    MissingUnit(String),
    /// A unit that is none of `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    #[error("unknown unit {unit:?} in duration {input:?} (valid units: ns, us, µs, ms, s, m, h)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// A leading `-`.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// Larger than [`MAX_GO_DURATION`].
    #[error("duration {0:?} is too large (the maximum is 2562047h47m16.854775807s)")]
    TooLarge(String),
}

const NANOS_PER_SEC: u128 = 1_000_000_000;
const MAX_NANOS: u128 = i64::MAX as u128;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a Go duration (`300ms`, `10s`, `1h30m`, `1.5h`, `0`); see the [module docs](self).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut s = input;
    if let Some(rest) = s.strip_prefix('-') {
        if rest.is_empty() {
            return Err(invalid());
        }
        return Err(DurationError::Negative(input.to_owned()));
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        // The integer part: [0-9]*
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, rest) = s.split_at(int_len);
        s = rest;
        // The fraction: (\.[0-9]*)?
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            (frac_digits, s) = rest.split_at(frac_len);
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            // No digits at all (".s", "s", or a stray character).
            return Err(invalid());
        }
        // The unit: everything up to the next digit or '.'.
        let unit_len = s
            .bytes()
            .take_while(|&b| b != b'.' && !b.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit_ns = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            input: input.to_owned(),
        })?;
        let too_large = || DurationError::TooLarge(input.to_owned());
        // Integer part: leading zeros are fine; anything that does not fit u64 is too large.
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            u128::from(int_digits.parse::<u64>().map_err(|_| too_large())?)
        };
        let mut value = int * unit_ns;
        let (frac, scale) = leading_fraction(frac_digits);
        if frac > 0 {
            // Go's arithmetic exactly (through float64), so every input means the same
            // nanoseconds here as in go-ldlm.
            value += (frac as f64 * (unit_ns as f64 / scale)) as u128;
        }
        total += value;
        if total > MAX_NANOS {
            return Err(too_large());
        }
    }
    let secs = (total / NANOS_PER_SEC) as u64;
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Go's `leadingFraction`: the digits as an integer and 10^(digits used), ignoring the digits
/// that would overflow an `i64`.
fn leading_fraction(digits: &str) -> (u64, f64) {
    let mut x: u64 = 0;
    let mut scale = 1.0;
    for b in digits.bytes() {
        if x > (i64::MAX as u64) / 10 {
            break;
        }
        let y = x * 10 + u64::from(b - b'0');
        if y > 1 << 63 {
            break;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale)
}

/// Formats a duration as Go's `Duration.String()` does: `30m0s`, `1h0m0s`, `1.5s`, `300ms`,
/// `1.5µs`, `0s`. Values beyond Go's range are formatted the same way (more hours).
pub fn format_go_duration(d: Duration) -> String {
    let mut u = d.as_nanos();
    if u == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    if u < NANOS_PER_SEC {
        // Smaller than a second: use the largest unit below a second, with a fraction.
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let frac = take_fraction(&mut u, prec);
        let _ = write!(out, "{u}{frac}{unit}");
        return out;
    }
    let frac = take_fraction(&mut u, 9);
    let secs = u % 60;
    let minutes = u / 60;
    if minutes > 0 {
        let hours = minutes / 60;
        if hours > 0 {
            let _ = write!(out, "{hours}h");
        }
        let _ = write!(out, "{}m", minutes % 60);
    }
    let _ = write!(out, "{secs}{frac}s");
    out
}

/// Splits off the low `prec` decimal digits of `*v` as a fraction (`.5`, trailing zeros
/// dropped, empty when zero) and leaves the integer part in `*v`.
fn take_fraction(v: &mut u128, prec: u32) -> String {
    let divisor = 10u128.pow(prec);
    let frac = *v % divisor;
    *v /= divisor;
    if frac == 0 {
        return String::new();
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn parses_go_examples() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("0h0m0s", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("30s", Duration::from_secs(30)),
            ("1478s", Duration::from_secs(1478)),
            ("+5s", Duration::from_secs(5)),
            ("300ms", ms(300)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("30m", Duration::from_secs(1800)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m30.5s", ms((2 * 3600 + 45 * 60 + 30) * 1000 + 500)),
            ("5.0s", Duration::from_secs(5)),
            ("5.6s", ms(5600)),
            ("5.s", Duration::from_secs(5)),
            (".5s", ms(500)),
            ("1.0s", Duration::from_secs(1)),
            ("1.00s", Duration::from_secs(1)),
            ("1.004s", ms(1004)),
            ("1.0040s", ms(1004)),
            ("100.00100s", ms(100_001)),
            ("10ns", Duration::from_nanos(10)),
            ("11us", Duration::from_micros(11)),
            ("12µs", Duration::from_micros(12)),
            ("12μs", Duration::from_micros(12)),
            ("13ms", ms(13)),
            ("14s", Duration::from_secs(14)),
            ("15m", Duration::from_secs(15 * 60)),
            ("16h", Duration::from_secs(16 * 3600)),
            ("3h30m", Duration::from_secs(3 * 3600 + 30 * 60)),
            ("10.5s4m", Duration::from_millis(4 * 60_000 + 10_500)),
            ("1h1m1s1ms1us1ns", Duration::new(3661, 1_001_001)),
            ("39h9m14.425s", ms((39 * 3600 + 9 * 60 + 14) * 1000 + 425)),
            ("52763797000ns", Duration::from_nanos(52_763_797_000)),
            ("0.3333333333333333333h", Duration::from_secs(1200)),
            ("1.000000000000000000000001s", Duration::from_secs(1)),
            ("0.100000000000000000000h", Duration::from_secs(360)),
            ("0010s", Duration::from_secs(10)),
            ("9223372036854775807ns", MAX_GO_DURATION),
            ("9223372036s854775807ns", MAX_GO_DURATION),
            ("2562047h47m16.854775807s", MAX_GO_DURATION),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn rejects_invalid() {
        for input in [
            "", "3", "-", "s", ".", ".s", "+.s", "1d", "1.5x", " 1s", "1s ", "1 s", "x1s", "1s2",
        ] {
            assert!(
                parse_go_duration(input).is_err(),
                "input {input:?} should fail"
            );
        }
    }

    #[test]
    fn error_kinds_and_messages() {
        assert_eq!(
            parse_go_duration(""),
            Err(DurationError::Invalid(String::new()))
        );
        assert_eq!(
            parse_go_duration(".s"),
            Err(DurationError::Invalid(".s".into()))
        );
        assert_eq!(
            parse_go_duration("30"),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert_eq!(
            parse_go_duration("1h30"),
            Err(DurationError::MissingUnit("1h30".into()))
        );
        assert_eq!(
            parse_go_duration("3d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                input: "3d".into()
            })
        );
        assert_eq!(
            parse_go_duration("1sec"),
            Err(DurationError::UnknownUnit {
                unit: "sec".into(),
                input: "1sec".into()
            })
        );
        assert_eq!(
            parse_go_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        assert_eq!(
            parse_go_duration("-0"),
            Err(DurationError::Negative("-0".into()))
        );
        assert_eq!(
            parse_go_duration("-"),
            Err(DurationError::Invalid("-".into()))
        );
        let msg = parse_go_duration("30").unwrap_err().to_string();
        assert!(
            msg.contains("missing unit") && msg.contains("\"30s\""),
            "{msg}"
        );
        let msg = parse_go_duration("abc").unwrap_err().to_string();
        assert_eq!(msg, "invalid duration \"abc\"");
        let msg = parse_go_duration("3d").unwrap_err().to_string();
        assert!(msg.contains("unknown unit \"d\""), "{msg}");
    }

    #[test]
    fn rejects_overflow() {
        for input in [
            "9223372036854775808ns",
            "9223372036s854775808ns",
            "2562048h",
            "18446744073709551616ns",
            "99999999999999999999999h",
            "9223372036854775807ns1ns",
        ] {
            assert_eq!(
                parse_go_duration(input),
                Err(DurationError::TooLarge(input.into())),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1100), "1.1µs"),
            (Duration::from_micros(1), "1µs"),
            (Duration::from_nanos(2_200_000), "2.2ms"),
            (ms(300), "300ms"),
            (ms(1), "1ms"),
            (Duration::from_nanos(999_999_999), "999.999999ms"),
            (Duration::from_secs(1), "1s"),
            (ms(1500), "1.5s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(600), "10m0s"),
            (Duration::from_secs(1800), "30m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (ms(((2 * 60 + 45) * 60 + 30) * 1000 + 500), "2h45m30.5s"),
            (Duration::new(3661, 1), "1h1m1.000000001s"),
            (Duration::from_nanos(4_000_000_001), "4.000000001s"),
            (MAX_GO_DURATION, "2562047h47m16.854775807s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(*d), *want, "duration {d:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        let mut n: u64 = 1;
        while n < i64::MAX as u64 / 7 {
            for d in [
                Duration::from_nanos(n),
                Duration::from_nanos(n + 1),
                Duration::from_nanos(n * 3 + 17),
            ] {
                let text = format_go_duration(d);
                assert_eq!(parse_go_duration(&text), Ok(d), "text {text:?}");
            }
            n *= 7;
        }
    }
}
