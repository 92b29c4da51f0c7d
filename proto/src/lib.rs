//! The LDLM wire contract, and nothing else.
//!
//! `ldlm.proto` (beside this crate's `Cargo.toml`) is go-ldlm's gRPC API: package `ldlm`,
//! service `LDLM`, with go-ldlm's message names, field numbers and `optional` markers, so go-ldlm
//! clients work unchanged. The one addition is `LockResponse.fencing_token` (field 5), which old
//! clients ignore. This crate holds the generated prost messages and tonic stubs; it has no
//! behaviour of its own.
//!
//! - Messages: [`ldlm::LockRequest`], [`ldlm::LockResponse`], [`ldlm::ErrorCode`], ...
//! - Server: [`ldlm::ldlm_server::Ldlm`] (the trait to implement) and
//!   [`ldlm::ldlm_server::LdlmServer`] (the tonic service wrapping it).
//! - Client: [`ldlm::ldlm_client::LdlmClient`].
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptor set, for a gRPC reflection service.
//!
//! The code is generated at build time by `build.rs` with `protox` (a pure-Rust protobuf
//! compiler) and `tonic-prost-build`; no system `protoc` is needed.

/// Generated code for protobuf package `ldlm` (messages, enums, server and client stubs).
///
/// Doc comments come from `ldlm.proto`. The generated code is lint-clean today; the `allow` keeps
/// a prost/tonic upgrade from breaking `-D warnings` builds on code we do not write.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod ldlm {
    tonic::include_proto!("ldlm");
}

/// The encoded `google.protobuf.FileDescriptorSet` of `ldlm.proto` (with source info), for a
/// gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ldlm_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::ldlm::{
        Error, ErrorCode, LockRequest, LockResponse, RefreshLockRequest, RenewRequest,
        TryLockRequest, UnlockRequest, UnlockResponse,
    };

    /// Encodes a protobuf tag byte sequence (varint of `field << 3 | wire_type`).
    fn tag(field: u32, wire_type: u32) -> Vec<u8> {
        let mut v = (field << 3) | wire_type;
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    const VARINT: u32 = 0;
    const LEN: u32 = 2;

    #[test]
    fn lock_request_presence_is_preserved() {
        // Explicit 0 for an optional field is still sent; an absent one is not.
        let req = LockRequest {
            name: String::new(),
            wait_timeout_seconds: None,
            lock_timeout_seconds: Some(0),
            size: None,
        };
        let mut expected = tag(100, VARINT);
        expected.push(0);
        assert_eq!(req.encode_to_vec(), expected);

        let req = LockRequest {
            size: Some(0),
            ..Default::default()
        };
        let mut expected = tag(4, VARINT);
        expected.push(0);
        assert_eq!(req.encode_to_vec(), expected);

        let req = LockRequest {
            wait_timeout_seconds: Some(0),
            ..Default::default()
        };
        let mut expected = tag(3, VARINT);
        expected.push(0);
        assert_eq!(req.encode_to_vec(), expected);

        assert!(LockRequest::default().encode_to_vec().is_empty());

        // Decoding keeps presence too.
        let decoded = LockRequest::decode(&[0x20, 0x00][..]).unwrap();
        assert_eq!(decoded.size, Some(0));
        assert_eq!(decoded.lock_timeout_seconds, None);
    }

    #[test]
    fn lock_request_field_numbers() {
        let req = LockRequest {
            name: "a".into(),
            wait_timeout_seconds: Some(1),
            lock_timeout_seconds: Some(2),
            size: Some(3),
        };
        // prost encodes in field-number order.
        let mut expected = tag(1, LEN);
        expected.extend([1, b'a']);
        expected.extend(tag(3, VARINT));
        expected.push(1);
        expected.extend(tag(4, VARINT));
        expected.push(3);
        expected.extend(tag(100, VARINT));
        expected.push(2);
        assert_eq!(req.encode_to_vec(), expected);
    }

    #[test]
    fn try_lock_request_field_numbers() {
        let req = TryLockRequest {
            name: "a".into(),
            lock_timeout_seconds: Some(0),
            size: Some(0),
        };
        let mut expected = tag(1, LEN);
        expected.extend([1, b'a']);
        expected.extend(tag(4, VARINT));
        expected.push(0);
        expected.extend(tag(100, VARINT));
        expected.push(0);
        assert_eq!(req.encode_to_vec(), expected);
        assert!(TryLockRequest::default().encode_to_vec().is_empty());
    }

    #[test]
    fn renew_and_refresh_lock_requests_encode_identically() {
        let renew = RenewRequest {
            name: "n".into(),
            key: "k".into(),
            lock_timeout_seconds: 7,
        };
        let refresh = RefreshLockRequest {
            name: "n".into(),
            key: "k".into(),
            lock_timeout_seconds: 7,
        };
        let bytes = renew.encode_to_vec();
        assert_eq!(bytes, refresh.encode_to_vec());
        let mut expected = tag(1, LEN);
        expected.extend([1, b'n']);
        expected.extend(tag(2, LEN));
        expected.extend([1, b'k']);
        expected.extend(tag(100, VARINT));
        expected.push(7);
        assert_eq!(bytes, expected);
        assert_eq!(RefreshLockRequest::decode(&bytes[..]).unwrap(), refresh);

        // lock_timeout_seconds is NOT optional there: 0 is not sent.
        let renew = RenewRequest {
            lock_timeout_seconds: 0,
            ..Default::default()
        };
        assert!(renew.encode_to_vec().is_empty());
    }

    #[test]
    fn lock_response_field_numbers() {
        let resp = LockResponse {
            locked: true,
            name: "n".into(),
            key: "k".into(),
            error: Some(Error {
                code: ErrorCode::InvalidLockSize as i32,
                message: "m".into(),
            }),
            fencing_token: 300,
        };
        let mut expected = tag(1, VARINT);
        expected.push(1);
        expected.extend(tag(2, LEN));
        expected.extend([1, b'n']);
        expected.extend(tag(3, LEN));
        expected.extend([1, b'k']);
        expected.extend(tag(4, LEN));
        // Error { code = 1: 7, message = 2: "m" }
        expected.extend([5, 0x08, 7, 0x12, 1, b'm']);
        expected.extend(tag(5, VARINT));
        expected.extend([0xac, 0x02]); // 300 as a varint
        assert_eq!(resp.encode_to_vec(), expected);

        // fencing_token 0 (not locked) is not on the wire: old clients see go-ldlm's bytes.
        assert!(LockResponse::default().encode_to_vec().is_empty());
        // An old client's decoder skips field 5; ours reads it.
        let only_token = [0x28, 0x2a];
        assert_eq!(
            LockResponse::decode(&only_token[..]).unwrap().fencing_token,
            42
        );
    }

    #[test]
    fn unlock_messages_field_numbers() {
        let req = UnlockRequest {
            name: "n".into(),
            key: "k".into(),
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 1, b'n', 0x12, 1, b'k']);

        let resp = UnlockResponse {
            unlocked: true,
            name: "n".into(),
            error: Some(Error {
                code: ErrorCode::LockDoesNotExist as i32,
                message: String::new(),
            }),
        };
        assert_eq!(
            resp.encode_to_vec(),
            [0x08, 1, 0x12, 1, b'n', 0x1a, 2, 0x08, 1]
        );
        // An explicitly present but empty Error is still sent (presence).
        let resp = UnlockResponse {
            error: Some(Error::default()),
            ..Default::default()
        };
        assert_eq!(resp.encode_to_vec(), [0x1a, 0]);
    }

    #[test]
    fn error_code_values() {
        let expected = [
            (ErrorCode::Unknown, 0, "Unknown"),
            (ErrorCode::LockDoesNotExist, 1, "LockDoesNotExist"),
            (ErrorCode::InvalidLockKey, 2, "InvalidLockKey"),
            (ErrorCode::LockWaitTimeout, 3, "LockWaitTimeout"),
            (ErrorCode::NotLocked, 4, "NotLocked"),
            (
                ErrorCode::LockDoesNotExistOrInvalidKey,
                5,
                "LockDoesNotExistOrInvalidKey",
            ),
            (ErrorCode::LockSizeMismatch, 6, "LockSizeMismatch"),
            (ErrorCode::InvalidLockSize, 7, "InvalidLockSize"),
        ];
        for (code, value, name) in expected {
            assert_eq!(code as i32, value);
            assert_eq!(code.as_str_name(), name);
            assert_eq!(ErrorCode::from_str_name(name), Some(code));
            assert_eq!(ErrorCode::try_from(value), Ok(code));
        }
        assert!(ErrorCode::try_from(8).is_err());
    }

    #[test]
    fn descriptor_set_has_the_service_and_method_paths() {
        let fds = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        assert_eq!(fds.file.len(), 1, "no imports expected");
        let file = &fds.file[0];
        assert_eq!(file.name(), "ldlm.proto");
        assert_eq!(file.package(), "ldlm");
        assert_eq!(file.syntax(), "proto3");
        assert!(file.options.is_none(), "no go_package or other options");
        assert_eq!(file.service.len(), 1);
        let service = &file.service[0];
        assert_eq!(service.name(), "LDLM");

        let paths: Vec<String> = service
            .method
            .iter()
            .map(|m| {
                assert!(!m.client_streaming() && !m.server_streaming(), "unary");
                format!("/{}.{}/{}", file.package(), service.name(), m.name())
            })
            .collect();
        assert_eq!(
            paths,
            [
                "/ldlm.LDLM/Lock",
                "/ldlm.LDLM/TryLock",
                "/ldlm.LDLM/Unlock",
                "/ldlm.LDLM/RefreshLock",
                "/ldlm.LDLM/Renew",
            ]
        );
        let io: Vec<(&str, &str)> = service
            .method
            .iter()
            .map(|m| (m.input_type(), m.output_type()))
            .collect();
        assert_eq!(
            io,
            [
                (".ldlm.LockRequest", ".ldlm.LockResponse"),
                (".ldlm.TryLockRequest", ".ldlm.LockResponse"),
                (".ldlm.UnlockRequest", ".ldlm.UnlockResponse"),
                (".ldlm.RefreshLockRequest", ".ldlm.LockResponse"),
                (".ldlm.RenewRequest", ".ldlm.LockResponse"),
            ]
        );
    }

    #[test]
    fn generated_code_uses_the_method_paths() {
        let code = include_str!(concat!(env!("OUT_DIR"), "/ldlm.rs"));
        for path in [
            "/ldlm.LDLM/Lock",
            "/ldlm.LDLM/TryLock",
            "/ldlm.LDLM/Unlock",
            "/ldlm.LDLM/RefreshLock",
            "/ldlm.LDLM/Renew",
        ] {
            let quoted = format!("\"{path}\"");
            // Once in the client, once in the server's router.
            assert_eq!(code.matches(&quoted).count(), 2, "{path}");
        }
        assert_eq!(super::ldlm::ldlm_server::SERVICE_NAME, "ldlm.LDLM");
    }

    #[test]
    fn descriptor_set_field_numbers_and_optional_markers() {
        use prost_types::field_descriptor_proto::{Label, Type};

        let fds = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let file = &fds.file[0];
        // (message, field, number, type, proto3 optional)
        let expected: &[(&str, &str, i32, Type, bool)] = &[
            ("LockRequest", "name", 1, Type::String, false),
            ("LockRequest", "wait_timeout_seconds", 3, Type::Int32, true),
            (
                "LockRequest",
                "lock_timeout_seconds",
                100,
                Type::Int32,
                true,
            ),
            ("LockRequest", "size", 4, Type::Int32, true),
            ("TryLockRequest", "name", 1, Type::String, false),
            (
                "TryLockRequest",
                "lock_timeout_seconds",
                100,
                Type::Int32,
                true,
            ),
            ("TryLockRequest", "size", 4, Type::Int32, true),
            ("LockResponse", "locked", 1, Type::Bool, false),
            ("LockResponse", "name", 2, Type::String, false),
            ("LockResponse", "key", 3, Type::String, false),
            ("LockResponse", "error", 4, Type::Message, true),
            ("LockResponse", "fencing_token", 5, Type::Uint64, false),
            ("UnlockRequest", "name", 1, Type::String, false),
            ("UnlockRequest", "key", 2, Type::String, false),
            ("UnlockResponse", "unlocked", 1, Type::Bool, false),
            ("UnlockResponse", "name", 2, Type::String, false),
            ("UnlockResponse", "error", 3, Type::Message, true),
            ("RefreshLockRequest", "name", 1, Type::String, false),
            ("RefreshLockRequest", "key", 2, Type::String, false),
            (
                "RefreshLockRequest",
                "lock_timeout_seconds",
                100,
                Type::Int32,
                false,
            ),
            ("RenewRequest", "name", 1, Type::String, false),
            ("RenewRequest", "key", 2, Type::String, false),
            (
                "RenewRequest",
                "lock_timeout_seconds",
                100,
                Type::Int32,
                false,
            ),
            ("Error", "code", 1, Type::Enum, false),
            ("Error", "message", 2, Type::String, false),
        ];
        let mut seen = 0;
        for msg in &file.message_type {
            for field in &msg.field {
                let want = expected
                    .iter()
                    .find(|(m, f, ..)| *m == msg.name() && *f == field.name())
                    .unwrap_or_else(|| panic!("unexpected field {}.{}", msg.name(), field.name()));
                assert_eq!(field.number(), want.2, "{}.{}", want.0, want.1);
                assert_eq!(field.r#type(), want.3, "{}.{}", want.0, want.1);
                assert_eq!(field.label(), Label::Optional, "{}.{}", want.0, want.1);
                assert_eq!(field.proto3_optional(), want.4, "{}.{}", want.0, want.1);
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len());
    }
}
