//! Who is calling: a Cognito ID token, checked here again although API
//! Gateway's JWT authorizer checked it already (a token that reaches the
//! function any other way, or locally, is held to the same rules). The
//! signature is verified with the user pool's published keys (JWKS) by the
//! maintained `jsonwebtoken` crate, RS256 only, so `alg: none` and any
//! other algorithm are refused; then the issuer (the pool), the audience
//! (our app client), `token_use` (`id`) and the expiry, against a clock
//! that tests can move. The tenant comes from the immutable
//! `custom:tenantId` attribute, and membership of the `operators` group
//! lets a caller act on any tenant. Tokens are never logged.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

/// The Cognito group whose members may act on every tenant.
pub const OPERATORS_GROUP: &str = "operators";
/// The user attribute that binds a user to a tenant.
pub const TENANT_ATTRIBUTE: &str = "custom:tenantId";
/// Keys are fetched again at most this often when a token names a key the
/// cached set does not have (a rotation), so garbage tokens cannot make us
/// hammer the JWKS endpoint.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(60);

/// Where the pool's tokens come from and whom they are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CognitoSettings {
    /// `https://cognito-idp.<region>.amazonaws.com/<userPoolId>`.
    pub issuer: String,
    /// The app client the tokens are issued to (their `aud`).
    pub client_id: String,
    /// The pool's JWKS: `<issuer>/.well-known/jwks.json` in AWS, the
    /// emulator's address locally.
    pub jwks_url: String,
}

impl CognitoSettings {
    /// The issuer AWS gives the pool `user_pool_id` in `region`.
    pub fn issuer_of(region: &str, user_pool_id: &str) -> String {
        format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}")
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user's `sub`.
    pub subject: String,
    pub email: Option<String>,
    /// The tenant the user belongs to (`custom:tenantId`).
    pub tenant_id: Option<String>,
    /// A member of the `operators` group.
    pub operator: bool,
}

/// Why a token was refused. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <Cognito ID token>")]
    Missing,
    #[error("the token is not a signed JWT this API accepts: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify with the user pool's keys")]
    BadSignature,
    #[error("the token was not issued by this API's user pool")]
    WrongIssuer,
    #[error("the token was issued to another app client")]
    WrongAudience,
    #[error("the token is a Cognito {0} token; send the ID token")]
    WrongTokenUse(String),
    #[error("the token expired; sign in again")]
    Expired,
    #[error("the user pool's keys could not be read: {0}")]
    Keys(String),
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    token_use: String,
    exp: i64,
    #[serde(default)]
    email: Option<String>,
    #[serde(rename = "custom:tenantId", default)]
    tenant_id: Option<String>,
    #[serde(rename = "cognito:groups", default)]
    groups: Vec<String>,
}

struct CachedKeys {
    keys: JwkSet,
    fetched: Instant,
}

/// Verifies ID tokens of one user pool and app client.
pub struct TokenVerifier {
    settings: CognitoSettings,
    http: reqwest::Client,
    keys: RwLock<Option<CachedKeys>>,
    /// Seconds since the epoch; tests pin it.
    now: fn() -> i64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn system_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl TokenVerifier {
    pub fn new(settings: CognitoSettings) -> TokenVerifier {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client can be built");
        TokenVerifier { settings, http, keys: RwLock::new(None), now: system_now }
    }

    /// The same verifier with its clock replaced.
    pub fn with_clock(mut self, now: fn() -> i64) -> TokenVerifier {
        self.now = now;
        self
    }

    pub fn settings(&self) -> &CognitoSettings {
        &self.settings
    }

    /// The caller a bearer token (the `Authorization` header's value, or
    /// `None`) stands for.
    pub async fn verify_header(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        self.verify(token).await
    }

    /// The caller `token` stands for.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = decode_header(token).map_err(|error| AuthError::Malformed(error.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Malformed(format!("algorithm {:?}; only RS256 is accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Malformed("the token names no key (kid)".to_owned()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked below against our own clock, with no leeway.
        validation.validate_exp = false;
        let claims = decode::<IdClaims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                jsonwebtoken::errors::ErrorKind::InvalidAudience => AuthError::WrongAudience,
                _ => AuthError::Malformed(error.to_string()),
            })?
            .claims;
        if claims.token_use != "id" {
            return Err(AuthError::WrongTokenUse(claims.token_use));
        }
        if claims.exp <= (self.now)() {
            return Err(AuthError::Expired);
        }
        Ok(Caller {
            subject: claims.sub,
            email: claims.email,
            tenant_id: claims.tenant_id.filter(|id| !id.is_empty()),
            operator: claims.groups.iter().any(|group| group == OPERATORS_GROUP),
        })
    }

    /// The key `kid`, from the cached set or, when it is not there, from a
    /// fresh copy of the pool's keys (at most once a minute).
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        {
            let cached = self.keys.read().await;
            if let Some(cached) = cached.as_ref() {
                if let Some(jwk) = cached.keys.find(kid) {
                    return DecodingKey::from_jwk(jwk).map_err(|error| AuthError::Keys(error.to_string()));
                }
                if cached.fetched.elapsed() < JWKS_REFETCH_AFTER {
                    return Err(AuthError::BadSignature);
                }
            }
        }
        let keys = self.fetch_keys().await?;
        let found = keys.find(kid).map(DecodingKey::from_jwk);
        *self.keys.write().await = Some(CachedKeys { keys, fetched: Instant::now() });
        match found {
            Some(key) => key.map_err(|error| AuthError::Keys(error.to_string())),
            None => Err(AuthError::BadSignature),
        }
    }

    async fn fetch_keys(&self) -> Result<JwkSet, AuthError> {
        let url = &self.settings.jwks_url;
        let response = self.http.get(url).send().await.map_err(|error| AuthError::Keys(format!("{url}: {error}")))?;
        if !response.status().is_success() {
            return Err(AuthError::Keys(format!("{url} answered HTTP {}", response.status().as_u16())));
        }
        let body = response.bytes().await.map_err(|error| AuthError::Keys(format!("{url}: {error}")))?;
        serde_json::from_slice::<JwkSet>(&body).map_err(|error| AuthError::Keys(format!("{url}: {error}")))
    }
}
