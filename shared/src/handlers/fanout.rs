//! The `fanout` function (docs/design.md, "Shape" and "Delivery rules"): the creation of
//! `manifests/<runId>.json` starts it; it reads every tenant secret and
//! writes one job object per (tenant, feed) that is due, each with a
//! conditional create, so a repeated event creates nothing new. Whatever
//! fanout decides not to deliver gets a status object saying why — an
//! invalid secret (every wrong field), a disabled tenant, a connector type
//! not supported yet, a feed whose interval has not elapsed — so
//! `popularity status <runId>` accounts for every tenant × feed. Feeds of
//! two tenants that would write one destination, or s3-role connectors of
//! two tenants sharing an externalId, are refused (`invalid`, naming the
//! other tenant) before anything is planned for them. A delta
//! feed's job names its base run, or says why this delivery is full.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::s3::S3Event;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{info, instrument, warn};

use crate::delivery::staging::ManifestError;
use crate::delivery::{
    decode_s3_event_key, job_key, tenant_key_segment, AttemptResult, DeliveryJob, DeliveryPlan, DeliveryStaging,
    DeliveryStatus, KeyError, TENANT_STATUS_FEED_ID,
};
use crate::domain::{report_run_prefix, ReportKind, RunId};
use crate::manifest::{DeliveryMode, RunManifest, MANIFESTS_PREFIX, REPORTS_PREFIX};
use crate::metrics::emit_metrics;
use crate::store::{ObjectStore, PutOutcome, StoreError};
use crate::tenant::conflicts::{conflicts_across_verified, own_bucket_refusal, FeedDestination};
use crate::tenant::directory::{valid_by_seniority, DirectoryError, TenantDirectory, TenantEntry};
use crate::tenant::{Feed, TenantConfig, DEFAULT_FULL_EVERY_SECONDS};

/// Tenants processed at once; each does a few small requests.
pub const TENANT_CONCURRENCY: usize = 32;

/// What fanout needs: the staging bucket and the tenant secrets.
pub struct FanoutDeps<S, T> {
    pub staging: S,
    pub tenants: T,
    /// The stack's own buckets, refused as destinations.
    pub own_buckets: Vec<String>,
}

/// The function's result: what one invocation did, summed over its records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutResponse {
    pub run_ids: Vec<String>,
    pub tenants: u64,
    /// Job objects created by this invocation.
    pub jobs_created: u64,
    /// Job objects that already existed (a repeated event).
    pub jobs_already_existing: u64,
    /// Tenants whose secret could not be used.
    pub invalid_tenants: u64,
    /// Feeds not delivered this run, with a status saying why.
    pub feeds_not_delivered: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("S3 event record {index} has no object key")]
    MissingKey { index: usize },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "{key:?} is not a run manifest key (manifests/<runId>.json): {reason}; the template routes only manifests/ to fanout"
    )]
    NotAManifest { key: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("could not list earlier runs: {0}")]
    ListRuns(StoreError),
    #[error("could not list {location} (the reports of a delta feed's base run): {source}")]
    ListReports {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("could not write {what}: {source}")]
    Write { what: String, source: StoreError },
    /// A delivery index of a feed in a cross-tenant overlap could not be
    /// read, so which one is verified there is unknown.
    #[error("{0} (needed to tell which of two tenants' feeds into one place was delivered there)")]
    FeedIndex(#[from] crate::delivery::feed_index::FeedIndexError),
}

impl From<FanoutError> for Diagnostic {
    fn from(error: FanoutError) -> Self {
        let error_type = match &error {
            FanoutError::MissingKey { .. } | FanoutError::Key(_) | FanoutError::NotAManifest { .. } => "InvalidEvent",
            FanoutError::Manifest(ManifestError::Invalid { .. } | ManifestError::Missing { .. }) => "InvalidManifest",
            FanoutError::Manifest(ManifestError::Unreadable { .. })
            | FanoutError::ListRuns(_)
            | FanoutError::ListReports { .. }
            | FanoutError::Directory(_)
            | FanoutError::FeedIndex(_)
            | FanoutError::Write { .. } => "FanoutFailed",
        };
        Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

/// The run a manifest key names.
fn run_of_manifest_key(key: &str) -> Result<RunId, FanoutError> {
    let not_a_manifest = |reason: String| FanoutError::NotAManifest { key: key.to_owned(), reason };
    let run = key
        .strip_prefix(MANIFESTS_PREFIX)
        .and_then(|rest| rest.strip_suffix(".json"))
        .ok_or_else(|| not_a_manifest("it is not manifests/<name>.json".to_owned()))?;
    run.parse().map_err(not_a_manifest)
}

/// Handles an S3 `ObjectCreated` event for `manifests/<runId>.json`.
#[instrument(skip_all)]
pub async fn handle_manifest_event<S: ObjectStore, T: TenantDirectory>(
    deps: &FanoutDeps<S, T>,
    event: S3Event,
    now: DateTime<Utc>,
) -> Result<FanoutResponse, FanoutError> {
    let mut runs = BTreeSet::new();
    for (index, record) in event.records.iter().enumerate() {
        let encoded = record.s3.object.key.as_deref().ok_or(FanoutError::MissingKey { index })?;
        runs.insert(run_of_manifest_key(&decode_s3_event_key(encoded)?)?);
    }
    let mut response = FanoutResponse::default();
    for run in runs {
        let counts = fan_out_run(deps, run, now).await?;
        response.run_ids.push(run.to_string());
        response.tenants += counts.tenants;
        response.jobs_created += counts.jobs_created;
        response.jobs_already_existing += counts.jobs_already_existing;
        response.invalid_tenants += counts.invalid_tenants;
        response.feeds_not_delivered += counts.feeds_not_delivered;
    }
    Ok(response)
}

/// Writes the jobs and statuses of one run for every tenant.
#[instrument(skip_all, fields(run_id = %run))]
pub async fn fan_out_run<S: ObjectStore, T: TenantDirectory>(
    deps: &FanoutDeps<S, T>,
    run: RunId,
    now: DateTime<Utc>,
) -> Result<FanoutResponse, FanoutError> {
    let staging = DeliveryStaging::new(&deps.staging);
    let manifest = staging.read_manifest(run).await?;
    let entries = deps.tenants.load_tenants().await?;
    let earlier_runs = if entries.iter().any(has_history_feed) {
        staging.published_runs_before(run).await.map_err(FanoutError::ListRuns)?
    } else {
        Vec::new()
    };
    // Oldest tenant first: of two naming one destination, the first keeps it.
    let serving: Vec<&TenantConfig> =
        valid_by_seniority(&entries).into_iter().filter(|tenant| tenant.enabled).collect();
    // Verified there first (a delivery recorded), then oldest, keeps it.
    let verified = crate::delivery::feed_index::verified_feeds(&deps.staging, &serving).await?;
    let conflicts = conflicts_across_verified(&serving, &verified);
    let context = RunContext {
        staging,
        manifest: &manifest,
        earlier_runs: &earlier_runs,
        conflicts: &conflicts,
        own_buckets: &deps.own_buckets,
        now,
    };
    let tenant_results: Vec<Result<TenantCounts, FanoutError>> = stream::iter(entries.iter())
        .map(|entry| fan_out_tenant(&context, entry))
        .buffer_unordered(TENANT_CONCURRENCY)
        .collect()
        .await;
    let mut response =
        FanoutResponse { run_ids: vec![run.to_string()], tenants: entries.len() as u64, ..Default::default() };
    for counts in tenant_results {
        let counts = counts?;
        response.jobs_created += counts.jobs_created;
        response.jobs_already_existing += counts.jobs_already_existing;
        response.invalid_tenants += counts.invalid;
        response.feeds_not_delivered += counts.not_delivered;
    }
    emit_metrics(
        "PopularityReports",
        &[("Function", "fanout")],
        &[
            ("Tenants", response.tenants as f64),
            ("JobsCreated", response.jobs_created as f64),
            ("InvalidTenants", response.invalid_tenants as f64),
        ],
    );
    info!(
        tenants = response.tenants,
        jobs_created = response.jobs_created,
        jobs_already_existing = response.jobs_already_existing,
        invalid_tenants = response.invalid_tenants,
        feeds_not_delivered = response.feeds_not_delivered,
        "fanout done"
    );
    Ok(response)
}

/// Whether a tenant has a feed whose delivery depends on earlier runs.
fn has_history_feed(entry: &TenantEntry) -> bool {
    entry.config.as_ref().is_ok_and(|config| {
        config.feeds.iter().any(|feed| feed.interval_seconds.is_some() || feed.mode == DeliveryMode::Delta)
    })
}

struct RunContext<'a, S> {
    staging: DeliveryStaging<'a, S>,
    manifest: &'a RunManifest,
    earlier_runs: &'a [RunId],
    /// Feeds refused because of another tenant's (docs/design.md, "Delivery rules"), and why.
    conflicts: &'a BTreeMap<(String, String), String>,
    own_buckets: &'a [String],
    now: DateTime<Utc>,
}

#[derive(Default)]
struct TenantCounts {
    jobs_created: u64,
    jobs_already_existing: u64,
    invalid: u64,
    not_delivered: u64,
}

/// What fanout decided for one feed.
enum FeedDecision {
    Deliver(DeliveryJob),
    /// Recorded in the feed's status and its delivery index.
    NotDelivered(AttemptResult),
    /// Not due this run: recorded in a status, but not in the delivery
    /// index, which lists the runs that concerned the feed.
    NotDue(AttemptResult),
}

async fn fan_out_tenant<S: ObjectStore>(
    context: &RunContext<'_, S>,
    entry: &TenantEntry,
) -> Result<TenantCounts, FanoutError> {
    let mut counts = TenantCounts::default();
    let tenant = match &entry.config {
        Ok(tenant) => tenant,
        Err(error) => {
            let message = error.describe(&entry.secret_name);
            warn!(%message, "this tenant is not delivered");
            let segment = tenant_key_segment(&entry.tenant_id_from_name);
            record_once(context, &segment, TENANT_STATUS_FEED_ID, AttemptResult::Invalid(message), false).await?;
            counts.invalid = 1;
            return Ok(counts);
        }
    };
    for feed in &tenant.feeds {
        match decide(context, tenant, feed).await? {
            FeedDecision::Deliver(job) => match context.staging.create_job(&job).await {
                Ok(PutOutcome::Created) => counts.jobs_created += 1,
                Ok(PutOutcome::AlreadyExists) => counts.jobs_already_existing += 1,
                Err(source) => return Err(FanoutError::Write { what: format!("job {}", job.job_key()), source }),
            },
            FeedDecision::NotDelivered(result) => {
                record_once(context, &tenant.tenant_id, &feed.id, result, true).await?;
                counts.not_delivered += 1;
            }
            FeedDecision::NotDue(result) => {
                record_once(context, &tenant.tenant_id, &feed.id, result, false).await?;
                counts.not_delivered += 1;
            }
        }
    }
    Ok(counts)
}

/// Whether and how one feed is delivered this run.
async fn decide<S: ObjectStore>(
    context: &RunContext<'_, S>,
    tenant: &TenantConfig,
    feed: &Feed,
) -> Result<FeedDecision, FanoutError> {
    let not_delivered = |reason: String| Ok(FeedDecision::NotDelivered(AttemptResult::Skipped(reason)));
    if !tenant.enabled {
        return not_delivered("the tenant is disabled (\"enabled\": false)".to_owned());
    }
    if feed.paused {
        return not_delivered("the feed is paused (\"paused\": true)".to_owned());
    }
    let Some(connector) = tenant.connector_of(feed) else {
        return Ok(FeedDecision::NotDelivered(AttemptResult::Invalid(format!(
            "feed {:?} names connector {:?}, which the tenant does not have",
            feed.id, feed.connector
        ))));
    };
    if let Some(reason) = context.conflicts.get(&(tenant.tenant_id.clone(), feed.id.clone())) {
        return Ok(FeedDecision::NotDelivered(AttemptResult::Invalid(format!("{reason}; nothing was delivered"))));
    }
    if let Some(reason) =
        connector.s3_destination().and_then(|destination| own_bucket_refusal(&destination.bucket, context.own_buckets))
    {
        return Ok(FeedDecision::NotDelivered(AttemptResult::Invalid(format!(
            "connector {:?}: {reason}",
            feed.connector
        ))));
    }
    let kind = connector.kind();
    if !kind.is_supported() {
        return not_delivered(format!(
            "connector {:?} has type {kind}, which is not supported yet: nothing was delivered",
            feed.connector
        ));
    }
    if let Some(interval) = feed.interval_seconds {
        if let Some(last) = last_delivery_within(context, tenant, feed, interval).await? {
            let due = last.time() + chrono::Duration::seconds(interval as i64);
            return Ok(FeedDecision::NotDue(AttemptResult::Skipped(format!(
                "not due: delivered in run {last}, and intervalSeconds {interval} makes it due again from {}",
                due.format("%Y-%m-%dT%H:%M:%SZ")
            ))));
        }
    }
    let target = feed_target(connector, feed);
    let plan = if feed.mode == DeliveryMode::Delta && kind.takes_deltas() {
        plan_delta(context, tenant, feed, &target).await?
    } else {
        DeliveryPlan::full()
    };
    let plan = plan.to_target(target);
    let job = DeliveryJob::for_feed(context.manifest.run_id, tenant, feed, plan, context.now)
        .expect("the connector was found above");
    Ok(FeedDecision::Deliver(job))
}

/// How a delta feed is delivered this run (docs/design.md, "Delta feeds"): against its base —
/// the latest earlier run delivered to it — unless it has none, the base's
/// reports are gone from staging, or its last full delivery is
/// `fullEverySeconds` or more older than this run (run times, not the
/// clock, so a repeated fanout decides the same).
async fn plan_delta<S: ObjectStore>(
    context: &RunContext<'_, S>,
    tenant: &TenantConfig,
    feed: &Feed,
    target: &str,
) -> Result<DeliveryPlan, FanoutError> {
    let full_every = feed.full_every_seconds.unwrap_or(DEFAULT_FULL_EVERY_SECONDS);
    let run_time = context.manifest.run_id.time();
    let (mut base, mut last_full) = (None, None);
    for &earlier in context.earlier_runs {
        if (run_time - earlier.time()).num_seconds() >= full_every as i64 {
            break;
        }
        let Some(status) = delivered_status(context, earlier, tenant, feed).await? else { continue };
        base.get_or_insert((earlier, status.plan.as_ref().and_then(|plan| plan.target.clone())));
        if status.plan.as_ref().is_none_or(|plan| plan.mode == DeliveryMode::Full) {
            last_full = Some(earlier);
            break;
        }
    }
    let Some((base, base_target)) = base else {
        return Ok(DeliveryPlan::full_because(format!(
            "no earlier delivery of this feed in the fullEverySeconds ({full_every} s) before this run \
             (its first delivery, or the first after a pause)"
        )));
    };
    if let Some(previous) = base_target.filter(|previous| previous != target) {
        return Ok(DeliveryPlan::full_because(format!(
            "the feed changed since its last delivery (run {base}): it delivered {previous}, now {target}"
        )));
    }
    if last_full.is_none() {
        return Ok(DeliveryPlan::full_because(format!(
            "its last full delivery is fullEverySeconds ({full_every} s) or more before this run"
        )));
    }
    if let Some(reason) = missing_reports(context, base, &feed.reports).await? {
        return Ok(DeliveryPlan::full_because(format!("the base run {base} (its last delivery): {reason}")));
    }
    Ok(DeliveryPlan::delta_against(base))
}

/// Where a feed delivers and which reports: `s3://bucket/prefix
/// track,artist,product`, `email inbox track`.
fn feed_target(connector: &crate::tenant::Connector, feed: &Feed) -> String {
    let place = FeedDestination::of(connector, feed)
        .map_or_else(|| format!("{} {}", connector.kind(), feed.connector), |destination| destination.describe());
    let reports: Vec<&str> = feed.reports.iter().map(|kind| kind.data_type().trim_end_matches("_popularity")).collect();
    format!("{place} {}", reports.join(","))
}

/// The status of the feed in an earlier run, if it says delivered.
async fn delivered_status<S: ObjectStore>(
    context: &RunContext<'_, S>,
    earlier: RunId,
    tenant: &TenantConfig,
    feed: &Feed,
) -> Result<Option<DeliveryStatus>, FanoutError> {
    match context.staging.read_status(earlier, &tenant.tenant_id, &feed.id).await {
        Ok(Some(record)) if record.is_delivered() => Ok(record.status.ok()),
        Ok(_) => Ok(None),
        Err(source) => {
            let key = crate::delivery::status_key(earlier, &tenant.tenant_id, &feed.id);
            Err(FanoutError::Write { what: format!("(reading) status {key}"), source })
        }
    }
}

/// Why the canonical reports of `run` cannot serve as a delta's base, if
/// they cannot: the manifest or a part listed in it is gone from staging
/// (the lifecycle expires reports/ before manifests/). A read or listing
/// that fails says nothing about that: it fails the invocation (Lambda
/// retries), so a passing fault never turns a delta delivery into a full
/// one (the fault matrix found it did).
async fn missing_reports<S: ObjectStore>(
    context: &RunContext<'_, S>,
    run: RunId,
    reports: &[ReportKind],
) -> Result<Option<String>, FanoutError> {
    let manifest = match context.staging.read_manifest(run).await {
        Ok(manifest) => manifest,
        Err(error @ ManifestError::Unreadable { .. }) => return Err(error.into()),
        Err(error) => return Ok(Some(error.to_string())),
    };
    for &kind in reports {
        let Some(report) = manifest.report(kind) else {
            return Ok(Some(format!("it has no {} report", kind.data_type())));
        };
        let folder = format!("{REPORTS_PREFIX}{}", report_run_prefix(kind, run));
        let present = context
            .staging
            .store()
            .list(&folder)
            .await
            .map_err(|source| FanoutError::ListReports { location: context.staging.describe(&folder), source })?;
        if let Some(gone) = report.parts.iter().find(|part| !present.iter().any(|entry| entry.key == part.key)) {
            return Ok(Some(format!("{} is no longer in staging", context.staging.describe(&gone.key))));
        }
    }
    Ok(None)
}

/// The newest earlier run less than `interval` seconds before this one in
/// which the feed was delivered, if any.
async fn last_delivery_within<S: ObjectStore>(
    context: &RunContext<'_, S>,
    tenant: &TenantConfig,
    feed: &Feed,
    interval: u64,
) -> Result<Option<RunId>, FanoutError> {
    let run_time = context.manifest.run_id.time();
    for &earlier in context.earlier_runs {
        let age = (run_time - earlier.time()).num_seconds();
        if age >= interval as i64 {
            break;
        }
        if delivered_status(context, earlier, tenant, feed).await?.is_some() {
            return Ok(Some(earlier));
        }
    }
    Ok(None)
}

/// Writes a status fanout decided, unless one exists: a repeated event adds
/// nothing, and never replaces what a deliverer recorded.
async fn record_once<S: ObjectStore>(
    context: &RunContext<'_, S>,
    tenant_segment: &str,
    feed_id: &str,
    result: AttemptResult,
    index: bool,
) -> Result<(), FanoutError> {
    let run = context.manifest.run_id;
    let status = DeliveryStatus::first_record(run, tenant_segment, feed_id, context.now, context.now, result);
    let written = context.staging.record_once(&status).await.map_err(|source| FanoutError::Write {
        what: format!("status {}", crate::delivery::status_key(run, tenant_segment, feed_id)),
        source,
    })?;
    if index && written == PutOutcome::Created {
        crate::delivery::feed_index::index_status(context.staging.store(), &status).await;
    }
    Ok(())
}

/// The key fanout gives the job of `feed`; exposed for tests and tools.
pub fn job_key_of(run: RunId, tenant: &TenantConfig, feed: &Feed) -> Option<String> {
    let connector = tenant.connector_of(feed)?;
    Some(job_key(connector.kind().job_kind(), run, &tenant.tenant_id, &feed.id))
}
