//! One delivery attempt at one job, the same for every connector
//! (docs/design.md, "Delivery rules"): read the status — `delivered` ends it,
//! a live claim of another attempt ends it too, both without writing anything
//! — then claim the job with a conditional write, re-read the job, the run
//! manifest and the tenant secret (jobs hold no credentials), let the
//! connector's [`Deliverer`] deliver — recording, over the claim, each part
//! it delivers and skipping those an earlier attempt recorded
//! ([`crate::delivery::resume`]) — and record the outcome over the claim. A
//! transient failure returns an error so the asynchronous invocation is
//! retried; a permanent one is recorded as `invalid` and returns normally.
//! Once the outcome is recorded, the arrival event it calls for
//! ([`crate::delivery::arrival_event`]) is created in staging; that write
//! never blocks or fails the delivery: a failure to write it is logged.

use std::hash::{BuildHasher, Hasher};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tracing::{error, info, instrument, warn};

use crate::delivery::arrival_event::{new_event_id, ArrivalEvent, EventDestination};
use crate::delivery::deliverer::{cross_tenant_refusal, load_connector, DeliverDeps, Deliverer};
use crate::delivery::error::DeliveryError;
use crate::delivery::job::DeliveryPlan;
use crate::delivery::keys::JobKeyParts;
use crate::delivery::resume::{PartLedger, StatusLedger};
use crate::delivery::staging::{DeliveryStaging, Recorded};
use crate::delivery::status::{AttemptResult, Blame, DeliveredObject, DeliveryOutcome, DeliveryStatus};
use crate::store::{ObjectStore, StoreError};
use crate::tenant::directory::TenantDirectory;

/// How long a claim lasts when the invocation's deadline is not known (the
/// CLI): the deliverer functions' timeout.
pub const DEFAULT_CLAIM_SECONDS: i64 = 900;
/// A claim outlives the invocation's deadline by this much, for the clock
/// difference between Lambda and S3.
pub const CLAIM_MARGIN_SECONDS: i64 = 30;

/// What became of one job in one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobDisposition {
    /// This invocation attempted it, with this outcome.
    Attempted(DeliveryOutcome),
    /// Its status already said `delivered`: nothing was done.
    AlreadyDelivered,
    /// Another attempt holds a live claim (or won the race to claim it):
    /// nothing was written; that attempt records the outcome.
    ClaimedElsewhere,
    /// This attempt outlived its claim and another took it over: its outcome
    /// was not recorded (the other attempt's stands).
    ClaimLost,
}

impl JobDisposition {
    pub fn describe(self) -> &'static str {
        match self {
            JobDisposition::Attempted(outcome) => outcome.as_str(),
            JobDisposition::AlreadyDelivered => "already delivered",
            JobDisposition::ClaimedElsewhere => "claimed by another attempt",
            JobDisposition::ClaimLost => "claim lost to another attempt",
        }
    }
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    pub job_key: String,
    pub status_key: String,
    pub disposition: JobDisposition,
    pub objects: usize,
    pub bytes: u64,
}

/// A job whose invocation must fail (and so be retried).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("delivery of {job_key} failed (recorded in {status_key}): {reason}")]
    Failed { job_key: String, status_key: String, reason: String },
    #[error(
        "could not read the status {status_key} of {job_key}, so nothing was attempted (the invocation will be \
         retried): {source}"
    )]
    ReadStatus { job_key: String, status_key: String, source: StoreError },
    #[error("could not claim {job_key} in {status_key}, so nothing was attempted: {source}")]
    Claim { job_key: String, status_key: String, source: StoreError },
    #[error("could not record the outcome of {job_key} in {status_key}: {source}")]
    RecordStatus { job_key: String, status_key: String, source: StoreError },
    /// The delivery is done and recorded, but its arrival event could not be
    /// created: the invocation fails so that Lambda retries it, and the
    /// retry (which finds the job delivered) creates the event.
    #[error(
        "{job_key} is delivered (recorded in {status_key}) but its arrival event {event_key} could not be created; \
         the invocation is retried to create it: {source}"
    )]
    CreateEvent { job_key: String, status_key: String, event_key: String, source: StoreError },
}

/// A token no other attempt has: the clock, the process and a random value
/// from the standard library's per-process hasher keys.
fn claim_token(now: DateTime<Utc>) -> String {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{}-{}-{random:016x}", now.timestamp_micros(), std::process::id())
}

/// When a claim made now by an invocation that must end by `deadline` expires.
pub fn claim_expiry(now: DateTime<Utc>, deadline: Option<DateTime<Utc>>) -> DateTime<Utc> {
    deadline.unwrap_or(now + Duration::seconds(DEFAULT_CLAIM_SECONDS)) + Duration::seconds(CLAIM_MARGIN_SECONDS)
}

/// How often the outcome of an attempt is written before the attempt gives
/// up on recording it, and the wait before the first retry (doubled each
/// time): 4 writes, each with the SDK's own retries, over about 7 s.
const RECORD_WRITES: u32 = 4;
const RECORD_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Records the outcome over the claim, trying again when the write fails.
/// An outcome not recorded leaves the claim in place: Lambda's retries then
/// find it live and do nothing, and once it expires the sweeper re-drives a
/// job that was in fact delivered — an email sent twice (the fault matrix,
/// issue 13 item 4: `s3:PutObject` of the status failing for all of the
/// SDK's attempts). So the write gets more patience than one SDK call.
/// A write that was stored but whose answer was lost is recognised by the
/// next one (`DeliveryStaging::record` reads the status back when its
/// condition fails), so it is not mistaken for a lost claim.
async fn record_outcome<S: ObjectStore>(
    staging: &DeliveryStaging<'_, S>,
    job_key: &str,
    claimed: crate::delivery::staging::ClaimedJob,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    result: AttemptResult,
) -> Result<Recorded, StoreError> {
    let mut wait = RECORD_RETRY_WAIT;
    let mut write = 1;
    loop {
        match staging.record(claimed.clone(), started_at, finished_at, result.clone()).await {
            Err(error) if write < RECORD_WRITES => {
                warn!(%job_key, %error, write, "could not record the outcome; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                write += 1;
            }
            recorded => return recorded,
        }
    }
}

/// Delivers the job at `parts` unless it is delivered or claimed by a live
/// attempt. `deadline` is when this invocation is killed, if known.
#[instrument(skip_all, fields(run_id = %parts.run_id, tenant = %parts.tenant_id, feed = %parts.feed_id))]
pub async fn deliver_job<S, T, D>(
    deps: &DeliverDeps<S, T, D>,
    parts: &JobKeyParts,
    deadline: Option<DateTime<Utc>>,
) -> Result<JobReport, JobError>
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let staging = DeliveryStaging::new(&deps.staging);
    let job_key = parts.job_key();
    let status_key = parts.status_key();
    let report = |disposition, objects, bytes| JobReport {
        job_key: job_key.clone(),
        status_key: status_key.clone(),
        disposition,
        objects,
        bytes,
    };
    let current = match staging.read_status(parts.run_id, &parts.tenant_id, &parts.feed_id).await {
        Ok(current) => current,
        Err(source) => {
            error!(%job_key, error = %source, "could not read the delivery status; not attempting");
            return Err(JobError::ReadStatus { job_key, status_key, source });
        }
    };
    let now = (deps.now)();
    if let Some(record) = &current {
        match &record.status {
            Ok(status) if status.is_delivered() => {
                info!(%job_key, "already delivered; nothing to do but make sure its arrival event exists");
                // A retry after the event could not be created: create it
                // now (a conditional create: nothing if it exists). The job
                // is not read again, so this event names no destination.
                if let Err((event_key, source)) = create_arrival_event(&staging, status, None, now).await {
                    return Err(JobError::CreateEvent { job_key, status_key, event_key, source });
                }
                return Ok(report(JobDisposition::AlreadyDelivered, status.objects.len(), status.total_bytes()));
            }
            Ok(status) => {
                if let Some(claim) = status.live_claim(now) {
                    info!(%job_key, attempt = claim.attempt, expires_at = %claim.expires_at, "another attempt holds the job; nothing to do");
                    return Ok(report(JobDisposition::ClaimedElsewhere, 0, 0));
                }
                if let Some(claim) = &status.claim {
                    warn!(%job_key, attempt = claim.attempt, expired_at = %claim.expires_at, "taking over the claim of an attempt that ended without an outcome");
                }
            }
            Err(reason) => warn!(%job_key, %reason, "the status object is damaged; it is replaced by this attempt's"),
        }
    }
    let claimed = match staging.claim(parts, current.as_ref(), claim_token(now), now, claim_expiry(now, deadline)).await
    {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            info!(%job_key, "another attempt claimed the job first; nothing to do");
            return Ok(report(JobDisposition::ClaimedElsewhere, 0, 0));
        }
        Err(source) => return Err(JobError::Claim { job_key, status_key, source }),
    };

    let started_at = now;
    let ledger = StatusLedger::new(staging, claimed);
    let AttemptSummary { result, plan, blame, destination } = attempt(deps, parts, &ledger).await;
    let mut claimed = ledger.into_claimed();
    if plan.is_some() {
        claimed.status.plan = plan;
    }
    if blame.is_some() {
        claimed.status.blame = blame;
    }
    let finished_at = (deps.now)();
    let failure = match &result {
        AttemptResult::Failed(reason) => Some(reason.clone()),
        _ => None,
    };
    let status = match record_outcome(&staging, &job_key, claimed, started_at, finished_at, result).await {
        Ok(Recorded::Written(status)) => status,
        Ok(Recorded::ClaimLost) => {
            warn!(%job_key, "this attempt outlived its claim and another took it over; its outcome is not recorded");
            return Ok(report(JobDisposition::ClaimLost, 0, 0));
        }
        Err(source) => {
            error!(%job_key, error = %source, "could not record the delivery status");
            return Err(JobError::RecordStatus { job_key, status_key, source });
        }
    };
    let done = report(JobDisposition::Attempted(status.outcome), status.objects.len(), status.total_bytes());
    let event = create_arrival_event(&staging, &status, destination, finished_at).await;
    match (failure, event) {
        (None, Err((event_key, source))) if status.is_delivered() => {
            Err(JobError::CreateEvent { job_key, status_key, event_key, source })
        }
        (failure, _) => job_result(job_key, status_key, failure, status, done),
    }
}

/// What an attempt whose outcome and event are recorded returns.
fn job_result(
    job_key: String,
    status_key: String,
    failure: Option<String>,
    status: DeliveryStatus,
    done: JobReport,
) -> Result<JobReport, JobError> {
    match failure {
        Some(reason) => {
            warn!(%job_key, attempt = status.attempts.len(), %reason, "delivery failed; the invocation will be retried");
            Err(JobError::Failed { job_key, status_key, reason })
        }
        None => {
            info!(%job_key, outcome = status.outcome.as_str(), objects = done.objects, bytes = done.bytes, "job done");
            Ok(done)
        }
    }
}

/// Creates the event a recorded outcome calls for (docs/design.md,
/// "Events"). Never undoes the delivery: the data is delivered (or its
/// failure recorded) whatever becomes of its notice. A write that fails is
/// logged and returned (the event's key and the error), so that a delivered
/// job's invocation fails and its retry creates the event: at least once.
async fn create_arrival_event<S: ObjectStore>(
    staging: &DeliveryStaging<'_, S>,
    status: &DeliveryStatus,
    destination: Option<EventDestination>,
    now: DateTime<Utc>,
) -> Result<(), (String, StoreError)> {
    let Some(event) = ArrivalEvent::for_status(status, destination, new_event_id(now)) else { return Ok(()) };
    let key = event.key_parts().event_key();
    match staging.create_event(&event).await {
        Ok(crate::store::PutOutcome::Created) => info!(event_key = %key, event_id = %event.id, "arrival event created"),
        Ok(crate::store::PutOutcome::AlreadyExists) => info!(event_key = %key, "arrival event already created"),
        Err(error) => {
            error!(event_key = %key, %error, "could not create the arrival event; the delivery stands");
            return Err((key, error));
        }
    }
    Ok(())
}

/// A delivery's result as the status records it, and whose move it is when it failed.
fn attempt_outcome(result: Result<Vec<DeliveredObject>, DeliveryError>) -> (AttemptResult, Option<Blame>) {
    match result {
        Ok(objects) => (AttemptResult::Delivered(objects), None),
        Err(error) if error.is_permanent() => {
            warn!(error = %error, "this job can never be delivered as it is");
            (AttemptResult::Invalid(error.to_string()), Some(error.blame()))
        }
        Err(error) => (AttemptResult::Failed(error.to_string()), Some(error.blame())),
    }
}

/// What one attempt came to.
struct AttemptSummary {
    result: AttemptResult,
    /// What the job delivers, once it could be read.
    plan: Option<DeliveryPlan>,
    /// Whose move it is, when it failed.
    blame: Option<Blame>,
    /// The job's connector, once the job could be read.
    destination: Option<EventDestination>,
}

/// One attempt: everything that can go wrong becomes an [`AttemptResult`].
async fn attempt<S, T, D, L>(deps: &DeliverDeps<S, T, D>, parts: &JobKeyParts, ledger: &L) -> AttemptSummary
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
    L: PartLedger,
{
    let staging = DeliveryStaging::new(&deps.staging);
    let summary = |result: Result<Vec<DeliveredObject>, DeliveryError>, plan, destination| {
        let (result, blame) = attempt_outcome(result);
        AttemptSummary { result, plan, blame, destination }
    };
    let job = match staging.read_job(parts).await {
        Ok(job) => job,
        Err(error) => return summary(Err(error), None, None),
    };
    let plan = Some(job.plan.clone());
    let destination = Some(EventDestination {
        connector: job.connector.clone(),
        connector_type: job.connector_type.clone(),
        target: job.plan.target.clone(),
    });
    if let Err(reason) = job.plan.base() {
        let location = staging.describe(&parts.job_key());
        return summary(Err(DeliveryError::InvalidJob { location, reason: reason.to_string() }), plan, destination);
    }
    let manifest = match staging.read_manifest(job.run_id).await {
        Ok(manifest) => manifest,
        Err(error) => return summary(Err(error.into()), plan, destination),
    };
    let (tenant, connector) =
        match load_connector(&deps.tenants, &job.tenant_id, &job.connector, Some(&job.connector_type), None).await {
            Ok(found) => found,
            Err(Ok(reason)) => {
                return AttemptSummary { result: AttemptResult::Skipped(reason), plan, blame: None, destination }
            }
            Err(Err(error)) => return summary(Err(error), plan, destination),
        };
    match cross_tenant_refusal(&deps.tenants, &deps.staging, &tenant, &job.feed_id).await {
        Ok(None) => {}
        Ok(Some(reason)) => return summary(Err(DeliveryError::InvalidTenant(reason)), plan, destination),
        Err(error) => return summary(Err(error), plan, destination),
    }
    summary(deps.deliverer.deliver(&job, &tenant, &connector, &manifest, ledger).await, plan, destination)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_lambda_events::s3::S3Event;
    use bytes::Bytes;
    use lambda_runtime::Diagnostic;
    use tempfile::TempDir;

    use super::*;
    use crate::connector_registry::JobKind;
    use crate::delivery::connection_probe::{ConnectionTestReport, ConnectionTestRequest};
    use crate::delivery::job::DeliveryJob;
    use crate::delivery::keys::status_key;
    use crate::delivery::status::DeliveryStatus;
    use crate::domain::RunId;
    use crate::handlers::deliver::{handle_deliverer_event, DeliverError};
    use crate::manifest::run_manifest_key;
    use crate::manifest::RunManifest;
    use crate::store::{LocalDirStore, ObjectSink};
    use crate::tenant::directory::InMemoryTenants;
    use crate::tenant::parse_tenant_secret;
    use crate::tenant::{Connector, TenantConfig};

    const PREFIX: &str = "popularity-reports/tenants/";

    /// Records calls; fails the first `failures` of them (transiently, or
    /// permanently when `permanent`).
    struct FakeDeliverer {
        calls: AtomicUsize,
        failures: usize,
        permanent: bool,
    }

    impl Deliverer for FakeDeliverer {
        fn kind(&self) -> JobKind {
            JobKind::Email
        }

        async fn deliver<L: PartLedger>(
            &self,
            job: &DeliveryJob,
            _tenant: &TenantConfig,
            _connector: &Connector,
            _manifest: &RunManifest,
            _ledger: &L,
        ) -> Result<Vec<DeliveredObject>, DeliveryError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                return Err(if self.permanent {
                    DeliveryError::CannotFit { reason: format!("never fits (attempt {})", call + 1) }
                } else {
                    DeliveryError::Connector(crate::delivery::error::ConnectorFailure::transient(
                        std::io::Error::other(format!("SES throttled attempt {}", call + 1)),
                    ))
                });
            }
            Ok(vec![DeliveredObject::new(format!("sent/{}", job.feed_id), 1, "00".repeat(32))])
        }

        async fn test_connection(
            &self,
            _request: &ConnectionTestRequest,
            _tenant: &TenantConfig,
            _connector: &Connector,
        ) -> ConnectionTestReport {
            let mut report = ConnectionTestReport::default();
            report.passed("fake", "ok");
            report
        }
    }

    fn secret(enabled: bool, inbox_type: &str) -> String {
        let inbox = if inbox_type == "email" {
            serde_json::json!({"type": "email", "recipients": ["data@acme.example"]})
        } else {
            serde_json::json!({"type": "s3-keys", "bucketArn": "arn:aws:s3:::acme", "region": "eu-west-1",
                "prefix": "", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"})
        };
        serde_json::json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": enabled,
            "connectors": {"inbox": inbox}, "feeds": [{"id": "weekly", "connector": "inbox"}]})
        .to_string()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-19T03:05:00Z".parse().unwrap()
    }

    /// A staging store holding one email job and its run's manifest; the
    /// store lives as long as the returned directory guard.
    async fn scene(name: &str) -> (TempDir, LocalDirStore, JobKeyParts) {
        let (dir, store) = LocalDirStore::in_temp_dir(&format!("deliver-{name}"));
        let run: RunId = "20261119030000".parse().unwrap();
        let tenant = parse_tenant_secret("acme", &secret(true, "email")).unwrap();
        let job = DeliveryJob::for_feed(run, &tenant, &tenant.feeds[0], crate::delivery::DeliveryPlan::full(), now())
            .unwrap();
        store.put(&job.job_key(), Bytes::from(serde_json::to_vec(&job).unwrap()), "application/json").await.unwrap();
        let manifest = serde_json::json!({"schemaVersion": 1, "runId": "20261119030000",
            "runTime": "2026-11-19T03:00:00Z", "generatedAt": "2026-11-19T03:04:00Z", "mode": "full",
            "format": "json", "compression": "none",
            "scoring": {"lookbackDays": 28, "halfLifeDays": 7.0, "firstDay": "2026-10-22", "lastDay": "2026-11-18", "daysWithPlays": []},
            "inputs": {"catalogueFiles": 0, "catalogueRows": 0, "playFiles": 0, "playRows": 0, "unknownTrackPlayRows": 0, "unknownTrackPlays": 0},
            "reports": []});
        store.put(&run_manifest_key(run), Bytes::from(manifest.to_string()), "application/json").await.unwrap();
        (dir, store, job.key_parts())
    }

    fn deps(
        store: &LocalDirStore,
        tenants: InMemoryTenants,
        failures: usize,
    ) -> DeliverDeps<LocalDirStore, InMemoryTenants, FakeDeliverer> {
        DeliverDeps {
            staging: store.clone(),
            tenants,
            deliverer: FakeDeliverer { calls: AtomicUsize::new(0), failures, permanent: false },
            now,
        }
    }

    fn acme() -> InMemoryTenants {
        InMemoryTenants::new(PREFIX).with_secret("acme", secret(true, "email"))
    }

    async fn status(store: &LocalDirStore, parts: &JobKeyParts) -> DeliveryStatus {
        serde_json::from_slice(&store.get(&parts.status_key()).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_failed_attempt_is_recorded_and_retried_and_a_delivered_job_is_not_repeated() {
        let (_dir, store, parts) = scene("retry").await;
        let deps = deps(&store, acme(), 1);
        let error = deliver_job(&deps, &parts, None).await.unwrap_err();
        assert!(error.to_string().contains("SES throttled attempt 1"), "{error}");
        assert_eq!(status(&store, &parts).await.outcome, DeliveryOutcome::Failed);
        let report = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!((report.disposition, report.objects), (JobDisposition::Attempted(DeliveryOutcome::Delivered), 1));
        let again = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!(again.disposition, JobDisposition::AlreadyDelivered, "already delivered: nothing done");
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 2);
        let recorded = status(&store, &parts).await;
        assert_eq!(recorded.attempts.len(), 2);
        assert_eq!(recorded.claim, None);
        assert!(recorded.last_error.as_deref().unwrap().contains("SES throttled attempt 1"));
    }

    async fn event(store: &LocalDirStore, parts: &JobKeyParts, name: &str) -> Option<serde_json::Value> {
        let key = format!("notifications/{}/{}/{}/{name}.json", parts.run_id, parts.tenant_id, parts.feed_id);
        store.get(&key).await.ok().map(|body| serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn the_first_failure_and_the_success_each_create_one_event_and_later_failures_none() {
        let (_dir, store, parts) = scene("events").await;
        let deps = deps(&store, acme(), 2);
        deliver_job(&deps, &parts, None).await.unwrap_err();
        let failed = event(&store, &parts, "delivery.failed").await.expect("delivery.failed created");
        assert_eq!(failed["type"], "delivery.failed");
        assert_eq!((failed["retryable"].clone(), failed["blame"].clone()), (true.into(), "provider".into()));
        assert!(failed["cause"].as_str().unwrap().contains("SES throttled attempt 1"), "{failed}");
        assert_eq!(failed["destination"]["connector"], "inbox");
        deliver_job(&deps, &parts, None).await.unwrap_err();
        let again = event(&store, &parts, "delivery.failed").await.unwrap();
        assert_eq!(again, failed, "a conditional create: the first failure's event stands");
        assert!(event(&store, &parts, "delivery.succeeded").await.is_none());
        deliver_job(&deps, &parts, None).await.unwrap();
        let succeeded = event(&store, &parts, "delivery.succeeded").await.expect("delivery.succeeded created");
        assert_eq!(succeeded["objects"][0]["key"], "sent/weekly");
        assert_ne!(succeeded["id"], failed["id"], "each event has its own id");
        let status = status(&store, &parts).await;
        assert_eq!(status.blame, Some(Blame::Provider), "the latest failure's, kept after the success");
    }

    #[tokio::test]
    async fn an_event_that_cannot_be_written_fails_the_invocation_not_the_delivery_and_the_retry_creates_it() {
        let (dir, store, parts) = scene("event-unwritable").await;
        // A file where the event's folder should be: creating the event fails.
        let folder = dir.path().join(format!("notifications/{}/{}", parts.run_id, parts.tenant_id));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(&parts.feed_id), b"in the way").unwrap();
        let deps = deps(&store, acme(), 0);
        let error = deliver_job(&deps, &parts, None).await.unwrap_err();
        assert!(matches!(error, JobError::CreateEvent { .. }), "{error}");
        assert!(error.to_string().contains("is delivered") && error.to_string().contains("retried"), "{error}");
        assert!(status(&store, &parts).await.is_delivered(), "the delivery stands");
        assert!(event(&store, &parts, "delivery.succeeded").await.is_none());

        // Lambda's retry, once the write can succeed: nothing is delivered
        // again, and the event is created.
        std::fs::remove_file(folder.join(&parts.feed_id)).unwrap();
        let again = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!(again.disposition, JobDisposition::AlreadyDelivered);
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 1, "delivered once");
        let created = event(&store, &parts, "delivery.succeeded").await.expect("the retry created the event");
        assert_eq!(created["type"], "delivery.succeeded");
        // A further duplicate invocation finds it and writes nothing.
        assert_eq!(deliver_job(&deps, &parts, None).await.unwrap().disposition, JobDisposition::AlreadyDelivered);
        assert_eq!(event(&store, &parts, "delivery.succeeded").await.unwrap(), created);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_recorded_invalid_and_not_retried() {
        let (_dir, store, parts) = scene("permanent").await;
        let mut deps = deps(&store, acme(), 1);
        deps.deliverer.permanent = true;
        let report = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!(report.disposition, JobDisposition::Attempted(DeliveryOutcome::Invalid));
        let recorded = status(&store, &parts).await;
        assert!(recorded.last_error.unwrap().contains("never fits"));
    }

    #[tokio::test]
    async fn a_live_claim_of_another_attempt_means_nothing_is_written_and_an_expired_one_is_taken_over() {
        let (_dir, store, parts) = scene("claims").await;
        let deps = deps(&store, acme(), 0);
        // An attempt that was killed mid-way left its claim, expiring at 03:10.
        let killed = DeliveryStatus::claimed(None, &parts, "killed".into(), now(), now() + Duration::minutes(5));
        let key = status_key(parts.run_id, &parts.tenant_id, &parts.feed_id);
        store.put(&key, Bytes::from(serde_json::to_vec(&killed).unwrap()), "application/json").await.unwrap();
        let before = store.get(&key).await.unwrap();

        let report = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!(report.disposition, JobDisposition::ClaimedElsewhere);
        assert_eq!(store.get(&key).await.unwrap(), before, "a live claim: nothing written");
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 0);

        let later = DeliverDeps { now: || "2026-11-19T03:11:00Z".parse().unwrap(), ..deps };
        let report = deliver_job(&later, &parts, None).await.unwrap();
        assert_eq!(report.disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
        let recorded = status(&store, &parts).await;
        assert_eq!(recorded.attempts.len(), 1, "the killed attempt recorded nothing; the takeover is attempt 1");
        assert_eq!(recorded.claim, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_concurrent_invocations_of_one_job_exactly_one_delivers() {
        let (_dir, store, parts) = scene("concurrent").await;
        let deps = std::sync::Arc::new(deps(&store, acme(), 0));
        let mut invocations = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (deps, parts) = (deps.clone(), parts.clone());
            invocations.spawn(async move { deliver_job(&deps, &parts, None).await.unwrap().disposition });
        }
        let mut dispositions = Vec::new();
        while let Some(done) = invocations.join_next().await {
            dispositions.push(done.unwrap());
        }
        let delivered =
            dispositions.iter().filter(|d| **d == JobDisposition::Attempted(DeliveryOutcome::Delivered)).count();
        assert_eq!(delivered, 1, "{dispositions:?}");
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 1);
        assert_eq!(status(&store, &parts).await.attempts.len(), 1);
    }

    #[tokio::test]
    async fn a_status_that_cannot_be_read_stops_the_attempt_so_nothing_is_sent_twice_or_forgotten() {
        let (dir, store, parts) = scene("unreadable-status").await;
        // A directory where the status object should be: reading it fails
        // with an I/O error, not "not found".
        std::fs::create_dir_all(dir.path().join(parts.status_key())).unwrap();
        let deps = deps(&store, acme(), 0);
        let error = deliver_job(&deps, &parts, None).await.unwrap_err();
        assert!(matches!(error, JobError::ReadStatus { .. }), "{error:?}");
        assert!(error.to_string().contains(&parts.status_key()), "{error}");
        assert_eq!(Diagnostic::from(DeliverError::Job(error)).error_type, "StatusNotRead");
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 0, "nothing attempted");
    }

    #[tokio::test]
    async fn a_damaged_status_is_replaced_by_the_next_attempt() {
        let (_dir, store, parts) = scene("damaged").await;
        store.put(&parts.status_key(), Bytes::from_static(b"{half a status"), "application/json").await.unwrap();
        let deps = deps(&store, acme(), 0);
        let report = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!(report.disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
        assert!(status(&store, &parts).await.is_delivered());
    }

    #[tokio::test]
    async fn jobs_that_can_never_succeed_are_recorded_without_a_retry_and_nothing_is_delivered() {
        let cases = [
            ("gone", InMemoryTenants::new(PREFIX), DeliveryOutcome::Skipped, "no longer exists"),
            (
                "disabled",
                InMemoryTenants::new(PREFIX).with_secret("acme", secret(false, "email")),
                DeliveryOutcome::Skipped,
                "disabled",
            ),
            (
                "retyped",
                InMemoryTenants::new(PREFIX).with_secret("acme", secret(true, "s3-keys")),
                DeliveryOutcome::Invalid,
                "changed type from email to s3-keys",
            ),
            (
                "invalid",
                InMemoryTenants::new(PREFIX).with_secret("acme", "{\"schemaVersion\": 1}"),
                DeliveryOutcome::Invalid,
                "tenantId",
            ),
        ];
        for (name, tenants, outcome, reason) in cases {
            let (_dir, store, parts) = scene(name).await;
            let deps = deps(&store, tenants, 0);
            let report = deliver_job(&deps, &parts, None).await.unwrap();
            assert_eq!(report.disposition, JobDisposition::Attempted(outcome), "{name}");
            let recorded = status(&store, &parts).await;
            let error = recorded.last_error.unwrap();
            assert!(error.contains(reason), "{name}: {error}");
            assert!(!error.contains("wJalrXUtnFEMI"), "{name}: a credential in the status");
            assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 0, "{name}");
        }
    }

    #[tokio::test]
    async fn a_job_whose_manifest_is_gone_is_invalid() {
        let (_dir, store, parts) = scene("no-manifest").await;
        std::fs::remove_file(store.root().join(run_manifest_key(parts.run_id))).unwrap();
        let deps = deps(&store, acme(), 0);
        let report = deliver_job(&deps, &parts, None).await.unwrap();
        assert_eq!(report.disposition, JobDisposition::Attempted(DeliveryOutcome::Invalid));
        assert!(status(&store, &parts).await.last_error.unwrap().contains("does not exist"));
    }

    #[tokio::test]
    async fn an_event_for_another_kind_of_job_is_refused_before_anything_is_read() {
        let (_dir, store, parts) = scene("kind").await;
        let deps = deps(&store, InMemoryTenants::new(PREFIX), 0);
        // The sample event for deliver-s3 reaches this email deliverer.
        let event: S3Event = serde_json::from_str(include_str!("../../../events/deliver-s3/job-created.json")).unwrap();
        let error = handle_deliverer_event(&deps, event, None).await.unwrap_err();
        assert!(matches!(error, DeliverError::WrongKind { .. }), "{error}");
        assert!(store.get(&parts.status_key()).await.is_err());
    }

    #[tokio::test]
    async fn one_bad_record_does_not_keep_the_others_from_being_delivered() {
        let (_dir, store, parts) = scene("records").await;
        let deps = deps(&store, acme(), 0);
        let mut event: S3Event =
            serde_json::from_str(include_str!("../../../events/deliver-email/job-created.json")).unwrap();
        let mut bad = event.records[0].clone();
        bad.s3.object.key = Some("jobs/email/not-a-run/acme/weekly.json".into());
        let mut good = event.records[0].clone();
        good.s3.object.key = Some(parts.job_key());
        event.records = vec![bad, good];
        let error = handle_deliverer_event(&deps, event, None).await.unwrap_err();
        assert!(matches!(error, DeliverError::Key { index: 0, .. }), "{error}");
        assert!(status(&store, &parts).await.is_delivered(), "the good record was delivered");
    }
}
