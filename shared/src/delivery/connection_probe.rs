//! The connection probe's vocabulary (docs/design.md, "Connection tests"):
//! the request object a "test connection" writes
//! (`connection-tests/<kind>/<requestId>/<tenantId>/<connectorName>.json`,
//! naming no credential), the checks a connector's probe makes with the
//! permissions the customer granted and nothing more, and the result
//! written to `connection-test-results/<requestId>/<tenantId>/<connectorName>.json`:
//! `ok`, one entry per check, warnings, what the probe left behind, and
//! when it finished. Pure data; [`super::probe_runner`] answers requests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// The version of the tenant secret to probe, by its label, when it is
    /// not the current one: the self-service API tests a connector before
    /// it stores it, and stores exactly the version that passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version_stage: Option<String>,
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
