//! Where every delivery of one run stands, read from the staging store
//! (docs/design.md, "Reports and layouts" and "Delivery rules"): the job
//! objects fanout wrote under `jobs/<kind>/<runId>/` joined with the status
//! objects the deliverers wrote under `status/<runId>/`, one row per tenant ×
//! feed, rendered as the operator's `popularity status` table. It only reads:
//! it never creates, retries or repairs a job or a status, and it never
//! leaves out an object it cannot understand, since a row missing from the
//! table reads as "all fine": a status object that is not a status of its job
//! shows as `damaged`, with why.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::delivery::{
    parse_job_key, DeliveryOutcome, DeliveryPlan, DeliveryStaging, DeliveryStatus, JobKind, KeyError, StatusRecord,
    UnusableStatus, JOBS_PREFIX, STATUS_PREFIX,
};
use crate::domain::RunId;
use crate::manifest::DeliveryMode;
use crate::store::{ObjectEntry, ObjectStore, StoreError};

/// Status objects read at once: enough to hide S3 latency for hundreds of
/// tenants, few enough not to be throttled.
const STATUS_READS_IN_FLIGHT: usize = 16;

/// The ERROR column keeps this many characters of the last error, so a row
/// stays on one line of a terminal.
const ERROR_COLUMN_CHARS: usize = 80;

/// Where one tenant × feed of a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowState {
    /// A job exists and no deliverer has written a status yet.
    Pending,
    Delivered,
    Failed,
    Skipped,
    Invalid,
    /// An attempt holds the claim and has not recorded its outcome yet.
    InProgress,
    /// The status object is not a status of this job (unreadable JSON, an
    /// unknown schema, another job's); the error column says why.
    Damaged,
}

impl RowState {
    /// In the order of the summary line.
    pub const ALL: [RowState; 7] = [
        RowState::Delivered,
        RowState::Failed,
        RowState::Pending,
        RowState::InProgress,
        RowState::Skipped,
        RowState::Invalid,
        RowState::Damaged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Delivered => "delivered",
            RowState::Failed => "failed",
            RowState::Skipped => "skipped",
            RowState::Invalid => "invalid",
            RowState::InProgress => "in-progress",
            RowState::Damaged => "damaged",
        }
    }
}

impl From<DeliveryOutcome> for RowState {
    fn from(outcome: DeliveryOutcome) -> Self {
        match outcome {
            DeliveryOutcome::Delivered => RowState::Delivered,
            DeliveryOutcome::Failed => RowState::Failed,
            DeliveryOutcome::Skipped => RowState::Skipped,
            DeliveryOutcome::Invalid => RowState::Invalid,
            DeliveryOutcome::InProgress => RowState::InProgress,
        }
    }
}

impl fmt::Display for RowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tenant × feed of a run: its job, if fanout made one, and its status,
/// if a deliverer wrote one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub tenant_id: String,
    /// May start with `_` (`_tenant`) for a problem with the tenant as a
    /// whole rather than with one of its feeds.
    pub feed_id: String,
    /// From the job key; `None` when there is a status but no job.
    pub kind: Option<JobKind>,
    pub state: RowState,
    /// What the delivery holds, once an attempt has read its job.
    pub plan: Option<DeliveryPlan>,
    pub attempts: usize,
    pub objects: usize,
    /// Bytes written at the destination.
    pub bytes: u64,
    /// `None` while pending.
    pub updated_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// How many rows are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub delivered: usize,
    pub failed: usize,
    pub pending: usize,
    pub skipped: usize,
    pub invalid: usize,
    pub in_progress: usize,
    pub damaged: usize,
}

impl StateCounts {
    pub fn of(&self, state: RowState) -> usize {
        match state {
            RowState::Pending => self.pending,
            RowState::Delivered => self.delivered,
            RowState::Failed => self.failed,
            RowState::Skipped => self.skipped,
            RowState::Invalid => self.invalid,
            RowState::InProgress => self.in_progress,
            RowState::Damaged => self.damaged,
        }
    }

    pub fn total(&self) -> usize {
        RowState::ALL.into_iter().map(|state| self.of(state)).sum()
    }

    fn add(&mut self, state: RowState) {
        let count = match state {
            RowState::Pending => &mut self.pending,
            RowState::Delivered => &mut self.delivered,
            RowState::Failed => &mut self.failed,
            RowState::Skipped => &mut self.skipped,
            RowState::Invalid => &mut self.invalid,
            RowState::InProgress => &mut self.in_progress,
            RowState::Damaged => &mut self.damaged,
        };
        *count += 1;
    }
}

/// `3 delivered, 1 failed, 0 pending, 0 in-progress, 0 skipped, 0 invalid, 0 damaged`.
impl fmt::Display for StateCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, state) in RowState::ALL.into_iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{} {state}", self.of(state))?;
        }
        Ok(())
    }
}

/// Every tenant × feed of a run, sorted by tenant then feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatusReport {
    pub run_id: RunId,
    pub rows: Vec<StatusRow>,
}

impl RunStatusReport {
    /// Whether the run has neither a job nor a status object.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for row in &self.rows {
            counts.add(row.state);
        }
        counts
    }

    /// An aligned plain-text table, one line per row, then a summary line.
    /// Every cell is put on one line (control characters become spaces) and
    /// the error is cut to [`ERROR_COLUMN_CHARS`] characters.
    pub fn render_table(&self) -> String {
        const HEADER: [&str; 10] =
            ["TENANT", "FEED", "KIND", "STATE", "MODE", "ATTEMPTS", "OBJECTS", "BYTES", "UPDATED", "ERROR"];
        const RIGHT_ALIGNED: [bool; 10] = [false, false, false, false, false, true, true, true, false, false];

        let lines: Vec<[String; 10]> = std::iter::once(HEADER.map(str::to_owned))
            .chain(self.rows.iter().map(|row| {
                [
                    one_line(&row.tenant_id),
                    one_line(&row.feed_id),
                    row.kind.map_or_else(|| "-".to_owned(), |kind| kind.to_string()),
                    row.state.to_string(),
                    row.plan.as_ref().map_or_else(|| "-".to_owned(), mode_text),
                    row.attempts.to_string(),
                    row.objects.to_string(),
                    row.bytes.to_string(),
                    row.updated_at
                        .map_or_else(|| "-".to_owned(), |time| time.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    row.last_error.as_deref().map_or_else(|| "-".to_owned(), truncated_error),
                ]
            }))
            .collect();

        let mut widths = [0usize; 10];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }

        let mut table = String::new();
        for line in &lines {
            let mut text = String::new();
            for (column, cell) in line.iter().enumerate() {
                if column > 0 {
                    text.push_str("  ");
                }
                let padding = " ".repeat(widths[column] - cell.chars().count());
                if RIGHT_ALIGNED[column] {
                    text.push_str(&padding);
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&padding);
                }
            }
            table.push_str(text.trim_end());
            table.push('\n');
        }
        table.push_str(&format!("{} (run {}, {} rows)\n", self.counts(), self.run_id, self.rows.len()));
        table
    }
}

/// `full`, `delta<20261116030000` (against that base run), or `full*` for
/// a delta feed's full delivery (the status object says why).
fn mode_text(plan: &DeliveryPlan) -> String {
    match (plan.mode, plan.base_run_id, &plan.full_reason) {
        (DeliveryMode::Delta, Some(base), _) => format!("delta<{base}"),
        (DeliveryMode::Delta, None, _) => "delta".to_owned(),
        (DeliveryMode::Full, _, Some(_)) => "full*".to_owned(),
        (DeliveryMode::Full, _, None) => "full".to_owned(),
    }
}

/// `text` on one line: every control character (newline, tab, ...) becomes a space.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The first [`ERROR_COLUMN_CHARS`] characters of an error on one line
/// (each run of whitespace, newlines included, becomes one space), ending
/// with `…` when something was cut.
fn truncated_error(error: &str) -> String {
    let flat = one_line(error).split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "-".to_owned();
    }
    if flat.chars().count() <= ERROR_COLUMN_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(ERROR_COLUMN_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Why the state of a run could not be read. Messages name the object.
#[derive(Debug, thiserror::Error)]
pub enum StatusReportError {
    #[error("could not list {location}")]
    List {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("could not read status object {location}")]
    Read {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("status object {location} was listed but is gone")]
    Vanished { location: String },
    /// An object under `jobs/<kind>/<runId>/` whose key fanout would not write.
    #[error(transparent)]
    JobKey(#[from] KeyError),
    #[error("{location} is not a status key of the form status/<runId>/<tenantId>/<feedId>.json: {reason}")]
    StatusKey { location: String, reason: String },

    #[error("tenant {tenant_id:?} feed {feed_id:?} has two jobs in one run: {first} and {second}")]
    DuplicateJob { tenant_id: String, feed_id: String, first: String, second: String },
}

/// What is known about one tenant × feed while the report is built.
#[derive(Default)]
struct Found {
    job: Option<(JobKind, String)>,
    status: Option<Result<DeliveryStatus, UnusableStatus>>,
}

/// Reads every job and status object of `run` from the staging store and
/// joins them into one row per tenant × feed.
pub async fn run_status<S: ObjectStore>(staging: &S, run: RunId) -> Result<RunStatusReport, StatusReportError> {
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();

    for kind in JobKind::ALL {
        let prefix = format!("{JOBS_PREFIX}{kind}/{run}/");
        for entry in list(staging, &prefix).await? {
            let parts = parse_job_key(&entry.key)?;
            let slot = found.entry((parts.tenant_id.clone(), parts.feed_id.clone())).or_default();
            if let Some((_, first)) = &slot.job {
                return Err(StatusReportError::DuplicateJob {
                    tenant_id: parts.tenant_id,
                    feed_id: parts.feed_id,
                    first: staging.describe(first),
                    second: staging.describe(&entry.key),
                });
            }
            slot.job = Some((parts.kind, entry.key));
        }
    }

    let status_prefix = format!("{STATUS_PREFIX}{run}/");
    // Keys are checked before anything is read, so a stray object fails fast.
    let status_keys = list(staging, &status_prefix)
        .await?
        .into_iter()
        .map(|entry| {
            let (tenant_id, feed_id) = parse_status_key(&status_prefix, &entry.key)
                .map_err(|reason| StatusReportError::StatusKey { location: staging.describe(&entry.key), reason })?;
            Ok((entry.key, tenant_id, feed_id))
        })
        .collect::<Result<Vec<_>, StatusReportError>>()?;

    let reader = DeliveryStaging::new(staging);
    let statuses: Vec<(String, String, StatusRecord)> = stream::iter(status_keys)
        .map(|(key, tenant_id, feed_id)| async move {
            let record = match reader.read_status(run, &tenant_id, &feed_id).await {
                Ok(Some(record)) => record,
                Ok(None) => return Err(StatusReportError::Vanished { location: staging.describe(&key) }),
                Err(source) => return Err(StatusReportError::Read { location: staging.describe(&key), source }),
            };
            Ok::<_, StatusReportError>((tenant_id, feed_id, record))
        })
        .buffer_unordered(STATUS_READS_IN_FLIGHT)
        .try_collect()
        .await?;
    for (tenant_id, feed_id, record) in statuses {
        found.entry((tenant_id, feed_id)).or_default().status = Some(record.status);
    }

    let rows = found
        .into_iter()
        .map(|((tenant_id, feed_id), found)| {
            let kind = found.job.map(|(kind, _)| kind);
            match found.status {
                Some(Err(reason)) => StatusRow {
                    tenant_id,
                    feed_id,
                    kind,
                    state: RowState::Damaged,
                    plan: None,
                    attempts: 0,
                    objects: 0,
                    bytes: 0,
                    updated_at: None,
                    last_error: Some(reason.to_string()),
                },
                Some(Ok(status)) => StatusRow {
                    tenant_id,
                    feed_id,
                    kind,
                    state: status.outcome.into(),
                    plan: status.plan.clone(),
                    attempts: status.attempts.len(),
                    objects: status.objects.len(),
                    bytes: status.total_bytes(),
                    updated_at: Some(status.updated_at),
                    last_error: status.last_error,
                },
                None => StatusRow {
                    tenant_id,
                    feed_id,
                    kind,
                    state: RowState::Pending,
                    plan: None,
                    attempts: 0,
                    objects: 0,
                    bytes: 0,
                    updated_at: None,
                    last_error: None,
                },
            }
        })
        .collect();
    Ok(RunStatusReport { run_id: run, rows })
}

/// The objects under `prefix`, without the zero-byte "folder" placeholders
/// the S3 console creates (keys ending in `/`), which are nobody's job or status.
async fn list<S: ObjectStore>(staging: &S, prefix: &str) -> Result<Vec<ObjectEntry>, StatusReportError> {
    let entries = staging
        .list(prefix)
        .await
        .map_err(|source| StatusReportError::List { location: staging.describe(prefix), source })?;
    Ok(entries.into_iter().filter(|entry| !entry.key.ends_with('/')).collect())
}

/// `(tenantId, feedId)` of `status/<runId>/<tenantId>/<feedId>.json`. Lenient
/// about the ids themselves (a tenant-level status uses a feed id such as
/// `_tenant`, which no feed may have), strict about the shape.
fn parse_status_key(prefix: &str, key: &str) -> Result<(String, String), String> {
    let rest = key.strip_prefix(prefix).ok_or_else(|| format!("it does not start with {prefix:?}"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let [tenant_id, file] = segments[..] else {
        return Err(format!("expected 2 segments after {prefix:?}, found {}", segments.len()));
    };
    if tenant_id.is_empty() {
        return Err("the tenant id is empty".to_owned());
    }
    let feed_id = file.strip_suffix(".json").ok_or_else(|| format!("{file:?} does not end with .json"))?;
    if feed_id.is_empty() {
        return Err("the feed id is empty".to_owned());
    }
    Ok((tenant_id.to_owned(), feed_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tempfile::TempDir;

    use super::*;
    use crate::delivery::{job_key, status_key, AttemptResult, DeliveredObject, JobKeyParts};
    use crate::store::{LocalDirStore, ObjectSink};

    fn run() -> RunId {
        "20261119030000".parse().unwrap()
    }

    fn other_run() -> RunId {
        "20261118030000".parse().unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// A staging store on a fresh temporary directory, removed when dropped
    /// (even when the test panics).
    struct Staging {
        store: LocalDirStore,
        _dir: TempDir,
    }

    impl Staging {
        fn new(test: &str) -> Staging {
            let (dir, store) = LocalDirStore::in_temp_dir(&format!("status-report-{test}"));
            Staging { store, _dir: dir }
        }

        async fn put(&self, key: &str, body: impl Into<Bytes>) {
            self.store.put(key, body.into(), "application/json").await.unwrap();
        }

        /// The job object's body is not read by the report; only its key matters.
        async fn job(&self, kind: JobKind, run: RunId, tenant_id: &str, feed_id: &str) {
            self.put(&job_key(kind, run, tenant_id, feed_id), "{}").await;
        }

        async fn status(&self, status: &DeliveryStatus) {
            let key = status_key(status.run_id, &status.tenant_id, &status.feed_id);
            self.put(&key, serde_json::to_vec(status).unwrap()).await;
        }
    }

    fn parts(kind: JobKind, run: RunId, tenant_id: &str, feed_id: &str) -> JobKeyParts {
        JobKeyParts { kind, run_id: run, tenant_id: tenant_id.into(), feed_id: feed_id.into() }
    }

    fn object(key: &str, bytes: u64) -> DeliveredObject {
        DeliveredObject::new(key.into(), bytes, "ab".repeat(32))
    }

    fn first_attempt(
        parts: &JobKeyParts,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        result: AttemptResult,
    ) -> DeliveryStatus {
        DeliveryStatus::first_record(parts.run_id, &parts.tenant_id, &parts.feed_id, started_at, finished_at, result)
    }

    const MULTI_LINE_ERROR: &str = "AccessDenied: User is not authorized to perform sts:AssumeRole\n\
        on resource arn:aws:iam::111122223333:role/popularity-delivery\n\twith external id mm-acme";

    /// Five feeds of `run()` in every state, plus objects of another run
    /// that must not show up.
    async fn populated(test: &str) -> Staging {
        let staging = Staging::new(test);
        let r = run();

        // globex/all: delivered on the first attempt, two objects.
        staging.job(JobKind::S3, r, "globex", "all").await;
        staging
            .status(&first_attempt(
                &parts(JobKind::S3, r, "globex", "all"),
                at("2026-11-19T03:20:01Z"),
                at("2026-11-19T03:20:09Z"),
                AttemptResult::Delivered(vec![
                    object("massive/track_popularity/20261119030000/part-001.json", 100),
                    object("massive/track_popularity/20261119030000/_manifest.json", 23),
                ]),
            ))
            .await;

        // acme/mail: fanout made the job, no deliverer has run yet.
        staging.job(JobKind::Email, r, "acme", "mail").await;

        // acme/lake: failed twice, the last error spans lines.
        staging.job(JobKind::Gcs, r, "acme", "lake").await;
        let mut lake = first_attempt(
            &parts(JobKind::Gcs, r, "acme", "lake"),
            at("2026-11-19T03:20:01Z"),
            at("2026-11-19T03:20:02Z"),
            AttemptResult::Failed("SlowDown".into()),
        );
        lake.record_attempt(
            at("2026-11-19T03:21:00Z"),
            at("2026-11-19T03:21:04Z"),
            AttemptResult::Failed(MULTI_LINE_ERROR.into()),
        );
        staging.status(&lake).await;

        // acme/sheet: skipped.
        staging.job(JobKind::Sheets, r, "acme", "sheet").await;
        staging
            .status(&first_attempt(
                &parts(JobKind::Sheets, r, "acme", "sheet"),
                at("2026-11-19T03:20:01Z"),
                at("2026-11-19T03:20:01Z"),
                AttemptResult::Skipped("tenant disabled".into()),
            ))
            .await;

        // acme/_tenant: a tenant-level problem, a status with no job.
        staging
            .status(&first_attempt(
                &parts(JobKind::S3, r, "acme", "_tenant"),
                at("2026-11-19T03:19:58Z"),
                at("2026-11-19T03:19:59Z"),
                AttemptResult::Invalid("x".repeat(200)),
            ))
            .await;

        // Another run, which must not appear.
        staging.job(JobKind::S3, other_run(), "initech", "all").await;
        staging
            .status(&first_attempt(
                &parts(JobKind::S3, other_run(), "initech", "all"),
                at("2026-11-18T03:20:01Z"),
                at("2026-11-18T03:20:09Z"),
                AttemptResult::Failed("old failure".into()),
            ))
            .await;
        staging
    }

    #[tokio::test]
    async fn rows_join_jobs_and_statuses_one_per_tenant_and_feed_sorted() {
        let staging = populated("rows").await;
        let report = run_status(&staging.store, run()).await.unwrap();

        assert_eq!(report.run_id, run());
        let keys: Vec<(&str, &str)> =
            report.rows.iter().map(|row| (row.tenant_id.as_str(), row.feed_id.as_str())).collect();
        assert_eq!(
            keys,
            [("acme", "_tenant"), ("acme", "lake"), ("acme", "mail"), ("acme", "sheet"), ("globex", "all")]
        );

        let summary: Vec<(Option<JobKind>, RowState, usize, usize, u64)> =
            report.rows.iter().map(|row| (row.kind, row.state, row.attempts, row.objects, row.bytes)).collect();
        assert_eq!(
            summary,
            [
                (None, RowState::Invalid, 1, 0, 0),
                (Some(JobKind::Gcs), RowState::Failed, 2, 0, 0),
                (Some(JobKind::Email), RowState::Pending, 0, 0, 0),
                (Some(JobKind::Sheets), RowState::Skipped, 1, 0, 0),
                (Some(JobKind::S3), RowState::Delivered, 1, 2, 123),
            ]
        );

        let lake = &report.rows[1];
        assert_eq!(lake.updated_at, Some(at("2026-11-19T03:21:04Z")));
        assert_eq!(lake.last_error.as_deref(), Some(MULTI_LINE_ERROR));
        let mail = &report.rows[2];
        assert_eq!((mail.updated_at, mail.last_error.as_deref()), (None, None));
        let globex = &report.rows[4];
        assert_eq!((globex.updated_at, globex.last_error.as_deref()), (Some(at("2026-11-19T03:20:09Z")), None));
    }

    #[tokio::test]
    async fn counts_tally_each_state_including_pending() {
        let staging = populated("counts").await;
        let report = run_status(&staging.store, run()).await.unwrap();
        let counts = report.counts();
        assert_eq!(
            counts,
            StateCounts { delivered: 1, failed: 1, pending: 1, skipped: 1, invalid: 1, in_progress: 0, damaged: 0 }
        );
        assert_eq!(counts.total(), 5);
        assert_eq!(
            counts.to_string(),
            "1 delivered, 1 failed, 1 pending, 0 in-progress, 1 skipped, 1 invalid, 0 damaged"
        );

        staging.job(JobKind::S3, run(), "hooli", "all").await;
        staging.job(JobKind::S3, run(), "hooli", "backup").await;
        let report = run_status(&staging.store, run()).await.unwrap();
        assert_eq!(report.counts().pending, 3);
        assert_eq!(report.counts().total(), 7);
    }

    #[tokio::test]
    async fn the_table_is_aligned_with_one_line_per_row_and_a_summary() {
        let staging = populated("table").await;
        let report = run_status(&staging.store, run()).await.unwrap();
        let table = report.render_table();
        let lines: Vec<&str> = table.lines().collect();

        assert_eq!(lines.len(), 1 + report.rows.len() + 1, "header, rows, summary, nothing else:\n{table}");
        let header = lines[0];
        for column in ["TENANT", "FEED", "KIND", "STATE", "MODE", "ATTEMPTS", "OBJECTS", "BYTES", "UPDATED", "ERROR"] {
            assert!(header.contains(column), "{column} missing from {header:?}");
        }
        for (line, row) in lines[1..=report.rows.len()].iter().zip(&report.rows) {
            assert!(line.starts_with(&row.tenant_id), "rows in report order: {line:?}");
            // Left-aligned columns start where their heading does.
            for (heading, value) in [("FEED", row.feed_id.as_str()), ("STATE", row.state.as_str())] {
                let column = header.find(heading).unwrap();
                assert_eq!(&line[column..column + value.len()], value, "{heading} misaligned in {line:?}");
            }
        }

        let lake = lines.iter().find(|line| line.contains("lake")).unwrap();
        assert!(lake.contains("gcs") && lake.contains("failed") && lake.contains("2026-11-19T03:21:04Z"), "{lake}");
        assert!(
            lake.contains("AccessDenied: User is not authorized to perform sts:AssumeRole on resource arn:…"),
            "newlines in the error become spaces: {lake}"
        );
        assert!(!lake.contains('\t'));

        let tenant = lines.iter().find(|line| line.contains("_tenant")).unwrap();
        let error = tenant.rsplit("  ").next().unwrap();
        assert_eq!(error, format!("{}…", "x".repeat(79)), "error cut to 80 characters: {tenant}");
        let mail = lines.iter().find(|line| line.contains("mail")).unwrap();
        assert!(mail.contains("email") && mail.contains("pending"), "{mail}");

        let globex = lines.iter().find(|line| line.starts_with("globex")).unwrap();
        assert!(globex.contains(" 123 ") && globex.contains("delivered"), "{globex}");
        assert!(!table.contains("initech"), "another run's objects leaked into the table:\n{table}");

        assert_eq!(
            lines.last().unwrap(),
            &"1 delivered, 1 failed, 1 pending, 0 in-progress, 1 skipped, 1 invalid, 0 damaged (run 20261119030000, 5 rows)"
        );
    }

    #[test]
    fn the_mode_column_names_the_base_of_a_delta_and_marks_a_delta_feed_delivered_full() {
        let base = "20261116030000".parse().unwrap();
        assert_eq!(mode_text(&DeliveryPlan::full()), "full");
        assert_eq!(mode_text(&DeliveryPlan::delta_against(base)), "delta<20261116030000");
        assert_eq!(mode_text(&DeliveryPlan::full_because("first delivery".into())), "full*");
    }

    #[tokio::test]
    async fn a_run_with_no_objects_gives_an_empty_report() {
        let staging = populated("empty").await;
        let report = run_status(&staging.store, "20261120030000".parse().unwrap()).await.unwrap();
        assert!(report.is_empty());
        assert_eq!(report.counts().total(), 0);
    }

    #[tokio::test]
    async fn status_objects_that_are_not_their_jobs_show_as_damaged_with_why() {
        let staging = populated("damaged").await;
        staging.put(&status_key(run(), "globex", "broken"), "{\"schemaVersion\": 1, \"outcome\": \"delivered\"").await;
        staging.put(&status_key(run(), "globex", "future"), r#"{"schemaVersion": 2}"#).await;
        let copied = first_attempt(
            &parts(JobKind::S3, run(), "globex", "all"),
            at("2026-11-19T03:20:01Z"),
            at("2026-11-19T03:20:09Z"),
            AttemptResult::Failed("boom".into()),
        );
        staging.put(&status_key(run(), "globex", "copied"), serde_json::to_vec(&copied).unwrap()).await;

        let report = run_status(&staging.store, run()).await.unwrap();
        let damaged: Vec<(&str, &str)> = report
            .rows
            .iter()
            .filter(|row| row.state == RowState::Damaged)
            .map(|row| (row.feed_id.as_str(), row.last_error.as_deref().unwrap()))
            .collect();
        assert_eq!(damaged.len(), 3, "{damaged:?}");
        assert!(damaged[0].0 == "broken" && damaged[0].1.contains("not a status object"), "{damaged:?}");
        assert!(damaged[1].0 == "copied" && damaged[1].1.contains("feed \"all\""), "{damaged:?}");
        assert!(damaged[2].0 == "future" && damaged[2].1.contains("schemaVersion 2"), "{damaged:?}");
        assert_eq!(report.counts().damaged, 3);
    }

    #[tokio::test]
    async fn an_unparseable_status_key_is_an_error_naming_it() {
        for (key, reason) in [
            ("status/20261119030000/acme/nested/all.json", "expected 2 segments"),
            ("status/20261119030000/acme.json", "expected 2 segments"),
            ("status/20261119030000/acme/all.txt", "does not end with .json"),
            ("status/20261119030000/acme/.json", "the feed id is empty"),
        ] {
            let staging = populated("status-key").await;
            staging.put(key, "{}").await;
            let error = run_status(&staging.store, run()).await.unwrap_err();
            assert!(matches!(error, StatusReportError::StatusKey { .. }), "{key}: {error:?}");
            let message = error.to_string();
            assert!(message.contains(key) && message.contains(reason), "{key}: {message}");
        }
    }

    #[tokio::test]
    async fn an_unparseable_job_key_is_an_error_naming_it() {
        let staging = populated("job-key").await;
        let key = "jobs/s3/20261119030000/Acme/all.json";
        staging.put(key, "{}").await;
        let error = run_status(&staging.store, run()).await.unwrap_err();
        assert!(matches!(error, StatusReportError::JobKey(_)), "{error:?}");
        assert!(error.to_string().contains(key), "{error}");
    }

    #[tokio::test]
    async fn two_jobs_for_one_feed_are_an_error_naming_both() {
        let staging = populated("duplicate").await;
        staging.job(JobKind::Email, run(), "globex", "all").await;
        let error = run_status(&staging.store, run()).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, StatusReportError::DuplicateJob { .. }), "{error:?}");
        for key in [job_key(JobKind::S3, run(), "globex", "all"), job_key(JobKind::Email, run(), "globex", "all")] {
            assert!(message.contains(&key), "{key} missing from {message}");
        }
    }
}
