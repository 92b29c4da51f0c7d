//! The `ldlm-server` configuration: every option of go-ldlm plus our limits.
//!
//! # Sources and precedence
//!
//! Each option can be given in four places; a later one wins:
//!
//! 1. the built-in default ([`ServerConfig::defaults`]);
//! 2. a key in the config file, named exactly like the option (`lock_gc_interval: 30m`);
//! 3. the environment variable `LDLM_<NAME>` (`LDLM_LOCK_GC_INTERVAL=30m`); an **empty**
//!    variable counts as unset;
//! 4. the command-line flag `--<name>` (`--lock_gc_interval 30m` or `--lock_gc_interval=30m`),
//!    or its short form where there is one (`-g 30m`). A flag given twice: the last one wins.
//!
//! The config file is named by `-c`/`--config_file`, else by `LDLM_CONFIG_FILE`; an empty
//! `--config_file=` means no file even if the variable is set. Its format follows the extension,
//! in any case: `.json`, `.yaml` or `.yml`; any other extension is an error. The file holds one
//! mapping from option names to values. Every option can be set there (go-ldlm 3eb8bea rejects
//! `ipc_socket_file` and `client_ca`, its B14), except `config_file` itself. An unknown key is
//! an error naming the key; a `null` value leaves the option as it was.
//!
//! # Values
//!
//! - **Durations** use Go syntax: `300ms`, `10s`, `1h30m`, `1.5h`, `0` (see
//!   [`crate::duration`]). Negative durations are errors. In a config file a duration must be a
//!   string: a bare number (`lock_gc_interval: 30`) is an error asking for a duration like
//!   `"30s"`, because a number has no unit.
//! - **Booleans** accept Go's `strconv.ParseBool` forms (`1`, `t`, `T`, `TRUE`, `true`, `True`,
//!   `0`, `f`, `F`, `FALSE`, `false`, `False`) in the environment and on the command line; a
//!   boolean flag alone (`--no_clear_on_disconnect`, `-n`) means `true`, and a value must be
//!   attached with `=` (`--no_clear_on_disconnect=false`). A config file may use YAML/JSON
//!   booleans, those strings, or the numbers `0` and `1`.
//! - **Integers** are non-negative decimal numbers (a string of digits is accepted in a file).
//! - **Text** options (addresses, paths, the password): an empty value means "off"/"none"
//!   (`ipc_socket_file`, `state_file`, `rest_listen_address`, `tls_*`, `client_ca`,
//!   `password`). So `--ipc_socket_file=` or `ipc_socket_file: ""` turns IPC off, while an empty
//!   `LDLM_IPC_SOCKET_FILE` keeps the default (empty variables are unset). In a file, numbers and
//!   booleans given for a text option are taken as their text (`password: 1234`).
//! - **`log_level`**: `debug`, `info`, `warn` or `error`, in any case.
//!
//! # Validation
//!
//! After merging, [`ServerConfig::validate`] checks what cannot be checked value by value:
//!
//! - `tls_key` without `tls_cert`, and `tls_cert` without `tls_key`, are errors (go-ldlm
//!   silently ignores a lone key, its bug B15); `client_cert_verify` or `client_ca` without
//!   `tls_cert` → `client TLS certificate verification requires server TLS to be configured`;
//! - `shards` must be a power of two from 1 to 65536;
//! - these must be greater than zero: `lock_gc_interval` (a zero GC period would spin),
//!   `default_lock_timeout` (restored locks would expire at once), `keepalive_interval`,
//!   `keepalive_timeout`, `rest_session_timeout`, and every `max_*` limit and `shards`;
//!   `lock_gc_min_idle` may be zero (collect every unused lock at each GC pass);
//! - `listen_address` must not be empty (gRPC cannot be turned off).
//!
//! # Errors and exit codes
//!
//! Every problem is a [`ConfigError`] whose message says which option, which value and which
//! source (file path, variable name or flag) is wrong, with exit code [`EXIT_USAGE`] (2): an
//! unknown flag, a bad value, an unreadable or malformed config file, an unknown file key, a
//! failed validation (one code for "the invocation is wrong", so that scripts can tell it from
//! a server that failed at run time, which exits 1; go-ldlm exits 0 or 1 and prints some errors
//! to stdout, its bug B14). Print it to stderr as it is. `--help`/`-h`/`-help` and `--version`
//! are not errors: they give [`Loaded::Help`] and [`Loaded::Version`], to print to stdout with
//! exit code 0.
//!
//! `--version` (or `LDLM_VERSION=true`, or `version: true` in the file) is answered as soon as
//! it is known to be true, without reading or checking the rest of the configuration.

mod file;
mod flags;
mod options;
mod raw;
mod validate;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::error::ErrorKind;

pub use flags::command;
pub use options::ServerConfig;

use file::read_config_file;
use options::{CONFIG_FILE, OPTIONS, OptSpec, VERSION};
use raw::{Raw, Source, bad_value};

/// Exit code for every configuration error (usage, unknown flag, bad value, bad file).
pub const EXIT_USAGE: i32 = 2;

/// Prefix of every option's environment variable.
pub const ENV_PREFIX: &str = "LDLM_";

/// The name of the environment variable for `option`: `LDLM_` + the name in upper case.
///
/// ```
/// assert_eq!(ldlm_cli::config::env_var_name("lock_gc_interval"), "LDLM_LOCK_GC_INTERVAL");
/// ```
pub fn env_var_name(option: &str) -> String {
    format!("{ENV_PREFIX}{}", option.to_ascii_uppercase())
}

/// The default IPC socket path: `$TMPDIR/ldlm-ipc.sock` (usually `/tmp/ldlm-ipc.sock`), as Go's
/// `os.TempDir()` gives it. `ldlm-lock` uses the same default.
pub fn default_ipc_socket_file() -> PathBuf {
    std::env::temp_dir().join("ldlm-ipc.sock")
}

/// The server's log level (`--log_level`), parsed case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum LogLevel {
    /// Everything, including one line per request.
    Debug,
    /// Startup, shutdown and session lines (the default).
    #[default]
    Info,
    /// Warnings and errors only.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The lower-case name: `debug`, `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Parses `debug`, `info`, `warn` or `error` in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Debug, Self::Info, Self::Warn, Self::Error]
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown log level {s:?} (use debug, info, warn or error)"))
    }
}

/// Most `--worker_threads` accepted (more threads than this only cost memory and switches).
pub const MAX_WORKER_THREADS: usize = 1024;

impl ServerConfig {
    /// Whether clients must present a verified certificate (`client_cert_verify` or
    /// `client_ca`).
    pub fn requires_client_cert(&self) -> bool {
        self.client_cert_verify || self.client_ca.is_some()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::defaults()
    }
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Run the server with this configuration (already validated).
    Run(Box<ServerConfig>),
    /// `-h`, `-help` or `--help`: print this text to stdout (it ends with a newline), exit 0.
    Help(String),
    /// `--version`: print this text to stdout (it ends with a newline), exit 0.
    Version(String),
}

/// A configuration error: print [`ConfigError::message`] (also its `Display`) to stderr and
/// exit with [`ConfigError::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
    exit_code: i32,
}

impl ConfigError {
    /// A usage error (exit code [`EXIT_USAGE`]).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    /// The message, complete (it names the option, the value and its source where known).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code to use: [`EXIT_USAGE`] (2).
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }
}

/// The `--version` text: `Version: <crate version>\nCommit: <sha or none>\nBuilt: <date or
/// unknown>\n`. Commit and date come from `LDLM_GIT_COMMIT` and `LDLM_BUILD_DATE` at build time.
pub fn version_text() -> String {
    let non_empty = |v: Option<&'static str>| v.filter(|v| !v.is_empty());
    format!(
        "Version: {}\nCommit: {}\nBuilt: {}\n",
        env!("CARGO_PKG_VERSION"),
        non_empty(option_env!("LDLM_GIT_COMMIT")).unwrap_or("none"),
        non_empty(option_env!("LDLM_BUILD_DATE")).unwrap_or("unknown"),
    )
}

/// Loads the configuration from the process's arguments and environment; see [`load_from`].
/// An environment variable that is not valid UTF-8 is read lossily.
pub fn load() -> Result<Loaded, ConfigError> {
    load_from(std::env::args_os(), &|name: &str| {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    })
}

/// Loads the configuration from `args` (the program name first, as [`std::env::args_os`]
/// gives it) and the environment `env` (a lookup by variable name, so tests need not touch the
/// process environment). See the [module docs](self) for sources, precedence and errors.
pub fn load_from(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    // Go's flag packages treat `-help` as help; clap would read it as `-h -e -l -p`.
    let args: Vec<OsString> = args
        .into_iter()
        .enumerate()
        .map(|(i, arg)| {
            if i > 0 && arg == "-help" {
                "--help".into()
            } else {
                arg
            }
        })
        .collect();
    let matches = match command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    Ok(Loaded::Help(e.to_string()))
                }
                _ => {
                    let text = e.to_string();
                    let text = text.strip_prefix("error: ").unwrap_or(&text);
                    Err(ConfigError::usage(text.trim_end()))
                }
            };
        }
    };
    let flag = |name: &str| matches.get_one::<String>(name).cloned();
    // A non-empty environment variable.
    let env_value = |name: &str| {
        let var = env_var_name(name);
        env(&var).filter(|v| !v.is_empty()).map(|v| (var, v))
    };

    // --version: flag > environment > file, answered as soon as it is known.
    let mut version_decided = false;
    if let Some(value) = flag(VERSION) {
        let source = Source::Flag(VERSION);
        if parse_version(&Raw::Text(value), &source)? {
            return Ok(Loaded::Version(version_text()));
        }
        version_decided = true;
    } else if let Some((var, value)) = env_value(VERSION) {
        if parse_version(&Raw::Text(value), &Source::Env(var))? {
            return Ok(Loaded::Version(version_text()));
        }
        version_decided = true;
    }

    // The config file: flag (even empty: no file) > non-empty environment variable.
    let config_file = match flag(CONFIG_FILE) {
        Some(path) => path,
        None => env_value(CONFIG_FILE).map(|(_, v)| v).unwrap_or_default(),
    };
    let config_file = (!config_file.is_empty()).then(|| PathBuf::from(config_file));

    let mut config = ServerConfig::defaults();
    let mut origins: HashMap<&'static str, Source> = HashMap::new();

    if let Some(path) = &config_file {
        let entries = read_config_file(path)?;
        let source = Source::File(path.clone());
        for (key, value) in entries {
            if key == CONFIG_FILE {
                return Err(ConfigError::usage(format!(
                    "config_file cannot be set inside a config file ({source})"
                )));
            }
            if key == VERSION {
                if let Some(value) = value
                    && parse_version(&value, &source)?
                    && !version_decided
                {
                    return Ok(Loaded::Version(version_text()));
                }
                continue;
            }
            let Some(spec) = OPTIONS.iter().find(|spec| spec.name == key) else {
                return Err(ConfigError::usage(format!(
                    "unknown configuration file field: {key:?} in {source}"
                )));
            };
            if let Some(value) = value {
                apply(&mut config, &mut origins, spec, &value, source.clone())?;
            }
        }
    }
    for spec in OPTIONS {
        if let Some((var, value)) = env_value(spec.name) {
            apply(
                &mut config,
                &mut origins,
                spec,
                &Raw::Text(value),
                Source::Env(var),
            )?;
        }
    }
    for spec in OPTIONS {
        if let Some(value) = flag(spec.name) {
            apply(
                &mut config,
                &mut origins,
                spec,
                &Raw::Text(value),
                Source::Flag(spec.name),
            )?;
        }
    }
    config.config_file = config_file;

    config.check().map_err(|invalid| {
        let message = match origins.get(invalid.option) {
            Some(source) => format!("{} ({} set by {source})", invalid.message, invalid.option),
            None => invalid.message,
        };
        ConfigError::usage(message)
    })?;
    Ok(Loaded::Run(Box::new(config)))
}

/// A `version` value: whether it asks for the version.
fn parse_version(value: &Raw, source: &Source) -> Result<bool, ConfigError> {
    value
        .boolean()
        .map_err(|detail| bad_value(VERSION, value, source, &detail))
}

/// Parses `value` for `spec`'s option into `config`, and remembers its source for validation
/// errors.
fn apply(
    config: &mut ServerConfig,
    origins: &mut HashMap<&'static str, Source>,
    spec: &OptSpec,
    value: &Raw,
    source: Source,
) -> Result<(), ConfigError> {
    (spec.set)(config, value).map_err(|detail| {
        // Never echo a secret back (no parse can fail for the password today; this keeps it so).
        bad_value(spec.name, &spec.value_for_error(value), &source, &detail)
    })?;
    origins.insert(spec.name, source);
    Ok(())
}

#[cfg(test)]
mod tests;
