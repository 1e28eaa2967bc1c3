//! `popularity tenant add` and `popularity tenant test` as an operator runs
//! them, against moto: `add` stores the secret and tests every connector
//! (here in this process, `--local`), printing each check; `test` can test
//! one connector; a connector that cannot work fails with exit status 1 and
//! names why; without a deployed deliverer the wait ends with a clear
//! message instead of hanging; `add` stores under the stack's KMS key
//! (`TENANT_SECRETS_KMS_KEY_ID` or `--kms-key-id`) and stores nothing
//! without one.

use std::process::{Command, Output};

use integration_tests::delivery::{staging_store, unique_tenant_prefix};
use integration_tests::{create_kms_key, fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::store::s3_client;
use serde_json::json;

const SENDER: &str = "reports@popularity.example";

/// The stack's tenant secrets key of these tests, made on moto once.
static STACK_KEY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// The key's ARN; call before [`popularity_command`], which passes it as
/// `TENANT_SECRETS_KMS_KEY_ID` as a deployed operator's shell would.
async fn stack_key() -> &'static str {
    STACK_KEY.get_or_init(|| async { create_kms_key(&moto_endpoint()).await }).await
}

/// `popularity <args>` with the deliverers' environment pointed at moto.
fn popularity_command(staging_bucket: &str, prefix: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_popularity"));
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("STAGING_BUCKET", staging_bucket)
        .env("TENANT_SECRET_PREFIX", prefix)
        .env("SES_SENDER", SENDER)
        .env_remove("LINK_SIGNER_SECRET")
        .env_remove("TENANT_SECRETS_KMS_KEY_ID");
    if let Some(key) = STACK_KEY.get() {
        command.env("TENANT_SECRETS_KMS_KEY_ID", key);
    }
    command
}

fn popularity(staging_bucket: &str, prefix: &str, args: &[&str]) -> Output {
    popularity_command(staging_bucket, prefix, args).output().expect("the popularity binary runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_stores_the_tenant_and_tests_each_connector_and_test_names_a_failure() {
    stack_key().await;
    let admin = sdk_config(&moto_endpoint()).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, "cli-tenant").await;
    let destination = fresh_bucket(&s3_client(&admin), "cli-dest").await;
    let prefix = unique_tenant_prefix("cli-tenant");
    let secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let tenant = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {
            "inbox": {"type": "email", "recipients": [format!("{}@acme.example", unique_bucket_name("cli"))]},
            "lake": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{destination}"), "region": "us-east-1",
                     "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret_key},
            "gone": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{}", unique_bucket_name("missing")),
                     "region": "us-east-1", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret_key}
        },
        "feeds": [{"id": "all", "connector": "lake"}]});
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), tenant.to_string()).unwrap();
    let bucket = staging.bucket().to_owned();

    let added = popularity(&bucket, &prefix, &["tenant", "add", file.path().to_str().unwrap(), "--local"]);
    let out = text(&added);
    assert!(out.contains(&format!("created secret {prefix}acme")), "{out}");
    assert!(out.contains("inbox [email]: OK") && out.contains("lake [s3-keys]: OK"), "{out}");
    assert!(out.contains("gone [s3-keys]: FAILED") && out.contains("NoSuchBucket"), "{out}");
    assert!(!added.status.success(), "a failed connection test fails the command: {out}");
    assert!(!out.contains(secret_key), "a credential was printed");

    let one = popularity(&bucket, &prefix, &["tenant", "test", "acme", "--connector", "lake", "--local"]);
    let out = text(&one);
    assert!(one.status.success(), "{out}");
    assert!(out.contains("s3:PutObject") && !out.contains("inbox"), "only the connector asked for: {out}");

    // Nothing answers without the deployed functions: a clear message, not a hang.
    let waited =
        popularity(&bucket, &prefix, &["tenant", "test", "acme", "--connector", "lake", "--timeout-seconds", "1"]);
    let out = text(&waited);
    assert!(!waited.status.success());
    assert!(out.contains("no result at") && out.contains("deliver-s3") && out.contains("--local"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheets_identity_prints_our_service_accounts_address_and_never_the_key() {
    let admin = sdk_config(&moto_endpoint()).await;
    let account =
        integration_tests::google_keys::TestServiceAccount::generate("popularity@ops-cli.iam.gserviceaccount.com");
    let secret_name = format!("{}google-key", unique_tenant_prefix("cli-identity").replace("/tenants/", "/ops/"));
    integration_tests::delivery::create_raw_secret(&admin, &secret_name, &account.key_json_string()).await;
    let output = Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["sheets-identity"])
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("GOOGLE_SERVICE_ACCOUNT_SECRET", &secret_name)
        .output()
        .unwrap();
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), account.client_email);
    assert!(!out.contains("PRIVATE KEY") && !out.contains(&account.private_key_id), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ids_are_fresh_and_a_second_tenant_reusing_one_or_a_destination_is_refused_storing_nothing() {
    stack_key().await;
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "cli-conflicts").await;
    let prefix = unique_tenant_prefix("cli-conflicts");
    let bucket = staging.bucket().to_owned();
    let external_id = |tenant: &str| {
        let output = popularity(&bucket, &prefix, &["tenant", "external-id", tenant]);
        assert!(output.status.success(), "{}", text(&output));
        let printed = String::from_utf8(output.stdout).unwrap();
        assert_eq!(printed.lines().count(), 1, "one line: {printed:?}");
        printed.trim().to_owned()
    };
    let (first, second) = (external_id("acme"), external_id("acme"));
    assert!(first.len() >= 16 && first.starts_with("pr-acme-"), "{first}");
    assert_ne!(first, second, "a fresh value each time");

    let role = |tenant: &str, bucket: &str, external_id: &str| {
        json!({"schemaVersion": 1, "tenantId": tenant, "plan": "standard",
            "connectors": {"lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{bucket}"),
                "region": "us-east-1", "roleArn": "arn:aws:iam::222222222222:role/popularity-delivery",
                "externalId": external_id}},
            "feeds": [{"id": "all", "connector": "lake"}]})
    };
    let add = |secret: serde_json::Value| {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), secret.to_string()).unwrap();
        popularity(&bucket, &prefix, &["tenant", "add", file.path().to_str().unwrap(), "--no-test"])
    };
    let acme = add(role("acme", "acme-data", &first));
    assert!(acme.status.success(), "{}", text(&acme));

    let copycat = add(role("beta", "beta-data", &first));
    let out = text(&copycat);
    assert!(!copycat.status.success());
    assert!(out.contains("connectors.lake.externalId") && out.contains("is not one of ours"), "{out}");
    assert!(!out.contains(&first), "the externalId itself is not printed: {out}");

    let overlapping = add(role("gamma", "acme-data", &external_id("gamma")));
    let out = text(&overlapping);
    assert!(!overlapping.status.success());
    assert!(out.contains("writes to s3://acme-data/, where another tenant's feed already delivers"), "{out}");
    assert!(!out.contains("acme\""), "the first tenant is not named: {out}");

    let client = popularity_reports::tenant::directory::secrets_manager_client(&admin);
    for refused in ["beta", "gamma"] {
        let found = client.describe_secret().secret_id(format!("{prefix}{refused}")).send().await;
        assert!(found.is_err(), "{refused} was stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_stores_only_under_the_stacks_kms_key_and_moves_an_older_secret_under_it() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "cli-kms").await;
    let prefix = unique_tenant_prefix("cli-kms");
    let bucket = staging.bucket().to_owned();
    let key_arn = stack_key().await.to_owned();
    let client = popularity_reports::tenant::directory::secrets_manager_client(&admin);
    let tenant_json = |tenant: &str, plan: &str| {
        json!({"schemaVersion": 1, "tenantId": tenant, "plan": plan,
            "connectors": {"inbox": {"type": "email", "recipients": [format!("data@{tenant}.example")]}},
            "feeds": [{"id": "all", "connector": "inbox"}]})
        .to_string()
    };
    let tenant_file = |tenant: &str, plan: &str| {
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), tenant_json(tenant, plan)).unwrap();
        file
    };
    let stored = |tenant: &str| {
        let client = client.clone();
        let name = format!("{prefix}{tenant}");
        async move {
            let described = client.describe_secret().secret_id(&name).send().await.unwrap();
            let value = client.get_secret_value().secret_id(&name).send().await.unwrap();
            let plan = serde_json::from_str::<serde_json::Value>(value.secret_string().unwrap()).unwrap()["plan"]
                .as_str()
                .unwrap()
                .to_owned();
            (described.kms_key_id().map(str::to_owned), plan)
        }
    };
    let run = |command: &mut Command| {
        let output = command.output().expect("the popularity binary runs");
        assert!(output.status.success(), "{}", text(&output));
        text(&output)
    };

    // From the variable, as an operator's shell has it: created under the key.
    let keyed = tenant_file("keyed", "trial");
    let out =
        run(&mut popularity_command(&bucket, &prefix, &["tenant", "add", keyed.path().to_str().unwrap(), "--no-test"]));
    assert!(out.contains(&format!("created secret {prefix}keyed")), "{out}");
    assert_eq!(stored("keyed").await, (Some(key_arn.clone()), "trial".to_owned()));

    // Without a key: refused before anything is written.
    let plain = tenant_file("plain", "trial");
    let mut command =
        popularity_command(&bucket, &prefix, &["tenant", "add", plain.path().to_str().unwrap(), "--no-test"]);
    let refused = command.env_remove("TENANT_SECRETS_KMS_KEY_ID").output().unwrap();
    let out = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(out.contains("nothing was stored") && out.contains("TENANT_SECRETS_KMS_KEY_ID"), "{out}");
    assert!(client.describe_secret().secret_id(format!("{prefix}plain")).send().await.is_err(), "plain was stored");

    // A secret stored before the key was required (the account's default
    // key) moves under it with the next add (UpdateSecret with the key).
    client
        .create_secret()
        .name(format!("{prefix}older"))
        .secret_string(tenant_json("older", "trial"))
        .send()
        .await
        .unwrap();
    assert_eq!(stored("older").await, (None, "trial".to_owned()));
    let older_again = tenant_file("older", "standard");
    let out = run(&mut popularity_command(
        &bucket,
        &prefix,
        &["tenant", "add", older_again.path().to_str().unwrap(), "--no-test", "--kms-key-id", &key_arn],
    ));
    assert!(out.contains(&format!("updated secret {prefix}older")), "{out}");
    assert_eq!(stored("older").await, (Some(key_arn.clone()), "standard".to_owned()));

    // A key that is not a KMS key ARN: named, nothing stored.
    let typo = tenant_file("typo", "trial");
    let refused = popularity(
        &bucket,
        &prefix,
        &["tenant", "add", typo.path().to_str().unwrap(), "--no-test", "--kms-key-id", "alias/tenant-secrets"],
    );
    let out = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(out.contains("\"alias/tenant-secrets\"") && out.contains("TenantSecretsKeyArn"), "{out}");
    assert!(client.describe_secret().secret_id(format!("{prefix}typo")).send().await.is_err(), "typo was stored");
}
