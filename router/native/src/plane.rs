//! The data plane: listeners, client connections, dyno connection pools, the
//! route table snapshot it reads, and the log lines and counters it leaves for
//! the Python control plane to collect.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

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
    pub public_port: u16,
    pub proto: String,
    pub log_bytes_per_app: usize,
}

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub log_lines_dropped: AtomicU64,
    pub panics: AtomicU64,
    pub quarantines: AtomicU64,
}

pub struct Shared {
    pub routes: RwLock<Arc<HashMap<String, Arc<Route>>>>,
    pub pages: RwLock<Arc<HashMap<String, Page>>>,
    pub settings: Settings,
    pub counters: Counters,
    pool: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
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
            settings,
            counters: Counters::default(),
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

    fn route(&self, host: &str) -> Option<Arc<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
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

    /// Every app's lines since the last call, newline-separated, one batch per app.
    pub fn take_logs(&self) -> Vec<(String, Vec<u8>)> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *logs).into_iter().collect()
    }

    fn log(&self, app: &str, line: String) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let batch = logs.entry(app.to_string()).or_default();
        if batch.len() + line.len() > self.settings.log_bytes_per_app {
            self.counters
                .log_lines_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
    }

    fn next_random(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, lock-free, good enough to spread load.
        let mut z = self.seq.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn request_id(&self) -> String {
        format!("{:016x}{:016x}", self.next_random(), self.next_random())
    }

    /// The most recently used idle connection to the dyno, if one has been
    /// idle for less than the app servers' usual keep-alive (older ones the
    /// dyno may be closing right now: dropped).
    fn pooled(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(&addr)?;
        let fresh_after = Instant::now().checked_sub(self.settings.upstream_idle_timeout)?;
        idle.retain(|(_, since)| *since > fresh_after);
        idle.pop().map(|(conn, _)| conn)
    }

    fn give_back(&self, addr: SocketAddr, conn: TcpStream) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(addr).or_default();
        if idle.len() < self.settings.upstream_pool_size {
            idle.push((conn, Instant::now()));
        }
    }
}

/// Accepts on `listener` until the runtime stops; a panic in the loop is
/// counted and the loop started again, so one bad path never stops the listener.
pub async fn serve(shared: Arc<Shared>, listener: Arc<TcpListener>) {
    loop {
        let task = tokio::spawn(accept_loop(shared.clone(), listener.clone()));
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

async fn accept_loop(shared: Arc<Shared>, listener: Arc<TcpListener>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // A panic ends this connection's task only (tokio catches it).
                    serve_client(shared, stream, peer).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn write_page(
    shared: &Shared,
    client: &mut TcpStream,
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

async fn serve_client(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut client = Buffered::new(stream);
    let idle = shared.settings.idle_timeout;
    loop {
        let head = loop {
            match http1::parse_request(&client.buf) {
                Ok(Some(head)) => break head,
                Ok(None) => match tokio::time::timeout(idle, client.fill()).await {
                    Ok(Ok(true)) => continue,
                    _ => return,
                },
                Err(why) => {
                    write_page(&shared, &mut client.stream, why.page(), false).await;
                    return;
                }
            }
        };
        client.consume(head.head_len);
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        if !proxy_one(&shared, &mut client, &head, peer).await {
            return;
        }
    }
}

struct Outcome {
    status: u16,
    bytes: u64,
    keep_client: bool,
    code: String,
    desc: String,
    connect_ms: u128,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn quote(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        format!("\"{text}\"")
    } else {
        format!("{:?}", text)
    }
}

/// One request and its response; whether the client connection goes on.
async fn proxy_one(
    shared: &Shared,
    client: &mut Buffered<TcpStream>,
    head: &RequestHead,
    peer: SocketAddr,
) -> bool {
    let started = Instant::now();
    let request_id = head
        .request_id
        .clone()
        .unwrap_or_else(|| shared.request_id());
    let client_ip = peer.ip().to_string();
    // A request whose body is not read cannot be followed by another on the connection.
    let keep_after_page = head.keep_alive && head.framing == Framing::Empty;
    // Subscribed before the lookup: a table that lands in between still wakes a held request.
    let mut versions = shared.table_version.subscribe();
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
                    &client_ip,
                    &shared.settings.proto,
                    shared.settings.public_port,
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
                    }
                }
            }
        }
    };
    if !outcome.code.is_empty() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    let service_ms = started
        .elapsed()
        .as_millis()
        .saturating_sub(outcome.connect_ms);
    let prefix = if outcome.code.is_empty() {
        "at=info ".to_string()
    } else {
        format!("at=error code={} desc=\"{}\" ", outcome.code, outcome.desc)
    };
    let line = format!(
        "{prefix}method={} path={} host={} request_id={} fwd=\"{}\" dyno={} connect={}ms service={}ms status={} bytes={} protocol={}",
        head.method,
        quote(&head.target),
        head.host,
        request_id,
        client_ip,
        if dyno_name.is_empty() { "none" } else { &dyno_name },
        outcome.connect_ms,
        service_ms,
        outcome.status,
        outcome.bytes,
        shared.settings.proto,
    );
    shared.log(&route.app, line);
    outcome.keep_client
}

async fn page_outcome(
    shared: &Shared,
    client: &mut Buffered<TcpStream>,
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

async fn exchange(
    shared: &Shared,
    client: &mut Buffered<TcpStream>,
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
            Some(conn) if head.framing == Framing::Empty => (conn, true),
            _ => match connect(shared, addr).await {
                Ok(conn) => (conn, false),
                Err(key) => return Err(key),
            },
        };
        let connect_ms = connect_started.elapsed().as_millis();
        let mut dyno = Buffered::new(conn);
        if dyno.stream.write_all(out_head).await.is_err() {
            if reused && attempts > 0 {
                continue;
            }
            return Ok(page_outcome(shared, client, "H13", keep_after_page).await);
        }
        let mut sent_up = 0u64;
        match http1::relay_body(
            client,
            &mut dyno.stream,
            head.framing,
            shared.settings.body_idle_timeout,
            &mut sent_up,
        )
        .await
        {
            Ok(_) => {}
            Err(RelayError::Idle) => return Ok(page_outcome(shared, client, "H28", false).await),
            Err(RelayError::Source) => {
                // The client stopped sending its body: nothing to answer.
                return Ok(Outcome {
                    status: 499,
                    bytes: 0,
                    keep_client: false,
                    code: "H27".into(),
                    desc: "Client Request Interrupted".into(),
                    connect_ms,
                });
            }
            Err(RelayError::Sink) => return Ok(page_outcome(shared, client, "H13", false).await),
        }
        let response = loop {
            match http1::parse_response(&dyno.buf, head.method == "HEAD", head.keep_alive) {
                Ok(Some(resp)) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    // An interim response (100 Continue): passed on, then the real one.
                    let _ = client.stream.write_all(&dyno.buf[..resp.head_len]).await;
                    dyno.consume(resp.head_len);
                }
                Ok(Some(resp)) => break Ok(resp),
                Ok(None) => {
                    match tokio::time::timeout(shared.settings.response_timeout, dyno.fill()).await
                    {
                        Ok(Ok(true)) => {}
                        Ok(_) => break Err("H13"),
                        Err(_) => break Err("H12"),
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
        dyno.consume(response.head_len);
        if response.status == 101 {
            if head.upgrade.is_none() {
                // Switching protocols nobody asked for: the dyno is broken.
                return Ok(page_outcome(shared, client, "H17", false).await);
            }
            return Ok(tunnel(client, dyno, response.client_head, connect_ms).await);
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
            return Ok(Outcome {
                status: response.status,
                bytes: 0,
                keep_client: false,
                code: String::new(),
                desc: String::new(),
                connect_ms,
            });
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
                return Ok(Outcome {
                    status: response.status,
                    bytes: sent,
                    keep_client: false,
                    code: "H15".into(),
                    desc: "Idle connection".into(),
                    connect_ms,
                });
            }
            Err(_) => (sent, false),
        };
        if relayed.is_ok() && response.reuse_dyno && dyno.buf.is_empty() {
            shared.give_back(addr, dyno.stream);
        }
        return Ok(Outcome {
            status: response.status,
            bytes,
            keep_client,
            code: String::new(),
            desc: String::new(),
            connect_ms,
        });
    }
}

/// An upgraded connection (a WebSocket, say): bytes both ways until either
/// side closes; the connection is never pooled or reused afterwards.
async fn tunnel(
    client: &mut Buffered<TcpStream>,
    mut dyno: Buffered<TcpStream>,
    head: Vec<u8>,
    connect_ms: u128,
) -> Outcome {
    let mut first = head;
    first.extend_from_slice(&dyno.buf);
    dyno.buf.clear();
    let mut bytes = 0u64;
    if client.stream.write_all(&first).await.is_ok()
        && (client.buf.is_empty() || dyno.stream.write_all(&client.buf).await.is_ok())
    {
        client.buf.clear();
        if let Ok((_, to_client)) =
            tokio::io::copy_bidirectional(&mut client.stream, &mut dyno.stream).await
        {
            bytes = to_client;
        }
    }
    Outcome {
        status: 101,
        bytes,
        keep_client: false,
        code: String::new(),
        desc: String::new(),
        connect_ms,
    }
}
