//! Arrival events through the real handlers against moto (docs/design.md,
//! "Events"): a delivery by deliver-s3 creates `delivery.succeeded`; notify
//! sends it to a webhook on 127.0.0.1 — whose receiver checks every
//! signature with Python's own `hmac` and fails the first two requests —
//! and to an EventBridge bus on moto; the sweeper re-drives the event on the
//! retry schedule until the receiver accepts it, exactly once, and never
//! again after. Without the local setting, URLs that reach loopback,
//! private or metadata addresses, and plain http, are refused before any
//! connection. No signing secret appears in a log line or a status object.

use chrono::{DateTime, Duration, Utc};
use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, event_for_key, pinned_now, publish_synthetic_run,
    run_id, s3_deliver_deps, staging_store, unique_tenant_prefix,
};
use integration_tests::event_bus::bus_with_queue;
use integration_tests::webhook_receiver::WebhookReceiver;
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config};
use popularity_reports::delivery::connectors::email::SesMailer;
use popularity_reports::delivery::{ArrivalEvent, EventKeyParts, EventType};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::handlers::notify::handle_notify_event;
use popularity_reports::handlers::sweeper::{handle_sweep, SweeperDeps};
use popularity_reports::notify::status::{NotificationStatus, TargetState};
use popularity_reports::notify::{EventBridgeBuses, HttpWebhooks, NotifyDeps};
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::{json, Value};

/// A signing secret as `popularity tenant webhook-secret` makes them.
const SECRET: &str = "whsec_Sg0ahpQ1sRyOKGqJQjPMVyxB3nKnNmEdWbT5cjL7WfE=";
/// Its base64 body alone, which must not appear either.
const SECRET_BODY: &str = "Sg0ahpQ1sRyOKGqJQjPMVyxB3nKnNmEdWbT5cjL7WfE";

fn notify_deps(
    admin: &aws_config::SdkConfig,
    staging: &S3Store,
    prefix: &str,
    allow_loopback: bool,
    now: fn() -> DateTime<Utc>,
) -> NotifyDeps<S3Store, SecretsManagerTenants, HttpWebhooks, EventBridgeBuses, SesMailer> {
    NotifyDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap(),
        webhooks: HttpWebhooks::new(allow_loopback),
        buses: EventBridgeBuses::new(admin),
        mailer: SesMailer::new(admin),
        sender: "reports@example.com".to_owned(),
        now,
    }
}

fn sweeper(staging: &S3Store, now: fn() -> DateTime<Utc>) -> SweeperDeps<S3Store> {
    SweeperDeps { staging: staging.clone(), sweep_days: 3, max_redrives: 24, now }
}

async fn notification_status(staging: &S3Store, parts: &EventKeyParts) -> (String, NotificationStatus) {
    let body = staging.get(&parts.status_key()).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let status = serde_json::from_str(&text).unwrap();
    (text, status)
}

#[tokio::test]
async fn a_webhook_failing_twice_gets_the_event_once_the_sweeper_redrives_it_and_never_again_after() {
    let logs = capture_logs();
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "events-webhook").await;
    publish_synthetic_run(&staging, run_id(), 300, 1_000).await;
    let destination = fresh_bucket(&s3_client(&admin), "events-dest").await;
    let receiver = WebhookReceiver::start(SECRET, 2);
    let (bus_arn, queue) = bus_with_queue(&admin, "events-bus").await;
    let prefix = unique_tenant_prefix("events-webhook");
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "trial",
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{destination}"),
            "region": "us-east-1", "prefix": "in/", "bucketOwnerAccountId": "123456789012"}},
        "feeds": [{"id": "default", "connector": "lake", "reports": ["artist"]}],
        "notifications": [
            {"type": "webhook", "url": receiver.url("/hooks/popularity"), "signingSecret": SECRET},
            {"type": "eventbridge", "eventBusArn": bus_arn}]});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.as_str()).unwrap();

    // deliver-s3 delivers, and creates the event.
    let fanout = FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![] };
    fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
    let job_key = format!("jobs/s3/{}/acme/default.json", run_id());
    let deliver = s3_deliver_deps(&admin, &staging, tenants(), pinned_now);
    handle_deliverer_event(&deliver, event_for_key(&job_key), None).await.unwrap();
    let parts = EventKeyParts {
        run_id: run_id(),
        tenant_id: "acme".into(),
        feed_id: "default".into(),
        event_type: EventType::Succeeded,
    };
    let stored_event = staging.get(&parts.event_key()).await.expect("deliver-s3 created delivery.succeeded");
    let event: ArrivalEvent = serde_json::from_slice(&stored_event).unwrap();
    assert_eq!(event.objects.len(), 2, "the part and _manifest.json: {event:?}");
    assert_eq!(event.objects[0].rows, Some(300));
    assert_eq!(event.manifest_keys, [format!("s3://{destination}/in/artist_popularity/{}/_manifest.json", run_id())]);
    assert_eq!(event.destination.as_ref().unwrap().connector_type, "s3-bucket-policy");

    // First send: the bus takes it, the webhook answers 500.
    let first = notify_deps(&admin, &staging, &prefix, true, || pinned_now() + Duration::minutes(1));
    let report = handle_notify_event(&first, event_for_key(&parts.event_key())).await.unwrap();
    assert_eq!((report.events[0].sent, report.events[0].accepted), (2, 1));
    // A duplicate S3 event a moment later sends nothing: nothing is due.
    let again = handle_notify_event(&first, event_for_key(&parts.event_key())).await.unwrap();
    assert_eq!(again.events[0].sent, 0);

    // The sweeper waits out the schedule (5 min after the first send), then re-drives.
    let early = handle_sweep(&sweeper(&staging, || pinned_now() + Duration::minutes(3))).await.unwrap();
    assert_eq!((early.events, early.events_redriven), (1, 0));
    let swept = handle_sweep(&sweeper(&staging, || pinned_now() + Duration::minutes(7))).await.unwrap();
    assert_eq!(swept.events_redriven, 1);
    assert_eq!(staging.get(&parts.event_key()).await.unwrap(), stored_event, "re-written with the same bytes");
    let second = notify_deps(&admin, &staging, &prefix, true, || pinned_now() + Duration::minutes(7));
    let report = handle_notify_event(&second, event_for_key(&parts.event_key())).await.unwrap();
    assert_eq!((report.events[0].sent, report.events[0].accepted), (1, 0), "the bus is not sent again");

    // 30 min later the third send is accepted.
    let swept = handle_sweep(&sweeper(&staging, || pinned_now() + Duration::minutes(38))).await.unwrap();
    assert_eq!(swept.events_redriven, 1);
    let third = notify_deps(&admin, &staging, &prefix, true, || pinned_now() + Duration::minutes(38));
    let report = handle_notify_event(&third, event_for_key(&parts.event_key())).await.unwrap();
    assert_eq!((report.events[0].sent, report.events[0].accepted), (1, 1));

    // Accepted: never due, never re-driven, never sent again.
    let later = handle_sweep(&sweeper(&staging, || pinned_now() + Duration::hours(30))).await.unwrap();
    assert_eq!(later.events_redriven, 0);
    let late = notify_deps(&admin, &staging, &prefix, true, || pinned_now() + Duration::hours(30));
    assert_eq!(handle_notify_event(&late, event_for_key(&parts.event_key())).await.unwrap().events[0].sent, 0);

    let received = receiver.received().await;
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 204], "exactly one accepted: {received:?}");
    for request in &received {
        assert!(request.valid, "Python's hmac rejected the signature of {request:?}");
        assert_eq!(request.id, event.id, "every send carries the event's id");
        assert_eq!(request.body.as_bytes(), &stored_event[..], "the body is the event as stored");
    }
    let on_bus = queue.bodies().await;
    assert_eq!(on_bus.len(), 1, "{on_bus:?}");
    assert_eq!(
        (on_bus[0]["source"].as_str(), on_bus[0]["detail-type"].as_str()),
        (Some("popularity-reports"), Some("delivery.succeeded"))
    );
    assert_eq!(on_bus[0]["detail"]["id"], event.id.as_str());

    let (text, status) = notification_status(&staging, &parts).await;
    let states: Vec<TargetState> = status.targets.iter().map(|t| t.state).collect();
    assert_eq!(states, [TargetState::Accepted, TargetState::Accepted]);
    assert_eq!(status.targets[0].attempts.len(), 3);
    for leak in [SECRET, SECRET_BODY] {
        assert!(!text.contains(leak), "the signing secret is in the notification status");
    }
    assert_logs_hold_none_of(&logs, &[SECRET, SECRET_BODY]);
}

#[tokio::test]
async fn without_the_local_setting_loopback_private_metadata_and_http_urls_are_refused_before_connecting() {
    let logs = capture_logs();
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "events-refused").await;
    let receiver = WebhookReceiver::start(SECRET, 0);
    let port = receiver.port;
    let urls = [
        format!("https://127.0.0.1:{port}/hook"),
        "https://10.0.0.1/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        format!("https://[::1]:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
    ];
    let notifications: Vec<Value> =
        urls.iter().map(|url| json!({"type": "webhook", "url": url, "signingSecret": SECRET})).collect();
    let prefix = unique_tenant_prefix("events-refused");
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "trial", "connectors": {}, "feeds": [],
        "notifications": notifications});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let event = json!({"schemaVersion": 1, "id": "evt_00000000000000000000000000000001",
        "type": "delivery.failed", "tenantId": "acme", "feedId": "default", "runId": run_id().to_string(),
        "time": pinned_now(), "cause": "AccessDenied", "retryable": true, "blame": "customer", "attempts": 1});
    let parts = EventKeyParts {
        run_id: run_id(),
        tenant_id: "acme".into(),
        feed_id: "default".into(),
        event_type: EventType::Failed,
    };
    staging.put(&parts.event_key(), serde_json::to_vec(&event).unwrap().into(), "application/json").await.unwrap();

    let deps = notify_deps(&admin, &staging, &prefix, false, || pinned_now() + Duration::minutes(1));
    let report = handle_notify_event(&deps, event_for_key(&parts.event_key())).await.unwrap();
    assert_eq!((report.events[0].sent, report.events[0].accepted), (urls.len(), 0));
    let (text, status) = notification_status(&staging, &parts).await;
    for (record, url) in status.targets.iter().zip(&urls) {
        assert_eq!(record.state, TargetState::Refused, "{url}: {record:?}");
        let detail = &record.attempts[0].detail;
        assert!(detail.contains("public addresses") || detail.contains("https"), "{url}: {detail}");
    }
    assert_eq!(status.next_due(), None, "refused targets are not retried");
    assert!(receiver.received().await.is_empty(), "nothing reached the receiver");
    let swept = handle_sweep(&sweeper(&staging, || pinned_now() + Duration::hours(2))).await.unwrap();
    assert_eq!(swept.events_redriven, 0);
    assert!(!text.contains(SECRET_BODY));
    assert_logs_hold_none_of(&logs, &[SECRET, SECRET_BODY]);
}
