//! deliver-s3 runs the cross-tenant destination check again just before
//! writing, against moto: two tenants deliver by their own keys into one
//! customer account; after fanout created both jobs, the newer tenant's
//! secret is edited to name the older tenant's bucket under a prefix of its
//! own (inside the older's). Its job is then refused as `invalid` with
//! fanout's newcomer message, which does not name the older tenant, and
//! nothing is written there; the older tenant's job delivers. Before the
//! edit the same job would have been delivered (fanout created it).

use integration_tests::customer::{account_config, create_delivery_user, keys_under};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, sample_event, staging_store,
    unique_tenant_prefix, RUN_ID,
};
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, DeliveryStatus, JobDisposition};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectStore};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const CUSTOMER_ACCOUNT: &str = "444444444444";

fn tenant(tenant_id: &str, bucket: &str, prefix: &str, keys: &(String, String)) -> String {
    json!({"schemaVersion": 1, "tenantId": tenant_id, "plan": "standard",
        "connectors": {"lake": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": prefix, "accessKeyId": keys.0, "secretAccessKey": keys.1}},
        "feeds": [{"id": "all", "connector": "lake"}]})
    .to_string()
}

/// What both tests start from: staging with the run published, a tenant
/// prefix of their own, and two fresh buckets of the customer account.
struct Setup {
    admin: aws_config::SdkConfig,
    staging: popularity_reports::store::S3Store,
    prefix: String,
    account: aws_config::SdkConfig,
    shared: String,
    own: String,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let admin = sdk_config(&moto_endpoint()).await;
        let staging = staging_store(&admin, name).await;
        let prefix = unique_tenant_prefix(name);
        publish_synthetic_run(&staging, run_id(), 600, 400).await;
        let account = account_config(&admin, CUSTOMER_ACCOUNT).await;
        let shared = fresh_bucket(&s3_client(&account), &format!("{name}-shared")).await;
        let own = fresh_bucket(&s3_client(&account), &format!("{name}-own")).await;
        Self { admin, staging, prefix, account, shared, own }
    }

    fn tenants(&self) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), &self.prefix).unwrap()
    }

    fn fanout(&self) -> FanoutDeps<popularity_reports::store::S3Store, SecretsManagerTenants> {
        FanoutDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            own_buckets: vec![self.staging.bucket().to_owned()],
        }
    }

    fn deliver(
        &self,
    ) -> DeliverDeps<
        popularity_reports::store::S3Store,
        SecretsManagerTenants,
        S3Deliverer<popularity_reports::store::S3Store>,
    > {
        DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: S3Deliverer {
                staging: self.staging.clone(),
                destinations: S3Destinations::new(self.admin.clone(), vec![self.staging.bucket().to_owned()]),
            },
            now: pinned_now,
        }
    }

    /// Replaces the secret of `tenant_id` with `value`.
    async fn edit_secret(&self, tenant_id: &str, value: String) {
        secrets_manager_client(&self.admin)
            .put_secret_value()
            .secret_id(format!("{}{tenant_id}", self.prefix))
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_edited_after_fanout_to_an_older_tenants_destination_is_refused_before_writing() {
    let setup = Setup::new("recheck").await;
    let Setup { admin, staging, prefix, account, shared, own } = &setup;
    let shared_keys = create_delivery_user(account, &unique_bucket_name("first"), shared, true).await;
    let own_keys = create_delivery_user(account, &unique_bucket_name("second"), own, true).await;
    // "first" is created first (and sorts first, should moto's dates tie).
    create_raw_secret(admin, &format!("{prefix}first"), &tenant("first", shared, "", &shared_keys)).await;
    create_raw_secret(admin, &format!("{prefix}second"), &tenant("second", own, "", &own_keys)).await;

    let fanned = handle_manifest_event(&setup.fanout(), sample_event("fanout/manifest-created.json"), pinned_now())
        .await
        .unwrap();
    assert_eq!(fanned.jobs_created, 2, "no conflict at fanout: {fanned:?}");

    // After fanout, second's secret now names first's bucket (its keys
    // can write there: the customer gave them).
    let second_keys_for_shared =
        create_delivery_user(account, &unique_bucket_name("second-shared"), shared, true).await;
    setup.edit_secret("second", tenant("second", shared, "second/", &second_keys_for_shared)).await;

    let deps = setup.deliver();
    let second_job = format!("jobs/s3/{RUN_ID}/second/all.json");
    let refused = handle_deliverer_event(&deps, event_for_key(&second_job), None).await.unwrap();
    assert_eq!(refused.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Invalid));
    let status: DeliveryStatus =
        serde_json::from_slice(&staging.get(&format!("status/{RUN_ID}/second/all.json")).await.unwrap()).unwrap();
    let error = status.last_error.unwrap();
    assert!(
        error.contains(&format!("writes to s3://{shared}/second/, where another tenant's feed already delivers"))
            && error.contains("checked again before writing"),
        "{error}"
    );
    assert!(!error.contains("first"), "the older tenant is not named: {error}");
    assert!(keys_under(account, shared, "second/").await.is_empty(), "nothing written for the newcomer");

    let first_job = format!("jobs/s3/{RUN_ID}/first/all.json");
    let delivered = handle_deliverer_event(&deps, event_for_key(&first_job), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert!(keys_under(account, shared, "").await.iter().any(|key| key.ends_with("_manifest.json")));
}

/// "The tenant that was there first and verified keeps delivering": a feed
/// delivered to a place (recorded in its delivery index) keeps it against
/// an older tenant whose secret is edited to name that place later. Fanout
/// of the next run refuses the older tenant's feed with the newcomer
/// message and creates the verified tenant's job; deliver-s3, re-driving
/// the older tenant's job of the first run after the edit, refuses it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_verified_at_a_place_keeps_it_against_an_older_tenant_that_moves_there() {
    let setup = Setup::new("verified").await;
    let Setup { admin, staging, prefix, account, shared, own } = &setup;
    let next_run: popularity_reports::domain::RunId = "20261120030000".parse().unwrap();
    publish_synthetic_run(staging, next_run, 600, 400).await;
    let own_keys = create_delivery_user(account, &unique_bucket_name("first"), own, true).await;
    let shared_keys = create_delivery_user(account, &unique_bucket_name("second"), shared, true).await;
    // first is the older tenant; second delivers to shared/theirs/.
    create_raw_secret(admin, &format!("{prefix}first"), &tenant("first", own, "", &own_keys)).await;
    create_raw_secret(admin, &format!("{prefix}second"), &tenant("second", shared, "theirs/", &shared_keys)).await;

    let fanout = setup.fanout();
    let deps = setup.deliver();
    let fanned =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    assert_eq!(fanned.jobs_created, 2);
    let second_job = format!("jobs/s3/{RUN_ID}/second/all.json");
    let delivered = handle_deliverer_event(&deps, event_for_key(&second_job), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));

    // The older tenant's secret now names the whole shared bucket.
    let first_shared_keys = create_delivery_user(account, &unique_bucket_name("first-shared"), shared, true).await;
    setup.edit_secret("first", tenant("first", shared, "", &first_shared_keys)).await;

    // Its job of the first run, re-driven now, is refused before writing.
    let first_job = format!("jobs/s3/{RUN_ID}/first/all.json");
    let refused = handle_deliverer_event(&deps, event_for_key(&first_job), None).await.unwrap();
    assert_eq!(refused.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Invalid));
    let shared_keys_now = keys_under(account, shared, "").await;
    assert!(shared_keys_now.iter().all(|key| key.starts_with("theirs/")), "first wrote nothing: {shared_keys_now:?}");

    // The next run: fanout refuses first's feed and keeps second's.
    let next_now = next_run.time() + chrono::Duration::minutes(5);
    popularity_reports::handlers::fanout::fan_out_run(&fanout, next_run, next_now).await.unwrap();
    let status: DeliveryStatus =
        serde_json::from_slice(&staging.get(&format!("status/{next_run}/first/all.json")).await.unwrap()).unwrap();
    assert_eq!(status.outcome, DeliveryOutcome::Invalid);
    let error = status.last_error.unwrap();
    assert!(
        error.contains(&format!("feed writes to s3://{shared}/, where another tenant's feed already delivers")),
        "{error}"
    );
    assert!(!error.contains("second"), "the verified tenant is not named: {error}");
    assert!(staging.get(&format!("jobs/s3/{next_run}/second/all.json")).await.is_ok(), "second keeps delivering");
    assert!(staging.get(&format!("jobs/s3/{next_run}/first/all.json")).await.is_err(), "no job for first");
}
