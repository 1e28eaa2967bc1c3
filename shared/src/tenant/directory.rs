//! Where tenant secrets (docs/design.md, "Tenants") live: the [`TenantDirectory`] port that
//! lists every tenant under a secret-name prefix, its Secrets Manager adapter
//! [`SecretsManagerTenants`], an in-memory one for tests of other code, and
//! [`put_tenant_secret`] for onboarding. Reading is built for thousands of
//! tenants: names come from `ListSecrets` (100 a page), values from
//! `BatchGetSecretValue` by explicit id list (20 a call, a few calls at once).
//! A filtered `BatchGetSecretValue` would be simpler but costs quadratic time
//! on moto, and an explicit list behaves the same on real AWS. One broken
//! secret never hides the others: each becomes a [`TenantEntry`] with its own
//! result. A per-secret error that a retry may clear (throttling, a fault on
//! the service's side) is different: it fails the whole read, so the caller
//! is retried instead of skipping that tenant for the run. A secret
//! scheduled for deletion counts as deleted: it is not listed, and reading it
//! (Secrets Manager answers `InvalidRequestException`, "marked for
//! deletion") gives no entry rather than an error, so its tenant is skipped,
//! not retried. With a required KMS key (`TENANT_SECRETS_KMS_KEY_ID`, the
//! stack's key) a secret encrypted under any other key is refused unread:
//! its entry says which key it is under and which one it must be, from
//! `ListSecrets` (every tenant) or `DescribeSecret` (one tenant), before
//! any value is fetched. This module must never let a secret value escape: values are
//! parsed and dropped, `Debug` and errors carry names, field paths and SDK
//! error codes only, and nothing here logs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_sdk_secretsmanager::Client;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::errors::{FieldError, TenantErrors};
use super::model::TenantConfig;
use super::parse::parse_tenant_secret;

/// The prefix of tenant secret names when `TENANT_SECRET_PREFIX` is unset.
pub const DEFAULT_TENANT_SECRET_PREFIX: &str = "popularity-reports/tenants/";
/// The most names `ListSecrets` returns in one page.
pub const LIST_PAGE_SIZE: i32 = 100;
/// The most ids `BatchGetSecretValue` accepts in its `SecretIdList`.
pub const BATCH_GET_SIZE: usize = 20;
/// How many `BatchGetSecretValue` calls run at once: enough to hide latency,
/// few enough to stay well under the API's request rate.
pub const BATCH_GET_CONCURRENCY: usize = 8;

/// The path [`FieldError`]s use for the secret as a whole.
const ROOT: &str = "(root)";

// ---------------------------------------------------------------------------
// The port
// ---------------------------------------------------------------------------

/// Every tenant secret under one name prefix.
pub trait TenantDirectory: Send + Sync {
    /// One entry per secret whose name starts with the prefix, sorted by
    /// name, each parsed on its own. `Err` only when the directory itself
    /// cannot be read (listing or fetching failed).
    fn load_tenants(&self) -> impl Future<Output = Result<Vec<TenantEntry>, DirectoryError>> + Send;

    /// The secret `<prefix><tenant_id>` alone, as a deliverer re-reads it at
    /// delivery time; `Ok(None)` when no such secret exists (any more), or it
    /// is scheduled for deletion.
    fn load_tenant(&self, tenant_id: &str) -> impl Future<Output = Result<Option<TenantEntry>, DirectoryError>> + Send;

    /// The version of `<prefix><tenant_id>` labelled `version_stage`, not
    /// the current one: a draft the self-service API wrote for a connection
    /// test before it makes the draft current. `Ok(None)` when the secret or
    /// the label does not exist.
    fn load_tenant_version(
        &self,
        tenant_id: &str,
        version_stage: &str,
    ) -> impl Future<Output = Result<Option<TenantEntry>, DirectoryError>> + Send;
}

/// One tenant secret and what came of parsing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEntry {
    /// The full secret name, `<prefix><tenantId>`.
    pub secret_name: String,
    /// The name's suffix after the prefix: the tenant id the secret must hold.
    pub tenant_id_from_name: String,
    /// The validated config, or why this tenant cannot be delivered.
    pub config: Result<TenantConfig, TenantEntryError>,
    /// When the secret was created (`ListSecrets`' `CreatedDate`), when
    /// known: which of two tenants naming one destination was there first.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl TenantEntry {
    /// Oldest first: by creation time (unknown last), then by name.
    fn seniority(&self) -> (bool, Option<chrono::DateTime<chrono::Utc>>, &str) {
        (self.created_at.is_none(), self.created_at, &self.secret_name)
    }
}

/// The valid configs of `entries`, oldest tenant first: the order
/// [`crate::tenant::conflicts::conflicts_across`] takes.
pub fn valid_by_seniority(entries: &[TenantEntry]) -> Vec<&TenantConfig> {
    let mut valid: Vec<&TenantEntry> = entries.iter().filter(|entry| entry.config.is_ok()).collect();
    valid.sort_by(|a, b| a.seniority().cmp(&b.seniority()));
    valid.into_iter().filter_map(|entry| entry.config.as_ref().ok()).collect()
}

/// Why one tenant's secret gave no config. Both variants are lists of
/// [`FieldError`]s, so callers can write status objects and log lines the
/// same way whatever went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantEntryError {
    /// The value was read but is not a valid tenant secret.
    #[error("{0}")]
    Invalid(TenantErrors),
    /// The value could not be read at all: a binary secret, or Secrets
    /// Manager reported a permanent error for this one secret (transient ones
    /// fail the whole read instead). The message names the cause (an error
    /// code), never the value.
    #[error("{0}")]
    Unreadable(FieldError),
}

impl TenantEntryError {
    /// What is wrong with the secret `secret_name`, for status objects and
    /// logs: that it could not be read (Secrets Manager gave no usable
    /// value), or every invalid field. Never a secret value.
    pub fn describe(&self, secret_name: &str) -> String {
        match self {
            TenantEntryError::Unreadable(cause) => {
                format!("tenant secret {secret_name} could not be read: {}", cause.message)
            }
            TenantEntryError::Invalid(_) => {
                let errors = self.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                format!("tenant secret {secret_name} is invalid: {errors}")
            }
        }
    }

    /// Every problem found, in document order. Never empty.
    pub fn errors(&self) -> &[FieldError] {
        match self {
            TenantEntryError::Invalid(errors) => errors.errors(),
            TenantEntryError::Unreadable(error) => std::slice::from_ref(error),
        }
    }

    pub fn len(&self) -> usize {
        self.errors().len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors().is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.errors().iter()
    }

    fn unreadable(message: impl Into<String>) -> Self {
        TenantEntryError::Unreadable(FieldError { path: ROOT.to_owned(), message: message.into() })
    }
}

impl<'a> IntoIterator for &'a TenantEntryError {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The directory could not be read or written. Messages name the operation
/// and the prefix or secret name; SDK errors are rendered with their context
/// (code, message, request id), which never includes a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("Secrets Manager {operation} for tenant secrets under {prefix:?} failed: {detail}")]
    Read { operation: &'static str, prefix: String, detail: String },
    #[error("Secrets Manager {operation} of tenant secret {secret_name:?} failed: {detail}")]
    ReadOne { operation: &'static str, secret_name: String, detail: String },
    #[error("Secrets Manager {operation} of tenant secret {secret_name:?} failed: {detail}")]
    Write { operation: &'static str, secret_name: String, detail: String },
    /// `BatchGetSecretValue` answered, but reported for one secret an error
    /// a retry may clear; see [`classify_secret_error`].
    #[error(
        "Secrets Manager {operation} could not read tenant secret {secret_name:?} this time ({code}: {message}); \
         the error is transient, so the tenants are not loaded without it: retry (Lambda retries the invocation)"
    )]
    TransientSecretError { operation: &'static str, secret_name: String, code: String, message: String },
    #[error("tenant secret prefix {prefix:?} is not valid: it must be non-empty and end with '/'")]
    InvalidPrefix { prefix: String },
    #[error("refusing to store tenant secret {secret_name:?}: {errors}")]
    InvalidSecret { secret_name: String, errors: TenantErrors },
}

/// The prefix must end with `/`: Secrets Manager matches name filters as
/// prefixes, so without it `tenants` would also list `tenants-old/…`.
fn check_prefix(prefix: &str) -> Result<(), DirectoryError> {
    if prefix.len() > 1 && prefix.ends_with('/') {
        Ok(())
    } else {
        Err(DirectoryError::InvalidPrefix { prefix: prefix.to_owned() })
    }
}

/// Parses one secret's value into its entry. The value is borrowed and
/// dropped by the caller; only the parsed (credential-redacting) model stays.
fn entry_from_value(prefix: &str, secret_name: String, value: Result<&str, TenantEntryError>) -> TenantEntry {
    let tenant_id_from_name = secret_name.strip_prefix(prefix).unwrap_or(&secret_name).to_owned();
    let config =
        value.and_then(|json| parse_tenant_secret(&tenant_id_from_name, json).map_err(TenantEntryError::Invalid));
    TenantEntry { secret_name, tenant_id_from_name, config, created_at: None }
}

/// What an entry of `BatchGetSecretValue`'s `Errors` list means for a read
/// of the whole directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretErrorKind {
    /// A retry may clear it: the read fails, so no tenant is skipped.
    Transient,
    /// About this secret itself (missing, deleted, access denied, cannot be
    /// decrypted) or not known to be transient: that tenant alone fails.
    Permanent,
}

/// Error codes a retry may clear: the service's own fault and the throttling
/// codes the AWS SDK's retry classifier knows, less those of other services.
const TRANSIENT_SECRET_ERROR_CODES: &[&str] = &[
    "InternalServiceError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Classifies the `ErrorCode` of one per-secret error. Unknown codes (and a
/// missing one) count as permanent: failing every tenant's delivery over one
/// secret's unexplained error would be worse than failing that tenant, whose
/// status names the code. Codes that merely look like throttling or an
/// internal fault (`KMSThrottlingException`, `InternalError`) are transient.
fn classify_secret_error(code: Option<&str>) -> SecretErrorKind {
    let Some(code) = code else { return SecretErrorKind::Permanent };
    let transient = TRANSIENT_SECRET_ERROR_CODES.contains(&code)
        || code.to_ascii_lowercase().contains("throttl")
        || code.starts_with("Internal");
    if transient {
        SecretErrorKind::Transient
    } else {
        SecretErrorKind::Permanent
    }
}

/// Whether Secrets Manager refused to read a secret because it is scheduled
/// for deletion (`DeleteSecret` with a recovery window: `DescribeSecret`
/// shows a `DeletedDate`). It answers `InvalidRequestException` "You can't
/// perform this operation on the secret because it was marked for
/// deletion." (AWS, and moto's `BatchGetSecretValue`), or "You tried to
/// perform the operation on a secret that's currently marked deleted."
/// (moto's `GetSecretValue`). Decided from the error alone — there is no
/// other sign of it in the answer — so reading tenants needs no permission
/// beyond `GetSecretValue` (no `DescribeSecret`).
fn is_marked_for_deletion(code: Option<&str>, message: Option<&str>) -> bool {
    let says_so = |message: &str| {
        let message = message.to_ascii_lowercase();
        message.contains("marked deleted") || message.contains("marked for deletion")
    };
    code == Some("InvalidRequestException") && message.is_some_and(says_so)
}

/// The entry for a secret `BatchGetSecretValue` reported an error for;
/// `None` for a secret scheduled for deletion (deleted, as far as delivery
/// goes: no tenant); or, when the error is transient, the error that fails
/// the whole read.
fn entry_from_secret_error(
    prefix: &str,
    secret_name: String,
    code: Option<&str>,
    message: Option<&str>,
) -> Result<Option<TenantEntry>, DirectoryError> {
    if is_marked_for_deletion(code, message) {
        return Ok(None);
    }
    let message = message.unwrap_or("no message");
    match classify_secret_error(code) {
        SecretErrorKind::Transient => Err(DirectoryError::TransientSecretError {
            operation: "BatchGetSecretValue",
            secret_name,
            code: code.unwrap_or_default().to_owned(),
            message: message.to_owned(),
        }),
        SecretErrorKind::Permanent => {
            let cause = format!("Secrets Manager reported {}: {message}", code.unwrap_or("an error without a code"));
            Ok(Some(entry_from_value(prefix, secret_name, Err(TenantEntryError::unreadable(cause)))))
        }
    }
}

// ---------------------------------------------------------------------------
// Secrets Manager
// ---------------------------------------------------------------------------

/// A Secrets Manager client from the shared configuration (which honours
/// `AWS_ENDPOINT_URL`, so the same code reaches moto's server), for callers
/// that should not depend on the SDK crate themselves.
pub fn secrets_manager_client(config: &aws_config::SdkConfig) -> Client {
    Client::new(config)
}

/// What `ListSecrets` says of one secret.
#[derive(Debug, Clone)]
struct ListedSecret {
    /// `None`: the default key `aws/secretsmanager`.
    kms_key_id: Option<String>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The tenant secrets named `<prefix><tenantId>` in one account and region.
#[derive(Debug, Clone)]
pub struct SecretsManagerTenants {
    client: Client,
    prefix: String,
    list_page_size: i32,
    /// The only KMS key a tenant secret may be encrypted under, when set.
    required_kms_key: Option<String>,
    /// `load_tenants` answers from here while younger than its lifetime.
    listing_cache: ListingCache,
}

/// How long a deliverer reuses its reading of every tenant for the
/// cross-tenant destination check before writing
/// ([`SecretsManagerTenants::caching_listing_for`]).
pub const DESTINATION_CHECK_LISTING_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The last `load_tenants` answer of a directory and its clones, kept for a
/// while ([`SecretsManagerTenants::caching_listing_for`]). Its `Debug`
/// shows no entry.
#[derive(Clone, Default)]
struct ListingCache {
    lifetime: Option<std::time::Duration>,
    last: std::sync::Arc<tokio::sync::Mutex<Option<(std::time::Instant, Vec<TenantEntry>)>>>,
}

impl fmt::Debug for ListingCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListingCache").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

/// Whether a secret's `KmsKeyId` (as `ListSecrets` or `DescribeSecret`
/// report it: absent for the default `aws/secretsmanager` key, otherwise
/// the key id or ARN it was created with) is the key `required`, given as
/// a key ARN or key id. Aliases are not resolved: a secret stored under an
/// alias of the right key is refused with a message saying to re-store it
/// under the key ARN (as `popularity tenant add` does).
pub fn is_required_kms_key(required: &str, reported: Option<&str>) -> bool {
    let key_id = |key: &str| key.rsplit_once(":key/").map_or(key, |(_, id)| id).to_owned();
    reported.is_some_and(|reported| reported == required || key_id(reported) == key_id(required))
}

/// Why a secret under the wrong key is refused, naming both keys (key ids
/// are not secret) and how to fix it.
fn wrong_kms_key(required: &str, reported: Option<&str>) -> TenantEntryError {
    let actual = reported
        .map_or_else(|| "the account's default key aws/secretsmanager".to_owned(), |key| format!("KMS key {key:?}"));
    TenantEntryError::unreadable(format!(
        "the secret is encrypted under {actual}, not the stack's tenant secrets key {required:?} \
         (TENANT_SECRETS_KMS_KEY_ID), so it is not read: store it again with `popularity tenant add`, which \
         uses that key"
    ))
}

impl SecretsManagerTenants {
    /// Tenants under `prefix` (e.g. `popularity-reports/tenants/`), which
    /// must end with `/`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Result<Self, DirectoryError> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        Ok(Self {
            client,
            prefix,
            list_page_size: LIST_PAGE_SIZE,
            required_kms_key: None,
            listing_cache: ListingCache::default(),
        })
    }

    /// Answers `load_tenants` from the previous answer while it is younger
    /// than `lifetime` (this directory and its clones). For the
    /// deliverers, which read every tenant before each write to check the
    /// destination against the others': a warm function then reads the
    /// directory once a `lifetime`, not once a job. Fanout does not cache.
    pub fn caching_listing_for(mut self, lifetime: std::time::Duration) -> Self {
        self.listing_cache.lifetime = Some(lifetime);
        self
    }

    /// Refuses, unread, every tenant secret not encrypted under `key` (the
    /// stack's key ARN, `TENANT_SECRETS_KMS_KEY_ID`); `None` accepts any key
    /// (local runs without a stack).
    pub fn requiring_kms_key(mut self, key: Option<String>) -> Self {
        self.required_kms_key = key.filter(|key| !key.is_empty());
        self
    }

    /// Lists `size` names a page (1..=100) instead of 100; tests use a small
    /// page to exercise pagination without creating hundreds of secrets.
    pub fn with_list_page_size(mut self, size: i32) -> Self {
        self.list_page_size = size.clamp(1, LIST_PAGE_SIZE);
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn read_error<E>(&self, operation: &'static str, error: SdkError<E>) -> DirectoryError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        DirectoryError::Read { operation, prefix: self.prefix.clone(), detail: crate::aws_errors::one_line(&error) }
    }

    /// Every secret name that really starts with the prefix. The service's
    /// name filter is a prefix match, case-insensitive on AWS and
    /// case-sensitive on moto, so the names are filtered again here.
    /// Each name comes with what the listing says of the secret.
    async fn list_names(&self) -> Result<BTreeMap<String, ListedSecret>, DirectoryError> {
        let filter = Filter::builder().key(FilterNameStringType::Name).values(&self.prefix).build();
        let mut pages = self
            .client
            .list_secrets()
            .filters(filter)
            .max_results(self.list_page_size)
            .into_paginator()
            .page_size(self.list_page_size)
            .send();
        let mut names = BTreeMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.read_error("ListSecrets", e))?;
            // Secrets scheduled for deletion are left out by default; should
            // the service list one anyway (it carries a `DeletedDate`), it is
            // left out here too.
            for secret in page.secret_list().iter().filter(|secret| secret.deleted_date().is_none()) {
                if let Some(name) = secret.name().filter(|name| name.starts_with(&self.prefix)) {
                    let created_at = secret
                        .created_date()
                        .and_then(|date| chrono::DateTime::from_timestamp(date.secs(), date.subsec_nanos()));
                    names.insert(
                        name.to_owned(),
                        ListedSecret { kms_key_id: secret.kms_key_id().map(str::to_owned), created_at },
                    );
                }
            }
        }
        Ok(names)
    }

    /// The entries of up to [`BATCH_GET_SIZE`] secrets, read in one call
    /// (following `NextToken` should the service split the answer).
    async fn fetch_batch(&self, names: Vec<String>) -> Result<Vec<TenantEntry>, DirectoryError> {
        let mut wanted: BTreeSet<String> = names.iter().cloned().collect();
        let mut entries = Vec::with_capacity(names.len());
        let mut next_token: Option<String> = None;
        loop {
            let output = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(names.clone()))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| self.read_error("BatchGetSecretValue", e))?;
            for value in output.secret_values() {
                let Some(name) = value.name() else { continue };
                if !wanted.remove(name) {
                    continue;
                }
                let json = value.secret_string().ok_or_else(|| {
                    TenantEntryError::unreadable(if value.secret_binary().is_some() {
                        "the secret holds a binary value (SecretBinary); a tenant secret must be a JSON SecretString"
                    } else {
                        "the secret has no SecretString value"
                    })
                });
                entries.push(entry_from_value(&self.prefix, name.to_owned(), json));
            }
            for error in output.errors() {
                // Errors name the secret by the id we sent, which is its name.
                let Some(name) = error.secret_id().filter(|id| wanted.contains(*id)).map(str::to_owned) else {
                    continue;
                };
                wanted.remove(&name);
                entries.extend(entry_from_secret_error(&self.prefix, name, error.error_code(), error.message())?);
            }
            match output.next_token() {
                Some(token) if !wanted.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        // A secret deleted between listing and reading may be missing from
        // both lists; it still gets an entry rather than vanishing silently.
        for name in wanted {
            let missing = TenantEntryError::unreadable("listed but not returned by BatchGetSecretValue (deleted?)");
            entries.push(entry_from_value(&self.prefix, name, Err(missing)));
        }
        Ok(entries)
    }
}

impl TenantDirectory for SecretsManagerTenants {
    async fn load_tenant(&self, tenant_id: &str) -> Result<Option<TenantEntry>, DirectoryError> {
        self.load_one(tenant_id, None).await
    }

    async fn load_tenant_version(
        &self,
        tenant_id: &str,
        version_stage: &str,
    ) -> Result<Option<TenantEntry>, DirectoryError> {
        self.load_one(tenant_id, Some(version_stage)).await
    }

    async fn load_tenants(&self) -> Result<Vec<TenantEntry>, DirectoryError> {
        let Some(lifetime) = self.listing_cache.lifetime else { return self.load_tenants_now().await };
        let mut last = self.listing_cache.last.lock().await;
        if let Some((at, entries)) = last.as_ref() {
            if at.elapsed() < lifetime {
                return Ok(entries.clone());
            }
        }
        let entries = self.load_tenants_now().await?;
        *last = Some((std::time::Instant::now(), entries.clone()));
        Ok(entries)
    }
}

impl SecretsManagerTenants {
    /// Every tenant secret, read now.
    async fn load_tenants_now(&self) -> Result<Vec<TenantEntry>, DirectoryError> {
        let listed = self.list_names().await?;
        let mut names = Vec::new();
        let mut refused = Vec::new();
        for (name, secret) in &listed {
            let key = secret.kms_key_id.as_deref();
            match &self.required_kms_key {
                Some(required) if !is_required_kms_key(required, key) => {
                    refused.push(entry_from_value(&self.prefix, name.clone(), Err(wrong_kms_key(required, key))));
                }
                _ => names.push(name.clone()),
            }
        }
        let batches: Vec<Vec<String>> = names.chunks(BATCH_GET_SIZE).map(<[String]>::to_vec).collect();
        let mut entries: Vec<TenantEntry> = stream::iter(batches)
            .map(|batch| self.fetch_batch(batch))
            .buffer_unordered(BATCH_GET_CONCURRENCY)
            .try_concat()
            .await?;
        entries.extend(refused);
        for entry in &mut entries {
            entry.created_at = listed.get(&entry.secret_name).and_then(|secret| secret.created_at);
        }
        entries.sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
        Ok(entries)
    }
}

impl SecretsManagerTenants {
    /// The current value of `<prefix><tenant_id>`, or its version labelled
    /// `version_stage`.
    async fn load_one(
        &self,
        tenant_id: &str,
        version_stage: Option<&str>,
    ) -> Result<Option<TenantEntry>, DirectoryError> {
        let secret_name = format!("{}{tenant_id}", self.prefix);
        if let Some(required) = &self.required_kms_key {
            let described = match self.client.describe_secret().secret_id(&secret_name).send().await {
                Ok(described) => described,
                Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                    return Ok(None);
                }
                Err(error) => {
                    return Err(DirectoryError::ReadOne {
                        operation: "DescribeSecret",
                        secret_name,
                        detail: crate::aws_errors::one_line(&error),
                    })
                }
            };
            if described.deleted_date().is_some() {
                return Ok(None);
            }
            if !is_required_kms_key(required, described.kms_key_id()) {
                let refused = wrong_kms_key(required, described.kms_key_id());
                return Ok(Some(entry_from_value(&self.prefix, secret_name, Err(refused))));
            }
        }
        let request =
            self.client.get_secret_value().secret_id(&secret_name).set_version_stage(version_stage.map(str::to_owned));
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                return Ok(None);
            }
            // Scheduled for deletion: gone for delivery, not a failure to retry.
            Err(error) if error.as_service_error().is_some_and(|e| is_marked_for_deletion(e.code(), e.message())) => {
                return Ok(None);
            }
            Err(error) => {
                return Err(DirectoryError::ReadOne {
                    operation: "GetSecretValue",
                    secret_name,
                    detail: crate::aws_errors::one_line(&error),
                })
            }
        };
        let json = output.secret_string().ok_or_else(|| {
            TenantEntryError::unreadable(if output.secret_binary().is_some() {
                "the secret holds a binary value (SecretBinary); a tenant secret must be a JSON SecretString"
            } else {
                "the secret has no SecretString value"
            })
        });
        Ok(Some(entry_from_value(&self.prefix, secret_name, json)))
    }
}

/// What [`put_tenant_secret`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// `true` when the secret did not exist before, `false` when a new
    /// version of an existing secret was written.
    pub created: bool,
    pub secret_name: String,
}

/// Stores `config_json` as the secret `<prefix><tenant_id>`: creates it, or,
/// when it already exists, writes a new current version. The value is
/// validated first (including that its `tenantId` equals `tenant_id`), so an
/// invalid secret is never stored. Encrypted as [`put_secret`] does: a new
/// secret under the account's default key, an existing one under its own.
pub async fn put_tenant_secret(
    client: &Client,
    prefix: &str,
    config_json: &str,
    tenant_id: &str,
) -> Result<PutOutcome, DirectoryError> {
    put_tenant_secret_under_key(client, prefix, config_json, tenant_id, None).await
}

/// [`put_tenant_secret`], with the secret encrypted under the KMS key
/// `kms_key_id` (key id, key ARN, alias name or alias ARN) when one is
/// given: the stack's tenant secrets key, which only the functions that read
/// tenant secrets and the onboarding role may decrypt (docs/operations.md).
pub async fn put_tenant_secret_under_key(
    client: &Client,
    prefix: &str,
    config_json: &str,
    tenant_id: &str,
    kms_key_id: Option<&str>,
) -> Result<PutOutcome, DirectoryError> {
    check_prefix(prefix)?;
    let secret_name = format!("{prefix}{tenant_id}");
    if let Err(errors) = parse_tenant_secret(tenant_id, config_json) {
        return Err(DirectoryError::InvalidSecret { secret_name, errors });
    }
    let description = "Popularity reports tenant configuration (docs/tenants.md)";
    put_secret_under_key(client, &secret_name, config_json, description, kms_key_id).await
}

/// Stores `value` as the secret `secret_name`: creates it, or writes a new
/// current version of an existing one. Errors name the secret, never the value.
/// A new secret is encrypted under the account's default key
/// (`aws/secretsmanager`); an existing one keeps its key.
pub async fn put_secret(
    client: &Client,
    secret_name: &str,
    value: &str,
    description: &str,
) -> Result<PutOutcome, DirectoryError> {
    put_secret_under_key(client, secret_name, value, description, None).await
}

/// [`put_secret`], encrypting under `kms_key_id` when given: `CreateSecret`
/// with that key, or, for an existing secret, `UpdateSecret` with the value
/// and the key, so the new current version is encrypted under it (Secrets
/// Manager also re-encrypts the older labelled versions when it may). Without
/// a key an existing secret is written with `PutSecretValue` and keeps
/// whatever key it has.
pub async fn put_secret_under_key(
    client: &Client,
    secret_name: &str,
    value: &str,
    description: &str,
    kms_key_id: Option<&str>,
) -> Result<PutOutcome, DirectoryError> {
    let write_error = |operation: &'static str, detail: String| DirectoryError::Write {
        operation,
        secret_name: secret_name.to_owned(),
        detail,
    };
    let created = client
        .create_secret()
        .name(secret_name)
        .description(description)
        .secret_string(value)
        .set_kms_key_id(kms_key_id.map(str::to_owned))
        .send()
        .await;
    match created {
        Ok(_) => return Ok(PutOutcome { created: true, secret_name: secret_name.to_owned() }),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => {}
        Err(e) => return Err(write_error("CreateSecret", crate::aws_errors::one_line(&e))),
    }
    match kms_key_id {
        Some(key) => {
            client
                .update_secret()
                .secret_id(secret_name)
                .secret_string(value)
                .kms_key_id(key)
                .send()
                .await
                .map_err(|e| write_error("UpdateSecret", crate::aws_errors::one_line(&e)))?;
        }
        None => {
            client
                .put_secret_value()
                .secret_id(secret_name)
                .secret_string(value)
                .send()
                .await
                .map_err(|e| write_error("PutSecretValue", crate::aws_errors::one_line(&e)))?;
        }
    }
    Ok(PutOutcome { created: false, secret_name: secret_name.to_owned() })
}

// ---------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------

/// A [`TenantDirectory`] held in memory, for unit tests of code that reads
/// tenants. Values are parsed exactly as the Secrets Manager adapter does;
/// `Debug` shows secret names only.
#[derive(Clone, Default)]
pub struct InMemoryTenants {
    prefix: String,
    /// Secret name → value (`None` for a secret without a SecretString).
    secrets: BTreeMap<String, Option<String>>,
    /// (secret name, version stage) → value of a version that is not current.
    versions: BTreeMap<(String, String), String>,
    failure: Option<DirectoryError>,
}

impl InMemoryTenants {
    /// An empty directory under `prefix` (which should end with `/`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), ..Self::default() }
    }

    /// Adds (or replaces) the secret `<prefix><name_suffix>` with value `json`.
    pub fn with_secret(mut self, name_suffix: &str, json: impl Into<String>) -> Self {
        self.secrets.insert(format!("{}{name_suffix}", self.prefix), Some(json.into()));
        self
    }

    /// Adds a version of `<prefix><name_suffix>` labelled `version_stage`
    /// that is not the current one.
    pub fn with_version(mut self, name_suffix: &str, version_stage: &str, json: impl Into<String>) -> Self {
        self.versions.insert((format!("{}{name_suffix}", self.prefix), version_stage.to_owned()), json.into());
        self
    }

    /// Adds the secret `<prefix><name_suffix>` without a SecretString (as a
    /// binary secret looks to the reader).
    pub fn with_binary_secret(mut self, name_suffix: &str) -> Self {
        self.secrets.insert(format!("{}{name_suffix}", self.prefix), None);
        self
    }

    /// Makes every `load_tenants` fail with `error`, as an unreachable
    /// Secrets Manager would.
    pub fn failing_with(mut self, error: DirectoryError) -> Self {
        self.failure = Some(error);
        self
    }
}

impl fmt::Debug for InMemoryTenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryTenants")
            .field("prefix", &self.prefix)
            .field("secret_names", &self.secrets.keys().collect::<Vec<_>>())
            .field("failure", &self.failure)
            .finish()
    }
}

impl TenantDirectory for InMemoryTenants {
    async fn load_tenant(&self, tenant_id: &str) -> Result<Option<TenantEntry>, DirectoryError> {
        if let Some(error) = &self.failure {
            return Err(error.clone());
        }
        let name = format!("{}{tenant_id}", self.prefix);
        Ok(self.secrets.get(&name).map(|value| {
            let json =
                value.as_deref().ok_or_else(|| TenantEntryError::unreadable("the secret has no SecretString value"));
            entry_from_value(&self.prefix, name.clone(), json)
        }))
    }

    async fn load_tenant_version(
        &self,
        tenant_id: &str,
        version_stage: &str,
    ) -> Result<Option<TenantEntry>, DirectoryError> {
        if let Some(error) = &self.failure {
            return Err(error.clone());
        }
        let name = format!("{}{tenant_id}", self.prefix);
        Ok(self
            .versions
            .get(&(name.clone(), version_stage.to_owned()))
            .map(|json| entry_from_value(&self.prefix, name.clone(), Ok(json.as_str()))))
    }

    async fn load_tenants(&self) -> Result<Vec<TenantEntry>, DirectoryError> {
        if let Some(error) = &self.failure {
            return Err(error.clone());
        }
        Ok(self
            .secrets
            .iter()
            .map(|(name, value)| {
                let json = value
                    .as_deref()
                    .ok_or_else(|| TenantEntryError::unreadable("the secret has no SecretString value"));
                entry_from_value(&self.prefix, name.clone(), json)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "popularity-reports/tenants/";
    const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn a_secret_that_could_not_be_read_is_described_as_unreadable_not_invalid() {
        let unreadable = TenantEntryError::unreadable("Secrets Manager reported DecryptionFailure: key disabled");
        assert_eq!(
            unreadable.describe("p/acme"),
            "tenant secret p/acme could not be read: Secrets Manager reported DecryptionFailure: key disabled"
        );
        let invalid =
            parse_tenant_secret("acme", r#"{"tenantId": "acme"}"#).map_err(TenantEntryError::Invalid).unwrap_err();
        let message = invalid.describe("p/acme");
        assert!(message.starts_with("tenant secret p/acme is invalid: "), "{message}");
        assert!(message.contains("schemaVersion"), "every invalid field is named: {message}");
    }

    fn email_tenant(tenant_id: &str) -> String {
        serde_json::json!({
            "schemaVersion": 1, "tenantId": tenant_id, "plan": "standard", "enabled": true,
            "connectors": {"inbox": {"type": "email", "recipients": ["data@acme.example"]}},
            "feeds": [{"id": "all", "connector": "inbox"}]
        })
        .to_string()
    }

    fn keys_tenant(tenant_id: &str) -> String {
        serde_json::json!({
            "schemaVersion": 1, "tenantId": tenant_id, "plan": "standard",
            "connectors": {"keys": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::acme-keys", "region": "us-east-1",
                                    "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": SECRET_ACCESS_KEY}},
            "feeds": [{"connector": "keys"}]
        })
        .to_string()
    }

    #[tokio::test]
    async fn in_memory_directory_parses_every_secret_and_keeps_going_past_invalid_ones() {
        let directory = InMemoryTenants::new(PREFIX)
            .with_secret("acme", email_tenant("acme"))
            .with_secret("globex", email_tenant("initech"))
            .with_secret("broken", "{not json")
            .with_binary_secret("binary")
            .with_secret("keys", keys_tenant("keys"));
        let entries = directory.load_tenants().await.unwrap();

        let names: Vec<_> = entries.iter().map(|e| e.tenant_id_from_name.as_str()).collect();
        assert_eq!(names, ["acme", "binary", "broken", "globex", "keys"]);
        assert_eq!(entries[0].secret_name, "popularity-reports/tenants/acme");
        assert_eq!(entries[0].config.as_ref().unwrap().tenant_id, "acme");
        assert!(entries[4].config.is_ok());

        let binary = entries[1].config.as_ref().unwrap_err();
        assert!(matches!(binary, TenantEntryError::Unreadable(_)));
        assert_eq!(binary.errors()[0].path, "(root)");
        assert!(binary.to_string().contains("no SecretString"), "{binary}");

        let broken = entries[2].config.as_ref().unwrap_err();
        assert!(broken.to_string().starts_with("(root): not valid JSON"), "{broken}");

        let mismatch = entries[3].config.as_ref().unwrap_err();
        assert_eq!(mismatch.errors()[0].path, "tenantId");
        assert!(mismatch.to_string().contains("does not match the secret name suffix \"globex\""), "{mismatch}");
    }

    #[tokio::test]
    async fn when_directory_fails_load_tenants_returns_that_error() {
        let error = DirectoryError::Read {
            operation: "ListSecrets",
            prefix: PREFIX.to_owned(),
            detail: "dispatch failure".to_owned(),
        };
        let directory =
            InMemoryTenants::new(PREFIX).with_secret("acme", email_tenant("acme")).failing_with(error.clone());
        assert_eq!(directory.load_tenants().await.unwrap_err(), error);
        assert_eq!(
            error.to_string(),
            "Secrets Manager ListSecrets for tenant secrets under \"popularity-reports/tenants/\" failed: dispatch failure"
        );
    }

    #[tokio::test]
    async fn secret_values_never_appear_in_debug_output() {
        let directory = InMemoryTenants::new(PREFIX).with_secret("keys", keys_tenant("keys"));
        assert!(!format!("{directory:?}").contains(SECRET_ACCESS_KEY));
        let entries = directory.load_tenants().await.unwrap();
        assert!(entries[0].config.is_ok());
        assert!(!format!("{entries:?}").contains(SECRET_ACCESS_KEY));
    }

    #[test]
    fn prefixes_must_end_with_a_slash() {
        for bad in ["", "/", "popularity-reports/tenants"] {
            assert_eq!(check_prefix(bad), Err(DirectoryError::InvalidPrefix { prefix: bad.to_owned() }));
        }
        assert!(check_prefix(PREFIX).is_ok());
    }

    #[test]
    fn throttling_and_service_faults_are_transient() {
        for code in [
            "InternalServiceError",
            "InternalFailure",
            "ServiceUnavailable",
            "ThrottlingException",
            "Throttling",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "RequestTimeout",
            "KMSThrottlingException",
            "InternalError",
        ] {
            assert_eq!(classify_secret_error(Some(code)), SecretErrorKind::Transient, "{code}");
        }
    }

    #[test]
    fn errors_about_the_secret_itself_and_unknown_codes_are_permanent() {
        for code in [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "DecryptionFailure",
            "InvalidRequestException",
            "InvalidParameterException",
            "LimitExceededException",
            "SomethingNewException",
            "",
        ] {
            assert_eq!(classify_secret_error(Some(code)), SecretErrorKind::Permanent, "{code:?}");
        }
        assert_eq!(classify_secret_error(None), SecretErrorKind::Permanent);
    }

    #[test]
    fn when_a_secret_error_is_transient_the_whole_read_fails_naming_secret_and_code() {
        let name = format!("{PREFIX}acme");
        let error = entry_from_secret_error(PREFIX, name.clone(), Some("ThrottlingException"), Some("Rate exceeded"))
            .unwrap_err();
        assert_eq!(
            error,
            DirectoryError::TransientSecretError {
                operation: "BatchGetSecretValue",
                secret_name: name,
                code: "ThrottlingException".to_owned(),
                message: "Rate exceeded".to_owned(),
            }
        );
        let text = error.to_string();
        assert!(text.contains("\"popularity-reports/tenants/acme\"") && text.contains("ThrottlingException"), "{text}");
        assert!(text.contains("retry"), "{text}");
    }

    #[test]
    fn when_a_secret_error_is_permanent_only_that_tenant_fails() {
        let entry = entry_from_secret_error(
            PREFIX,
            format!("{PREFIX}locked"),
            Some("InvalidRequestException"),
            Some("You can't perform this operation on the secret because it is being rotated."),
        )
        .unwrap()
        .expect("an entry for the tenant");
        assert_eq!(entry.tenant_id_from_name, "locked");
        let error = entry.config.unwrap_err();
        assert!(matches!(error, TenantEntryError::Unreadable(_)), "{error:?}");
        assert!(error.to_string().contains("Secrets Manager reported InvalidRequestException: "), "{error}");
    }

    #[test]
    fn a_secret_marked_for_deletion_gives_no_entry_as_if_it_were_deleted() {
        let marked = "You can't perform this operation on the secret because it was marked for deletion.";
        let entry =
            entry_from_secret_error(PREFIX, format!("{PREFIX}leaving"), Some("InvalidRequestException"), Some(marked));
        assert_eq!(entry, Ok(None));
        assert!(is_marked_for_deletion(Some("InvalidRequestException"), Some(marked)));
        let read_alone = "You tried to perform the operation on a secret that's currently marked deleted.";
        assert!(is_marked_for_deletion(Some("InvalidRequestException"), Some(read_alone)));
        // The same words under another code, or another
        // InvalidRequestException, are not a deletion.
        assert!(!is_marked_for_deletion(Some("InternalServiceError"), Some(marked)));
        assert!(!is_marked_for_deletion(Some("InvalidRequestException"), Some("the secret is being rotated")));
        assert!(!is_marked_for_deletion(Some("InvalidRequestException"), None));
    }

    #[test]
    fn entry_tenant_id_is_the_name_suffix() {
        let entry = entry_from_value(PREFIX, format!("{PREFIX}acme"), Ok(&email_tenant("acme")));
        assert_eq!(entry.tenant_id_from_name, "acme");
        assert!(entry.config.is_ok());
    }
}
