//! Failure notices to a tenant's `contacts` through the real handlers on
//! moto (docs/design.md, "Events"). On the IAM-enforcing server: a customer
//! whose delivery user is denied `s3:PutObject` gets one notice, through
//! SES, naming the cause and the fix; a second run failing the same day
//! sends none; once the grant is back and a run is delivered, one
//! "delivering again" notice. On the plain server: a failure that is ours
//! (a staging part gone) sends none.

use chrono::{DateTime, Utc};
use integration_tests::customer::{
    account_admin, account_config, admin_user, create_delivery_user, emails_to, enforce_iam, lock_auth_server,
    sent_emails, set_user_put_object, stop_enforcing_iam,
};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, s3_deliver_deps, staging_store,
    unique_tenant_prefix,
};
use integration_tests::{fresh_bucket, moto_auth_endpoint, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::SesMailer;
use popularity_reports::delivery::{Blame, DeliveryOutcome, DeliveryStatus, EventKeyParts, EventType};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::handlers::notify::handle_notify_event;
use popularity_reports::notify::status::NotificationStatus;
use popularity_reports::notify::{EventBridgeBuses, HttpWebhooks, NotifyDeps};
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const SENDER: &str = "reports@popularity.example";

fn notify_deps(
    admin: &aws_config::SdkConfig,
    staging: &S3Store,
    prefix: &str,
    now: fn() -> DateTime<Utc>,
) -> NotifyDeps<S3Store, SecretsManagerTenants, HttpWebhooks, EventBridgeBuses, SesMailer> {
    NotifyDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap(),
        webhooks: HttpWebhooks::new(false),
        buses: EventBridgeBuses::new(admin),
        mailer: SesMailer::new(admin),
        sender: SENDER.to_owned(),
        now,
    }
}

fn event_parts(run: RunId, feed: &str, event_type: EventType) -> EventKeyParts {
    EventKeyParts { run_id: run, tenant_id: "acme".into(), feed_id: feed.into(), event_type }
}

async fn notice_of(staging: &S3Store, parts: &EventKeyParts) -> (bool, String) {
    let status: NotificationStatus = serde_json::from_slice(&staging.get(&parts.status_key()).await.unwrap()).unwrap();
    let notice = status.notice.expect("the notice was decided");
    (notice.sent, notice.detail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_delivery_user_gets_one_notice_a_day_and_one_when_it_works_again() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let admin = admin_user(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let customer_admin = account_admin(&account_config(&admin, "333333333333").await).await;
    let bucket = fresh_bucket(&s3_client(&customer_admin), "notice-dest").await;
    let user = unique_bucket_name("notice-user");
    let (access_key_id, secret_access_key) = create_delivery_user(&customer_admin, &user, &bucket, false).await;
    let contact = format!("{}@acme.example", unique_bucket_name("data-team"));
    let staging = staging_store(&admin, "notice-staging").await;
    let prefix = unique_tenant_prefix("notice-tenants");
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "trial",
        "connectors": {"lake": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": "feeds/", "accessKeyId": access_key_id,
            "secretAccessKey": secret_access_key}},
        "feeds": [{"id": "lake", "connector": "lake", "reports": ["artist"]}],
        "contacts": [contact]});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let morning = run_id();
    let evening: RunId = "20261119150000".parse().unwrap();
    let next_week: RunId = "20261123030000".parse().unwrap();
    for run in [morning, evening, next_week] {
        publish_synthetic_run(&staging, run, 300, 1_000).await;
    }
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.clone()).unwrap();
    let fanout = FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![] };
    let deliver = s3_deliver_deps(&admin, &staging, tenants(), pinned_now);
    let deliver_under_iam = |run: RunId| {
        let (fanout, deliver, endpoint) = (&fanout, &deliver, &endpoint);
        async move {
            fan_out_run(fanout, run, run.time()).await.unwrap();
            enforce_iam(endpoint, 0).await;
            let result =
                handle_deliverer_event(deliver, event_for_key(&format!("jobs/s3/{run}/acme/lake.json")), None).await;
            stop_enforcing_iam(endpoint).await;
            result.is_ok()
        }
    };

    // The user may not PutObject: the delivery fails, the customer's to fix.
    assert!(!deliver_under_iam(morning).await);
    let status: DeliveryStatus =
        serde_json::from_slice(&staging.get(&format!("status/{morning}/acme/lake.json")).await.unwrap()).unwrap();
    assert_eq!((status.outcome, status.blame), (DeliveryOutcome::Failed, Some(Blame::Customer)));
    let failed = event_parts(morning, "lake", EventType::Failed);
    let deps = notify_deps(&admin, &staging, &prefix, || "2026-11-19T03:10:00Z".parse().unwrap());
    handle_notify_event(&deps, event_for_key(&failed.event_key())).await.unwrap();
    assert!(notice_of(&staging, &failed).await.0, "a failure notice was sent");
    // The same event again (a duplicate S3 event): no second notice.
    handle_notify_event(&deps, event_for_key(&failed.event_key())).await.unwrap();

    // The evening run fails the same day: no notice.
    assert!(!deliver_under_iam(evening).await);
    let evening_failed = event_parts(evening, "lake", EventType::Failed);
    let deps = notify_deps(&admin, &staging, &prefix, || "2026-11-19T15:10:00Z".parse().unwrap());
    handle_notify_event(&deps, event_for_key(&evening_failed.event_key())).await.unwrap();
    let (sent, detail) = notice_of(&staging, &evening_failed).await;
    assert!(!sent && detail.contains("already sent today"), "{detail}");

    // The customer restores the grant; the next run is delivered: one recovery notice.
    set_user_put_object(&customer_admin, &user, &bucket, true).await;
    assert!(deliver_under_iam(next_week).await);
    let succeeded = event_parts(next_week, "lake", EventType::Succeeded);
    let deps = notify_deps(&admin, &staging, &prefix, || "2026-11-23T03:10:00Z".parse().unwrap());
    handle_notify_event(&deps, event_for_key(&succeeded.event_key())).await.unwrap();
    assert!(notice_of(&staging, &succeeded).await.0, "a recovery notice was sent");

    let mail = emails_to(&sent_emails(&endpoint).await, &contact);
    assert_eq!(mail.len(), 2, "one failure notice, one recovery notice: {mail:#?}");
    let (failure, recovery) = (mail[0].text(), mail[1].text());
    assert!(failure.contains("Action needed") || failure.contains("QWN0aW9uIG5lZWRlZ"), "{failure}");
    assert_eq!(mail[0].source, SENDER);
    let failure_text = integration_tests::customer::mime_bodies(failure).0;
    assert!(failure_text.contains("your bucket refused our write"), "{failure_text}");
    assert!(failure_text.contains("s3:PutObject"), "the fix names the grant: {failure_text}");
    assert!(failure_text.contains(&format!("run {morning}")), "{failure_text}");
    assert!(!failure_text.contains(&secret_access_key));
    let recovery_text = integration_tests::customer::mime_bodies(recovery).0;
    assert!(recovery_text.contains("delivering again"), "{recovery_text}");
}

#[tokio::test]
async fn a_failure_that_is_ours_sends_no_notice() {
    let admin = sdk_config(&moto_endpoint()).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, "notice-ours").await;
    let manifest = publish_synthetic_run(&staging, run_id(), 300, 1_000).await;
    let destination = fresh_bucket(&s3_client(&admin), "notice-ours-dest").await;
    let contact = format!("{}@acme.example", unique_bucket_name("ours"));
    let prefix = unique_tenant_prefix("notice-ours");
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "trial",
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{destination}"),
            "region": "us-east-1", "bucketOwnerAccountId": "123456789012"}},
        "feeds": [{"id": "lake", "connector": "lake", "reports": ["artist"]}],
        "contacts": [contact]});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.clone()).unwrap();
    let fanout = FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![] };
    fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
    // Our staging lost the report's part: nothing the customer can do.
    let artist = manifest.reports.iter().find(|r| r.data_type == "artist_popularity").unwrap();
    s3_client(&admin).delete_object().bucket(staging.bucket()).key(&artist.parts[0].key).send().await.unwrap();
    let deliver = s3_deliver_deps(&admin, &staging, tenants(), pinned_now);
    let _ =
        handle_deliverer_event(&deliver, event_for_key(&format!("jobs/s3/{}/acme/lake.json", run_id())), None).await;

    let failed = event_parts(run_id(), "lake", EventType::Failed);
    let event: serde_json::Value = serde_json::from_slice(&staging.get(&failed.event_key()).await.unwrap()).unwrap();
    assert_eq!(event["blame"], "provider", "{event}");
    let deps = notify_deps(&admin, &staging, &prefix, || pinned_now() + chrono::Duration::minutes(1));
    handle_notify_event(&deps, event_for_key(&failed.event_key())).await.unwrap();
    let (sent, detail) = notice_of(&staging, &failed).await;
    assert!(!sent && detail.contains("not the customer's"), "{detail}");
    assert!(emails_to(&sent_emails(&moto_endpoint()).await, &contact).is_empty());
}
