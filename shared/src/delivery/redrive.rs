//! Failures that heal (docs/design.md, "Delivery rules"): a delivery whose deliverer's own retries
//! are over — `failed`, or claimed by an attempt that was killed before it
//! recorded an outcome, or never started at all (its event was lost or
//! expired in Lambda's queue) — is re-driven by re-writing its job object
//! with the very bytes it holds, which fires the same S3 route to the same
//! deliverer. Each re-drive is first counted in the status object
//! (`redrives`, `lastRedriveAt`) by a conditional write, as a claim is, so a
//! sweeper racing a deliverer never overwrites what the deliverer wrote:
//! when the status changed since it was read, the job is left alone. The
//! scheduled sweeper and `popularity redeliver` both call [`redrive_run`].
//! This module never delivers, never changes an outcome and never touches a
//! `delivered`, `invalid` or `skipped` delivery. A delivery left failed
//! because its re-drives are over gets its `delivery.abandoned` event
//! (created once; a failure to create it is logged, not an error).

use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tracing::{info, warn};

use crate::connector_registry::JobKind;
use crate::delivery::arrival_event::{new_event_id, ArrivalEvent};
use crate::delivery::keys::{parse_job_key, JobKeyParts, JOBS_PREFIX};
use crate::delivery::staging::DeliveryStaging;
use crate::delivery::status::{DeliveryOutcome, DeliveryStatus};
use crate::domain::RunId;
use crate::store::{ObjectStore, StoreError};

/// Jobs looked at concurrently: one or two small requests each.
const JOBS_IN_FLIGHT: usize = 16;

/// How long after a delivery's last change the sweeper waits before it
/// re-drives it: the deliverer's own asynchronous retries (two, about one
/// and two minutes after a failure, each up to the 900 s timeout) are over
/// 33 minutes after a failure; 45 leaves a margin.
pub const SWEEP_SETTLE_MINUTES: i64 = 45;

/// How old a job without any status must be before it counts as never
/// started: an event may wait in Lambda's asynchronous queue up to
/// `MaximumEventAgeInSeconds` (6 hours) when a deliverer's concurrency is
/// capped, and then take the retry window above.
pub const NEVER_STARTED_AFTER_HOURS: i64 = 7;

/// When a delivery is due for a re-drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedrivePolicy {
    /// A `failed` delivery, or one whose claim expired, is re-driven once
    /// nothing happened to it (attempt, claim expiry, re-drive) for this long.
    pub settle: Duration,
    /// A job without a status is re-driven once it is this old.
    pub never_started_after: Duration,
    /// Re-drives after which a delivery is left as it is; `None`: no bound
    /// (an operator's `popularity redeliver`).
    pub max_redrives: Option<u32>,
}

impl RedrivePolicy {
    /// The scheduled sweeper's: waits out the deliverer's own retries.
    pub fn sweeper(max_redrives: u32) -> RedrivePolicy {
        RedrivePolicy {
            settle: Duration::minutes(SWEEP_SETTLE_MINUTES),
            never_started_after: Duration::hours(NEVER_STARTED_AFTER_HOURS),
            max_redrives: Some(max_redrives),
        }
    }

    /// An operator's, who has fixed the cause: re-drives a failed delivery
    /// at once and regardless of the bound (still never over a live claim).
    pub fn operator() -> RedrivePolicy {
        RedrivePolicy {
            settle: Duration::zero(),
            never_started_after: Duration::hours(NEVER_STARTED_AFTER_HOURS),
            max_redrives: None,
        }
    }
}

/// Which deliveries of a run to look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveFilter {
    pub tenant_id: Option<String>,
    pub feed_id: Option<String>,
}

impl RedriveFilter {
    fn admits(&self, parts: &JobKeyParts) -> bool {
        self.tenant_id.as_ref().is_none_or(|t| *t == parts.tenant_id)
            && self.feed_id.as_ref().is_none_or(|f| *f == parts.feed_id)
    }
}

/// What became of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedriveDecision {
    /// Counted in its status and its job object re-written: its deliverer runs again.
    Redriven,
    /// `delivered`, `invalid` or `skipped`: never re-driven.
    Final,
    /// Not yet: a live claim, the deliverer's own retries may still be
    /// under way, or the job is too young to count as never started.
    NotDue,
    /// Re-driven the most times allowed: left as it is.
    Exhausted,
    /// The status changed between reading and writing it (a deliverer or
    /// another sweeper got there first): nothing was written.
    Raced,
    /// The status object is not a status of this job: left for the next
    /// attempt, which replaces it.
    Damaged,
}

impl RedriveDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            RedriveDecision::Redriven => "re-driven",
            RedriveDecision::Final => "final",
            RedriveDecision::NotDue => "not due",
            RedriveDecision::Exhausted => "re-drives exhausted",
            RedriveDecision::Raced => "changed meanwhile",
            RedriveDecision::Damaged => "damaged status",
        }
    }
}

/// One job looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveReport {
    pub job_key: String,
    pub status_key: String,
    pub tenant_id: String,
    pub feed_id: String,
    pub kind: JobKind,
    /// The outcome the status held when read; `None` without a status.
    pub outcome: Option<DeliveryOutcome>,
    pub decision: RedriveDecision,
    /// Re-drives counted in the status after this decision.
    pub redrives: u32,
}

/// Why a job, or a whole run, could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("could not list {location} (runs and jobs to re-drive): {source}")]
    List {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("could not read the status {status_key} of {job_key}, so it was not re-driven: {source}")]
    ReadStatus {
        job_key: String,
        status_key: String,
        #[source]
        source: StoreError,
    },
    #[error("could not record the re-drive of {job_key} in {status_key}: {source}")]
    RecordRedrive {
        job_key: String,
        status_key: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "counted a re-drive of {job_key} but could not re-write the job object, so no deliverer was started (the \
         next sweep tries again): {source}"
    )]
    RewriteJob {
        job_key: String,
        #[source]
        source: StoreError,
    },
}

/// Every job of one run looked at: what became of each, and the jobs that
/// could not be looked at.
#[derive(Debug, Default)]
pub struct RunRedrive {
    pub reports: Vec<RedriveReport>,
    pub errors: Vec<RedriveError>,
}

/// Runs whose manifest is published and whose time is at or after `since`,
/// oldest first.
pub async fn runs_since<S: ObjectStore>(staging: &S, since: DateTime<Utc>) -> Result<Vec<RunId>, RedriveError> {
    let prefix = crate::manifest::MANIFESTS_PREFIX;
    let listed = staging
        .list(prefix)
        .await
        .map_err(|source| RedriveError::List { location: staging.describe(prefix), source })?;
    let mut runs: Vec<RunId> = listed
        .iter()
        .filter_map(|entry| entry.key.strip_prefix(prefix)?.strip_suffix(".json")?.parse().ok())
        .filter(|run: &RunId| run.time() >= since)
        .collect();
    runs.sort_unstable();
    Ok(runs)
}

/// Looks at every job of `run` that `filter` admits and re-drives those
/// `policy` finds due. Listing failures fail the run; a job that cannot be
/// looked at is an error of its own and does not stop the others.
pub async fn redrive_run<S: ObjectStore>(
    staging: &S,
    run: RunId,
    filter: &RedriveFilter,
    policy: &RedrivePolicy,
    now: DateTime<Utc>,
) -> Result<RunRedrive, RedriveError> {
    let mut jobs = Vec::new();
    for kind in JobKind::ALL {
        let prefix = match &filter.tenant_id {
            Some(tenant) => format!("{JOBS_PREFIX}{kind}/{run}/{tenant}/"),
            None => format!("{JOBS_PREFIX}{kind}/{run}/"),
        };
        let listed = staging
            .list(&prefix)
            .await
            .map_err(|source| RedriveError::List { location: staging.describe(&prefix), source })?;
        for entry in listed {
            match parse_job_key(&entry.key) {
                Ok(parts) if filter.admits(&parts) => jobs.push(parts),
                Ok(_) => {}
                Err(error) => warn!(%error, "not a job key; left alone"),
            }
        }
    }
    let outcomes: Vec<Result<RedriveReport, RedriveError>> = stream::iter(jobs)
        .map(|parts| async move { redrive_job(staging, parts, policy, now).await })
        .buffered(JOBS_IN_FLIGHT)
        .collect()
        .await;
    let mut result = RunRedrive::default();
    for outcome in outcomes {
        match outcome {
            Ok(report) => result.reports.push(report),
            Err(error) => result.errors.push(error),
        }
    }
    Ok(result)
}

/// Why a delivery is due, for the status of a job that never started.
fn never_started_reason(created_at: DateTime<Utc>) -> String {
    format!(
        "no deliverer started this job within {NEVER_STARTED_AFTER_HOURS} hours of its creation at {} (its S3 event \
         was lost, or expired in Lambda's queue); re-driven",
        created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The latest thing that happened to a delivery that is not final: its last
/// attempt or claim expiry, and its last re-drive.
fn last_activity(status: &DeliveryStatus) -> DateTime<Utc> {
    let claim_end = status.claim.as_ref().map_or(status.updated_at, |claim| claim.expires_at);
    let activity = status.updated_at.max(claim_end);
    status.last_redrive_at.map_or(activity, |at| activity.max(at))
}

pub async fn redrive_job<S: ObjectStore>(
    store: &S,
    parts: JobKeyParts,
    policy: &RedrivePolicy,
    now: DateTime<Utc>,
) -> Result<RedriveReport, RedriveError> {
    let staging = DeliveryStaging::new(store);
    let job_key = parts.job_key();
    let status_key = parts.status_key();
    let current = staging.read_status(parts.run_id, &parts.tenant_id, &parts.feed_id).await.map_err(|source| {
        RedriveError::ReadStatus { job_key: job_key.clone(), status_key: status_key.clone(), source }
    })?;
    let report = |outcome, decision, redrives| RedriveReport {
        job_key: job_key.clone(),
        status_key: status_key.clone(),
        tenant_id: parts.tenant_id.clone(),
        feed_id: parts.feed_id.clone(),
        kind: parts.kind,
        outcome,
        decision,
        redrives,
    };
    let (outcome, next) = match current.as_ref().map(|record| &record.status) {
        Some(Err(reason)) => {
            warn!(%job_key, %reason, "the status object is damaged; not re-driven");
            return Ok(report(None, RedriveDecision::Damaged, 0));
        }
        Some(Ok(status)) => {
            let outcome = Some(status.outcome);
            match status.outcome {
                DeliveryOutcome::Delivered | DeliveryOutcome::Invalid | DeliveryOutcome::Skipped => {
                    return Ok(report(outcome, RedriveDecision::Final, status.redrives))
                }
                DeliveryOutcome::InProgress if status.live_claim(now).is_some() => {
                    return Ok(report(outcome, RedriveDecision::NotDue, status.redrives))
                }
                DeliveryOutcome::InProgress | DeliveryOutcome::Failed => {}
            }
            if now - last_activity(status) < policy.settle {
                return Ok(report(outcome, RedriveDecision::NotDue, status.redrives));
            }
            if policy.max_redrives.is_some_and(|max| status.redrives >= max) {
                warn!(%job_key, redrives = status.redrives, outcome = status.outcome.as_str(),
                    "re-driven the most times allowed (MAX_REDRIVES); left as it is");
                let abandoned = ArrivalEvent::abandoned(status, new_event_id(now), now);
                if let Err(error) = staging.create_event(&abandoned).await {
                    warn!(%job_key, %error, "could not create the delivery.abandoned event; the next sweep tries again");
                }
                return Ok(report(outcome, RedriveDecision::Exhausted, status.redrives));
            }
            let mut next = status.clone();
            next.count_redrive(now);
            (outcome, next)
        }
        None => {
            let created_at = match staging.read_job(&parts).await {
                Ok(job) => job.created_at,
                // The deliverer will say what is wrong with it; its run's time bounds its age.
                Err(_) => parts.run_id.time(),
            };
            if now - created_at < policy.never_started_after {
                return Ok(report(None, RedriveDecision::NotDue, 0));
            }
            if policy.max_redrives == Some(0) {
                return Ok(report(None, RedriveDecision::Exhausted, 0));
            }
            let mut next = DeliveryStatus::never_started(&parts, never_started_reason(created_at), now);
            next.count_redrive(now);
            (None, next)
        }
    };
    let written = staging.record_redrive(&parts, current.as_ref(), &next).await.map_err(|source| {
        RedriveError::RecordRedrive { job_key: job_key.clone(), status_key: status_key.clone(), source }
    })?;
    if !written {
        info!(%job_key, "the status changed since it was read (a deliverer or another sweeper); not re-driven");
        return Ok(report(outcome, RedriveDecision::Raced, next.redrives - 1));
    }
    staging
        .rewrite_job(&parts)
        .await
        .map_err(|source| RedriveError::RewriteJob { job_key: job_key.clone(), source })?;
    info!(%job_key, redrives = next.redrives, "re-driven: the job object was re-written");
    Ok(report(outcome, RedriveDecision::Redriven, next.redrives))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::delivery::job::tests::{at, job_for, run};
    use crate::delivery::status::AttemptResult;
    use crate::store::{LocalDirStore, ObjectSink};

    async fn with_job(store: &LocalDirStore, feed: &str) -> JobKeyParts {
        let job = job_for(feed);
        DeliveryStaging::new(store).create_job(&job).await.unwrap();
        job.key_parts()
    }

    async fn put_status(store: &LocalDirStore, status: &DeliveryStatus) {
        let key = crate::delivery::keys::status_key(status.run_id, &status.tenant_id, &status.feed_id);
        store.put(&key, Bytes::from(serde_json::to_vec(status).unwrap()), "application/json").await.unwrap();
    }

    fn failed(parts: &JobKeyParts, finished: &str) -> DeliveryStatus {
        DeliveryStatus::first_record(
            parts.run_id,
            &parts.tenant_id,
            &parts.feed_id,
            at(finished),
            at(finished),
            AttemptResult::Failed("NoSuchBucket".into()),
        )
    }

    #[tokio::test]
    async fn a_failed_delivery_waits_out_the_retries_then_is_counted_and_bounded() {
        let (_dir, store) = LocalDirStore::in_temp_dir("redrive-failed");
        let parts = with_job(&store, "role").await;
        put_status(&store, &failed(&parts, "2026-11-19T03:21:00Z")).await;
        let policy = RedrivePolicy::sweeper(2);
        let sweep = |now: &str| {
            let now = at(now);
            let store = &store;
            async move { redrive_run(store, run(), &RedriveFilter::default(), &policy, now).await.unwrap() }
        };
        let early = sweep("2026-11-19T03:40:00Z").await;
        assert_eq!(early.reports[0].decision, RedriveDecision::NotDue, "retries may still be under way");
        let first = sweep("2026-11-19T04:10:00Z").await;
        assert_eq!((first.reports[0].decision, first.reports[0].redrives), (RedriveDecision::Redriven, 1));
        let again = sweep("2026-11-19T04:30:00Z").await;
        assert_eq!(again.reports[0].decision, RedriveDecision::NotDue, "waits after a re-drive too");
        assert_eq!(sweep("2026-11-19T05:10:00Z").await.reports[0].redrives, 2);
        let abandoned_key = format!("notifications/{}/acme/role/delivery.abandoned.json", run());
        assert!(store.get(&abandoned_key).await.is_err(), "not abandoned while re-drives remain");
        let last = sweep("2026-11-19T06:10:00Z").await;
        assert_eq!((last.reports[0].decision, last.reports[0].redrives), (RedriveDecision::Exhausted, 2));
        let abandoned: serde_json::Value = serde_json::from_slice(&store.get(&abandoned_key).await.unwrap()).unwrap();
        assert_eq!(
            (abandoned["type"].as_str(), abandoned["retryable"].as_bool()),
            (Some("delivery.abandoned"), Some(false))
        );
        assert_eq!(abandoned["cause"], "NoSuchBucket");
        sweep("2026-11-19T07:10:00Z").await;
        let again: serde_json::Value = serde_json::from_slice(&store.get(&abandoned_key).await.unwrap()).unwrap();
        assert_eq!(again, abandoned, "created once");
        let stored = DeliveryStaging::new(&store).read_status(run(), "acme", "role").await.unwrap().unwrap();
        let stored = stored.valid().unwrap();
        assert_eq!((stored.outcome, stored.redrives), (DeliveryOutcome::Failed, 2));
        assert_eq!(stored.last_redrive_at, Some(at("2026-11-19T05:10:00Z")));
        // The operator is not bound, and need not wait.
        let operator = RedrivePolicy::operator();
        let all = RedriveFilter::default();
        let forced = redrive_run(&store, run(), &all, &operator, at("2026-11-19T05:11:00Z")).await.unwrap();
        assert_eq!(forced.reports[0].decision, RedriveDecision::Redriven);
    }

    #[tokio::test]
    async fn a_job_no_deliverer_started_gets_a_failed_status_once_old_enough() {
        let (_dir, store) = LocalDirStore::in_temp_dir("redrive-pending");
        with_job(&store, "mail").await;
        let policy = RedrivePolicy::sweeper(24);
        let filter = RedriveFilter { tenant_id: Some("acme".into()), feed_id: Some("mail".into()) };
        let young = redrive_run(&store, run(), &filter, &policy, at("2026-11-19T09:00:00Z")).await.unwrap();
        assert_eq!(young.reports[0].decision, RedriveDecision::NotDue);
        let old = redrive_run(&store, run(), &filter, &policy, at("2026-11-19T10:21:00Z")).await.unwrap();
        assert_eq!((old.reports[0].outcome, old.reports[0].decision), (None, RedriveDecision::Redriven));
        let stored = DeliveryStaging::new(&store).read_status(run(), "acme", "mail").await.unwrap().unwrap();
        let stored = stored.valid().unwrap().clone();
        assert_eq!((stored.outcome, stored.redrives, stored.attempts.len()), (DeliveryOutcome::Failed, 1, 0));
        assert!(stored.last_error.unwrap().contains("no deliverer started this job within 7 hours"));
        let other = RedriveFilter { tenant_id: Some("acme".into()), feed_id: Some("keys".into()) };
        assert!(redrive_run(&store, run(), &other, &policy, at("2026-11-19T10:21:00Z"))
            .await
            .unwrap()
            .reports
            .is_empty());
    }

    #[test]
    fn redrive_fields_are_additive_and_absent_until_counted() {
        let parts = job_for("role").key_parts();
        let mut status = failed(&parts, "2026-11-19T03:21:00Z");
        let value = serde_json::to_value(&status).unwrap();
        assert!(value.get("redrives").is_none() && value.get("lastRedriveAt").is_none(), "{value}");
        status.count_redrive(at("2026-11-19T04:10:00Z"));
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            (value["redrives"].clone(), value["lastRedriveAt"].clone()),
            (1.into(), "2026-11-19T04:10:00Z".into())
        );
        let back: DeliveryStatus = serde_json::from_value(value).unwrap();
        assert_eq!(back, status);
    }
}
