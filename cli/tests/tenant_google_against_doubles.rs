//! Keyless Google in the `popularity` binary as an operator runs it:
//! `tenant google-identity` prints a tenant's address, and `tenant add`
//! creates that identity through the IAM double (federating from the
//! operator's own AWS role session on moto) and lets only our deliverers'
//! principal sets impersonate it, before storing the secret; onboarding
//! again changes nothing; and without the deliverers' roles, or without
//! keyless Google for a keyless gcs connector, nothing is stored.

use std::process::{Command, Output};

use integration_tests::customer::assumed_role;
use integration_tests::delivery::{staging_store, unique_tenant_prefix};
use integration_tests::google_identity_double::{principal_set_member, GoogleIdentityDouble, TOKEN_CREATOR_ROLE};
use integration_tests::{create_kms_key, moto_endpoint, sdk_config};
use serde_json::json;

const AUDIENCE: &str =
    "//iam.googleapis.com/projects/161803398874/locations/global/workloadIdentityPools/reports/providers/aws";
const PROJECT: &str = "popularity-tenants";

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn google_identity_prints_the_tenants_address_from_the_tenant_id_and_project() {
    let output = Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["tenant", "google-identity", "acme", "--project", PROJECT])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("pr-acme@{PROJECT}.iam.gserviceaccount.com"));
    let bad = Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(["tenant", "google-identity", "Not A Tenant", "--project", PROJECT])
        .output()
        .unwrap();
    assert!(!bad.status.success() && text(&bad).contains("is not a tenant id"), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_add_creates_the_tenants_google_identity_for_our_deliverers_only_before_storing_the_secret() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let key = create_kms_key(&endpoint).await;
    let staging = staging_store(&admin, "cli-keyless").await;
    let prefix = unique_tenant_prefix("cli-keyless");
    let deliver_gcs = assumed_role(&admin, "cli-deliver-gcs").await.arn;
    let deliver_sheets = assumed_role(&admin, "cli-deliver-sheets").await.arn;
    let operator_role = assumed_role(&admin, "cli-operator").await;
    let (operator, session) = (operator_role.arn.clone(), operator_role.environment());
    let double = GoogleIdentityDouble::start(&endpoint, AUDIENCE, Vec::new());
    double.allow_aws_role(&operator);
    double.allow_admin_role(&operator);
    let external_account = json!({"type": "external_account", "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request", "token_url": double.token_url(),
        "credential_source": {"environment_id": "aws1",
            "regional_cred_verification_url": format!("{endpoint}/?Action=GetCallerIdentity&Version=2011-06-15")}});

    let tenant_file = |tenant: &str, connector: serde_json::Value| {
        let secret = json!({"schemaVersion": 1, "tenantId": tenant, "plan": "standard",
            "connectors": {"feeds": connector}, "feeds": [{"id": "all", "connector": "feeds"}]});
        let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), secret.to_string()).unwrap();
        file
    };
    let add = |file: &std::path::Path, deliverer_roles: Option<String>, keyless: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_popularity"));
        command
            .args(["tenant", "add", file.to_str().unwrap(), "--no-test"])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("STAGING_BUCKET", staging.bucket())
            .env("TENANT_SECRET_PREFIX", &prefix)
            .env("TENANT_SECRETS_KMS_KEY_ID", &key)
            .envs(session.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("GOOGLE_DELIVERER_ROLE_ARNS")
            .env_remove("GOOGLE_EXTERNAL_ACCOUNT_CONFIG")
            .env_remove("GOOGLE_PROJECT_ID");
        if keyless {
            command
                .env("GOOGLE_EXTERNAL_ACCOUNT_CONFIG", external_account.to_string())
                .env("GOOGLE_PROJECT_ID", PROJECT)
                .env("GOOGLE_IAM_ENDPOINT", double.endpoint());
        }
        if let Some(roles) = deliverer_roles {
            command.env("GOOGLE_DELIVERER_ROLE_ARNS", roles);
        }
        command.output().unwrap()
    };
    let secrets = aws_sdk_secretsmanager::Client::new(&admin);
    let stored = |tenant: String| {
        let secrets = secrets.clone();
        let name = format!("{prefix}{tenant}");
        async move { secrets.describe_secret().secret_id(name).send().await.is_ok() }
    };
    let roles = format!("{deliver_gcs},{deliver_sheets}");
    let keyless_gcs = json!({"type": "gcs", "bucket": "acme-feeds", "prefix": "popularity/"});

    // A keyless gcs tenant: its identity is created, our two deliverers
    // alone may impersonate it, then the secret is stored.
    let acme = tenant_file("acme", keyless_gcs.clone());
    let output = add(acme.path(), Some(roles.clone()), true);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let address = format!("pr-acme@{PROJECT}.iam.gserviceaccount.com");
    assert!(out.contains(&format!("google identity {address}")), "{out}");
    assert!(out.contains(&format!("created secret {prefix}acme")), "{out}");
    assert!(double.service_account(&address).is_some(), "the account exists in our project");
    let policy = double.iam_policy(&address).unwrap();
    let members = |policy: &serde_json::Value| -> Vec<String> {
        let mut members: Vec<String> = policy["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["role"] == TOKEN_CREATOR_ROLE)
            .flat_map(|b| b["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()))
            .collect();
        members.sort();
        members
    };
    let mut expected = vec![
        principal_set_member(AUDIENCE, &deliver_gcs).unwrap(),
        principal_set_member(AUDIENCE, &deliver_sheets).unwrap(),
    ];
    expected.sort();
    assert_eq!(members(&policy), expected);
    assert!(!out.contains("ya29."), "no token is printed: {out}");

    // Onboarding again: the same account, the same bindings, a new version.
    let again = add(acme.path(), Some(roles.clone()), true);
    assert!(
        again.status.success() && text(&again).contains(&format!("updated secret {prefix}acme")),
        "{}",
        text(&again)
    );
    assert_eq!(members(&double.iam_policy(&address).unwrap()), expected);

    // Without our deliverers' roles no one could act as the identity:
    // nothing is stored.
    let beta = tenant_file(
        "beta",
        json!({"type": "google-sheets",
        "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/1BetaSheetBetaSheetBetaSheet/edit", "maxRows": 10}),
    );
    let output = add(beta.path(), None, true);
    let out = text(&output);
    assert!(!output.status.success() && out.contains("GOOGLE_DELIVERER_ROLE_ARNS"), "{out}");
    assert!(!stored("beta".to_owned()).await, "nothing was stored: {out}");

    // A keyless gcs connector where keyless Google is not configured.
    let gamma = tenant_file("gamma", json!({"type": "gcs", "bucket": "gamma-feeds", "prefix": ""}));
    let output = add(gamma.path(), Some(roles.clone()), false);
    let out = text(&output);
    assert!(!output.status.success() && out.contains("keyless Google is not configured"), "{out}");
    assert!(!stored("gamma".to_owned()).await, "nothing was stored: {out}");
}
