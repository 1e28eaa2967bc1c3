//! The customer's side of a delivery, set up in moto for tests of the
//! deliverer: credentials acting as another AWS account, the delivery role or
//! IAM user a customer creates for us (with the exact policy documents the
//! customer guides in docs/customers/ show), a look behind the customer's bucket (open multipart uploads,
//! keys) with admin credentials, IAM enforcement on the dedicated auth server,
//! the mail moto's SES "sent", and plain HTTP GETs of presigned links.
//!
//! IAM enforcement: moto checks signatures and IAM policies only after
//! [`enforce_iam`], and that switch (with its counter of requests still let
//! through) is global to a server. So tests that use it
//! - run against [`crate::moto_auth_endpoint`], never the shared server;
//! - run serially: keep them in one test binary and hold
//!   [`lock_auth_server`] for the whole test (cargo runs test binaries one
//!   after another, so the lock serialises the whole `cargo test` run);
//! - create every principal they will use while enforcement is still off: an
//!   admin with [`admin_user`] (the default `testing` keys are refused once
//!   enforcement is on: `InvalidAccessKeyId`), an admin of the customer
//!   account with [`account_admin`] if the test changes the customer's IAM
//!   later, the delivery role or user, the buckets;
//! - then call [`enforce_iam`] and finally [`stop_enforcing_iam`].
//!
//! Without enforcement moto checks nothing: any credentials may do anything,
//! and even with it, role trust policies and `sts:ExternalId` conditions are
//! not checked for cross-account roles. See `/work/shared/NOTES.md`.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_s3::error::DisplayErrorContext;
use popularity_reports::store::s3_client;
use serde_json::{json, Value};

use crate::unique_bucket_name;

/// The role [`account_config`] assumes in the target account. moto does not
/// check that it exists.
pub const ACCOUNT_ACCESS_ROLE: &str = "integration-tests-account-access";

/// Name of the inline policy [`create_delivery_role`], [`create_delivery_user`]
/// and [`set_user_put_object`] put on the customer's principal.
pub const DELIVERY_POLICY_NAME: &str = "popularity-reports-delivery";

/// How often [`sent_emails`] asks again while moto answers 500.
const DATA_JSON_ATTEMPTS: u32 = 20;
const DATA_JSON_RETRY_DELAY: Duration = Duration::from_millis(250);
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// Configuration acting as AWS account `account_id` in the emulator: the
/// temporary credentials of an STS `AssumeRole` of
/// `arn:aws:iam::<account_id>:role/integration-tests-account-access` made
/// with `admin`, as static credentials, with `admin`'s endpoint and region.
/// moto does not check the role; buckets and IAM principals created with the
/// result belong to that account.
///
/// With IAM enforcement on, these credentials carry no permissions (the role
/// does not exist): create what the account needs before, or use
/// [`account_admin`].
///
/// # Panics
/// When the emulator refuses the `AssumeRole` call.
pub async fn account_config(admin: &SdkConfig, account_id: &str) -> SdkConfig {
    let role_arn = format!("arn:aws:iam::{account_id}:role/{ACCOUNT_ACCESS_ROLE}");
    let assumed = aws_sdk_sts::Client::new(admin)
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("integration-tests")
        .send()
        .await
        .unwrap_or_else(|e| panic!("AssumeRole {role_arn}: {}", DisplayErrorContext(&e)));
    let credentials = assumed.credentials().unwrap_or_else(|| panic!("AssumeRole {role_arn}: no credentials"));
    let expiry = SystemTime::try_from(*credentials.expiration()).ok();
    with_credentials(
        admin,
        Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            expiry,
            "integration-tests-account",
        ),
    )
}

/// `config` with its credentials replaced by `credentials`.
pub fn with_credentials(config: &SdkConfig, credentials: Credentials) -> SdkConfig {
    config.to_builder().credentials_provider(SharedCredentialsProvider::new(credentials)).build()
}

/// `config` acting with the long-term keys `access_key_id`/`secret`.
pub fn with_keys(config: &SdkConfig, access_key_id: &str, secret: &str) -> SdkConfig {
    with_credentials(config, Credentials::new(access_key_id, secret, None, None, "integration-tests-keys"))
}

/// The trust policy of a customer's delivery role: `sts:AssumeRole` allowed
/// to `arn:aws:iam::<trusted_account_id>:root` (our account) only with
/// `sts:ExternalId` equal to `external_id`.
pub fn delivery_trust_policy(trusted_account_id: &str, external_id: &str) -> String {
    pretty(&json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{trusted_account_id}:root")},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}}
        }]
    }))
}

/// The permissions a customer grants for delivery into `bucket`: write
/// objects (`s3:PutObject`, which covers every multipart upload call but the
/// abort) and abort our multipart uploads (`s3:AbortMultipartUpload`) on
/// `arn:aws:s3:::<bucket>/*`; `s3:ListBucket` and
/// `s3:ListBucketMultipartUploads` on the bucket. No read access. With
/// `include_put_object = false` the same without `s3:PutObject`, for tests of
/// a revoked grant.
pub fn delivery_permissions_policy(bucket: &str, include_put_object: bool) -> String {
    let object_actions: Vec<&str> = if include_put_object {
        vec!["s3:PutObject", "s3:AbortMultipartUpload"]
    } else {
        vec!["s3:AbortMultipartUpload"]
    };
    pretty(&json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteReports",
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": format!("arn:aws:s3:::{bucket}/*")
            },
            {
                "Sid": "SeeOpenUploads",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                "Resource": format!("arn:aws:s3:::{bucket}")
            }
        ]
    }))
}

fn pretty(document: &Value) -> String {
    serde_json::to_string_pretty(document).expect("a JSON value serialises")
}

/// `document` without whitespace, as sent to IAM. With enforcement on, moto
/// checks the signature of a form-encoded request against its parameters
/// re-encoded by Python (spaces as `+`), whereas the Rust SDK sent `%20`: a
/// parameter with a space fails with `SignatureDoesNotMatch`.
fn compact(document: &str) -> String {
    let value: Value = serde_json::from_str(document).expect("our policy documents are JSON");
    value.to_string()
}

/// Creates, in the account `account` acts as, IAM role `role_name` with
/// [`delivery_trust_policy`]`(trusted_account_id, external_id)` and the inline
/// policy [`delivery_permissions_policy`]`(bucket, true)`, and returns its ARN.
///
/// # Panics
/// When the emulator refuses a call.
pub async fn create_delivery_role(
    account: &SdkConfig,
    role_name: &str,
    trusted_account_id: &str,
    external_id: &str,
    bucket: &str,
) -> String {
    let iam = aws_sdk_iam::Client::new(account);
    let created = iam
        .create_role()
        .role_name(role_name)
        .assume_role_policy_document(compact(&delivery_trust_policy(trusted_account_id, external_id)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateRole {role_name}: {}", DisplayErrorContext(&e)));
    let arn =
        created.role().map(|role| role.arn().to_owned()).unwrap_or_else(|| panic!("CreateRole {role_name}: no role"));
    iam.put_role_policy()
        .role_name(role_name)
        .policy_name(DELIVERY_POLICY_NAME)
        .policy_document(compact(&delivery_permissions_policy(bucket, true)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutRolePolicy {role_name}: {}", DisplayErrorContext(&e)));
    arn
}

/// Creates, in the account `account` acts as, IAM user `user_name` with the
/// inline policy [`delivery_permissions_policy`]`(bucket, include_put_object)`
/// and an access key; returns `(access key id, secret access key)`.
///
/// # Panics
/// When the emulator refuses a call.
pub async fn create_delivery_user(
    account: &SdkConfig,
    user_name: &str,
    bucket: &str,
    include_put_object: bool,
) -> (String, String) {
    create_user_with_policy(account, user_name, &delivery_permissions_policy(bucket, include_put_object)).await
}

/// Creates, in the account `account` acts as, IAM user `user_name` allowed
/// exactly `object_actions` on `arn:aws:s3:::<bucket>/*`, `bucket_actions`
/// on the bucket and `account_actions` (such as `s3:ListAllMyBuckets`) on
/// `*`, with an access key; returns `(access key id, secret access key)`.
/// For tests of each grant a customer may or may not give.
///
/// # Panics
/// When the emulator refuses a call.
pub async fn create_user_with_grants(
    account: &SdkConfig,
    user_name: &str,
    bucket: &str,
    object_actions: &[&str],
    bucket_actions: &[&str],
    account_actions: &[&str],
) -> (String, String) {
    let mut statements = Vec::new();
    for (actions, resource) in [
        (object_actions, format!("arn:aws:s3:::{bucket}/*")),
        (bucket_actions, format!("arn:aws:s3:::{bucket}")),
        (account_actions, "*".to_owned()),
    ] {
        if !actions.is_empty() {
            statements.push(json!({"Effect": "Allow", "Action": actions, "Resource": resource}));
        }
    }
    let policy = pretty(&json!({"Version": "2012-10-17", "Statement": statements}));
    create_user_with_policy(account, user_name, &policy).await
}

/// Replaces the inline delivery policy of `user_name` (in the account
/// `account` acts as) with [`delivery_permissions_policy`]`(bucket, allowed)`:
/// `allowed = false` revokes `s3:PutObject`. With IAM enforcement on,
/// `account` must be an admin of that account ([`account_admin`]).
///
/// # Panics
/// When the emulator refuses the call.
pub async fn set_user_put_object(account: &SdkConfig, user_name: &str, bucket: &str, allowed: bool) {
    aws_sdk_iam::Client::new(account)
        .put_user_policy()
        .user_name(user_name)
        .policy_name(DELIVERY_POLICY_NAME)
        .policy_document(compact(&delivery_permissions_policy(bucket, allowed)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutUserPolicy {user_name}: {}", DisplayErrorContext(&e)));
}

async fn create_user_with_policy(account: &SdkConfig, user_name: &str, policy: &str) -> (String, String) {
    let iam = aws_sdk_iam::Client::new(account);
    iam.create_user()
        .user_name(user_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateUser {user_name}: {}", DisplayErrorContext(&e)));
    iam.put_user_policy()
        .user_name(user_name)
        .policy_name(DELIVERY_POLICY_NAME)
        .policy_document(compact(policy))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutUserPolicy {user_name}: {}", DisplayErrorContext(&e)));
    let created = iam
        .create_access_key()
        .user_name(user_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateAccessKey {user_name}: {}", DisplayErrorContext(&e)));
    let key = created.access_key().unwrap_or_else(|| panic!("CreateAccessKey {user_name}: no key"));
    (key.access_key_id().to_owned(), key.secret_access_key().to_owned())
}

/// Creates an admin IAM user (inline policy allowing `*` on `*`, a name unique
/// to this call) in the emulator's default account (`123456789012`) and
/// returns a configuration using its access key. Call it while IAM
/// enforcement is off; its keys keep working once it is on.
pub async fn admin_user(endpoint: &str) -> SdkConfig {
    account_admin(&crate::sdk_config(endpoint).await).await
}

/// Like [`admin_user`], in whichever account `account` acts as (for example
/// the result of [`account_config`]): for changing a customer's IAM while
/// enforcement is on.
///
/// # Panics
/// When the emulator refuses a call (for instance because enforcement is on).
pub async fn account_admin(account: &SdkConfig) -> SdkConfig {
    let user_name = unique_bucket_name("integration-tests-admin");
    let everything = pretty(&json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    }));
    let (access_key_id, secret) = create_user_with_policy(account, &user_name, &everything).await;
    with_keys(account, &access_key_id, &secret)
}

/// Serialises the tests of one binary that use the auth server, and turns
/// enforcement off for a clean start (a test that panicked while enforcing
/// leaves it on). Hold the guard for the whole test.
pub async fn lock_auth_server(endpoint: &str) -> tokio::sync::MutexGuard<'static, ()> {
    static AUTH_SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = AUTH_SERVER.lock().await;
    stop_enforcing_iam(endpoint).await;
    guard
}

/// Turns on moto's IAM enforcement on the server at `endpoint` after
/// `unauthenticated_actions` more requests (usually 0): from then on every
/// request needs a valid signature by a known access key whose policies allow
/// the action. `POST /moto-api/reset-auth` with `Content-Type: text/plain` and
/// the count as the body (moto reads it as a float; other content types leave
/// the body unread). Global to the server: read the module documentation.
///
/// # Panics
/// When moto does not answer 200.
pub async fn enforce_iam(endpoint: &str, unauthenticated_actions: u32) {
    reset_auth(endpoint, &unauthenticated_actions.to_string()).await;
}

/// Turns moto's IAM enforcement off again (`reset-auth` with `inf`, moto's
/// default: every request unauthenticated).
///
/// # Panics
/// When moto does not answer 200.
pub async fn stop_enforcing_iam(endpoint: &str) {
    reset_auth(endpoint, "inf").await;
}

async fn reset_auth(endpoint: &str, count: &str) {
    let url = format!("{}/moto-api/reset-auth", endpoint.trim_end_matches('/'));
    let response = http_client()
        .post(&url)
        .header("Content-Type", "text/plain")
        .body(count.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {url} with {count}: HTTP {status}: {body}");
}

/// A multipart upload still open in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
}

/// The multipart uploads open in `bucket`, by `ListMultipartUploads` (moto's
/// `ListParts` answers do not parse in the Rust SDK), all pages.
///
/// # Panics
/// When the emulator refuses the call.
pub async fn open_multipart_uploads(admin: &SdkConfig, bucket: &str) -> Vec<OpenUpload> {
    let client = s3_client(admin);
    let mut uploads = Vec::new();
    let (mut key_marker, mut upload_id_marker) = (None::<String>, None::<String>);
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(bucket)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListMultipartUploads {bucket}: {}", DisplayErrorContext(&e)));
        uploads.extend(page.uploads().iter().map(|upload| OpenUpload {
            key: upload.key().unwrap_or_default().to_owned(),
            upload_id: upload.upload_id().unwrap_or_default().to_owned(),
        }));
        if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
            return uploads;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
}

/// Every key in `bucket` starting with `prefix` (`""` for all), sorted, by
/// `ListObjectsV2`, all pages.
///
/// # Panics
/// When the emulator refuses the call.
pub async fn keys_under(admin: &SdkConfig, bucket: &str, prefix: &str) -> Vec<String> {
    let client = s3_client(admin);
    let mut keys = Vec::new();
    let mut pages = client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}/{prefix}: {}", DisplayErrorContext(&e)));
        keys.extend(page.contents().iter().filter_map(|object| object.key()).map(str::to_owned));
    }
    keys.sort();
    keys
}

/// One message moto's SES accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    /// moto's message id.
    pub id: String,
    /// The sender (`Source`).
    pub source: String,
    /// Recipients: of a `SendEmail`, To then Cc then Bcc addresses; of a
    /// `SendRawEmail`, moto's list (the `Destinations` parameter plus the
    /// To/Cc/Bcc headers), without repeats.
    pub destinations: Vec<String>,
    /// `SendEmail` only: the subject.
    pub subject: Option<String>,
    /// `SendEmail` only: the body moto kept (the Html part when the message
    /// has both Text and Html, else the Text part).
    pub body: Option<String>,
    /// `SendRawEmail` only: the whole MIME message as sent.
    pub raw_data: Option<String>,
}

impl SentEmail {
    /// Whether `address` is among the recipients.
    pub fn is_to(&self, address: &str) -> bool {
        self.destinations.iter().any(|destination| destination == address)
    }

    /// The body of a plain message or the raw MIME text of a raw one.
    pub fn text(&self) -> &str {
        self.body.as_deref().or(self.raw_data.as_deref()).unwrap_or_default()
    }
}

/// Every message moto's SES has accepted on the server at `endpoint` (all
/// accounts and regions, all tests: filter by recipient), read from
/// `GET /moto-api/data.json`: first the `SendEmail` messages, then the
/// `SendRawEmail` ones, each in sending order.
///
/// The parts of data.json read here (moto 5.2.5):
///
/// ```json
/// {"ses": {
///   "Message": [{
///     "id": "…", "source": "from@example.com", "subject": "…",
///     "body": "<p>Html part if any, else Text part</p>",
///     "destinations": {"ToAddresses": ["a@x"], "CcAddresses": ["c@x"], "BccAddresses": ["b@x"]}
///   }],
///   "RawMessage": [{
///     "id": "…", "source": "from@example.com",
///     "raw_data": "From: …\r\nTo: …\r\nSubject: …\r\n\r\n…",
///     "destinations": ["r@x", "r@x"]
///   }],
///   …}, "s3": {…}, …}
/// ```
///
/// A `Message`'s `destinations` has only the keys given to `SendEmail`. A
/// `RawMessage`'s lists the `Destinations` parameter followed by the header
/// recipients, so one address can appear twice.
///
/// data.json serialises every live moto object, reading each property. An
/// S3 key's `status` property moves its Glacier-restore state on first read
/// ("immediate" progression) and then looks up the key's bucket — which
/// multipart *part* objects do not have (`bucket_name` is None), so the
/// whole answer is a 500, one part object per request, until every part
/// object ever created has been read once or collected. Each test run makes
/// hundreds. So the restore state is first set to progress only by hand
/// (`/moto-api/state-manager/set-transition`, `s3::keyrestore`, manual, never
/// reached): nothing here restores objects from Glacier. Any 500 left is
/// retried, up to 20 times 250 ms apart.
///
/// # Panics
/// When the server cannot be reached, keeps answering 500, or answers
/// something else than JSON of that shape.
pub async fn sent_emails(endpoint: &str) -> Vec<SentEmail> {
    let endpoint = endpoint.trim_end_matches('/');
    let url = format!("{endpoint}/moto-api/data.json");
    let client = http_client();
    let freeze_restores = serde_json::json!({
        "model_name": "s3::keyrestore",
        "transition": {"progression": "manual", "times": 1_000_000_000u64}
    });
    let transition_url = format!("{endpoint}/moto-api/state-manager/set-transition");
    let frozen = client
        .post(&transition_url)
        .body(freeze_restores.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {transition_url}: {e}"));
    assert!(frozen.status().is_success(), "POST {transition_url}: HTTP {}", frozen.status());
    let mut attempt = 1;
    let body = loop {
        let response = client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let body = response.bytes().await.unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        if status.is_success() {
            break body;
        }
        assert!(
            status.as_u16() == 500 && attempt < DATA_JSON_ATTEMPTS,
            "GET {url}: HTTP {status} (attempt {attempt}): {}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        );
        attempt += 1;
        tokio::time::sleep(DATA_JSON_RETRY_DELAY).await;
    };
    let data: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
    parse_sent_emails(&data)
}

/// The messages in a parsed `/moto-api/data.json`; see [`sent_emails`].
///
/// # Panics
/// When a message lacks a field of the documented shape.
pub fn parse_sent_emails(data: &Value) -> Vec<SentEmail> {
    let list = |name: &str| data["ses"][name].as_array().cloned().unwrap_or_default();
    let text = |message: &Value, field: &str| {
        message[field].as_str().map(str::to_owned).unwrap_or_else(|| panic!("SES {field} missing in {message}"))
    };
    let addresses = |value: &Value| -> Vec<String> {
        let mut all = Vec::new();
        for address in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !all.iter().any(|seen| seen == address) {
                all.push(address.to_owned());
            }
        }
        all
    };

    let plain = list("Message").into_iter().map(|message| {
        let destinations = &message["destinations"];
        let mut recipients = Vec::new();
        for field in ["ToAddresses", "CcAddresses", "BccAddresses"] {
            for address in addresses(&destinations[field]) {
                if !recipients.contains(&address) {
                    recipients.push(address);
                }
            }
        }
        SentEmail {
            id: text(&message, "id"),
            source: text(&message, "source"),
            destinations: recipients,
            subject: Some(text(&message, "subject")),
            body: Some(text(&message, "body")),
            raw_data: None,
        }
    });
    let raw = list("RawMessage").into_iter().map(|message| SentEmail {
        id: text(&message, "id"),
        source: text(&message, "source"),
        destinations: addresses(&message["destinations"]),
        subject: None,
        body: None,
        raw_data: Some(text(&message, "raw_data")),
    });
    plain.chain(raw).collect()
}

/// `GET url` over plain HTTP (presigned links to the emulator): the status
/// and the whole body.
///
/// # Panics
/// When the request fails below HTTP (connection refused, timeout).
pub async fn http_get(url: &str) -> (u16, Vec<u8>) {
    let response = http_client().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
    (status, body.to_vec())
}

/// A client that ignores proxy settings of the environment: the emulator is
/// always on 127.0.0.1.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(HTTP_TIMEOUT).build().expect("an HTTP client without TLS builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_the_documented_json() {
        let trust: Value = serde_json::from_str(&delivery_trust_policy("123456789012", "mm-acme-7f3c")).unwrap();
        assert_eq!(trust["Statement"][0]["Principal"]["AWS"], "arn:aws:iam::123456789012:root");
        assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
        assert_eq!(trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"], "mm-acme-7f3c");

        let with_put: Value = serde_json::from_str(&delivery_permissions_policy("acme-data", true)).unwrap();
        assert_eq!(with_put["Statement"][0]["Action"], json!(["s3:PutObject", "s3:AbortMultipartUpload"]));
        assert_eq!(with_put["Statement"][0]["Resource"], "arn:aws:s3:::acme-data/*");
        assert_eq!(with_put["Statement"][1]["Action"], json!(["s3:ListBucket", "s3:ListBucketMultipartUploads"]));
        assert_eq!(with_put["Statement"][1]["Resource"], "arn:aws:s3:::acme-data");
        let without: Value = serde_json::from_str(&delivery_permissions_policy("acme-data", false)).unwrap();
        assert_eq!(without["Statement"][0]["Action"], json!(["s3:AbortMultipartUpload"]));
        assert_eq!(without["Statement"][1], with_put["Statement"][1]);
        assert!(!delivery_permissions_policy("b", true).contains("GetObject"));
    }

    #[test]
    fn sent_emails_are_read_from_both_lists_of_data_json() {
        // Shape as moto 5.2.5 serves it, trimmed.
        let data = json!({"ses": {
            "EmailIdentity": [{"email_identity": "from@example.com"}],
            "Message": [{
                "body": "<p>HTML</p>",
                "destinations": {"ToAddresses": ["h@x.example"], "BccAddresses": ["b@x.example"]},
                "id": "m1", "source": "from@example.com", "subject": "both"
            }],
            "RawMessage": [{
                "destinations": ["r@x.example", "r@x.example", "s@x.example"],
                "id": "r1",
                "raw_data": "From: from@example.com\r\nTo: r@x.example\r\nSubject: raw\r\n\r\nraw body",
                "source": "from@example.com"
            }]
        }, "s3": {}});
        let sent = parse_sent_emails(&data);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].destinations, ["h@x.example", "b@x.example"]);
        assert_eq!(sent[0].subject.as_deref(), Some("both"));
        assert_eq!(sent[0].text(), "<p>HTML</p>");
        assert_eq!(sent[1].destinations, ["r@x.example", "s@x.example"]);
        assert!(sent[1].is_to("s@x.example") && !sent[1].is_to("h@x.example"));
        assert!(sent[1].text().ends_with("raw body"));
        assert_eq!(sent[1].subject, None);

        assert!(parse_sent_emails(&json!({"s3": {}})).is_empty());
    }
}

/// The decoded bodies of a raw MIME email: (text, html).
///
/// # Panics
/// When the message is not a two-part base64 `multipart/alternative`.
pub fn mime_bodies(raw: &str) -> (String, String) {
    use base64::Engine as _;
    let boundary = raw.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap();
    let bodies: Vec<String> = raw
        .split(&format!("--{boundary}"))
        .filter_map(|section| section.split_once("\r\n\r\n").map(|(_, body)| body.replace("\r\n", "")))
        .filter(|body| !body.is_empty() && !body.starts_with("--"))
        .map(|body| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body).unwrap()).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "text and html parts");
    (bodies[0].clone(), bodies[1].clone())
}

/// The http(s) links in a text body, in order.
pub fn links_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(str::to_owned)
        .collect()
}

/// The emails of `all` sent to `recipient`.
pub fn emails_to(all: &[SentEmail], recipient: &str) -> Vec<SentEmail> {
    all.iter().filter(|m| m.is_to(recipient)).cloned().collect()
}

/// A role created in moto's default account (any principal of the account
/// may assume it) and one session of it: what keyless Google's tests and
/// benchmark federate as.
pub struct AssumedRole {
    pub arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl AssumedRole {
    /// `config` acting as the session.
    pub fn config(&self, config: &SdkConfig) -> SdkConfig {
        with_credentials(
            config,
            Credentials::new(
                &self.access_key_id,
                &self.secret_access_key,
                Some(self.session_token.clone()),
                None,
                "assumed-role",
            ),
        )
    }

    /// The session as the AWS SDKs' environment variables, for a child process.
    pub fn environment(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_SESSION_TOKEN", self.session_token.clone()),
        ]
    }
}

/// Creates role `<hint>-<unique>` with `admin` and assumes it.
///
/// # Panics
/// When moto refuses either call.
pub async fn assumed_role(admin: &SdkConfig, hint: &str) -> AssumedRole {
    let name: String = unique_bucket_name(hint).chars().take(64).collect();
    let account = "123456789012";
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "sts:AssumeRole"}]});
    let created = aws_sdk_iam::Client::new(admin)
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateRole {name}: {}", DisplayErrorContext(&e)));
    let arn = created.role().expect("CreateRole returns the role").arn().to_owned();
    let session: String = hint.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
    assume_role(admin, &arn, &session).await
}

/// A session of the role `arn`, assumed with `admin`.
///
/// # Panics
/// When moto refuses the call.
pub async fn assume_role(admin: &SdkConfig, arn: &str, session_name: &str) -> AssumedRole {
    let assumed = aws_sdk_sts::Client::new(admin)
        .assume_role()
        .role_arn(arn)
        .role_session_name(session_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("AssumeRole {arn}: {}", DisplayErrorContext(&e)));
    let c = assumed.credentials().expect("AssumeRole returns credentials");
    AssumedRole {
        arn: arn.to_owned(),
        access_key_id: c.access_key_id().to_owned(),
        secret_access_key: c.secret_access_key().to_owned(),
        session_token: c.session_token().to_owned(),
    }
}
