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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_edited_after_fanout_to_an_older_tenants_destination_is_refused_before_writing() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "recheck").await;
    let prefix = unique_tenant_prefix("recheck");
    publish_synthetic_run(&staging, run_id(), 600, 400).await;
    let account = account_config(&admin, CUSTOMER_ACCOUNT).await;
    let shared = fresh_bucket(&s3_client(&account), "recheck-shared").await;
    let own = fresh_bucket(&s3_client(&account), "recheck-own").await;
    let shared_keys = create_delivery_user(&account, &unique_bucket_name("first"), &shared, true).await;
    let own_keys = create_delivery_user(&account, &unique_bucket_name("second"), &own, true).await;
    // "first" is created first (and sorts first, should moto's dates tie).
    create_raw_secret(&admin, &format!("{prefix}first"), &tenant("first", &shared, "", &shared_keys)).await;
    create_raw_secret(&admin, &format!("{prefix}second"), &tenant("second", &own, "", &own_keys)).await;

    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), &prefix).unwrap();
    let fanout =
        FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![staging.bucket().to_owned()] };
    let fanned =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    assert_eq!(fanned.jobs_created, 2, "no conflict at fanout: {fanned:?}");

    // After fanout, second's secret now names first's bucket (its keys
    // can write there: the customer gave them).
    let second_keys_for_shared =
        create_delivery_user(&account, &unique_bucket_name("second-shared"), &shared, true).await;
    secrets_manager_client(&admin)
        .put_secret_value()
        .secret_id(format!("{prefix}second"))
        .secret_string(tenant("second", &shared, "second/", &second_keys_for_shared))
        .send()
        .await
        .unwrap();

    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(),
        deliverer: S3Deliverer {
            staging: staging.clone(),
            destinations: S3Destinations::new(admin.clone(), vec![staging.bucket().to_owned()]),
        },
        now: pinned_now,
    };
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
    assert!(keys_under(&account, &shared, "second/").await.is_empty(), "nothing written for the newcomer");

    let first_job = format!("jobs/s3/{RUN_ID}/first/all.json");
    let delivered = handle_deliverer_event(&deps, event_for_key(&first_job), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert!(keys_under(&account, &shared, "").await.iter().any(|key| key.ends_with("_manifest.json")));
}
