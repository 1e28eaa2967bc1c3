//! The self-service API through its real router against moto: Cognito's
//! tokens (moto's user pools, ID tokens and JWKS), tenant secrets in
//! Secrets Manager, the staging bucket in S3. Every answer is checked
//! against the OpenAPI document the console serves.
//!
//! Needs `MOTO_ENDPOINT` (see `integration_tests::moto_endpoint`). Each test
//! has its own user pool, tenant secret prefix and staging bucket.

use std::sync::Arc;

use aws_config::SdkConfig;
use base64::Engine as _;
use integration_tests::console::{add_user, console_app, console_config, fresh_user_pool, serve, ConsoleClient};
use integration_tests::delivery::{create_raw_secret, staging_store, unique_tenant_prefix};
use integration_tests::{moto_endpoint, sdk_config};
use popularity_reports::connector_registry::JobKind;
use popularity_reports::console::auth::{CognitoSettings, TokenVerifier};
use popularity_reports::console::dispatch::StagingEvents;
use popularity_reports::console::routes::App;
use popularity_reports::delivery::connection_probe::{
    ConnectionCheck, ConnectionTestResult, CONNECTION_TEST_SCHEMA_VERSION,
};
use popularity_reports::delivery::feed_index::index_status;
use popularity_reports::delivery::status::{AttemptResult, DeliveredObject, DeliveryStatus};
use popularity_reports::delivery::{parse_deliverer_key, DelivererKey};
use popularity_reports::domain::RunId;
use popularity_reports::store::{ObjectSink, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants, TenantDirectory};
use popularity_reports::tenant::parse_tenant_secret;
use serde_json::{json, Value};

const PASSWORD: &str = "Correct-Horse-7-battery";

/// Answers every connection test with one check, passed or failed, as a
/// deliverer would (the probes themselves are tested elsewhere).
#[derive(Clone)]
struct AnsweringProbes {
    staging: S3Store,
    ok: bool,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

impl StagingEvents for AnsweringProbes {
    async fn written(&self, _: JobKind, key: &str) {
        self.asked.lock().unwrap().push(key.to_owned());
        let Ok(DelivererKey::ConnectionTest(parts)) = parse_deliverer_key(key) else { return };
        let result = ConnectionTestResult {
            schema_version: CONNECTION_TEST_SCHEMA_VERSION,
            request_id: parts.request_id.clone(),
            tenant_id: parts.tenant_id.clone(),
            connector: parts.connector.clone(),
            connector_type: None,
            ok: self.ok,
            checks: vec![ConnectionCheck {
                name: "s3:PutObject".into(),
                ok: self.ok,
                required: true,
                detail: if self.ok { "written".into() } else { "AccessDenied".into() },
            }],
            warnings: Vec::new(),
            left_behind: Vec::new(),
            finished_at: chrono::Utc::now(),
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&result).unwrap());
        self.staging.put(&parts.result_key(), body, "application/json").await.unwrap();
    }
}

/// Two tenants (acme, globex), their users and an operator, the console
/// served with probes answered by `AnsweringProbes`.
struct Fixture {
    aws: SdkConfig,
    prefix: String,
    staging: S3Store,
    client: ConsoleClient,
    acme: String,
    globex: String,
    operator: String,
    probes: AnsweringProbes,
}

fn acme_secret() -> Value {
    json!({
        "schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {"inbox": {"type": "email", "recipients": ["data@acme.example"]}},
        "feeds": [{"id": "weekly", "connector": "inbox", "reports": ["track"], "intervalSeconds": 604800}]
    })
}

fn globex_secret() -> Value {
    json!({
        "schemaVersion": 1, "tenantId": "globex", "plan": "trial",
        "connectors": {"globex-lake": {"type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::globex-data",
                                        "region": "eu-west-1", "prefix": "popularity/",
                                        "bucketOwnerAccountId": "555566667777"}},
        "feeds": [{"id": "globex-all", "connector": "globex-lake"}]
    })
}

async fn fixture(hint: &str, probes_pass: bool) -> Fixture {
    let endpoint = moto_endpoint();
    let aws = sdk_config(&endpoint).await;
    let staging = staging_store(&aws, hint).await;
    let prefix = unique_tenant_prefix(hint);
    create_raw_secret(&aws, &format!("{prefix}acme"), &acme_secret().to_string()).await;
    create_raw_secret(&aws, &format!("{prefix}globex"), &globex_secret().to_string()).await;
    let pool = fresh_user_pool(&aws, hint).await;
    add_user(&aws, &pool, &format!("ann@{hint}.acme.example"), Some("acme"), false, PASSWORD).await;
    add_user(&aws, &pool, &format!("gus@{hint}.globex.example"), Some("globex"), false, PASSWORD).await;
    add_user(&aws, &pool, &format!("ops@{hint}.example"), None, true, PASSWORD).await;
    let config = console_config(&endpoint, &pool, staging.bucket(), &prefix);
    let probes = AnsweringProbes { staging: staging.clone(), ok: probes_pass, asked: Default::default() };
    let base = serve(console_app(&aws, &config, probes.clone())).await;
    let client = ConsoleClient::new(&base);
    let acme = client.sign_in(&format!("ann@{hint}.acme.example"), PASSWORD).await;
    let globex = client.sign_in(&format!("gus@{hint}.globex.example"), PASSWORD).await;
    let operator = client.sign_in(&format!("ops@{hint}.example"), PASSWORD).await;
    Fixture { aws, prefix, staging, client, acme, globex, operator, probes }
}

impl Fixture {
    async fn secret(&self, tenant: &str) -> (String, String) {
        let output = secrets_manager_client(&self.aws)
            .get_secret_value()
            .secret_id(format!("{}{tenant}", self.prefix))
            .send()
            .await
            .unwrap();
        (output.secret_string().unwrap().to_owned(), output.version_id().unwrap().to_owned())
    }

    async fn version(&self, token: &str) -> String {
        let me = self.client.call("GET", "/v1/me", Some(token), None, None).await;
        assert_eq!(me.status, 200, "{}", me.text);
        me.etag.expect("GET /v1/me carries an ETag")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_their_own_tenant_and_gets_404_for_everything_of_another() {
    let f = fixture("isolation", true).await;
    let me = f.client.call("GET", "/v1/me", Some(&f.acme), None, None).await.json();
    assert_eq!(
        (me["tenantId"].as_str(), me["plan"].as_str(), me["feedLimit"].as_u64()),
        (Some("acme"), Some("standard"), Some(5))
    );
    let acme_version = f.version(&f.acme).await;
    let (globex_before, _) = f.secret("globex").await;

    // Globex's resources, named directly by acme's user.
    for (method, path) in [
        ("GET", "/v1/connectors/globex-lake"),
        ("PATCH", "/v1/connectors/globex-lake"),
        ("DELETE", "/v1/connectors/globex-lake"),
        ("POST", "/v1/connectors/globex-lake/test"),
        ("GET", "/v1/feeds/globex-all"),
        ("PATCH", "/v1/feeds/globex-all"),
        ("DELETE", "/v1/feeds/globex-all"),
        ("GET", "/v1/feeds/globex-all/deliveries"),
        ("POST", "/v1/feeds/globex-all/deliveries/20261119030000/retry"),
    ] {
        let body = (method == "PATCH").then(|| json!({"paused": true, "prefix": "stolen/"}));
        let answer = f.client.call(method, path, Some(&f.acme), Some(&acme_version), body.as_ref()).await;
        assert_eq!(answer.status, 404, "{method} {path} by acme's user: {}", answer.text);
    }
    // Every route, asking for globex by name.
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/setup"),
        ("GET", "/v1/connectors"),
        ("POST", "/v1/connectors"),
        ("GET", "/v1/connectors/globex-lake"),
        ("PATCH", "/v1/connectors/globex-lake"),
        ("DELETE", "/v1/connectors/globex-lake"),
        ("POST", "/v1/connectors/globex-lake/test"),
        ("GET", "/v1/feeds"),
        ("POST", "/v1/feeds"),
        ("GET", "/v1/feeds/globex-all"),
        ("PATCH", "/v1/feeds/globex-all"),
        ("DELETE", "/v1/feeds/globex-all"),
        ("GET", "/v1/feeds/globex-all/deliveries"),
        ("POST", "/v1/feeds/globex-all/deliveries/20261119030000/retry"),
    ] {
        let body = matches!(method, "POST" | "PATCH").then(|| json!({"id": "x", "name": "x", "paused": true}));
        let named = format!("{path}?tenantId=globex");
        let answer = f.client.call(method, &named, Some(&f.acme), Some(&acme_version), body.as_ref()).await;
        assert_eq!(answer.status, 404, "{method} {named} by acme's user: {}", answer.text);
    }
    assert_eq!(f.secret("globex").await.0, globex_before, "nothing of globex changed");

    // An operator may act on globex.
    let operator_view =
        f.client.call("GET", "/v1/connectors/globex-lake?tenantId=globex", Some(&f.operator), None, None).await;
    assert_eq!(operator_view.status, 200, "{}", operator_view.text);
    let version = operator_view.etag.clone().unwrap();
    let paused = f
        .client
        .call(
            "PATCH",
            "/v1/feeds/globex-all?tenantId=globex",
            Some(&f.operator),
            Some(&version),
            Some(&json!({"paused": true})),
        )
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json()["paused"], json!(true));
    // And globex's own user sees the operator's change.
    let feed = f.client.call("GET", "/v1/feeds/globex-all", Some(&f.globex), None, None).await.json();
    assert_eq!(feed["paused"], json!(true));
    // Without a tenant, an operator is asked to name one.
    assert_eq!(f.client.call("GET", "/v1/me", Some(&f.operator), None, None).await.status, 400);
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_but_a_valid_id_token_of_our_pool_and_client_is_refused() {
    let f = fixture("tokens", true).await;
    let endpoint = moto_endpoint();
    let good = f.client.call("GET", "/v1/me", Some(&f.acme), None, None).await;
    assert_eq!(good.status, 200, "{}", good.text);

    let parts: Vec<&str> = f.acme.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    // alg: none, no signature.
    let mut none_header = decode_part(header);
    none_header["alg"] = json!("none");
    let alg_none = format!("{}.{payload}.", b64(none_header.to_string().as_bytes()));
    // A tampered payload: another tenant, the signature kept.
    let mut claims = decode_part(payload);
    claims["custom:tenantId"] = json!("globex");
    let tampered = format!("{header}.{}.{signature}", b64(claims.to_string().as_bytes()));
    // Another pool's token (moto signs every pool's with the same key: the issuer tells them apart).
    let other_pool = fresh_user_pool(&f.aws, "tokens-other").await;
    add_user(&f.aws, &other_pool, "ann@other.example", Some("acme"), false, PASSWORD).await;
    let other_config = console_config(&endpoint, &other_pool, f.staging.bucket(), &f.prefix);
    let other_base = serve(console_app(&f.aws, &other_config, f.probes.clone())).await;
    let other_pool_token = ConsoleClient::new(&other_base).sign_in("ann@other.example", PASSWORD).await;
    // Another app client of our pool.
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&f.aws);
    let me = f.client.call("GET", "/v1/me", Some(&f.acme), None, None).await;
    assert_eq!(me.status, 200);
    let pool_id = decode_part(payload)["iss"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let other_client = cognito
        .create_user_pool_client()
        .user_pool_id(&pool_id)
        .client_name("someone-else")
        .explicit_auth_flows(aws_sdk_cognitoidentityprovider::types::ExplicitAuthFlowsType::AllowUserPasswordAuth)
        .send()
        .await
        .unwrap();
    let other_client_id = other_client.user_pool_client().unwrap().client_id().unwrap().to_owned();
    let signed_in = cognito
        .initiate_auth()
        .auth_flow(aws_sdk_cognitoidentityprovider::types::AuthFlowType::UserPasswordAuth)
        .client_id(&other_client_id)
        .auth_parameters("USERNAME", "ann@tokens.acme.example")
        .auth_parameters("PASSWORD", PASSWORD)
        .send()
        .await
        .unwrap();
    let other_client_token = signed_in.authentication_result().unwrap().id_token().unwrap().to_owned();
    let access_token = {
        let ours = cognito
            .initiate_auth()
            .auth_flow(aws_sdk_cognitoidentityprovider::types::AuthFlowType::UserPasswordAuth)
            .client_id(decode_part(payload)["aud"].as_str().unwrap())
            .auth_parameters("USERNAME", "ann@tokens.acme.example")
            .auth_parameters("PASSWORD", PASSWORD)
            .send()
            .await
            .unwrap();
        ours.authentication_result().unwrap().access_token().unwrap().to_owned()
    };

    for (case, token) in [
        ("alg none", Some(alg_none.as_str())),
        ("tampered payload", Some(tampered.as_str())),
        ("another pool", Some(other_pool_token.as_str())),
        ("another app client", Some(other_client_token.as_str())),
        ("an access token", Some(access_token.as_str())),
        ("garbage", Some("not-a-token")),
        ("no token", None),
    ] {
        let answer = f.client.call("GET", "/v1/me", token, None, None).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.text);
        assert_eq!(answer.json()["status"], json!(401), "{case}: a problem document");
    }

    // Expired: the same valid token, to a console whose clock is two hours on.
    let config = console_config(&endpoint, &other_pool, f.staging.bucket(), &f.prefix);
    let mut ours = console_config(&endpoint, &other_pool, f.staging.bucket(), &f.prefix);
    ours.client_id = decode_part(payload)["aud"].as_str().unwrap().to_owned();
    ours.user_pool_id = pool_id.clone();
    ours.issuer = integration_tests::console::moto_issuer(&pool_id);
    ours.jwks_url = format!("{endpoint}/{pool_id}/.well-known/jwks.json");
    let app = console_app(&f.aws, &ours, f.probes.clone());
    let Ok(app) = Arc::try_unwrap(app) else { panic!("one owner") };
    let later = TokenVerifier::new(CognitoSettings {
        issuer: ours.issuer.clone(),
        client_id: ours.client_id.clone(),
        jwks_url: ours.jwks_url.clone(),
    })
    .with_clock(|| chrono::Utc::now().timestamp() + 2 * 3600);
    let mut console = app.console;
    console.verifier = later;
    let late_base = serve(Arc::new(App { console, sign_in: app.sign_in })).await;
    let expired = ConsoleClient::new(&late_base).call("GET", "/v1/me", Some(&f.acme), None, None).await;
    assert_eq!(expired.status, 401, "{}", expired.text);
    assert!(expired.text.contains("expired"), "{}", expired.text);
    let _ = config;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_write_only_in_every_answer_and_log() {
    let logs = integration_tests::delivery::capture_logs();
    let f = fixture("credentials", true).await;
    let secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let key_id = "AKIAIOSFODNN7EXAMPLE";
    let account = integration_tests::google_keys::TestServiceAccount::generate(
        "delivery@customer-project.iam.gserviceaccount.com",
    );
    let gcs_key = account.key_json_string();
    let private_key = account.key_json()["private_key"].as_str().unwrap().to_owned();
    let external_id = f.client.call("GET", "/v1/setup", Some(&f.acme), None, None).await.json()["externalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let connectors = [
        json!({"name": "keys", "type": "s3-keys", "bucketArn": "arn:aws:s3:::acme-keys-bucket", "region": "eu-west-1",
               "prefix": "k/", "accessKeyId": key_id, "secretAccessKey": secret_key}),
        json!({"name": "role", "type": "s3-role", "bucketArn": "arn:aws:s3:::acme-role-bucket", "region": "eu-west-1",
               "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery", "externalId": external_id}),
        json!({"name": "policy", "type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::acme-policy-bucket",
               "region": "eu-west-1", "bucketOwnerAccountId": "111122223333"}),
        json!({"name": "gcs", "type": "gcs", "bucket": "acme-gcs-bucket", "serviceAccountJson": gcs_key}),
        json!({"name": "sheet", "type": "google-sheets",
               "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit",
               "maxRows": 100}),
        json!({"name": "mail", "type": "email", "recipients": ["team@acme.example"]}),
    ];
    let mut answers = Vec::new();
    for connector in &connectors {
        let version = f.version(&f.acme).await;
        let created = f.client.call("POST", "/v1/connectors", Some(&f.acme), Some(&version), Some(connector)).await;
        assert_eq!(created.status, 201, "{}: {}", connector["type"], created.text);
        answers.push(created.text);
    }
    answers.push(f.client.call("GET", "/v1/connectors", Some(&f.acme), None, None).await.text);
    answers.push(f.client.call("GET", "/v1/connectors/keys", Some(&f.acme), None, None).await.text);
    let keys = f.client.call("GET", "/v1/connectors/keys", Some(&f.acme), None, None).await.json();
    assert_eq!(keys["secretAccessKey"]["set"], json!(true));
    assert_eq!(keys["secretAccessKey"]["fingerprint"].as_str().map(str::len), Some(12));
    assert!(keys["secretAccessKey"]["updatedAt"].is_string());
    // A masked credential sent back on edit keeps the stored one.
    let version = f.version(&f.acme).await;
    let mut edit = keys.clone();
    edit["prefix"] = json!("k2/");
    let edited = f.client.call("PATCH", "/v1/connectors/keys", Some(&f.acme), Some(&version), Some(&edit)).await;
    assert_eq!(edited.status, 200, "{}", edited.text);
    answers.push(edited.text);
    let stored: Value = serde_json::from_str(&f.secret("acme").await.0).unwrap();
    assert_eq!(stored["connectors"]["keys"]["secretAccessKey"], json!(secret_key), "the stored key was kept");
    assert_eq!(stored["connectors"]["keys"]["prefix"], json!("k2/"));
    // Moving the keys to another bucket needs them again.
    let version = f.version(&f.acme).await;
    let moved = f
        .client
        .call(
            "PATCH",
            "/v1/connectors/keys",
            Some(&f.acme),
            Some(&version),
            Some(&json!({"bucketArn": "arn:aws:s3:::elsewhere-bucket"})),
        )
        .await;
    assert_eq!(moved.status, 422, "{}", moved.text);
    assert!(moved.text.contains("secretAccessKey"), "{}", moved.text);
    answers.push(moved.text);
    answers.push(f.client.raw("GET", "/", None, None, None).await.text);
    answers.push(f.client.raw("GET", "/assets/app.js", None, None, None).await.text);

    let private_key_line = private_key.lines().nth(1).unwrap().to_owned();
    for answer in &answers {
        for secret in [secret_key, key_id, private_key_line.as_str()] {
            assert!(!answer.contains(secret), "a credential is in an answer: {answer}");
        }
    }
    integration_tests::delivery::assert_logs_hold_none_of(&logs, &[secret_key, key_id, &private_key_line]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_changes_name_the_field_and_store_nothing() {
    let f = fixture("validation", true).await;
    let (before, _) = f.secret("acme").await;
    let version = f.version(&f.acme).await;
    for interval in [3599, 604_801] {
        let feed = json!({"id": "hourly", "connector": "inbox", "intervalSeconds": interval});
        let answer = f.client.call("POST", "/v1/feeds", Some(&f.acme), Some(&version), Some(&feed)).await;
        assert_eq!(answer.status, 422, "{}", answer.text);
        let problem = answer.json();
        assert_eq!(problem["errors"][0]["path"], json!("intervalSeconds"), "{problem}");
    }
    // The standard plan allows 5 active feeds; acme has 1.
    let mut version = version;
    for n in 2..=5 {
        let feed = json!({"id": format!("feed-{n}"), "connector": "inbox", "reports": ["artist"]});
        let answer = f.client.call("POST", "/v1/feeds", Some(&f.acme), Some(&version), Some(&feed)).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        version = answer.etag.unwrap();
    }
    let sixth = json!({"id": "feed-6", "connector": "inbox"});
    let refused = f.client.call("POST", "/v1/feeds", Some(&f.acme), Some(&version), Some(&sixth)).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("standard plan's limit of 5"), "{}", refused.text);
    // Paused, it fits.
    let paused = json!({"id": "feed-6", "connector": "inbox", "paused": true});
    let stored = f.client.call("POST", "/v1/feeds", Some(&f.acme), Some(&version), Some(&paused)).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let version = stored.etag.unwrap();
    let me = f.client.call("GET", "/v1/me", Some(&f.acme), None, None).await.json();
    assert_eq!((me["activeFeeds"].as_u64(), me["feeds"].as_u64()), (Some(5), Some(6)));

    // A stale If-Match loses nothing; a missing one is asked for.
    let stale = f
        .client
        .call("PATCH", "/v1/feeds/feed-2", Some(&f.acme), Some("0000-stale"), Some(&json!({"paused": true})))
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text);
    let missing = f.client.call("PATCH", "/v1/feeds/feed-2", Some(&f.acme), None, Some(&json!({"paused": true}))).await;
    assert_eq!(missing.status, 428, "{}", missing.text);
    let feed = f.client.call("GET", "/v1/feeds/feed-2", Some(&f.acme), None, None).await.json();
    assert_eq!(feed["paused"], json!(false));
    // Two edits from one version: the second gets 412 and the first stands.
    let first =
        f.client.call("PATCH", "/v1/feeds/feed-2", Some(&f.acme), Some(&version), Some(&json!({"paused": true}))).await;
    let second =
        f.client.call("PATCH", "/v1/feeds/feed-3", Some(&f.acme), Some(&version), Some(&json!({"paused": true}))).await;
    assert_eq!((first.status, second.status), (200, 412), "{} / {}", first.text, second.text);
    let now: Value = serde_json::from_str(&f.secret("acme").await.0).unwrap();
    let paused_ids: Vec<&str> = now["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|feed| feed["paused"] == json!(true))
        .map(|feed| feed["id"].as_str().unwrap())
        .collect();
    assert_eq!(paused_ids, ["feed-2", "feed-6"]);
    assert_ne!(before, f.secret("acme").await.0);

    // A connector whose bucket is ours is refused, naming the field.
    let version = f.version(&f.acme).await;
    let ours = json!({"name": "ours", "type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{}", f.staging.bucket()),
                      "region": "us-east-1", "bucketOwnerAccountId": "123456789012"});
    let answer = f.client.call("POST", "/v1/connectors", Some(&f.acme), Some(&version), Some(&ours)).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert_eq!(answer.json()["errors"][0]["path"], json!("bucketArn"));
    // Deleting a connector a feed uses is a conflict.
    let used = f.client.call("DELETE", "/v1/connectors/inbox", Some(&f.acme), Some(&version), None).await;
    assert_eq!(used.status, 409, "{}", used.text);
    // Too large a body is refused.
    let huge = format!("{{\"id\": \"x\", \"connector\": \"inbox\", \"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let answer = f.client.raw("POST", "/v1/feeds", Some(&f.acme), Some(&version), Some(huge)).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connection_test_stores_nothing_and_says_why() {
    let f = fixture("probe-fails", false).await;
    let (before, version_before) = f.secret("acme").await;
    let version = f.version(&f.acme).await;
    let connector = json!({"name": "lake", "type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::acme-missing-bucket",
                           "region": "eu-west-1", "bucketOwnerAccountId": "111122223333"});
    let answer = f.client.call("POST", "/v1/connectors", Some(&f.acme), Some(&version), Some(&connector)).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    let problem = answer.json();
    assert_eq!(problem["checks"][0]["name"], json!("s3:PutObject"));
    assert_eq!(problem["checks"][0]["ok"], json!(false));
    let (after, version_after) = f.secret("acme").await;
    assert_eq!((after, version_after), (before, version_before), "nothing was stored");
    let asked = f.probes.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].starts_with("connection-tests/s3/"), "{asked:?}");
    // The probe was asked to test the draft, not the current version.
    let request: Value =
        serde_json::from_slice(&popularity_reports::store::ObjectStore::get(&f.staging, &asked[0]).await.unwrap())
            .unwrap();
    assert!(request["secretVersionStage"].as_str().unwrap().starts_with("draft-"), "{request}");
    // And the draft's stage label is gone again: no version keeps it.
    let described =
        secrets_manager_client(&f.aws).describe_secret().secret_id(format!("{}acme", f.prefix)).send().await.unwrap();
    let stages: Vec<&String> =
        described.version_ids_to_stages().into_iter().flat_map(|m| m.values().flatten()).collect();
    assert!(stages.iter().all(|stage| !stage.starts_with("draft-")), "{stages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_secret_agree_both_ways() {
    let f = fixture("agreement", true).await;
    let version = f.version(&f.acme).await;
    let feed = json!({"id": "daily-artists", "connector": "inbox", "reports": ["artist"], "format": "tsv",
                      "compression": "gzip", "mode": "delta", "intervalSeconds": 86400});
    let created = f.client.call("POST", "/v1/feeds", Some(&f.acme), Some(&version), Some(&feed)).await;
    assert_eq!(created.status, 201, "{}", created.text);
    // What fanout and `tenant validate` read is what the API wrote.
    let (json, _) = f.secret("acme").await;
    let config = parse_tenant_secret("acme", &json).expect("the stored secret validates");
    let stored = config.feeds.iter().find(|feed| feed.id == "daily-artists").expect("the feed is stored");
    assert_eq!(stored.interval_seconds, Some(86400));
    let directory = SecretsManagerTenants::new(secrets_manager_client(&f.aws), f.prefix.clone()).unwrap();
    let entries = directory.load_tenants().await.unwrap();
    let acme = entries.iter().find(|entry| entry.tenant_id_from_name == "acme").unwrap();
    assert!(acme.config.as_ref().unwrap().feeds.iter().any(|feed| feed.id == "daily-artists"));

    // A secret edited by hand is what the API shows.
    let mut edited: Value = serde_json::from_str(&json).unwrap();
    edited["feeds"][0]["intervalSeconds"] = json!(259200);
    secrets_manager_client(&f.aws)
        .put_secret_value()
        .secret_id(format!("{}acme", f.prefix))
        .secret_string(edited.to_string())
        .send()
        .await
        .unwrap();
    let weekly = f.client.call("GET", "/v1/feeds/weekly", Some(&f.acme), None, None).await.json();
    assert_eq!(weekly["intervalSeconds"], json!(259200));
    // And an edit made from the version before the hand edit is refused.
    let stale = f
        .client
        .call("PATCH", "/v1/feeds/weekly", Some(&f.acme), Some(&created.etag.unwrap()), Some(&json!({"paused": true})))
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text);
}

/// The feed list keeps the indexes it read between requests: a delivery
/// recorded by another process (a deliverer, here the test) is in the very
/// next list, which says what the single feed, read without the cache, says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_recorded_elsewhere_is_in_the_next_feed_list() {
    let f = fixture("fresh-list", true).await;
    let list = || async {
        let answer = f.client.call("GET", "/v1/feeds", Some(&f.acme), None, None).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.json()["feeds"][0].clone()
    };
    let single = || async { f.client.call("GET", "/v1/feeds/weekly", Some(&f.acme), None, None).await.json() };
    let before = list().await;
    assert_eq!(before["id"], json!("weekly"));
    assert_eq!(before["lastDelivery"], Value::Null);

    let runs = [
        ("20261119030000", AttemptResult::Failed("AccessDenied".into())),
        (
            "20261126030000",
            AttemptResult::Delivered(vec![DeliveredObject::new("r/part-001.json".into(), 9, "00".repeat(32))]),
        ),
        ("20261203030000", AttemptResult::Failed("NoSuchBucket".into())),
    ];
    for (run_id, result) in runs {
        let run: RunId = run_id.parse().unwrap();
        let at = run.time() + chrono::Duration::minutes(5);
        index_status(&f.staging, &DeliveryStatus::first_record(run, "acme", "weekly", at, at, result)).await;
        let listed = list().await;
        assert_eq!(listed["lastDelivery"]["runId"], json!(run_id));
        assert_eq!(listed, single().await);
        assert_eq!(list().await, listed, "nothing changed in between");
    }
    // The delivered run, behind the newest failed one, still sets when the feed is due.
    assert_eq!(list().await["nextDueFrom"], json!("2026-12-03T03:00:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_and_the_document_is_served_too() {
    let f = fixture("openapi", true).await;
    let served = f.client.raw("GET", "/v1/openapi.json", None, None, None).await;
    assert_eq!(served.status, 200);
    let document: Value = serde_json::from_str(&served.text).unwrap();
    let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        let pretty = serde_json::to_string_pretty(&document).unwrap() + "\n";
        std::fs::write(&kept, pretty).expect("docs/openapi.json written");
    }
    let in_docs = std::fs::read_to_string(&kept)
        .expect("docs/openapi.json is kept (UPDATE_DOCS=1 cargo test --test console_api_against_moto writes it)");
    assert_eq!(
        serde_json::from_str::<Value>(&in_docs).unwrap(),
        document,
        "docs/openapi.json is out of date: regenerate it"
    );
    // Every documented operation is routed. Writes carry a stale If-Match,
    // so that nothing changes while each route is reached.
    let version = "stale-version".to_owned();
    for (template, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let path =
                template.replace("{name}", "inbox").replace("{id}", "weekly").replace("{runId}", "20261119030000");
            let body = json!({});
            let token = if path.starts_with("/auth/") { None } else { Some(f.acme.as_str()) };
            let answer = f.client.call(&method.to_ascii_uppercase(), &path, token, Some(&version), Some(&body)).await;
            assert!(answer.status != 405, "{method} {path} is documented but not routed");
            if method == "get" {
                assert_eq!(answer.status, 200, "{method} {path}: {}", answer.text);
            }
            if !path.contains("/retry") {
                assert!(answer.status != 404, "{method} {path} is documented but answered 404: {}", answer.text);
            }
        }
    }
}
