//! The data plane: listeners, client connections, dyno connection pools, the
//! route table snapshot it reads, and the log lines and counters it leaves for
//! the Python control plane to collect.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::http1::{self, Buffered, Framing, RelayError, RequestHead};

pub struct Dyno {
    pub addr: SocketAddr,
    pub name: String,
}

pub struct Route {
    pub app: String,
    /// Web dynos the formation wants: more than zero with none routed yet
    /// means they are booting (requests are held), zero means H14.
    pub web: u32,
    pub released: bool,
    pub maintenance: bool,
    pub crashed: bool,
    pub least_loaded: bool,
    pub dynos: Vec<Dyno>,
}

/// What to do with a request to an app, before any dyno is chosen.
pub fn admission(route: &Route) -> Option<&'static str> {
    if route.maintenance {
        Some("H80")
    } else if !route.released {
        Some("H81")
    } else if route.crashed {
        Some("H10")
    } else if route.dynos.is_empty() && route.web == 0 {
        Some("H14")
    } else {
        None
    }
}

enum Choice {
    Dyno(usize),
    Error(&'static str),
    Wait,
}

/// This router's own view of dynos: requests in flight, quarantine, and the
/// requests of each app waiting for a free slot.
#[derive(Default)]
struct Balance {
    inflight: HashMap<SocketAddr, u32>,
    quarantined: HashMap<SocketAddr, Instant>,
    backlog: HashMap<String, VecDeque<oneshot::Sender<()>>>,
}

/// One error answer, rendered by the control plane.
pub struct Page {
    pub code: String,
    pub desc: String,
    pub status: u16,
    pub keep_alive: Vec<u8>,
    pub close: Vec<u8>,
}

pub struct Settings {
    pub connect_timeout: Duration,
    pub quarantine: Duration,
    pub max_attempts: u32,
    pub max_inflight_per_dyno: u32,
    pub backlog_per_dyno: usize,
    pub boot_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    /// Rolling window while a body flows either way (H28 client side, H15 dyno side).
    pub body_idle_timeout: Duration,
    pub upstream_pool_size: usize,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub proto: String,
    pub log_bytes_per_app: usize,
}

impl Default for Settings {
    /// Heroku's numbers, as router/config.py's Limits has them.
    fn default() -> Self {
        Settings {
            connect_timeout: Duration::from_secs(5),
            quarantine: Duration::from_secs(5),
            max_attempts: 10,
            max_inflight_per_dyno: 50,
            backlog_per_dyno: 50,
            boot_timeout: Duration::from_secs(75),
            upstream_idle_timeout: Duration::from_millis(1500),
            body_idle_timeout: Duration::from_secs(55),
            upstream_pool_size: 64,
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(55),
            proto: "http".to_string(),
            log_bytes_per_app: 8 << 20,
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub log_lines_dropped: AtomicU64,
    pub panics: AtomicU64,
    pub quarantines: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    /// Requests between their head arriving and their log line.
    pub requests_active: AtomicU64,
    /// Requests held until an app's booting web dynos come up.
    pub held_booting: AtomicU64,
    pub upstream_connects: AtomicU64,
    pub upstream_reuses: AtomicU64,
    /// Further dynos tried after a connect failure.
    pub upstream_retries: AtomicU64,
    /// Heads refused before routing (400, 414, 431, 501).
    pub bad_requests: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// ACME HTTP-01 challenges answered from the table (not sent to a dyno).
    pub acme_answers: AtomicU64,
}

/// A gauge counted up while this value lives.
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn up(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers by status (every status has a slot: no lock per request) and, for
/// the router's own errors, by status and H code.
pub struct Answers {
    by_status: Vec<AtomicU64>,
    errors: Mutex<HashMap<(u16, String), u64>>,
}

impl Answers {
    fn new() -> Self {
        Answers {
            by_status: (0..1000).map(|_| AtomicU64::new(0)).collect(),
            errors: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, status: u16, code: &str) {
        if code.is_empty() {
            if let Some(slot) = self.by_status.get(status as usize) {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            *errors.entry((status, code.to_string())).or_insert(0) += 1;
        }
    }

    /// (status, H code or "", count) for everything answered so far.
    pub fn snapshot(&self) -> Vec<(u16, String, u64)> {
        let mut out: Vec<(u16, String, u64)> = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(status, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (status as u16, String::new(), n))
            })
            .collect();
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(errors.iter().map(|((s, c), n)| (*s, c.clone(), *n)));
        out
    }
}

pub struct Shared {
    pub routes: RwLock<Arc<HashMap<String, Arc<Route>>>>,
    pub pages: RwLock<Arc<HashMap<String, Page>>>,
    /// ACME HTTP-01 token -> key authorization, answered on plain HTTP listeners.
    pub challenges: RwLock<Arc<HashMap<String, String>>>,
    pub settings: Settings,
    pub counters: Counters,
    pub answers: Answers,
    /// Set once to stop accepting and to close connections as they go idle.
    pub draining: watch::Sender<bool>,
    /// Idle dyno connections with their (empty) read buffers, reused with them.
    pool: Mutex<HashMap<SocketAddr, Vec<(Buffered<TcpStream>, Instant)>>>,
    logs: Mutex<HashMap<String, Vec<u8>>>,
    seq: AtomicU64,
    balance: Mutex<Balance>,
    /// Bumped on every new route table: wakes requests held while dynos boot.
    table_version: watch::Sender<u64>,
}

/// One request counted in flight on a dyno until dropped; dropping it hands
/// the slot to the app's next waiting request.
struct InFlight<'a> {
    shared: &'a Shared,
    addr: SocketAddr,
    app: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut balance = self
            .shared
            .balance
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = balance.inflight.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                balance.inflight.remove(&self.addr);
            }
        }
        if let Some(waiting) = balance.backlog.get_mut(self.app) {
            // The first waiter still waiting gets the slot.
            while let Some(waiter) = waiting.pop_front() {
                if waiter.send(()).is_ok() {
                    break;
                }
            }
            if waiting.is_empty() {
                balance.backlog.remove(self.app);
            }
        }
    }
}

impl Shared {
    pub fn new(settings: Settings) -> Self {
        Shared {
            routes: RwLock::new(Arc::new(HashMap::new())),
            pages: RwLock::new(Arc::new(HashMap::new())),
            challenges: RwLock::new(Arc::new(HashMap::new())),
            settings,
            counters: Counters::default(),
            answers: Answers::new(),
            draining: watch::channel(false).0,
            pool: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            balance: Mutex::new(Balance::default()),
            table_version: watch::channel(0).0,
        }
    }

    pub fn set_routes(&self, table: HashMap<String, Arc<Route>>) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.table_version.send_modify(|v| *v += 1);
    }

    pub fn set_challenges(&self, table: HashMap<String, String>) {
        *self.challenges.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// The key authorization for an ACME HTTP-01 challenge request, if it is
    /// one the control plane published; other paths under the prefix go to
    /// the app (it may run its own ACME client).
    fn challenge_answer(&self, head: &RequestHead) -> Option<String> {
        let token = head.target.strip_prefix(ACME_CHALLENGE_PATH)?;
        if head.method != "GET" && head.method != "HEAD" {
            return None;
        }
        self.challenges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Stops accepting on every listener; open connections close once idle.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    /// The dynos quarantined on this router now.
    pub fn quarantined(&self) -> Vec<SocketAddr> {
        let balance = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        balance
            .quarantined
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(addr, _)| *addr)
            .collect()
    }

    /// Idle pooled connections to dynos.
    pub fn pooled_idle(&self) -> usize {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.values().map(Vec::len).sum()
    }

    /// The app for a host name: its own entry, else a custom wildcard domain
    /// one label up ("*.example.com" for "www.example.com").
    fn route(&self, host: &str) -> Option<Arc<Route>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = routes.get(host) {
            return Some(route.clone());
        }
        let (_, parent) = host.split_once('.')?;
        routes.get(&format!("*.{parent}")).cloned()
    }

    fn quarantine(&self, addr: SocketAddr) {
        let mut balance = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        balance
            .quarantined
            .insert(addr, Instant::now() + self.settings.quarantine);
        self.counters.quarantines.fetch_add(1, Ordering::Relaxed);
    }

    /// A dyno for this request (counted in flight), an error, or wait for a slot.
    fn choose<'a>(
        &'a self,
        route: &'a Route,
        tried: &[SocketAddr],
    ) -> (Choice, Option<InFlight<'a>>) {
        let mut balance = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        balance.quarantined.retain(|_, until| *until > now);
        let limit = self.settings.max_inflight_per_dyno;
        if !route.least_loaded && tried.is_empty() && balance.quarantined.is_empty() {
            // Fast path: a first attempt with nothing quarantined; one random
            // pick with a free slot is the answer, with no list built.
            let pick = (self.next_random() % route.dynos.len() as u64) as usize;
            let addr = route.dynos[pick].addr;
            let load = balance.inflight.entry(addr).or_insert(0);
            if *load < limit {
                *load += 1;
                return (
                    Choice::Dyno(pick),
                    Some(InFlight {
                        shared: self,
                        addr,
                        app: &route.app,
                    }),
                );
            }
        }
        let usable: Vec<usize> = (0..route.dynos.len())
            .filter(|&i| {
                let addr = route.dynos[i].addr;
                !tried.contains(&addr) && !balance.quarantined.contains_key(&addr)
            })
            .collect();
        if usable.is_empty() {
            return (Choice::Error("H99"), None);
        }
        let load = |i: usize| {
            balance
                .inflight
                .get(&route.dynos[i].addr)
                .copied()
                .unwrap_or(0)
        };
        let free: Vec<usize> = usable
            .iter()
            .copied()
            .filter(|&i| load(i) < limit)
            .collect();
        if free.is_empty() {
            let waiting = balance.backlog.get(&route.app).map_or(0, VecDeque::len);
            let room = waiting < self.settings.backlog_per_dyno * route.dynos.len();
            return (
                if room {
                    Choice::Wait
                } else {
                    Choice::Error("H11")
                },
                None,
            );
        }
        let pick = if free.len() == 1 {
            free[0]
        } else if route.least_loaded {
            // Power of two choices: two distinct random dynos, the less busy one.
            let a = (self.next_random() % free.len() as u64) as usize;
            let mut b = (self.next_random() % (free.len() as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            if load(free[a]) <= load(free[b]) {
                free[a]
            } else {
                free[b]
            }
        } else {
            free[(self.next_random() % free.len() as u64) as usize]
        };
        let addr = route.dynos[pick].addr;
        *balance.inflight.entry(addr).or_insert(0) += 1;
        (
            Choice::Dyno(pick),
            Some(InFlight {
                shared: self,
                addr,
                app: &route.app,
            }),
        )
    }

    /// Requests waiting in every app's backlog now.
    pub fn waiting(&self) -> u64 {
        let balance = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        balance
            .backlog
            .values()
            .map(|q| q.iter().filter(|w| !w.is_closed()).count() as u64)
            .sum()
    }

    /// Queues for the app's next free slot; the receiver fires when one frees.
    fn wait_for_slot(&self, app: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut balance = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        balance
            .backlog
            .entry(app.to_string())
            .or_default()
            .push_back(tx);
        rx
    }

    /// Every app's lines since the last call, one JSON object per line, one batch per app.
    pub fn take_logs(&self) -> Vec<(String, Vec<u8>)> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *logs).into_iter().collect()
    }

    /// Queues one router line for `app` as the JSON object readers decode
    /// (slipway/logline.py), so Python publishes batches without touching lines.
    fn log(&self, app: &str, message: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if !logs.contains_key(app) {
            logs.insert(app.to_string(), Vec::new());
        }
        let Some(batch) = logs.get_mut(app) else {
            return;
        };
        let start = batch.len();
        let _ = write!(
            batch,
            "{{\"ts\":{}.{:06},\"source\":\"heroku\",\"process\":\"router\",\"message\":",
            now.as_secs(),
            now.subsec_micros()
        );
        push_json_string(batch, message);
        batch.extend_from_slice(b",\"app\":");
        push_json_string(batch, app);
        batch.extend_from_slice(b"}\n");
        if batch.len() > self.settings.log_bytes_per_app {
            batch.truncate(start);
            self.counters
                .log_lines_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn next_random(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, lock-free, good enough to spread load.
        let mut z = self.seq.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random (version 4) UUID, as Heroku's router makes request ids.
    fn request_id(&self) -> String {
        let hi = self.next_random();
        let lo = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0x0fff,
            0x8000 | ((lo >> 48) & 0x3fff),
            lo & 0xffff_ffff_ffff
        )
    }

    /// The most recently used idle connection to the dyno, if one has been
    /// idle for less than the app servers' usual keep-alive (older ones the
    /// dyno may be closing right now: dropped).
    fn pooled(&self, addr: SocketAddr) -> Option<Buffered<TcpStream>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(&addr)?;
        let fresh_after = Instant::now().checked_sub(self.settings.upstream_idle_timeout)?;
        idle.retain(|(_, since)| *since > fresh_after);
        idle.pop().map(|(conn, _)| conn)
    }

    fn give_back(&self, addr: SocketAddr, conn: Buffered<TcpStream>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(addr).or_default();
        if idle.len() < self.settings.upstream_pool_size {
            idle.push((conn, Instant::now()));
        }
    }
}

/// What a listener is to the requests it takes: the port clients connected
/// to, the scheme dynos are told (X-Forwarded-Proto) and, for HTTPS, its TLS.
/// Where ACME HTTP-01 validation asks for a token (RFC 8555 8.3).
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

#[derive(Clone)]
pub struct Edge {
    pub port: u16,
    pub proto: Arc<str>,
    pub tls: Option<TlsAcceptor>,
}

/// A client connection, plain or TLS.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts on `listener` until the runtime stops; a panic in the loop is
/// counted and the loop started again, so one bad path never stops the listener.
pub async fn serve(shared: Arc<Shared>, listener: Arc<TcpListener>, edge: Edge) {
    loop {
        let task = tokio::spawn(accept_loop(shared.clone(), listener.clone(), edge.clone()));
        match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                shared.counters.panics.fetch_add(1, Ordering::Relaxed);
                eprintln!("slipway-dataplane: accept loop panicked; restarting it");
            }
            Err(_) => return,
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: Arc<TcpListener>, edge: Edge) {
    let mut draining = shared.draining.subscribe();
    let edge = Arc::new(edge);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = draining.wait_for(|d| *d) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let edge = edge.clone();
                // A panic ends this connection's task only (tokio catches it).
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match &edge.tls {
                        None => serve_client(&shared, stream, peer, &edge).await,
                        Some(tls) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                            {
                                Ok(Ok(stream)) => {
                                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                        shared
                                            .counters
                                            .connections_total
                                            .fetch_add(1, Ordering::Relaxed);
                                        let _open = Held::up(&shared.counters.connections_active);
                                        crate::http2::serve(
                                            shared.clone(),
                                            stream,
                                            peer,
                                            edge.clone(),
                                        )
                                        .await;
                                    } else {
                                        serve_client(&shared, stream, peer, &edge).await
                                    }
                                }
                                // Counted, not logged: scanners and old clients fail
                                // handshakes all day.
                                _ => {
                                    shared
                                        .counters
                                        .tls_handshake_failures
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn write_page<W: AsyncWrite + Unpin>(
    shared: &Shared,
    client: &mut W,
    key: &str,
    keep: bool,
) -> Option<(u16, String, String)> {
    let pages = shared
        .pages
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let page = pages.get(key)?;
    let bytes = if keep { &page.keep_alive } else { &page.close };
    let _ = client.write_all(bytes).await;
    Some((page.status, page.code.clone(), page.desc.clone()))
}

async fn serve_client<C: ClientStream>(shared: &Shared, stream: C, peer: SocketAddr, edge: &Edge) {
    shared
        .counters
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let _open = Held::up(&shared.counters.connections_active);
    let mut client = Buffered::new(stream);
    let client_ip = peer.ip().to_string();
    if converse(shared, &mut client, &client_ip, edge).await == Ending::Answered {
        linger(client.stream).await;
    }
}

/// One HTTP/1 conversation on `stream` (an HTTP/2 stream's pipe: crate::http2).
pub async fn converse_stream<C: ClientStream>(
    shared: &Shared,
    stream: C,
    client_ip: &str,
    edge: &Edge,
) {
    let mut client = Buffered::new(stream);
    converse(shared, &mut client, client_ip, edge).await;
}

#[derive(PartialEq, Eq)]
enum Ending {
    /// The client left, went idle, or the router is draining.
    Quiet,
    /// The router closes after an answer: unread bytes from the client must
    /// not turn the close into a reset that destroys the answer in flight.
    Answered,
}

/// Requests on one client connection, until it ends.
async fn converse<C: ClientStream>(
    shared: &Shared,
    client: &mut Buffered<C>,
    client_ip: &str,
    edge: &Edge,
) -> Ending {
    let mut draining = shared.draining.subscribe();
    let idle = shared.settings.idle_timeout;
    loop {
        let head = loop {
            match http1::parse_request(&client.buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {
                    let between_requests = client.buf.is_empty();
                    if between_requests && *draining.borrow() {
                        return Ending::Quiet;
                    }
                    tokio::select! {
                        more = tokio::time::timeout(idle, client.fill()) => match more {
                            Ok(Ok(true)) => continue,
                            _ => return Ending::Quiet,
                        },
                        // An idle keep-alive connection closes when the router drains;
                        // one with a request under way finishes it first.
                        _ = draining.wait_for(|d| *d), if between_requests => return Ending::Quiet,
                    }
                }
                Err(why) => return refuse(shared, client, why.page()).await,
            }
        };
        client.consume(head.head_len);
        if head.framing == Framing::Chunked && !http1::chunked_prefix_valid(&client.buf) {
            return refuse(shared, client, "bad_request").await;
        }
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        if !proxy_one(shared, client, &head, client_ip, edge).await {
            return Ending::Answered;
        }
    }
}

/// A request refused before routing: its page, then the connection closes.
async fn refuse<C: ClientStream>(shared: &Shared, client: &mut Buffered<C>, page: &str) -> Ending {
    shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    if let Some((status, code, _)) = write_page(shared, &mut client.stream, page, false).await {
        shared.answers.count(status, &code);
    }
    Ending::Answered
}

/// Closes our side, then reads and discards what the client still sends for
/// a moment (bounded), so the kernel does not answer it with a reset.
async fn linger<C: ClientStream>(mut stream: C) {
    use tokio::io::AsyncReadExt;
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 16 * 1024];
    let mut discarded = 0usize;
    while discarded < LINGER_BYTES {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

struct Outcome {
    status: u16,
    bytes: u64,
    keep_client: bool,
    code: String,
    desc: String,
    connect_ms: u128,
    /// A 101 answer: the dyno connection and the head to pass on, for the
    /// tunnel that starts once the request is logged and its slot freed.
    upgraded: Option<(Buffered<TcpStream>, Vec<u8>)>,
}

impl Outcome {
    /// The dyno's answer, relayed (wholly or in part).
    fn relayed(status: u16, bytes: u64, keep_client: bool, connect_ms: u128) -> Self {
        Outcome {
            status,
            bytes,
            keep_client,
            code: String::new(),
            desc: String::new(),
            connect_ms,
            upgraded: None,
        }
    }

    /// A failure the client gets no page for (it is gone, or the answer had started).
    fn cut(status: u16, bytes: u64, code: &str, desc: &str, connect_ms: u128) -> Self {
        Outcome {
            status,
            bytes,
            keep_client: false,
            code: code.to_string(),
            desc: desc.to_string(),
            connect_ms,
            upgraded: None,
        }
    }
}

const CLIENT_INTERRUPTED: &str = "Client Request Interrupted";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `text` as a JSON string (ASCII control characters, quotes and backslashes escaped).
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[plain..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                plain = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escape);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

fn push_quoted(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        let _ = write!(out, "{:?}", text);
    }
}

/// One request and its response; whether the client connection goes on.
async fn proxy_one<C: ClientStream>(
    shared: &Shared,
    client: &mut Buffered<C>,
    head: &RequestHead,
    client_ip: &str,
    edge: &Edge,
) -> bool {
    let started = Instant::now();
    let _active = Held::up(&shared.counters.requests_active);
    let request_id = head
        .request_id
        .clone()
        .unwrap_or_else(|| shared.request_id());
    // A request whose body is not read cannot be followed by another on the connection.
    let keep_after_page = head.keep_alive && head.framing == Framing::Empty;
    // Subscribed before the lookup: a table that lands in between still wakes a held request.
    let mut versions = shared.table_version.subscribe();
    if edge.tls.is_none() {
        if let Some(answer) = shared.challenge_answer(head) {
            shared.counters.acme_answers.fetch_add(1, Ordering::Relaxed);
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                answer.len(),
                if keep_after_page {
                    ""
                } else {
                    "Connection: close\r\n"
                }
            )
            .into_bytes();
            if head.method != "HEAD" {
                out.extend_from_slice(answer.as_bytes());
            }
            let _ = client.stream.write_all(&out).await;
            return keep_after_page;
        }
    }
    let Some(mut route) = shared.route(&head.host) else {
        write_page(shared, &mut client.stream, "no_such_app", keep_after_page).await;
        return keep_after_page;
    };
    let mut dyno_name = String::new();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let boot_deadline = tokio::time::Instant::now() + shared.settings.boot_timeout;
    let outcome = loop {
        if let Some(key) = admission(&route) {
            break page_outcome(shared, client, key, keep_after_page).await;
        }
        if route.dynos.is_empty() {
            // Web dynos wanted, none up yet: held until a table brings one.
            let _held = Held::up(&shared.counters.held_booting);
            match tokio::time::timeout_at(boot_deadline, versions.changed()).await {
                Ok(Ok(())) => {
                    match shared.route(&head.host) {
                        Some(fresh) => route = fresh,
                        None => {
                            break page_outcome(shared, client, "no_such_app", keep_after_page)
                                .await
                        }
                    }
                    continue;
                }
                _ => break page_outcome(shared, client, "H20", keep_after_page).await,
            }
        }
        let (choice, inflight) = shared.choose(&route, &tried);
        match choice {
            Choice::Error(key) => break page_outcome(shared, client, key, keep_after_page).await,
            Choice::Wait => {
                let slot = shared.wait_for_slot(&route.app);
                if tokio::time::timeout(shared.settings.response_timeout, slot)
                    .await
                    .is_err()
                {
                    break page_outcome(shared, client, "H12", keep_after_page).await;
                }
            }
            Choice::Dyno(i) => {
                let dyno = &route.dynos[i];
                dyno_name = dyno.name.clone();
                let out_head = http1::dyno_request_head(
                    head,
                    client_ip,
                    &edge.proto,
                    edge.port,
                    &request_id,
                    now_ms(),
                );
                let result =
                    exchange(shared, client, head, dyno.addr, &out_head, keep_after_page).await;
                drop(inflight);
                match result {
                    Ok(outcome) => break outcome,
                    Err(key) => {
                        // Nothing reached the dyno: quarantine it here, try another.
                        shared.quarantine(dyno.addr);
                        tried.push(dyno.addr);
                        if tried.len() as u32 >= shared.settings.max_attempts {
                            break page_outcome(shared, client, key, keep_after_page).await;
                        }
                        shared
                            .counters
                            .upstream_retries
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    if !outcome.code.is_empty() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    shared.answers.count(outcome.status, &outcome.code);
    let service_ms = started
        .elapsed()
        .as_millis()
        .saturating_sub(outcome.connect_ms);
    // Heroku's router line, written into one buffer (this runs once per request).
    let mut line = String::with_capacity(320 + head.target.len());
    if outcome.code.is_empty() {
        line.push_str("at=info ");
    } else {
        let _ = write!(
            line,
            "at=error code={} desc=\"{}\" ",
            outcome.code, outcome.desc
        );
    }
    let _ = write!(line, "method={} path=", head.method);
    push_quoted(&mut line, &head.target);
    let _ = write!(line, " host={} request_id={request_id} fwd=\"", head.host);
    if let Some(prior) = &head.forwarded_for {
        line.push_str(&String::from_utf8_lossy(prior));
        line.push_str(", ");
    }
    line.push_str(client_ip);
    let _ = write!(
        line,
        "\" dyno={} connect={}ms service={service_ms}ms status={} bytes={} protocol={}",
        if dyno_name.is_empty() {
            "none"
        } else {
            &dyno_name
        },
        outcome.connect_ms,
        outcome.status,
        outcome.bytes,
        edge.proto,
    );
    shared.log(&route.app, &line);
    if let Some((dyno, head)) = outcome.upgraded {
        tunnel(client, dyno, head).await;
        return false;
    }
    outcome.keep_client
}

async fn page_outcome<C: ClientStream>(
    shared: &Shared,
    client: &mut Buffered<C>,
    key: &str,
    keep: bool,
) -> Outcome {
    let (status, code, desc) = write_page(shared, &mut client.stream, key, keep)
        .await
        .unwrap_or((503, key.to_string(), String::new()));
    Outcome {
        status,
        bytes: 0,
        keep_client: keep,
        code,
        desc,
        connect_ms: 0,
        upgraded: None,
    }
}

/// A fresh connection to the dyno, or the H code its failure is answered with.
async fn connect(shared: &Shared, addr: SocketAddr) -> Result<TcpStream, &'static str> {
    match tokio::time::timeout(shared.settings.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(conn)) => {
            let _ = conn.set_nodelay(true);
            Ok(conn)
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err("H21"),
        _ => Err("H19"),
    }
}

async fn exchange<C: ClientStream>(
    shared: &Shared,
    client: &mut Buffered<C>,
    head: &RequestHead,
    addr: SocketAddr,
    out_head: &[u8],
    keep_after_page: bool,
) -> Result<Outcome, &'static str> {
    let connect_started = Instant::now();
    // A pooled connection the dyno closed meanwhile fails on first use; a
    // request without a body is then sent once more on a fresh connection.
    let mut attempts = if head.framing == Framing::Empty { 2 } else { 1 };
    loop {
        attempts -= 1;
        let (conn, reused) = match shared.pooled(addr) {
            Some(conn) if head.framing == Framing::Empty => {
                shared
                    .counters
                    .upstream_reuses
                    .fetch_add(1, Ordering::Relaxed);
                (conn, true)
            }
            _ => match connect(shared, addr).await {
                Ok(conn) => {
                    shared
                        .counters
                        .upstream_connects
                        .fetch_add(1, Ordering::Relaxed);
                    (Buffered::new(conn), false)
                }
                Err(key) => return Err(key),
            },
        };
        let connect_ms = connect_started.elapsed().as_millis();
        let mut dyno = conn;
        if dyno.stream.write_all(out_head).await.is_err() {
            if reused && attempts > 0 {
                continue;
            }
            return Ok(page_outcome(shared, client, "H13", keep_after_page).await);
        }
        // With Expect: 100-continue the body waits for the dyno's go-ahead,
        // or for the client to send it anyway, or is never sent if the dyno
        // answers at once (a 413, a 401).
        let mut body_withheld = false;
        if head.expect_continue && client.buf.is_empty() {
            match await_continue(shared, client, &mut dyno, head).await {
                Continue::Send => {}
                Continue::Answered => body_withheld = true,
                Continue::ClientGone => {
                    return Ok(Outcome::cut(499, 0, "H27", CLIENT_INTERRUPTED, connect_ms))
                }
                Continue::Failed(key) => return Ok(page_outcome(shared, client, key, false).await),
            }
        }
        let mut sent_up = 0u64;
        let body = if body_withheld {
            Framing::Empty
        } else {
            head.framing
        };
        match http1::relay_body(
            client,
            &mut dyno.stream,
            body,
            shared.settings.body_idle_timeout,
            &mut sent_up,
        )
        .await
        {
            Ok(_) => {}
            Err(RelayError::Idle) => return Ok(page_outcome(shared, client, "H28", false).await),
            Err(RelayError::Source) => {
                // The client stopped sending its body: nothing to answer.
                return Ok(Outcome::cut(499, 0, "H27", CLIENT_INTERRUPTED, connect_ms));
            }
            Err(RelayError::Malformed) => {
                return Ok(page_outcome(shared, client, "bad_request", false).await)
            }
            // The dyno closed while the body was still coming.
            Err(RelayError::Sink) => return Ok(page_outcome(shared, client, "H18", false).await),
        }
        let response_deadline = tokio::time::Instant::now() + shared.settings.response_timeout;
        let response = loop {
            // A body never sent is still on its way from the client: the
            // connection cannot carry another request.
            let keep = head.keep_alive && !body_withheld;
            match http1::parse_response(&dyno.buf, head.method == "HEAD", keep) {
                Ok(Some(resp)) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    // An interim response (100 Continue): passed on, then the real one.
                    let _ = client.stream.write_all(&dyno.buf[..resp.head_len]).await;
                    dyno.consume(resp.head_len);
                }
                Ok(Some(resp)) => break Ok(resp),
                Ok(None) => {
                    // The client is watched too: one that leaves frees the dyno's
                    // slot now (H27), not when the dyno answers. Its pipelined
                    // bytes are kept, up to a head's worth.
                    let watch_client = client.buf.len() < http1::MAX_HEAD_BYTES;
                    tokio::select! {
                        more = tokio::time::timeout_at(response_deadline, dyno.fill()) => match more {
                            Ok(Ok(true)) => {}
                            Ok(_) => break Err("H13"),
                            Err(_) => break Err("H12"),
                        },
                        more = client.fill(), if watch_client => {
                            if !matches!(more, Ok(true)) {
                                return Ok(Outcome::cut(499, 0, "H27", CLIENT_INTERRUPTED, connect_ms));
                            }
                        }
                    }
                }
                Err(_) => break Err("H17"),
            }
        };
        let response = match response {
            Ok(r) => r,
            Err("H13") if reused && attempts > 0 && dyno.buf.is_empty() => continue,
            Err(key) => return Ok(page_outcome(shared, client, key, false).await),
        };
        let mut response = response;
        if head.http10 {
            response.for_http10_client();
        }
        dyno.consume(response.head_len);
        if response.status == 101 {
            if head.upgrade.is_none() {
                // Switching protocols nobody asked for: the dyno is broken.
                return Ok(page_outcome(shared, client, "H17", false).await);
            }
            let mut upgraded = Outcome::relayed(101, 0, false, connect_ms);
            upgraded.upgraded = Some((dyno, response.client_head));
            return Ok(upgraded);
        }
        // A body already read whole goes out with its head in one write (one
        // syscall, one packet), as most small answers arrive.
        let mut head_bytes = response.client_head;
        let mut framing = response.framing;
        let mut inline = 0u64;
        if let Framing::Length(n) = framing {
            if (dyno.buf.len() as u64) >= n && n <= 64 * 1024 {
                head_bytes.extend_from_slice(&dyno.buf[..n as usize]);
                dyno.consume(n as usize);
                framing = Framing::Empty;
                inline = n;
            }
        }
        if client.stream.write_all(&head_bytes).await.is_err() {
            return Ok(Outcome::relayed(response.status, 0, false, connect_ms));
        }
        let mut sent = inline;
        let relayed = http1::relay_body(
            &mut dyno,
            &mut client.stream,
            framing,
            shared.settings.body_idle_timeout,
            &mut sent,
        )
        .await;
        let (bytes, keep_client) = match relayed {
            Ok(()) => (sent, response.keep_client),
            Err(RelayError::Idle) => {
                // The answer had started: the client can only be cut off.
                return Ok(Outcome::cut(
                    response.status,
                    sent,
                    "H15",
                    "Idle connection",
                    connect_ms,
                ));
            }
            Err(RelayError::Sink) => {
                // The client left while the answer was on its way.
                return Ok(Outcome::cut(
                    response.status,
                    sent,
                    "H27",
                    CLIENT_INTERRUPTED,
                    connect_ms,
                ));
            }
            Err(RelayError::Source | RelayError::Malformed) => {
                // The dyno ended (or broke) its answer half-way.
                return Ok(Outcome::cut(
                    response.status,
                    sent,
                    "H18",
                    "Server Request Interrupted",
                    connect_ms,
                ));
            }
        };
        if relayed.is_ok() && response.reuse_dyno && dyno.buf.is_empty() && !body_withheld {
            shared.give_back(addr, dyno);
        }
        return Ok(Outcome::relayed(
            response.status,
            bytes,
            keep_client,
            connect_ms,
        ));
    }
}

enum Continue {
    /// The dyno said 100 (passed on) or the client is sending: relay the body.
    Send,
    /// The dyno answered for good without the body.
    Answered,
    ClientGone,
    Failed(&'static str),
}

/// Waits for the dyno's first answer to an `Expect: 100-continue` head, or for
/// the client to start its body regardless (clients give up waiting after a
/// second or so when a server ignores Expect).
async fn await_continue<C: ClientStream>(
    shared: &Shared,
    client: &mut Buffered<C>,
    dyno: &mut Buffered<TcpStream>,
    head: &RequestHead,
) -> Continue {
    let deadline = tokio::time::Instant::now() + shared.settings.response_timeout;
    loop {
        match http1::parse_response(&dyno.buf, head.method == "HEAD", false) {
            Ok(Some(resp)) if resp.status == 100 || (102..200).contains(&resp.status) => {
                if client
                    .stream
                    .write_all(&dyno.buf[..resp.head_len])
                    .await
                    .is_err()
                {
                    return Continue::ClientGone;
                }
                dyno.consume(resp.head_len);
                if resp.status == 100 {
                    return Continue::Send;
                }
                continue;
            }
            Ok(Some(_)) => return Continue::Answered,
            Ok(None) => {}
            Err(_) => return Continue::Failed("H17"),
        }
        tokio::select! {
            more = tokio::time::timeout_at(deadline, dyno.fill()) => match more {
                Ok(Ok(true)) => {}
                Ok(_) => return Continue::Failed("H13"),
                Err(_) => return Continue::Failed("H12"),
            },
            more = client.fill() => match more {
                Ok(true) => return Continue::Send,
                _ => return Continue::ClientGone,
            },
        }
    }
}

/// An upgraded connection (a WebSocket, say): bytes both ways until either
/// side closes; the connection is never pooled or reused afterwards.
/// It holds no dyno slot: a WebSocket may stay open for hours.
async fn tunnel<C: ClientStream>(
    client: &mut Buffered<C>,
    mut dyno: Buffered<TcpStream>,
    head: Vec<u8>,
) {
    let mut first = head;
    first.extend_from_slice(&dyno.buf);
    dyno.buf.clear();
    if client.stream.write_all(&first).await.is_ok()
        && (client.buf.is_empty() || dyno.stream.write_all(&client.buf).await.is_ok())
    {
        client.buf.clear();
        let _ = tokio::io::copy_bidirectional(&mut client.stream, &mut dyno.stream).await;
    }
}
