//! What every deliverer function does around the delivery itself (DESIGN
//! §7): an S3 event names `jobs/<kind>/<runId>/<tenantId>/<feedId>.json`;
//! the job is read, a status that already says `delivered` ends it, the
//! tenant secret is re-read (jobs hold no credentials) and checked against
//! the job, the [`Deliverer`] does its work, and the attempt is appended to
//! `status/<runId>/<tenantId>/<feedId>.json`. A failed attempt returns an
//! error so the asynchronous invocation is retried; a job that can never
//! succeed (unreadable, tenant gone or disabled, connector changed) is
//! recorded and not retried.

use std::future::Future;

use aws_lambda_events::s3::S3Event;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{error, info, instrument, warn};

use crate::delivery::{
    decode_job, decode_s3_event_key, parse_job_key, AttemptResult, DeliveredObject, DeliveryJob, DeliveryOutcome,
    DeliveryStatus, JobKeyParts, JobKind, KeyError,
};
use crate::manifest::RunManifest;
use crate::store::{ObjectStore, StoreError};
use crate::tenant::{Connector, TenantConfig};
use crate::tenant_directory::TenantDirectory;

/// Delivers one job of its kind. Returns the objects written, or why the
/// attempt failed (a message safe to store and log: no credentials).
pub trait Deliverer: Send + Sync {
    /// The `jobs/<kind>/` this deliverer serves.
    fn kind(&self) -> JobKind;

    fn deliver(
        &self,
        job: &DeliveryJob,
        tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
    ) -> impl Future<Output = Result<Vec<DeliveredObject>, String>> + Send;
}

/// What a deliverer function needs besides its [`Deliverer`].
pub struct DeliverDeps<S, T, D> {
    pub staging: S,
    pub tenants: T,
    pub deliverer: D,
    /// The clock; tests pin it.
    pub now: fn() -> DateTime<Utc>,
}

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    pub job_key: String,
    pub status_key: String,
    /// `None` when the job was already delivered and nothing was done.
    pub outcome: Option<DeliveryOutcome>,
    pub objects: usize,
    pub bytes: u64,
}

/// The function's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverResponse {
    pub jobs: Vec<JobReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("S3 event record {index} has no object key")]
    MissingKey { index: usize },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "job {key} is a {found} job but this function delivers {expected} jobs; check the S3 notification filters"
    )]
    WrongKind { key: String, found: JobKind, expected: JobKind },
    #[error("delivery of {job_key} failed (recorded in {status_key}): {reason}")]
    Failed { job_key: String, status_key: String, reason: String },
    #[error("could not record the outcome of {job_key} in {status_key}: {source}")]
    RecordStatus { job_key: String, status_key: String, source: StoreError },
    #[error(
        "could not read the status {status_key} of {job_key}, so nothing was attempted (the invocation will be \
         retried): {source}"
    )]
    ReadStatus { job_key: String, status_key: String, source: StoreError },
    #[error("{} jobs failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | "))]
    Several(Vec<DeliverError>),
}

impl From<DeliverError> for Diagnostic {
    fn from(error: DeliverError) -> Self {
        let error_type = match &error {
            DeliverError::MissingKey { .. } | DeliverError::Key(_) | DeliverError::WrongKind { .. } => "InvalidEvent",
            DeliverError::Failed { .. } | DeliverError::Several(_) => "DeliveryFailed",
            DeliverError::RecordStatus { .. } => "StatusNotRecorded",
            DeliverError::ReadStatus { .. } => "StatusNotRead",
        };
        Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

/// Handles an S3 `ObjectCreated` event for job objects. Every record is
/// processed; if any failed, the error lists them all (and the retry skips
/// those already delivered).
#[instrument(skip_all)]
pub async fn handle_job_event<S, T, D>(
    deps: &DeliverDeps<S, T, D>,
    event: S3Event,
) -> Result<DeliverResponse, DeliverError>
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let mut keys = Vec::with_capacity(event.records.len());
    for (index, record) in event.records.iter().enumerate() {
        let encoded = record.s3.object.key.as_deref().ok_or(DeliverError::MissingKey { index })?;
        let parts = parse_job_key(&decode_s3_event_key(encoded)?)?;
        if parts.kind != deps.deliverer.kind() {
            return Err(DeliverError::WrongKind {
                key: parts.job_key(),
                found: parts.kind,
                expected: deps.deliverer.kind(),
            });
        }
        keys.push(parts);
    }
    let mut response = DeliverResponse::default();
    let mut failures = Vec::new();
    for parts in keys {
        match deliver_job(deps, &parts).await {
            Ok(report) => response.jobs.push(report),
            Err(error) => failures.push(error),
        }
    }
    match failures.len() {
        0 => Ok(response),
        1 => Err(failures.remove(0)),
        _ => Err(DeliverError::Several(failures)),
    }
}

/// Delivers the job at `parts` unless its status says it was delivered.
#[instrument(skip_all, fields(run_id = %parts.run_id, tenant = %parts.tenant_id, feed = %parts.feed_id))]
pub async fn deliver_job<S, T, D>(deps: &DeliverDeps<S, T, D>, parts: &JobKeyParts) -> Result<JobReport, DeliverError>
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let job_key = parts.job_key();
    let status_key = parts.status_key();
    let existing = match read_status(&deps.staging, &status_key).await {
        Ok(existing) => existing,
        Err(source) => {
            error!(%job_key, error = %source, "could not read the delivery status; not attempting");
            return Err(DeliverError::ReadStatus { job_key, status_key, source });
        }
    };
    if let Some(status) = existing.as_ref().filter(|status| status.is_delivered()) {
        info!(%job_key, "already delivered; nothing to do");
        return Ok(JobReport {
            job_key,
            status_key,
            outcome: None,
            objects: status.objects.len(),
            bytes: status.total_bytes(),
        });
    }
    let started_at = (deps.now)();
    let result = attempt(deps, parts).await;
    let finished_at = (deps.now)();
    let failure = match &result {
        AttemptResult::Failed(reason) => Some(reason.clone()),
        _ => None,
    };
    let status = match existing {
        Some(mut status) => {
            status.record_attempt(started_at, finished_at, result);
            status
        }
        None => DeliveryStatus::first_attempt(parts, started_at, finished_at, result),
    };
    let body = Bytes::from(serde_json::to_vec_pretty(&status).expect("a status serialises"));
    if let Err(source) = deps.staging.put(&status_key, body, "application/json").await {
        error!(%job_key, error = %source, "could not record the delivery status");
        return Err(DeliverError::RecordStatus { job_key, status_key, source });
    }
    let report = JobReport {
        job_key: job_key.clone(),
        status_key: status_key.clone(),
        outcome: Some(status.outcome),
        objects: status.objects.len(),
        bytes: status.total_bytes(),
    };
    match (status.outcome, failure) {
        (DeliveryOutcome::Failed, Some(reason)) => {
            warn!(%job_key, attempt = status.attempts.len(), %reason, "delivery failed; the invocation will be retried");
            Err(DeliverError::Failed { job_key, status_key, reason })
        }
        (outcome, _) => {
            info!(%job_key, ?outcome, objects = report.objects, bytes = report.bytes, "job done");
            Ok(report)
        }
    }
}

/// The status so far, `None` when there is none. One that does not decode
/// is logged and treated as absent, so a damaged status object cannot block
/// delivery. A failed read is an error: attempting anyway could repeat a
/// finished delivery (a second email) and would overwrite the attempts
/// recorded so far.
async fn read_status<S: ObjectStore>(staging: &S, key: &str) -> Result<Option<DeliveryStatus>, StoreError> {
    match staging.get(key).await {
        Ok(body) => match serde_json::from_slice(&body) {
            Ok(status) => Ok(Some(status)),
            Err(error) => {
                warn!(status = %staging.describe(key), %error, "ignoring a status object that does not decode");
                Ok(None)
            }
        },
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// One attempt: everything that can go wrong becomes an [`AttemptResult`].
async fn attempt<S, T, D>(deps: &DeliverDeps<S, T, D>, parts: &JobKeyParts) -> AttemptResult
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let job_key = parts.job_key();
    let job = match deps.staging.get(&job_key).await {
        Ok(body) => match decode_job(&body) {
            Ok(job) => job,
            Err(error) => return AttemptResult::Invalid(format!("{}: {error}", deps.staging.describe(&job_key))),
        },
        Err(error @ StoreError::NotFound { .. }) => return AttemptResult::Invalid(error.to_string()),
        Err(error) => return AttemptResult::Failed(error.to_string()),
    };
    if job.key_parts() != *parts {
        return AttemptResult::Invalid(format!(
            "job object {job_key} names {}, not the job its key names",
            job.job_key()
        ));
    }
    let manifest: RunManifest = match deps.staging.get(&job.manifest_key).await {
        Ok(body) => match serde_json::from_slice(&body) {
            Ok(manifest) => manifest,
            Err(error) => {
                return AttemptResult::Invalid(format!(
                    "run manifest {}: {error}",
                    deps.staging.describe(&job.manifest_key)
                ))
            }
        },
        Err(error) => return AttemptResult::Failed(format!("could not read the run manifest: {error}")),
    };
    let entry = match deps.tenants.load_tenant(&job.tenant_id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return AttemptResult::Skipped(format!(
                "the secret of tenant {:?} no longer exists; nothing was delivered",
                job.tenant_id
            ))
        }
        Err(error) => return AttemptResult::Failed(error.to_string()),
    };
    let tenant = match &entry.config {
        Ok(tenant) => tenant,
        Err(error) => {
            let message = error.describe(&entry.secret_name);
            warn!(%message, "this job cannot be delivered");
            return AttemptResult::Invalid(message);
        }
    };
    if !tenant.enabled {
        return AttemptResult::Skipped("the tenant was disabled after fanout; nothing was delivered".to_owned());
    }
    let Some(connector) = tenant.connectors.get(&job.connector) else {
        return AttemptResult::Invalid(format!(
            "the tenant secret no longer has connector {:?}; nothing was delivered",
            job.connector
        ));
    };
    if connector.kind().type_name() != job.connector_type {
        return AttemptResult::Invalid(format!(
            "connector {:?} changed type from {} to {} since fanout; nothing was delivered",
            job.connector,
            job.connector_type,
            connector.kind()
        ));
    }
    match deps.deliverer.deliver(&job, tenant, connector, &manifest).await {
        Ok(objects) => AttemptResult::Delivered(objects),
        Err(reason) => AttemptResult::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tempfile::TempDir;

    use super::*;
    use crate::domain::RunId;
    use crate::manifest::run_manifest_key;
    use crate::store::LocalDirStore;
    use crate::tenant::parse_tenant_secret;
    use crate::tenant_directory::InMemoryTenants;

    const PREFIX: &str = "popularity-reports/tenants/";

    /// Records calls; fails the first `failures` of them.
    struct FakeDeliverer {
        calls: AtomicUsize,
        failures: usize,
    }

    impl Deliverer for FakeDeliverer {
        fn kind(&self) -> JobKind {
            JobKind::Email
        }

        async fn deliver(
            &self,
            job: &DeliveryJob,
            _tenant: &TenantConfig,
            _connector: &Connector,
            _manifest: &RunManifest,
        ) -> Result<Vec<DeliveredObject>, String> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                return Err(format!("SES throttled attempt {}", call + 1));
            }
            Ok(vec![DeliveredObject { key: format!("sent/{}", job.feed_id), bytes: 1, sha256: "00".repeat(32) }])
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
        let job = DeliveryJob::for_feed(&run_manifest_key(run), run, &tenant, &tenant.feeds[0], now()).unwrap();
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
            deliverer: FakeDeliverer { calls: AtomicUsize::new(0), failures },
            now,
        }
    }

    async fn status(store: &LocalDirStore, parts: &JobKeyParts) -> DeliveryStatus {
        serde_json::from_slice(&store.get(&parts.status_key()).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_failed_attempt_is_recorded_and_retried_and_a_delivered_job_is_not_repeated() {
        let (_dir, store, parts) = scene("retry").await;
        let deps = deps(&store, InMemoryTenants::new(PREFIX).with_secret("acme", secret(true, "email")), 1);
        let error = deliver_job(&deps, &parts).await.unwrap_err();
        assert!(error.to_string().contains("SES throttled attempt 1"), "{error}");
        assert_eq!(status(&store, &parts).await.outcome, DeliveryOutcome::Failed);
        let report = deliver_job(&deps, &parts).await.unwrap();
        assert_eq!((report.outcome, report.objects), (Some(DeliveryOutcome::Delivered), 1));
        let again = deliver_job(&deps, &parts).await.unwrap();
        assert_eq!(again.outcome, None, "already delivered: nothing done");
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 2);
        let recorded = status(&store, &parts).await;
        assert_eq!(recorded.attempts.len(), 2);
        assert_eq!(recorded.last_error.as_deref(), Some("SES throttled attempt 1"));
    }

    #[tokio::test]
    async fn a_status_that_cannot_be_read_stops_the_attempt_so_nothing_is_sent_twice_or_forgotten() {
        let (dir, store, parts) = scene("unreadable-status").await;
        // A directory where the status object should be: reading it fails
        // with an I/O error, not "not found".
        std::fs::create_dir_all(dir.path().join(parts.status_key())).unwrap();
        let deps = deps(&store, InMemoryTenants::new(PREFIX).with_secret("acme", secret(true, "email")), 0);
        let error = deliver_job(&deps, &parts).await.unwrap_err();
        assert!(matches!(error, DeliverError::ReadStatus { .. }), "{error:?}");
        assert!(error.to_string().contains(&parts.status_key()), "{error}");
        assert_eq!(Diagnostic::from(error).error_type, "StatusNotRead");
        assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 0, "nothing attempted");
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
            let report = deliver_job(&deps, &parts).await.unwrap();
            assert_eq!(report.outcome, Some(outcome), "{name}");
            let recorded = status(&store, &parts).await;
            let error = recorded.last_error.unwrap();
            assert!(error.contains(reason), "{name}: {error}");
            assert!(!error.contains("wJalrXUtnFEMI"), "{name}: a credential in the status");
            assert_eq!(deps.deliverer.calls.load(Ordering::SeqCst), 0, "{name}");
        }
    }

    #[tokio::test]
    async fn an_event_for_another_kind_of_job_is_refused_before_anything_is_read() {
        let (_dir, store, parts) = scene("kind").await;
        let deps = deps(&store, InMemoryTenants::new(PREFIX), 0);
        // The sample event for deliver-s3 reaches this email deliverer.
        let event: S3Event = serde_json::from_str(include_str!("../../../events/deliver-s3/job-created.json")).unwrap();
        let error = handle_job_event(&deps, event).await.unwrap_err();
        assert!(matches!(error, DeliverError::WrongKind { .. }), "{error}");
        assert!(store.get(&parts.status_key()).await.is_err());
    }
}
