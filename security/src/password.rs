//! The `--password` check, for gRPC metadata and REST Basic auth, as go-ldlm checks it.
//!
//! Unlike go-ldlm, the comparison runs in constant time: it may reveal whether the lengths
//! differ, nothing else about the password.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq;

/// Base64 as Go's `base64.StdEncoding` decodes it (what `net/http`'s `Request.BasicAuth`
/// uses): standard alphabet, padding required, non-zero trailing bits tolerated.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Why a request's credentials were refused. The `Display` texts are go-ldlm's gRPC status
/// details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were sent (no `authorization` metadata / header).
    #[error("missing credentials")]
    Missing,
    /// Credentials were sent but are wrong or malformed.
    #[error("invalid credentials")]
    Invalid,
}

/// The configured password. `Debug` never shows it.
#[derive(Clone)]
pub struct Password {
    bytes: Box<[u8]>,
}

impl Password {
    /// A password of exactly these bytes (an empty one is matched only by an empty value).
    pub fn new(password: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: password.into().into_boxed_slice(),
        }
    }

    /// The password as configured: an empty string means "no password" (`None`), as in
    /// go-ldlm, where the check is skipped when `--password` is empty.
    pub fn from_config(value: &str) -> Option<Self> {
        (!value.is_empty()).then(|| Self::new(value))
    }

    /// Whether `candidate` equals the password, in time independent of the contents (only
    /// whether the lengths differ can be observed).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // subtle's slice comparison returns early only on a length mismatch.
        bool::from(self.bytes.as_ref().ct_eq(candidate))
    }

    /// The gRPC rule: `authorization` is the **first** value of the `authorization` metadata
    /// key (`None` if absent); it must equal the password byte for byte (no `Bearer` prefix).
    pub fn check_grpc(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        match authorization {
            None => Err(AuthError::Missing),
            Some(value) if self.matches(value) => Ok(()),
            Some(_) => Err(AuthError::Invalid),
        }
    }

    /// The REST rule: `header` is the `Authorization` header value (`None` if absent); it
    /// must be `Basic base64(user:password)`. The scheme name is case-insensitive and followed
    /// by exactly one space; the user is ignored and everything after the **first** `:` is the
    /// password. No colon, bad base64 or another scheme → [`AuthError::Invalid`].
    pub fn check_basic(&self, header: Option<&[u8]>) -> Result<(), AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, encoded) = header.split_at_checked(6).ok_or(AuthError::Invalid)?;
        if !scheme.eq_ignore_ascii_case(b"Basic ") {
            return Err(AuthError::Invalid);
        }
        let decoded = GO_STD_BASE64
            .decode(encoded)
            .map_err(|_| AuthError::Invalid)?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(AuthError::Invalid)?;
        if self.matches(&decoded[colon + 1..]) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn basic(credentials: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(credentials)).into_bytes()
    }

    #[test]
    fn debug_redacts() {
        let p = Password::new("hunter2");
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "Password(<redacted>)");
    }

    #[test]
    fn display_texts_are_go_ldlms() {
        assert_eq!(AuthError::Missing.to_string(), "missing credentials");
        assert_eq!(AuthError::Invalid.to_string(), "invalid credentials");
    }

    #[test]
    fn from_config_empty_means_none() {
        assert!(Password::from_config("").is_none());
        assert!(Password::from_config("x").is_some());
    }

    #[test]
    fn grpc_rule() {
        let p = Password::new("pw");
        assert_eq!(p.check_grpc(Some(b"pw")), Ok(()));
        assert_eq!(p.check_grpc(None), Err(AuthError::Missing));
        assert_eq!(p.check_grpc(Some(b"px")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(b"")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(b"pww")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(b"p")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(b"PW")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(b" pw")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(b"Bearer pw")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(Some(&basic(":pw"))), Err(AuthError::Invalid));
    }

    #[test]
    fn grpc_non_utf8_and_special_bytes() {
        let p = Password::new(b"p:w;\xff".to_vec());
        assert_eq!(p.check_grpc(Some(b"p:w;\xff")), Ok(()));
        assert_eq!(p.check_grpc(Some(b"p:w;\xfe")), Err(AuthError::Invalid));
    }

    #[test]
    fn empty_password_matches_only_empty_value() {
        let p = Password::new("");
        assert_eq!(p.check_grpc(Some(b"")), Ok(()));
        assert_eq!(p.check_grpc(Some(b"x")), Err(AuthError::Invalid));
        assert_eq!(p.check_grpc(None), Err(AuthError::Missing));
    }

    #[test]
    fn basic_accepts_any_user() {
        let p = Password::new("pw");
        assert_eq!(p.check_basic(Some(&basic("anyuser:pw"))), Ok(()));
        assert_eq!(p.check_basic(Some(&basic(":pw"))), Ok(()));
        assert_eq!(p.check_basic(Some(&basic("pw:pw"))), Ok(()));
    }

    #[test]
    fn basic_wrong_or_missing() {
        let p = Password::new("pw");
        assert_eq!(p.check_basic(None), Err(AuthError::Missing));
        assert_eq!(p.check_basic(Some(b"")), Err(AuthError::Invalid));
        assert_eq!(p.check_basic(Some(&basic("u:px"))), Err(AuthError::Invalid));
        assert_eq!(p.check_basic(Some(&basic("u:"))), Err(AuthError::Invalid));
        assert_eq!(
            p.check_basic(Some(&basic("u:pww"))),
            Err(AuthError::Invalid)
        );
        assert_eq!(p.check_basic(Some(&basic("u:p"))), Err(AuthError::Invalid));
        assert_eq!(
            p.check_basic(Some(&basic("u:pw "))),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn basic_only_first_colon_splits() {
        let p = Password::new("a:b;c:d");
        assert_eq!(p.check_basic(Some(&basic("user:a:b;c:d"))), Ok(()));
        assert_eq!(p.check_basic(Some(&basic(":a:b;c:d"))), Ok(()));
        // Splitting at the last colon would give "d".
        let d = Password::new("d");
        assert_eq!(
            d.check_basic(Some(&basic("a:b;c:d"))),
            Err(AuthError::Invalid)
        );
        // The user part cannot contain the colon.
        assert_eq!(
            p.check_basic(Some(&basic("a:b;c:d"))),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn basic_no_colon_is_invalid() {
        let p = Password::new("pw");
        assert_eq!(p.check_basic(Some(&basic("pw"))), Err(AuthError::Invalid));
    }

    #[test]
    fn basic_bad_base64_is_invalid() {
        let p = Password::new("pw");
        assert_eq!(p.check_basic(Some(b"Basic !!!!")), Err(AuthError::Invalid));
        assert_eq!(p.check_basic(Some(b"Basic :pw")), Err(AuthError::Invalid));
        // Unpadded (Go's StdEncoding requires padding).
        let unpadded = STANDARD.encode("u:pw").trim_end_matches('=').to_owned();
        assert_ne!(unpadded, STANDARD.encode("u:pw"), "test needs padding");
        assert_eq!(
            p.check_basic(Some(format!("Basic {unpadded}").as_bytes())),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            p.check_basic(Some(b"Basic \xff\xfe")),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn basic_scheme_case_insensitive_and_others_refused() {
        let p = Password::new("pw");
        let enc = STANDARD.encode("u:pw");
        for scheme in ["basic", "BASIC", "bAsIc"] {
            let h = format!("{scheme} {enc}");
            assert_eq!(p.check_basic(Some(h.as_bytes())), Ok(()), "{h}");
        }
        for h in [
            format!("Bearer {enc}"),
            "Bearer pw".to_owned(),
            "pw".to_owned(),
            format!("Basic  {enc}"),
            format!("Basic{enc}"),
            "Basic".to_owned(),
            "Basic ".to_owned(),
            enc.clone(),
        ] {
            assert_eq!(
                p.check_basic(Some(h.as_bytes())),
                Err(AuthError::Invalid),
                "{h}"
            );
        }
    }
}
