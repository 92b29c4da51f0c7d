//! The REST password: `Authorization: Basic base64(<anything>:<password>)`, as go-ldlm checks it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use ldlm_rest::RestOptions;
use ldlm_security::password::Password;

use crate::harness::{Client, Reply, TestServer};

fn basic(credentials: &str) -> String {
    format!("Basic {}", STANDARD.encode(credentials))
}

async fn with_password(password: &str) -> TestServer {
    TestServer::start(RestOptions {
        password: Some(Password::new(password)),
        ..RestOptions::default()
    })
    .await
}

fn assert_refused(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"Restricted\"")
    );
    assert!(reply.body.is_empty(), "empty body: {:?}", reply.text());
    assert!(reply.set_cookie().is_none());
}

async fn create_session(client: &mut Client, auth: Option<String>) -> Reply {
    client.auth = auth;
    client.call(Method::POST, "/session", "").await
}

#[tokio::test]
async fn right_wrong_and_missing_password() {
    let server = with_password("pw").await;
    let mut client = server.client().await;
    assert_refused(&create_session(&mut client, None).await);
    for wrong in [
        basic("user:px"),
        basic("user:"),
        basic("pw"),
        basic("user:pw "),
        "Bearer pw".to_owned(),
        "pw".to_owned(),
        "Basic !!!".to_owned(),
    ] {
        assert_refused(&create_session(&mut client, Some(wrong)).await);
    }
    for right in [basic("user:pw"), basic(":pw"), basic("anyone at all:pw")] {
        let reply = create_session(&mut client, Some(right.clone())).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{right}");
    }
    assert_eq!(server.session_count(), 3);
}

#[tokio::test]
async fn password_is_checked_before_everything_else() {
    let server = with_password("pw").await;
    let mut client = server.client().await;
    client.auth = Some(basic("u:pw"));
    client.new_session().await;
    assert_eq!(client.try_lock("guarded").await["locked"], true);
    // A valid cookie without the password is refused, on every path and method.
    client.auth = None;
    for (method, path) in [
        (Method::POST, "/v1/lock"),
        (Method::POST, "/v1/unlock"),
        (Method::POST, "/v1/renew"),
        (Method::DELETE, "/session"),
        (Method::GET, "/session"),
        (Method::GET, "/nope"),
    ] {
        assert_refused(&client.call(method, path, "{}").await);
    }
    client.auth = Some(basic("u:wrong"));
    assert_refused(
        &client
            .call(Method::POST, "/v1/lock", r#"{"name":"x"}"#)
            .await,
    );
    // The session is still there.
    client.auth = Some(basic("other-user:pw"));
    assert_eq!(client.try_lock("guarded").await["locked"], false);
}

#[tokio::test]
async fn password_containing_a_colon() {
    let server = with_password("a:b;c:d").await;
    let mut client = server.client().await;
    let reply = create_session(&mut client, Some(basic("user:a:b;c:d"))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = create_session(&mut client, Some(basic(":a:b;c:d"))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // Only the first colon splits: user "a", password "b;c:d" is wrong.
    assert_refused(&create_session(&mut client, Some(basic("a:b;c:d"))).await);
}

#[tokio::test]
async fn no_password_configured_ignores_authorization() {
    let server = TestServer::start(RestOptions::default()).await;
    let mut client = server.client().await;
    let reply = create_session(&mut client, Some(basic("u:whatever"))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = create_session(&mut client, None).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}
