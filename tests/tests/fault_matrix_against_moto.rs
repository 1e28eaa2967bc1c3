//! Fault matrix (issue 13, item 4): every AWS call kind deliver-s3,
//! deliver-email and deliver-gcs make (deliver-gcs: its AWS side — staging,
//! tenant secret, status — with fake-gcs-server behind the project's guard
//! unfaulted; it needs `GCS_EMULATOR_ENDPOINT`), failed at its first,
//! second or last request with a connection reset, an HTTP 500 or throttling (S3: 503 SlowDown), once (the
//! SDK's own retry absorbs it), for all of the SDK's attempts (the call
//! fails, the invocation fails, Lambda's asynchronous retry re-invokes) or
//! for good. Every client of the function — staging, tenant secrets, the
//! customer's bucket through the assumed role, SES — talks to moto through
//! one [`FaultProxy`] in HTTP mode, with the functions' SDK configuration
//! (standard retries, 3 attempts; the backoff shortened so the matrix runs
//! in a minute). An invocation that fails is repeated as Lambda's async
//! retry would, up to the template's `MaximumRetryAttempts` (2) + 1; a
//! delivery still not done after those is re-driven as the sweeper would,
//! once the claim has expired. Then, for every cell: no destination object
//! whose bytes differ from the staging part, no `_manifest.json` without all
//! its parts, no multipart upload left open, exactly one email, and the
//! final status `delivered` — or, for a fault that never ends, `failed`
//! naming the cause. The tables are printed (shown on failure, or with
//! `--nocapture`) and recorded in docs/reliability.md.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use integration_tests::customer::{
    account_config, create_delivery_role, keys_under, open_multipart_uploads, sent_emails,
};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, synthetic_items,
    unique_tenant_prefix, RUN_ID,
};
use integration_tests::fault_matrix::{
    cells_from, counts_of, faulted_proxy, invoke_as_lambda, run_matrix, sha256, shorten, Burst, Cell, CellResult,
    Injection, MatrixRun, OutcomeColumns,
};
use integration_tests::fault_proxy::{CallKind, Fault};
use integration_tests::gcs_guard::GcsGuard;
use integration_tests::google_keys::TestServiceAccount;
use integration_tests::sheets_double::{SheetsDouble, TabSpec};
use integration_tests::{fresh_bucket, gcs_emulator_endpoint, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::gcs::GcsDeliverer;
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::connectors::sheets::{RetryPolicy, SheetsClient, SheetsDeliverer, SheetsIdentity};
use popularity_reports::delivery::{DeliverDeps, Deliverer, DeliveryOutcome, DeliveryStatus};
use popularity_reports::domain::{report_run_prefix, ReportKind};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::manifest::RunManifest;
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const OUR_ACCOUNT: &str = "123456789012";
const ROLE_ACCOUNT: &str = "222222222222";
const SENDER: &str = "reports@popularity.example";
/// deliver-sheets: our service account, and the rows a sheet gets.
const SHEETS_ACCOUNT: &str = "popularity-feeds@popularity-ops.iam.gserviceaccount.com";
const SHEET_ROWS: u64 = 100;

/// Calls deliver-s3 makes only to clean up (aborting uploads an earlier
/// attempt left open, or its own after a failure): when they fail for good,
/// the delivery goes on, and an upload whose abort is refused stays open
/// for the customer's lifecycle rule (docs/delivery.md).
const BEST_EFFORT: [&str; 2] = ["s3:ListMultipartUploads", "s3:AbortMultipartUpload"];

/// The rows of each report and of a part: part-001 of the track report is
/// just over one 8 MiB upload part (a multipart upload of two parts),
/// part-002 a small object (one PutObject).
const ROWS: u64 = 150_000;
const PART_ROWS: u64 = 140_000;

/// What a cell led to, with what the email test checks after the matrix.
#[derive(Debug)]
struct DeliveryCellResult {
    result: CellResult,
    /// deliver-email: the recipient, to count the messages moto received.
    recipient: Option<String>,
    /// deliver-email: SendRawEmail requests that reached moto.
    sends_forwarded: u64,
}

impl Borrow<CellResult> for DeliveryCellResult {
    fn borrow(&self) -> &CellResult {
        &self.result
    }
}

/// The table's outcome and cause columns: the final delivery status, and
/// the cause it records (or the last error).
const COLUMNS: OutcomeColumns = OutcomeColumns { outcome: "final status", cause: "cause recorded" };

/// What every cell shares: the emulator, a staging bucket with one
/// published run, the customer account.
struct World {
    endpoint: String,
    admin: SdkConfig,
    staging: S3Store,
    manifest: RunManifest,
    customer: SdkConfig,
    signer_secret: String,
    /// deliver-gcs: fake-gcs-server behind the project's guard, and the
    /// customer's service account (the same in every cell's secret).
    gcs: Option<(GcsGuard, TestServiceAccount)>,
    /// deliver-sheets: the project's Sheets double and our key file.
    sheets: Option<(SheetsDouble, String)>,
}

async fn world(function: Function, hint: &str) -> Arc<World> {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, hint).await;
    let manifest = publish_synthetic_run(&staging, run_id(), ROWS, PART_ROWS).await;
    let track = manifest.report(ReportKind::Track).unwrap();
    assert_eq!(track.parts.len(), 2);
    assert!(track.parts[0].bytes > 8 * 1024 * 1024, "part-001 is a multipart upload: {}", track.parts[0].bytes);
    let customer = account_config(&admin, ROLE_ACCOUNT).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let signer_secret = format!("{}/link-signer", unique_bucket_name(hint));
    create_raw_secret(
        &admin,
        &signer_secret,
        &json!({"accessKeyId": "AKIAFAULTMATRIXSIGNER", "secretAccessKey": "Fault/Matrix/Signer/Key/0123456789abcdef"})
            .to_string(),
    )
    .await;
    let gcs = (function == Function::DeliverGcs).then(|| {
        let guard = GcsGuard::start(&gcs_emulator_endpoint());
        let account = TestServiceAccount::generate("fault-matrix@acme-analytics.iam.gserviceaccount.com");
        guard.register(&account);
        (guard, account)
    });
    let sheets = (function == Function::DeliverSheets).then(|| {
        let double = SheetsDouble::start();
        double.set_write_quota_per_minute(None);
        let ours = TestServiceAccount::generate(SHEETS_ACCOUNT);
        double.register(&ours);
        (double, ours.key_json_string())
    });
    Arc::new(World { endpoint, admin, staging, manifest, customer, signer_secret, gcs, sheets })
}

/// The clock of the sweeper's re-drive: well after any claim of the first
/// invocations expired (deadline + 30 s) and the sweeper's 45-minute wait.
fn two_hours_later() -> DateTime<Utc> {
    pinned_now() + chrono::Duration::hours(2)
}

fn deadline(now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(now + chrono::Duration::seconds(900))
}

async fn status_of(staging: &S3Store, tenant: &str, feed: &str) -> Option<DeliveryStatus> {
    let body = staging.get(&format!("status/{RUN_ID}/{tenant}/{feed}.json")).await.ok()?;
    Some(serde_json::from_slice(&body).expect("a status object"))
}

/// Delivers the job at `job_key` as Lambda's asynchronous invocation would
/// ([`invoke_as_lambda`]). Returns the invocations made and, when none
/// succeeded, the last error.
async fn deliver_as_lambda<D, S, T>(deps: &DeliverDeps<S, T, D>, job_key: &str) -> (usize, Option<String>)
where
    S: ObjectStore,
    T: popularity_reports::tenant::directory::TenantDirectory,
    D: Deliverer,
{
    let invoked =
        invoke_as_lambda(|_| handle_deliverer_event(deps, event_for_key(job_key), deadline((deps.now)()))).await;
    (invoked.made, invoked.final_error())
}

/// The deliverer's dependencies with every client through `config`.
fn deps_through<D>(
    config: &SdkConfig,
    world: &World,
    prefix: &str,
    deliverer: D,
    now: fn() -> DateTime<Utc>,
) -> DeliverDeps<S3Store, SecretsManagerTenants, D> {
    DeliverDeps {
        staging: S3Store::new(s3_client(config), world.staging.bucket(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(config), prefix).unwrap(),
        deliverer,
        now,
    }
}

/// Which function a matrix drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    DeliverS3,
    DeliverEmail,
    /// The AWS side only: staging, tenant secrets, status; the GCS side
    /// (fake-gcs-server) is not faulted here.
    DeliverGcs,
    /// The AWS side only; the Sheets double is not faulted here.
    DeliverSheets,
}

/// Sets up one tenant for `function`, runs fanout (directly on moto), then
/// delivers its job through a fresh proxy with `cell`'s faults, as Lambda
/// and then the sweeper would, and checks the invariants. Without a cell,
/// the baseline: returns the requests of each kind.
async fn run_cell(
    world: Arc<World>,
    function: Function,
    index: usize,
    cell: Option<Cell>,
) -> (DeliveryCellResult, BTreeMap<CallKind, u64>, Vec<String>) {
    let started = Instant::now();
    let tenant = format!("fm-{index}");
    let prefix = unique_tenant_prefix("fault-matrix");
    let feed = "lake";
    let (recipient, bucket) = match function {
        Function::DeliverS3 => {
            let bucket = fresh_bucket(&s3_client(&world.customer), "fm-dest").await;
            let external_id = popularity_reports::tenant::new_external_id(&tenant).unwrap();
            let role_arn = create_delivery_role(
                &world.customer,
                &unique_bucket_name("fm-role"),
                OUR_ACCOUNT,
                &external_id,
                &bucket,
            )
            .await;
            let secret = json!({
                "schemaVersion": 1, "tenantId": tenant, "plan": "standard", "enabled": true,
                "connectors": {"lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{bucket}"),
                    "region": "us-east-1", "prefix": "in/", "roleArn": role_arn, "externalId": external_id}},
                "feeds": [{"id": feed, "connector": "lake", "reports": ["track"]}]
            });
            create_raw_secret(&world.admin, &format!("{prefix}{tenant}"), &secret.to_string()).await;
            (None, Some(bucket))
        }
        Function::DeliverEmail => {
            let recipient = format!("{}@acme.example", unique_bucket_name("fm"));
            let secret = json!({
                "schemaVersion": 1, "tenantId": tenant, "plan": "standard", "enabled": true,
                "connectors": {"inbox": {"type": "email", "recipients": [recipient]}},
                "feeds": [{"id": feed, "connector": "inbox", "reports": ["track"]}]
            });
            create_raw_secret(&world.admin, &format!("{prefix}{tenant}"), &secret.to_string()).await;
            (Some(recipient), None)
        }
        Function::DeliverGcs => {
            let (guard, account) = world.gcs.as_ref().expect("a GCS world");
            let bucket = unique_bucket_name("fm-gcs");
            guard.create_bucket(&bucket).await;
            guard.grant_object_creator(&bucket, &account.client_email);
            let secret = json!({
                "schemaVersion": 1, "tenantId": tenant, "plan": "standard", "enabled": true,
                "connectors": {"lake": {"type": "gcs", "bucket": bucket, "prefix": "in/",
                    "serviceAccountJson": account.key_json()}},
                "feeds": [{"id": feed, "connector": "lake", "reports": ["track"]}]
            });
            create_raw_secret(&world.admin, &format!("{prefix}{tenant}"), &secret.to_string()).await;
            (None, Some(bucket))
        }
        Function::DeliverSheets => {
            let double = &world.sheets.as_ref().expect("a Sheets world").0;
            let spreadsheet = format!("1Sheet{}", unique_bucket_name("fm").replace('-', "_"));
            double.create_spreadsheet(&spreadsheet, &[TabSpec::new("Notes", 10, 3)]);
            double.share(&spreadsheet, SHEETS_ACCOUNT);
            let secret = json!({
                "schemaVersion": 1, "tenantId": tenant, "plan": "standard", "enabled": true,
                "connectors": {"sheet": {"type": "google-sheets", "maxRows": SHEET_ROWS,
                    "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{spreadsheet}/edit")}},
                "feeds": [{"id": feed, "connector": "sheet", "reports": ["track"]}]
            });
            create_raw_secret(&world.admin, &format!("{prefix}{tenant}"), &secret.to_string()).await;
            (None, Some(spreadsheet))
        }
    };
    let fanout = FanoutDeps {
        staging: world.staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&world.admin), prefix.as_str()).unwrap(),
        own_buckets: vec![world.staging.bucket().to_owned()],
    };
    let planned = fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
    assert_eq!(planned.jobs_created, 1, "{tenant}: {planned:?}");

    let (proxy, config) = faulted_proxy(&world.endpoint, cell.as_ref()).await;
    let kind_segment = match function {
        Function::DeliverS3 => "s3",
        Function::DeliverEmail => "email",
        Function::DeliverGcs => "gcs",
        Function::DeliverSheets => "sheets",
    };
    let job_key = format!("jobs/{kind_segment}/{RUN_ID}/{tenant}/{feed}.json");
    let (mut invocations, mut last_error, mut swept) = (0, None, false);
    for (round, now) in [(0, pinned_now as fn() -> DateTime<Utc>), (1, two_hours_later)] {
        if round == 1 {
            let status = status_of(&world.staging, &tenant, feed).await;
            if status.as_ref().is_some_and(|s| s.outcome == DeliveryOutcome::Delivered) {
                break;
            }
            // Lambda's retries are over: the sweeper re-drives a failed
            // delivery, an expired claim or a job no deliverer started.
            swept = true;
        }
        let (made, error) = match function {
            Function::DeliverS3 => {
                let deliverer = S3Deliverer {
                    staging: S3Store::new(s3_client(&config), world.staging.bucket(), ""),
                    destinations: S3Destinations::new(config.clone(), vec![world.staging.bucket().to_owned()]),
                };
                deliver_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
            Function::DeliverEmail => {
                let deliverer = EmailDeliverer {
                    staging: S3Store::new(s3_client(&config), world.staging.bucket(), ""),
                    signer: S3LinkSigner::new(
                        config.clone(),
                        world.staging.bucket(),
                        Some(world.signer_secret.clone()),
                        604_800,
                    ),
                    mailer: SesMailer::new(&config),
                    sender: SENDER.to_owned(),
                    now,
                };
                deliver_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
            Function::DeliverGcs => {
                let deliverer = GcsDeliverer {
                    staging: S3Store::new(s3_client(&config), world.staging.bucket(), ""),
                    endpoint: world.gcs.as_ref().unwrap().0.endpoint(),
                    identities: None,
                };
                deliver_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
            Function::DeliverSheets => {
                let (double, key_json) = world.sheets.as_ref().unwrap();
                let identity = SheetsIdentity::from_key_file("test/our-google-key", key_json).unwrap();
                let retry = RetryPolicy { first_backoff: Duration::from_millis(20), budget: Duration::from_secs(30) };
                let deliverer = SheetsDeliverer {
                    staging: S3Store::new(s3_client(&config), world.staging.bucket(), ""),
                    clients: SheetsClient::new(identity, &double.endpoint(), 6_000, retry).into(),
                    now,
                };
                deliver_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
        };
        invocations += made;
        last_error = error;
    }
    proxy.clear_request_faults();

    let counts = counts_of(&proxy.requests());
    let status = status_of(&world.staging, &tenant, feed).await;
    let outcome = status.as_ref().map_or("no status".to_owned(), |s| s.outcome.as_str().to_owned());
    let delivered = status.as_ref().is_some_and(|s| s.outcome == DeliveryOutcome::Delivered);
    let recorded_cause = status.as_ref().and_then(|s| s.last_error.clone());
    let mut problems = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let cause = if delivered { None } else { recorded_cause.clone().or(last_error.clone()) };

    match &cell {
        Some(cell) if cell.permanent() => {
            if delivered {
                // A fault that never ends on a call made only when another
                // fails (an abort) does not stop the delivery.
                if cell.injections.iter().any(|i| BEST_EFFORT.contains(&i.kind.as_str())) {
                    notes.push("a clean-up call: the delivery goes on".to_owned());
                } else {
                    problems.push("delivered despite a permanent fault".to_owned());
                }
            } else {
                let named = [recorded_cause.as_deref(), last_error.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|text| cell.is_named_in(text));
                if !named {
                    problems
                        .push(format!("the failure does not name the cause: {}", cause.clone().unwrap_or_default()));
                }
                if status.as_ref().is_some_and(|s| s.outcome == DeliveryOutcome::InProgress) {
                    problems.push("status stuck in-progress".to_owned());
                }
            }
        }
        _ => {
            if !delivered {
                problems.push(format!("final status {outcome}, not delivered"));
            }
        }
    }

    let mut sends_forwarded = 0;
    match function {
        Function::DeliverS3 => {
            let bucket = bucket.as_deref().unwrap();
            check_destination(&world, bucket, delivered, &mut problems).await;
            let open = open_multipart_uploads(&world.customer, bucket).await;
            let abort_refused = cell
                .iter()
                .flat_map(|c| &c.injections)
                .any(|i| i.kind.as_str() == "s3:AbortMultipartUpload" && i.burst == Burst::Permanent);
            match open.len() {
                0 => {}
                1 if abort_refused => notes.push("1 upload left open: every abort refused".to_owned()),
                n => problems.push(format!("{n} multipart upload(s) left open")),
            }
        }
        Function::DeliverEmail => {
            sends_forwarded = proxy
                .requests()
                .iter()
                .filter(|seen| seen.kind.as_str() == "ses:SendRawEmail" && seen.fault.is_none())
                .count() as u64;
            let expected = u64::from(delivered);
            if sends_forwarded != expected {
                problems.push(format!("{sends_forwarded} SendRawEmail reached SES, expected {expected}"));
            }
        }
        Function::DeliverGcs => {
            let guard = &world.gcs.as_ref().unwrap().0;
            let bucket = bucket.as_deref().unwrap();
            let mut objects = BTreeMap::new();
            for name in guard.list_objects(bucket, "").await {
                let bytes = guard.read_object(bucket, &name).await.unwrap_or_default();
                objects.insert(name, bytes);
            }
            check_objects(&world, &objects, delivered, &mut problems);
        }
        Function::DeliverSheets => {
            let double = &world.sheets.as_ref().unwrap().0;
            let spreadsheet = bucket.as_deref().unwrap();
            check_sheet(double, spreadsheet, delivered, &mut problems);
        }
    }

    let result = CellResult {
        cell: Cell::label(cell.as_ref()),
        faults_fired: proxy.request_faults_fired(),
        invocations: format!("{invocations}{}", if swept { " (+sweeper)" } else { "" }),
        outcome,
        cause: cause.map(|c| shorten(&c)),
        problems,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    };
    let result = DeliveryCellResult { result, recipient, sends_forwarded };
    let sequence = proxy
        .requests()
        .iter()
        .map(|seen| {
            let path = seen.path.trim_start_matches('/');
            let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
            if !seen.kind.as_str().starts_with("s3:") {
                seen.kind.to_string()
            } else if bucket == world.staging.bucket() {
                format!("{} staging {key}", seen.kind)
            } else {
                let key = key.rsplit('/').next().unwrap_or(key);
                format!("{} customer …/{key}", seen.kind)
            }
        })
        .collect();
    (result, counts, sequence)
}

/// No destination object whose bytes differ from its staging part, no
/// `_manifest.json` without every part, and, once delivered, every part and
/// the manifest.
async fn check_destination(world: &World, bucket: &str, delivered: bool, problems: &mut Vec<String>) {
    let destination = S3Store::new(s3_client(&world.customer), bucket, "");
    let mut objects = BTreeMap::new();
    for key in keys_under(&world.customer, bucket, "").await {
        let bytes = destination.get(&key).await.unwrap().to_vec();
        objects.insert(key, bytes);
    }
    check_objects(world, &objects, delivered, problems);
}

/// deliver-sheets: the track tab, when there is one, holds the header and
/// exactly the staged top `SHEET_ROWS` ids in order; once delivered it is
/// there.
fn check_sheet(double: &SheetsDouble, spreadsheet: &str, delivered: bool, problems: &mut Vec<String>) {
    let tab = ReportKind::Track.data_type();
    let has_tab = double.tabs(spreadsheet).iter().any(|t| t.title == tab);
    if !has_tab {
        if delivered {
            problems.push(format!("delivered without the {tab} tab"));
        }
        return;
    }
    let text = |value: &serde_json::Value| value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    let ids: Vec<String> = double.values(spreadsheet, tab).iter().skip(1).map(|row| text(&row[0])).collect();
    let expected: Vec<String> = synthetic_items(ReportKind::Track, ROWS)
        .iter()
        .take(SHEET_ROWS as usize)
        .map(|item| item.id.to_string())
        .collect();
    if ids != expected {
        problems.push(format!("the {tab} tab holds {} rows that are not the staged top {SHEET_ROWS}", ids.len()));
    }
}

/// [`check_destination`]'s rule over a destination's objects by name.
fn check_objects(world: &World, objects: &BTreeMap<String, Vec<u8>>, delivered: bool, problems: &mut Vec<String>) {
    let track = world.manifest.report(ReportKind::Track).unwrap();
    let folder = format!("in/{}", report_run_prefix(ReportKind::Track, run_id()));
    let keys: Vec<&String> = objects.keys().collect();
    let mut parts_whole = 0;
    for key in keys.iter().copied() {
        let Some(name) = key.strip_prefix(&folder) else {
            problems.push(format!("unexpected object {key}"));
            continue;
        };
        if name == "_manifest.json" {
            continue;
        }
        let Some(part) = track.parts.iter().find(|p| p.key.ends_with(&format!("/{name}"))) else {
            problems.push(format!("unexpected object {key}"));
            continue;
        };
        let bytes = &objects[key];
        if bytes.len() as u64 != part.bytes || sha256(bytes) != part.sha256 {
            problems.push(format!("{key} holds {} bytes that are not the staging part's {}", bytes.len(), part.bytes));
        } else {
            parts_whole += 1;
        }
    }
    let has_manifest = keys.iter().any(|k| **k == format!("{folder}_manifest.json"));
    if has_manifest && parts_whole != track.parts.len() {
        problems.push(format!("_manifest.json with {parts_whole} of {} parts", track.parts.len()));
    }
    if delivered && !has_manifest {
        problems.push("delivered without _manifest.json".to_owned());
    }
}

/// The cells of a matrix, from the requests of each kind in a baseline
/// delivery: [`cells_from`]'s, and a failed abort after a failed upload.
fn delivery_cells(counts: &BTreeMap<CallKind, u64>) -> Vec<Cell> {
    let mut cells = cells_from(counts);
    let upload_part = CallKind::new("s3:UploadPart");
    if counts.contains_key(&upload_part) {
        for burst in [Burst::Once, Burst::AllAttempts, Burst::Permanent] {
            let failed_upload = Injection::new(upload_part.clone(), 2, "2", Fault::InternalError, Burst::AllAttempts);
            let failed_abort =
                Injection::new(CallKind::new("s3:AbortMultipartUpload"), 1, "1", Fault::InternalError, burst);
            cells.push(Cell { injections: vec![failed_upload, failed_abort] });
        }
    }
    cells
}

/// Runs the baseline, then every cell, `CONCURRENT_CELLS` at a time; the
/// time taken counts the shared setup too.
async fn deliver_matrix(function: Function, hint: &str) -> MatrixRun<DeliveryCellResult> {
    let started = Instant::now();
    let world = world(function, hint).await;
    let mut matrix = run_matrix(delivery_cells, move |index, cell| {
        let world = world.clone();
        async move {
            let baseline = cell.is_none();
            let (result, counts, sequence) = run_cell(world, function, index, cell).await;
            if baseline {
                eprintln!("{function:?} baseline requests, in order:\n{}", sequence.join("\n"));
                let baseline = &result.result;
                assert!(baseline.problems.is_empty(), "the baseline delivery failed: {}", baseline.row());
                assert!(baseline.faults_fired == 0 && baseline.invocations == "1", "{}", baseline.row());
            }
            (result, counts)
        }
    })
    .await;
    matrix.elapsed = started.elapsed();
    matrix
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_s3_under_every_fault_delivers_whole_objects_once_or_fails_naming_the_cause() {
    let matrix = deliver_matrix(Function::DeliverS3, "fm-s3").await;
    matrix.assert_baseline_made(&[
        "s3:GetObject",
        "s3:PutObject",
        "s3:CreateMultipartUpload",
        "s3:UploadPart",
        "sts:AssumeRole",
    ]);
    matrix.print_and_assert_no_problems(
        "deliver-s3 (s3-role, track report: a 2-part multipart object and a small one)",
        &COLUMNS,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_email_under_every_fault_sends_exactly_one_email_or_fails_naming_the_cause() {
    let mut matrix = deliver_matrix(Function::DeliverEmail, "fm-email").await;
    matrix.assert_baseline_made(&["s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue", "ses:SendRawEmail"]);
    // What moto's SES received, per cell recipient.
    let sent = sent_emails(&moto_endpoint()).await;
    for DeliveryCellResult { result, recipient, sends_forwarded } in &mut matrix.results {
        let recipient = recipient.as_deref().unwrap();
        let received = sent.iter().filter(|email| email.is_to(recipient)).count() as u64;
        let expected = u64::from(result.outcome == "delivered");
        if received != expected {
            result.problems.push(format!("{received} emails received, expected {expected}"));
        }
        assert!(*sends_forwarded <= 1 || !result.problems.is_empty());
    }
    matrix.print_and_assert_no_problems("deliver-email (track report, 2 linked parts, link signer secret)", &COLUMNS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_gcs_under_every_aws_fault_delivers_whole_objects_or_fails_naming_the_cause() {
    let matrix = deliver_matrix(Function::DeliverGcs, "fm-gcs").await;
    matrix.assert_baseline_made(&["s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue"]);
    matrix.print_and_assert_no_problems(
        "deliver-gcs, AWS side (track report: part-001 over 8 MiB, a resumable upload, and a small part; \
         fake-gcs-server not faulted)",
        &COLUMNS,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_sheets_under_every_aws_fault_writes_the_exact_top_rows_or_fails_naming_the_cause() {
    let matrix = deliver_matrix(Function::DeliverSheets, "fm-sheets").await;
    matrix.assert_baseline_made(&["s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue"]);
    matrix.print_and_assert_no_problems(
        "deliver-sheets, AWS side (track report, top 100 rows; the Sheets double not faulted)",
        &COLUMNS,
    );
}
