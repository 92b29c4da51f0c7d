//! `/session`, the session cookie, idle expiry and the session limit.

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use ldlm_rest::RestOptions;
use ldlm_service::LocalOptions;
use serde_json::json;

use crate::harness::TestServer;

const NOT_FOUND: &str = "session cookie not found. create a new session at /session";
const INVALID: &str = "session cookie invalid or expired. create a new session at /session";

/// A server whose sessions end after `session_timeout` idle.
async fn server(session_timeout: Duration) -> TestServer {
    let local = LocalOptions {
        session_timeout,
        ..LocalOptions::default()
    };
    TestServer::start_with(RestOptions::default(), local).await
}

/// Checks a `Set-Cookie` value: `ldlm-session=<id>; Path=/; Expires=<date>` with the date about
/// `timeout` from now, and no other attribute.
fn assert_session_cookie(cookie: &str, id: &str, timeout: Duration) {
    let (head, date) = cookie
        .split_once("; Expires=")
        .unwrap_or_else(|| panic!("no Expires: {cookie}"));
    assert_eq!(head, format!("ldlm-session={id}; Path=/"));
    let expires = httpdate::parse_http_date(date).unwrap_or_else(|_| panic!("bad date {date:?}"));
    let expected = SystemTime::now() + timeout;
    let off = match expires.duration_since(expected) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        off <= Duration::from_secs(5),
        "Expires {date} is {off:?} away from now + {timeout:?}"
    );
}

#[tokio::test]
async fn create_session() {
    let timeout = Duration::from_secs(600);
    let server = server(timeout).await;
    let mut client = server.client().await;
    let reply = client.call(Method::POST, "/session", "").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let text = reply.text();
    let id = text
        .strip_prefix("{\"session_id\": \"")
        .and_then(|rest| rest.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("body is not go-ldlm's exact shape: {text}"));
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    let uuid = uuid::Uuid::try_parse(id).expect("a UUID in simple form");
    assert_eq!(uuid.get_version_num(), 4);
    assert_session_cookie(reply.set_cookie().expect("Set-Cookie"), id, timeout);
    assert_eq!(server.session_count(), 1);

    // A second session is a different one.
    let mut other = server.client().await;
    assert_ne!(other.new_session().await, id);
    assert_eq!(server.session_count(), 2);
}

#[tokio::test]
async fn every_request_renews_the_cookie() {
    let timeout = Duration::from_secs(90);
    let server = server(timeout).await;
    let mut client = server.client().await;
    let id = client.new_session().await;
    for (method, path) in [
        (Method::POST, "/v1/lock"),
        (Method::POST, "/v1/unlock"),
        (Method::POST, "/v1/renew"),
        (Method::GET, "/v1/lock"),
        (Method::POST, "/nope"),
    ] {
        let reply = client.call(method.clone(), path, "{}").await;
        let cookie = reply
            .set_cookie()
            .unwrap_or_else(|| panic!("{method} {path}: no Set-Cookie"));
        assert_session_cookie(cookie, &id, timeout);
    }
    // A request refused before the cookie check does not set one.
    client.cookie = None;
    let reply = client.call(Method::POST, "/v1/lock", "{}").await;
    assert!(reply.set_cookie().is_none());
}

#[tokio::test]
async fn delete_session_releases_its_locks() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut a = server.client_with_session().await;
    let mut b = server.client_with_session().await;
    assert_eq!(a.try_lock("shared").await["locked"], true);
    assert_eq!(a.try_lock("second").await["locked"], true);
    assert_eq!(b.try_lock("shared").await["locked"], false);

    let reply = a.call(Method::DELETE, "/session", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), r#"{"session_id": ""}"#);
    let cleared = reply.set_cookie().expect("Set-Cookie");
    assert!(cleared.starts_with("ldlm-session=; Path=/"), "{cleared}");
    let (_, date) = cleared
        .split_once("Expires=")
        .expect("an Expires in the past");
    assert!(httpdate::parse_http_date(date).expect("date") < SystemTime::now());

    assert_eq!(
        b.try_lock("shared").await["locked"],
        true,
        "released with the session"
    );
    assert_eq!(b.try_lock("second").await["locked"], true);
    assert_eq!(server.session_count(), 1);

    // The old cookie is dead: 401 on the API, 409 on a second DELETE.
    a.call(Method::POST, "/v1/lock", r#"{"name":"x"}"#)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, INVALID);
    a.call(Method::DELETE, "/session", "")
        .await
        .assert_error(StatusCode::CONFLICT, "session not found");
}

#[tokio::test]
async fn delete_session_without_or_with_unknown_cookie() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client().await;
    client
        .call(Method::DELETE, "/session", "")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, NOT_FOUND);
    for cookie in [
        format!("ldlm-session={}", "0".repeat(32)),
        "ldlm-session=".to_owned(),
        "ldlm-session=not-a-session".to_owned(),
    ] {
        client.cookie = Some(cookie.clone());
        let reply = client.call(Method::DELETE, "/session", "").await;
        reply.assert_error(StatusCode::CONFLICT, "session not found");
    }
}

#[tokio::test]
async fn missing_or_invalid_cookie_is_401() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client().await;
    for (method, path) in [
        (Method::POST, "/v1/lock"),
        (Method::POST, "/v1/unlock"),
        (Method::POST, "/v1/refreshlock"),
        (Method::POST, "/v1/renew"),
        (Method::GET, "/v1/lock"),
        (Method::GET, "/unknown"),
    ] {
        client.cookie = None;
        let reply = client.call(method.clone(), path, "{}").await;
        reply.assert_error(StatusCode::UNAUTHORIZED, NOT_FOUND);
        client.cookie = Some("other=1".into());
        let reply = client.call(method.clone(), path, "{}").await;
        reply.assert_error(StatusCode::UNAUTHORIZED, NOT_FOUND);
        for bad in [
            "ldlm-session=",
            "ldlm-session=abc",
            "ldlm-session=00000000000000000000000000000000",
        ] {
            client.cookie = Some(bad.into());
            let reply = client.call(method.clone(), path, "{}").await;
            reply.assert_error(StatusCode::UNAUTHORIZED, INVALID);
        }
    }
    // A valid session id in upper case is not ours (ids compare as strings).
    let id = client.new_session().await;
    client.cookie = Some(format!("ldlm-session={}", id.to_uppercase()));
    let reply = client
        .call(Method::POST, "/v1/lock", r#"{"name":"x"}"#)
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, INVALID);
    // Among other cookies, and quoted, it is found.
    client.cookie = Some(format!("a=b; ldlm-session=\"{id}\"; c=d"));
    let reply = client
        .call(Method::POST, "/v1/lock", r#"{"name":"x"}"#)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn idle_session_expires_and_releases_its_locks() {
    let server = server(Duration::from_secs(1)).await;
    let mut idle = server.client_with_session().await;
    let mut busy = server.client_with_session().await;
    assert_eq!(idle.try_lock("idle-lock").await["locked"], true);
    assert_eq!(busy.try_lock("busy-lock").await["locked"], true);

    // `busy` keeps its session alive with requests every 300 ms; `idle` sends nothing.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            busy.try_lock("idle-lock-probe").await["name"],
            "idle-lock-probe"
        );
    }
    // 1.8 s later: the idle session is gone, its lock free, its cookie dead.
    let mut third = server.client_with_session().await;
    assert_eq!(
        third.try_lock("idle-lock").await["locked"],
        true,
        "released on expiry"
    );
    assert_eq!(
        third.try_lock("busy-lock").await["locked"],
        false,
        "still held by the busy session"
    );
    idle.call(Method::POST, "/v1/lock", r#"{"name":"x"}"#)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, INVALID);
    idle.call(Method::DELETE, "/session", "")
        .await
        .assert_error(StatusCode::CONFLICT, "session not found");
    // The driver's report made the server forget it.
    assert_eq!(server.session_count(), 2);
}

#[tokio::test]
async fn expired_sessions_are_forgotten_without_being_used() {
    let server = server(Duration::from_millis(300)).await;
    for _ in 0..5 {
        server.client_with_session().await;
    }
    assert!(server.session_count() > 0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        server.session_count(),
        0,
        "forget_sessions ran from the driver"
    );
}

#[tokio::test]
async fn session_limit() {
    let local = LocalOptions {
        max_sessions: 2,
        ..LocalOptions::default()
    };
    let server = TestServer::start_with(RestOptions::default(), local).await;
    let mut a = server.client_with_session().await;
    let _b = server.client_with_session().await;
    let mut c = server.client().await;
    let reply = c.call(Method::POST, "/session", "").await;
    reply.assert_error_contains(StatusCode::SERVICE_UNAVAILABLE, "limit is 2");
    assert!(reply.set_cookie().is_none());
    assert_eq!(
        a.call(Method::DELETE, "/session", "").await.status,
        StatusCode::OK
    );
    c.new_session().await;
    assert_eq!(server.session_count(), 2);
}

#[tokio::test]
async fn other_methods_on_session() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client().await;
    for method in [
        Method::GET,
        Method::PUT,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        let reply = client.call(method.clone(), "/session", "").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.header("allow"), Some("POST, DELETE"));
        if method != Method::HEAD {
            assert_eq!(reply.json(), json!({"error": "Method Not Allowed"}));
        }
    }
}
