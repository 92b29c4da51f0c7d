//! The IPC wire protocol: newline-delimited JSON, one request per line, one response line per
//! request, in order.
//!
//! go-ldlm speaks Go `net/rpc` with gob encoding on its socket, which only Go can talk
//! comfortably; our `ldlm-lock` is our own, so the protocol is our own too.
//! Every message carries a version, `"v": 1`.
//!
//! Requests:
//!
//! ```text
//! {"v":1,"op":"list"}
//! {"v":1,"op":"unlock","name":"jobs","key":"6f1c…"}     key: a string, null or absent
//! {"v":1,"op":"cluster_status"}
//! {"v":1,"op":"cluster_add","id":4,"address":"10.0.0.4:7070"}
//! {"v":1,"op":"cluster_remove","id":4}
//! ```
//!
//! Responses:
//!
//! ```text
//! {"v":1,"ok":true,"locks":[{"name":"jobs","key":"6f1c…","size":2,"owner":7,"fencing_token":12,"lease_expires_in_ms":null}]}
//! {"v":1,"ok":true,"unlocked":"6f1c…"}
//! {"v":1,"ok":false,"error":"a lock by that name does not exist"}
//! ```
//!
//! Unknown fields are ignored (a newer client may send more). A request line longer than the
//! limit ([`MAX_REQUEST_BYTES`] by default), one that is not JSON, has no or another version, or
//! names an unknown operation gets an error response; [`decode_request`] never panics.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// The default limit on one request line in bytes, without its newline (64 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request from `ldlm-lock` to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Every held slot of every lock.
    List,
    /// Releases one hold: the one with `key`, or without a key the only holder of `name`.
    Unlock {
        /// The lock's name.
        name: String,
        /// The hold's key; `None` (or an empty string) means "the only holder".
        key: Option<String>,
    },
    /// The cluster as this node sees it (cluster mode only).
    ClusterStatus,
    /// Adds node `id` at peer address `address` to the cluster (answered with the status).
    ClusterAdd {
        /// The new node's id.
        id: u64,
        /// Its peer address (host:port).
        address: String,
    },
    /// Removes node `id` from the cluster (answered with the status).
    ClusterRemove {
        /// The node's id.
        id: u64,
    },
}

/// One cluster member, as `ldlm-lock cluster status --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// Its node id.
    pub id: u64,
    /// Its peer address.
    pub address: String,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub role: String,
    /// Milliseconds since the node answering last heard from it (0: itself; null: never).
    pub last_contact_ms: Option<u64>,
}

/// A cluster node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEntry {
    /// The answering node's id.
    pub node_id: u64,
    /// The cluster's id (absent: a cluster formed by a version without ids, or a joining node
    /// not reached yet). Every node of one cluster shows the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The leader it knows of (null: none, an election is running).
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The highest log index known committed.
    pub commit_index: Option<u64>,
    /// The highest log index applied to its replica.
    pub applied_index: Option<u64>,
    /// The members.
    pub members: Vec<MemberEntry>,
}

/// One held slot, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// The lock's name.
    pub name: String,
    /// The hold's key.
    pub key: String,
    /// The lock's size (slots of the semaphore).
    pub size: u32,
    /// The holder's owner id (a connection or REST session; 0 = restored from the state file).
    pub owner: u64,
    /// The grant's fencing token.
    pub fencing_token: u64,
    /// Milliseconds until the lease ends (0 if already due), or `None` without a lease.
    pub lease_expires_in_ms: Option<u64>,
}

/// The server's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The answer to [`Request::List`].
    Locks(Vec<LockEntry>),
    /// The answer to a successful [`Request::Unlock`]: the key that was released.
    Unlocked {
        /// The released hold's key.
        key: String,
    },
    /// The answer to [`Request::ClusterStatus`].
    Cluster(ClusterEntry),
    /// The request failed; the message is meant for a human, verbatim.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Why a message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The line is longer than the limit.
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The line is empty (or only whitespace).
    Empty,
    /// The line is not a JSON object.
    Malformed {
        /// The JSON parser's complaint.
        detail: String,
    },
    /// The message has no `"v"` field.
    MissingVersion,
    /// The message's version is not [`PROTOCOL_VERSION`].
    UnsupportedVersion {
        /// The version found, as written.
        found: String,
    },
    /// The request has no `"op"` field, or it is not a string.
    MissingOp,
    /// The request's `"op"` is not one this version knows.
    UnknownOp {
        /// The operation found.
        op: String,
    },
    /// A field is missing or has the wrong type.
    BadField {
        /// The field's name.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::TooLong { limit } => {
                write!(f, "request line too long: the limit is {limit} bytes")
            }
            ProtocolError::Empty => f.write_str("empty request line"),
            ProtocolError::Malformed { detail } => write!(f, "malformed JSON message: {detail}"),
            ProtocolError::MissingVersion => write!(
                f,
                "message has no protocol version (\"v\"); this side speaks version {PROTOCOL_VERSION}"
            ),
            ProtocolError::UnsupportedVersion { found } => write!(
                f,
                "unsupported protocol version {found}; this side speaks version {PROTOCOL_VERSION}"
            ),
            ProtocolError::MissingOp => f.write_str("request has no operation (\"op\")"),
            ProtocolError::UnknownOp { op } => write!(
                f,
                "unknown operation {op:?}; known operations are \"list\" and \"unlock\""
            ),
            ProtocolError::BadField { field, expected } => {
                write!(f, "field {field:?} must be {expected}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Decodes one request line (without its newline) of at most [`MAX_REQUEST_BYTES`].
///
/// Never panics, whatever the bytes: a fuzz target calls this.
pub fn decode_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
    decode_request_limited(bytes, MAX_REQUEST_BYTES)
}

/// [`decode_request`] with another limit on the line's length.
pub fn decode_request_limited(bytes: &[u8], limit: usize) -> Result<Request, ProtocolError> {
    if bytes.len() > limit {
        return Err(ProtocolError::TooLong { limit });
    }
    let mut object = decode_object(bytes)?;
    let op = match object.get("op") {
        Some(Value::String(op)) => op.as_str(),
        _ => return Err(ProtocolError::MissingOp),
    };
    match op {
        "list" => Ok(Request::List),
        "cluster_status" => Ok(Request::ClusterStatus),
        "cluster_add" => {
            let id = node_id(&object)?;
            match object.remove("address") {
                Some(Value::String(address)) => Ok(Request::ClusterAdd { id, address }),
                _ => Err(ProtocolError::BadField {
                    field: "address",
                    expected: "a string",
                }),
            }
        }
        "cluster_remove" => Ok(Request::ClusterRemove {
            id: node_id(&object)?,
        }),
        "unlock" => {
            let name = match object.remove("name") {
                Some(Value::String(name)) => name,
                _ => {
                    return Err(ProtocolError::BadField {
                        field: "name",
                        expected: "a string",
                    });
                }
            };
            let key = match object.remove("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(key)) => Some(key),
                Some(_) => {
                    return Err(ProtocolError::BadField {
                        field: "key",
                        expected: "a string or null",
                    });
                }
            };
            Ok(Request::Unlock { name, key })
        }
        other => Err(ProtocolError::UnknownOp {
            op: truncate(other, 64),
        }),
    }
}

/// The `id` field: a node id, a positive integer.
fn node_id(object: &Map<String, Value>) -> Result<u64, ProtocolError> {
    match object.get("id").and_then(Value::as_u64) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(ProtocolError::BadField {
            field: "id",
            expected: "a positive integer",
        }),
    }
}

/// Encodes a request as one line, newline included.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let value = match request {
        Request::List => serde_json::json!({ "v": PROTOCOL_VERSION, "op": "list" }),
        Request::ClusterStatus => {
            serde_json::json!({ "v": PROTOCOL_VERSION, "op": "cluster_status" })
        }
        Request::ClusterAdd { id, address } => serde_json::json!({
            "v": PROTOCOL_VERSION,
            "op": "cluster_add",
            "id": id,
            "address": address,
        }),
        Request::ClusterRemove { id } => serde_json::json!({
            "v": PROTOCOL_VERSION,
            "op": "cluster_remove",
            "id": id,
        }),
        Request::Unlock { name, key } => serde_json::json!({
            "v": PROTOCOL_VERSION,
            "op": "unlock",
            "name": name,
            "key": key,
        }),
    };
    to_line(&value)
}

/// Encodes a response as one line, newline included.
pub fn encode_response(response: &Response) -> Vec<u8> {
    #[derive(Serialize)]
    struct Wire<'a> {
        v: u64,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        locks: Option<&'a [LockEntry]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unlocked: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cluster: Option<&'a ClusterEntry>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    let mut wire = Wire {
        v: PROTOCOL_VERSION,
        ok: true,
        locks: None,
        unlocked: None,
        cluster: None,
        error: None,
    };
    match response {
        Response::Locks(locks) => wire.locks = Some(locks),
        Response::Unlocked { key } => wire.unlocked = Some(key),
        Response::Cluster(cluster) => wire.cluster = Some(cluster),
        Response::Error { message } => {
            wire.ok = false;
            wire.error = Some(message);
        }
    }
    to_line(&wire)
}

/// Decodes one response line (with or without its newline). Never panics.
pub fn decode_response(bytes: &[u8]) -> Result<Response, ProtocolError> {
    let mut object = decode_object(bytes)?;
    match object.get("ok") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return match object.remove("error") {
                Some(Value::String(message)) => Ok(Response::Error { message }),
                _ => Err(ProtocolError::BadField {
                    field: "error",
                    expected: "a string",
                }),
            };
        }
        _ => {
            return Err(ProtocolError::BadField {
                field: "ok",
                expected: "a boolean",
            });
        }
    }
    if let Some(locks) = object.remove("locks") {
        let locks = serde_json::from_value(locks).map_err(|_| ProtocolError::BadField {
            field: "locks",
            expected: "an array of lock entries",
        })?;
        return Ok(Response::Locks(locks));
    }
    if let Some(cluster) = object.remove("cluster") {
        let cluster = serde_json::from_value(cluster).map_err(|_| ProtocolError::BadField {
            field: "cluster",
            expected: "a cluster status",
        })?;
        return Ok(Response::Cluster(cluster));
    }
    match object.remove("unlocked") {
        Some(Value::String(key)) => Ok(Response::Unlocked { key }),
        _ => Err(ProtocolError::BadField {
            field: "locks\" or \"unlocked",
            expected: "present in a successful response",
        }),
    }
}

/// Parses a JSON object and checks its version.
fn decode_object(bytes: &[u8]) -> Result<Map<String, Value>, ProtocolError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ProtocolError::Empty);
    }
    // serde_json bounds nesting depth (128), so hostile input cannot overflow the stack.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed {
        detail: e.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(ProtocolError::Malformed {
            detail: "expected a JSON object".to_owned(),
        });
    };
    match object.get("v") {
        None => Err(ProtocolError::MissingVersion),
        Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => Ok(object),
        Some(other) => Err(ProtocolError::UnsupportedVersion {
            found: truncate(&other.to_string(), 64),
        }),
    }
}

fn to_line(value: &impl Serialize) -> Vec<u8> {
    // Serializing these types cannot fail: string keys, no maps with non-string keys.
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// At most `max` bytes of `text` (on a char boundary), marked when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::List,
            Request::Unlock {
                name: "a \"quoted\" ñame\n".into(),
                key: None,
            },
            Request::Unlock {
                name: "x".into(),
                key: Some("k".into()),
            },
            Request::ClusterStatus,
            Request::ClusterAdd {
                id: 4,
                address: "10.0.0.4:7070".into(),
            },
            Request::ClusterRemove { id: 4 },
        ] {
            let line = encode_request(&request);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            assert_eq!(decode_request(&line[..line.len() - 1]), Ok(request));
        }
    }

    #[test]
    fn membership_requests_need_a_positive_id_and_an_address() {
        for bad in [
            &br#"{"v":1,"op":"cluster_remove"}"#[..],
            br#"{"v":1,"op":"cluster_remove","id":0}"#,
            br#"{"v":1,"op":"cluster_remove","id":-3}"#,
            br#"{"v":1,"op":"cluster_remove","id":"4"}"#,
            br#"{"v":1,"op":"cluster_add","id":4}"#,
            br#"{"v":1,"op":"cluster_add","id":4,"address":7}"#,
        ] {
            assert!(
                matches!(decode_request(bad), Err(ProtocolError::BadField { .. })),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn documented_shapes() {
        assert_eq!(decode_request(br#"{"v":1,"op":"list"}"#), Ok(Request::List));
        assert_eq!(
            decode_request(br#"{"v":1,"op":"unlock","name":"n","key":null}"#),
            Ok(Request::Unlock {
                name: "n".into(),
                key: None
            })
        );
        assert_eq!(
            decode_request(br#" {"op":"unlock","name":"n","v":1,"extra":[1,2]}"#),
            Ok(Request::Unlock {
                name: "n".into(),
                key: None
            })
        );
        assert_eq!(
            encode_response(&Response::Unlocked { key: "k".into() }),
            b"{\"v\":1,\"ok\":true,\"unlocked\":\"k\"}\n"
        );
        assert_eq!(
            encode_response(&Response::Error {
                message: "boom".into()
            }),
            b"{\"v\":1,\"ok\":false,\"error\":\"boom\"}\n"
        );
        let entry = LockEntry {
            name: "n".into(),
            key: "k".into(),
            size: 2,
            owner: 3,
            fencing_token: 4,
            lease_expires_in_ms: None,
        };
        assert_eq!(
            String::from_utf8(encode_response(&Response::Locks(vec![entry]))).unwrap(),
            "{\"v\":1,\"ok\":true,\"locks\":[{\"name\":\"n\",\"key\":\"k\",\"size\":2,\"owner\":3,\
             \"fencing_token\":4,\"lease_expires_in_ms\":null}]}\n"
        );
    }

    #[test]
    fn responses_round_trip() {
        for response in [
            Response::Locks(vec![]),
            Response::Locks(vec![LockEntry {
                name: "n".into(),
                key: "k".into(),
                size: 1,
                owner: 0,
                fencing_token: u64::MAX,
                lease_expires_in_ms: Some(1500),
            }]),
            Response::Unlocked { key: "k".into() },
            Response::Error {
                message: "no".into(),
            },
        ] {
            assert_eq!(decode_response(&encode_response(&response)), Ok(response));
        }
    }

    #[test]
    fn bad_requests_are_clear_errors() {
        let cases: [(&[u8], &str); 11] = [
            (b"", "empty request"),
            (b"  \r", "empty request"),
            (b"{", "malformed JSON"),
            (b"\xff\xfe", "malformed JSON"),
            (b"[1]", "expected a JSON object"),
            (br#"{"op":"list"}"#, "no protocol version"),
            (br#"{"v":2,"op":"list"}"#, "unsupported protocol version 2"),
            (
                br#"{"v":"1","op":"list"}"#,
                "unsupported protocol version \"1\"",
            ),
            (br#"{"v":1,"op":"steal"}"#, "unknown operation \"steal\""),
            (
                br#"{"v":1,"op":"unlock"}"#,
                "field \"name\" must be a string",
            ),
            (
                br#"{"v":1,"op":"unlock","name":"n","key":5}"#,
                "field \"key\" must be a string or null",
            ),
        ];
        for (bytes, expected) in cases {
            let error = decode_request(bytes).expect_err("must fail");
            assert!(
                error.to_string().contains(expected),
                "{:?}: {error}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(
            decode_request(&long),
            Err(ProtocolError::TooLong {
                limit: MAX_REQUEST_BYTES
            })
        );
        assert_eq!(
            decode_request(&vec![b'['; 10_000])
                .map_err(|e| matches!(e, ProtocolError::Malformed { .. })),
            Err(true),
            "deep nesting is refused, not a stack overflow"
        );
    }
}
