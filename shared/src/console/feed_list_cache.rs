//! What the feed list keeps of each feed's delivery index between requests
//! to a warm function, so that `GET /v1/feeds` costs the tenant secret and
//! one listing of `feed-index/<tenantId>/` instead of a read of every
//! feed's index. The listing decides what is still good: S3 lists with
//! strong consistency, and each object with its ETag, the version a read of
//! it answers with. An index kept at the version listed is the one stored
//! now and is not read again; an index listed at another version is read
//! again (and kept at the version that read answered with, never the one
//! listed, so a write in between only costs another read next time); an
//! index no longer listed is forgotten and its feed shown without
//! deliveries, as a feed that never had one. A store whose listing gives
//! no version has every index read every time.
//!
//! Of an index only what [`FeedView::of`] reads is kept (its newest and its
//! newest delivered delivery, [`FeedView::deliveries_read`]), and indexes
//! are kept per tenant: each listing replaces the tenant's, so a deleted
//! feed's index goes too. At most [`KEPT_INDEXES`] indexes are kept; whole
//! tenants are forgotten beyond that, the least recently listed first.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::join_all;

use super::views::FeedView;
use crate::delivery::feed_index::{
    feed_index_key, read_versioned_feed_index, tenant_feed_index_prefix, FeedIndexError, IndexedDelivery,
};
use crate::store::{ObjectStore, ObjectVersion, StoreError};
use crate::tenant::MAX_FEEDS;

/// Indexes kept in all: at most two deliveries each, a few MB.
pub const KEPT_INDEXES: usize = 10_000;

// A tenant's own indexes never push each other out.
const _: () = assert!(KEPT_INDEXES >= MAX_FEEDS);

/// Why the feed list could not be built from the staging bucket.
#[derive(Debug, thiserror::Error)]
pub enum FeedListError {
    #[error("could not list the delivery indexes {location}: {source}")]
    List {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Index(#[from] FeedIndexError),
}

/// A tenant's delivery indexes as one listing found them: each key with
/// the version listed.
#[derive(Debug)]
pub struct ListedIndexes {
    tenant_id: String,
    versions: HashMap<String, Option<ObjectVersion>>,
}

/// Every tenant's kept indexes, shared by the function's requests.
#[derive(Debug)]
pub struct FeedListCache {
    capacity: usize,
    tenants: Mutex<KeptTenants>,
}

#[derive(Debug, Default)]
struct KeptTenants {
    by_tenant: HashMap<String, KeptTenant>,
    /// Counts listings, to tell which tenant was listed least recently.
    listings: u64,
}

#[derive(Debug)]
struct KeptTenant {
    listed: u64,
    /// By the index's key.
    indexes: HashMap<String, KeptIndex>,
}

#[derive(Debug, Clone)]
struct KeptIndex {
    version: ObjectVersion,
    deliveries: Vec<IndexedDelivery>,
}

impl Default for FeedListCache {
    fn default() -> Self {
        FeedListCache::with_capacity(KEPT_INDEXES)
    }
}

impl FeedListCache {
    /// A cache keeping at most `capacity` indexes (whole tenants forgotten
    /// beyond that; a tenant with more keeps them all until another is listed).
    pub fn with_capacity(capacity: usize) -> Self {
        FeedListCache { capacity, tenants: Mutex::new(KeptTenants::default()) }
    }

    /// Lists the tenant's indexes: the one request to staging a feed list
    /// always makes, which needs nothing but the tenant's id, so it can run
    /// while the tenant document is read.
    pub async fn list<S: ObjectStore>(staging: &S, tenant_id: &str) -> Result<ListedIndexes, FeedListError> {
        let prefix = tenant_feed_index_prefix(tenant_id);
        let versions = staging
            .list(&prefix)
            .await
            .map_err(|source| FeedListError::List { location: staging.describe(&prefix), source })?
            .into_iter()
            .map(|entry| (entry.key, entry.version))
            .collect();
        Ok(ListedIndexes { tenant_id: tenant_id.to_owned(), versions })
    }

    /// For each of `feed_ids`, in order, the deliveries of its index that
    /// [`FeedView::of`] reads (none for a feed without an index): a read of
    /// each index `listed` at a version other than the one kept.
    pub async fn deliveries<S: ObjectStore>(
        &self,
        staging: &S,
        listed: ListedIndexes,
        feed_ids: &[&str],
    ) -> Result<Vec<Vec<IndexedDelivery>>, FeedListError> {
        let ListedIndexes { tenant_id, versions: listed } = listed;
        let tenant_id = tenant_id.as_str();

        // What is still good, and which feeds' indexes must be read.
        let mut found: Vec<Option<KeptIndex>> = Vec::with_capacity(feed_ids.len());
        let mut to_read = Vec::new();
        {
            let tenants = self.tenants.lock().expect("not poisoned");
            let kept = tenants.by_tenant.get(tenant_id);
            for (position, feed_id) in feed_ids.iter().enumerate() {
                let key = feed_index_key(tenant_id, feed_id);
                let still_good = match (listed.get(&key), kept.and_then(|kept| kept.indexes.get(&key))) {
                    (Some(Some(version)), Some(index)) if index.version == *version => Some(index.clone()),
                    _ => None,
                };
                if still_good.is_none() && listed.contains_key(&key) {
                    to_read.push((position, *feed_id));
                }
                found.push(still_good);
            }
        }

        let reads = join_all(to_read.iter().map(|(_, feed_id)| read_versioned_feed_index(staging, tenant_id, feed_id)));
        for ((position, _), read) in to_read.iter().zip(reads.await) {
            // An index deleted since it was listed is no index.
            found[*position] = read?.map(|(index, version)| KeptIndex {
                version,
                deliveries: FeedView::deliveries_read(&index.deliveries),
            });
        }

        let answer = found.iter().map(|index| index.as_ref().map_or_else(Vec::new, |i| i.deliveries.clone())).collect();
        let indexes: HashMap<String, KeptIndex> = feed_ids
            .iter()
            .zip(found)
            .filter_map(|(feed_id, index)| Some((feed_index_key(tenant_id, feed_id), index?)))
            // A store that answered with no version cannot tell it unchanged.
            .filter(|(_, index)| !index.version.0.is_empty())
            .collect();
        self.keep(tenant_id, indexes);
        Ok(answer)
    }

    /// Replaces the tenant's kept indexes with `indexes` (a tenant with none
    /// is forgotten), then forgets the least recently listed other tenants
    /// while more than the capacity is kept.
    fn keep(&self, tenant_id: &str, indexes: HashMap<String, KeptIndex>) {
        let mut tenants = self.tenants.lock().expect("not poisoned");
        if indexes.is_empty() {
            tenants.by_tenant.remove(tenant_id);
            return;
        }
        tenants.listings += 1;
        let listed = tenants.listings;
        tenants.by_tenant.insert(tenant_id.to_owned(), KeptTenant { listed, indexes });
        let mut kept: usize = tenants.by_tenant.values().map(|tenant| tenant.indexes.len()).sum();
        while kept > self.capacity {
            let Some(oldest) = tenants
                .by_tenant
                .iter()
                .filter(|(other, _)| other.as_str() != tenant_id)
                .min_by_key(|(_, tenant)| tenant.listed)
                .map(|(other, _)| other.clone())
            else {
                break;
            };
            kept -= tenants.by_tenant.remove(&oldest).map_or(0, |tenant| tenant.indexes.len());
        }
    }

    /// Indexes kept now, of every tenant.
    pub fn kept(&self) -> usize {
        self.tenants.lock().expect("not poisoned").by_tenant.values().map(|tenant| tenant.indexes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::feed_index::{index_status, read_feed_index};
    use crate::delivery::status::{AttemptResult, DeliveredObject, DeliveryStatus};
    use crate::domain::RunId;
    use crate::store::InMemoryStore;
    use crate::tenant::parse_tenant_secret;
    use chrono::{DateTime, Utc};

    const FEEDS: [&str; 4] = ["daily", "weekly", "monthly", "never-delivered"];

    /// Records a delivery of `feed`'s run `run_id` in its index, as a deliverer does.
    async fn record(store: &InMemoryStore, tenant_id: &str, feed: &str, run_id: &str, delivered: bool) {
        let run: RunId = run_id.parse().unwrap();
        let at: DateTime<Utc> = run.time() + chrono::Duration::minutes(5);
        let result = if delivered {
            AttemptResult::Delivered(vec![DeliveredObject::new("out/part-001.json".into(), 10, "00".repeat(32))])
        } else {
            AttemptResult::Failed("AccessDenied".into())
        };
        index_status(store, &DeliveryStatus::first_record(run, tenant_id, feed, at, at, result)).await;
    }

    /// A tenant with the feeds of [`FEEDS`], each to its own prefix.
    fn tenant(tenant_id: &str) -> crate::tenant::TenantConfig {
        let connectors: serde_json::Map<String, serde_json::Value> = FEEDS
            .iter()
            .map(|id| {
                let connector = serde_json::json!({"type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::acme-reports",
                                                   "region": "us-east-1", "prefix": format!("{id}/"),
                                                   "bucketOwnerAccountId": "444455556666"});
                (format!("to-{id}"), connector)
            })
            .collect();
        let feeds: Vec<serde_json::Value> = FEEDS
            .iter()
            .map(|id| serde_json::json!({"id": id, "connector": format!("to-{id}"), "intervalSeconds": 86_400}))
            .collect();
        let document = serde_json::json!({
            "schemaVersion": 1, "tenantId": tenant_id, "plan": "enterprise", "connectors": connectors, "feeds": feeds,
        });
        parse_tenant_secret(tenant_id, &document.to_string()).unwrap()
    }

    /// The feed list as it was built before the cache: every index read whole.
    async fn views_read_whole(store: &InMemoryStore, tenant_id: &str) -> Vec<FeedView> {
        let config = tenant(tenant_id);
        let mut views = Vec::new();
        for feed in &config.feeds {
            let index = read_feed_index(store, tenant_id, &feed.id).await.unwrap();
            views.push(FeedView::of(feed, &config, &index.deliveries));
        }
        views
    }

    async fn views_through(cache: &FeedListCache, store: &InMemoryStore, tenant_id: &str) -> Vec<FeedView> {
        let config = tenant(tenant_id);
        let listed = FeedListCache::list(store, tenant_id).await.unwrap();
        let deliveries = cache.deliveries(store, listed, &FEEDS).await.unwrap();
        config.feeds.iter().zip(&deliveries).map(|(feed, deliveries)| FeedView::of(feed, &config, deliveries)).collect()
    }

    /// The keys read since the `before`th read.
    fn reads_since(store: &InMemoryStore, before: usize) -> Vec<String> {
        store.reads()[before..].to_vec()
    }

    #[tokio::test]
    async fn an_unchanged_index_is_not_read_again_a_changed_one_is_and_a_deleted_one_is_forgotten() {
        let store = InMemoryStore::default();
        record(&store, "acme", "daily", "20261205030000", true).await;
        record(&store, "acme", "daily", "20261206030000", false).await;
        record(&store, "acme", "weekly", "20261130030000", true).await;
        record(&store, "acme", "monthly", "20261101030000", false).await;
        // Another tenant whose id starts with this one's.
        record(&store, "acme-2", "daily", "20261206030000", true).await;
        let cache = FeedListCache::default();

        let before = store.reads().len();
        let first = views_through(&cache, &store, "acme").await;
        let mut read = reads_since(&store, before);
        read.sort();
        assert_eq!(read, ["feed-index/acme/daily.json", "feed-index/acme/monthly.json", "feed-index/acme/weekly.json"]);
        assert_eq!(first, views_read_whole(&store, "acme").await);
        assert_eq!(first[0].last_delivery.as_ref().unwrap().run_id, "20261206030000");
        assert!(first[0].next_due_from.is_some(), "the newest delivered run is kept too");
        assert_eq!(first[3].last_delivery, None);
        assert_eq!(cache.kept(), 3);

        let before = store.reads().len();
        let second = views_through(&cache, &store, "acme").await;
        assert_eq!(reads_since(&store, before), Vec::<String>::new(), "nothing changed, nothing is read");
        assert_eq!(second, first);

        // Another process records a delivery of one feed.
        record(&store, "acme", "weekly", "20261207030000", false).await;
        let before = store.reads().len();
        let third = views_through(&cache, &store, "acme").await;
        assert_eq!(reads_since(&store, before), ["feed-index/acme/weekly.json"]);
        assert_eq!(third[1].last_delivery.as_ref().unwrap().run_id, "20261207030000");
        assert_eq!(third, views_read_whole(&store, "acme").await);
        assert_ne!(third, first);

        assert!(store.remove("feed-index/acme/monthly.json"));
        let before = store.reads().len();
        let fourth = views_through(&cache, &store, "acme").await;
        assert_eq!(reads_since(&store, before), Vec::<String>::new());
        assert_eq!(fourth[2].last_delivery, None, "a deleted index is no delivery");
        assert_eq!(fourth, views_read_whole(&store, "acme").await);
        assert_eq!(cache.kept(), 2);

        // A delivery to the feed that had none: its new index is read.
        record(&store, "acme", "never-delivered", "20261207030000", true).await;
        let before = store.reads().len();
        let fifth = views_through(&cache, &store, "acme").await;
        assert_eq!(reads_since(&store, before), ["feed-index/acme/never-delivered.json"]);
        assert_eq!(fifth, views_read_whole(&store, "acme").await);
        assert_eq!(cache.kept(), 3);
    }

    #[tokio::test]
    async fn beyond_its_capacity_the_cache_forgets_the_least_recently_listed_tenant() {
        let store = InMemoryStore::default();
        for tenant_id in ["acme", "beta", "gamma"] {
            for feed in ["daily", "weekly"] {
                record(&store, tenant_id, feed, "20261206030000", true).await;
            }
        }
        let cache = FeedListCache::with_capacity(4);
        views_through(&cache, &store, "acme").await;
        views_through(&cache, &store, "beta").await;
        views_through(&cache, &store, "acme").await;
        assert_eq!(cache.kept(), 4);
        views_through(&cache, &store, "gamma").await;
        assert_eq!(cache.kept(), 4);

        let before = store.reads().len();
        views_through(&cache, &store, "acme").await;
        assert_eq!(reads_since(&store, before), Vec::<String>::new(), "acme was listed after beta");
        views_through(&cache, &store, "beta").await;
        assert_eq!(reads_since(&store, before).len(), 2, "beta was forgotten, its two indexes read again");
    }

    #[test]
    fn a_feeds_view_of_the_deliveries_kept_is_its_view_of_all_of_them() {
        let config = tenant("acme");
        let entry = |run_id: &str, delivered: bool| {
            let run: RunId = run_id.parse().unwrap();
            let at = run.time();
            let result =
                if delivered { AttemptResult::Delivered(Vec::new()) } else { AttemptResult::Failed("x".into()) };
            IndexedDelivery::of(&DeliveryStatus::first_record(run, "acme", "daily", at, at, result))
        };
        let histories = [
            vec![],
            vec![entry("20261206030000", true), entry("20261205030000", true)],
            vec![entry("20261206030000", false), entry("20261205030000", false), entry("20261204030000", true)],
            vec![entry("20261206030000", false), entry("20261205030000", false)],
        ];
        for deliveries in histories {
            let kept = FeedView::deliveries_read(&deliveries);
            assert!(kept.len() <= 2);
            assert_eq!(
                FeedView::of(&config.feeds[0], &config, &kept),
                FeedView::of(&config.feeds[0], &config, &deliveries)
            );
        }
    }
}
