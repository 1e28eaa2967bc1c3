//! Short-lived tokens of a tenant's Google identity: with the federated
//! credentials of our function's AWS role, IAM Credentials'
//! `generateAccessToken` for `pr-…@<project>.iam.gserviceaccount.com`,
//! allowed only when onboarding bound our deliverers' principal set to
//! `roles/iam.serviceAccountTokenCreator` on that one account. Tokens are
//! cached per account and scope until five minutes before they expire, so
//! a warm function pays the exchange and the impersonation once an hour per
//! tenant. [`TenantIdentities::credentials`] wraps them as
//! `google-cloud-auth` credentials for Google's own clients.
//!
//! Failures say whose move it is: a refused impersonation is ours
//! (onboarding did not grant it, or the account is gone), a refused
//! federation is ours (the pool, the provider or its conditions), and
//! neither is ever the customer's: both emit the `GoogleIdentityFailures`
//! metric the template alarms on. No token is logged or put in an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::{CacheableResource, Credentials, CredentialsProvider, EntityTag};
use google_cloud_auth::errors::CredentialsError;
use http::{Extensions, HeaderMap, HeaderValue};
use serde_json::Value;

use super::account::tenant_service_account;
use super::federation::FederationConfig;
use crate::aws_errors::cut;

/// A token is used until this long before it expires.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// The lifetime asked for (Google's maximum without an org-policy exception).
const TOKEN_LIFETIME: &str = "3600s";

/// Why a tenant's token could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImpersonationError {
    #[error(
        "our deliverers may not impersonate {account} (Google answered {status}: {message}); the account is \
         missing or roles/iam.serviceAccountTokenCreator was not granted to our deliverers on it: run \
         `popularity tenant add` for this tenant again (our side to fix, not the customer's)"
    )]
    NotAllowed { account: String, status: u16, message: String },
    #[error(
        "the workload identity federation from our AWS role to Google failed (our side to fix: the pool, the \
         AWS provider or its allowed roles): {0}"
    )]
    Federation(String),
    #[error("IAM Credentials did not answer for {account}: {detail}")]
    Unavailable { account: String, detail: String },
}

impl ImpersonationError {
    /// Worth trying again later (Google busy, a connection cut).
    pub fn is_transient(&self) -> bool {
        matches!(self, ImpersonationError::Unavailable { .. })
    }
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    fresh_until: Instant,
}

struct Shared {
    federated: Credentials,
    http: reqwest::Client,
    iam_credentials_endpoint: String,
    project_id: String,
    cache: Mutex<HashMap<(String, String), CachedToken>>,
}

/// The Google identities of every tenant, as one function reaches them.
/// Cheap to clone; clones share the token cache.
#[derive(Clone)]
pub struct TenantIdentities {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TenantIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantIdentities").field("project_id", &self.shared.project_id).finish_non_exhaustive()
    }
}

impl TenantIdentities {
    /// `federated` are our role's federated credentials
    /// ([`FederationConfig::federated_credentials`]).
    pub fn new(config: &FederationConfig, federated: Credentials) -> TenantIdentities {
        TenantIdentities {
            shared: Arc::new(Shared {
                federated,
                http: super::http::google_http_client(),
                iam_credentials_endpoint: config.iam_credentials_endpoint.clone(),
                project_id: config.project_id.clone(),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The address of `tenant_id`'s identity: what the customer grants.
    pub fn address(&self, tenant_id: &str) -> String {
        tenant_service_account(tenant_id, &self.shared.project_id)
    }

    /// A token of `tenant_id`'s identity with `scopes`, from the cache when
    /// it is fresh.
    pub async fn access_token(&self, tenant_id: &str, scopes: &[&str]) -> Result<String, ImpersonationError> {
        let account = self.address(tenant_id);
        self.shared.token_of(&account, scopes).await
    }

    /// `tenant_id`'s identity as credentials for Google's clients.
    pub fn credentials(&self, tenant_id: &str, scopes: &[&str]) -> Credentials {
        Credentials::from(TenantToken {
            shared: Arc::clone(&self.shared),
            account: self.address(tenant_id),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        })
    }
}

impl Shared {
    async fn token_of(&self, account: &str, scopes: &[&str]) -> Result<String, ImpersonationError> {
        let key = (account.to_owned(), scopes.join(" "));
        if let Some(cached) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if Instant::now() < cached.fresh_until {
                return Ok(cached.token.clone());
            }
        }
        let (token, lifetime) = self.generate(account, scopes).await.inspect_err(|error| {
            if !error.is_transient() {
                // Ours to fix, and nothing the customer will report: alarmed.
                crate::metrics::emit_metrics(
                    "PopularityReports",
                    &[("Function", "google-identity")],
                    &[("GoogleIdentityFailures", 1.0)],
                );
                tracing::error!(%account, %error, "a tenant's Google identity could not be used");
            }
        })?;
        let fresh_until = Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE_EXPIRY);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, CachedToken { token: token.clone(), fresh_until });
        Ok(token)
    }

    /// One `generateAccessToken` call: the token and how long it lives.
    async fn generate(&self, account: &str, scopes: &[&str]) -> Result<(String, Duration), ImpersonationError> {
        let headers = match super::http::authorization_headers(&self.federated).await {
            Ok(headers) => headers,
            Err((true, reason)) => {
                return Err(ImpersonationError::Unavailable {
                    account: account.to_owned(),
                    detail: format!("federation: {reason}"),
                })
            }
            Err((false, reason)) => return Err(ImpersonationError::Federation(reason)),
        };
        let url =
            format!("{}/v1/projects/-/serviceAccounts/{account}:generateAccessToken", self.iam_credentials_endpoint);
        let body = serde_json::json!({"scope": scopes, "lifetime": TOKEN_LIFETIME});
        let unavailable = |detail: String| ImpersonationError::Unavailable { account: account.to_owned(), detail };
        let response = self
            .http
            .post(&url)
            .headers(headers)
            .json(&body)
            .send()
            .await
            .map_err(|e| unavailable(cut(&e.to_string())))?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let message = answer["error"]["message"].as_str().map(cut).unwrap_or_else(|| format!("HTTP {status}"));
        match status {
            200 => {}
            401 => return Err(ImpersonationError::Federation(format!("IAM Credentials refused our token: {message}"))),
            403 | 404 => return Err(ImpersonationError::NotAllowed { account: account.to_owned(), status, message }),
            _ => return Err(unavailable(format!("HTTP {status}: {message}"))),
        }
        let token = answer["accessToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unavailable("the answer has no accessToken".to_owned()))?
            .to_owned();
        let lifetime = answer["expireTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|expiry| (expiry.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok())
            .ok_or_else(|| unavailable("the answer has no usable expireTime".to_owned()))?;
        Ok((token, lifetime))
    }
}

/// One tenant's identity as a `google-cloud-auth` credentials provider.
struct TenantToken {
    shared: Arc<Shared>,
    account: String,
    scopes: Vec<String>,
}

impl std::fmt::Debug for TenantToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantToken").field("account", &self.account).finish_non_exhaustive()
    }
}

impl CredentialsProvider for TenantToken {
    async fn headers(&self, _extensions: Extensions) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let token = self
            .shared
            .token_of(&self.account, &scopes)
            .await
            .map_err(|error| CredentialsError::from_msg(error.is_transient(), error.to_string()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CredentialsError::from_msg(false, "the access token is not a valid header value"))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        Ok(CacheableResource::New { entity_tag: EntityTag::new(), data: headers })
    }

    async fn universe_domain(&self) -> Option<String> {
        Some("googleapis.com".to_owned())
    }
}
