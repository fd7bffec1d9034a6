//! `slipway_dataplane`: the router's data path.
//!
//! Built as a Python extension module (feature `python`, the default):
//! Python (router/dataplane.py) owns everything but the bytes: it hands over
//! route table snapshots and rendered error pages, and collects log batches
//! and counters. The data plane runs on its own tokio threads and never calls
//! into Python, so a request never waits on the interpreter. Without the
//! feature it is a plain Rust library (the fuzz targets in fuzz/ use it so).

pub mod http1;
pub mod http2;
pub mod plane;
#[cfg(feature = "python")]
mod python;
pub mod tls;
pub mod workers;
