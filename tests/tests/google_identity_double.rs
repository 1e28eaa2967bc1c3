//! The Google identity double (STS, IAM, IAM Credentials) against moto: AWS
//! role sessions assumed on moto exchange a GetCallerIdentity request they
//! signed for a federated token through google-cloud-auth's external-account
//! credentials, exactly as the crate sends the exchange; the double checks
//! the audience, asks moto who signed, and refuses roles it was not told to
//! allow. Signatures are checked on the IAM-enforcing server
//! (`MOTO_AUTH_ENDPOINT`). Then IAM: service accounts created once,
//! account-id rules, policies round-tripping with etags; and
//! `generateAccessToken`, allowed by Token Creator only, issuing a token the
//! Sheets double accepts for that account only. One test runs the crate's
//! whole chain (its own AWS source reading credentials from a fake instance
//! metadata server, exchange, impersonation) against the double.

use std::sync::Arc;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use google_cloud_auth::credentials::external_account::{Builder as ExternalAccountBuilder, ProgrammaticBuilder};
use google_cloud_auth::credentials::subject_token::{
    Builder as SubjectTokenBuilder, SubjectToken, SubjectTokenProvider,
};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_auth::errors::SubjectTokenProviderError;
use hyper::http::Extensions;
use integration_tests::customer::{admin_user, assumed_role, enforce_iam, lock_auth_server, stop_enforcing_iam};
use integration_tests::google_identity_double::{
    principal_set_member, GoogleIdentityDouble, AWS4_REQUEST_TOKEN_TYPE, TOKEN_CREATOR_ROLE,
};
use integration_tests::google_keys::{verify_bearer, AuthFailure, SCOPE_CLOUD_PLATFORM};
use integration_tests::sheets_double::{SheetsDouble, TabSpec};
use integration_tests::{moto_auth_endpoint, moto_endpoint, sdk_config};
use serde_json::{json, Value};

const ACCOUNT: &str = "123456789012";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/314159265358/locations/global/workloadIdentityPools/deliverers/providers/aws";
const PROJECT: &str = "popularity-tenants";
const SHEETS_SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";

/// A role created on moto and a session of it.
struct RoleSession {
    role_arn: String,
    credentials: AwsCredentials,
}

/// Creates role `<hint>-<unique>` in moto's default account (any principal
/// of the account may assume it) and assumes it with `admin`.
async fn role_session(admin: &SdkConfig, hint: &str) -> RoleSession {
    let assumed = assumed_role(admin, hint).await;
    let credentials = AwsCredentials::new(
        &assumed.access_key_id,
        &assumed.secret_access_key,
        Some(assumed.session_token.clone()),
        None,
        "moto-assume-role",
    );
    RoleSession { role_arn: assumed.arn, credentials }
}

/// The subject token google-cloud-auth makes for an AWS source
/// (`aws_sourced.rs`): a `POST` of `GetCallerIdentity` to `sts_url`, signed
/// (here with the aws-sigv4 crate) over `host` (without the port, as the
/// crate does), `x-amz-date`, `x-amz-security-token` and
/// `x-goog-cloud-target-resource` = the audience, serialised as
/// `{"url","method","headers":[{"key","value"}],"body"}` and URL-encoded.
fn aws_subject_token(sts_url: &str, audience: &str, credentials: &AwsCredentials, tamper: bool) -> String {
    let url = url::Url::parse(sts_url).expect("the STS URL parses");
    let host = url.host_str().expect("the STS URL has a host").to_owned();
    let unsigned = [("host", host.as_str()), ("x-goog-cloud-target-resource", audience)];
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("sts")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing parameters build")
        .into();
    let signable = SignableRequest::new("POST", sts_url, unsigned.iter().copied(), SignableBody::Bytes(&[]))
        .expect("a signable request");
    let (instructions, _) = sign(signable, &params).expect("aws-sigv4 signs").into_parts();
    let mut headers: Vec<(String, String)> = unsigned.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    headers.extend(instructions.headers().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())));
    headers.sort();
    // The crate puts Authorization last, capitalised.
    let position = headers.iter().position(|(k, _)| k == "authorization").expect("a signature");
    let (_, mut authorization) = headers.remove(position);
    if tamper {
        let last = if authorization.ends_with('0') { '1' } else { '0' };
        authorization.pop();
        authorization.push(last);
    }
    headers.push(("Authorization".to_owned(), authorization));
    let token = json!({
        "url": sts_url,
        "method": "POST",
        "headers": headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        "body": "",
    });
    url::form_urlencoded::byte_serialize(token.to_string().as_bytes()).collect()
}

fn caller_identity_url(moto: &str) -> String {
    format!("{moto}/?Action=GetCallerIdentity&Version=2011-06-15")
}

/// A subject token provider signing GetCallerIdentity with fixed AWS
/// credentials, for google-cloud-auth's programmatic external account.
#[derive(Debug)]
struct SignedCallerIdentity {
    sts_url: String,
    audience: String,
    credentials: AwsCredentials,
    tamper: bool,
}

#[derive(Debug)]
struct NeverFails;

impl std::fmt::Display for NeverFails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "signing cannot fail")
    }
}

impl std::error::Error for NeverFails {}

impl SubjectTokenProviderError for NeverFails {
    fn is_transient(&self) -> bool {
        false
    }
}

impl SubjectTokenProvider for SignedCallerIdentity {
    type Error = NeverFails;
    async fn subject_token(&self) -> Result<SubjectToken, NeverFails> {
        let token = aws_subject_token(&self.sts_url, &self.audience, &self.credentials, self.tamper);
        Ok(SubjectTokenBuilder::new(token).build())
    }
}

/// Asks the double for a federated token through google-cloud-auth's
/// external-account credentials, with `session`'s signature on
/// GetCallerIdentity at `moto` and `audience`; returns the token, or the
/// crate's error text.
async fn federated_token(
    double: &GoogleIdentityDouble,
    moto: &str,
    audience: &str,
    session: &RoleSession,
    tamper: bool,
) -> Result<String, String> {
    let provider = SignedCallerIdentity {
        sts_url: caller_identity_url(moto),
        audience: audience.to_owned(),
        credentials: session.credentials.clone(),
        tamper,
    };
    let credentials = ProgrammaticBuilder::new(Arc::new(provider))
        .with_audience(audience)
        .with_subject_token_type(AWS4_REQUEST_TOKEN_TYPE)
        .with_token_url(double.token_url())
        .with_scopes([SCOPE_CLOUD_PLATFORM])
        .build()
        .expect("the external account credentials build");
    bearer_of(&credentials).await
}

async fn bearer_of(credentials: &Credentials) -> Result<String, String> {
    match credentials.headers(Extensions::new()).await {
        Ok(CacheableResource::New { data, .. }) => {
            let value = data.get("authorization").expect("an Authorization header").to_str().expect("text");
            Ok(value.strip_prefix("Bearer ").expect("a bearer token").to_owned())
        }
        Ok(CacheableResource::NotModified) => panic!("fresh credentials answered NotModified"),
        Err(e) => {
            // The crate's message is generic; the double's answer is in the
            // chain of sources.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Err(text)
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("an HTTP client builds")
}

/// `POST <double><path>` with `body` as JSON and `token` as the bearer;
/// returns the status and the JSON answer.
async fn post(double: &GoogleIdentityDouble, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = http()
        .post(format!("{}{path}", double.endpoint()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.send().await.expect("the double answers")).await
}

async fn get(double: &GoogleIdentityDouble, path: &str, token: &str) -> (u16, Value) {
    let request = http().get(format!("{}{path}", double.endpoint())).header("authorization", format!("Bearer {token}"));
    answer(request.send().await.expect("the double answers")).await
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

/// A double on moto's shared server with a Sheets double's registry, and an
/// admin role session and a deliverer role session both allowed to federate.
struct Scene {
    double: GoogleIdentityDouble,
    sheets: SheetsDouble,
    admin_token: String,
    deliverer: RoleSession,
    deliverer_token: String,
}

async fn scene(hint: &str) -> Scene {
    let moto = moto_endpoint();
    let aws = sdk_config(&moto).await;
    let sheets = SheetsDouble::start();
    let double = GoogleIdentityDouble::start(&moto, AUDIENCE, vec![sheets.registry()]);
    let admin = role_session(&aws, &format!("{hint}-admin")).await;
    let deliverer = role_session(&aws, &format!("{hint}-deliverer")).await;
    double.allow_aws_role(&admin.role_arn);
    double.allow_admin_role(&admin.role_arn);
    double.allow_aws_role(&deliverer.role_arn);
    let admin_token = federated_token(&double, &moto, AUDIENCE, &admin, false).await.expect("the admin federates");
    let deliverer_token =
        federated_token(&double, &moto, AUDIENCE, &deliverer, false).await.expect("the deliverer federates");
    Scene { double, sheets, admin_token, deliverer, deliverer_token }
}

#[tokio::test]
async fn an_allowed_role_gets_a_federated_token_and_another_role_is_refused() {
    let moto = moto_endpoint();
    let aws = sdk_config(&moto).await;
    let double = GoogleIdentityDouble::start(&moto, AUDIENCE, Vec::new());
    let allowed = role_session(&aws, "wif-allowed").await;
    let stranger = role_session(&aws, "wif-stranger").await;
    double.allow_aws_role(&allowed.role_arn);

    let token = federated_token(&double, &moto, AUDIENCE, &allowed, false).await.expect("an allowed role federates");
    assert!(token.starts_with("ya29."), "{}", &token[..5]);
    let refused = federated_token(&double, &moto, AUDIENCE, &stranger, false).await.expect_err("not allowed");
    assert!(refused.contains("role not allowed"), "{refused}");

    let role_name = |arn: &str| arn.rsplit('/').next().unwrap().to_owned();
    let log = double.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].path.as_str(), log[0].status), ("/v1/token", 200));
    assert_eq!(
        log[0].caller.as_deref(),
        Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/{}", role_name(&allowed.role_arn)).as_str())
    );
    assert_eq!(log[1].status, 403);
    assert_eq!(
        log[1].caller.as_deref(),
        Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/{}", role_name(&stranger.role_arn)).as_str())
    );
    assert!(log.iter().all(|r| !format!("{r:?}").contains(&token[5..])), "the log holds no token");
}

#[tokio::test]
async fn an_exchange_for_another_provider_or_with_a_mismatched_target_resource_is_refused() {
    let moto = moto_endpoint();
    let aws = sdk_config(&moto).await;
    let double = GoogleIdentityDouble::start(&moto, AUDIENCE, Vec::new());
    let session = role_session(&aws, "wif-audience").await;
    double.allow_aws_role(&session.role_arn);

    let other_provider = AUDIENCE.replace("/providers/aws", "/providers/other");
    let refused = federated_token(&double, &moto, &other_provider, &session, false).await.expect_err("other audience");
    assert!(refused.contains("invalid_grant") && refused.contains("audience mismatch"), "{refused}");

    // Form audience right, but the signed request was made for another one.
    let subject_token = aws_subject_token(&caller_identity_url(&moto), &other_provider, &session.credentials, false);
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
        .append_pair("audience", AUDIENCE)
        .append_pair("scope", SCOPE_CLOUD_PLATFORM)
        .append_pair("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
        .append_pair("subject_token", &subject_token)
        .append_pair("subject_token_type", AWS4_REQUEST_TOKEN_TYPE)
        .finish();
    let response = http()
        .post(double.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("the double answers");
    let (status, body) = answer(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("x-goog-cloud-target-resource"), "{body}");

    // A GetCallerIdentity addressed elsewhere than the configured moto.
    let elsewhere = "http://127.0.0.1:9/?Action=GetCallerIdentity&Version=2011-06-15";
    let subject_token = aws_subject_token(elsewhere, AUDIENCE, &session.credentials, false);
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
        .append_pair("audience", AUDIENCE)
        .append_pair("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
        .append_pair("subject_token", &subject_token)
        .append_pair("subject_token_type", AWS4_REQUEST_TOKEN_TYPE)
        .finish();
    let response = http().post(double.token_url()).body(form).send().await.expect("the double answers");
    let (status, body) = answer(response).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");

    double.fail_next(1, 503);
    let response = http().post(double.token_url()).body("").send().await.expect("the double answers");
    assert_eq!(response.status().as_u16(), 503);
}

#[tokio::test]
async fn signatures_are_checked_against_the_iam_enforcing_server() {
    let moto = moto_auth_endpoint();
    let _serial = lock_auth_server(&moto).await;
    let admin = admin_user(&moto).await;
    let session = role_session(&admin, "wif-signed").await;
    let unknown_key = RoleSession {
        role_arn: session.role_arn.clone(),
        credentials: AwsCredentials::new("ASIAUNKNOWNKEY000000", "not-a-secret", Some("x".into()), None, "made up"),
    };
    let double = GoogleIdentityDouble::start(&moto, AUDIENCE, Vec::new());
    double.allow_aws_role(&session.role_arn);
    enforce_iam(&moto, 0).await;

    let signed = federated_token(&double, &moto, AUDIENCE, &session, false).await;
    let tampered = federated_token(&double, &moto, AUDIENCE, &session, true).await;
    let unknown = federated_token(&double, &moto, AUDIENCE, &unknown_key, false).await;
    stop_enforcing_iam(&moto).await;

    assert!(signed.is_ok(), "a rightly signed request federates: {signed:?}");
    let tampered = tampered.expect_err("a tampered signature is refused");
    assert!(tampered.contains("signature was refused by AWS"), "{tampered}");
    let unknown = unknown.expect_err("an unknown access key is refused");
    assert!(unknown.contains("InvalidClientTokenId"), "{unknown}");
    let statuses: Vec<u16> = double.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 401]);
}

#[tokio::test]
async fn generate_access_token_needs_token_creator_and_the_token_works_for_that_account_only() {
    let scene = scene("wif-mint").await;
    let double = &scene.double;
    let email = double.create_service_account(PROJECT, "tenant-acme");
    let neighbour = double.create_service_account(PROJECT, "tenant-other");
    let path = |email: &str| format!("/v1/projects/-/serviceAccounts/{email}:generateAccessToken");
    let body = json!({"scope": [SHEETS_SCOPE], "lifetime": "1800s"});

    // Without Token Creator: denied, as for an account that does not exist.
    let denied = json!({"error": {"code": 403,
        "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        "status": "PERMISSION_DENIED"}});
    assert_eq!(post(double, &path(&email), Some(&scene.deliverer_token), &body).await, (403, denied.clone()));
    let missing = format!("tenant-missing@{PROJECT}.iam.gserviceaccount.com");
    assert_eq!(post(double, &path(&missing), Some(&scene.deliverer_token), &body).await, (403, denied.clone()));

    let member = principal_set_member(AUDIENCE, &scene.deliverer.role_arn).expect("a member");
    assert_eq!(member, double.member_of_role(&scene.deliverer.role_arn));
    double.grant(&email, TOKEN_CREATOR_ROLE, &member);
    let (status, minted) = post(double, &path(&email), Some(&scene.deliverer_token), &body).await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["accessToken"].as_str().expect("an access token");
    assert!(token.starts_with("ya29."));
    let expire_time = minted["expireTime"].as_str().expect("an expiry");
    let expires = chrono::DateTime::parse_from_rfc3339(expire_time).expect("RFC 3339");
    assert!(expire_time.ends_with('Z'), "{expire_time}");
    let left = expires.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((1700..=1800).contains(&left), "{left}");

    // The Sheets double accepts it, for that account and scope only.
    let registry = scene.sheets.registry();
    let header = format!("Bearer {token}");
    assert_eq!(verify_bearer(&registry, Some(&header), &[SHEETS_SCOPE]), Ok(email.clone()));
    assert!(matches!(
        verify_bearer(&registry, Some(&header), &["https://www.googleapis.com/auth/devstorage.read_write"]),
        Err(AuthFailure::WrongScope { .. })
    ));
    scene.sheets.create_spreadsheet("acme-sheet", &[TabSpec::new("Sheet1", 10, 5)]);
    scene.sheets.create_spreadsheet("other-sheet", &[TabSpec::new("Sheet1", 10, 5)]);
    scene.sheets.share("acme-sheet", &email);
    scene.sheets.share("other-sheet", &neighbour);
    let read = |id: &str| {
        http()
            .get(format!("{}/v4/spreadsheets/{id}", scene.sheets.endpoint()))
            .header("authorization", header.clone())
            .send()
    };
    assert_eq!(read("acme-sheet").await.expect("answers").status().as_u16(), 200);
    assert_eq!(read("other-sheet").await.expect("answers").status().as_u16(), 403);

    // The neighbour's policy does not name the deliverer.
    assert_eq!(post(double, &path(&neighbour), Some(&scene.deliverer_token), &body).await.0, 403);
    // More than an hour is refused; a lifetime is optional.
    assert_eq!(
        post(
            double,
            &path(&email),
            Some(&scene.deliverer_token),
            &json!({"scope": [SHEETS_SCOPE], "lifetime": "7200s"})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(double, &path(&email), Some(&scene.deliverer_token), &json!({"scope": [SHEETS_SCOPE]})).await.0,
        200
    );
    // A token of the account itself, or none, is no federated caller.
    let (status, unauthenticated) = post(double, &path(&email), Some(token), &body).await;
    assert_eq!((status, unauthenticated["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    assert_eq!(post(double, &path(&email), None, &body).await.0, 401);
    // An expired federated token too.
    double.expire_federated_tokens();
    assert_eq!(post(double, &path(&email), Some(&scene.deliverer_token), &body).await.0, 401);

    let minted_log: Vec<_> =
        double.requests().into_iter().filter(|r| r.path.ends_with(":generateAccessToken") && r.status == 200).collect();
    assert_eq!(minted_log.len(), 2);
    assert_eq!(minted_log[0].service_account.as_deref(), Some(email.as_str()));
    assert!(minted_log[0].caller.as_deref().is_some_and(|c| c.contains(":assumed-role/")));
}

#[tokio::test]
async fn service_accounts_are_created_once_with_valid_ids_by_admins_only() {
    let scene = scene("wif-iam").await;
    let double = &scene.double;
    let create = format!("/v1/projects/{PROJECT}/serviceAccounts");
    let request = json!({"accountId": "tenant-globex",
        "serviceAccount": {"displayName": "Globex deliveries", "description": "popularity reports for Globex"}});
    let email = format!("tenant-globex@{PROJECT}.iam.gserviceaccount.com");

    let denied = json!({"error": {"code": 403,
        "message": "Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist).",
        "status": "PERMISSION_DENIED"}});
    assert_eq!(post(double, &create, Some(&scene.deliverer_token), &request).await, (403, denied));

    let (status, created) = post(double, &create, Some(&scene.admin_token), &request).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], format!("projects/{PROJECT}/serviceAccounts/{email}"));
    assert_eq!(created["email"], email);
    assert_eq!(created["projectId"], PROJECT);
    assert_eq!(created["displayName"], "Globex deliveries");
    assert_eq!(created["description"], "popularity reports for Globex");
    assert_eq!(created["uniqueId"].as_str().map(str::len), Some(21));
    assert!(scene.sheets.registry().is_active(&email), "a created account is known to the registries");

    let exists = json!({"error": {"code": 409,
        "message": format!("Service account tenant-globex already exists within project projects/{PROJECT}."),
        "status": "ALREADY_EXISTS"}});
    assert_eq!(post(double, &create, Some(&scene.admin_token), &request).await, (409, exists));

    for invalid in ["short", "Tenant-globex", "tenant-", "9tenant", "tenant_globex", &"t".repeat(31)] {
        let (status, body) = post(double, &create, Some(&scene.admin_token), &json!({"accountId": invalid})).await;
        assert_eq!((status, body["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{invalid}: {body}");
    }

    let (status, fetched) =
        get(double, &format!("/v1/projects/{PROJECT}/serviceAccounts/{email}"), &scene.admin_token).await;
    assert_eq!((status, &fetched), (200, &created));
    let (status, body) = get(
        double,
        &format!("/v1/projects/-/serviceAccounts/nobody-here@{PROJECT}.iam.gserviceaccount.com"),
        &scene.admin_token,
    )
    .await;
    assert_eq!((status, body["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
    let (status, _) =
        get(double, &format!("/v1/projects/{PROJECT}/serviceAccounts/{email}"), &scene.deliverer_token).await;
    assert_eq!(status, 403);

    // The per-project limit.
    double.set_service_account_limit(2);
    let (status, _) = post(double, &create, Some(&scene.admin_token), &json!({"accountId": "tenant-second"})).await;
    assert_eq!(status, 200);
    let (status, body) = post(double, &create, Some(&scene.admin_token), &json!({"accountId": "tenant-third"})).await;
    assert_eq!((status, body["error"]["status"].as_str()), (400, Some("FAILED_PRECONDITION")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("quota"), "{body}");
    let (status, _) = post(
        double,
        "/v1/projects/another-project/serviceAccounts",
        Some(&scene.admin_token),
        &json!({"accountId": "tenant-third"}),
    )
    .await;
    assert_eq!(status, 200, "the limit is per project");

    let (status, body) = post(
        double,
        "/v1/projects/p/serviceAccounts/x@p.iam.gserviceaccount.com:undelete",
        Some(&scene.admin_token),
        &json!({}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("GoogleIdentityDouble"), "{body}");
}

#[tokio::test]
async fn iam_policies_round_trip_with_etags() {
    let scene = scene("wif-policy").await;
    let double = &scene.double;
    let email = double.create_service_account(PROJECT, "tenant-initech");
    let resource = format!("/v1/projects/{PROJECT}/serviceAccounts/{email}");

    let (status, empty) = post(double, &format!("{resource}:getIamPolicy"), Some(&scene.admin_token), &json!({})).await;
    assert_eq!((status, &empty), (200, &json!({"version": 1, "etag": "ACAB"})));

    let member = principal_set_member(AUDIENCE, &scene.deliverer.role_arn).expect("a member");
    let policy = json!({"policy": {"etag": "ACAB", "bindings": [
        {"role": TOKEN_CREATOR_ROLE, "members": [member, member]},
        {"role": "roles/iam.serviceAccountUser", "members": []},
    ]}});
    let (status, set) = post(double, &format!("{resource}:setIamPolicy"), Some(&scene.admin_token), &policy).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["bindings"], json!([{"role": TOKEN_CREATOR_ROLE, "members": [member]}]));
    assert_ne!(set["etag"], "ACAB");
    let (_, read) = post(double, &format!("{resource}:getIamPolicy"), Some(&scene.admin_token), &json!({})).await;
    assert_eq!(read, set);
    assert_eq!(double.iam_policy(&email), Some(set.clone()));

    // The stale etag loses.
    let (status, stale) = post(double, &format!("{resource}:setIamPolicy"), Some(&scene.admin_token), &policy).await;
    assert_eq!((status, stale["error"]["status"].as_str()), (409, Some("ABORTED")), "{stale}");
    // A malformed member is refused; a deliverer may not set policies.
    let bad = json!({"policy": {"bindings": [{"role": TOKEN_CREATOR_ROLE, "members": ["arn:aws:iam::1:role/x"]}]}});
    assert_eq!(post(double, &format!("{resource}:setIamPolicy"), Some(&scene.admin_token), &bad).await.0, 400);
    let (status, body) = post(double, &format!("{resource}:setIamPolicy"), Some(&scene.deliverer_token), &policy).await;
    assert_eq!(status, 403);
    assert!(body["error"]["message"].as_str().unwrap().contains("iam.serviceAccounts.setIamPolicy"), "{body}");

    // The binding takes effect: the deliverer may now mint.
    let (status, minted) = post(
        double,
        &format!("/v1/projects/-/serviceAccounts/{email}:generateAccessToken"),
        Some(&scene.deliverer_token),
        &json!({"scope": [SHEETS_SCOPE]}),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
}

/// A fake EC2 instance metadata service (what google-cloud-auth's AWS source
/// reads when the AWS credentials are not in the environment), serving
/// `credentials` as role `role_name`'s.
async fn fake_instance_metadata(role_name: String, credentials: AwsCredentials) -> String {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    let document = json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": credentials.access_key_id(),
        "SecretAccessKey": credentials.secret_access_key(),
        "Token": credentials.session_token(),
    })
    .to_string();
    let listed = role_name.clone();
    let app = axum::Router::new()
        .route("/latest/meta-data/placement/availability-zone", get(|| async { "us-east-1a" }))
        .route("/latest/meta-data/iam/security-credentials", get(move || async move { listed }))
        .route(
            &format!("/latest/meta-data/iam/security-credentials/{role_name}"),
            get(move || async move { document }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// google-cloud-auth's AWS source reads credentials from the environment
/// before the instance metadata; the tests that serve them from a fake
/// metadata server need the environment free of them.
fn assert_no_aws_credentials_in_the_environment() {
    for variable in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            std::env::var_os(variable).is_none(),
            "{variable} is set: google-cloud-auth's AWS source would sign with it instead of the role session \
             this test serves from its fake instance metadata; unset it to run this test"
        );
    }
}

/// The external-account configuration of an AWS workload whose credentials
/// the metadata server at `metadata` serves, verified at `moto`.
fn aws_external_account(double: &GoogleIdentityDouble, metadata: &str, moto: &str) -> Value {
    json!({
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": AWS4_REQUEST_TOKEN_TYPE,
        "token_url": double.token_url(),
        "credential_source": {
            "environment_id": "aws1",
            "region_url": format!("{metadata}/latest/meta-data/placement/availability-zone"),
            "url": format!("{metadata}/latest/meta-data/iam/security-credentials"),
            "regional_cred_verification_url": caller_identity_url(moto),
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_cloud_auths_own_signature_passes_the_iam_enforcing_server() {
    assert_no_aws_credentials_in_the_environment();
    let moto = moto_auth_endpoint();
    let _serial = lock_auth_server(&moto).await;
    let admin = admin_user(&moto).await;
    let session = role_session(&admin, "wif-crate-signed").await;
    let double = GoogleIdentityDouble::start(&moto, AUDIENCE, Vec::new());
    double.allow_aws_role(&session.role_arn);
    let role_name = session.role_arn.rsplit('/').next().unwrap().to_owned();
    let metadata = fake_instance_metadata(role_name.clone(), session.credentials.clone()).await;
    let wrong_secret = AwsCredentials::new(
        session.credentials.access_key_id(),
        "not-the-secret-moto-issued",
        session.credentials.session_token().map(str::to_owned),
        None,
        "wrong secret",
    );
    let wrong_metadata = fake_instance_metadata(role_name, wrong_secret).await;
    enforce_iam(&moto, 0).await;

    let build = |metadata: &str| {
        ExternalAccountBuilder::new(aws_external_account(&double, metadata, &moto))
            .with_scopes([SCOPE_CLOUD_PLATFORM])
            .build()
            .expect("the external account configuration builds")
    };
    let signed = bearer_of(&build(&metadata)).await;
    let wrongly_signed = bearer_of(&build(&wrong_metadata)).await;
    stop_enforcing_iam(&moto).await;

    assert!(signed.is_ok(), "the crate's own signature passes: {signed:?}");
    let refused = wrongly_signed.expect_err("a signature with the wrong secret is refused");
    assert!(refused.contains("signature was refused by AWS"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_cloud_auths_own_aws_source_federates_and_impersonates_through_the_double() {
    assert_no_aws_credentials_in_the_environment();
    let scene = scene("wif-crate").await;
    let double = &scene.double;
    let email = double.create_service_account(PROJECT, "tenant-umbrella");
    double.grant(&email, TOKEN_CREATOR_ROLE, &double.member_of_role(&scene.deliverer.role_arn));

    let role_name = scene.deliverer.role_arn.rsplit('/').next().unwrap().to_owned();
    let metadata = fake_instance_metadata(role_name, scene.deliverer.credentials.clone()).await;
    let mut config = aws_external_account(double, &metadata, &moto_endpoint());
    config["service_account_impersonation_url"] = json!(double.impersonation_url(&email));
    let credentials = ExternalAccountBuilder::new(config)
        .with_scopes([SHEETS_SCOPE])
        .build()
        .expect("the external account configuration builds");
    let token = bearer_of(&credentials).await.expect("the crate federates and impersonates");

    let registry = scene.sheets.registry();
    assert_eq!(verify_bearer(&registry, Some(&format!("Bearer {token}")), &[SHEETS_SCOPE]), Ok(email.clone()));
    let log = double.requests();
    let last_two: Vec<(&str, u16)> = log.iter().rev().take(2).map(|r| (r.path.as_str(), r.status)).collect();
    assert_eq!(
        last_two,
        [(format!("/v1/projects/-/serviceAccounts/{email}:generateAccessToken").as_str(), 200), ("/v1/token", 200)]
    );
}
