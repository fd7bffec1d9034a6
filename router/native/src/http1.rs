//! HTTP/1.1 as the data path needs it: request heads checked and rewritten for
//! the dyno, response heads read for their framing, bodies relayed verbatim
//! with that framing enforced. Nothing here owns a socket.

use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The request line and each header line (Heroku's 8 KiB).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 128;
const RELAY_CHUNK: usize = 64 * 1024;
const MAX_CHUNK_LINE: usize = 4096;

/// How a message's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Chunked from the sender, the bare data to the receiver (an HTTP/1.0
    /// client, which knows no chunking: its body ends with the connection).
    Dechunked,
    UntilClose,
}

/// Why a request is refused before any dyno sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    BadRequest,
    HeaderTooLarge,
    UriTooLong,
    NotImplemented,
}

impl Refused {
    /// The page it is answered with (see router/dataplane.py).
    pub fn page(self) -> &'static str {
        match self {
            Refused::BadRequest => "bad_request",
            Refused::HeaderTooLarge => "header_too_large",
            Refused::UriTooLong => "uri_too_long",
            Refused::NotImplemented => "not_implemented",
        }
    }
}

#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub host: String,
    /// Headers the dyno receives as they came (names as the client spelled them).
    /// The head's own bytes, which `kept` points into.
    pub raw: Vec<u8>,
    /// Headers the dyno receives as they came: (name, value) ranges of `raw`.
    pub kept: Vec<(Span, Span)>,
    pub forwarded_for: Option<Vec<u8>>,
    pub request_id: Option<String>,
    pub framing: Framing,
    pub keep_alive: bool,
    /// The protocol asked for with `Connection: upgrade` (a WebSocket, say).
    pub upgrade: Option<Vec<u8>>,
    /// `Expect: 100-continue` with a body: the client waits for the dyno's
    /// 100 before sending it (the header is passed on, the 100 relayed back).
    pub expect_continue: bool,
    pub http10: bool,
    pub head_len: usize,
}

/// A byte range of a head: no copy per header on the request path.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(part: &[u8], whole: &[u8]) -> Span {
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        Span {
            start: start as u32,
            len: part.len() as u32,
        }
    }

    pub fn get(self, raw: &[u8]) -> &[u8] {
        &raw[self.start as usize..(self.start + self.len) as usize]
    }
}

/// The headers the router reads or drops, by name, case-insensitively and
/// without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    ForwardedFor,
    RequestId,
    Expect,
    Dropped,
    Other,
}

fn known(name: &str) -> Known {
    const DROPPED: [&str; 10] = [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-request-start",
        "via",
    ];
    let is = |k: &str| name.eq_ignore_ascii_case(k);
    match name.len() {
        4 if is("host") => Known::Host,
        14 if is("content-length") => Known::ContentLength,
        17 if is("transfer-encoding") => Known::TransferEncoding,
        10 if is("connection") => Known::Connection,
        7 if is("upgrade") => Known::Upgrade,
        15 if is("x-forwarded-for") => Known::ForwardedFor,
        12 if is("x-request-id") => Known::RequestId,
        6 if is("expect") => Known::Expect,
        _ if DROPPED.iter().any(|d| d.len() == name.len() && is(d)) => Known::Dropped,
        _ => Known::Other,
    }
}

fn valid_request_id(value: &[u8]) -> bool {
    (20..=200).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-'))
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The host a Host header names, lower-cased, without its port.
pub fn host_name(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let text = text.trim();
    let name = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => {
            // "demo.example.com." is the same name, fully qualified.
            let name = text.split(':').next().unwrap_or("");
            name.strip_suffix('.').unwrap_or(name)
        }
    };
    name.to_ascii_lowercase()
}

fn bare_line_feed(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// A complete request head at the start of `buf`, None while it is incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, Refused> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let parsed = req.parse(buf);
    let scanned = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        _ => buf.len(),
    };
    if bare_line_feed(&buf[..scanned]) {
        // Lines ended by LF alone are read differently by different servers.
        return Err(Refused::BadRequest);
    }
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            let first_line = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
            if first_line > MAX_LINE_BYTES {
                return Err(Refused::UriTooLong);
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(Refused::HeaderTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::HeaderTooLarge),
        Err(_) => return Err(Refused::BadRequest),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(Refused::HeaderTooLarge);
    }
    if req.method == Some("CONNECT") {
        // Tunnels to arbitrary hosts are not a router's business.
        return Err(Refused::NotImplemented);
    }
    let target = req.path.unwrap_or("/");
    if target.len() > MAX_LINE_BYTES {
        return Err(Refused::UriTooLong);
    }
    let http10 = req.version == Some(0);
    let mut host: Option<String> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    let mut wants_upgrade = false;
    let mut upgrade: Option<Vec<u8>> = None;
    let mut named_by_connection: Vec<String> = Vec::new();
    let mut kept: Vec<(Span, Span)> = Vec::with_capacity(req.headers.len());
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut request_id = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        if h.name.len() + h.value.len() > MAX_LINE_BYTES {
            return Err(Refused::HeaderTooLarge);
        }
        let span = (Span::of(h.name.as_bytes(), buf), Span::of(h.value, buf));
        match known(h.name) {
            Known::Host => {
                if host.is_some()
                    || h.value.is_empty()
                    || h.value.iter().any(|b| matches!(b, b' ' | b'\t' | b','))
                {
                    return Err(Refused::BadRequest);
                }
                host = Some(host_name(h.value));
                kept.push(span);
            }
            Known::ContentLength => {
                let n = parse_length(h.value).ok_or(Refused::BadRequest)?;
                if length.is_some() {
                    return Err(Refused::BadRequest);
                }
                length = Some(n);
                kept.push(span);
            }
            Known::TransferEncoding => {
                // Anything but one plain "chunked" could change how the dyno
                // splits the stream into requests.
                if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(Refused::NotImplemented);
                }
                chunked = true;
                kept.push(span);
            }
            Known::Connection => {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        wants_upgrade = true;
                    } else if !token.is_empty() {
                        named_by_connection
                            .push(String::from_utf8_lossy(token).to_ascii_lowercase());
                    }
                }
            }
            Known::Upgrade => upgrade = Some(h.value.to_vec()),
            Known::ForwardedFor => match &mut forwarded_for {
                Some(prior) => {
                    prior.extend_from_slice(b", ");
                    prior.extend_from_slice(h.value);
                }
                None => forwarded_for = Some(h.value.to_vec()),
            },
            Known::RequestId => {
                if valid_request_id(h.value) {
                    request_id = Some(String::from_utf8_lossy(h.value).into_owned());
                }
            }
            Known::Expect => {
                expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
                kept.push(span);
            }
            Known::Dropped => {}
            Known::Other => kept.push(span),
        }
    }
    if chunked && length.is_some() {
        return Err(Refused::BadRequest);
    }
    if !named_by_connection.is_empty() {
        // Headers the client marked hop-by-hop in its Connection header.
        kept.retain(|(name, _)| {
            let name = name.get(buf);
            !named_by_connection
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        });
    }
    let host = match host {
        Some(h) if !h.is_empty() => h,
        _ if http10 => String::new(),
        _ => return Err(Refused::BadRequest),
    };
    let framing = if chunked {
        Framing::Chunked
    } else {
        match length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    Ok(Some(RequestHead {
        method: req.method.unwrap_or("GET").to_string(),
        target: target.to_string(),
        host,
        raw: buf[..head_len].to_vec(),
        kept,
        forwarded_for,
        request_id,
        framing,
        keep_alive: !close,
        upgrade: if wants_upgrade { upgrade } else { None },
        // HTTP/1.0 clients cannot take an interim answer (RFC 9110, 10.1.1).
        expect_continue: expect_continue && !http10 && framing != Framing::Empty,
        http10,
        head_len,
    }))
}

/// The head the dyno receives: the kept headers plus the router's own.
pub fn dyno_request_head(
    head: &RequestHead,
    client_ip: &str,
    proto: &str,
    port: u16,
    request_id: &str,
    start_ms: u128,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + head.target.len() + head.kept.len() * 32);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.kept {
        out.extend_from_slice(name.get(&head.raw));
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.get(&head.raw));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(prior) = &head.forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(proto.as_bytes());
    let _ = write!(
        out,
        "\r\nX-Forwarded-Port: {port}\r\nX-Request-Start: {start_ms}\r\nX-Request-Id: {request_id}\r\nVia: 1.1 slipway\r\n"
    );
    match &head.upgrade {
        Some(protocol) => {
            out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
            out.extend_from_slice(protocol);
            out.extend_from_slice(b"\r\n\r\n");
        }
        // HTTP/1.1 connections persist without saying so.
        None => out.extend_from_slice(b"\r\n"),
    }
    out
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// The client's connection stays open after this response.
    pub keep_client: bool,
    /// The dyno's connection may carry another request.
    pub reuse_dyno: bool,
    pub head_len: usize,
    /// The head the client receives (the dyno's, minus its connection headers).
    pub client_head: Vec<u8>,
}

/// A complete response head at the start of `buf`; None while incomplete; Err
/// for a response the client must not get (answered as the dyno's failure).
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    client_keep_alive: bool,
) -> Result<Option<ResponseHead>, Refused> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Refused::BadRequest)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refused::BadRequest),
    };
    if resp.headers.len() >= MAX_HEADERS {
        // One is kept for the router's Connection header.
        return Err(Refused::BadRequest);
    }
    let status = resp.code.unwrap_or(0);
    if status < 100 {
        // "HTTP/1.1 024" parses as 24: no such status exists.
        return Err(Refused::BadRequest);
    }
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    let mut out = Vec::with_capacity(head_len + 32);
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = write!(out, "{status}");
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        match () {
            _ if is("content-length") => {
                let n = parse_length(h.value).ok_or(Refused::BadRequest)?;
                if length.is_some_and(|m| m != n) {
                    return Err(Refused::BadRequest);
                }
                length = Some(n);
            }
            _ if is("transfer-encoding") => {
                if !h.value.eq_ignore_ascii_case(b"chunked") {
                    return Err(Refused::BadRequest);
                }
                chunked = true;
            }
            _ if is("connection") => {
                for token in h.value.split(|b| *b == b',') {
                    if token.trim_ascii().eq_ignore_ascii_case(b"close") {
                        close = true;
                    }
                }
                continue;
            }
            _ if is("keep-alive") || is("proxy-connection") => continue,
            _ => {}
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    } else {
        Framing::UntilClose
    };
    // A body that ends with the dyno's connection ends the client's too.
    let keep_client = client_keep_alive && framing != Framing::UntilClose;
    let reuse_dyno = !close && framing != Framing::UntilClose;
    if status == 101 {
        // Switching protocols: the connection becomes the upgraded protocol's.
        out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
        return Ok(Some(ResponseHead {
            status,
            framing: Framing::Empty,
            keep_client: false,
            reuse_dyno: false,
            head_len,
            client_head: out,
        }));
    }
    out.extend_from_slice(b"Via: 1.1 slipway\r\n");
    out.extend_from_slice(if keep_client {
        b"Connection: keep-alive\r\n\r\n" as &[u8]
    } else {
        b"Connection: close\r\n\r\n"
    });
    Ok(Some(ResponseHead {
        status,
        framing,
        keep_client,
        reuse_dyno,
        head_len,
        client_head: out,
    }))
}

impl ResponseHead {
    /// The same answer for an HTTP/1.0 client: a chunked body goes out as its
    /// bare data, ended by closing the connection.
    pub fn for_http10_client(&mut self) {
        if self.framing != Framing::Chunked {
            return;
        }
        self.framing = Framing::Dechunked;
        self.keep_client = false;
        let mut out = Vec::with_capacity(self.client_head.len());
        for line in self.client_head.split_inclusive(|b| *b == b'\n') {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"transfer-encoding:") || lower.starts_with(b"connection:") {
                continue;
            }
            if line == b"\r\n" {
                out.extend_from_slice(b"Connection: close\r\n");
            }
            out.extend_from_slice(line);
        }
        self.client_head = out;
    }
}

/// A socket with the bytes read from it but not consumed yet.
pub struct Buffered<S> {
    pub stream: S,
    pub buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Buffered<S> {
    pub fn new(stream: S) -> Self {
        Buffered {
            stream,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Reads more; false at end of stream.
    pub async fn fill(&mut self) -> std::io::Result<bool> {
        // Straight into the buffer's spare room: no copy through the stack.
        self.buf.reserve(16 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// Reads more within `idle`; false at end of stream.
    async fn fill_within(&mut self, idle: Duration) -> Result<bool, RelayError> {
        match tokio::time::timeout(idle, self.fill()).await {
            Ok(Ok(more)) => Ok(more),
            Ok(Err(_)) => Err(RelayError::Source),
            Err(_) => Err(RelayError::Idle),
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }
}

#[derive(Debug)]
pub enum RelayError {
    /// The sender ended or failed before the message was complete.
    Source,
    /// The sender broke the framing (a bad chunk size line, say).
    Malformed,
    /// The receiver is gone.
    Sink,
    /// The sender sent nothing for the idle window.
    Idle,
}

/// Copies one body framed as `framing` from `src` to `dst`, adding to `sent`
/// the body bytes relayed (also when it fails half-way). Bytes after the body
/// stay in `src.buf` (a pipelined request).
pub async fn relay_body<S, D>(
    src: &mut Buffered<S>,
    dst: &mut D,
    framing: Framing,
    idle: Duration,
    sent: &mut u64,
) -> Result<(), RelayError>
where
    S: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(n) => relay_exact(src, dst, n, idle, sent).await,
        Framing::UntilClose => loop {
            if !src.buf.is_empty() {
                dst.write_all(&src.buf)
                    .await
                    .map_err(|_| RelayError::Sink)?;
                *sent += src.buf.len() as u64;
                src.buf.clear();
            }
            if !src.fill_within(idle).await? {
                return Ok(());
            }
        },
        Framing::Chunked => relay_chunked(src, dst, idle, sent, false).await,
        Framing::Dechunked => relay_chunked(src, dst, idle, sent, true).await,
    }
}

async fn relay_exact<S, D>(
    src: &mut Buffered<S>,
    dst: &mut D,
    mut left: u64,
    idle: Duration,
    sent: &mut u64,
) -> Result<(), RelayError>
where
    S: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    while left > 0 {
        if src.buf.is_empty() && !src.fill_within(idle).await? {
            return Err(RelayError::Source);
        }
        let n = (src.buf.len() as u64).min(left).min(RELAY_CHUNK as u64) as usize;
        dst.write_all(&src.buf[..n])
            .await
            .map_err(|_| RelayError::Sink)?;
        src.consume(n);
        left -= n as u64;
        *sent += n as u64;
    }
    Ok(())
}

async fn line<S: AsyncRead + Unpin>(
    src: &mut Buffered<S>,
    idle: Duration,
) -> Result<Vec<u8>, RelayError> {
    loop {
        if let Some(at) = src.buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(src.take(at + 2));
        }
        if src.buf.len() > MAX_CHUNK_LINE {
            return Err(RelayError::Malformed);
        }
        if !src.fill_within(idle).await? {
            return Err(RelayError::Source);
        }
    }
}

/// The size a chunk-size line names (extensions ignored); None if invalid.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = line.strip_suffix(b"\r\n")?;
    let digits = text.split(|b| *b == b';').next()?;
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// `bare`: only the chunks' data reaches `dst` (no size lines, no trailers).
async fn relay_chunked<S, D>(
    src: &mut Buffered<S>,
    dst: &mut D,
    idle: Duration,
    sent: &mut u64,
    bare: bool,
) -> Result<(), RelayError>
where
    S: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    loop {
        let size_line = line(src, idle).await?;
        let size = chunk_size(&size_line).ok_or(RelayError::Malformed)?;
        if !bare {
            dst.write_all(&size_line)
                .await
                .map_err(|_| RelayError::Sink)?;
        }
        if size == 0 {
            // Trailers, then the empty line that ends the message.
            loop {
                let trailer = line(src, idle).await?;
                if !bare {
                    dst.write_all(&trailer)
                        .await
                        .map_err(|_| RelayError::Sink)?;
                }
                if trailer == b"\r\n" {
                    return Ok(());
                }
            }
        }
        relay_exact(src, dst, size, idle, sent).await?;
        if line(src, idle).await? != b"\r\n" {
            return Err(RelayError::Malformed);
        }
        if !bare {
            dst.write_all(b"\r\n").await.map_err(|_| RelayError::Sink)?;
        }
    }
}

/// False when the start of a chunked body, as far as it is in `buf`, is
/// already malformed: refused before any dyno is connected to.
pub fn chunked_prefix_valid(buf: &[u8]) -> bool {
    let mut at = 0usize;
    loop {
        let rest = &buf[at..];
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return rest.len() <= MAX_CHUNK_LINE;
        };
        let Some(size) = chunk_size(&rest[..end + 2]) else {
            return false;
        };
        if size == 0 {
            return true; // trailers are checked as they are relayed
        }
        let data_end = (at + end + 2).saturating_add(size as usize);
        if data_end + 2 > buf.len() {
            return true;
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return false;
        }
        at = data_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_shapes_are_refused() {
        let both = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_request(both).is_err());
        let two = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert!(parse_request(two).is_err());
        let odd = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(parse_request(odd).is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\nHost: a\r\n\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: a\n").is_err());
    }

    #[test]
    fn chunked_prefixes() {
        assert!(chunked_prefix_valid(b""));
        assert!(chunked_prefix_valid(b"5\r\nhel"));
        assert!(chunked_prefix_valid(b"5\r\nhello\r\n0\r\n\r\n"));
        assert!(!chunked_prefix_valid(b"zz\r\nabc\r\n"));
        assert!(!chunked_prefix_valid(b"fffffffffffffffffff\r\nabc\r\n"));
        assert!(!chunked_prefix_valid(b"3\r\nabcdef\r\n"));
    }

    #[test]
    fn http10_clients_get_bare_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
        let mut head = parse_response(raw, false, true).unwrap().unwrap();
        head.for_http10_client();
        let text = String::from_utf8(head.client_head.clone()).unwrap();
        assert!(!text.to_ascii_lowercase().contains("transfer-encoding"));
        assert!(text.ends_with("X-A: 1\r\nVia: 1.1 slipway\r\nConnection: close\r\n\r\n"));
        assert_eq!(head.framing, Framing::Dechunked);
        assert!(!head.keep_client);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a\r\n"), Some(26));
        assert_eq!(chunk_size(b"0;ext=1\r\n"), Some(0));
        assert_eq!(chunk_size(b"-1\r\n"), None);
        assert_eq!(chunk_size(b"\r\n"), None);
    }
}
