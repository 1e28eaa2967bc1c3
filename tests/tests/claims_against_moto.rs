//! One delivery at a time per job (docs/design.md, "Delivery rules"), against moto: eight
//! concurrent invocations of one email job send exactly one email; eight of
//! one S3 job deliver once, record one delivered attempt, and the other
//! invocations succeed without writing; a live claim left by another
//! attempt makes an invocation write nothing, and a claim left by a killed
//! attempt is taken over once it has expired.

use std::sync::Arc;

use integration_tests::customer::{account_config, create_delivery_role, keys_under, sent_emails};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, unique_tenant_prefix,
};
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{parse_job_key, DeliverDeps, DeliveryOutcome, DeliveryStatus, JobDisposition};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const SENDER: &str = "reports@popularity.example";
const INVOCATIONS: usize = 8;

struct Scene {
    admin: aws_config::SdkConfig,
    staging: S3Store,
    prefix: String,
    recipient: String,
    customer: aws_config::SdkConfig,
    bucket: String,
}

async fn scene(hint: &str) -> Scene {
    let admin = sdk_config(&moto_endpoint()).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, &format!("claims-{hint}")).await;
    publish_synthetic_run(&staging, run_id(), 1_500, 1_000).await;
    let prefix = unique_tenant_prefix(&format!("claims-{hint}"));
    let recipient = format!("{}@acme.example", unique_bucket_name("claims"));
    let customer = account_config(&admin, "222222222222").await;
    let bucket = fresh_bucket(&s3_client(&customer), "claims-dest").await;
    let external_id = popularity_reports::tenant::new_external_id("acme").unwrap();
    let role =
        create_delivery_role(&customer, &unique_bucket_name("role"), "123456789012", &external_id, &bucket).await;
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {
            "inbox": {"type": "email", "recipients": [recipient]},
            "lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
                     "prefix": "massive/", "roleArn": role, "externalId": external_id}
        },
        "feeds": [{"id": "mail", "connector": "inbox", "reports": ["artist"]}, {"id": "all", "connector": "lake"}]});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let tenants = SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.as_str()).unwrap();
    fan_out_run(
        &FanoutDeps { staging: staging.clone(), tenants, own_buckets: vec![staging.bucket().to_owned()] },
        run_id(),
        pinned_now(),
    )
    .await
    .unwrap();
    Scene { admin, staging, prefix, recipient, customer, bucket }
}

impl Scene {
    fn tenants(&self) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), self.prefix.as_str()).unwrap()
    }

    async fn status(&self, feed: &str) -> DeliveryStatus {
        serde_json::from_slice(&self.staging.get(&format!("status/{}/acme/{feed}.json", run_id())).await.unwrap())
            .unwrap()
    }
}

/// Runs `INVOCATIONS` invocations of the event for `job_key` at once; every
/// one must succeed. Returns what each did with the job.
async fn invoke_concurrently<D: popularity_reports::delivery::Deliverer + 'static>(
    deps: Arc<DeliverDeps<S3Store, SecretsManagerTenants, D>>,
    job_key: &str,
) -> Vec<JobDisposition> {
    let mut invocations = tokio::task::JoinSet::new();
    for _ in 0..INVOCATIONS {
        let (deps, event) = (deps.clone(), event_for_key(job_key));
        invocations.spawn(async move { handle_deliverer_event(&deps, event, None).await });
    }
    let mut dispositions = Vec::new();
    while let Some(joined) = invocations.join_next().await {
        let response = joined.unwrap().expect("every invocation succeeds");
        dispositions.push(response.jobs[0].disposition);
    }
    dispositions
}

fn delivered_once(dispositions: &[JobDisposition]) {
    let delivered =
        dispositions.iter().filter(|d| **d == JobDisposition::Attempted(DeliveryOutcome::Delivered)).count();
    assert_eq!(delivered, 1, "{dispositions:?}");
    assert!(
        dispositions.iter().all(|d| matches!(
            d,
            JobDisposition::Attempted(DeliveryOutcome::Delivered)
                | JobDisposition::ClaimedElsewhere
                | JobDisposition::AlreadyDelivered
        )),
        "{dispositions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_invocations_of_one_email_job_send_one_email() {
    let scene = scene("email").await;
    let deps = Arc::new(DeliverDeps {
        staging: scene.staging.clone(),
        tenants: scene.tenants(),
        deliverer: EmailDeliverer {
            staging: scene.staging.clone(),
            signer: S3LinkSigner::new(scene.admin.clone(), scene.staging.bucket(), None, 604_800),
            mailer: SesMailer::new(&scene.admin),
            sender: SENDER.to_owned(),
            now: chrono::Utc::now,
        },
        now: pinned_now,
    });
    let dispositions = invoke_concurrently(deps, &format!("jobs/email/{}/acme/mail.json", run_id())).await;
    delivered_once(&dispositions);
    let sent = sent_emails(&moto_endpoint()).await.into_iter().filter(|m| m.is_to(&scene.recipient)).count();
    assert_eq!(sent, 1, "exactly one email");
    let status = scene.status("mail").await;
    assert_eq!((status.outcome, status.attempts.len(), status.claim), (DeliveryOutcome::Delivered, 1, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_invocations_of_one_s3_job_deliver_once() {
    let scene = scene("s3").await;
    let deps = Arc::new(DeliverDeps {
        staging: scene.staging.clone(),
        tenants: scene.tenants(),
        deliverer: S3Deliverer {
            staging: scene.staging.clone(),
            destinations: S3Destinations::new(scene.admin.clone(), vec![scene.staging.bucket().to_owned()]),
        },
        now: pinned_now,
    });
    let dispositions = invoke_concurrently(deps, &format!("jobs/s3/{}/acme/all.json", run_id())).await;
    delivered_once(&dispositions);
    let status = scene.status("all").await;
    assert_eq!(status.outcome, DeliveryOutcome::Delivered);
    assert_eq!(status.attempts.len(), 1, "one delivered attempt: {:?}", status.attempts);
    let keys = keys_under(&scene.customer, &scene.bucket, "massive/").await;
    assert_eq!(keys.len(), 3 * 3, "two parts and a manifest per report: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_claim_is_left_alone_and_an_expired_one_is_taken_over() {
    let scene = scene("killed").await;
    let parts = parse_job_key(&format!("jobs/s3/{}/acme/all.json", run_id())).unwrap();
    let status_key = parts.status_key();
    // An attempt holds the job until 03:20 (pinned now is 03:05).
    let held = DeliveryStatus::claimed(
        None,
        &parts,
        "another-attempt".into(),
        pinned_now(),
        pinned_now() + chrono::Duration::minutes(15),
    );
    scene.staging.put(&status_key, serde_json::to_vec(&held).unwrap().into(), "application/json").await.unwrap();
    let before = scene.staging.get_versioned(&status_key).await.unwrap();
    let deps = DeliverDeps {
        staging: scene.staging.clone(),
        tenants: scene.tenants(),
        deliverer: S3Deliverer {
            staging: scene.staging.clone(),
            destinations: S3Destinations::new(scene.admin.clone(), vec![scene.staging.bucket().to_owned()]),
        },
        now: pinned_now,
    };
    let response = handle_deliverer_event(&deps, event_for_key(&parts.job_key()), None).await.unwrap();
    assert_eq!(response.jobs[0].disposition, JobDisposition::ClaimedElsewhere);
    assert_eq!(scene.staging.get_versioned(&status_key).await.unwrap(), before, "nothing written");
    assert!(keys_under(&scene.customer, &scene.bucket, "massive/").await.is_empty());

    // That attempt was killed: at 03:21 its claim has expired and the next
    // invocation (a retry, or the sweeper) takes the job over.
    let later = DeliverDeps { now: || pinned_now() + chrono::Duration::minutes(16), ..deps };
    let response = handle_deliverer_event(&later, event_for_key(&parts.job_key()), None).await.unwrap();
    assert_eq!(response.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let status = scene.status("all").await;
    assert_eq!((status.outcome, status.attempts.len(), status.claim), (DeliveryOutcome::Delivered, 1, None));
}
