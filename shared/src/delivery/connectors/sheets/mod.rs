//! The `google-sheets` connector and the `deliver-sheets` deliverer
//! (docs/design.md, "Reports and layouts" and "Tenants"): the top
//! `min(maxRows, n)` items of each report of the feed,
//! written into a customer's spreadsheet by a Google identity of ours that
//! the customer shares the spreadsheet with as Editor — the tenant's own
//! (keyless Google, [`crate::google_identity`]) or, on the older keyed
//! path, our one common service account — through the Sheets API v4 over
//! plain HTTP.
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
//! what a reader sees meanwhile). Google allows each identity 60 write
//! requests a minute: writes are
//! paced to that, and a 429 / `RESOURCE_EXHAUSTED` (or a 5xx) is retried with
//! exponential backoff and jitter, honouring `Retry-After`, within a time
//! budget.

mod client;
mod deliverer;
mod pacing;
mod setup;
mod tab_plan;
mod tab_writer;

pub use client::{
    IdentityError, RetryPolicy, SheetsClient, SheetsError, SheetsIdentity, Tab, DEFAULT_WRITES_PER_MINUTE,
    GOOGLE_SHEETS_ENDPOINT, JOB_BUDGET, MAX_REQUEST_BYTES, SHEETS_SCOPE,
};
pub use deliverer::{MakeSheetsClient, OverBudget, SheetsClients, SheetsDeliverer, SheetsNotConfigured};
pub use setup::{load_sheets_clients, SheetsSettings, SheetsSetupError};
pub use tab_plan::STATUS_TAB;
