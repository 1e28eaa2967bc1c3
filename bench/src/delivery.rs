//! `popularity-bench delivery`: the delivery benchmark of docs/benchmarks.md,
//! run against a moto server. It publishes a synthetic run of about N MB once,
//! fans it out with the real `fan_out_run`, then delivers its s3 job with the
//! real `deliver_job` in a child process (so the peak RSS measured by `wait4`
//! is the delivery's alone) and, as the baseline, uploads the same staging
//! bytes in another child by plain sequential 8 MiB multipart uploads. With
//! `--gcs-endpoint` the delivery goes to Google Cloud Storage on
//! fake-gcs-server instead (a gcs connector, deliver-gcs), and the baseline
//! is a plain resumable upload of the same bytes by the same crate. With
//! `--gcs-keyless` too, the gcs connector has no key: deliver-gcs writes as
//! the tenant's own Google identity, federating from an AWS role session
//! on moto through the project's Google identity double (started here), and
//! the child also reports how long the first token (exchange and
//! impersonation) and a cached one took.
//! Measurement and wiring only: the work is done by `popularity_reports`
//! exactly as the Lambdas do it.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use chrono::Utc;
use clap::{Args, ValueEnum};
use integration_tests::synthetic_run::{publish_synthetic_run, SyntheticRunSize};
use popularity_reports::delivery::connectors::gcs::{GcsDeliverer, GcsStore};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{
    deliver_job, job_key, parse_job_key, DeliverDeps, DeliveryOutcome, JobDisposition, JobKind,
};
use popularity_reports::domain::{Compression, Encoding, Format, ReportKind, RunId};
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::manifest::{run_manifest_key, RunManifest};
use popularity_reports::store::{
    s3_client, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, S3Store, UPLOAD_CHUNK_BYTES,
};
use popularity_reports::tenant::directory::{put_tenant_secret, secrets_manager_client, SecretsManagerTenants};

use crate::emulator::{delete_object, emulator_config, ensure_bucket, REGION};
use crate::measured_child::spawn_and_wait;

/// The run every benchmark publishes.
const RUN_ID: &str = "20261119030000";
/// Rows per track part, as `rank` writes them (≈ 300 MB of JSON).
const PART_ROWS: u64 = 5_000_000;
/// Rows of the artist and product reports: only the track report is large.
const SMALL_REPORT_ROWS: u64 = 1_000;
const JSON: Encoding = Encoding { format: Format::Json, compression: Compression::None };
const DELIVERY_TENANT: &str = "bench-delivery";
const DELIVERY_FEED: &str = "lake";
/// A syntactically valid IAM user key pair; moto without IAM enforcement
/// accepts any keys and acts as its default account.
const BENCH_ACCESS_KEY_ID: &str = "AKIABENCHMARK0000001";
const BENCH_SECRET_ACCESS_KEY: &str = "benchmarkbenchmarkbenchmarkbenchmark0000";

#[derive(Args)]
pub struct DeliveryBenchArgs {
    /// The moto server, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "MOTO_ENDPOINT")]
    pub endpoint: String,
    /// Size of the track report to deliver, in MB (10^6 bytes), approximately.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// Deliveries and baseline uploads measured (alternating).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The feed's format: json (the canonical, copied as is), jsonl, tsv or
    /// parquet (converted on the fly, line by line).
    #[arg(long, default_value = "json")]
    pub format: String,
    /// The feed's compression: none or gzip for the text formats, zstd or
    /// snappy for parquet.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Deliver into Google Cloud Storage on this emulator (fake-gcs-server as
    /// `scripts/emulator.sh start-gcs` starts it) instead of S3.
    #[arg(long, requires = "gcs_key_file")]
    pub gcs_endpoint: Option<String>,
    /// The service account key file of the gcs connector
    /// (`python scripts/local/google_key.py EMAIL` makes one).
    #[arg(long)]
    pub gcs_key_file: Option<PathBuf>,
    /// Deliver keyless, as the tenant's own Google identity (the baseline
    /// still uploads with the key file).
    #[arg(long, requires = "gcs_endpoint")]
    pub gcs_keyless: bool,
}

/// The workload identity provider of the benchmark's keyless deliveries.
const BENCH_AUDIENCE: &str =
    "//iam.googleapis.com/projects/100000000001/locations/global/workloadIdentityPools/bench/providers/aws";
const BENCH_GOOGLE_PROJECT: &str = "popularity-bench";

/// What a measured child process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkerTask {
    /// `deliver_job` for the benchmark's s3 job.
    Deliver,
    /// Plain sequential multipart uploads of the run's staging parts.
    Baseline,
}

/// The hidden subcommand the benchmark runs in a child process.
#[derive(Args)]
pub struct DeliveryWorkerArgs {
    #[arg(long, value_enum)]
    pub task: WorkerTask,
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub staging_bucket: String,
    /// Deliver: the tenant secret prefix.
    #[arg(long, default_value = "")]
    pub tenant_prefix: String,
    /// Baseline: where the copies go.
    #[arg(long, default_value = "")]
    pub destination_bucket: String,
    /// Deliver: the feed whose job is delivered.
    #[arg(long, default_value = DELIVERY_FEED)]
    pub feed: String,
    /// Deliver to / upload into GCS on this emulator (the bucket is
    /// `destination_bucket`).
    #[arg(long)]
    pub gcs_endpoint: Option<String>,
    /// Baseline into GCS: the key file to upload with.
    #[arg(long)]
    pub gcs_key_file: Option<PathBuf>,
    /// Deliver keyless: the external-account JSON (pointing at the identity
    /// double); the AWS role session comes in the usual AWS_* variables.
    #[arg(long)]
    pub google_external_account: Option<String>,
    /// Deliver keyless: the identity double's base URL (IAM Credentials).
    #[arg(long)]
    pub google_iam_credentials_endpoint: Option<String>,
}

struct Measured {
    /// The work as the child timed it.
    seconds: f64,
    /// The child process from spawn to exit.
    process_seconds: f64,
    bytes: u64,
    peak_rss_bytes: u64,
    /// User + system CPU time of the child.
    cpu_seconds: f64,
    /// Keyless: the first token (federation and impersonation) and a cached one.
    token_seconds: Option<(f64, f64)>,
}

/// The run the delivery and fanout benchmarks publish.
pub(crate) fn run_id() -> RunId {
    RUN_ID.parse().expect("RUN_ID is a run id")
}

pub async fn run(args: DeliveryBenchArgs) -> anyhow::Result<()> {
    ensure!(args.size_mb > 0 && args.runs > 0, "--size-mb and --runs must be at least 1");
    let bench = std::env::current_exe().context("locating the popularity-bench binary")?;
    let config = emulator_config(&args.endpoint).await;
    let client = s3_client(&config);
    let staging_bucket = format!("bench-delivery-staging-{}mb", args.size_mb);
    let destination_bucket = format!("bench-delivery-destination-{}mb", args.size_mb);
    let tenant_prefix = format!("bench-delivery-{}mb/tenants/", args.size_mb);
    ensure_bucket(&config, &staging_bucket).await?;
    ensure_bucket(&config, &destination_bucket).await?;
    let staging = S3Store::new(client.clone(), &staging_bucket, "");
    let run = run_id();

    let manifest = match existing_manifest(&staging, run).await {
        Some(manifest) => {
            eprintln!("reusing the run published earlier in s3://{staging_bucket}");
            manifest
        }
        None => {
            eprintln!("publishing a ~{} MB track report into s3://{staging_bucket} (once)", args.size_mb);
            let started = Instant::now();
            let manifest = publish_run(&staging, run, args.size_mb * 1_000_000).await?;
            eprintln!("  published in {:.1} s", started.elapsed().as_secs_f64());
            manifest
        }
    };
    let run_bytes: u64 = manifest.reports.iter().flat_map(|r| &r.parts).map(|p| p.bytes).sum();
    let track = manifest.report(ReportKind::Track).context("the manifest has no track report")?;
    let track_bytes: u64 = track.parts.iter().map(|p| p.bytes).sum();
    eprintln!(
        "run {run}: track report {} rows in {} parts, {:.1} MB; all reports {:.1} MB",
        track.rows,
        track.parts.len(),
        track_bytes as f64 / 1e6,
        run_bytes as f64 / 1e6
    );

    let secrets = secrets_manager_client(&config);
    let feed = delivery_feed_id(&args.format, &args.compression);
    let gcs = match (&args.gcs_endpoint, &args.gcs_key_file) {
        (Some(endpoint), Some(key_file)) => {
            let key = std::fs::read_to_string(key_file).with_context(|| format!("reading {}", key_file.display()))?;
            gcs_create_bucket(endpoint, &destination_bucket).await?;
            Some((endpoint.clone(), key))
        }
        _ => None,
    };
    // Keyless: the identity double, a role session of "deliver-gcs", and
    // the tenant's account it may impersonate. Kept alive while children run.
    let keyless = match args.gcs_keyless {
        true => Some(keyless_identity(&config, &args.endpoint).await),
        false => None,
    };
    let secret = match (&gcs, &keyless) {
        (Some(_), Some(_)) => gcs_keyless_tenant_secret(&destination_bucket, &feed, &args.format, &args.compression),
        (Some((_, key)), None) => gcs_tenant_secret(&destination_bucket, key, &feed, &args.format, &args.compression)?,
        (None, _) => delivery_tenant_secret(&destination_bucket, &feed, &args.format, &args.compression),
    };
    put_tenant_secret(&secrets, &tenant_prefix, &secret, DELIVERY_TENANT).await.with_context(|| {
        format!("onboarding the benchmark tenant (format {:?}, compression {:?})", args.format, args.compression)
    })?;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets.clone(), tenant_prefix.as_str())?,
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let fanned = fan_out_run(&fanout, run, run.time() + chrono::Duration::minutes(5)).await?;
    ensure!(
        fanned.jobs_created + fanned.jobs_already_existing == 1,
        "fanout should make exactly one job, made {} (and found {})",
        fanned.jobs_created,
        fanned.jobs_already_existing
    );
    let kind = if gcs.is_some() { JobKind::Gcs } else { JobKind::S3 };
    let job = job_key(kind, run, DELIVERY_TENANT, &feed);
    let status = parse_job_key(&job)?.status_key();

    let mut deliveries = Vec::new();
    let mut baselines = Vec::new();
    let clear = |bucket: String| {
        let (config, gcs_endpoint) = (config.clone(), args.gcs_endpoint.clone());
        async move {
            match gcs_endpoint {
                Some(endpoint) => gcs_clear_bucket(&endpoint, &bucket).await,
                None => clear_destination(&config, &bucket).await,
            }
        }
    };
    let gcs_args: Vec<String> = match (&args.gcs_endpoint, &args.gcs_key_file) {
        (Some(endpoint), Some(key_file)) => {
            vec!["--gcs-endpoint".into(), endpoint.clone(), "--gcs-key-file".into(), key_file.display().to_string()]
        }
        _ => Vec::new(),
    };
    for round in 1..=args.runs {
        clear(destination_bucket.clone()).await?;
        // A delivered status would make the next delivery a no-op.
        delete_object(&config, &staging_bucket, &status).await?;
        let mut worker = Command::new(&bench);
        worker.args(["delivery-worker", "--task", "deliver", "--endpoint", &args.endpoint]);
        worker.args(["--staging-bucket", &staging_bucket, "--tenant-prefix", &tenant_prefix, "--feed", &feed]);
        worker.args(&gcs_args);
        if let Some(keyless) = &keyless {
            worker.args(["--google-external-account", &keyless.external_account]);
            worker.args(["--google-iam-credentials-endpoint", &keyless.double.endpoint()]);
            worker.envs(keyless.role.environment());
        }
        let delivery = run_measured(&mut worker).context("the delivery child failed")?;
        print_round(round, "delivery", &delivery);
        deliveries.push(delivery);

        clear(destination_bucket.clone()).await?;
        let mut worker = Command::new(&bench);
        worker.args(["delivery-worker", "--task", "baseline", "--endpoint", &args.endpoint]);
        worker.args(["--staging-bucket", &staging_bucket, "--destination-bucket", &destination_bucket]);
        worker.args(&gcs_args);
        let baseline = run_measured(&mut worker).context("the baseline child failed")?;
        print_round(round, "baseline", &baseline);
        baselines.push(baseline);
    }
    clear(destination_bucket.clone()).await?;

    let peak = |results: &[Measured]| results.iter().map(|m| m.peak_rss_bytes).max().unwrap_or(0) / 1_000_000;
    let (delivery_peak, baseline_peak) = (peak(&deliveries), peak(&baselines));
    let delivery = median(&mut deliveries);
    let baseline = median(&mut baselines);
    let mb = |m: &Measured| m.bytes as f64 / 1e6;
    println!(
        "| Size (MB) | Delivery s | MB/s | Peak RSS | CPU s | Baseline s | MB/s | Peak RSS | CPU s | \
         Delivery / baseline throughput |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {:.0} | {:.2} | {:.1} | {delivery_peak} MB | {:.2} | {:.2} | {:.1} | {baseline_peak} MB | {:.2} | {:.0}% |",
        mb(delivery),
        delivery.seconds,
        mb(delivery) / delivery.seconds,
        delivery.cpu_seconds,
        baseline.seconds,
        mb(baseline) / baseline.seconds,
        baseline.cpu_seconds,
        100.0 * baseline.seconds / delivery.seconds
    );
    println!("(times, MB/s and CPU: the run of median time of {}; peak RSS: the highest of the runs)", args.runs);
    if let Some((first, cached)) = delivery.token_seconds {
        println!(
            "(keyless: the delivery wrote as the tenant's own identity; its first token took {:.1} ms (federation \
             and impersonation, once an hour per tenant in a warm function), a cached one {:.3} ms)",
            first * 1e3,
            cached * 1e3
        );
    }
    if feed != DELIVERY_FEED {
        println!(
            "(delivered as format {} with compression {}: {:.1} MB written from {:.1} MB of canonical JSON; \
             the baseline uploads the canonical bytes)",
            args.format,
            args.compression,
            mb(delivery),
            mb(baseline)
        );
    }
    Ok(())
}

fn print_round(round: usize, what: &str, m: &Measured) {
    eprintln!(
        "run {round} {what:>8}: {:.2} s ({:.2} s with process start), {:.1} MB/s, peak RSS {} MB, CPU {:.2} s",
        m.seconds,
        m.process_seconds,
        m.bytes as f64 / 1e6 / m.seconds,
        m.peak_rss_bytes / 1_000_000,
        m.cpu_seconds
    );
}

/// The median by time (the upper one for an even count).
fn median(results: &mut [Measured]) -> &Measured {
    results.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    &results[results.len() / 2]
}

/// The benchmark feed for a format: `lake` for the canonical JSON (as
/// before the option existed), `lake-<format>-<compression>` otherwise, so a
/// job made for one format is never delivered as another.
fn delivery_feed_id(format: &str, compression: &str) -> String {
    match (format, compression) {
        ("json", "none") => DELIVERY_FEED.to_owned(),
        _ => format!("{DELIVERY_FEED}-{format}-{compression}"),
    }
}

/// The tenant of the delivery benchmark: one s3-keys feed of every report,
/// in `format`/`compression`, into the destination bucket.
fn delivery_tenant_secret(destination_bucket: &str, feed: &str, format: &str, compression: &str) -> String {
    serde_json::json!({
        "schemaVersion": 1, "tenantId": DELIVERY_TENANT, "plan": "enterprise", "enabled": true,
        "connectors": {
            "lake": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{destination_bucket}"),
                     "region": REGION, "prefix": "delivered/",
                     "accessKeyId": BENCH_ACCESS_KEY_ID, "secretAccessKey": BENCH_SECRET_ACCESS_KEY}
        },
        "feeds": [{"id": feed, "connector": "lake", "format": format, "compression": compression}]
    })
    .to_string()
}

/// The tenant of the GCS delivery benchmark: one gcs feed of every report.
fn gcs_tenant_secret(
    bucket: &str,
    key_json: &str,
    feed: &str,
    format: &str,
    compression: &str,
) -> anyhow::Result<String> {
    let key: serde_json::Value = serde_json::from_str(key_json).context("the GCS key file is not JSON")?;
    Ok(serde_json::json!({
        "schemaVersion": 1, "tenantId": DELIVERY_TENANT, "plan": "enterprise", "enabled": true,
        "connectors": {"lake": {"type": "gcs", "bucket": bucket, "prefix": "delivered/", "serviceAccountJson": key}},
        "feeds": [{"id": feed, "connector": "lake", "format": format, "compression": compression}]
    })
    .to_string())
}

/// The tenant of the keyless GCS benchmark: one gcs feed without a key.
fn gcs_keyless_tenant_secret(bucket: &str, feed: &str, format: &str, compression: &str) -> String {
    serde_json::json!({
        "schemaVersion": 1, "tenantId": DELIVERY_TENANT, "plan": "enterprise", "enabled": true,
        "connectors": {"lake": {"type": "gcs", "bucket": bucket, "prefix": "delivered/"}},
        "feeds": [{"id": feed, "connector": "lake", "format": format, "compression": compression}]
    })
    .to_string()
}

/// The Google side of a keyless delivery, as the benchmark sets it up.
struct KeylessIdentity {
    double: integration_tests::google_identity_double::GoogleIdentityDouble,
    role: integration_tests::customer::AssumedRole,
    external_account: String,
}

/// The identity double (verifying against moto's STS at `endpoint`), a
/// role session standing for deliver-gcs, and the tenant's account of ours
/// that the role may impersonate.
async fn keyless_identity(config: &aws_config::SdkConfig, endpoint: &str) -> KeylessIdentity {
    use integration_tests::google_identity_double::{GoogleIdentityDouble, TOKEN_CREATOR_ROLE};
    let double = GoogleIdentityDouble::start(endpoint, BENCH_AUDIENCE, Vec::new());
    let role = integration_tests::customer::assumed_role(config, "bench-deliver-gcs").await;
    double.allow_aws_role(&role.arn);
    let account_id = popularity_reports::google_identity::tenant_account_id(DELIVERY_TENANT);
    let account = double.create_service_account(BENCH_GOOGLE_PROJECT, &account_id);
    double.grant(&account, TOKEN_CREATOR_ROLE, &double.member_of_role(&role.arn));
    let external_account = serde_json::json!({"type": "external_account", "audience": BENCH_AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request", "token_url": double.token_url(),
        "credential_source": {"environment_id": "aws1", "regional_cred_verification_url":
            format!("{}/?Action=GetCallerIdentity&Version=2011-06-15", endpoint.trim_end_matches('/'))}})
    .to_string();
    KeylessIdentity { double, role, external_account }
}

/// Creates a bucket on the GCS emulator (which checks no credentials).
async fn gcs_create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(format!("{}/storage/v1/b?project=bench", endpoint.trim_end_matches('/')))
        .header("Content-Type", "application/json")
        .body(serde_json::json!({"name": bucket}).to_string())
        .send()
        .await
        .with_context(|| format!("creating gs://{bucket} on {endpoint}"))?;
    ensure!(
        response.status().is_success() || response.status() == 409,
        "creating gs://{bucket}: HTTP {}",
        response.status()
    );
    Ok(())
}

/// Deletes every object of a bucket on the GCS emulator, so the next run
/// writes fresh objects (an existing one would be a 412, counted as written).
async fn gcs_clear_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let base = format!("{}/storage/v1/b/{bucket}/o", endpoint.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let listing: serde_json::Value =
        serde_json::from_slice(&http.get(&base).send().await?.error_for_status()?.bytes().await?)?;
    for item in listing["items"].as_array().into_iter().flatten() {
        let name = item["name"].as_str().context("an object without a name")?;
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        http.delete(format!("{base}/{encoded}")).send().await?.error_for_status()?;
    }
    Ok(())
}

/// Deletes everything in the destination, so each run writes fresh objects
/// and the emulator's disk holds one copy at a time.
async fn clear_destination(config: &aws_config::SdkConfig, bucket: &str) -> anyhow::Result<()> {
    let client = s3_client(config);
    let store = S3Store::new(client.clone(), bucket, "");
    for entry in store.list("").await? {
        client
            .delete_object()
            .bucket(bucket)
            .key(&entry.key)
            .send()
            .await
            .with_context(|| format!("deleting s3://{bucket}/{}", entry.key))?;
    }
    Ok(())
}

/// The run published by an earlier invocation, if its manifest is there.
async fn existing_manifest(staging: &S3Store, run: RunId) -> Option<RunManifest> {
    let body = staging.get(&run_manifest_key(run)).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Stages a canonical JSON run whose track report holds about `track_bytes`
/// in parts of at most [`PART_ROWS`] rows (streamed: no part is held whole),
/// with small artist and product reports, and the run manifest last.
pub(crate) async fn publish_run<S: ObjectStore>(
    staging: &S,
    run: RunId,
    track_bytes: u64,
) -> anyhow::Result<RunManifest> {
    let size = SyntheticRunSize { rows: SMALL_REPORT_ROWS, part_rows: PART_ROWS, track_bytes: Some(track_bytes) };
    Ok(publish_synthetic_run(staging, run, size).await?)
}

/// Runs the command to completion; its stdout is `{"seconds", "bytes"}`. Peak
/// RSS comes from `wait4`'s rusage, as in `popularity-bench rank`.
fn run_measured(command: &mut Command) -> anyhow::Result<Measured> {
    // The report is one short line: it fits in the pipe while we wait.
    let (mut child, usage) = spawn_and_wait(command.stdout(Stdio::piped()), "benchmark child")?;
    let mut output = String::new();
    child.stdout.take().context("the child's stdout")?.read_to_string(&mut output)?;
    let report: serde_json::Value =
        serde_json::from_str(output.trim()).with_context(|| format!("the child printed {output:?}"))?;
    let (Some(seconds), Some(bytes)) = (report["seconds"].as_f64(), report["bytes"].as_u64()) else {
        bail!("the child printed {output:?}, not {{\"seconds\": .., \"bytes\": ..}}");
    };
    let token_seconds = report["firstTokenSeconds"].as_f64().zip(report["cachedTokenSeconds"].as_f64());
    Ok(Measured {
        seconds,
        process_seconds: usage.seconds,
        bytes,
        peak_rss_bytes: usage.peak_rss_bytes,
        cpu_seconds: usage.cpu_seconds,
        token_seconds,
    })
}

/// The child process: one delivery or one baseline upload, timed.
pub async fn run_worker(args: DeliveryWorkerArgs) -> anyhow::Result<()> {
    let config = emulator_config(&args.endpoint).await;
    let client = s3_client(&config);
    let staging = S3Store::new(client.clone(), &args.staging_bucket, "");
    let run = run_id();
    // Keyless: the tenant's identity as a warm deliver-gcs holds it, its
    // first and a cached token timed before the delivery's own clock starts.
    let mut token_seconds = None;
    let identities = match (&args.google_external_account, &args.google_iam_credentials_endpoint) {
        (Some(external_account), Some(iam_credentials)) => {
            let google = popularity_reports::google_identity::FederationConfig::from_values(
                Some(external_account),
                Some(BENCH_GOOGLE_PROJECT),
                None,
                Some(iam_credentials),
            )?
            .context("keyless Google is configured")?;
            // The role session, from the AWS_* variables the parent set.
            let role = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(args.endpoint.trim_end_matches('/'))
                .region(aws_config::Region::new(REGION))
                .load()
                .await;
            let identities = popularity_reports::google_identity::tenant_identities(&google, &role)?;
            let scope = [popularity_reports::delivery::connectors::gcs::STORAGE_SCOPE];
            let first = Instant::now();
            identities.access_token(DELIVERY_TENANT, &scope).await?;
            let first = first.elapsed().as_secs_f64();
            let cached = Instant::now();
            identities.access_token(DELIVERY_TENANT, &scope).await?;
            token_seconds = Some((first, cached.elapsed().as_secs_f64()));
            Some(identities)
        }
        _ => None,
    };
    let started = Instant::now();
    let bytes = match args.task {
        WorkerTask::Deliver if args.gcs_endpoint.is_some() => {
            let endpoint = args.gcs_endpoint.clone().unwrap_or_default();
            let deps = DeliverDeps {
                staging: staging.clone(),
                tenants: SecretsManagerTenants::new(secrets_manager_client(&config), args.tenant_prefix.as_str())?,
                deliverer: GcsDeliverer { staging: staging.clone(), endpoint, identities },
                now: Utc::now,
            };
            let parts = parse_job_key(&job_key(JobKind::Gcs, run, DELIVERY_TENANT, &args.feed))?;
            let report = deliver_job(&deps, &parts, None).await?;
            ensure!(
                report.disposition == JobDisposition::Attempted(DeliveryOutcome::Delivered),
                "the job was not delivered: {report:?}"
            );
            report.bytes
        }
        WorkerTask::Baseline if args.gcs_endpoint.is_some() => {
            let (Some(endpoint), Some(key_file)) = (&args.gcs_endpoint, &args.gcs_key_file) else {
                bail!("--gcs-endpoint needs --gcs-key-file");
            };
            let key = std::fs::read_to_string(key_file)?;
            let secret = gcs_tenant_secret(&args.destination_bucket, &key, "baseline", "json", "none")?;
            let tenant = popularity_reports::tenant::parse_tenant_secret(DELIVERY_TENANT, &secret)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(popularity_reports::tenant::Connector::Gcs(connector)) = tenant.connectors.get("lake") else {
                bail!("the baseline tenant has no gcs connector");
            };
            let destination = GcsStore::open("lake", connector, endpoint, "bench", None).await?;
            upload_parts_plainly(&staging, &destination, run).await?
        }
        WorkerTask::Deliver => {
            let deps = DeliverDeps {
                staging: staging.clone(),
                tenants: SecretsManagerTenants::new(secrets_manager_client(&config), args.tenant_prefix.as_str())?,
                deliverer: S3Deliverer {
                    staging: staging.clone(),
                    destinations: S3Destinations::new(config.clone(), vec![staging.bucket().to_owned()]),
                },
                now: Utc::now,
            };
            let parts = parse_job_key(&job_key(JobKind::S3, run, DELIVERY_TENANT, &args.feed))?;
            let report = deliver_job(&deps, &parts, None).await?;
            ensure!(
                report.disposition == JobDisposition::Attempted(DeliveryOutcome::Delivered),
                "the job was not delivered: {report:?}"
            );
            report.bytes
        }
        WorkerTask::Baseline => {
            let destination = S3Store::new(client.clone(), &args.destination_bucket, "baseline/");
            upload_parts_plainly(&staging, &destination, run).await?
        }
    };
    // The time of the work itself, without process start and SDK setup.
    let mut report = serde_json::json!({"seconds": started.elapsed().as_secs_f64(), "bytes": bytes});
    if let Some((first, cached)) = token_seconds {
        report["firstTokenSeconds"] = first.into();
        report["cachedTokenSeconds"] = cached.into();
    }
    println!("{report}");
    Ok(())
}

/// The baseline: every part of the run's manifest read from staging and
/// uploaded by the same SDK as a plain multipart upload — 8 MiB parts, one
/// at a time (CreateMultipartUpload, UploadPart, CompleteMultipartUpload via
/// `S3Store`'s upload, which sends a part once the next one is buffered) —
/// without verification, hashing or overlap of download and upload.
async fn upload_parts_plainly<D: ObjectSink>(staging: &S3Store, destination: &D, run: RunId) -> anyhow::Result<u64> {
    let manifest: RunManifest = serde_json::from_slice(&staging.get(&run_manifest_key(run)).await?)?;
    let mut total = 0u64;
    for part in manifest.reports.iter().flat_map(|r| &r.parts) {
        let mut reader = staging.open(&part.key).await?;
        let mut upload = destination.start_upload(&part.key, JSON.content_type()).await?;
        let mut buffer: Vec<u8> = Vec::with_capacity(UPLOAD_CHUNK_BYTES);
        while let Some(chunk) = reader.next_chunk().await? {
            total += chunk.len() as u64;
            let mut rest: &[u8] = &chunk;
            while !rest.is_empty() {
                let taken = rest.len().min(UPLOAD_CHUNK_BYTES - buffer.len());
                buffer.extend_from_slice(&rest[..taken]);
                rest = &rest[taken..];
                if buffer.len() == UPLOAD_CHUNK_BYTES {
                    let full = std::mem::replace(&mut buffer, Vec::with_capacity(UPLOAD_CHUNK_BYTES));
                    upload.write(full.into()).await?;
                }
            }
        }
        if !buffer.is_empty() {
            upload.write(buffer.into()).await?;
        }
        upload.finish().await?;
    }
    Ok(total)
}
