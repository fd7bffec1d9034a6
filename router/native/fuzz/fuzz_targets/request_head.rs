//! Any bytes as a client's request head: parsing never panics, and what it
//! accepts is rewritten for the dyno as exactly one head with the same body
//! framing (nothing smuggled in, nothing of the body mistaken for a head).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slipway_dataplane::http1::{dyno_request_head, parse_request, Framing};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_request(data) else { return };
    assert!(head.head_len <= data.len());
    let out = dyno_request_head(&head, "127.0.0.1", "http", 80, "0123456789abcdef0123", 0);
    // Re-read leniently (the router's own limits leave no room for what it adds).
    let mut slots = [httparse::EMPTY_HEADER; 512];
    let mut again = httparse::Request::new(&mut slots);
    let parsed = again.parse(&out).expect("a rewritten head is valid HTTP");
    assert_eq!(parsed, httparse::Status::Complete(out.len()), "exactly one head");
    let named = |n: &str| again.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(n)).count();
    let (lengths, codings) = (named("content-length"), named("transfer-encoding"));
    match head.framing {
        Framing::Chunked => assert_eq!((lengths, codings), (0, 1)),
        Framing::Length(_) => assert_eq!((lengths, codings), (1, 0)),
        _ => assert!(codings == 0 && lengths <= 1),
    }
});
