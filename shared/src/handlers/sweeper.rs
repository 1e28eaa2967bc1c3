//! The `sweeper` function (docs/design.md, "Delivery rules", failures that heal): on its schedule
//! it looks at every job of the runs of the last `SWEEP_DAYS` days and
//! re-drives, through [`crate::delivery::redrive`], each delivery whose
//! deliverer's own retries are over without a delivery — `failed`, claimed
//! by an attempt that expired without an outcome, or never started — up to
//! `MAX_REDRIVES` times each. It reads and writes only `jobs/` and
//! `status/` (and lists `manifests/` to find the runs); it never delivers
//! and never changes an outcome. Deliveries it leaves because they were
//! re-driven the most times allowed are counted in the `RedrivesExhausted`
//! metric and logged on every sweep, so an alarm can watch them. It also
//! re-drives the arrival events of those runs whose targets are due again
//! on the retry schedule ([`crate::notify::redrive`]), by re-writing
//! `notifications/…` objects; it never sends one itself.

use chrono::{DateTime, Duration, Utc};
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{error, info, instrument, warn};

use crate::delivery::redrive::{redrive_run, runs_since, RedriveDecision, RedriveError, RedriveFilter, RedrivePolicy};
use crate::metrics::emit_metrics;
use crate::notify::redrive::{redrive_events, EventRedriveError};
use crate::store::ObjectStore;

/// What the sweeper needs: the staging bucket, its settings and a clock.
pub struct SweeperDeps<S> {
    pub staging: S,
    /// Runs whose time is within this many days are swept.
    pub sweep_days: u32,
    pub max_redrives: u32,
    /// The clock; tests pin it.
    pub now: fn() -> DateTime<Utc>,
}

/// The function's result: counts of what one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepResponse {
    pub run_ids: Vec<String>,
    pub jobs: u64,
    pub redriven: u64,
    pub exhausted: u64,
    pub not_due: u64,
    /// Left alone because a deliverer changed the status meanwhile.
    pub raced: u64,
    pub final_outcomes: u64,
    pub damaged: u64,
    /// Arrival events looked at, and those re-driven to their notifier.
    pub events: u64,
    pub events_redriven: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    List(RedriveError),
    #[error(
        "{} jobs could not be looked at (the next sweep tries again; the others were swept): {}",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | ")
    )]
    Jobs(Vec<RedriveError>),
    #[error(
        "{} arrival events could not be looked at (the next sweep tries again; the others were swept): {}",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | ")
    )]
    Events(Vec<EventRedriveError>),
}

impl From<SweepError> for Diagnostic {
    fn from(error: SweepError) -> Self {
        Diagnostic { error_type: "SweepFailed".to_owned(), error_message: error.to_string() }
    }
}

/// One sweep. The event (the schedule's, or any JSON for a manual
/// invocation) carries nothing the sweep needs.
#[instrument(skip_all)]
pub async fn handle_sweep<S: ObjectStore>(deps: &SweeperDeps<S>) -> Result<SweepResponse, SweepError> {
    let now = (deps.now)();
    let since = now - Duration::days(i64::from(deps.sweep_days));
    let policy = RedrivePolicy::sweeper(deps.max_redrives);
    let runs = runs_since(&deps.staging, since).await.map_err(SweepError::List)?;
    let mut response = SweepResponse::default();
    let mut errors = Vec::new();
    let mut event_errors = Vec::new();
    for run in runs {
        let swept =
            redrive_run(&deps.staging, run, &RedriveFilter::default(), &policy, now).await.map_err(SweepError::List)?;
        response.run_ids.push(run.to_string());
        for report in &swept.reports {
            response.jobs += 1;
            let count = match report.decision {
                RedriveDecision::Redriven => &mut response.redriven,
                RedriveDecision::Exhausted => {
                    warn!(job_key = %report.job_key, redrives = report.redrives,
                        "left failed: re-driven MAX_REDRIVES times; fix the cause and run `popularity redeliver`");
                    &mut response.exhausted
                }
                RedriveDecision::NotDue => &mut response.not_due,
                RedriveDecision::Raced => &mut response.raced,
                RedriveDecision::Final => &mut response.final_outcomes,
                RedriveDecision::Damaged => &mut response.damaged,
            };
            *count += 1;
        }
        response.jobs += swept.errors.len() as u64;
        errors.extend(swept.errors);
        let events = redrive_events(&deps.staging, run, now).await;
        response.events += events.events;
        response.events_redriven += events.redriven;
        event_errors.extend(events.errors);
    }
    emit_metrics(
        "PopularityReports",
        &[("Function", "sweeper")],
        &[
            ("JobsSwept", response.jobs as f64),
            ("Redriven", response.redriven as f64),
            ("RedrivesExhausted", response.exhausted as f64),
            ("DamagedStatus", response.damaged as f64),
            ("SweepErrors", (errors.len() + event_errors.len()) as f64),
            ("EventsRedriven", response.events_redriven as f64),
        ],
    );
    info!(
        runs = response.run_ids.len(),
        jobs = response.jobs,
        redriven = response.redriven,
        exhausted = response.exhausted,
        raced = response.raced,
        events_redriven = response.events_redriven,
        "sweep done"
    );
    if !errors.is_empty() {
        error!(errors = errors.len(), "some jobs could not be swept");
        Err(SweepError::Jobs(errors))
    } else if !event_errors.is_empty() {
        error!(errors = event_errors.len(), "some arrival events could not be swept");
        Err(SweepError::Events(event_errors))
    } else {
        Ok(response)
    }
}
