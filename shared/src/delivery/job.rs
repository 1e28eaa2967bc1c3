//! The job object `jobs/<kind>/<runId>/<tenantId>/<feedId>.json`
//! (docs/design.md, "Reports and layouts" and "Delivery rules") that fanout
//! writes per due feed and a deliverer acts on. A job must never hold a
//! credential: it names the tenant and connector, and the deliverer re-reads
//! the tenant secret, so nothing secret is ever stored in, or logged from,
//! the bucket. Nor does a job choose which run it delivers: the run manifest
//! is always `manifests/<runId>.json` of the job's own run. Pure types and
//! functions, no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::connector_registry::{ConnectorKind, JobKind};
use crate::delivery::keys::{job_key, status_key, JobKeyParts};
use crate::domain::{Compression, Encoding, EncodingMismatch, Format, ReportKind, RunId};
use crate::manifest::DeliveryMode;
use crate::tenant::{Feed, TenantConfig};

/// The only `schemaVersion` of job objects this build writes and reads.
pub const DELIVERY_JOB_SCHEMA_VERSION: u32 = 1;

/// `jobs/<kind>/<runId>/<tenantId>/<feedId>.json`: one delivery to make.
/// Names where credentials live (tenant, connector) but never holds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJob {
    pub schema_version: u32,
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
    /// The connector's name in the tenant secret.
    pub connector: String,
    /// The connector's `type` (`s3-role`, `email`, ...) when the job was made;
    /// the deliverer checks it still matches the secret it re-reads.
    pub connector_type: String,
    pub job_kind: JobKind,
    /// In canonical order, as the feed lists them.
    pub reports: Vec<ReportKind>,
    pub format: Format,
    pub compression: Compression,
    /// Whole reports, or the changes since a base run (`mode`, `baseRunId`,
    /// `fullReason` in the JSON).
    #[serde(flatten)]
    pub plan: DeliveryPlan,
    pub created_at: DateTime<Utc>,
}

/// What one delivery of a run holds (docs/design.md, "Delta feeds"): the whole
/// reports, or what changed since `base_run_id`. Fanout decides it from
/// status objects and manifests alone, so a repeated fanout decides the
/// same; the job and then the status carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPlan {
    /// Of this delivery: a delta feed's delivery is `full` when it has no
    /// usable base.
    pub mode: DeliveryMode,
    /// The run the delta is against; set exactly when `mode` is `delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run_id: Option<RunId>,
    /// Why a delta feed gets a full delivery this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// Where the feed delivers and which reports (`s3://bucket/prefix
    /// track,artist`): a delta's base must have gone to the same target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl DeliveryPlan {
    /// Whole reports, the feed being a full feed.
    pub fn full() -> DeliveryPlan {
        DeliveryPlan { mode: DeliveryMode::Full, base_run_id: None, full_reason: None, target: None }
    }

    /// Whole reports for a delta feed, and why.
    pub fn full_because(reason: String) -> DeliveryPlan {
        DeliveryPlan { mode: DeliveryMode::Full, base_run_id: None, full_reason: Some(reason), target: None }
    }

    /// What changed since `base`.
    pub fn delta_against(base: RunId) -> DeliveryPlan {
        DeliveryPlan { mode: DeliveryMode::Delta, base_run_id: Some(base), full_reason: None, target: None }
    }

    /// The plan, recording where it delivers.
    pub fn to_target(mut self, target: String) -> DeliveryPlan {
        self.target = Some(target);
        self
    }

    /// The base run of a delta, or why the plan is not a usable one.
    pub fn base(&self) -> Result<Option<RunId>, InconsistentPlan> {
        match (self.mode, self.base_run_id) {
            (DeliveryMode::Full, None) => Ok(None),
            (DeliveryMode::Delta, Some(base)) => Ok(Some(base)),
            (DeliveryMode::Delta, None) => Err(InconsistentPlan::DeltaWithoutBase),
            (DeliveryMode::Full, Some(_)) => Err(InconsistentPlan::FullWithBase),
        }
    }
}

/// A job's plan whose mode and base run disagree. The job object is wrong
/// as written, so no retry can deliver it (an invalid job, permanent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InconsistentPlan {
    #[error("mode is delta but no baseRunId is given")]
    DeltaWithoutBase,
    #[error("mode is full but a baseRunId is given")]
    FullWithBase,
}

/// A feed naming a connector its tenant does not have. Never happens for a
/// config from `parse_tenant_secret`, which checks every reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant_id:?} feed {feed_id:?} names connector {connector:?}, which the tenant does not have")]
pub struct UnknownConnector {
    pub tenant_id: String,
    pub feed_id: String,
    pub connector: String,
}

impl DeliveryJob {
    /// The job for one feed of a tenant in `run`, delivering as `plan` says.
    pub fn for_feed(
        run_id: RunId,
        tenant: &TenantConfig,
        feed: &Feed,
        plan: DeliveryPlan,
        now: DateTime<Utc>,
    ) -> Result<DeliveryJob, UnknownConnector> {
        let connector = tenant.connector_of(feed).ok_or_else(|| UnknownConnector {
            tenant_id: tenant.tenant_id.clone(),
            feed_id: feed.id.clone(),
            connector: feed.connector.clone(),
        })?;
        Ok(DeliveryJob {
            schema_version: DELIVERY_JOB_SCHEMA_VERSION,
            run_id,
            tenant_id: tenant.tenant_id.clone(),
            feed_id: feed.id.clone(),
            connector: feed.connector.clone(),
            connector_type: connector.kind().type_name().to_owned(),
            job_kind: connector.kind().job_kind(),
            reports: feed.reports.clone(),
            format: feed.encoding.format,
            compression: feed.encoding.compression,
            plan,
            created_at: now,
        })
    }

    /// The connector type, if this build knows it.
    pub fn connector_kind(&self) -> Option<ConnectorKind> {
        ConnectorKind::from_type_name(&self.connector_type)
    }

    /// The encoding the feed asked for.
    pub fn encoding(&self) -> Encoding {
        Encoding { format: self.format, compression: self.compression }
    }

    pub fn key_parts(&self) -> JobKeyParts {
        JobKeyParts {
            kind: self.job_kind,
            run_id: self.run_id,
            tenant_id: self.tenant_id.clone(),
            feed_id: self.feed_id.clone(),
        }
    }

    pub fn job_key(&self) -> String {
        job_key(self.job_kind, self.run_id, &self.tenant_id, &self.feed_id)
    }

    pub fn status_key(&self) -> String {
        status_key(self.run_id, &self.tenant_id, &self.feed_id)
    }
}

/// A job object that cannot be acted on.
#[derive(Debug, thiserror::Error)]
pub enum JobDecodeError {
    #[error("job object is not a valid job: {0}")]
    Json(#[from] serde_json::Error),
    #[error("job object has schemaVersion {found}; this build reads only {DELIVERY_JOB_SCHEMA_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("job object asks for an encoding no feed can have: {0}")]
    Encoding(#[from] EncodingMismatch),
}

/// Read a job object, refusing a schema version this build does not know.
pub fn decode_job(json: &[u8]) -> Result<DeliveryJob, JobDecodeError> {
    let job: DeliveryJob = serde_json::from_slice(json)?;
    if job.schema_version != DELIVERY_JOB_SCHEMA_VERSION {
        return Err(JobDecodeError::UnsupportedVersion { found: job.schema_version });
    }
    job.encoding().check()?;
    Ok(job)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tenant::parse_tenant_secret;

    pub const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    pub const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EXTERNAL_ID: &str = "pr-acme-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b";

    pub fn run() -> RunId {
        "20261119030000".parse().unwrap()
    }

    pub fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_plan_whose_mode_and_base_disagree_says_which_way() {
        let base: RunId = "20261116030000".parse().unwrap();
        assert_eq!(DeliveryPlan::full().base(), Ok(None));
        assert_eq!(DeliveryPlan::delta_against(base).base(), Ok(Some(base)));
        let delta_without = DeliveryPlan { base_run_id: None, ..DeliveryPlan::delta_against(base) };
        assert_eq!(delta_without.base(), Err(InconsistentPlan::DeltaWithoutBase));
        let full_with = DeliveryPlan { base_run_id: Some(base), ..DeliveryPlan::full() };
        assert_eq!(full_with.base(), Err(InconsistentPlan::FullWithBase));
        assert_eq!(InconsistentPlan::FullWithBase.to_string(), "mode is full but a baseRunId is given");
    }

    fn tenant() -> TenantConfig {
        let secret = serde_json::json!({
            "schemaVersion": 1,
            "tenantId": "acme",
            "plan": "standard",
            "connectors": {
                "inbox": {"type": "email", "recipients": ["data@acme.example"]},
                "lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data", "region": "eu-west-1",
                         "prefix": "massive", "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery",
                         "externalId": EXTERNAL_ID},
                "keys": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::acme-keys", "region": "us-east-1",
                         "accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY}
            },
            "feeds": [
                {"id": "mail", "connector": "inbox", "reports": ["track"]},
                {"id": "role", "connector": "lake", "compression": "gzip"},
                {"id": "keys", "connector": "keys", "format": "tsv", "mode": "delta", "intervalSeconds": 3600}
            ]
        });
        parse_tenant_secret("acme", &secret.to_string()).unwrap()
    }

    pub fn job_for(feed_id: &str) -> DeliveryJob {
        let tenant = tenant();
        let feed = tenant.feeds.iter().find(|f| f.id == feed_id).unwrap();
        let plan = match feed.mode {
            DeliveryMode::Full => DeliveryPlan::full(),
            DeliveryMode::Delta => DeliveryPlan::delta_against("20261116030000".parse().unwrap()),
        };
        DeliveryJob::for_feed(run(), &tenant, feed, plan, at("2026-11-19T03:20:00Z")).unwrap()
    }

    #[test]
    fn a_job_copies_the_feed_and_names_its_connector() {
        let job = job_for("keys");
        assert_eq!(job.schema_version, 1);
        assert_eq!(job.run_id, run());
        assert_eq!((job.tenant_id.as_str(), job.feed_id.as_str(), job.connector.as_str()), ("acme", "keys", "keys"));
        assert_eq!(job.connector_type, "s3-keys");
        assert_eq!(job.connector_kind(), Some(ConnectorKind::S3Keys));
        assert_eq!(job.job_kind, JobKind::S3);
        assert_eq!(job.reports, ReportKind::ALL);
        assert_eq!((job.format, job.compression, job.plan.mode), (Format::Tsv, Compression::None, DeliveryMode::Delta));
        assert_eq!(job.job_key(), "jobs/s3/20261119030000/acme/keys.json");
        assert_eq!(job.status_key(), "status/20261119030000/acme/keys.json");
        assert_eq!(crate::delivery::keys::parse_job_key(&job.job_key()).unwrap(), job.key_parts());

        let mail = job_for("mail");
        assert_eq!((mail.job_kind, mail.connector_type.as_str()), (JobKind::Email, "email"));
        assert_eq!(mail.reports, [ReportKind::Track]);
    }

    #[test]
    fn a_job_serialises_without_any_credential() {
        for feed in ["keys", "role"] {
            let job = job_for(feed);
            let json = serde_json::to_string(&job).unwrap();
            let debug = format!("{job:?}");
            for secret in [ACCESS_KEY_ID, SECRET_ACCESS_KEY, EXTERNAL_ID] {
                assert!(!json.contains(secret), "job JSON contains {secret:?}: {json}");
                assert!(!debug.contains(secret), "job Debug contains {secret:?}: {debug}");
            }
        }
        let value = serde_json::to_value(job_for("keys")).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "schemaVersion": 1, "runId": "20261119030000", "tenantId": "acme", "feedId": "keys",
                "connector": "keys", "connectorType": "s3-keys", "jobKind": "s3",
                "reports": ["track", "artist", "product"], "format": "tsv", "compression": "none",
                "mode": "delta", "baseRunId": "20261116030000", "createdAt": "2026-11-19T03:20:00Z"
            })
        );
    }

    #[test]
    fn a_job_round_trips_and_an_unknown_schema_version_is_refused() {
        let job = job_for("role");
        let json = serde_json::to_vec(&job).unwrap();
        assert_eq!(decode_job(&json).unwrap(), job);

        let mut value = serde_json::to_value(&job).unwrap();
        value["schemaVersion"] = 2.into();
        let error = decode_job(value.to_string().as_bytes()).unwrap_err();
        assert!(error.to_string().contains("schemaVersion 2; this build reads only 1"), "{error}");
        assert!(decode_job(b"{}").unwrap_err().to_string().starts_with("job object is not a valid job: "));
    }

    #[test]
    fn a_job_with_gzip_parquet_is_refused_naming_the_mismatch() {
        let mut value = serde_json::to_value(job_for("role")).unwrap();
        value["format"] = "parquet".into();
        value["compression"] = "snappy".into();
        let parquet = decode_job(value.to_string().as_bytes()).unwrap();
        assert_eq!((parquet.format, parquet.compression), (Format::Parquet, Compression::Snappy));
        value["compression"] = "gzip".into();
        let error = decode_job(value.to_string().as_bytes()).unwrap_err();
        assert!(matches!(error, JobDecodeError::Encoding(_)), "{error}");
        assert!(error.to_string().contains("\"gzip\" does not apply to format \"parquet\""), "{error}");
    }

    #[test]
    fn a_manifest_key_in_an_older_job_is_ignored_not_followed() {
        let mut value = serde_json::to_value(job_for("role")).unwrap();
        value["manifestKey"] = "manifests/20261115030000.json".into();
        let job = decode_job(value.to_string().as_bytes()).unwrap();
        assert_eq!(job.run_id, run(), "the job's own run decides which manifest is read");
    }

    #[test]
    fn a_feed_naming_a_missing_connector_is_an_error_not_a_panic() {
        let tenant = tenant();
        let mut feed = tenant.feeds[0].clone();
        feed.connector = "gone".into();
        let error =
            DeliveryJob::for_feed(run(), &tenant, &feed, DeliveryPlan::full(), at("2026-11-19T03:20:00Z")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tenant \"acme\" feed \"mail\" names connector \"gone\", which the tenant does not have"
        );
    }
}
