//! Packaging: the completions and man pages `ldlm-completions` generates, and the files the
//! Debian package ships (`packaging/`) agree with the real command lines and config loader.
//! (`packaging/check-deb.sh` builds the .deb itself and checks its contents.)

use std::path::{Path, PathBuf};
use std::process::Command;

use ldlm_cli::config::{Loaded, ServerConfig, load_from};

const COMPLETIONS: &str = env!("CARGO_BIN_EXE_ldlm-completions");

fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[track_caller]
fn load(path: &Path) -> ServerConfig {
    let args = ["ldlm-server", "-c", path.to_str().expect("UTF-8 path")];
    match load_from(args.map(Into::into), &|_| None) {
        Ok(Loaded::Run(config)) => *config,
        other => panic!("{} does not load: {other:?}", path.display()),
    }
}

/// Runs `ldlm-completions` into a temporary directory; returns it.
fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(COMPLETIONS)
        .arg(dir.path().join("completions"))
        .arg(dir.path().join("man"))
        .output()
        .expect("run ldlm-completions");
    assert!(
        output.status.success(),
        "ldlm-completions failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[test]
fn completions_and_man_pages_come_from_the_real_commands() {
    let dir = generate();
    let completions = dir.path().join("completions");
    let man = dir.path().join("man");
    for bin in ["ldlm-server", "ldlm-lock", "ldlm-bench"] {
        for file in [
            completions.join("bash").join(bin),
            completions.join("zsh").join(format!("_{bin}")),
            completions.join("fish").join(format!("{bin}.fish")),
            man.join(format!("{bin}.1")),
        ] {
            assert!(read(&file).contains(bin), "{} lacks {bin}", file.display());
        }
    }
    for page in ["ldlm-lock-list.1", "ldlm-lock-unlock.1"] {
        assert!(man.join(page).is_file(), "no man page {page}");
    }

    let server_bash = read(&completions.join("bash/ldlm-server"));
    for flag in [
        "--default_lock_timeout",
        "--listen_address",
        "--state_file",
        "--password",
    ] {
        assert!(
            server_bash.contains(flag),
            "ldlm-server bash completion lacks {flag}"
        );
    }
    let lock_bash = read(&completions.join("bash/ldlm-lock"));
    for word in ["unlock", "list", "--socket"] {
        assert!(
            lock_bash.contains(word),
            "ldlm-lock bash completion lacks {word}"
        );
    }
    let bench_bash = read(&completions.join("bash/ldlm-bench"));
    for word in ["--workload", "ratelimit", "--transport"] {
        assert!(
            bench_bash.contains(word),
            "ldlm-bench bash completion lacks {word}"
        );
    }
    assert!(read(&completions.join("zsh/_ldlm-server")).contains("default_lock_timeout"));
    assert!(read(&completions.join("fish/ldlm-lock.fish")).contains("unlock"));

    let server_man = read(&man.join("ldlm-server.1"));
    assert!(
        server_man.starts_with(".ie \\n(.g .ds Aq"),
        "not roff: {server_man:.80}"
    );
    for text in ["default_lock_timeout", "LDLM_STATE_FILE", "SEE ALSO"] {
        assert!(server_man.contains(text), "ldlm-server.1 lacks {text}");
    }

    // The bash scripts at least parse.
    if let Ok(status) = Command::new("bash")
        .arg("-n")
        .arg(completions.join("bash/ldlm-server"))
        .arg(completions.join("bash/ldlm-lock"))
        .status()
    {
        assert!(status.success(), "bash -n rejects a completion script");
    }
}

#[test]
fn packaged_config_file_loads() {
    let config = load(&packaging_dir().join("config.yaml"));
    assert_eq!(config.listen_address, "localhost:3144");
    assert_eq!(
        config.state_file.as_deref(),
        Some(Path::new("/var/lib/ldlm/ldlm.state"))
    );
    assert_eq!(
        config.ipc_socket_file.as_deref(),
        Some(Path::new("/run/ldlm/ldlm-ipc.sock"))
    );
    assert_eq!(config.rest_listen_address, None);
    assert_eq!(config.password, None);
    assert_eq!(config.tls_cert, None);
}

/// The commented-out examples (`# key: value` lines) are valid too: uncommented all together,
/// the file still loads, and every example took effect.
#[test]
fn packaged_config_examples_load() {
    let text = read(&packaging_dir().join("config.yaml"));
    let mut keys = Vec::new();
    let uncommented: String = text
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return format!("{line}\n");
            };
            match rest.split_once(": ") {
                Some((key, _))
                    if !key.is_empty()
                        && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                {
                    keys.push(key.to_owned());
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect();
    for key in [
        "rest_listen_address",
        "tls_cert",
        "tls_key",
        "client_ca",
        "password",
    ] {
        assert!(
            keys.iter().any(|k| k == key),
            "no commented example of {key}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, uncommented).expect("write");
    let config = load(&path);
    assert_eq!(
        config.rest_listen_address.as_deref(),
        Some("localhost:8080")
    );
    assert!(config.tls_cert.is_some() && config.tls_key.is_some());
    assert!(config.requires_client_cert());
    assert!(config.password.is_some());
    assert!(config.metrics_listen_address.is_some());
}

/// The unit runs the binary with the packaged config, as a dedicated user, and provides the
/// directories the config's state file and IPC socket live in.
#[test]
fn systemd_unit_matches_the_config() {
    let unit = read(&packaging_dir().join("ldlm-server.service"));
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("the unit has no {key}="))
    };
    assert_eq!(
        get("ExecStart"),
        "/usr/bin/ldlm-server -c /etc/ldlm/config.yaml"
    );
    assert_eq!(get("User"), "ldlm");
    assert_eq!(get("StateDirectory"), "ldlm");
    assert_eq!(get("RuntimeDirectory"), "ldlm");
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
    ] {
        get(hardening);
    }
    let config = load(&packaging_dir().join("config.yaml"));
    assert!(config.state_file.unwrap().starts_with("/var/lib/ldlm"));
    assert!(config.ipc_socket_file.unwrap().starts_with("/run/ldlm"));
    let postinst = read(&packaging_dir().join("debian/postinst"));
    assert!(postinst.contains("adduser --system") && postinst.contains("#DEBHELPER#"));
}
