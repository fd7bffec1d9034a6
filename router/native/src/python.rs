//! The Python binding: the `DataPlane` class of module `slipway_dataplane`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::plane::{self, Dyno, Page, Route, Settings, Shared};

#[pyclass(module = "slipway_dataplane")]
struct DataPlane {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    workers: usize,
}

#[pymethods]
impl DataPlane {
    #[new]
    #[pyo3(signature = (*, workers=1, public_port=80, proto="http", connect_timeout=5.0, response_timeout=30.0, idle_timeout=55.0, log_bytes_per_app=1<<20, quarantine=5.0, max_attempts=10, max_inflight_per_dyno=50, backlog_per_dyno=50, boot_timeout=75.0, upstream_idle_timeout=1.5, upstream_pool_size=64, body_idle_timeout=55.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        workers: usize,
        public_port: u16,
        proto: &str,
        connect_timeout: f64,
        response_timeout: f64,
        idle_timeout: f64,
        log_bytes_per_app: usize,
        quarantine: f64,
        max_attempts: u32,
        max_inflight_per_dyno: u32,
        backlog_per_dyno: usize,
        boot_timeout: f64,
        upstream_idle_timeout: f64,
        upstream_pool_size: usize,
        body_idle_timeout: f64,
    ) -> PyResult<Self> {
        if workers == 0 {
            return Err(PyValueError::new_err("workers must be at least 1"));
        }
        let settings = Settings {
            connect_timeout: Duration::from_secs_f64(connect_timeout),
            quarantine: Duration::from_secs_f64(quarantine),
            max_attempts: max_attempts.max(1),
            max_inflight_per_dyno: max_inflight_per_dyno.max(1),
            backlog_per_dyno,
            boot_timeout: Duration::from_secs_f64(boot_timeout),
            upstream_idle_timeout: Duration::from_secs_f64(upstream_idle_timeout),
            upstream_pool_size,
            body_idle_timeout: Duration::from_secs_f64(body_idle_timeout),
            response_timeout: Duration::from_secs_f64(response_timeout),
            idle_timeout: Duration::from_secs_f64(idle_timeout),
            public_port,
            proto: proto.to_string(),
            log_bytes_per_app,
        };
        Ok(DataPlane {
            shared: Arc::new(Shared::new(settings)),
            runtime: Mutex::new(None),
            workers,
        })
    }

    /// Listens on `address` ("127.0.0.1:0"); returns the bound port.
    fn listen(&self, py: Python<'_>, address: &str) -> PyResult<u16> {
        let addr: SocketAddr = address
            .parse()
            .map_err(|_| PyValueError::new_err(format!("not an address: {address}")))?;
        let mut guard = self
            .runtime
            .lock()
            .map_err(|_| PyRuntimeError::new_err("data plane lock poisoned"))?;
        if guard.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.workers)
                .thread_name("slipway-dataplane")
                .enable_all()
                .build()
                .map_err(|e| PyOSError::new_err(e.to_string()))?;
            *guard = Some(rt);
        }
        let rt = guard.as_ref().expect("runtime was just made");
        let shared = self.shared.clone();
        py.allow_threads(|| {
            let listener = rt
                .block_on(async { tokio::net::TcpListener::bind(addr).await })
                .map_err(|e| PyOSError::new_err(format!("cannot listen on {address}: {e}")))?;
            let port = listener
                .local_addr()
                .map_err(|e| PyOSError::new_err(e.to_string()))?
                .port();
            rt.spawn(plane::serve(shared, Arc::new(listener)));
            Ok(port)
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
        HashMap::from([
            ("requests", c.requests.load(Ordering::Relaxed)),
            ("errors", c.errors.load(Ordering::Relaxed)),
            (
                "log_lines_dropped",
                c.log_lines_dropped.load(Ordering::Relaxed),
            ),
            ("panics", c.panics.load(Ordering::Relaxed)),
            ("quarantines", c.quarantines.load(Ordering::Relaxed)),
            ("waiting", self.shared.waiting()),
        ])
    }

    /// Stops every listener and connection (the threads end in the background).
    fn stop(&self) {
        if let Ok(mut guard) = self.runtime.lock() {
            if let Some(rt) = guard.take() {
                rt.shutdown_background();
            }
        }
    }
}

#[pymodule]
fn slipway_dataplane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DataPlane>()?;
    Ok(())
}
