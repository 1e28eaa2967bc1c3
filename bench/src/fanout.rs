//! `popularity-bench fanout`: the fanout benchmark of docs/benchmarks.md,
//! run against a moto server. Onboards N tenant secrets once (kept for
//! later runs) and times `load_tenants`, the writing of the jobs with the
//! tenants preloaded (against plain conditional PutObjects of the same
//! objects, the emulator's floor) and the whole `fan_out_run`; then the
//! same fanout in process, without the emulator. Measurement and wiring
//! only: the work is done by `popularity_reports` as the Lambda does it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use chrono::Utc;
use clap::Args;
use futures_util::StreamExt;
use popularity_reports::domain::RunId;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps, TENANT_CONCURRENCY};
use popularity_reports::store::{s3_client, LocalDirStore, ObjectStore, PutOutcome, S3Store};
use popularity_reports::tenant::directory::{
    put_tenant_secret, secrets_manager_client, DirectoryError, InMemoryTenants, SecretsManagerTenants, TenantDirectory,
    TenantEntry,
};

use crate::delivery::{publish_run, run_id};
use crate::emulator::{emulator_config, ensure_bucket, REGION};

/// Concurrent CreateSecret calls while onboarding (one at a time is slow).
const SECRET_CREATION_CONCURRENCY: usize = 8;
const SECRET_CREATION_ATTEMPTS: u64 = 5;

#[derive(Args)]
pub struct FanoutBenchArgs {
    /// The moto server, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "MOTO_ENDPOINT")]
    pub endpoint: String,
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// Secret-name prefix of the benchmark tenants, ending with '/'. Secrets
    /// already there from an earlier run are reused. Default:
    /// bench-fanout-<tenants>/tenants/.
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

pub async fn run(args: FanoutBenchArgs) -> anyhow::Result<()> {
    ensure!(args.tenants > 0 && args.runs > 0, "--tenants and --runs must be at least 1");
    let prefix = args.prefix.clone().unwrap_or_else(|| format!("bench-fanout-{}/tenants/", args.tenants));
    let config = emulator_config(&args.endpoint).await;
    let secrets = secrets_manager_client(&config);
    let directory = SecretsManagerTenants::new(secrets.clone(), prefix.as_str())?;

    let started = Instant::now();
    let existing = directory.load_tenants().await?;
    let first_load = started.elapsed().as_secs_f64();
    let present: std::collections::BTreeSet<String> =
        existing.iter().filter(|e| e.config.is_ok()).map(|e| e.tenant_id_from_name.clone()).collect();
    let missing: Vec<usize> = (0..args.tenants).filter(|&i| !present.contains(&fanout_tenant_id(i))).collect();
    eprintln!(
        "{} tenant secrets under {prefix} ({first_load:.1} s to load); creating {}",
        present.len(),
        missing.len()
    );
    if !missing.is_empty() {
        let started = Instant::now();
        create_tenants(&config, &prefix, missing).await?;
        eprintln!(
            "  created in {:.1} s ({SECRET_CREATION_CONCURRENCY} CreateSecret at once)",
            started.elapsed().as_secs_f64()
        );
    }

    let run = run_id();
    let now = run.time() + chrono::Duration::minutes(5);
    let in_process_seconds = fan_out_in_process(args.tenants, run, now).await?;
    println!(
        "| Run | Tenants | load_tenants s | Job writing s (preloaded tenants) | Plain conditional PutObjects s | \
         Job writing / plain | fan_out_run s | Tenants/s | Jobs created |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for round in 1..=args.runs {
        let started = Instant::now();
        let entries = directory.load_tenants().await?;
        let load_seconds = started.elapsed().as_secs_f64();
        ensure!(entries.len() >= args.tenants, "only {} tenants under {prefix}", entries.len());

        let preloaded = FanoutDeps {
            staging: fresh_staging(&config, &format!("bench-fanout-jobs-{round}")).await?,
            tenants: Preloaded(Arc::new(entries)),
            own_buckets: Vec::new(),
        };
        let started = Instant::now();
        let jobs_only = fan_out_run(&preloaded, run, now).await?;
        let writing_seconds = started.elapsed().as_secs_f64();
        let plain_seconds = plain_conditional_puts(&config, &preloaded.staging, round).await?;

        let whole = FanoutDeps {
            staging: fresh_staging(&config, &format!("bench-fanout-run-{round}")).await?,
            tenants: directory.clone(),
            own_buckets: Vec::new(),
        };
        let started = Instant::now();
        let response = fan_out_run(&whole, run, now).await?;
        let whole_seconds = started.elapsed().as_secs_f64();
        ensure!(
            jobs_only.jobs_created == response.jobs_created,
            "the two fanouts disagree: {} and {} jobs",
            jobs_only.jobs_created,
            response.jobs_created
        );
        println!(
            "| {round} | {} | {load_seconds:.1} | {writing_seconds:.1} | {plain_seconds:.1} | {:.0}% | {whole_seconds:.1} \
             | {:.0} | {} |",
            response.tenants,
            100.0 * writing_seconds / plain_seconds,
            response.tenants as f64 / whole_seconds,
            response.jobs_created
        );
    }
    println!(
        "(in process, without moto: {} tenants parsed from their secret JSON and fanned out into a local \
         directory in {in_process_seconds:.2} s)",
        args.tenants
    );
    Ok(())
}

/// The emulator's floor for writing the jobs: the same number of
/// conditional PutObjects, of the same keys and bodies, with the same
/// concurrency, into a fresh bucket — and nothing else.
async fn plain_conditional_puts(
    config: &aws_config::SdkConfig,
    written: &S3Store,
    round: usize,
) -> anyhow::Result<f64> {
    let jobs = written.list("jobs/").await?;
    let mut bodies = Vec::with_capacity(jobs.len());
    for job in &jobs {
        bodies.push((job.key.clone(), written.get(&job.key).await?));
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let bucket = format!("bench-fanout-plain-{round}-{}-{nanos}", std::process::id());
    ensure_bucket(config, &bucket).await?;
    let target = S3Store::new(s3_client(config), bucket, "");
    let started = Instant::now();
    let created: Vec<_> = futures_util::stream::iter(bodies)
        .map(|(key, body)| {
            let target = &target;
            async move { target.put_if_absent(&key, body, "application/json").await }
        })
        .buffer_unordered(TENANT_CONCURRENCY)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    for outcome in created {
        ensure!(outcome? == PutOutcome::Created, "a plain PutObject found its key taken in a fresh bucket");
    }
    Ok(seconds)
}

/// Our own share of a fanout: `tenants` secrets parsed and validated from
/// JSON (an in-memory directory) and fanned out into a local directory,
/// with no emulator in the way.
async fn fan_out_in_process(tenants: usize, run: RunId, now: chrono::DateTime<Utc>) -> anyhow::Result<f64> {
    let prefix = "bench-fanout/tenants/";
    let directory = (0..tenants).fold(InMemoryTenants::new(prefix), |directory, index| {
        directory.with_secret(&fanout_tenant_id(index), fanout_tenant_secret(index))
    });
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let root = std::env::temp_dir().join(format!("bench-fanout-{}-{nanos}", std::process::id()));
    let deps = FanoutDeps { staging: LocalDirStore::new(&root), tenants: directory, own_buckets: Vec::new() };
    publish_run(&deps.staging, run, 1).await?;
    let started = Instant::now();
    let fanned = fan_out_run(&deps, run, now).await;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    ensure!(fanned?.jobs_created == tenants as u64, "the in-process fanout should make one job per tenant");
    Ok(seconds)
}

/// `tenant-00042`.
fn fanout_tenant_id(index: usize) -> String {
    format!("tenant-{index:05}")
}

/// Even tenants get one email feed, odd ones one s3 feed (bucket policy).
fn fanout_tenant_secret(index: usize) -> String {
    let tenant_id = fanout_tenant_id(index);
    let (connector, feed) = if index.is_multiple_of(2) {
        (serde_json::json!({"type": "email", "recipients": [format!("{tenant_id}@bench.example")]}), "mail")
    } else {
        (
            serde_json::json!({"type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::bench-fanout-destination",
                               "region": REGION, "prefix": format!("{tenant_id}/"),
                               "bucketOwnerAccountId": "444455556666"}),
            "lake",
        )
    };
    serde_json::json!({
        "schemaVersion": 1, "tenantId": tenant_id, "plan": "standard", "enabled": true,
        "connectors": {"out": connector},
        "feeds": [{"id": feed, "connector": "out"}]
    })
    .to_string()
}

async fn create_tenants(config: &aws_config::SdkConfig, prefix: &str, missing: Vec<usize>) -> anyhow::Result<()> {
    let secrets = secrets_manager_client(config);
    let missing = Arc::new(missing);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..SECRET_CREATION_CONCURRENCY {
        let (secrets, prefix, missing) = (secrets.clone(), prefix.to_owned(), missing.clone());
        workers.spawn(async move {
            for &index in missing.iter().skip(worker).step_by(SECRET_CREATION_CONCURRENCY) {
                let (secret, tenant_id) = (fanout_tenant_secret(index), fanout_tenant_id(index));
                // moto's CreateSecret is not thread-safe: under concurrent
                // calls it sometimes answers HTTP 500 ("dictionary changed
                // size during iteration") and the SDK's own retries can all
                // land in that window. Creating is idempotent here (an
                // existing secret gets a new version), so try again.
                let mut attempt = 1;
                while let Err(error) = put_tenant_secret(&secrets, &prefix, &secret, &tenant_id).await {
                    if attempt == SECRET_CREATION_ATTEMPTS {
                        return Err(error);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                    attempt += 1;
                }
            }
            Ok::<_, DirectoryError>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// A staging bucket of its own holding a small published run.
async fn fresh_staging(config: &aws_config::SdkConfig, hint: &str) -> anyhow::Result<S3Store> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let bucket = format!("{hint}-{}-{nanos}", std::process::id());
    ensure_bucket(config, &bucket).await?;
    let staging = S3Store::new(s3_client(config), bucket, "");
    publish_run(&staging, run_id(), 1).await?;
    Ok(staging)
}

/// Tenants read once, so a fanout can be timed without reading secrets.
#[derive(Clone)]
struct Preloaded(Arc<Vec<TenantEntry>>);

impl TenantDirectory for Preloaded {
    async fn load_tenants(&self) -> Result<Vec<TenantEntry>, DirectoryError> {
        Ok(self.0.as_ref().clone())
    }

    async fn load_tenant(&self, tenant_id: &str) -> Result<Option<TenantEntry>, DirectoryError> {
        Ok(self.0.iter().find(|e| e.tenant_id_from_name == tenant_id).cloned())
    }

    async fn load_tenant_version(&self, _: &str, _: &str) -> Result<Option<TenantEntry>, DirectoryError> {
        Ok(None)
    }
}
