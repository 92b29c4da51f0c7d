//! TEMPORARY behaviour fingerprint (removed before hand-off).

use super::*;

const NAMES: &[&str] = &[
    "log_level",
    "lock_gc_interval",
    "lock_gc_min_idle",
    "default_lock_timeout",
    "no_clear_on_disconnect",
    "ipc_socket_file",
    "state_file",
    "keepalive_interval",
    "keepalive_timeout",
    "listen_address",
    "rest_listen_address",
    "worker_threads",
    "metrics_listen_address",
    "rest_session_timeout",
    "tls_cert",
    "tls_key",
    "client_cert_verify",
    "client_ca",
    "password",
    "shards",
    "max_name_bytes",
    "max_rest_sessions",
    "max_waiters_per_lock",
    "max_connections",
    "max_request_bytes",
    "grpc_max_message_bytes",
    "version",
    "config_file",
    "bogus",
];
const TEXTS: &[&str] = &[
    "",
    "x",
    "-1",
    "0",
    "1",
    "30",
    "1.5",
    "true",
    "False",
    "10s",
    "0s",
    "4",
    "3",
    "2048",
    "100000000000000000000000",
    "DEBUG",
    "1h30m",
    "a.pem",
];
const FILE_VALUES: &[&str] = &[
    "null",
    "0",
    "1",
    "30",
    "-3",
    "1.5",
    "true",
    "false",
    "\"10s\"",
    "\"\"",
    "\"x\"",
    "[1]",
    "{\"a\": 1}",
    "99999999999999999999999",
];

fn run(args: &[String], env: &[(String, String)]) -> String {
    let env: HashMap<String, String> = env.iter().cloned().collect();
    let args = std::iter::once("ldlm-server".to_owned())
        .chain(args.iter().cloned())
        .map(OsString::from);
    match load_from(args, &move |name: &str| env.get(name).cloned()) {
        Ok(Loaded::Run(c)) => format!("RUN {c:?}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("ERR {} {}", e.exit_code(), e.message()),
    }
}

#[test]
fn snapshot() {
    let Ok(out_path) = std::env::var("CFG_SNAPSHOT") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut out = String::new();
    let mut case = |label: String, args: Vec<String>, env: Vec<(String, String)>| {
        let r = run(&args, &env);
        let r = r.replace(dir.path().to_str().unwrap(), "<DIR>");
        out.push_str(&format!("== {label}\n{r}\n"));
    };
    for flag in [
        "--help",
        "-h",
        "-help",
        "--version",
        "--version=false",
        "-x",
        "stray",
        "--state_file",
    ] {
        case(flag.into(), vec![flag.into()], vec![]);
    }
    case("defaults".into(), vec![], vec![]);
    for name in NAMES {
        for v in TEXTS {
            case(
                format!("flag {name}={v}"),
                vec![format!("--{name}={v}")],
                vec![],
            );
            case(
                format!("flag2 {name} {v}"),
                vec![format!("--{name}"), v.to_string()],
                vec![],
            );
            case(
                format!("env {name}={v}"),
                vec![],
                vec![(env_var_name(name), v.to_string())],
            );
        }
        case(format!("bare {name}"), vec![format!("--{name}")], vec![]);
        for (i, v) in FILE_VALUES.iter().enumerate() {
            for ext in ["yaml", "json"] {
                let path = dir.path().join(format!("{name}{i}.{ext}"));
                let body = if ext == "json" {
                    format!("{{\"{name}\": {v}}}")
                } else {
                    format!("{name}: {v}\n")
                };
                std::fs::write(&path, body).unwrap();
                let p = path.to_str().unwrap().to_owned();
                case(
                    format!("file {ext} {name}: {v}"),
                    vec!["-c".into(), p.clone()],
                    vec![],
                );
                case(
                    format!("envfile {ext} {name}: {v}"),
                    vec![],
                    vec![("LDLM_CONFIG_FILE".into(), p)],
                );
            }
        }
    }
    // Shorts.
    for s in "cvgmdnsktlrhxyz".chars() {
        case(
            format!("short -{s} 5"),
            vec![format!("-{s}"), "5".into()],
            vec![],
        );
    }
    // Validation with origins from each source.
    for (name, bad) in [
        ("shards", "3"),
        ("tls_key", "k"),
        ("tls_cert", "c"),
        ("client_ca", "ca"),
        ("client_cert_verify", "true"),
        ("listen_address", ""),
        ("worker_threads", "5000"),
        ("lock_gc_interval", "0"),
        ("max_connections", "0"),
    ] {
        case(
            format!("valid flag {name}"),
            vec![format!("--{name}={bad}")],
            vec![],
        );
        case(
            format!("valid env {name}"),
            vec![],
            vec![(env_var_name(name), bad.into())],
        );
    }
    // Precedence.
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "shards: 4\nstate_file: /f\npassword: 1234\n").unwrap();
    let p = path.to_str().unwrap().to_owned();
    case(
        "prec".into(),
        vec!["-c".into(), p.clone(), "--shards=8".into()],
        vec![
            ("LDLM_SHARDS".into(), "2".into()),
            ("LDLM_STATE_FILE".into(), "/e".into()),
        ],
    );
    case(
        "prec2".into(),
        vec!["--config_file=".into()],
        vec![("LDLM_CONFIG_FILE".into(), p.clone())],
    );
    case(
        "all".into(),
        vec![
            "--tls_cert=c".into(),
            "--tls_key=k".into(),
            "--client_ca=ca".into(),
            "--password=pw".into(),
            "--rest_listen_address=:1".into(),
            "--metrics_listen_address=:2".into(),
            "-n".into(),
            "-v".into(),
            "warn".into(),
        ],
        vec![],
    );
    for ext in ["txt", "YAML", "Json"] {
        let path = dir.path().join(format!("q.{ext}"));
        std::fs::write(&path, "shards: 2\n").unwrap();
        case(
            format!("ext {ext}"),
            vec!["-c".into(), path.to_str().unwrap().into()],
            vec![],
        );
    }
    for body in ["", "~", "[1]", "1: 2", ": :", "shards: 2\nshards: 4\n"] {
        let path = dir.path().join("b.yaml");
        std::fs::write(&path, body).unwrap();
        case(
            format!("yaml body {body:?}"),
            vec!["-c".into(), path.to_str().unwrap().into()],
            vec![],
        );
    }
    case(
        "nofile".into(),
        vec!["-c".into(), "/nonexistent.yaml".into()],
        vec![],
    );
    let mut cmd = command();
    out.push_str(&format!("== render_help\n{}\n", cmd.render_help()));
    out.push_str(&format!(
        "== render_long_help\n{}\n",
        cmd.render_long_help()
    ));
    out.push_str(&format!(
        "== defaults debug\n{:#?}\n",
        ServerConfig::defaults()
    ));
    std::fs::write(out_path, out).unwrap();
}
