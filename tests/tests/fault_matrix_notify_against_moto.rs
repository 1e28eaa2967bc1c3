//! Fault matrix (issue 13, item 4) for arrival events (docs/design.md,
//! "Events"): notify and the sweeper's re-drive of unsent events. As in
//! `fault_matrix_against_moto.rs`, every AWS call kind of a fault-free
//! baseline (S3 get/put/list of staging, Secrets Manager get of the tenant
//! secret, EventBridge `PutEvents`) is failed at its first, second and last
//! request with a connection reset, an HTTP 500 or throttling (S3: 503
//! SlowDown), once (the SDK's retry absorbs it), for all 3 SDK attempts or
//! for good, through one [`FaultProxy`] per cell in HTTP mode and with the
//! functions' SDK configuration (standard retries, the backoff shortened).
//!
//! Each cell has its own staging bucket, tenant (a webhook on 127.0.0.1 —
//! the project's receiver, `tests/python/webhook_receiver.py`, which checks
//! every signature with Python's `hmac` and answers 500 to the first
//! request — sent to under `WEBHOOKS_ALLOW_LOOPBACK`, and an EventBridge
//! bus on moto whose rule forwards to an SQS queue), its own signing
//! secret, and a `delivery.succeeded` event created in staging as a
//! deliverer creates it (`DeliveryStaging::create_event`). Then, through
//! the proxy: notify's handler for the event's S3 event, invoked as
//! Lambda's asynchronous invocation would (again while it fails, up to
//! `MaximumRetryAttempts` (2) + 1); two hourly sweeps (7 min and 67 min
//! after the event), each re-write of the event object a sweep makes
//! starting notify again as S3 would; then the fault is over (counted as
//! "for good" until here), three more hourly sweeps and one 30 h later do
//! the same. A failed sweep is not retried (`MaximumRetryAttempts: 0`):
//! the next one is its retry. Then, for every cell:
//!
//! - at least once: both targets have the event — the receiver answered
//!   2xx to a well-signed request with the event's id, and the bus's queue
//!   holds it — and the notification status records both as `accepted`;
//! - never again after acceptance: no request reaches the receiver after
//!   the one it accepted, and the bus holds the event once — except in
//!   cells where the fault hit a write of the notification status (the
//!   write that would have recorded the acceptance, so the retry cannot
//!   know): there a second delivery is allowed, and the table says so;
//! - no signing secret (the `whsec_` value or its base64 body) in any log
//!   line of the cell (each cell has its own secret; the tests capture
//!   every log line, `integration_tests::delivery::capture_logs`) or in the
//!   notification status;
//! - the notification-status object is valid JSON, and a status this build
//!   reads, after every cell;
//! - a notify event whose invocations all failed, a failed sweep and a
//!   failed send to the bus (recorded in the status; the invocation
//!   succeeds) name the fault, and only a fault that lasts beyond Lambda's
//!   retries makes all of an event's invocations fail.
//!
//! The table is printed (shown on failure, or with `--nocapture`) and
//! recorded in docs/reliability.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aws_config::SdkConfig;
use chrono::{DateTime, Duration, Utc};
use integration_tests::delivery::{
    capture_logs, create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store,
    unique_tenant_prefix, LogCapture,
};
use integration_tests::event_bus::{bus_with_queue, Queue};
use integration_tests::fault_matrix::{
    cells_from, counts_of, faulted_proxy, invoke_as_lambda, run_matrix, shorten, Cell, CellResult, OutcomeColumns,
};
use integration_tests::fault_proxy::{CallKind, FaultProxy};
use integration_tests::webhook_receiver::WebhookReceiver;
use integration_tests::{moto_endpoint, sdk_config};
use popularity_reports::delivery::arrival_event::new_event_id;
use popularity_reports::delivery::connectors::email::SesMailer;
use popularity_reports::delivery::{
    ArrivalEvent, AttemptResult, DeliveryStaging, DeliveryStatus, EventKeyParts, EventType,
};
use popularity_reports::handlers::notify::handle_notify_event;
use popularity_reports::handlers::sweeper::{handle_sweep, SweeperDeps};
use popularity_reports::notify::status::{NotificationStatus, TargetState};
use popularity_reports::notify::{EventBridgeBuses, HttpWebhooks, NotifyDeps};
use popularity_reports::store::{s3_client, ObjectStore, PutOutcome, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use popularity_reports::tenant::new_webhook_signing_secret;
use serde_json::{json, Value};

/// The table's outcome and cause columns: what each target received, and
/// the error of the last failure (notify's or a sweep's).
const COLUMNS: OutcomeColumns =
    OutcomeColumns { outcome: "webhook answers; bus events", cause: "error of the last failure" };

const TENANT: &str = "acme";
const FEED: &str = "default";

/// When notify first runs: a minute after the event (its S3 event).
fn first_notify() -> DateTime<Utc> {
    pinned_now() + Duration::minutes(1)
}

/// The sweeps under the fault: the next hourly sweep, 7 min after the
/// event (the webhook's second send is due 5 min after its first), and the
/// one after.
fn sweeps_under_the_fault() -> [fn() -> DateTime<Utc>; 2] {
    [|| pinned_now() + Duration::minutes(7), || pinned_now() + Duration::minutes(67)]
}

/// The sweeps once the fault is over: three more hourly ones, then one a
/// day later, when nothing may be due any more.
fn sweeps_after_the_fault() -> [fn() -> DateTime<Utc>; 4] {
    [
        || pinned_now() + Duration::minutes(127),
        || pinned_now() + Duration::minutes(187),
        || pinned_now() + Duration::minutes(247),
        || pinned_now() + Duration::hours(30),
    ]
}

// ------------------------------------------------------- the customer's bus

// ------------------------------------------------------------------ a cell

struct World {
    endpoint: String,
    admin: SdkConfig,
    logs: LogCapture,
}

/// One cell's tenant, targets and event.
struct Setup {
    staging: S3Store,
    prefix: String,
    secret: String,
    receiver: WebhookReceiver,
    queue: Queue,
    event: ArrivalEvent,
    parts: EventKeyParts,
}

async fn setup(world: &World) -> Setup {
    let staging = staging_store(&world.admin, "fm-notify").await;
    // The sweeper finds runs by their manifests.
    publish_synthetic_run(&staging, run_id(), 20, 20).await;
    let secret = new_webhook_signing_secret().unwrap();
    let receiver = WebhookReceiver::start(&secret, 1);
    let (bus_arn, queue) = bus_with_queue(&world.admin, "fm-notify-bus").await;
    let prefix = unique_tenant_prefix("fm-notify");
    let tenant = json!({"schemaVersion": 1, "tenantId": TENANT, "plan": "standard", "enabled": true,
        "connectors": {}, "feeds": [],
        "notifications": [
            {"type": "webhook", "url": receiver.url("/hooks/popularity"), "signingSecret": secret},
            {"type": "eventbridge", "eventBusArn": bus_arn}]});
    create_raw_secret(&world.admin, &format!("{prefix}{TENANT}"), &tenant.to_string()).await;
    // The event a deliverer creates once it has recorded a delivery.
    let at = pinned_now();
    let status = DeliveryStatus::first_record(run_id(), TENANT, FEED, at, at, AttemptResult::Delivered(Vec::new()));
    let event = ArrivalEvent::for_status(&status, None, new_event_id(at)).expect("delivered calls for an event");
    assert_eq!(event.event_type, EventType::Succeeded);
    let created = DeliveryStaging::new(&staging).create_event(&event).await.unwrap();
    assert_eq!(created, PutOutcome::Created);
    let parts = event.key_parts();
    Setup { staging, prefix, secret, receiver, queue, event, parts }
}

type Notify = NotifyDeps<S3Store, SecretsManagerTenants, HttpWebhooks, EventBridgeBuses, SesMailer>;

/// notify's dependencies as its `main.rs` builds them, every AWS client
/// through `config`, with the local setting (`WEBHOOKS_ALLOW_LOOPBACK`).
fn notify_deps(config: &SdkConfig, setup: &Setup, now: fn() -> DateTime<Utc>) -> Notify {
    NotifyDeps {
        staging: S3Store::new(s3_client(config), setup.staging.bucket(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(config), setup.prefix.as_str()).unwrap(),
        webhooks: HttpWebhooks::new(true),
        buses: EventBridgeBuses::new(config),
        mailer: SesMailer::new(config),
        sender: "reports@example.com".to_owned(),
        now,
    }
}

/// What the functions did in one cell.
#[derive(Default)]
struct Runs {
    /// notify's invocations, and the S3 events that started them.
    invocations: usize,
    s3_events: usize,
    /// S3 events whose every invocation failed.
    exhausted: usize,
    sweeps: usize,
    failed_sweeps: usize,
    /// The error of the last failure, notify's or a sweep's.
    last_error: Option<String>,
    /// The error of the last S3 event whose invocations all failed, and of the last failed sweep.
    exhausted_error: Option<String>,
    sweep_error: Option<String>,
}

impl Runs {
    /// Runs notify for one S3 event of the event object, as Lambda would.
    async fn notify(&mut self, config: &SdkConfig, setup: &Setup, now: fn() -> DateTime<Utc>) {
        let deps = notify_deps(config, setup, now);
        let key = setup.parts.event_key();
        let invoked = invoke_as_lambda(|_| handle_notify_event(&deps, event_for_key(&key))).await;
        self.s3_events += 1;
        self.invocations += invoked.made;
        if let Some(error) = &invoked.last_error {
            self.last_error = Some(error.clone());
        }
        if let Some(error) = invoked.final_error() {
            self.exhausted += 1;
            self.exhausted_error = Some(error);
        }
    }

    /// One sweep, then notify for each re-write of the event object it made
    /// (each is an S3 event), as S3 and Lambda would.
    async fn sweep(&mut self, proxy: &FaultProxy, config: &SdkConfig, setup: &Setup, now: fn() -> DateTime<Utc>) {
        let before = proxy.requests().len();
        let staging = S3Store::new(s3_client(config), setup.staging.bucket(), "");
        let deps = SweeperDeps { staging, sweep_days: 3, max_redrives: 24, now };
        self.sweeps += 1;
        if let Err(error) = handle_sweep(&deps).await {
            self.failed_sweeps += 1;
            self.last_error = Some(error.to_string());
            self.sweep_error = Some(error.to_string());
        }
        let event_path = format!("/{}/{}", setup.staging.bucket(), setup.parts.event_key());
        let rewrites = proxy.requests()[before..]
            .iter()
            .filter(|seen| seen.kind.as_str() == "s3:PutObject" && seen.fault.is_none() && seen.path == event_path)
            .count();
        for _ in 0..rewrites {
            self.notify(config, setup, now).await;
        }
    }
}

async fn notify_cell(world: Arc<World>, _index: usize, cell: Option<Cell>) -> (CellResult, BTreeMap<CallKind, u64>) {
    let started = Instant::now();
    let setup = setup(&world).await;
    let (proxy, config) = faulted_proxy(&world.endpoint, cell.as_ref()).await;
    let mut runs = Runs::default();
    runs.notify(&config, &setup, first_notify).await;
    for now in sweeps_under_the_fault() {
        runs.sweep(&proxy, &config, &setup, now).await;
    }
    // The fault is over.
    let counts = counts_of(&proxy.requests());
    proxy.clear_request_faults();
    for now in sweeps_after_the_fault() {
        runs.sweep(&proxy, &config, &setup, now).await;
    }
    let faults_fired = proxy.request_faults_fired();
    let status_path = format!("/{}/{}", setup.staging.bucket(), setup.parts.status_key());
    // The fault hit a write of the notification status: what it would have
    // recorded (an acceptance among it) is unknown to the next invocation.
    let status_write_failed = proxy
        .requests()
        .iter()
        .any(|seen| seen.fault.is_some() && seen.kind.as_str() == "s3:PutObject" && seen.path == status_path);

    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let event_id = setup.event.id.as_str();

    // The webhook: at least once, never after the request it accepted.
    let received: Vec<_> = setup.receiver.received().await.into_iter().filter(|r| r.id == event_id).collect();
    if received.iter().any(|r| !r.valid) {
        problems.push("a webhook request's signature did not check out".to_owned());
    }
    let answers: Vec<String> = received.iter().map(|r| r.status.to_string()).collect();
    match received.iter().position(|r| (200..300).contains(&r.status)) {
        None => problems.push("the webhook never accepted the event".to_owned()),
        Some(first) => {
            let again = received.len() - first - 1;
            if again > 0 && status_write_failed {
                notes.push(format!("webhook sent {again} more after accepting: the status write failed"));
            } else if again > 0 {
                problems.push(format!("webhook sent {again} more after accepting"));
            }
        }
    }
    // The bus: at least once, and once.
    let on_bus = setup.queue.bodies().await.into_iter().filter(|body| body["detail"]["id"] == event_id).count();
    match on_bus {
        0 => problems.push("the bus never got the event".to_owned()),
        1 => {}
        n if status_write_failed => notes.push(format!("bus got it {n} times: the status write failed")),
        n => problems.push(format!("bus got it {n} times")),
    }
    // The notification status: valid JSON, both targets accepted, no secret.
    let secret_body = setup.secret.trim_start_matches("whsec_").trim_end_matches('=').to_owned();
    let mut bus_failures = Vec::new();
    match setup.staging.get(&setup.parts.status_key()).await {
        Err(error) => problems.push(format!("no notification status: {error}")),
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Err(error) => problems.push(format!("the notification status is not JSON: {error}")),
            Ok(_) => match serde_json::from_slice::<NotificationStatus>(&bytes) {
                Err(error) => problems.push(format!("the notification status is not one this build reads: {error}")),
                Ok(status) => {
                    let states: Vec<TargetState> = status.targets.iter().map(|t| t.state).collect();
                    if states != [TargetState::Accepted, TargetState::Accepted] {
                        problems.push(format!("targets {states:?} in the notification status"));
                    }
                    let bus = status.targets.iter().filter(|t| t.target_type == "eventbridge");
                    bus_failures =
                        bus.flat_map(|t| &t.attempts).filter(|a| !a.accepted).map(|a| a.detail.clone()).collect();
                    let text = String::from_utf8_lossy(&bytes);
                    if text.contains(&setup.secret) || text.contains(&secret_body) {
                        problems.push("the signing secret is in the notification status".to_owned());
                    }
                }
            },
        },
    }
    // No log line holds the cell's signing secret.
    let logs = world.logs.text();
    if logs.contains(&setup.secret) || logs.contains(&secret_body) {
        problems.push("the signing secret is in a log line".to_owned());
    }

    let mut result = CellResult {
        cell: Cell::label(cell.as_ref()),
        faults_fired,
        invocations: format!(
            "{} for {} S3 events ({} failed); {} sweeps ({} failed)",
            runs.invocations, runs.s3_events, runs.exhausted, runs.sweeps, runs.failed_sweeps
        ),
        outcome: format!("{}; {on_bus}", answers.join(" ")),
        cause: runs.last_error.as_deref().map(shorten),
        problems,
        notes,
        ..Default::default()
    };
    let Some(cell) = cell else {
        assert_eq!(
            (runs.invocations, runs.s3_events, runs.exhausted, runs.failed_sweeps),
            (2, 2, 0, 0),
            "the baseline: the first send and the sweeper's re-drive, nothing failed: {}",
            result.row()
        );
        assert_eq!(answers, ["500", "204"], "the baseline's webhook answers");
        result.seconds = started.elapsed().as_secs_f64();
        return (result, counts);
    };
    if runs.exhausted > 0 {
        if !cell.permanent() {
            result.problems.push(format!("{} S3 events failed every invocation", runs.exhausted));
        } else if !runs.exhausted_error.as_deref().is_some_and(|error| cell.is_named_in(error)) {
            result.problems.push("notify's error does not name the fault".to_owned());
        }
    }
    if runs.failed_sweeps > 0 && !runs.sweep_error.as_deref().is_some_and(|error| cell.is_named_in(error)) {
        result.problems.push("the sweep's error does not name the fault".to_owned());
    }
    // A bus that did not take the event is a failed send, recorded naming the fault.
    if !bus_failures.is_empty() {
        if bus_failures.iter().all(|detail| cell.is_named_in(detail)) {
            result.notes.push(format!("bus: {} failed sends recorded, re-driven", bus_failures.len()));
        } else {
            result.problems.push(format!("a failed send to the bus does not name the fault: {}", bus_failures[0]));
        }
    } else if cell.permanent() && runs.exhausted == 0 && runs.failed_sweeps == 0 {
        result.notes.push("not needed: notify and the sweeper did without it".to_owned());
    }
    result.seconds = started.elapsed().as_secs_f64();
    (result, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_and_the_sweeper_under_every_fault_deliver_each_event_at_least_once_and_never_again_after_acceptance() {
    let logs = capture_logs();
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let world = Arc::new(World { endpoint, admin, logs });
    let started = Instant::now();
    let mut matrix = run_matrix(cells_from, move |index, cell| notify_cell(world.clone(), index, cell)).await;
    matrix.elapsed = started.elapsed();
    matrix.assert_baseline_made(&[
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListObjectsV2",
        "secretsmanager:GetSecretValue",
        "events:PutEvents",
    ]);
    matrix.print_and_assert_no_problems(
        "notify and the sweeper's re-drive (a webhook on 127.0.0.1 that answers 500 once, an EventBridge bus; \
         notify as Lambda, 2 hourly sweeps under the fault, 3 after it and one 30 h later)",
        &COLUMNS,
    );
}
