//! Connection tests (DESIGN §5): the portal's "test connection" button. A
//! request object `connection-tests/<kind>/<requestId>/<tenantId>/<connectorName>.json`
//! starts the deliverer of that kind, which probes the connector with the
//! permissions the customer granted and nothing more, and writes
//! `connection-test-results/<requestId>/<tenantId>/<connectorName>.json`:
//! `ok`, one entry per check (name, ok, detail), warnings, what the probe
//! left behind, and when it finished. A request names no credential; the
//! deliverer re-reads the tenant secret. A result is written once: a
//! repeated event for an answered request does nothing (no second email).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::delivery::attempt::{load_connector, DeliverDeps, Deliverer};
use crate::delivery::keys::ConnectionTestKeyParts;
use crate::store::{ObjectStore, PutOutcome, StoreError};
use crate::tenant_directory::TenantDirectory;

/// The only `schemaVersion` of connection-test results this build writes.
pub const CONNECTION_TEST_SCHEMA_VERSION: u32 = 1;

/// The body of a connection-test request object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionTestRequest {
    pub request_id: String,
    pub tenant_id: String,
    pub connector: String,
    pub requested_at: DateTime<Utc>,
}

/// One thing a probe checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCheck {
    pub name: String,
    pub ok: bool,
    /// A check that is not required fails with a warning, not the test
    /// (an optional grant, such as S3's abort and list of uploads).
    pub required: bool,
    pub detail: String,
}

/// What a connector's probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionTestReport {
    pub checks: Vec<ConnectionCheck>,
    /// Things that work but cost the customer something, or are broader than needed.
    pub warnings: Vec<String>,
    /// What the probe left at the destination (objects, open uploads, messages).
    pub left_behind: Vec<String>,
}

impl ConnectionTestReport {
    fn check(&mut self, name: &str, ok: bool, required: bool, detail: impl Into<String>) {
        self.checks.push(ConnectionCheck { name: name.to_owned(), ok, required, detail: detail.into() });
    }

    pub fn passed(&mut self, name: &str, detail: impl Into<String>) {
        self.check(name, true, true, detail);
    }

    pub fn failed(&mut self, name: &str, detail: impl Into<String>) {
        self.check(name, false, true, detail);
    }

    pub fn optional_passed(&mut self, name: &str, detail: impl Into<String>) {
        self.check(name, true, false, detail);
    }

    /// An optional check failed: say what it costs with [`Self::warn`] too.
    pub fn optional_failed(&mut self, name: &str, detail: impl Into<String>) {
        self.check(name, false, false, detail);
    }

    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    pub fn left(&mut self, what: impl Into<String>) {
        self.left_behind.push(what.into());
    }

    /// A report with one failed check.
    pub fn failing(name: &str, detail: impl Into<String>) -> ConnectionTestReport {
        let mut report = ConnectionTestReport::default();
        report.failed(name, detail);
        report
    }

    /// Every required check passed (and there was at least one).
    pub fn ok(&self) -> bool {
        self.checks.iter().any(|check| check.required) && self.checks.iter().filter(|c| c.required).all(|c| c.ok)
    }
}

/// `connection-test-results/<requestId>/<tenantId>/<connectorName>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTestResult {
    pub schema_version: u32,
    pub request_id: String,
    pub tenant_id: String,
    pub connector: String,
    /// The connector's type, when the secret could be read.
    pub connector_type: Option<String>,
    pub ok: bool,
    pub checks: Vec<ConnectionCheck>,
    pub warnings: Vec<String>,
    pub left_behind: Vec<String>,
    pub finished_at: DateTime<Utc>,
}

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
    let (connector_type, report) = probe(deps, parts).await?;
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
    let body = match deps.staging.get(&request_key).await {
        Ok(body) => body,
        Err(StoreError::NotFound { .. }) => {
            return Ok((None, ConnectionTestReport::failing("request", format!("{location} does not exist"))))
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
    let (tenant, connector) = match load_connector(&deps.tenants, &parts.tenant_id, &parts.connector, None).await {
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
