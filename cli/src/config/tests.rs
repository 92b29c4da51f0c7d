//! Unit tests of the configuration loader. The environment is injected: no test reads or
//! changes the process environment.

use super::*;
use std::io::Write as _;
use std::time::Duration;

fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let args = std::iter::once("ldlm-server")
        .chain(args.iter().copied())
        .map(OsString::from);
    load_from(args, &move |name: &str| env.get(name).cloned())
}

#[track_caller]
fn config(args: &[&str], env: &[(&str, &str)]) -> ServerConfig {
    match load_with(args, env) {
        Ok(Loaded::Run(config)) => *config,
        other => panic!("expected a configuration, got {other:?}"),
    }
}

#[track_caller]
fn error(args: &[&str], env: &[(&str, &str)]) -> ConfigError {
    match load_with(args, env) {
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "{needle:?} not in {haystack:?}");
    }
}

/// A config file with the given extension and contents, in a fresh temporary directory.
fn file(ext: &str, contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("ldlm.{ext}"));
    let mut f = std::fs::File::create(&path).expect("create config file");
    f.write_all(contents.as_bytes()).expect("write config file");
    (dir, path.to_str().expect("utf-8 temp path").to_owned())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults() {
    let c = config(&[], &[]);
    assert_eq!(c, ServerConfig::defaults());
    assert_eq!(c, ServerConfig::default());
    assert_eq!(c.config_file, None);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.lock_gc_interval, secs(30 * 60));
    assert_eq!(c.lock_gc_min_idle, secs(5 * 60));
    assert_eq!(c.default_lock_timeout, secs(10 * 60));
    assert!(!c.no_clear_on_disconnect);
    assert_eq!(
        c.ipc_socket_file,
        Some(std::env::temp_dir().join("ldlm-ipc.sock"))
    );
    assert_eq!(c.state_file, None);
    assert_eq!(c.keepalive_interval, secs(60));
    assert_eq!(c.keepalive_timeout, secs(10));
    assert_eq!(c.listen_address, "localhost:3144");
    assert_eq!(c.rest_listen_address, None);
    assert_eq!(c.rest_session_timeout, secs(10 * 60));
    assert_eq!(c.tls_cert, None);
    assert_eq!(c.tls_key, None);
    assert!(!c.client_cert_verify);
    assert_eq!(c.client_ca, None);
    assert_eq!(c.password, None);
    assert_eq!(c.shards, 16);
    assert_eq!(c.max_name_bytes, 4096);
    assert_eq!(c.max_rest_sessions, 100_000);
    assert_eq!(c.max_waiters_per_lock, 100_000);
    assert_eq!(c.max_connections, 10_000);
    assert_eq!(c.max_request_bytes, 65_536);
    assert_eq!(c.grpc_max_message_bytes, 4_194_304);
    assert!(ServerConfig::defaults().validate().is_ok());
}

#[test]
fn short_flags() {
    let (_dir, path) = file("yaml", "state_file: /from/file\n");
    let c = config(
        &[
            "-c",
            &path,
            "-v",
            "debug",
            "-g",
            "1m",
            "-m",
            "2m",
            "-d",
            "3m",
            "-n",
            "-s",
            "/tmp/state",
            "-k",
            "4s",
            "-t",
            "5s",
            "-l",
            "0.0.0.0:1",
            "-r",
            "127.0.0.1:2",
        ],
        &[],
    );
    assert_eq!(c.config_file, Some(PathBuf::from(&path)));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.lock_gc_interval, secs(60));
    assert_eq!(c.lock_gc_min_idle, secs(120));
    assert_eq!(c.default_lock_timeout, secs(180));
    assert!(c.no_clear_on_disconnect);
    assert_eq!(c.state_file, Some(PathBuf::from("/tmp/state")));
    assert_eq!(c.keepalive_interval, secs(4));
    assert_eq!(c.keepalive_timeout, secs(5));
    assert_eq!(c.listen_address, "0.0.0.0:1");
    assert_eq!(c.rest_listen_address.as_deref(), Some("127.0.0.1:2"));
}

#[test]
fn short_flag_forms() {
    // Attached value, `=` value, and a cluster ending in a value-taking flag.
    assert_eq!(config(&["-g1m"], &[]).lock_gc_interval, secs(60));
    assert_eq!(config(&["-g=1m"], &[]).lock_gc_interval, secs(60));
    let c = config(&["-nvwarn"], &[]);
    assert!(c.no_clear_on_disconnect);
    assert_eq!(c.log_level, LogLevel::Warn);
    assert!(!config(&["-n=false"], &[]).no_clear_on_disconnect);
}

#[test]
fn long_flags() {
    let c = config(
        &[
            "--log_level",
            "ERROR",
            "--lock_gc_interval=1h30m",
            "--lock_gc_min_idle",
            "0",
            "--default_lock_timeout",
            "1.5h",
            "--no_clear_on_disconnect",
            "--ipc_socket_file",
            "/run/ldlm.sock",
            "--state_file",
            "/var/lib/ldlm/state",
            "--keepalive_interval",
            "2h45m30.5s",
            "--keepalive_timeout",
            "300ms",
            "--listen_address",
            "[::1]:3144",
            "--rest_listen_address",
            ":8080",
            "--rest_session_timeout",
            "90s",
            "--tls_cert",
            "cert.pem",
            "--tls_key",
            "key.pem",
            "--client_cert_verify",
            "--client_ca",
            "ca.pem",
            "--password",
            "-secret-",
            "--shards",
            "1024",
            "--max_name_bytes",
            "100",
            "--max_rest_sessions",
            "7",
            "--max_waiters_per_lock",
            "8",
            "--max_connections",
            "9",
            "--max_request_bytes",
            "1000",
            "--grpc_max_message_bytes",
            "2000",
        ],
        &[],
    );
    assert_eq!(c.log_level, LogLevel::Error);
    assert_eq!(c.lock_gc_interval, secs(5400));
    assert_eq!(c.lock_gc_min_idle, Duration::ZERO);
    assert_eq!(c.default_lock_timeout, secs(5400));
    assert!(c.no_clear_on_disconnect);
    assert_eq!(c.ipc_socket_file, Some(PathBuf::from("/run/ldlm.sock")));
    assert_eq!(c.state_file, Some(PathBuf::from("/var/lib/ldlm/state")));
    assert_eq!(
        c.keepalive_interval,
        Duration::from_millis(((2 * 60 + 45) * 60 + 30) * 1000 + 500)
    );
    assert_eq!(c.keepalive_timeout, Duration::from_millis(300));
    assert_eq!(c.listen_address, "[::1]:3144");
    assert_eq!(c.rest_listen_address.as_deref(), Some(":8080"));
    assert_eq!(c.rest_session_timeout, secs(90));
    assert_eq!(c.tls_cert, Some(PathBuf::from("cert.pem")));
    assert_eq!(c.tls_key, Some(PathBuf::from("key.pem")));
    assert!(c.client_cert_verify);
    assert!(c.requires_client_cert());
    assert_eq!(c.client_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(c.password.as_deref(), Some("-secret-"));
    assert_eq!(c.shards, 1024);
    assert_eq!(c.max_name_bytes, 100);
    assert_eq!(c.max_rest_sessions, 7);
    assert_eq!(c.max_waiters_per_lock, 8);
    assert_eq!(c.max_connections, 9);
    assert_eq!(c.max_request_bytes, 1000);
    assert_eq!(c.grpc_max_message_bytes, 2000);
}

#[test]
fn repeated_flag_last_wins() {
    let c = config(&["-l", "a:1", "--listen_address", "b:2"], &[]);
    assert_eq!(c.listen_address, "b:2");
}

#[test]
fn env_vars() {
    let c = config(
        &[],
        &[
            ("LDLM_LOG_LEVEL", "Warn"),
            ("LDLM_LOCK_GC_INTERVAL", "1m"),
            ("LDLM_LOCK_GC_MIN_IDLE", "2m"),
            ("LDLM_DEFAULT_LOCK_TIMEOUT", "3m"),
            ("LDLM_NO_CLEAR_ON_DISCONNECT", "true"),
            ("LDLM_IPC_SOCKET_FILE", "/run/x.sock"),
            ("LDLM_STATE_FILE", "/state"),
            ("LDLM_KEEPALIVE_INTERVAL", "4s"),
            ("LDLM_KEEPALIVE_TIMEOUT", "5s"),
            ("LDLM_LISTEN_ADDRESS", "h:1"),
            ("LDLM_REST_LISTEN_ADDRESS", "h:2"),
            ("LDLM_REST_SESSION_TIMEOUT", "6s"),
            ("LDLM_TLS_CERT", "c.pem"),
            ("LDLM_TLS_KEY", "k.pem"),
            ("LDLM_CLIENT_CERT_VERIFY", "1"),
            ("LDLM_CLIENT_CA", "ca.pem"),
            ("LDLM_PASSWORD", "pw"),
            ("LDLM_SHARDS", "4"),
            ("LDLM_MAX_NAME_BYTES", "10"),
            ("LDLM_MAX_REST_SESSIONS", "11"),
            ("LDLM_MAX_WAITERS_PER_LOCK", "12"),
            ("LDLM_MAX_CONNECTIONS", "13"),
            ("LDLM_MAX_REQUEST_BYTES", "14"),
            ("LDLM_GRPC_MAX_MESSAGE_BYTES", "15"),
        ],
    );
    assert_eq!(c.log_level, LogLevel::Warn);
    assert_eq!(c.lock_gc_interval, secs(60));
    assert_eq!(c.lock_gc_min_idle, secs(120));
    assert_eq!(c.default_lock_timeout, secs(180));
    assert!(c.no_clear_on_disconnect);
    assert_eq!(c.ipc_socket_file, Some(PathBuf::from("/run/x.sock")));
    assert_eq!(c.state_file, Some(PathBuf::from("/state")));
    assert_eq!(c.keepalive_interval, secs(4));
    assert_eq!(c.keepalive_timeout, secs(5));
    assert_eq!(c.listen_address, "h:1");
    assert_eq!(c.rest_listen_address.as_deref(), Some("h:2"));
    assert_eq!(c.rest_session_timeout, secs(6));
    assert_eq!(c.tls_cert, Some(PathBuf::from("c.pem")));
    assert_eq!(c.tls_key, Some(PathBuf::from("k.pem")));
    assert!(c.client_cert_verify);
    assert_eq!(c.client_ca, Some(PathBuf::from("ca.pem")));
    assert_eq!(c.password.as_deref(), Some("pw"));
    assert_eq!(c.shards, 4);
    assert_eq!(
        (
            c.max_name_bytes,
            c.max_rest_sessions,
            c.max_waiters_per_lock,
            c.max_connections,
            c.max_request_bytes,
            c.grpc_max_message_bytes
        ),
        (10, 11, 12, 13, 14, 15)
    );
}

#[test]
fn empty_env_var_is_unset() {
    let c = config(
        &[],
        &[
            ("LDLM_LISTEN_ADDRESS", ""),
            ("LDLM_IPC_SOCKET_FILE", ""),
            ("LDLM_LOCK_GC_INTERVAL", ""),
            ("LDLM_CONFIG_FILE", ""),
        ],
    );
    assert_eq!(c, ServerConfig::defaults());
}

#[test]
fn flags_override_env() {
    let c = config(
        &[
            "-l",
            "flag:1",
            "--shards",
            "2",
            "--no_clear_on_disconnect=false",
        ],
        &[
            ("LDLM_LISTEN_ADDRESS", "env:1"),
            ("LDLM_SHARDS", "8"),
            ("LDLM_NO_CLEAR_ON_DISCONNECT", "true"),
            ("LDLM_STATE_FILE", "/env/state"),
        ],
    );
    assert_eq!(c.listen_address, "flag:1");
    assert_eq!(c.shards, 2);
    assert!(!c.no_clear_on_disconnect);
    // Not given as a flag: the environment's value stays.
    assert_eq!(c.state_file, Some(PathBuf::from("/env/state")));
}

#[test]
fn env_overrides_file_and_file_overrides_defaults() {
    let (_dir, path) = file(
        "yaml",
        "listen_address: file:1\nrest_listen_address: file:2\nshards: 32\n",
    );
    let c = config(
        &["-c", &path],
        &[("LDLM_LISTEN_ADDRESS", "env:1"), ("LDLM_SHARDS", "64")],
    );
    assert_eq!(c.listen_address, "env:1");
    assert_eq!(c.shards, 64);
    assert_eq!(c.rest_listen_address.as_deref(), Some("file:2"));
    // And a flag beats both.
    let c = config(&["-c", &path, "--shards", "128"], &[("LDLM_SHARDS", "64")]);
    assert_eq!(c.shards, 128);
}

const FULL_YAML: &str = "\
# every option
log_level: DEBUG
lock_gc_interval: 1m
lock_gc_min_idle: \"0\"
default_lock_timeout: 2m
no_clear_on_disconnect: true
ipc_socket_file: /run/ldlm.sock
state_file: /var/lib/ldlm.state
keepalive_interval: 30s
keepalive_timeout: 3s
listen_address: 0.0.0.0:3144
rest_listen_address: 0.0.0.0:8080
rest_session_timeout: 5m
tls_cert: /c.pem
tls_key: /k.pem
client_cert_verify: \"T\"
client_ca: /ca.pem
password: 1234
shards: 256
max_name_bytes: \"512\"
max_rest_sessions: 1
max_waiters_per_lock: 2
max_connections: 3
max_request_bytes: 4
grpc_max_message_bytes: 5
";

fn assert_full(c: &ServerConfig) {
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.lock_gc_interval, secs(60));
    assert_eq!(c.lock_gc_min_idle, Duration::ZERO);
    assert_eq!(c.default_lock_timeout, secs(120));
    assert!(c.no_clear_on_disconnect);
    assert_eq!(c.ipc_socket_file, Some(PathBuf::from("/run/ldlm.sock")));
    assert_eq!(c.state_file, Some(PathBuf::from("/var/lib/ldlm.state")));
    assert_eq!(c.keepalive_interval, secs(30));
    assert_eq!(c.keepalive_timeout, secs(3));
    assert_eq!(c.listen_address, "0.0.0.0:3144");
    assert_eq!(c.rest_listen_address.as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(c.rest_session_timeout, secs(300));
    assert_eq!(c.tls_cert, Some(PathBuf::from("/c.pem")));
    assert_eq!(c.tls_key, Some(PathBuf::from("/k.pem")));
    assert!(c.client_cert_verify);
    assert_eq!(c.client_ca, Some(PathBuf::from("/ca.pem")));
    assert_eq!(c.password.as_deref(), Some("1234"));
    assert_eq!(c.shards, 256);
    assert_eq!(c.max_name_bytes, 512);
    assert_eq!(c.max_rest_sessions, 1);
    assert_eq!(c.max_waiters_per_lock, 2);
    assert_eq!(c.max_connections, 3);
    assert_eq!(c.max_request_bytes, 4);
    assert_eq!(c.grpc_max_message_bytes, 5);
}

#[test]
fn yaml_file_via_flag() {
    let (_dir, path) = file("yaml", FULL_YAML);
    let c = config(&["--config_file", &path], &[]);
    assert_full(&c);
    assert_eq!(c.config_file, Some(PathBuf::from(&path)));
}

#[test]
fn yaml_file_via_env() {
    let (_dir, path) = file("yaml", FULL_YAML);
    let c = config(&[], &[("LDLM_CONFIG_FILE", &path)]);
    assert_full(&c);
    assert_eq!(c.config_file, Some(PathBuf::from(&path)));
}

#[test]
fn config_file_flag_beats_env_and_empty_flag_means_none() {
    let (_dir, path) = file("yaml", "shards: 2\n");
    let (_dir2, other) = file("yml", "shards: 4\n");
    let c = config(&["-c", &path], &[("LDLM_CONFIG_FILE", &other)]);
    assert_eq!(c.shards, 2);
    let c = config(&["--config_file="], &[("LDLM_CONFIG_FILE", &other)]);
    assert_eq!(c.shards, 16);
    assert_eq!(c.config_file, None);
}

#[test]
fn yml_and_upper_case_extensions() {
    let (_dir, path) = file("yml", "shards: 8\nlock_gc_interval: 10s\n");
    let c = config(&["-c", &path], &[]);
    assert_eq!((c.shards, c.lock_gc_interval), (8, secs(10)));
    let (_dir, path) = file("YAML", "shards: 8\n");
    assert_eq!(config(&["-c", &path], &[]).shards, 8);
    let (_dir, path) = file("Json", "{\"shards\": 8}");
    assert_eq!(config(&["-c", &path], &[]).shards, 8);
}

#[test]
fn json_file() {
    let (_dir, path) = file(
        "json",
        r#"{
            "log_level": "DEBUG",
            "lock_gc_interval": "1m",
            "lock_gc_min_idle": "0",
            "default_lock_timeout": "2m",
            "no_clear_on_disconnect": true,
            "ipc_socket_file": "/run/ldlm.sock",
            "state_file": "/var/lib/ldlm.state",
            "keepalive_interval": "30s",
            "keepalive_timeout": "3s",
            "listen_address": "0.0.0.0:3144",
            "rest_listen_address": "0.0.0.0:8080",
            "rest_session_timeout": "5m",
            "tls_cert": "/c.pem",
            "tls_key": "/k.pem",
            "client_cert_verify": "T",
            "client_ca": "/ca.pem",
            "password": 1234,
            "shards": 256,
            "max_name_bytes": "512",
            "max_rest_sessions": 1,
            "max_waiters_per_lock": 2,
            "max_connections": 3,
            "max_request_bytes": 4,
            "grpc_max_message_bytes": 5
        }"#,
    );
    assert_full(&config(&["-c", &path], &[]));
}

#[test]
fn empty_and_null_file_values() {
    let (_dir, path) = file("yaml", "");
    assert_eq!(config(&["-c", &path], &[]).shards, 16);
    let (_dir, path) = file("yaml", "# only a comment\n");
    assert_eq!(config(&["-c", &path], &[]).shards, 16);
    let (_dir, path) = file("yaml", "shards:\nstate_file: ~\n");
    let c = config(&["-c", &path], &[]);
    assert_eq!((c.shards, c.state_file), (16, None));
    let (_dir, path) = file("json", "{\"shards\": null}");
    assert_eq!(config(&["-c", &path], &[]).shards, 16);
}

#[test]
fn bad_extension() {
    for ext in ["toml", "txt", "conf"] {
        let (_dir, path) = file(ext, "shards: 2\n");
        let e = error(&["-c", &path], &[]);
        assert_contains(e.message(), &[&path, ".json", ".yaml", ".yml"]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let no_ext = dir.path().join("config");
    std::fs::write(&no_ext, "shards: 2\n").expect("write");
    let e = error(&["-c", no_ext.to_str().expect("utf-8")], &[]);
    assert_contains(e.message(), &[".json", ".yaml", ".yml"]);
}

#[test]
fn missing_and_malformed_files() {
    let e = error(&["-c", "/nonexistent/ldlm.yaml"], &[]);
    assert_contains(
        e.message(),
        &["cannot read config file", "/nonexistent/ldlm.yaml"],
    );
    let (_dir, path) = file("json", "{\"shards\": ");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["invalid JSON", &path],
    );
    let (_dir, path) = file("yaml", "shards: [1, 2\n");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["invalid YAML", &path],
    );
    let (_dir, path) = file("yaml", "- a\n- b\n");
    assert_contains(error(&["-c", &path], &[]).message(), &["mapping", &path]);
    let (_dir, path) = file("yaml", "shards: [1, 2]\n");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["\"shards\"", "single value"],
    );
    let (_dir, path) = file("json", "[]");
    assert_contains(error(&["-c", &path], &[]).message(), &["mapping"]);
}

#[test]
fn unknown_file_key() {
    let (_dir, path) = file("yaml", "shards: 2\nlock_gc_intervall: 1m\n");
    let e = error(&["-c", &path], &[]);
    assert_contains(
        e.message(),
        &[
            "unknown configuration file field",
            "\"lock_gc_intervall\"",
            &path,
        ],
    );
    let (_dir, path) = file("json", "{\"ListenAddress\": \"x:1\"}");
    assert_contains(error(&["-c", &path], &[]).message(), &["\"ListenAddress\""]);
    let (_dir, path) = file("yaml", "config_file: other.yaml\n");
    assert_contains(error(&["-c", &path], &[]).message(), &["config_file"]);
}

#[test]
fn bad_duration_in_file() {
    let (_dir, path) = file("yaml", "lock_gc_interval: 30\n");
    let e = error(&["-c", &path], &[]);
    assert_contains(
        e.message(),
        &[
            "lock_gc_interval",
            "config file",
            &path,
            "use a duration like \"30s\"",
        ],
    );
    let (_dir, path) = file("json", "{\"keepalive_timeout\": 1.5}");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["keepalive_timeout", &path, "\"30s\""],
    );
    let (_dir, path) = file("yaml", "default_lock_timeout: 10 minutes\n");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["default_lock_timeout", &path, "\"10 minutes\""],
    );
}

#[test]
fn bad_duration_in_env() {
    let e = error(&[], &[("LDLM_LOCK_GC_MIN_IDLE", "5x")]);
    assert_contains(
        e.message(),
        &[
            "lock_gc_min_idle",
            "environment variable LDLM_LOCK_GC_MIN_IDLE",
            "\"5x\"",
            "unknown unit",
        ],
    );
    let e = error(&[], &[("LDLM_KEEPALIVE_INTERVAL", "-1s")]);
    assert_contains(
        e.message(),
        &["keepalive_interval", "LDLM_KEEPALIVE_INTERVAL", "negative"],
    );
}

#[test]
fn bad_duration_in_flag() {
    let e = error(&["-d", "10"], &[]);
    assert_contains(
        e.message(),
        &[
            "default_lock_timeout",
            "command line flag --default_lock_timeout",
            "missing unit",
        ],
    );
    let e = error(&["--rest_session_timeout="], &[]);
    assert_contains(
        e.message(),
        &[
            "rest_session_timeout",
            "--rest_session_timeout",
            "invalid duration",
        ],
    );
}

#[test]
fn bad_other_values() {
    assert_contains(
        error(&["-v", "verbose"], &[]).message(),
        &["log_level", "--log_level", "unknown log level \"verbose\""],
    );
    assert_contains(
        error(&[], &[("LDLM_SHARDS", "many")]).message(),
        &["shards", "LDLM_SHARDS", "non-negative integer"],
    );
    assert_contains(
        error(&["--shards", "-4"], &[]).message(),
        &["shards", "non-negative integer"],
    );
    assert_contains(
        error(&["--shards", "99999999999"], &[]).message(),
        &["shards", "too large"],
    );
    let (_dir, path) = file("yaml", "max_connections: -1\n");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["max_connections", &path],
    );
    let (_dir, path) = file("yaml", "no_clear_on_disconnect: yes please\n");
    assert_contains(
        error(&["-c", &path], &[]).message(),
        &["no_clear_on_disconnect", &path, "boolean"],
    );
}

#[test]
fn unknown_flag_exits_2() {
    let e = error(&["--bogus"], &[]);
    assert_contains(e.message(), &["--bogus"]);
    assert!(!e.message().starts_with("error:"), "{e}");
    let e = error(&["-x"], &[]);
    assert_contains(e.message(), &["-x"]);
    let e = error(&["stray"], &[]);
    assert_contains(e.message(), &["stray"]);
    // A value-taking flag without its value.
    let e = error(&["--state_file"], &[]);
    assert_contains(e.message(), &["--state_file"]);
    // A bool flag does not take the next argument as its value.
    let e = error(&["--no_clear_on_disconnect", "false"], &[]);
    assert_contains(e.message(), &["false"]);
}

#[test]
fn help() {
    for flag in ["--help", "-h", "-help"] {
        let Ok(Loaded::Help(text)) = load_with(&[flag], &[]) else {
            panic!("{flag} should give help");
        };
        assert_contains(
            &text,
            &[
                "--default_lock_timeout",
                "-d, --default_lock_timeout <duration>",
                "[default: 10m0s]",
                "LDLM_DEFAULT_LOCK_TIMEOUT",
                "-c, --config_file",
                "--version",
                "[default: localhost:3144]",
                "[default: 30m0s]",
                "Precedence",
            ],
        );
        assert!(text.ends_with('\n'));
        for spec in OPTIONS {
            assert_contains(
                &text,
                &[&format!("--{}", spec.name), &env_var_name(spec.name)],
            );
            if let Some(short) = spec.short {
                assert_contains(&text, &[&format!("-{short}, --{}", spec.name)]);
            }
        }
    }
    // Help is answered before any value is parsed or checked.
    assert!(matches!(
        load_with(&["--help", "--shards", "3"], &[]),
        Ok(Loaded::Help(_))
    ));
}

#[test]
fn version() {
    let want = format!(
        "Version: {}\nCommit: {}\nBuilt: {}\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("LDLM_GIT_COMMIT")
            .filter(|s| !s.is_empty())
            .unwrap_or("none"),
        option_env!("LDLM_BUILD_DATE")
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown"),
    );
    assert_eq!(version_text(), want);
    assert_eq!(
        load_with(&["--version"], &[]),
        Ok(Loaded::Version(want.clone()))
    );
    assert_eq!(
        load_with(&["--version=true"], &[]),
        Ok(Loaded::Version(want.clone()))
    );
    // Answered without reading the rest of the configuration.
    assert_eq!(
        load_with(
            &["--version", "--shards", "3"],
            &[("LDLM_CONFIG_FILE", "/nope.yaml")]
        ),
        Ok(Loaded::Version(want.clone()))
    );
    assert_eq!(
        load_with(&[], &[("LDLM_VERSION", "1")]),
        Ok(Loaded::Version(want.clone()))
    );
    let (_dir, path) = file("yaml", "version: true\n");
    assert_eq!(load_with(&["-c", &path], &[]), Ok(Loaded::Version(want)));
    // The flag beats the environment and the file.
    assert!(matches!(
        load_with(
            &["--version=false", "-c", &path],
            &[("LDLM_VERSION", "true")]
        ),
        Ok(Loaded::Run(_))
    ));
    assert_contains(
        error(&[], &[("LDLM_VERSION", "yes")]).message(),
        &["version", "LDLM_VERSION"],
    );
}

#[test]
fn tls_key_without_cert() {
    let e = error(&["--tls_key", "k.pem"], &[]);
    assert_contains(e.message(), &["tls_key", "tls_cert", "--tls_key"]);
    let e = error(&["--tls_cert", "c.pem"], &[]);
    assert_contains(e.message(), &["tls_cert", "tls_key"]);
    let c = config(&["--tls_cert", "c.pem", "--tls_key", "k.pem"], &[]);
    assert_eq!(c.tls_cert, Some(PathBuf::from("c.pem")));
    assert!(!c.requires_client_cert());
}

#[test]
fn client_verification_without_cert() {
    const MSG: &str = "client TLS certificate verification requires server TLS to be configured";
    let e = error(&["--client_ca", "ca.pem"], &[]);
    assert!(e.message().starts_with(MSG), "{e}");
    assert_contains(
        e.message(),
        &["client_ca set by command line flag --client_ca"],
    );
    let e = error(&[], &[("LDLM_CLIENT_CERT_VERIFY", "true")]);
    assert!(e.message().starts_with(MSG), "{e}");
    assert_contains(e.message(), &["LDLM_CLIENT_CERT_VERIFY"]);
    let (_dir, path) = file("yaml", "client_ca: /ca.pem\n");
    assert_contains(error(&["-c", &path], &[]).message(), &[MSG, &path]);
    let c = config(
        &["--tls_cert", "c", "--tls_key", "k", "--client_ca", "ca"],
        &[],
    );
    assert!(c.requires_client_cert());
    assert!(!c.client_cert_verify);
}

#[test]
fn bool_forms() {
    for (text, want) in [
        ("1", true),
        ("t", true),
        ("T", true),
        ("TRUE", true),
        ("true", true),
        ("True", true),
        ("0", false),
        ("f", false),
        ("F", false),
        ("FALSE", false),
        ("false", false),
        ("False", false),
    ] {
        let c = config(&[], &[("LDLM_NO_CLEAR_ON_DISCONNECT", text)]);
        assert_eq!(c.no_clear_on_disconnect, want, "env {text}");
        let c = config(&[&format!("--no_clear_on_disconnect={text}")], &[]);
        assert_eq!(c.no_clear_on_disconnect, want, "flag {text}");
        let c = config(&[&format!("-n={text}")], &[]);
        assert_eq!(c.no_clear_on_disconnect, want, "short flag {text}");
    }
    for bad in ["yes", "tRUE", "2", "on", " true"] {
        let e = error(&[], &[("LDLM_NO_CLEAR_ON_DISCONNECT", bad)]);
        assert_contains(e.message(), &["no_clear_on_disconnect", "boolean"]);
        error(&[&format!("--no_clear_on_disconnect={bad}")], &[]);
    }
    assert!(config(&["--no_clear_on_disconnect"], &[]).no_clear_on_disconnect);
    assert!(config(&["-n"], &[]).no_clear_on_disconnect);
    // The flag alone beats a false environment value, and `=false` beats a true one.
    assert!(config(&["-n"], &[("LDLM_NO_CLEAR_ON_DISCONNECT", "false")]).no_clear_on_disconnect);
    let (_dir, path) = file(
        "yaml",
        "no_clear_on_disconnect: 1\nclient_cert_verify: false\n",
    );
    assert!(config(&["-c", &path], &[]).no_clear_on_disconnect);
}

#[test]
fn log_level_any_case() {
    for (text, want) in [
        ("debug", LogLevel::Debug),
        ("INFO", LogLevel::Info),
        ("Warn", LogLevel::Warn),
        ("eRRoR", LogLevel::Error),
    ] {
        assert_eq!(config(&["-v", text], &[]).log_level, want);
        assert_eq!(text.parse::<LogLevel>(), Ok(want));
        assert_eq!(want.to_string(), text.to_ascii_lowercase());
    }
    assert!("warning".parse::<LogLevel>().is_err());
}

#[test]
fn ipc_socket_file_empty_means_off() {
    assert_eq!(config(&["--ipc_socket_file="], &[]).ipc_socket_file, None);
    assert_eq!(
        config(&["--ipc_socket_file", ""], &[]).ipc_socket_file,
        None
    );
    // The flag beats a non-empty environment variable.
    let c = config(
        &["--ipc_socket_file="],
        &[("LDLM_IPC_SOCKET_FILE", "/x.sock")],
    );
    assert_eq!(c.ipc_socket_file, None);
    let (_dir, path) = file("yaml", "ipc_socket_file: \"\"\n");
    assert_eq!(config(&["-c", &path], &[]).ipc_socket_file, None);
    let (_dir, path) = file(
        "json",
        "{\"ipc_socket_file\": \"\", \"rest_listen_address\": \"\"}",
    );
    let c = config(&["-c", &path], &[]);
    assert_eq!((c.ipc_socket_file, c.rest_listen_address), (None, None));
    // An empty password is no password.
    assert_eq!(config(&["--password="], &[]).password, None);
}

#[test]
fn shards_validation() {
    for ok in [1u32, 2, 4, 16, 1024, 65_536] {
        assert_eq!(config(&["--shards", &ok.to_string()], &[]).shards, ok);
    }
    for bad in ["0", "3", "12", "65535", "131072", "4294967295"] {
        let e = error(&["--shards", bad], &[]);
        assert_contains(
            e.message(),
            &[
                "shards must be a power of two between 1 and 65536",
                bad,
                "--shards",
            ],
        );
    }
    let e = error(&[], &[("LDLM_SHARDS", "3")]);
    assert_contains(e.message(), &["power of two", "LDLM_SHARDS"]);
}

#[test]
fn zero_values_rejected_where_meaningless() {
    for option in [
        "lock_gc_interval",
        "default_lock_timeout",
        "keepalive_interval",
        "keepalive_timeout",
        "rest_session_timeout",
    ] {
        let e = error(&[&format!("--{option}=0s")], &[]);
        assert_contains(e.message(), &[&format!("{option} must be greater than 0")]);
    }
    for option in [
        "max_name_bytes",
        "max_rest_sessions",
        "max_waiters_per_lock",
        "max_connections",
        "max_request_bytes",
        "grpc_max_message_bytes",
    ] {
        let e = error(&[&format!("--{option}=0")], &[]);
        assert_contains(e.message(), &[&format!("{option} must be at least 1")]);
    }
    assert_eq!(config(&["-m", "0"], &[]).lock_gc_min_idle, Duration::ZERO);
    assert_contains(
        error(&["-l", ""], &[]).message(),
        &["listen_address must not be empty"],
    );
}

#[test]
fn debug_redacts_password() {
    let c = config(&["--password", "hunter2-very-secret"], &[]);
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_contains(&shown, &["password: Some(\"<redacted>\")", "shards: 16"]);
    let shown = format!("{:?}", ServerConfig::defaults());
    assert_contains(&shown, &["password: None"]);
    // Nor does a loaded value appear in an error about another option.
    let e = error(&["--password", "hunter2", "--shards", "3"], &[]);
    assert!(!e.message().contains("hunter2"), "{e}");
}

#[test]
fn validate_on_hand_built_config() {
    let mut c = ServerConfig::defaults();
    c.tls_key = Some("k".into());
    let e = c.validate().expect_err("key without cert");
    assert_eq!(e.exit_code(), EXIT_USAGE);
    assert_contains(e.message(), &["tls_key"]);
}

#[test]
fn env_var_names() {
    assert_eq!(env_var_name("config_file"), "LDLM_CONFIG_FILE");
    assert_eq!(
        env_var_name("grpc_max_message_bytes"),
        "LDLM_GRPC_MAX_MESSAGE_BYTES"
    );
}

#[test]
fn worker_threads_is_bounded() {
    assert_eq!(config(&["--worker_threads", "2"], &[]).worker_threads, 2);
    let e = error(&["--worker_threads", "5000"], &[]);
    assert_contains(e.message(), &["worker_threads", "1024"]);
}
