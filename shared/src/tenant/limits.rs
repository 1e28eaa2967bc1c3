//! The bounds a tenant secret is checked against, in one place: the schema
//! version this build reads, feed intervals, recipients, prefixes, and
//! Google's grid of 10,000,000 cells per spreadsheet, which bounds a
//! google-sheets connector's `maxRows`. Pure constants; tenant parsing and
//! the Sheets deliverer both read them.

/// The only `schemaVersion` this build understands.
pub const TENANT_SCHEMA_VERSION: u64 = 1;
/// Bounds of a feed's `intervalSeconds` (one hour to one week).
pub const MIN_INTERVAL_SECONDS: u64 = 3_600;
pub const MAX_INTERVAL_SECONDS: u64 = 604_800;
/// `fullEverySeconds` of a delta feed: its range and default (docs/design.md, "Tenants").
pub const MIN_FULL_EVERY_SECONDS: u64 = 604_800;
pub const MAX_FULL_EVERY_SECONDS: u64 = 7_776_000;
pub const DEFAULT_FULL_EVERY_SECONDS: u64 = 2_592_000;
/// The id of a feed that does not give one.
pub const DEFAULT_FEED_ID: &str = "default";
/// Bounds of a google-sheets connector's `maxRows`: one report tab of that
/// many rows (a header, three columns) must fit Google's 10,000,000 cells.
pub const MAX_SHEET_ROWS: u64 = MAX_ROWS_ONE_REPORT;
/// Feeds a tenant may keep, paused ones included (the plan bounds the active
/// ones); it keeps a secret well under Secrets Manager's 64 KB.
pub const MAX_FEEDS: usize = 100;
/// SES accepts at most 50 recipients per message.
pub const MAX_EMAIL_RECIPIENTS: usize = 50;
/// Most arrival-event targets (`notifications`) one tenant may declare.
pub const MAX_NOTIFICATION_TARGETS: usize = 10;
/// Most failure-notice `contacts`: one message names them all, and SES
/// accepts at most 50 recipients per message.
pub const MAX_CONTACTS: usize = MAX_EMAIL_RECIPIENTS;
/// Longest key prefix accepted in a connector (S3 keys are at most 1,024
/// bytes; the rest is needed for `<data_type>/<runId>/part-NNN.<ext>`).
pub const MAX_PREFIX_BYTES: usize = 512;

/// Google's limit of cells per spreadsheet, blank ones included.
pub const MAX_SPREADSHEET_CELLS: u64 = 10_000_000;
/// Columns of a report tab: the id, `searchRank`, `searchModifier`.
pub const REPORT_COLUMNS: u64 = 3;
/// Columns of the `_popularity` tab: data_type, runId, rows, written at.
pub const STATUS_COLUMNS: u64 = 4;
/// The most rows one report may have so that its tab and the `_popularity`
/// tab alone fit the limit: 3,333,329.
pub const MAX_ROWS_ONE_REPORT: u64 = (MAX_SPREADSHEET_CELLS - 2 * STATUS_COLUMNS) / REPORT_COLUMNS - 1;

/// Cells a feed of `reports` reports and `max_rows` rows takes at most: each
/// report tab its rows, a header and 3 columns, and the `_popularity` tab.
pub fn cells_needed(reports: usize, max_rows: u64) -> u64 {
    let reports = reports as u64;
    reports * (max_rows + 1) * REPORT_COLUMNS + (reports + 1) * STATUS_COLUMNS
}
