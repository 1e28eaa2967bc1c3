//! The Sheets API v4 as our service account calls it, over plain HTTP:
//! our identity and its tokens, the three calls a delivery makes (read the
//! tabs, `batchUpdate`, and the probe's add-and-delete of a tab), each
//! paced ([`super::pacing`]) and retried with backoff and jitter when
//! Google answers "later", and Google's refusals as typed [`SheetsError`]s
//! that say whose move it is.

use std::time::{Duration, Instant};

use google_cloud_auth::credentials::service_account::{AccessSpecifier, Builder as ServiceAccountBuilder};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::warn;

use crate::aws_errors::cut;
use crate::delivery::error::{ConnectorFailure, DeliveryError};

use super::pacing::Pacer;

/// Google's Sheets API.
pub const GOOGLE_SHEETS_ENDPOINT: &str = "https://sheets.googleapis.com";
/// The scope of our tokens.
pub const SHEETS_SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
/// Google recommends request payloads of at most 2 MB.
pub const MAX_REQUEST_BYTES: usize = 2_000_000;
/// Write requests a minute Google allows one user (our one service account).
pub const DEFAULT_WRITES_PER_MINUTE: u32 = 60;

/// Our service account: the identity customers share their spreadsheets with.
pub struct SheetsIdentity {
    client_email: String,
    credentials: Credentials,
}

impl std::fmt::Debug for SheetsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SheetsIdentity").field("client_email", &self.client_email).finish_non_exhaustive()
    }
}

/// Our service account key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the service account key in {secret_name} cannot be used: {reason}")]
pub struct IdentityError {
    pub secret_name: String,
    pub reason: String,
}

impl SheetsIdentity {
    /// A tenant's own Google identity of ours (keyless): `client_email` is
    /// its address, `credentials` its impersonated tokens.
    pub fn tenant(client_email: String, credentials: Credentials) -> SheetsIdentity {
        SheetsIdentity { client_email, credentials }
    }

    /// From the key file (JSON text) stored in `secret_name`. Errors name
    /// what is wrong, never a value.
    pub fn from_key_file(secret_name: &str, json: &str) -> Result<SheetsIdentity, IdentityError> {
        let failed = |reason: String| IdentityError { secret_name: secret_name.to_owned(), reason };
        let key = crate::tenant::parse_service_account_key(json).map_err(|errors| failed(errors.to_string()))?;
        let value: Value = serde_json::from_str(key.key_json.expose_secret()).map_err(|e| failed(e.to_string()))?;
        let credentials = ServiceAccountBuilder::new(value)
            .with_access_specifier(AccessSpecifier::from_scopes([SHEETS_SCOPE]))
            .build()
            .map_err(|e| failed(cut(&e.to_string())))?;
        Ok(SheetsIdentity { client_email: key.client_email, credentials })
    }

    /// The address customers share their spreadsheets with, as Editor.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Reads our key from the Secrets Manager secret `secret_name`
    /// (`GOOGLE_SERVICE_ACCOUNT_SECRET`), once per cold start.
    pub async fn load(
        secrets: &aws_sdk_secretsmanager::Client,
        secret_name: &str,
    ) -> Result<SheetsIdentity, IdentityError> {
        let failed = |reason: String| IdentityError { secret_name: secret_name.to_owned(), reason };
        let output = secrets
            .get_secret_value()
            .secret_id(secret_name)
            .send()
            .await
            .map_err(|e| failed(format!("it could not be read: {}", crate::aws_errors::one_line(&e))))?;
        let json = output.secret_string().ok_or_else(|| failed("it has no SecretString value".to_owned()))?;
        SheetsIdentity::from_key_file(secret_name, json)
    }
}

/// Why a Sheets API call failed.
#[derive(Debug, thiserror::Error)]
pub enum SheetsError {
    #[error("spreadsheet {spreadsheet} was not found (deleted, or the URL is wrong): {message}")]
    NotFound { spreadsheet: String, message: String },
    #[error(
        "spreadsheet {spreadsheet} is not shared with {client_email} as Editor (share it, or check the URL): {message}"
    )]
    NotShared { spreadsheet: String, client_email: String, message: String },
    #[error("Google refused our credentials for spreadsheet {spreadsheet}: {message}")]
    Unauthorized { spreadsheet: String, message: String },
    /// The request itself was refused (HTTP 400): sending it again cannot help.
    #[error("spreadsheet {spreadsheet} refused the write: {message}")]
    Refused { spreadsheet: String, message: String },
    #[error("the Sheets API did not accept the request in time for spreadsheet {spreadsheet} ({attempts} attempts): {detail}")]
    Unavailable { spreadsheet: String, attempts: u32, detail: String },
}

impl SheetsError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SheetsError::Refused { .. })
    }
}

/// A spreadsheet deleted or no longer shared is the customer's to fix.
impl From<SheetsError> for DeliveryError {
    fn from(error: SheetsError) -> Self {
        let customers = matches!(error, SheetsError::NotFound { .. } | SheetsError::NotShared { .. });
        let failure = ConnectorFailure::classified(error.is_permanent(), error);
        DeliveryError::Connector(if customers { failure.customers() } else { failure })
    }
}

/// One tab of a spreadsheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tab {
    pub sheet_id: i64,
    pub title: String,
    pub rows: u64,
    pub columns: u64,
}

/// How a client retries what Google answers with "later".
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first backoff; doubled each time, up to a minute, plus jitter.
    pub first_backoff: Duration,
    /// Retries stop when the next wait would end beyond this.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { first_backoff: Duration::from_secs(1), budget: Duration::from_secs(600) }
    }
}

/// The Sheets API v4 as our service account calls it.
pub struct SheetsClient {
    pub(super) http: reqwest::Client,
    pub(super) endpoint: String,
    pub(super) identity: SheetsIdentity,
    pub(super) pacer: Pacer,
    pub(super) retry: RetryPolicy,
    /// The largest `batchUpdate` body to send.
    pub(super) max_request_bytes: usize,
    /// How long one delivery job may take ([`JOB_BUDGET`] unless set).
    pub(super) job_budget: Duration,
}

/// How long one Sheets delivery job may hold the function: past it the job
/// is a transient failure the sweeper re-drives later, so one slow or
/// throttled spreadsheet cannot keep every other tenant's waiting.
pub const JOB_BUDGET: Duration = Duration::from_secs(120);

/// A random fraction of `limit`, for jitter.
fn jitter(limit: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    limit.mul_f64((random % 1000) as f64 / 1000.0)
}

impl SheetsClient {
    /// A client of the API at `endpoint` (`SHEETS_API_ENDPOINT`) writing at
    /// most `writes_per_minute` requests a minute.
    pub fn new(identity: SheetsIdentity, endpoint: &str, writes_per_minute: u32, retry: RetryPolicy) -> SheetsClient {
        let interval = Duration::from_secs_f64(60.0 / f64::from(writes_per_minute.max(1)));
        SheetsClient {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(120))
                // Google's API never redirects; a redirect would carry our
                // bearer token somewhere else.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a TLS client can be built"),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            identity,
            pacer: Pacer { interval, last: Mutex::new(None) },
            retry,
            max_request_bytes: MAX_REQUEST_BYTES,
            job_budget: JOB_BUDGET,
        }
    }

    /// A job budget other than [`JOB_BUDGET`] (tests use a short one).
    pub fn with_job_budget(mut self, budget: Duration) -> SheetsClient {
        self.job_budget = budget;
        self
    }

    pub fn job_budget(&self) -> Duration {
        self.job_budget
    }

    /// Requests of at most `bytes` instead of Google's recommended ~2 MB
    /// (tests use it to see a large tab written in several requests).
    pub fn with_max_request_bytes(mut self, bytes: usize) -> SheetsClient {
        self.max_request_bytes = bytes.max(4_096);
        self
    }

    pub fn identity(&self) -> &SheetsIdentity {
        &self.identity
    }

    async fn authorization(&self, spreadsheet: &str) -> Result<reqwest::header::HeaderMap, SheetsError> {
        match self.identity.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Err(SheetsError::Unauthorized {
                spreadsheet: spreadsheet.to_owned(),
                message: "no token was produced".to_owned(),
            }),
            Err(error) => {
                Err(SheetsError::Unauthorized { spreadsheet: spreadsheet.to_owned(), message: cut(&error.to_string()) })
            }
        }
    }

    /// Sends one request, retrying throttling and server errors; returns the
    /// JSON answer.
    async fn call(&self, spreadsheet: &str, write: Option<String>, url: String) -> Result<Value, SheetsError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if write.is_some() {
                self.pacer.wait().await;
            }
            let headers = self.authorization(spreadsheet).await?;
            let request = match &write {
                Some(body) => self
                    .http
                    .post(&url)
                    .headers(headers)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => self.http.get(&url).headers(headers),
            };
            let (retry_after, detail) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = response.bytes().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        return serde_json::from_slice(&body).map_err(|e| SheetsError::Refused {
                            spreadsheet: spreadsheet.to_owned(),
                            message: format!("the answer is not JSON: {e}"),
                        });
                    }
                    let message = google_error_message(&body, status);
                    let spreadsheet = spreadsheet.to_owned();
                    match status {
                        404 => return Err(SheetsError::NotFound { spreadsheet, message }),
                        403 => {
                            let client_email = self.identity.client_email.clone();
                            return Err(SheetsError::NotShared { spreadsheet, client_email, message });
                        }
                        401 => return Err(SheetsError::Unauthorized { spreadsheet, message }),
                        429 | 500 | 502 | 503 | 504 => (retry_after, format!("HTTP {status}: {message}")),
                        _ => {
                            return Err(SheetsError::Refused {
                                spreadsheet,
                                message: format!("HTTP {status}: {message}"),
                            })
                        }
                    }
                }
                Err(error) => (None, cut(&error.to_string())),
            };
            let backoff =
                self.retry.first_backoff.saturating_mul(1 << (attempt - 1).min(6)).min(Duration::from_secs(60));
            let wait = retry_after.unwrap_or(backoff + jitter(backoff));
            if started.elapsed() + wait > self.retry.budget {
                return Err(SheetsError::Unavailable {
                    spreadsheet: spreadsheet.to_owned(),
                    attempts: attempt,
                    detail,
                });
            }
            warn!(spreadsheet, attempt, wait_ms = wait.as_millis() as u64, %detail, "the Sheets API asked us to wait; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The tabs of a spreadsheet.
    pub async fn tabs(&self, spreadsheet: &str) -> Result<Vec<Tab>, SheetsError> {
        let url = format!(
            "{}/v4/spreadsheets/{spreadsheet}?fields=sheets.properties(sheetId,title,gridProperties(rowCount,columnCount))",
            self.endpoint
        );
        let answer = self.call(spreadsheet, None, url).await?;
        let sheets = answer["sheets"].as_array().cloned().unwrap_or_default();
        Ok(sheets
            .iter()
            .map(|sheet| {
                let properties = &sheet["properties"];
                Tab {
                    sheet_id: properties["sheetId"].as_i64().unwrap_or(0),
                    title: properties["title"].as_str().unwrap_or_default().to_owned(),
                    rows: properties["gridProperties"]["rowCount"].as_u64().unwrap_or(0),
                    columns: properties["gridProperties"]["columnCount"].as_u64().unwrap_or(0),
                }
            })
            .collect())
    }

    /// One `batchUpdate` of the requests (JSON texts), applied atomically.
    pub async fn batch_update(&self, spreadsheet: &str, requests: &[String]) -> Result<Value, SheetsError> {
        let url = format!("{}/v4/spreadsheets/{spreadsheet}:batchUpdate", self.endpoint);
        let body = format!("{{\"requests\":[{}]}}", requests.join(","));
        self.call(spreadsheet, Some(body), url).await
    }
}

/// Google's `error.message`, or the status when the body says nothing.
fn google_error_message(body: &[u8], status: u16) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(|m| cut(m)))
        .unwrap_or_else(|| format!("HTTP {status}"))
}
