//! What a deliverer is, for every connector kind: the [`Deliverer`] trait a
//! connector implements (deliver a job, probe a connector), the
//! dependencies a deliverer function holds ([`DeliverDeps`]), and
//! [`load_connector`], which re-reads the tenant secret a job or a
//! connection test names (jobs and requests hold no credentials). The
//! attempt at a job ([`super::attempt`]) and the answer to a probe
//! ([`super::probe_runner`]) both build on this module; it knows neither.

use std::future::Future;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::connector_registry::JobKind;
use crate::delivery::connection_probe::{ConnectionTestReport, ConnectionTestRequest};
use crate::delivery::error::DeliveryError;
use crate::delivery::feed_index::{verified_feeds, FeedIndexError};
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::PartLedger;
use crate::delivery::status::DeliveredObject;
use crate::manifest::RunManifest;
use crate::store::ObjectStore;
use crate::tenant::conflicts::{conflicts_across_verified, FeedDestination};
use crate::tenant::directory::{valid_by_seniority, TenantDirectory};
use crate::tenant::{Connector, TenantConfig};

/// Delivers jobs of one kind, and probes connectors of that kind.
pub trait Deliverer: Send + Sync {
    /// The `jobs/<kind>/` and `connection-tests/<kind>/` this deliverer serves.
    fn kind(&self) -> JobKind;

    /// Delivers the job; returns every object written (or skipped), the
    /// destination's `_manifest.json` (or its equivalent) last. A deliverer
    /// of files may skip the parts `ledger` says an earlier attempt
    /// delivered, and records in it each part it delivers.
    fn deliver<L: PartLedger>(
        &self,
        job: &DeliveryJob,
        tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
        ledger: &L,
    ) -> impl Future<Output = Result<Vec<DeliveredObject>, DeliveryError>> + Send;

    /// Probes the connector with the permissions the customer granted and
    /// nothing more (docs/design.md, "Connection tests").
    fn test_connection(
        &self,
        request: &ConnectionTestRequest,
        tenant: &TenantConfig,
        connector: &Connector,
    ) -> impl Future<Output = ConnectionTestReport> + Send;
}

/// What a deliverer function needs besides its [`Deliverer`].
pub struct DeliverDeps<S, T, D> {
    pub staging: S,
    pub tenants: T,
    pub deliverer: D,
    /// The clock; tests pin it.
    pub now: fn() -> DateTime<Utc>,
}

/// The tenant and connector a job or a connection test names, re-read from
/// the tenant's secret — its current version, or the draft version labelled
/// `version_stage` that a connection test of the self-service API names —
/// or why there is nothing to do: `Err(Ok(reason))` to skip (the secret is
/// gone or the tenant disabled), `Err(Err(error))` when it fails.
pub async fn load_connector<T: TenantDirectory>(
    tenants: &T,
    tenant_id: &str,
    connector_name: &str,
    expected_type: Option<&str>,
    version_stage: Option<&str>,
) -> Result<(TenantConfig, Connector), Result<String, DeliveryError>> {
    let loaded = match version_stage {
        None => tenants.load_tenant(tenant_id).await,
        Some(stage) => tenants.load_tenant_version(tenant_id, stage).await,
    };
    let entry = match loaded {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return Err(Ok(match version_stage {
                None => format!(
                    "the secret of tenant {tenant_id:?} no longer exists (deleted, or scheduled for deletion); \
                     nothing was delivered"
                ),
                Some(stage) => format!(
                    "the secret of tenant {tenant_id:?} has no version labelled {stage:?} (the draft was discarded)"
                ),
            }))
        }
        Err(error) => return Err(Err(error.into())),
    };
    let tenant = match entry.config {
        Ok(tenant) => tenant,
        Err(error) => {
            let message = error.describe(&entry.secret_name);
            warn!(%message, "this tenant cannot be served");
            return Err(Err(DeliveryError::InvalidTenant(message)));
        }
    };
    if !tenant.enabled {
        return Err(Ok("the tenant is disabled (\"enabled\": false); nothing was delivered".to_owned()));
    }
    let Some(connector) = tenant.connectors.get(connector_name).cloned() else {
        return Err(Err(DeliveryError::InvalidTenant(format!(
            "the tenant secret has no connector {connector_name:?}; nothing was delivered"
        ))));
    };
    if let Some(expected) = expected_type.filter(|expected| *expected != connector.kind().type_name()) {
        return Err(Err(DeliveryError::InvalidTenant(format!(
            "connector {connector_name:?} changed type from {expected} to {} since fanout; nothing was delivered",
            connector.kind()
        ))));
    }
    Ok((tenant, connector))
}

/// Why the feed `feed_id` of `tenant` (its secret as just re-read) must not
/// be delivered: an older tenant's feed writes the same destination. The
/// same check fanout runs ([`conflicts_across_verified`] over every valid,
/// enabled tenant: verified there first, then oldest) run again just before
/// writing, so that a secret
/// edited after fanout is not delivered for days of re-drives without it.
/// The message is fanout's, which does not name the other tenant. Email
/// writes nothing a customer holds and is not checked (no directory read).
/// A tenant missing from the listing, or listed as invalid, counts as the
/// newest.
pub async fn cross_tenant_refusal<T: TenantDirectory, S: ObjectStore>(
    tenants: &T,
    staging: &S,
    tenant: &TenantConfig,
    feed_id: &str,
) -> Result<Option<String>, DeliveryError> {
    let Some(feed) = tenant.feeds.iter().find(|feed| feed.id == feed_id) else { return Ok(None) };
    let Some(connector) = tenant.connectors.get(&feed.connector) else { return Ok(None) };
    if FeedDestination::of(connector, feed).is_none() {
        return Ok(None);
    }
    let entries = tenants.load_tenants().await?;
    let mut serving: Vec<&TenantConfig> = valid_by_seniority(&entries)
        .into_iter()
        .filter(|other| other.enabled)
        .map(|other| if other.tenant_id == tenant.tenant_id { tenant } else { other })
        .collect();
    if !serving.iter().any(|other| other.tenant_id == tenant.tenant_id) {
        serving.push(tenant);
    }
    let verified = verified_feeds(staging, &serving).await.map_err(|error| match error {
        FeedIndexError::Read { key, source } => {
            DeliveryError::Staging { action: "read", location: staging.describe(&key), source }
        }
        unusable @ FeedIndexError::Unusable { .. } => DeliveryError::InvalidTenant(unusable.to_string()),
    })?;
    Ok(conflicts_across_verified(&serving, &verified)
        .remove(&(tenant.tenant_id.clone(), feed_id.to_owned()))
        .map(|reason| format!("{reason}; nothing was delivered (checked again before writing)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InMemoryStore;
    use crate::tenant::directory::{DirectoryError, InMemoryTenants};
    use crate::tenant::parse_tenant_secret;

    const PREFIX: &str = "popularity-reports/tenants/";

    /// A tenant with one feed `all` into `bucket`/`prefix` (or email).
    fn secret(tenant_id: &str, enabled: bool, bucket: Option<(&str, &str)>) -> String {
        let lake = match bucket {
            Some((bucket, prefix)) => serde_json::json!({"type": "s3-keys",
                "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "eu-west-1", "prefix": prefix,
                "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}),
            None => serde_json::json!({"type": "email", "recipients": [format!("data@{tenant_id}.example")]}),
        };
        serde_json::json!({"schemaVersion": 1, "tenantId": tenant_id, "plan": "standard", "enabled": enabled,
            "connectors": {"lake": lake}, "feeds": [{"id": "all", "connector": "lake"}]})
        .to_string()
    }

    fn config(tenant_id: &str, bucket: Option<(&str, &str)>) -> TenantConfig {
        parse_tenant_secret(tenant_id, &secret(tenant_id, true, bucket)).unwrap()
    }

    #[tokio::test]
    async fn a_newcomer_whose_secret_now_names_an_older_tenants_destination_is_refused_without_naming_it() {
        // "first" sorts (and so counts) as older than "second": the in-memory
        // directory knows no creation dates, and ties go by name.
        let directory = InMemoryTenants::new(PREFIX)
            .with_secret("first", secret("first", true, Some(("shared", ""))))
            // The listing still holds second's secret as fanout saw it.
            .with_secret("second", secret("second", true, Some(("second-own", ""))));
        let edited = config("second", Some(("shared", "second/")));
        let reason = cross_tenant_refusal(&directory, &InMemoryStore::default(), &edited, "all")
            .await
            .unwrap()
            .expect("refused");
        assert!(
            reason.contains("writes to s3://shared/second/, where another tenant's feed already delivers")
                && reason.contains("checked again before writing"),
            "{reason}"
        );
        assert!(!reason.contains("first"), "the other tenant is not revealed: {reason}");
        // The older tenant keeps delivering, and a secret moved elsewhere
        // again passes, whatever the listing still says.
        assert_eq!(
            cross_tenant_refusal(&directory, &InMemoryStore::default(), &config("first", Some(("shared", ""))), "all")
                .await
                .unwrap(),
            None
        );
        let directory = directory.with_secret("second", secret("second", true, Some(("shared", "second/"))));
        assert_eq!(
            cross_tenant_refusal(
                &directory,
                &InMemoryStore::default(),
                &config("second", Some(("elsewhere", ""))),
                "all"
            )
            .await
            .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_disabled_or_invalid_older_tenant_does_not_block_and_email_reads_no_directory() {
        let directory = InMemoryTenants::new(PREFIX)
            .with_secret("first", secret("first", false, Some(("shared", ""))))
            .with_secret("also-first", "{\"schemaVersion\": 1}");
        assert_eq!(
            cross_tenant_refusal(&directory, &InMemoryStore::default(), &config("second", Some(("shared", ""))), "all")
                .await
                .unwrap(),
            None
        );
        let unreachable = InMemoryTenants::new(PREFIX).failing_with(DirectoryError::Read {
            operation: "ListSecrets",
            prefix: PREFIX.to_owned(),
            detail: "unreachable".to_owned(),
        });
        assert_eq!(
            cross_tenant_refusal(&unreachable, &InMemoryStore::default(), &config("second", None), "all")
                .await
                .unwrap(),
            None
        );
        // A directory that cannot be read fails the attempt (retried).
        let error = cross_tenant_refusal(
            &unreachable,
            &InMemoryStore::default(),
            &config("second", Some(("shared", ""))),
            "all",
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("unreachable"), "{error}");
    }

    /// A feed index saying `tenant_id`'s feed `all` was delivered to `target`.
    async fn delivered_index(staging: &InMemoryStore, tenant_id: &str, target: &str) {
        use crate::store::ObjectSink;
        let index = serde_json::json!({"schemaVersion": 1, "tenantId": tenant_id, "feedId": "all", "deliveries": [
            {"runId": "20261112030000", "outcome": "delivered", "updatedAt": "2026-11-12T03:10:00Z",
             "attempts": 1, "objects": 4, "bytes": 100, "target": target}]});
        let key = crate::delivery::feed_index::feed_index_key(tenant_id, "all");
        staging.put(&key, bytes::Bytes::from(index.to_string()), "application/json").await.unwrap();
    }

    #[tokio::test]
    async fn a_feed_verified_at_the_place_keeps_it_against_an_older_tenant_that_moved_there() {
        // "first" is older, and its secret now names second's place; second
        // has delivered there, first never has.
        let directory = InMemoryTenants::new(PREFIX)
            .with_secret("first", secret("first", true, Some(("shared", ""))))
            .with_secret("second", secret("second", true, Some(("shared", "theirs/"))));
        let staging = InMemoryStore::default();
        delivered_index(&staging, "second", "s3://shared/theirs/ track,artist,product").await;
        // first delivered, but elsewhere: that verifies nothing here.
        delivered_index(&staging, "first", "s3://first-own/ track,artist,product").await;
        let first = config("first", Some(("shared", "")));
        let reason = cross_tenant_refusal(&directory, &staging, &first, "all").await.unwrap().expect("first refused");
        assert!(reason.contains("writes to s3://shared/, where another tenant's feed already delivers"), "{reason}");
        assert!(!reason.contains("second"), "the other tenant is not revealed: {reason}");
        let second = config("second", Some(("shared", "theirs/")));
        assert_eq!(cross_tenant_refusal(&directory, &staging, &second, "all").await.unwrap(), None);
        // Without second's delivery the older one keeps the place.
        let unverified = InMemoryStore::default();
        assert_eq!(cross_tenant_refusal(&directory, &unverified, &first, "all").await.unwrap(), None);
        assert!(cross_tenant_refusal(&directory, &unverified, &second, "all").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_tenant_missing_from_the_listing_counts_as_the_newest() {
        let directory =
            InMemoryTenants::new(PREFIX).with_secret("zzz-older", secret("zzz-older", true, Some(("shared", ""))));
        let reason = cross_tenant_refusal(
            &directory,
            &InMemoryStore::default(),
            &config("aaa-new", Some(("shared", "x/"))),
            "all",
        )
        .await
        .unwrap();
        assert!(reason.is_some(), "listed tenants go first");
    }
}
