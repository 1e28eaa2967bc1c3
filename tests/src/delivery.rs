//! Fixtures for the delivery tests: a published run in a staging bucket
//! (canonical parts written by the real `PartWriter`, then the manifest),
//! the sample S3 events of `events/fanout`, `events/deliver-s3` and
//! `events/deliver-email` (used verbatim: their keys name run
//! 20261119030000 and tenants `acme` and `beta-music`, which each test
//! creates under its own tenant secret prefix and staging bucket), tenant
//! secrets written raw (so malformed ones can exist), and a capture of every
//! log line the tests emit, to check that no secret value is ever logged.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use aws_config::SdkConfig;
use aws_lambda_events::s3::S3Event;
use chrono::{DateTime, Utc};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::DeliverDeps;
use popularity_reports::domain::RunId;
use popularity_reports::manifest::RunManifest;
use popularity_reports::store::{ObjectStore, S3Store};

use crate::synthetic_run::{self, SyntheticRunSize};

/// The run every sample event names.
pub const RUN_ID: &str = "20261119030000";

pub fn run_id() -> RunId {
    RUN_ID.parse().unwrap()
}

/// deliver-s3's dependencies as its `main.rs` builds them: staging, the
/// given tenant directory, destinations reached with `admin`'s credentials,
/// the staging bucket refused as a destination, and the clock `now`.
pub fn s3_deliver_deps<T>(
    admin: &SdkConfig,
    staging: &S3Store,
    tenants: T,
    now: fn() -> DateTime<Utc>,
) -> DeliverDeps<S3Store, T, S3Deliverer<S3Store>> {
    DeliverDeps {
        staging: staging.clone(),
        tenants,
        deliverer: S3Deliverer {
            staging: staging.clone(),
            destinations: S3Destinations::new(admin.clone(), vec![staging.bucket().to_owned()]),
        },
        now,
    }
}

/// The S3 event in `events/<path>`, parsed as the function receives it.
pub fn sample_event(path: &str) -> S3Event {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not an S3 event: {e}", file.display()))
}

/// An S3 event for `key` (URL-encoded here, as S3 sends it), shaped like the samples.
pub fn event_for_key(key: &str) -> S3Event {
    let mut event = sample_event("fanout/manifest-created.json");
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => char::from(b).to_string(),
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect();
    event.records[0].s3.object.key = Some(encoded);
    event
}

pub use crate::synthetic_run::synthetic_items;

/// Writes a run of three canonical JSON reports with `rows` items each, in
/// parts of at most `part_rows`, then its manifest; returns the manifest.
pub async fn publish_synthetic_run<S: ObjectStore>(staging: &S, run: RunId, rows: u64, part_rows: u64) -> RunManifest {
    let size = SyntheticRunSize { rows, part_rows, track_bytes: None };
    synthetic_run::publish_synthetic_run(staging, run, size).await.expect("staging a synthetic run")
}

/// A tenant secret prefix no other test uses.
pub fn unique_tenant_prefix(hint: &str) -> String {
    format!("{}/tenants/", crate::unique_bucket_name(hint))
}

/// Stores `value` as the secret `name` without validating it (so tests can
/// onboard malformed tenants the way a careless operator could).
pub async fn create_raw_secret(config: &SdkConfig, name: &str, value: &str) {
    aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateSecret {name}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
}

/// The staging store of a test: its own bucket, no prefix.
pub async fn staging_store(config: &SdkConfig, hint: &str) -> S3Store {
    let client = popularity_reports::store::s3_client(config);
    let bucket = crate::fresh_bucket(&client, hint).await;
    S3Store::new(client, bucket, "")
}

/// A fixed clock for handlers: the run time plus five minutes.
pub fn pinned_now() -> DateTime<Utc> {
    run_id().time() + chrono::Duration::minutes(5)
}

/// Every log line emitted in this process since [`capture_logs`] was first
/// called, as text.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a global subscriber that records every log
/// line at debug level and above from our crates and info from the rest.
pub fn capture_logs() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture::default();
            let sink = capture.0.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info,popularity_reports=debug"))
                .with_writer(move || CaptureWriter(sink.clone()))
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
            capture
        })
        .clone()
}

/// Panics if any of `secrets` appears in the captured logs.
pub fn assert_logs_hold_none_of(capture: &LogCapture, secrets: &[&str]) {
    let logs = capture.text();
    assert!(!logs.is_empty(), "the capture recorded nothing: is it installed?");
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!logs.contains(secret), "a secret value appears in the logs");
    }
}

/// A customer who has not created their bucket yet: tenant `acme` (under
/// its own secret prefix) with one feed, `default` (the artist report),
/// through an `s3-bucket-policy` connector to a bucket of account
/// 444444444444 that does not exist; the run is fanned out. Returns the
/// tenant secret prefix, the bucket's name and the customer's account.
pub async fn tenant_whose_bucket_is_missing(
    admin: &SdkConfig,
    staging: &S3Store,
    hint: &str,
) -> (String, String, SdkConfig) {
    use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
    use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
    let customer = crate::customer::account_config(admin, "444444444444").await;
    let bucket = crate::unique_bucket_name(&format!("{hint}-dest"));
    let prefix = unique_tenant_prefix(hint);
    let secret = serde_json::json!({"schemaVersion": 1, "tenantId": "acme", "plan": "trial",
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": "in/", "bucketOwnerAccountId": "444444444444"}},
        "feeds": [{"id": "default", "connector": "lake", "reports": ["artist"]}]});
    create_raw_secret(admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let tenants = SecretsManagerTenants::new(secrets_manager_client(admin), prefix.as_str()).unwrap();
    let fanout = FanoutDeps { staging: staging.clone(), tenants, own_buckets: vec![] };
    fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
    (prefix, bucket, customer)
}
