//! The README flow with curl: a cookie jar, Basic auth, lock → refresh → unlock → delete.

use std::path::Path;
use std::process::Command;

use ldlm_rest::RestOptions;
use ldlm_security::password::Password;
use serde_json::{Value, json};

use crate::harness::TestServer;

/// Runs curl with `args` (plus `-sS` and a trailing status line); returns (status, body).
async fn curl(args: Vec<String>) -> (u16, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .arg("-sS")
            .args(&args)
            .args(["-w", "\n%{http_code}"])
            .output()
            .expect("run curl")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status) = stdout.rsplit_once('\n').expect("status line");
    (status.parse().expect("status"), body.to_owned())
}

/// `curl -u user:pw -b jar -c jar -X method url [-d body]`.
async fn call(
    base: &str,
    jar: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut args: Vec<String> = vec![
        "-u".into(),
        "alice:s3cr:et".into(),
        "-b".into(),
        jar.display().to_string(),
        "-c".into(),
        jar.display().to_string(),
        "-X".into(),
        method.into(),
        format!("{base}{path}"),
    ];
    if let Some(body) = body {
        // As in the README: `-d` alone, so curl sends a form content type; it is ignored.
        args.extend(["-d".into(), body.to_string()]);
    }
    curl(args).await
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_with_curl() {
    let server = TestServer::start(RestOptions {
        password: Some(Password::new("s3cr:et")),
        ..RestOptions::default()
    })
    .await;
    let base = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let jar = dir.path().join("cookies");

    let (status, body) = call(&base, &jar, "POST", "/session", None).await;
    assert_eq!(status, 201, "{body}");
    let id = parse(&body)["session_id"].as_str().expect("id").to_owned();
    let jar_text = std::fs::read_to_string(&jar).expect("cookie jar written");
    assert!(
        jar_text.contains(&format!("ldlm-session\t{id}")),
        "{jar_text}"
    );

    let (status, body) = call(
        &base,
        &jar,
        "POST",
        "/v1/lock",
        Some(json!({"name": "work", "lock_timeout_seconds": 10})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let locked = parse(&body);
    assert_eq!(locked["locked"], true, "{locked}");
    let key = locked["key"].as_str().expect("key").to_owned();

    for path in ["/v1/refreshlock", "/v1/renew"] {
        let request = json!({"name": "work", "key": key, "lock_timeout_seconds": 30});
        let (status, body) = call(&base, &jar, "POST", path, Some(request)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(parse(&body)["locked"], true, "{path}: {body}");
    }

    let (status, body) = call(
        &base,
        &jar,
        "POST",
        "/v1/unlock",
        Some(json!({"name": "work", "key": key})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body), json!({"unlocked": true, "name": "work"}));

    let (status, body) = call(&base, &jar, "DELETE", "/session", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"session_id": ""}"#);
    // The jar dropped the cookie (its Expires is in the past), so the next call has none.
    let (status, body) = call(
        &base,
        &jar,
        "POST",
        "/v1/lock",
        Some(json!({"name": "work"})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        parse(&body)["error"],
        "session cookie not found. create a new session at /session"
    );

    // Without the password: 401 with an empty body.
    let (status, body) = curl(vec!["-X".into(), "POST".into(), format!("{base}/session")]).await;
    assert_eq!((status, body.as_str()), (401, ""));
    assert_eq!(server.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_prior_knowledge() {
    let server = TestServer::start(RestOptions::default()).await;
    let url = format!("http://{}/session", server.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-X",
                "POST",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code} %{http_version}", &url])
            .output()
            .expect("run curl")
    })
    .await
    .expect("join");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "201 2",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(server.session_count(), 1);
}
