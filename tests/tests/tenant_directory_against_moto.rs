//! The Secrets Manager tenant directory against moto's server: listing under
//! a prefix, batched reads past one page and one batch, onboarding writes,
//! and that no secret value leaks into errors or `Debug` output. Each test
//! works under its own prefix because all tests share one server.

use std::time::Duration;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use aws_sdk_secretsmanager::Client;
use integration_tests::{moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::tenant::directory::{
    put_tenant_secret, DirectoryError, SecretsManagerTenants, TenantDirectory, TenantEntryError,
};
use popularity_reports::tenant::{Connector, Plan};
use tokio::task::JoinSet;

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

async fn secrets_client() -> Client {
    Client::new(&sdk_config(&moto_endpoint()).await)
}

/// `popularity-reports-test-<pid>-<n>-<nanos>/`: the root under which one
/// test puts its `tenants/` prefix and any decoys.
fn unique_root() -> String {
    format!("{}/", unique_bucket_name("popularity-reports-test"))
}

fn email_tenant(tenant_id: &str, plan: &str) -> String {
    serde_json::json!({
        "schemaVersion": 1, "tenantId": tenant_id, "plan": plan, "enabled": true,
        "connectors": {"inbox": {"type": "email", "recipients": [format!("data@{tenant_id}.example")]}},
        "feeds": [{"id": "all", "connector": "inbox"}]
    })
    .to_string()
}

fn keys_tenant(tenant_id: &str) -> String {
    serde_json::json!({
        "schemaVersion": 1, "tenantId": tenant_id, "plan": "standard",
        "connectors": {"keys": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::acme-keys", "region": "us-east-1",
                                "prefix": "popularity/", "accessKeyId": ACCESS_KEY_ID,
                                "secretAccessKey": SECRET_ACCESS_KEY}},
        "feeds": [{"id": "lake", "connector": "keys"}]
    })
    .to_string()
}

async fn create_secret(client: &Client, name: &str, value: &str) {
    if let Err(e) = client.create_secret().name(name).secret_string(value).send().await {
        panic!("could not create secret {name} in the emulator: {}", DisplayErrorContext(&e));
    }
}

#[tokio::test]
async fn load_tenants_returns_every_secret_under_the_prefix_and_only_those() {
    let client = secrets_client().await;
    let root = unique_root();
    let prefix = format!("{root}tenants/");

    create_secret(&client, &format!("{prefix}acme"), &email_tenant("acme", "standard")).await;
    create_secret(&client, &format!("{prefix}globex"), &email_tenant("globex", "enterprise")).await;
    create_secret(&client, &format!("{prefix}keys"), &keys_tenant("keys")).await;
    // Invalid: the tenantId does not match the name; a wrong plan and field.
    create_secret(&client, &format!("{prefix}initech"), &email_tenant("umbrella", "standard")).await;
    create_secret(&client, &format!("{prefix}hooli"), r#"{"schemaVersion": 1, "tenantId": "hooli", "plan": "gold"}"#)
        .await;
    // Decoys: a sibling prefix that shares the leading characters, and one
    // that differs only in case.
    create_secret(&client, &format!("{root}tenants-old/acme"), &email_tenant("acme", "standard")).await;
    create_secret(&client, &format!("{root}Tenants/acme"), &email_tenant("acme", "standard")).await;

    let directory = SecretsManagerTenants::new(client, &prefix).unwrap();
    let entries = directory.load_tenants().await.unwrap();

    let names: Vec<&str> = entries.iter().map(|e| e.tenant_id_from_name.as_str()).collect();
    assert_eq!(names, ["acme", "globex", "hooli", "initech", "keys"]);
    for entry in &entries {
        assert_eq!(entry.secret_name, format!("{prefix}{}", entry.tenant_id_from_name));
    }

    let acme = entries[0].config.as_ref().unwrap();
    assert_eq!((acme.tenant_id.as_str(), acme.plan), ("acme", Plan::Standard));
    assert_eq!(entries[1].config.as_ref().unwrap().plan, Plan::Enterprise);
    let keys = entries[4].config.as_ref().unwrap();
    match &keys.connectors["keys"] {
        Connector::S3Keys(connector) => {
            assert_eq!(connector.secret_access_key.expose_secret(), SECRET_ACCESS_KEY);
            assert_eq!(connector.destination.bucket, "acme-keys");
        }
        other => panic!("expected an s3-keys connector, got {other:?}"),
    }

    let hooli = entries[2].config.as_ref().unwrap_err();
    assert!(matches!(hooli, TenantEntryError::Invalid(_)), "{hooli:?}");
    let paths: Vec<&str> = hooli.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"plan"), "{hooli}");
    assert!(paths.contains(&"connectors"), "{hooli}");

    let initech = entries[3].config.as_ref().unwrap_err();
    assert_eq!(initech.len(), 1, "{initech}");
    assert_eq!(initech.errors()[0].path, "tenantId");
    assert!(initech.to_string().contains("does not match the secret name suffix \"initech\""), "{initech}");
}

#[tokio::test]
async fn load_tenants_reads_past_one_list_page_and_one_batch() {
    let client = secrets_client().await;
    let prefix = format!("{}tenants/", unique_root());
    let tenant_ids: Vec<String> = (0..45).map(|i| format!("tenant-{i:02}")).collect();

    let mut creating = JoinSet::new();
    for tenant_id in &tenant_ids {
        let (client, name, value) = (client.clone(), format!("{prefix}{tenant_id}"), email_tenant(tenant_id, "trial"));
        creating.spawn(async move { create_secret(&client, &name, &value).await });
    }
    while let Some(done) = creating.join_next().await {
        done.unwrap();
    }

    // The emulator really pages at 10, so the directory must follow tokens.
    let name_filter = Filter::builder().key(FilterNameStringType::Name).values(&prefix).build();
    let first_page = client.list_secrets().filters(name_filter).max_results(10).send().await.unwrap();
    assert_eq!(first_page.secret_list().len(), 10);
    assert!(first_page.next_token().is_some());

    // 45 names: 5 ListSecrets pages of 10, and 3 BatchGetSecretValue calls.
    let directory = SecretsManagerTenants::new(client, &prefix).unwrap().with_list_page_size(10);
    let entries = directory.load_tenants().await.unwrap();

    let names: Vec<&str> = entries.iter().map(|e| e.tenant_id_from_name.as_str()).collect();
    assert_eq!(names, tenant_ids);
    for entry in &entries {
        let config = entry.config.as_ref().unwrap_or_else(|e| panic!("{}: {e}", entry.secret_name));
        assert_eq!(config.tenant_id, entry.tenant_id_from_name);
    }
}

#[tokio::test]
async fn put_tenant_secret_creates_then_updates() {
    let client = secrets_client().await;
    let prefix = format!("{}tenants/", unique_root());

    let first = put_tenant_secret(&client, &prefix, &email_tenant("acme", "trial"), "acme").await.unwrap();
    assert!(first.created);
    assert_eq!(first.secret_name, format!("{prefix}acme"));

    let second = put_tenant_secret(&client, &prefix, &email_tenant("acme", "enterprise"), "acme").await.unwrap();
    assert!(!second.created);
    assert_eq!(second.secret_name, first.secret_name);

    let entries = SecretsManagerTenants::new(client.clone(), &prefix).unwrap().load_tenants().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].config.as_ref().unwrap().plan, Plan::Enterprise);

    // An invalid value is refused before anything is written.
    let refused = put_tenant_secret(&client, &prefix, &email_tenant("globex", "gold"), "globex").await.unwrap_err();
    assert!(matches!(refused, DirectoryError::InvalidSecret { .. }), "{refused:?}");
    assert!(refused.to_string().contains("plan"), "{refused}");
    let entries = SecretsManagerTenants::new(client, &prefix).unwrap().load_tenants().await.unwrap();
    assert_eq!(entries.len(), 1);
}

#[tokio::test]
async fn a_binary_secret_is_an_entry_with_an_error() {
    let client = secrets_client().await;
    let prefix = format!("{}tenants/", unique_root());
    create_secret(&client, &format!("{prefix}acme"), &email_tenant("acme", "standard")).await;
    client
        .create_secret()
        .name(format!("{prefix}blob"))
        .secret_binary(Blob::new(email_tenant("blob", "standard")))
        .send()
        .await
        .unwrap();

    let entries = SecretsManagerTenants::new(client, &prefix).unwrap().load_tenants().await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[0].config.is_ok());
    let blob = entries[1].config.as_ref().unwrap_err();
    assert!(matches!(blob, TenantEntryError::Unreadable(_)), "{blob:?}");
    assert!(blob.to_string().contains("SecretString"), "{blob}");
}

#[tokio::test]
async fn secret_values_appear_in_no_error_and_no_debug_output() {
    let client = secrets_client().await;
    let prefix = format!("{}tenants/", unique_root());
    put_tenant_secret(&client, &prefix, &keys_tenant("keys"), "keys").await.unwrap();
    // Invalid, but with a valid secret key in it: the errors must not echo it.
    let broken = keys_tenant("broken").replace("\"plan\":\"standard\"", "\"plan\":\"gold\"");
    assert!(broken.contains("gold") && broken.contains(SECRET_ACCESS_KEY));
    create_secret(&client, &format!("{prefix}broken"), &broken).await;

    let directory = SecretsManagerTenants::new(client.clone(), &prefix).unwrap();
    let entries = directory.load_tenants().await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries[0].config.is_err() && entries[1].config.is_ok());
    let debug = format!("{entries:?} {directory:?}");
    assert!(!debug.contains(SECRET_ACCESS_KEY), "{debug}");
    assert!(!debug.contains(ACCESS_KEY_ID), "{debug}");
    let shown = entries[0].config.as_ref().unwrap_err().to_string();
    assert!(!shown.contains(SECRET_ACCESS_KEY), "{shown}");

    // Refused writes.
    let refused = put_tenant_secret(&client, &prefix, &broken, "broken").await.unwrap_err();
    for text in [refused.to_string(), format!("{refused:?}")] {
        assert!(!text.contains(SECRET_ACCESS_KEY), "{text}");
    }

    // A failed SDK call names the operation and the prefix.
    let unreachable = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:9")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new("t", "t", None, None, "test"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(aws_config::timeout::TimeoutConfig::builder().operation_timeout(Duration::from_secs(5)).build())
        .load()
        .await;
    let offline = SecretsManagerTenants::new(Client::new(&unreachable), &prefix).unwrap();
    let error = offline.load_tenants().await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("ListSecrets") && text.contains(&prefix), "{text}");
    let error = put_tenant_secret(&Client::new(&unreachable), &prefix, &keys_tenant("keys"), "keys").await.unwrap_err();
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(text.contains("CreateSecret") && text.contains(&format!("{prefix}keys")), "{text}");
        assert!(!text.contains(SECRET_ACCESS_KEY), "{text}");
    }
}

#[tokio::test]
async fn a_secret_scheduled_for_deletion_counts_as_deleted_when_listed_and_when_read_alone() {
    let client = secrets_client().await;
    let prefix = format!("{}tenants/", unique_root());
    create_secret(&client, &format!("{prefix}acme"), &email_tenant("acme", "standard")).await;
    let leaving = format!("{prefix}leaving");
    create_secret(&client, &leaving, &email_tenant("leaving", "standard")).await;
    client.delete_secret().secret_id(&leaving).recovery_window_in_days(7).send().await.unwrap();

    // What the service shows of such a secret: a DeletedDate, and reads refused.
    let described = client.describe_secret().secret_id(&leaving).send().await.unwrap();
    assert!(described.deleted_date().is_some());
    let refused = client.get_secret_value().secret_id(&leaving).send().await.unwrap_err();
    let refused = refused.into_service_error();
    assert!(refused.is_invalid_request_exception(), "{refused:?}");
    assert!(DisplayErrorContext(&refused).to_string().contains("marked deleted"), "{refused:?}");

    let directory = SecretsManagerTenants::new(client, &prefix).unwrap();
    assert_eq!(directory.load_tenant("leaving").await.unwrap(), None, "a deliverer skips it");
    assert!(directory.load_tenant("acme").await.unwrap().is_some());
    let entries = directory.load_tenants().await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.tenant_id_from_name.as_str()).collect();
    assert_eq!(names, ["acme"], "fanout does not see it");
}

#[tokio::test]
async fn with_the_stacks_key_required_a_secret_under_any_other_key_is_refused_unread_naming_both_keys() {
    let client = secrets_client().await;
    let prefix = format!("{}tenants/", unique_root());
    let stack_key = integration_tests::create_kms_key(&moto_endpoint()).await;
    let other_key = integration_tests::create_kms_key(&moto_endpoint()).await;
    client
        .create_secret()
        .name(format!("{prefix}acme"))
        .secret_string(email_tenant("acme", "standard"))
        .kms_key_id(&stack_key)
        .send()
        .await
        .unwrap();
    create_secret(&client, &format!("{prefix}defaulted"), &email_tenant("defaulted", "standard")).await;
    client
        .create_secret()
        .name(format!("{prefix}elsewhere"))
        .secret_string(email_tenant("elsewhere", "standard"))
        .kms_key_id(&other_key)
        .send()
        .await
        .unwrap();

    let directory =
        SecretsManagerTenants::new(client.clone(), &prefix).unwrap().requiring_kms_key(Some(stack_key.clone()));
    let entries = directory.load_tenants().await.unwrap();
    let by_name = |tenant: &str| entries.iter().find(|e| e.tenant_id_from_name == tenant).unwrap().clone();
    assert!(by_name("acme").config.is_ok(), "under the stack's key: read");
    let defaulted = by_name("defaulted").config.unwrap_err().describe("defaulted");
    assert!(defaulted.contains("default key aws/secretsmanager") && defaulted.contains(&stack_key), "{defaulted}");
    let elsewhere = by_name("elsewhere").config.unwrap_err().describe("elsewhere");
    assert!(elsewhere.contains(&other_key) && elsewhere.contains("TENANT_SECRETS_KMS_KEY_ID"), "{elsewhere}");

    // One tenant, as a deliverer reads it (DescribeSecret, then the value).
    assert!(directory.load_tenant("acme").await.unwrap().unwrap().config.is_ok());
    let refused = directory.load_tenant("defaulted").await.unwrap().unwrap().config.unwrap_err().describe("d");
    assert!(refused.contains("popularity tenant add"), "{refused}");
    assert_eq!(directory.load_tenant("nobody").await.unwrap(), None);

    // Without the requirement (local runs), every key is read.
    let any_key = SecretsManagerTenants::new(client, &prefix).unwrap().load_tenants().await.unwrap();
    assert!(any_key.iter().all(|entry| entry.config.is_ok()), "{any_key:?}");
}
