//! The customer-side harness (`integration_tests::customer`) and the fault
//! proxy against moto's servers: that the accounts, roles, users and policies
//! it sets up behave as the deliverer's tests assume, that mail and presigned
//! links can be read back, that the proxy really breaks an SDK upload, and —
//! on the auth server, with IAM enforcement on — that the delivery grant is
//! write-only and revocable.
//!
//! Needs `MOTO_ENDPOINT` and `MOTO_AUTH_ENDPOINT` (scripts/test.sh starts
//! both). Tests on the shared server work in buckets of their own and tell
//! their mail apart by unique recipients; the one test on the auth server
//! holds `lock_auth_server` throughout.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::SdkConfig;
use aws_sdk_s3::config::SharedCredentialsProvider;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_sdk_ses::types::{Body, Content, Destination, Message, RawMessage};
use integration_tests::customer::{
    account_admin, account_config, admin_user, create_delivery_role, create_delivery_user, enforce_iam, http_get,
    keys_under, lock_auth_server, open_multipart_uploads, sent_emails, set_user_put_object, stop_enforcing_iam,
    with_keys, OpenUpload,
};
use integration_tests::fault_proxy::FaultProxy;
use integration_tests::{fresh_bucket, moto_auth_endpoint, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::store::s3_client;

/// The emulator's default account: the one `sdk_config`'s credentials act as.
const OUR_ACCOUNT: &str = "123456789012";
const CUSTOMER_ACCOUNT: &str = "222222222222";
const MIB: usize = 1024 * 1024;

/// Our configuration, and one acting as the customer's account.
async fn ours_and_customers(endpoint: &str) -> (SdkConfig, SdkConfig) {
    let ours = sdk_config(endpoint).await;
    let customer = account_config(&ours, CUSTOMER_ACCOUNT).await;
    (ours, customer)
}

/// Credentials of `role_arn` assumed with `external_id` through `ours`, as the
/// deliverer gets them.
async fn assumed_role(ours: &SdkConfig, role_arn: &str, external_id: &str) -> SdkConfig {
    let provider = AssumeRoleProvider::builder(role_arn)
        .external_id(external_id)
        .session_name("delivery")
        .configure(ours)
        .build()
        .await;
    ours.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
}

async fn put(client: &Client, bucket: &str, key: &str, body: &'static [u8]) -> Result<(), String> {
    client.put_object().bucket(bucket).key(key).body(ByteStream::from_static(body)).send().await.map(drop).map_err(
        |e| {
            let code = e.code().map(str::to_owned);
            code.unwrap_or_else(|| DisplayErrorContext(&e).to_string())
        },
    )
}

async fn get(client: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => Ok(object.body.collect().await.map_err(|e| e.to_string())?.to_vec()),
        Err(e) => Err(e.code().map_or_else(|| DisplayErrorContext(&e).to_string(), str::to_owned)),
    }
}

/// Whether `config`'s account lists `bucket` among its buckets.
async fn lists_bucket(config: &SdkConfig, bucket: &str) -> bool {
    let buckets = s3_client(config).list_buckets().send().await.unwrap();
    buckets.buckets().iter().filter_map(|b| b.name()).any(|name| name == bucket)
}

/// A bucket of the customer's, unique to the caller.
async fn customer_bucket(customer: &SdkConfig) -> String {
    fresh_bucket(&s3_client(customer), "customer").await
}

#[tokio::test]
async fn an_assumed_account_owns_what_it_creates() {
    let (ours, customer) = ours_and_customers(&moto_endpoint()).await;
    let identity = aws_sdk_sts::Client::new(&customer).get_caller_identity().send().await.unwrap();
    assert_eq!(identity.account(), Some(CUSTOMER_ACCOUNT));

    let bucket = customer_bucket(&customer).await;
    assert!(lists_bucket(&customer, &bucket).await, "the customer's ListBuckets lacks its bucket");
    assert!(!lists_bucket(&ours, &bucket).await, "our account lists the customer's bucket");

    // Without enforcement moto lets any account write (and read) any bucket:
    // only the auth server tells grants apart.
    put(&s3_client(&ours), &bucket, "x", b"x").await.unwrap();
    assert_eq!(get(&s3_client(&ours), &bucket, "x").await, Ok(b"x".to_vec()));
}

#[tokio::test]
async fn a_delivery_role_assumed_with_the_external_id_writes_into_the_customers_bucket() {
    let (ours, customer) = ours_and_customers(&moto_endpoint()).await;
    let bucket = customer_bucket(&customer).await;
    let role_name = unique_bucket_name("delivery-role");
    let role_arn = create_delivery_role(&customer, &role_name, OUR_ACCOUNT, "mm-acme-7f3c", &bucket).await;
    assert_eq!(role_arn, format!("arn:aws:iam::{CUSTOMER_ACCOUNT}:role/{role_name}"));

    let role = assumed_role(&ours, &role_arn, "mm-acme-7f3c").await;
    let identity = aws_sdk_sts::Client::new(&role).get_caller_identity().send().await.unwrap();
    assert_eq!(identity.account(), Some(CUSTOMER_ACCOUNT));
    put(&s3_client(&role), &bucket, "massive/track_popularity/run-1/part-001.json", b"[]").await.unwrap();

    assert_eq!(keys_under(&ours, &bucket, "massive/").await, ["massive/track_popularity/run-1/part-001.json"]);
    assert!(keys_under(&ours, &bucket, "other/").await.is_empty());
}

#[tokio::test]
async fn a_delivery_users_keys_can_put_objects() {
    let (ours, customer) = ours_and_customers(&moto_endpoint()).await;
    let bucket = customer_bucket(&customer).await;
    let (key_id, secret) = create_delivery_user(&customer, &unique_bucket_name("delivery-user"), &bucket, true).await;
    assert!(!key_id.is_empty() && !secret.is_empty());

    let user = s3_client(&with_keys(&ours, &key_id, &secret));
    put(&user, &bucket, "reports/a.json", b"{}").await.unwrap();
    assert_eq!(keys_under(&ours, &bucket, "").await, ["reports/a.json"]);
}

#[tokio::test]
async fn open_multipart_uploads_are_listed_until_aborted() {
    let ours = sdk_config(&moto_endpoint()).await;
    let client = s3_client(&ours);
    let bucket = fresh_bucket(&client, "open-uploads").await;
    assert!(open_multipart_uploads(&ours, &bucket).await.is_empty());

    let created = client.create_multipart_upload().bucket(&bucket).key("big/part-001.json").send().await.unwrap();
    let upload_id = created.upload_id().unwrap().to_owned();
    assert_eq!(
        open_multipart_uploads(&ours, &bucket).await,
        [OpenUpload { key: "big/part-001.json".into(), upload_id: upload_id.clone() }]
    );

    client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key("big/part-001.json")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    assert!(open_multipart_uploads(&ours, &bucket).await.is_empty());
    assert!(keys_under(&ours, &bucket, "").await.is_empty());
}

#[tokio::test]
async fn sent_mail_is_read_back_plain_and_raw() {
    let endpoint = moto_endpoint();
    let ses = aws_sdk_ses::Client::new(&sdk_config(&endpoint).await);
    let sender = "reports@massive.example";
    ses.verify_email_identity().email_address(sender).send().await.unwrap();
    let to = format!("{}@acme.example", unique_bucket_name("inbox"));
    let cc = format!("{}@acme.example", unique_bucket_name("cc"));

    let content = |text: &str| Content::builder().data(text).build().unwrap();
    ses.send_email()
        .source(sender)
        .destination(Destination::builder().to_addresses(&to).cc_addresses(&cc).build())
        .message(
            Message::builder()
                .subject(content("Weekly tracks"))
                .body(Body::builder().text(content("plain")).html(content("<p>html</p>")).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let raw = format!("From: {sender}\r\nTo: {to}\r\nSubject: Raw report\r\n\r\nraw body\r\n");
    ses.send_raw_email()
        .destinations(&to)
        .raw_message(RawMessage::builder().data(aws_sdk_ses::primitives::Blob::new(raw.clone())).build().unwrap())
        .send()
        .await
        .unwrap();

    let mine: Vec<_> = sent_emails(&endpoint).await.into_iter().filter(|mail| mail.is_to(&to)).collect();
    assert_eq!(mine.len(), 2, "{mine:#?}");
    let plain = &mine[0];
    assert_eq!(plain.source, sender);
    assert_eq!(plain.destinations, [to.clone(), cc]);
    assert_eq!(plain.subject.as_deref(), Some("Weekly tracks"));
    assert_eq!(plain.body.as_deref(), Some("<p>html</p>"), "moto keeps the Html part only");
    let raw_sent = &mine[1];
    assert_eq!(raw_sent.destinations, [to], "repeats removed");
    assert_eq!(raw_sent.raw_data.as_deref(), Some(raw.as_str()));
    assert_eq!(raw_sent.subject, None);
}

#[tokio::test]
async fn a_presigned_link_is_fetched_with_http_get() {
    let ours = sdk_config(&moto_endpoint()).await;
    let client = s3_client(&ours);
    let bucket = fresh_bucket(&client, "presigned").await;
    put(&client, &bucket, "downloads/report.tsv", b"trackId\tsearchRank\n").await.unwrap();

    let link = client
        .get_object()
        .bucket(&bucket)
        .key("downloads/report.tsv")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(604_800)).unwrap())
        .await
        .unwrap();
    assert!(link.uri().starts_with("http://127.0.0.1:"), "{}", link.uri());
    assert_eq!(http_get(link.uri()).await, (200, b"trackId\tsearchRank\n".to_vec()));
    let (status, _) = http_get(&format!("{}/{bucket}/downloads/missing.tsv", moto_endpoint())).await;
    assert_eq!(status, 404);
}

/// Uploads one 6 MiB part through `client`; the part's error code or text.
async fn upload_part(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<String, String> {
    client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from(vec![b'x'; 6 * MIB]))
        .send()
        .await
        .map(|part| part.e_tag().unwrap_or_default().to_owned())
        .map_err(|e| match &e {
            SdkError::ServiceError(_) => e.code().unwrap_or("unknown").to_owned(),
            _ => DisplayErrorContext(&e).to_string(),
        })
}

#[tokio::test]
async fn the_fault_proxy_breaks_an_upload_once_and_lets_the_abort_through() {
    let endpoint = moto_endpoint();
    let ours = sdk_config(&endpoint).await;
    let bucket = fresh_bucket(&s3_client(&ours), "fault-proxy").await;
    let proxy = FaultProxy::start(&endpoint);
    let proxied = sdk_config(&proxy.endpoint()).await;
    let no_retries = Client::from_conf(
        aws_sdk_s3::config::Builder::from(&proxied)
            .force_path_style(true)
            .retry_config(RetryConfig::disabled())
            .build(),
    );

    let key = "reports/part-001.json";
    let created = no_retries.create_multipart_upload().bucket(&bucket).key(key).send().await.unwrap();
    let upload_id = created.upload_id().unwrap();
    proxy.break_after_upstream_bytes(MIB as u64);
    let failed = upload_part(&no_retries, &bucket, key, upload_id).await;
    assert!(failed.is_err(), "the part went through a cut connection: {failed:?}");
    assert_eq!(proxy.faults_fired(), 1);
    assert!(!proxy.is_armed());

    // Disarmed: the abort goes through the same proxy.
    no_retries.abort_multipart_upload().bucket(&bucket).key(key).upload_id(upload_id).send().await.unwrap();
    assert!(open_multipart_uploads(&ours, &bucket).await.is_empty());

    // With the SDK's default retries, the retry after a cut succeeds.
    let retrying = s3_client(&proxied);
    let created = retrying.create_multipart_upload().bucket(&bucket).key(key).send().await.unwrap();
    let upload_id = created.upload_id().unwrap();
    proxy.break_after_upstream_bytes(MIB as u64);
    let e_tag = upload_part(&retrying, &bucket, key, upload_id).await.expect("the retried part");
    assert_eq!(proxy.faults_fired(), 2);
    retrying
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(CompletedPart::builder().part_number(1).e_tag(e_tag).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(keys_under(&ours, &bucket, "").await, [key]);
    // 1 MiB before each cut, then the whole retried part.
    assert!(proxy.bytes_forwarded_upstream() > 8 * MIB as u64, "{proxy:?}");
}

/// Every check that needs IAM enforcement, in one test: moto's switch is
/// global to the auth server.
#[tokio::test]
async fn with_iam_enforced_the_delivery_grant_is_write_only_and_revocable() {
    let endpoint = moto_auth_endpoint();
    let _serial = lock_auth_server(&endpoint).await;

    // Everyone and everything is set up while enforcement is off.
    let admin = admin_user(&endpoint).await;
    let (_, customer) = ours_and_customers(&endpoint).await;
    let customer_admin = account_admin(&customer).await;
    let bucket = customer_bucket(&customer).await;
    put(&s3_client(&customer), &bucket, "existing.json", b"{}").await.unwrap();
    let writer_name = unique_bucket_name("writer");
    let (writer_id, writer_secret) = create_delivery_user(&customer, &writer_name, &bucket, true).await;
    let (other_id, other_secret) = create_delivery_user(&customer, &unique_bucket_name("no-put"), &bucket, false).await;
    let role_arn = create_delivery_role(&customer, &unique_bucket_name("role"), OUR_ACCOUNT, "ext-1", &bucket).await;
    let writer = s3_client(&with_keys(&admin, &writer_id, &writer_secret));
    let other = s3_client(&with_keys(&admin, &other_id, &other_secret));

    enforce_iam(&endpoint, 0).await;
    let (checks_endpoint, checks_bucket, checks_admin) = (endpoint.clone(), bucket.clone(), admin.clone());
    let checks = async move {
        let (endpoint, bucket, admin) = (checks_endpoint, checks_bucket, checks_admin);
        // The default test keys are unknown to IAM.
        assert_eq!(
            put(&s3_client(&sdk_config(&endpoint).await), &bucket, "t", b"t").await,
            Err("InvalidAccessKeyId".into())
        );
        put(&s3_client(&admin), &bucket, "by-admin.json", b"{}").await.expect("admin may write anywhere");

        put(&writer, &bucket, "by-writer.json", b"{}").await.expect("with s3:PutObject");
        assert_eq!(put(&other, &bucket, "by-other.json", b"{}").await, Err("AccessDenied".into()));
        assert_eq!(put(&writer, &customer_bucket(&customer_admin).await, "x", b"x").await, Err("AccessDenied".into()));
        for reader in [&writer, &other] {
            assert_eq!(get(reader, &bucket, "existing.json").await, Err("AccessDenied".into()));
        }

        // Multipart: create, upload part and complete need s3:PutObject; the
        // abort needs s3:AbortMultipartUpload; listing open uploads needs
        // s3:ListBucketMultipartUploads.
        let created = writer.create_multipart_upload().bucket(&bucket).key("mp.json").send().await.unwrap();
        let upload_id = created.upload_id().unwrap();
        upload_part(&writer, &bucket, "mp.json", upload_id).await.expect("UploadPart with s3:PutObject");
        let uploads = writer.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
        assert_eq!(uploads.uploads().len(), 1);
        writer.abort_multipart_upload().bucket(&bucket).key("mp.json").upload_id(upload_id).send().await.unwrap();
        let denied = other.create_multipart_upload().bucket(&bucket).key("mp2.json").send().await.unwrap_err();
        assert_eq!(denied.code(), Some("AccessDenied"));

        // The role, assumed by our admin with the external id, writes only.
        let role = s3_client(&assumed_role(&admin, &role_arn, "ext-1").await);
        put(&role, &bucket, "by-role.json", b"{}").await.expect("the role has s3:PutObject");
        assert_eq!(get(&role, &bucket, "by-role.json").await, Err("AccessDenied".into()));

        // Revoking s3:PutObject takes effect at once.
        set_user_put_object(&customer_admin, &writer_name, &bucket, false).await;
        assert_eq!(put(&writer, &bucket, "after-revoke.json", b"{}").await, Err("AccessDenied".into()));
        set_user_put_object(&customer_admin, &writer_name, &bucket, true).await;
        put(&writer, &bucket, "after-restore.json", b"{}").await.expect("restored");
    };
    // Switch enforcement off again before any assertion failure propagates.
    let outcome = tokio::spawn(checks).await;
    stop_enforcing_iam(&endpoint).await;
    if let Err(panicked) = outcome {
        std::panic::resume_unwind(panicked.into_panic());
    }

    assert_eq!(
        keys_under(&admin, &bucket, "").await,
        ["after-restore.json", "by-admin.json", "by-role.json", "by-writer.json", "existing.json"]
    );
}
