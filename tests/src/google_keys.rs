//! Google service accounts for tests, and the check a Google API front end
//! makes of the credentials they send. [`TestServiceAccount::generate`] makes
//! a 2048-bit RSA key and the key file JSON exactly as the Cloud console hands
//! it out, so `google_cloud_auth::credentials::service_account::Builder`
//! accepts it. That crate never calls a token endpoint for such keys: it signs
//! a JWT itself (RS256, `kid` = `private_key_id`, `iss` = `sub` =
//! `client_email`, `scope`, `iat`, `exp`) and sends it as
//! `Authorization: Bearer <jwt>`. [`verify_bearer`] checks such a JWT against
//! an [`AccountRegistry`] of the accounts a test has registered, the way
//! Google would: signature, key id, lifetime, scope.
//!
//! A registry also holds the short-lived opaque OAuth access tokens (`ya29.…`)
//! a double issued to an account, as IAM Credentials' `generateAccessToken`
//! does when a deliverer impersonates one of our service accounts
//! ([`AccountRegistry::issue_access_token`], and
//! [`crate::google_identity_double`]). [`verify_bearer`] accepts such a token
//! while it is live, its account known and not revoked, and one of its scopes
//! accepted. The registry keeps only a SHA-256 digest of each token, never the
//! token itself.
//!
//! This is test infrastructure: the keys are throwaway and live in memory
//! only. It must never be given a real key, must not reach Google, and must not
//! print or log a token or a private key (errors name the account and the
//! reason, never the credential).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

/// Scope of a token good for every Google Cloud API.
pub const SCOPE_CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Scope of a token that may read and write Cloud Storage objects.
pub const SCOPE_DEVSTORAGE_READ_WRITE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Scope of a token with full control of Cloud Storage.
pub const SCOPE_DEVSTORAGE_FULL_CONTROL: &str = "https://www.googleapis.com/auth/devstorage.full_control";
/// Scope of a token that may only read Cloud Storage: not enough to upload.
pub const SCOPE_DEVSTORAGE_READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";

/// How far a token's `iat` may lie in the future (clocks drift; google-cloud-auth
/// itself back-dates `iat` by 10 s).
const ALLOWED_CLOCK_SKEW_SECS: i64 = 300;

/// Google refuses self-signed JWTs valid for longer than an hour.
/// google-cloud-auth asks for 3600 s plus 10 s of skew at each end, so the
/// limit allows the skew on top.
const MAX_TOKEN_LIFETIME_SECS: i64 = 3600 + ALLOWED_CLOCK_SKEW_SECS;

/// A Google service account made for a test: its identity, its key file, and
/// the key pair (to check and to forge signatures with).
///
/// `Debug` shows the identity only, never the private key.
#[derive(Clone)]
pub struct TestServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    pub project_id: String,
    pub client_id: String,
    key_pair: Arc<KeyPair>,
    /// `RSAPublicKey` DER (RFC 8017), the form aws-lc-rs verifies against.
    public_key_der: Arc<[u8]>,
    key_json: Arc<Value>,
    /// The key file's text, pretty-printed in Google's field order.
    key_file: Arc<str>,
}

impl TestServiceAccount {
    /// The account `client_email` with a 2048-bit RSA key.
    ///
    /// Generating a key takes tens to hundreds of milliseconds, so keys are
    /// cached per email for the life of the process: calling this again with
    /// the same email returns the same key (as a Google account keeps its key
    /// until rotated). Distinct emails never share a key, so a token of one
    /// account can never pass for another's. Use [`Self::generate_new_key`] for
    /// a rotated key.
    ///
    /// # Panics
    /// When aws-lc-rs cannot generate or encode a key (which would make every
    /// test using accounts meaningless).
    pub fn generate(client_email: &str) -> Self {
        static CACHE: OnceLock<Mutex<HashMap<String, TestServiceAccount>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(account) = lock(cache).get(client_email) {
            return account.clone();
        }
        // Generated outside the lock, so that tests making different accounts
        // in parallel do not queue behind each other; if two threads race for
        // one email, the first to insert wins and both get its key.
        let account = Self::generate_new_key(client_email);
        lock(cache).entry(client_email.to_owned()).or_insert(account).clone()
    }

    /// The account `client_email` with a key made just now, never cached: a
    /// rotated key. Registering it in an [`AccountRegistry`] replaces the
    /// account's previous key there, so tokens signed with the old key are
    /// refused.
    ///
    /// # Panics
    /// As [`Self::generate`].
    pub fn generate_new_key(client_email: &str) -> Self {
        let key_pair = KeyPair::generate(KeySize::Rsa2048).expect("aws-lc-rs could not generate an RSA-2048 key");
        let pkcs8 = key_pair.as_der().expect("aws-lc-rs could not encode the RSA key as PKCS#8");
        let public_key_der: Arc<[u8]> = Arc::from(key_pair.public_key().as_ref());

        // Google's key ids are 40 hex digits; a digest of the public key gives
        // that shape and stays unique per key.
        let key_digest = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &public_key_der);
        let private_key_id = hex(key_digest.as_ref());
        // Google's client ids are 21 decimal digits; a u64 has at most 20.
        let client_id = format!("1{:020}", u64::from_be_bytes(key_digest.as_ref()[..8].try_into().unwrap_or([0; 8])));
        let project_id = project_of(client_email);

        // Field order and layout as in the file the Cloud console downloads
        // (serde_json's map would sort the keys).
        let fields = [
            ("type", "service_account".to_owned()),
            ("project_id", project_id.clone()),
            ("private_key_id", private_key_id.clone()),
            ("private_key", pem("PRIVATE KEY", pkcs8.as_ref())),
            ("client_email", client_email.to_owned()),
            ("client_id", client_id.clone()),
            ("auth_uri", "https://accounts.google.com/o/oauth2/auth".to_owned()),
            ("token_uri", "https://oauth2.googleapis.com/token".to_owned()),
            ("auth_provider_x509_cert_url", "https://www.googleapis.com/oauth2/v1/certs".to_owned()),
            (
                "client_x509_cert_url",
                format!("https://www.googleapis.com/robot/v1/metadata/x509/{}", client_email.replace('@', "%40")),
            ),
            ("universe_domain", "googleapis.com".to_owned()),
        ];
        let lines: Vec<String> =
            fields.iter().map(|(name, value)| format!("  {}: {}", json!(name), json!(value))).collect();
        let key_file = format!("{{\n{}\n}}\n", lines.join(",\n"));
        let key_json = serde_json::from_str(&key_file).expect("the key file is JSON by construction");

        Self {
            client_email: client_email.to_owned(),
            private_key_id,
            project_id,
            client_id,
            key_pair: Arc::new(key_pair),
            public_key_der,
            key_json: Arc::new(key_json),
            key_file: Arc::from(key_file),
        }
    }

    /// The key file, as `service_account::Builder::new` takes it.
    pub fn key_json(&self) -> Value {
        (*self.key_json).clone()
    }

    /// The key file as text, as downloaded from the Cloud console (fields in
    /// Google's order, two-space indent) and as a customer would paste it
    /// into a secret.
    pub fn key_json_string(&self) -> String {
        self.key_file.to_string()
    }

    /// Signs `header.claims` with this account's key (RS256) and returns the
    /// compact JWT. For tests that need a token google-cloud-auth would not
    /// make: expired, wrong scope, another account's claims.
    pub fn sign_jwt(&self, header: &Value, claims: &Value) -> String {
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .expect("aws-lc-rs could not sign with a key it generated");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The token google-cloud-auth would send for this account with `scopes`:
    /// RS256 with `kid`, `iss` = `sub` = email, `iat` 10 s ago, valid an hour.
    pub fn self_signed_jwt(&self, scopes: &[&str]) -> String {
        let now = unix_now();
        self.sign_jwt(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id}),
            &json!({
                "iss": self.client_email,
                "sub": self.client_email,
                "scope": scopes.join(" "),
                "iat": now - 10,
                "exp": now + 3610,
            }),
        )
    }
}

impl fmt::Debug for TestServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

/// The accounts a fake Google front end knows, shared by clones (cheap to
/// clone, safe to use from any thread). An account absent from it is unknown,
/// as a deleted account would be; a revoked one is known but refused, as an
/// account whose key was deleted or disabled would be.
///
/// It also holds the opaque access tokens issued to its accounts
/// ([`Self::issue_access_token`], [`Self::accept_access_token`]), by digest.
#[derive(Clone, Default)]
pub struct AccountRegistry {
    accounts: Arc<Mutex<HashMap<String, RegisteredAccount>>>,
    /// Issued access tokens by the hex SHA-256 digest of the token.
    access_tokens: Arc<Mutex<HashMap<String, IssuedAccessToken>>>,
}

#[derive(Clone)]
struct RegisteredAccount {
    /// `None` for an account known without a key (made through IAM; its only
    /// credentials are access tokens issued for it).
    key: Option<AccountKey>,
    revoked: bool,
}

#[derive(Clone)]
struct AccountKey {
    private_key_id: String,
    public_key_der: Arc<[u8]>,
}

#[derive(Clone)]
struct IssuedAccessToken {
    client_email: String,
    scopes: Vec<String>,
    expires_at: SystemTime,
}

/// The longest lifetime [`AccountRegistry::issue_access_token`] grants, as
/// `generateAccessToken` without the organisation policy that extends it.
pub const MAX_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A new opaque access token in the shape of Google's: `ya29.` and 48
/// base64url characters (36 random bytes) — no dots after the prefix, so
/// never three dot-separated parts like a JWT.
///
/// # Panics
/// When the system's random source fails (aws-lc-rs).
pub fn new_access_token() -> String {
    let mut bytes = [0u8; 36];
    SystemRandom::new().fill(&mut bytes).expect("aws-lc-rs could not read random bytes");
    format!("ya29.{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl AccountRegistry {
    /// Makes `account` (with its current key) known and valid. Registering
    /// an account again replaces its key and lifts a revocation.
    pub fn register(&self, account: &TestServiceAccount) {
        lock(&self.accounts).insert(
            account.client_email.clone(),
            RegisteredAccount {
                key: Some(AccountKey {
                    private_key_id: account.private_key_id.clone(),
                    public_key_der: Arc::clone(&account.public_key_der),
                }),
                revoked: false,
            },
        );
    }

    /// Makes `client_email` known without a key, as an account created
    /// through IAM is before anyone makes a key for it: only access tokens
    /// issued for it authenticate it. An account already known keeps its key
    /// and its revocation.
    pub fn register_without_key(&self, client_email: &str) {
        lock(&self.accounts).entry(client_email.to_owned()).or_insert(RegisteredAccount { key: None, revoked: false });
    }

    /// Issues a new opaque access token (see [`new_access_token`]) for
    /// `client_email` carrying `scopes`, valid for `lifetime` (at most
    /// [`MAX_ACCESS_TOKEN_LIFETIME`]; longer is cut to it), and returns it.
    /// An unknown email becomes known without a key
    /// ([`Self::register_without_key`]); a revoked one stays revoked, so the
    /// token is refused until the account is registered again.
    pub fn issue_access_token(&self, client_email: &str, scopes: &[String], lifetime: Duration) -> String {
        let token = new_access_token();
        let expires_at = SystemTime::now() + lifetime.min(MAX_ACCESS_TOKEN_LIFETIME);
        self.accept_access_token(&token, client_email, scopes, expires_at);
        token
    }

    /// Makes `token`, issued elsewhere (e.g. by another registry or a double
    /// issuing one token into several registries), valid here for
    /// `client_email` with `scopes` until `expires_at`. An unknown email
    /// becomes known without a key, as for [`Self::issue_access_token`].
    pub fn accept_access_token(&self, token: &str, client_email: &str, scopes: &[String], expires_at: SystemTime) {
        self.register_without_key(client_email);
        lock(&self.access_tokens).insert(
            token_digest(token),
            IssuedAccessToken { client_email: client_email.to_owned(), scopes: scopes.to_vec(), expires_at },
        );
    }

    /// Refuses every token of `client_email` from now on, including ones
    /// already handed out (as deleting a key does at Google). Unknown emails
    /// are ignored.
    pub fn revoke(&self, client_email: &str) {
        if let Some(account) = lock(&self.accounts).get_mut(client_email) {
            account.revoked = true;
        }
    }

    /// Whether `client_email` is registered and not revoked.
    pub fn is_active(&self, client_email: &str) -> bool {
        lock(&self.accounts).get(client_email).is_some_and(|a| !a.revoked)
    }

    fn lookup(&self, client_email: &str) -> Option<RegisteredAccount> {
        lock(&self.accounts).get(client_email).cloned()
    }

    fn lookup_access_token(&self, token: &str) -> Option<IssuedAccessToken> {
        lock(&self.access_tokens).get(&token_digest(token)).cloned()
    }
}

/// The hex SHA-256 digest under which a registry files a token.
fn token_digest(token: &str) -> String {
    hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// Why a bearer credential was refused. The text names the account and the
/// reason, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    MissingCredentials,
    /// Not `Bearer <header>.<claims>.<signature>` with base64url JSON parts,
    /// nor `Bearer <opaque token>`.
    Malformed(String),
    /// An opaque (non-JWT) token the registry never issued (or issued in
    /// another registry only).
    UnknownAccessToken,
    /// A signature algorithm other than RS256.
    UnsupportedAlgorithm(String),
    /// `iss` is no registered account.
    UnknownAccount(String),
    /// The account was revoked.
    Revoked(String),
    /// `kid` is not the account's current key id (missing, or an old key),
    /// or the account has no key.
    KeyIdMismatch(String),
    /// The signature does not verify with the account's key.
    BadSignature(String),
    /// `exp` has passed.
    Expired(String),
    /// `iat` is further in the future than clock skew explains.
    IssuedInFuture(String),
    /// `exp - iat` exceeds the hour Google allows.
    LifetimeTooLong(String),
    /// None of the accepted scopes (nor, without scopes, the audience) is in
    /// the token; `granted` is what the token carries.
    WrongScope { client_email: String, granted: Vec<String> },
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingCredentials => write!(f, "no Authorization header"),
            Self::Malformed(why) => write!(f, "malformed bearer token: {why}"),
            Self::UnknownAccessToken => write!(f, "the access token was never issued here"),
            Self::UnsupportedAlgorithm(alg) => write!(f, "unsupported JWT algorithm {alg:?} (only RS256)"),
            Self::UnknownAccount(email) => write!(f, "unknown service account {email}"),
            Self::Revoked(email) => write!(f, "service account {email} is revoked"),
            Self::KeyIdMismatch(email) => write!(f, "token of {email} names a key id that is not the account's key"),
            Self::BadSignature(email) => write!(f, "token of {email} has a signature its key does not verify"),
            Self::Expired(email) => write!(f, "token of {email} has expired"),
            Self::IssuedInFuture(email) => write!(f, "token of {email} is issued in the future"),
            Self::LifetimeTooLong(email) => write!(f, "token of {email} is valid for more than an hour"),
            Self::WrongScope { client_email, granted } => {
                write!(f, "token of {client_email} lacks an accepted scope (has {granted:?})")
            }
        }
    }
}

impl std::error::Error for AuthFailure {}

/// Checks `authorization` (the header's value) as Google checks a self-signed
/// service-account JWT, and returns the account's email.
///
/// Accepted when: it is `Bearer <jwt>`; the JWT is RS256; `iss` is an active
/// account of `registry` and `kid` its current key id; the signature verifies
/// with that key; `exp` is in the future, `iat` not beyond clock skew ahead,
/// and the lifetime at most an hour; and at least one of `accepted_scopes` is
/// among the token's `scope` claim (or, when it has none, is its `aud`).
///
/// Or when it is `Bearer <opaque token>` (anything but three dot-separated
/// parts) that `registry` issued ([`AccountRegistry::issue_access_token`] /
/// [`AccountRegistry::accept_access_token`]), not yet expired, for an account
/// of `registry` that is not revoked, with at least one of `accepted_scopes`
/// among the scopes it was issued with.
pub fn verify_bearer(
    registry: &AccountRegistry,
    authorization: Option<&str>,
    accepted_scopes: &[&str],
) -> Result<String, AuthFailure> {
    let credential = authorization.ok_or(AuthFailure::MissingCredentials)?.trim();
    let token = match credential.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(malformed("not a Bearer credential")),
    };
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(malformed("no token after Bearer"));
    }
    let mut parts = token.split('.');
    let (Some(header_part), Some(claims_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return verify_access_token(registry, token, accepted_scopes);
    };
    let header = decode_json_part(header_part, "header")?;
    let claims = decode_json_part(claims_part, "claims")?;
    let signature = URL_SAFE_NO_PAD.decode(signature_part).map_err(|_| malformed("signature is not base64url"))?;

    match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => {}
        other => return Err(AuthFailure::UnsupportedAlgorithm(other.unwrap_or("<none>").to_owned())),
    }
    let email = claims.get("iss").and_then(Value::as_str).ok_or_else(|| malformed("no iss claim"))?.to_owned();
    let account = registry.lookup(&email).ok_or_else(|| AuthFailure::UnknownAccount(email.clone()))?;
    if account.revoked {
        return Err(AuthFailure::Revoked(email));
    }
    let Some(key) = account.key.filter(|key| header.get("kid").and_then(Value::as_str) == Some(&key.private_key_id))
    else {
        return Err(AuthFailure::KeyIdMismatch(email));
    };
    let signing_input = &token[..header_part.len() + 1 + claims_part.len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &*key.public_key_der)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| AuthFailure::BadSignature(email.clone()))?;

    // A service account's self-signed JWT asserts its own identity only;
    // another `sub` would be impersonation, which needs a token exchange.
    if claims.get("sub").and_then(Value::as_str).is_some_and(|sub| sub != email) {
        return Err(malformed("sub differs from iss"));
    }
    let now = unix_now();
    let expires = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| malformed("no numeric exp claim"))?;
    let issued = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| malformed("no numeric iat claim"))?;
    if expires <= now {
        return Err(AuthFailure::Expired(email));
    }
    if issued > now + ALLOWED_CLOCK_SKEW_SECS {
        return Err(AuthFailure::IssuedInFuture(email));
    }
    if expires - issued > MAX_TOKEN_LIFETIME_SECS {
        return Err(AuthFailure::LifetimeTooLong(email));
    }

    let granted: Vec<String> = match claims.get("scope").and_then(Value::as_str) {
        Some(scopes) => scopes.split_whitespace().map(str::to_owned).collect(),
        // A token made for an audience instead of scopes: Google accepts it
        // when the audience is the API's own.
        None => match claims.get("aud") {
            Some(Value::String(audience)) => vec![audience.clone()],
            Some(Value::Array(audiences)) => audiences.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        },
    };
    if granted.iter().any(|g| accepted_scopes.contains(&g.as_str())) {
        Ok(email)
    } else {
        Err(AuthFailure::WrongScope { client_email: email, granted })
    }
}

/// The opaque-token half of [`verify_bearer`].
fn verify_access_token(
    registry: &AccountRegistry,
    token: &str,
    accepted_scopes: &[&str],
) -> Result<String, AuthFailure> {
    let issued = registry.lookup_access_token(token).ok_or(AuthFailure::UnknownAccessToken)?;
    let email = issued.client_email;
    let account = registry.lookup(&email).ok_or_else(|| AuthFailure::UnknownAccount(email.clone()))?;
    if account.revoked {
        return Err(AuthFailure::Revoked(email));
    }
    if issued.expires_at <= SystemTime::now() {
        return Err(AuthFailure::Expired(email));
    }
    if issued.scopes.iter().any(|g| accepted_scopes.contains(&g.as_str())) {
        Ok(email)
    } else {
        Err(AuthFailure::WrongScope { client_email: email, granted: issued.scopes })
    }
}

fn malformed(why: &str) -> AuthFailure {
    AuthFailure::Malformed(why.to_owned())
}

fn decode_json_part(part: &str, what: &str) -> Result<Value, AuthFailure> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed(&format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(malformed(&format!("{what} is not a JSON object"))),
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `name@project.iam.gserviceaccount.com` belongs to `project`; other emails
/// get a fixed test project.
fn project_of(client_email: &str) -> String {
    client_email
        .split_once('@')
        .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
        .filter(|project| !project.is_empty())
        .unwrap_or("test-project")
        .to_owned()
}

/// PEM armour as Google writes it: base64 in 64-character lines, each ending
/// in a newline, and a newline after the footer.
fn pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Locks `mutex`, carrying on after a panic elsewhere: the maps guarded here
/// stay consistent whatever a panicking test was doing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTED: &[&str] = &[SCOPE_DEVSTORAGE_READ_WRITE, SCOPE_DEVSTORAGE_FULL_CONTROL, SCOPE_CLOUD_PLATFORM];

    fn registered(email: &str) -> (AccountRegistry, TestServiceAccount) {
        let registry = AccountRegistry::default();
        let account = TestServiceAccount::generate(email);
        registry.register(&account);
        (registry, account)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn claims_of(account: &TestServiceAccount, scope: &str, iat: i64, exp: i64) -> Value {
        json!({"iss": account.client_email, "sub": account.client_email, "scope": scope, "iat": iat, "exp": exp})
    }

    fn header_of(account: &TestServiceAccount) -> Value {
        json!({"alg": "RS256", "typ": "JWT", "kid": account.private_key_id})
    }

    #[test]
    fn key_file_has_the_shape_google_hands_out() {
        let account = TestServiceAccount::generate("uploader@acme-prod.iam.gserviceaccount.com");
        let key = account.key_json();
        assert_eq!(key["type"], "service_account");
        assert_eq!(key["project_id"], "acme-prod");
        assert_eq!(key["client_email"], "uploader@acme-prod.iam.gserviceaccount.com");
        assert_eq!(key["token_uri"], "https://oauth2.googleapis.com/token");
        assert_eq!(key["universe_domain"], "googleapis.com");
        let private_key_id = key["private_key_id"].as_str().expect("private_key_id");
        assert_eq!(private_key_id.len(), 40);
        assert!(private_key_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(key["client_id"].as_str().map(str::len), Some(21));

        let pem = key["private_key"].as_str().expect("private_key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", &pem[..40]);
        assert!(pem.ends_with("\n-----END PRIVATE KEY-----\n"));
        let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        let der = STANDARD.decode(body.concat()).expect("PEM body is base64");
        KeyPair::from_pkcs8(&der).expect("PEM body is a PKCS#8 RSA key");

        let text = account.key_json_string();
        let round_trip: Value = serde_json::from_str(&text).expect("key_json_string is JSON");
        assert_eq!(round_trip, key);
        assert!(
            text.starts_with("{\n  \"type\": \"service_account\",\n  \"project_id\": \"acme-prod\",\n"),
            "{:.60}",
            text
        );
        assert!(text.ends_with(",\n  \"universe_domain\": \"googleapis.com\"\n}\n"));
        assert!(text.contains("\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n"));
        assert!(!format!("{account:?}").contains("PRIVATE"));
    }

    #[test]
    fn keys_are_cached_per_email_and_distinct_between_emails() {
        let first = TestServiceAccount::generate("cache-a@test.iam.gserviceaccount.com");
        let again = TestServiceAccount::generate("cache-a@test.iam.gserviceaccount.com");
        let other = TestServiceAccount::generate("cache-b@test.iam.gserviceaccount.com");
        let rotated = TestServiceAccount::generate_new_key("cache-a@test.iam.gserviceaccount.com");
        assert_eq!(first.private_key_id, again.private_key_id);
        assert_ne!(first.private_key_id, other.private_key_id);
        assert_ne!(first.private_key_id, rotated.private_key_id);
    }

    #[test]
    fn a_self_signed_token_verifies() {
        let (registry, account) = registered("signs@test.iam.gserviceaccount.com");
        let token = account.self_signed_jwt(&[SCOPE_DEVSTORAGE_READ_WRITE]);
        assert_eq!(verify_bearer(&registry, Some(&bearer(&token)), ACCEPTED), Ok(account.client_email.clone()));
        // Any of several scopes will do.
        let token = account.self_signed_jwt(&[SCOPE_DEVSTORAGE_READ_ONLY, SCOPE_CLOUD_PLATFORM]);
        assert_eq!(verify_bearer(&registry, Some(&bearer(&token)), ACCEPTED), Ok(account.client_email.clone()));
    }

    #[test]
    fn an_audience_token_verifies_when_the_audience_is_accepted() {
        let (registry, account) = registered("audience@test.iam.gserviceaccount.com");
        let now = unix_now();
        let claims = json!({"iss": account.client_email, "sub": account.client_email,
            "aud": "https://storage.googleapis.com/", "iat": now, "exp": now + 600});
        let token = bearer(&account.sign_jwt(&header_of(&account), &claims));
        assert!(verify_bearer(&registry, Some(&token), &["https://storage.googleapis.com/"]).is_ok());
        assert!(matches!(verify_bearer(&registry, Some(&token), ACCEPTED), Err(AuthFailure::WrongScope { .. })));
    }

    #[test]
    fn missing_and_malformed_credentials_are_refused() {
        let (registry, account) = registered("malformed@test.iam.gserviceaccount.com");
        assert_eq!(verify_bearer(&registry, None, ACCEPTED), Err(AuthFailure::MissingCredentials));
        let token = account.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]);
        for header in [
            format!("Basic {token}"),
            token.clone(),
            "Bearer ".to_owned(),
            "Bearer a b".to_owned(),
            "Bearer !!!.b.c".to_owned(),
        ] {
            assert!(
                matches!(verify_bearer(&registry, Some(&header), ACCEPTED), Err(AuthFailure::Malformed(_))),
                "{header:.20}"
            );
        }
        // Not three parts: taken for an opaque access token, which this
        // registry never issued.
        for header in
            ["Bearer a.b".to_owned(), format!("Bearer {token}.extra"), format!("Bearer {}", new_access_token())]
        {
            assert_eq!(verify_bearer(&registry, Some(&header), ACCEPTED), Err(AuthFailure::UnknownAccessToken));
        }
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let (registry, account) = registered("tampered@test.iam.gserviceaccount.com");
        let token = account.self_signed_jwt(&[SCOPE_DEVSTORAGE_READ_ONLY]);
        let [header, _, signature]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().expect("three parts");
        let now = unix_now();
        // Widen the scope without re-signing.
        let forged_claims =
            URL_SAFE_NO_PAD.encode(claims_of(&account, SCOPE_DEVSTORAGE_FULL_CONTROL, now, now + 600).to_string());
        let forged = format!("Bearer {header}.{forged_claims}.{signature}");
        assert_eq!(
            verify_bearer(&registry, Some(&forged), ACCEPTED),
            Err(AuthFailure::BadSignature(account.client_email.clone()))
        );
    }

    #[test]
    fn a_token_signed_with_another_accounts_key_is_refused() {
        let registry = AccountRegistry::default();
        let victim = TestServiceAccount::generate("victim@test.iam.gserviceaccount.com");
        let attacker = TestServiceAccount::generate("attacker@test.iam.gserviceaccount.com");
        registry.register(&victim);
        registry.register(&attacker);
        let now = unix_now();
        let claims = claims_of(&victim, SCOPE_CLOUD_PLATFORM, now, now + 600);
        // Claiming the victim's key id, signed with the attacker's key.
        let forged = bearer(&attacker.sign_jwt(&header_of(&victim), &claims));
        assert_eq!(
            verify_bearer(&registry, Some(&forged), ACCEPTED),
            Err(AuthFailure::BadSignature(victim.client_email.clone()))
        );
        // Honest about the key id: the key is not the victim's.
        let forged = bearer(&attacker.sign_jwt(&header_of(&attacker), &claims));
        assert_eq!(
            verify_bearer(&registry, Some(&forged), ACCEPTED),
            Err(AuthFailure::KeyIdMismatch(victim.client_email.clone()))
        );
    }

    #[test]
    fn a_rotated_key_replaces_the_old_one() {
        let registry = AccountRegistry::default();
        let old = TestServiceAccount::generate("rotates@test.iam.gserviceaccount.com");
        registry.register(&old);
        let old_token = bearer(&old.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]));
        let new = TestServiceAccount::generate_new_key("rotates@test.iam.gserviceaccount.com");
        registry.register(&new);
        assert_eq!(
            verify_bearer(&registry, Some(&old_token), ACCEPTED),
            Err(AuthFailure::KeyIdMismatch(old.client_email.clone()))
        );
        let new_token = bearer(&new.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]));
        assert!(verify_bearer(&registry, Some(&new_token), ACCEPTED).is_ok());
    }

    #[test]
    fn expired_future_and_overlong_tokens_are_refused() {
        let (registry, account) = registered("clock@test.iam.gserviceaccount.com");
        let now = unix_now();
        let email = account.client_email.clone();
        let cases = [
            (now - 7200, now - 3600, AuthFailure::Expired(email.clone())),
            (now - 3600, now - 1, AuthFailure::Expired(email.clone())),
            (now + 3600, now + 3700, AuthFailure::IssuedInFuture(email.clone())),
            (now, now + 86_400, AuthFailure::LifetimeTooLong(email.clone())),
        ];
        for (iat, exp, want) in cases {
            let token =
                bearer(&account.sign_jwt(&header_of(&account), &claims_of(&account, SCOPE_CLOUD_PLATFORM, iat, exp)));
            assert_eq!(verify_bearer(&registry, Some(&token), ACCEPTED), Err(want));
        }
        // Within the allowed skew.
        let token = bearer(
            &account.sign_jwt(&header_of(&account), &claims_of(&account, SCOPE_CLOUD_PLATFORM, now + 60, now + 3600)),
        );
        assert!(verify_bearer(&registry, Some(&token), ACCEPTED).is_ok());
    }

    #[test]
    fn revoked_and_unknown_accounts_are_refused() {
        let (registry, account) = registered("revoked@test.iam.gserviceaccount.com");
        let token = bearer(&account.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]));
        assert!(registry.is_active(&account.client_email));
        registry.revoke(&account.client_email);
        assert!(!registry.is_active(&account.client_email));
        assert_eq!(
            verify_bearer(&registry, Some(&token), ACCEPTED),
            Err(AuthFailure::Revoked(account.client_email.clone()))
        );
        registry.register(&account);
        assert!(verify_bearer(&registry, Some(&token), ACCEPTED).is_ok());

        let stranger = TestServiceAccount::generate("stranger@test.iam.gserviceaccount.com");
        let token = bearer(&stranger.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]));
        assert_eq!(
            verify_bearer(&registry, Some(&token), ACCEPTED),
            Err(AuthFailure::UnknownAccount(stranger.client_email.clone()))
        );
    }

    #[test]
    fn a_token_without_an_accepted_scope_is_refused() {
        let (registry, account) = registered("scope@test.iam.gserviceaccount.com");
        let token = bearer(&account.self_signed_jwt(&[SCOPE_DEVSTORAGE_READ_ONLY]));
        assert_eq!(
            verify_bearer(&registry, Some(&token), ACCEPTED),
            Err(AuthFailure::WrongScope {
                client_email: account.client_email.clone(),
                granted: vec![SCOPE_DEVSTORAGE_READ_ONLY.to_owned()],
            })
        );
    }

    #[test]
    fn other_algorithms_and_impersonation_are_refused() {
        let (registry, account) = registered("alg@test.iam.gserviceaccount.com");
        let now = unix_now();
        let claims = claims_of(&account, SCOPE_CLOUD_PLATFORM, now, now + 600);
        let none_alg = bearer(&account.sign_jwt(&json!({"alg": "none", "kid": account.private_key_id}), &claims));
        assert_eq!(
            verify_bearer(&registry, Some(&none_alg), ACCEPTED),
            Err(AuthFailure::UnsupportedAlgorithm("none".to_owned()))
        );
        let mut claims = claims;
        claims["sub"] = json!("someone-else@example.com");
        let impersonating = bearer(&account.sign_jwt(&header_of(&account), &claims));
        assert!(matches!(verify_bearer(&registry, Some(&impersonating), ACCEPTED), Err(AuthFailure::Malformed(_))));
    }

    #[test]
    fn failures_never_print_the_token() {
        let (registry, account) = registered("quiet@test.iam.gserviceaccount.com");
        let token = account.self_signed_jwt(&[SCOPE_DEVSTORAGE_READ_ONLY]);
        let failure = verify_bearer(&registry, Some(&bearer(&token)), ACCEPTED).expect_err("wrong scope");
        let signature = token.rsplit('.').next().expect("signature part");
        assert!(!failure.to_string().contains(signature));
        assert!(!format!("{failure:?}").contains(signature));
    }

    fn scopes(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn access_tokens_have_googles_shape_and_differ() {
        let first = new_access_token();
        let second = new_access_token();
        assert_ne!(first, second);
        for token in [&first, &second] {
            let random = token.strip_prefix("ya29.").expect("ya29. prefix");
            assert_eq!(random.len(), 48, "{}", token.len());
            assert!(random.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }
    }

    #[test]
    fn an_issued_access_token_verifies_for_its_account_with_an_accepted_scope() {
        let registry = AccountRegistry::default();
        let email = "deliverer@ours.iam.gserviceaccount.com";
        let token =
            registry.issue_access_token(email, &scopes(&[SCOPE_DEVSTORAGE_READ_WRITE]), Duration::from_secs(600));
        assert!(registry.is_active(email), "issuing makes the account known");
        assert_eq!(verify_bearer(&registry, Some(&bearer(&token)), ACCEPTED), Ok(email.to_owned()));
        assert_eq!(
            verify_bearer(&registry, Some(&bearer(&token)), &[SCOPE_DEVSTORAGE_READ_ONLY]),
            Err(AuthFailure::WrongScope {
                client_email: email.to_owned(),
                granted: vec![SCOPE_DEVSTORAGE_READ_WRITE.to_owned()]
            })
        );
        // Another registry (another API's front end) never saw it.
        let other = AccountRegistry::default();
        other.register_without_key(email);
        assert_eq!(verify_bearer(&other, Some(&bearer(&token)), ACCEPTED), Err(AuthFailure::UnknownAccessToken));
        // Unless the token was accepted there too, as a double issuing into
        // several registries does.
        other.accept_access_token(
            &token,
            email,
            &scopes(&[SCOPE_CLOUD_PLATFORM]),
            SystemTime::now() + Duration::from_secs(60),
        );
        assert_eq!(verify_bearer(&other, Some(&bearer(&token)), ACCEPTED), Ok(email.to_owned()));
    }

    #[test]
    fn expired_and_revoked_access_tokens_are_refused() {
        let registry = AccountRegistry::default();
        let email = "expiring@ours.iam.gserviceaccount.com";
        let granted = scopes(&[SCOPE_CLOUD_PLATFORM]);
        let token = new_access_token();
        registry.accept_access_token(&token, email, &granted, SystemTime::now() - Duration::from_secs(1));
        assert_eq!(
            verify_bearer(&registry, Some(&bearer(&token)), ACCEPTED),
            Err(AuthFailure::Expired(email.to_owned()))
        );

        let live = registry.issue_access_token(email, &granted, Duration::from_secs(600));
        assert!(verify_bearer(&registry, Some(&bearer(&live)), ACCEPTED).is_ok());
        registry.revoke(email);
        assert_eq!(
            verify_bearer(&registry, Some(&bearer(&live)), ACCEPTED),
            Err(AuthFailure::Revoked(email.to_owned()))
        );
        // Issuing again does not lift the revocation.
        let after = registry.issue_access_token(email, &granted, Duration::from_secs(600));
        assert_eq!(
            verify_bearer(&registry, Some(&bearer(&after)), ACCEPTED),
            Err(AuthFailure::Revoked(email.to_owned()))
        );
    }

    #[test]
    fn lifetimes_are_capped_at_an_hour() {
        let registry = AccountRegistry::default();
        let email = "long@ours.iam.gserviceaccount.com";
        let token = registry.issue_access_token(email, &scopes(&[SCOPE_CLOUD_PLATFORM]), Duration::from_secs(86_400));
        let issued = registry.lookup_access_token(&token).expect("issued");
        let left = issued.expires_at.duration_since(SystemTime::now()).expect("in the future");
        assert!(left <= MAX_ACCESS_TOKEN_LIFETIME, "{left:?}");
        assert!(left > MAX_ACCESS_TOKEN_LIFETIME - Duration::from_secs(60), "{left:?}");
    }

    #[test]
    fn a_keyless_account_authenticates_by_access_token_only_and_keeps_a_key_it_had() {
        let registry = AccountRegistry::default();
        let keyless = TestServiceAccount::generate("keyless@ours.iam.gserviceaccount.com");
        registry.register_without_key(&keyless.client_email);
        let jwt = bearer(&keyless.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]));
        assert_eq!(
            verify_bearer(&registry, Some(&jwt), ACCEPTED),
            Err(AuthFailure::KeyIdMismatch(keyless.client_email.clone()))
        );
        // An account with a key keeps it when issued a token.
        let (registry, account) = registered("keyed@ours.iam.gserviceaccount.com");
        registry.issue_access_token(&account.client_email, &scopes(&[SCOPE_CLOUD_PLATFORM]), Duration::from_secs(60));
        let jwt = bearer(&account.self_signed_jwt(&[SCOPE_CLOUD_PLATFORM]));
        assert!(verify_bearer(&registry, Some(&jwt), ACCEPTED).is_ok());
    }

    #[test]
    fn the_registry_keeps_no_access_token_and_failures_do_not_print_one() {
        let registry = AccountRegistry::default();
        let email = "secretive@ours.iam.gserviceaccount.com";
        let token = registry.issue_access_token(email, &scopes(&[SCOPE_DEVSTORAGE_READ_ONLY]), Duration::from_secs(60));
        assert!(!lock(&registry.access_tokens).keys().any(|k| k.contains(&token[5..])));
        let failure = verify_bearer(&registry, Some(&bearer(&token)), ACCEPTED).expect_err("wrong scope");
        assert!(!failure.to_string().contains(&token[5..]));
        assert!(!format!("{failure:?}").contains(&token[5..]));
        let unknown = new_access_token();
        let failure = verify_bearer(&registry, Some(&bearer(&unknown)), ACCEPTED).expect_err("unknown");
        assert!(!failure.to_string().contains(&unknown[5..]));
    }
}
