//! The Python binding: the `DataPlane` class of module `slipway_dataplane`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::plane::{Dyno, Page, Route, Settings, Shared};
use crate::tls;
use crate::workers::Workers;
use tokio_rustls::TlsAcceptor;

// A request allocates a few small buffers; glibc's malloc cost about 5% of
// the data plane's CPU under load, mimalloc's thread caches much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pyclass(module = "slipway_dataplane")]
struct DataPlane {
    shared: Arc<Shared>,
    workers: Mutex<Option<Workers>>,
    threads: usize,
    certificates: Arc<tls::Certificates>,
    tls: Arc<rustls::ServerConfig>,
}

#[pymethods]
impl DataPlane {
    /// `settings`: every knob by name (router/dataplane.py's PlaneSettings);
    /// an unknown name is refused, a missing one keeps its default.
    #[new]
    fn new(settings: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut s = Settings::default();
        let mut workers = 1usize;
        let secs = |v: &Bound<'_, PyAny>| -> PyResult<Duration> {
            let x: f64 = v.extract()?;
            if !(0.0..=86400.0 * 365.0).contains(&x) {
                return Err(PyValueError::new_err(format!("not a duration: {x}")));
            }
            Ok(Duration::from_secs_f64(x))
        };
        for (key, value) in settings.iter() {
            let name: String = key.extract()?;
            match name.as_str() {
                "workers" => workers = value.extract()?,
                "proto" => s.proto = value.extract()?,
                "connect_timeout" => s.connect_timeout = secs(&value)?,
                "response_timeout" => s.response_timeout = secs(&value)?,
                "idle_timeout" => s.idle_timeout = secs(&value)?,
                "log_bytes_per_app" => s.log_bytes_per_app = value.extract()?,
                "quarantine" => s.quarantine = secs(&value)?,
                "max_attempts" => s.max_attempts = value.extract::<u32>()?.max(1),
                "max_inflight_per_dyno" => s.max_inflight_per_dyno = value.extract::<u32>()?.max(1),
                "backlog_per_dyno" => s.backlog_per_dyno = value.extract()?,
                "boot_timeout" => s.boot_timeout = secs(&value)?,
                "upstream_idle_timeout" => s.upstream_idle_timeout = secs(&value)?,
                "upstream_pool_size" => s.upstream_pool_size = value.extract()?,
                "body_idle_timeout" => s.body_idle_timeout = secs(&value)?,
                _ => return Err(PyValueError::new_err(format!("unknown setting {name:?}"))),
            }
        }
        if workers == 0 {
            return Err(PyValueError::new_err("workers must be at least 1"));
        }
        let certificates = Arc::new(tls::Certificates::default());
        let tls = tls::server_config(certificates.clone()).map_err(PyRuntimeError::new_err)?;
        Ok(DataPlane {
            shared: Arc::new(Shared::new(s)),
            workers: Mutex::new(None),
            threads: workers,
            certificates,
            tls,
        })
    }

    /// Listens on `address` ("127.0.0.1:0"), HTTPS with `tls`; returns the bound port.
    #[pyo3(signature = (address, *, tls=false))]
    fn listen(&self, py: Python<'_>, address: &str, tls: bool) -> PyResult<u16> {
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| PyValueError::new_err(format!("not an address: {address}")))?;
        let mut guard = self
            .workers
            .lock()
            .map_err(|_| PyRuntimeError::new_err("data plane lock poisoned"))?;
        if guard.is_none() {
            *guard =
                Some(Workers::start(self.threads).map_err(|e| PyOSError::new_err(e.to_string()))?);
        }
        let workers = guard.as_ref().expect("the threads were just started");
        let acceptor = tls.then(|| TlsAcceptor::from(self.tls.clone()));
        py.allow_threads(|| {
            workers
                .listen(&self.shared, addr, acceptor)
                .map_err(|e| PyOSError::new_err(format!("cannot listen on {address}: {e}")))
        })
    }

    /// Replaces the route table: {host: (app, web, released, maintenance,
    /// crashed, least_loaded, [(address, dyno name), ...])}.
    #[allow(clippy::type_complexity)]
    fn set_routes(
        &self,
        routes: HashMap<String, (String, u32, bool, bool, bool, bool, Vec<(String, String)>)>,
    ) -> PyResult<()> {
        let mut table = HashMap::with_capacity(routes.len());
        for (host, (app, web, released, maintenance, crashed, least_loaded, dynos)) in routes {
            let mut parsed = Vec::with_capacity(dynos.len());
            for (address, name) in dynos {
                let addr: SocketAddr = address
                    .parse()
                    .map_err(|_| PyValueError::new_err(format!("not a dyno address: {address}")))?;
                parsed.push(Dyno { addr, name });
            }
            let route = Route {
                app,
                web,
                released,
                maintenance,
                crashed,
                least_loaded,
                dynos: parsed,
            };
            table.insert(host.to_ascii_lowercase(), Arc::new(route));
        }
        self.shared.set_routes(table);
        Ok(())
    }

    /// Replaces every certificate: the default one (chain PEM, key PEM), for
    /// names no other matches, and {host or "*.domain": (chain, key)}. Checked
    /// whole before any is used: one bad pair refuses the lot, naming it.
    #[pyo3(signature = (default, named))]
    fn set_certificates(
        &self,
        default: Option<(Vec<u8>, Vec<u8>)>,
        named: HashMap<String, (Vec<u8>, Vec<u8>)>,
    ) -> PyResult<()> {
        let default = match default {
            Some((chain, key)) => Some(
                tls::certified_key(&chain, &key)
                    .map_err(|e| PyValueError::new_err(format!("default certificate: {e}")))?,
            ),
            None => None,
        };
        let mut by_name = HashMap::with_capacity(named.len());
        for (name, (chain, key)) in named {
            let certified = tls::certified_key(&chain, &key)
                .map_err(|e| PyValueError::new_err(format!("certificate for {name}: {e}")))?;
            by_name.insert(name.to_ascii_lowercase(), certified);
        }
        self.certificates.set(default, by_name);
        Ok(())
    }

    /// Replaces the error answers: {key: (code, desc, status, keep-alive bytes, close bytes)}.
    fn set_pages(&self, pages: HashMap<String, (String, String, u16, Vec<u8>, Vec<u8>)>) {
        let table = pages
            .into_iter()
            .map(|(key, (code, desc, status, keep_alive, close))| {
                (
                    key,
                    Page {
                        code,
                        desc,
                        status,
                        keep_alive,
                        close,
                    },
                )
            })
            .collect();
        *self.shared.pages.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// ACME HTTP-01 challenges to answer: {token: key authorization}, replacing the last set.
    fn set_challenges(&self, challenges: HashMap<String, String>) {
        self.shared.set_challenges(challenges);
    }

    /// The log lines since the last call: [(app, newline-separated lines)].
    fn take_logs<'py>(&self, py: Python<'py>) -> Vec<(String, Bound<'py, PyBytes>)> {
        self.shared
            .take_logs()
            .into_iter()
            .map(|(app, lines)| (app, PyBytes::new_bound(py, &lines)))
            .collect()
    }

    fn counters(&self) -> HashMap<&'static str, u64> {
        let c = &self.shared.counters;
        let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        HashMap::from([
            ("requests", read(&c.requests)),
            ("errors", read(&c.errors)),
            ("log_lines_dropped", read(&c.log_lines_dropped)),
            ("panics", read(&c.panics)),
            ("quarantines", read(&c.quarantines)),
            ("connections_total", read(&c.connections_total)),
            ("connections_active", read(&c.connections_active)),
            ("requests_active", read(&c.requests_active)),
            ("held_booting", read(&c.held_booting)),
            ("upstream_connects", read(&c.upstream_connects)),
            ("upstream_reuses", read(&c.upstream_reuses)),
            ("upstream_retries", read(&c.upstream_retries)),
            ("bad_requests", read(&c.bad_requests)),
            ("tls_handshake_failures", read(&c.tls_handshake_failures)),
            ("acme_answers", read(&c.acme_answers)),
            ("waiting", self.shared.waiting()),
            ("upstream_idle", self.shared.pooled_idle() as u64),
        ])
    }

    /// [(status, H code or "", count)] of every answer so far.
    fn answers(&self) -> Vec<(u16, String, u64)> {
        self.shared.answers.snapshot()
    }

    /// The dyno addresses quarantined on this router now.
    fn quarantined(&self) -> Vec<String> {
        self.shared
            .quarantined()
            .into_iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// Stops accepting; connections close as they go idle (requests under way finish).
    fn drain(&self) {
        self.shared.drain();
    }

    /// Stops every listener and connection (the threads end in the background).
    fn stop(&self, py: Python<'_>) {
        if let Ok(mut guard) = self.workers.lock() {
            if let Some(mut workers) = guard.take() {
                py.allow_threads(|| workers.stop());
            }
        }
    }
}

#[pymodule]
fn slipway_dataplane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DataPlane>()?;
    Ok(())
}
