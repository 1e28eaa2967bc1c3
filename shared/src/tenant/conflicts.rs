//! Feeds that must not both be delivered (docs/design.md, "Delivery rules"): two feeds that would
//! write the same destination folder — same storage (S3 or GCS) and bucket,
//! one prefix equal to or inside the other, a report in common — or the same
//! spreadsheet (whose `_popularity` tab both would claim). (Two tenants
//! can never share an `s3-role` externalId: validation accepts only ids
//! generated for the secret's own tenant, `pr-<tenantId>-<hex>`.) Within one tenant
//! validation refuses these ([`collisions_within`]); across tenants the one
//! that was there first — verified there first, then older — keeps
//! delivering and fanout refuses the newcomer's feed alone, without naming
//! the other tenant ([`conflicts_across`], [`conflicts_across_verified`]). And
//! the stack's own buckets are never a destination
//! ([`own_bucket_refusal`]). Pure functions, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{Connector, Feed, TenantConfig};
use crate::domain::ReportKind;

/// Where a feed's files or rows land, for the overlap rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedDestination {
    /// `s3://bucket`, `gs://bucket` or the spreadsheet URL's id as `sheets://id`.
    pub place: String,
    /// Empty, or ending with `/`; empty for a spreadsheet.
    pub prefix: String,
    pub reports: Vec<ReportKind>,
    /// Whether any report in common is a collision (a spreadsheet's
    /// `_popularity` tab is shared by every feed into it).
    pub whole_place: bool,
}

impl FeedDestination {
    /// Where `feed` writes through `connector`; `None` for email, which
    /// writes nothing a customer holds.
    pub fn of(connector: &Connector, feed: &Feed) -> Option<FeedDestination> {
        let (place, prefix, whole_place) = match connector {
            Connector::Email(_) => return None,
            Connector::GoogleSheets(sheet) => (format!("sheets://{}", sheet.spreadsheet_id), String::new(), true),
            Connector::Gcs(gcs) => (format!("gs://{}", gcs.bucket), gcs.prefix.clone(), false),
            other => {
                let destination = other.s3_destination()?;
                (format!("s3://{}", destination.bucket), destination.prefix.clone(), false)
            }
        };
        Some(FeedDestination { place, prefix, reports: feed.reports.clone(), whole_place })
    }

    /// `s3://bucket/prefix`, as messages name it.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.place, self.prefix)
    }

    /// Whether the two would write the same objects or tabs.
    pub fn overlaps(&self, other: &FeedDestination) -> bool {
        self.place == other.place
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
            && (self.whole_place || self.reports.iter().any(|kind| other.reports.contains(kind)))
    }
}

/// Why `bucket` cannot be a destination, if it is one of the stack's own
/// (`own`: staging, data). IAM denies our role those buckets through a
/// customer's bucket policy too; this refuses them before any request, with
/// a message that says why.
pub fn own_bucket_refusal(bucket: &str, own: &[String]) -> Option<String> {
    own.iter().any(|name| name == bucket).then(|| {
        format!(
            "bucket {bucket} is one of this stack's own buckets (staging or data), which are never a destination; \
             nothing was written"
        )
    })
}

/// Pairs of feeds (by index) of one tenant that would write the same
/// destination, each pair once, lower index first.
pub fn collisions_within(connectors: &BTreeMap<String, Connector>, feeds: &[Feed]) -> Vec<(usize, usize)> {
    let destinations: Vec<Option<FeedDestination>> = feeds
        .iter()
        .map(|feed| connectors.get(&feed.connector).and_then(|connector| FeedDestination::of(connector, feed)))
        .collect();
    let mut pairs = Vec::new();
    for (i, a) in destinations.iter().enumerate() {
        for (j, b) in destinations.iter().enumerate().skip(i + 1) {
            if let (Some(a), Some(b)) = (a, b) {
                if a.overlaps(b) {
                    pairs.push((i, j));
                }
            }
        }
    }
    pairs
}

/// Every (tenant id, feed id, destination as [`FeedDestination::describe`]
/// gives it) of a feed that overlaps another tenant's: the only feeds whose
/// verification [`conflicts_across_verified`] can need.
pub fn feeds_in_overlaps(tenants: &[&TenantConfig]) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    let mut by_place: HashMap<String, Vec<(&str, &str, FeedDestination)>> = HashMap::new();
    for tenant in tenants {
        for feed in &tenant.feeds {
            let Some(connector) = tenant.connectors.get(&feed.connector) else { continue };
            if let Some(destination) = FeedDestination::of(connector, feed) {
                by_place.entry(destination.place.clone()).or_default().push((&tenant.tenant_id, &feed.id, destination));
            }
        }
    }
    for feeds in by_place.values() {
        for (i, (tenant_a, feed_a, a)) in feeds.iter().enumerate() {
            for (tenant_b, feed_b, b) in &feeds[i + 1..] {
                if tenant_a != tenant_b && a.overlaps(b) {
                    found.insert(((*tenant_a).to_owned(), (*feed_a).to_owned(), a.describe()));
                    found.insert(((*tenant_b).to_owned(), (*feed_b).to_owned(), b.describe()));
                }
            }
        }
    }
    found
}

/// Why each (tenant id, feed id) that conflicts with another tenant's feed
/// is refused. Only the tenants given are compared (fanout gives the valid,
/// enabled ones), **oldest first**: of two tenants' feeds into one place the
/// newcomer's is refused and the tenant that was there first keeps
/// delivering, so a new tenant can neither block nor take over an existing
/// customer's destination. The refusal does not say whose the place is.
/// Feeds are grouped by bucket first, so the work grows with the feeds
/// sharing a bucket, not with every pair.
pub fn conflicts_across(tenants: &[&TenantConfig]) -> BTreeMap<(String, String), String> {
    conflicts_across_verified(tenants, &BTreeSet::new())
}

/// [`conflicts_across`], where a feed that is **verified** at its
/// destination — `verified` holds its (tenant id, feed id): it has been
/// delivered there ([`crate::delivery::feed_index::verified_feeds`]) —
/// goes before one that is not, whatever their ages: an older tenant whose
/// secret is edited to name a place another tenant already delivers to is
/// the one refused. Between two verified or two unverified feeds, the older
/// tenant's goes first, as in [`conflicts_across`].
pub fn conflicts_across_verified(
    tenants: &[&TenantConfig],
    verified: &BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), String> {
    let mut refused: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut refuse = |tenant: &str, feed: &str, reason: String| {
        refused.entry((tenant.to_owned(), feed.to_owned())).or_insert(reason);
    };

    let mut by_place: HashMap<String, Vec<(&str, &str, FeedDestination)>> = HashMap::new();
    for tenant in tenants {
        for feed in &tenant.feeds {
            let Some(connector) = tenant.connectors.get(&feed.connector) else { continue };
            if let Some(destination) = FeedDestination::of(connector, feed) {
                by_place.entry(destination.place.clone()).or_default().push((
                    tenant.tenant_id.as_str(),
                    feed.id.as_str(),
                    destination,
                ));
            }
        }
    }
    let is_verified = |tenant: &str, feed: &str| verified.contains(&(tenant.to_owned(), feed.to_owned()));
    for feeds in by_place.values() {
        for (i, first) in feeds.iter().enumerate() {
            for second in &feeds[i + 1..] {
                let ((tenant_a, _, a), (tenant_b, _, b)) = (first, second);
                if tenant_a == tenant_b || !a.overlaps(b) {
                    continue;
                }
                // `first` comes from an older tenant (the order given), so
                // `second` is the newcomer, unless only `second` is
                // verified there. The other tenant is not named.
                let newcomer_is_first = is_verified(second.0, second.1) && !is_verified(first.0, first.1);
                let ((tenant_b, feed_b, b), (_, _, a)) =
                    if newcomer_is_first { (first, second) } else { (second, first) };
                refuse(
                    tenant_b,
                    feed_b,
                    format!(
                        "feed writes to {}, where another tenant's feed already delivers ({}): it is not \
                         delivered until it moves to another bucket, or a prefix that neither contains nor is \
                         inside the other",
                        b.describe(),
                        a.describe()
                    ),
                );
            }
        }
    }

    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::parse_tenant_secret;

    fn tenant(id: &str, connectors: serde_json::Value, feeds: serde_json::Value) -> TenantConfig {
        let secret = serde_json::json!({"schemaVersion": 1, "tenantId": id, "plan": "enterprise",
            "connectors": connectors, "feeds": feeds});
        parse_tenant_secret(id, &secret.to_string()).unwrap()
    }

    fn s3_keys(bucket: &str, prefix: &str) -> serde_json::Value {
        serde_json::json!({"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "eu-west-1",
            "prefix": prefix, "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "x".repeat(40)})
    }

    #[test]
    fn prefixes_equal_or_nested_with_a_report_in_common_overlap_and_nothing_else_does() {
        let dest = |place: &str, prefix: &str, reports: &[ReportKind]| FeedDestination {
            place: place.into(),
            prefix: prefix.into(),
            reports: reports.to_vec(),
            whole_place: false,
        };
        let all = ReportKind::ALL;
        assert!(dest("s3://a", "x/", &all).overlaps(&dest("s3://a", "x/", &all)));
        assert!(dest("s3://a", "", &all).overlaps(&dest("s3://a", "x/", &all)), "one inside the other");
        assert!(dest("s3://a", "x/y/", &all).overlaps(&dest("s3://a", "x/", &all)));
        assert!(!dest("s3://a", "x/", &all).overlaps(&dest("s3://a", "y/", &all)), "side by side");
        assert!(!dest("s3://a", "x/", &all).overlaps(&dest("s3://b", "x/", &all)), "another bucket");
        assert!(!dest("s3://a", "x/", &all).overlaps(&dest("gs://a", "x/", &all)), "another storage");
        let track = [ReportKind::Track];
        let artist = [ReportKind::Artist];
        assert!(!dest("s3://a", "x/", &track).overlaps(&dest("s3://a", "x/", &artist)), "no report in common");
    }

    #[test]
    fn two_feeds_of_one_tenant_into_one_folder_are_found_and_email_never_collides() {
        let mut config = tenant(
            "acme",
            serde_json::json!({"a": s3_keys("data", "m/"), "b": s3_keys("data", "n/"),
                "c": s3_keys("data", "other/"),
                "inbox": {"type": "email", "recipients": ["x@acme.example"]}}),
            serde_json::json!([{"id": "one", "connector": "a"}, {"id": "two", "connector": "b"},
                {"id": "three", "connector": "c"}, {"id": "mail", "connector": "inbox"},
                {"id": "mail-too", "connector": "inbox"}]),
        );
        assert!(collisions_within(&config.connectors, &config.feeds).is_empty());
        // (Validation refuses what follows; this is what it relies on.)
        if let Some(Connector::S3Keys(b)) = config.connectors.get_mut("b") {
            b.destination.prefix = "m/tracks/".to_owned();
        }
        assert_eq!(collisions_within(&config.connectors, &config.feeds), [(0, 1)]);
    }

    #[test]
    fn across_tenants_the_newcomers_feed_is_refused_without_naming_the_first_and_unrelated_feeds_pass() {
        let acme = tenant(
            "acme",
            serde_json::json!({"lake": s3_keys("shared", "")}),
            serde_json::json!([{"id": "all", "connector": "lake"}]),
        );
        let beta = tenant(
            "beta",
            serde_json::json!({"lake": s3_keys("shared", "beta/"), "own": s3_keys("beta-own", "")}),
            serde_json::json!([{"id": "tracks", "connector": "lake", "reports": ["track"]},
                {"id": "mine", "connector": "own"}]),
        );
        // acme was there first.
        let refused = conflicts_across(&[&acme, &beta]);
        let keys: Vec<_> = refused.keys().cloned().collect();
        assert_eq!(keys, [("beta".to_owned(), "tracks".to_owned())], "acme keeps delivering");
        let reason = &refused[&("beta".to_owned(), "tracks".to_owned())];
        assert!(
            reason.contains("writes to s3://shared/beta/, where another tenant's feed already delivers"),
            "{reason}"
        );
        assert!(!reason.contains("acme") && !reason.contains("\"all\""), "the first tenant is not revealed: {reason}");
        // The other way round, beta first: acme's feed is the newcomer.
        let refused = conflicts_across(&[&beta, &acme]);
        assert_eq!(refused.keys().cloned().collect::<Vec<_>>(), [("acme".to_owned(), "all".to_owned())]);
    }

    #[test]
    fn a_verified_feed_keeps_its_place_against_an_older_unverified_one_and_ages_decide_the_rest() {
        let acme = tenant(
            "acme",
            serde_json::json!({"lake": s3_keys("shared", "")}),
            serde_json::json!([{"id": "all", "connector": "lake"}]),
        );
        let beta = tenant(
            "beta",
            serde_json::json!({"lake": s3_keys("shared", "beta/")}),
            serde_json::json!([{"id": "tracks", "connector": "lake"}]),
        );
        let key = |tenant: &str, feed: &str| (tenant.to_owned(), feed.to_owned());
        let overlapping = feeds_in_overlaps(&[&acme, &beta]);
        assert_eq!(
            overlapping.into_iter().collect::<Vec<_>>(),
            [
                ("acme".to_owned(), "all".to_owned(), "s3://shared/".to_owned()),
                ("beta".to_owned(), "tracks".to_owned(), "s3://shared/beta/".to_owned())
            ]
        );
        // acme is older, but only beta has delivered there: acme is refused.
        let verified = BTreeSet::from([key("beta", "tracks")]);
        let refused = conflicts_across_verified(&[&acme, &beta], &verified);
        assert_eq!(refused.keys().cloned().collect::<Vec<_>>(), [key("acme", "all")]);
        let reason = &refused[&key("acme", "all")];
        assert!(
            reason.contains("writes to s3://shared/, where another tenant's feed already delivers (s3://shared/beta/)"),
            "{reason}"
        );
        assert!(!reason.contains("beta\"") && !reason.contains("tracks"), "the other tenant is not revealed: {reason}");
        // Both verified, or neither: the older keeps it.
        for verified in [BTreeSet::from([key("beta", "tracks"), key("acme", "all")]), BTreeSet::new()] {
            let refused = conflicts_across_verified(&[&acme, &beta], &verified);
            assert_eq!(refused.keys().cloned().collect::<Vec<_>>(), [key("beta", "tracks")], "{verified:?}");
        }
        // Only the older verified: it keeps it too.
        let refused = conflicts_across_verified(&[&acme, &beta], &BTreeSet::from([key("acme", "all")]));
        assert_eq!(refused.keys().cloned().collect::<Vec<_>>(), [key("beta", "tracks")]);
    }
}
