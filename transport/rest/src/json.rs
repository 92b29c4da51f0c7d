//! The JSON of the REST API: protojson, as go-ldlm's grpc-gateway speaks it.
//!
//! **Input** (`TryLockRequest`, `UnlockRequest`, `RefreshLockRequest`):
//!
//! - a JSON object; an empty (or all-whitespace) body is the empty message, so it reaches the
//!   engine and fails there as `lock name cannot be empty`, like go-ldlm;
//! - field names as in the proto (`lock_timeout_seconds`) or in lowerCamel (`lockTimeoutSeconds`);
//!   the same field twice (under either name) is an error, as in protojson;
//! - `int32` fields as a JSON number (`30`, also `30.0` or `3e1`: protojson accepts any number
//!   with an integral value) or as a string holding one (`"30"`, no surrounding whitespace);
//! - `null` for any field means "absent" (presence matters: an absent `size` is 1, `size: 0` is
//!   an error);
//! - unknown fields are ignored (grpc-gateway's `DiscardUnknown`), whatever their value.
//!
//! Stricter than go-ldlm (a stream decoder): non-whitespace after the object is an error.
//!
//! **Output** (`LockResponse`, `UnlockResponse`): lowerCamel names in proto declaration order,
//! unset non-optional scalars written out (`"locked":false`, `"key":""`), the unset `optional
//! Error` omitted, enum codes written as their names (`"code":"Unknown"` too). `fencingToken` is
//! a `uint64`, which protojson writes as a **decimal string** (`"fencingToken":"7"`, `"0"` when
//! not locked) because JSON numbers lose precision above 2^53; we do the same, so any protojson
//! client decodes it.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use ldlm_engine::LockError;
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// `TryLockRequest` (the body of `POST /v1/lock`).
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct TryLockRequest<'a> {
    /// The lock's name.
    #[serde(borrow, deserialize_with = "string")]
    pub(crate) name: Cow<'a, str>,
    /// Slots of the lock; absent means 1.
    #[serde(deserialize_with = "optional_int32")]
    pub(crate) size: Option<i32>,
    /// Lease in seconds; absent or 0 means none.
    #[serde(alias = "lockTimeoutSeconds", deserialize_with = "optional_int32")]
    pub(crate) lock_timeout_seconds: Option<i32>,
}

/// `UnlockRequest` (the body of `POST /v1/unlock`).
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct UnlockRequest<'a> {
    /// The lock's name.
    #[serde(borrow, deserialize_with = "string")]
    pub(crate) name: Cow<'a, str>,
    /// The key of the hold to release.
    #[serde(borrow, deserialize_with = "string")]
    pub(crate) key: Cow<'a, str>,
}

/// `RefreshLockRequest` / `RenewRequest` (the body of `POST /v1/refreshlock` and `/v1/renew`).
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct RefreshRequest<'a> {
    /// The lock's name.
    #[serde(borrow, deserialize_with = "string")]
    pub(crate) name: Cow<'a, str>,
    /// The key of the hold to refresh.
    #[serde(borrow, deserialize_with = "string")]
    pub(crate) key: Cow<'a, str>,
    /// The new lease in seconds. Not `optional` in the proto: absent is 0 (and refused).
    #[serde(alias = "lockTimeoutSeconds", deserialize_with = "optional_int32")]
    pub(crate) lock_timeout_seconds: Option<i32>,
}

/// Why a request body is not a valid message (answered with `400`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid request body: {}", self.0)
    }
}

/// Decodes a request message from a body (see the module doc for the rules).
pub(crate) fn decode<'a, T>(body: &'a [u8]) -> Result<T, DecodeError>
where
    T: Deserialize<'a> + Default,
{
    match body.iter().find(|b| !is_json_whitespace(**b)) {
        None => Ok(T::default()),
        Some(b'{') => serde_json::from_slice(body).map_err(|e| DecodeError(e.to_string())),
        Some(_) => Err(DecodeError("expected a JSON object".to_owned())),
    }
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A string field: a JSON string (borrowed from the body when it has no escapes) or `null`
/// (the empty string, proto3's default).
fn string<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'a, str>, D::Error> {
    struct StringVisitor;

    impl<'de> Visitor<'de> for StringVisitor {
        type Value = Cow<'de, str>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
    }

    deserializer.deserialize_any(StringVisitor)
}

/// An `int32` field: a number with an integral value in range, a string holding one, or `null`
/// (absent).
fn optional_int32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i32>, D::Error> {
    deserializer.deserialize_any(Int32Visitor)
}

struct Int32Visitor;

impl Int32Visitor {
    fn integral<E: de::Error>(self, v: f64) -> Result<Option<i32>, E> {
        if v.fract() == 0.0 && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) {
            Ok(Some(v as i32))
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

impl<'de> Visitor<'de> for Int32Visitor {
    type Value = Option<i32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 32-bit integer (a JSON number, or a string holding one)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        i32::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i32::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.integral(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        // protojson: the string must be exactly a JSON number, without surrounding whitespace.
        let invalid = || E::invalid_value(Unexpected::Str(v), &Int32Visitor);
        if v.trim() != v {
            return Err(invalid());
        }
        let number: serde_json::Number = serde_json::from_str(v).map_err(|_| invalid())?;
        if let Some(i) = number.as_i64() {
            self.visit_i64(i)
        } else if let Some(u) = number.as_u64() {
            self.visit_u64(u)
        } else if let Some(f) = number.as_f64() {
            self.integral(f)
        } else {
            Err(invalid())
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A `LockResponse`, as protojson writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockResponse<'a> {
    /// Whether the caller holds the lock now.
    pub(crate) locked: bool,
    /// Echo of the request's name.
    pub(crate) name: &'a str,
    /// The hold's key (empty when not locked, except a refresh echoes the request's key).
    pub(crate) key: &'a str,
    /// The lock-domain error, if any.
    pub(crate) error: Option<&'a LockError>,
    /// The grant's fencing token (0 when not locked).
    pub(crate) fencing_token: u64,
}

impl LockResponse<'_> {
    /// The JSON body.
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(96 + self.name.len());
        out.extend_from_slice(b"{\"locked\":");
        out.extend_from_slice(if self.locked { b"true" } else { b"false" });
        out.extend_from_slice(b",\"name\":");
        push_string(&mut out, self.name);
        out.extend_from_slice(b",\"key\":");
        push_string(&mut out, self.key);
        if let Some(error) = self.error {
            push_error(&mut out, error);
        }
        out.extend_from_slice(b",\"fencingToken\":\"");
        out.extend_from_slice(self.fencing_token.to_string().as_bytes());
        out.extend_from_slice(b"\"}");
        Bytes::from(out)
    }
}

/// An `UnlockResponse`, as protojson writes it.
pub(crate) fn unlock_response(unlocked: bool, name: &str, error: Option<&LockError>) -> Bytes {
    let mut out = Vec::with_capacity(48 + name.len());
    out.extend_from_slice(b"{\"unlocked\":");
    out.extend_from_slice(if unlocked { b"true" } else { b"false" });
    out.extend_from_slice(b",\"name\":");
    push_string(&mut out, name);
    if let Some(error) = error {
        push_error(&mut out, error);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// The body of every error status: `{"error":"<message>"}`.
pub(crate) fn error_body(message: &str) -> Bytes {
    let mut out = Vec::with_capacity(16 + message.len());
    out.extend_from_slice(b"{\"error\":");
    push_string(&mut out, message);
    out.push(b'}');
    Bytes::from(out)
}

/// The body of `POST /session` (and, with an empty id, of `DELETE /session`), byte for byte
/// go-ldlm's: `{"session_id": "<id>"}`, with the space.
pub(crate) fn session_body(id: &str) -> Bytes {
    Bytes::from(format!("{{\"session_id\": \"{id}\"}}"))
}

/// `,"error":{"code":"<name>","message":"<text>"}`.
fn push_error(out: &mut Vec<u8>, error: &LockError) {
    out.extend_from_slice(b",\"error\":{\"code\":\"");
    out.extend_from_slice(error.code().name().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    push_string(out, &error.to_string());
    out.push(b'}');
}

/// Writes `s` as a JSON string: quotes, backslashes and control characters escaped, everything
/// else (valid UTF-8 already) as is.
fn push_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn lock(body: &str) -> Result<TryLockRequest<'_>, DecodeError> {
        decode(body.as_bytes())
    }

    fn parsed(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn empty_body_is_the_empty_message() {
        for body in ["", "  \n\t\r "] {
            assert_eq!(lock(body).expect("empty"), TryLockRequest::default());
        }
        assert_eq!(lock("{}").expect("empty object"), TryLockRequest::default());
    }

    #[test]
    fn proto_and_camel_names() {
        let a = lock(r#"{"name":"a","size":2,"lock_timeout_seconds":30}"#).expect("proto names");
        let b = lock(r#"{"name":"a","size":2,"lockTimeoutSeconds":30}"#).expect("camel names");
        assert_eq!(a, b);
        assert_eq!(a.name, "a");
        assert_eq!(a.size, Some(2));
        assert_eq!(a.lock_timeout_seconds, Some(30));
    }

    #[test]
    fn same_field_twice_is_an_error() {
        lock(r#"{"lock_timeout_seconds":1,"lockTimeoutSeconds":2}"#).expect_err("duplicate");
        lock(r#"{"name":"a","name":"b"}"#).expect_err("duplicate");
    }

    #[test]
    fn int32_forms() {
        let size = |v: &str| lock(&format!(r#"{{"size":{v}}}"#)).map(|r| r.size);
        assert_eq!(size("30"), Ok(Some(30)));
        assert_eq!(size("\"30\""), Ok(Some(30)));
        assert_eq!(size("\"-7\""), Ok(Some(-7)));
        assert_eq!(size("30.0"), Ok(Some(30)));
        assert_eq!(size("3e1"), Ok(Some(30)));
        assert_eq!(size("\"3e1\""), Ok(Some(30)));
        assert_eq!(size("0"), Ok(Some(0)));
        assert_eq!(size("-0"), Ok(Some(0)));
        assert_eq!(size("null"), Ok(None));
        assert_eq!(size("2147483647"), Ok(Some(i32::MAX)));
        assert_eq!(size("-2147483648"), Ok(Some(i32::MIN)));
        for bad in [
            "2147483648",
            "-2147483649",
            "\"2147483648\"",
            "30.5",
            "\" 30\"",
            "\"30 \"",
            "\"\"",
            "\"abc\"",
            "\"0x10\"",
            "true",
            "[1]",
            "{}",
            "1e400",
            "18446744073709551616",
        ] {
            size(bad).expect_err(bad);
        }
    }

    #[test]
    fn strings_and_nulls() {
        let r = lock(r#"{"name":null,"size":null,"lock_timeout_seconds":null}"#).expect("nulls");
        assert_eq!(r, TryLockRequest::default());
        let r = lock(r#"{"name":"a\"b\u00e9\n"}"#).expect("escapes");
        assert_eq!(r.name, "a\"bé\n");
        assert!(matches!(
            lock(r#"{"name":"plain"}"#).expect("plain").name,
            Cow::Borrowed(_)
        ));
        lock(r#"{"name":5}"#).expect_err("number as name");
        lock(r#"{"name":true}"#).expect_err("bool as name");
        lock(r#"{"name":["a"]}"#).expect_err("array as name");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = lock(r#"{"name":"a","wait_timeout_seconds":5,"x":{"y":[1,true,null]},"z":"q"}"#)
            .expect("unknown fields");
        assert_eq!(r.name, "a");
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            "{",
            "[]",
            "[\"a\"]",
            "null",
            "\"a\"",
            "5",
            "{\"name\":\"a\"} x",
            "{\"name\":\"a\"}{}",
            "{name:\"a\"}",
            "{\"name\":\"\\ud800\"}",
        ] {
            lock(bad).expect_err(bad);
        }
        decode::<TryLockRequest<'_>>(b"{\"name\":\"\xff\"}").expect_err("invalid UTF-8");
        assert!(
            lock("[]")
                .unwrap_err()
                .to_string()
                .starts_with("invalid request body: ")
        );
    }

    #[test]
    fn refresh_and_unlock_fields() {
        let r: RefreshRequest<'_> =
            decode(br#"{"name":"n","key":"k","lockTimeoutSeconds":"9"}"#).expect("refresh");
        assert_eq!(
            (r.name.as_ref(), r.key.as_ref(), r.lock_timeout_seconds),
            ("n", "k", Some(9))
        );
        let u: UnlockRequest<'_> = decode(br#"{"name":"n","key":"k","size":3}"#).expect("unlock");
        assert_eq!((u.name.as_ref(), u.key.as_ref()), ("n", "k"));
    }

    #[test]
    fn lock_response_shapes() {
        let ok = LockResponse {
            locked: true,
            name: "r1",
            key: "f4755120-0000-4000-8000-000000000000",
            error: None,
            fencing_token: u64::MAX,
        };
        assert_eq!(
            parsed(&ok.encode()),
            json!({"locked":true,"name":"r1","key":"f4755120-0000-4000-8000-000000000000","fencingToken":"18446744073709551615"})
        );
        let failed = LockResponse {
            locked: false,
            name: "",
            key: "",
            error: Some(&LockError::EmptyName),
            fencing_token: 0,
        };
        let text = failed.encode();
        assert_eq!(
            parsed(&text),
            json!({"locked":false,"name":"","key":"","error":{"code":"Unknown","message":"lock name cannot be empty"},"fencingToken":"0"})
        );
        // Declaration order, as protojson.
        assert!(
            std::str::from_utf8(&text).expect("utf8").find("error")
                < std::str::from_utf8(&text)
                    .expect("utf8")
                    .find("fencingToken")
        );
    }

    #[test]
    fn unlock_response_shapes() {
        assert_eq!(
            parsed(&unlock_response(true, "r3", None)),
            json!({"unlocked":true,"name":"r3"})
        );
        assert_eq!(
            parsed(&unlock_response(
                false,
                "nonexist",
                Some(&LockError::LockDoesNotExist)
            )),
            json!({"unlocked":false,"name":"nonexist","error":{"code":"LockDoesNotExist","message":"a lock by that name does not exist"}})
        );
    }

    #[test]
    fn strings_are_escaped() {
        let name = "q\"b\\s\n\r\t\u{8}\u{c}\u{1}\u{1f} é 😀 \u{7f}";
        let body = unlock_response(true, name, None);
        assert_eq!(parsed(&body)["name"], name);
        assert_eq!(parsed(&error_body(name))["error"], name);
    }

    #[test]
    fn session_body_is_byte_exact() {
        assert_eq!(&session_body("abc")[..], br#"{"session_id": "abc"}"#);
        assert_eq!(&session_body("")[..], br#"{"session_id": ""}"#);
    }
}
