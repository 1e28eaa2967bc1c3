//! The sweeper against moto (docs/design.md, "Delivery rules", failures that heal): a delivery
//! that failed because the customer's bucket was missing is re-driven —
//! its job object re-written with the same bytes — once the deliverer's own
//! retries are over, and ends delivered after the customer creates the
//! bucket; a claim that expired without an outcome is re-driven; delivered
//! and invalid deliveries are left alone; the bound on re-drives holds; runs
//! older than `SWEEP_DAYS` are not touched; and a status that changes
//! between the sweeper's read and its conditional write is left to whoever
//! changed it.

use std::sync::Mutex;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use integration_tests::customer::keys_under;
use integration_tests::delivery::{
    event_for_key, pinned_now, publish_synthetic_run, run_id, s3_deliver_deps, staging_store,
    tenant_whose_bucket_is_missing,
};
use integration_tests::{moto_endpoint, sdk_config};
use popularity_reports::delivery::{
    parse_job_key, AttemptResult, DeliverDeps, DeliveryOutcome, DeliveryStatus, JobDisposition, JobKeyParts,
};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::sweeper::{handle_sweep, SweeperDeps};
use popularity_reports::store::{
    s3_client, ConditionalPut, ObjectEntry, ObjectSink, ObjectStore, S3Reader, S3Store, S3Upload, StoreError,
    UploadReceipt, VersionedObject, WriteCondition,
};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const JSON: &str = "application/json";

/// An hour after the pinned clock: the deliverer's own retries are over.
fn an_hour_later() -> DateTime<Utc> {
    pinned_now() + Duration::hours(1)
}

fn sweeper<S: ObjectStore>(staging: S, max_redrives: u32, now: fn() -> DateTime<Utc>) -> SweeperDeps<S> {
    SweeperDeps { staging, sweep_days: 3, max_redrives, now }
}

async fn status_of(staging: &S3Store, parts: &JobKeyParts) -> DeliveryStatus {
    serde_json::from_slice(&staging.get(&parts.status_key()).await.unwrap()).unwrap()
}

async fn put_status(staging: &S3Store, status: &DeliveryStatus) {
    let key = format!("status/{}/{}/{}.json", status.run_id, status.tenant_id, status.feed_id);
    staging.put(&key, Bytes::from(serde_json::to_vec(status).unwrap()), JSON).await.unwrap();
}

/// A job object as fanout writes it, for a tenant that need not exist.
async fn put_job(staging: &S3Store, run: RunId, feed: &str) -> JobKeyParts {
    let key = format!("jobs/s3/{run}/acme/{feed}.json");
    let job = json!({"schemaVersion": 1, "runId": run.to_string(), "tenantId": "acme", "feedId": feed,
        "connector": "lake", "connectorType": "s3-bucket-policy", "jobKind": "s3",
        "reports": ["artist"], "format": "json", "compression": "none", "mode": "full",
        "createdAt": run.time() + Duration::minutes(4)});
    staging.put(&key, Bytes::from(serde_json::to_vec_pretty(&job).unwrap()), JSON).await.unwrap();
    parse_job_key(&key).unwrap()
}

fn failed_at(parts: &JobKeyParts, at: DateTime<Utc>) -> DeliveryStatus {
    DeliveryStatus::first_record(
        parts.run_id,
        &parts.tenant_id,
        &parts.feed_id,
        at,
        at,
        AttemptResult::Failed("NoSuchBucket".into()),
    )
}

/// When the job object was last written (S3 keeps whole seconds).
async fn job_written_at(admin: &aws_config::SdkConfig, staging: &S3Store, parts: &JobKeyParts) -> i64 {
    let head = s3_client(admin).head_object().bucket(staging.bucket()).key(parts.job_key()).send().await.unwrap();
    head.last_modified().unwrap().secs()
}

/// S3's LastModified has whole seconds: wait for the next one.
async fn next_second() {
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
}

#[tokio::test]
async fn a_delivery_that_failed_on_a_missing_bucket_is_redriven_and_delivered_once_the_bucket_exists() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "sweep-heal").await;
    publish_synthetic_run(&staging, run_id(), 700, 1_000).await;
    let (prefix, bucket, customer) = tenant_whose_bucket_is_missing(&admin, &staging, "sweep-heal").await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.as_str()).unwrap();
    let parts = parse_job_key(&format!("jobs/s3/{}/acme/default.json", run_id())).unwrap();
    let deliver = s3_deliver_deps(&admin, &staging, tenants(), pinned_now);
    let job_body = staging.get(&parts.job_key()).await.unwrap();

    // The bucket does not exist yet: the delivery fails (transient).
    assert!(handle_deliverer_event(&deliver, event_for_key(&parts.job_key()), None).await.is_err());
    assert_eq!(status_of(&staging, &parts).await.outcome, DeliveryOutcome::Failed);

    // While the deliverer's own retries may still come, the sweeper waits.
    let early = handle_sweep(&sweeper(staging.clone(), 24, || pinned_now() + Duration::minutes(20))).await.unwrap();
    assert_eq!((early.jobs, early.redriven, early.not_due), (1, 0, 1));

    // The customer creates the bucket; the next sweep re-drives the job.
    s3_client(&customer).create_bucket().bucket(&bucket).send().await.unwrap();
    let before = job_written_at(&admin, &staging, &parts).await;
    next_second().await;
    let swept = handle_sweep(&sweeper(staging.clone(), 24, an_hour_later)).await.unwrap();
    assert_eq!((swept.run_ids.clone(), swept.redriven), (vec![run_id().to_string()], 1), "{swept:?}");
    assert!(job_written_at(&admin, &staging, &parts).await > before, "the job object was re-written");
    assert_eq!(staging.get(&parts.job_key()).await.unwrap(), job_body, "with the very same bytes");
    let counted = status_of(&staging, &parts).await;
    assert_eq!(
        (counted.outcome, counted.redrives, counted.last_redrive_at),
        (DeliveryOutcome::Failed, 1, Some(an_hour_later()))
    );

    // The re-written job's S3 event reaches deliver-s3, which delivers.
    let later = DeliverDeps { now: || an_hour_later() + Duration::minutes(1), ..deliver };
    let response = handle_deliverer_event(&later, event_for_key(&parts.job_key()), None).await.unwrap();
    assert_eq!(response.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let delivered = status_of(&staging, &parts).await;
    assert_eq!((delivered.outcome, delivered.attempts.len(), delivered.redrives), (DeliveryOutcome::Delivered, 2, 1));
    assert_eq!(keys_under(&customer, &bucket, "in/").await.len(), 2, "part and manifest");

    // A delivered job is never re-driven again.
    let after = job_written_at(&admin, &staging, &parts).await;
    next_second().await;
    let swept = handle_sweep(&sweeper(staging.clone(), 24, || an_hour_later() + Duration::hours(2))).await.unwrap();
    assert_eq!((swept.redriven, swept.final_outcomes), (0, 1));
    assert_eq!(job_written_at(&admin, &staging, &parts).await, after);
}

#[tokio::test]
async fn expired_claims_and_failures_are_redriven_up_to_the_bound_and_final_outcomes_and_old_runs_are_not() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "sweep-cases").await;
    let old_run: RunId = "20261115030000".parse().unwrap();
    for run in [run_id(), old_run] {
        staging.put(&format!("manifests/{run}.json"), Bytes::from_static(b"{}"), JSON).await.unwrap();
    }
    // A claim of an attempt that was killed: it expired at 03:20.
    let killed = put_job(&staging, run_id(), "killed").await;
    let claim = DeliveryStatus::claimed(
        None,
        &killed,
        "killed-attempt".into(),
        pinned_now(),
        pinned_now() + Duration::minutes(15),
    );
    put_status(&staging, &claim).await;
    // A live claim, a failure, a delivered and an invalid delivery.
    let live = put_job(&staging, run_id(), "live").await;
    let held = DeliveryStatus::claimed(
        None,
        &live,
        "live-attempt".into(),
        an_hour_later(),
        an_hour_later() + Duration::minutes(15),
    );
    put_status(&staging, &held).await;
    let failed = put_job(&staging, run_id(), "failed").await;
    put_status(&staging, &failed_at(&failed, pinned_now())).await;
    let mut finals = Vec::new();
    for (feed, result) in
        [("done", AttemptResult::Delivered(vec![])), ("bad", AttemptResult::Invalid("no such report".into()))]
    {
        let parts = put_job(&staging, run_id(), feed).await;
        put_status(&staging, &DeliveryStatus::first_record(run_id(), "acme", feed, pinned_now(), pinned_now(), result))
            .await;
        finals.push(parts);
    }
    // A failure of a run older than SWEEP_DAYS (3).
    let old = put_job(&staging, old_run, "failed").await;
    put_status(&staging, &failed_at(&old, old_run.time())).await;
    let untouched: Vec<(JobKeyParts, VersionedObject, i64)> = {
        let mut all = Vec::new();
        for parts in finals.iter().chain([&old, &live]) {
            let status = staging.get_versioned(&parts.status_key()).await.unwrap();
            all.push((parts.clone(), status, job_written_at(&admin, &staging, parts).await));
        }
        all
    };
    next_second().await;

    let swept = handle_sweep(&sweeper(staging.clone(), 1, an_hour_later)).await.unwrap();
    assert_eq!(swept.run_ids, [run_id().to_string()], "the old run is not swept");
    assert_eq!((swept.jobs, swept.redriven, swept.not_due, swept.final_outcomes), (5, 2, 1, 2), "{swept:?}");
    let killed_status = status_of(&staging, &killed).await;
    assert_eq!((killed_status.outcome, killed_status.redrives), (DeliveryOutcome::InProgress, 1));
    assert_eq!(status_of(&staging, &failed).await.redrives, 1);
    for (parts, status, written) in &untouched {
        assert_eq!(&staging.get_versioned(&parts.status_key()).await.unwrap(), status, "{}", parts.job_key());
        assert_eq!(job_written_at(&admin, &staging, parts).await, *written, "{} re-written", parts.job_key());
    }

    // With MAX_REDRIVES 1, the next sweep leaves both as they are and says
    // so; the claim that was live has expired meanwhile and is re-driven.
    let failed_written = job_written_at(&admin, &staging, &failed).await;
    next_second().await;
    let swept = handle_sweep(&sweeper(staging.clone(), 1, || an_hour_later() + Duration::hours(1))).await.unwrap();
    assert_eq!((swept.redriven, swept.exhausted), (1, 2), "{swept:?}");
    assert_eq!(status_of(&staging, &live).await.redrives, 1);
    let failed_status = status_of(&staging, &failed).await;
    assert_eq!((failed_status.outcome, failed_status.redrives), (DeliveryOutcome::Failed, 1));
    assert_eq!(job_written_at(&admin, &staging, &failed).await, failed_written);
}

/// A store whose first conditional write to a status object is preceded by
/// another writer's change of that object: a deliverer claiming the job
/// between the sweeper's read and its write.
struct RacingStore {
    inner: S3Store,
    raced: Mutex<Option<DeliveryStatus>>,
}

impl ObjectSink for RacingStore {
    type Upload = S3Upload;

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
        self.inner.put(key, body, content_type).await
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<S3Upload, StoreError> {
        self.inner.start_upload(key, content_type).await
    }

    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
}

impl ObjectStore for RacingStore {
    type Reader = S3Reader;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
        self.inner.get_versioned(key).await
    }

    async fn open(&self, key: &str) -> Result<S3Reader, StoreError> {
        self.inner.open(key).await
    }

    async fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        condition: WriteCondition<'_>,
    ) -> Result<ConditionalPut, StoreError> {
        let racer = self.raced.lock().unwrap().take();
        if let Some(status) = racer {
            put_status(&self.inner, &status).await;
        }
        self.inner.put_conditional(key, body, content_type, condition).await
    }
}

#[tokio::test]
async fn a_status_changed_between_read_and_write_makes_the_sweeper_skip_the_job() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "sweep-race").await;
    staging.put(&format!("manifests/{}.json", run_id()), Bytes::from_static(b"{}"), JSON).await.unwrap();
    let parts = put_job(&staging, run_id(), "raced").await;
    let failed = failed_at(&parts, pinned_now());
    put_status(&staging, &failed).await;
    let claimed = DeliveryStatus::claimed(
        Some(failed),
        &parts,
        "deliverer".into(),
        an_hour_later(),
        an_hour_later() + Duration::minutes(15),
    );
    let written = job_written_at(&admin, &staging, &parts).await;
    next_second().await;

    let racing = RacingStore { inner: staging.clone(), raced: Mutex::new(Some(claimed.clone())) };
    let swept = handle_sweep(&sweeper(racing, 24, an_hour_later)).await.unwrap();
    assert_eq!((swept.raced, swept.redriven), (1, 0), "{swept:?}");
    assert_eq!(status_of(&staging, &parts).await, claimed, "the deliverer's claim stands");
    assert_eq!(job_written_at(&admin, &staging, &parts).await, written, "the job was not re-written");
}
