//! `fanout` and `deliver`: the operator's way to run the delivery stages of
//! one run by hand — after an outage, or locally against moto — with the same
//! handlers and the same environment variables as the `fanout` and
//! `deliver-*` Lambdas (docs/design.md, "Environment variables"). `deliver` works
//! through every job of the run in key order; jobs whose status says
//! `delivered` are skipped exactly as a repeated S3 event would be.

use anyhow::Context;
use clap::Args;
use popularity_reports::config::DeliveryConfig;
use popularity_reports::delivery::connectors::sheets::SheetsIdentity;
use popularity_reports::delivery::{parse_job_key, DelivererKey, JobKind, JobReport, JOBS_PREFIX};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};

use crate::local_deliverers::{Handled, LocalDeliverers};

#[derive(Args)]
pub struct FanoutArgs {
    /// The run, as its id YYYYMMDDHHmmss (UTC). Reads STAGING_BUCKET and
    /// TENANT_SECRET_PREFIX like the fanout Lambda.
    #[arg(value_name = "RUN_ID")]
    pub run_id: RunId,
}

#[derive(Args)]
pub struct DeliverArgs {
    /// The run whose jobs to deliver. Reads the deliverers' variables:
    /// STAGING_BUCKET and TENANT_SECRET_PREFIX, and only when the run has
    /// jobs of that kind: for email SES_SENDER, LINK_SIGNER_SECRET,
    /// LINK_TTL_SECONDS; for gcs STORAGE_EMULATOR_HOST (emulators only); for
    /// sheets GOOGLE_SERVICE_ACCOUNT_SECRET, SHEETS_API_ENDPOINT,
    /// SHEETS_WRITES_PER_MINUTE.
    #[arg(value_name = "RUN_ID")]
    pub run_id: RunId,
}

#[derive(Args)]
pub struct SheetsIdentityArgs {
    /// The secret holding our Google service account's key file.
    #[arg(long, env = "GOOGLE_SERVICE_ACCOUNT_SECRET")]
    pub secret: String,
}

/// Prints the address customers share their spreadsheets with (as Editor):
/// our service account's `client_email`, never the key.
pub async fn sheets_identity(args: SheetsIdentityArgs) -> anyhow::Result<()> {
    let aws = popularity_reports::sdk_config::load_sdk_config().await;
    let identity = SheetsIdentity::load(&secrets_manager_client(&aws), &args.secret).await?;
    println!("{}", identity.client_email());
    Ok(())
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let config = DeliveryConfig::from_env()?;
    let aws = popularity_reports::sdk_config::load_sdk_config().await;
    let deps = FanoutDeps {
        staging: S3Store::new(s3_client(&aws), config.staging_bucket.clone(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&aws), config.tenant_secret_prefix.clone())?
            .requiring_kms_key(config.tenant_secrets_kms_key_id.clone()),
        own_buckets: config.own_buckets(),
    };
    let response = fan_out_run(&deps, args.run_id, chrono::Utc::now())
        .await
        .with_context(|| format!("fanout of run {} failed", args.run_id))?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

pub async fn deliver(args: DeliverArgs) -> anyhow::Result<()> {
    let deliverers = LocalDeliverers::from_env().await?;
    let mut reports: Vec<Result<JobReport, String>> = Vec::new();
    for kind in JobKind::ALL {
        let keys = job_keys(deliverers.staging(), kind, args.run_id).await?;
        if keys.is_empty() {
            continue;
        }
        if !kind.is_supported() {
            eprintln!("{} {kind} jobs left alone: deliver-{kind} is not supported yet", keys.len());
            continue;
        }
        let keys: Vec<DelivererKey> =
            keys.iter().map(|key| parse_job_key(key).map(DelivererKey::Job)).collect::<Result<_, _>>()?;
        for handled in deliverers.handle(kind, &keys).await.with_context(|| format!("the run has {kind} jobs"))? {
            if let Handled::Job(report) = handled {
                reports.push(report);
            }
        }
    }
    let failures = reports.iter().filter(|r| r.is_err()).count();
    for report in &reports {
        match report {
            Ok(job) => println!(
                "{:<60} {:<26} {:>3} objects {:>12} bytes",
                job.job_key,
                job.disposition.describe(),
                job.objects,
                job.bytes
            ),
            Err(error) => println!("FAILED {error}"),
        }
    }
    anyhow::ensure!(failures == 0, "{failures} of {} jobs failed; see their status objects", reports.len());
    Ok(())
}

/// Keys of every job of `kind` in the run, sorted.
async fn job_keys(staging: &S3Store, kind: JobKind, run: RunId) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{JOBS_PREFIX}{kind}/{run}/");
    let listed = staging.list(&prefix).await.with_context(|| format!("listing {}", staging.describe(&prefix)))?;
    Ok(listed.into_iter().map(|entry| entry.key).collect())
}
