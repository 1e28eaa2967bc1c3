//! A TCP proxy in front of the emulator that injects faults, for
//! fault-injection tests. Point an SDK client at [`FaultProxy::endpoint`] and
//! arm one of two kinds of fault:
//!
//! - a byte cut, [`FaultProxy::break_after_upstream_bytes`]: the connection
//!   that carries the n-th byte sent towards the server after arming is shut
//!   down in both directions, as a network failure mid-upload would. It is
//!   one-shot: it disarms itself when it fires, so whatever comes next (the
//!   SDK's `AbortMultipartUpload`, a retry) goes through untouched;
//! - request faults, on a proxy started with [`FaultProxy::start_http`],
//!   which reads each HTTP/1.1 request's method, path, query, headers and
//!   (for query APIs) form body and names its AWS call kind as IAM names
//!   actions ([`CallKind`]: `s3:UploadPart`, `sts:AssumeRole`,
//!   `secretsmanager:GetSecretValue`, `ses:SendRawEmail`, …):
//!   [`FaultProxy::fail_requests`] makes the n-th request of a kind (counted
//!   from arming) and the `times - 1` of that kind after it fail with a
//!   [`Fault`] — a connection reset (TCP RST, nothing forwarded), an HTTP 500
//!   or a throttling answer — written by the proxy, so the server never sees
//!   the request. [`FaultProxy::requests`] lists every request seen.
//!
//! The proxy runs on plain std threads (one to accept, two per connection),
//! so it works the same from any tokio runtime, including the current-thread
//! runtime of `#[tokio::test]`. It listens on 127.0.0.1 only and forwards to a
//! loopback upstream only. It must not rewrite what it forwards: a request it
//! does not fail reaches the server byte for byte.
//!
//! ```no_run
//! # async fn example() {
//! use integration_tests::fault_proxy::{CallKind, Fault, FaultProxy};
//! let proxy = FaultProxy::start(&integration_tests::moto_endpoint());
//! let config = integration_tests::sdk_config(&proxy.endpoint()).await;
//! proxy.break_after_upstream_bytes(6 * 1024 * 1024);
//! // ... an upload through `config` now fails 6 MiB in ...
//! assert_eq!(proxy.faults_fired(), 1);
//!
//! let proxy = FaultProxy::start_http(&integration_tests::moto_endpoint());
//! // The second UploadPart and the SDK's two retries of it are answered 503 SlowDown.
//! proxy.fail_requests(CallKind::new("s3:UploadPart"), 2, 3, Fault::Throttle);
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// `armed` holds this when no fault is armed.
const DISARMED: u64 = u64::MAX;

/// Bytes read from one side before they are written to the other.
const CHUNK_BYTES: usize = 64 * 1024;

/// A request head longer than this is not HTTP as the SDKs send it.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Form bodies (query APIs: SES, STS) up to this size are read whole to find
/// their `Action`; a larger one is classified without it.
const MAX_FORM_BODY_BYTES: u64 = 1024 * 1024;

/// How long a failed request's unread body is drained after an early answer
/// (`Expect: 100-continue`) before the connection is closed.
const DRAIN_AFTER_ANSWER: Duration = Duration::from_secs(2);

/// A kind of AWS call, named as IAM names actions: the service's signing
/// name, a colon and the operation (`s3:GetObject`, `s3:UploadPart`,
/// `sts:AssumeRole`, `secretsmanager:GetSecretValue`, `ses:SendRawEmail`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKind(String);

impl CallKind {
    pub fn new(name: impl Into<String>) -> Self {
        CallKind(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a request fails. The proxy answers it itself: the server never sees
/// a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The connection is reset (TCP RST) once the request's head has been
    /// read; nothing is forwarded and no answer is written.
    Reset,
    /// HTTP 500 with the service's internal error (`InternalError` for S3,
    /// `InternalServiceError` for JSON APIs, `InternalFailure` for query APIs).
    InternalError,
    /// Throttling: HTTP 503 `SlowDown` for S3, HTTP 400
    /// `ThrottlingException` for JSON APIs, HTTP 400 `Throttling` for query
    /// APIs (SES, STS), as AWS answers them.
    Throttle,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Reset, Fault::InternalError, Fault::Throttle];

    /// A short name for tables: `reset`, `500`, `throttle`.
    pub fn short_name(self) -> &'static str {
        match self {
            Fault::Reset => "reset",
            Fault::InternalError => "500",
            Fault::Throttle => "throttle",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Reset => "connection reset",
            Fault::InternalError => "HTTP 500 internal error",
            Fault::Throttle => "throttling (S3: 503 SlowDown)",
        })
    }
}

/// One request the proxy saw (HTTP mode), in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub kind: CallKind,
    pub method: String,
    /// The path, without the query (for S3, path style: `/bucket/key`).
    pub path: String,
    /// The fault this request was given, if any.
    pub fault: Option<Fault>,
    /// The form body of a query-API request (STS, SES), as sent
    /// (URL-encoded), when it was read; see [`SeenRequest::form_value`].
    pub form: Option<String>,
}

impl SeenRequest {
    /// The value of form parameter `name` (`Policy`, `Tags.member.1.Key`,
    /// …), URL-decoded.
    pub fn form_value(&self, name: &str) -> Option<String> {
        let form = self.form.as_deref()?;
        url::form_urlencoded::parse(form.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    }
}

/// An armed request fault: requests `nth ..= nth + times - 1` of `kind`,
/// counted from arming, fail with `fault`.
#[derive(Debug, Clone)]
struct RequestRule {
    kind: CallKind,
    nth: u64,
    times: u64,
    fault: Fault,
    seen: u64,
}

/// A fault-injecting TCP proxy on `127.0.0.1:<ephemeral port>`; see the
/// module documentation. Dropping it stops accepting connections and closes
/// the ones still open.
pub struct FaultProxy {
    local: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle and its threads.
struct Shared {
    upstream: SocketAddr,
    /// Whether requests are read as HTTP (and request faults can fire).
    http: bool,
    stopping: AtomicBool,
    /// Client→server bytes still to forward before the armed fault fires, or
    /// [`DISARMED`].
    armed: AtomicU64,
    faults_fired: AtomicU64,
    forwarded_upstream: AtomicU64,
    connections_accepted: AtomicU64,
    /// Both sockets of every open connection, so that drop can close them.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    rules: Mutex<Vec<RequestRule>>,
    seen: Mutex<Vec<SeenRequest>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, (TcpStream, TcpStream)>> {
        lock(&self.open)
    }

    /// Claims `len` client→server bytes against the armed fault. Returns how
    /// many of them may be forwarded and whether the connection must be cut
    /// after forwarding them. Exactly one caller sees `true` per arming.
    fn claim(&self, len: u64) -> (u64, bool) {
        let mut remaining = self.armed.load(Ordering::SeqCst);
        loop {
            if remaining == DISARMED {
                return (len, false);
            }
            let (next, outcome) =
                if len < remaining { (remaining - len, (len, false)) } else { (DISARMED, (remaining, true)) };
            match self.armed.compare_exchange(remaining, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return outcome,
                Err(current) => remaining = current,
            }
        }
    }

    /// Counts a request of `kind` against every armed rule and records it;
    /// returns the fault it gets, if any (the first rule that fires).
    fn decide(&self, kind: CallKind, method: &str, path: &str, form: Option<&[u8]>) -> Option<Fault> {
        let mut fault = None;
        for rule in lock(&self.rules).iter_mut().filter(|rule| rule.kind == kind) {
            rule.seen += 1;
            let fires = rule.seen >= rule.nth && rule.seen - rule.nth < rule.times;
            if fires && fault.is_none() {
                fault = Some(rule.fault);
            }
        }
        let form = form.map(|form| String::from_utf8_lossy(form).into_owned());
        lock(&self.seen).push(SeenRequest { kind, method: method.to_owned(), path: path.to_owned(), fault, form });
        fault
    }
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream`, given as the emulator's
    /// endpoint (`http://127.0.0.1:PORT`) or as `127.0.0.1:PORT`. It forwards
    /// bytes without reading them: only byte cuts can be armed.
    ///
    /// # Panics
    /// When `upstream` is not a loopback `host:port` (this proxy never talks to
    /// anything but 127.0.0.1), or when no local port can be bound.
    pub fn start(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, false)
    }

    /// Starts a proxy that reads each request as HTTP/1.1, names its
    /// [`CallKind`] and can fail it ([`fail_requests`](Self::fail_requests));
    /// byte cuts work as with [`start`](Self::start). Only for clients that
    /// speak HTTP/1.1 without pipelining (the AWS SDKs).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_http(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, true)
    }

    fn start_with(upstream: &str, http: bool) -> FaultProxy {
        let address = upstream.trim().trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = address
            .parse()
            .unwrap_or_else(|e| panic!("fault proxy: upstream {upstream:?} is not http://127.0.0.1:PORT: {e}"));
        assert!(upstream.ip().is_loopback(), "fault proxy: upstream {upstream} is not a loopback address");

        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        let local = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            upstream,
            http,
            stopping: AtomicBool::new(false),
            armed: AtomicU64::new(DISARMED),
            faults_fired: AtomicU64::new(0),
            forwarded_upstream: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fault-proxy-{}", local.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("fault proxy: spawn the accepting thread")
        };
        FaultProxy { local, shared, acceptor: Some(acceptor) }
    }

    /// The proxy's endpoint, `http://127.0.0.1:<port>`, for `sdk_config`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local)
    }

    /// Arms a one-shot fault: once `n` more bytes have been forwarded from
    /// clients to the server (counted across all connections from now on),
    /// the connection carrying the n-th byte is shut down in both directions
    /// and the fault disarms itself. `n = 0` cuts the next connection that
    /// sends anything, before forwarding it. Arming again replaces a fault
    /// that has not fired yet.
    pub fn break_after_upstream_bytes(&self, n: u64) {
        assert!(n < DISARMED, "fault proxy: {n} bytes is out of range");
        self.shared.armed.store(n, Ordering::SeqCst);
    }

    /// Whether a byte cut is armed and has not fired yet.
    pub fn is_armed(&self) -> bool {
        self.shared.armed.load(Ordering::SeqCst) != DISARMED
    }

    /// How many armed byte cuts have fired (connections cut).
    pub fn faults_fired(&self) -> u64 {
        self.shared.faults_fired.load(Ordering::SeqCst)
    }

    /// Arms a request fault (HTTP mode only): counting the requests of
    /// `kind` from now on (1 is the next one), requests `nth` to
    /// `nth + times - 1` fail with `fault`; `times = u64::MAX` fails every
    /// one from the `nth` on. Faults armed earlier stay armed; when two fire
    /// on one request the earlier-armed one is used.
    ///
    /// # Panics
    /// When the proxy was started without HTTP ([`start`](Self::start)), or
    /// `nth` or `times` is 0.
    pub fn fail_requests(&self, kind: CallKind, nth: u64, times: u64, fault: Fault) {
        assert!(self.shared.http, "fault proxy: request faults need FaultProxy::start_http");
        assert!(nth > 0 && times > 0, "fault proxy: nth and times count from 1");
        lock(&self.shared.rules).push(RequestRule { kind, nth, times, fault, seen: 0 });
    }

    /// Disarms every request fault (those that fired stay in
    /// [`requests`](Self::requests)).
    pub fn clear_request_faults(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Every request seen so far (HTTP mode), in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests of `kind` have been seen (failed ones included).
    pub fn requests_of(&self, kind: &CallKind) -> u64 {
        lock(&self.shared.seen).iter().filter(|seen| &seen.kind == kind).count() as u64
    }

    /// How many requests were given a fault.
    pub fn request_faults_fired(&self) -> u64 {
        lock(&self.shared.seen).iter().filter(|seen| seen.fault.is_some()).count() as u64
    }

    /// Bytes forwarded from clients to the server since the proxy started.
    pub fn bytes_forwarded_upstream(&self) -> u64 {
        self.shared.forwarded_upstream.load(Ordering::SeqCst)
    }

    /// Client connections accepted since the proxy started.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections_accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which then sees `stopping` and returns,
        // closing the listener.
        drop(TcpStream::connect(self.local));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (client, server) in self.shared.open().values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("endpoint", &self.endpoint())
            .field("upstream", &self.shared.upstream)
            .field("http", &self.shared.http)
            .field("armed", &self.is_armed())
            .field("faults_fired", &self.faults_fired())
            .field("request_faults_fired", &self.request_faults_fired())
            .field("bytes_forwarded_upstream", &self.bytes_forwarded_upstream())
            .finish()
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_id = 0_u64;
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.connections_accepted.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect(shared.upstream) else {
            // Upstream is down: the client sees its connection closed.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new().name(format!("fault-proxy-conn-{id}")).spawn(move || {
            if let Err(e) = proxy_connection(id, client, server, &shared) {
                tracing::debug!("fault proxy: connection {id}: {e}");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("fault proxy: could not spawn a connection thread: {e}");
        }
    }
}

/// Forwards one connection until both directions have ended; client→server
/// on this thread (where faults fire), server→client on another.
fn proxy_connection(id: u64, mut client: TcpStream, mut server: TcpStream, shared: &Shared) -> io::Result<()> {
    shared.open().insert(id, (client.try_clone()?, server.try_clone()?));
    // Set when the connection is to be reset: the server→client side must
    // then not close the client's direction gracefully (a FIN) first.
    let resetting = Arc::new(AtomicBool::new(false));
    let downstream = {
        let mut from = server.try_clone()?;
        let mut to = client.try_clone()?;
        let resetting = Arc::clone(&resetting);
        thread::Builder::new().name(format!("fault-proxy-down-{id}")).spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            if !resetting.load(Ordering::SeqCst) {
                let _ = to.shutdown(Shutdown::Write);
            }
        })?
    };

    let upstream = if shared.http {
        forward_http(&mut client, &mut server, shared, &resetting)
    } else {
        forward_upstream(&mut client, &mut server, shared)
    };
    let _ = downstream.join();
    shared.open().remove(&id);
    // With a reset armed, this drops the last handle of the client socket,
    // which sends the RST.
    drop(client);
    upstream
}

fn forward_upstream(client: &mut TcpStream, server: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    loop {
        let read = match client.read(&mut buffer) {
            Ok(0) => {
                // The client finished sending; let the server see it.
                let _ = server.shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = server.shutdown(Shutdown::Both);
                return Err(e);
            }
        };
        if send_upstream(&buffer[..read], client, server, shared)? == Sent::Cut {
            return Ok(());
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    All,
    /// A byte cut fired: both sockets are shut down.
    Cut,
}

/// Forwards `bytes` to the server, applying an armed byte cut.
fn send_upstream(bytes: &[u8], client: &TcpStream, server: &mut TcpStream, shared: &Shared) -> io::Result<Sent> {
    let (forward, cut) = shared.claim(bytes.len() as u64);
    let forward = usize::try_from(forward).expect("claim never exceeds the chunk");
    if forward > 0 {
        // Counted before the write, so that the count is never behind
        // what the server (and, through it, the client) may have seen.
        shared.forwarded_upstream.fetch_add(forward as u64, Ordering::SeqCst);
        if let Err(e) = server.write_all(&bytes[..forward]) {
            let _ = client.shutdown(Shutdown::Both);
            return Err(e);
        }
    }
    if cut {
        shared.faults_fired.fetch_add(1, Ordering::SeqCst);
        let _ = server.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(Sent::Cut);
    }
    Ok(Sent::All)
}

/// What the client sent and the proxy has not consumed yet.
struct ClientBytes {
    buffer: Vec<u8>,
    start: usize,
}

impl ClientBytes {
    fn buffered(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Reads more from the client; `Ok(false)` at the end of its stream.
    fn fill(&mut self, client: &mut TcpStream) -> io::Result<bool> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = vec![0_u8; CHUNK_BYTES];
        loop {
            match client.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(read) => {
                    self.buffer.extend_from_slice(&chunk[..read]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the next `len` bytes, which must be buffered.
    fn take(&mut self, len: usize) -> Vec<u8> {
        let taken = self.buffer[self.start..self.start + len].to_vec();
        self.start += len;
        taken
    }

    /// The request head, `\r\n\r\n` included; `None` when the client closed
    /// the connection before sending another request.
    fn head(&mut self, client: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = find(self.buffered(), b"\r\n\r\n") {
                return Ok(Some(self.take(end + 4)));
            }
            if self.buffered().len() > MAX_HEAD_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "no end of the request head in 64 KiB"));
            }
            if !self.fill(client)? {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed mid-head"))
                };
            }
        }
    }

    /// One line, `\r\n` included (chunked framing).
    fn line(&mut self, client: &mut TcpStream) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(self.buffered(), b"\r\n") {
                return Ok(self.take(end + 2));
            }
            if self.buffered().len() > MAX_HEAD_BYTES || !self.fill(client)? {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a chunked body without its line end"));
            }
        }
    }

    /// Up to `max` bytes (at least one), reading if nothing is buffered.
    fn some(&mut self, client: &mut TcpStream, max: usize) -> io::Result<Vec<u8>> {
        if self.buffered().is_empty() && !self.fill(client)? {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed mid-body"));
        }
        let len = self.buffered().len().min(max);
        Ok(self.take(len))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A request head as the proxy reads it.
#[derive(Debug)]
struct RequestHead {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn parse(head: &[u8]) -> io::Result<RequestHead> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut fields = request_line.split(' ');
        let (Some(method), Some(target)) = (fields.next(), fields.next()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP request: {request_line:?}")));
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Ok(RequestHead { method: method.to_owned(), path: path.to_owned(), query: form_pairs(query), headers })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has_query(&self, name: &str) -> bool {
        self.query.iter().any(|(n, _)| n == name)
    }

    fn body(&self) -> Body {
        if let Some(length) = self.header("content-length").and_then(|v| v.parse().ok()) {
            Body::Length(length)
        } else if self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            Body::Chunked
        } else {
            Body::Length(0)
        }
    }

    /// The service of the SigV4 credential scope (`…/<region>/<service>/aws4_request`).
    fn signing_service(&self) -> Option<String> {
        let credential = self
            .header("authorization")
            .and_then(|auth| auth.split("Credential=").nth(1))
            .map(|rest| rest.split([',', ' ']).next().unwrap_or_default().to_owned())
            .or_else(|| self.query.iter().find(|(n, _)| n == "X-Amz-Credential").map(|(_, v)| v.clone()))?;
        credential.split('/').nth(3).map(str::to_owned)
    }

    /// The call kind; `form` is the body of a form-encoded request, if read.
    fn call_kind(&self, form: Option<&[u8]>) -> CallKind {
        let service = self.signing_service().unwrap_or_else(|| "unknown".to_owned());
        if let Some(target) = self.header("x-amz-target") {
            let operation = target.rsplit('.').next().unwrap_or(target);
            return CallKind(format!("{service}:{operation}"));
        }
        let action = form
            .map(|body| form_pairs(&String::from_utf8_lossy(body)))
            .and_then(|pairs| pairs.into_iter().find(|(n, _)| n == "Action").map(|(_, v)| v))
            .or_else(|| self.query.iter().find(|(n, _)| n == "Action").map(|(_, v)| v.clone()));
        if let Some(action) = action {
            return CallKind(format!("{service}:{action}"));
        }
        if service == "s3" || service == "unknown" {
            return CallKind(format!("s3:{}", self.s3_operation()));
        }
        CallKind(format!("{service}:{} {}", self.method, self.path))
    }

    /// The S3 operation of a path-style request (`/bucket/key`).
    fn s3_operation(&self) -> &'static str {
        let path = self.path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let copy = self.header("x-amz-copy-source").is_some();
        match (self.method.as_str(), bucket.is_empty(), key.is_empty()) {
            ("GET", true, _) => "ListBuckets",
            ("GET", false, true) if self.has_query("uploads") => "ListMultipartUploads",
            ("GET", false, true) if self.has_query("list-type") => "ListObjectsV2",
            ("GET", false, true) if self.query.is_empty() || self.has_query("prefix") => "ListObjects",
            ("GET", false, true) => "GetBucketConfiguration",
            ("GET", false, false) if self.has_query("uploadId") => "ListParts",
            ("GET", false, false) => "GetObject",
            ("HEAD", false, true) => "HeadBucket",
            ("HEAD", false, false) => "HeadObject",
            ("PUT", false, true) if self.query.is_empty() => "CreateBucket",
            ("PUT", false, true) => "PutBucketConfiguration",
            ("PUT", false, false) if self.has_query("partNumber") && copy => "UploadPartCopy",
            ("PUT", false, false) if self.has_query("partNumber") => "UploadPart",
            ("PUT", false, false) if copy => "CopyObject",
            ("PUT", false, false) => "PutObject",
            ("POST", false, _) if self.has_query("uploads") => "CreateMultipartUpload",
            ("POST", false, _) if self.has_query("uploadId") => "CompleteMultipartUpload",
            ("POST", false, _) if self.has_query("delete") => "DeleteObjects",
            ("DELETE", false, false) if self.has_query("uploadId") => "AbortMultipartUpload",
            ("DELETE", false, false) => "DeleteObject",
            ("DELETE", false, true) => "DeleteBucket",
            _ => "Other",
        }
    }

    /// The protocol family of the answer to write for a fault.
    fn protocol(&self, kind: &CallKind) -> Protocol {
        if self.header("x-amz-target").is_some() {
            Protocol::Json
        } else if kind.as_str().starts_with("s3:") {
            Protocol::S3
        } else {
            Protocol::Query
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    S3,
    Json,
    Query,
}

/// `a=1&b=x%2Fy` as decoded pairs.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer the proxy writes for an HTTP fault.
fn fault_answer(fault: Fault, protocol: Protocol) -> Vec<u8> {
    let (status, reason, content_type, error_type, body) = match (fault, protocol) {
        (Fault::Reset, _) => unreachable!("a reset has no answer"),
        (Fault::InternalError, Protocol::S3) => (
            500,
            "Internal Server Error",
            "application/xml",
            None,
            xml_error("InternalError", "We encountered an internal error. Please try again."),
        ),
        (Fault::Throttle, Protocol::S3) => {
            (503, "Slow Down", "application/xml", None, xml_error("SlowDown", "Please reduce your request rate."))
        }
        (Fault::InternalError, Protocol::Json) => (
            500,
            "Internal Server Error",
            "application/x-amz-json-1.1",
            Some("InternalServiceError"),
            r#"{"__type":"InternalServiceError","message":"An error occurred on the server side."}"#.to_owned(),
        ),
        (Fault::Throttle, Protocol::Json) => (
            400,
            "Bad Request",
            "application/x-amz-json-1.1",
            Some("ThrottlingException"),
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
        ),
        (Fault::InternalError, Protocol::Query) => (
            500,
            "Internal Server Error",
            "text/xml",
            None,
            query_error("Receiver", "InternalFailure", "The request processing has failed."),
        ),
        (Fault::Throttle, Protocol::Query) => {
            (400, "Bad Request", "text/xml", None, query_error("Sender", "Throttling", "Rate exceeded"))
        }
    };
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         x-amz-request-id: fault-proxy\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(error_type) = error_type {
        answer.push_str(&format!("x-amzn-errortype: {error_type}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    answer.into_bytes()
}

fn xml_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>fault-proxy</RequestId></Error>"
    )
}

fn query_error(kind: &str, code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>fault-proxy</RequestId></ErrorResponse>"
    )
}

/// Forwards HTTP/1.1 requests one at a time, failing those an armed rule
/// names. Responses flow back on the other thread untouched.
fn forward_http(
    client: &mut TcpStream,
    server: &mut TcpStream,
    shared: &Shared,
    resetting: &AtomicBool,
) -> io::Result<()> {
    let mut incoming = ClientBytes { buffer: Vec::new(), start: 0 };
    loop {
        let head_bytes = match incoming.head(client) {
            Ok(Some(head)) => head,
            Ok(None) => {
                let _ = server.shutdown(Shutdown::Write);
                return Ok(());
            }
            Err(e) => {
                let _ = server.shutdown(Shutdown::Both);
                return Err(e);
            }
        };
        let head = match RequestHead::parse(&head_bytes) {
            Ok(head) => head,
            Err(e) => {
                let _ = server.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                return Err(e);
            }
        };
        let body = head.body();
        let is_form = head.header("content-type").is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        // A form body is read first: its Action names the call.
        let form = match body {
            Body::Length(length) if is_form && length <= MAX_FORM_BODY_BYTES => {
                let length = usize::try_from(length).expect("a small body");
                while incoming.buffered().len() < length {
                    if !incoming.fill(client)? {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed mid-body"));
                    }
                }
                Some(incoming.take(length))
            }
            _ => None,
        };
        let kind = head.call_kind(form.as_deref());
        let protocol = head.protocol(&kind);
        match shared.decide(kind, &head.method, &head.path, form.as_deref()) {
            None => {
                if send_upstream(&head_bytes, client, server, shared)? == Sent::Cut {
                    return Ok(());
                }
                let sent = match (form, body) {
                    (Some(form), _) => send_upstream(&form, client, server, shared)?,
                    (None, body) => relay_body(&mut incoming, body, client, &mut |bytes, client| {
                        send_upstream(bytes, client, server, shared)
                    })?,
                };
                if sent == Sent::Cut {
                    return Ok(());
                }
            }
            Some(Fault::Reset) => {
                reset(client, server, resetting);
                return Ok(());
            }
            Some(fault) => {
                let answer = fault_answer(fault, protocol);
                let expects_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
                if form.is_none() {
                    if expects_continue {
                        // The client waits for a go-ahead before sending the
                        // body: answer now, then take what it sends anyway.
                        client.write_all(&answer)?;
                        let _ = client.set_read_timeout(Some(DRAIN_AFTER_ANSWER));
                        let _ = relay_body(&mut incoming, body, client, &mut |_, _| Ok(Sent::All));
                    } else {
                        relay_body(&mut incoming, body, client, &mut |_, _| Ok(Sent::All))?;
                        client.write_all(&answer)?;
                    }
                } else {
                    client.write_all(&answer)?;
                }
                // `connection: close`: the server's side ends, which ends
                // the other thread, which closes the client's direction.
                let _ = server.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
    }
}

/// Passes a request body to `sink` as it arrives, by its framing.
fn relay_body(
    incoming: &mut ClientBytes,
    body: Body,
    client: &mut TcpStream,
    sink: &mut dyn FnMut(&[u8], &TcpStream) -> io::Result<Sent>,
) -> io::Result<Sent> {
    match body {
        Body::Length(mut remaining) => {
            while remaining > 0 {
                let max = usize::try_from(remaining.min(CHUNK_BYTES as u64)).expect("at most a chunk");
                let bytes = incoming.some(client, max)?;
                remaining -= bytes.len() as u64;
                if sink(&bytes, client)? == Sent::Cut {
                    return Ok(Sent::Cut);
                }
            }
        }
        Body::Chunked => loop {
            let line = incoming.line(client)?;
            if sink(&line, client)? == Sent::Cut {
                return Ok(Sent::Cut);
            }
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or_default().to_owned();
            let size = u64::from_str_radix(&size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let trailer = incoming.line(client)?;
                    if sink(&trailer, client)? == Sent::Cut {
                        return Ok(Sent::Cut);
                    }
                    if trailer == b"\r\n" {
                        return Ok(Sent::All);
                    }
                }
            }
            let sent = relay_body(incoming, Body::Length(size + 2), client, sink)?;
            if sent == Sent::Cut {
                return Ok(Sent::Cut);
            }
        },
    }
    Ok(Sent::All)
}

/// Resets the client's connection: a zero linger makes the last close of
/// its socket send a TCP RST instead of a FIN; the server's side is closed,
/// which ends the other thread without a FIN towards the client.
fn reset(client: &TcpStream, server: &TcpStream, resetting: &AtomicBool) {
    resetting.store(true, Ordering::SeqCst);
    if let Ok(handle) = client.try_clone() {
        // Closing this handle alone does not close the socket: the caller's
        // handle is the last one.
        let socket = tokio::net::TcpSocket::from_std_stream(handle);
        if let Err(e) = socket.set_zero_linger() {
            tracing::debug!("fault proxy: zero linger: {e}; the connection is closed instead of reset");
        }
    }
    let _ = server.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A TCP echo server on 127.0.0.1 counting the bytes it received.
    struct Echo {
        address: SocketAddr,
        received: Arc<AtomicU64>,
    }

    fn echo_server() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let mut buffer = [0_u8; 4096];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        counter.fetch_add(read as u64, Ordering::SeqCst);
                        if stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Echo { address, received }
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.local).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    fn round_trip(stream: &mut TcpStream, message: &[u8]) {
        stream.write_all(message).unwrap();
        let mut echoed = vec![0_u8; message.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message);
    }

    /// Reads until the proxy closes the connection; panics on a timeout.
    fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return all,
                Ok(read) => all.extend_from_slice(&buffer[..read]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("the connection was not closed: {e}")
                }
                Err(_) => return all, // reset: closed as well
            }
        }
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn bytes_pass_both_ways_and_are_counted() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&format!("http://{}/", echo.address));
        assert!(proxy.endpoint().starts_with("http://127.0.0.1:"), "{}", proxy.endpoint());

        let mut first = connect(&proxy);
        round_trip(&mut first, b"hello");
        let mut second = connect(&proxy);
        let large: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
        round_trip(&mut second, &large);
        round_trip(&mut first, b"again");

        assert_eq!(proxy.bytes_forwarded_upstream(), 5 + 300_000 + 5);
        assert_eq!(echo.received.load(Ordering::SeqCst), 5 + 300_000 + 5);
        assert_eq!(proxy.connections_accepted(), 2);
        assert_eq!(proxy.faults_fired(), 0);
        assert!(!proxy.is_armed());
    }

    #[test]
    fn a_fault_cuts_the_connection_carrying_the_threshold_byte_then_disarms() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&echo.address.to_string());
        let mut victim = connect(&proxy);
        let mut bystander = connect(&proxy);
        round_trip(&mut victim, b"before arming");
        let before = proxy.bytes_forwarded_upstream();

        // Counting starts at arming and spans connections: 4 + 4 bytes pass,
        // and the fault fires 2 bytes into the victim's next write.
        proxy.break_after_upstream_bytes(10);
        assert!(proxy.is_armed());
        round_trip(&mut victim, b"1234");
        round_trip(&mut bystander, b"5678");
        assert_eq!(proxy.faults_fired(), 0);
        victim.write_all(b"9abcdefgh").unwrap();
        let echoed_after_cut = read_until_closed(&mut victim);
        assert!(b"9a".starts_with(&echoed_after_cut), "{echoed_after_cut:?}");

        assert_eq!(proxy.faults_fired(), 1);
        assert!(!proxy.is_armed());
        assert_eq!(proxy.bytes_forwarded_upstream() - before, 10);
        let expected_at_server = before + 10;
        wait_for("the server to receive exactly the bytes before the cut", || {
            echo.received.load(Ordering::SeqCst) == expected_at_server
        });

        // Disarmed: the other connection and new ones carry any amount.
        let large = vec![7_u8; 100_000];
        round_trip(&mut bystander, &large);
        let mut later = connect(&proxy);
        round_trip(&mut later, &large);
        assert_eq!(proxy.faults_fired(), 1);
        assert_eq!(echo.received.load(Ordering::SeqCst), expected_at_server + 200_000);
    }

    #[test]
    fn a_zero_byte_fault_cuts_the_next_sender_before_forwarding() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&echo.address.to_string());
        proxy.break_after_upstream_bytes(0);
        let mut victim = connect(&proxy);
        victim.write_all(b"never arrives").unwrap();
        assert_eq!(read_until_closed(&mut victim), b"");
        assert_eq!(proxy.faults_fired(), 1);
        assert_eq!(proxy.bytes_forwarded_upstream(), 0);

        let mut later = connect(&proxy);
        round_trip(&mut later, b"fine");
    }

    #[test]
    fn drop_stops_accepting_and_closes_open_connections() {
        let echo = echo_server();
        let proxy = FaultProxy::start(&echo.address.to_string());
        let address = proxy.local;
        let mut open = connect(&proxy);
        round_trip(&mut open, b"ping");
        drop(proxy);

        assert_eq!(read_until_closed(&mut open), b"");
        assert!(TcpStream::connect(address).is_err(), "still accepting on {address}");
    }

    /// An HTTP/1.1 server on 127.0.0.1 that answers every request `200 ok`
    /// on a kept-alive connection and counts the requests it received.
    fn http_server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let mut incoming = ClientBytes { buffer: Vec::new(), start: 0 };
                    while let Ok(Some(head)) = incoming.head(&mut stream) {
                        let head = RequestHead::parse(&head).unwrap();
                        let Body::Length(length) = head.body() else { panic!("chunked") };
                        relay_body(&mut incoming, Body::Length(length), &mut stream, &mut |_, _| Ok(Sent::All))
                            .unwrap();
                        counter.fetch_add(1, Ordering::SeqCst);
                        if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (address, received)
    }

    const GET_OBJECT: &str = "GET /staging/status/run/acme.json?x-id=GetObject HTTP/1.1\r\nhost: h\r\n\
        authorization: AWS4-HMAC-SHA256 Credential=testing/20261119/us-east-1/s3/aws4_request, SignedHeaders=host, \
        Signature=00\r\n\r\n";

    /// Sends `request` and reads one answer: its status line, or the error.
    fn exchange(stream: &mut TcpStream, request: &str) -> Result<String, io::ErrorKind> {
        stream.write_all(request.as_bytes()).map_err(|e| e.kind())?;
        let mut answer = Vec::new();
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    answer.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&answer);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                Err(e) => return Err(e.kind()),
            }
        }
        if answer.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof);
        }
        let text = String::from_utf8_lossy(&answer).into_owned();
        Ok(text.lines().next().unwrap_or_default().to_owned())
    }

    fn kind_of(head: &str, form: Option<&str>) -> String {
        RequestHead::parse(head.as_bytes()).unwrap().call_kind(form.map(str::as_bytes)).to_string()
    }

    #[test]
    fn requests_are_named_by_service_and_operation() {
        let s3 = |line: &str, extra: &str| {
            kind_of(
                &format!(
                    "{line} HTTP/1.1\r\nauthorization: AWS4-HMAC-SHA256 \
                     Credential=AKID/20261119/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n{extra}\r\n"
                ),
                None,
            )
        };
        assert_eq!(s3("GET /b/k/part-001.json?x-id=GetObject", ""), "s3:GetObject");
        assert_eq!(s3("PUT /b/k.json?x-id=PutObject", ""), "s3:PutObject");
        assert_eq!(s3("POST /b/k.json?uploads&x-id=CreateMultipartUpload", ""), "s3:CreateMultipartUpload");
        assert_eq!(s3("PUT /b/k.json?x-id=UploadPart&partNumber=2&uploadId=u1", ""), "s3:UploadPart");
        assert_eq!(s3("POST /b/k.json?uploadId=u1", ""), "s3:CompleteMultipartUpload");
        assert_eq!(s3("DELETE /b/k.json?x-id=AbortMultipartUpload&uploadId=u1", ""), "s3:AbortMultipartUpload");
        assert_eq!(s3("GET /b?uploads&prefix=x%2F", ""), "s3:ListMultipartUploads");
        assert_eq!(s3("GET /b?list-type=2&prefix=jobs%2F", ""), "s3:ListObjectsV2");
        assert_eq!(s3("PUT /b", ""), "s3:CreateBucket");
        assert_eq!(s3("PUT /b/k?x-id=CopyObject", "x-amz-copy-source: a/b\r\n"), "s3:CopyObject");
        assert_eq!(s3("HEAD /b/k", ""), "s3:HeadObject");
        let signed = |service: &str| {
            format!(
                "POST / HTTP/1.1\r\nauthorization: AWS4-HMAC-SHA256 Credential=AKID/20261119/us-east-1/{service}/\
                 aws4_request, SignedHeaders=host, Signature=0\r\n"
            )
        };
        let json = format!("{}x-amz-target: secretsmanager.GetSecretValue\r\n\r\n", signed("secretsmanager"));
        assert_eq!(kind_of(&json, None), "secretsmanager:GetSecretValue");
        let form = format!("{}content-type: application/x-www-form-urlencoded\r\n\r\n", signed("sts"));
        assert_eq!(kind_of(&form, Some("Action=AssumeRole&Version=2011-06-15")), "sts:AssumeRole");
        let ses = format!("{}\r\n", signed("ses"));
        assert_eq!(
            kind_of(&ses, Some("Version=2010-12-01&Action=SendRawEmail&RawMessage.Data=Rm9v")),
            "ses:SendRawEmail"
        );
    }

    #[test]
    fn the_nth_request_of_a_kind_gets_its_fault_and_the_others_pass() {
        let (server, received) = http_server();
        let proxy = FaultProxy::start_http(&server.to_string());
        let kind = CallKind::new("s3:GetObject");
        proxy.fail_requests(kind.clone(), 2, 2, Fault::InternalError);
        let mut first = connect(&proxy);
        assert_eq!(exchange(&mut first, GET_OBJECT).unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(exchange(&mut first, GET_OBJECT).unwrap(), "HTTP/1.1 500 Internal Server Error");
        let mut second = connect(&proxy);
        assert_eq!(exchange(&mut second, GET_OBJECT).unwrap(), "HTTP/1.1 500 Internal Server Error");
        let mut third = connect(&proxy);
        assert_eq!(exchange(&mut third, GET_OBJECT).unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(exchange(&mut third, GET_OBJECT).unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(received.load(Ordering::SeqCst), 3, "failed requests never reach the server");
        assert_eq!(proxy.requests_of(&kind), 5);
        assert_eq!(proxy.request_faults_fired(), 2);
        let faults: Vec<Option<Fault>> = proxy.requests().iter().map(|r| r.fault).collect();
        assert_eq!(faults, [None, Some(Fault::InternalError), Some(Fault::InternalError), None, None]);
        assert_eq!(proxy.requests()[0].path, "/staging/status/run/acme.json");
    }

    #[test]
    fn throttling_answers_503_slow_down_for_s3_and_a_reset_resets() {
        let (server, received) = http_server();
        let proxy = FaultProxy::start_http(&server.to_string());
        let kind = CallKind::new("s3:GetObject");
        proxy.fail_requests(kind.clone(), 1, 1, Fault::Throttle);
        proxy.fail_requests(kind.clone(), 2, 1, Fault::Reset);
        let mut first = connect(&proxy);
        assert_eq!(exchange(&mut first, GET_OBJECT).unwrap(), "HTTP/1.1 503 Slow Down");
        let mut second = connect(&proxy);
        assert_eq!(exchange(&mut second, GET_OBJECT), Err(io::ErrorKind::ConnectionReset));
        let mut third = connect(&proxy);
        assert_eq!(exchange(&mut third, GET_OBJECT).unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(received.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn bodies_pass_whole_and_a_byte_cut_still_fires_in_http_mode() {
        let (server, received) = http_server();
        let proxy = FaultProxy::start_http(&server.to_string());
        let body = "x".repeat(200_000);
        let put = format!(
            "PUT /b/k?x-id=PutObject HTTP/1.1\r\ncontent-length: {}\r\nauthorization: AWS4-HMAC-SHA256 \
             Credential=A/2026/us-east-1/s3/aws4_request, Signature=0\r\n\r\n{body}",
            body.len()
        );
        let mut client = connect(&proxy);
        assert_eq!(exchange(&mut client, &put).unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(exchange(&mut client, &put).unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(proxy.requests_of(&CallKind::new("s3:PutObject")), 2);
        proxy.break_after_upstream_bytes(1_000);
        assert!(exchange(&mut client, &put).is_err());
        assert_eq!(proxy.faults_fired(), 1);
        assert_eq!(received.load(Ordering::SeqCst), 2);
    }

    #[test]
    #[should_panic(expected = "not a loopback address")]
    fn refuses_a_non_loopback_upstream() {
        FaultProxy::start("http://192.0.2.1:80");
    }
}
