//! deliver-s3 under IAM enforcement, on the second moto server
//! (`MOTO_AUTH_ENDPOINT`): a customer user granted exactly the seed's
//! permissions — `s3:PutObject`, `s3:ListBucket`/`s3:ListBucketMultipartUploads`
//! and `s3:AbortMultipartUpload` on the destination, nothing to read — gets
//! the whole delivery; once `s3:PutObject` is revoked the next run fails with
//! a status naming the denial, and nothing is left behind. Enforcement is
//! global to the server, so the scenario is one test holding the server lock.

use integration_tests::customer::{
    account_admin, account_config, admin_user, create_delivery_user, enforce_iam, keys_under, lock_auth_server,
    open_multipart_uploads, set_user_put_object, stop_enforcing_iam,
};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, s3_deliver_deps, sample_event,
    staging_store, unique_tenant_prefix,
};
use integration_tests::{fresh_bucket, moto_auth_endpoint, unique_bucket_name};
use popularity_reports::delivery::JobDisposition;
use popularity_reports::delivery::{DeliveryOutcome, DeliveryStatus};
use popularity_reports::domain::RunId;
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectStore};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_seed_grants_deliver_and_without_put_object_the_status_names_the_denial() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let admin = admin_user(&endpoint).await;
    let customer = account_config(&admin, "333333333333").await;
    let customer_admin = account_admin(&customer).await;
    let bucket = fresh_bucket(&s3_client(&customer_admin), "iam-dest").await;
    let user = unique_bucket_name("delivery-user");
    let (access_key_id, secret_access_key) = create_delivery_user(&customer_admin, &user, &bucket, true).await;
    let staging = staging_store(&admin, "iam-staging").await;
    let prefix = unique_tenant_prefix("iam-tenants");
    let secret = json!({
        "schemaVersion": 1, "tenantId": "beta-music", "plan": "trial", "enabled": true,
        "connectors": {"lake": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": "feeds/", "accessKeyId": access_key_id,
            "secretAccessKey": secret_access_key}},
        "feeds": [{"id": "lake-tsv", "connector": "lake", "format": "tsv", "compression": "gzip"}]
    });
    create_raw_secret(&admin, &format!("{prefix}beta-music"), &secret.to_string()).await;
    // Parts above 8 MiB, so the grant covers multipart uploads too.
    publish_synthetic_run(&staging, run_id(), 300_000, 1_000_000).await;
    let later: RunId = "20261123030000".parse().unwrap();
    publish_synthetic_run(&staging, later, 300_000, 1_000_000).await;

    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.clone()).unwrap();
    let fanout =
        FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![staging.bucket().to_owned()] };
    let deps = s3_deliver_deps(&admin, &staging, tenants(), pinned_now);

    enforce_iam(&endpoint, 0).await;
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    let delivered =
        handle_deliverer_event(&deps, sample_event("deliver-s3/job-created-url-encoded.json"), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let written = keys_under(&customer_admin, &bucket, "feeds/").await;
    assert_eq!(written.len(), 6, "three parts and three manifests: {written:?}");

    set_user_put_object(&customer_admin, &user, &bucket, false).await;
    handle_manifest_event(&fanout, event_for_key(&format!("manifests/{later}.json")), pinned_now()).await.unwrap();
    let job_key = format!("jobs/s3/{later}/beta-music/lake-tsv.json");
    let error = handle_deliverer_event(&deps, event_for_key(&job_key), None).await.unwrap_err();
    let status: DeliveryStatus =
        serde_json::from_slice(&staging.get(&format!("status/{later}/beta-music/lake-tsv.json")).await.unwrap())
            .unwrap();
    stop_enforcing_iam(&endpoint).await;

    assert_eq!(status.outcome, DeliveryOutcome::Failed);
    let cause = status.last_error.unwrap();
    assert!(cause.contains("AccessDenied"), "the status names the denial: {cause}");
    assert!(cause.contains(&bucket), "and the destination: {cause}");
    assert!(error.to_string().contains("AccessDenied"), "{error}");
    assert!(!cause.contains(&secret_access_key) && !error.to_string().contains(&secret_access_key));
    let after = keys_under(&customer_admin, &bucket, "feeds/").await;
    assert_eq!(after, written, "nothing of the later run was written");
    assert!(open_multipart_uploads(&customer_admin, &bucket).await.is_empty());
}
