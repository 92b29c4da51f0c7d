//! The `ldlm-session` cookie: finding it in a request, and the `Set-Cookie` values we send.
//!
//! Reading follows Go's `Request.Cookie` (what go-ldlm uses): every `Cookie` header is split at
//! `;`, pairs are trimmed, the **first** pair named `ldlm-session` wins, and a value wrapped in
//! double quotes is unwrapped. Writing is byte for byte go-ldlm's: `ldlm-session=<id>; Path=/;
//! Expires=<IMF-fixdate>` with no `HttpOnly`, `Secure`, `SameSite` or `Max-Age`.
//! Clearing the cookie on `DELETE /session` adds an `Expires` in the past (go-ldlm sends none),
//! so that cookie jars (curl's, browsers') drop it instead of keeping an empty value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// The cookie's name (go-ldlm's).
pub(crate) const COOKIE_NAME: &str = "ldlm-session";

/// The `Set-Cookie` value that clears the cookie (`DELETE /session`).
pub(crate) const CLEAR_COOKIE: HeaderValue =
    HeaderValue::from_static("ldlm-session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT");

/// The value of the request's `ldlm-session` cookie, if it sent one (possibly empty).
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then(|| unquote(value))
        })
}

/// `"abc"` → `abc` (Go accepts a quoted cookie value); anything else unchanged.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The latest date an `Expires` can show (the last second of year 9999).
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// The `Set-Cookie` value for session `id` that expires at `expires` (clamped to the years
/// 1970..=9999 that the date format can show).
pub(crate) fn set_cookie(id: &str, expires: SystemTime) -> HeaderValue {
    let expires = expires.clamp(UNIX_EPOCH, UNIX_EPOCH + LATEST);
    let value = format!(
        "{COOKIE_NAME}={id}; Path=/; Expires={}",
        httpdate::fmt_http_date(expires)
    );
    // Session ids are hex digits and the date is ASCII: always a valid header value.
    HeaderValue::try_from(value).unwrap_or(CLEAR_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(COOKIE, HeaderValue::from_str(line).expect("header"));
        }
        map
    }

    #[test]
    fn finds_the_first_match() {
        assert_eq!(session_cookie(&headers(&[])), None);
        assert_eq!(session_cookie(&headers(&["a=b"])), None);
        assert_eq!(session_cookie(&headers(&["ldlm-session=abc"])), Some("abc"));
        assert_eq!(
            session_cookie(&headers(&["a=b; ldlm-session=abc; c=d"])),
            Some("abc")
        );
        assert_eq!(
            session_cookie(&headers(&["a=b;ldlm-session=abc"])),
            Some("abc")
        );
        assert_eq!(
            session_cookie(&headers(&["ldlm-session=1; ldlm-session=2"])),
            Some("1")
        );
        assert_eq!(
            session_cookie(&headers(&["x=y", "ldlm-session=2"])),
            Some("2")
        );
        assert_eq!(session_cookie(&headers(&["ldlm-session=\"q\""])), Some("q"));
        assert_eq!(session_cookie(&headers(&["ldlm-session="])), Some(""));
        assert_eq!(session_cookie(&headers(&["ldlm-sessionx=1"])), None);
        assert_eq!(session_cookie(&headers(&["ldlm-session"])), None);
    }

    #[test]
    fn set_cookie_format() {
        let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            set_cookie("0123abcd", at),
            "ldlm-session=0123abcd; Path=/; Expires=Sun, 06 Nov 1994 08:49:37 GMT"
        );
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(
            set_cookie("x", far),
            "ldlm-session=x; Path=/; Expires=Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }
}
