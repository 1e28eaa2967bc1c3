//! A Google Sheets API v4 double for tests: an HTTP server on 127.0.0.1 that
//! answers the few Sheets endpoints the google-sheets deliverer uses, as
//! Google would for a spreadsheet a customer shared with our service account.
//! There is no public Sheets emulator, so this models what decides whether a
//! client is correct: a signed bearer JWT with a Sheets scope on every request
//! ([`verify_bearer`]); 404 for an unknown or deleted spreadsheet and 403 for
//! one not shared with the caller (or shared read-only, for writes); tabs
//! with stable `sheetId`s, unique titles and a grid size; `batchUpdate`
//! applied atomically (one invalid request and nothing changes); the
//! 10,000,000-cell limit over all tabs, blank cells included; the
//! 50,000-character cell limit; writes outside the grid refused, shrinking a
//! grid dropping the cells outside it, and `values.clear` never shrinking it
//! (the blank-row pile-up); numbers kept as doubles (so an id above 2^53 − 1
//! sent as a number loses digits, as at Google) and strings as strings;
//! `USER_ENTERED` turning numeric-looking text into numbers; and the
//! per-user write quota, answered with Google's 429 `RESOURCE_EXHAUSTED`.
//! Error bodies have the shape of Google's (`{"error": {"code", "message",
//! "status"}}`). It keeps a log of requests (with their bodies, so tests can
//! check payload sizes and request kinds) and injects error statuses for
//! retry tests.
//!
//! Point a client at [`SheetsDouble::endpoint`] (as `SHEETS_API_ENDPOINT`);
//! set spreadsheets up with [`SheetsDouble::create_spreadsheet`] and
//! [`SheetsDouble::share`], and check results with [`SheetsDouble::tabs`] and
//! [`SheetsDouble::values`], which read the state directly. The double runs
//! on a thread and tokio runtime of its own, so [`SheetsDouble::start`] is
//! synchronous and it works from any test runtime.
//!
//! What it must not do: listen anywhere but 127.0.0.1, talk to Google, or be
//! used outside tests (it is a model of Google's checks, not a security
//! boundary); log or keep a token (the log names the account, and keeps
//! request bodies, which are test data). It is not a spreadsheet engine: no
//! formulas, formats, dates or locales. A request it does not model is
//! answered 400 with a message naming `SheetsDouble`, never half-handled, so
//! a client that starts using something new fails loudly until the double
//! is extended.
//!
//! ```no_run
//! # async fn example() {
//! use integration_tests::google_keys::TestServiceAccount;
//! use integration_tests::sheets_double::{SheetsDouble, TabSpec};
//! let sheets = SheetsDouble::start();
//! let account = TestServiceAccount::generate("popularity@ours.iam.gserviceaccount.com");
//! sheets.register(&account);
//! sheets.create_spreadsheet("acme-sheet", &[TabSpec::new("Sheet1", 1000, 26)]);
//! sheets.share("acme-sheet", &account.client_email);
//! // ... deliver with SHEETS_API_ENDPOINT = sheets.endpoint() ...
//! assert_eq!(sheets.tabs("acme-sheet").len(), 5);
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::google_keys::{AccountRegistry, AuthFailure, TestServiceAccount};
use crate::http_double::{
    authenticate, authorization_header, json_response, lock, percent_decode, with_bearer_challenge, DoubleServer,
    FaultQueue, LoopbackListener, Query, RequestLog, ServerThreads, GOOGLE_BEARER_CHALLENGE,
};

/// Scope of a token that may read and write spreadsheets (what the
/// deliverer asks for).
pub const SCOPE_SPREADSHEETS: &str = "https://www.googleapis.com/auth/spreadsheets";
/// Scope of a token that may only read spreadsheets.
pub const SCOPE_SPREADSHEETS_READONLY: &str = "https://www.googleapis.com/auth/spreadsheets.readonly";
/// Scope of a token with full Drive access, which covers spreadsheets.
pub const SCOPE_DRIVE: &str = "https://www.googleapis.com/auth/drive";
/// Scope of a token that may only read Drive files.
pub const SCOPE_DRIVE_READONLY: &str = "https://www.googleapis.com/auth/drive.readonly";
/// Scope of a token limited to the files the app opened or created.
pub const SCOPE_DRIVE_FILE: &str = "https://www.googleapis.com/auth/drive.file";

/// The audience of a self-signed JWT made for Sheets instead of scopes.
const SHEETS_AUDIENCE: &str = "https://sheets.googleapis.com/";

/// What a token must carry to change a spreadsheet. `cloud-platform` is not
/// among them: Sheets is a Workspace API, and a token with only that scope
/// (google-cloud-auth's default) is refused with 403.
const WRITE_SCOPES: &[&str] = &[SCOPE_SPREADSHEETS, SCOPE_DRIVE, SCOPE_DRIVE_FILE, SHEETS_AUDIENCE];
/// What a token must carry to read one: the write scopes or a read-only one.
const READ_SCOPES: &[&str] = &[
    SCOPE_SPREADSHEETS,
    SCOPE_DRIVE,
    SCOPE_DRIVE_FILE,
    SHEETS_AUDIENCE,
    SCOPE_SPREADSHEETS_READONLY,
    SCOPE_DRIVE_READONLY,
];

/// Google's limit on a spreadsheet's cells, summed over every tab's grid
/// (rowCount × columnCount), blank cells included.
pub const MAX_CELLS_PER_SPREADSHEET: u64 = 10_000_000;
/// Google's limit on the characters in one cell.
pub const MAX_CHARACTERS_PER_CELL: usize = 50_000;
/// Google's limit on a tab's columns (column ZZZ).
pub const MAX_COLUMNS: u32 = 18_278;
/// The largest request body the double reads. Far above the ~2 MB Google
/// recommends: the double accepts big bodies and logs their size, so a test
/// can assert that the client keeps each request near the recommendation.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 << 20;
/// Google's default write quota per user per project per minute; one service
/// account writing for every customer is one user. The double starts with it.
pub const DEFAULT_WRITE_QUOTA_PER_MINUTE: u32 = 60;

/// The grid Google gives a tab added without `gridProperties`.
const DEFAULT_ROW_COUNT: u32 = 1000;
const DEFAULT_COLUMN_COUNT: u32 = 26;
/// Google refuses batches with more requests than this.
const MAX_REQUESTS_PER_BATCH: usize = 100_000;
const QUOTA_WINDOW: Duration = Duration::from_secs(60);
/// The project number 429 messages name as the consumer (Google names the
/// caller's project; the registry does not keep one).
const CONSUMER_PROJECT_NUMBER: &str = "123456789012";

/// The kinds a `batchUpdate` request may be, per the v4 reference; the ones
/// the double applies are matched in [`apply_request`], the others are
/// refused as not modeled (and names outside this list as unknown fields,
/// as Google's JSON parser does).
const REQUEST_KINDS: &[&str] = &[
    "updateSpreadsheetProperties",
    "updateSheetProperties",
    "updateDimensionProperties",
    "updateNamedRange",
    "repeatCell",
    "addNamedRange",
    "deleteNamedRange",
    "addSheet",
    "deleteSheet",
    "autoFill",
    "cutPaste",
    "copyPaste",
    "mergeCells",
    "unmergeCells",
    "updateBorders",
    "updateCells",
    "addFilterView",
    "appendCells",
    "clearBasicFilter",
    "deleteDimension",
    "deleteEmbeddedObject",
    "deleteFilterView",
    "duplicateFilterView",
    "duplicateSheet",
    "findReplace",
    "insertDimension",
    "insertRange",
    "moveDimension",
    "updateEmbeddedObjectPosition",
    "pasteData",
    "textToColumns",
    "updateFilterView",
    "deleteRange",
    "appendDimension",
    "addConditionalFormatRule",
    "updateConditionalFormatRule",
    "deleteConditionalFormatRule",
    "sortRange",
    "setDataValidation",
    "setBasicFilter",
    "addProtectedRange",
    "updateProtectedRange",
    "deleteProtectedRange",
    "autoResizeDimensions",
    "addChart",
    "updateChartSpec",
    "updateBanding",
    "addBanding",
    "deleteBanding",
    "createDeveloperMetadata",
    "updateDeveloperMetadata",
    "deleteDeveloperMetadata",
    "randomizeRange",
    "addDimensionGroup",
    "deleteDimensionGroup",
    "updateDimensionGroup",
    "trimWhitespace",
    "deleteDuplicates",
    "updateEmbeddedObjectBorder",
    "addSlicer",
    "updateSlicerSpec",
    "addDataSource",
    "updateDataSource",
    "deleteDataSource",
    "refreshDataSource",
    "cancelDataSourceRefresh",
    "addTable",
    "updateTable",
    "deleteTable",
];

/// A tab to create a spreadsheet with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabSpec {
    pub title: String,
    /// `None`: 0 for the first tab (as Google's "Sheet1"), otherwise a
    /// random-looking positive id.
    pub sheet_id: Option<i32>,
    pub rows: u32,
    pub columns: u32,
}

impl TabSpec {
    pub fn new(title: &str, rows: u32, columns: u32) -> TabSpec {
        TabSpec { title: title.to_owned(), sheet_id: None, rows, columns }
    }

    pub fn with_sheet_id(mut self, sheet_id: i32) -> TabSpec {
        self.sheet_id = Some(sheet_id);
        self
    }
}

/// A tab as it is now, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabState {
    pub sheet_id: i32,
    pub title: String,
    /// Position among the tabs, from 0.
    pub index: usize,
    pub row_count: u32,
    pub column_count: u32,
    pub frozen_row_count: u32,
    pub frozen_column_count: u32,
}

/// One request the double answered, for assertions on what a client did.
#[derive(Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Arrival order, from 0.
    pub sequence: u64,
    pub method: String,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    /// The query string as sent, if any.
    pub query: Option<String>,
    /// The spreadsheet the path names, decoded.
    pub spreadsheet_id: Option<String>,
    /// The account whose token was checked (also for refused tokens, when
    /// they name one).
    pub client_email: Option<String>,
    /// Whether the request counts as a write (quota, `fail_next`).
    pub is_write: bool,
    /// For `batchUpdate`: the kind of each request in it, in order (also when
    /// the batch was refused), e.g. `["addSheet", "updateCells"]`.
    pub batch_kinds: Vec<String>,
    /// The request body as received (empty when it exceeded
    /// [`MAX_REQUEST_BODY_BYTES`]; `body_size` still counts what arrived).
    pub body: Bytes,
    pub body_size: usize,
    pub status: u16,
}

impl fmt::Debug for LoggedRequest {
    // Bodies can be megabytes: show their size, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggedRequest")
            .field("sequence", &self.sequence)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("client_email", &self.client_email)
            .field("is_write", &self.is_write)
            .field("batch_kinds", &self.batch_kinds)
            .field("body_size", &self.body_size)
            .field("status", &self.status)
            .finish()
    }
}

/// A Sheets API v4 front end for tests; see the module documentation.
/// Dropping it stops the server and closes its connections.
pub struct SheetsDouble {
    server: DoubleServer,
    state: Arc<DoubleState>,
}

impl SheetsDouble {
    /// Starts a double on `127.0.0.1:<ephemeral port>`, with no spreadsheets,
    /// no accounts, and Google's default write quota
    /// ([`DEFAULT_WRITE_QUOTA_PER_MINUTE`] per account).
    ///
    /// # Panics
    /// When it cannot bind its port or start its runtime.
    pub fn start() -> SheetsDouble {
        let listener = LoopbackListener::bind("SheetsDouble");
        let state = Arc::new(DoubleState {
            registry: AccountRegistry::default(),
            spreadsheets: Mutex::default(),
            faults: FaultQueue::default(),
            lost_answers: FaultQueue::default(),
            quota: Mutex::new(WriteQuota {
                per_minute: Some(DEFAULT_WRITE_QUOTA_PER_MINUTE),
                retry_after_secs: None,
                recent_writes: HashMap::new(),
            }),
            log: RequestLog::default(),
            sheet_id_counter: AtomicU64::new(0),
        });
        let server_state = Arc::clone(&state);
        // One thread is plenty: every request is handled in memory.
        let server = listener
            .serve("sheets-double", ServerThreads::One, move |request| serve(Arc::clone(&server_state), request));
        SheetsDouble { server, state }
    }

    /// `http://127.0.0.1:PORT`, the base URL to use as `SHEETS_API_ENDPOINT`
    /// (requests go to `<endpoint>/v4/spreadsheets/...`).
    pub fn endpoint(&self) -> String {
        self.server.endpoint().to_owned()
    }

    /// The accounts whose tokens the double accepts (shared: registering or
    /// revoking through a clone takes effect at once).
    pub fn registry(&self) -> AccountRegistry {
        self.state.registry.clone()
    }

    /// Makes `account` known (it can open no spreadsheet until shared).
    pub fn register(&self, account: &TestServiceAccount) {
        self.state.registry.register(account);
    }

    /// Creates spreadsheet `id` with `tabs`, in that order, empty and shared
    /// with nobody. Its title is `Test spreadsheet <id>`.
    ///
    /// # Panics
    /// When `id` exists, `tabs` is empty, titles or sheet ids repeat, a grid
    /// is empty or too wide, or the cells exceed Google's limit.
    pub fn create_spreadsheet(&self, id: &str, tabs: &[TabSpec]) {
        assert!(!tabs.is_empty(), "SheetsDouble: spreadsheet {id:?} needs at least one tab, as at Google");
        let mut workbook = Workbook { title: format!("Test spreadsheet {id}"), tabs: Vec::new() };
        for (position, spec) in tabs.iter().enumerate() {
            assert!(
                workbook.title_taken(&spec.title, None).is_none(),
                "SheetsDouble: tab title {:?} repeats in spreadsheet {id:?}",
                spec.title
            );
            assert!(
                spec.rows >= 1 && spec.columns >= 1 && spec.columns <= MAX_COLUMNS,
                "SheetsDouble: tab {:?} has a {}×{} grid; Google needs 1..=∞ rows and 1..={MAX_COLUMNS} columns",
                spec.title,
                spec.rows,
                spec.columns
            );
            let sheet_id = match spec.sheet_id {
                Some(sheet_id) => {
                    assert!(sheet_id >= 0, "SheetsDouble: sheet ids are not negative, got {sheet_id}");
                    assert!(workbook.tab_by_id(sheet_id).is_none(), "SheetsDouble: sheet id {sheet_id} repeats");
                    sheet_id
                }
                None if position == 0 && workbook.tab_by_id(0).is_none() => 0,
                None => fresh_sheet_id(&self.state.sheet_id_counter, &workbook),
            };
            workbook.tabs.push(Tab::new(sheet_id, &spec.title, spec.rows, spec.columns));
        }
        // Ids given later in the list may have been handed out above already.
        let mut seen = BTreeSet::new();
        assert!(workbook.tabs.iter().all(|t| seen.insert(t.sheet_id)), "SheetsDouble: sheet ids repeat in {id:?}");
        assert!(
            workbook.total_cells() <= MAX_CELLS_PER_SPREADSHEET,
            "SheetsDouble: spreadsheet {id:?} would have {} cells, above Google's limit of {MAX_CELLS_PER_SPREADSHEET}",
            workbook.total_cells()
        );
        let mut spreadsheets = lock(&self.state.spreadsheets);
        assert!(!spreadsheets.contains_key(id), "SheetsDouble: spreadsheet {id:?} exists already");
        spreadsheets
            .insert(id.to_owned(), Spreadsheet { workbook, editors: BTreeSet::new(), readers: BTreeSet::new() });
    }

    /// Shares spreadsheet `id` with `client_email` as Editor (what the
    /// customer is told to do).
    ///
    /// # Panics
    /// When `id` does not exist.
    pub fn share(&self, id: &str, client_email: &str) {
        self.with_spreadsheet(id, |s| {
            s.readers.remove(client_email);
            s.editors.insert(client_email.to_owned());
        });
    }

    /// Shares spreadsheet `id` with `client_email` as Viewer only (the
    /// customer's mistake): reads pass, writes get 403.
    ///
    /// # Panics
    /// When `id` does not exist.
    pub fn share_read_only(&self, id: &str, client_email: &str) {
        self.with_spreadsheet(id, |s| {
            s.editors.remove(client_email);
            s.readers.insert(client_email.to_owned());
        });
    }

    /// Stops sharing spreadsheet `id` with `client_email`.
    ///
    /// # Panics
    /// When `id` does not exist.
    pub fn unshare(&self, id: &str, client_email: &str) {
        self.with_spreadsheet(id, |s| {
            s.editors.remove(client_email);
            s.readers.remove(client_email);
        });
    }

    /// Deletes spreadsheet `id`: requests for it get 404 from now on, as for
    /// a deleted file. Unknown ids are ignored.
    pub fn delete_spreadsheet(&self, id: &str) {
        lock(&self.state.spreadsheets).remove(id);
    }

    /// The tabs of spreadsheet `id`, in index order.
    ///
    /// # Panics
    /// When `id` does not exist.
    pub fn tabs(&self, id: &str) -> Vec<TabState> {
        self.with_spreadsheet(id, |s| {
            s.workbook
                .tabs
                .iter()
                .enumerate()
                .map(|(index, tab)| TabState {
                    sheet_id: tab.sheet_id,
                    title: tab.title.clone(),
                    index,
                    row_count: tab.row_count,
                    column_count: tab.column_count,
                    frozen_row_count: tab.frozen_row_count,
                    frozen_column_count: tab.frozen_column_count,
                })
                .collect()
        })
    }

    /// The values of tab `title` of spreadsheet `id`, row by row from A1, as
    /// stored (numbers as numbers, text as text): trailing empty rows and
    /// each row's trailing empty cells left out, blank cells before the last
    /// value of a row as `""` (as `values.get` answers).
    ///
    /// # Panics
    /// When `id` or the tab does not exist.
    pub fn values(&self, id: &str, title: &str) -> Vec<Vec<Value>> {
        self.with_spreadsheet(id, |s| {
            let tab =
                s.workbook.tab_titled(title).unwrap_or_else(|| panic!("SheetsDouble: {id:?} has no tab {title:?}"));
            let tab = &s.workbook.tabs[tab];
            tab.region(0, tab.row_count, 0, tab.column_count)
        })
    }

    /// Writes `rows` into tab `title` from A1 as `valueInputOption=RAW`
    /// would (`null` leaves a cell, `""` clears it), bypassing every check
    /// but the grid's: for setting up what a customer already has.
    ///
    /// # Panics
    /// When `id` or the tab does not exist, or `rows` do not fit the grid or
    /// hold something other than numbers, text, booleans and nulls.
    pub fn set_values(&self, id: &str, title: &str, rows: &[Vec<Value>]) {
        self.with_spreadsheet(id, |s| {
            let index =
                s.workbook.tab_titled(title).unwrap_or_else(|| panic!("SheetsDouble: {id:?} has no tab {title:?}"));
            let tab = &mut s.workbook.tabs[index];
            let width = rows.iter().map(Vec::len).max().unwrap_or(0);
            assert!(
                rows.len() <= tab.row_count as usize && width <= tab.column_count as usize,
                "SheetsDouble: {} rows × {width} columns do not fit tab {title:?} ({}×{})",
                rows.len(),
                tab.row_count,
                tab.column_count
            );
            for (r, row) in rows.iter().enumerate() {
                for (c, value) in row.iter().enumerate() {
                    let write = input_value(value, ValueInputOption::Raw)
                        .unwrap_or_else(|why| panic!("SheetsDouble: set_values [{r}][{c}]: {why}"));
                    match write {
                        Some(stored) => tab.set(r as u32, c as u32, stored),
                        None if !value.is_null() => tab.clear_cell(r as u32, c as u32),
                        None => {}
                    }
                }
            }
        });
    }

    /// The cells of spreadsheet `id` as Google counts them against its
    /// limit: rowCount × columnCount summed over the tabs.
    ///
    /// # Panics
    /// When `id` does not exist.
    pub fn total_cells(&self, id: &str) -> u64 {
        self.with_spreadsheet(id, |s| s.workbook.total_cells())
    }

    /// Every request answered so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.in_arrival_order(|r| r.sequence)
    }

    /// The next `n` write requests (`batchUpdate`, `values.update`,
    /// `values.clear`, `values.batchUpdate`, `values.batchClear`) are answered
    /// `status` before any check, changing nothing. 429 gets Google's
    /// write-quota body and a `Retry-After` header (see
    /// [`Self::set_retry_after_secs`]; 1 s by default), 500 and 503 Google's
    /// bodies for those.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.faults.arm(n, status);
    }

    /// The next `n` write requests that succeed are applied, then answered
    /// `status` as if the answer had been lost on its way (a timeout, a
    /// 500 after the write): a client that retries sends a write that was
    /// already applied.
    pub fn lose_next_answers(&self, n: usize, status: u16) {
        self.state.lost_answers.arm(n, status);
    }

    /// At most `limit` write requests per account in any rolling 60 s; more
    /// get 429 as Google's "Write requests per minute per user" quota
    /// answers. `None` lifts the quota. Starts at
    /// [`DEFAULT_WRITE_QUOTA_PER_MINUTE`]. Writes already made still count.
    pub fn set_write_quota_per_minute(&self, limit: Option<u32>) {
        lock(&self.state.quota).per_minute = limit;
    }

    /// The `Retry-After` value (seconds) of every 429 from now on. `None`
    /// (the default): the seconds until the quota window has room again, or
    /// 1 for an injected 429.
    pub fn set_retry_after_secs(&self, seconds: Option<u64>) {
        lock(&self.state.quota).retry_after_secs = seconds;
    }

    fn with_spreadsheet<T>(&self, id: &str, work: impl FnOnce(&mut Spreadsheet) -> T) -> T {
        let mut spreadsheets = lock(&self.state.spreadsheets);
        let spreadsheet =
            spreadsheets.get_mut(id).unwrap_or_else(|| panic!("SheetsDouble: no spreadsheet {id:?} (deleted?)"));
        work(spreadsheet)
    }
}

impl fmt::Debug for SheetsDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SheetsDouble").field("endpoint", &self.server.endpoint()).finish_non_exhaustive()
    }
}

/// State shared by the double's handle and the connection tasks.
struct DoubleState {
    registry: AccountRegistry,
    spreadsheets: Mutex<HashMap<String, Spreadsheet>>,
    /// Statuses armed by `fail_next`.
    faults: FaultQueue<u16>,
    /// Statuses armed by `lose_next_answers`.
    lost_answers: FaultQueue<u16>,
    quota: Mutex<WriteQuota>,
    log: RequestLog<LoggedRequest>,
    /// Feeds [`fresh_sheet_id`].
    sheet_id_counter: AtomicU64,
}

struct WriteQuota {
    per_minute: Option<u32>,
    retry_after_secs: Option<u64>,
    /// When each account's accepted writes of the last minute arrived.
    recent_writes: HashMap<String, VecDeque<Instant>>,
}

impl DoubleState {
    /// Counts a write of `client_email`, or says after how many seconds one
    /// would be accepted. Refused writes do not count.
    fn take_write_slot(&self, client_email: &str) -> Result<(), u64> {
        let mut quota = lock(&self.quota);
        let now = Instant::now();
        let (limit, retry_after) = (quota.per_minute, quota.retry_after_secs);
        let recent = quota.recent_writes.entry(client_email.to_owned()).or_default();
        while recent.front().is_some_and(|&at| now.duration_since(at) >= QUOTA_WINDOW) {
            recent.pop_front();
        }
        if let Some(limit) = limit {
            if recent.len() >= limit as usize {
                let frees_in =
                    recent.front().map_or(Duration::ZERO, |&oldest| QUOTA_WINDOW - now.duration_since(oldest));
                // Rounded up: retrying after the header's seconds must find room.
                let computed = frees_in.as_secs() + u64::from(frees_in.subsec_nanos() > 0);
                return Err(retry_after.unwrap_or(computed.max(1)));
            }
        }
        recent.push_back(now);
        Ok(())
    }
}

/// A spreadsheet and who it is shared with.
struct Spreadsheet {
    workbook: Workbook,
    editors: BTreeSet<String>,
    readers: BTreeSet<String>,
}

impl Spreadsheet {
    fn allows(&self, client_email: &str, write: bool) -> bool {
        self.editors.contains(client_email) || (!write && self.readers.contains(client_email))
    }
}

/// A spreadsheet's content: cloned to apply a batch atomically.
#[derive(Clone)]
struct Workbook {
    title: String,
    /// In index order.
    tabs: Vec<Tab>,
}

#[derive(Clone)]
struct Tab {
    sheet_id: i32,
    title: String,
    row_count: u32,
    column_count: u32,
    frozen_row_count: u32,
    frozen_column_count: u32,
    /// Non-blank cells by (row, column), from 0; always inside the grid.
    cells: BTreeMap<(u32, u32), Value>,
}

impl Workbook {
    fn total_cells(&self) -> u64 {
        self.tabs.iter().map(|t| u64::from(t.row_count) * u64::from(t.column_count)).sum()
    }

    fn tab_by_id(&self, sheet_id: i32) -> Option<usize> {
        self.tabs.iter().position(|t| t.sheet_id == sheet_id)
    }

    /// The tab titled exactly `title` (range references match exactly).
    fn tab_titled(&self, title: &str) -> Option<usize> {
        self.tabs.iter().position(|t| t.title == title)
    }

    /// The tab, other than `except`, whose title clashes with `title`. Google
    /// keeps tab names unique regardless of case.
    fn title_taken(&self, title: &str, except: Option<usize>) -> Option<usize> {
        let wanted = title.to_lowercase();
        self.tabs.iter().enumerate().position(|(i, t)| Some(i) != except && t.title.to_lowercase() == wanted)
    }

    /// `SheetN` for the smallest N from the tab count up that is free, as
    /// Google names a tab added without a title.
    fn default_title(&self) -> String {
        (self.tabs.len() + 1..)
            .map(|n| format!("Sheet{n}"))
            .find(|title| self.title_taken(title, None).is_none())
            .unwrap_or_else(|| "Sheet".to_owned())
    }

    fn to_json(&self, spreadsheet_id: &str) -> Value {
        json!({
            "spreadsheetId": spreadsheet_id,
            "properties": {
                "title": self.title,
                "locale": "en_US",
                "autoRecalc": "ON_CHANGE",
                "timeZone": "Etc/GMT",
            },
            "sheets": self.tabs.iter().enumerate().map(|(i, t)| json!({"properties": t.properties_json(i)})).collect::<Vec<_>>(),
            "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{spreadsheet_id}/edit"),
        })
    }
}

impl Tab {
    fn new(sheet_id: i32, title: &str, row_count: u32, column_count: u32) -> Tab {
        Tab {
            sheet_id,
            title: title.to_owned(),
            row_count,
            column_count,
            frozen_row_count: 0,
            frozen_column_count: 0,
            cells: BTreeMap::new(),
        }
    }

    /// `SheetProperties` as Google answers them (zero frozen counts are left
    /// out, as proto3 JSON leaves out defaults).
    fn properties_json(&self, index: usize) -> Value {
        let mut grid = json!({"rowCount": self.row_count, "columnCount": self.column_count});
        if self.frozen_row_count > 0 {
            grid["frozenRowCount"] = json!(self.frozen_row_count);
        }
        if self.frozen_column_count > 0 {
            grid["frozenColumnCount"] = json!(self.frozen_column_count);
        }
        json!({"sheetId": self.sheet_id, "title": self.title, "index": index, "sheetType": "GRID", "gridProperties": grid})
    }

    fn set(&mut self, row: u32, column: u32, value: Value) {
        self.cells.insert((row, column), value);
    }

    fn clear_cell(&mut self, row: u32, column: u32) {
        self.cells.remove(&(row, column));
    }

    fn clear(&mut self, rows: (u32, u32), columns: (u32, u32)) {
        self.cells.retain(|&(r, c), _| !(rows.0 <= r && r < rows.1 && columns.0 <= c && c < columns.1));
    }

    /// Sets the grid size; cells outside the new grid are gone, as when
    /// Google deletes the rows or columns.
    fn resize(&mut self, row_count: u32, column_count: u32) {
        self.row_count = row_count;
        self.column_count = column_count;
        self.cells.retain(|&(r, c), _| r < row_count && c < column_count);
    }

    fn size(&self, dimension: Dimension) -> u32 {
        match dimension {
            Dimension::Rows => self.row_count,
            Dimension::Columns => self.column_count,
        }
    }

    /// Inserts `count` blank rows or columns before `at`, shifting the cells
    /// from there on.
    fn insert(&mut self, dimension: Dimension, at: u32, count: u32) {
        let cells = std::mem::take(&mut self.cells);
        self.cells = cells
            .into_iter()
            .map(|((r, c), v)| match dimension {
                Dimension::Rows if r >= at => ((r + count, c), v),
                Dimension::Columns if c >= at => ((r, c + count), v),
                _ => ((r, c), v),
            })
            .collect();
        match dimension {
            Dimension::Rows => self.row_count += count,
            Dimension::Columns => self.column_count += count,
        }
    }

    /// Deletes rows or columns `[start, end)`, shifting the cells after them
    /// and shrinking the grid (and the frozen area, if they were in it).
    fn delete(&mut self, dimension: Dimension, start: u32, end: u32) {
        let count = end - start;
        let cells = std::mem::take(&mut self.cells);
        let shift = |i: u32| {
            if i >= end {
                Some(i - count)
            } else if i >= start {
                None
            } else {
                Some(i)
            }
        };
        self.cells = cells
            .into_iter()
            .filter_map(|((r, c), v)| match dimension {
                Dimension::Rows => shift(r).map(|r| ((r, c), v)),
                Dimension::Columns => shift(c).map(|c| ((r, c), v)),
            })
            .collect();
        let frozen_lost = |frozen: u32| frozen - frozen.min(end).saturating_sub(start).min(frozen);
        match dimension {
            Dimension::Rows => {
                self.row_count -= count;
                self.frozen_row_count = frozen_lost(self.frozen_row_count);
            }
            Dimension::Columns => {
                self.column_count -= count;
                self.frozen_column_count = frozen_lost(self.frozen_column_count);
            }
        }
    }

    /// The values of rows `[r0, r1)` × columns `[c0, c1)`, row-major, with
    /// trailing blanks trimmed and inner blanks as `""`.
    fn region(&self, r0: u32, r1: u32, c0: u32, c1: u32) -> Vec<Vec<Value>> {
        let mut rows: Vec<Vec<Value>> = Vec::new();
        for (&(r, c), value) in self.cells.range((r0, 0)..(r1, 0)) {
            if c < c0 || c >= c1 {
                continue;
            }
            let (row, column) = ((r - r0) as usize, (c - c0) as usize);
            if rows.len() <= row {
                rows.resize_with(row + 1, Vec::new);
            }
            let cells = &mut rows[row];
            if cells.len() <= column {
                cells.resize(column, Value::String(String::new()));
                cells.push(value.clone());
            } else {
                cells[column] = value.clone();
            }
        }
        rows
    }
}

/// Rows or columns `[start, end)`, from 0.
type Span = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Rows,
    Columns,
}

impl Dimension {
    fn parse(value: Option<&Value>) -> Result<Dimension, String> {
        match value.and_then(Value::as_str) {
            Some("ROWS") => Ok(Dimension::Rows),
            Some("COLUMNS") => Ok(Dimension::Columns),
            _ => Err(format!("dimension must be ROWS or COLUMNS, got {}", value.unwrap_or(&Value::Null))),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Dimension::Rows => "rows",
            Dimension::Columns => "columns",
        }
    }
}

/// A random-looking positive sheet id not used in `workbook`, as Google
/// assigns to a tab added without one (clients must not assume 1, 2, 3...).
fn fresh_sheet_id(counter: &AtomicU64, workbook: &Workbook) -> i32 {
    loop {
        // splitmix64: well spread, and reproducible from run to run.
        let mut z = counter.fetch_add(1, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let candidate = i32::try_from(z % (i32::MAX as u64 - 1)).unwrap_or(i32::MAX - 1) + 1;
        if workbook.tab_by_id(candidate).is_none() {
            return candidate;
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// What a request asks for, from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    /// `GET /v4/spreadsheets/{id}`
    GetSpreadsheet,
    /// `POST /v4/spreadsheets/{id}:batchUpdate`
    BatchUpdate,
    /// `GET /v4/spreadsheets/{id}/values/{range}`
    GetValues(String),
    /// `PUT /v4/spreadsheets/{id}/values/{range}`
    UpdateValues(String),
    /// `POST /v4/spreadsheets/{id}/values/{range}:clear`
    ClearValues(String),
    /// `POST /v4/spreadsheets/{id}/values:batchUpdate`
    BatchUpdateValues,
    /// `POST /v4/spreadsheets/{id}/values:batchClear`
    BatchClearValues,
}

impl Operation {
    /// The spreadsheet id and the operation, or `None` for anything the
    /// double does not model.
    fn parse(method: &Method, path: &str) -> Option<(String, Operation)> {
        let rest = path.strip_prefix("/v4/spreadsheets/")?;
        let id_end = rest.find(['/', ':']).unwrap_or(rest.len());
        let (raw_id, tail) = rest.split_at(id_end);
        if raw_id.is_empty() {
            return None;
        }
        let operation = match (method, tail) {
            (&Method::GET, "") => Operation::GetSpreadsheet,
            (&Method::POST, ":batchUpdate") => Operation::BatchUpdate,
            (&Method::POST, "/values:batchUpdate") => Operation::BatchUpdateValues,
            (&Method::POST, "/values:batchClear") => Operation::BatchClearValues,
            (method, tail) => {
                let raw_range = tail.strip_prefix("/values/").filter(|r| !r.is_empty())?;
                // The verb is split off before decoding: a `:` the client
                // encoded inside the range is not a verb separator.
                match *method {
                    Method::GET => Operation::GetValues(percent_decode(raw_range, false)),
                    Method::PUT => Operation::UpdateValues(percent_decode(raw_range, false)),
                    Method::POST => Operation::ClearValues(percent_decode(raw_range.strip_suffix(":clear")?, false)),
                    _ => return None,
                }
            }
        };
        Some((percent_decode(raw_id, false), operation))
    }

    fn is_write(&self) -> bool {
        !matches!(self, Operation::GetSpreadsheet | Operation::GetValues(_))
    }

    /// The RPC name Google puts in error details.
    fn rpc_method(&self) -> &'static str {
        match self {
            Operation::GetSpreadsheet => "google.apps.sheets.v4.SpreadsheetsService.GetSpreadsheet",
            Operation::BatchUpdate => "google.apps.sheets.v4.SpreadsheetsService.BatchUpdateSpreadsheet",
            Operation::GetValues(_) => "google.apps.sheets.v4.SpreadsheetsService.GetValues",
            Operation::UpdateValues(_) => "google.apps.sheets.v4.SpreadsheetsService.UpdateValues",
            Operation::ClearValues(_) => "google.apps.sheets.v4.SpreadsheetsService.ClearValues",
            Operation::BatchUpdateValues => "google.apps.sheets.v4.SpreadsheetsService.BatchUpdateValues",
            Operation::BatchClearValues => "google.apps.sheets.v4.SpreadsheetsService.BatchClearValues",
        }
    }
}

type Reply = Response<Full<Bytes>>;

/// Filled in while handling a request, for the log.
#[derive(Default)]
struct RequestNote {
    spreadsheet_id: Option<String>,
    client_email: Option<String>,
    is_write: bool,
}

async fn serve(state: Arc<DoubleState>, request: Request<Incoming>) -> Result<Reply, Infallible> {
    let sequence = state.log.next_sequence();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let authorization = authorization_header(request.headers()).map(str::to_owned);
    let declared_size =
        request.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());

    let mut note = RequestNote::default();
    let (body, body_size, reply) = match Limited::new(request.into_body(), MAX_REQUEST_BODY_BYTES).collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            let size = body.len();
            let reply = handle(&state, &method, &path, query.as_deref(), authorization.as_deref(), &body, &mut note);
            (body, size, reply)
        }
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let message = format!("Request payload size exceeds the limit: {MAX_REQUEST_BODY_BYTES} bytes.");
            (Bytes::new(), declared_size.unwrap_or(MAX_REQUEST_BODY_BYTES + 1), error_reply(413, &message))
        }
        // The client went away mid-body; nobody will read an answer.
        Err(_) => (Bytes::new(), 0, error_reply(400, "SheetsDouble: the request body could not be read.")),
    };
    let batch_kinds = match Operation::parse(&method, &path) {
        Some((_, Operation::BatchUpdate)) => batch_kinds(&body),
        _ => Vec::new(),
    };
    state.log.record(LoggedRequest {
        sequence,
        method: method.to_string(),
        path,
        query,
        spreadsheet_id: note.spreadsheet_id,
        client_email: note.client_email,
        is_write: note.is_write,
        batch_kinds,
        body,
        body_size,
        status: reply.status().as_u16(),
    });
    Ok(reply)
}

/// The kind of each request of a `batchUpdate` body, as far as it parses.
fn batch_kinds(body: &[u8]) -> Vec<String> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    let requests = body.get("requests").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    requests
        .iter()
        .map(|r| r.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_else(|| "?".to_owned()))
        .collect()
}

/// Answers one request, in the order Google's front end checks: injected
/// faults (an overloaded front end answers before looking at anything), the
/// token, the write quota, the spreadsheet's existence, sharing, then the
/// request itself.
fn handle(
    state: &DoubleState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
    note: &mut RequestNote,
) -> Reply {
    let Some((spreadsheet_id, operation)) = Operation::parse(method, path) else {
        return error_reply(
            400,
            &format!("SheetsDouble does not model {method} {path}; extend it if a test needs it."),
        );
    };
    note.spreadsheet_id = Some(spreadsheet_id.clone());
    note.is_write = operation.is_write();

    if operation.is_write() {
        if let Some(status) = state.faults.take_next() {
            return injected_fault(state, status);
        }
    }

    let scopes = if operation.is_write() { WRITE_SCOPES } else { READ_SCOPES };
    let client_email = match authenticate(&state.registry, authorization, scopes, &mut note.client_email) {
        Ok(email) => email,
        Err(failure) => return auth_error(&failure, &operation),
    };

    if operation.is_write() {
        if let Err(retry_after) = state.take_write_slot(&client_email) {
            return quota_exceeded(retry_after);
        }
    }

    let query = Query::parse(query);
    let mut spreadsheets = lock(&state.spreadsheets);
    let Some(spreadsheet) = spreadsheets.get_mut(&spreadsheet_id) else {
        return error_reply(404, "Requested entity was not found.");
    };
    if !spreadsheet.allows(&client_email, operation.is_write()) {
        return error_reply(403, "The caller does not have permission");
    }

    let outcome = match &operation {
        Operation::GetSpreadsheet => get_spreadsheet(&spreadsheet.workbook, &spreadsheet_id, &query),
        Operation::GetValues(range) => get_values(&spreadsheet.workbook, range, &query),
        _ => {
            let workbook = &mut spreadsheet.workbook;
            parse_body(body).and_then(|body| match &operation {
                Operation::BatchUpdate => batch_update(workbook, &spreadsheet_id, &body, &state.sheet_id_counter),
                Operation::UpdateValues(range) => update_values(workbook, &spreadsheet_id, range, &body, &query),
                Operation::ClearValues(range) => clear_values(workbook, &spreadsheet_id, range),
                Operation::BatchUpdateValues => batch_update_values(workbook, &spreadsheet_id, &body),
                Operation::BatchClearValues => batch_clear_values(workbook, &spreadsheet_id, &body),
                Operation::GetSpreadsheet | Operation::GetValues(_) => unreachable!("reads are handled above"),
            })
        }
    };
    match outcome {
        Ok(answer) => {
            if operation.is_write() {
                if let Some(status) = state.lost_answers.take_next() {
                    return injected_fault(state, status);
                }
            }
            json_response(StatusCode::OK, &answer)
        }
        Err(message) => error_reply(400, &message),
    }
}

/// A request body as JSON; an empty body is `{}` (as for `:clear`).
fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("Invalid JSON payload received. Expected an object.".to_owned()),
        Err(e) => Err(format!("Invalid JSON payload received. {e}")),
    }
}

// ---------------------------------------------------------------------------
// spreadsheets.get and spreadsheets.batchUpdate

fn get_spreadsheet(workbook: &Workbook, spreadsheet_id: &str, query: &Query) -> Result<Value, String> {
    // `fields` may be ignored (answering more than asked harms no client);
    // grid data may not, since a client asking for it would act on nothing.
    if query.get("includeGridData") == Some("true") {
        return Err("SheetsDouble does not model includeGridData=true; read values with values.get.".to_owned());
    }
    Ok(workbook.to_json(spreadsheet_id))
}

fn batch_update(workbook: &mut Workbook, spreadsheet_id: &str, body: &Value, ids: &AtomicU64) -> Result<Value, String> {
    for key in body.as_object().into_iter().flat_map(Map::keys) {
        if !matches!(
            key.as_str(),
            "requests" | "includeSpreadsheetInResponse" | "responseRanges" | "responseIncludeGridData"
        ) {
            return Err(format!("Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."));
        }
    }
    let requests = match body.get("requests") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(requests)) => requests.as_slice(),
        Some(_) => return Err("Invalid JSON payload received. 'requests' must be a list.".to_owned()),
    };
    if requests.is_empty() {
        return Err("Must specify at least one request.".to_owned());
    }
    if requests.len() > MAX_REQUESTS_PER_BATCH {
        return Err(format!("A batchUpdate may hold at most {MAX_REQUESTS_PER_BATCH} requests."));
    }
    if body.get("responseIncludeGridData").and_then(Value::as_bool) == Some(true) {
        return Err("SheetsDouble does not model responseIncludeGridData=true.".to_owned());
    }

    // Atomic: every request is applied to a copy, which replaces the
    // spreadsheet only when all of them were valid.
    let mut draft = workbook.clone();
    let mut replies = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let fields = match request.as_object() {
            Some(fields) if fields.len() == 1 => fields,
            _ => return Err(format!("Invalid requests[{i}]: a request must set exactly one kind of update.")),
        };
        let (kind, detail) = fields.iter().next().unwrap_or_else(|| unreachable!("one field, checked above"));
        if !REQUEST_KINDS.contains(&kind.as_str()) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{kind}\" at 'requests[{i}]': Cannot find field."
            ));
        }
        let cells_before = draft.total_cells();
        let reply = apply_request(&mut draft, kind, detail, ids)
            .map_err(|reason| format!("Invalid requests[{i}].{kind}: {reason}"))?;
        // Checked after every request, not only at the end: "this action"
        // is the request that crossed the limit, and Google applies a batch
        // one request at a time.
        if draft.total_cells() > MAX_CELLS_PER_SPREADSHEET && draft.total_cells() > cells_before {
            return Err(format!(
                "Invalid requests[{i}].{kind}: This action would increase the number of cells in the workbook above \
                 the limit of {MAX_CELLS_PER_SPREADSHEET} cells."
            ));
        }
        replies.push(reply);
    }
    *workbook = draft;

    let mut answer = json!({"spreadsheetId": spreadsheet_id, "replies": replies});
    if body.get("includeSpreadsheetInResponse").and_then(Value::as_bool) == Some(true) {
        answer["updatedSpreadsheet"] = workbook.to_json(spreadsheet_id);
    }
    Ok(answer)
}

/// Applies one request of a batch to `workbook`; the reply, or why the
/// request is invalid (the caller adds `Invalid requests[i].kind: `).
fn apply_request(workbook: &mut Workbook, kind: &str, request: &Value, ids: &AtomicU64) -> Result<Value, String> {
    if !request.is_object() {
        return Err("expected an object".to_owned());
    }
    match kind {
        "addSheet" => add_sheet(workbook, request, ids),
        "deleteSheet" => delete_sheet(workbook, request),
        "updateSheetProperties" => update_sheet_properties(workbook, request),
        "updateCells" => update_cells(workbook, request),
        "appendDimension" => append_dimension(workbook, request),
        "insertDimension" => insert_dimension(workbook, request),
        "deleteDimension" => delete_dimension(workbook, request),
        other => Err(format!("SheetsDouble does not model {other}; extend it if a test needs it.")),
    }
}

fn add_sheet(workbook: &mut Workbook, request: &Value, ids: &AtomicU64) -> Result<Value, String> {
    let properties = object_field(request, "properties")?.unwrap_or(&ABSENT);
    let title = match string_field(properties, "title")? {
        Some(title) if !title.is_empty() => {
            if workbook.title_taken(title, None).is_some() {
                return Err(duplicate_title(title));
            }
            title.to_owned()
        }
        _ => workbook.default_title(),
    };
    if let Some(sheet_type) = string_field(properties, "sheetType")? {
        if sheet_type != "GRID" {
            return Err(format!("SheetsDouble does not model sheets of type {sheet_type}."));
        }
    }
    let sheet_id = match int_field(properties, "sheetId")? {
        Some(id) => {
            let id = i32::try_from(id).ok().filter(|id| *id >= 0).ok_or_else(|| format!("Invalid sheetId: {id}"))?;
            if workbook.tab_by_id(id).is_some() {
                return Err(format!("A sheet with the id {id} already exists."));
            }
            id
        }
        None => fresh_sheet_id(ids, workbook),
    };
    let grid = object_field(properties, "gridProperties")?.unwrap_or(&ABSENT);
    let mut tab = Tab::new(
        sheet_id,
        &title,
        count_field(grid, "rowCount")?.unwrap_or(DEFAULT_ROW_COUNT),
        count_field(grid, "columnCount")?.unwrap_or(DEFAULT_COLUMN_COUNT),
    );
    tab.frozen_row_count = count_field(grid, "frozenRowCount")?.unwrap_or(0);
    tab.frozen_column_count = count_field(grid, "frozenColumnCount")?.unwrap_or(0);
    check_grid(&tab)?;
    // An index past the end puts the tab last.
    let index =
        count_field(properties, "index")?.map_or(workbook.tabs.len(), |i| (i as usize).min(workbook.tabs.len()));
    workbook.tabs.insert(index, tab);
    Ok(json!({"addSheet": {"properties": workbook.tabs[index].properties_json(index)}}))
}

fn delete_sheet(workbook: &mut Workbook, request: &Value) -> Result<Value, String> {
    let sheet_id = sheet_id_field(request)?;
    let index = workbook.tab_by_id(sheet_id).ok_or_else(|| format!("No sheet with id: {sheet_id}"))?;
    if workbook.tabs.len() == 1 {
        return Err("You can't remove all the sheets in a document.".to_owned());
    }
    workbook.tabs.remove(index);
    Ok(json!({}))
}

fn update_sheet_properties(workbook: &mut Workbook, request: &Value) -> Result<Value, String> {
    let properties = object_field(request, "properties")?.ok_or("properties is required")?;
    let paths = mask_paths(request)?;
    let sheet_id = sheet_id_field(properties)?;
    let index = workbook.tab_by_id(sheet_id).ok_or_else(|| format!("No sheet with id: {sheet_id}"))?;
    let grid = object_field(properties, "gridProperties")?.unwrap_or(&ABSENT);
    let mut tab = workbook.tabs[index].clone();
    let (mut row_count, mut column_count) = (tab.row_count, tab.column_count);
    let mut new_index = None;

    // A path in the mask sets the field to the value given, or to its
    // default (0, "") when the properties leave it out, as field masks do:
    // so `gridProperties` with only a rowCount is refused (columnCount 0)
    // and unfreezes rows. `*` applies only the fields given: what Google
    // does with `*` and fields left out is not documented, and zeroing the
    // rest would refuse requests Google may well accept.
    for path in &paths {
        let given = |key: &str| path == "*" && properties.get(key).is_some_and(|v| !v.is_null());
        let grid_given = |key: &str| path == "*" && grid.get(key).is_some_and(|v| !v.is_null());
        let whole_grid = path == "gridProperties";
        if path == "title" || given("title") {
            let title = string_field(properties, "title")?.unwrap_or_default();
            if title.is_empty() {
                return Err("A sheet's title must not be empty.".to_owned());
            }
            if workbook.title_taken(title, Some(index)).is_some() {
                return Err(duplicate_title(title));
            }
            tab.title = title.to_owned();
        }
        if path == "index" || given("index") {
            new_index = Some(count_field(properties, "index")?.unwrap_or(0) as usize);
        }
        if whole_grid || path == "gridProperties.rowCount" || grid_given("rowCount") {
            row_count = count_field(grid, "rowCount")?.unwrap_or(0);
        }
        if whole_grid || path == "gridProperties.columnCount" || grid_given("columnCount") {
            column_count = count_field(grid, "columnCount")?.unwrap_or(0);
        }
        if whole_grid || path == "gridProperties.frozenRowCount" || grid_given("frozenRowCount") {
            tab.frozen_row_count = count_field(grid, "frozenRowCount")?.unwrap_or(0);
        }
        if whole_grid || path == "gridProperties.frozenColumnCount" || grid_given("frozenColumnCount") {
            tab.frozen_column_count = count_field(grid, "frozenColumnCount")?.unwrap_or(0);
        }
        let modeled = matches!(
            path.as_str(),
            "*" | "title"
                | "index"
                | "gridProperties"
                | "gridProperties.rowCount"
                | "gridProperties.columnCount"
                | "gridProperties.frozenRowCount"
                | "gridProperties.frozenColumnCount"
        );
        // Looks only: accepted, with nothing to model.
        let cosmetic = matches!(
            path.as_str(),
            "hidden"
                | "tabColor"
                | "tabColorStyle"
                | "rightToLeft"
                | "gridProperties.hideGridlines"
                | "gridProperties.rowGroupControlAfter"
                | "gridProperties.columnGroupControlAfter"
        );
        if !modeled && !cosmetic {
            return Err(format!("SheetsDouble does not model the field mask path '{path}'."));
        }
    }
    tab.row_count = row_count;
    tab.column_count = column_count;
    check_grid(&tab)?;
    // Shrinking drops the cells outside the new grid.
    tab.resize(row_count, column_count);
    workbook.tabs[index] = tab;
    if let Some(target) = new_index {
        // Google counts the target index before the move: to move the first
        // of three tabs behind the second, the index is 2.
        let tab = workbook.tabs.remove(index);
        let target = if target > index { target - 1 } else { target };
        workbook.tabs.insert(target.min(workbook.tabs.len()), tab);
    }
    Ok(json!({}))
}

fn update_cells(workbook: &mut Workbook, request: &Value) -> Result<Value, String> {
    let writes_values =
        mask_paths(request)?.iter().any(|p| p == "*" || p == "userEnteredValue" || p.starts_with("userEnteredValue."));
    let rows = parse_rows(request)?;
    let height = rows.len() as u64;
    let width = rows.iter().map(Vec::len).max().unwrap_or(0) as u64;

    let (index, top, left, cleared) = match (object_field(request, "start")?, object_field(request, "range")?) {
        (Some(start), None) => {
            let sheet_id = sheet_id_field(start)?;
            let index = workbook.tab_by_id(sheet_id).ok_or_else(|| format!("No grid with id: {sheet_id}"))?;
            let (top, left) =
                (count_field(start, "rowIndex")?.unwrap_or(0), count_field(start, "columnIndex")?.unwrap_or(0));
            (index, top, left, None)
        }
        (None, Some(range)) => {
            let sheet_id = sheet_id_field(range)?;
            let index = workbook.tab_by_id(sheet_id).ok_or_else(|| format!("No grid with id: {sheet_id}"))?;
            let tab = &workbook.tabs[index];
            let (rows_span, columns_span) = grid_range(range, tab)?;
            if height > u64::from(rows_span.1 - rows_span.0) || width > u64::from(columns_span.1 - columns_span.0) {
                return Err(format!(
                    "The data ({height} rows × {width} columns) does not fit the range {}.",
                    range_reference(&tab.title, true, rows_span, columns_span)
                ));
            }
            (index, rows_span.0, columns_span.0, Some((rows_span, columns_span)))
        }
        _ => return Err("Exactly one of 'start' and 'range' must be set.".to_owned()),
    };
    let tab = &mut workbook.tabs[index];
    if u64::from(top) + height > u64::from(tab.row_count) || u64::from(left) + width > u64::from(tab.column_count) {
        let rows_span = (top, (u64::from(top) + height.max(1)).min(u64::from(u32::MAX)) as u32);
        let columns_span = (left, (u64::from(left) + width.max(1)).min(u64::from(u32::MAX)) as u32);
        return Err(exceeds_grid(range_reference(&tab.title, true, rows_span, columns_span), tab));
    }
    if !writes_values {
        // Formats and notes are not modeled; a mask without values changes
        // nothing the double keeps.
        return Ok(json!({}));
    }
    if let Some((rows_span, columns_span)) = cleared {
        // With a range, the cells of the range the rows do not give are
        // cleared too.
        tab.clear(rows_span, columns_span);
    }
    for (r, row) in rows.into_iter().enumerate() {
        for (c, value) in row.into_iter().enumerate() {
            let (r, c) = (top + r as u32, left + c as u32);
            match value {
                Some(value) => tab.set(r, c, value),
                None => tab.clear_cell(r, c),
            }
        }
    }
    Ok(json!({}))
}

/// `rows[].values[].userEnteredValue` of an `updateCells`: per cell the value
/// to store, or `None` to clear it.
fn parse_rows(request: &Value) -> Result<Vec<Vec<Option<Value>>>, String> {
    let rows = match request.get("rows") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err("rows must be a list".to_owned()),
    };
    rows.iter()
        .enumerate()
        .map(|(r, row)| {
            let cells = match row.get("values") {
                None | Some(Value::Null) => return Ok(Vec::new()),
                Some(Value::Array(cells)) => cells,
                Some(_) => return Err(format!("rows[{r}].values must be a list")),
            };
            cells
                .iter()
                .enumerate()
                .map(|(c, cell)| match cell.get("userEnteredValue") {
                    None | Some(Value::Null) => Ok(None),
                    Some(value) => {
                        extended_value(value).map(Some).map_err(|why| format!("rows[{r}].values[{c}]: {why}"))
                    }
                })
                .collect()
        })
        .collect()
}

/// An `ExtendedValue` (exactly one of its fields) as the value to store.
fn extended_value(value: &Value) -> Result<Value, String> {
    let fields = value.as_object().ok_or("userEnteredValue must be an object")?;
    let mut entries = fields.iter().filter(|(_, v)| !v.is_null());
    let (Some((kind, inner)), None) = (entries.next(), entries.next()) else {
        return Err("userEnteredValue must set exactly one of numberValue, stringValue, boolValue".to_owned());
    };
    match (kind.as_str(), inner) {
        ("numberValue", Value::Number(n)) => n.as_f64().map(sheet_number).ok_or_else(|| format!("invalid number {n}")),
        // proto3 JSON also accepts a double written as a string.
        ("numberValue", Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(sheet_number)
            .ok_or_else(|| format!("invalid number {s:?}")),
        ("stringValue", Value::String(s)) => {
            check_cell_length(s)?;
            Ok(Value::String(s.clone()))
        }
        ("boolValue", Value::Bool(b)) => Ok(Value::Bool(*b)),
        ("formulaValue" | "errorValue", _) => Err(format!("SheetsDouble does not model {kind}.")),
        (kind, inner) => Err(format!("invalid userEnteredValue.{kind}: {inner}")),
    }
}

fn append_dimension(workbook: &mut Workbook, request: &Value) -> Result<Value, String> {
    let sheet_id = sheet_id_field(request)?;
    let index = workbook.tab_by_id(sheet_id).ok_or_else(|| format!("No grid with id: {sheet_id}"))?;
    let dimension = Dimension::parse(request.get("dimension"))?;
    let length = count_field(request, "length")?.filter(|l| *l >= 1).ok_or("length must be at least 1")?;
    let tab = &mut workbook.tabs[index];
    let at = tab.size(dimension);
    tab.insert(dimension, at, length);
    check_grid(tab)?;
    Ok(json!({}))
}

fn insert_dimension(workbook: &mut Workbook, request: &Value) -> Result<Value, String> {
    let range = object_field(request, "range")?.ok_or("range is required")?;
    let (index, dimension, start, end) = dimension_range(workbook, range)?;
    let tab = &mut workbook.tabs[index];
    if start > tab.size(dimension) {
        return Err(format!("Cannot insert {} at {start}: the grid has {}.", dimension.noun(), tab.size(dimension)));
    }
    if start == 0 && request.get("inheritFromBefore").and_then(Value::as_bool) == Some(true) {
        return Err("Cannot inherit from before when inserting at the start.".to_owned());
    }
    tab.insert(dimension, start, end - start);
    check_grid(tab)?;
    Ok(json!({}))
}

fn delete_dimension(workbook: &mut Workbook, request: &Value) -> Result<Value, String> {
    let range = object_field(request, "range")?.ok_or("range is required")?;
    let (index, dimension, start, end) = dimension_range(workbook, range)?;
    let tab = &mut workbook.tabs[index];
    if end > tab.size(dimension) {
        let (rows, columns) = match dimension {
            Dimension::Rows => ((start, end), (0, tab.column_count)),
            Dimension::Columns => ((0, tab.row_count), (start, end)),
        };
        return Err(exceeds_grid(range_reference(&tab.title, true, rows, columns), tab));
    }
    if start == 0 && end == tab.size(dimension) {
        return Err(format!("You can't delete all the {} on the sheet.", dimension.noun()));
    }
    tab.delete(dimension, start, end);
    Ok(json!({}))
}

/// A `DimensionRange`: the tab, the dimension and a non-empty `[start, end)`.
fn dimension_range(workbook: &Workbook, range: &Value) -> Result<(usize, Dimension, u32, u32), String> {
    let sheet_id = sheet_id_field(range)?;
    let index = workbook.tab_by_id(sheet_id).ok_or_else(|| format!("No grid with id: {sheet_id}"))?;
    let dimension = Dimension::parse(range.get("dimension"))?;
    let start = count_field(range, "startIndex")?.unwrap_or(0);
    let end = count_field(range, "endIndex")?.ok_or("range.endIndex is required")?;
    if start >= end {
        return Err(format!("Invalid range: startIndex {start} must be less than endIndex {end}."));
    }
    Ok((index, dimension, start, end))
}

/// A `GridRange` on `tab`: missing bounds are the grid's; it must lie inside
/// the grid.
fn grid_range(range: &Value, tab: &Tab) -> Result<(Span, Span), String> {
    let r0 = count_field(range, "startRowIndex")?.unwrap_or(0);
    let r1 = count_field(range, "endRowIndex")?.unwrap_or(tab.row_count);
    let c0 = count_field(range, "startColumnIndex")?.unwrap_or(0);
    let c1 = count_field(range, "endColumnIndex")?.unwrap_or(tab.column_count);
    if r0 > r1 || c0 > c1 {
        return Err("Invalid range: a start index is after its end index.".to_owned());
    }
    if r1 > tab.row_count || c1 > tab.column_count {
        return Err(exceeds_grid(range_reference(&tab.title, true, (r0, r1.max(r0 + 1)), (c0, c1.max(c0 + 1))), tab));
    }
    Ok(((r0, r1), (c0, c1)))
}

/// A tab's grid as Google allows it.
fn check_grid(tab: &Tab) -> Result<(), String> {
    if tab.row_count < 1 || tab.column_count < 1 {
        return Err(format!(
            "A sheet must have at least one row and one column (got rowCount {}, columnCount {}).",
            tab.row_count, tab.column_count
        ));
    }
    if tab.column_count > MAX_COLUMNS {
        return Err(format!(
            "This action would increase the number of columns in the sheet above the limit of {MAX_COLUMNS}."
        ));
    }
    if tab.frozen_row_count > 0 && tab.frozen_row_count >= tab.row_count {
        return Err("You can't freeze all visible rows on the sheet.".to_owned());
    }
    if tab.frozen_column_count > 0 && tab.frozen_column_count >= tab.column_count {
        return Err("You can't freeze all visible columns on the sheet.".to_owned());
    }
    Ok(())
}

fn duplicate_title(title: &str) -> String {
    format!("A sheet with the name \"{title}\" already exists. Please enter another name.")
}

fn exceeds_grid(quoted_range: String, tab: &Tab) -> String {
    format!(
        "Range ({quoted_range}) exceeds grid limits. Max rows: {}, max columns: {}",
        tab.row_count, tab.column_count
    )
}

fn check_cell_length(text: &str) -> Result<(), String> {
    // Counted in characters; Google may count UTF-16 units (only astral
    // characters would differ).
    if text.chars().count() > MAX_CHARACTERS_PER_CELL {
        return Err(format!(
            "Your input contains more than the maximum of {MAX_CHARACTERS_PER_CELL} characters in a single cell."
        ));
    }
    Ok(())
}

/// The comma-separated paths of a request's `fields` mask, which Google
/// requires on updates.
fn mask_paths(request: &Value) -> Result<Vec<String>, String> {
    let fields = string_field(request, "fields")?.unwrap_or_default();
    let paths: Vec<String> = fields.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
    if paths.is_empty() {
        return Err("At least one field must be specified in 'fields'.".to_owned());
    }
    Ok(paths)
}

// ---------------------------------------------------------------------------
// spreadsheets.values

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueInputOption {
    Raw,
    UserEntered,
}

impl ValueInputOption {
    fn parse(value: Option<&str>) -> Result<ValueInputOption, String> {
        match value {
            Some("RAW") => Ok(ValueInputOption::Raw),
            Some("USER_ENTERED") => Ok(ValueInputOption::UserEntered),
            None | Some("") | Some("INPUT_VALUE_OPTION_UNSPECIFIED") => {
                Err("'valueInputOption' is required but not specified".to_owned())
            }
            Some(other) => Err(format!("Invalid valueInputOption: {other}")),
        }
    }
}

fn get_values(workbook: &Workbook, range_text: &str, query: &Query) -> Result<Value, String> {
    let range = A1Range::parse(workbook, range_text)?;
    let tab = &workbook.tabs[range.tab];
    let (rows, columns) = range.within_grid(tab)?;
    let render = match query.get("valueRenderOption") {
        None | Some("FORMATTED_VALUE") => Render::Formatted,
        Some("UNFORMATTED_VALUE") | Some("FORMULA") => Render::Unformatted,
        Some(other) => return Err(format!("Invalid valueRenderOption: {other}")),
    };
    let by_columns = match query.get("majorDimension") {
        None | Some("ROWS") | Some("DIMENSION_UNSPECIFIED") => false,
        Some("COLUMNS") => true,
        Some(other) => return Err(format!("Invalid majorDimension: {other}")),
    };
    let mut values = tab.region(rows.0, rows.1, columns.0, columns.1);
    if by_columns {
        values = transpose(values);
    }
    if render == Render::Formatted {
        values = values.into_iter().map(|row| row.into_iter().map(formatted).collect()).collect();
    }
    let mut answer = json!({
        "range": range_reference(&tab.title, false, rows, columns),
        "majorDimension": if by_columns { "COLUMNS" } else { "ROWS" },
    });
    // proto3 JSON leaves out an empty list, and so does Google.
    if !values.is_empty() {
        answer["values"] = json!(values);
    }
    Ok(answer)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    Formatted,
    Unformatted,
}

/// A stored value as `FORMATTED_VALUE` shows it under the automatic number
/// format (approximately: numbers of 15 digits and more go scientific).
fn formatted(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::String(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if i.unsigned_abs() < 1_000_000_000_000_000 => i.to_string(),
            (_, Some(f)) if f != 0.0 && (f.abs() >= 1e15 || f.abs() < 1e-9) => scientific(f),
            (_, Some(f)) => f.to_string(),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Value::String(if b { "TRUE" } else { "FALSE" }.to_owned()),
        other => other,
    }
}

/// `1.23457E+19`, as Sheets shows large numbers.
fn scientific(f: f64) -> String {
    let text = format!("{f:.5E}");
    let (mantissa, exponent) = text.split_once('E').unwrap_or((&text, "0"));
    let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
    match exponent.strip_prefix('-') {
        Some(digits) => format!("{mantissa}E-{digits}"),
        None => format!("{mantissa}E+{exponent}"),
    }
}

fn transpose(rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut columns: Vec<Vec<Value>> = vec![Vec::new(); width];
    for (r, row) in rows.into_iter().enumerate() {
        for (c, value) in row.into_iter().enumerate() {
            if value != Value::String(String::new()) {
                let column = &mut columns[c];
                column.resize(r, Value::String(String::new()));
                column.push(value);
            }
        }
    }
    columns
}

fn update_values(
    workbook: &mut Workbook,
    spreadsheet_id: &str,
    range_text: &str,
    body: &Value,
    query: &Query,
) -> Result<Value, String> {
    let input = ValueInputOption::parse(query.get("valueInputOption"))?;
    if query.get("includeValuesInResponse") == Some("true") {
        return Err("SheetsDouble does not model includeValuesInResponse=true.".to_owned());
    }
    write_value_range(workbook, spreadsheet_id, range_text, body, input)
}

/// Writes one `ValueRange` (`{"range"?, "majorDimension"?, "values"}`) into
/// `workbook` at `range_text`; the `UpdateValuesResponse`, or why not. Every
/// check comes before the first write, so a refusal changes nothing.
fn write_value_range(
    workbook: &mut Workbook,
    spreadsheet_id: &str,
    range_text: &str,
    body: &Value,
    input: ValueInputOption,
) -> Result<Value, String> {
    let range = A1Range::parse(workbook, range_text)?;
    if let Some(body_range) = string_field(body, "range")? {
        let same = A1Range::parse(workbook, body_range).is_ok_and(|b| b.same_cells(&range));
        if !same {
            return Err(format!(
                "Requested update range [{range_text}] does not match the range in the body [{body_range}]."
            ));
        }
    }
    let tab_index = range.tab;
    let tab = &workbook.tabs[tab_index];
    let (rows_span, columns_span) = range.within_grid(tab)?;

    let values = match body.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows
            .iter()
            .map(|row| match row {
                Value::Array(cells) => Ok(cells.clone()),
                Value::Null => Ok(Vec::new()),
                other => Err(format!("Invalid values: each row must be a list, got {other}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("Invalid values: must be a list of lists, got {other}")),
    };
    let grid = match string_field(body, "majorDimension")? {
        None | Some("ROWS") | Some("DIMENSION_UNSPECIFIED") => values,
        Some("COLUMNS") => transpose_raw(values),
        Some(other) => return Err(format!("Invalid majorDimension: {other}")),
    };

    let height = grid.len() as u32;
    let width = grid.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let (top, left) = (rows_span.0, columns_span.0);
    // A one-cell range is where the data starts; a larger one bounds it.
    if !range.single_cell {
        let bounding = range_reference(&tab.title, true, rows_span, columns_span);
        if top + height > rows_span.1 {
            return Err(format!(
                "Requested writing within range [{bounding}], but tried writing to row [{}]",
                top + height
            ));
        }
        if left + width > columns_span.1 {
            return Err(format!(
                "Requested writing within range [{bounding}], but tried writing to column [{}]",
                column_letters(left + width - 1)
            ));
        }
    }
    let written_rows = (top, top + height.max(1));
    let written_columns = (left, left + width.max(1));
    if written_rows.1 > tab.row_count || written_columns.1 > tab.column_count {
        return Err(exceeds_grid(range_reference(&tab.title, true, written_rows, written_columns), tab));
    }

    let mut writes = Vec::new();
    for (r, row) in grid.iter().enumerate() {
        for (c, value) in row.iter().enumerate() {
            let write = input_value(value, input).map_err(|why| format!("Invalid values[{r}][{c}]: {why}"))?;
            writes.push((top + r as u32, left + c as u32, write, !value.is_null()));
        }
    }
    let tab = &mut workbook.tabs[tab_index];
    let (mut rows_touched, mut columns_touched, mut cells) = (BTreeSet::new(), BTreeSet::new(), 0u64);
    for (r, c, write, touched) in writes {
        if !touched {
            continue;
        }
        match write {
            Some(value) => tab.set(r, c, value),
            None => tab.clear_cell(r, c),
        }
        rows_touched.insert(r);
        columns_touched.insert(c);
        cells += 1;
    }
    let updated_range = if height == 0 {
        range_reference(&tab.title, false, rows_span, columns_span)
    } else {
        range_reference(&tab.title, false, written_rows, written_columns)
    };
    let mut answer = json!({"spreadsheetId": spreadsheet_id, "updatedRange": updated_range});
    // proto3 JSON leaves out zero counts, and so does Google.
    for (field, count) in [
        ("updatedRows", rows_touched.len() as u64),
        ("updatedColumns", columns_touched.len() as u64),
        ("updatedCells", cells),
    ] {
        if count > 0 {
            answer[field] = json!(count);
        }
    }
    Ok(answer)
}

fn transpose_raw(columns: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    let height = columns.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = vec![Vec::new(); height];
    for (c, column) in columns.into_iter().enumerate() {
        for (r, value) in column.into_iter().enumerate() {
            let row = &mut rows[r];
            row.resize(c, Value::Null);
            row.push(value);
        }
    }
    rows
}

/// What writing `value` stores: `Some(value)`, `None` to clear the cell
/// (`""`); a `null` (which leaves the cell as it is) is `None` too, and the
/// caller skips it.
fn input_value(value: &Value, input: ValueInputOption) -> Result<Option<Value>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => {
            check_cell_length(text)?;
            Ok(Some(match input {
                ValueInputOption::Raw => Value::String(text.clone()),
                ValueInputOption::UserEntered => user_entered(text),
            }))
        }
        Value::Number(n) => n.as_f64().map(|f| Some(sheet_number(f))).ok_or_else(|| format!("invalid number {n}")),
        Value::Bool(b) => Ok(Some(Value::Bool(*b))),
        Value::Array(_) => Err("list_value is not a cell value".to_owned()),
        Value::Object(_) => Err("struct_value is not a cell value".to_owned()),
    }
}

/// `text` as Sheets parses it when typed in (`USER_ENTERED`): numbers become
/// numbers (losing digits past 2^53, which is why big ids go in as `RAW` or
/// `stringValue`), TRUE/FALSE booleans, and a leading `'` keeps the rest as
/// text. Dates, percentages, currencies, thousands separators and formulas
/// are not modeled: such text stays text.
fn user_entered(text: &str) -> Value {
    if let Some(literal) = text.strip_prefix('\'') {
        return Value::String(literal.to_owned());
    }
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if trimmed.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if looks_numeric(trimmed) {
        if let Ok(number) = trimmed.parse::<f64>() {
            if number.is_finite() {
                return sheet_number(number);
            }
        }
    }
    Value::String(text.to_owned())
}

/// `[+-]digits[.digits][e[+-]digits]` (or `.digits`), the plain decimal
/// numbers Sheets recognises in any locale.
fn looks_numeric(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// A number as Sheets keeps it: a double. Integral values that a double
/// holds exactly are shown as JSON integers (so `42` stays `42`, not `42.0`);
/// anything else, including integers past 2^53, as the double, digits lost.
fn sheet_number(number: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if number.fract() == 0.0 && number.abs() <= EXACT {
        json!(number as i64)
    } else {
        json!(number)
    }
}

fn clear_values(workbook: &mut Workbook, spreadsheet_id: &str, range_text: &str) -> Result<Value, String> {
    let cleared = clear_range(workbook, range_text)?;
    Ok(json!({"spreadsheetId": spreadsheet_id, "clearedRange": cleared}))
}

/// Clears the values of a range, never the grid: the blank rows stay, as at
/// Google. Returns the range cleared, bounded by the grid.
fn clear_range(workbook: &mut Workbook, range_text: &str) -> Result<String, String> {
    let range = A1Range::parse(workbook, range_text)?;
    let tab = &mut workbook.tabs[range.tab];
    let (rows, columns) = range.within_grid(tab)?;
    tab.clear(rows, columns);
    Ok(range_reference(&tab.title, false, rows, columns))
}

fn batch_update_values(workbook: &mut Workbook, spreadsheet_id: &str, body: &Value) -> Result<Value, String> {
    let input = ValueInputOption::parse(string_field(body, "valueInputOption")?)?;
    if body.get("includeValuesInResponse").and_then(Value::as_bool) == Some(true) {
        return Err("SheetsDouble does not model includeValuesInResponse=true.".to_owned());
    }
    let data = match body.get("data") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(data)) => data.as_slice(),
        Some(_) => return Err("Invalid JSON payload received. 'data' must be a list.".to_owned()),
    };
    // Applied to a copy, so one bad range changes nothing.
    let mut draft = workbook.clone();
    let mut responses = Vec::with_capacity(data.len());
    let (mut rows, mut columns, mut cells, mut sheets) = (0u64, 0u64, 0u64, BTreeSet::new());
    for (i, value_range) in data.iter().enumerate() {
        let range_text = string_field(value_range, "range")
            .map_err(|why| format!("Invalid data[{i}]: {why}"))?
            .ok_or_else(|| format!("Invalid data[{i}]: range is required"))?;
        let response = write_value_range(&mut draft, spreadsheet_id, range_text, value_range, input)
            .map_err(|why| format!("Invalid data[{i}]: {why}"))?;
        let count = |field: &str| response.get(field).and_then(Value::as_u64).unwrap_or(0);
        rows += count("updatedRows");
        columns += count("updatedColumns");
        cells += count("updatedCells");
        if count("updatedCells") > 0 {
            sheets.insert(A1Range::parse(&draft, range_text).map(|r| r.tab).unwrap_or(0));
        }
        responses.push(response);
    }
    *workbook = draft;
    let mut answer = json!({"spreadsheetId": spreadsheet_id});
    for (field, count) in [
        ("totalUpdatedRows", rows),
        ("totalUpdatedColumns", columns),
        ("totalUpdatedCells", cells),
        ("totalUpdatedSheets", sheets.len() as u64),
    ] {
        if count > 0 {
            answer[field] = json!(count);
        }
    }
    if !responses.is_empty() {
        answer["responses"] = json!(responses);
    }
    Ok(answer)
}

fn batch_clear_values(workbook: &mut Workbook, spreadsheet_id: &str, body: &Value) -> Result<Value, String> {
    let ranges = match body.get("ranges") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(ranges)) => ranges.as_slice(),
        Some(_) => return Err("Invalid JSON payload received. 'ranges' must be a list.".to_owned()),
    };
    let mut draft = workbook.clone();
    let mut cleared = Vec::with_capacity(ranges.len());
    for (i, range) in ranges.iter().enumerate() {
        let text = range.as_str().ok_or_else(|| format!("Invalid ranges[{i}]: must be a string"))?;
        cleared.push(clear_range(&mut draft, text).map_err(|why| format!("Invalid ranges[{i}]: {why}"))?);
    }
    *workbook = draft;
    Ok(json!({"spreadsheetId": spreadsheet_id, "clearedRanges": cleared}))
}

// ---------------------------------------------------------------------------
// A1 notation

/// A range in A1 notation, resolved to a tab: `'Tab name'!A1:C3`, `Tab!A1`,
/// `Tab!A:C`, `Tab!1:3`, `Tab!A2:C` (open end: to the grid's end), `Tab`
/// (the whole grid), or `A1:C3` alone (on the first tab). Indexes from 0,
/// ends exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct A1Range {
    tab: usize,
    start_row: u32,
    end_row: Option<u32>,
    start_column: u32,
    end_column: Option<u32>,
    /// `A1`-style, one cell: the anchor of a write, not its bound.
    single_cell: bool,
    /// The cell part as written, for messages about the request.
    cells_text: Option<String>,
}

impl A1Range {
    fn parse(workbook: &Workbook, text: &str) -> Result<A1Range, String> {
        let unparsable = || format!("Unable to parse range: {text}");
        let (title, cells) = split_sheet_name(text).ok_or_else(unparsable)?;
        let (tab, cells) = match title {
            Some(title) => (workbook.tab_titled(&title).ok_or_else(unparsable)?, cells),
            // No `!`: a tab's name if there is such a tab, else cells of the
            // first tab.
            None => match workbook.tab_titled(text) {
                Some(tab) => (tab, None),
                None => (0, cells),
            },
        };
        let Some(cells) = cells else {
            return Ok(A1Range {
                tab,
                start_row: 0,
                end_row: None,
                start_column: 0,
                end_column: None,
                single_cell: false,
                cells_text: None,
            });
        };
        let (first, second) = match cells.split_once(':') {
            Some((first, second)) => {
                (parse_cell(first).ok_or_else(unparsable)?, Some(parse_cell(second).ok_or_else(unparsable)?))
            }
            None => (parse_cell(cells).ok_or_else(unparsable)?, None),
        };
        let range = match (first, second) {
            // One cell.
            ((Some(column), Some(row)), None) => A1Range {
                tab,
                start_row: row,
                end_row: Some(row + 1),
                start_column: column,
                end_column: Some(column + 1),
                single_cell: true,
                cells_text: None,
            },
            // A lone column or row is not a range.
            (_, None) => return Err(unparsable()),
            ((first_column, first_row), Some((second_column, second_row))) => {
                // Columns only (`A:C`), rows only (`1:3`), or a mix with an
                // open end (`A2:C`).
                if (first_column.is_none() && first_row.is_none()) || (second_column.is_none() && second_row.is_none())
                {
                    return Err(unparsable());
                }
                let (start_column, end_column) = match (first_column, second_column) {
                    (Some(a), Some(b)) => (a.min(b), Some(a.max(b) + 1)),
                    (Some(a), None) => (a, None),
                    (None, Some(b)) => (0, Some(b + 1)),
                    (None, None) => (0, None),
                };
                let (start_row, end_row) = match (first_row, second_row) {
                    (Some(a), Some(b)) => (a.min(b), Some(a.max(b) + 1)),
                    (Some(a), None) => (a, None),
                    (None, Some(b)) => (0, Some(b + 1)),
                    (None, None) => (0, None),
                };
                A1Range { tab, start_row, end_row, start_column, end_column, single_cell: false, cells_text: None }
            }
        };
        Ok(A1Range { cells_text: Some(cells.to_uppercase()), ..range })
    }

    /// The rows and columns `[start, end)` the range covers on `tab`, or the
    /// "exceeds grid limits" refusal when it reaches outside the grid.
    fn within_grid(&self, tab: &Tab) -> Result<(Span, Span), String> {
        let end_row = self.end_row.unwrap_or(tab.row_count.max(self.start_row + 1));
        let end_column = self.end_column.unwrap_or(tab.column_count.max(self.start_column + 1));
        if end_row > tab.row_count || end_column > tab.column_count {
            let quoted = match &self.cells_text {
                Some(cells) => format!("{}!{cells}", quote_sheet_name(&tab.title)),
                None => quote_sheet_name(&tab.title),
            };
            return Err(exceeds_grid(quoted, tab));
        }
        Ok(((self.start_row, end_row), (self.start_column, end_column)))
    }

    fn same_cells(&self, other: &A1Range) -> bool {
        (self.tab, self.start_row, self.end_row, self.start_column, self.end_column)
            == (other.tab, other.start_row, other.end_row, other.start_column, other.end_column)
    }
}

/// Splits `'Tab ''x'''!A1` or `Tab!A1` into the tab's name (quotes undone)
/// and the cell part; `None` when quotes do not close.
fn split_sheet_name(text: &str) -> Option<(Option<String>, Option<&str>)> {
    let Some(quoted) = text.strip_prefix('\'') else {
        return Some(match text.split_once('!') {
            Some((title, cells)) => (Some(title.to_owned()), Some(cells)),
            None => (None, Some(text)),
        });
    };
    let mut title = String::new();
    let mut chars = quoted.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '\'' {
            title.push(c);
            continue;
        }
        if chars.peek().is_some_and(|&(_, next)| next == '\'') {
            chars.next();
            title.push('\'');
            continue;
        }
        let rest = &quoted[at + 1..];
        return match rest.strip_prefix('!') {
            Some(cells) => Some((Some(title), Some(cells))),
            None if rest.is_empty() => Some((Some(title), None)),
            None => None,
        };
    }
    None
}

/// `AB12` → (column 27, row 11); `AB` → (27, none); `12` → (none, 11).
fn parse_cell(text: &str) -> Option<(Option<u32>, Option<u32>)> {
    let text = text.trim().trim_start_matches('$');
    let letters_end = text.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (letters, digits) = text.split_at(letters_end);
    let digits = digits.strip_prefix('$').unwrap_or(digits);
    if letters.is_empty() && digits.is_empty() {
        return None;
    }
    let column = if letters.is_empty() {
        None
    } else {
        let mut number: u64 = 0;
        for letter in letters.bytes() {
            number = number * 26 + u64::from(letter.to_ascii_uppercase() - b'A' + 1);
            if number > u64::from(u32::MAX) {
                return None;
            }
        }
        Some(u32::try_from(number - 1).ok()?)
    };
    let row = if digits.is_empty() {
        None
    } else {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(digits.parse::<u32>().ok().filter(|r| *r >= 1)? - 1)
    };
    Some((column, row))
}

/// Column 0 → `A`, 25 → `Z`, 26 → `AA`.
fn column_letters(column: u32) -> String {
    let mut n = u64::from(column) + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = ((n - 1) % 26) as u8;
        letters.push(char::from(b'A' + rem));
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}

/// `'Tab'!A1:C3` for rows and columns `[start, end)` (one cell: `A1`). Error
/// messages always quote the tab's name, as Google's do; answers quote it
/// only when needed.
fn range_reference(title: &str, always_quote: bool, rows: (u32, u32), columns: (u32, u32)) -> String {
    let name = if always_quote || needs_quotes(title) { quote_sheet_name(title) } else { title.to_owned() };
    let start = format!("{}{}", column_letters(columns.0), rows.0 + 1);
    if rows.1 <= rows.0 + 1 && columns.1 <= columns.0 + 1 {
        format!("{name}!{start}")
    } else {
        format!("{name}!{start}:{}{}", column_letters(columns.1.saturating_sub(1)), rows.1)
    }
}

fn quote_sheet_name(title: &str) -> String {
    format!("'{}'", title.replace('\'', "''"))
}

/// Whether a tab name must be quoted in A1 notation: anything but letters,
/// digits and `_` (not starting with a digit), or a name that reads as a
/// cell reference.
fn needs_quotes(title: &str) -> bool {
    let plain = title.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && title.chars().next().is_some_and(|c| !c.is_ascii_digit());
    let looks_like_cell = parse_cell(title).is_some_and(|(column, row)| column.is_some() && row.is_some())
        && title.chars().filter(char::is_ascii_alphabetic).count() <= 3;
    !plain || looks_like_cell
}

// ---------------------------------------------------------------------------
// JSON field helpers (proto3 JSON: integers may come as strings)

/// What an optional object field that was left out reads as: `get` on it
/// finds nothing, as on an empty object.
static ABSENT: Value = Value::Null;

fn object_field<'a>(object: &'a Value, key: &str) -> Result<Option<&'a Value>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value)),
        Some(other) => Err(format!("{key} must be an object, got {other}")),
    }
}

fn string_field<'a>(object: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("{key} must be a string, got {other}")),
    }
}

fn int_field(object: &Value, key: &str) -> Result<Option<i64>, String> {
    let invalid = |value: &Value| format!("{key} must be an integer, got {value}");
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid(value)),
        Some(value @ Value::String(text)) => text.trim().parse::<i64>().map(Some).map_err(|_| invalid(value)),
        Some(other) => Err(invalid(other)),
    }
}

/// A non-negative int32 field (counts and indexes).
fn count_field(object: &Value, key: &str) -> Result<Option<u32>, String> {
    match int_field(object, key)? {
        None => Ok(None),
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(format!("{key} must be between 0 and {}, got {n}", i32::MAX)),
    }
}

/// `sheetId`, 0 when left out (proto3 JSON leaves out zeros, and 0 is the
/// id of a spreadsheet's first tab).
fn sheet_id_field(object: &Value) -> Result<i32, String> {
    match int_field(object, "sheetId")? {
        None => Ok(0),
        Some(id) => i32::try_from(id).map_err(|_| format!("Invalid sheetId: {id}")),
    }
}

// ---------------------------------------------------------------------------
// Replies

/// Google's canonical status name for an HTTP status.
fn canonical_status(code: u16) -> &'static str {
    match code {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        400..=499 => "FAILED_PRECONDITION",
        _ => "UNKNOWN",
    }
}

fn error_body(code: u16, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": canonical_status(code)}})
}

fn error_reply(code: u16, message: &str) -> Reply {
    json_response(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), &error_body(code, message))
}

fn auth_error(failure: &AuthFailure, operation: &Operation) -> Reply {
    if let AuthFailure::WrongScope { .. } = failure {
        // Google refuses a valid token lacking the API's scopes with 403, not
        // 401: the caller is known, the token just does not cover Sheets.
        let mut body = error_body(403, "Request had insufficient authentication scopes.");
        body["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            "domain": "googleapis.com",
            "metadata": {"service": "sheets.googleapis.com", "method": operation.rpc_method()},
        }]);
        return with_bearer_challenge(
            json_response(StatusCode::FORBIDDEN, &body),
            "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", \
             scope=\"https://www.googleapis.com/auth/spreadsheets\"",
        );
    }
    let message = if *failure == AuthFailure::MissingCredentials {
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or \
         other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
    } else {
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid \
         authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
    };
    with_bearer_challenge(error_reply(401, message), GOOGLE_BEARER_CHALLENGE)
}

/// Google's 429 for the per-user write quota, with `Retry-After`.
fn quota_exceeded(retry_after_secs: u64) -> Reply {
    let message = format!(
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' of service \
         'sheets.googleapis.com' for consumer 'project_number:{CONSUMER_PROJECT_NUMBER}'."
    );
    let mut body = error_body(429, &message);
    body["error"]["details"] = json!([{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RATE_LIMIT_EXCEEDED",
        "domain": "googleapis.com",
        "metadata": {
            "service": "sheets.googleapis.com",
            "consumer": format!("projects/{CONSUMER_PROJECT_NUMBER}"),
            "quota_metric": "sheets.googleapis.com/write_requests",
            "quota_limit": "WriteRequestsPerMinutePerUser",
            "quota_location": "global",
        },
    }]);
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(hyper::header::RETRY_AFTER, value);
    }
    response
}

fn injected_fault(state: &DoubleState, status: u16) -> Reply {
    match status {
        429 => quota_exceeded(lock(&state.quota).retry_after_secs.unwrap_or(1)),
        500 => error_reply(500, "Internal error encountered."),
        503 => error_reply(503, "The service is currently unavailable."),
        other => error_reply(other, "Injected by SheetsDouble::fail_next."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workbook(tabs: &[(&str, u32, u32)]) -> Workbook {
        Workbook {
            title: "t".to_owned(),
            tabs: tabs.iter().enumerate().map(|(i, (title, r, c))| Tab::new(i as i32, title, *r, *c)).collect(),
        }
    }

    fn span(range: &A1Range) -> (u32, Option<u32>, u32, Option<u32>, bool) {
        (range.start_row, range.end_row, range.start_column, range.end_column, range.single_cell)
    }

    #[test]
    fn a1_ranges_parse_in_every_form_clients_send() {
        let book = workbook(&[("Sheet1", 1000, 26), ("track_popularity", 10, 3), ("it's here", 5, 5)]);
        let parse = |text: &str| A1Range::parse(&book, text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parse("'track_popularity'!A1:C3").tab, 1);
        assert_eq!(span(&parse("'track_popularity'!A1:C3")), (0, Some(3), 0, Some(3), false));
        assert_eq!(span(&parse("track_popularity!B2")), (1, Some(2), 1, Some(2), true));
        assert_eq!(span(&parse("Sheet1!A:C")), (0, None, 0, Some(3), false));
        assert_eq!(span(&parse("Sheet1!2:4")), (1, Some(4), 0, None, false));
        assert_eq!(span(&parse("Sheet1!A2:C")), (1, None, 0, Some(3), false));
        assert_eq!(span(&parse("Sheet1!c3:a1")), (0, Some(3), 0, Some(3), false));
        assert_eq!(span(&parse("Sheet1!$A$1:$B$2")), (0, Some(2), 0, Some(2), false));
        assert_eq!(span(&parse("track_popularity")), (0, None, 0, None, false));
        assert_eq!(parse("track_popularity").tab, 1);
        assert_eq!(parse("'it''s here'!A1").tab, 2);
        assert_eq!(parse("'it''s here'").tab, 2);
        // Cells without a tab are on the first tab.
        assert_eq!(parse("B1:B2").tab, 0);
        for bad in
            ["Nope!A1", "Sheet1!", "Sheet1!A", "Sheet1!A0", "'unclosed!A1", "'Sheet1'x!A1", "Sheet1!A1:", "Sheet1!1A"]
        {
            assert_eq!(A1Range::parse(&book, bad), Err(format!("Unable to parse range: {bad}")), "{bad}");
        }
    }

    #[test]
    fn ranges_outside_the_grid_are_refused_in_googles_words() {
        let book = workbook(&[("T", 3, 3)]);
        let tab = &book.tabs[0];
        let within = |text: &str| A1Range::parse(&book, text).and_then(|r| r.within_grid(tab));
        assert_eq!(within("T!A1:C3"), Ok(((0, 3), (0, 3))));
        assert_eq!(within("T!B:C"), Ok(((0, 3), (1, 3))));
        assert_eq!(within("T"), Ok(((0, 3), (0, 3))));
        assert_eq!(
            within("T!a1:c5"),
            Err("Range ('T'!A1:C5) exceeds grid limits. Max rows: 3, max columns: 3".to_owned())
        );
        assert_eq!(within("T!D1"), Err("Range ('T'!D1) exceeds grid limits. Max rows: 3, max columns: 3".to_owned()));
        assert!(within("T!A4:C").is_err());
    }

    #[test]
    fn ranges_are_written_back_quoted_only_when_needed() {
        assert_eq!(range_reference("Sheet1", false, (0, 3), (0, 3)), "Sheet1!A1:C3");
        assert_eq!(range_reference("track_popularity", false, (0, 1), (0, 1)), "track_popularity!A1");
        assert_eq!(range_reference("Sheet1", true, (0, 5), (0, 3)), "'Sheet1'!A1:C5");
        assert_eq!(range_reference("my tab", false, (9, 10), (26, 28)), "'my tab'!AA10:AB10");
        assert_eq!(range_reference("it's", false, (0, 1), (0, 1)), "'it''s'!A1");
        assert_eq!(range_reference("A1", false, (0, 1), (0, 1)), "'A1'!A1");
        assert_eq!(range_reference("2024", false, (0, 1), (0, 1)), "'2024'!A1");
    }

    #[test]
    fn column_letters_round_trip() {
        for (column, letters) in [(0, "A"), (25, "Z"), (26, "AA"), (51, "AZ"), (52, "BA"), (701, "ZZ"), (702, "AAA")] {
            assert_eq!(column_letters(column), letters);
            assert_eq!(parse_cell(letters), Some((Some(column), None)));
        }
        assert_eq!(column_letters(MAX_COLUMNS - 1), "ZZZ");
    }

    #[test]
    fn user_entered_text_is_parsed_as_sheets_parses_typing() {
        assert_eq!(user_entered("42"), json!(42));
        assert_eq!(user_entered("-3.5"), json!(-3.5));
        assert_eq!(user_entered("1e3"), json!(1000));
        assert_eq!(user_entered("TRUE"), json!(true));
        assert_eq!(user_entered("false"), json!(false));
        assert_eq!(user_entered("'0042"), json!("0042"));
        assert_eq!(user_entered("abc"), json!("abc"));
        assert_eq!(user_entered("1.2.3"), json!("1.2.3"));
        assert_eq!(user_entered("e5"), json!("e5"));
        assert_eq!(user_entered("=SUM(A1:A2)"), json!("=SUM(A1:A2)"));
        // The pitfall: a 20-digit id typed in becomes a double.
        assert_eq!(user_entered("12345678901234567890"), json!(12345678901234567890_f64));
        assert_ne!(user_entered("12345678901234567890"), json!("12345678901234567890"));
    }

    #[test]
    fn numbers_are_doubles_shown_as_integers_when_exact() {
        assert_eq!(sheet_number(42.0), json!(42));
        assert_eq!(sheet_number(0.5), json!(0.5));
        assert_eq!(sheet_number(9_007_199_254_740_992.0), json!(9_007_199_254_740_992_i64));
        // 2^53 + 1 cannot be held: it comes back as another number.
        let stored = input_value(&json!(9_007_199_254_740_993_u64), ValueInputOption::Raw).unwrap();
        assert_ne!(stored, Some(json!(9_007_199_254_740_993_u64)));
    }

    #[test]
    fn formatted_values_render_like_the_automatic_format() {
        assert_eq!(formatted(json!(42)), json!("42"));
        assert_eq!(formatted(json!(0.25)), json!("0.25"));
        assert_eq!(formatted(json!(true)), json!("TRUE"));
        assert_eq!(formatted(json!(1.2345678901234567e19)), json!("1.23457E+19"));
        assert_eq!(formatted(json!(1e20)), json!("1E+20"));
        assert_eq!(formatted(json!("text")), json!("text"));
    }

    #[test]
    fn routes_follow_the_v4_layout() {
        let route = |method: Method, path: &str| Operation::parse(&method, path);
        let id = "1AbC-_x".to_owned();
        assert_eq!(route(Method::GET, "/v4/spreadsheets/1AbC-_x"), Some((id.clone(), Operation::GetSpreadsheet)));
        assert_eq!(
            route(Method::POST, "/v4/spreadsheets/1AbC-_x:batchUpdate"),
            Some((id.clone(), Operation::BatchUpdate))
        );
        assert_eq!(
            route(Method::PUT, "/v4/spreadsheets/1AbC-_x/values/%27track%20pop%27%21A1%3AC3"),
            Some((id.clone(), Operation::UpdateValues("'track pop'!A1:C3".to_owned())))
        );
        assert_eq!(
            route(Method::POST, "/v4/spreadsheets/1AbC-_x/values/Sheet1!A1:C3:clear"),
            Some((id.clone(), Operation::ClearValues("Sheet1!A1:C3".to_owned())))
        );
        assert_eq!(
            route(Method::GET, "/v4/spreadsheets/1AbC-_x/values/Sheet1"),
            Some((id.clone(), Operation::GetValues("Sheet1".to_owned())))
        );
        assert_eq!(
            route(Method::POST, "/v4/spreadsheets/1AbC-_x/values:batchUpdate"),
            Some((id.clone(), Operation::BatchUpdateValues))
        );
        assert_eq!(route(Method::POST, "/v4/spreadsheets/1AbC-_x/values/Sheet1!A1:append"), None);
        assert_eq!(route(Method::DELETE, "/v4/spreadsheets/1AbC-_x"), None);
        assert_eq!(route(Method::GET, "/v4/spreadsheets/"), None);
        assert_eq!(route(Method::GET, "/v3/spreadsheets/x"), None);
        assert!(Operation::BatchUpdate.is_write() && Operation::ClearValues(String::new()).is_write());
        assert!(!Operation::GetSpreadsheet.is_write() && !Operation::GetValues(String::new()).is_write());
    }

    #[test]
    fn deleting_rows_shifts_cells_and_the_frozen_area() {
        let mut tab = Tab::new(0, "T", 5, 2);
        for r in 0..5 {
            tab.set(r, 0, json!(r));
        }
        tab.frozen_row_count = 2;
        tab.delete(Dimension::Rows, 1, 3);
        assert_eq!(tab.row_count, 3);
        assert_eq!(tab.frozen_row_count, 1);
        assert_eq!(tab.region(0, 3, 0, 2), vec![vec![json!(0)], vec![json!(3)], vec![json!(4)]]);
        tab.insert(Dimension::Columns, 0, 1);
        assert_eq!(tab.column_count, 3);
        assert_eq!(tab.region(0, 1, 0, 3), vec![vec![json!(""), json!(0)]]);
    }

    #[test]
    fn fresh_sheet_ids_are_positive_unique_and_not_sequential() {
        let counter = AtomicU64::new(0);
        let mut book = workbook(&[("Sheet1", 1, 1)]);
        let mut ids = BTreeSet::new();
        for n in 0..50 {
            let id = fresh_sheet_id(&counter, &book);
            assert!(id > 0);
            assert!(ids.insert(id));
            book.tabs.push(Tab::new(id, &format!("t{n}"), 1, 1));
        }
        assert!(!ids.contains(&1) || !ids.contains(&2));
    }
}
