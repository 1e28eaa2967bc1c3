//! Fault matrix (issue 13, item 4) for the functions upstream and around the
//! deliverers: fanout, rank and the sweeper. As in
//! `fault_matrix_against_moto.rs`, every AWS call kind the function makes in
//! a fault-free baseline (S3 list/get/put, conditional puts, Secrets Manager
//! list/batch-get/get) is failed at its first, second and last request with
//! a connection reset, an HTTP 500 or throttling (S3: 503 SlowDown), once
//! (the SDK's retry absorbs it), for all 3 SDK attempts (the invocation
//! fails) or for good, through one [`FaultProxy`] per cell in HTTP mode and
//! with the functions' SDK configuration (standard retries, the backoff
//! shortened). A failing invocation is repeated as Lambda's asynchronous
//! retry would: up to `MaximumRetryAttempts` (2) + 1 for rank and fanout;
//! the sweeper has `MaximumRetryAttempts: 0`, so its retry is the next
//! hourly sweep. Then, for every cell:
//!
//! - fanout: the job and status objects of the run equal the baseline's,
//!   byte for byte (every due feed has exactly one job, none for a feed not
//!   due or invalid, the statuses as without faults); a re-invocation after
//!   success writes nothing (no object's bytes or time change); after a
//!   fault that never ends, nothing differs from the baseline in what was
//!   written, and once the fault clears one invocation completes it;
//! - rank: the run is published completely (manifest present, every part it
//!   lists present with the listed bytes and SHA-256, the same as the
//!   fault-free run's) or there is no manifest; a retry after a partial
//!   failure publishes the same bytes; a re-invocation after success writes
//!   nothing;
//! - the sweeper: no job re-written more than once per sweep, none for a
//!   `delivered`, `invalid` or exhausted status (whose bytes never change),
//!   every delivery the baseline re-drove is re-driven by a later sweep once
//!   the fault is gone, and `redrives` in the status counts the re-writes
//!   that happened (one more when the status write succeeded and the
//!   re-write did not: said in the table).
//!
//! The tables are printed (shown on failure, or with `--nocapture`) and
//! recorded in docs/reliability.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_config::SdkConfig;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, unique_tenant_prefix,
    RUN_ID,
};
use integration_tests::fault_matrix::{
    cells_from, counts_of, faulted_proxy, invoke_as_lambda, run_matrix, sha256, shorten, Cell, CellResult,
    OutcomeColumns,
};
use integration_tests::fault_proxy::{CallKind, FaultProxy, SeenRequest};
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config};
use popularity_reports::delivery::{parse_job_key, status_key, AttemptResult, DeliveryStatus};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::fanout::{fan_out_run, handle_manifest_event, FanoutDeps};
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps};
use popularity_reports::handlers::sweeper::{handle_sweep, SweeperDeps};
use popularity_reports::manifest::RunManifest;
use popularity_reports::rank::RankSettings;
use popularity_reports::sample::{self, SampleSpec};
use popularity_reports::store::{s3_client, ObjectSink, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

/// The table's outcome and cause columns: what the function left, and the
/// error of its last failed invocation.
const COLUMNS: OutcomeColumns = OutcomeColumns { outcome: "final state", cause: "error of the last failure" };

// ---------------------------------------------------------------- objects

/// Every object under `prefix` of `bucket`: its bytes and last-modified time.
async fn objects_under(admin: &SdkConfig, bucket: &str, prefix: &str) -> BTreeMap<String, (Vec<u8>, String)> {
    let client = s3_client(admin);
    let mut objects = BTreeMap::new();
    let mut token = None;
    loop {
        let page =
            client.list_objects_v2().bucket(bucket).prefix(prefix).set_continuation_token(token).send().await.unwrap();
        for object in page.contents() {
            let key = object.key().unwrap().to_owned();
            let body = client.get_object().bucket(bucket).key(&key).send().await.unwrap();
            let bytes = body.body.collect().await.unwrap().into_bytes().to_vec();
            let modified = object.last_modified().map(|t| t.to_string()).unwrap_or_default();
            objects.insert(key, (bytes, modified));
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return objects;
        }
    }
}

fn bodies(objects: &BTreeMap<String, (Vec<u8>, String)>) -> BTreeMap<String, Vec<u8>> {
    objects.iter().map(|(key, (bytes, _))| (key.clone(), bytes.clone())).collect()
}

/// How `actual` differs from `expected`, key by key, in a few words.
fn differences(expected: &BTreeMap<String, Vec<u8>>, actual: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut found = Vec::new();
    for (key, bytes) in actual {
        match expected.get(key) {
            None => found.push(format!("unexpected {key}")),
            Some(want) if want != bytes => found.push(format!("{key} differs from the baseline's")),
            Some(_) => {}
        }
    }
    for key in expected.keys().filter(|key| !actual.contains_key(*key)) {
        found.push(format!("missing {key}"));
    }
    found
}

/// Ends a cell's faulted invocations: the requests of each kind it made
/// (the baseline's counts), and its result so far, the fault cleared for
/// what the cell checks next.
fn close_cell(
    proxy: &FaultProxy,
    cell: Option<&Cell>,
    invocations: usize,
    last_error: Option<&str>,
    problems: Vec<String>,
) -> (BTreeMap<CallKind, u64>, CellResult) {
    let counts = counts_of(&proxy.requests());
    let faults_fired = proxy.request_faults_fired();
    proxy.clear_request_faults();
    let result = CellResult {
        cell: Cell::label(cell),
        faults_fired,
        invocations: invocations.to_string(),
        cause: last_error.map(shorten),
        problems,
        ..Default::default()
    };
    (counts, result)
}

// ----------------------------------------------------------------- fanout

/// An earlier run, 3.5 days before the run fanned out: the weekly feed was
/// delivered in it (so it is not due), and the delta feed's base.
const EARLIER_RUN: &str = "20261115150000";

struct FanoutWorld {
    endpoint: String,
    admin: SdkConfig,
    prefix: String,
    /// The baseline's job and status objects of the run.
    baseline: Mutex<Option<BTreeMap<String, Vec<u8>>>>,
}

/// Tenants that exercise every decision fanout makes: a due s3-role feed, a
/// delta feed with a base, a due email feed and a weekly one delivered 3.5
/// days ago, a disabled tenant and a secret that is not a tenant.
async fn fanout_world() -> Arc<FanoutWorld> {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let prefix = unique_tenant_prefix("fm-fanout");
    let role = |tenant: &str| format!("arn:aws:iam::222222222222:role/fm-{tenant}");
    let tenants = [
        json!({
            "schemaVersion": 1, "tenantId": "lake", "plan": "standard", "enabled": true,
            "connectors": {"lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::fm-fanout-lake",
                "region": "us-east-1", "prefix": "in/", "roleArn": role("lake"), "externalId": "pr-lake-0123456789abcdef0123456789abcdef"}},
            "feeds": [{"id": "lake", "connector": "lake", "reports": ["track", "artist"]}]
        }),
        json!({
            "schemaVersion": 1, "tenantId": "deltas", "plan": "standard", "enabled": true,
            "connectors": {"lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::fm-fanout-deltas",
                "region": "us-east-1", "prefix": "in/", "roleArn": role("deltas"), "externalId": "pr-deltas-0123456789abcdef0123456789abcdef"}},
            "feeds": [{"id": "changes", "connector": "lake", "reports": ["track"], "mode": "delta"}]
        }),
        json!({
            "schemaVersion": 1, "tenantId": "mail", "plan": "standard", "enabled": true,
            "connectors": {"inbox": {"type": "email", "recipients": ["fm@acme.example"]}},
            "feeds": [
                {"id": "daily", "connector": "inbox", "reports": ["track"]},
                {"id": "weekly", "connector": "inbox", "reports": ["artist"], "intervalSeconds": 604800}
            ]
        }),
        json!({
            "schemaVersion": 1, "tenantId": "off", "plan": "standard", "enabled": false,
            "connectors": {"inbox": {"type": "email", "recipients": ["off@acme.example"]}},
            "feeds": [{"id": "daily", "connector": "inbox", "reports": ["track"]}]
        }),
        json!({"schemaVersion": 1, "tenantId": "broken", "feeds": "none"}),
    ];
    for tenant in tenants {
        let id = tenant["tenantId"].as_str().unwrap().to_owned();
        create_raw_secret(&admin, &format!("{prefix}{id}"), &tenant.to_string()).await;
    }
    Arc::new(FanoutWorld { endpoint, admin, prefix, baseline: Mutex::new(None) })
}

/// A staging bucket as fanout finds it: the earlier run and this one
/// published, the earlier run delivered to the weekly and the delta feed.
async fn fanout_staging(world: &FanoutWorld) -> S3Store {
    let staging = staging_store(&world.admin, "fm-fan").await;
    let earlier: RunId = EARLIER_RUN.parse().unwrap();
    publish_synthetic_run(&staging, earlier, 300, 200).await;
    publish_synthetic_run(&staging, run_id(), 300, 200).await;
    let at = earlier.time() + chrono::Duration::minutes(10);
    for (tenant, feed) in [("mail", "weekly"), ("deltas", "changes")] {
        let status = DeliveryStatus::first_record(earlier, tenant, feed, at, at, AttemptResult::Delivered(Vec::new()));
        let body = Bytes::from(serde_json::to_vec(&status).unwrap());
        staging.put(&status_key(earlier, tenant, feed), body, "application/json").await.unwrap();
    }
    staging
}

/// The run's job and status objects, the bucket name taken out.
async fn fanout_objects(world: &FanoutWorld, bucket: &str) -> BTreeMap<String, (Vec<u8>, String)> {
    let mut objects = BTreeMap::new();
    for prefix in [format!("status/{RUN_ID}/"), "jobs/".to_owned()] {
        for (key, (bytes, modified)) in objects_under(&world.admin, bucket, &prefix).await {
            let text = String::from_utf8_lossy(&bytes).replace(bucket, "STAGING");
            objects.insert(key, (text.into_bytes(), modified));
        }
    }
    objects
}

async fn fanout_cell(
    world: Arc<FanoutWorld>,
    _index: usize,
    cell: Option<Cell>,
) -> (CellResult, BTreeMap<CallKind, u64>) {
    let started = Instant::now();
    let staging = fanout_staging(&world).await;
    let (proxy, config) = faulted_proxy(&world.endpoint, cell.as_ref()).await;
    let deps = FanoutDeps {
        staging: S3Store::new(s3_client(&config), staging.bucket(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&config), world.prefix.as_str()).unwrap(),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let event = event_for_key(&format!("manifests/{RUN_ID}.json"));
    let invoked = invoke_as_lambda(|_| handle_manifest_event(&deps, event.clone(), pinned_now())).await;
    let (invocations, last_error, response) = (invoked.made, invoked.last_error, invoked.response);
    let (counts, mut result) = close_cell(&proxy, cell.as_ref(), invocations, last_error.as_deref(), Vec::new());
    let after = fanout_objects(&world, staging.bucket()).await;
    let Some(cell) = cell else {
        let response = response.expect("the baseline fanout succeeds");
        assert!(
            response.jobs_created == 3 && response.feeds_not_delivered == 2 && response.invalid_tenants == 1,
            "{response:?}"
        );
        let keys: Vec<&String> = after.keys().collect();
        eprintln!("fanout baseline: {response:?}; objects: {keys:?}");
        *world.baseline.lock().unwrap() = Some(bodies(&after));
        result.outcome =
            format!("{} jobs, {} statuses", response.jobs_created, after.len() as u64 - response.jobs_created);
        return (result, counts);
    };
    let baseline = world.baseline.lock().unwrap().clone().expect("the baseline ran first");
    match response {
        Some(response) => {
            result.outcome = format!("done: {} jobs created", response.jobs_created);
            result.problems.extend(differences(&baseline, &bodies(&after)));
            if cell.permanent() {
                result.notes.push("not needed: fanout did without it".to_owned());
            }
            // A re-invocation after success writes nothing.
            let again = handle_manifest_event(&deps, event.clone(), pinned_now()).await;
            match again {
                Ok(again) if again.jobs_created == 0 => {}
                Ok(again) => result.problems.push(format!("a re-invocation created {} jobs", again.jobs_created)),
                Err(error) => result.problems.push(format!("a re-invocation failed: {error}")),
            }
            let unchanged = fanout_objects(&world, staging.bucket()).await;
            if unchanged != after {
                result.problems.push("a re-invocation changed objects".to_owned());
            }
        }
        None => {
            result.outcome = "failed".to_owned();
            if !cell.permanent() {
                result.problems.push(format!("failed after {invocations} invocations"));
            } else if !last_error.as_deref().is_some_and(|error| cell.is_named_in(error)) {
                result.problems.push("the error does not name the fault".to_owned());
            }
            // What was written is what the baseline wrote, no more.
            let written = bodies(&after);
            let wrong: Vec<String> =
                differences(&baseline, &written).into_iter().filter(|d| !d.starts_with("missing")).collect();
            result.problems.extend(wrong);
            if !written.is_empty() {
                result.notes.push(format!("{} of {} objects written before it failed", written.len(), baseline.len()));
            }
            // Once the fault is gone, one invocation completes the run.
            match handle_manifest_event(&deps, event.clone(), pinned_now()).await {
                Ok(_) => {
                    result.invocations = format!("{invocations} + 1 after");
                    result.outcome = "failed; completed once the fault cleared".to_owned();
                    result
                        .problems
                        .extend(differences(&baseline, &bodies(&fanout_objects(&world, staging.bucket()).await)));
                }
                Err(error) => result.problems.push(format!("still failing without the fault: {error}")),
            }
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    (result, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fanout_under_every_fault_writes_each_due_job_once_and_the_statuses_of_a_fault_free_run() {
    let world = fanout_world().await;
    let matrix = run_matrix(cells_from, move |index, cell| fanout_cell(world.clone(), index, cell)).await;
    matrix.assert_baseline_made(&["s3:GetObject", "s3:PutObject", "s3:ListObjectsV2"]);
    matrix.print_and_assert_no_problems(
        "fanout (5 tenants: 3 due feeds (s3-role, delta, email), one not due, one disabled, one invalid secret; a delta feed with a base)",
        &COLUMNS,
    );
}

// ------------------------------------------------------------------- rank

const DATA_PREFIX: &str = "warehouse/music/";

struct RankWorld {
    endpoint: String,
    admin: SdkConfig,
    data_bucket: String,
    /// The fault-free run's parts: key → (bytes, SHA-256).
    baseline: Mutex<Option<BTreeMap<String, (u64, String)>>>,
}

/// A data bucket with the sample generator's small catalogue: 3,000
/// tracks, 35 days of plays.
async fn rank_world() -> Arc<RankWorld> {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let s3 = s3_client(&admin);
    let data_bucket = fresh_bucket(&s3, "fm-rank-data").await;
    let data = S3Store::new(s3, data_bucket.clone(), DATA_PREFIX);
    let spec =
        SampleSpec { tracks: 3_000, days: 35, end_date: NaiveDate::from_ymd_opt(2026, 11, 18).unwrap(), seed: 13 };
    sample::generate(&data, &spec, &|_| {}).await.unwrap();
    Arc::new(RankWorld { endpoint, admin, data_bucket, baseline: Mutex::new(None) })
}

fn rank_event() -> EventBridgeEvent<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/rank/scheduled-thursday.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What the staging bucket holds of the run: `Ok(None)` without a
/// manifest, `Ok(Some(parts))` with a manifest whose every part is there
/// with the listed bytes and SHA-256, `Err` naming what is wrong.
async fn published_parts(
    world: &RankWorld,
    staging: &S3Store,
    run: RunId,
) -> Result<Option<BTreeMap<String, (u64, String)>>, String> {
    let manifest_key = format!("manifests/{run}.json");
    let objects = objects_under(&world.admin, staging.bucket(), "").await;
    let Some((manifest, _)) = objects.get(&manifest_key) else {
        return Ok(None);
    };
    let manifest: RunManifest = serde_json::from_slice(manifest).map_err(|e| format!("an unreadable manifest: {e}"))?;
    let mut parts = BTreeMap::new();
    for report in &manifest.reports {
        for part in &report.parts {
            let Some((bytes, _)) = objects.get(&part.key) else {
                return Err(format!("a manifest without its part {}", part.key));
            };
            if bytes.len() as u64 != part.bytes || sha256(bytes) != part.sha256 {
                return Err(format!("{} is not the part the manifest lists", part.key));
            }
            parts.insert(part.key.clone(), (part.bytes, part.sha256.clone()));
        }
    }
    Ok(Some(parts))
}

async fn rank_cell(world: Arc<RankWorld>, _index: usize, cell: Option<Cell>) -> (CellResult, BTreeMap<CallKind, u64>) {
    let started = Instant::now();
    let staging_bucket = fresh_bucket(&s3_client(&world.admin), "fm-rank").await;
    let admin_staging = S3Store::new(s3_client(&world.admin), staging_bucket.clone(), "");
    let (proxy, config) = faulted_proxy(&world.endpoint, cell.as_ref()).await;
    let deps = RankDeps {
        data: S3Store::new(s3_client(&config), world.data_bucket.clone(), DATA_PREFIX),
        staging: S3Store::new(s3_client(&config), staging_bucket.clone(), ""),
        settings: RankSettings { part_rows: 1_000, ..RankSettings::default() },
    };
    let event = rank_event();
    let run = RunId::from_time(event.time.unwrap());
    // After each failed invocation: never a manifest without its parts.
    let problems = Mutex::new(Vec::new());
    let invoked = invoke_as_lambda(|invocation| {
        let (deps, event, world, admin_staging, problems) = (&deps, &event, &world, &admin_staging, &problems);
        async move {
            let outcome = handle_schedule_event(deps, event.clone()).await;
            if outcome.is_err() {
                let found = match published_parts(world, admin_staging, run).await {
                    Ok(None) => None,
                    Ok(Some(_)) => Some(format!("invocation {invocation} failed after publishing")),
                    Err(wrong) => Some(wrong),
                };
                problems.lock().unwrap().extend(found);
            }
            outcome
        }
    })
    .await;
    let (invocations, last_error, published) = (invoked.made, invoked.last_error, invoked.response.is_some());
    let problems = problems.into_inner().unwrap();
    let (counts, mut result) = close_cell(&proxy, cell.as_ref(), invocations, last_error.as_deref(), problems);
    let state = published_parts(&world, &admin_staging, run).await;
    let Some(cell) = cell else {
        let parts = state.expect("the baseline publishes whole").expect("the baseline publishes");
        result.outcome = format!("published, {} parts", parts.len());
        *world.baseline.lock().unwrap() = Some(parts);
        return (result, counts);
    };
    let baseline = world.baseline.lock().unwrap().clone().expect("the baseline ran first");
    let same_as_baseline = |parts: &BTreeMap<String, (u64, String)>, problems: &mut Vec<String>| {
        if *parts != baseline {
            problems.push("published parts differ from the fault-free run's".to_owned());
        }
    };
    match (published, state) {
        (_, Err(wrong)) => {
            result.outcome = "damaged".to_owned();
            result.problems.push(wrong);
        }
        (true, Ok(Some(parts))) => {
            result.outcome = "published".to_owned();
            same_as_baseline(&parts, &mut result.problems);
            if cell.permanent() {
                result.notes.push("not needed: rank did without it".to_owned());
            }
            // A re-invocation after success writes nothing.
            let before = proxy.requests().len();
            match handle_schedule_event(&deps, event.clone()).await {
                Ok(again) if again.already_published => {}
                Ok(_) => result.problems.push("a re-invocation published again".to_owned()),
                Err(error) => result.problems.push(format!("a re-invocation failed: {error}")),
            }
            let writes = proxy.requests()[before..]
                .iter()
                .filter(|seen| {
                    matches!(
                        seen.kind.as_str(),
                        "s3:PutObject" | "s3:CreateMultipartUpload" | "s3:UploadPart" | "s3:CompleteMultipartUpload"
                    )
                })
                .count();
            if writes > 0 {
                result.problems.push(format!("a re-invocation made {writes} writes"));
            }
        }
        (true, Ok(None)) => {
            result.outcome = "no manifest".to_owned();
            result.problems.push("succeeded without publishing".to_owned());
        }
        (false, Ok(Some(_))) => {
            result.outcome = "published".to_owned();
            result.problems.push("failed after publishing".to_owned());
        }
        (false, Ok(None)) => {
            result.outcome = "not published".to_owned();
            if !cell.permanent() {
                result.problems.push(format!("not published after {invocations} invocations"));
            } else if !last_error.as_deref().is_some_and(|error| cell.is_named_in(error)) {
                result.problems.push("the error does not name the fault".to_owned());
            }
            let left = objects_under(&world.admin, &staging_bucket, "reports/").await.len();
            if left > 0 {
                result.notes.push(format!("{left} parts left without a manifest"));
            }
            // Once the fault is gone, a retry publishes the same bytes.
            match handle_schedule_event(&deps, event.clone()).await {
                Ok(_) => match published_parts(&world, &admin_staging, run).await {
                    Ok(Some(parts)) => {
                        result.invocations = format!("{invocations} + 1 after");
                        result.outcome = "not published; published once the fault cleared".to_owned();
                        same_as_baseline(&parts, &mut result.problems);
                    }
                    Ok(None) => result.problems.push("the retry without the fault published nothing".to_owned()),
                    Err(wrong) => result.problems.push(wrong),
                },
                Err(error) => result.problems.push(format!("still failing without the fault: {error}")),
            }
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    (result, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rank_under_every_fault_publishes_the_whole_run_or_no_manifest() {
    let world = rank_world().await;
    let matrix = run_matrix(cells_from, move |index, cell| rank_cell(world.clone(), index, cell)).await;
    matrix.assert_baseline_made(&["s3:GetObject", "s3:PutObject", "s3:ListObjectsV2"]);
    matrix.print_and_assert_no_problems(
        "rank (sample data: 3,000 tracks, 35 days of plays; parts of 1,000 rows)",
        &COLUMNS,
    );
}

// ---------------------------------------------------------------- sweeper

/// The sweeper's `MAX_REDRIVES` in these cells.
const MAX_REDRIVES: u32 = 3;
/// The feeds of the sweeper's tenant, one per state a job can be in.
const SWEEP_FEEDS: [&str; 7] = ["failed", "expired", "never", "recent", "delivered", "invalid", "exhausted"];
/// Never re-driven: their statuses must not change.
const FINAL_FEEDS: [&str; 3] = ["delivered", "invalid", "exhausted"];

/// The three sweeps of a cell, an hour apart (the schedule; a failed sweep
/// is not retried, `MaximumRetryAttempts: 0`), the first 8 hours after the
/// jobs were created (every claim expired, the never-started job old enough).
fn first_sweep() -> DateTime<Utc> {
    pinned_now() + chrono::Duration::hours(8)
}

fn second_sweep() -> DateTime<Utc> {
    first_sweep() + chrono::Duration::hours(1)
}

fn third_sweep() -> DateTime<Utc> {
    first_sweep() + chrono::Duration::hours(2)
}

struct SweepWorld {
    endpoint: String,
    admin: SdkConfig,
    prefix: String,
    /// The feeds the fault-free sweeps re-drove.
    baseline: Mutex<Option<BTreeSet<String>>>,
}

async fn sweep_world() -> Arc<SweepWorld> {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let prefix = unique_tenant_prefix("fm-sweep");
    // One inbox per feed: two feeds of one tenant may not deliver alike.
    let feeds: Vec<_> = SWEEP_FEEDS.iter().map(|id| json!({"id": id, "connector": id, "reports": ["track"]})).collect();
    let connectors: serde_json::Map<String, serde_json::Value> = SWEEP_FEEDS
        .iter()
        .map(|id| (id.to_string(), json!({"type": "email", "recipients": [format!("{id}@acme.example")]})))
        .collect();
    let tenant = json!({
        "schemaVersion": 1, "tenantId": "sw", "plan": "enterprise", "enabled": true,
        "connectors": connectors, "feeds": feeds
    });
    create_raw_secret(&admin, &format!("{prefix}sw"), &tenant.to_string()).await;
    Arc::new(SweepWorld { endpoint, admin, prefix, baseline: Mutex::new(None) })
}

/// A staging bucket with the run, a job per feed (written by fanout) and a
/// status for each but `never`: `failed` and `recent` failed (the latter
/// 10 minutes before the first sweep), `expired` claimed by an attempt
/// whose claim ran out, `delivered`, `invalid`, and `exhausted` (failed,
/// re-driven `MAX_REDRIVES` times).
async fn sweep_staging(world: &SweepWorld) -> S3Store {
    let staging = staging_store(&world.admin, "fm-sweep").await;
    publish_synthetic_run(&staging, run_id(), 300, 200).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&world.admin), world.prefix.as_str()).unwrap(),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let planned = fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
    assert_eq!(planned.jobs_created, SWEEP_FEEDS.len() as u64, "{planned:?}");
    let at = pinned_now() + chrono::Duration::minutes(1);
    let failed = |feed: &str, at: DateTime<Utc>| {
        DeliveryStatus::first_record(run_id(), "sw", feed, at, at, AttemptResult::Failed("boom".to_owned()))
    };
    let mut exhausted = failed("exhausted", at);
    exhausted.redrives = MAX_REDRIVES;
    exhausted.last_redrive_at = Some(at + chrono::Duration::hours(1));
    let expired_job = parse_job_key(&format!("jobs/email/{RUN_ID}/sw/expired.json")).unwrap();
    let statuses = [
        failed("failed", at),
        failed("recent", first_sweep() - chrono::Duration::minutes(10)),
        DeliveryStatus::claimed(None, &expired_job, "token".to_owned(), at, at + chrono::Duration::minutes(16)),
        DeliveryStatus::first_record(run_id(), "sw", "delivered", at, at, AttemptResult::Delivered(Vec::new())),
        DeliveryStatus::first_record(run_id(), "sw", "invalid", at, at, AttemptResult::Invalid("bad".to_owned())),
        exhausted,
    ];
    for status in statuses {
        let body = Bytes::from(serde_json::to_vec(&status).unwrap());
        staging.put(&status_key(run_id(), "sw", &status.feed_id), body, "application/json").await.unwrap();
    }
    staging
}

/// The feed of each job object a forwarded `PutObject` among `requests` wrote.
fn job_rewrites(requests: &[SeenRequest], bucket: &str) -> Vec<String> {
    let prefix = format!("/{bucket}/jobs/email/{RUN_ID}/sw/");
    requests
        .iter()
        .filter(|seen| seen.kind.as_str() == "s3:PutObject" && seen.fault.is_none())
        .filter_map(|seen| Some(seen.path.strip_prefix(&prefix)?.strip_suffix(".json")?.to_owned()))
        .collect()
}

async fn statuses_of(world: &SweepWorld, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    objects_under(&world.admin, bucket, &format!("status/{RUN_ID}/sw/"))
        .await
        .into_iter()
        .map(|(key, (bytes, _))| {
            let feed = key.rsplit('/').next().unwrap().trim_end_matches(".json").to_owned();
            (feed, bytes)
        })
        .collect()
}

async fn sweep_cell(
    world: Arc<SweepWorld>,
    _index: usize,
    cell: Option<Cell>,
) -> (CellResult, BTreeMap<CallKind, u64>) {
    let started = Instant::now();
    let staging = sweep_staging(&world).await;
    let initial = statuses_of(&world, staging.bucket()).await;
    let (proxy, config) = faulted_proxy(&world.endpoint, cell.as_ref()).await;
    let store = S3Store::new(s3_client(&config), staging.bucket(), "");
    let mut problems = Vec::new();
    let (mut last_error, mut failed_sweeps, mut rewrites) = (None, 0, BTreeMap::<String, u32>::new());
    let mut counts = BTreeMap::new();
    for (sweep, now) in [(1, first_sweep as fn() -> DateTime<Utc>), (2, second_sweep), (3, third_sweep)] {
        if sweep == 3 {
            // The fault is over.
            counts = counts_of(&proxy.requests());
            proxy.clear_request_faults();
        }
        let before = proxy.requests().len();
        let deps = SweeperDeps { staging: store.clone(), sweep_days: 3, max_redrives: MAX_REDRIVES, now };
        if let Err(error) = handle_sweep(&deps).await {
            last_error = Some(error.to_string());
            failed_sweeps += 1;
        }
        let this_sweep = job_rewrites(&proxy.requests()[before..], staging.bucket());
        let mut seen = BTreeSet::new();
        for feed in this_sweep {
            if !seen.insert(feed.clone()) {
                problems.push(format!("{feed} re-written twice in sweep {sweep}"));
            }
            *rewrites.entry(feed).or_insert(0) += 1;
        }
    }
    let faults_fired = proxy.request_faults_fired();
    let statuses = statuses_of(&world, staging.bucket()).await;
    let redrives = |feed: &str| -> u32 {
        statuses
            .get(feed)
            .map(|bytes| serde_json::from_slice::<DeliveryStatus>(bytes).expect("a status").redrives)
            .unwrap_or(0)
    };
    for feed in FINAL_FEEDS {
        if rewrites.contains_key(feed) {
            problems.push(format!("{feed}: job re-written"));
        }
        if statuses.get(feed) != initial.get(feed) {
            problems.push(format!("{feed}: status changed"));
        }
    }
    let mut notes = Vec::new();
    for feed in SWEEP_FEEDS.iter().filter(|feed| !FINAL_FEEDS.contains(feed)) {
        let (counted, done) = (redrives(feed), rewrites.get(*feed).copied().unwrap_or(0));
        let counted_before = if *feed == "exhausted" { MAX_REDRIVES } else { 0 };
        let counted = counted - counted_before;
        if counted < done || counted > 3 {
            problems.push(format!("{feed}: redrives {counted} for {done} re-writes"));
        } else if counted > done {
            notes.push(format!("{feed}: redrives {counted} for {done} re-writes (counted, then the re-write failed)"));
        }
    }
    let redriven: BTreeSet<String> = rewrites.keys().cloned().collect();
    let outcome = rewrites.iter().map(|(feed, n)| format!("{feed} ×{n}")).collect::<Vec<_>>().join(", ");
    let mut result = CellResult {
        cell: Cell::label(cell.as_ref()),
        faults_fired,
        invocations: format!("3 sweeps, {failed_sweeps} failed"),
        outcome: format!("re-written: {outcome}"),
        cause: last_error.as_deref().map(shorten),
        problems,
        notes,
        ..Default::default()
    };
    let Some(cell) = cell else {
        assert_eq!(failed_sweeps, 0, "{}", result.row());
        let want: BTreeMap<String, u32> =
            [("expired", 3), ("failed", 3), ("never", 3), ("recent", 2)].map(|(f, n)| (f.to_owned(), n)).into();
        assert_eq!(rewrites, want, "the fault-free sweeps");
        *world.baseline.lock().unwrap() = Some(redriven);
        result.seconds = started.elapsed().as_secs_f64();
        return (result, counts);
    };
    let baseline = world.baseline.lock().unwrap().clone().expect("the baseline ran first");
    // Every delivery due is re-driven once the fault is gone.
    for feed in baseline.difference(&redriven) {
        result.problems.push(format!("{feed} never re-driven"));
    }
    if cell.permanent() && failed_sweeps == 0 {
        result.notes.push("not needed: the sweeps did without it".to_owned());
    }
    if failed_sweeps > 0 && !last_error.as_deref().is_some_and(|error| cell.is_named_in(error)) {
        result.problems.push("the error does not name the fault".to_owned());
    }
    result.seconds = started.elapsed().as_secs_f64();
    (result, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeper_under_every_fault_redrives_each_due_delivery_at_most_once_a_sweep_and_never_a_final_one() {
    let world = sweep_world().await;
    let matrix = run_matrix(cells_from, move |index, cell| sweep_cell(world.clone(), index, cell)).await;
    matrix.assert_baseline_made(&["s3:GetObject", "s3:PutObject", "s3:ListObjectsV2"]);
    matrix.print_and_assert_no_problems(
        "sweeper (7 jobs: failed, expired claim, never started, failed 10 min before, delivered, invalid, \
         exhausted; 2 sweeps an hour apart under the fault, a third after it)",
        &COLUMNS,
    );
}
