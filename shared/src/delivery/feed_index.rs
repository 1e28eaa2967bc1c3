//! The per-feed delivery index `feed-index/<tenantId>/<feedId>.json`: the
//! feed's recent deliveries, newest run first, one entry per run, so that a
//! feed's history is one read instead of a status object per run (the
//! self-service dashboard shows 100 runs). Status objects stay the truth:
//! every entry is a summary of one, written by [`super::staging`] right
//! after the status itself, and an entry never turns a `delivered` run back
//! into anything else. Writes are conditional and retried a few times; one
//! that still fails is logged and given up, never failing the delivery — at
//! worst the index lags its status objects until the run's next write.
//! Each entry keeps where the run went, so that a feed delivered to a
//! destination is **verified** there ([`verified_feeds`]): of two tenants'
//! feeds into one place, a verified one keeps it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::delivery::status::{Blame, DeliveryOutcome, DeliveryStatus};
use crate::domain::RunId;
use crate::manifest::DeliveryMode;
use crate::store::{ConditionalPut, ObjectStore, ObjectVersion, StoreError, WriteCondition};
use crate::tenant::conflicts::feeds_in_overlaps;

/// Where every feed's index lives in the staging bucket.
pub const FEED_INDEX_PREFIX: &str = "feed-index/";
/// The only `schemaVersion` of feed indexes this build writes and reads.
pub const FEED_INDEX_SCHEMA_VERSION: u32 = 1;
/// Runs an index keeps: two a week for about a year.
pub const FEED_INDEX_RUNS: usize = 100;
/// Conditional writes tried before an update is given up.
const WRITES: u32 = 5;

/// `feed-index/<tenantId>/<feedId>.json`.
pub fn feed_index_key(tenant_id: &str, feed_id: &str) -> String {
    format!("{FEED_INDEX_PREFIX}{tenant_id}/{feed_id}.json")
}

/// `feed-index/<tenantId>/`: where every index of the tenant's feeds is,
/// and no other tenant's.
pub fn tenant_feed_index_prefix(tenant_id: &str) -> String {
    format!("{FEED_INDEX_PREFIX}{tenant_id}/")
}

/// The index of one feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedIndex {
    pub schema_version: u32,
    pub tenant_id: String,
    pub feed_id: String,
    /// Newest run first, at most [`FEED_INDEX_RUNS`].
    pub deliveries: Vec<IndexedDelivery>,
}

/// One run's delivery of the feed, as its status object last said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedDelivery {
    pub run_id: RunId,
    pub outcome: DeliveryOutcome,
    pub updated_at: DateTime<Utc>,
    /// Finished attempts.
    pub attempts: u32,
    /// Objects written, the destination's manifest included.
    pub objects: u32,
    pub bytes: u64,
    /// Rows of the files written, where the deliverer counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeliveryMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run_id: Option<RunId>,
    /// Why a delta feed's delivery was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// The error of the latest attempt that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
    /// Whose move the latest failure was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<Blame>,
    /// Where the run was delivered and which reports (the job's target,
    /// `s3://bucket/prefix track,artist`): a `delivered` entry verifies the
    /// feed at that destination ([`verified_feeds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl IndexedDelivery {
    /// The summary of `status`.
    pub fn of(status: &DeliveryStatus) -> IndexedDelivery {
        let rows = status
            .objects
            .iter()
            .filter_map(|object| object.rows)
            .fold(None, |sum: Option<u64>, rows| Some(sum.unwrap_or(0).saturating_add(rows)));
        IndexedDelivery {
            run_id: status.run_id,
            outcome: status.outcome,
            updated_at: status.updated_at,
            attempts: u32::try_from(status.attempts.len()).unwrap_or(u32::MAX),
            objects: u32::try_from(status.objects.len()).unwrap_or(u32::MAX),
            bytes: status.total_bytes(),
            rows,
            mode: status.plan.as_ref().map(|plan| plan.mode),
            base_run_id: status.plan.as_ref().and_then(|plan| plan.base_run_id),
            full_reason: status.plan.as_ref().and_then(|plan| plan.full_reason.clone()),
            last_error: status.last_error.clone(),
            redrives: status.redrives,
            blame: status.blame,
            target: status.plan.as_ref().and_then(|plan| plan.target.clone()),
        }
    }
}

impl FeedIndex {
    /// Whether a run of the feed was delivered to `destination` (as
    /// `FeedDestination::describe` gives it: `s3://bucket/prefix`), among
    /// the runs the index keeps.
    pub fn delivered_to(&self, destination: &str) -> bool {
        self.deliveries.iter().any(|delivery| {
            delivery.outcome == DeliveryOutcome::Delivered
                && delivery
                    .target
                    .as_deref()
                    .and_then(|target| target.rsplit_once(' '))
                    .is_some_and(|(place, _reports)| place == destination)
        })
    }
}

/// The (tenant id, feed id) of every feed, among those that overlap
/// another tenant's ([`crate::tenant::conflicts::feeds_in_overlaps`]; usually none), that is
/// **verified** at its current destination: its index holds a run
/// delivered there. What [`conflicts_across_verified`] takes. Only those
/// feeds' indexes are read. An index this build cannot read counts as not
/// verified (and is logged); a failed read is an error.
pub async fn verified_feeds<S: ObjectStore>(
    store: &S,
    tenants: &[&crate::tenant::TenantConfig],
) -> Result<std::collections::BTreeSet<(String, String)>, FeedIndexError> {
    let mut verified = std::collections::BTreeSet::new();
    for (tenant_id, feed_id, destination) in feeds_in_overlaps(tenants) {
        match read_feed_index(store, &tenant_id, &feed_id).await {
            Ok(index) if index.delivered_to(&destination) => {
                verified.insert((tenant_id, feed_id));
            }
            Ok(_) => {}
            Err(error @ FeedIndexError::Unusable { .. }) => {
                warn!(%error, "a delivery index that cannot be read counts as no verified delivery");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(verified)
}

impl FeedIndex {
    fn empty(tenant_id: &str, feed_id: &str) -> FeedIndex {
        FeedIndex {
            schema_version: FEED_INDEX_SCHEMA_VERSION,
            tenant_id: tenant_id.to_owned(),
            feed_id: feed_id.to_owned(),
            deliveries: Vec::new(),
        }
    }

    /// Puts `entry` in its run's place. `false` when nothing changes: the
    /// run's entry is already `delivered` (final), or is newer than `entry`.
    pub fn upsert(&mut self, entry: IndexedDelivery) -> bool {
        match self.deliveries.iter_mut().find(|known| known.run_id == entry.run_id) {
            Some(known) if known.outcome == DeliveryOutcome::Delivered => false,
            Some(known) if known.updated_at > entry.updated_at => false,
            Some(known) if *known == entry => false,
            Some(known) => {
                *known = entry;
                true
            }
            None => {
                self.deliveries.push(entry);
                self.deliveries.sort_by(|a, b| b.run_id.cmp(&a.run_id));
                self.deliveries.truncate(FEED_INDEX_RUNS);
                true
            }
        }
    }
}

/// Why an index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedIndexError {
    #[error("could not read the delivery index {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("the delivery index {key} is not one this build reads: {reason}")]
    Unusable { key: String, reason: String },
}

/// The index of a feed; an empty one when the feed has none yet.
pub async fn read_feed_index<S: ObjectStore>(
    store: &S,
    tenant_id: &str,
    feed_id: &str,
) -> Result<FeedIndex, FeedIndexError> {
    let key = feed_index_key(tenant_id, feed_id);
    match store.get(&key).await {
        Ok(body) => decode(&key, &body),
        Err(StoreError::NotFound { .. }) => Ok(FeedIndex::empty(tenant_id, feed_id)),
        Err(source) => Err(FeedIndexError::Read { key, source }),
    }
}

/// The index of a feed and the version of it read; `None` when the feed
/// has none yet.
pub async fn read_versioned_feed_index<S: ObjectStore>(
    store: &S,
    tenant_id: &str,
    feed_id: &str,
) -> Result<Option<(FeedIndex, ObjectVersion)>, FeedIndexError> {
    let key = feed_index_key(tenant_id, feed_id);
    match store.get_versioned(&key).await {
        Ok(object) => Ok(Some((decode(&key, &object.body)?, object.version))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(source) => Err(FeedIndexError::Read { key, source }),
    }
}

fn decode(key: &str, body: &[u8]) -> Result<FeedIndex, FeedIndexError> {
    let index: FeedIndex = serde_json::from_slice(body)
        .map_err(|error| FeedIndexError::Unusable { key: key.to_owned(), reason: error.to_string() })?;
    if index.schema_version != FEED_INDEX_SCHEMA_VERSION {
        return Err(FeedIndexError::Unusable {
            key: key.to_owned(),
            reason: format!("schemaVersion {} (this build reads {FEED_INDEX_SCHEMA_VERSION})", index.schema_version),
        });
    }
    Ok(index)
}

/// Records `status` in its feed's index, best effort: a failure is logged
/// and given up (the status object, written first, is the truth).
pub async fn index_status<S: ObjectStore>(store: &S, status: &DeliveryStatus) {
    if let Err(error) = try_index_status(store, status).await {
        warn!(
            tenant = %status.tenant_id, feed = %status.feed_id, run_id = %status.run_id, %error,
            "could not update the feed's delivery index; its status object is written"
        );
    }
}

async fn try_index_status<S: ObjectStore>(store: &S, status: &DeliveryStatus) -> Result<(), FeedIndexError> {
    let key = feed_index_key(&status.tenant_id, &status.feed_id);
    let entry = IndexedDelivery::of(status);
    let mut write = 1;
    loop {
        let (mut index, version) = match store.get_versioned(&key).await {
            Ok(object) => match decode(&key, &object.body) {
                Ok(index) => (index, Some(object.version)),
                // An index this build cannot read is rebuilt from here on.
                Err(FeedIndexError::Unusable { .. }) => {
                    (FeedIndex::empty(&status.tenant_id, &status.feed_id), Some(object.version))
                }
                Err(error) => return Err(error),
            },
            Err(StoreError::NotFound { .. }) => (FeedIndex::empty(&status.tenant_id, &status.feed_id), None),
            Err(source) => return Err(FeedIndexError::Read { key, source }),
        };
        if !index.upsert(entry.clone()) {
            return Ok(());
        }
        let body = bytes::Bytes::from(serde_json::to_vec(&index).expect("an index serialises"));
        let condition = match &version {
            Some(version) => WriteCondition::Unchanged(version),
            None => WriteCondition::Absent,
        };
        match store.put_conditional(&key, body, "application/json", condition).await {
            Ok(ConditionalPut::Written(_)) => return Ok(()),
            Ok(ConditionalPut::ConditionFailed) if write < WRITES => write += 1,
            Ok(ConditionalPut::ConditionFailed) => {
                return Err(FeedIndexError::Unusable {
                    key,
                    reason: format!("it changed under each of {WRITES} writes"),
                })
            }
            Err(source) => return Err(FeedIndexError::Read { key, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::status::{AttemptResult, DeliveredObject};
    use crate::store::LocalDirStore;

    fn status(run_id: &str, result: AttemptResult, minute: u32) -> DeliveryStatus {
        let run: RunId = run_id.parse().unwrap();
        let at: DateTime<Utc> = format!("2026-11-19T10:{minute:02}:00Z").parse().unwrap();
        DeliveryStatus::first_record(run, "acme", "all", at, at, result)
    }

    #[tokio::test]
    async fn each_run_has_one_entry_newest_first_and_a_delivered_run_stays_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path());
        let failed = status("20261116030000", AttemptResult::Failed("AccessDenied".into()), 1);
        index_status(&store, &failed).await;
        let mut object = DeliveredObject::new("lake/track_popularity/x/part-001.json".into(), 10, "00".repeat(32));
        object.rows = Some(7);
        let delivered = status("20261116030000", AttemptResult::Delivered(vec![object]), 2);
        index_status(&store, &delivered).await;
        let later = status("20261119030000", AttemptResult::Failed("throttled".into()), 3);
        index_status(&store, &later).await;
        // An older failure of the delivered run arrives late: ignored.
        index_status(&store, &failed).await;

        let index = read_feed_index(&store, &failed.tenant_id, &failed.feed_id).await.unwrap();
        let runs: Vec<(String, DeliveryOutcome)> =
            index.deliveries.iter().map(|d| (d.run_id.to_string(), d.outcome)).collect();
        assert_eq!(
            runs,
            [
                ("20261119030000".to_owned(), DeliveryOutcome::Failed),
                ("20261116030000".to_owned(), DeliveryOutcome::Delivered)
            ]
        );
        assert_eq!(index.deliveries[1].rows, Some(7));
        assert_eq!(index.deliveries[0].last_error.as_deref(), Some("throttled"));
    }

    #[test]
    fn an_index_keeps_the_newest_hundred_runs() {
        let mut index = FeedIndex::empty("t", "f");
        let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T03:00:00Z").unwrap().with_timezone(&Utc);
        for day in 0..150 {
            let time = base + chrono::Duration::days(day);
            let run_id: RunId = time.format("%Y%m%d%H%M%S").to_string().parse().unwrap();
            let mut entry = IndexedDelivery::of(&DeliveryStatus::first_record(
                run_id,
                "t",
                "f",
                time,
                time,
                AttemptResult::Skipped("paused".into()),
            ));
            entry.updated_at = time;
            assert!(index.upsert(entry));
        }
        assert_eq!(index.deliveries.len(), FEED_INDEX_RUNS);
        assert!(index.deliveries.windows(2).all(|pair| pair[0].run_id > pair[1].run_id));
        assert_eq!(index.deliveries.last().unwrap().run_id.to_string(), "20260220030000");
    }
}
