//! The lock routes: success and error bodies, and the status codes of bad requests.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use ldlm_rest::RestOptions;
use serde_json::json;

use ldlm_engine::{Engine, EngineConfig};
use ldlm_service::{Clock, LocalOptions};
use ldlm_state_file::StateFile;

use crate::harness::{TestServer, assert_uuid_v4, chunked, fencing_token, full};

#[tokio::test]
async fn lock_success_and_busy() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut a = server.client_with_session().await;
    let mut b = server.client_with_session().await;

    let reply = a.call(Method::POST, "/v1/lock", r#"{"name":"r1"}"#).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let locked = reply.json();
    assert_eq!(locked["locked"], true);
    assert_eq!(locked["name"], "r1");
    assert_uuid_v4(&locked["key"]);
    assert!(fencing_token(&locked) > 0);
    assert!(
        locked.get("error").is_none(),
        "no error on success: {locked}"
    );
    assert_eq!(locked.as_object().map(|o| o.len()), Some(4), "{locked}");

    // Busy: not locked, empty key (go-ldlm sends one anyway), token 0, no error.
    let busy = b.try_lock("r1").await;
    assert_eq!(
        busy,
        json!({"locked": false, "name": "r1", "key": "", "fencingToken": "0"})
    );

    // Fencing tokens grow.
    let key = locked["key"].as_str().expect("key");
    assert_eq!(
        a.unlock("r1", key).await,
        json!({"unlocked": true, "name": "r1"})
    );
    let again = b.try_lock("r1").await;
    assert_eq!(again["locked"], true);
    assert!(fencing_token(&again) > fencing_token(&locked));
    assert_ne!(again["key"], locked["key"]);
}

#[tokio::test]
async fn lock_domain_errors_are_200() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client_with_session().await;
    let error = |code: &str, message: &str| json!({"code": code, "message": message});
    let not_locked = |name: &str, err| json!({"locked": false, "name": name, "key": "", "error": err, "fencingToken": "0"});

    for empty in ["", "{}", "  ", r#"{"name":null}"#, r#"{"name":""}"#] {
        let reply = client.call(Method::POST, "/v1/lock", empty).await;
        assert_eq!(reply.status, StatusCode::OK, "{empty:?}");
        assert_eq!(
            reply.json(),
            not_locked("", error("Unknown", "lock name cannot be empty")),
            "{empty:?}"
        );
    }
    let reply = client
        .post("/v1/lock", json!({"name": "s", "size": 0}))
        .await;
    assert_eq!(
        reply,
        not_locked(
            "s",
            error("InvalidLockSize", "lock size must be greater than 0")
        )
    );
    let reply = client
        .post("/v1/lock", json!({"name": "s", "size": -3}))
        .await;
    assert_eq!(
        reply,
        not_locked(
            "s",
            error("InvalidLockSize", "lock size must be greater than 0")
        )
    );
    let reply = client
        .post("/v1/lock", json!({"name": "s", "lock_timeout_seconds": -1}))
        .await;
    assert_eq!(
        reply,
        not_locked("s", error("Unknown", "lock timeout must be greater than 0"))
    );

    assert_eq!(
        client
            .post("/v1/lock", json!({"name": "three", "size": 3}))
            .await["locked"],
        true
    );
    let reply = client.try_lock("three").await;
    assert_eq!(
        reply,
        not_locked("three", error("LockSizeMismatch", "lock size mismatch"))
    );

    let long = "n".repeat(5000);
    let reply = client.try_lock(&long).await;
    assert_eq!(reply["error"]["code"], "Unknown");
    assert!(
        reply["error"]["message"]
            .as_str()
            .expect("message")
            .contains("4096")
    );
}

#[tokio::test]
async fn unlock_success_and_errors() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut a = server.client_with_session().await;
    let mut b = server.client_with_session().await;
    let locked = a.try_lock("u").await;
    let key = locked["key"].as_str().expect("key").to_owned();

    let wrong = a.unlock("u", "00000000-0000-4000-8000-000000000000").await;
    assert_eq!(
        wrong,
        json!({"unlocked": false, "name": "u", "error": {"code": "InvalidLockKey", "message": "invalid lock key"}})
    );
    let garbage = a.unlock("u", "garbage").await;
    assert_eq!(garbage["error"]["code"], "InvalidLockKey");
    let unknown = a.unlock("nonexist", &key).await;
    assert_eq!(
        unknown,
        json!({"unlocked": false, "name": "nonexist", "error": {"code": "LockDoesNotExist", "message": "a lock by that name does not exist"}})
    );
    let empty = a.call(Method::POST, "/v1/unlock", "").await.json();
    assert_eq!(empty["error"]["code"], "LockDoesNotExist");
    assert_eq!(empty["name"], "");

    // The key, not the session, authorises, as in go-ldlm.
    assert_eq!(
        b.unlock("u", &key).await,
        json!({"unlocked": true, "name": "u"})
    );
    assert_eq!(a.unlock("u", &key).await["error"]["code"], "InvalidLockKey");
}

#[tokio::test]
async fn refresh_on_both_paths() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut a = server.client_with_session().await;
    let mut b = server.client_with_session().await;
    for path in ["/v1/refreshlock", "/v1/renew"] {
        let name = format!("lease{path}");
        let locked = a
            .post("/v1/lock", json!({"name": name, "lock_timeout_seconds": 1}))
            .await;
        assert_eq!(locked["locked"], true);
        let key = locked["key"].as_str().expect("key").to_owned();

        let refreshed = a
            .post(
                path,
                json!({"name": name, "key": key, "lock_timeout_seconds": 3}),
            )
            .await;
        assert_eq!(
            refreshed,
            json!({"locked": true, "name": name, "key": key, "fencingToken": locked["fencingToken"]})
        );
        // Unknown key or name: code 5 (go-ldlm: `Unknown`, its B6), the request's key echoed.
        let bad_key = "00000000-0000-4000-8000-000000000000";
        let unknown = a
            .post(
                path,
                json!({"name": name, "key": bad_key, "lockTimeoutSeconds": 3}),
            )
            .await;
        assert_eq!(
            unknown,
            json!({"locked": false, "name": name, "key": bad_key, "error": {"code": "LockDoesNotExistOrInvalidKey", "message": "lock does not exist or invalid key"}, "fencingToken": "0"})
        );
        let unknown = a
            .post(
                path,
                json!({"name": "nope", "key": key, "lock_timeout_seconds": 3}),
            )
            .await;
        assert_eq!(unknown["error"]["code"], "LockDoesNotExistOrInvalidKey");
        // A timeout ≤ 0 (or absent: not optional) is refused, with an empty key.
        for body in [
            json!({"name": name, "key": key, "lock_timeout_seconds": 0}),
            json!({"name": name, "key": key}),
            json!({"name": name, "key": key, "lock_timeout_seconds": -5}),
        ] {
            let refused = a.post(path, body).await;
            assert_eq!(
                refused,
                json!({"locked": false, "name": name, "key": "", "error": {"code": "Unknown", "message": "lock timeout must be greater than 0"}, "fencingToken": "0"})
            );
        }
    }
    // The refreshed leases (3 s) outlive the original ones (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for path in ["/v1/refreshlock", "/v1/renew"] {
        let name = format!("lease{path}");
        assert_eq!(
            b.try_lock(&name).await["locked"],
            false,
            "{name} still held"
        );
    }
}

#[tokio::test]
async fn lease_expires() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut a = server.client_with_session().await;
    let mut b = server.client_with_session().await;
    let locked = a
        .post(
            "/v1/lock",
            json!({"name": "short", "lockTimeoutSeconds": "1"}),
        )
        .await;
    assert_eq!(locked["locked"], true);
    assert_eq!(b.try_lock("short").await["locked"], false);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(b.try_lock("short").await["locked"], true);
    let key = locked["key"].as_str().expect("key");
    assert_eq!(
        a.unlock("short", key).await["error"]["code"],
        "InvalidLockKey"
    );
}

#[tokio::test]
async fn numeric_strings_and_camel_case() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client_with_session().await;
    let body = r#"{"name":"sem","size":"2","lockTimeoutSeconds":"30","unknown":{"x":[1]}}"#;
    let first = client.call(Method::POST, "/v1/lock", body).await.json();
    assert_eq!(first["locked"], true, "{first}");
    let second = client
        .call(
            Method::POST,
            "/v1/lock",
            r#"{"name":"sem","size":2.0,"lock_timeout_seconds":30}"#,
        )
        .await
        .json();
    assert_eq!(
        second["locked"], true,
        "a size-2 lock has two slots: {second}"
    );
    let third = client
        .call(Method::POST, "/v1/lock", r#"{"name":"sem","size":"2"}"#)
        .await
        .json();
    assert_eq!(third["locked"], false);
    assert!(third.get("error").is_none());
    let renewed = client
        .call(
            Method::POST,
            "/v1/renew",
            &format!(
                r#"{{"name":"sem","key":{},"lockTimeoutSeconds":"10"}}"#,
                first["key"]
            ),
        )
        .await
        .json();
    assert_eq!(renewed["locked"], true, "{renewed}");
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client_with_session().await;
    for path in ["/v1/lock", "/v1/unlock", "/v1/refreshlock", "/v1/renew"] {
        for body in [
            "{",
            "not json",
            "[]",
            "null",
            r#"{"name":5}"#,
            r#"{"name":"a","size":"x"}"#,
            r#"{"name":"a","size":1.5}"#,
            r#"{"name":"a","size":true}"#,
            r#"{"name":"a","key":{}}"#,
            r#"{"name":"a","lockTimeoutSeconds":99999999999}"#,
            r#"{"name":"a","lock_timeout_seconds":1,"lockTimeoutSeconds":1}"#,
            r#"{"name":"a"} trailing"#,
        ] {
            let reply = client.call(Method::POST, path, body).await;
            // Fields a message does not have are ignored whatever their value.
            let unknown_field = match path {
                "/v1/lock" => body.contains("\"key\""),
                "/v1/unlock" => body.contains("size") || body.contains("imeout"),
                _ => body.contains("size"),
            };
            if unknown_field {
                assert_eq!(reply.status, StatusCode::OK, "{path} {body}");
                continue;
            }
            reply.assert_error_contains(StatusCode::BAD_REQUEST, "invalid request body");
        }
    }
    let reply = client
        .send(
            Method::POST,
            "/v1/lock",
            full(Bytes::from_static(b"{\"name\":\"\xff\"}")),
        )
        .await;
    reply.assert_error_contains(StatusCode::BAD_REQUEST, "invalid request body");
    // The session survives bad requests.
    assert_eq!(client.try_lock("after").await["locked"], true);
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client_with_session().await;
    for path in [
        "/",
        "/v1",
        "/v1/lock/",
        "/v1/Lock",
        "/v2/lock",
        "/session/x",
        "/v1/trylock",
    ] {
        let reply = client.call(Method::POST, path, "{}").await;
        reply.assert_error(StatusCode::NOT_FOUND, "Not Found");
    }
    for path in ["/v1/lock", "/v1/unlock", "/v1/refreshlock", "/v1/renew"] {
        for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
            let reply = client.call(method.clone(), path, "").await;
            reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            assert_eq!(reply.header("allow"), Some("POST"), "{method} {path}");
        }
    }
    // A query string does not change the route.
    let reply = client
        .call(Method::POST, "/v1/lock?x=1", r#"{"name":"q"}"#)
        .await;
    assert_eq!(reply.json()["locked"], true);
}

#[tokio::test]
async fn body_too_large_is_413() {
    let server = TestServer::start(RestOptions {
        max_body_bytes: 100,
        ..RestOptions::default()
    })
    .await;
    let mut client = server.client_with_session().await;
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(200));
    let reply = client.call(Method::POST, "/v1/lock", &big).await;
    reply.assert_error_contains(StatusCode::PAYLOAD_TOO_LARGE, "limit is 100 bytes");

    // Chunked (no Content-Length): cut off while reading.
    let mut client = server.client_with_session().await;
    let chunks = (0..20).map(|_| Bytes::from_static(b"          ")).collect();
    let reply = client.send(Method::POST, "/v1/lock", chunked(chunks)).await;
    reply.assert_error_contains(StatusCode::PAYLOAD_TOO_LARGE, "limit is 100 bytes");

    // Exactly at the limit is fine.
    let mut client = server.client_with_session().await;
    let name = "y".repeat(100 - r#"{"name":""}"#.len());
    let body = format!(r#"{{"name":"{name}"}}"#);
    assert_eq!(body.len(), 100);
    let reply = client.call(Method::POST, "/v1/lock", &body).await;
    assert_eq!(reply.json()["locked"], true);
    let chunks = vec![
        Bytes::from(body[..50].to_owned()),
        Bytes::from(body[50..].to_owned()),
    ];
    let reply = client.send(Method::POST, "/v1/lock", chunked(chunks)).await;
    assert_eq!(
        reply.json()["locked"],
        false,
        "held by the previous request"
    );
}

#[tokio::test]
async fn handle_without_a_socket() {
    // The handler is usable directly (as the fuzz target does), with any body type.
    let server = TestServer::start(RestOptions::default()).await;
    let remote = "127.0.0.1:9".parse().expect("addr");
    let request = http::Request::post("/session")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = server.server.handle(request, remote).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()["set-cookie"].to_str().expect("cookie");
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    let request = http::Request::post("/v1/lock")
        .header("cookie", cookie)
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"name":"direct"}"#,
        )))
        .expect("request");
    let response = server.server.handle(request, remote).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.engine.list().len(), 1);
}

#[tokio::test]
async fn locked_is_answered_once_the_grant_is_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let (file, _) = StateFile::open(&path).expect("open state file");
    let clock = Clock::new();
    let engine =
        Engine::with_event_sink(EngineConfig::default(), clock.now(), file.sink()).expect("engine");
    let local = LocalOptions {
        commits: Some(file.commits()),
        ..LocalOptions::default()
    };
    let server = TestServer::start_on(engine, clock, RestOptions::default(), local).await;
    let mut client = server.client_with_session().await;
    let locked = client
        .post("/v1/lock", json!({"name": "durable", "size": 2}))
        .await;
    assert_eq!(locked["locked"], true);
    let gone = client.try_lock("gone").await;
    client
        .unlock("gone", gone["key"].as_str().expect("key"))
        .await;
    // Releases are not waited for, but a later grant's durability covers every earlier record.
    let last = client.try_lock("last").await;
    assert_eq!(last["locked"], true);

    // What the client was told is what the file holds (read without stopping the writer).
    let loaded = ldlm_state_file::load::load(&path).expect("load");
    let mut holds = loaded.holds();
    holds.sort_by_key(|h| h.fencing_token);
    let held: Vec<_> = holds
        .iter()
        .map(|h| (h.name.as_str(), h.key.to_string(), h.size, h.fencing_token))
        .collect();
    let key = locked["key"].as_str().expect("key").to_owned();
    let last_key = last["key"].as_str().expect("key").to_owned();
    assert_eq!(
        held,
        vec![
            ("durable", key, 2, fencing_token(&locked)),
            ("last", last_key, 1, fencing_token(&last)),
        ]
    );
}
