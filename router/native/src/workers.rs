//! The data plane's threads: each runs a single-threaded tokio runtime with a
//! listener of its own on every address (SO_REUSEPORT: the kernel spreads new
//! connections between them), as nginx runs one event loop per worker. A
//! connection stays on the thread that accepted it, so nothing on the request
//! path crosses threads but the shared tables.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpSocket;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use tokio_rustls::TlsAcceptor;

use crate::plane::{self, Edge, Shared};

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

pub struct Workers {
    threads: Vec<Worker>,
}

impl Workers {
    pub fn start(count: usize) -> io::Result<Workers> {
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("dataplane-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Open connections are dropped, not waited for: the
                    // control plane drained them first.
                    runtime.shutdown_background();
                })?;
            threads.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { threads })
    }

    /// Listens on `addr` in every thread, HTTPS with `tls`; the bound port
    /// (the one the system chose when `addr` has port 0).
    pub fn listen(
        &self,
        shared: &Arc<Shared>,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<u16> {
        let proto: Arc<str> = if tls.is_some() {
            "https".into()
        } else {
            shared.settings.proto.as_str().into()
        };
        let mut port = addr.port();
        for worker in &self.threads {
            let at = SocketAddr::new(addr.ip(), port);
            // Registering the socket needs its thread's runtime as the context.
            let _context = worker.handle.enter();
            let socket = if at.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(at)?;
            let listener = socket.listen(4096)?;
            port = listener.local_addr()?.port();
            let edge = Edge {
                port,
                proto: proto.clone(),
                tls: tls.clone(),
            };
            worker
                .handle
                .spawn(plane::serve(shared.clone(), Arc::new(listener), edge));
        }
        Ok(port)
    }

    /// Ends every thread; their connections close.
    pub fn stop(&mut self) {
        for worker in &mut self.threads {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.threads {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
