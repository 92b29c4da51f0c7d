//! The README's REST walk-through runs as printed (with `LDLM` pointing at a test server).

use std::path::PathBuf;

use crate::harness;

/// The shell block that follows the `readme-test: rest-walkthrough` marker in README.md.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let after = readme
        .split("<!-- readme-test: rest-walkthrough")
        .nth(1)
        .expect("the README marks its walk-through");
    let block = after
        .split("```sh\n")
        .nth(1)
        .expect("a sh block follows the marker");
    block
        .split("```")
        .next()
        .expect("the block ends")
        .to_string()
}

async fn run(script: &str, address: std::net::SocketAddr, password: Option<&str>) -> String {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .env("LDLM", address.to_string());
    if let Some(password) = password {
        command.env("LDLM_PASSWORD", password);
    }
    let output = command.output().await.expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the README walk-through failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_rest_walkthrough_works_as_printed() {
    let script = walkthrough();
    let server = harness::start(&harness::config()).await;
    let out = run(&script, server.rest_addr(), None).await;
    assert_eq!(out.matches("\"session_id\": \"").count(), 3, "{out}");
    assert!(
        out.contains(r#""locked":true,"name":"my-task","key":""#),
        "{out}"
    );
    assert_eq!(
        out.matches(r#""locked":true"#).count(),
        2,
        "lock and renew: {out}"
    );
    assert!(
        out.contains(r#"{"unlocked":true,"name":"my-task"}"#),
        "{out}"
    );
    server.running.shutdown().await;

    // The Basic-auth line against a server that wants the password.
    let mut config = harness::config();
    config.password = Some("secret".into());
    let server = harness::start(&config).await;
    let basic = script
        .lines()
        .filter(|line| {
            line.starts_with("LDLM=") || line.starts_with("jar=") || line.contains("curl -s -u")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = run(&basic, server.rest_addr(), Some("secret")).await;
    assert!(out.contains("\"session_id\": \""), "{out}");
    server.running.shutdown().await;
}
