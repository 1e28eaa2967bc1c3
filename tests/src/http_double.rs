//! What the crate's HTTP doubles of Google APIs ([`crate::gcs_guard`],
//! [`crate::sheets_double`], [`crate::google_identity_double`]) have in common: a server on `127.0.0.1:<free
//! port>` with a thread and tokio runtime of its own (so a double starts
//! synchronously and works from any test runtime), the log of the requests it
//! answered, the queue of faults a test armed, the bearer-token check of
//! Google's front ends, and the query-string and JSON helpers their handlers
//! use. What a double models — its routes, permissions, limits and error
//! bodies — stays in the double. Nothing here listens anywhere but 127.0.0.1,
//! and nothing keeps or logs a token.

use std::collections::VecDeque;
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::google_keys::{verify_bearer, AccountRegistry, AuthFailure};

/// What Google's front ends send with a 401, and the doubles with it.
pub(crate) const GOOGLE_BEARER_CHALLENGE: &str = "Bearer realm=\"https://accounts.google.com/\"";

/// How many threads serve a double's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerThreads {
    /// One: for a double that answers every request from memory.
    One,
    /// A pool, for a double that waits on an upstream while serving.
    Pool(usize),
}

/// A listener on `127.0.0.1:<free port>`, bound but not yet serving, so the
/// double can build its state knowing its own endpoint.
pub(crate) struct LoopbackListener {
    double: &'static str,
    listener: TcpListener,
    endpoint: String,
}

impl LoopbackListener {
    /// Binds `127.0.0.1:0`. `double` names the double in panic messages.
    ///
    /// # Panics
    /// When the port cannot be bound.
    pub(crate) fn bind(double: &'static str) -> LoopbackListener {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{double} could not bind 127.0.0.1:0: {e}"));
        let local = listener.local_addr().unwrap_or_else(|e| panic!("{double} listener has no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{double} could not make its listener non-blocking: {e}"));
        LoopbackListener { double, listener, endpoint: format!("http://{local}") }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Serves HTTP/1 connections with `handler` from a thread named
    /// `<thread_name>-<port>` running a runtime of its own, until the returned
    /// server is dropped. A handler's `Err` closes that connection without an
    /// answer (how a double cuts a connection).
    ///
    /// # Panics
    /// When the thread or its runtime cannot start.
    pub(crate) fn serve<H, F, B, E>(self, thread_name: &str, threads: ServerThreads, handler: H) -> DoubleServer
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let LoopbackListener { double, listener, endpoint } = self;
        let port = endpoint.rsplit(':').next().unwrap_or_default().to_owned();
        let serve_connection = move |stream: tokio::net::TcpStream| {
            let handler = handler.clone();
            async move {
                // Errors here are connections the client or a fault injection
                // closed; the client sees them, not the double.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handler))
                    .await;
            }
        };
        let (shutdown, shutdown_signal) = oneshot::channel();
        let (handle_sender, handle_receiver) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{thread_name}-{port}"))
            .spawn(move || {
                let built = match threads {
                    ServerThreads::One => tokio::runtime::Builder::new_current_thread().enable_all().build(),
                    ServerThreads::Pool(workers) => {
                        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
                    }
                };
                let runtime = built.unwrap_or_else(|e| panic!("{double} could not start a tokio runtime: {e}"));
                // The receiver only goes away if `serve` panicked already.
                let _ = handle_sender.send(runtime.handle().clone());
                runtime.block_on(accept_loop(double, listener, serve_connection, shutdown_signal));
                // Dropping the runtime here, off any async context, cancels
                // the connection tasks and closes their sockets.
            })
            .unwrap_or_else(|e| panic!("{double} could not spawn its server thread: {e}"));
        let runtime = handle_receiver
            .recv()
            .unwrap_or_else(|_| panic!("{double} server thread died before starting its runtime"));
        DoubleServer { double, endpoint, runtime, shutdown: Some(shutdown), thread: Some(thread) }
    }
}

/// A double's running server; dropping it stops the server and closes its
/// connections.
pub(crate) struct DoubleServer {
    double: &'static str,
    endpoint: String,
    runtime: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DoubleServer {
    /// `http://127.0.0.1:PORT`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs `work` on the server's runtime (where clients the handler uses
    /// live) and waits for it from whatever runtime the caller is on; a panic
    /// in `work` is the caller's.
    pub(crate) async fn on_runtime<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        match self.runtime.spawn(work).await {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("{} runtime stopped while working: {e}", self.double),
        }
    }
}

impl Drop for DoubleServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // Already gone only if the server thread ended on its own.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread was reported there already.
            let _ = thread.join();
        }
    }
}

/// Hands each accepted connection to `serve_connection` on a task of its own,
/// until `shutdown` fires.
async fn accept_loop<C, F>(
    double: &'static str,
    listener: TcpListener,
    serve_connection: C,
    mut shutdown: oneshot::Receiver<()>,
) where
    C: Fn(tokio::net::TcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)
        .unwrap_or_else(|e| panic!("{double} could not register its listener with tokio: {e}"));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                // A failed accept (e.g. the client gave up) only loses that
                // connection.
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(serve_connection(stream));
            }
        }
    }
}

/// The requests a double answered, for assertions on what a client did.
pub(crate) struct RequestLog<T> {
    next_sequence: AtomicU64,
    entries: Mutex<Vec<T>>,
}

impl<T> Default for RequestLog<T> {
    fn default() -> Self {
        RequestLog { next_sequence: AtomicU64::new(0), entries: Mutex::default() }
    }
}

impl<T: Clone> RequestLog<T> {
    /// The arrival number of a request that just came in, from 0. Taken on
    /// arrival, while entries are recorded when answered: concurrent requests
    /// may be recorded out of order.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.next_sequence.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record(&self, entry: T) {
        lock(&self.entries).push(entry);
    }

    /// Every entry, sorted by the arrival number `sequence` reads from it.
    pub(crate) fn in_arrival_order(&self, sequence: impl Fn(&T) -> u64) -> Vec<T> {
        let mut entries = lock(&self.entries).clone();
        entries.sort_by_key(sequence);
        entries
    }
}

/// Faults a test armed, fired in the order they were armed.
pub(crate) struct FaultQueue<F>(Mutex<VecDeque<F>>);

impl<F> Default for FaultQueue<F> {
    fn default() -> Self {
        FaultQueue(Mutex::default())
    }
}

impl<F: Clone> FaultQueue<F> {
    /// Arms `fault` for the next `n` requests it applies to.
    pub(crate) fn arm(&self, n: usize, fault: F) {
        lock(&self.0).extend(std::iter::repeat_n(fault, n));
    }

    /// The first armed fault, disarmed.
    pub(crate) fn take_next(&self) -> Option<F> {
        lock(&self.0).pop_front()
    }

    /// The first armed fault for which `applies` holds, disarmed.
    pub(crate) fn take_first(&self, applies: impl Fn(&F) -> bool) -> Option<F> {
        let mut faults = lock(&self.0);
        let index = faults.iter().position(applies)?;
        faults.remove(index)
    }
}

/// The request's `Authorization` header, when it is text.
pub(crate) fn authorization_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// Checks the bearer token in `authorization` as a Google front end does
/// ([`verify_bearer`]) and returns the account it authenticates. Sets
/// `logged_account` to that account, or to the one a refused token claims
/// when it names one, for the request log.
pub(crate) fn authenticate(
    registry: &AccountRegistry,
    authorization: Option<&str>,
    accepted_scopes: &[&str],
    logged_account: &mut Option<String>,
) -> Result<String, AuthFailure> {
    let outcome = verify_bearer(registry, authorization, accepted_scopes);
    *logged_account = match &outcome {
        Ok(email) => Some(email.clone()),
        Err(failure) => claimed_account(failure),
    };
    outcome
}

/// The account a refused token claimed, if it got as far as naming one.
fn claimed_account(failure: &AuthFailure) -> Option<String> {
    match failure {
        AuthFailure::UnknownAccount(email)
        | AuthFailure::Revoked(email)
        | AuthFailure::KeyIdMismatch(email)
        | AuthFailure::BadSignature(email)
        | AuthFailure::Expired(email)
        | AuthFailure::IssuedInFuture(email)
        | AuthFailure::LifetimeTooLong(email)
        | AuthFailure::WrongScope { client_email: email, .. } => Some(email.clone()),
        AuthFailure::MissingCredentials
        | AuthFailure::Malformed(_)
        | AuthFailure::UnknownAccessToken
        | AuthFailure::UnsupportedAlgorithm(_) => None,
    }
}

/// `response` with a `WWW-Authenticate: <challenge>` header.
pub(crate) fn with_bearer_challenge<B>(mut response: Response<B>, challenge: &'static str) -> Response<B> {
    response.headers_mut().insert(HeaderName::from_static("www-authenticate"), HeaderValue::from_static(challenge));
    response
}

/// `body` as Google's APIs send JSON.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
    response
}

/// The query string's parameters, decoded (`+` is a space there).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or_default()
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key, true), percent_decode(value, true))
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes (and, in query strings, `+` as a space); a `%` not
/// followed by two hex digits stays as it is.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        decoded.push(byte);
                        i += 3;
                        continue;
                    }
                    None => decoded.push(b'%'),
                }
            }
            b'+' if plus_is_space => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Locks `mutex`, carrying on after a panic elsewhere: what the doubles guard
/// with it stays consistent whatever a panicking test was doing.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::io::{Read, Write};

    use serde_json::json;

    use super::*;

    #[test]
    fn a_server_answers_on_its_endpoint_and_stops_listening_when_dropped() {
        let listener = LoopbackListener::bind("TestDouble");
        let endpoint = listener.endpoint().to_owned();
        let server = listener.serve("test-double", ServerThreads::One, |request: Request<Incoming>| async move {
            let body = json!({"path": request.uri().path()});
            Ok::<_, Infallible>(json_response(StatusCode::IM_A_TEAPOT, &body))
        });
        assert_eq!(server.endpoint(), endpoint);
        let address = endpoint.strip_prefix("http://").expect("an http endpoint");

        let mut stream = std::net::TcpStream::connect(address).expect("the server accepts");
        stream.write_all(b"GET /x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
        assert!(answer.contains("application/json; charset=UTF-8"), "{answer}");
        assert!(answer.ends_with(r#"{"path":"/x"}"#), "{answer}");

        drop(server);
        assert!(std::net::TcpStream::connect(address).is_err(), "still listening after drop");
    }

    #[test]
    fn faults_fire_in_arming_order_and_those_that_do_not_apply_stay_armed() {
        let faults = FaultQueue::default();
        faults.arm(2, "any");
        faults.arm(1, "chunk");
        faults.arm(0, "never");
        assert_eq!(faults.take_first(|f| *f == "chunk"), Some("chunk"));
        assert_eq!(faults.take_first(|f| *f == "chunk"), None);
        assert_eq!(faults.take_next(), Some("any"));
        assert_eq!(faults.take_next(), Some("any"));
        assert_eq!(faults.take_next(), None);
    }

    #[test]
    fn the_log_reads_back_in_arrival_order_whatever_the_order_answers_came_in() {
        let log = RequestLog::default();
        let (first, second) = (log.next_sequence(), log.next_sequence());
        log.record((second, "answered first"));
        log.record((first, "answered second"));
        assert_eq!(
            log.in_arrival_order(|(sequence, _)| *sequence),
            vec![(0, "answered second"), (1, "answered first")]
        );
    }

    #[test]
    fn queries_decode_escapes_and_plus_but_paths_keep_plus() {
        let query = Query::parse(Some("name=dir%2Fa+b%2Bc&empty=&flag&name=second"));
        assert_eq!(query.get("name"), Some("dir/a b+c"));
        assert_eq!(query.get("empty"), Some(""));
        assert_eq!(query.get("flag"), Some(""));
        assert_eq!(query.get("missing"), None);
        assert_eq!(percent_decode("a+b%20c", false), "a+b c");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("bad%zz%4", false), "bad%zz%4");
    }

    #[test]
    fn a_refused_token_still_names_its_account_in_the_log_when_it_claims_one() {
        let registry = AccountRegistry::default();
        let mut logged = Some("left over".to_owned());
        assert_eq!(authenticate(&registry, None, &["scope"], &mut logged), Err(AuthFailure::MissingCredentials));
        assert_eq!(logged, None);
        assert_eq!(claimed_account(&AuthFailure::Revoked("a@b".to_owned())), Some("a@b".to_owned()));
        assert_eq!(claimed_account(&AuthFailure::Malformed("x".to_owned())), None);
    }
}
