//! An HTTP proxy in front of fake-gcs-server that adds what fake-gcs-server
//! leaves out and real Cloud Storage enforces for a customer's service account
//! holding only "Storage Object Creator" (`roles/storage.objectCreator`) on a
//! bucket: a signed bearer JWT on every request ([`verify_bearer`]), 404 for a
//! missing bucket, 403 naming the missing permission for everything but
//! creating objects (reading, listing, deleting, overwriting, bucket
//! metadata), 412 for `ifGenerationMatch=0` on an existing name (checked again
//! when a resumable upload is finalized, so two racing sessions end with one
//! object and one 412), and answers to resumable-upload status queries
//! (fake-gcs-server would finalize the session on one). Error bodies have
//! the shape of Google's JSON API errors. It also keeps a log of requests and
//! of finalized objects, and injects faults (an error status, a cut
//! connection) for retry tests.
//!
//! It also papers over two fake-gcs-server v1.54 gaps that would break the
//! google-cloud-storage crate even with every check passing: the crate sends
//! `Host: 127.0.0.1` without the port and fake-gcs-server builds resumable
//! session URLs from `Host` (so the guard forwards with the upstream's own
//! `Host` and rewrites session URLs to itself), and fake-gcs-server stores
//! the trailing "checksums" part of the crate's single-request uploads as
//! object data (so the guard folds it into the metadata part).
//!
//! Point a `google_cloud_storage::client::Storage` at [`GcsGuard::endpoint`];
//! set buckets up with [`GcsGuard::create_bucket`] and check results with
//! [`GcsGuard::read_object`] / [`GcsGuard::list_objects`], which talk to
//! fake-gcs-server directly as an administrator.
//!
//! The guard runs on a thread and tokio runtime of its own, so it works from
//! any test runtime (including `#[tokio::test]`'s current-thread one) and
//! [`GcsGuard::start`] is synchronous. It listens on 127.0.0.1 only, forwards
//! to a loopback upstream only, and must never be pointed at real Google
//! endpoints or used outside tests: it is a model of the permission checks,
//! not a security boundary, and it logs object names (never tokens or data).
//!
//! ```no_run
//! # async fn example(fake_gcs_url: &str) {
//! use integration_tests::gcs_guard::GcsGuard;
//! use integration_tests::google_keys::TestServiceAccount;
//! let guard = GcsGuard::start(fake_gcs_url);
//! let account = TestServiceAccount::generate("uploader@customer.iam.gserviceaccount.com");
//! guard.register(&account);
//! guard.create_bucket("customer-bucket").await;
//! guard.grant_object_creator("customer-bucket", &account.client_email);
//! // ... upload through a Storage client built with .with_endpoint(guard.endpoint()) ...
//! assert_eq!(guard.finalized_objects().last().map(String::as_str), Some("run/_manifest.json"));
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::google_keys::{
    AccountRegistry, AuthFailure, TestServiceAccount, SCOPE_CLOUD_PLATFORM, SCOPE_DEVSTORAGE_FULL_CONTROL,
    SCOPE_DEVSTORAGE_READ_WRITE,
};
use crate::http_double::{
    authenticate, authorization_header, lock, percent_decode, with_bearer_challenge, DoubleServer, FaultQueue,
    LoopbackListener, Query, RequestLog, ServerThreads, GOOGLE_BEARER_CHALLENGE,
};

/// What a token must carry to be used on Cloud Storage: one of these scopes,
/// or, for a token made for an audience instead, the storage audience.
const ACCEPTED_SCOPES: &[&str] = &[
    SCOPE_DEVSTORAGE_READ_WRITE,
    SCOPE_DEVSTORAGE_FULL_CONTROL,
    SCOPE_CLOUD_PLATFORM,
    "https://storage.googleapis.com/",
];

/// The project fake-gcs-server files buckets under.
const ADMIN_PROJECT: &str = "test";

/// Headers that describe one hop, not the message, and so are not forwarded.
/// `host` among them: hyper sets the upstream's, port included, which
/// fake-gcs-server needs to build session URLs the guard can rewrite.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];

type GuardBody = BoxBody<Bytes, hyper::Error>;

/// One request the guard answered, for assertions on what a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Arrival order, from 0.
    pub sequence: u64,
    pub method: String,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    pub bucket: Option<String>,
    /// The decoded object name, when the request is about one.
    pub object_name: Option<String>,
    /// `resumable`, `multipart` or `media` for uploads (session chunks and
    /// status queries are `resumable`).
    pub upload_type: Option<String>,
    /// `Content-Range` of a resumable-upload chunk or status query.
    pub content_range: Option<String>,
    /// The account whose token was accepted (for session requests: the one
    /// that started the session).
    pub client_email: Option<String>,
    /// Status returned; 0 when the guard cut the connection instead.
    pub status: u16,
    /// Whether this request made the object exist (last chunk of a resumable
    /// upload, or a successful single-request upload).
    pub finalized_object: bool,
}

/// A Cloud Storage front end for tests in front of fake-gcs-server; see the
/// module documentation. Dropping it stops the server and closes its
/// connections.
pub struct GcsGuard {
    server: DoubleServer,
    state: Arc<GuardState>,
}

impl GcsGuard {
    /// Starts a guard on `127.0.0.1:<ephemeral port>` forwarding to the
    /// fake-gcs-server at `upstream` (e.g. `http://127.0.0.1:4443`, which must
    /// be a loopback `http` URL: the guard never sends traffic elsewhere).
    /// Synchronous: the guard serves from a thread of its own.
    ///
    /// # Panics
    /// When `upstream` is not a loopback http URL, or the guard cannot bind
    /// its port or start its runtime.
    pub fn start(upstream: &str) -> GcsGuard {
        let upstream =
            loopback_base_url(upstream).unwrap_or_else(|why| panic!("GcsGuard refuses upstream {upstream:?}: {why}"));
        let listener = LoopbackListener::bind("GcsGuard");
        let state = Arc::new(GuardState {
            upstream,
            endpoint: listener.endpoint().to_owned(),
            registry: AccountRegistry::default(),
            grants: Mutex::default(),
            sessions: Mutex::default(),
            object_locks: Mutex::default(),
            faults: FaultQueue::default(),
            log: RequestLog::default(),
            finalized: Mutex::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let server_state = Arc::clone(&state);
        // A pool: requests wait on fake-gcs-server while holding object locks.
        let server = listener
            .serve("gcs-guard", ServerThreads::Pool(2), move |request| serve(Arc::clone(&server_state), request));
        GcsGuard { server, state }
    }

    /// `http://127.0.0.1:PORT`, for `ClientBuilder::with_endpoint`.
    pub fn endpoint(&self) -> String {
        self.server.endpoint().to_owned()
    }

    /// The accounts whose tokens the guard accepts (shared: registering or
    /// revoking through a clone takes effect at once).
    pub fn registry(&self) -> AccountRegistry {
        self.state.registry.clone()
    }

    /// Makes `account` known (not yet allowed to do anything on any bucket).
    pub fn register(&self, account: &TestServiceAccount) {
        self.state.registry.register(account);
    }

    /// Grants `client_email` roles/storage.objectCreator on `bucket`.
    pub fn grant_object_creator(&self, bucket: &str, client_email: &str) {
        lock(&self.state.grants).insert((bucket.to_owned(), client_email.to_owned()));
    }

    /// Takes roles/storage.objectCreator on `bucket` away from `client_email`.
    /// Resumable sessions it already started carry on, as at Google.
    pub fn revoke_object_creator(&self, bucket: &str, client_email: &str) {
        lock(&self.state.grants).remove(&(bucket.to_owned(), client_email.to_owned()));
    }

    /// Creates `bucket` in fake-gcs-server directly, as its administrator.
    ///
    /// # Panics
    /// When fake-gcs-server does not create it (e.g. it exists already).
    pub async fn create_bucket(&self, bucket: &str) {
        let state = Arc::clone(&self.state);
        let bucket = bucket.to_owned();
        self.server
            .on_runtime(async move {
                let path = format!("/storage/v1/b?project={ADMIN_PROJECT}");
                let body = Bytes::from(json!({ "name": bucket }).to_string());
                match state.admin_request(Method::POST, &path, body).await {
                    Ok((status, _)) if status.is_success() => {}
                    Ok((status, body)) => panic!(
                        "fake-gcs-server refused to create bucket {bucket}: {status} {}",
                        String::from_utf8_lossy(&body)
                    ),
                    Err(why) => panic!("could not create bucket {bucket}: {why}"),
                }
            })
            .await
    }

    /// The object's bytes read from fake-gcs-server directly, or `None` when
    /// it does not exist. Bypasses every check.
    ///
    /// # Panics
    /// When fake-gcs-server cannot be reached or answers neither 200 nor 404.
    pub async fn read_object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let state = Arc::clone(&self.state);
        let path = format!("/storage/v1/b/{}/o/{}?alt=media", encode_component(bucket), encode_component(name));
        let what = format!("gs://{bucket}/{name}");
        self.server
            .on_runtime(async move {
                match state.admin_request(Method::GET, &path, Bytes::new()).await {
                    Ok((StatusCode::OK, body)) => Some(body.to_vec()),
                    Ok((StatusCode::NOT_FOUND, _)) => None,
                    Ok((status, body)) => {
                        panic!("reading {what} from fake-gcs-server: {status} {}", String::from_utf8_lossy(&body))
                    }
                    Err(why) => panic!("reading {what} from fake-gcs-server: {why}"),
                }
            })
            .await
    }

    /// Names of the objects in `bucket` starting with `prefix`, sorted, read
    /// from fake-gcs-server directly. Bypasses every check.
    ///
    /// # Panics
    /// When fake-gcs-server cannot be reached or refuses the listing (e.g.
    /// the bucket does not exist).
    pub async fn list_objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let state = Arc::clone(&self.state);
        let bucket = bucket.to_owned();
        let prefix = prefix.to_owned();
        self.server
            .on_runtime(async move {
                let mut names = Vec::new();
                let mut page_token: Option<String> = None;
                loop {
                    let mut path =
                        format!("/storage/v1/b/{}/o?prefix={}", encode_component(&bucket), encode_component(&prefix));
                    if let Some(token) = &page_token {
                        path.push_str(&format!("&pageToken={}", encode_component(token)));
                    }
                    let page: Value = match state.admin_request(Method::GET, &path, Bytes::new()).await {
                        Ok((StatusCode::OK, body)) => serde_json::from_slice(&body)
                            .unwrap_or_else(|e| panic!("listing gs://{bucket}/{prefix}: unreadable JSON: {e}")),
                        Ok((status, body)) => {
                            panic!("listing gs://{bucket}/{prefix}: {status} {}", String::from_utf8_lossy(&body))
                        }
                        Err(why) => panic!("listing gs://{bucket}/{prefix}: {why}"),
                    };
                    let items = page.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    names.extend(items.iter().filter_map(|item| item.get("name")?.as_str().map(str::to_owned)));
                    page_token = page.get("nextPageToken").and_then(Value::as_str).map(str::to_owned);
                    if page_token.is_none() {
                        break;
                    }
                }
                names.sort();
                names
            })
            .await
    }

    /// Every request answered so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.in_arrival_order(|r| r.sequence)
    }

    /// Names of the objects uploads have made exist, in the order they were
    /// finalized (all buckets together).
    pub fn finalized_objects(&self) -> Vec<String> {
        lock(&self.state.finalized).clone()
    }

    /// The next `n` upload requests (upload starts, single-request uploads,
    /// resumable chunks; not status queries, which the guard answers itself)
    /// are answered `status` (e.g. 503) before any check, without reaching
    /// fake-gcs-server. Faults fire in the order they were armed.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.arm(n, FaultAction::Status(status), FaultTarget::AnyUpload);
    }

    /// The next `n` upload requests (as for [`Self::fail_next`]) have their
    /// connection closed without an answer, as a network failure would;
    /// nothing reaches fake-gcs-server.
    pub fn reset_connection_on_next(&self, n: usize) {
        self.arm(n, FaultAction::CutConnection, FaultTarget::AnyUpload);
    }

    /// As [`Self::fail_next`], for resumable-upload data requests (chunks and
    /// finalizing PUTs) only: upload starts pass.
    pub fn fail_next_chunk(&self, n: usize, status: u16) {
        self.arm(n, FaultAction::Status(status), FaultTarget::Chunk);
    }

    /// As [`Self::reset_connection_on_next`], for resumable-upload data
    /// requests only.
    pub fn reset_connection_on_next_chunk(&self, n: usize) {
        self.arm(n, FaultAction::CutConnection, FaultTarget::Chunk);
    }

    fn arm(&self, n: usize, action: FaultAction, target: FaultTarget) {
        self.state.faults.arm(n, Fault { action, target });
    }
}

impl fmt::Debug for GcsGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsGuard")
            .field("endpoint", &self.server.endpoint())
            .field("upstream", &self.state.upstream)
            .finish_non_exhaustive()
    }
}

/// (bucket, object name).
type ObjectKey = (String, String);

/// State shared by the guard handle and the connection tasks.
struct GuardState {
    /// fake-gcs-server's base URL, without a trailing slash.
    upstream: String,
    /// The guard's own base URL.
    endpoint: String,
    registry: AccountRegistry,
    /// (bucket, client_email) pairs holding roles/storage.objectCreator.
    grants: Mutex<HashSet<(String, String)>>,
    /// Resumable sessions started through the guard, by `upload_id`.
    sessions: Mutex<HashMap<String, Session>>,
    /// Held from the precondition check of a finalizing request until
    /// fake-gcs-server answered it, so two uploads of one name cannot both
    /// pass the check.
    object_locks: Mutex<HashMap<ObjectKey, Arc<tokio::sync::Mutex<()>>>>,
    faults: FaultQueue<Fault>,
    log: RequestLog<LoggedRequest>,
    finalized: Mutex<Vec<String>>,
    client: Client<HttpConnector, GuardBody>,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    action: FaultAction,
    target: FaultTarget,
}

#[derive(Debug, Clone, Copy)]
enum FaultAction {
    Status(u16),
    CutConnection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultTarget {
    AnyUpload,
    Chunk,
}

/// A resumable upload session started through the guard.
#[derive(Clone)]
struct Session {
    bucket: String,
    object_name: String,
    client_email: String,
    if_generation_match: Option<i64>,
    progress: SessionProgress,
}

#[derive(Clone)]
enum SessionProgress {
    /// Bytes fake-gcs-server has acknowledged (from its `Range` answers).
    Active { persisted: u64 },
    /// Finished, successfully or not: later requests get the same answer,
    /// as at Google.
    Ended(StoredReply),
}

/// A complete answer, kept to be replayed.
#[derive(Clone)]
struct StoredReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StoredReply {
    fn to_response(&self) -> Response<GuardBody> {
        let mut response = Response::new(full(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// The guard closes the connection instead of answering.
#[derive(Debug)]
struct ConnectionCut;

impl fmt::Display for ConnectionCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection cut by GcsGuard fault injection")
    }
}

impl std::error::Error for ConnectionCut {}

/// What a request turned out to be about, filled in while handling it.
#[derive(Default)]
struct RequestNote {
    bucket: Option<String>,
    object_name: Option<String>,
    upload_type: Option<String>,
    content_range: Option<String>,
    client_email: Option<String>,
    finalized_object: bool,
}

async fn serve(state: Arc<GuardState>, request: Request<Incoming>) -> Result<Response<GuardBody>, ConnectionCut> {
    let sequence = state.log.next_sequence();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let mut note = RequestNote::default();
    let outcome = handle(&state, request, &mut note).await;
    let status = outcome.as_ref().map_or(0, |response| response.status().as_u16());
    if note.finalized_object {
        if let Some(name) = &note.object_name {
            lock(&state.finalized).push(name.clone());
        }
    }
    state.log.record(LoggedRequest {
        sequence,
        method,
        path,
        bucket: note.bucket,
        object_name: note.object_name,
        upload_type: note.upload_type,
        content_range: note.content_range,
        client_email: note.client_email,
        status,
        finalized_object: note.finalized_object,
    });
    outcome
}

/// The request's target, as the JSON API lays it out.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `/storage/v1/b`: list or create buckets (project level).
    Buckets,
    /// `/storage/v1/b/{bucket}`
    Bucket {
        bucket: String,
    },
    /// `/storage/v1/b/{bucket}/o`: list objects (or a metadata-only insert).
    Objects {
        bucket: String,
    },
    /// `/storage/v1/b/{bucket}/o/{object}` and `/download/...` of it.
    Object {
        bucket: String,
        name: String,
    },
    /// `/storage/v1/b/{bucket}/o/{object}/{action}...`: compose, copyTo,
    /// rewriteTo, acl.
    ObjectAction {
        bucket: String,
        name: String,
        action: String,
    },
    /// `/upload/storage/v1/b/{bucket}/o`
    Upload {
        bucket: String,
    },
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Route {
        let (download, rest) = if let Some(rest) = path.strip_prefix("/download/storage/v1/b") {
            (true, rest)
        } else if let Some(rest) = path.strip_prefix("/upload/storage/v1/b/") {
            return match rest.strip_suffix("/o") {
                Some(bucket) if !bucket.contains('/') => Route::Upload { bucket: percent_decode(bucket, false) },
                _ => Route::Unknown,
            };
        } else if let Some(rest) = path.strip_prefix("/storage/v1/b") {
            (false, rest)
        } else {
            return Route::Unknown;
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return if download { Route::Unknown } else { Route::Buckets };
        }
        let Some(rest) = rest.strip_prefix('/') else { return Route::Unknown };
        let (bucket, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = percent_decode(bucket, false);
        match rest.split_once('/') {
            _ if rest.is_empty() && !download => Route::Bucket { bucket },
            None if rest == "o" && !download => Route::Objects { bucket },
            Some(("o", object)) if !object.is_empty() => {
                // Clients percent-encode `/` inside names, so a literal `/`
                // after the name starts an action (`.../o/{name}/compose`);
                // a name sent with raw slashes is taken whole unless its
                // second segment is an action.
                let (name, tail) = object.split_once('/').unwrap_or((object, ""));
                match tail.split('/').next() {
                    Some(action @ ("compose" | "copyTo" | "rewriteTo" | "acl")) if !download => {
                        Route::ObjectAction { bucket, name: percent_decode(name, false), action: action.to_owned() }
                    }
                    _ => Route::Object { bucket, name: percent_decode(object, false) },
                }
            }
            _ => Route::Unknown,
        }
    }

    fn bucket(&self) -> Option<&str> {
        match self {
            Route::Bucket { bucket }
            | Route::Objects { bucket }
            | Route::Object { bucket, .. }
            | Route::ObjectAction { bucket, .. }
            | Route::Upload { bucket } => Some(bucket),
            Route::Buckets | Route::Unknown => None,
        }
    }
}

/// The Cloud Storage resource a permission is checked on, as Google's
/// messages name it.
#[derive(Clone, Copy)]
enum Resource {
    Project,
    Bucket,
    Object,
}

impl Resource {
    fn description(self) -> &'static str {
        match self {
            Resource::Project => "the Google Cloud project",
            Resource::Bucket => "the Google Cloud Storage bucket",
            Resource::Object => "the Google Cloud Storage object",
        }
    }
}

/// The permission a request needs, for requests other than uploads.
fn required_permission(method: &Method, route: &Route) -> Option<(&'static str, Resource)> {
    let permission = match (route, method) {
        (Route::Buckets, &Method::GET) => ("storage.buckets.list", Resource::Project),
        (Route::Buckets, _) => ("storage.buckets.create", Resource::Project),
        (Route::Bucket { .. }, &Method::GET) => ("storage.buckets.get", Resource::Bucket),
        (Route::Bucket { .. }, &Method::DELETE) => ("storage.buckets.delete", Resource::Bucket),
        (Route::Bucket { .. }, _) => ("storage.buckets.update", Resource::Bucket),
        (Route::Objects { .. }, &Method::GET) => ("storage.objects.list", Resource::Bucket),
        (Route::Objects { .. }, _) => ("storage.objects.create", Resource::Object),
        (Route::Object { .. }, &Method::GET | &Method::HEAD) => ("storage.objects.get", Resource::Object),
        (Route::Object { .. }, &Method::DELETE) => ("storage.objects.delete", Resource::Object),
        (Route::Object { .. }, _) => ("storage.objects.update", Resource::Object),
        (Route::ObjectAction { action, .. }, method) if action == "acl" => {
            if method == Method::GET {
                ("storage.objects.getIamPolicy", Resource::Object)
            } else {
                ("storage.objects.setIamPolicy", Resource::Object)
            }
        }
        // Compose, copy and rewrite read their sources first, which an
        // Object Creator may not.
        (Route::ObjectAction { .. }, _) => ("storage.objects.get", Resource::Object),
        (Route::Upload { .. } | Route::Unknown, _) => return None,
    };
    Some(permission)
}

async fn handle(
    state: &GuardState,
    request: Request<Incoming>,
    note: &mut RequestNote,
) -> Result<Response<GuardBody>, ConnectionCut> {
    let route = Route::parse(request.uri().path());
    let query = Query::parse(request.uri().query());
    note.bucket = route.bucket().map(str::to_owned);

    // Google treats the session URI itself as the credential; the crate sends
    // its bearer token there as well, which is not checked.
    if let (Route::Upload { .. }, Some(upload_id)) = (&route, query.get("upload_id")) {
        let upload_id = upload_id.to_owned();
        return handle_session_request(state, request, &upload_id, note).await;
    }
    if matches!(route, Route::Upload { .. }) && request.method() == Method::POST {
        if let Some(fault) = state.take_fault(false) {
            return inject(fault, request).await;
        }
    }

    let authorization = authorization_header(request.headers());
    let client_email = match authenticate(&state.registry, authorization, ACCEPTED_SCOPES, &mut note.client_email) {
        Ok(email) => email,
        Err(failure) => {
            drain(request.into_body()).await;
            return Ok(auth_error(&failure));
        }
    };

    if let Route::Object { name, .. } | Route::ObjectAction { name, .. } = &route {
        note.object_name = Some(name.clone());
    }
    if let Some(bucket) = route.bucket() {
        match state.bucket_exists(bucket).await {
            Ok(true) => {}
            Ok(false) => {
                drain(request.into_body()).await;
                return Ok(bucket_not_found());
            }
            Err(reply) => {
                drain(request.into_body()).await;
                return Ok(reply);
            }
        }
    }

    match route {
        Route::Upload { bucket } if request.method() == Method::POST => {
            handle_upload(state, request, &bucket, &query, &client_email, note).await
        }
        Route::Unknown | Route::Upload { .. } => {
            drain(request.into_body()).await;
            Ok(error_reply(
                StatusCode::BAD_REQUEST,
                "GcsGuard does not model this request; extend it if a test needs it.",
                "invalid",
            ))
        }
        route => {
            let (permission, resource) =
                required_permission(request.method(), &route).unwrap_or(("storage.objects.get", Resource::Object));
            drain(request.into_body()).await;
            Ok(permission_denied(&client_email, permission, resource))
        }
    }
}

/// `POST /upload/storage/v1/b/{bucket}/o`: start a resumable upload, or a
/// single-request (`multipart` / `media`) one.
async fn handle_upload(
    state: &GuardState,
    request: Request<Incoming>,
    bucket: &str,
    query: &Query,
    client_email: &str,
    note: &mut RequestNote,
) -> Result<Response<GuardBody>, ConnectionCut> {
    let upload_type = query.get("uploadType").unwrap_or("media").to_owned();
    note.upload_type = Some(upload_type.clone());
    if !matches!(upload_type.as_str(), "resumable" | "multipart" | "media") {
        drain(request.into_body()).await;
        return Ok(error_reply(StatusCode::BAD_REQUEST, &format!("Invalid upload type {upload_type:?}."), "invalid"));
    }
    if !state.is_object_creator(bucket, client_email) {
        drain(request.into_body()).await;
        return Ok(permission_denied(client_email, "storage.objects.create", Resource::Object));
    }
    let if_generation_match = match query.get("ifGenerationMatch").map(str::parse::<i64>).transpose() {
        Ok(value) => value,
        Err(_) => {
            drain(request.into_body()).await;
            return Ok(error_reply(StatusCode::BAD_REQUEST, "Invalid value for ifGenerationMatch.", "invalid"));
        }
    };

    // The crate always sends `name` in the query; other clients may put it
    // only in the JSON metadata (resumable) or the first part (multipart).
    // Multipart bodies are read whole anyway (they are single-shot uploads,
    // below the client's resumable threshold) to repair them for
    // fake-gcs-server; see `without_trailing_checksums_part`.
    let (parts, body) = request.into_parts();
    let (name, body) = match (query.get("name"), upload_type.as_str()) {
        (Some(name), "resumable" | "media") => (Some(name.to_owned()), body.boxed()),
        (query_name, _) => {
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Err(ConnectionCut),
            };
            let (name, bytes) = match upload_type.as_str() {
                "resumable" => (name_in_json(&bytes), bytes),
                "multipart" => {
                    let bytes = without_trailing_checksums_part(&parts.headers, bytes);
                    (query_name.map(str::to_owned).or_else(|| name_in_multipart(&parts.headers, &bytes)), bytes)
                }
                _ => (None, bytes),
            };
            (name, full(bytes))
        }
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        drain_boxed(body).await;
        return Ok(error_reply(StatusCode::BAD_REQUEST, "Required", "required"));
    };
    note.object_name = Some(name.clone());

    if upload_type == "resumable" {
        if let Err(reply) = state.check_create(bucket, &name, if_generation_match, client_email).await {
            drain_boxed(body).await;
            return Ok(reply);
        }
        let reply = match state.forward(parts, body).await {
            Ok(reply) => reply,
            Err(reply) => return Ok(reply),
        };
        if reply.status.is_success() {
            let location = reply.headers.get(hyper::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
            // A session URL the guard could not rewrite would take the client
            // straight to fake-gcs-server, past every check.
            if !location.starts_with(&format!("{}/", state.endpoint)) {
                // 400, not 5xx: a set-up mistake, which retrying cannot fix.
                return Ok(error_reply(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "GcsGuard: the resumable session URL {location:?} does not point at the upstream {} \
                         and cannot be rewritten to the guard",
                        state.upstream
                    ),
                    "invalid",
                ));
            }
            let upload_id = Query::parse(location.split_once('?').map(|(_, q)| q)).get("upload_id").map(str::to_owned);
            let Some(upload_id) = upload_id else {
                return Ok(upstream_failure("fake-gcs-server started a resumable upload without an upload_id"));
            };
            lock(&state.sessions).insert(
                upload_id,
                Session {
                    bucket: bucket.to_owned(),
                    object_name: name,
                    client_email: client_email.to_owned(),
                    if_generation_match,
                    progress: SessionProgress::Active { persisted: 0 },
                },
            );
        }
        return Ok(reply.to_response());
    }

    // A single-request upload creates the object at once: check and forward
    // under the object's lock.
    let object_lock = state.object_lock(bucket, &name);
    let _held = object_lock.lock().await;
    if let Err(reply) = state.check_create(bucket, &name, if_generation_match, client_email).await {
        drain_boxed(body).await;
        return Ok(reply);
    }
    let reply = match state.forward(parts, body).await {
        Ok(reply) => reply,
        Err(reply) => return Ok(reply),
    };
    note.finalized_object = reply.status.is_success();
    Ok(reply.to_response())
}

/// A request to a resumable session URI: a chunk, a status query, or a
/// cancellation.
async fn handle_session_request(
    state: &GuardState,
    request: Request<Incoming>,
    upload_id: &str,
    note: &mut RequestNote,
) -> Result<Response<GuardBody>, ConnectionCut> {
    note.upload_type = Some("resumable".to_owned());
    let content_range =
        request.headers().get(hyper::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    note.content_range = content_range.clone();
    let Some(session) = lock(&state.sessions).get(upload_id).cloned() else {
        drain(request.into_body()).await;
        return Ok(error_reply(StatusCode::NOT_FOUND, "No such upload session.", "notFound"));
    };
    note.bucket = Some(session.bucket.clone());
    note.object_name = Some(session.object_name.clone());
    note.client_email = Some(session.client_email.clone());

    if request.method() == Method::DELETE {
        // Cancelling a session: Google answers 499 and forgets the data.
        drain(request.into_body()).await;
        let reply = StoredReply::from_response_parts(
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            json_body(&google_error(499, "Upload cancelled.", "clientClosedRequest")),
        );
        state.end_session(upload_id, reply.clone());
        return Ok(reply.to_response());
    }
    if request.method() != Method::PUT && request.method() != Method::POST {
        drain(request.into_body()).await;
        return Ok(error_reply(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed on an upload session.", "invalid"));
    }
    let range = match ContentRange::parse(content_range.as_deref()) {
        Ok(range) => range,
        Err(why) => {
            drain(request.into_body()).await;
            return Ok(error_reply(StatusCode::BAD_REQUEST, &format!("Invalid Content-Range: {why}."), "invalid"));
        }
    };

    // fake-gcs-server finalizes a session when asked for its status; Google
    // reports progress. The guard knows the progress, so it answers itself.
    if range == ContentRange::StatusQuery {
        drain(request.into_body()).await;
        return Ok(match &session.progress {
            SessionProgress::Active { persisted } => resume_incomplete(*persisted),
            SessionProgress::Ended(reply) => reply.to_response(),
        });
    }
    if let Some(fault) = state.take_fault(true) {
        return inject(fault, request).await;
    }
    let persisted = match &session.progress {
        SessionProgress::Active { persisted } => *persisted,
        SessionProgress::Ended(reply) => {
            drain(request.into_body()).await;
            return Ok(reply.to_response());
        }
    };
    let (first_byte, finalizes) = match range {
        // A chunk ending at the known total ends the upload.
        ContentRange::Chunk { first, last, total } => {
            (first, total.is_some_and(|total| last.is_none_or(|last| last + 1 == total)))
        }
        ContentRange::Finalize { total } => (total, true),
        ContentRange::StatusQuery => (persisted, false),
    };
    if first_byte != persisted {
        // The crate always resends from the persisted offset; anything else
        // would make fake-gcs-server append in the wrong place.
        drain(request.into_body()).await;
        return Ok(error_reply(
            StatusCode::BAD_REQUEST,
            &format!("GcsGuard: chunk starts at byte {first_byte} but {persisted} bytes are persisted."),
            "invalid",
        ));
    }

    let (parts, body) = request.into_parts();
    if !finalizes {
        let reply = match state.forward(parts, body.boxed()).await {
            Ok(reply) => reply,
            Err(reply) => return Ok(reply),
        };
        if reply.status == StatusCode::PERMANENT_REDIRECT {
            let persisted = persisted_from_range(&reply.headers).unwrap_or(persisted);
            state.set_persisted(upload_id, persisted);
        }
        return Ok(reply.to_response());
    }

    // Google re-checks the preconditions (and the overwrite permission) when
    // the object comes into being, not only when the session starts.
    let object_lock = state.object_lock(&session.bucket, &session.object_name);
    let _held = object_lock.lock().await;
    if let Err(reply) = state
        .check_create(&session.bucket, &session.object_name, session.if_generation_match, &session.client_email)
        .await
    {
        drain(body).await;
        let stored = StoredReply::capture(reply).await;
        state.end_session(upload_id, stored.clone());
        return Ok(stored.to_response());
    }
    let reply = match state.forward(parts, body.boxed()).await {
        Ok(reply) => reply,
        Err(reply) => return Ok(reply),
    };
    if reply.status.is_success() {
        note.finalized_object = true;
        state.end_session(upload_id, reply.clone());
    } else if reply.status == StatusCode::PERMANENT_REDIRECT {
        let persisted = persisted_from_range(&reply.headers).unwrap_or(persisted);
        state.set_persisted(upload_id, persisted);
    }
    Ok(reply.to_response())
}

impl GuardState {
    /// The first armed fault that applies to this request, disarmed.
    fn take_fault(&self, is_chunk: bool) -> Option<FaultAction> {
        self.faults.take_first(|f| f.target == FaultTarget::AnyUpload || is_chunk).map(|f| f.action)
    }

    fn is_object_creator(&self, bucket: &str, client_email: &str) -> bool {
        lock(&self.grants).contains(&(bucket.to_owned(), client_email.to_owned()))
    }

    fn object_lock(&self, bucket: &str, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.object_locks).entry((bucket.to_owned(), name.to_owned())).or_default())
    }

    fn set_persisted(&self, upload_id: &str, persisted: u64) {
        if let Some(session) = lock(&self.sessions).get_mut(upload_id) {
            session.progress = SessionProgress::Active { persisted };
        }
    }

    fn end_session(&self, upload_id: &str, reply: StoredReply) {
        if let Some(session) = lock(&self.sessions).get_mut(upload_id) {
            session.progress = SessionProgress::Ended(reply);
        }
    }

    /// Whether creating `bucket/name` may go ahead for an Object Creator:
    /// the preconditions hold, and no object would be overwritten (that needs
    /// `storage.objects.delete`).
    async fn check_create(
        &self,
        bucket: &str,
        name: &str,
        if_generation_match: Option<i64>,
        client_email: &str,
    ) -> Result<(), Response<GuardBody>> {
        let existing = self.object_generation(bucket, name).await?;
        match (existing, if_generation_match) {
            (Some(generation), Some(wanted)) if wanted != generation => Err(precondition_failed()),
            (None, Some(wanted)) if wanted != 0 => Err(precondition_failed()),
            (Some(_), _) => Err(permission_denied(client_email, "storage.objects.delete", Resource::Object)),
            (None, _) => Ok(()),
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Result<bool, Response<GuardBody>> {
        let path = format!("/storage/v1/b/{}", encode_component(bucket));
        match self.admin_request(Method::GET, &path, Bytes::new()).await {
            Ok((StatusCode::OK, _)) => Ok(true),
            Ok((StatusCode::NOT_FOUND, _)) => Ok(false),
            Ok((status, _)) => Err(upstream_failure(&format!("bucket lookup answered {status}"))),
            Err(why) => Err(upstream_failure(&why)),
        }
    }

    /// The generation of the live object `bucket/name`, if there is one.
    async fn object_generation(&self, bucket: &str, name: &str) -> Result<Option<i64>, Response<GuardBody>> {
        let path = format!("/storage/v1/b/{}/o/{}", encode_component(bucket), encode_component(name));
        match self.admin_request(Method::GET, &path, Bytes::new()).await {
            Ok((StatusCode::OK, body)) => {
                let metadata: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                // The JSON API writes int64 fields as strings.
                let generation = metadata.get("generation").and_then(|g| match g {
                    Value::String(text) => text.parse().ok(),
                    other => other.as_i64(),
                });
                // An unreadable generation matches no precondition.
                Ok(Some(generation.unwrap_or(-1)))
            }
            Ok((StatusCode::NOT_FOUND, _)) => Ok(None),
            Ok((status, _)) => Err(upstream_failure(&format!("object lookup answered {status}"))),
            Err(why) => Err(upstream_failure(&why)),
        }
    }

    /// A request of the guard's own to fake-gcs-server; returns status and body.
    async fn admin_request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut builder = Request::builder().method(method).uri(format!("{}{path_and_query}", self.upstream));
        if !body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(full(body)).map_err(|e| format!("bad upstream request {path_and_query}: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("fake-gcs-server at {} unreachable: {e}", self.upstream))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("fake-gcs-server answer cut short: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends the client's request on to fake-gcs-server and reads the whole
    /// answer (uploads only ever get small JSON back), with upstream URLs
    /// rewritten to the guard's so the client keeps coming through it.
    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: GuardBody,
    ) -> Result<StoredReply, Response<GuardBody>> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = format!("{}{path_and_query}", self.upstream)
            .parse()
            .map_err(|e| upstream_failure(&format!("cannot build upstream URI: {e}")))?;
        for (name, value) in &parts.headers {
            // Framing is left to hyper, which derives it from the body: a
            // body the guard repaired has another length.
            if !HOP_BY_HOP.contains(&name.as_str()) && name != hyper::header::CONTENT_LENGTH {
                request.headers_mut().append(name, value.clone());
            }
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| upstream_failure(&format!("fake-gcs-server at {} unreachable: {e}", self.upstream)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| upstream_failure(&format!("fake-gcs-server answer cut short: {e}")))?
            .to_bytes();

        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if HOP_BY_HOP.contains(&name.as_str()) || name == hyper::header::CONTENT_LENGTH {
                continue;
            }
            let value = match value.to_str() {
                Ok(text) if text.contains(&self.upstream) => {
                    HeaderValue::from_str(&text.replace(&self.upstream, &self.endpoint))
                        .unwrap_or_else(|_| value.clone())
                }
                _ => value.clone(),
            };
            headers.append(name, value);
        }
        let body = match std::str::from_utf8(&body) {
            Ok(text) if text.contains(&self.upstream) => Bytes::from(text.replace(&self.upstream, &self.endpoint)),
            _ => body,
        };
        Ok(StoredReply { status: parts.status, headers, body })
    }
}

impl StoredReply {
    fn from_response_parts(status: StatusCode, body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
        StoredReply { status, headers, body }
    }

    /// Keeps a guard-made answer (always a small in-memory body) for replay.
    async fn capture(response: Response<GuardBody>) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        StoredReply { status: parts.status, headers: parts.headers, body }
    }
}

/// The resumable-upload `Content-Range` forms the JSON API uses.
#[derive(Debug, PartialEq, Eq)]
enum ContentRange {
    /// `bytes */*`: how far has the upload got?
    StatusQuery,
    /// `bytes */N`: no more data; the object is `N` bytes.
    Finalize { total: u64 },
    /// `bytes A-B/*` or `bytes A-B/N`; `bytes A-*/…` (the rest, of unknown
    /// length: the crate's unbuffered uploads send it) has no `last`.
    Chunk { first: u64, last: Option<u64>, total: Option<u64> },
}

impl ContentRange {
    fn parse(header: Option<&str>) -> Result<ContentRange, String> {
        let header = header.ok_or("missing")?;
        let spec = header.trim().strip_prefix("bytes ").ok_or("not in bytes")?;
        let (range, total) = spec.split_once('/').ok_or("no total")?;
        let total = match total {
            "*" => None,
            n => Some(n.parse::<u64>().map_err(|_| "total is not a number")?),
        };
        match (range, total) {
            ("*", None) => Ok(ContentRange::StatusQuery),
            ("*", Some(total)) => Ok(ContentRange::Finalize { total }),
            (range, total) => {
                let (first, last) = range.split_once('-').ok_or("range has no dash")?;
                let first = first.parse::<u64>().map_err(|_| "range start is not a number")?;
                let last = match last {
                    "*" => None,
                    last => Some(last.parse::<u64>().map_err(|_| "range end is not a number")?),
                };
                if last.is_some_and(|last| last < first) {
                    return Err("range ends before it starts".to_owned());
                }
                Ok(ContentRange::Chunk { first, last, total })
            }
        }
    }
}

/// Persisted bytes from a `Range: bytes=0-N` answer (none: nothing yet).
fn persisted_from_range(headers: &HeaderMap) -> Option<u64> {
    let range = headers.get(hyper::header::RANGE)?.to_str().ok()?;
    let last: u64 = range.strip_prefix("bytes=0-")?.parse().ok()?;
    Some(last + 1)
}

fn name_in_json(body: &[u8]) -> Option<String> {
    let metadata: Value = serde_json::from_slice(body).ok()?;
    metadata.get("name")?.as_str().map(str::to_owned)
}

/// The `name` in the JSON metadata, the first part of a `multipart/related`
/// upload.
fn name_in_multipart(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let boundary = multipart_boundary(headers)?;
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let first_part = text.split(delimiter.as_str()).nth(1)?;
    let (_, content) = first_part.split_once("\r\n\r\n")?;
    name_in_json(content.trim().as_bytes())
}

/// The boundary of a `multipart/related` body.
fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(hyper::header::CONTENT_TYPE)?.to_str().ok()?;
    let boundary = content_type.split(';').find_map(|param| param.trim().strip_prefix("boundary="))?;
    Some(boundary.trim_matches('"').to_owned())
}

/// The crate's single-shot uploads (`send_unbuffered` below the resumable
/// threshold) end the multipart body with a third part holding the CRC32C
/// computed while streaming. Google reads it as checksums; fake-gcs-server
/// v1.54 appends it to the object's data. The guard moves its fields into
/// the metadata part and drops it, so the object gets the right bytes and
/// Google's integrity check is kept (as object metadata). Bodies of any other
/// shape pass unchanged.
fn without_trailing_checksums_part(headers: &HeaderMap, body: Bytes) -> Bytes {
    let Some(boundary) = multipart_boundary(headers) else { return body };
    let delimiter = format!("\r\n--{boundary}");
    // Each part begins after a delimiter; prefixing CRLF lets the first one
    // match like the rest.
    let mut text = Vec::with_capacity(body.len() + 2);
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(&body);
    let starts: Vec<usize> = find_all(&text, delimiter.as_bytes());
    // Three parts and the closing delimiter.
    let [metadata_at, media_at, checksums_at, closing_at] = starts[..] else { return body };
    let part = |from: usize, to: usize| &text[from + delimiter.len()..to];
    let (metadata_part, checksums_part) = (part(metadata_at, media_at), part(checksums_at, closing_at));
    let split = |part: &[u8]| {
        let at = find_all(part, b"\r\n\r\n").first().copied()?;
        Some((part[..at].to_vec(), part[at + 4..].to_vec()))
    };
    let (Some((metadata_headers, metadata_json)), Some((checksums_headers, checksums_json))) =
        (split(metadata_part), split(checksums_part))
    else {
        return body;
    };
    if !String::from_utf8_lossy(&checksums_headers).contains("name=\"checksums\"") {
        return body;
    }
    let (Ok(Value::Object(mut metadata)), Ok(Value::Object(checksums))) =
        (serde_json::from_slice::<Value>(&metadata_json), serde_json::from_slice::<Value>(&checksums_json))
    else {
        return body;
    };
    metadata.extend(checksums);

    let mut repaired = Vec::with_capacity(body.len());
    repaired.extend_from_slice(format!("--{boundary}").as_bytes());
    repaired.extend_from_slice(&metadata_headers);
    repaired.extend_from_slice(b"\r\n\r\n");
    repaired.extend_from_slice(Value::Object(metadata).to_string().as_bytes());
    repaired.extend_from_slice(&text[media_at..checksums_at]);
    repaired.extend_from_slice(&text[closing_at..]);
    Bytes::from(repaired)
}

/// Offsets of every occurrence of `needle` in `haystack`, left to right,
/// not overlapping.
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        if haystack[at..].starts_with(needle) {
            found.push(at);
            at += needle.len();
        } else {
            at += 1;
        }
    }
    found
}

/// Percent-encodes everything but RFC 3986 unreserved characters, as a path
/// segment or query value holding an object name must be.
fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `http://127.0.0.1:PORT` (or `localhost`, `[::1]`) without a trailing
/// slash; anything else is refused.
fn loopback_base_url(url: &str) -> Result<String, String> {
    let rest = url.trim().strip_prefix("http://").ok_or("not an http:// URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if rest.trim_end_matches('/') != authority {
        return Err("has a path; give the server's base URL".to_owned());
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => return Err("has no port".to_owned()),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err("not a loopback host".to_owned());
    }
    Ok(format!("http://{authority}"))
}

fn full(bytes: Bytes) -> GuardBody {
    boxed(Full::new(bytes))
}

fn boxed(body: Full<Bytes>) -> GuardBody {
    body.map_err(|never: Infallible| match never {}).boxed()
}

/// Reads a request body to its end, so that an answer sent before it can go
/// out on a connection the client is still writing to (otherwise the client
/// may see a reset instead of the answer).
async fn drain(mut body: Incoming) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

async fn drain_boxed(mut body: GuardBody) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}

async fn inject(fault: FaultAction, request: Request<Incoming>) -> Result<Response<GuardBody>, ConnectionCut> {
    match fault {
        FaultAction::CutConnection => Err(ConnectionCut),
        FaultAction::Status(status) => {
            drain(request.into_body()).await;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Ok(error_reply(status, "Injected by GcsGuard.fail_next.", "backendError"))
        }
    }
}

fn google_error(code: u16, message: &str, reason: &str) -> Value {
    json!({"error": {"code": code, "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}})
}

fn json_body(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn json_response(status: StatusCode, body: &Value) -> Response<GuardBody> {
    crate::http_double::json_response(status, body).map(boxed)
}

fn error_reply(status: StatusCode, message: &str, reason: &str) -> Response<GuardBody> {
    json_response(status, &google_error(status.as_u16(), message, reason))
}

fn auth_error(failure: &AuthFailure) -> Response<GuardBody> {
    if let AuthFailure::WrongScope { .. } = failure {
        // Google refuses a valid token lacking the API's scopes with 403, not
        // 401: the caller is known, the token just does not cover Storage.
        return error_reply(
            StatusCode::FORBIDDEN,
            "Request had insufficient authentication scopes.",
            "insufficientPermissions",
        );
    }
    let body = json!({"error": {"code": 401, "message": "Invalid Credentials", "errors": [{
        "message": "Invalid Credentials", "domain": "global", "reason": "authError",
        "locationType": "header", "location": "Authorization"}]}});
    with_bearer_challenge(json_response(StatusCode::UNAUTHORIZED, &body), GOOGLE_BEARER_CHALLENGE)
}

fn permission_denied(client_email: &str, permission: &str, resource: Resource) -> Response<GuardBody> {
    let message = format!(
        "{client_email} does not have {permission} access to {}. Permission '{permission}' denied on resource (or it may not exist).",
        resource.description()
    );
    error_reply(StatusCode::FORBIDDEN, &message, "forbidden")
}

fn bucket_not_found() -> Response<GuardBody> {
    error_reply(StatusCode::NOT_FOUND, "The specified bucket does not exist.", "notFound")
}

fn precondition_failed() -> Response<GuardBody> {
    let message = "At least one of the pre-conditions you specified did not hold.";
    let body = json!({"error": {"code": 412, "message": message, "errors": [{
        "message": message, "domain": "global", "reason": "conditionNotMet",
        "locationType": "header", "location": "If-Match"}]}});
    json_response(StatusCode::PRECONDITION_FAILED, &body)
}

/// 308 with the persisted range, as Google answers a status query.
fn resume_incomplete(persisted: u64) -> Response<GuardBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if persisted > 0 {
        if let Ok(range) = HeaderValue::from_str(&format!("bytes=0-{}", persisted - 1)) {
            response.headers_mut().insert(hyper::header::RANGE, range);
        }
    }
    response
}

/// fake-gcs-server could not be asked; 502 says the guard, not the client,
/// is at fault.
fn upstream_failure(why: &str) -> Response<GuardBody> {
    error_reply(StatusCode::BAD_GATEWAY, &format!("GcsGuard: {why}"), "backendError")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_json_api_layout() {
        let object = |name: &str| Route::Object { bucket: "b".to_owned(), name: name.to_owned() };
        assert_eq!(Route::parse("/storage/v1/b"), Route::Buckets);
        assert_eq!(Route::parse("/storage/v1/b/b"), Route::Bucket { bucket: "b".to_owned() });
        assert_eq!(Route::parse("/storage/v1/b/b/o"), Route::Objects { bucket: "b".to_owned() });
        assert_eq!(Route::parse("/storage/v1/b/b/o/run%2F_manifest.json"), object("run/_manifest.json"));
        assert_eq!(Route::parse("/storage/v1/b/b/o/a%20b+c"), object("a b+c"));
        assert_eq!(Route::parse("/download/storage/v1/b/b/o/x%2Fy"), object("x/y"));
        assert_eq!(Route::parse("/storage/v1/b/b/o/raw/slashes"), object("raw/slashes"));
        assert_eq!(Route::parse("/storage/v1/b/b/o/raw/aclx"), object("raw/aclx"));
        assert_eq!(
            Route::parse("/storage/v1/b/b/o/src/copyTo/b/other/o/dst"),
            Route::ObjectAction { bucket: "b".to_owned(), name: "src".to_owned(), action: "copyTo".to_owned() }
        );
        assert_eq!(Route::parse("/upload/storage/v1/b/b/o"), Route::Upload { bucket: "b".to_owned() });
        assert_eq!(Route::parse("/upload/storage/v1/b/b/o/x"), Route::Unknown);
        assert_eq!(Route::parse("/elsewhere"), Route::Unknown);
    }

    #[test]
    fn permissions_are_the_ones_google_names() {
        let object = Route::Object { bucket: "b".to_owned(), name: "n".to_owned() };
        let objects = Route::Objects { bucket: "b".to_owned() };
        let bucket = Route::Bucket { bucket: "b".to_owned() };
        let name = |method: Method, route: &Route| required_permission(&method, route).map(|(p, _)| p);
        assert_eq!(name(Method::GET, &object), Some("storage.objects.get"));
        assert_eq!(name(Method::DELETE, &object), Some("storage.objects.delete"));
        assert_eq!(name(Method::PATCH, &object), Some("storage.objects.update"));
        assert_eq!(name(Method::GET, &objects), Some("storage.objects.list"));
        assert_eq!(name(Method::GET, &bucket), Some("storage.buckets.get"));
        assert_eq!(name(Method::GET, &Route::Buckets), Some("storage.buckets.list"));
    }

    #[test]
    fn content_ranges_of_resumable_uploads_parse() {
        assert_eq!(ContentRange::parse(Some("bytes */*")), Ok(ContentRange::StatusQuery));
        assert_eq!(ContentRange::parse(Some("bytes */16777216")), Ok(ContentRange::Finalize { total: 16_777_216 }));
        assert_eq!(
            ContentRange::parse(Some("bytes 0-8388607/*")),
            Ok(ContentRange::Chunk { first: 0, last: Some(8_388_607), total: None })
        );
        assert_eq!(
            ContentRange::parse(Some("bytes 16777216-20971519/20971520")),
            Ok(ContentRange::Chunk { first: 16_777_216, last: Some(20_971_519), total: Some(20_971_520) })
        );
        assert_eq!(
            ContentRange::parse(Some("bytes 5-*/*")),
            Ok(ContentRange::Chunk { first: 5, last: None, total: None })
        );
        for bad in [None, Some("0-1/2"), Some("bytes 5-1/*"), Some("bytes a-b/*"), Some("bytes 0-1")] {
            assert!(ContentRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_found_in_query_json_and_multipart_bodies() {
        let query = Query::parse(Some("uploadType=resumable&name=dir%2Fa+b%2Bc.txt&ifGenerationMatch=0"));
        assert_eq!(query.get("name"), Some("dir/a b+c.txt"));
        assert_eq!(query.get("ifGenerationMatch"), Some("0"));
        assert_eq!(query.get("upload_id"), None);
        assert_eq!(name_in_json(br#"{"name":"x/y.json","contentType":"a"}"#), Some("x/y.json".to_owned()));

        let mut headers = HeaderMap::new();
        headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("multipart/related; boundary=\"BB\""));
        let body = b"--BB\r\nContent-Type: application/json\r\n\r\n{\"name\":\"part-0001.jsonl\"}\r\n--BB\r\n\r\ndata\r\n--BB--\r\n";
        assert_eq!(name_in_multipart(&headers, body), Some("part-0001.jsonl".to_owned()));
    }

    #[test]
    fn a_trailing_checksums_part_moves_into_the_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("multipart/related; boundary=BB"));
        let three_parts = Bytes::from_static(
            b"--BB\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{\"name\":\"x\"}\r\n\
              --BB\r\nContent-Disposition: form-data; name=\"media\"\r\n\r\nhel\r\nlo\r\n\
              --BB\r\nContent-Disposition: form-data; name=\"checksums\"\r\nContent-Type: application/json\r\n\r\n{\"crc32c\":\"mnG7TA==\"}\r\n\
              --BB--\r\n",
        );
        let repaired = without_trailing_checksums_part(&headers, three_parts);
        let text = String::from_utf8_lossy(&repaired);
        let (head, rest) = text.split_once("\r\n\r\n").expect("metadata part");
        assert_eq!(head, "--BB\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json");
        let (metadata, rest) = rest.split_once("\r\n--BB\r\n").expect("media part follows");
        assert_eq!(serde_json::from_str::<Value>(metadata).ok(), Some(json!({"name": "x", "crc32c": "mnG7TA=="})));
        assert_eq!(rest, "Content-Disposition: form-data; name=\"media\"\r\n\r\nhel\r\nlo\r\n--BB--\r\n");
        let two_parts = Bytes::from_static(b"--BB\r\n\r\n{\"name\":\"x\"}\r\n--BB\r\n\r\ndata\r\n--BB--\r\n");
        assert_eq!(without_trailing_checksums_part(&headers, two_parts.clone()), two_parts);
    }

    #[test]
    fn encoding_round_trips_object_names() {
        for name in ["plain", "dir/a b+c%20.txt", "ünïcödé/名前", "100%"] {
            assert_eq!(percent_decode(&encode_component(name), false), name);
        }
        assert_eq!(percent_decode("bad%zz%4", false), "bad%zz%4");
    }

    #[test]
    fn only_loopback_upstreams_are_accepted() {
        assert_eq!(loopback_base_url("http://127.0.0.1:4443/"), Ok("http://127.0.0.1:4443".to_owned()));
        assert_eq!(loopback_base_url("http://localhost:1"), Ok("http://localhost:1".to_owned()));
        for bad in [
            "https://127.0.0.1:4443",
            "http://storage.googleapis.com:80",
            "http://127.0.0.1",
            "http://10.0.0.1:80",
            "http://127.0.0.1:80/storage",
        ] {
            assert!(loopback_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn persisted_size_comes_from_the_range_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(persisted_from_range(&headers), None);
        headers.insert(hyper::header::RANGE, HeaderValue::from_static("bytes=0-262143"));
        assert_eq!(persisted_from_range(&headers), Some(262_144));
    }
}
