//! The `google-sheets` connector and the `deliver-sheets` deliverer (DESIGN
//! §5, §6): the top `min(maxRows, n)` items of each report of the feed,
//! written into a customer's spreadsheet by *our* Google service account
//! (the customer shares the spreadsheet with it as Editor), through the
//! Sheets API v4 over plain HTTP.
//!
//! One tab per report, titled by its `data_type`, created when missing and
//! otherwise kept (same sheetId, so links and formulas to it survive); other
//! tabs are never touched. Row 1 is the header, then the items in rank
//! order, numbers as numbers (an id beyond 2^53 − 1 as text, so no digit is
//! lost). Each report tab's grid ends exactly rows × 3 — resized with
//! `updateSheetProperties`, never cleared and rewritten, so blank rows do not
//! pile up — and the `_popularity` tab (data_type, runId, rows, written at)
//! is written last, like `_manifest.json`. Before the first write the
//! spreadsheet's total cells after the delivery are checked against
//! Google's 10,000,000-cell limit: over it, nothing is written and the error
//! (permanent) says how many cells are needed and available.
//!
//! Writes are `batchUpdate`s of at most ~2 MB (Google's recommendation). A
//! tab whose resize and rows fit one request is replaced by one batchUpdate,
//! which Google applies atomically; a larger tab is resized and its first
//! rows written in one, the rest in the following ones (docs/delivery.md says
//! what a reader sees meanwhile). One service account writes for every
//! customer, and Google allows it 60 write requests a minute: writes are
//! paced to that, and a 429 / `RESOURCE_EXHAUSTED` (or a 5xx) is retried with
//! exponential backoff and jitter, honouring `Retry-After`, within a time
//! budget.

use std::time::{Duration, Instant};

use google_cloud_auth::credentials::service_account::{AccessSpecifier, Builder as ServiceAccountBuilder};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::aws_errors::cut;
use crate::delivery::attempt::Deliverer;
use crate::delivery::connection_test::{ConnectionTestReport, ConnectionTestRequest};
use crate::delivery::error::DeliveryError;
use crate::delivery::job::DeliveryJob;
use crate::delivery::registry::JobKind;
use crate::delivery::resume::PartLedger;
use crate::delivery::status::DeliveredObject;
use crate::domain::{Encoding, ReportKind};
use crate::manifest::{run_manifest_key, RunManifest};
use crate::report_writer::ReportItem;
use crate::store::ObjectStore;
use crate::tenant::{Connector, SheetsConnector, TenantConfig};
use crate::transfer::read_top_items;

/// Google's Sheets API.
pub const GOOGLE_SHEETS_ENDPOINT: &str = "https://sheets.googleapis.com";
/// The scope of our tokens.
pub const SHEETS_SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
/// Google's limit of cells per spreadsheet, blank ones included.
pub const MAX_SPREADSHEET_CELLS: u64 = 10_000_000;
/// Google recommends request payloads of at most 2 MB.
pub const MAX_REQUEST_BYTES: usize = 2_000_000;
/// Write requests a minute Google allows one user (our one service account).
pub const DEFAULT_WRITES_PER_MINUTE: u32 = 60;
/// The tab written last, saying which run each report tab holds.
pub const STATUS_TAB: &str = "_popularity";
const REPORT_COLUMNS: u64 = 3;
const STATUS_COLUMNS: u64 = 4;
/// The largest integer a spreadsheet number holds exactly.
const MAX_EXACT_INTEGER: i64 = (1 << 53) - 1;
/// The most rows one report may have so that its tab and the `_popularity`
/// tab alone fit the limit: 3,333,329.
pub const MAX_ROWS_ONE_REPORT: u64 = (MAX_SPREADSHEET_CELLS - 2 * STATUS_COLUMNS) / REPORT_COLUMNS - 1;

/// Cells a feed of `reports` reports and `max_rows` rows takes at most: each
/// report tab its rows, a header and 3 columns, and the `_popularity` tab.
pub fn cells_needed(reports: usize, max_rows: u64) -> u64 {
    let reports = reports as u64;
    reports * (max_rows + 1) * REPORT_COLUMNS + (reports + 1) * STATUS_COLUMNS
}

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

/// One tab of a spreadsheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tab {
    pub sheet_id: i64,
    pub title: String,
    pub rows: u64,
    pub columns: u64,
}

/// Paces write requests to a number a minute, over every spreadsheet this
/// process writes (Google counts them per user, and we are one user).
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl Pacer {
    async fn wait(&self) {
        let mut last = self.last.lock().await;
        if let Some(previous) = *last {
            let next = previous + self.interval;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        *last = Some(Instant::now());
    }
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
    http: reqwest::Client,
    endpoint: String,
    identity: SheetsIdentity,
    pacer: Pacer,
    retry: RetryPolicy,
    /// The largest `batchUpdate` body to send.
    max_request_bytes: usize,
}

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
                .build()
                .expect("a TLS client can be built"),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            identity,
            pacer: Pacer { interval, last: Mutex::new(None) },
            retry,
            max_request_bytes: MAX_REQUEST_BYTES,
        }
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

// ---------------------------------------------------------------------------
// The layout of a delivery
// ---------------------------------------------------------------------------

/// A tab this delivery writes: where it is and how large it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TargetTab {
    title: String,
    sheet_id: i64,
    /// `None` when the tab must be created.
    existing: Option<Tab>,
    rows: u64,
    columns: u64,
}

impl TargetTab {
    fn cells(&self) -> u64 {
        self.rows * self.columns
    }

    fn current_cells(&self) -> u64 {
        self.existing.as_ref().map_or(0, |tab| tab.rows * tab.columns)
    }

    /// `addSheet` for a new tab, else `updateSheetProperties` to the exact grid.
    fn shape_request(&self) -> String {
        match self.existing {
            None => serde_json::json!({"addSheet": {"properties": {"sheetId": self.sheet_id, "title": self.title,
                "gridProperties": {"rowCount": self.rows, "columnCount": self.columns}}}})
            .to_string(),
            Some(_) => serde_json::json!({"updateSheetProperties": {"properties": {"sheetId": self.sheet_id,
                "gridProperties": {"rowCount": self.rows, "columnCount": self.columns}},
                "fields": "gridProperties.rowCount,gridProperties.columnCount"}})
            .to_string(),
        }
    }
}

/// A sheetId for a new tab: deterministic from its title (so a retry asks
/// for the same one) and not used by another tab.
fn new_sheet_id(title: &str, taken: &[i64]) -> i64 {
    let mut id = title.bytes().fold(0x1F2E_3D4Ci64, |h, b| (h.wrapping_mul(31) + i64::from(b)) & 0x3FFF_FFFF) + 1;
    while taken.contains(&id) {
        id = (id + 7919) & 0x3FFF_FFFF;
    }
    id
}

/// The tabs a delivery writes, in the order it writes them (tabs that
/// shrink first, so the spreadsheet's cell count never rises above both
/// where it starts and where it ends), and the budget check.
fn plan_tabs(tabs: &[Tab], reports: &[(ReportKind, u64)], status_rows: u64) -> Result<Vec<TargetTab>, DeliveryError> {
    let mut taken: Vec<i64> = tabs.iter().map(|t| t.sheet_id).collect();
    let mut target = |title: &str, rows: u64, columns: u64| {
        let existing = tabs.iter().find(|t| t.title == title).cloned();
        let sheet_id = match &existing {
            Some(tab) => tab.sheet_id,
            None => {
                let id = new_sheet_id(title, &taken);
                taken.push(id);
                id
            }
        };
        TargetTab { title: title.to_owned(), sheet_id, existing, rows, columns }
    };
    let mut planned: Vec<TargetTab> =
        reports.iter().map(|(kind, rows)| target(kind.data_type(), rows + 1, REPORT_COLUMNS)).collect();
    let status = target(STATUS_TAB, status_rows, STATUS_COLUMNS);
    let ours: Vec<&str> = planned.iter().map(|t| t.title.as_str()).chain([STATUS_TAB]).collect();
    let others: u64 = tabs.iter().filter(|t| !ours.contains(&t.title.as_str())).map(|t| t.rows * t.columns).sum();
    let needed = planned.iter().map(TargetTab::cells).sum::<u64>() + status.cells();
    if others + needed > MAX_SPREADSHEET_CELLS {
        return Err(DeliveryError::CannotFit {
            reason: format!(
                "the spreadsheet would need {} cells, above Google's limit of {MAX_SPREADSHEET_CELLS}: these reports \
                 need {needed} cells and the other tabs use {others}, leaving {} available; lower maxRows or remove \
                 tabs; nothing was written",
                others + needed,
                MAX_SPREADSHEET_CELLS.saturating_sub(others)
            ),
        });
    }
    planned.sort_by_key(|tab| tab.cells() > tab.current_cells());
    planned.push(status);
    Ok(planned)
}

// ---------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------

/// `{"userEnteredValue":{"numberValue":N}}` or `…{"stringValue":"S"}`.
fn push_number(out: &mut String, value: impl itoa::Integer) {
    out.push_str("{\"userEnteredValue\":{\"numberValue\":");
    out.push_str(itoa::Buffer::new().format(value));
    out.push_str("}}");
}

fn push_text(out: &mut String, text: &str) {
    out.push_str("{\"userEnteredValue\":{\"stringValue\":");
    out.push_str(&serde_json::to_string(text).expect("a string serialises"));
    out.push_str("}}");
}

/// One report item as a row: id (text beyond 2^53 − 1), rank, modifier.
fn push_item_row(out: &mut String, item: &ReportItem) {
    out.push_str("{\"values\":[");
    if item.id.unsigned_abs() > MAX_EXACT_INTEGER as u64 {
        push_text(out, itoa::Buffer::new().format(item.id));
    } else {
        push_number(out, item.id);
    }
    out.push(',');
    push_number(out, item.search_rank);
    out.push_str(",{\"userEnteredValue\":{\"numberValue\":");
    out.push_str(&format!("{:?}", item.search_modifier()));
    out.push_str("}}]}");
}

fn push_text_row(out: &mut String, cells: &[&str]) {
    out.push_str("{\"values\":[");
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_text(out, cell);
    }
    out.push_str("]}");
}

/// An `updateCells` request writing `rows` (JSON row texts) from `row_index`.
fn update_cells(sheet_id: i64, row_index: u64, rows: &str) -> String {
    format!(
        "{{\"updateCells\":{{\"start\":{{\"sheetId\":{sheet_id},\"rowIndex\":{row_index},\"columnIndex\":0}},\
         \"rows\":[{rows}],\"fields\":\"userEnteredValue\"}}}}"
    )
}

/// Requests gathered into `batchUpdate`s of at most the client's request
/// size ([`MAX_REQUEST_BYTES`] unless lowered).
struct Batches<'c> {
    client: &'c SheetsClient,
    spreadsheet: &'c str,
    limit: usize,
    pending: Vec<String>,
    bytes: usize,
    sent: u32,
    /// Tabs (sheetId, title) the pending batch creates.
    adds: Vec<(i64, String)>,
}

impl Batches<'_> {
    /// Bytes the current batch can still take.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes + 64)
    }

    async fn push(&mut self, request: String) -> Result<(), SheetsError> {
        if !self.pending.is_empty() && self.bytes + request.len() + 1 > self.limit {
            self.flush().await?;
        }
        self.bytes += request.len() + 1;
        self.pending.push(request);
        Ok(())
    }

    /// The request that gives `tab` its exact grid (creating it if need be).
    async fn push_shape(&mut self, tab: &TargetTab) -> Result<(), SheetsError> {
        self.push(tab.shape_request()).await?;
        if tab.existing.is_none() {
            self.adds.push((tab.sheet_id, tab.title.clone()));
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SheetsError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.client.batch_update(self.spreadsheet, &self.pending).await {
            Ok(_) => {}
            Err(SheetsError::Refused { spreadsheet, message }) if !self.adds.is_empty() => {
                // A batch is applied whole or not at all. Refused after a
                // retry, a batch that creates tabs may have been applied by
                // an earlier try whose answer was lost (a timeout, a 5xx):
                // then the tabs exist now, with our ids, and the batch is done.
                let tabs = self.client.tabs(&spreadsheet).await?;
                let applied =
                    self.adds.iter().all(|(id, title)| tabs.iter().any(|t| t.sheet_id == *id && &t.title == title));
                if !applied {
                    return Err(SheetsError::Refused { spreadsheet, message });
                }
                warn!(
                    spreadsheet,
                    "a retried batchUpdate was refused because an earlier try had applied it; continuing"
                );
            }
            Err(error) => return Err(error),
        }
        self.sent += 1;
        self.pending.clear();
        self.adds.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Bytes of an `updateCells` request around its rows.
const UPDATE_CELLS_OVERHEAD: usize = 160;
/// At most this many bytes a row takes in a request (a 20-digit id as text).
const MAX_ROW_BYTES: usize = 200;

/// What was sent for one tab: bytes of its rows' JSON and their SHA-256, a
/// fingerprint of exactly what the tab was given.
struct WrittenTab {
    bytes: u64,
    sha256: String,
}

/// Writes one tab: its shape request (create, or resize to the exact grid),
/// then the header and rows in `updateCells` requests that each fill what is
/// left of a batch. A tab small enough for one request starts a new batch if
/// the current one cannot hold it whole, so it is replaced atomically.
async fn write_tab(
    batches: &mut Batches<'_>,
    tab: &TargetTab,
    header: &[&str],
    items: RowsSource<'_>,
) -> Result<WrittenTab, SheetsError> {
    use sha2::Digest;
    let estimate = UPDATE_CELLS_OVERHEAD + 300 + (items.len() + 1) * MAX_ROW_BYTES;
    if estimate <= batches.limit && estimate > batches.room() {
        batches.flush().await?;
    }
    batches.push_shape(tab).await?;
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    let mut rows = String::new();
    let mut first_row = 0u64;
    let mut next_row = 0u64;
    let mut row = String::new();
    for index in 0..=items.len() {
        row.clear();
        match index {
            0 => push_text_row(&mut row, header),
            _ => items.row(index - 1, &mut row),
        }
        hasher.update(row.as_bytes());
        bytes += row.len() as u64;
        if !rows.is_empty() && UPDATE_CELLS_OVERHEAD + rows.len() + 1 + row.len() > batches.room() {
            batches.push(update_cells(tab.sheet_id, first_row, &rows)).await?;
            batches.flush().await?;
            rows.clear();
            first_row = next_row;
        }
        if !rows.is_empty() {
            rows.push(',');
        }
        rows.push_str(&row);
        next_row += 1;
    }
    batches.push(update_cells(tab.sheet_id, first_row, &rows)).await?;
    Ok(WrittenTab { bytes, sha256: hex::encode(hasher.finalize()) })
}

/// Rows to write after the header.
enum RowsSource<'a> {
    Items(&'a [ReportItem]),
    Text(&'a [Vec<String>]),
}

impl RowsSource<'_> {
    fn len(&self) -> usize {
        match self {
            RowsSource::Items(items) => items.len(),
            RowsSource::Text(rows) => rows.len(),
        }
    }

    fn row(&self, index: usize, out: &mut String) {
        match self {
            RowsSource::Items(items) => push_item_row(out, &items[index]),
            RowsSource::Text(rows) => {
                let cells: Vec<&str> = rows[index].iter().map(String::as_str).collect();
                push_text_row(out, &cells);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The deliverer
// ---------------------------------------------------------------------------

/// Delivers `jobs/sheets/` jobs and tests google-sheets connectors.
pub struct SheetsDeliverer<S> {
    pub staging: S,
    pub client: SheetsClient,
    /// The clock for the `_popularity` tab; tests pin it.
    pub now: fn() -> chrono::DateTime<chrono::Utc>,
}

fn sheets_connector<'c>(name: &str, connector: &'c Connector) -> Result<&'c SheetsConnector, DeliveryError> {
    match connector {
        Connector::GoogleSheets(sheet) => Ok(sheet),
        other => Err(DeliveryError::InvalidConnector {
            connector: name.to_owned(),
            reason: format!("type {} is not a google-sheets connector", other.kind()),
        }),
    }
}

impl<S: ObjectStore> SheetsDeliverer<S> {
    async fn write(
        &self,
        job: &DeliveryJob,
        sheet: &SheetsConnector,
        manifest: &RunManifest,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let spreadsheet = sheet.spreadsheet_id.as_str();
        // Every report's rows are read and checked against the run manifest
        // before anything is written, so a broken part never leaves some
        // tabs of the run and not others. At most 10M cells: ~3.3M rows.
        let canonical = Encoding { format: manifest.format, compression: manifest.compression };
        let mut reports = Vec::with_capacity(job.reports.len());
        for &kind in &job.reports {
            let report = manifest.report(kind).ok_or_else(|| DeliveryError::MissingReport {
                location: self.staging.describe(&run_manifest_key(job.run_id)),
                data_type: kind.data_type(),
            })?;
            let rows = report.rows.min(sheet.max_rows);
            let items = read_top_items(&self.staging, &report.parts, canonical, kind, rows).await?;
            reports.push((kind, rows, items));
        }
        let tabs = self.client.tabs(spreadsheet).await?;
        let sizes: Vec<(ReportKind, u64)> = reports.iter().map(|(kind, rows, _)| (*kind, *rows)).collect();
        let plan = plan_tabs(&tabs, &sizes, reports.len() as u64 + 1)?;
        let mut batches = Batches {
            client: &self.client,
            spreadsheet,
            limit: self.client.max_request_bytes,
            pending: Vec::new(),
            bytes: 0,
            sent: 0,
            adds: Vec::new(),
        };
        let mut delivered = Vec::new();
        for tab in plan.iter().filter(|tab| tab.title != STATUS_TAB) {
            let (kind, _, items) = reports
                .iter()
                .find(|(kind, ..)| kind.data_type() == tab.title)
                .expect("every planned report tab is a report");
            let header = [kind.id_field(), "searchRank", "searchModifier"];
            let written = write_tab(&mut batches, tab, &header, RowsSource::Items(items)).await?;
            delivered.push(DeliveredObject::new(
                format!("{}#{}!A1:C{}", sheet.spreadsheet_url, tab.title, tab.rows),
                written.bytes,
                written.sha256,
            ));
        }
        batches.flush().await?;
        let written_at = (self.now)().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status_rows: Vec<Vec<String>> = reports
            .iter()
            .map(|(kind, rows, _)| {
                vec![kind.data_type().to_owned(), job.run_id.to_string(), rows.to_string(), written_at.clone()]
            })
            .collect();
        let status_tab = plan.last().expect("the status tab is planned");
        let header = ["data_type", "runId", "rows", "writtenAt"];
        let written = write_tab(&mut batches, status_tab, &header, RowsSource::Text(&status_rows)).await?;
        batches.flush().await?;
        delivered.push(DeliveredObject::new(
            format!("{}#{STATUS_TAB}!A1:D{}", sheet.spreadsheet_url, status_tab.rows),
            written.bytes,
            written.sha256,
        ));
        info!(spreadsheet, requests = batches.sent, tabs = plan.len(), "sheets delivered");
        Ok(delivered)
    }
}

impl<S: ObjectStore> Deliverer for SheetsDeliverer<S> {
    fn kind(&self) -> JobKind {
        JobKind::Sheets
    }

    async fn deliver<L: PartLedger>(
        &self,
        job: &DeliveryJob,
        _tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
        _ledger: &L,
    ) -> Result<Vec<DeliveredObject>, DeliveryError> {
        let sheet = sheets_connector(&job.connector, connector)?;
        self.write(job, sheet, manifest).await
    }

    /// Opens the spreadsheet, then proves write access without leaving
    /// anything visible: one batchUpdate that adds a tab and deletes it.
    async fn test_connection(
        &self,
        request: &ConnectionTestRequest,
        _tenant: &TenantConfig,
        connector: &Connector,
    ) -> ConnectionTestReport {
        let sheet = match sheets_connector(&request.connector, connector) {
            Ok(sheet) => sheet,
            Err(error) => return ConnectionTestReport::failing("connector", error.to_string()),
        };
        let mut report = ConnectionTestReport::default();
        let tabs = match self.client.tabs(&sheet.spreadsheet_id).await {
            Ok(tabs) => {
                report.passed("open", format!("{} opened ({} tabs)", sheet.spreadsheet_url, tabs.len()));
                tabs
            }
            Err(error) => {
                report.failed("open", error.to_string());
                return report;
            }
        };
        let title = format!("_popularity_test_{}", request.request_id);
        let taken: Vec<i64> = tabs.iter().map(|t| t.sheet_id).collect();
        let probe_id = new_sheet_id(&title, &taken);
        let requests = [
            serde_json::json!({"addSheet": {"properties": {"sheetId": probe_id, "title": title,
                "gridProperties": {"rowCount": 1, "columnCount": 1}}}})
            .to_string(),
            serde_json::json!({"deleteSheet": {"sheetId": probe_id}}).to_string(),
        ];
        match self.client.batch_update(&sheet.spreadsheet_id, &requests).await {
            Ok(_) => report.passed(
                "write",
                format!(
                    "a tab was added and deleted in one batchUpdate as {}; nothing is left",
                    self.client.identity().client_email()
                ),
            ),
            Err(error) => report.failed("write", error.to_string()),
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(sheet_id: i64, title: &str, rows: u64, columns: u64) -> Tab {
        Tab { sheet_id, title: title.into(), rows, columns }
    }

    #[test]
    fn report_tabs_keep_their_ids_new_ones_get_free_ids_and_shrinking_tabs_come_first() {
        let tabs = [tab(0, "Sheet1", 1000, 26), tab(77, "artist_popularity", 5000, 3)];
        let plan = plan_tabs(&tabs, &[(ReportKind::Track, 100), (ReportKind::Artist, 10)], 3).unwrap();
        let shapes: Vec<(&str, u64, u64, bool)> =
            plan.iter().map(|t| (t.title.as_str(), t.rows, t.columns, t.existing.is_some())).collect();
        assert_eq!(
            shapes,
            [("artist_popularity", 11, 3, true), ("track_popularity", 101, 3, false), ("_popularity", 3, 4, false)]
        );
        assert_eq!(plan[0].sheet_id, 77, "a report tab keeps its sheetId");
        assert!(plan[1].sheet_id > 0 && plan[1].sheet_id != 77 && plan[1].sheet_id != plan[2].sheet_id);
        assert_eq!(
            plan[1].sheet_id,
            plan_tabs(&tabs, &[(ReportKind::Track, 100)], 2).unwrap()[0].sheet_id,
            "deterministic"
        );
    }

    #[test]
    fn over_the_cell_limit_nothing_is_planned_and_the_error_says_needed_and_available() {
        let tabs = [tab(0, "customer data", 2_000_000, 4)];
        let error = plan_tabs(&tabs, &[(ReportKind::Track, 1_000_000)], 2).unwrap_err();
        assert!(error.is_permanent());
        let text = error.to_string();
        assert!(text.contains("would need 11000011 cells"), "{text}");
        assert!(text.contains("leaving 2000000 available"), "{text}");
        // The tabs this delivery replaces do not count against it.
        let ours = [tab(1, "track_popularity", 3_000_000, 3)];
        assert!(plan_tabs(&ours, &[(ReportKind::Track, 1_000_000)], 2).is_ok());
    }

    #[test]
    fn the_largest_max_rows_fits_exactly() {
        assert_eq!(MAX_ROWS_ONE_REPORT, 3_333_329);
        assert!(cells_needed(1, MAX_ROWS_ONE_REPORT) <= MAX_SPREADSHEET_CELLS);
        assert!(cells_needed(1, MAX_ROWS_ONE_REPORT + 1) > MAX_SPREADSHEET_CELLS);
    }

    #[test]
    fn ids_beyond_two_to_the_53_are_text_and_numbers_stay_numbers() {
        let mut row = String::new();
        push_item_row(&mut row, &ReportItem { id: 42, search_rank: 1, modifier_hundredths: 57 });
        assert_eq!(
            row,
            r#"{"values":[{"userEnteredValue":{"numberValue":42}},{"userEnteredValue":{"numberValue":1}},{"userEnteredValue":{"numberValue":0.57}}]}"#
        );
        row.clear();
        push_item_row(&mut row, &ReportItem { id: (1 << 53) + 1, search_rank: 2, modifier_hundredths: 100 });
        assert!(row.starts_with(r#"{"values":[{"userEnteredValue":{"stringValue":"9007199254740993"}}"#), "{row}");
        assert!(row.ends_with(r#"{"userEnteredValue":{"numberValue":1.0}}]}"#), "{row}");
    }
}
