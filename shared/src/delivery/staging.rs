//! The staging bucket as deliveries see it (docs/design.md, "Reports and
//! layouts" and "Delivery rules"): a narrow, domain-named port over
//! [`ObjectStore`] that reads run manifests, jobs and status objects, claims
//! a job, records the parts an attempt delivers and its outcome with
//! conditional writes, and creates job and status objects only if absent.
//! This is the one place a status object is read, so every caller — fanout,
//! the deliverers, `popularity status` — treats an unreadable one the same
//! way: a status whose body does not decode is *damaged* (reported as such,
//! never delivered over blindly), and one that cannot be read at all is an
//! error the caller retries.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::delivery::arrival_event::ArrivalEvent;
use crate::delivery::error::DeliveryError;
use crate::delivery::feed_index::index_status;
use crate::delivery::job::{decode_job, DeliveryJob};
use crate::delivery::keys::{echoed_key, status_key, JobKeyParts};
use crate::delivery::status::{AttemptResult, DeliveredPart, DeliveryStatus, DELIVERY_STATUS_SCHEMA_VERSION};
use crate::domain::RunId;
use crate::manifest::{run_manifest_key, RunManifest, MANIFESTS_PREFIX, MANIFEST_SCHEMA_VERSION};
use crate::store::{
    ConditionalPut, ObjectStore, ObjectVersion, PutOutcome, StoreError, WriteCondition, CONTROL_OBJECT_MAX_BYTES,
    MANIFEST_MAX_BYTES,
};

const JSON: &str = "application/json";

/// A status object as stored: its content (or why it cannot be used) and
/// the version a conditional write must replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    /// `Err` says why the body is not a status of this job.
    pub status: Result<DeliveryStatus, UnusableStatus>,
    pub version: ObjectVersion,
}

impl StatusRecord {
    pub fn valid(&self) -> Option<&DeliveryStatus> {
        self.status.as_ref().ok()
    }

    pub fn is_delivered(&self) -> bool {
        self.valid().is_some_and(DeliveryStatus::is_delivered)
    }
}

/// A job this attempt has claimed: the claiming status as written, and its version.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub status: DeliveryStatus,
    version: ObjectVersion,
    key: String,
    /// Parts this attempt skipped because an earlier one delivered them;
    /// recorded on the attempt with its outcome.
    pub skipped_parts: u32,
}

impl ClaimedJob {
    /// The attempt's number in `attempts`.
    pub fn attempt(&self) -> u32 {
        self.status.claim.as_ref().map_or(0, |claim| claim.attempt)
    }

    /// The status object's location, for messages.
    pub fn status_key(&self) -> &str {
        &self.key
    }
}

/// What recording a delivered part over a claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartRecorded {
    Written,
    /// Another attempt took the claim over; nothing was written.
    ClaimLost,
}

/// What recording an outcome over a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Written(DeliveryStatus),
    /// The claim was taken over (this attempt outlived its expiry) and the
    /// status now belongs to another attempt; nothing was written.
    ClaimLost,
}

/// Why a run manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("run manifest {location} does not exist")]
    Missing { location: String },
    #[error("could not read run manifest {location}: {source}")]
    Unreadable {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("run manifest {location} is not valid: {reason}")]
    Invalid { location: String, reason: String },
}

impl From<ManifestError> for DeliveryError {
    fn from(error: ManifestError) -> Self {
        match error {
            // A job whose run manifest is gone (expired) or wrong can never be delivered.
            ManifestError::Missing { location } => {
                DeliveryError::InvalidManifest { location, reason: "it does not exist".to_owned() }
            }
            ManifestError::Invalid { location, reason } => DeliveryError::InvalidManifest { location, reason },
            ManifestError::Unreadable { location, source } => {
                DeliveryError::Staging { action: "read", location, source }
            }
        }
    }
}

/// Why a stored status object cannot be used as the status of its job. A
/// deliverer replaces it with its own; the sweeper leaves it alone and
/// `popularity status` shows it as damaged, with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnusableStatus {
    #[error("not a status object: {0}")]
    NotAStatus(String),
    #[error("schemaVersion {0} is not the {DELIVERY_STATUS_SCHEMA_VERSION} this build reads")]
    UnknownSchemaVersion(u32),
    #[error("it is the status of run {run} tenant {tenant_id:?} feed {feed_id:?}, not of the job its key names")]
    OtherJob { run: RunId, tenant_id: String, feed_id: String },
}

/// A status body decoded for the job it must be about.
fn decode_status(body: &[u8], run: RunId, tenant_id: &str, feed_id: &str) -> Result<DeliveryStatus, UnusableStatus> {
    // The version is checked first so a future format is reported as such,
    // not as whatever field it happens to lack.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        schema_version: u32,
    }
    let not_a_status = |e: serde_json::Error| UnusableStatus::NotAStatus(e.to_string());
    let versioned: Versioned = serde_json::from_slice(body).map_err(not_a_status)?;
    if versioned.schema_version != DELIVERY_STATUS_SCHEMA_VERSION {
        return Err(UnusableStatus::UnknownSchemaVersion(versioned.schema_version));
    }
    let status: DeliveryStatus = serde_json::from_slice(body).map_err(not_a_status)?;
    if status.run_id != run || status.tenant_id != tenant_id || status.feed_id != feed_id {
        return Err(UnusableStatus::OtherJob {
            run: status.run_id,
            tenant_id: status.tenant_id,
            feed_id: status.feed_id,
        });
    }
    Ok(status)
}

fn to_json(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(value).expect("staging objects serialise"))
}

/// Deliveries' view of the staging store.
#[derive(Debug)]
pub struct DeliveryStaging<'a, S> {
    store: &'a S,
}

impl<S> Clone for DeliveryStaging<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for DeliveryStaging<'_, S> {}

impl<'a, S: ObjectStore> DeliveryStaging<'a, S> {
    pub fn new(store: &'a S) -> Self {
        DeliveryStaging { store }
    }

    pub fn store(&self) -> &'a S {
        self.store
    }

    pub fn describe(&self, key: &str) -> String {
        self.store.describe(key)
    }

    /// `manifests/<runId>.json`, checked to be the manifest of `run` in a
    /// schema this build reads.
    pub async fn read_manifest(&self, run: RunId) -> Result<RunManifest, ManifestError> {
        let key = run_manifest_key(run);
        let location = self.store.describe(&key);
        let body = match self.store.get_at_most(&key, MANIFEST_MAX_BYTES).await {
            Ok(body) => body,
            Err(StoreError::NotFound { .. }) => return Err(ManifestError::Missing { location }),
            Err(too_large @ StoreError::TooLarge { .. }) => {
                return Err(ManifestError::Invalid { location, reason: too_large.to_string() })
            }
            Err(source) => return Err(ManifestError::Unreadable { location, source }),
        };
        let invalid = |reason: String| ManifestError::Invalid { location: location.clone(), reason };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Versioned {
            schema_version: u32,
        }
        let versioned: Versioned = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        if versioned.schema_version != MANIFEST_SCHEMA_VERSION {
            return Err(invalid(format!(
                "schemaVersion {} is not the {MANIFEST_SCHEMA_VERSION} this build reads",
                versioned.schema_version
            )));
        }
        let manifest: RunManifest = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        if manifest.run_id != run {
            return Err(invalid(format!("it holds run {} but its key names run {run}", manifest.run_id)));
        }
        Ok(manifest)
    }

    /// Runs whose manifest is published, older than `run`, newest first.
    pub async fn published_runs_before(&self, run: RunId) -> Result<Vec<RunId>, StoreError> {
        let listed = self.store.list(MANIFESTS_PREFIX).await?;
        let mut runs: Vec<RunId> = listed
            .iter()
            .filter_map(|entry| entry.key.strip_prefix(MANIFESTS_PREFIX)?.strip_suffix(".json")?.parse().ok())
            .filter(|earlier| *earlier < run)
            .collect();
        runs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(runs)
    }

    /// The job object at `parts`, which must be the job its key names.
    pub async fn read_job(&self, parts: &JobKeyParts) -> Result<DeliveryJob, DeliveryError> {
        let key = parts.job_key();
        let location = self.store.describe(&key);
        let body = match self.store.get_at_most(&key, CONTROL_OBJECT_MAX_BYTES).await {
            Ok(body) => body,
            Err(StoreError::NotFound { .. }) => {
                return Err(DeliveryError::InvalidJob { location, reason: "it does not exist".to_owned() })
            }
            Err(too_large @ StoreError::TooLarge { .. }) => {
                return Err(DeliveryError::InvalidJob { location, reason: too_large.to_string() })
            }
            Err(source) => return Err(DeliveryError::Staging { action: "read", location, source }),
        };
        let job = decode_job(&body)
            .map_err(|e| DeliveryError::InvalidJob { location: location.clone(), reason: e.to_string() })?;
        if job.key_parts() != *parts {
            return Err(DeliveryError::InvalidJob {
                location,
                reason: format!("it names {}, not the job its key names", echoed_key(&job.job_key())),
            });
        }
        Ok(job)
    }

    /// Creates a job object unless one exists (a repeated fanout creates nothing).
    pub async fn create_job(&self, job: &DeliveryJob) -> Result<PutOutcome, StoreError> {
        self.store.put_if_absent(&job.job_key(), to_json(job), JSON).await
    }

    /// The status of a job, `None` when there is none yet.
    pub async fn read_status(
        &self,
        run: RunId,
        tenant_id: &str,
        feed_id: &str,
    ) -> Result<Option<StatusRecord>, StoreError> {
        let key = status_key(run, tenant_id, feed_id);
        match self.store.get_versioned(&key).await {
            Ok(object) => Ok(Some(StatusRecord {
                status: decode_status(&object.body, run, tenant_id, feed_id),
                version: object.version,
            })),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes a status fanout decided, unless one exists: a repeated event
    /// adds nothing, and never replaces what a deliverer recorded.
    pub async fn record_once(&self, status: &DeliveryStatus) -> Result<PutOutcome, StoreError> {
        let key = status_key(status.run_id, &status.tenant_id, &status.feed_id);
        self.store.put_if_absent(&key, to_json(status), JSON).await
    }

    /// Claims the job at `parts` for the attempt with `token`, replacing
    /// `current` (what [`Self::read_status`] returned) only if it is still
    /// what is stored. `None`: another attempt changed the status first, so
    /// this one must write nothing.
    pub async fn claim(
        &self,
        parts: &JobKeyParts,
        current: Option<&StatusRecord>,
        token: String,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let previous = current.and_then(|record| record.valid().cloned());
        let status = DeliveryStatus::claimed(previous, parts, token, now, expires_at);
        let key = parts.status_key();
        let condition = match current {
            Some(record) => WriteCondition::Unchanged(&record.version),
            None => WriteCondition::Absent,
        };
        match self.store.put_conditional(&key, to_json(&status), JSON, condition).await? {
            ConditionalPut::Written(version) => {
                index_status(self.store, &status).await;
                Ok(Some(ClaimedJob { status, version, key, skipped_parts: 0 }))
            }
            ConditionalPut::ConditionFailed => Ok(None),
        }
    }

    /// Writes `status` (a re-drive counted) over `current` — what
    /// [`Self::read_status`] returned, `None` for no status — only if that is
    /// still what is stored, as a claim is written. `false`: a deliverer (or
    /// another sweeper) changed the status first, so nothing was written.
    pub async fn record_redrive(
        &self,
        parts: &JobKeyParts,
        current: Option<&StatusRecord>,
        status: &DeliveryStatus,
    ) -> Result<bool, StoreError> {
        let condition = match current {
            Some(record) => WriteCondition::Unchanged(&record.version),
            None => WriteCondition::Absent,
        };
        match self.store.put_conditional(&parts.status_key(), to_json(status), JSON, condition).await? {
            ConditionalPut::Written(_) => Ok(true),
            ConditionalPut::ConditionFailed => Ok(false),
        }
    }

    /// Creates the event object unless one exists: the first failure of a
    /// run's delivery makes its `delivery.failed`, later ones add nothing.
    pub async fn create_event(&self, event: &ArrivalEvent) -> Result<PutOutcome, StoreError> {
        self.store.put_if_absent(&event.key_parts().event_key(), to_json(event), JSON).await
    }

    /// Re-writes the job object at `parts` with the very bytes it holds, so
    /// its S3 notification starts the deliverer of its kind again.
    pub async fn rewrite_job(&self, parts: &JobKeyParts) -> Result<(), StoreError> {
        let key = parts.job_key();
        let body = self.store.get(&key).await?;
        self.store.put(&key, body, JSON).await.map(drop)
    }

    /// Records `part`, delivered by the claimed attempt, in its status
    /// (keeping the claim), unless another attempt took the claim over.
    /// After a failed write the stored status is unknown: [`Self::resync`].
    pub async fn record_part(&self, claimed: &mut ClaimedJob, part: DeliveredPart) -> Result<PartRecorded, StoreError> {
        let mut status = claimed.status.clone();
        status.record_part(part);
        let condition = WriteCondition::Unchanged(&claimed.version);
        match self.store.put_conditional(&claimed.key, to_json(&status), JSON, condition).await? {
            ConditionalPut::Written(version) => {
                claimed.status = status;
                claimed.version = version;
                Ok(PartRecorded::Written)
            }
            ConditionalPut::ConditionFailed => Ok(PartRecorded::ClaimLost),
        }
    }

    /// Re-reads the claimed status after a write whose outcome is unknown
    /// (it may have been stored and its answer lost) and adopts what is
    /// stored if the claim is still this attempt's. `false`: another
    /// attempt holds it now.
    pub async fn resync(&self, claimed: &mut ClaimedJob) -> Result<bool, StoreError> {
        let object = self.store.get_versioned(&claimed.key).await?;
        let ours = &claimed.status;
        let stored = decode_status(&object.body, ours.run_id, &ours.tenant_id, &ours.feed_id);
        let token = claimed.status.claim.as_ref().map(|claim| claim.token.as_str());
        match stored {
            Ok(stored) if stored.claim.as_ref().map(|claim| claim.token.as_str()) == token => {
                claimed.status = stored;
                claimed.version = object.version;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Records the outcome of the claimed attempt and releases the claim,
    /// unless another attempt took the claim over meanwhile.
    pub async fn record(
        &self,
        claimed: ClaimedJob,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        result: AttemptResult,
    ) -> Result<Recorded, StoreError> {
        let ClaimedJob { mut status, version, key, skipped_parts } = claimed;
        status.record_attempt(started_at, finished_at, result);
        if let Some(attempt) = status.attempts.last_mut() {
            attempt.skipped_parts = skipped_parts;
        }
        let condition = WriteCondition::Unchanged(&version);
        match self.store.put_conditional(&key, to_json(&status), JSON, condition).await? {
            ConditionalPut::Written(_) => {
                index_status(self.store, &status).await;
                Ok(Recorded::Written(status))
            }
            ConditionalPut::ConditionFailed => self.recorded_by_a_lost_answer(&key, &status).await,
        }
    }

    /// After a failed condition: the status changed since the claim, either
    /// because another attempt took the claim over, or because an earlier
    /// write of this very outcome was stored and only its answer was lost
    /// (the caller retries a write that failed). In the second case the
    /// stored status holds this attempt, same number and times, and is ours.
    async fn recorded_by_a_lost_answer(&self, key: &str, ours: &DeliveryStatus) -> Result<Recorded, StoreError> {
        let Some(attempt) = ours.attempts.last() else { return Ok(Recorded::ClaimLost) };
        let object = self.store.get_versioned(key).await?;
        let stored = decode_status(&object.body, ours.run_id, &ours.tenant_id, &ours.feed_id);
        match stored {
            Ok(stored)
                if stored.attempts.iter().any(|recorded| {
                    recorded.number == attempt.number
                        && recorded.started_at == attempt.started_at
                        && recorded.finished_at == attempt.finished_at
                        && recorded.outcome == attempt.outcome
                }) =>
            {
                Ok(Recorded::Written(stored))
            }
            _ => Ok(Recorded::ClaimLost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::job::tests::{at, job_for, run};
    use crate::delivery::status::DeliveryOutcome;
    use crate::store::{LocalDirStore, ObjectSink};

    #[tokio::test]
    async fn an_outcome_written_again_after_a_lost_answer_is_recognised_as_ours_not_as_a_lost_claim() {
        let (_dir, store) = LocalDirStore::in_temp_dir("staging-record-twice");
        let staging = DeliveryStaging::new(&store);
        let parts = job_for("role").key_parts();
        let now = at("2026-11-19T03:20:00Z");
        let expires = at("2026-11-19T03:35:00Z");
        let claimed = staging.claim(&parts, None, "a".into(), now, expires).await.unwrap().unwrap();
        // The first write is stored; the caller never hears so and writes
        // the same outcome again over the version it claimed.
        let first = staging.record(claimed.clone(), now, now, AttemptResult::Delivered(Vec::new())).await.unwrap();
        assert!(matches!(first, Recorded::Written(_)));
        let again = staging.record(claimed.clone(), now, now, AttemptResult::Delivered(Vec::new())).await.unwrap();
        let Recorded::Written(status) = again else { panic!("taken for a lost claim: {again:?}") };
        assert!(status.is_delivered());
        assert_eq!(status.attempts.len(), 1, "recorded once");

        // A different outcome of the same claim is not ours: the claim was lost.
        let other = staging.record(claimed, now, expires, AttemptResult::Failed("late".into())).await.unwrap();
        assert!(matches!(other, Recorded::ClaimLost), "{other:?}");
    }

    #[tokio::test]
    async fn of_two_attempts_claiming_the_same_status_only_one_wins() {
        let (_dir, store) = LocalDirStore::in_temp_dir("staging-claim");
        let staging = DeliveryStaging::new(&store);
        let parts = job_for("role").key_parts();
        let now = at("2026-11-19T03:20:00Z");
        let expires = at("2026-11-19T03:35:00Z");
        let first = staging.claim(&parts, None, "a".into(), now, expires).await.unwrap();
        let second = staging.claim(&parts, None, "b".into(), now, expires).await.unwrap();
        assert!(first.is_some() && second.is_none());

        let current = staging.read_status(run(), "acme", "role").await.unwrap().unwrap();
        let stale = current.clone();
        let claimed = first.unwrap();
        let recorded = staging.record(claimed, now, now, AttemptResult::Failed("SlowDown".into())).await.unwrap();
        assert!(matches!(recorded, Recorded::Written(ref s) if s.outcome == DeliveryOutcome::Failed));
        // Claiming over a version that is no longer stored fails.
        assert!(staging.claim(&parts, Some(&stale), "c".into(), now, expires).await.unwrap().is_none());
        let latest = staging.read_status(run(), "acme", "role").await.unwrap().unwrap();
        let retry = staging.claim(&parts, Some(&latest), "d".into(), now, expires).await.unwrap().unwrap();
        assert_eq!(retry.status.claim.as_ref().map(|c| c.attempt), Some(2));
    }

    #[tokio::test]
    async fn an_attempt_whose_claim_was_taken_over_records_nothing() {
        let (_dir, store) = LocalDirStore::in_temp_dir("staging-takeover");
        let staging = DeliveryStaging::new(&store);
        let parts = job_for("role").key_parts();
        let slow = staging.claim(&parts, None, "slow".into(), at("2026-11-19T03:20:00Z"), at("2026-11-19T03:21:00Z"));
        let slow = slow.await.unwrap().unwrap();
        let expired = staging.read_status(run(), "acme", "role").await.unwrap().unwrap();
        let late = at("2026-11-19T03:22:00Z");
        let next = staging.claim(&parts, Some(&expired), "next".into(), late, at("2026-11-19T03:37:00Z"));
        assert!(next.await.unwrap().is_some());
        let recorded = staging.record(slow, late, late, AttemptResult::Delivered(Vec::new())).await.unwrap();
        assert_eq!(recorded, Recorded::ClaimLost);
        let stored = staging.read_status(run(), "acme", "role").await.unwrap().unwrap();
        assert_eq!(stored.valid().unwrap().claim.as_ref().map(|c| c.token.as_str()), Some("next"));
    }

    #[tokio::test]
    async fn a_status_that_is_not_this_jobs_is_damaged_not_ignored() {
        let (_dir, store) = LocalDirStore::in_temp_dir("staging-damaged");
        let staging = DeliveryStaging::new(&store);
        let key = status_key(run(), "acme", "role");
        for (body, fragment) in
            [(&b"{not json"[..], "not a status object"), (br#"{"schemaVersion": 7}"#, "schemaVersion 7")]
        {
            store.put(&key, Bytes::copy_from_slice(body), JSON).await.unwrap();
            let record = staging.read_status(run(), "acme", "role").await.unwrap().unwrap();
            let reason = record.status.unwrap_err().to_string();
            assert!(reason.contains(fragment), "{reason}");
        }
        let other = DeliveryStatus::first_record(
            run(),
            "beta",
            "role",
            at("2026-11-19T03:20:00Z"),
            at("2026-11-19T03:20:00Z"),
            AttemptResult::Skipped("x".into()),
        );
        store.put(&key, to_json(&other), JSON).await.unwrap();
        let record = staging.read_status(run(), "acme", "role").await.unwrap().unwrap();
        assert_eq!(
            record.status.unwrap_err(),
            UnusableStatus::OtherJob { run: run(), tenant_id: "beta".into(), feed_id: "role".into() }
        );
        assert_eq!(staging.read_status(run(), "acme", "none").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_manifest_of_another_run_or_schema_is_refused() {
        let (_dir, store) = LocalDirStore::in_temp_dir("staging-manifest");
        let staging = DeliveryStaging::new(&store);
        assert!(matches!(staging.read_manifest(run()).await, Err(ManifestError::Missing { .. })));
        let manifest = |run_id: &str, schema: u32| {
            serde_json::json!({"schemaVersion": schema, "runId": run_id,
                "runTime": "2026-11-19T03:00:00Z", "generatedAt": "2026-11-19T03:04:00Z", "mode": "full",
                "format": "json", "compression": "none",
                "scoring": {"lookbackDays": 28, "halfLifeDays": 7.0, "firstDay": "2026-10-22", "lastDay": "2026-11-18", "daysWithPlays": []},
                "inputs": {"catalogueFiles": 0, "catalogueRows": 0, "playFiles": 0, "playRows": 0, "unknownTrackPlayRows": 0, "unknownTrackPlays": 0},
                "reports": []})
            .to_string()
        };
        let key = run_manifest_key(run());
        store.put(&key, Bytes::from(manifest("20261119030000", 99)), JSON).await.unwrap();
        let error = staging.read_manifest(run()).await.unwrap_err().to_string();
        assert!(error.contains("schemaVersion 99"), "{error}");
        store.put(&key, Bytes::from(manifest("20261115030000", 1)), JSON).await.unwrap();
        let error = staging.read_manifest(run()).await.unwrap_err().to_string();
        assert!(error.contains("holds run 20261115030000"), "{error}");
        store.put(&key, Bytes::from(manifest("20261119030000", 1)), JSON).await.unwrap();
        assert_eq!(staging.read_manifest(run()).await.unwrap().run_id, run());
        assert!(DeliveryError::from(ManifestError::Missing { location: key }).is_permanent());
    }
}
