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
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::PartLedger;
use crate::delivery::status::DeliveredObject;
use crate::manifest::RunManifest;
use crate::tenant::directory::TenantDirectory;
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
