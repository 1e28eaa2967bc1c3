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
use bytes::Bytes;
use chrono::{DateTime, Utc};
use popularity_reports::domain::{part_key, Compression, Encoding, Format, ReportKind, RunId};
use popularity_reports::manifest::{
    run_manifest_key, DeliveryMode, InputSummary, ReportManifest, RunManifest, ScoringSummary, MANIFEST_SCHEMA_VERSION,
    REPORTS_PREFIX,
};
use popularity_reports::report_writer::{PartSummary, PartWriter, ReportItem};
use popularity_reports::store::{ObjectStore, S3Store};

/// The run every sample event names.
pub const RUN_ID: &str = "20261119030000";

pub fn run_id() -> RunId {
    RUN_ID.parse().unwrap()
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

/// The items of a synthetic report: ids spread over the i64 range, ranks
/// 1..=rows, modifiers falling from 1.0.
pub fn synthetic_items(kind: ReportKind, rows: u64) -> Vec<ReportItem> {
    let step = 1_000_003 * (kind as i64 + 1);
    (0..rows)
        .map(|i| ReportItem {
            id: i as i64 * step - 5_000_000,
            search_rank: i + 1,
            modifier_hundredths: (100 - i * 100 / rows.max(1)) as u8,
        })
        .collect()
}

/// Writes a run of three canonical JSON reports with `rows` items each, in
/// parts of at most `part_rows`, then its manifest; returns the manifest.
pub async fn publish_synthetic_run<S: ObjectStore>(staging: &S, run: RunId, rows: u64, part_rows: u64) -> RunManifest {
    let encoding = Encoding { format: Format::Json, compression: Compression::None };
    let mut reports = Vec::new();
    for kind in ReportKind::ALL {
        let items = synthetic_items(kind, rows);
        let mut parts = Vec::new();
        for (index, chunk) in items.chunks(part_rows.max(1) as usize).enumerate() {
            let mut writer = PartWriter::new(kind, encoding, Vec::new()).unwrap();
            for &item in chunk {
                writer.push(item).unwrap();
            }
            let (rows, bytes, sha256, body) = writer.finish().unwrap();
            let key = format!("{REPORTS_PREFIX}{}", part_key(kind, run, index + 1, encoding));
            staging.put(&key, Bytes::from(body), encoding.content_type()).await.unwrap();
            parts.push(PartSummary { key, rows, bytes, sha256 });
        }
        reports.push(ReportManifest {
            data_type: kind.data_type().to_owned(),
            id_field: kind.id_field().to_owned(),
            rows,
            parts,
        });
    }
    let day = run.time().date_naive();
    let manifest = RunManifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: run,
        run_time: run.time(),
        generated_at: run.time() + chrono::Duration::minutes(4),
        mode: DeliveryMode::Full,
        format: encoding.format,
        compression: encoding.compression,
        scoring: ScoringSummary {
            lookback_days: 28,
            half_life_days: 7.0,
            first_day: day - chrono::Duration::days(28),
            last_day: day - chrono::Duration::days(1),
            days_with_plays: vec![day - chrono::Duration::days(1)],
        },
        inputs: InputSummary {
            catalogue_files: 1,
            catalogue_rows: rows,
            play_files: 1,
            play_rows: rows,
            unknown_track_play_rows: 0,
            unknown_track_plays: 0,
        },
        reports,
    };
    let body = serde_json::to_vec_pretty(&manifest).unwrap();
    staging.put(&run_manifest_key(run), Bytes::from(body), "application/json").await.unwrap();
    manifest
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
