//! `popularity redeliver <runId> [--tenant T] [--feed F]` (docs/design.md, "Delivery rules"): the
//! operator's re-drive, once the cause of a failure is fixed. Re-drives the
//! run's failed deliveries (and those whose claim expired, or that no
//! deliverer ever started) exactly as the sweeper does — one function,
//! [`redrive_run`] — but at once and without the sweeper's bound; then
//! waits for each re-driven delivery's next outcome by polling its status
//! object and prints it. Exit 0 when nothing needed re-driving or every
//! re-driven delivery ended `delivered`. With `--local` the deliveries run
//! in this process instead of the deployed deliverer functions.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use popularity_reports::delivery::redrive::{
    redrive_run, RedriveDecision, RedriveFilter, RedrivePolicy, RedriveReport,
};
use popularity_reports::delivery::{
    parse_job_key, DelivererKey, DeliveryOutcome, DeliveryStaging, DeliveryStatus, JobKind,
};
use popularity_reports::domain::RunId;

use crate::local_deliverers::{Handled, LocalDeliverers};

#[derive(Args)]
pub struct RedeliverArgs {
    /// The run, as its id YYYYMMDDHHmmss (UTC). Reads STAGING_BUCKET (and,
    /// with --local, the deliverers' variables, as `popularity deliver`).
    #[arg(value_name = "RUN_ID")]
    pub run_id: RunId,
    /// Only this tenant's deliveries.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only deliveries of feeds with this id.
    #[arg(long)]
    pub feed: Option<String>,
    /// Deliver in this process instead of waiting for the deployed deliverer functions.
    #[arg(long)]
    pub local: bool,
    /// How long to wait for the re-driven deliveries' outcomes.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
}

/// Where a re-driven delivery ended up.
enum Ended {
    /// The first attempt after the re-drive finished with this status.
    Attempted(DeliveryStatus),
    TimedOut(Option<DeliveryOutcome>),
}

pub async fn run(args: RedeliverArgs) -> anyhow::Result<()> {
    let deliverers = LocalDeliverers::from_env().await?;
    let staging = deliverers.staging();
    let filter = RedriveFilter { tenant_id: args.tenant.clone(), feed_id: args.feed.clone() };
    let redriven_at = Utc::now();
    let swept = redrive_run(staging, args.run_id, &filter, &RedrivePolicy::operator(), redriven_at)
        .await
        .with_context(|| format!("re-driving run {}", args.run_id))?;
    for error in &swept.errors {
        println!("NOT RE-DRIVEN {error}");
    }
    let mut redriven: Vec<&RedriveReport> = Vec::new();
    for report in &swept.reports {
        match report.decision {
            RedriveDecision::Redriven => redriven.push(report),
            RedriveDecision::Final => {}
            other => println!(
                "{:<60} left {}: {}",
                report.job_key,
                report.outcome.map_or("pending", DeliveryOutcome::as_str),
                other.as_str()
            ),
        }
    }
    if redriven.is_empty() {
        anyhow::ensure!(swept.errors.is_empty(), "{} deliveries could not be looked at", swept.errors.len());
        println!("nothing needed re-driving ({} deliveries of run {} looked at)", swept.reports.len(), args.run_id);
        return Ok(());
    }
    println!("re-driven {} deliveries of run {}", redriven.len(), args.run_id);
    if args.local {
        for kind in JobKind::ALL {
            let keys: Vec<DelivererKey> = redriven
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| parse_job_key(&r.job_key).map(DelivererKey::Job))
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                continue;
            }
            for handled in deliverers.handle(kind, &keys).await.with_context(|| format!("delivering {kind} jobs"))? {
                if let Handled::Job(Err(error)) = handled {
                    eprintln!("{error}");
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut delivered = 0;
    for report in &redriven {
        let ended = wait_for_attempt(staging, args.run_id, report, redriven_at, deadline).await?;
        match ended {
            Ended::Attempted(status) if status.outcome == DeliveryOutcome::Delivered => {
                delivered += 1;
                println!(
                    "{:<60} delivered: {} objects, {} bytes",
                    report.job_key,
                    status.objects.len(),
                    status.total_bytes()
                );
            }
            Ended::Attempted(status) => println!(
                "{:<60} {}: {}",
                report.job_key,
                status.outcome.as_str(),
                status.last_error.as_deref().unwrap_or("(no error recorded)")
            ),
            Ended::TimedOut(outcome) => println!(
                "{:<60} no outcome after {} s (still {}): is deliver-{} deployed with its S3 notification? (--local \
                 delivers here)",
                report.job_key,
                args.timeout_seconds,
                outcome.map_or("pending", DeliveryOutcome::as_str),
                report.kind
            ),
        }
    }
    anyhow::ensure!(
        delivered == redriven.len() && swept.errors.is_empty(),
        "{} of {} re-driven deliveries did not end delivered{}",
        redriven.len() - delivered,
        redriven.len(),
        if swept.errors.is_empty() { String::new() } else { format!("; {} not looked at", swept.errors.len()) }
    );
    Ok(())
}

/// Polls the status of a re-driven delivery until an attempt that started
/// after the re-drive has recorded its outcome, or `deadline`.
async fn wait_for_attempt<S: popularity_reports::store::ObjectStore>(
    staging: &S,
    run: RunId,
    report: &RedriveReport,
    redriven_at: DateTime<Utc>,
    deadline: Instant,
) -> anyhow::Result<Ended> {
    let reader = DeliveryStaging::new(staging);
    loop {
        let record = reader
            .read_status(run, &report.tenant_id, &report.feed_id)
            .await
            .with_context(|| format!("reading {}", staging.describe(&report.status_key)))?;
        let status = record.and_then(|r| r.status.ok());
        if let Some(status) = &status {
            let attempted = status.attempts.last().is_some_and(|a| a.started_at >= redriven_at);
            if attempted && status.outcome != DeliveryOutcome::InProgress {
                return Ok(Ended::Attempted(status.clone()));
            }
        }
        if Instant::now() >= deadline {
            return Ok(Ended::TimedOut(status.map(|s| s.outcome)));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
