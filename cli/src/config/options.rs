//! The option table: every `ldlm-server` option, written once.
//!
//! One entry of the `server_options!` invocation at the end of this file declares an option
//! completely: the [`ServerConfig`] field, whose name is the option's name everywhere (flag
//! `--<name>`, variable `LDLM_<NAME>`, file key `<name>`), its type, its default, its short
//! flag and its `--help` text. The macro turns the entries into the `ServerConfig` struct,
//! [`ServerConfig::defaults`], its `Debug` and [`OPTIONS`], the table through which flags,
//! environment variables and config files are all read. So adding an option is adding one
//! entry; code elsewhere is needed only for a rule that ties options together (`validate.rs`)
//! or for a new type of value (an [`OptionValue`] impl below).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::format_go_duration;

use super::LogLevel;
use super::raw::Raw;

/// The `-c`/`--config_file` flag and `LDLM_CONFIG_FILE`. Not in the table: it says where the
/// other options are read from, so it is read first and cannot be set inside a config file.
pub(super) const CONFIG_FILE: &str = "config_file";

/// The `--version` flag, `LDLM_VERSION` and file key. Not in the table: it is an action, not a
/// setting, and is answered before the other options are read.
pub(super) const VERSION: &str = "version";

/// Shown instead of a secret value (the password) in `Debug` output, errors and help.
const REDACTED: &str = "<redacted>";

/// What an option's value looks like: its `<value name>` in the help, and how its flag takes
/// the value (a boolean flag may stand alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Duration,
    Text,
    Int,
    Level,
}

impl Kind {
    pub(super) fn value_name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Duration => "duration",
            Self::Text => "string",
            Self::Int => "int",
            Self::Level => "level",
        }
    }
}

/// How a field's type is read from a [`Raw`] value and shown as a `--help` default. The type
/// alone decides it, so a table entry cannot pair, say, a duration field with an integer parser.
pub(super) trait OptionValue: Sized {
    /// The help's value name and flag behaviour for this type.
    const KIND: Kind;

    /// The value, or what is wrong with it (the caller adds the option, value and source).
    fn parse(raw: &Raw) -> Result<Self, String>;

    /// The value as `--help` shows it; empty for "off"/"none".
    fn show(&self) -> String;
}

impl OptionValue for LogLevel {
    const KIND: Kind = Kind::Level;

    fn parse(raw: &Raw) -> Result<Self, String> {
        raw.text().parse()
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl OptionValue for Duration {
    const KIND: Kind = Kind::Duration;

    fn parse(raw: &Raw) -> Result<Self, String> {
        raw.duration()
    }

    fn show(&self) -> String {
        format_go_duration(*self)
    }
}

impl OptionValue for bool {
    const KIND: Kind = Kind::Bool;

    fn parse(raw: &Raw) -> Result<Self, String> {
        raw.boolean()
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

/// Integer options: each field takes the integer type its user needs, and a value that does
/// not fit that type is "number too large" rather than a silent truncation.
macro_rules! integer_option_values {
    ($($int:ty),*) => {$(
        impl OptionValue for $int {
            const KIND: Kind = Kind::Int;

            fn parse(raw: &Raw) -> Result<Self, String> {
                raw.uint()
            }

            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

integer_option_values!(u32, u64, usize);

/// Required text: an empty value stays empty (validation decides whether that is allowed).
impl OptionValue for String {
    const KIND: Kind = Kind::Text;

    fn parse(raw: &Raw) -> Result<Self, String> {
        Ok(raw.text())
    }

    fn show(&self) -> String {
        self.clone()
    }
}

/// Optional text (an address, the password): empty means "off", i.e. `None`.
impl OptionValue for Option<String> {
    const KIND: Kind = Kind::Text;

    fn parse(raw: &Raw) -> Result<Self, String> {
        Ok(raw.optional_text())
    }

    fn show(&self) -> String {
        self.clone().unwrap_or_default()
    }
}

/// An optional file: empty means "none", i.e. `None`.
impl OptionValue for Option<PathBuf> {
    const KIND: Kind = Kind::Text;

    fn parse(raw: &Raw) -> Result<Self, String> {
        Ok(raw.optional_text().map(PathBuf::from))
    }

    fn show(&self) -> String {
        self.as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default()
    }
}

/// One row of [`OPTIONS`].
pub(super) struct OptSpec {
    /// The option's name: the field, the long flag, the file key, the variable after `LDLM_`.
    pub(super) name: &'static str,
    pub(super) short: Option<char>,
    pub(super) kind: Kind,
    pub(super) help: &'static str,
    /// Never show the value (the password): errors and help print [`REDACTED`] instead.
    pub(super) secret: bool,
    /// Parses a value and stores it in the option's field.
    pub(super) set: fn(&mut ServerConfig, &Raw) -> Result<(), String>,
    /// The option's current value in `config`, as [`OptionValue::show`] gives it.
    show: fn(&ServerConfig) -> String,
}

impl OptSpec {
    /// The option's value in `config` as `--help` shows its default: empty for "off", redacted
    /// if secret.
    pub(super) fn help_default(&self, config: &ServerConfig) -> String {
        let shown = (self.show)(config);
        if self.secret && !shown.is_empty() {
            REDACTED.to_owned()
        } else {
            shown
        }
    }

    /// `value` as an error message may quote it: redacted if the option is secret.
    pub(super) fn value_for_error(&self, value: &Raw) -> Raw {
        if self.secret {
            Raw::Text(REDACTED.into())
        } else {
            value.clone()
        }
    }
}

/// Declares the options. Each entry is
///
/// ```text
/// /// Field documentation.
/// name: Type = default;
///     short 'x', "help text";          (`short 'x',` only if the option has a short flag)
/// ```
///
/// with `, secret` after the help text for a value that must never be shown. It expands to the
/// `ServerConfig` struct (with `config_file` first, which is not in the table), its `defaults`,
/// its `Debug` (which hides secrets) and `OPTIONS`, all in table order.
macro_rules! server_options {
    (@secret) => { false };
    (@secret secret) => { true };
    (@debug $value:expr, secret) => { &$value.as_ref().map(|_| REDACTED) };
    (@debug $value:expr) => { &$value };
    (@short) => { None };
    (@short $short:literal) => { Some($short) };
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $type:ty = $default:expr;
            $(short $short:literal,)? $help:literal $(, $secret:ident)?;
    )*) => {
        /// The complete `ldlm-server` configuration. Field names are the option names.
        ///
        /// `Debug` never shows the password. Build one with [`load`](super::load)/
        /// [`load_from`](super::load_from), or start from [`ServerConfig::defaults`] (tests) and
        /// call [`ServerConfig::validate`].
        #[derive(Clone, PartialEq, Eq)]
        pub struct ServerConfig {
            /// The config file that was read (`-c`/`--config_file`, `LDLM_CONFIG_FILE`), if
            /// any. Informational: it is not itself an option of the file.
            pub config_file: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                pub $name: $type,
            )*
        }

        impl ServerConfig {
            /// The built-in defaults: go-ldlm's, plus our limits. They pass [`Self::validate`].
            pub fn defaults() -> Self {
                Self {
                    config_file: None,
                    $($name: $default,)*
                }
            }
        }

        impl fmt::Debug for ServerConfig {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("ServerConfig")
                    .field("config_file", &self.config_file)
                    $(.field(
                        stringify!($name),
                        server_options!(@debug self.$name $(, $secret)?),
                    ))*
                    .finish()
            }
        }

        /// Every option of [`ServerConfig`] except `config_file`, in help order (go-ldlm's
        /// options, then ours).
        pub(super) static OPTIONS: &[OptSpec] = &[$(
            OptSpec {
                name: stringify!($name),
                short: server_options!(@short $($short)?),
                kind: <$type as OptionValue>::KIND,
                help: $help,
                secret: server_options!(@secret $($secret)?),
                set: |config, raw| {
                    config.$name = OptionValue::parse(raw)?;
                    Ok(())
                },
                show: |config| OptionValue::show(&config.$name),
            },
        )*];
    };
}

server_options! {
    /// `-v`/`--log_level`: default `info`.
    log_level: LogLevel = LogLevel::Info;
        short 'v', "Log level: debug, info, warn or error (any case)";
    /// `-g`/`--lock_gc_interval`: how often idle locks are collected. Default 30m, > 0.
    lock_gc_interval: Duration = Duration::from_secs(30 * 60);
        short 'g', "How often unused locks are garbage collected";
    /// `-m`/`--lock_gc_min_idle`: how long a lock must be unused before it is collected.
    /// Default 5m; 0 is allowed.
    lock_gc_min_idle: Duration = Duration::from_secs(5 * 60);
        short 'm', "How long a lock must be unused before garbage collection removes it";
    /// `-d`/`--default_lock_timeout`: the lock timeout given to locks restored from the state
    /// file. Default 10m, > 0.
    default_lock_timeout: Duration = Duration::from_secs(10 * 60);
        short 'd', "Lock timeout of locks restored from the state file";
    /// `-n`/`--no_clear_on_disconnect`: keep a client's locks when it disconnects. Default false.
    no_clear_on_disconnect: bool = false;
        short 'n', "Keep a client's locks when it disconnects";
    /// `--ipc_socket_file`: the admin Unix socket for `ldlm-lock`; `None` (empty value) = IPC
    /// off. Default [`default_ipc_socket_file`](super::default_ipc_socket_file).
    ipc_socket_file: Option<PathBuf> = Some(super::default_ipc_socket_file());
        "Unix socket for ldlm-lock (list, unlock); empty turns IPC off";
    /// `-s`/`--state_file`: where held locks are persisted; `None` (default, empty) = nowhere.
    state_file: Option<PathBuf> = None;
        short 's', "File that keeps held locks across restarts; empty = none";
    /// `-k`/`--keepalive_interval`: gRPC keepalive ping interval. Default 1m, > 0.
    keepalive_interval: Duration = Duration::from_secs(60);
        short 'k', "How often idle gRPC clients are pinged";
    /// `-t`/`--keepalive_timeout`: how long a keepalive ping may go unanswered. Default 10s, > 0.
    keepalive_timeout: Duration = Duration::from_secs(10);
        short 't', "How long a keepalive ping may go unanswered before the client is dropped";
    /// `-l`/`--listen_address`: the gRPC listen address. Default `localhost:3144`, not empty.
    listen_address: String = "localhost:3144".to_owned();
        short 'l', "gRPC listen address (host:port)";
    /// `-r`/`--rest_listen_address`: the REST listen address; `None` (default, empty) = REST off.
    rest_listen_address: Option<String> = None;
        short 'r', "REST listen address (host:port); empty turns REST off";
    /// `--worker_threads`: async runtime threads; 0 (default) = one per CPU core; at most
    /// [`MAX_WORKER_THREADS`](super::MAX_WORKER_THREADS).
    worker_threads: usize = 0;
        "Async runtime worker threads; 0 means one per CPU core";
    /// `--metrics_listen_address`: where Prometheus metrics are served (`GET /metrics`);
    /// `None` (default, empty) = off.
    metrics_listen_address: Option<String> = None;
        "Prometheus metrics address (host:port, GET /metrics); empty turns it off";
    /// `--rest_session_timeout`: idle time after which a REST session expires. Default 10m, > 0.
    rest_session_timeout: Duration = Duration::from_secs(10 * 60);
        "Idle time after which a REST session expires and its locks are released";
    /// `--tls_cert`: server certificate (PEM) for gRPC and REST; `None` (default) = plaintext.
    tls_cert: Option<PathBuf> = None;
        "Server TLS certificate file (PEM) for gRPC and REST; needs --tls_key";
    /// `--tls_key`: the private key (PEM) for `tls_cert`; required with it, invalid without it.
    tls_key: Option<PathBuf> = None;
        "Private key file (PEM) of --tls_cert; needs --tls_cert";
    /// `--client_cert_verify`: require client certificates (system roots, or `client_ca`).
    /// Needs `tls_cert`. Default false.
    client_cert_verify: bool = false;
        "Require client certificates, verified against the system roots or --client_ca; \
         needs TLS";
    /// `--client_ca`: CA (PEM) that client certificates must chain to; implies
    /// `client_cert_verify` (see [`ServerConfig::requires_client_cert`]). Needs `tls_cert`.
    client_ca: Option<PathBuf> = None;
        "CA file (PEM) that client certificates must chain to (implies \
         --client_cert_verify); needs TLS";
    /// `--password`: password clients must present; `None` (default, empty) = no password.
    /// Never shown by `Debug`.
    password: Option<String> = None;
        "Password clients must send (gRPC metadata \"authorization\", REST Basic auth); \
         empty = none", secret;
    /// `--shards`: lock-table shards, a power of two from 1 to 65536. Default 16.
    shards: u32 = 16;
        "Number of lock-table shards: a power of two from 1 to 65536";
    /// `--max_name_bytes`: longest accepted lock name in bytes. Default 4096, ≥ 1.
    max_name_bytes: usize = 4096;
        "Longest accepted lock name, in bytes";
    /// `--max_rest_sessions`: most REST sessions open at once. Default 100000, ≥ 1.
    max_rest_sessions: usize = 100_000;
        "Most REST sessions open at once";
    /// `--max_waiters_per_lock`: most clients waiting on one lock at once. Default 100000, ≥ 1.
    max_waiters_per_lock: usize = 100_000;
        "Most clients waiting for one lock at once";
    /// `--max_connections`: most client connections open at once. Default 10000, ≥ 1.
    max_connections: usize = 10_000;
        "Most client connections open at once";
    /// `--max_request_bytes`: largest REST or IPC request body in bytes. Default 65536, ≥ 1.
    max_request_bytes: usize = 65_536;
        "Largest REST or IPC request body, in bytes";
    /// `--grpc_max_message_bytes`: largest gRPC message in bytes. Default 4194304, ≥ 1.
    grpc_max_message_bytes: usize = 4_194_304;
        "Largest gRPC message, in bytes";
    /// `--cluster_node_id`: this node's id in a cluster, a positive integer; 0 (default) runs a
    /// single server. Setting it turns cluster mode on.
    cluster_node_id: u64 = 0;
        "This node's id in a cluster (1 to 65535); setting it turns cluster mode on";
    /// `--cluster_peers`: the initial members, `ID=HOST:PORT,...`, this node included.
    cluster_peers: Option<String> = None;
        "The cluster's initial members as ID=HOST:PORT,... (this node included)";
    /// `--cluster_listen_address`: where this node listens for its peers; default: its own
    /// address in `cluster_peers`.
    cluster_listen_address: Option<String> = None;
        "Peer listen address (host:port); default: this node's address in --cluster_peers";
    /// `--cluster_data_dir`: the Raft log, the vote and snapshots; required in cluster mode.
    cluster_data_dir: Option<PathBuf> = None;
        "Directory of this node's Raft log, vote and snapshots (cluster mode)";
    /// `--cluster_election_timeout`: a follower that hears no leader for this long starts an
    /// election (randomised between 0.6 and 0.8 of it, up to 1.6 of it for a node that lost an
    /// election before); heartbeats every tenth. Default 1s.
    cluster_election_timeout: Duration = Duration::from_secs(1);
        "Time without a leader before a follower starts an election; heartbeats every tenth";
    /// `--cluster_session_grace`: how long a node may be out of contact before its gRPC
    /// clients' locks are released. Default 10s.
    cluster_session_grace: Duration = Duration::from_secs(10);
        "How long a node may be out of contact before its gRPC clients' locks are released";
    /// `--cluster_join`: a fresh node joins an existing cluster (it waits for `ldlm-lock
    /// cluster add` at one of the cluster's nodes) instead of forming one with `cluster_peers`.
    cluster_join: bool = false;
        "Join an existing cluster: wait to be added (ldlm-lock cluster add) instead of forming one";
    /// `--cluster_snapshot_every`: log entries between snapshots of the lock table (the log
    /// behind a snapshot is purged). Default 10000, ≥ 1.
    cluster_snapshot_every: u64 = 10_000;
        "Raft log entries between snapshots of the lock table (the log behind one is purged)";
}
