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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use chrono::{DateTime, Utc};
use integration_tests::customer::{
    account_config, create_delivery_role, keys_under, open_multipart_uploads, sent_emails,
};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, synthetic_items,
    unique_tenant_prefix, RUN_ID,
};
use integration_tests::fault_proxy::{CallKind, Fault, FaultProxy};
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
use popularity_reports::sdk_config::SdkTimeouts;
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant_directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

const OUR_ACCOUNT: &str = "123456789012";
const ROLE_ACCOUNT: &str = "222222222222";
const SENDER: &str = "reports@popularity.example";
/// deliver-sheets: our service account, and the rows a sheet gets.
const SHEETS_ACCOUNT: &str = "popularity-feeds@popularity-ops.iam.gserviceaccount.com";
const SHEET_ROWS: u64 = 100;

/// The SDK's standard retry mode (the functions' default): 3 attempts.
const SDK_ATTEMPTS: u64 = 3;
/// template.yaml: `MaximumRetryAttempts: 2` on every deliverer, so at most
/// three invocations of one event.
const LAMBDA_INVOCATIONS: usize = 3;
/// Cells run at once (each with its own proxy, tenant and bucket).
const CONCURRENT_CELLS: usize = 4;
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

/// How many of a kind's requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Burst {
    /// One request: the SDK's retry absorbs it.
    Once,
    /// Every attempt of one call: the call fails, and so the invocation.
    AllAttempts,
    /// Every request of the kind from the n-th on.
    Permanent,
}

impl Burst {
    fn times(self) -> u64 {
        match self {
            Burst::Once => 1,
            Burst::AllAttempts => SDK_ATTEMPTS,
            Burst::Permanent => u64::MAX,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Burst::Once => "once",
            Burst::AllAttempts => "x3",
            Burst::Permanent => "always",
        }
    }
}

/// One fault of a cell: requests `nth ..` of `kind` fail with `fault`.
#[derive(Debug, Clone)]
struct Injection {
    kind: CallKind,
    nth: u64,
    nth_label: String,
    fault: Fault,
    burst: Burst,
}

impl Injection {
    fn describe(&self) -> String {
        format!("{} #{} {} {}", self.kind, self.nth_label, self.fault.short_name(), self.burst.label())
    }
}

/// A cell: one or two injections (a failed abort needs a failed upload first).
#[derive(Debug, Clone)]
struct Cell {
    injections: Vec<Injection>,
}

impl Cell {
    fn describe(&self) -> String {
        self.injections.iter().map(Injection::describe).collect::<Vec<_>>().join(" + ")
    }

    fn permanent(&self) -> bool {
        self.injections.iter().any(|i| i.burst == Burst::Permanent)
    }
}

/// What a cell led to.
#[derive(Debug)]
struct CellResult {
    cell: String,
    /// Handler invocations (Lambda's, then the sweeper's).
    invocations: usize,
    swept: bool,
    outcome: String,
    faults_fired: u64,
    /// The recorded cause of a failure, shortened.
    cause: Option<String>,
    problems: Vec<String>,
    /// Expected departures from the rule, said in the table.
    notes: Vec<String>,
    seconds: f64,
    /// deliver-email: the recipient, to count the messages moto received.
    recipient: Option<String>,
    /// deliver-email: SendRawEmail requests that reached moto.
    sends_forwarded: u64,
}

impl CellResult {
    fn row(&self) -> String {
        let verdict = match (self.problems.is_empty(), self.notes.is_empty()) {
            (true, true) => "ok".to_owned(),
            (true, false) => format!("ok ({})", self.notes.join("; ")),
            (false, _) => format!("**{}**", self.problems.join("; ")),
        };
        format!(
            "| {} | {} | {}{} | {} | {} | {} | {:.1} |",
            self.cell,
            self.faults_fired,
            self.invocations,
            if self.swept { " (+sweeper)" } else { "" },
            self.outcome,
            self.cause.as_deref().unwrap_or("—"),
            verdict,
            self.seconds
        )
    }
}

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

/// A function's SDK configuration (timeouts from `sdk_config.rs`, standard
/// retries with 3 attempts) aimed at `endpoint`; only the backoff between
/// attempts is shortened.
async fn function_config(endpoint: &str) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "fault-matrix"));
    SdkTimeouts::default()
        .apply(loader)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(SDK_ATTEMPTS as u32)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .load()
        .await
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

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Words one of which a failure caused by `fault` must name.
fn cause_words(fault: Fault) -> &'static [&'static str] {
    match fault {
        Fault::Reset => &["dispatch", "connection", "reset", "io error", "response error", "closed"],
        Fault::InternalError => &["InternalError", "InternalServiceError", "InternalFailure", "500"],
        Fault::Throttle => &["SlowDown", "Throttling", "503", "Rate exceeded"],
    }
}

fn shorten(text: &str) -> String {
    let one_line = text.replace(['\n', '|'], " ");
    if one_line.chars().count() > 110 {
        format!("{}…", one_line.chars().take(110).collect::<String>())
    } else {
        one_line
    }
}

/// Invokes `deliver` as Lambda's asynchronous invocation would: again while
/// it fails, up to `LAMBDA_INVOCATIONS` times. Returns the invocations made
/// and the last error.
async fn invoke_as_lambda<D, S, T>(deps: &DeliverDeps<S, T, D>, job_key: &str) -> (usize, Option<String>)
where
    S: ObjectStore,
    T: popularity_reports::tenant_directory::TenantDirectory,
    D: Deliverer,
{
    let mut last_error = None;
    for invocation in 1..=LAMBDA_INVOCATIONS {
        match handle_deliverer_event(deps, event_for_key(job_key), deadline((deps.now)())).await {
            Ok(_) => return (invocation, None),
            Err(error) => last_error = Some(error.to_string()),
        }
    }
    (LAMBDA_INVOCATIONS, last_error)
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
) -> (CellResult, BTreeMap<CallKind, u64>, Vec<String>) {
    let started = Instant::now();
    let tenant = format!("fm-{index}");
    let prefix = unique_tenant_prefix("fault-matrix");
    let feed = "lake";
    let (recipient, bucket) = match function {
        Function::DeliverS3 => {
            let bucket = fresh_bucket(&s3_client(&world.customer), "fm-dest").await;
            let external_id = format!("pr-{tenant}-{}", unique_bucket_name("x"));
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

    let proxy = FaultProxy::start_http(&world.endpoint);
    let config = function_config(&proxy.endpoint()).await;
    for injection in cell.iter().flat_map(|cell| &cell.injections) {
        proxy.fail_requests(injection.kind.clone(), injection.nth, injection.burst.times(), injection.fault);
    }
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
                invoke_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
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
                invoke_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
            Function::DeliverGcs => {
                let deliverer = GcsDeliverer {
                    staging: S3Store::new(s3_client(&config), world.staging.bucket(), ""),
                    endpoint: world.gcs.as_ref().unwrap().0.endpoint(),
                };
                invoke_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
            Function::DeliverSheets => {
                let (double, key_json) = world.sheets.as_ref().unwrap();
                let identity = SheetsIdentity::from_key_file("test/our-google-key", key_json).unwrap();
                let retry = RetryPolicy { first_backoff: Duration::from_millis(20), budget: Duration::from_secs(30) };
                let deliverer = SheetsDeliverer {
                    staging: S3Store::new(s3_client(&config), world.staging.bucket(), ""),
                    client: SheetsClient::new(identity, &double.endpoint(), 6_000, retry),
                    now,
                };
                invoke_as_lambda(&deps_through(&config, &world, &prefix, deliverer, now), &job_key).await
            }
        };
        invocations += made;
        last_error = error;
    }
    proxy.clear_request_faults();

    let mut counts = BTreeMap::new();
    for seen in proxy.requests() {
        *counts.entry(seen.kind).or_insert(0) += 1;
    }
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
                let fault = cell.injections.iter().find(|i| i.burst == Burst::Permanent).unwrap().fault;
                let named = [recorded_cause.as_deref(), last_error.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|text| cause_words(fault).iter().any(|word| text.contains(word)));
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
        cell: cell.as_ref().map_or("baseline (no fault)".to_owned(), Cell::describe),
        invocations,
        swept,
        outcome,
        faults_fired: proxy.request_faults_fired(),
        cause: cause.map(|c| shorten(&c)),
        problems,
        notes,
        seconds: started.elapsed().as_secs_f64(),
        recipient,
        sends_forwarded,
    };
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
/// delivery: for each kind, its first, second and last request, each with
/// each fault, once and for all the SDK's attempts; each kind's first
/// request with a 500 for good; and a failed abort after a failed upload.
fn cells_from(counts: &BTreeMap<CallKind, u64>) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (kind, &count) in counts {
        let mut positions = vec![(1, "1".to_owned())];
        if count >= 3 {
            positions.push((2, "2".to_owned()));
        }
        if count >= 2 {
            positions.push((count, format!("last={count}")));
        }
        for (nth, nth_label) in positions {
            for fault in Fault::ALL {
                for burst in [Burst::Once, Burst::AllAttempts] {
                    let injection = Injection { kind: kind.clone(), nth, nth_label: nth_label.clone(), fault, burst };
                    cells.push(Cell { injections: vec![injection] });
                }
            }
        }
        let injection = Injection {
            kind: kind.clone(),
            nth: 1,
            nth_label: "1".to_owned(),
            fault: Fault::InternalError,
            burst: Burst::Permanent,
        };
        cells.push(Cell { injections: vec![injection] });
    }
    let upload_part = CallKind::new("s3:UploadPart");
    if counts.contains_key(&upload_part) {
        for burst in [Burst::Once, Burst::AllAttempts, Burst::Permanent] {
            let failed_upload = Injection {
                kind: upload_part.clone(),
                nth: 2,
                nth_label: "2".to_owned(),
                fault: Fault::InternalError,
                burst: Burst::AllAttempts,
            };
            let failed_abort = Injection {
                kind: CallKind::new("s3:AbortMultipartUpload"),
                nth: 1,
                nth_label: "1".to_owned(),
                fault: Fault::InternalError,
                burst,
            };
            cells.push(Cell { injections: vec![failed_upload, failed_abort] });
        }
    }
    cells
}

/// Runs the baseline, then every cell, `CONCURRENT_CELLS` at a time.
async fn run_matrix(function: Function, hint: &str) -> (Vec<CellResult>, BTreeMap<CallKind, u64>, Duration) {
    let started = Instant::now();
    let world = world(function, hint).await;
    let (baseline, counts, sequence) = run_cell(world.clone(), function, 0, None).await;
    eprintln!("{function:?} baseline requests, in order:\n{}", sequence.join("\n"));
    assert!(baseline.problems.is_empty(), "the baseline delivery failed: {}", baseline.row());
    assert!(baseline.faults_fired == 0 && baseline.invocations == 1, "{}", baseline.row());
    let cells = cells_from(&counts);
    // fanout's future is not `Send` (a closure over borrowed tenants), so
    // the cells run as local tasks of this thread; their I/O overlaps.
    let permits = Arc::new(Semaphore::new(CONCURRENT_CELLS));
    let local = tokio::task::LocalSet::new();
    let mut results = local
        .run_until(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (index, cell) in cells.into_iter().enumerate() {
                let (world, permits) = (world.clone(), permits.clone());
                tasks.spawn_local(async move {
                    let _permit = permits.acquire_owned().await.unwrap();
                    (index, run_cell(world, function, index + 1, Some(cell)).await.0)
                });
            }
            let mut results = Vec::new();
            while let Some(done) = tasks.join_next().await {
                results.push(done.expect("a cell panicked"));
            }
            results
        })
        .await;
    results.sort_by_key(|(index, _)| *index);
    let mut results: Vec<CellResult> = results.into_iter().map(|(_, result)| result).collect();
    results.insert(0, baseline);
    (results, counts, started.elapsed())
}

fn table(function: &str, results: &[CellResult], counts: &BTreeMap<CallKind, u64>, elapsed: Duration) -> String {
    let kinds: Vec<String> = counts.iter().map(|(kind, count)| format!("{kind} ×{count}")).collect();
    let failed = results.iter().filter(|r| !r.problems.is_empty()).count();
    let mut text = format!(
        "{function}: {} cells in {:.0} s, {failed} with problems; baseline requests: {}\n\
         | cell (kind #n fault burst) | faults fired | invocations | final status | cause recorded | invariants | s |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        results.len() - 1,
        elapsed.as_secs_f64(),
        kinds.join(", ")
    );
    for result in results {
        text.push_str(&result.row());
        text.push('\n');
    }
    text
}

fn assert_no_problems(table: &str, results: &[CellResult]) {
    let failing: Vec<String> = results.iter().filter(|r| !r.problems.is_empty()).map(CellResult::row).collect();
    assert!(
        failing.is_empty(),
        "{} cells broke an invariant:\n{}\n\nwhole table:\n{table}",
        failing.len(),
        failing.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_s3_under_every_fault_delivers_whole_objects_once_or_fails_naming_the_cause() {
    let (results, counts, elapsed) = run_matrix(Function::DeliverS3, "fm-s3").await;
    for kind in ["s3:GetObject", "s3:PutObject", "s3:CreateMultipartUpload", "s3:UploadPart", "sts:AssumeRole"] {
        assert!(counts.contains_key(&CallKind::new(kind)), "the baseline made no {kind}: {counts:?}");
    }
    let table = table(
        "deliver-s3 (s3-role, track report: a 2-part multipart object and a small one)",
        &results,
        &counts,
        elapsed,
    );
    eprintln!("{table}");
    assert_no_problems(&table, &results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_email_under_every_fault_sends_exactly_one_email_or_fails_naming_the_cause() {
    let (results, counts, elapsed) = run_matrix(Function::DeliverEmail, "fm-email").await;
    for kind in ["s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue", "ses:SendRawEmail"] {
        assert!(counts.contains_key(&CallKind::new(kind)), "the baseline made no {kind}: {counts:?}");
    }
    // What moto's SES received, per cell recipient.
    let sent = sent_emails(&moto_endpoint()).await;
    let mut results = results;
    for result in &mut results {
        let recipient = result.recipient.as_deref().unwrap();
        let received = sent.iter().filter(|email| email.is_to(recipient)).count() as u64;
        let expected = u64::from(result.outcome == "delivered");
        if received != expected {
            result.problems.push(format!("{received} emails received, expected {expected}"));
        }
        assert!(result.sends_forwarded <= 1 || !result.problems.is_empty());
    }
    let table = table("deliver-email (track report, 2 linked parts, link signer secret)", &results, &counts, elapsed);
    eprintln!("{table}");
    assert_no_problems(&table, &results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_gcs_under_every_aws_fault_delivers_whole_objects_or_fails_naming_the_cause() {
    let (results, counts, elapsed) = run_matrix(Function::DeliverGcs, "fm-gcs").await;
    for kind in ["s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue"] {
        assert!(counts.contains_key(&CallKind::new(kind)), "the baseline made no {kind}: {counts:?}");
    }
    let table = table(
        "deliver-gcs, AWS side (track report: part-001 over 8 MiB, a resumable upload, and a small part; \
         fake-gcs-server not faulted)",
        &results,
        &counts,
        elapsed,
    );
    eprintln!("{table}");
    assert_no_problems(&table, &results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_sheets_under_every_aws_fault_writes_the_exact_top_rows_or_fails_naming_the_cause() {
    let (results, counts, elapsed) = run_matrix(Function::DeliverSheets, "fm-sheets").await;
    for kind in ["s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue"] {
        assert!(counts.contains_key(&CallKind::new(kind)), "the baseline made no {kind}: {counts:?}");
    }
    let table = table(
        "deliver-sheets, AWS side (track report, top 100 rows; the Sheets double not faulted)",
        &results,
        &counts,
        elapsed,
    );
    eprintln!("{table}");
    assert_no_problems(&table, &results);
}
