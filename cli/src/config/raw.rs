//! Values as read, before they are parsed for their option ([`Raw`]), and where they were read
//! ([`Source`]). Every source goes through these: the command line and the environment give
//! text, a config file gives text or a typed scalar, and one set of parsers turns either into
//! the option's type, so a value means the same and fails with the same message wherever it is
//! given.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::parse_go_duration;

use super::ConfigError;

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
pub(super) enum Source {
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::Flag(name) => write!(f, "command line flag --{name}"),
        }
    }
}

/// A value before it is parsed for its option: text (flags, environment, file strings) or a
/// typed scalar from a config file.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Raw {
    Text(String),
    Bool(bool),
    Int(i128),
    Float(f64),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => write!(f, "{s:?}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
        }
    }
}

impl Raw {
    pub(super) fn duration(&self) -> Result<Duration, String> {
        match self {
            Self::Text(s) => parse_go_duration(s).map_err(|e| e.to_string()),
            // A number has no unit, and a guessed one (seconds? Go's nanoseconds?) could be off
            // by orders of magnitude without any error: ask for the unit instead.
            Self::Int(_) | Self::Float(_) => Err(
                "a bare number is not a duration (it has no unit): use a duration like \"30s\""
                    .into(),
            ),
            Self::Bool(_) => Err("expected a duration like \"30s\"".into()),
        }
    }

    pub(super) fn boolean(&self) -> Result<bool, String> {
        match self {
            Self::Text(s) => parse_go_bool(s),
            Self::Bool(b) => Ok(*b),
            Self::Int(0) => Ok(false),
            Self::Int(1) => Ok(true),
            Self::Int(_) | Self::Float(_) => Err("expected a boolean (true or false)".into()),
        }
    }

    pub(super) fn uint<T: TryFrom<u64>>(&self) -> Result<T, String> {
        let value: u64 = match self {
            Self::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map_err(|_| "number too large".to_owned())?
            }
            Self::Int(i) if *i >= 0 => u64::try_from(*i).map_err(|_| "number too large")?,
            _ => return Err("expected a non-negative integer".into()),
        };
        T::try_from(value).map_err(|_| "number too large".into())
    }

    /// The value as text; a file's number or boolean given for a text option is taken as
    /// written (`password: 1234`).
    pub(super) fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Float(x) => x.to_string(),
        }
    }

    /// The text, `None` when empty ("off").
    pub(super) fn optional_text(&self) -> Option<String> {
        Some(self.text()).filter(|s| !s.is_empty())
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("expected a boolean (true, false, 1, 0, t, f)".into()),
    }
}

/// The error for a value its option cannot take: which option, which value, which source, why.
pub(super) fn bad_value(option: &str, value: &Raw, source: &Source, detail: &str) -> ConfigError {
    ConfigError::usage(format!(
        "invalid value {value} for {option} in {source}: {detail}"
    ))
}
