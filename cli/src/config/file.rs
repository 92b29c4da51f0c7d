//! Reading a config file (JSON or YAML, by extension) into (key, [`Raw`] value) pairs. Only
//! the format is handled here; the keys are checked against the option table, and the values
//! parsed, by the loader, exactly as for the other sources.

use std::path::Path;

use super::ConfigError;
use super::raw::Raw;

/// Reads a config file into (key, value) pairs in file order; `None` for a null value.
pub(super) fn read_config_file(path: &Path) -> Result<Vec<(String, Option<Raw>)>, ConfigError> {
    let shown = path.display();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let is_json = match extension.as_deref() {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => {
            return Err(ConfigError::usage(format!(
                "unsupported config file type {shown}: the supported extensions are .json, \
                 .yaml and .yml"
            )));
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::usage(format!("cannot read config file {shown}: {e}")))?;
    let file_error = |detail: String| ConfigError::usage(format!("config file {shown}: {detail}"));
    let not_a_mapping =
        || file_error("expected a mapping of option names to values at the top level".into());
    let mut entries = Vec::new();
    if is_json {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| file_error(format!("invalid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(not_a_mapping());
        };
        for (key, value) in map {
            let raw = match value {
                serde_json::Value::Null => None,
                serde_json::Value::Bool(b) => Some(Raw::Bool(b)),
                serde_json::Value::String(s) => Some(Raw::Text(s)),
                serde_json::Value::Number(n) => Some(json_number(&n)),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    return Err(file_error(format!(
                        "{key:?} must be a single value, not a list or a mapping"
                    )));
                }
            };
            entries.push((key, raw));
        }
    } else {
        if text.trim().is_empty() {
            return Ok(entries);
        }
        let value: serde_norway::Value =
            serde_norway::from_str(&text).map_err(|e| file_error(format!("invalid YAML: {e}")))?;
        let map = match value {
            serde_norway::Value::Null => return Ok(entries),
            serde_norway::Value::Mapping(map) => map,
            _ => return Err(not_a_mapping()),
        };
        for (key, value) in map {
            let serde_norway::Value::String(key) = key else {
                return Err(file_error(format!(
                    "keys must be option names, not {key:?}"
                )));
            };
            let raw = match value {
                serde_norway::Value::Null => None,
                serde_norway::Value::Bool(b) => Some(Raw::Bool(b)),
                serde_norway::Value::String(s) => Some(Raw::Text(s)),
                serde_norway::Value::Number(n) => Some(yaml_number(&n)),
                _ => {
                    return Err(file_error(format!(
                        "{key:?} must be a single value, not a list, a mapping or a tagged value"
                    )));
                }
            };
            entries.push((key, raw));
        }
    }
    Ok(entries)
}

/// A number from a JSON file: an integer when it is one, else a float (which no option takes,
/// but the error can quote it).
fn json_number(n: &serde_json::Number) -> Raw {
    number(n.as_i64(), n.as_u64(), n.as_f64())
}

/// A number from a YAML file, as [`json_number`] does it.
fn yaml_number(n: &serde_norway::Number) -> Raw {
    number(n.as_i64(), n.as_u64(), n.as_f64())
}

/// The one rule both formats share: signed, then unsigned, then float.
fn number(signed: Option<i64>, unsigned: Option<u64>, float: Option<f64>) -> Raw {
    match (signed, unsigned) {
        (Some(i), _) => Raw::Int(i.into()),
        (None, Some(u)) => Raw::Int(u.into()),
        (None, None) => Raw::Float(float.unwrap_or(f64::NAN)),
    }
}
