//! The fault matrix's cell scheme (issue 13, item 4), shared by the matrices
//! of the deliverers and of fanout, rank and the sweeper: a cell fails an
//! AWS call kind's first, second or last request with a [`Fault`], once
//! (the SDK's retry absorbs it), for all of the SDK's attempts (the call
//! fails) or for good; [`cells_from`] derives the cells from the requests
//! of a fault-free baseline, [`run_matrix`] runs the baseline and then every
//! cell, and [`MatrixRun`] prints the outcome table and fails the test on
//! any broken invariant. It must not decide what a cell checks: each
//! function's invariants stay in its test file, and what a cell led to is
//! only carried here, in a [`CellResult`].

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use popularity_reports::sdk_config::SdkTimeouts;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::fault_proxy::{CallKind, Fault, FaultProxy, SeenRequest};

/// The SDK's standard retry mode (the functions' default): 3 attempts.
pub const SDK_ATTEMPTS: u64 = 3;
/// template.yaml: `MaximumRetryAttempts: 2` on the deliverers, rank and
/// fanout, so at most three invocations of one event (the sweeper has 0).
pub const LAMBDA_INVOCATIONS: usize = 3;
/// Cells run at once (each with its own proxy and staging bucket).
pub const CONCURRENT_CELLS: usize = 4;

/// How many of a kind's requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Burst {
    /// One request: the SDK's retry absorbs it.
    Once,
    /// Every attempt of one call: the call fails, and so the invocation.
    AllAttempts,
    /// Every request of the kind from the n-th on.
    Permanent,
}

impl Burst {
    pub fn times(self) -> u64 {
        match self {
            Burst::Once => 1,
            Burst::AllAttempts => SDK_ATTEMPTS,
            Burst::Permanent => u64::MAX,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Burst::Once => "once",
            Burst::AllAttempts => "x3",
            Burst::Permanent => "always",
        }
    }
}

/// One fault of a cell: requests `nth ..` of `kind` fail with `fault`.
#[derive(Debug, Clone)]
pub struct Injection {
    pub kind: CallKind,
    pub nth: u64,
    pub nth_label: String,
    pub fault: Fault,
    pub burst: Burst,
}

impl Injection {
    pub fn new(kind: CallKind, nth: u64, nth_label: impl Into<String>, fault: Fault, burst: Burst) -> Injection {
        Injection { kind, nth, nth_label: nth_label.into(), fault, burst }
    }

    pub fn describe(&self) -> String {
        format!("{} #{} {} {}", self.kind, self.nth_label, self.fault.short_name(), self.burst.label())
    }
}

/// A cell: one injection, or two (deliver-s3: a failed abort needs a
/// failed upload first).
#[derive(Debug, Clone)]
pub struct Cell {
    pub injections: Vec<Injection>,
}

impl Cell {
    pub fn describe(&self) -> String {
        self.injections.iter().map(Injection::describe).collect::<Vec<_>>().join(" + ")
    }

    /// The cell's description, or the baseline's when there is no cell.
    pub fn label(cell: Option<&Cell>) -> String {
        cell.map_or("baseline (no fault)".to_owned(), Cell::describe)
    }

    /// Whether one of the cell's faults never ends.
    pub fn permanent(&self) -> bool {
        self.injections.iter().any(|i| i.burst == Burst::Permanent)
    }

    /// The fault a failure must name: the one that never ends, if any, or
    /// else the last injection's (the one the others lead up to).
    pub fn decisive_fault(&self) -> Fault {
        let permanent = self.injections.iter().find(|i| i.burst == Burst::Permanent);
        permanent.or(self.injections.last()).expect("a cell has an injection").fault
    }

    /// Whether `text` names the cell's [`decisive_fault`](Cell::decisive_fault).
    pub fn is_named_in(&self, text: &str) -> bool {
        names_fault(text, self.decisive_fault())
    }

    /// Makes `proxy` fail the requests of every injection.
    pub fn arm(&self, proxy: &FaultProxy) {
        for injection in &self.injections {
            proxy.fail_requests(injection.kind.clone(), injection.nth, injection.burst.times(), injection.fault);
        }
    }
}

/// Whether `text` holds one of the words a failure caused by `fault` must
/// name.
pub fn names_fault(text: &str, fault: Fault) -> bool {
    let words: &[&str] = match fault {
        Fault::Reset => &["dispatch", "connection", "reset", "io error", "response error", "closed"],
        Fault::InternalError => &["InternalError", "InternalServiceError", "InternalFailure", "500"],
        Fault::Throttle => &["SlowDown", "Throttling", "503", "Rate exceeded"],
    };
    words.iter().any(|word| text.contains(word))
}

/// The cells of a matrix, from the requests of each kind in the baseline:
/// for each kind, its first, second and last request, each with each
/// fault, once and for all the SDK's attempts; and each kind's first
/// request with a 500 for good.
pub fn cells_from(counts: &BTreeMap<CallKind, u64>) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (kind, &count) in counts {
        let mut positions = vec![(1, "1".to_owned())];
        if count >= 3 {
            positions.push((2, "2".to_owned()));
        }
        if count >= 2 {
            positions.push((count, format!("last={count}")));
        }
        for (nth, nth_label) in positions {
            for fault in Fault::ALL {
                for burst in [Burst::Once, Burst::AllAttempts] {
                    let injection = Injection::new(kind.clone(), nth, nth_label.clone(), fault, burst);
                    cells.push(Cell { injections: vec![injection] });
                }
            }
        }
        let injection = Injection::new(kind.clone(), 1, "1", Fault::InternalError, Burst::Permanent);
        cells.push(Cell { injections: vec![injection] });
    }
    cells
}

/// The requests of each kind among `requests`.
pub fn counts_of(requests: &[SeenRequest]) -> BTreeMap<CallKind, u64> {
    let mut counts = BTreeMap::new();
    for seen in requests {
        *counts.entry(seen.kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// A function's SDK configuration (timeouts from `sdk_config.rs`, standard
/// retries with 3 attempts) aimed at `endpoint`; only the backoff between
/// attempts is shortened.
pub async fn function_config(endpoint: &str) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "fault-matrix"));
    SdkTimeouts::default()
        .apply(loader)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(SDK_ATTEMPTS as u32)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .load()
        .await
}

/// A fresh proxy in HTTP mode in front of moto at `endpoint`, armed with
/// `cell`'s faults (none for the baseline), and a function's SDK
/// configuration through it.
pub async fn faulted_proxy(endpoint: &str, cell: Option<&Cell>) -> (FaultProxy, SdkConfig) {
    let proxy = FaultProxy::start_http(endpoint);
    let config = function_config(&proxy.endpoint()).await;
    if let Some(cell) = cell {
        cell.arm(&proxy);
    }
    (proxy, config)
}

/// What Lambda's asynchronous invocation of one event came to.
pub struct Invocations<T> {
    /// Invocations made, at most `LAMBDA_INVOCATIONS`.
    pub made: usize,
    /// The response of the invocation that succeeded, if one did.
    pub response: Option<T>,
    /// The error of the last invocation that failed, even when a later one
    /// succeeded.
    pub last_error: Option<String>,
}

impl<T> Invocations<T> {
    /// The last error when every invocation failed; `None` once one succeeded.
    pub fn final_error(&self) -> Option<String> {
        if self.response.is_some() {
            None
        } else {
            self.last_error.clone()
        }
    }
}

/// Invokes as Lambda's asynchronous invocation would: again while it fails,
/// up to `LAMBDA_INVOCATIONS` times. `invoke` gets the invocation's number,
/// from 1.
pub async fn invoke_as_lambda<T, E, Fut>(mut invoke: impl FnMut(usize) -> Fut) -> Invocations<T>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut invocations = Invocations { made: 0, response: None, last_error: None };
    while invocations.made < LAMBDA_INVOCATIONS {
        invocations.made += 1;
        match invoke(invocations.made).await {
            Ok(response) => {
                invocations.response = Some(response);
                break;
            }
            Err(error) => invocations.last_error = Some(error.to_string()),
        }
    }
    invocations
}

/// One line of an error or status for the table.
pub fn shorten(text: &str) -> String {
    let one_line = text.replace(['\n', '|'], " ");
    if one_line.chars().count() > 110 {
        format!("{}…", one_line.chars().take(110).collect::<String>())
    } else {
        one_line
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a cell led to: a row of the table.
#[derive(Debug, Default)]
pub struct CellResult {
    pub cell: String,
    pub faults_fired: u64,
    /// Invocations, as the table shows them (`2`, `3 + 1 after`).
    pub invocations: String,
    pub outcome: String,
    /// The cause of the failure (recorded, or the last error), shortened.
    pub cause: Option<String>,
    pub problems: Vec<String>,
    /// Expected departures from the rule, said in the table.
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl CellResult {
    pub fn row(&self) -> String {
        let verdict = match (self.problems.is_empty(), self.notes.is_empty()) {
            (true, true) => "ok".to_owned(),
            (true, false) => format!("ok ({})", self.notes.join("; ")),
            (false, _) => format!("**{}**", self.problems.join("; ")),
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} |",
            self.cell,
            self.faults_fired,
            self.invocations,
            self.outcome,
            self.cause.as_deref().unwrap_or("—"),
            verdict,
            self.seconds
        )
    }
}

/// The headers of a table's outcome and cause columns.
pub struct OutcomeColumns {
    pub outcome: &'static str,
    pub cause: &'static str,
}

/// A whole matrix: the baseline's result first, then every cell's, in the
/// order of [`cells_from`]. `R` is a [`CellResult`], or a function's own
/// result holding one.
pub struct MatrixRun<R = CellResult> {
    pub results: Vec<R>,
    /// The baseline's requests of each kind.
    pub counts: BTreeMap<CallKind, u64>,
    pub elapsed: Duration,
}

impl<R: Borrow<CellResult>> MatrixRun<R> {
    /// Fails unless the baseline made a request of each of `kinds`.
    pub fn assert_baseline_made(&self, kinds: &[&str]) {
        let counts = &self.counts;
        for kind in kinds {
            assert!(counts.contains_key(&CallKind::new(*kind)), "the baseline made no {kind}: {counts:?}");
        }
    }

    pub fn table(&self, function: &str, columns: &OutcomeColumns) -> String {
        let kinds: Vec<String> = self.counts.iter().map(|(kind, count)| format!("{kind} ×{count}")).collect();
        let failed = self.results.iter().filter(|r| !(*r).borrow().problems.is_empty()).count();
        let mut text = format!(
            "{function}: {} cells in {:.0} s, {failed} with problems; baseline requests: {}\n\
             | cell (kind #n fault burst) | faults fired | invocations | {} | {} | invariants | s |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
            self.results.len() - 1,
            self.elapsed.as_secs_f64(),
            kinds.join(", "),
            columns.outcome,
            columns.cause,
        );
        for result in &self.results {
            text.push_str(&result.borrow().row());
            text.push('\n');
        }
        text
    }

    /// Prints the table and fails, showing the failing rows and the whole
    /// table, when any cell broke an invariant.
    pub fn print_and_assert_no_problems(&self, function: &str, columns: &OutcomeColumns) {
        let table = self.table(function, columns);
        eprintln!("{table}");
        let failing: Vec<String> =
            self.results.iter().map(Borrow::borrow).filter(|r| !r.problems.is_empty()).map(CellResult::row).collect();
        assert!(
            failing.is_empty(),
            "{} cells broke an invariant:\n{}\n\nwhole table:\n{table}",
            failing.len(),
            failing.join("\n")
        );
    }
}

/// Runs the baseline (`cell` = `None`, index 0), then every cell `cells`
/// derives from its request counts (index 1 on; usually [`cells_from`]),
/// `CONCURRENT_CELLS` at a time. `run_cell` returns the cell's result and
/// the requests of each kind it made.
pub async fn run_matrix<R, F, Fut>(cells: fn(&BTreeMap<CallKind, u64>) -> Vec<Cell>, run_cell: F) -> MatrixRun<R>
where
    R: Borrow<CellResult> + 'static,
    F: Fn(usize, Option<Cell>) -> Fut + Clone + 'static,
    Fut: Future<Output = (R, BTreeMap<CallKind, u64>)> + 'static,
{
    let started = Instant::now();
    let (baseline, counts) = run_cell(0, None).await;
    {
        let baseline: &CellResult = baseline.borrow();
        assert!(baseline.problems.is_empty() && baseline.faults_fired == 0, "the baseline failed: {}", baseline.row());
    }
    let cells = cells(&counts);
    // fanout's future is not `Send` (a closure over borrowed tenants), so
    // the cells run as local tasks of this thread; their I/O overlaps.
    let permits = Arc::new(Semaphore::new(CONCURRENT_CELLS));
    let local = tokio::task::LocalSet::new();
    let mut results = local
        .run_until(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (index, cell) in cells.into_iter().enumerate() {
                let (run_cell, permits) = (run_cell.clone(), permits.clone());
                tasks.spawn_local(async move {
                    let _permit = permits.acquire_owned().await.unwrap();
                    (index, run_cell(index + 1, Some(cell)).await.0)
                });
            }
            let mut results = Vec::new();
            while let Some(done) = tasks.join_next().await {
                results.push(done.expect("a cell panicked"));
            }
            results
        })
        .await;
    results.sort_by_key(|(index, _)| *index);
    let mut results: Vec<R> = results.into_iter().map(|(_, result)| result).collect();
    results.insert(0, baseline);
    MatrixRun { results, counts, elapsed: started.elapsed() }
}
