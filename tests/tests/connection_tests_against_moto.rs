//! Connection tests (docs/design.md, "Connection tests") of the S3 and email connectors against
//! moto. The S3 probe runs under IAM enforcement (the second server), once
//! per grant a customer may give: the three grants of the
//! popularity-reports page pass and leave nothing; without
//! `s3:AbortMultipartUpload`, or with `s3:PutObject` only, the test passes
//! with a warning naming what is missing and the result says what was left
//! behind; without `s3:PutObject` it fails naming it; keys that may list
//! every bucket pass with a warning. The email probe sends exactly one
//! message, also when its request event comes twice.

use integration_tests::customer::{
    account_admin, account_config, admin_user, create_user_with_grants, enforce_iam, lock_auth_server,
    open_multipart_uploads, sent_emails, stop_enforcing_iam,
};
use integration_tests::delivery::{create_raw_secret, pinned_now, staging_store, unique_tenant_prefix};
use integration_tests::{fresh_bucket, moto_auth_endpoint, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connection_probe::{ConnectionTestRequest, ConnectionTestResult};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{connection_test_key, DeliverDeps, Deliverer, JobKind};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const SENDER: &str = "reports@popularity.example";

/// Writes the request object for `connector` of tenant `acme` and runs the
/// deliverer on its event, as the S3 notification would; returns the result.
async fn run_probe<D: Deliverer>(
    deps: &DeliverDeps<S3Store, SecretsManagerTenants, D>,
    request_id: &str,
    connector: &str,
) -> ConnectionTestResult {
    let key = connection_test_key(deps.deliverer.kind(), request_id, "acme", connector);
    let request = ConnectionTestRequest {
        request_id: request_id.into(),
        tenant_id: "acme".into(),
        connector: connector.into(),
        requested_at: pinned_now(),
        secret_version_stage: None,
    };
    deps.staging.put(&key, serde_json::to_vec(&request).unwrap().into(), "application/json").await.unwrap();
    let event = integration_tests::delivery::event_for_key(&key);
    let response = handle_deliverer_event(deps, event, None).await.unwrap();
    let result_key = &response.connection_tests[0].result_key;
    serde_json::from_slice(&deps.staging.get(result_key).await.unwrap()).unwrap()
}

fn check<'r>(
    result: &'r ConnectionTestResult,
    name: &str,
) -> &'r popularity_reports::delivery::connection_probe::ConnectionCheck {
    result.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} check in {result:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_probe_exercises_each_grant_and_says_what_is_missing_and_what_it_left() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;
    let admin = admin_user(&endpoint).await;
    let customer = account_config(&admin, "444444444444").await;
    let customer_admin = account_admin(&customer).await;
    let bucket = fresh_bucket(&s3_client(&customer_admin), "probe-dest").await;
    let object = ["s3:PutObject", "s3:AbortMultipartUpload"];
    let listing = ["s3:ListBucket", "s3:ListBucketMultipartUploads"];
    let users: [(&str, &[&str], &[&str], &[&str]); 5] = [
        ("three-grants", &object, &listing, &[]),
        ("no-abort", &["s3:PutObject"], &listing, &[]),
        ("put-only", &["s3:PutObject"], &[], &[]),
        ("no-put", &["s3:AbortMultipartUpload"], &listing, &[]),
        ("list-all", &object, &listing, &["s3:ListAllMyBuckets"]),
    ];
    let mut connectors = serde_json::Map::new();
    let mut secrets = Vec::new();
    for (name, objects, buckets, account) in users {
        let user = unique_bucket_name(name);
        let (key_id, secret) =
            create_user_with_grants(&customer_admin, &user, &bucket, objects, buckets, account).await;
        connectors.insert(
            name.into(),
            json!({"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
                "prefix": format!("{name}/"), "accessKeyId": key_id, "secretAccessKey": secret}),
        );
        secrets.push(secret);
    }
    let staging = staging_store(&admin, "probe-staging").await;
    let prefix = unique_tenant_prefix("probe-tenants");
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": connectors, "feeds": []});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.as_str()).unwrap(),
        deliverer: S3Deliverer {
            staging: staging.clone(),
            destinations: S3Destinations::new(admin.clone(), vec![staging.bucket().to_owned()]),
        },
        now: pinned_now,
    };

    enforce_iam(&endpoint, 0).await;
    let mut results = std::collections::BTreeMap::new();
    for (name, ..) in users {
        results.insert(name, run_probe(&deps, "onboarding-1", name).await);
    }
    stop_enforcing_iam(&endpoint).await;
    let open = open_multipart_uploads(&customer_admin, &bucket).await;
    let open_under =
        |name: &str| open.iter().filter(|u| u.key.starts_with(&format!("{name}/_connection-test/"))).count();

    let three = &results["three-grants"];
    assert!(three.ok && three.warnings.is_empty() && three.left_behind.is_empty(), "{three:?}");
    assert!(three.checks.iter().all(|c| c.ok), "{three:?}");
    assert_eq!(open_under("three-grants"), 0, "nothing left behind");

    let no_abort = &results["no-abort"];
    assert!(no_abort.ok, "only s3:PutObject is required: {no_abort:?}");
    assert!(!check(no_abort, "s3:AbortMultipartUpload").ok);
    assert!(no_abort.warnings.iter().any(|w| w.contains("s3:AbortMultipartUpload")), "{no_abort:?}");
    assert!(no_abort.left_behind[0].contains("open multipart upload"), "{no_abort:?}");
    assert_eq!(open_under("no-abort"), 1, "the result says what was left, and it is there");

    let put_only = &results["put-only"];
    assert!(put_only.ok, "{put_only:?}");
    for missing in ["s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload"] {
        assert!(!check(put_only, missing).ok, "{missing}: {put_only:?}");
        assert!(put_only.warnings.iter().any(|w| w.contains(missing)), "{missing}: {put_only:?}");
    }
    assert_eq!(put_only.left_behind.len(), 1, "{put_only:?}");
    assert_eq!(open_under("put-only"), 1);

    let no_put = &results["no-put"];
    assert!(!no_put.ok, "{no_put:?}");
    let put = check(no_put, "s3:PutObject");
    assert!(!put.ok && put.detail.contains("s3:PutObject is not granted"), "{put:?}");
    assert_eq!(open_under("no-put"), 0);

    let list_all = &results["list-all"];
    assert!(list_all.ok, "{list_all:?}");
    assert!(list_all.warnings.iter().any(|w| w.contains("list every bucket")), "{list_all:?}");
    assert_eq!(results["three-grants"].warnings.len(), 0, "the narrow keys get no such warning");

    for result in results.values() {
        let text = serde_json::to_string(result).unwrap();
        assert!(secrets.iter().all(|s| !text.contains(s.as_str())), "a credential in a result");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_probe_sends_one_message_and_a_missing_connector_is_named() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, "probe-email").await;
    let prefix = unique_tenant_prefix("probe-email");
    let recipient = format!("{}@acme.example", unique_bucket_name("probe"));
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "trial",
        "connectors": {"inbox": {"type": "email", "recipients": [recipient]}}, "feeds": []});
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&admin), prefix.as_str()).unwrap(),
        deliverer: EmailDeliverer {
            staging: staging.clone(),
            signer: S3LinkSigner::new(admin.clone(), staging.bucket(), None, 604_800),
            mailer: SesMailer::new(&admin),
            sender: SENDER.to_owned(),
            now: chrono::Utc::now,
        },
        now: pinned_now,
    };
    let result = run_probe(&deps, "onboarding-1", "inbox").await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.connector_type.as_deref(), Some("email"));
    // The same request again (a repeated event): answered already, no second message.
    let key = connection_test_key(JobKind::Email, "onboarding-1", "acme", "inbox");
    let again = handle_deliverer_event(&deps, integration_tests::delivery::event_for_key(&key), None).await.unwrap();
    assert_eq!(again.connection_tests[0].ok, None);
    let sent: Vec<_> = sent_emails(&endpoint).await.into_iter().filter(|m| m.is_to(&recipient)).collect();
    assert_eq!(sent.len(), 1, "one test message");
    assert!(sent[0].text().contains("connection test") || sent[0].raw_data.is_some());

    let missing = run_probe(&deps, "onboarding-2", "nowhere").await;
    assert!(!missing.ok);
    assert!(check(&missing, "tenant secret").detail.contains("no connector \"nowhere\""), "{missing:?}");
}
