//! A double of the three Google APIs behind "keyless Google": Security Token
//! Service (workload identity federation from AWS), IAM (service accounts and
//! their IAM policies) and IAM Credentials (`generateAccessToken`), served on
//! one base URL, since Google has no emulator for any of them.
//!
//! What it models, with Google's documented request and answer shapes:
//! - `POST /v1/token` (STS): the OAuth token exchange google-cloud-auth's
//!   external-account credentials send for an AWS source — a form with the
//!   token-exchange grant, the provider's `audience`, `scope`, and a subject
//!   token that is a signed AWS STS `GetCallerIdentity` request serialised as
//!   URL-encoded JSON. The double checks the grant and token types, the
//!   audience (the one provider it was started with), the subject token's
//!   `x-goog-cloud-target-resource` header and URL (the configured moto
//!   server's `?Action=GetCallerIdentity`), then forwards the signed request
//!   to moto and reads the caller's `<Arn>` from the answer. The caller must
//!   be an assumed role that [`GoogleIdentityDouble::allow_aws_role`] allowed
//!   (standing in for the provider's AWS account and attribute condition).
//!   The federated token it issues carries Google's default AWS attribute
//!   mapping, `attribute.aws_role` = `arn:aws:sts::<account>:assumed-role/<role>`,
//!   so its member in IAM policies is [`principal_set_member`].
//! - IAM `projects.serviceAccounts` `create`, `get`, `getIamPolicy`,
//!   `setIamPolicy` (etags, 409 on a stale one), account-id rules, 409 for an
//!   existing account, a per-project limit. Callers are federated tokens of
//!   roles [`GoogleIdentityDouble::allow_admin_role`] made administrators.
//! - IAM Credentials `generateAccessToken`: allowed when the caller's
//!   principalSet member holds `roles/iam.serviceAccountTokenCreator` in the
//!   account's IAM policy; the opaque token is issued into every
//!   [`AccountRegistry`] the double was given, so a
//!   [`crate::gcs_guard::GcsGuard`] or [`crate::sheets_double::SheetsDouble`]
//!   sharing one accepts it for that account only.
//!
//! What it does not model: attribute conditions (a set of allowed roles
//! stands in for them), other attribute mappings or credential types (OIDC,
//! SAML), pools other than the one it was started with, delegation chains,
//! project-level IAM policies and predefined roles other than Token Creator
//! (IAM calls need an admin role; nothing else is granted), conditional role
//! bindings, service-account keys, disabling or deleting accounts, listing,
//! quotas other than the account limit. Unmodelled requests get 400 naming
//! `GoogleIdentityDouble`.
//!
//! moto 5.2.5 and the crate's subject token: on the IAM-enforcing server moto
//! checks signatures by hashing the request's query parameters as if they
//! were its body, so it refuses the signature of every `GetCallerIdentity`
//! sent as google-cloud-auth sends it (`POST` to `/?Action=…` with an empty
//! body), rightly signed or not. When moto answers `SignatureDoesNotMatch`,
//! the double checks the SigV4 signature itself, the way AWS does, with the
//! access key's secret read from moto's `/moto-api/data.json`, and takes the
//! caller's ARN from there. On a server without enforcement moto checks no
//! signature (any signature passes there, as any credential does).
//!
//! Test infrastructure only: it listens on 127.0.0.1, forwards to a loopback
//! moto only, must never face the internet or be pointed at real Google or AWS
//! endpoints, and never logs or returns a token or secret in an error (its
//! log names callers by their AWS role and target accounts by email).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::{digest, hmac};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::google_keys::{new_access_token, AccountRegistry, MAX_ACCESS_TOKEN_LIFETIME};
use crate::http_double::{
    authorization_header, json_response, lock, percent_decode, with_bearer_challenge, DoubleServer, FaultQueue,
    LoopbackListener, Query, RequestLog, ServerThreads, GOOGLE_BEARER_CHALLENGE,
};

/// The role whose holders may mint access tokens for a service account.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
/// Service accounts a project may hold unless [`GoogleIdentityDouble::set_service_account_limit`] says otherwise (Google's default quota).
pub const DEFAULT_SERVICE_ACCOUNT_LIMIT: usize = 100;
/// `grant_type` of an OAuth 2.0 token exchange (RFC 8693).
pub const TOKEN_EXCHANGE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `requested_token_type` / `issued_token_type` of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `subject_token_type` of a serialised, signed AWS `GetCallerIdentity`.
pub const AWS4_REQUEST_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";

/// How long a federated token lives (as at Google: an hour).
const FEDERATED_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How far AWS lets a signed request's `x-amz-date` stray from now.
const AWS_SIGNATURE_WINDOW_SECS: i64 = 15 * 60;
/// How long the double waits on moto.
const MOTO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it asks moto's data.json again while moto answers 500 (moto
/// fails to serialise its state while another request changes it).
const DATA_JSON_ATTEMPTS: u32 = 10;

/// One request the double answered. Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRequest {
    /// Arrival order, from 0.
    pub sequence: u64,
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// The caller: the `aws_role` attribute (`arn:aws:sts::<account>:assumed-role/<role>`)
    /// of the federated token presented (for `/v1/token`: of the AWS identity
    /// moto vouched for), when known.
    pub caller: Option<String>,
    /// The service account the request is about, when it names one.
    pub service_account: Option<String>,
    /// Status returned.
    pub status: u16,
}

/// A service account as IAM's `get` and `create` return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub project_id: String,
    pub account_id: String,
    pub email: String,
    pub unique_id: String,
    pub display_name: String,
    pub description: String,
}

impl ServiceAccount {
    /// The resource as IAM's JSON API returns it.
    pub fn to_json(&self) -> Value {
        let mut account = json!({
            "name": format!("projects/{}/serviceAccounts/{}", self.project_id, self.email),
            "projectId": self.project_id,
            "uniqueId": self.unique_id,
            "email": self.email,
            "oauth2ClientId": self.unique_id,
            "etag": "MDEwMjE5MjA=",
        });
        // Google leaves empty optional fields out.
        if !self.display_name.is_empty() {
            account["displayName"] = json!(self.display_name);
        }
        if !self.description.is_empty() {
            account["description"] = json!(self.description);
        }
        account
    }
}

/// The STS, IAM and IAM Credentials double; see the module documentation.
/// Dropping it stops the server.
pub struct GoogleIdentityDouble {
    server: DoubleServer,
    state: Arc<IdentityState>,
}

impl GoogleIdentityDouble {
    /// Starts the double on `127.0.0.1:<ephemeral port>`.
    ///
    /// - `aws_sts_endpoint`: the moto server subject tokens must be addressed
    ///   to and are forwarded to (`http://127.0.0.1:PORT`, loopback only);
    /// - `audience`: the workload identity provider,
    ///   `//iam.googleapis.com/projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>/providers/<PROVIDER>`;
    /// - `registries`: where access tokens minted by `generateAccessToken`
    ///   are issued (e.g. `GcsGuard::registry()`, `SheetsDouble::registry()`);
    ///   more with [`Self::add_registry`].
    ///
    /// No AWS role is allowed and no role is an administrator until allowed.
    ///
    /// # Panics
    /// When `aws_sts_endpoint` is not a loopback http URL, `audience` is not a
    /// workload identity provider's name, or the server cannot start.
    pub fn start(aws_sts_endpoint: &str, audience: &str, registries: Vec<AccountRegistry>) -> GoogleIdentityDouble {
        let moto = MotoEndpoint::parse(aws_sts_endpoint)
            .unwrap_or_else(|why| panic!("GoogleIdentityDouble refuses AWS STS endpoint {aws_sts_endpoint:?}: {why}"));
        let pool = workload_identity_pool(audience).unwrap_or_else(|| {
            panic!(
                "GoogleIdentityDouble: {audience:?} is not a workload identity provider \
                 (//iam.googleapis.com/projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>/providers/<PROVIDER>)"
            )
        });
        let listener = LoopbackListener::bind("GoogleIdentityDouble");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(MOTO_TIMEOUT)
            .build()
            .expect("an HTTP client without TLS builds");
        let state = Arc::new(IdentityState {
            moto,
            audience: audience.to_owned(),
            pool,
            registries: Mutex::new(registries),
            allowed_roles: Mutex::default(),
            admin_roles: Mutex::default(),
            federated_tokens: Mutex::default(),
            accounts: Mutex::default(),
            account_limit: AtomicUsize::new(DEFAULT_SERVICE_ACCOUNT_LIMIT),
            etag_counter: AtomicU64::new(1),
            faults: FaultQueue::default(),
            log: RequestLog::default(),
            client,
        });
        let server_state = Arc::clone(&state);
        // A pool: the token exchange waits on moto.
        let server = listener.serve("google-identity-double", ServerThreads::Pool(2), move |request| {
            serve(Arc::clone(&server_state), request)
        });
        GoogleIdentityDouble { server, state }
    }

    /// `http://127.0.0.1:PORT`: the base URL of all three APIs.
    pub fn endpoint(&self) -> String {
        self.server.endpoint().to_owned()
    }

    /// The STS token URL, `<endpoint>/v1/token` (the `token_url` of an
    /// external-account configuration).
    pub fn token_url(&self) -> String {
        format!("{}/v1/token", self.server.endpoint())
    }

    /// `generateAccessToken`'s URL for `email` (the
    /// `service_account_impersonation_url` of an external-account
    /// configuration).
    pub fn impersonation_url(&self, email: &str) -> String {
        format!("{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken", self.server.endpoint())
    }

    /// The workload identity provider the double was started with.
    pub fn audience(&self) -> &str {
        &self.state.audience
    }

    /// Also issues minted access tokens into `registry` from now on.
    pub fn add_registry(&self, registry: AccountRegistry) {
        lock(&self.state.registries).push(registry);
    }

    /// Lets sessions of `role_arn` (`arn:aws:iam::<account>:role/<name>`)
    /// exchange their AWS identity for a federated token.
    ///
    /// # Panics
    /// When `role_arn` is not a role ARN.
    pub fn allow_aws_role(&self, role_arn: &str) {
        lock(&self.state.allowed_roles).insert(role_attribute_or_panic(role_arn));
    }

    /// Makes federated tokens of `role_arn` administrators of IAM: they may
    /// create service accounts and read and set their IAM policies. (The
    /// role must also be allowed by [`Self::allow_aws_role`] to get a token.)
    ///
    /// # Panics
    /// When `role_arn` is not a role ARN.
    pub fn allow_admin_role(&self, role_arn: &str) {
        lock(&self.state.admin_roles).insert(role_attribute_or_panic(role_arn));
    }

    /// How many service accounts a project may hold (default
    /// [`DEFAULT_SERVICE_ACCOUNT_LIMIT`]).
    pub fn set_service_account_limit(&self, limit: usize) {
        self.state.account_limit.store(limit, Ordering::Relaxed);
    }

    /// The principalSet member of sessions of `role_arn` in this double's
    /// pool; see [`principal_set_member`].
    ///
    /// # Panics
    /// When `role_arn` is not a role or assumed-role ARN.
    pub fn member_of_role(&self, role_arn: &str) -> String {
        format!("{}/attribute.aws_role/{}", self.state.pool_principal_set(), role_attribute_or_panic(role_arn))
    }

    /// Creates service account `account_id` in `project` directly, as an
    /// administrator would, bypassing every check but the account-id rule;
    /// returns its email. An existing account is kept.
    ///
    /// # Panics
    /// When `account_id` breaks Google's rule.
    pub fn create_service_account(&self, project: &str, account_id: &str) -> String {
        assert!(valid_account_id(account_id), "{}", invalid_account_id_message(account_id));
        let email = account_email(project, account_id);
        if !lock(&self.state.accounts).contains_key(&email) {
            self.state.insert_account(project, account_id, "", "");
        }
        email
    }

    /// Binds `member` to `role` in `email`'s IAM policy directly (new etag),
    /// as an administrator would.
    ///
    /// # Panics
    /// When the account does not exist.
    pub fn grant(&self, email: &str, role: &str, member: &str) {
        let mut accounts = lock(&self.state.accounts);
        let entry =
            accounts.get_mut(email).unwrap_or_else(|| panic!("GoogleIdentityDouble: no service account {email}"));
        entry.policy.bindings.entry(role.to_owned()).or_default().insert(member.to_owned());
        entry.policy.etag = self.state.next_etag();
    }

    /// The service account `email`, if it exists.
    pub fn service_account(&self, email: &str) -> Option<ServiceAccount> {
        lock(&self.state.accounts).get(email).map(|entry| entry.account.clone())
    }

    /// `email`'s IAM policy as `getIamPolicy` returns it, if the account
    /// exists.
    pub fn iam_policy(&self, email: &str) -> Option<Value> {
        lock(&self.state.accounts).get(email).map(|entry| entry.policy.to_json())
    }

    /// Makes every federated token issued so far expired (to test a caller
    /// whose token ran out).
    pub fn expire_federated_tokens(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for token in lock(&self.state.federated_tokens).values_mut() {
            token.expires_at = past;
        }
    }

    /// Every request answered so far, in arrival order.
    pub fn requests(&self) -> Vec<IdentityRequest> {
        self.state.log.in_arrival_order(|r| r.sequence)
    }

    /// The next `n` requests (any API) are answered `status` before any check,
    /// with a body in that API's error shape. Faults fire in arming order.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.faults.arm(n, status);
    }
}

impl fmt::Debug for GoogleIdentityDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleIdentityDouble")
            .field("endpoint", &self.server.endpoint())
            .field("aws_sts_endpoint", &self.state.moto.base_url)
            .field("audience", &self.state.audience)
            .finish_non_exhaustive()
    }
}

/// The `aws_role` attribute Google's default AWS mapping gives sessions of a
/// role: `arn:aws:sts::<account>:assumed-role/<role name>` (the role's path
/// and the session name dropped). Takes a role ARN
/// (`arn:aws:iam::<account>:role/[<path>/]<name>`) or an assumed-role ARN
/// (`arn:aws:sts::<account>:assumed-role/<name>[/<session>]`); `None` for
/// anything else.
pub fn aws_role_attribute(arn: &str) -> Option<String> {
    let mut fields = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    if partition.is_empty() || account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let name = match service {
        "iam" => resource.strip_prefix("role/")?.rsplit('/').next()?,
        "sts" => resource.strip_prefix("assumed-role/")?.split('/').next()?,
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some(format!("arn:{partition}:sts::{account}:assumed-role/{name}"))
}

/// The principalSet member that stands for every session of `role_arn`
/// federated through the workload identity provider `audience`:
/// `principalSet://iam.googleapis.com/projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>/attribute.aws_role/arn:aws:sts::<account>:assumed-role/<role>`.
/// `role_arn` as for [`aws_role_attribute`]. `None` when `audience` is not a
/// provider's name or `role_arn` not a role's ARN.
pub fn principal_set_member(audience: &str, role_arn: &str) -> Option<String> {
    let pool = workload_identity_pool(audience)?;
    let role = aws_role_attribute(role_arn)?;
    Some(format!("principalSet://iam.googleapis.com/{pool}/attribute.aws_role/{role}"))
}

/// `projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>` of a
/// provider's name.
fn workload_identity_pool(audience: &str) -> Option<String> {
    let path = audience.strip_prefix("//iam.googleapis.com/")?;
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["projects", number, "locations", "global", "workloadIdentityPools", pool, "providers", provider]
            if !number.is_empty()
                && number.chars().all(|c| c.is_ascii_digit())
                && !pool.is_empty()
                && !provider.is_empty() =>
        {
            Some(format!("projects/{number}/locations/global/workloadIdentityPools/{pool}"))
        }
        _ => None,
    }
}

fn role_attribute_or_panic(role_arn: &str) -> String {
    aws_role_attribute(role_arn)
        .unwrap_or_else(|| panic!("GoogleIdentityDouble: {role_arn:?} is not an IAM role or assumed-role ARN"))
}

fn account_email(project: &str, account_id: &str) -> String {
    format!("{account_id}@{project}.iam.gserviceaccount.com")
}

/// Google's rule for service account ids: 6 to 30 characters,
/// `[a-z]([-a-z0-9]*[a-z0-9])`.
fn valid_account_id(account_id: &str) -> bool {
    let bytes = account_id.as_bytes();
    (6..=30).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}

fn invalid_account_id_message(account_id: &str) -> String {
    format!(
        "Invalid account ID {account_id:?}: it must be 6 to 30 characters long and match the regular expression \
         `[a-z]([-a-z0-9]*[a-z0-9])`."
    )
}

/// The moto server subject tokens are addressed to.
struct MotoEndpoint {
    /// `http://127.0.0.1:PORT`.
    base_url: String,
    port: u16,
}

impl MotoEndpoint {
    fn parse(endpoint: &str) -> Result<MotoEndpoint, String> {
        let url = url::Url::parse(endpoint.trim()).map_err(|e| format!("not a URL: {e}"))?;
        if url.scheme() != "http" {
            return Err("not an http URL".to_owned());
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => {}
            Some(url::Host::Domain("localhost")) => {}
            _ => return Err("not a loopback address: the double only ever talks to 127.0.0.1".to_owned()),
        }
        let port = url.port_or_known_default().ok_or("no port")?;
        Ok(MotoEndpoint { base_url: format!("http://127.0.0.1:{port}"), port })
    }
}

/// State shared by the handle and the connection tasks.
struct IdentityState {
    moto: MotoEndpoint,
    audience: String,
    /// `projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>`.
    pool: String,
    registries: Mutex<Vec<AccountRegistry>>,
    /// `aws_role` attributes allowed to federate.
    allowed_roles: Mutex<HashSet<String>>,
    /// `aws_role` attributes that administer IAM.
    admin_roles: Mutex<HashSet<String>>,
    /// Federated tokens by the hex SHA-256 digest of the token.
    federated_tokens: Mutex<HashMap<String, FederatedToken>>,
    /// Service accounts by email.
    accounts: Mutex<BTreeMap<String, AccountEntry>>,
    account_limit: AtomicUsize,
    etag_counter: AtomicU64,
    faults: FaultQueue<u16>,
    log: RequestLog<IdentityRequest>,
    client: reqwest::Client,
}

struct FederatedToken {
    /// `arn:aws:sts::<account>:assumed-role/<role>`.
    aws_role: String,
    expires_at: SystemTime,
}

struct AccountEntry {
    account: ServiceAccount,
    policy: Policy,
}

/// A service account's IAM policy: role → members, sorted as Google returns
/// them.
#[derive(Clone)]
struct Policy {
    bindings: BTreeMap<String, std::collections::BTreeSet<String>>,
    etag: String,
}

impl Policy {
    fn to_json(&self) -> Value {
        let mut policy = json!({"version": 1, "etag": self.etag});
        let bindings: Vec<Value> = self
            .bindings
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(role, members)| json!({"role": role, "members": members}))
            .collect();
        // Google leaves `bindings` out of an empty policy.
        if !bindings.is_empty() {
            policy["bindings"] = Value::Array(bindings);
        }
        policy
    }
}

impl IdentityState {
    fn pool_principal_set(&self) -> String {
        format!("principalSet://iam.googleapis.com/{}", self.pool)
    }

    fn member_of(&self, aws_role: &str) -> String {
        format!("{}/attribute.aws_role/{aws_role}", self.pool_principal_set())
    }

    /// A new etag (Google's are base64 of 8 bytes).
    fn next_etag(&self) -> String {
        STANDARD.encode(self.etag_counter.fetch_add(1, Ordering::Relaxed).to_be_bytes())
    }

    /// Adds the account and makes it known (keyless) in every registry.
    fn insert_account(&self, project: &str, account_id: &str, display_name: &str, description: &str) -> ServiceAccount {
        let email = account_email(project, account_id);
        let unique_id = format!(
            "1{:020}",
            u64::from_be_bytes(
                digest::digest(&digest::SHA256, email.as_bytes()).as_ref()[..8].try_into().unwrap_or([0; 8])
            )
        );
        let account = ServiceAccount {
            project_id: project.to_owned(),
            account_id: account_id.to_owned(),
            email: email.clone(),
            unique_id,
            display_name: display_name.to_owned(),
            description: description.to_owned(),
        };
        lock(&self.accounts).insert(
            email.clone(),
            // "ACAB" is the etag Google gives a policy never set.
            AccountEntry {
                account: account.clone(),
                policy: Policy { bindings: BTreeMap::new(), etag: "ACAB".to_owned() },
            },
        );
        for registry in lock(&self.registries).iter() {
            registry.register_without_key(&email);
        }
        account
    }

    /// The federated caller of a request, or why there is none.
    fn federated_caller(&self, authorization: Option<&str>) -> Result<String, &'static str> {
        let credential = authorization.ok_or("no Authorization header")?.trim();
        let token = match credential.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err("not a Bearer credential"),
        };
        let tokens = lock(&self.federated_tokens);
        let federated = tokens.get(&token_digest(token)).ok_or("not a federated token this double issued")?;
        if federated.expires_at <= SystemTime::now() {
            return Err("the federated token has expired");
        }
        Ok(federated.aws_role.clone())
    }
}

fn token_digest(token: &str) -> String {
    digest::digest(&digest::SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request turned out to be about, for the log.
#[derive(Default)]
struct RequestNote {
    caller: Option<String>,
    service_account: Option<String>,
}

/// The request's target.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `POST /v1/token`
    Token,
    /// `/v1/projects/{project}/serviceAccounts`
    Accounts {
        project: String,
    },
    /// `/v1/projects/{project}/serviceAccounts/{email}[:{action}]`
    Account {
        project: String,
        email: String,
        action: Option<String>,
    },
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Route {
        if path == "/v1/token" {
            return Route::Token;
        }
        let Some(rest) = path.strip_prefix("/v1/projects/") else { return Route::Unknown };
        let Some((project, rest)) = rest.split_once('/') else { return Route::Unknown };
        let project = percent_decode(project, false);
        if project.is_empty() {
            return Route::Unknown;
        }
        match rest.strip_prefix("serviceAccounts") {
            Some("") => Route::Accounts { project },
            Some(rest) => match rest.strip_prefix('/') {
                Some(name) if !name.is_empty() && !name.contains('/') => {
                    let name = percent_decode(name, false);
                    let (email, action) = match name.split_once(':') {
                        Some((email, action)) => (email.to_owned(), Some(action.to_owned())),
                        None => (name, None),
                    };
                    Route::Account { project, email, action }
                }
                _ => Route::Unknown,
            },
            None => Route::Unknown,
        }
    }
}

async fn serve(state: Arc<IdentityState>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let sequence = state.log.next_sequence();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let mut note = RequestNote::default();
    let response = handle(&state, request, &mut note).await;
    state.log.record(IdentityRequest {
        sequence,
        method,
        path,
        caller: note.caller,
        service_account: note.service_account,
        status: response.status().as_u16(),
    });
    Ok(response)
}

async fn handle(state: &IdentityState, request: Request<Incoming>, note: &mut RequestNote) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let route = Route::parse(&path);
    if let Route::Account { email, .. } = &route {
        note.service_account = Some(email.clone());
    }
    let method = request.method().clone();
    let authorization = authorization_header(request.headers()).map(str::to_owned);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return google_error(StatusCode::BAD_REQUEST, "The request body could not be read.", "INVALID_ARGUMENT")
        }
    };

    if let Some(status) = state.faults.take_next() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = format!("GoogleIdentityDouble fault injection: {status}");
        return if route == Route::Token {
            sts_error(status, "server_error", &message)
        } else {
            google_error(status, &message, status_name(status))
        };
    }

    match (route, method) {
        (Route::Token, Method::POST) => token_exchange(state, &body, note).await,
        (Route::Accounts { project }, Method::POST) => {
            if let Err(reply) = admin_caller(state, authorization.as_deref(), "iam.serviceAccounts.create", note) {
                return reply;
            }
            create_account(state, &project, &body, note)
        }
        (Route::Account { project, email, action: None }, Method::GET) => {
            if let Err(reply) = admin_caller(state, authorization.as_deref(), "iam.serviceAccounts.get", note) {
                return reply;
            }
            match account_in(state, &project, &email) {
                Some(account) => json_response(StatusCode::OK, &account.to_json()),
                None => account_not_found(&email),
            }
        }
        (Route::Account { project, email, action: Some(action) }, Method::POST) => match action.as_str() {
            "getIamPolicy" => {
                if let Err(reply) =
                    admin_caller(state, authorization.as_deref(), "iam.serviceAccounts.getIamPolicy", note)
                {
                    return reply;
                }
                if account_in(state, &project, &email).is_none() {
                    return account_not_found(&email);
                }
                let policy = lock(&state.accounts).get(&email).map(|e| e.policy.to_json());
                policy.map_or_else(|| account_not_found(&email), |p| json_response(StatusCode::OK, &p))
            }
            "setIamPolicy" => {
                if let Err(reply) =
                    admin_caller(state, authorization.as_deref(), "iam.serviceAccounts.setIamPolicy", note)
                {
                    return reply;
                }
                set_iam_policy(state, &project, &email, &body)
            }
            "generateAccessToken" => {
                generate_access_token(state, authorization.as_deref(), &project, &email, &body, note)
            }
            _ => unmodelled("POST", &format!("serviceAccounts/{email}:{action}")),
        },
        (_, method) => unmodelled(method.as_str(), &path),
    }
}

fn unmodelled(method: &str, what: &str) -> Response<Full<Bytes>> {
    google_error(
        StatusCode::BAD_REQUEST,
        &format!("GoogleIdentityDouble does not model {method} {what}; extend it if a test needs it."),
        "INVALID_ARGUMENT",
    )
}

/// The account `email` when it exists and `project` is `-` or its project.
fn account_in(state: &IdentityState, project: &str, email: &str) -> Option<ServiceAccount> {
    lock(&state.accounts)
        .get(email)
        .map(|entry| entry.account.clone())
        .filter(|account| project == "-" || account.project_id == project)
}

/// The caller's `aws_role` when it is an IAM administrator; otherwise the
/// 401 or 403 Google would answer.
fn admin_caller(
    state: &IdentityState,
    authorization: Option<&str>,
    permission: &str,
    note: &mut RequestNote,
) -> Result<String, Response<Full<Bytes>>> {
    let caller = state.federated_caller(authorization).map_err(|_| unauthenticated())?;
    note.caller = Some(caller.clone());
    if lock(&state.admin_roles).contains(&caller) {
        Ok(caller)
    } else {
        Err(permission_denied(permission))
    }
}

fn create_account(state: &IdentityState, project: &str, body: &[u8], note: &mut RequestNote) -> Response<Full<Bytes>> {
    if project == "-" || !project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return google_error(
            StatusCode::BAD_REQUEST,
            &format!("Invalid project id {project:?}: service accounts are created in a named project."),
            "INVALID_ARGUMENT",
        );
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return google_error(StatusCode::BAD_REQUEST, "The request body is not a JSON object.", "INVALID_ARGUMENT")
        }
    };
    let Some(account_id) = request.get("accountId").and_then(Value::as_str) else {
        return google_error(StatusCode::BAD_REQUEST, "accountId is required.", "INVALID_ARGUMENT");
    };
    note.service_account = Some(account_email(project, account_id));
    if !valid_account_id(account_id) {
        return google_error(StatusCode::BAD_REQUEST, &invalid_account_id_message(account_id), "INVALID_ARGUMENT");
    }
    let details = request.get("serviceAccount");
    let text = |field: &str| details.and_then(|d| d.get(field)).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (display_name, description) = (text("displayName"), text("description"));
    if display_name.chars().count() > 100 || description.chars().count() > 256 {
        return google_error(
            StatusCode::BAD_REQUEST,
            "displayName may have at most 100 characters and description at most 256.",
            "INVALID_ARGUMENT",
        );
    }
    let email = account_email(project, account_id);
    {
        let accounts = lock(&state.accounts);
        if accounts.contains_key(&email) {
            return google_error(
                StatusCode::CONFLICT,
                &format!("Service account {account_id} already exists within project projects/{project}."),
                "ALREADY_EXISTS",
            );
        }
        let limit = state.account_limit.load(Ordering::Relaxed);
        let in_project = accounts.values().filter(|e| e.account.project_id == project).count();
        if in_project >= limit {
            return google_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Service account quota exceeded: project {project} already has {in_project} service accounts, \
                     its limit (quota iam.googleapis.com/service_accounts is {limit})."
                ),
                "FAILED_PRECONDITION",
            );
        }
    }
    let account = state.insert_account(project, account_id, &display_name, &description);
    json_response(StatusCode::OK, &account.to_json())
}

fn set_iam_policy(state: &IdentityState, project: &str, email: &str, body: &[u8]) -> Response<Full<Bytes>> {
    if account_in(state, project, email).is_none() {
        return account_not_found(email);
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return google_error(StatusCode::BAD_REQUEST, "The request body is not a JSON object.", "INVALID_ARGUMENT")
        }
    };
    let Some(policy) = request.get("policy").filter(|p| p.is_object()) else {
        return google_error(StatusCode::BAD_REQUEST, "policy is required.", "INVALID_ARGUMENT");
    };
    match policy.get("version").map(Value::as_i64) {
        None | Some(Some(0 | 1 | 3)) => {}
        Some(_) => return google_error(StatusCode::BAD_REQUEST, "Invalid policy version.", "INVALID_ARGUMENT"),
    }
    let mut bindings: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for binding in policy.get("bindings").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        if binding.get("condition").is_some_and(|c| !c.is_null()) {
            return unmodelled("setIamPolicy", "with conditional role bindings");
        }
        let Some(role) = binding.get("role").and_then(Value::as_str).filter(|r| r.starts_with("roles/")) else {
            return google_error(
                StatusCode::BAD_REQUEST,
                "Every binding needs a role of the form roles/<name>.",
                "INVALID_ARGUMENT",
            );
        };
        let members = binding.get("members").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for member in members {
            let Some(member) = member.as_str().filter(|m| valid_member(m)) else {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid member {member} in the binding of {role}."),
                    "INVALID_ARGUMENT",
                );
            };
            bindings.entry(role.to_owned()).or_default().insert(member.to_owned());
        }
    }
    let mut accounts = lock(&state.accounts);
    let Some(entry) = accounts.get_mut(email) else { return account_not_found(email) };
    if let Some(etag) = policy.get("etag").and_then(Value::as_str) {
        if etag != entry.policy.etag {
            return google_error(
                StatusCode::CONFLICT,
                "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
                "ABORTED",
            );
        }
    }
    entry.policy = Policy { bindings, etag: state.next_etag() };
    json_response(StatusCode::OK, &entry.policy.to_json())
}

/// The member forms IAM accepts (enough to catch a malformed one).
fn valid_member(member: &str) -> bool {
    if matches!(member, "allUsers" | "allAuthenticatedUsers") {
        return true;
    }
    let Some((kind, rest)) = member.split_once(':') else { return false };
    !rest.is_empty()
        && match kind {
            "user" | "serviceAccount" | "group" | "domain" => !rest.contains(char::is_whitespace),
            "principal" | "principalSet" => {
                rest.starts_with("//iam.googleapis.com/") && !rest.contains(char::is_whitespace)
            }
            _ => false,
        }
}

fn generate_access_token(
    state: &IdentityState,
    authorization: Option<&str>,
    project: &str,
    email: &str,
    body: &[u8],
    note: &mut RequestNote,
) -> Response<Full<Bytes>> {
    let caller = match state.federated_caller(authorization) {
        Ok(caller) => caller,
        Err(_) => return unauthenticated(),
    };
    note.caller = Some(caller.clone());
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return google_error(StatusCode::BAD_REQUEST, "The request body is not a JSON object.", "INVALID_ARGUMENT")
        }
    };
    let scopes: Vec<String> = match request.get("scope") {
        Some(Value::Array(scopes)) => scopes.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if scopes.is_empty() {
        return google_error(StatusCode::BAD_REQUEST, "Scope required.", "INVALID_ARGUMENT");
    }
    if request.get("delegates").and_then(Value::as_array).is_some_and(|d| !d.is_empty()) {
        return unmodelled("generateAccessToken", "with delegates");
    }
    let lifetime = match request.get("lifetime") {
        None | Some(Value::Null) => MAX_ACCESS_TOKEN_LIFETIME,
        Some(Value::String(text)) => match parse_duration(text) {
            Some(lifetime) if lifetime > Duration::ZERO && lifetime <= MAX_ACCESS_TOKEN_LIFETIME => lifetime,
            _ => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid lifetime {text:?}: it must be a duration like \"3600s\", at most 3600s."),
                    "INVALID_ARGUMENT",
                )
            }
        },
        Some(_) => return google_error(StatusCode::BAD_REQUEST, "lifetime must be a string.", "INVALID_ARGUMENT"),
    };
    let member = state.member_of(&caller);
    let allowed = account_in(state, project, email).is_some()
        && lock(&state.accounts)
            .get(email)
            .and_then(|entry| entry.policy.bindings.get(TOKEN_CREATOR_ROLE))
            .is_some_and(|members| members.contains(&member));
    if !allowed {
        // Also for an account that does not exist, as Google answers.
        return permission_denied("iam.serviceAccounts.getAccessToken");
    }
    let token = new_access_token();
    let expires_at = SystemTime::now() + lifetime;
    for registry in lock(&state.registries).iter() {
        registry.accept_access_token(&token, email, &scopes, expires_at);
    }
    let expire_time = DateTime::<Utc>::from(expires_at).to_rfc3339_opts(SecondsFormat::Secs, true);
    json_response(StatusCode::OK, &json!({"accessToken": token, "expireTime": expire_time}))
}

/// `"3600s"`, `"3599.5s"` (protobuf's Duration in JSON).
fn parse_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

// ---- STS token exchange ----

/// Why an exchange was refused.
struct StsRefusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl StsRefusal {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> StsRefusal {
        StsRefusal { status, error, description: description.into() }
    }

    fn invalid_request(description: impl Into<String>) -> StsRefusal {
        StsRefusal::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(status: StatusCode, description: impl Into<String>) -> StsRefusal {
        StsRefusal::new(status, "invalid_grant", description)
    }
}

/// The subject token: a signed AWS request, as google-cloud-auth serialises it.
struct SignedAwsRequest {
    url: url::Url,
    method: String,
    /// Header names lower-cased, in the token's order.
    headers: Vec<(String, String)>,
    body: String,
}

impl SignedAwsRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

async fn token_exchange(state: &IdentityState, body: &[u8], note: &mut RequestNote) -> Response<Full<Bytes>> {
    match exchange(state, body, note).await {
        Ok(response) => response,
        Err(refusal) => sts_error(refusal.status, refusal.error, &refusal.description),
    }
}

async fn exchange(
    state: &IdentityState,
    body: &[u8],
    note: &mut RequestNote,
) -> Result<Response<Full<Bytes>>, StsRefusal> {
    let form = Query::parse(Some(&String::from_utf8_lossy(body)));
    let field = |name: &str| form.get(name).filter(|v| !v.is_empty());
    if field("grant_type") != Some(TOKEN_EXCHANGE_GRANT_TYPE) {
        return Err(StsRefusal::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type must be {TOKEN_EXCHANGE_GRANT_TYPE}"),
        ));
    }
    if field("requested_token_type") != Some(ACCESS_TOKEN_TYPE) {
        return Err(StsRefusal::invalid_request(format!("requested_token_type must be {ACCESS_TOKEN_TYPE}")));
    }
    if field("subject_token_type") != Some(AWS4_REQUEST_TOKEN_TYPE) {
        return Err(StsRefusal::invalid_request(format!(
            "subject_token_type must be {AWS4_REQUEST_TOKEN_TYPE} (the double models AWS providers only)"
        )));
    }
    let audience = field("audience").ok_or_else(|| StsRefusal::invalid_request("audience is required"))?;
    if audience != state.audience {
        // `invalid_grant`, as for every refused credential in the contract
        // the deliverers are written against.
        return Err(StsRefusal::invalid_grant(
            StatusCode::BAD_REQUEST,
            format!(
                "The target service indicated by the \"audience\" parameter ({audience}) is not the workload \
                 identity provider {} (audience mismatch).",
                state.audience
            ),
        ));
    }
    if let Some(options) = field("options") {
        if !serde_json::from_str::<Value>(options).is_ok_and(|v| v.is_object()) {
            return Err(StsRefusal::invalid_request("options must be a JSON object"));
        }
    }
    let subject_token =
        field("subject_token").ok_or_else(|| StsRefusal::invalid_request("subject_token is required"))?;
    let signed = parse_subject_token(subject_token)?;

    if signed.header("x-goog-cloud-target-resource") != Some(state.audience.as_str()) {
        return Err(StsRefusal::invalid_grant(
            StatusCode::BAD_REQUEST,
            "The subject token's x-goog-cloud-target-resource header is not the audience (audience mismatch).",
        ));
    }
    let query: HashMap<String, String> = signed.url.query_pairs().into_owned().collect();
    let addressed_to_moto = signed.url.scheme() == "http"
        && matches!(signed.url.host_str(), Some("127.0.0.1" | "localhost"))
        && signed.url.port_or_known_default() == Some(state.moto.port)
        && matches!(signed.url.path(), "" | "/");
    if !addressed_to_moto || query.get("Action").map(String::as_str) != Some("GetCallerIdentity") {
        return Err(StsRefusal::invalid_grant(
            StatusCode::BAD_REQUEST,
            format!(
                "The subject token is not a GetCallerIdentity request to the AWS STS endpoint {}/?Action=GetCallerIdentity.",
                state.moto.base_url
            ),
        ));
    }
    if !signed.method.eq_ignore_ascii_case("POST") && !signed.method.eq_ignore_ascii_case("GET") {
        return Err(StsRefusal::invalid_grant(StatusCode::BAD_REQUEST, "The subject token's method must be POST."));
    }
    if signed.header("authorization").is_none() || signed.header("x-amz-date").is_none() {
        return Err(StsRefusal::invalid_grant(
            StatusCode::BAD_REQUEST,
            "The subject token lacks a SigV4 Authorization or x-amz-date header.",
        ));
    }

    let arn = caller_arn(state, &signed).await?;
    let aws_role = aws_role_attribute(&arn).filter(|_| arn.contains(":assumed-role/")).ok_or_else(|| {
        StsRefusal::invalid_grant(
            StatusCode::FORBIDDEN,
            format!("The AWS caller {arn} is not an assumed role: only role sessions may federate."),
        )
    })?;
    note.caller = Some(aws_role.clone());
    if !lock(&state.allowed_roles).contains(&aws_role) {
        return Err(StsRefusal::invalid_grant(
            StatusCode::FORBIDDEN,
            format!("The AWS role {aws_role} is not allowed by the workload identity provider (role not allowed)."),
        ));
    }

    let token = new_access_token();
    lock(&state.federated_tokens).insert(
        token_digest(&token),
        FederatedToken { aws_role, expires_at: SystemTime::now() + FEDERATED_TOKEN_LIFETIME },
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": FEDERATED_TOKEN_LIFETIME.as_secs(),
        }),
    ))
}

/// Reads the subject token: URL-encoded JSON (google-cloud-auth), or the
/// JSON itself.
fn parse_subject_token(subject_token: &str) -> Result<SignedAwsRequest, StsRefusal> {
    let text = subject_token.trim();
    let decoded = if text.starts_with('{') { text.to_owned() } else { percent_decode(text, true) };
    let invalid =
        |why: &str| StsRefusal::invalid_grant(StatusCode::BAD_REQUEST, format!("Invalid subject token: {why}."));
    let value: Value = serde_json::from_str(&decoded).map_err(|_| invalid("not URL-encoded JSON"))?;
    let url = value.get("url").and_then(Value::as_str).ok_or_else(|| invalid("no url"))?;
    let url = url::Url::parse(url).map_err(|_| invalid("url is not a URL"))?;
    let method = value.get("method").and_then(Value::as_str).ok_or_else(|| invalid("no method"))?.to_owned();
    let body = value.get("body").and_then(Value::as_str).unwrap_or_default().to_owned();
    let headers = value
        .get("headers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no headers"))?
        .iter()
        .map(|h| match (h.get("key").and_then(Value::as_str), h.get("value").and_then(Value::as_str)) {
            (Some(key), Some(value)) => Ok((key.to_ascii_lowercase(), value.to_owned())),
            _ => Err(invalid("a header without key and value")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SignedAwsRequest { url, method, headers, body })
}

/// Forwards the signed request to moto and returns the caller's ARN; falls
/// back on checking the signature itself when moto refuses a signature (see
/// the module documentation).
async fn caller_arn(state: &IdentityState, signed: &SignedAwsRequest) -> Result<String, StsRefusal> {
    let url = format!(
        "{}{}{}",
        state.moto.base_url,
        signed.url.path(),
        signed.url.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let method = Method::from_bytes(signed.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::POST);
    let mut forward = state.client.request(method, &url).body(signed.body.clone());
    for (name, value) in &signed.headers {
        forward = forward.header(name.as_str(), value.as_str());
    }
    let unreachable =
        |e: reqwest::Error| StsRefusal::new(StatusCode::BAD_GATEWAY, "server_error", format!("AWS STS at {url}: {e}"));
    let response = forward.send().await.map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if status.is_success() {
        return xml_element(&text, "Arn").map(str::to_owned).ok_or_else(|| {
            StsRefusal::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "AWS STS answered GetCallerIdentity without an Arn",
            )
        });
    }
    let code = xml_element(&text, "Code").unwrap_or("an error").to_owned();
    if code == "SignatureDoesNotMatch" {
        return verify_signature_with_moto_secrets(state, signed).await;
    }
    Err(StsRefusal::invalid_grant(
        StatusCode::UNAUTHORIZED,
        format!(
            "Received invalid AWS response of type {code} ({status}): the signature or credentials were refused by AWS."
        ),
    ))
}

fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim())
}

/// The SigV4 check AWS makes, with the secret moto holds for the access key.
async fn verify_signature_with_moto_secrets(
    state: &IdentityState,
    signed: &SignedAwsRequest,
) -> Result<String, StsRefusal> {
    let refused = |why: String| {
        StsRefusal::invalid_grant(StatusCode::UNAUTHORIZED, format!("The signature was refused by AWS: {why}."))
    };
    let authorization = signed.header("authorization").unwrap_or_default();
    let parsed = SigV4Authorization::parse(authorization).ok_or_else(|| refused("malformed Authorization".into()))?;
    let amz_date = signed.header("x-amz-date").unwrap_or_default();
    let signed_at = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| refused("malformed x-amz-date".into()))?
        .and_utc();
    if (Utc::now() - signed_at).num_seconds().abs() > AWS_SIGNATURE_WINDOW_SECS {
        return Err(refused("the request was signed more than 15 minutes from now".into()));
    }
    let scope: Vec<&str> = parsed.scope.split('/').collect();
    if scope.len() != 4 || scope[0] != &amz_date[..8] || scope[2] != "sts" || scope[3] != "aws4_request" {
        return Err(refused("the credential scope is not <date>/<region>/sts/aws4_request".into()));
    }
    let key = moto_access_key(state, &parsed.access_key_id).await?.ok_or_else(|| {
        StsRefusal::invalid_grant(
            StatusCode::UNAUTHORIZED,
            "Received invalid AWS response of type InvalidClientTokenId: the security token included in the request is invalid.",
        )
    })?;
    if let Some(session_token) = &key.session_token {
        if signed.header("x-amz-security-token") != Some(session_token.as_str())
            || !parsed.signed_headers.iter().any(|h| h == "x-amz-security-token")
        {
            return Err(refused("the session token is missing, unsigned or not the access key's".into()));
        }
    }
    for required in ["host", "x-amz-date"] {
        if !parsed.signed_headers.iter().any(|h| h == required) {
            return Err(refused(format!("{required} is not among the signed headers")));
        }
    }

    let mut canonical_headers = String::new();
    for name in &parsed.signed_headers {
        let value = signed.header(name).ok_or_else(|| refused(format!("signed header {name} is missing")))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let mut query: Vec<(String, String)> =
        signed.url.query_pairs().map(|(k, v)| (aws_uri_encode(&k), aws_uri_encode(&v))).collect();
    query.sort();
    let canonical_query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let path = if signed.url.path().is_empty() { "/" } else { signed.url.path() };
    let canonical_request = format!(
        "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
        signed.method.to_ascii_uppercase(),
        parsed.signed_headers.join(";"),
        sha256_hex(signed.body.as_bytes())
    );
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}", parsed.scope, sha256_hex(canonical_request.as_bytes()));
    let mut signing_key = format!("AWS4{}", key.secret_access_key).into_bytes();
    for part in [scope[0], scope[1], scope[2], scope[3]] {
        signing_key = hmac_sha256(&signing_key, part.as_bytes());
    }
    let expected: String =
        hmac_sha256(&signing_key, string_to_sign.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    if !constant_time_eq(expected.as_bytes(), parsed.signature.as_bytes()) {
        return Err(refused("SignatureDoesNotMatch".into()));
    }
    key.arn.ok_or_else(|| {
        StsRefusal::invalid_grant(
            StatusCode::FORBIDDEN,
            "The AWS caller is an IAM user, not an assumed role: only role sessions may federate.",
        )
    })
}

struct SigV4Authorization {
    access_key_id: String,
    /// `<date>/<region>/<service>/aws4_request`.
    scope: String,
    signed_headers: Vec<String>,
    signature: String,
}

impl SigV4Authorization {
    fn parse(header: &str) -> Option<SigV4Authorization> {
        let rest = header.trim().strip_prefix("AWS4-HMAC-SHA256")?.trim();
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let (access_key_id, scope) = credential?.split_once('/')?;
        Some(SigV4Authorization {
            access_key_id: access_key_id.to_owned(),
            scope: scope.to_owned(),
            signed_headers: signed_headers?.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature?.to_owned(),
        })
    }
}

/// An access key as moto holds it.
struct MotoAccessKey {
    secret_access_key: String,
    session_token: Option<String>,
    /// The assumed-role session's ARN; `None` for an IAM user's key.
    arn: Option<String>,
}

/// The access key `access_key_id` from moto's state dump, if moto knows it.
async fn moto_access_key(state: &IdentityState, access_key_id: &str) -> Result<Option<MotoAccessKey>, StsRefusal> {
    let url = format!("{}/moto-api/data.json", state.moto.base_url);
    let mut attempt = 0;
    let data: Value = loop {
        attempt += 1;
        let failure = match state.client.get(&url).send().await {
            Ok(response) if response.status().is_success() => match response.json::<Value>().await {
                Ok(data) => break data,
                Err(e) => e.to_string(),
            },
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) => e.to_string(),
        };
        if attempt >= DATA_JSON_ATTEMPTS {
            return Err(StsRefusal::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("could not read moto's state at {url} to check the signature: {failure}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let field = |entry: &Value, name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
    let entries = |service: &str, model: &str| {
        data.get(service).and_then(|s| s.get(model)).and_then(Value::as_array).cloned().unwrap_or_default()
    };
    if let Some(session) =
        entries("sts", "AssumedRole").iter().find(|e| field(e, "access_key_id").as_deref() == Some(access_key_id))
    {
        return Ok(Some(MotoAccessKey {
            secret_access_key: field(session, "secret_access_key").unwrap_or_default(),
            session_token: field(session, "session_token"),
            arn: field(session, "arn"),
        }));
    }
    Ok(entries("iam", "AccessKey")
        .iter()
        .find(|e| field(e, "access_key_id").as_deref() == Some(access_key_id) && field(e, "role_arn").is_none())
        .map(|user_key| MotoAccessKey {
            secret_access_key: field(user_key, "secret_access_key").unwrap_or_default(),
            session_token: None,
            arn: None,
        }))
}

/// SigV4's URI encoding: everything but unreserved characters as `%XX`.
fn aws_uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    digest::digest(&digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- answers ----

/// An error in the shape of Google's JSON APIs (IAM, IAM Credentials).
fn google_error(status: StatusCode, message: &str, status_name: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": {"code": status.as_u16(), "message": message, "status": status_name}}))
}

/// An error in STS's OAuth shape.
fn sts_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": error, "error_description": description}))
}

fn unauthenticated() -> Response<Full<Bytes>> {
    with_bearer_challenge(
        google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other \
             valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "UNAUTHENTICATED",
        ),
        GOOGLE_BEARER_CHALLENGE,
    )
}

fn permission_denied(permission: &str) -> Response<Full<Bytes>> {
    google_error(
        StatusCode::FORBIDDEN,
        &format!("Permission '{permission}' denied on resource (or it may not exist)."),
        "PERMISSION_DENIED",
    )
}

fn account_not_found(email: &str) -> Response<Full<Bytes>> {
    google_error(StatusCode::NOT_FOUND, &format!("Unknown service account {email}."), "NOT_FOUND")
}

/// The canonical `google.rpc.Code` name of an HTTP status, for injected faults.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIENCE: &str =
        "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/deliverers/providers/aws";

    #[test]
    fn the_aws_role_attribute_follows_googles_default_mapping() {
        assert_eq!(
            aws_role_attribute("arn:aws:iam::111122223333:role/deliver-gcs").as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/deliver-gcs")
        );
        assert_eq!(
            aws_role_attribute("arn:aws:iam::111122223333:role/service/deliver-gcs").as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/deliver-gcs")
        );
        assert_eq!(
            aws_role_attribute("arn:aws:sts::111122223333:assumed-role/deliver-gcs/session-1").as_deref(),
            Some("arn:aws:sts::111122223333:assumed-role/deliver-gcs")
        );
        for not_a_role in [
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::1111:role/short-account",
            "arn:aws:s3:::bucket",
            "deliver-gcs",
            "arn:aws:iam::111122223333:role/",
        ] {
            assert_eq!(aws_role_attribute(not_a_role), None, "{not_a_role}");
        }
    }

    #[test]
    fn the_principal_set_member_names_the_pool_and_the_role() {
        assert_eq!(
            principal_set_member(AUDIENCE, "arn:aws:iam::111122223333:role/deliver-gcs").as_deref(),
            Some(
                "principalSet://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/deliverers\
                 /attribute.aws_role/arn:aws:sts::111122223333:assumed-role/deliver-gcs"
            )
        );
        assert_eq!(
            principal_set_member(
                "//iam.googleapis.com/projects/x/locations/global",
                "arn:aws:iam::111122223333:role/r"
            ),
            None
        );
        assert_eq!(principal_set_member(AUDIENCE, "arn:aws:iam::111122223333:user/u"), None);
    }

    #[test]
    fn account_ids_follow_googles_rule() {
        for valid in ["tenant-42", "abcdef", "a-b-c-d-e-f", &"a".repeat(30)] {
            assert!(valid_account_id(valid), "{valid}");
        }
        for invalid in ["abcde", &"a".repeat(31), "1tenant", "tenant-", "Tenant42", "ten_ant", "ten.ant42", "-tenant"] {
            assert!(!valid_account_id(invalid), "{invalid}");
        }
    }

    #[test]
    fn routes_parse_as_the_apis_lay_them_out() {
        assert_eq!(Route::parse("/v1/token"), Route::Token);
        assert_eq!(Route::parse("/v1/projects/p-1/serviceAccounts"), Route::Accounts { project: "p-1".into() });
        assert_eq!(
            Route::parse("/v1/projects/-/serviceAccounts/a%40p.iam.gserviceaccount.com:generateAccessToken"),
            Route::Account {
                project: "-".into(),
                email: "a@p.iam.gserviceaccount.com".into(),
                action: Some("generateAccessToken".into())
            }
        );
        assert_eq!(
            Route::parse("/v1/projects/p/serviceAccounts/a@p.iam.gserviceaccount.com"),
            Route::Account { project: "p".into(), email: "a@p.iam.gserviceaccount.com".into(), action: None }
        );
        assert_eq!(Route::parse("/v1/projects/p/serviceAccounts/a/keys"), Route::Unknown);
        assert_eq!(Route::parse("/v2/token"), Route::Unknown);
    }

    #[test]
    fn durations_parse_as_protobuf_json() {
        assert_eq!(parse_duration("3600s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3600"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn the_sigv4_check_matches_awss_documented_example() {
        // The GET example of AWS's SigV4 documentation ("Signature Version 4
        // signing process" test suite, get-vanilla), secret
        // wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY.
        let mut key = b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_vec();
        for part in ["20150830", "us-east-1", "service", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let canonical_request =
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let signature: String =
            hmac_sha256(&key, string_to_sign.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
        assert_eq!(aws_uri_encode("2011-06-15 a/b~"), "2011-06-15%20a%2Fb~");
    }

    #[test]
    fn sigv4_authorization_headers_parse() {
        let parsed = SigV4Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261207/us-east-1/sts/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource, Signature=abc123",
        )
        .expect("parses");
        assert_eq!(parsed.access_key_id, "ASIAEXAMPLE");
        assert_eq!(parsed.scope, "20261207/us-east-1/sts/aws4_request");
        assert_eq!(parsed.signed_headers.len(), 4);
        assert_eq!(parsed.signature, "abc123");
        assert!(SigV4Authorization::parse("Bearer x").is_none());
    }

    #[test]
    fn an_empty_policy_leaves_bindings_out() {
        let policy = Policy { bindings: BTreeMap::new(), etag: "ACAB".into() };
        assert_eq!(policy.to_json(), json!({"version": 1, "etag": "ACAB"}));
        let mut bindings = BTreeMap::new();
        bindings.insert(
            TOKEN_CREATOR_ROLE.to_owned(),
            ["principalSet://b".to_owned(), "principalSet://a".to_owned()].into(),
        );
        let policy = Policy { bindings, etag: "x".into() };
        assert_eq!(policy.to_json()["bindings"][0]["members"], json!(["principalSet://a", "principalSet://b"]));
    }
}
