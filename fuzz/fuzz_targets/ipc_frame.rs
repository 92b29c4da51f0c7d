//! Arbitrary bytes as one IPC request line (`decode_request`): an error or a request, never a
//! panic; a decoded request survives encode → decode unchanged. The same bytes also go through
//! the client's `decode_response` (what `ldlm-lock` reads from the socket).

#![no_main]

use ldlm_ipc::protocol::{
    decode_request, decode_request_limited, decode_response, encode_request, encode_response,
};
use libfuzzer_sys::fuzz_target;

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let line = encode_request(&request);
        assert!(line.ends_with(b"\n"), "an encoded request is one line");
        assert!(
            !strip_newline(&line).contains(&b'\n'),
            "an encoded request has no newline inside: {line:?}"
        );
        let again = decode_request(strip_newline(&line))
            .unwrap_or_else(|e| panic!("re-encoded {request:?} does not decode: {e}"));
        assert_eq!(again, request, "request changed through encode/decode");
    }
    // A smaller limit only ever refuses more.
    if decode_request_limited(data, 16).is_ok() {
        assert!(data.len() <= 16);
        assert!(decode_request(data).is_ok());
    }
    if let Ok(response) = decode_response(data) {
        let line = encode_response(&response);
        assert!(!strip_newline(&line).contains(&b'\n'));
        let again = decode_response(&line)
            .unwrap_or_else(|e| panic!("re-encoded {response:?} does not decode: {e}"));
        assert_eq!(again, response, "response changed through encode/decode");
    }
});
