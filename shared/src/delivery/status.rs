//! The status object `status/<runId>/<tenantId>/<feedId>.json`
//! (docs/design.md, "Reports and layouts" and "Delivery rules"): every
//! attempt at one job, where the latest left it, and the claim of the attempt
//! under way. One invocation at a time delivers a job: it first writes a
//! claim (outcome `in-progress`, with the moment it expires — when the
//! invocation's time is up) by a conditional write, and records its outcome
//! over that claim the same way; `delivered` is final. While it holds the
//! claim, an attempt that delivers files records each part as it completes
//! (`deliveredParts`), so a later attempt of the same job can skip it
//! ([`crate::delivery::resume`]). Pure types, no I/O:
//! [`crate::delivery::staging`] reads and writes them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::job::DeliveryPlan;
use crate::delivery::keys::JobKeyParts;
use crate::domain::{Compression, Format, RunId};

/// The only `schemaVersion` of status objects this build writes and reads.
pub const DELIVERY_STATUS_SCHEMA_VERSION: u32 = 1;

/// How a delivery, or one attempt at it, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryOutcome {
    /// Every object and the destination `_manifest.json` were written.
    Delivered,
    /// Failed in a way a retry may fix (network, throttling, a destination
    /// that refuses access or is missing: the customer can fix those).
    Failed,
    /// Deliberately not delivered (for instance the tenant was disabled since fanout).
    Skipped,
    /// The job cannot succeed however often it is retried (unreadable job,
    /// invalid secret or manifest, a report the run lacks).
    Invalid,
    /// An attempt holds the claim and has not recorded its outcome yet.
    InProgress,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Skipped => "skipped",
            DeliveryOutcome::Invalid => "invalid",
            DeliveryOutcome::InProgress => "in-progress",
        }
    }
}

/// Whose move it is after a failed delivery: the customer's (their role,
/// bucket policy, keys, spreadsheet sharing — only they can fix it) or
/// ours (staging, our services, our configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blame {
    Customer,
    Provider,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Customer => "customer",
            Blame::Provider => "provider",
        }
    }
}

/// What one attempt did, as the deliverer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The objects written, destination `_manifest.json` included.
    Delivered(Vec<DeliveredObject>),
    Failed(String),
    /// Why nothing was delivered.
    Skipped(String),
    Invalid(String),
}

/// One invocation of a deliverer on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: DeliveryOutcome,
    /// Why the attempt did not deliver; `None` when it did.
    pub error: Option<String>,
    /// Parts this attempt did not upload because an earlier attempt of the
    /// job had delivered them (`deliveredParts`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_parts: u32,
}

/// The attempt that holds the job. It expires when the invocation that
/// wrote it can no longer be running (its deadline), so a killed attempt's
/// claim is taken over by the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// The number the attempt will have in `attempts`.
    pub attempt: u32,
    /// Unique per attempt, so an attempt can tell its own claim from another's.
    pub token: String,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Claim {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// An object written at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredObject {
    pub key: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// CRC32C the destination computed (base64), where it reports one (GCS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// MD5 the destination computed (base64), where it reports one (GCS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The destination already held this object, finalized by an earlier
    /// attempt of the same run (names are deterministic and a published run
    /// never changes), so it was not written again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_existed: bool,
    /// An earlier attempt of this job delivered this part (its entry in
    /// `deliveredParts` says which), so this attempt did not upload it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Rows the object holds, where the deliverer counts them (a report
    /// file, a spreadsheet tab); `None` for a manifest or a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl DeliveredObject {
    pub fn new(key: String, bytes: u64, sha256: String) -> DeliveredObject {
        DeliveredObject {
            key,
            bytes,
            sha256,
            crc32c: None,
            md5: None,
            already_existed: false,
            skipped: false,
            rows: None,
        }
    }

    /// The same object, holding `rows` rows.
    pub fn with_rows(mut self, rows: u64) -> DeliveredObject {
        self.rows = Some(rows);
        self
    }
}

/// What a report part delivered to a destination was made from and written
/// through: an earlier attempt's part may stand in for this attempt's only
/// when all of it is the same ([`crate::delivery::resume::may_skip`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartOrigin {
    /// The destination object: bucket, prefix and name (`s3://bucket/prefix/…`).
    pub key: String,
    /// The job's connector, by name and type.
    pub connector: String,
    pub connector_type: String,
    /// The encoding written.
    pub format: Format,
    pub compression: Compression,
    /// The staging file it was made from, as the run manifest (or the
    /// delta) lists it.
    pub source: SourcePart,
}

/// A staging file as the run manifest (or the delta) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourcePart {
    pub key: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A part an attempt delivered, recorded in the status as soon as it was
/// complete at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredPart {
    #[serde(flatten)]
    pub origin: PartOrigin,
    /// What the destination object holds (after any conversion).
    pub rows: u64,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// The attempt that uploaded it.
    pub attempt: u32,
}

/// `status/<runId>/<tenantId>/<feedId>.json`: every attempt at one job and
/// where the latest left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    pub schema_version: u32,
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
    /// The outcome of the latest attempt, or `in-progress` while one holds the claim.
    pub outcome: DeliveryOutcome,
    /// Finished attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// What the delivered attempt wrote; empty until one delivers.
    pub objects: Vec<DeliveredObject>,
    /// The error of the latest attempt that had one. Kept after a later
    /// success, so a delivered status still shows why it needed a retry.
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The attempt under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// What the job delivers (`mode`, `baseRunId`, `fullReason`), once an
    /// attempt has read it; absent in statuses fanout wrote without a job.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub plan: Option<DeliveryPlan>,
    /// Times the job object was re-written to start another attempt after
    /// the deliverer's own retries were over (the sweeper, `popularity
    /// redeliver`); bounded by the sweeper's `MAX_REDRIVES`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
    /// When the job was last re-driven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_redrive_at: Option<DateTime<Utc>>,
    /// Every part an attempt of this job delivered, recorded as it
    /// completed, by destination key (a few per report): what a later
    /// attempt may skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered_parts: Vec<DeliveredPart>,
    /// Whose move the latest failure was; kept after a later success, as
    /// `lastError` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<Blame>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeliveryStatus {
    fn empty(run_id: RunId, tenant_id: &str, feed_id: &str, at: DateTime<Utc>) -> DeliveryStatus {
        DeliveryStatus {
            schema_version: DELIVERY_STATUS_SCHEMA_VERSION,
            run_id,
            tenant_id: tenant_id.to_owned(),
            feed_id: feed_id.to_owned(),
            outcome: DeliveryOutcome::InProgress,
            attempts: Vec::new(),
            objects: Vec::new(),
            last_error: None,
            updated_at: at,
            claim: None,
            plan: None,
            redrives: 0,
            last_redrive_at: None,
            delivered_parts: Vec::new(),
            blame: None,
        }
    }

    /// The status of a job no deliverer ever started (its event was lost, or
    /// expired in Lambda's queue), recorded as `failed` with `reason` when
    /// the job is first re-driven, so the re-drive is counted.
    pub fn never_started(parts: &JobKeyParts, reason: String, at: DateTime<Utc>) -> DeliveryStatus {
        let mut status = DeliveryStatus::empty(parts.run_id, &parts.tenant_id, &parts.feed_id, at);
        status.outcome = DeliveryOutcome::Failed;
        status.last_error = Some(reason);
        status
    }

    /// Counts one more re-drive at `at`.
    pub fn count_redrive(&mut self, at: DateTime<Utc>) {
        self.redrives = self.redrives.saturating_add(1);
        self.last_redrive_at = Some(at);
    }

    /// The status after the first attempt for a tenant and feed of a run,
    /// also for outcomes fanout records without a job (invalid secret,
    /// disabled tenant, connector not supported yet, feed not due).
    pub fn first_record(
        run_id: RunId,
        tenant_id: &str,
        feed_id: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        result: AttemptResult,
    ) -> DeliveryStatus {
        let mut status = DeliveryStatus::empty(run_id, tenant_id, feed_id, finished_at);
        status.record_attempt(started_at, finished_at, result);
        status
    }

    /// `previous` (or a new status for the job at `parts`) claimed by the
    /// attempt with `token` until `expires_at`.
    pub fn claimed(
        previous: Option<DeliveryStatus>,
        parts: &JobKeyParts,
        token: String,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> DeliveryStatus {
        let mut status =
            previous.unwrap_or_else(|| DeliveryStatus::empty(parts.run_id, &parts.tenant_id, &parts.feed_id, now));
        let attempt = u32::try_from(status.attempts.len()).map_or(u32::MAX, |n| n.saturating_add(1));
        status.claim = Some(Claim { attempt, token, claimed_at: now, expires_at });
        status.outcome = DeliveryOutcome::InProgress;
        status.updated_at = now;
        status
    }

    /// Whether the job is done: a deliverer that finds this does nothing
    /// (docs/design.md, "Delivery rules").
    pub fn is_delivered(&self) -> bool {
        self.outcome == DeliveryOutcome::Delivered
    }

    /// The claim of an attempt that may still be running at `now`.
    pub fn live_claim(&self, now: DateTime<Utc>) -> Option<&Claim> {
        self.claim.as_ref().filter(|claim| claim.is_live(now))
    }

    /// Append the finished attempt, make it the current outcome and release
    /// the claim.
    pub fn record_attempt(&mut self, started_at: DateTime<Utc>, finished_at: DateTime<Utc>, result: AttemptResult) {
        let (outcome, error) = match result {
            AttemptResult::Delivered(objects) => {
                self.objects = objects;
                (DeliveryOutcome::Delivered, None)
            }
            AttemptResult::Failed(error) => (DeliveryOutcome::Failed, Some(error)),
            AttemptResult::Skipped(reason) => (DeliveryOutcome::Skipped, Some(reason)),
            AttemptResult::Invalid(error) => (DeliveryOutcome::Invalid, Some(error)),
        };
        let number = match self.claim.take() {
            Some(claim) => claim.attempt,
            None => u32::try_from(self.attempts.len()).map_or(u32::MAX, |n| n.saturating_add(1)),
        };
        if error.is_some() {
            self.last_error.clone_from(&error);
        }
        self.attempts.push(Attempt { number, started_at, finished_at, outcome, error, skipped_parts: 0 });
        self.outcome = outcome;
        self.updated_at = finished_at;
    }

    /// Records a delivered part, replacing what was recorded at its key.
    pub fn record_part(&mut self, part: DeliveredPart) {
        match self.delivered_parts.iter_mut().find(|recorded| recorded.origin.key == part.origin.key) {
            Some(recorded) => *recorded = part,
            None => self.delivered_parts.push(part),
        }
    }

    /// Bytes written at the destination.
    pub fn total_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::job::tests::{at, job_for};

    fn object(key: &str, bytes: u64) -> DeliveredObject {
        DeliveredObject::new(key.into(), bytes, "ab".repeat(32))
    }

    #[test]
    fn attempts_accumulate_and_the_latest_sets_the_outcome() {
        let parts = job_for("role").key_parts();
        let mut status =
            DeliveryStatus::claimed(None, &parts, "t1".into(), at("2026-11-19T03:20:01Z"), at("2026-11-19T03:35:01Z"));
        assert_eq!(status.outcome, DeliveryOutcome::InProgress);
        assert!(status.live_claim(at("2026-11-19T03:30:00Z")).is_some());
        assert!(status.live_claim(at("2026-11-19T03:35:01Z")).is_none(), "a claim ends at its expiry");
        status.record_attempt(
            at("2026-11-19T03:20:01Z"),
            at("2026-11-19T03:20:09Z"),
            AttemptResult::Failed("AccessDenied assuming the role".into()),
        );
        assert!(!status.is_delivered());
        assert_eq!(status.claim, None, "recording releases the claim");
        assert_eq!(status.outcome, DeliveryOutcome::Failed);
        assert_eq!(status.last_error.as_deref(), Some("AccessDenied assuming the role"));

        let mut status = DeliveryStatus::claimed(
            Some(status),
            &parts,
            "t2".into(),
            at("2026-11-19T03:21:00Z"),
            at("2026-11-19T03:36:00Z"),
        );
        assert_eq!(status.claim.as_ref().map(|c| c.attempt), Some(2));
        status.record_attempt(
            at("2026-11-19T03:21:00Z"),
            at("2026-11-19T03:21:05Z"),
            AttemptResult::Failed("SlowDown".into()),
        );
        let objects = vec![
            object("massive/track_popularity/20261119030000/part-001.json.gz", 100),
            object("massive/track_popularity/20261119030000/_manifest.json", 23),
        ];
        status.record_attempt(
            at("2026-11-19T03:23:00Z"),
            at("2026-11-19T03:23:30Z"),
            AttemptResult::Delivered(objects.clone()),
        );

        assert!(status.is_delivered());
        assert_eq!(status.attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            status.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            [DeliveryOutcome::Failed, DeliveryOutcome::Failed, DeliveryOutcome::Delivered]
        );
        assert_eq!(status.attempts[2].error, None);
        assert_eq!(status.last_error.as_deref(), Some("SlowDown"), "the last error stays visible after success");
        assert_eq!(status.objects, objects);
        assert_eq!(status.total_bytes(), 123);
        assert_eq!(status.updated_at, at("2026-11-19T03:23:30Z"));
    }

    #[test]
    fn status_json_uses_the_documented_names_and_round_trips() {
        let parts = job_for("role").key_parts();
        let mut status = DeliveryStatus::first_record(
            parts.run_id,
            &parts.tenant_id,
            &parts.feed_id,
            at("2026-11-19T03:20:01Z"),
            at("2026-11-19T03:20:09Z"),
            AttemptResult::Invalid("connector \"lake\" is now s3-keys, the job was made for s3-role".into()),
        );
        status.record_attempt(
            at("2026-11-19T03:21:00Z"),
            at("2026-11-19T03:21:01Z"),
            AttemptResult::Skipped("tenant disabled".into()),
        );
        let json = serde_json::to_string(&status).unwrap();
        let back: DeliveryStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);

        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["outcome"], "skipped");
        assert_eq!(value["attempts"][0]["outcome"], "invalid");
        assert_eq!(value["attempts"][1]["startedAt"], "2026-11-19T03:21:00Z");
        assert_eq!(value["lastError"], "tenant disabled");
        assert_eq!(value["updatedAt"], "2026-11-19T03:21:01Z");
        assert!(value.get("claim").is_none(), "no claim once recorded: {json}");
        for field in ["schemaVersion", "runId", "tenantId", "feedId", "objects", "attempts"] {
            assert!(value.get(field).is_some(), "{field} missing from {json}");
        }

        let claimed =
            DeliveryStatus::claimed(None, &parts, "tok".into(), at("2026-11-19T03:20:01Z"), at("2026-11-19T03:35:01Z"));
        let value = serde_json::to_value(&claimed).unwrap();
        assert_eq!(value["outcome"], "in-progress");
        assert_eq!(value["claim"]["expiresAt"], "2026-11-19T03:35:01Z");
        assert_eq!(value["claim"]["attempt"], 1);
    }
}
