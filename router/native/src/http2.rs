//! HTTP/2 to clients (negotiated over ALPN on HTTPS listeners), HTTP/1.1 to
//! dynos, as Heroku's router does.
//!
//! Each HTTP/2 stream becomes one HTTP/1.0-framed request on an in-memory
//! pipe, answered by the very code that serves HTTP/1.1 clients
//! (`plane::converse`): the same routing, headers, H codes, error pages and
//! router log line, by construction. HTTP/1.0 framing keeps the bridge small:
//! the answer's body ends when the pipe closes, already de-chunked. What it
//! costs per request is one head serialised and parsed more, and the copies
//! through the pipe.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::plane::{converse_stream, Edge, Shared};

/// Streams one client may have open at once.
const MAX_STREAMS: u32 = 128;
/// Bytes in flight on a stream's pipe in each direction.
const PIPE_BYTES: usize = 64 * 1024;
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Headers that describe one HTTP/1.1 connection, not the request: never
/// carried across (RFC 9113 8.2.2).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    )
}

/// One client connection that chose HTTP/2, until it ends.
pub async fn serve<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, edge: Arc<Edge>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .handshake::<_, Bytes>(stream);
    let mut conn = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(conn)) => conn,
        _ => return,
    };
    let mut draining = shared.draining.subscribe();
    let idle = shared.settings.idle_timeout;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            _ = async { let _ = draining.wait_for(|d| *d).await; } => {
                // GOAWAY: streams in progress finish, no new ones start.
                conn.graceful_shutdown();
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
                return;
            }
            _ = tokio::time::sleep(idle), if open.load(Ordering::Relaxed) == 0 => {
                conn.graceful_shutdown();
                let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
                return;
            }
        };
        let Some(Ok((request, respond))) = next else {
            return;
        };
        let (shared, edge, open) = (shared.clone(), edge.clone(), open.clone());
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            stream_one(&shared, request, respond, peer, &edge).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The HTTP/1.0 request head a stream stands for (None: not one a router can
/// carry, answered 400 by the caller).
fn request_head(request: &Request<RecvStream>, chunked: bool) -> Option<Vec<u8>> {
    let uri = request.uri();
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.0\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in request.headers() {
        if name == http::header::HOST || hop_by_hop(name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

async fn stream_one(
    shared: &Shared,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    edge: &Edge,
) {
    let has_body = !request.body().is_end_stream();
    let chunked = has_body && !request.headers().contains_key(http::header::CONTENT_LENGTH);
    let Some(head) = request_head(&request, chunked) else {
        let bad = Response::builder().status(StatusCode::BAD_REQUEST).body(());
        if let Ok(bad) = bad {
            let _ = respond.send_response(bad, true);
        }
        return;
    };
    let head_request = request.method() == http::Method::HEAD;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (mut from_router, mut to_router) = tokio::io::split(ours);
    let client_ip = peer.ip().to_string();
    let router = converse_stream(shared, theirs, &client_ip, edge);
    let mut body = request.into_body();
    let upload = async move {
        if to_router.write_all(&head).await.is_err() {
            return;
        }
        if has_body {
            while let Some(Ok(data)) = body.data().await {
                let n = data.len();
                let written = if chunked {
                    let size = format!("{n:x}\r\n");
                    to_router.write_all(size.as_bytes()).await.is_ok()
                        && to_router.write_all(&data).await.is_ok()
                        && to_router.write_all(b"\r\n").await.is_ok()
                } else {
                    to_router.write_all(&data).await.is_ok()
                };
                if !written {
                    return;
                }
                let _ = body.flow_control().release_capacity(n);
            }
            if chunked {
                let _ = to_router.write_all(b"0\r\n\r\n").await;
            }
        }
        // The request is whole; the pipe stays open until the answer is read.
        std::future::pending::<()>().await;
    };
    let download = async move {
        let mut buf = Vec::with_capacity(8192);
        let Some((response, rest)) = read_response(&mut from_router, &mut buf).await else {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
            return;
        };
        let no_body = head_request
            || response.status() == StatusCode::NO_CONTENT
            || response.status() == StatusCode::NOT_MODIFIED;
        let Ok(mut out) = respond.send_response(response, no_body) else {
            return;
        };
        if no_body {
            return;
        }
        if !rest.is_empty() && send(&mut out, Bytes::from(rest)).await.is_err() {
            return;
        }
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match from_router.read(&mut chunk).await {
                Ok(0) => {
                    let _ = out.send_data(Bytes::new(), true);
                    return;
                }
                Ok(n) => {
                    if send(&mut out, Bytes::copy_from_slice(&chunk[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(_) => {
                    out.send_reset(h2::Reason::INTERNAL_ERROR);
                    return;
                }
            }
        }
    };
    // The router side ends when it has answered; the download when the pipe
    // closes after that; the upload is dropped with them.
    tokio::select! {
        _ = async { tokio::join!(router, download) } => {}
        _ = upload => {}
    }
}

/// DATA within the client's flow-control window: waits for capacity instead
/// of buffering a slow client's whole answer.
async fn send(out: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| out.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        };
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        out.send_data(piece, false)?;
    }
    Ok(())
}

/// The router's answer head, as an HTTP/2 response, and the body bytes read past it.
async fn read_response<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut Vec<u8>,
) -> Option<(Response<()>, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut slots);
        if let Ok(httparse::Status::Complete(len)) = parsed.parse(buf) {
            let mut response = Response::builder().status(parsed.code?);
            for h in parsed.headers.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                if hop_by_hop(name.as_str()) {
                    continue;
                }
                response = response.header(name, HeaderValue::from_bytes(h.value).ok()?);
            }
            return Some((response.body(()).ok()?, buf[len..].to_vec()));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return None;
        }
        let n = from.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
