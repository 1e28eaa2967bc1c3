//! `fanout` and `deliver`: the operator's way to run the delivery stages of
//! one run by hand — after an outage, or locally against moto — with the same
//! handlers and the same environment variables as the `fanout`,
//! `deliver-s3` and `deliver-email` Lambdas (DESIGN §8). `deliver` works
//! through every job of the run in key order; jobs whose status says
//! `delivered` are skipped exactly as a repeated S3 event would be.

use anyhow::Context;
use aws_config::BehaviorVersion;
use clap::Args;
use popularity_reports::config::{DeliveryConfig, EmailConfig, GcsConfig};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::gcs::GcsDeliverer;
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{
    deliver_job, parse_job_key, DeliverDeps, Deliverer, JobKind, JobReport, JOBS_PREFIX,
};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant_directory::{secrets_manager_client, SecretsManagerTenants};

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
    /// STAGING_BUCKET, TENANT_SECRET_PREFIX, and for email jobs SES_SENDER,
    /// LINK_SIGNER_SECRET, LINK_TTL_SECONDS.
    #[arg(value_name = "RUN_ID")]
    pub run_id: RunId,
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let config = DeliveryConfig::from_env()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let deps = FanoutDeps {
        staging: S3Store::new(s3_client(&aws), config.staging_bucket.clone(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&aws), config.tenant_secret_prefix.clone())?,
    };
    let response = fan_out_run(&deps, args.run_id, chrono::Utc::now())
        .await
        .with_context(|| format!("fanout of run {} failed", args.run_id))?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

pub async fn deliver(args: DeliverArgs) -> anyhow::Result<()> {
    let config = DeliveryConfig::from_env()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let staging = S3Store::new(s3_client(&aws), config.staging_bucket.clone(), "");
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&aws), config.tenant_secret_prefix.clone());
    let mut reports: Vec<Result<JobReport, String>> = Vec::new();
    for kind in JobKind::ALL {
        let keys = job_keys(&staging, kind, args.run_id).await?;
        if keys.is_empty() {
            continue;
        }
        match kind {
            JobKind::S3 => {
                let deliverer =
                    S3Deliverer { staging: staging.clone(), destinations: S3Destinations::new(aws.clone()) };
                let deps =
                    DeliverDeps { staging: staging.clone(), tenants: tenants()?, deliverer, now: chrono::Utc::now };
                deliver_keys(&deps, &keys, &mut reports).await?;
            }
            JobKind::Email => {
                let email = EmailConfig::from_env().context("the run has email jobs")?;
                let deliverer = EmailDeliverer {
                    staging: staging.clone(),
                    signer: S3LinkSigner::new(
                        aws.clone(),
                        config.staging_bucket.clone(),
                        email.link_signer_secret.clone(),
                        email.link_ttl_seconds,
                    ),
                    mailer: SesMailer::new(&aws),
                    sender: email.sender.clone(),
                    now: chrono::Utc::now,
                };
                let deps =
                    DeliverDeps { staging: staging.clone(), tenants: tenants()?, deliverer, now: chrono::Utc::now };
                deliver_keys(&deps, &keys, &mut reports).await?;
            }
            JobKind::Gcs => {
                let gcs = GcsConfig::from_env().context("the run has gcs jobs")?;
                let deliverer = GcsDeliverer { staging: staging.clone(), endpoint: gcs.storage_endpoint.clone() };
                let deps =
                    DeliverDeps { staging: staging.clone(), tenants: tenants()?, deliverer, now: chrono::Utc::now };
                deliver_keys(&deps, &keys, &mut reports).await?;
            }
            JobKind::Sheets => {
                eprintln!("{} {kind} jobs left alone: their deliverer is not supported yet", keys.len());
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

/// Delivers each job key in turn, as repeated S3 events would.
async fn deliver_keys<D: Deliverer>(
    deps: &DeliverDeps<S3Store, SecretsManagerTenants, D>,
    keys: &[String],
    reports: &mut Vec<Result<JobReport, String>>,
) -> anyhow::Result<()> {
    for key in keys {
        let parts = parse_job_key(key)?;
        reports.push(deliver_job(deps, &parts, None).await.map_err(|e| e.to_string()));
    }
    Ok(())
}

/// Keys of every job of `kind` in the run, sorted.
async fn job_keys(staging: &S3Store, kind: JobKind, run: RunId) -> anyhow::Result<Vec<String>> {
    let prefix = format!("{JOBS_PREFIX}{kind}/{run}/");
    let listed = staging.list(&prefix).await.with_context(|| format!("listing {}", staging.describe(&prefix)))?;
    Ok(listed.into_iter().map(|entry| entry.key).collect())
}
