//! Any bytes as a dyno's response head: parsing never panics, and the head the
//! client gets is exactly one valid head with the same status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway_dataplane::http1::parse_response;

fuzz_target!(|data: &[u8]| {
    for (head_request, keep) in [(false, true), (true, false)] {
        let Ok(Some(head)) = parse_response(data, head_request, keep) else { continue };
        assert!(head.head_len <= data.len());
        let mut slots = [httparse::EMPTY_HEADER; 512];
        let mut again = httparse::Response::new(&mut slots);
        let parsed = again.parse(&head.client_head).expect("the client's head is valid HTTP");
        assert_eq!(parsed, httparse::Status::Complete(head.client_head.len()));
        assert_eq!(again.code, Some(head.status));
    }
});
