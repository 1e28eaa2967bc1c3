//! Resuming a file delivery where an earlier attempt of the same job left it
//! (docs/design.md, "Delivery rules"): the attempt that holds the claim records each report part in
//! the job's status object as soon as the part is complete at the
//! destination (`deliveredParts`, a conditional write over its claim), and a
//! later attempt — a Lambda retry, the sweeper, `popularity redeliver` —
//! skips a part whose record matches what it would upload now, and uploads
//! the rest. Customers grant only `s3:PutObject`, so nothing here reads,
//! lists or HEADs their objects: the record is all there is to go on. So a
//! part is skipped only when everything about it is the same — destination
//! bucket, prefix and name, connector name and type, format and
//! compression, and the staging file's key, size and SHA-256 as the run
//! manifest (or the delta) lists it — never on a partial match, and an
//! attempt that has lost its claim records nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::delivery::error::DeliveryError;
use crate::delivery::staging::{ClaimedJob, DeliveryStaging, PartRecorded};
use crate::delivery::status::{DeliveredPart, PartOrigin};
use crate::report_writer::PartSummary;
use crate::store::ObjectStore;

/// Where an attempt learns which parts it may skip and records the parts it
/// delivers.
pub trait PartLedger: Send + Sync {
    /// The part an earlier attempt delivered that stands in for the one this
    /// attempt would deliver as `origin`: this attempt does not upload it
    /// again, and counts it as skipped. `None`: upload it.
    fn skip(&self, origin: &PartOrigin) -> Option<DeliveredPart>;

    /// Records that this attempt delivered `written` as `origin`. An error
    /// stops the delivery (the claim was lost, or the status cannot be
    /// written or read back).
    fn record(
        &self,
        origin: PartOrigin,
        written: &PartSummary,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Whether the part an earlier attempt recorded may stand in for the one
/// this attempt would deliver as `wanted`: only when everything about them
/// is the same (see the module documentation).
pub fn may_skip(recorded: &DeliveredPart, wanted: &PartOrigin) -> bool {
    recorded.origin == *wanted
}

/// A ledger that skips nothing and records nothing: for destinations that
/// deal with retries otherwise (GCS counts an object finalized by an earlier
/// attempt as written) and for callers without a claim.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResume;

impl PartLedger for NoResume {
    fn skip(&self, _origin: &PartOrigin) -> Option<DeliveredPart> {
        None
    }

    async fn record(&self, _origin: PartOrigin, _written: &PartSummary) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// The ledger of a claimed job: its status object in staging.
pub struct StatusLedger<'a, S> {
    staging: DeliveryStaging<'a, S>,
    /// What earlier attempts recorded, as the claim found it.
    earlier: Vec<DeliveredPart>,
    claimed: Mutex<ClaimedJob>,
    skipped: AtomicU32,
}

impl<'a, S: ObjectStore> StatusLedger<'a, S> {
    pub fn new(staging: DeliveryStaging<'a, S>, claimed: ClaimedJob) -> Self {
        let earlier = claimed.status.delivered_parts.clone();
        StatusLedger { staging, earlier, claimed: Mutex::new(claimed), skipped: AtomicU32::new(0) }
    }

    /// The claim, with the parts recorded and skipped so far, to record the
    /// attempt's outcome over.
    pub fn into_claimed(self) -> ClaimedJob {
        let mut claimed = self.claimed.into_inner();
        claimed.skipped_parts = self.skipped.into_inner();
        claimed
    }
}

impl<S: ObjectStore> PartLedger for StatusLedger<'_, S> {
    fn skip(&self, origin: &PartOrigin) -> Option<DeliveredPart> {
        let recorded = self.earlier.iter().find(|recorded| may_skip(recorded, origin))?;
        self.skipped.fetch_add(1, Ordering::SeqCst);
        info!(key = %origin.key, attempt = recorded.attempt, "skipping a part an earlier attempt delivered");
        Some(recorded.clone())
    }

    async fn record(&self, origin: PartOrigin, written: &PartSummary) -> Result<(), DeliveryError> {
        let mut claimed = self.claimed.lock().await;
        let status = self.staging.describe(claimed.status_key());
        let key = origin.key.clone();
        let part = DeliveredPart {
            origin,
            rows: written.rows,
            bytes: written.bytes,
            sha256: written.sha256.clone(),
            attempt: claimed.attempt(),
        };
        let error = match self.staging.record_part(&mut claimed, part).await {
            Ok(PartRecorded::Written) => return Ok(()),
            Ok(PartRecorded::ClaimLost) => return Err(DeliveryError::ClaimLost { status }),
            Err(error) => error,
        };
        // The write may have been stored and its answer lost: the claim's
        // version is unknown until the status is read back.
        match self.staging.resync(&mut claimed).await {
            Ok(true) => {
                warn!(%key, %status, %error, "could not record a delivered part; a later attempt uploads it again");
                Ok(())
            }
            Ok(false) => Err(DeliveryError::ClaimLost { status }),
            Err(_) => {
                Err(DeliveryError::Staging { action: "record a delivered part in", location: status, source: error })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::delivery::job::tests::{at, job_for};
    use crate::delivery::status::{DeliveryStatus, SourcePart};
    use crate::domain::{Compression, Format};
    use crate::store::{
        ConditionalPut, LocalDirStore, ObjectEntry, ObjectSink, StoreError, UploadReceipt, VersionedObject,
        WriteCondition,
    };

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn origin() -> PartOrigin {
        PartOrigin {
            key: "s3://acme-data/massive/track_popularity/20261119030000/part-001.json".into(),
            connector: "lake".into(),
            connector_type: "s3-role".into(),
            format: Format::Json,
            compression: Compression::None,
            source: SourcePart {
                key: "reports/track_popularity/20261119030000/part-001.json".into(),
                bytes: 1_000,
                sha256: SHA.into(),
            },
        }
    }

    fn recorded(origin: PartOrigin) -> DeliveredPart {
        DeliveredPart { origin, rows: 10, bytes: 1_000, sha256: SHA.into(), attempt: 1 }
    }

    #[test]
    fn a_part_is_skipped_only_when_destination_connector_encoding_and_staging_bytes_are_all_the_same() {
        let earlier = recorded(origin());
        assert!(may_skip(&earlier, &origin()), "the same part at the same place");

        let changes: [(&str, fn(&mut PartOrigin)); 10] = [
            ("another bucket", |o| {
                o.key = "s3://acme-new/massive/track_popularity/20261119030000/part-001.json".into()
            }),
            ("another prefix", |o| o.key = "s3://acme-data/other/track_popularity/20261119030000/part-001.json".into()),
            ("another name", |o| o.key = "s3://acme-data/massive/track_popularity/20261119030000/part-002.json".into()),
            ("another connector", |o| o.connector = "lake2".into()),
            ("another connector type", |o| o.connector_type = "s3-keys".into()),
            ("another format", |o| o.format = Format::Tsv),
            ("another compression", |o| o.compression = Compression::Gzip),
            ("another SHA-256", |o| o.source.sha256 = SHA.replace('9', "8")),
            ("another size", |o| o.source.bytes += 1),
            ("another staging file", |o| o.source.key = "deltas/x/part-001.json".into()),
        ];
        for (what, change) in changes {
            let mut wanted = origin();
            change(&mut wanted);
            assert!(!may_skip(&earlier, &wanted), "{what}: must be uploaded again");
        }
    }

    async fn claimed_ledger(store: &LocalDirStore, earlier: Vec<DeliveredPart>) -> StatusLedger<'_, LocalDirStore> {
        let staging = DeliveryStaging::new(store);
        let parts = job_for("role").key_parts();
        let mut previous = DeliveryStatus::claimed(
            None,
            &parts,
            "first".into(),
            at("2026-11-19T03:20:00Z"),
            at("2026-11-19T03:35:00Z"),
        );
        for part in earlier {
            previous.record_part(part);
        }
        previous.record_attempt(
            at("2026-11-19T03:20:00Z"),
            at("2026-11-19T03:21:00Z"),
            crate::delivery::status::AttemptResult::Failed("cut".into()),
        );
        store
            .put(&parts.status_key(), Bytes::from(serde_json::to_vec(&previous).unwrap()), "application/json")
            .await
            .unwrap();
        let current = staging.read_status(parts.run_id, &parts.tenant_id, &parts.feed_id).await.unwrap();
        let claimed = staging
            .claim(&parts, current.as_ref(), "second".into(), at("2026-11-19T04:20:00Z"), at("2026-11-19T04:35:00Z"))
            .await
            .unwrap()
            .unwrap();
        StatusLedger::new(staging, claimed)
    }

    #[tokio::test]
    async fn an_attempt_skips_what_an_earlier_one_recorded_records_what_it_delivers_and_counts_the_skips() {
        let (_dir, store) = LocalDirStore::in_temp_dir("resume-ledger");
        let ledger = claimed_ledger(&store, vec![recorded(origin())]).await;
        assert_eq!(ledger.skip(&origin()).map(|p| p.attempt), Some(1));
        let mut changed = origin();
        changed.source.sha256 = SHA.replace('9', "8");
        assert!(ledger.skip(&changed).is_none(), "a changed staging part is uploaded again");

        let mut second = origin();
        second.key = second.key.replace("part-001", "part-002");
        let written = PartSummary { key: "x".into(), rows: 5, bytes: 600, sha256: SHA.into() };
        ledger.record(second.clone(), &written).await.unwrap();
        let parts = job_for("role").key_parts();
        let stored: DeliveryStatus = serde_json::from_slice(&store.get(&parts.status_key()).await.unwrap()).unwrap();
        assert_eq!(stored.delivered_parts.len(), 2, "recorded at once, beside the earlier part");
        assert_eq!((stored.delivered_parts[1].attempt, stored.delivered_parts[1].bytes), (2, 600));
        assert_eq!(stored.claim.as_ref().map(|c| c.token.as_str()), Some("second"), "the claim is kept");

        // The outcome is recorded over the version the part's write left.
        let claimed = ledger.into_claimed();
        assert_eq!(claimed.skipped_parts, 1);
        let staging = DeliveryStaging::new(&store);
        let at = at("2026-11-19T04:21:00Z");
        let recorded = staging
            .record(claimed, at, at, crate::delivery::status::AttemptResult::Delivered(Vec::new()))
            .await
            .unwrap();
        let crate::delivery::staging::Recorded::Written(status) = recorded else { panic!("claim lost: {recorded:?}") };
        assert_eq!(status.attempts[1].skipped_parts, 1);
        assert_eq!(status.delivered_parts.len(), 2);
    }

    /// A local store whose next conditional write is stored but answered
    /// with an error, as when the connection drops before S3's answer.
    struct AnswerLost {
        inner: LocalDirStore,
        lose_next: std::sync::atomic::AtomicBool,
    }

    impl ObjectSink for AnswerLost {
        type Upload = crate::store::LocalUpload;

        async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
            self.inner.put(key, body, content_type).await
        }

        async fn start_upload(&self, key: &str, content_type: &str) -> Result<Self::Upload, StoreError> {
            self.inner.start_upload(key, content_type).await
        }

        fn describe(&self, key: &str) -> String {
            self.inner.describe(key)
        }
    }

    impl ObjectStore for AnswerLost {
        type Reader = crate::store::LocalReader;

        async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
            self.inner.list(prefix).await
        }

        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.inner.get(key).await
        }

        async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
            self.inner.get_versioned(key).await
        }

        async fn open(&self, key: &str) -> Result<Self::Reader, StoreError> {
            self.inner.open(key).await
        }

        async fn put_conditional(
            &self,
            key: &str,
            body: Bytes,
            content_type: &str,
            condition: WriteCondition<'_>,
        ) -> Result<ConditionalPut, StoreError> {
            let written = self.inner.put_conditional(key, body, content_type, condition).await?;
            if self.lose_next.swap(false, Ordering::SeqCst) {
                let detail = "connection reset before the answer".to_owned();
                return Err(StoreError::S3 { operation: "PutObject", location: self.describe(key), detail });
            }
            Ok(written)
        }
    }

    #[tokio::test]
    async fn a_part_record_whose_answer_was_lost_is_read_back_and_the_outcome_is_still_recorded() {
        let (_dir, store) = LocalDirStore::in_temp_dir("resume-answer-lost");
        let claimed = claimed_ledger(&store, Vec::new()).await.into_claimed();
        let store = AnswerLost { inner: store, lose_next: std::sync::atomic::AtomicBool::new(true) };
        let ledger = StatusLedger::new(DeliveryStaging::new(&store), claimed);
        let written = PartSummary { key: "x".into(), rows: 5, bytes: 600, sha256: SHA.into() };
        ledger.record(origin(), &written).await.unwrap();

        // The claim's version is the one the lost answer would have given:
        // the outcome is written over it, not taken for a lost claim.
        let staging = DeliveryStaging::new(&store);
        let at = at("2026-11-19T04:21:00Z");
        let recorded = staging
            .record(ledger.into_claimed(), at, at, crate::delivery::status::AttemptResult::Delivered(Vec::new()))
            .await
            .unwrap();
        let crate::delivery::staging::Recorded::Written(status) = recorded else { panic!("claim lost: {recorded:?}") };
        assert_eq!(status.delivered_parts.len(), 1, "the part's record was stored");
        assert!(status.is_delivered());
    }

    #[tokio::test]
    async fn an_attempt_that_lost_its_claim_records_nothing_and_stops() {
        let (_dir, store) = LocalDirStore::in_temp_dir("resume-lost");
        let ledger = claimed_ledger(&store, Vec::new()).await;
        // Another attempt took the claim over meanwhile.
        let parts = job_for("role").key_parts();
        let staging = DeliveryStaging::new(&store);
        let current = staging.read_status(parts.run_id, &parts.tenant_id, &parts.feed_id).await.unwrap();
        let other = staging.claim(
            &parts,
            current.as_ref(),
            "third".into(),
            at("2026-11-19T05:00:00Z"),
            at("2026-11-19T05:15:00Z"),
        );
        assert!(other.await.unwrap().is_some());
        let before = store.get(&parts.status_key()).await.unwrap();

        let written = PartSummary { key: "x".into(), rows: 5, bytes: 600, sha256: SHA.into() };
        let error = ledger.record(origin(), &written).await.unwrap_err();
        assert!(matches!(error, DeliveryError::ClaimLost { .. }), "{error}");
        assert!(!error.is_permanent());
        assert_eq!(store.get(&parts.status_key()).await.unwrap(), before, "nothing written");
    }
}
