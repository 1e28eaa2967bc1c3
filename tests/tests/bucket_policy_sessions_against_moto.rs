//! deliver-s3's sessions, as the AssumeRole requests that open them show
//! (moto evaluates neither session policies nor `aws:PrincipalTag`, so the
//! requests are read through the project's recording proxy in front of
//! moto): an `s3-bucket-policy` delivery writes through a session of our
//! bucket-policy writer role tagged `popularity-tenant=<tenantId>`, on
//! which the customer's bucket policy conditions; every session, the
//! customer's own `s3-role` session too, carries an inline session policy
//! that allows only the three delivery actions on the destination bucket
//! and prefix, and denies our own organization's buckets. Each delivery
//! still arrives whole.

use aws_config::SdkConfig;
use integration_tests::customer::{account_config, create_delivery_role, keys_under};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, unique_tenant_prefix,
};
use integration_tests::fault_proxy::{CallKind, FaultProxy, SeenRequest};
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::config::S3WriterConfig;
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, JobDisposition};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use popularity_reports::tenant::new_external_id;
use serde_json::{json, Value};

const CUSTOMER_ACCOUNT: &str = "444444444444";
const ORGANIZATION: &str = "o-abcdefghij";

/// A run published to a fresh staging bucket, a customer bucket, and the
/// proxy every call of the deliverer goes through.
struct Scene {
    admin: SdkConfig,
    staging: S3Store,
    prefix: String,
    customer: SdkConfig,
    bucket: String,
    proxy: FaultProxy,
}

async fn scene(hint: &str) -> Scene {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, hint).await;
    publish_synthetic_run(&staging, run_id(), 300, 1_000).await;
    let customer = account_config(&admin, CUSTOMER_ACCOUNT).await;
    let bucket = fresh_bucket(&s3_client(&customer), &format!("{hint}-dest")).await;
    let proxy = FaultProxy::start_http(&moto_endpoint());
    Scene { admin, staging, prefix: unique_tenant_prefix(hint), customer, bucket, proxy }
}

impl Scene {
    /// Onboards `secret` as tenant `acme`, fans the run out and delivers
    /// feed `feed` as deliver-s3 would, with `writer` settings, every call
    /// through the proxy. Returns the AssumeRole requests it made.
    async fn deliver(&self, secret: Value, feed: &str, writer: &S3WriterConfig) -> Vec<SeenRequest> {
        create_raw_secret(&self.admin, &format!("{}acme", self.prefix), &secret.to_string()).await;
        let tenants = || SecretsManagerTenants::new(secrets_manager_client(&self.admin), self.prefix.as_str()).unwrap();
        let own = vec![self.staging.bucket().to_owned()];
        let fanout = FanoutDeps { staging: self.staging.clone(), tenants: tenants(), own_buckets: own.clone() };
        fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();

        let through_proxy = sdk_config(&self.proxy.endpoint()).await;
        let deps = DeliverDeps {
            staging: self.staging.clone(),
            tenants: tenants(),
            deliverer: S3Deliverer {
                staging: self.staging.clone(),
                destinations: S3Destinations::new(through_proxy, own).with_writer_settings(writer),
            },
            now: pinned_now,
        };
        let event = event_for_key(&format!("jobs/s3/{}/acme/{feed}.json", run_id()));
        let response = handle_deliverer_event(&deps, event, None).await.unwrap();
        assert_eq!(response.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
        let assume_role = CallKind::new("sts:AssumeRole");
        self.proxy.requests().into_iter().filter(|request| request.kind == assume_role).collect()
    }
}

/// The session policy of `request`, parsed, with the statements that allow
/// and deny.
fn session_policy(request: &SeenRequest) -> Vec<Value> {
    let policy = request.form_value("Policy").expect("AssumeRole carries a session policy");
    let policy: Value = serde_json::from_str(&policy).expect("the session policy is JSON");
    policy["Statement"].as_array().expect("statements").clone()
}

/// Every statement of `statements` limited to the destination
/// `bucket`/`prefix`: the only Allows are the three delivery actions there,
/// and the only Deny is our organization's buckets.
fn assert_limited_to(statements: &[Value], bucket: &str, prefix: &str) {
    let allows: Vec<(Value, Value)> = statements
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| (s["Action"].clone(), s["Resource"].clone()))
        .collect();
    assert_eq!(
        allows,
        [
            (json!(["s3:PutObject", "s3:AbortMultipartUpload"]), json!(format!("arn:aws:s3:::{bucket}/{prefix}*"))),
            (json!("s3:ListBucketMultipartUploads"), json!(format!("arn:aws:s3:::{bucket}"))),
        ],
        "{statements:#?}"
    );
    let denies: Vec<&Value> = statements.iter().filter(|s| s["Effect"] == "Deny").collect();
    assert_eq!(denies.len(), 1, "{statements:#?}");
    assert_eq!(denies[0]["Condition"]["StringEquals"]["aws:ResourceOrgID"], ORGANIZATION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_policy_delivery_writes_through_our_writer_role_tagged_with_the_tenant_and_scoped_to_the_folder() {
    let scene = scene("bp-session").await;
    let writer_role = aws_sdk_iam::Client::new(&scene.admin)
        .create_role()
        .role_name(unique_bucket_name("writer"))
        .assume_role_policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": ["sts:AssumeRole", "sts:TagSession"]}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .role
        .unwrap()
        .arn;
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{}", scene.bucket),
            "region": "us-east-1", "prefix": "in/", "bucketOwnerAccountId": CUSTOMER_ACCOUNT}},
        "feeds": [{"id": "all", "connector": "lake", "reports": ["artist"]}]});
    let writer = S3WriterConfig {
        bucket_policy_writer_role_arn: Some(writer_role.clone()),
        own_organization_id: Some(ORGANIZATION.to_owned()),
    };
    let sessions = scene.deliver(secret, "all", &writer).await;

    assert_eq!(sessions.len(), 1, "one session for the delivery: {sessions:#?}");
    let session = &sessions[0];
    assert_eq!(session.form_value("RoleArn").as_deref(), Some(writer_role.as_str()));
    assert_eq!(session.form_value("Tags.member.1.Key").as_deref(), Some("popularity-tenant"));
    assert_eq!(session.form_value("Tags.member.1.Value").as_deref(), Some("acme"));
    assert_eq!(session.form_value("Tags.member.2.Key"), None, "the tenant tag alone");
    assert_eq!(session.form_value("ExternalId"), None, "our own role: no external id");
    assert_limited_to(&session_policy(session), &scene.bucket, "in/");
    let delivered = keys_under(&scene.customer, &scene.bucket, "in/").await;
    assert!(delivered.iter().any(|key| key.ends_with("_manifest.json")), "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_role_session_carries_the_external_id_and_a_session_policy_limited_to_the_destination() {
    let scene = scene("role-session").await;
    let external_id = new_external_id("acme").unwrap();
    let role =
        create_delivery_role(&scene.customer, &unique_bucket_name("role"), "123456789012", &external_id, &scene.bucket)
            .await;
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {"lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{}", scene.bucket),
            "region": "us-east-1", "prefix": "reports/*weird?/", "roleArn": role, "externalId": external_id}},
        "feeds": [{"id": "all", "connector": "lake", "reports": ["artist"]}]});
    let writer = S3WriterConfig { bucket_policy_writer_role_arn: None, own_organization_id: Some(ORGANIZATION.into()) };
    let sessions = scene.deliver(secret, "all", &writer).await;

    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let session = &sessions[0];
    assert_eq!(session.form_value("RoleArn").as_deref(), Some(role.as_str()));
    assert_eq!(session.form_value("ExternalId").as_deref(), Some(external_id.as_str()));
    assert_eq!(session.form_value("Tags.member.1.Key"), None, "a customer's role gets no tag of ours");
    // `*` and `?` of the prefix are literal characters in the policy, not wildcards.
    assert_limited_to(&session_policy(session), &scene.bucket, "reports/${*}weird${?}/");
    let delivered = keys_under(&scene.customer, &scene.bucket, "reports/*weird?/").await;
    assert!(delivered.iter().any(|key| key.ends_with("_manifest.json")), "{delivered:?}");
}
