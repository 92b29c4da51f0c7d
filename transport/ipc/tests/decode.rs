//! `decode_request` never panics (the fuzz target's property, checked on stable with proptest),
//! and answers valid requests exactly.

use ldlm_ipc::Request;
use ldlm_ipc::protocol::{decode_request, decode_response, encode_request};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
    }

    #[test]
    fn json_like_text_never_panics(text in r#"[{}\[\]":,0-9a-z\\ \-\.eE]{0,200}"#) {
        let _ = decode_request(text.as_bytes());
        let _ = decode_response(text.as_bytes());
    }

    #[test]
    fn mutated_requests_never_panic(
        name in ".{0,40}",
        key in proptest::option::of(".{0,40}"),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let request = Request::Unlock { name, key };
        let mut line = encode_request(&request);
        line.pop();
        prop_assert_eq!(decode_request(&line), Ok(request));
        for (at, byte) in flips {
            let len = line.len();
            line[at % len] = byte;
        }
        let _ = decode_request(&line);
    }
}
