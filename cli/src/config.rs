//! The `ldlm-server` configuration: every option of go-ldlm (reference §9.1) plus our limits.
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
//!   silently ignores a lone key, B15); `client_cert_verify` or `client_ca` without `tls_cert`
//!   → `client TLS certificate verification requires server TLS to be configured`;
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
//! failed validation (DESIGN §4.7; go-ldlm exits 0 or 1 and prints some errors to stdout, B14).
//! Print it to stderr as it is. `--help`/`-h`/`-help` and `--version` are not errors: they give
//! [`Loaded::Help`] and [`Loaded::Version`], to print to stdout with exit code 0.
//!
//! `--version` (or `LDLM_VERSION=true`, or `version: true` in the file) is answered as soon as
//! it is known to be true, without reading or checking the rest of the configuration.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ColorChoice, Command};

use crate::duration::{format_go_duration, parse_go_duration};

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

/// The complete `ldlm-server` configuration. Field names are the option names.
///
/// `Debug` never shows the password. Build one with [`load`]/[`load_from`], or start from
/// [`ServerConfig::defaults`] (tests) and call [`ServerConfig::validate`].
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The config file that was read (`-c`/`--config_file`, `LDLM_CONFIG_FILE`), if any.
    /// Informational: it is not itself an option of the file.
    pub config_file: Option<PathBuf>,
    /// `-v`/`--log_level`: default `info`.
    pub log_level: LogLevel,
    /// `-g`/`--lock_gc_interval`: how often idle locks are collected. Default 30m, > 0.
    pub lock_gc_interval: Duration,
    /// `-m`/`--lock_gc_min_idle`: how long a lock must be unused before it is collected.
    /// Default 5m; 0 is allowed.
    pub lock_gc_min_idle: Duration,
    /// `-d`/`--default_lock_timeout`: the lock timeout given to locks restored from the state
    /// file. Default 10m, > 0.
    pub default_lock_timeout: Duration,
    /// `-n`/`--no_clear_on_disconnect`: keep a client's locks when it disconnects. Default false.
    pub no_clear_on_disconnect: bool,
    /// `--ipc_socket_file`: the admin Unix socket for `ldlm-lock`; `None` (empty value) = IPC
    /// off. Default [`default_ipc_socket_file`].
    pub ipc_socket_file: Option<PathBuf>,
    /// `-s`/`--state_file`: where held locks are persisted; `None` (default, empty) = nowhere.
    pub state_file: Option<PathBuf>,
    /// `-k`/`--keepalive_interval`: gRPC keepalive ping interval. Default 1m, > 0.
    pub keepalive_interval: Duration,
    /// `-t`/`--keepalive_timeout`: how long a keepalive ping may go unanswered. Default 10s, > 0.
    pub keepalive_timeout: Duration,
    /// `-l`/`--listen_address`: the gRPC listen address. Default `localhost:3144`, not empty.
    pub listen_address: String,
    /// `-r`/`--rest_listen_address`: the REST listen address; `None` (default, empty) = REST off.
    pub rest_listen_address: Option<String>,
    /// `--worker_threads`: async runtime threads; 0 (default) = one per CPU core; at most
    /// [`MAX_WORKER_THREADS`].
    pub worker_threads: usize,
    /// `--metrics_listen_address`: where Prometheus metrics are served (`GET /metrics`);
    /// `None` (default, empty) = off.
    pub metrics_listen_address: Option<String>,
    /// `--rest_session_timeout`: idle time after which a REST session expires. Default 10m, > 0.
    pub rest_session_timeout: Duration,
    /// `--tls_cert`: server certificate (PEM) for gRPC and REST; `None` (default) = plaintext.
    pub tls_cert: Option<PathBuf>,
    /// `--tls_key`: the private key (PEM) for `tls_cert`; required with it, invalid without it.
    pub tls_key: Option<PathBuf>,
    /// `--client_cert_verify`: require client certificates (system roots, or `client_ca`).
    /// Needs `tls_cert`. Default false.
    pub client_cert_verify: bool,
    /// `--client_ca`: CA (PEM) that client certificates must chain to; implies
    /// `client_cert_verify` (see [`ServerConfig::requires_client_cert`]). Needs `tls_cert`.
    pub client_ca: Option<PathBuf>,
    /// `--password`: password clients must present; `None` (default, empty) = no password.
    /// Never shown by `Debug`.
    pub password: Option<String>,
    /// `--shards`: lock-table shards, a power of two from 1 to 65536. Default 16.
    pub shards: u32,
    /// `--max_name_bytes`: longest accepted lock name in bytes. Default 4096, ≥ 1.
    pub max_name_bytes: usize,
    /// `--max_rest_sessions`: most REST sessions open at once. Default 100000, ≥ 1.
    pub max_rest_sessions: usize,
    /// `--max_waiters_per_lock`: most clients waiting on one lock at once. Default 100000, ≥ 1.
    pub max_waiters_per_lock: usize,
    /// `--max_connections`: most client connections open at once. Default 10000, ≥ 1.
    pub max_connections: usize,
    /// `--max_request_bytes`: largest REST or IPC request body in bytes. Default 65536, ≥ 1.
    pub max_request_bytes: usize,
    /// `--grpc_max_message_bytes`: largest gRPC message in bytes. Default 4194304, ≥ 1.
    pub grpc_max_message_bytes: usize,
}

impl ServerConfig {
    /// The built-in defaults (reference §9.1 plus our limits). They pass [`Self::validate`].
    pub fn defaults() -> Self {
        Self {
            config_file: None,
            log_level: LogLevel::Info,
            lock_gc_interval: Duration::from_secs(30 * 60),
            lock_gc_min_idle: Duration::from_secs(5 * 60),
            default_lock_timeout: Duration::from_secs(10 * 60),
            no_clear_on_disconnect: false,
            ipc_socket_file: Some(default_ipc_socket_file()),
            state_file: None,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(10),
            listen_address: "localhost:3144".to_owned(),
            rest_listen_address: None,
            metrics_listen_address: None,
            worker_threads: 0,
            rest_session_timeout: Duration::from_secs(10 * 60),
            tls_cert: None,
            tls_key: None,
            client_cert_verify: false,
            client_ca: None,
            password: None,
            shards: 16,
            max_name_bytes: 4096,
            max_rest_sessions: 100_000,
            max_waiters_per_lock: 100_000,
            max_connections: 10_000,
            max_request_bytes: 65_536,
            grpc_max_message_bytes: 4_194_304,
        }
    }

    /// Whether clients must present a verified certificate (`client_cert_verify` or
    /// `client_ca`).
    pub fn requires_client_cert(&self) -> bool {
        self.client_cert_verify || self.client_ca.is_some()
    }

    /// Checks the rules of the [module docs](self#validation). The loader calls this (and adds
    /// to the message where the offending value came from).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|invalid| ConfigError::usage(invalid.message))
    }

    fn check(&self) -> Result<(), Invalid> {
        let positive: [(&'static str, Duration); 5] = [
            ("lock_gc_interval", self.lock_gc_interval),
            ("default_lock_timeout", self.default_lock_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("rest_session_timeout", self.rest_session_timeout),
        ];
        for (option, value) in positive {
            if value.is_zero() {
                return Err(Invalid::new(
                    option,
                    format!("{option} must be greater than 0"),
                ));
            }
        }
        let limits: [(&'static str, usize); 6] = [
            ("max_name_bytes", self.max_name_bytes),
            ("max_rest_sessions", self.max_rest_sessions),
            ("max_waiters_per_lock", self.max_waiters_per_lock),
            ("max_connections", self.max_connections),
            ("max_request_bytes", self.max_request_bytes),
            ("grpc_max_message_bytes", self.grpc_max_message_bytes),
        ];
        for (option, value) in limits {
            if value == 0 {
                return Err(Invalid::new(option, format!("{option} must be at least 1")));
            }
        }
        if !self.shards.is_power_of_two() || self.shards > 65_536 {
            return Err(Invalid::new(
                "shards",
                format!(
                    "shards must be a power of two between 1 and 65536, got {}",
                    self.shards
                ),
            ));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(Invalid::new(
                "worker_threads",
                format!(
                    "worker_threads must be between 0 (one per CPU core) and {MAX_WORKER_THREADS}, got {}",
                    self.worker_threads
                ),
            ));
        }
        if self.listen_address.is_empty() {
            return Err(Invalid::new(
                "listen_address",
                "listen_address must not be empty (the gRPC server cannot be turned off)".into(),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (None, Some(_)) => {
                return Err(Invalid::new(
                    "tls_key",
                    "tls_key is set but tls_cert is not: TLS needs both".into(),
                ));
            }
            (Some(_), None) => {
                return Err(Invalid::new(
                    "tls_cert",
                    "tls_cert is set but tls_key is not: TLS needs both".into(),
                ));
            }
            _ => {}
        }
        if self.tls_cert.is_none() && self.requires_client_cert() {
            let option = if self.client_ca.is_some() {
                "client_ca"
            } else {
                "client_cert_verify"
            };
            return Err(Invalid::new(
                option,
                "client TLS certificate verification requires server TLS to be configured".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::defaults()
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("config_file", &self.config_file)
            .field("log_level", &self.log_level)
            .field("lock_gc_interval", &self.lock_gc_interval)
            .field("lock_gc_min_idle", &self.lock_gc_min_idle)
            .field("default_lock_timeout", &self.default_lock_timeout)
            .field("no_clear_on_disconnect", &self.no_clear_on_disconnect)
            .field("ipc_socket_file", &self.ipc_socket_file)
            .field("state_file", &self.state_file)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("listen_address", &self.listen_address)
            .field("rest_listen_address", &self.rest_listen_address)
            .field("metrics_listen_address", &self.metrics_listen_address)
            .field("worker_threads", &self.worker_threads)
            .field("rest_session_timeout", &self.rest_session_timeout)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("client_cert_verify", &self.client_cert_verify)
            .field("client_ca", &self.client_ca)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("shards", &self.shards)
            .field("max_name_bytes", &self.max_name_bytes)
            .field("max_rest_sessions", &self.max_rest_sessions)
            .field("max_waiters_per_lock", &self.max_waiters_per_lock)
            .field("max_connections", &self.max_connections)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("grpc_max_message_bytes", &self.grpc_max_message_bytes)
            .finish()
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

/// A validation failure: the option at fault and the message.
struct Invalid {
    option: &'static str,
    message: String,
}

impl Invalid {
    fn new(option: &'static str, message: String) -> Self {
        Self { option, message }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Source {
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
enum Raw {
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
    fn duration(&self) -> Result<Duration, String> {
        match self {
            Self::Text(s) => parse_go_duration(s).map_err(|e| e.to_string()),
            Self::Int(_) | Self::Float(_) => Err(
                "a bare number is not a duration (it has no unit): use a duration like \"30s\""
                    .into(),
            ),
            Self::Bool(_) => Err("expected a duration like \"30s\"".into()),
        }
    }

    fn boolean(&self) -> Result<bool, String> {
        match self {
            Self::Text(s) => parse_go_bool(s),
            Self::Bool(b) => Ok(*b),
            Self::Int(0) => Ok(false),
            Self::Int(1) => Ok(true),
            Self::Int(_) | Self::Float(_) => Err("expected a boolean (true or false)".into()),
        }
    }

    fn uint<T: TryFrom<u64>>(&self) -> Result<T, String> {
        let value: u64 = match self {
            Self::Text(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map_err(|_| "number too large".to_owned())?
            }
            Self::Int(i) if *i >= 0 => u64::try_from(*i).map_err(|_| "number too large")?,
            _ => return Err("expected a non-negative integer".into()),
        };
        T::try_from(value).map_err(|_| "number too large".into())
    }

    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Float(x) => x.to_string(),
        }
    }

    /// The text, `None` when empty ("off").
    fn optional_text(&self) -> Option<String> {
        Some(self.text()).filter(|s| !s.is_empty())
    }

    fn optional_path(&self) -> Option<PathBuf> {
        self.optional_text().map(PathBuf::from)
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

fn parse_version(value: &Raw, source: &Source) -> Result<bool, ConfigError> {
    value
        .boolean()
        .map_err(|detail| bad_value(VERSION, value, source, &detail))
}

fn bad_value(option: &str, value: &Raw, source: &Source, detail: &str) -> ConfigError {
    ConfigError::usage(format!(
        "invalid value {value} for {option} in {source}: {detail}"
    ))
}

fn apply(
    config: &mut ServerConfig,
    origins: &mut HashMap<&'static str, Source>,
    spec: &OptSpec,
    value: &Raw,
    source: Source,
) -> Result<(), ConfigError> {
    (spec.set)(config, value).map_err(|detail| {
        // Never echo a password back (no parse can fail for it today; this keeps it so).
        let shown = if spec.name == "password" {
            Raw::Text("<redacted>".into())
        } else {
            value.clone()
        };
        bad_value(spec.name, &shown, &source, &detail)
    })?;
    origins.insert(spec.name, source);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The option table: one row per option, driving flags, help, environment and file keys.

const CONFIG_FILE: &str = "config_file";
const VERSION: &str = "version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Duration,
    Text,
    Int,
    Level,
}

impl Kind {
    fn value_name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Duration => "duration",
            Self::Text => "string",
            Self::Int => "int",
            Self::Level => "level",
        }
    }
}

type Setter = fn(&mut ServerConfig, &Raw) -> Result<(), String>;
type Shower = fn(&ServerConfig) -> String;

struct OptSpec {
    name: &'static str,
    short: Option<char>,
    kind: Kind,
    help: &'static str,
    set: Setter,
    show: Shower,
}

fn show_path(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Every option of [`ServerConfig`] except `config_file`, in help order (go-ldlm's, then ours).
static OPTIONS: &[OptSpec] = &[
    OptSpec {
        name: "log_level",
        short: Some('v'),
        kind: Kind::Level,
        help: "Log level: debug, info, warn or error (any case)",
        set: |c, v| {
            c.log_level = v.text().parse()?;
            Ok(())
        },
        show: |c| c.log_level.to_string(),
    },
    OptSpec {
        name: "lock_gc_interval",
        short: Some('g'),
        kind: Kind::Duration,
        help: "How often unused locks are garbage collected",
        set: |c, v| {
            c.lock_gc_interval = v.duration()?;
            Ok(())
        },
        show: |c| format_go_duration(c.lock_gc_interval),
    },
    OptSpec {
        name: "lock_gc_min_idle",
        short: Some('m'),
        kind: Kind::Duration,
        help: "How long a lock must be unused before garbage collection removes it",
        set: |c, v| {
            c.lock_gc_min_idle = v.duration()?;
            Ok(())
        },
        show: |c| format_go_duration(c.lock_gc_min_idle),
    },
    OptSpec {
        name: "default_lock_timeout",
        short: Some('d'),
        kind: Kind::Duration,
        help: "Lock timeout of locks restored from the state file",
        set: |c, v| {
            c.default_lock_timeout = v.duration()?;
            Ok(())
        },
        show: |c| format_go_duration(c.default_lock_timeout),
    },
    OptSpec {
        name: "no_clear_on_disconnect",
        short: Some('n'),
        kind: Kind::Bool,
        help: "Keep a client's locks when it disconnects",
        set: |c, v| {
            c.no_clear_on_disconnect = v.boolean()?;
            Ok(())
        },
        show: |c| c.no_clear_on_disconnect.to_string(),
    },
    OptSpec {
        name: "ipc_socket_file",
        short: None,
        kind: Kind::Text,
        help: "Unix socket for ldlm-lock (list, unlock); empty turns IPC off",
        set: |c, v| {
            c.ipc_socket_file = v.optional_path();
            Ok(())
        },
        show: |c| show_path(&c.ipc_socket_file),
    },
    OptSpec {
        name: "state_file",
        short: Some('s'),
        kind: Kind::Text,
        help: "File that keeps held locks across restarts; empty = none",
        set: |c, v| {
            c.state_file = v.optional_path();
            Ok(())
        },
        show: |c| show_path(&c.state_file),
    },
    OptSpec {
        name: "keepalive_interval",
        short: Some('k'),
        kind: Kind::Duration,
        help: "How often idle gRPC clients are pinged",
        set: |c, v| {
            c.keepalive_interval = v.duration()?;
            Ok(())
        },
        show: |c| format_go_duration(c.keepalive_interval),
    },
    OptSpec {
        name: "keepalive_timeout",
        short: Some('t'),
        kind: Kind::Duration,
        help: "How long a keepalive ping may go unanswered before the client is dropped",
        set: |c, v| {
            c.keepalive_timeout = v.duration()?;
            Ok(())
        },
        show: |c| format_go_duration(c.keepalive_timeout),
    },
    OptSpec {
        name: "listen_address",
        short: Some('l'),
        kind: Kind::Text,
        help: "gRPC listen address (host:port)",
        set: |c, v| {
            c.listen_address = v.text();
            Ok(())
        },
        show: |c| c.listen_address.clone(),
    },
    OptSpec {
        name: "rest_listen_address",
        short: Some('r'),
        kind: Kind::Text,
        help: "REST listen address (host:port); empty turns REST off",
        set: |c, v| {
            c.rest_listen_address = v.optional_text();
            Ok(())
        },
        show: |c| c.rest_listen_address.clone().unwrap_or_default(),
    },
    OptSpec {
        name: "worker_threads",
        short: None,
        kind: Kind::Int,
        help: "Async runtime worker threads; 0 means one per CPU core",
        set: |c, v| {
            c.worker_threads = v.uint()?;
            Ok(())
        },
        show: |c| c.worker_threads.to_string(),
    },
    OptSpec {
        name: "metrics_listen_address",
        short: None,
        kind: Kind::Text,
        help: "Prometheus metrics address (host:port, GET /metrics); empty turns it off",
        set: |c, v| {
            c.metrics_listen_address = v.optional_text();
            Ok(())
        },
        show: |c| c.metrics_listen_address.clone().unwrap_or_default(),
    },
    OptSpec {
        name: "rest_session_timeout",
        short: None,
        kind: Kind::Duration,
        help: "Idle time after which a REST session expires and its locks are released",
        set: |c, v| {
            c.rest_session_timeout = v.duration()?;
            Ok(())
        },
        show: |c| format_go_duration(c.rest_session_timeout),
    },
    OptSpec {
        name: "tls_cert",
        short: None,
        kind: Kind::Text,
        help: "Server TLS certificate file (PEM) for gRPC and REST; needs --tls_key",
        set: |c, v| {
            c.tls_cert = v.optional_path();
            Ok(())
        },
        show: |c| show_path(&c.tls_cert),
    },
    OptSpec {
        name: "tls_key",
        short: None,
        kind: Kind::Text,
        help: "Private key file (PEM) of --tls_cert; needs --tls_cert",
        set: |c, v| {
            c.tls_key = v.optional_path();
            Ok(())
        },
        show: |c| show_path(&c.tls_key),
    },
    OptSpec {
        name: "client_cert_verify",
        short: None,
        kind: Kind::Bool,
        help: "Require client certificates, verified against the system roots or --client_ca; \
               needs TLS",
        set: |c, v| {
            c.client_cert_verify = v.boolean()?;
            Ok(())
        },
        show: |c| c.client_cert_verify.to_string(),
    },
    OptSpec {
        name: "client_ca",
        short: None,
        kind: Kind::Text,
        help: "CA file (PEM) that client certificates must chain to (implies \
               --client_cert_verify); needs TLS",
        set: |c, v| {
            c.client_ca = v.optional_path();
            Ok(())
        },
        show: |c| show_path(&c.client_ca),
    },
    OptSpec {
        name: "password",
        short: None,
        kind: Kind::Text,
        help: "Password clients must send (gRPC metadata \"authorization\", REST Basic auth); \
               empty = none",
        set: |c, v| {
            c.password = v.optional_text();
            Ok(())
        },
        show: |c| {
            if c.password.is_some() {
                "<redacted>".into()
            } else {
                String::new()
            }
        },
    },
    OptSpec {
        name: "shards",
        short: None,
        kind: Kind::Int,
        help: "Number of lock-table shards: a power of two from 1 to 65536",
        set: |c, v| {
            c.shards = v.uint()?;
            Ok(())
        },
        show: |c| c.shards.to_string(),
    },
    OptSpec {
        name: "max_name_bytes",
        short: None,
        kind: Kind::Int,
        help: "Longest accepted lock name, in bytes",
        set: |c, v| {
            c.max_name_bytes = v.uint()?;
            Ok(())
        },
        show: |c| c.max_name_bytes.to_string(),
    },
    OptSpec {
        name: "max_rest_sessions",
        short: None,
        kind: Kind::Int,
        help: "Most REST sessions open at once",
        set: |c, v| {
            c.max_rest_sessions = v.uint()?;
            Ok(())
        },
        show: |c| c.max_rest_sessions.to_string(),
    },
    OptSpec {
        name: "max_waiters_per_lock",
        short: None,
        kind: Kind::Int,
        help: "Most clients waiting for one lock at once",
        set: |c, v| {
            c.max_waiters_per_lock = v.uint()?;
            Ok(())
        },
        show: |c| c.max_waiters_per_lock.to_string(),
    },
    OptSpec {
        name: "max_connections",
        short: None,
        kind: Kind::Int,
        help: "Most client connections open at once",
        set: |c, v| {
            c.max_connections = v.uint()?;
            Ok(())
        },
        show: |c| c.max_connections.to_string(),
    },
    OptSpec {
        name: "max_request_bytes",
        short: None,
        kind: Kind::Int,
        help: "Largest REST or IPC request body, in bytes",
        set: |c, v| {
            c.max_request_bytes = v.uint()?;
            Ok(())
        },
        show: |c| c.max_request_bytes.to_string(),
    },
    OptSpec {
        name: "grpc_max_message_bytes",
        short: None,
        kind: Kind::Int,
        help: "Largest gRPC message, in bytes",
        set: |c, v| {
            c.grpc_max_message_bytes = v.uint()?;
            Ok(())
        },
        show: |c| c.grpc_max_message_bytes.to_string(),
    },
];

fn help_line(help: &str, default: &str, name: &str) -> String {
    let default = if default.is_empty() {
        "\"\"".to_owned()
    } else {
        default.to_owned()
    };
    format!("{help} [default: {default}] [env: {}]", env_var_name(name))
}

fn flag_arg(name: &'static str, short: Option<char>, kind: Kind, help: String) -> Arg {
    let mut arg = Arg::new(name)
        .long(name)
        .value_name(kind.value_name())
        .value_parser(clap::value_parser!(String))
        .action(ArgAction::Set)
        .help(help);
    if let Some(short) = short {
        arg = arg.short(short);
    }
    if kind == Kind::Bool {
        // `--flag` alone is true; a value must be attached: `--flag=false`.
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else {
        // Like Go's flag packages, the next argument is the value even if it starts with `-`.
        arg.allow_hyphen_values(true)
    }
}

/// The `ldlm-server` command line as a [`clap::Command`]: every option of the table with its
/// short flag, value name and help (default and environment variable included). [`load_from`]
/// parses with it and `--help` prints it; `ldlm-completions` generates the shell completions and
/// the man page from it.
pub fn command() -> Command {
    let defaults = ServerConfig::defaults();
    let mut cmd = Command::new("ldlm-server")
        .bin_name("ldlm-server")
        .about("LDLM lock server: named locks over gRPC, REST and a local admin socket")
        .color(ColorChoice::Never)
        .term_width(100)
        .args_override_self(true)
        .disable_version_flag(true)
        .after_help(
            "Each option can also be set with its environment variable (LDLM_<NAME>, empty = \
             unset) and as a key <name> in the config file (.json, .yaml or .yml). Precedence: \
             default < config file < environment < command line. Durations use Go syntax \
             (300ms, 10s, 1h30m).",
        )
        .arg(flag_arg(
            CONFIG_FILE,
            Some('c'),
            Kind::Text,
            help_line("Config file (.json, .yaml or .yml)", "", CONFIG_FILE),
        ))
        .arg(flag_arg(
            VERSION,
            None,
            Kind::Bool,
            help_line("Print version information and exit", "false", VERSION),
        ));
    for spec in OPTIONS {
        let help = help_line(spec.help, &(spec.show)(&defaults), spec.name);
        cmd = cmd.arg(flag_arg(spec.name, spec.short, spec.kind, help));
    }
    cmd
}

// ---------------------------------------------------------------------------------------------
// Config files.

/// Reads a config file into (key, value) pairs in file order; `None` for a null value.
fn read_config_file(path: &Path) -> Result<Vec<(String, Option<Raw>)>, ConfigError> {
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

fn json_number(n: &serde_json::Number) -> Raw {
    if let Some(i) = n.as_i64() {
        Raw::Int(i.into())
    } else if let Some(u) = n.as_u64() {
        Raw::Int(u.into())
    } else {
        Raw::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn yaml_number(n: &serde_norway::Number) -> Raw {
    if let Some(i) = n.as_i64() {
        Raw::Int(i.into())
    } else if let Some(u) = n.as_u64() {
        Raw::Int(u.into())
    } else {
        Raw::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests;
