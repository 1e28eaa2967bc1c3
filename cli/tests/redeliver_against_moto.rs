//! `popularity redeliver` as an operator runs it, against moto, with
//! `--local` (the deliveries run in the command's own process): a delivery
//! that failed on a missing bucket is re-driven and fails again while the
//! bucket is missing (exit status 1, naming the cause); once the customer
//! creates the bucket it is re-driven and delivered (exit 0); then nothing
//! needs re-driving (exit 0).

use std::process::Output;

use integration_tests::customer::keys_under;
use integration_tests::delivery::{
    event_for_key, publish_synthetic_run, run_id, s3_deliver_deps, staging_store, tenant_whose_bucket_is_missing,
};
use integration_tests::{moto_endpoint, sdk_config};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::store::{s3_client, ObjectStore};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};

fn popularity(staging_bucket: &str, prefix: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("STAGING_BUCKET", staging_bucket)
        .env("TENANT_SECRET_PREFIX", prefix)
        .output()
        .expect("the popularity binary runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_local_fails_while_the_bucket_is_missing_then_delivers_then_has_nothing_to_do() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "cli-redeliver").await;
    publish_synthetic_run(&staging, run_id(), 700, 1_000).await;
    let (prefix, bucket, customer) = tenant_whose_bucket_is_missing(&admin, &staging, "cli-redeliver").await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.as_str()).unwrap();
    let job_key = format!("jobs/s3/{}/acme/default.json", run_id());
    let deliver = s3_deliver_deps(&admin, &staging, tenants(), chrono::Utc::now);
    assert!(handle_deliverer_event(&deliver, event_for_key(&job_key), None).await.is_err(), "no bucket yet");
    let run = run_id().to_string();
    let args = ["redeliver", run.as_str(), "--tenant", "acme", "--local", "--timeout-seconds", "20"];

    let still_missing = popularity(staging.bucket(), &prefix, &args);
    let out = text(&still_missing);
    assert!(!still_missing.status.success(), "{out}");
    assert!(out.contains("re-driven 1 deliveries") && out.contains(&format!("{job_key}")), "{out}");
    assert!(out.contains("failed: ") && out.contains("NoSuchBucket"), "{out}");

    s3_client(&customer).create_bucket().bucket(&bucket).send().await.unwrap();
    let healed = popularity(staging.bucket(), &prefix, &args);
    let out = text(&healed);
    assert!(healed.status.success(), "{out}");
    assert!(out.contains("delivered: 2 objects"), "{out}");
    assert_eq!(keys_under(&customer, &bucket, "in/").await.len(), 2, "part and manifest");
    let status: serde_json::Value =
        serde_json::from_slice(&staging.get(&format!("status/{run}/acme/default.json")).await.unwrap()).unwrap();
    assert_eq!((status["outcome"].as_str(), status["redrives"].as_u64()), (Some("delivered"), Some(2)));

    let nothing = popularity(staging.bucket(), &prefix, &["redeliver", run.as_str(), "--local"]);
    let out = text(&nothing);
    assert!(nothing.status.success(), "{out}");
    assert!(out.contains("nothing needed re-driving (1 deliveries"), "{out}");
}
