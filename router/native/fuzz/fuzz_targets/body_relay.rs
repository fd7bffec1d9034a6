//! Any bytes as a chunked or sized body: relaying never panics, never writes
//! more than it read, and a chunked body it accepts is a well-formed one.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use slipway_dataplane::http1::{relay_body, Buffered, Framing};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    for framing in [Framing::Chunked, Framing::Length(data.len() as u64 / 2 + 1), Framing::UntilClose] {
        let mut src = Buffered::new(data);
        let mut out: Vec<u8> = Vec::new();
        let mut sent = 0u64;
        let result = runtime.block_on(relay_body(&mut src, &mut out, framing, Duration::from_secs(5), &mut sent));
        assert!(out.len() <= data.len());
        assert!(sent as usize <= out.len());
        if result.is_ok() && framing == Framing::Chunked {
            assert!(out.ends_with(b"\r\n"));
            assert_eq!(out.len() + src.buf.len(), data.len().min(out.len() + src.buf.len()));
        }
    }
});
