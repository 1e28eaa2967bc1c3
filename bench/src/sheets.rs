//! `popularity-bench sheets`: the Google Sheets benchmark of
//! docs/benchmarks.md. It starts the project's Sheets API double in a
//! process of its own (`sheets-double-server`, built from the tests crate),
//! publishes a synthetic run into a staging bucket on moto, and for each
//! maxRows asked for delivers a one-report sheets feed with the real
//! `deliver_job` in a child process (so `wait4`'s peak RSS is the
//! delivery's alone), reporting the requests and bytes the double received,
//! wall time, CPU and peak RSS. Measurement and wiring only.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use integration_tests::synthetic_run::{publish_synthetic_run, SyntheticRunSize};
use popularity_reports::delivery::connectors::sheets::{RetryPolicy, SheetsClient, SheetsDeliverer, SheetsIdentity};
use popularity_reports::delivery::{
    deliver_job, job_key, parse_job_key, DeliverDeps, DeliveryOutcome, JobDisposition, JobKind,
};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{
    put_secret, put_tenant_secret, secrets_manager_client, SecretsManagerTenants,
};

use crate::emulator::{delete_object, emulator_config, ensure_bucket};
use crate::measured_child::spawn_and_wait;

const TENANT: &str = "bench-sheets";
const STAGING_BUCKET: &str = "bench-sheets-staging";
const TENANT_PREFIX: &str = "bench-sheets/tenants/";
const KEY_SECRET: &str = "bench-sheets/google-service-account";
const SPREADSHEET: &str = "1BenchSheetsSpreadsheet0000";
const RUN_ID: &str = "20261119030000";

#[derive(Args)]
pub struct SheetsBenchArgs {
    /// The moto server (staging bucket, tenant and key secrets).
    #[arg(long, env = "MOTO_ENDPOINT")]
    pub endpoint: String,
    /// The `sheets-double-server` binary (cargo build --release -p integration-tests --bin sheets-double-server).
    #[arg(long)]
    pub double_server: PathBuf,
    /// maxRows values to deliver, each a run of its own.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    pub max_rows: Vec<u64>,
    /// Write requests a minute (SHEETS_WRITES_PER_MINUTE): Google's default
    /// per-user quota is 60; the double enforces none.
    #[arg(long, default_value_t = 60)]
    pub writes_per_minute: u32,
}

/// The hidden subcommand the benchmark runs in a child process.
#[derive(Args)]
pub struct SheetsWorkerArgs {
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub sheets_endpoint: String,
    #[arg(long)]
    pub feed: String,
    #[arg(long)]
    pub writes_per_minute: u32,
}

fn run_id() -> RunId {
    RUN_ID.parse().expect("RUN_ID is a run id")
}

/// The double's process: its endpoint, and a line protocol for statistics.
struct DoubleServer {
    child: std::process::Child,
    endpoint: String,
    lines: BufReader<std::process::ChildStdout>,
}

impl DoubleServer {
    fn start(binary: &PathBuf, key_file: &PathBuf) -> anyhow::Result<DoubleServer> {
        let mut child = Command::new(binary)
            .args(["--key-file", &key_file.display().to_string(), "--spreadsheet", SPREADSHEET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("the double's stdout")?);
        let mut first = String::new();
        lines.read_line(&mut first)?;
        let endpoint =
            first.trim().strip_prefix("endpoint ").context("the double did not print its endpoint")?.to_owned();
        Ok(DoubleServer { child, endpoint, lines })
    }

    /// What the double served since the last call.
    fn stats(&mut self) -> anyhow::Result<serde_json::Value> {
        let stdin = self.child.stdin.as_mut().context("the double's stdin")?;
        writeln!(stdin, "stats")?;
        stdin.flush()?;
        let mut line = String::new();
        self.lines.read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for DoubleServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

pub async fn run(args: SheetsBenchArgs) -> anyhow::Result<()> {
    ensure!(!args.max_rows.is_empty(), "--max-rows needs at least one value");
    let bench = std::env::current_exe().context("locating the popularity-bench binary")?;
    let config = emulator_config(&args.endpoint).await;
    ensure_bucket(&config, STAGING_BUCKET).await?;
    let staging = S3Store::new(s3_client(&config), STAGING_BUCKET, "");
    let largest = *args.max_rows.iter().max().expect("not empty");
    let run = run_id();
    let published = match staging.get(&popularity_reports::manifest::run_manifest_key(run)).await {
        Ok(body) => serde_json::from_slice::<popularity_reports::manifest::RunManifest>(&body)?,
        Err(_) => {
            eprintln!("publishing a run with {largest} items per report into s3://{STAGING_BUCKET} (once)");
            let size = SyntheticRunSize { rows: largest, part_rows: 5_000_000, track_bytes: None };
            publish_synthetic_run(&staging, run, size).await?
        }
    };
    let track_rows = published.report(popularity_reports::domain::ReportKind::Track).map_or(0, |r| r.rows);
    ensure!(track_rows >= largest, "the published run has {track_rows} track items, fewer than {largest}");

    let key_file = std::env::temp_dir().join(format!("bench-sheets-key-{}.json", std::process::id()));
    let mut double = DoubleServer::start(&args.double_server, &key_file)?;
    let key = std::fs::read_to_string(&key_file)?;
    std::fs::remove_file(&key_file).ok();
    let secrets = secrets_manager_client(&config);
    put_secret(&secrets, KEY_SECRET, &key, "Benchmark: our Google service account key").await?;

    println!("| maxRows | Requests | Bytes sent | Largest request | Wall s | CPU s | Peak RSS |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for &max_rows in &args.max_rows {
        let feed = format!("top-{max_rows}");
        let tenant = serde_json::json!({"schemaVersion": 1, "tenantId": TENANT, "plan": "enterprise",
            "connectors": {"sheet": {"type": "google-sheets", "maxRows": max_rows,
                "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{SPREADSHEET}/edit")}},
            "feeds": [{"id": feed, "connector": "sheet", "reports": ["track"]}]});
        put_tenant_secret(&secrets, TENANT_PREFIX, &tenant.to_string(), TENANT).await?;
        let fanout = FanoutDeps {
            staging: staging.clone(),
            tenants: SecretsManagerTenants::new(secrets.clone(), TENANT_PREFIX)?,
            own_buckets: vec![staging.bucket().to_owned()],
        };
        fan_out_run(&fanout, run, chrono::Utc::now()).await?;
        delete_object(
            &config,
            STAGING_BUCKET,
            &parse_job_key(&job_key(JobKind::Sheets, run, TENANT, &feed))?.status_key(),
        )
        .await?;
        double.stats()?;
        let mut worker = Command::new(&bench);
        worker.args(["sheets-worker", "--endpoint", &args.endpoint, "--sheets-endpoint", &double.endpoint]);
        worker.args(["--feed", &feed, "--writes-per-minute", &args.writes_per_minute.to_string()]);
        let started = Instant::now();
        let (mut child, usage) = spawn_and_wait(worker.stdout(Stdio::piped()), "sheets delivery")?;
        let wall = started.elapsed().as_secs_f64();
        let mut output = String::new();
        child.stdout.take().context("stdout")?.read_to_string(&mut output)?;
        let stats = double.stats()?;
        println!(
            "| {max_rows} | {} | {:.1} MB | {:.2} MB | {wall:.1} | {:.1} | {} MB |",
            stats["writes"],
            stats["bytesSent"].as_f64().unwrap_or(0.0) / 1e6,
            stats["largestRequest"].as_f64().unwrap_or(0.0) / 1e6,
            usage.cpu_seconds,
            usage.peak_rss_bytes / 1_000_000
        );
        eprintln!("  maxRows {max_rows}: {} (the double: {stats})", output.trim());
    }
    println!(
        "(one report tab per run; {} write requests a minute; the double's own work is in its own process)",
        args.writes_per_minute
    );
    Ok(())
}

/// The child process: one delivery of the benchmark's sheets job.
pub async fn run_worker(args: SheetsWorkerArgs) -> anyhow::Result<()> {
    let config = emulator_config(&args.endpoint).await;
    let staging = S3Store::new(s3_client(&config), STAGING_BUCKET, "");
    let secrets = secrets_manager_client(&config);
    let identity = SheetsIdentity::load(&secrets, KEY_SECRET).await?;
    let client = SheetsClient::new(identity, &args.sheets_endpoint, args.writes_per_minute, RetryPolicy::default());
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets, TENANT_PREFIX)?,
        deliverer: SheetsDeliverer { staging, clients: client.into(), now: chrono::Utc::now },
        now: chrono::Utc::now,
    };
    let parts = parse_job_key(&job_key(JobKind::Sheets, run_id(), TENANT, &args.feed))?;
    let started = Instant::now();
    let report = deliver_job(&deps, &parts, None).await?;
    ensure!(report.disposition == JobDisposition::Attempted(DeliveryOutcome::Delivered), "not delivered: {report:?}");
    println!("delivered in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}
