//! What fanout and the deliverers exchange through the staging bucket (DESIGN
//! §5, §7): the job object `jobs/<kind>/<runId>/<tenantId>/<feedId>.json` that
//! fanout writes per due feed, the status object
//! `status/<runId>/<tenantId>/<feedId>.json` each deliverer writes, and the
//! decoding of the URL-encoded keys S3 events carry, done here and nowhere
//! else. Pure types and functions, no I/O. A job must never hold a credential:
//! it names the tenant and connector, and the deliverer re-reads the tenant
//! secret, so nothing secret is ever stored in, or logged from, the bucket.

use std::fmt;
use std::str::FromStr;
use std::string::FromUtf8Error;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Compression, Format, ReportKind, RunId};
use crate::manifest::DeliveryMode;
use crate::tenant::{is_safe_id, ConnectorKind, Feed, TenantConfig};

/// The only `schemaVersion` of job objects this build writes and reads.
pub const DELIVERY_JOB_SCHEMA_VERSION: u32 = 1;
/// The only `schemaVersion` of status objects this build writes and reads.
pub const DELIVERY_STATUS_SCHEMA_VERSION: u32 = 1;
pub const JOBS_PREFIX: &str = "jobs/";
pub const STATUS_PREFIX: &str = "status/";

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// The `<kind>` of `jobs/<kind>/...`: which deliverer function a job is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    S3,
    Email,
    Gcs,
    Sheets,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [JobKind::S3, JobKind::Email, JobKind::Gcs, JobKind::Sheets];

    /// The deliverer of a connector type; agrees with [`ConnectorKind::job_kind`].
    pub fn of(connector: ConnectorKind) -> JobKind {
        match connector {
            ConnectorKind::Email => JobKind::Email,
            ConnectorKind::S3Role | ConnectorKind::S3Keys | ConnectorKind::S3BucketPolicy => JobKind::S3,
            ConnectorKind::Gcs => JobKind::Gcs,
            ConnectorKind::GoogleSheets => JobKind::Sheets,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::S3 => "s3",
            JobKind::Email => "email",
            JobKind::Gcs => "gcs",
            JobKind::Sheets => "sheets",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = UnknownJobKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownJobKind(s.to_owned()))
    }
}

/// A `<kind>` segment that names no deliverer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job kind {0:?}: expected s3, email, gcs or sheets")]
pub struct UnknownJobKind(pub String);

/// `jobs/<kind>/<runId>/<tenantId>/<feedId>.json`.
pub fn job_key(kind: JobKind, run_id: RunId, tenant_id: &str, feed_id: &str) -> String {
    format!("{JOBS_PREFIX}{kind}/{run_id}/{tenant_id}/{feed_id}.json")
}

/// `status/<runId>/<tenantId>/<feedId>.json`.
pub fn status_key(run_id: RunId, tenant_id: &str, feed_id: &str) -> String {
    format!("{STATUS_PREFIX}{run_id}/{tenant_id}/{feed_id}.json")
}

/// The feed id of the status object fanout writes for a tenant whose secret
/// cannot be used at all (`status/<runId>/<tenantId>/_tenant.json`). No feed
/// can have it: feed ids start with a letter or digit.
pub const TENANT_STATUS_FEED_ID: &str = "_tenant";

/// The `<tenantId>` segment of a key for a secret-name suffix that may not be
/// a valid id (an invalid secret can be named anything): valid ids are kept,
/// anything else has each byte outside `[a-z0-9-]` written as `%XX`, so the
/// segment is one key segment and still readable.
pub fn tenant_key_segment(tenant_id_from_name: &str) -> String {
    if is_safe_id(tenant_id_from_name) {
        return tenant_id_from_name.to_owned();
    }
    let mut segment = String::with_capacity(tenant_id_from_name.len() * 3);
    for byte in tenant_id_from_name.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    if segment.is_empty() {
        segment.push_str("%00");
    }
    segment
}

/// The identifiers a job key is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKeyParts {
    pub kind: JobKind,
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
}

impl JobKeyParts {
    pub fn job_key(&self) -> String {
        job_key(self.kind, self.run_id, &self.tenant_id, &self.feed_id)
    }

    /// Where the deliverer of this job writes its status.
    pub fn status_key(&self) -> String {
        status_key(self.run_id, &self.tenant_id, &self.feed_id)
    }
}

/// A staging key that cannot be used, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "S3 event key {key:?} has a malformed escape at byte {position}: '%' must be followed by two hexadecimal digits"
    )]
    MalformedEscape { key: String, position: usize },
    #[error("S3 event key {key:?} does not decode to UTF-8 text")]
    NotUtf8 {
        key: String,
        #[source]
        source: FromUtf8Error,
    },
    #[error("{key:?} is not a job key of the form jobs/<kind>/<runId>/<tenantId>/<feedId>.json: {reason}")]
    NotAJobKey { key: String, reason: String },
}

/// Decode an object key as S3 event notifications carry it: URL-encoded,
/// with `+` for a space. The decoded bytes must be UTF-8, as every S3 key is.
pub fn decode_s3_event_key(encoded: &str) -> Result<String, KeyError> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).and_then(|&b| hex_value(b));
                let low = bytes.get(i + 2).and_then(|&b| hex_value(b));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(KeyError::MalformedEscape { key: encoded.to_owned(), position: i });
                };
                decoded.push(high << 4 | low);
                i += 2;
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8(decoded).map_err(|source| KeyError::NotUtf8 { key: encoded.to_owned(), source })
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Split a decoded job key (see [`decode_s3_event_key`]) into its parts,
/// checking each as fanout would have written it.
pub fn parse_job_key(key: &str) -> Result<JobKeyParts, KeyError> {
    let fail = |reason: String| KeyError::NotAJobKey { key: key.to_owned(), reason };
    let rest = key.strip_prefix(JOBS_PREFIX).ok_or_else(|| fail(format!("it does not start with {JOBS_PREFIX:?}")))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let [kind, run_id, tenant_id, file] = segments[..] else {
        return Err(fail(format!("expected 4 segments after {JOBS_PREFIX:?}, found {}", segments.len())));
    };
    let kind: JobKind = kind.parse().map_err(|e: UnknownJobKind| fail(e.to_string()))?;
    let run_id: RunId = run_id.parse().map_err(fail)?;
    if !is_safe_id(tenant_id) {
        return Err(fail(format!("tenant id {tenant_id:?} is not a valid id")));
    }
    let feed_id = file.strip_suffix(".json").ok_or_else(|| fail(format!("{file:?} does not end with .json")))?;
    if !is_safe_id(feed_id) {
        return Err(fail(format!("feed id {feed_id:?} is not a valid id")));
    }
    Ok(JobKeyParts { kind, run_id, tenant_id: tenant_id.to_owned(), feed_id: feed_id.to_owned() })
}

// ---------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------

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
    pub mode: DeliveryMode,
    /// The run manifest in the staging bucket, `manifests/<runId>.json`.
    pub manifest_key: String,
    pub created_at: DateTime<Utc>,
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
    /// The job for one feed of a tenant in the run whose manifest is at `manifest_key`.
    pub fn for_feed(
        manifest_key: &str,
        run_id: RunId,
        tenant: &TenantConfig,
        feed: &Feed,
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
            job_kind: JobKind::of(connector.kind()),
            reports: feed.reports.clone(),
            format: feed.encoding.format,
            compression: feed.encoding.compression,
            mode: feed.mode,
            manifest_key: manifest_key.to_owned(),
            created_at: now,
        })
    }

    /// The connector type, if this build knows it.
    pub fn connector_kind(&self) -> Option<ConnectorKind> {
        ConnectorKind::from_type_name(&self.connector_type)
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
}

/// Read a job object, refusing a schema version this build does not know.
pub fn decode_job(json: &[u8]) -> Result<DeliveryJob, JobDecodeError> {
    let job: DeliveryJob = serde_json::from_slice(json)?;
    if job.schema_version != DELIVERY_JOB_SCHEMA_VERSION {
        return Err(JobDecodeError::UnsupportedVersion { found: job.schema_version });
    }
    Ok(job)
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

/// How a delivery, or one attempt at it, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// Every object and the destination `_manifest.json` were written.
    Delivered,
    /// Failed in a way a retry may fix (network, throttling, access).
    Failed,
    /// Deliberately not delivered (for instance the tenant was disabled since fanout).
    Skipped,
    /// The job cannot succeed however often it is retried (unreadable job,
    /// connector gone or changed type).
    Invalid,
}

/// What one attempt did, as the deliverer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The objects written, destination `_manifest.json` included.
    Delivered(Vec<DeliveredObject>),
    Failed(String),
    /// Why nothing was delivered.
    Skipped(String),
    Invalid(String),
}

/// One invocation of a deliverer on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: DeliveryOutcome,
    /// Why the attempt did not deliver; `None` when it did.
    pub error: Option<String>,
}

/// An object written at the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredObject {
    pub key: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// `status/<runId>/<tenantId>/<feedId>.json`: every attempt at one job and
/// where the latest left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    pub schema_version: u32,
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
    /// The outcome of the latest attempt.
    pub outcome: DeliveryOutcome,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
    /// What the delivered attempt wrote; empty until one delivers.
    pub objects: Vec<DeliveredObject>,
    /// The error of the latest attempt that had one. Kept after a later
    /// success, so a delivered status still shows why it needed a retry.
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl DeliveryStatus {
    /// The status after the first attempt at the job at `parts`.
    pub fn first_attempt(
        parts: &JobKeyParts,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        result: AttemptResult,
    ) -> DeliveryStatus {
        DeliveryStatus::first_record(parts.run_id, &parts.tenant_id, &parts.feed_id, started_at, finished_at, result)
    }

    /// The status after the first attempt for a tenant and feed of a run,
    /// also for outcomes fanout records without a job (invalid secret,
    /// disabled tenant, connector not supported yet, feed not due).
    pub fn first_record(
        run_id: RunId,
        tenant_id: &str,
        feed_id: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        result: AttemptResult,
    ) -> DeliveryStatus {
        let mut status = DeliveryStatus {
            schema_version: DELIVERY_STATUS_SCHEMA_VERSION,
            run_id,
            tenant_id: tenant_id.to_owned(),
            feed_id: feed_id.to_owned(),
            outcome: DeliveryOutcome::Failed,
            attempts: Vec::new(),
            objects: Vec::new(),
            last_error: None,
            updated_at: finished_at,
        };
        status.record_attempt(started_at, finished_at, result);
        status
    }

    /// Whether the job is done: a deliverer that finds this does nothing (DESIGN §7).
    pub fn is_delivered(&self) -> bool {
        self.outcome == DeliveryOutcome::Delivered
    }

    /// Append the next attempt and make it the current outcome.
    pub fn record_attempt(&mut self, started_at: DateTime<Utc>, finished_at: DateTime<Utc>, result: AttemptResult) {
        let (outcome, error) = match result {
            AttemptResult::Delivered(objects) => {
                self.objects = objects;
                (DeliveryOutcome::Delivered, None)
            }
            AttemptResult::Failed(error) => (DeliveryOutcome::Failed, Some(error)),
            AttemptResult::Skipped(reason) => (DeliveryOutcome::Skipped, Some(reason)),
            AttemptResult::Invalid(error) => (DeliveryOutcome::Invalid, Some(error)),
        };
        let number = u32::try_from(self.attempts.len()).map_or(u32::MAX, |n| n.saturating_add(1));
        if error.is_some() {
            self.last_error.clone_from(&error);
        }
        self.attempts.push(Attempt { number, started_at, finished_at, outcome, error });
        self.outcome = outcome;
        self.updated_at = finished_at;
    }

    /// Bytes written at the destination.
    pub fn total_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::run_manifest_key;
    use crate::tenant::parse_tenant_secret;

    const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EXTERNAL_ID: &str = "mm-acme-7f3c";

    fn run() -> RunId {
        "20261119030000".parse().unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
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

    fn job_for(feed_id: &str) -> DeliveryJob {
        let tenant = tenant();
        let feed = tenant.feeds.iter().find(|f| f.id == feed_id).unwrap();
        DeliveryJob::for_feed(&run_manifest_key(run()), run(), &tenant, feed, at("2026-11-19T03:20:00Z")).unwrap()
    }

    #[test]
    fn job_and_status_keys_follow_the_design_layout_and_round_trip() {
        assert_eq!(job_key(JobKind::S3, run(), "acme", "all"), "jobs/s3/20261119030000/acme/all.json");
        assert_eq!(status_key(run(), "acme", "all"), "status/20261119030000/acme/all.json");
        for kind in JobKind::ALL {
            let parts = JobKeyParts { kind, run_id: run(), tenant_id: "acme".into(), feed_id: "weekly-tracks".into() };
            let key = parts.job_key();
            assert_eq!(parse_job_key(&key).unwrap(), parts, "{key}");
            assert_eq!(parts.status_key(), "status/20261119030000/acme/weekly-tracks.json");
        }
    }

    #[test]
    fn job_kinds_agree_with_the_tenant_module() {
        for connector in ConnectorKind::ALL {
            assert_eq!(JobKind::of(connector).as_str(), connector.job_kind(), "{connector}");
        }
        assert_eq!("sheets".parse::<JobKind>().unwrap(), JobKind::Sheets);
        assert!("ftp".parse::<JobKind>().unwrap_err().to_string().contains("expected s3, email, gcs or sheets"));
    }

    #[test]
    fn a_key_from_an_s3_event_is_decoded_then_parsed() {
        let decoded = decode_s3_event_key("jobs%2Fs3/20261119030000/acme/all.json").unwrap();
        let parts = parse_job_key(&decoded).unwrap();
        assert_eq!((parts.kind, parts.tenant_id.as_str(), parts.feed_id.as_str()), (JobKind::S3, "acme", "all"));
    }

    #[test]
    fn malformed_job_keys_are_rejected_with_the_reason() {
        let cases = [
            ("status/20261119030000/acme/all.json", "does not start with \"jobs/\""),
            ("jobs/s3/20261119030000/acme/x/all.json", "expected 4 segments"),
            ("jobs/s3/20261119030000/all.json", "expected 4 segments"),
            ("jobs/ftp/20261119030000/acme/all.json", "unknown job kind \"ftp\""),
            ("jobs/s3/2026111903/acme/all.json", "14 digits"),
            ("jobs/s3/20261119030000/Acme/all.json", "tenant id \"Acme\""),
            ("jobs/s3/20261119030000/acme/all.txt", "does not end with .json"),
            ("jobs/s3/20261119030000/acme/a b.json", "feed id \"a b\""),
            ("jobs/s3/20261119030000/acme/.json", "feed id \"\""),
        ];
        for (key, fragment) in cases {
            let error = parse_job_key(key).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, KeyError::NotAJobKey { .. }), "{key}: {error:?}");
            assert!(message.contains(fragment) && message.contains(key), "{key}: {message}");
        }
    }

    #[test]
    fn s3_event_keys_are_url_decoded_with_plus_for_space() {
        assert_eq!(decode_s3_event_key("a%20b").unwrap(), "a b");
        assert_eq!(decode_s3_event_key("a+b").unwrap(), "a b");
        assert_eq!(decode_s3_event_key("a%2Fb%2f").unwrap(), "a/b/");
        assert_eq!(decode_s3_event_key("%2B").unwrap(), "+");
        assert_eq!(decode_s3_event_key("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_s3_event_key("plain/key.json").unwrap(), "plain/key.json");
        assert_eq!(decode_s3_event_key("").unwrap(), "");
    }

    #[test]
    fn malformed_escapes_and_non_utf8_are_rejected_with_the_position() {
        for (key, position) in [("a%G1", 1), ("a%4", 1), ("%", 0), ("ok%2Fthen%z", 9), ("%4%41", 0)] {
            let error = decode_s3_event_key(key).unwrap_err();
            assert_eq!(error, KeyError::MalformedEscape { key: key.into(), position }, "{key}");
            assert!(error.to_string().contains("two hexadecimal digits"), "{error}");
        }
        let error = decode_s3_event_key("bad%FF").unwrap_err();
        assert!(matches!(error, KeyError::NotUtf8 { .. }), "{error:?}");
        assert!(error.to_string().contains("does not decode to UTF-8"), "{error}");
        assert!(std::error::Error::source(&error).is_some());
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
        assert_eq!((job.format, job.compression, job.mode), (Format::Tsv, Compression::None, DeliveryMode::Delta));
        assert_eq!(job.manifest_key, "manifests/20261119030000.json");
        assert_eq!(job.job_key(), "jobs/s3/20261119030000/acme/keys.json");
        assert_eq!(job.status_key(), "status/20261119030000/acme/keys.json");
        assert_eq!(parse_job_key(&job.job_key()).unwrap(), job.key_parts());

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
                "mode": "delta", "manifestKey": "manifests/20261119030000.json",
                "createdAt": "2026-11-19T03:20:00Z"
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
    fn a_feed_naming_a_missing_connector_is_an_error_not_a_panic() {
        let tenant = tenant();
        let mut feed = tenant.feeds[0].clone();
        feed.connector = "gone".into();
        let error =
            DeliveryJob::for_feed("manifests/x.json", run(), &tenant, &feed, at("2026-11-19T03:20:00Z")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tenant \"acme\" feed \"mail\" names connector \"gone\", which the tenant does not have"
        );
    }

    fn object(key: &str, bytes: u64) -> DeliveredObject {
        DeliveredObject { key: key.into(), bytes, sha256: "ab".repeat(32) }
    }

    #[test]
    fn attempts_accumulate_and_the_latest_sets_the_outcome() {
        let parts = job_for("role").key_parts();
        let mut status = DeliveryStatus::first_attempt(
            &parts,
            at("2026-11-19T03:20:01Z"),
            at("2026-11-19T03:20:09Z"),
            AttemptResult::Failed("AccessDenied assuming the role".into()),
        );
        assert!(!status.is_delivered());
        assert_eq!(status.outcome, DeliveryOutcome::Failed);
        assert_eq!(status.last_error.as_deref(), Some("AccessDenied assuming the role"));

        status.record_attempt(
            at("2026-11-19T03:21:00Z"),
            at("2026-11-19T03:21:05Z"),
            AttemptResult::Failed("SlowDown".into()),
        );
        let objects = vec![
            object("massive/track_popularity/20261119030000/part-001.json.gz", 100),
            object("massive/track_popularity/20261119030000/_manifest.json", 23),
        ];
        status.record_attempt(
            at("2026-11-19T03:23:00Z"),
            at("2026-11-19T03:23:30Z"),
            AttemptResult::Delivered(objects.clone()),
        );

        assert!(status.is_delivered());
        assert_eq!(status.attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            status.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            [DeliveryOutcome::Failed, DeliveryOutcome::Failed, DeliveryOutcome::Delivered]
        );
        assert_eq!(status.attempts[2].error, None);
        assert_eq!(status.last_error.as_deref(), Some("SlowDown"), "the last error stays visible after success");
        assert_eq!(status.objects, objects);
        assert_eq!(status.total_bytes(), 123);
        assert_eq!(status.updated_at, at("2026-11-19T03:23:30Z"));
    }

    #[test]
    fn status_json_uses_the_documented_names_and_round_trips() {
        let parts = job_for("role").key_parts();
        let mut status = DeliveryStatus::first_attempt(
            &parts,
            at("2026-11-19T03:20:01Z"),
            at("2026-11-19T03:20:09Z"),
            AttemptResult::Invalid("connector \"lake\" is now s3-keys, the job was made for s3-role".into()),
        );
        status.record_attempt(
            at("2026-11-19T03:21:00Z"),
            at("2026-11-19T03:21:01Z"),
            AttemptResult::Skipped("tenant disabled".into()),
        );
        let json = serde_json::to_string(&status).unwrap();
        let back: DeliveryStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);

        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["outcome"], "skipped");
        assert_eq!(value["attempts"][0]["outcome"], "invalid");
        assert_eq!(value["attempts"][1]["startedAt"], "2026-11-19T03:21:00Z");
        assert_eq!(value["lastError"], "tenant disabled");
        assert_eq!(value["updatedAt"], "2026-11-19T03:21:01Z");
        for field in ["schemaVersion", "runId", "tenantId", "feedId", "objects", "attempts"] {
            assert!(value.get(field).is_some(), "{field} missing from {json}");
        }
    }
}
