//! Answering one connection-probe request: read the request, re-read the
//! tenant secret (a request names no credential), let the connector kind's
//! [`Deliverer`] probe the connector, and write the result once — a
//! repeated event for an answered request does nothing (no second email).
//! A test over the rate limit ([`crate::delivery::probe_limit`]) is answered
//! with a refusal and reaches nothing.

use bytes::Bytes;
use serde::Serialize;
use tracing::{info, instrument, warn};

use crate::delivery::connection_probe::{
    ConnectionTestReport, ConnectionTestRequest, ConnectionTestResult, CONNECTION_TEST_SCHEMA_VERSION,
};
use crate::delivery::deliverer::{load_connector, DeliverDeps, Deliverer};
use crate::delivery::keys::ConnectionTestKeyParts;
use crate::delivery::probe_limit::{admit_test, ledger_key, Admission};
use crate::store::{ObjectStore, PutOutcome, StoreError, CONTROL_OBJECT_MAX_BYTES};
use crate::tenant::directory::TenantDirectory;

/// What a connection-test event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTestOutcome {
    pub result_key: String,
    /// `None` when the request had already been answered and nothing was done.
    pub ok: Option<bool>,
}

/// The request or result could not be read or written: the invocation fails
/// and is retried.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionTestError {
    #[error("could not read connection-test object {location}: {source}")]
    Read { location: String, source: StoreError },
    #[error("could not write connection-test result {location}: {source}")]
    Write { location: String, source: StoreError },
}

/// Answers the request at `parts` unless it was answered already.
#[instrument(skip_all, fields(request = %parts.request_id, tenant = %parts.tenant_id, connector = %parts.connector))]
pub async fn run_connection_test<S, T, D>(
    deps: &DeliverDeps<S, T, D>,
    parts: &ConnectionTestKeyParts,
) -> Result<ConnectionTestOutcome, ConnectionTestError>
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let result_key = parts.result_key();
    match deps.staging.get(&result_key).await {
        Ok(_) => {
            info!(%result_key, "already answered; nothing to do");
            return Ok(ConnectionTestOutcome { result_key, ok: None });
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(source) => return Err(ConnectionTestError::Read { location: deps.staging.describe(&result_key), source }),
    }
    let admission =
        admit_test(&deps.staging, &parts.tenant_id, &parts.connector, (deps.now)()).await.map_err(|source| {
            ConnectionTestError::Read {
                location: deps.staging.describe(&ledger_key(&parts.tenant_id, &parts.connector)),
                source,
            }
        })?;
    let (connector_type, report) = match admission {
        Admission::Allowed => probe(deps, parts).await?,
        Admission::Refused { next_allowed_at } => {
            warn!(%next_allowed_at, "connection test refused: the connector's tests in the last hour are at the limit");
            let refusal = Admission::refusal(&parts.tenant_id, &parts.connector, next_allowed_at);
            (None, ConnectionTestReport::failing("rate limit", refusal))
        }
    };
    let result = ConnectionTestResult {
        schema_version: CONNECTION_TEST_SCHEMA_VERSION,
        request_id: parts.request_id.clone(),
        tenant_id: parts.tenant_id.clone(),
        connector: parts.connector.clone(),
        connector_type,
        ok: report.ok(),
        checks: report.checks,
        warnings: report.warnings,
        left_behind: report.left_behind,
        finished_at: (deps.now)(),
    };
    let body = Bytes::from(serde_json::to_vec_pretty(&result).expect("a result serialises"));
    let written = deps.staging.put_if_absent(&result_key, body, "application/json").await;
    match written {
        Ok(PutOutcome::Created) => {
            info!(%result_key, ok = result.ok, warnings = result.warnings.len(), "connection test answered");
        }
        Ok(PutOutcome::AlreadyExists) => warn!(%result_key, "another invocation answered this request first"),
        Err(source) => return Err(ConnectionTestError::Write { location: deps.staging.describe(&result_key), source }),
    }
    Ok(ConnectionTestOutcome { result_key, ok: Some(result.ok) })
}

/// Reads the request, the tenant and its connector, and runs the probe.
async fn probe<S, T, D>(
    deps: &DeliverDeps<S, T, D>,
    parts: &ConnectionTestKeyParts,
) -> Result<(Option<String>, ConnectionTestReport), ConnectionTestError>
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let request_key = parts.request_key();
    let location = deps.staging.describe(&request_key);
    let body = match deps.staging.get_at_most(&request_key, CONTROL_OBJECT_MAX_BYTES).await {
        Ok(body) => body,
        Err(StoreError::NotFound { .. }) => {
            return Ok((None, ConnectionTestReport::failing("request", format!("{location} does not exist"))))
        }
        Err(too_large @ StoreError::TooLarge { .. }) => {
            return Ok((None, ConnectionTestReport::failing("request", too_large.to_string())))
        }
        Err(source) => return Err(ConnectionTestError::Read { location, source }),
    };
    let request: ConnectionTestRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let detail = format!(
                "{location} is not a connection-test request ({{\"requestId\", \"tenantId\", \"connector\", \"requestedAt\"}}): {error}"
            );
            return Ok((None, ConnectionTestReport::failing("request", detail)));
        }
    };
    if (request.request_id.as_str(), request.tenant_id.as_str(), request.connector.as_str())
        != (parts.request_id.as_str(), parts.tenant_id.as_str(), parts.connector.as_str())
    {
        let detail = format!(
            "{location} names request {:?} of tenant {:?} connector {:?}, not the one its key names",
            request.request_id, request.tenant_id, request.connector
        );
        return Ok((None, ConnectionTestReport::failing("request", detail)));
    }
    let (tenant, connector) = match load_connector(
        &deps.tenants,
        &parts.tenant_id,
        &parts.connector,
        None,
        request.secret_version_stage.as_deref(),
    )
    .await
    {
        Ok(found) => found,
        Err(Ok(reason)) => return Ok((None, ConnectionTestReport::failing("tenant secret", reason))),
        Err(Err(error)) => return Ok((None, ConnectionTestReport::failing("tenant secret", error.to_string()))),
    };
    let connector_type = Some(connector.kind().type_name().to_owned());
    if connector.kind().job_kind() != deps.deliverer.kind() {
        let detail = format!(
            "connector {:?} is of type {}, which deliver-{} tests, not deliver-{}",
            parts.connector,
            connector.kind(),
            connector.kind().job_kind(),
            deps.deliverer.kind()
        );
        return Ok((connector_type, ConnectionTestReport::failing("connector type", detail)));
    }
    Ok((connector_type, deps.deliverer.test_connection(&request, &tenant, &connector).await))
}
