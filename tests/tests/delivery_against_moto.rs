//! fanout, deliver-s3 and deliver-email against moto's server (S3, STS, IAM,
//! SES, Secrets Manager), driven by the sample events in `events/`: a
//! cross-account role and a customer's keys receive the parts byte for byte
//! (or converted, parsed and compared) with `_manifest.json` last; email
//! links fetch the same bytes and carry the signer's key and the stated
//! expiry; repeated events create one job, one set of objects and one
//! email; malformed tenant secrets each name their field while a valid
//! tenant is delivered; a connection cut mid-upload leaves nothing behind
//! and the retry delivers; no secret value is ever logged; a tenant whose
//! secret is scheduled for deletion is skipped, not retried.

use bytes::Bytes;
use integration_tests::customer::{
    account_config, create_delivery_role, create_delivery_user, emails_to, http_get, keys_under, links_in, mime_bodies,
    open_multipart_uploads, sent_emails,
};
use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, event_for_key, pinned_now, publish_synthetic_run,
    run_id, sample_event, staging_store, synthetic_items, unique_tenant_prefix, RUN_ID,
};
use integration_tests::fault_proxy::FaultProxy;
use integration_tests::reports::gunzip;
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::destination_files::DestinationManifest;
use popularity_reports::delivery::{DeliverDeps, JobDisposition, JobError};
use popularity_reports::delivery::{DeliveryOutcome, DeliveryStatus, JobKind};
use popularity_reports::domain::ReportKind;
use popularity_reports::handlers::deliver::{handle_deliverer_event, DeliverError};
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::manifest::RunManifest;
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const OUR_ACCOUNT: &str = "123456789012";
const ROLE_ACCOUNT: &str = "222222222222";
const KEYS_ACCOUNT: &str = "333333333333";
const SENDER: &str = "reports@popularity.example";

/// A customer bucket in another account, and the tenant secret that reaches it.
struct Customer {
    config: aws_config::SdkConfig,
    bucket: String,
    /// Values that must never be logged.
    secrets: Vec<String>,
}

/// acme: s3-role into account 222222222222 (feed `all`, canonical JSON) and
/// email (feed `weekly-tracks`, TSV track report, weekly).
async fn onboard_acme(admin: &aws_config::SdkConfig, prefix: &str, recipient: &str) -> Customer {
    let account = account_config(admin, ROLE_ACCOUNT).await;
    let bucket = fresh_bucket(&s3_client(&account), "acme-data").await;
    let external_id = popularity_reports::tenant::new_external_id("acme").unwrap();
    let role_name = unique_bucket_name("popularity-delivery");
    let role_arn = create_delivery_role(&account, &role_name, OUR_ACCOUNT, &external_id, &bucket).await;
    let secret = json!({
        "schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": true,
        "connectors": {
            "inbox": {"type": "email", "recipients": [recipient]},
            "lake": {"type": "s3-role", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
                     "prefix": "massive/", "roleArn": role_arn, "externalId": external_id}
        },
        "feeds": [
            {"id": "all", "connector": "lake"},
            {"id": "weekly-tracks", "connector": "inbox", "reports": ["track"], "format": "tsv",
             "intervalSeconds": 604800}
        ]
    });
    create_raw_secret(admin, &format!("{prefix}acme"), &secret.to_string()).await;
    Customer { config: account, bucket, secrets: vec![external_id] }
}

/// beta-music: s3-keys of an IAM user in account 333333333333, feed
/// `lake-tsv` as gzip TSV.
async fn onboard_beta(admin: &aws_config::SdkConfig, prefix: &str) -> Customer {
    let account = account_config(admin, KEYS_ACCOUNT).await;
    let bucket = fresh_bucket(&s3_client(&account), "beta-data").await;
    let (access_key_id, secret_access_key) =
        create_delivery_user(&account, &unique_bucket_name("delivery"), &bucket, true).await;
    let secret = json!({
        "schemaVersion": 1, "tenantId": "beta-music", "plan": "trial", "enabled": true,
        "connectors": {
            "lake": {"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
                     "prefix": "", "accessKeyId": access_key_id, "secretAccessKey": secret_access_key}
        },
        "feeds": [{"id": "lake-tsv", "connector": "lake", "format": "tsv", "compression": "gzip"}]
    });
    create_raw_secret(admin, &format!("{prefix}beta-music"), &secret.to_string()).await;
    Customer { config: account, bucket, secrets: vec![secret_access_key] }
}

fn tenants(admin: &aws_config::SdkConfig, prefix: &str) -> SecretsManagerTenants {
    SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap()
}

fn s3_deps(
    admin: &aws_config::SdkConfig,
    destinations: &aws_config::SdkConfig,
    staging: &S3Store,
    prefix: &str,
) -> DeliverDeps<S3Store, SecretsManagerTenants, S3Deliverer<S3Store>> {
    DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(admin, prefix),
        deliverer: S3Deliverer {
            staging: staging.clone(),
            destinations: S3Destinations::new(destinations.clone(), vec![staging.bucket().to_owned()]),
        },
        now: pinned_now,
    }
}

type EmailDeps = DeliverDeps<S3Store, SecretsManagerTenants, EmailDeliverer<S3Store, S3LinkSigner, SesMailer>>;

fn email_deps(
    admin: &aws_config::SdkConfig,
    staging: &S3Store,
    prefix: &str,
    signer_secret: Option<String>,
) -> EmailDeps {
    DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(admin, prefix),
        deliverer: EmailDeliverer {
            staging: staging.clone(),
            signer: S3LinkSigner::new(admin.clone(), staging.bucket(), signer_secret, 604_800),
            mailer: SesMailer::new(admin),
            sender: SENDER.to_owned(),
            now: chrono::Utc::now,
        },
        now: pinned_now,
    }
}

async fn verify_sender(admin: &aws_config::SdkConfig) {
    aws_sdk_ses::Client::new(admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
}

async fn status_of(staging: &S3Store, tenant: &str, feed: &str) -> DeliveryStatus {
    let body = staging.get(&format!("status/{RUN_ID}/{tenant}/{feed}.json")).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn get_object(config: &aws_config::SdkConfig, bucket: &str, key: &str) -> Bytes {
    S3Store::new(s3_client(config), bucket, "").get(key).await.unwrap()
}

/// The items of a canonical JSON part as (id, rank, modifier text).
fn json_rows(kind: ReportKind, body: &[u8]) -> Vec<(i64, u64, String)> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
    items
        .iter()
        .map(|v| {
            (
                v[kind.id_field()].as_i64().unwrap(),
                v["searchRank"].as_u64().unwrap(),
                format!("{:?}", v["searchModifier"].as_f64().unwrap()),
            )
        })
        .collect()
}

fn tsv_rows(kind: ReportKind, text: &str) -> Vec<(i64, u64, String)> {
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), format!("{}\tsearchRank\tsearchModifier", kind.id_field()));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_keys_deliver_every_part_with_the_manifest_last_and_repeats_change_nothing() {
    let logs = capture_logs();
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging").await;
    let prefix = unique_tenant_prefix("tenants");
    let manifest = publish_synthetic_run(&staging, run_id(), 2_500, 1_000).await;
    let recipient = format!("{}@acme.example", unique_bucket_name("data"));
    let acme = onboard_acme(&admin, &prefix, &recipient).await;
    let beta = onboard_beta(&admin, &prefix).await;

    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let first =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    assert_eq!((first.tenants, first.jobs_created, first.jobs_already_existing), (2, 3, 0));
    let repeat =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    assert_eq!((repeat.jobs_created, repeat.jobs_already_existing), (0, 3), "a repeated event creates no job");
    let jobs = staging.list("jobs/").await.unwrap();
    let job_keys: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(
        job_keys,
        [
            format!("jobs/email/{RUN_ID}/acme/weekly-tracks.json"),
            format!("jobs/s3/{RUN_ID}/acme/all.json"),
            format!("jobs/s3/{RUN_ID}/beta-music/lake-tsv.json"),
        ]
    );
    for job in &jobs {
        let body = String::from_utf8(staging.get(&job.key).await.unwrap().to_vec()).unwrap();
        for secret in acme.secrets.iter().chain(&beta.secrets) {
            assert!(!body.contains(secret.as_str()), "job {} holds a credential", job.key);
        }
    }

    // s3-role, canonical format: byte for byte.
    let deps = s3_deps(&admin, &admin, &staging, &prefix);
    let delivered = handle_deliverer_event(&deps, sample_event("deliver-s3/job-created.json"), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let keys = keys_under(&acme.config, &acme.bucket, "massive/").await;
    let mut expected_keys = Vec::new();
    for report in &manifest.reports {
        for (index, part) in report.parts.iter().enumerate() {
            let key = format!("massive/{}/{RUN_ID}/part-{:03}.json", report.data_type, index + 1);
            assert_eq!(get_object(&acme.config, &acme.bucket, &key).await, staging.get(&part.key).await.unwrap());
            expected_keys.push(key);
        }
        let manifest_key = format!("massive/{}/{RUN_ID}/_manifest.json", report.data_type);
        let destination: DestinationManifest =
            serde_json::from_slice(&get_object(&acme.config, &acme.bucket, &manifest_key).await).unwrap();
        assert_eq!(destination.rows, report.rows);
        assert_eq!(destination.run_id, run_id());
        let listed: Vec<(String, u64, String)> =
            destination.parts.iter().map(|p| (p.part.key.clone(), p.part.rows, p.part.sha256.clone())).collect();
        let wanted: Vec<(String, u64, String)> = report
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (format!("massive/{}/{RUN_ID}/part-{:03}.json", report.data_type, i + 1), p.rows, p.sha256.clone())
            })
            .collect();
        assert_eq!(listed, wanted);
        expected_keys.push(manifest_key);
    }
    expected_keys.sort();
    assert_eq!(keys, expected_keys);
    let status = status_of(&staging, "acme", "all").await;
    assert_eq!(status.outcome, DeliveryOutcome::Delivered);
    assert_eq!(status.objects.len(), expected_keys.len());

    // The same job event again: nothing is written, the status keeps one attempt.
    let again = handle_deliverer_event(&deps, sample_event("deliver-s3/job-created.json"), None).await.unwrap();
    assert_eq!(again.jobs[0].disposition, JobDisposition::AlreadyDelivered);
    assert_eq!(status_of(&staging, "acme", "all").await.attempts.len(), 1);

    // s3-keys, converted to gzip TSV (the event's key is URL-encoded): parsed and compared.
    let converted =
        handle_deliverer_event(&deps, sample_event("deliver-s3/job-created-url-encoded.json"), None).await.unwrap();
    assert_eq!(converted.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    for (kind, report) in ReportKind::ALL.into_iter().zip(&manifest.reports) {
        let mut delivered_rows = Vec::new();
        let mut staged_rows = Vec::new();
        for (index, part) in report.parts.iter().enumerate() {
            let key = format!("{}/{RUN_ID}/part-{:03}.tsv.gz", report.data_type, index + 1);
            delivered_rows.extend(tsv_rows(kind, &gunzip(&get_object(&beta.config, &beta.bucket, &key).await)));
            staged_rows.extend(json_rows(kind, &staging.get(&part.key).await.unwrap()));
        }
        assert_eq!(delivered_rows, staged_rows, "{}", report.data_type);
        assert_eq!(delivered_rows.len() as u64, report.rows);
        let destination: DestinationManifest = serde_json::from_slice(
            &get_object(&beta.config, &beta.bucket, &format!("{}/{RUN_ID}/_manifest.json", report.data_type)).await,
        )
        .unwrap();
        assert_eq!(destination.format, popularity_reports::domain::Format::Tsv);
        assert_eq!(destination.compression, popularity_reports::domain::Compression::Gzip);
        for part in &destination.parts {
            let body = get_object(&beta.config, &beta.bucket, &part.part.key).await;
            assert_eq!(
                (body.len() as u64, integration_tests::reports::sha256_hex(&body)),
                (part.part.bytes, part.part.sha256.clone())
            );
        }
    }
    assert!(open_multipart_uploads(&acme.config, &acme.bucket).await.is_empty());
    assert!(open_multipart_uploads(&beta.config, &beta.bucket).await.is_empty());

    let secrets: Vec<&str> = acme.secrets.iter().chain(&beta.secrets).map(String::as_str).collect();
    assert_logs_hold_none_of(&logs, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_links_fetch_the_reports_carry_the_signer_key_and_one_email_is_sent() {
    let logs = capture_logs();
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    verify_sender(&admin).await;
    let staging = staging_store(&admin, "staging-email").await;
    let prefix = unique_tenant_prefix("tenants-email");
    publish_synthetic_run(&staging, run_id(), 1_200, 500).await;
    let recipient = format!("{}@acme.example", unique_bucket_name("inbox"));
    let acme = onboard_acme(&admin, &prefix, &recipient).await;
    let signer_secret_name = format!("{prefix}link-signer-keys");
    let signer_key_id = format!("AKIA{}", unique_bucket_name("signer").replace('-', "").to_uppercase());
    let signer_key_id = &signer_key_id[..20.min(signer_key_id.len())];
    let signer_secret_key = "Sig/ner+Secret/Key/For/Links/0123456789ab";
    // Outside the tenant prefix, so fanout does not read it as a tenant.
    let signer_secret_name = signer_secret_name.replace("/tenants/", "/signer/");
    create_raw_secret(
        &admin,
        &signer_secret_name,
        &json!({"accessKeyId": signer_key_id, "secretAccessKey": signer_secret_key}).to_string(),
    )
    .await;

    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    let deps = email_deps(&admin, &staging, &prefix, Some(signer_secret_name.clone()));
    let sent = handle_deliverer_event(&deps, sample_event("deliver-email/job-created.json"), None).await.unwrap();
    assert_eq!(sent.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    // The same job through the URL-encoded event: already delivered, no second email.
    let repeat =
        handle_deliverer_event(&deps, sample_event("deliver-email/job-created-url-encoded.json"), None).await.unwrap();
    assert_eq!(repeat.jobs[0].disposition, JobDisposition::AlreadyDelivered);

    let emails = emails_to(&sent_emails(&endpoint).await, &recipient);
    assert_eq!(emails.len(), 1, "exactly one email per run per feed");
    let (text, html) = mime_bodies(emails[0].raw_data.as_deref().unwrap());
    assert!(text.contains("track_popularity: 1200 rows"), "{text}");
    assert!(!text.contains("artist_popularity"), "the feed asked for the track report only");
    let expires = chrono::Utc::now() + chrono::Duration::days(7);
    assert!(text.contains(&expires.format("%Y-%m-%d").to_string()) && text.contains("7 days"), "{text}");
    let links = links_in(&text);
    assert_eq!(links.len(), 3, "one link per part: {text}");
    let staged_rows: Vec<_> = synthetic_items(ReportKind::Track, 1_200)
        .iter()
        .map(|i| (i.id, i.search_rank, format!("{:?}", i.search_modifier())))
        .collect();
    let mut linked_rows = Vec::new();
    for link in &links {
        assert!(link.contains(&format!("X-Amz-Credential={signer_key_id}")), "signed by the signer: {link}");
        assert!(link.contains("X-Amz-Expires=604800"), "{link}");
        assert!(link.contains("/downloads/acme/") && link.contains(".tsv"), "{link}");
        assert!(html.contains(&link.replace('&', "&amp;")), "the html lists the same link");
        let (status, body) = http_get(link).await;
        assert_eq!(status, 200, "{link}");
        linked_rows.extend(tsv_rows(ReportKind::Track, std::str::from_utf8(&body).unwrap()));
    }
    assert_eq!(linked_rows, staged_rows);
    let status = status_of(&staging, "acme", "weekly-tracks").await;
    assert_eq!((status.outcome, status.attempts.len(), status.objects.len()), (DeliveryOutcome::Delivered, 1, 3));

    let mut secrets: Vec<&str> = acme.secrets.iter().map(String::as_str).collect();
    secrets.push(signer_secret_key);
    assert_logs_hold_none_of(&logs, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signer_secret_links_use_own_credentials_and_state_their_shorter_expiry() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    verify_sender(&admin).await;
    let staging = staging_store(&admin, "staging-own").await;
    let prefix = unique_tenant_prefix("tenants-own");
    let manifest = publish_synthetic_run(&staging, run_id(), 300, 1_000).await;
    let recipient = format!("{}@acme.example", unique_bucket_name("own"));
    onboard_acme(&admin, &prefix, &recipient).await;
    // Session credentials that expire in six hours, as a Lambda role's do.
    let expiry = std::time::SystemTime::now() + std::time::Duration::from_secs(6 * 3600);
    let session = integration_tests::customer::with_credentials(
        &admin,
        aws_credential_types_shim::credentials("ASIASESSIONKEY", "session-secret", Some(expiry)),
    );
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    let mut deps = email_deps(&admin, &staging, &prefix, None);
    deps.deliverer.signer = S3LinkSigner::new(session, staging.bucket(), None, 604_800);
    // Canonical format for this tenant's email: link straight at reports/.
    let job_key = format!("jobs/email/{RUN_ID}/acme/weekly-tracks.json");
    let mut job: serde_json::Value = serde_json::from_slice(&staging.get(&job_key).await.unwrap()).unwrap();
    job["format"] = json!("json");
    staging.put(&job_key, Bytes::from(job.to_string()), "application/json").await.unwrap();
    handle_deliverer_event(&deps, event_for_key(&job_key), None).await.unwrap();

    let emails = emails_to(&sent_emails(&endpoint).await, &recipient);
    assert_eq!(emails.len(), 1);
    let (text, _) = mime_bodies(emails[0].raw_data.as_deref().unwrap());
    assert!(text.contains("sooner than usual") && text.contains("hours after this email"), "{text}");
    let links = links_in(&text);
    assert_eq!(links.len(), 1);
    assert!(links[0].contains("X-Amz-Credential=ASIASESSIONKEY"), "{}", links[0]);
    let expires: u64 = links[0].split("X-Amz-Expires=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    assert!((6 * 3600 - 600..=6 * 3600).contains(&expires), "X-Amz-Expires={expires}");
    assert!(links[0].contains(&format!("/reports/track_popularity/{RUN_ID}/part-001.json")), "{}", links[0]);
    let (_, body) = http_get(&links[0]).await;
    assert_eq!(body, staging.get(&manifest.reports[0].parts[0].key).await.unwrap().to_vec());
}

/// Builds credentials without naming the credential-types crate in this file.
mod aws_credential_types_shim {
    pub fn credentials(
        key: &str,
        secret: &str,
        expiry: Option<std::time::SystemTime>,
    ) -> aws_sdk_s3::config::Credentials {
        aws_sdk_s3::config::Credentials::new(key, secret, Some("session-token".to_owned()), expiry, "tests")
    }
}

/// Malformed secrets, one per row: (tenant id in the secret name, value, the
/// field path the status must name).
fn malformed_secrets() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    let valid = |tenant: &str| {
        json!({
            "schemaVersion": 1, "tenantId": tenant, "plan": "standard", "enabled": true,
            "connectors": {
                "inbox": {"type": "email", "recipients": ["ops@tenant.example"]},
                "lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::tenant-data", "region": "eu-west-1",
                         "prefix": "massive/", "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery",
                         "externalId": format!("pr-{tenant}-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b")}
            },
            "feeds": [{"id": "all", "connector": "lake"}]
        })
    };
    let edit = |tenant: &'static str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut value = valid(tenant);
        change(&mut value);
        value
    };
    vec![
        (
            "bad-connector-ref",
            edit("bad-connector-ref", &|v| v["feeds"][0]["connector"] = json!("lake2")),
            "feeds[0].connector",
        ),
        (
            "no-external-id",
            edit("no-external-id", &|v| {
                v["connectors"]["lake"].as_object_mut().unwrap().remove("externalId");
            }),
            "connectors.lake.externalId",
        ),
        (
            "short-interval",
            edit("short-interval", &|v| v["feeds"][0]["intervalSeconds"] = json!(120)),
            "feeds[0].intervalSeconds",
        ),
        (
            "long-interval",
            edit("long-interval", &|v| v["feeds"][0]["intervalSeconds"] = json!(604801)),
            "feeds[0].intervalSeconds",
        ),
        ("unknown-field", edit("unknown-field", &|v| v["colour"] = json!("blue")), "colour"),
        ("wrong-type", edit("wrong-type", &|v| v["enabled"] = json!("yes")), "enabled"),
        ("id-mismatch", edit("someone-else", &|_| {}), "tenantId"),
        (
            "bad-email",
            edit("bad-email", &|v| v["connectors"]["inbox"]["recipients"] = json!(["not-an-address"])),
            "connectors.inbox.recipients[0]",
        ),
        (
            "bad-role-arn",
            edit("bad-role-arn", &|v| v["connectors"]["lake"]["roleArn"] = json!("arn:aws:iam::12:role/x")),
            "connectors.lake.roleArn",
        ),
        (
            "bad-bucket-arn",
            edit("bad-bucket-arn", &|v| v["connectors"]["lake"]["bucketArn"] = json!("s3://tenant-data")),
            "connectors.lake.bucketArn",
        ),
        (
            "unknown-type",
            edit("unknown-type", &|v| v["connectors"]["lake"]["type"] = json!("ftp")),
            "connectors.lake.type",
        ),
        ("bad-format", edit("bad-format", &|v| v["feeds"][0]["format"] = json!("csv")), "feeds[0].format"),
        ("bad-report", edit("bad-report", &|v| v["feeds"][0]["reports"] = json!(["album"])), "feeds[0].reports[0]"),
        (
            "too-many-feeds",
            edit("too-many-feeds", &|v| {
                v["plan"] = json!("trial");
                v["feeds"] = json!([{"id": "a", "connector": "lake"}, {"id": "b", "connector": "inbox"}]);
            }),
            "feeds",
        ),
        ("bad-schema-version", edit("bad-schema-version", &|v| v["schemaVersion"] = json!(2)), "schemaVersion"),
        (
            "duplicate-feed",
            edit("duplicate-feed", &|v| {
                v["feeds"] = json!([{"id": "a", "connector": "lake"}, {"id": "a", "connector": "inbox"}])
            }),
            "feeds[1].id",
        ),
        (
            "bad-region",
            edit("bad-region", &|v| v["connectors"]["lake"]["region"] = json!("mars-1")),
            "connectors.lake.region",
        ),
        ("not-json", json!("{not json"), "(root)"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_tenant_secret_gets_a_status_naming_its_field_and_a_valid_tenant_is_delivered() {
    let logs = capture_logs();
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-malformed").await;
    let prefix = unique_tenant_prefix("tenants-malformed");
    publish_synthetic_run(&staging, run_id(), 400, 1_000).await;
    let table = malformed_secrets();
    assert!(table.len() >= 15);
    for (name, value, _) in &table {
        let text = match value {
            serde_json::Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        create_raw_secret(&admin, &format!("{prefix}{name}"), &text).await;
    }
    let beta = onboard_beta(&admin, &prefix).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let response =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    assert_eq!(response.invalid_tenants, table.len() as u64);
    assert_eq!(response.jobs_created, 1);
    for (name, _, field) in &table {
        let status = status_of(&staging, name, "_tenant").await;
        assert_eq!(status.outcome, DeliveryOutcome::Invalid, "{name}");
        let error = status.last_error.unwrap();
        assert!(error.contains(&format!("{field}:")), "{name}: expected {field} in {error}");
        assert!(!error.contains("7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b"), "{name}: the external id leaked into the status");
    }
    let deps = s3_deps(&admin, &admin, &staging, &prefix);
    let delivered =
        handle_deliverer_event(&deps, sample_event("deliver-s3/job-created-url-encoded.json"), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    assert_eq!(keys_under(&beta.config, &beta.bucket, "").await.len(), 6);
    let mut secrets: Vec<&str> = beta.secrets.iter().map(String::as_str).collect();
    secrets.push("7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b");
    assert_logs_hold_none_of(&logs, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_upload_leaves_nothing_and_the_retry_delivers() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-fault").await;
    let prefix = unique_tenant_prefix("tenants-fault");
    // One part of ~25 MB per report: a multipart upload of 4 parts.
    let manifest: RunManifest = publish_synthetic_run(&staging, run_id(), 400_000, 1_000_000).await;
    assert!(manifest.reports[0].parts[0].bytes > 3 * 8 * 1024 * 1024);
    let recipient = format!("{}@acme.example", unique_bucket_name("fault"));
    let acme = onboard_acme(&admin, &prefix, &recipient).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();

    let proxy = FaultProxy::start(&endpoint);
    let through_proxy = admin
        .to_builder()
        .endpoint_url(proxy.endpoint())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let deps = s3_deps(&admin, &through_proxy, &staging, &prefix);
    // Cut the connection in the middle of the second 8 MiB part.
    proxy.break_after_upstream_bytes(12 * 1024 * 1024);
    let error = handle_deliverer_event(&deps, sample_event("deliver-s3/job-created.json"), None).await.unwrap_err();
    assert!(matches!(error, DeliverError::Job(JobError::Failed { .. })), "{error}");
    assert_eq!(proxy.faults_fired(), 1);
    let status = status_of(&staging, "acme", "all").await;
    assert_eq!(status.outcome, DeliveryOutcome::Failed);
    let cause = status.last_error.clone().unwrap();
    assert!(cause.contains("UploadPart") && cause.contains("part-001.json"), "{cause}");
    assert!(keys_under(&acme.config, &acme.bucket, "").await.is_empty(), "no partial object");
    assert!(open_multipart_uploads(&acme.config, &acme.bucket).await.is_empty(), "the upload was aborted");

    let retried = handle_deliverer_event(&deps, sample_event("deliver-s3/job-created.json"), None).await.unwrap();
    assert_eq!(retried.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let status = status_of(&staging, "acme", "all").await;
    let outcomes: Vec<DeliveryOutcome> = status.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [DeliveryOutcome::Failed, DeliveryOutcome::Delivered]);
    assert_eq!(status.last_error.as_deref(), Some(cause.as_str()), "the failure stays on record");
    let key = format!("massive/track_popularity/{RUN_ID}/part-001.json");
    assert_eq!(
        get_object(&acme.config, &acme.bucket, &key).await,
        staging.get(&manifest.reports[0].parts[0].key).await.unwrap()
    );
    assert!(open_multipart_uploads(&acme.config, &acme.bucket).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_connectors_disabled_tenants_and_feeds_not_due_get_a_status_not_silence() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-skips").await;
    let prefix = unique_tenant_prefix("tenants-skips");
    // An earlier run a week minus a day ago, in which acme's weekly feed was delivered.
    let earlier: popularity_reports::domain::RunId = "20261113030000".parse().unwrap();
    publish_synthetic_run(&staging, earlier, 10, 10).await;
    let delivered_earlier = DeliveryStatus::first_record(
        earlier,
        "acme",
        "weekly-tracks",
        earlier.time(),
        earlier.time(),
        popularity_reports::delivery::AttemptResult::Delivered(Vec::new()),
    );
    staging
        .put(
            &format!("status/{earlier}/acme/weekly-tracks.json"),
            Bytes::from(serde_json::to_vec(&delivered_earlier).unwrap()),
            "application/json",
        )
        .await
        .unwrap();
    publish_synthetic_run(&staging, run_id(), 10, 10).await;
    let recipient = format!("{}@acme.example", unique_bucket_name("skip"));
    onboard_acme(&admin, &prefix, &recipient).await;
    let gcs = json!({
        "schemaVersion": 1, "tenantId": "gamma", "plan": "standard", "enabled": true,
        "connectors": {"gcs": {"type": "gcs", "bucket": "gamma-data", "prefix": "",
            "serviceAccountJson": {"type": "service_account", "project_id": "p", "private_key_id": "k",
                "private_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
                "client_email": "writer@p.iam.gserviceaccount.com", "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token"}},
            "sheet": {"type": "google-sheets", "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit", "maxRows": 100},
            "inbox": {"type": "email", "recipients": ["x@gamma.example"]}},
        "feeds": [{"id": "to-gcs", "connector": "gcs"}, {"id": "to-sheet", "connector": "sheet"},
                  {"id": "delta", "connector": "inbox", "mode": "delta"}]
    });
    create_raw_secret(&admin, &format!("{prefix}gamma"), &gcs.to_string()).await;
    let disabled = json!({
        "schemaVersion": 1, "tenantId": "delta-co", "plan": "trial", "enabled": false,
        "connectors": {"inbox": {"type": "email", "recipients": ["x@delta.example"]}},
        "feeds": [{"id": "default", "connector": "inbox"}]
    });
    create_raw_secret(&admin, &format!("{prefix}delta-co"), &disabled.to_string()).await;

    // A weekly feed last delivered exactly 7 days before this run is due again.
    let week_ago: popularity_reports::domain::RunId = "20261112030000".parse().unwrap();
    publish_synthetic_run(&staging, week_ago, 10, 10).await;
    let delivered_week_ago = DeliveryStatus::first_record(
        week_ago,
        "weekly-co",
        "weekly",
        week_ago.time(),
        week_ago.time(),
        popularity_reports::delivery::AttemptResult::Delivered(Vec::new()),
    );
    staging
        .put(
            &format!("status/{week_ago}/weekly-co/weekly.json"),
            Bytes::from(serde_json::to_vec(&delivered_week_ago).unwrap()),
            "application/json",
        )
        .await
        .unwrap();
    let weekly = json!({
        "schemaVersion": 1, "tenantId": "weekly-co", "plan": "trial", "enabled": true,
        "connectors": {"inbox": {"type": "email", "recipients": ["x@weekly.example"]}},
        "feeds": [{"id": "weekly", "connector": "inbox", "intervalSeconds": 604800}]
    });
    create_raw_secret(&admin, &format!("{prefix}weekly-co"), &weekly.to_string()).await;

    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let response =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    assert_eq!(
        response.jobs_created, 5,
        "acme's s3 feed, gamma's gcs, sheets and delta feeds, and weekly-co's feed whose week has passed"
    );
    let delta_job: popularity_reports::delivery::DeliveryJob =
        serde_json::from_slice(&staging.get(&format!("jobs/email/{RUN_ID}/gamma/delta.json")).await.unwrap()).unwrap();
    assert_eq!(delta_job.plan.mode, popularity_reports::manifest::DeliveryMode::Full, "a first delivery is full");
    assert!(delta_job.plan.full_reason.unwrap().contains("no earlier delivery of this feed"));
    assert!(staging.get(&format!("jobs/email/{RUN_ID}/weekly-co/weekly.json")).await.is_ok());
    assert!(staging.get(&format!("jobs/gcs/{RUN_ID}/gamma/to-gcs.json")).await.is_ok(), "gcs is supported");
    assert!(staging.get(&format!("jobs/sheets/{RUN_ID}/gamma/to-sheet.json")).await.is_ok(), "sheets too");
    let expectations =
        [("acme", "weekly-tracks", "not due: delivered in run 20261113030000"), ("delta-co", "default", "disabled")];
    for (tenant, feed, reason) in expectations {
        let status = status_of(&staging, tenant, feed).await;
        assert_eq!(status.outcome, DeliveryOutcome::Skipped, "{tenant}/{feed}");
        let error = status.last_error.unwrap();
        assert!(error.contains(reason), "{tenant}/{feed}: {error}");
    }
    assert!(staging.get(&format!("jobs/{}/{RUN_ID}/acme/weekly-tracks.json", JobKind::Email)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bucket_policy_writes_with_our_own_credentials_into_the_customers_bucket() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-policy").await;
    let prefix = unique_tenant_prefix("tenants-policy");
    let manifest = publish_synthetic_run(&staging, run_id(), 700, 1_000).await;
    // A bucket in the customer's account; moto lets our account write into it
    // as a bucket policy trusting our account would.
    let account = account_config(&admin, "444444444444").await;
    let bucket = fresh_bucket(&s3_client(&account), "policy-dest").await;
    let secret = json!({
        "schemaVersion": 1, "tenantId": "delta-co", "plan": "trial", "enabled": true,
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": "from-massive/", "bucketOwnerAccountId": "444444444444"}},
        "feeds": [{"id": "default", "connector": "lake", "reports": ["artist"]}]
    });
    create_raw_secret(&admin, &format!("{prefix}delta-co"), &secret.to_string()).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    let deps = s3_deps(&admin, &admin, &staging, &prefix);
    let job_key = format!("jobs/s3/{RUN_ID}/delta-co/default.json");
    let delivered = handle_deliverer_event(&deps, event_for_key(&job_key), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let keys = keys_under(&account, &bucket, "").await;
    assert_eq!(
        keys,
        [
            format!("from-massive/artist_popularity/{RUN_ID}/_manifest.json"),
            format!("from-massive/artist_popularity/{RUN_ID}/part-001.json"),
        ]
    );
    let part = get_object(&account, &bucket, &keys[1]).await;
    assert_eq!(part, staging.get(&manifest.reports[1].parts[0].key).await.unwrap());
}

/// An attempt killed mid-upload (a Lambda timeout) cannot abort its own
/// multipart upload; the next attempt aborts every upload left open in the
/// run's folder of each report it delivers — and nothing elsewhere.
#[tokio::test]
async fn the_next_attempt_aborts_uploads_a_killed_attempt_left_open_in_the_customers_bucket() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-killed").await;
    let prefix = unique_tenant_prefix("tenants-killed");
    publish_synthetic_run(&staging, run_id(), 700, 1_000).await;
    let account = account_config(&admin, "444444444444").await;
    let bucket = fresh_bucket(&s3_client(&account), "killed-dest").await;
    let secret = json!({
        "schemaVersion": 1, "tenantId": "echo-co", "plan": "trial", "enabled": true,
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": "in/", "bucketOwnerAccountId": "444444444444"}},
        "feeds": [{"id": "default", "connector": "lake", "reports": ["artist"]}]
    });
    create_raw_secret(&admin, &format!("{prefix}echo-co"), &secret.to_string()).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();

    // What a killed attempt leaves: an upload with a part, in this run's
    // folder; and one in an earlier run's folder, which is not ours to touch.
    let client = s3_client(&admin);
    let this_run = format!("in/artist_popularity/{RUN_ID}/part-001.json");
    let other_run = "in/artist_popularity/20261116030000/part-001.json";
    for key in [this_run.as_str(), other_run] {
        let upload = client.create_multipart_upload().bucket(&bucket).key(key).send().await.unwrap();
        let upload_id = upload.upload_id().unwrap();
        let body = aws_sdk_s3::primitives::ByteStream::from(vec![b'x'; 1024]);
        client
            .upload_part()
            .bucket(&bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(1)
            .body(body)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(open_multipart_uploads(&admin, &bucket).await.len(), 2);

    let deps = s3_deps(&admin, &admin, &staging, &prefix);
    let job_key = format!("jobs/s3/{RUN_ID}/echo-co/default.json");
    let delivered = handle_deliverer_event(&deps, event_for_key(&job_key), None).await.unwrap();
    assert_eq!(delivered.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let left_open: Vec<String> = open_multipart_uploads(&admin, &bucket).await.into_iter().map(|u| u.key).collect();
    assert_eq!(left_open, [other_run], "only the earlier run's upload is left");
    assert_eq!(
        keys_under(&account, &bucket, "").await,
        [format!("in/artist_popularity/{RUN_ID}/_manifest.json"), this_run.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_tenants_into_one_folder_the_first_keeps_delivering_and_the_newcomer_is_refused_without_naming_it() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-collide").await;
    let prefix = unique_tenant_prefix("tenants-collide");
    publish_synthetic_run(&staging, run_id(), 10, 10).await;
    let keys = |bucket: &str, folder: &str| {
        json!({"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
               "prefix": folder, "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "x".repeat(40)})
    };
    for (tenant, bucket, folder) in
        [("acme", "shared-lake", "feeds/"), ("beta", "shared-lake", "feeds/beta/"), ("gamma", "gamma-lake", "")]
    {
        let secret = json!({"schemaVersion": 1, "tenantId": tenant, "plan": "trial",
            "connectors": {"lake": keys(bucket, folder)}, "feeds": [{"id": "all", "connector": "lake"}]});
        create_raw_secret(&admin, &format!("{prefix}{tenant}"), &secret.to_string()).await;
    }
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    let response =
        handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    // acme's secret was created first (and, within one second, sorts first).
    assert_eq!(response.jobs_created, 2, "acme and gamma");
    assert!(staging.get(&format!("jobs/s3/{RUN_ID}/gamma/all.json")).await.is_ok());
    assert!(staging.get(&format!("jobs/s3/{RUN_ID}/acme/all.json")).await.is_ok(), "the first tenant keeps its place");
    let status = status_of(&staging, "beta", "all").await;
    assert_eq!(status.outcome, DeliveryOutcome::Invalid);
    let error = status.last_error.unwrap();
    assert!(
        error.contains("writes to s3://shared-lake/feeds/beta/, where another tenant's feed already delivers"),
        "{error}"
    );
    assert!(!error.contains("acme"), "the other tenant is not named: {error}");
    assert!(staging.get(&format!("jobs/s3/{RUN_ID}/beta/all.json")).await.is_err(), "beta got a job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stacks_own_buckets_are_never_a_destination_at_fanout_or_at_delivery() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let staging = staging_store(&admin, "staging-own").await;
    let prefix = unique_tenant_prefix("tenants-own");
    publish_synthetic_run(&staging, run_id(), 50, 50).await;
    let policy = |bucket: &str| {
        json!({"schemaVersion": 1, "tenantId": "sneaky", "plan": "trial",
            "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{bucket}"),
                "region": "us-east-1", "prefix": "reports/", "bucketOwnerAccountId": "123456789012"}},
            "feeds": [{"id": "default", "connector": "lake", "reports": ["artist"]}]})
    };
    create_raw_secret(&admin, &format!("{prefix}sneaky"), &policy(staging.bucket()).to_string()).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    let status = status_of(&staging, "sneaky", "default").await;
    assert_eq!(status.outcome, DeliveryOutcome::Invalid);
    let error = status.last_error.unwrap();
    assert!(error.contains("is one of this stack's own buckets"), "{error}");
    assert!(staging.get(&format!("jobs/s3/{RUN_ID}/sneaky/default.json")).await.is_err(), "no job");

    // A job made while the secret named another bucket, delivered after it
    // was changed to the staging bucket: refused before any write.
    let staging_2 = staging_store(&admin, "staging-own-2").await;
    publish_synthetic_run(&staging_2, run_id(), 50, 50).await;
    let elsewhere = fresh_bucket(&s3_client(&admin), "own-elsewhere").await;
    let prefix_2 = unique_tenant_prefix("tenants-own-2");
    create_raw_secret(&admin, &format!("{prefix_2}sneaky"), &policy(&elsewhere).to_string()).await;
    let fanout = FanoutDeps {
        staging: staging_2.clone(),
        tenants: tenants(&admin, &prefix_2),
        own_buckets: vec![staging_2.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    secrets_manager_client(&admin)
        .put_secret_value()
        .secret_id(format!("{prefix_2}sneaky"))
        .secret_string(policy(staging_2.bucket()).to_string())
        .send()
        .await
        .unwrap();
    let before = staging_2.list("reports/").await.unwrap();
    let deps = s3_deps(&admin, &admin, &staging_2, &prefix_2);
    let job_key = format!("jobs/s3/{RUN_ID}/sneaky/default.json");
    let handled = handle_deliverer_event(&deps, event_for_key(&job_key), None).await.unwrap();
    assert_eq!(handled.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Invalid));
    let body = staging_2.get(&format!("status/{RUN_ID}/sneaky/default.json")).await.unwrap();
    let status: DeliveryStatus = serde_json::from_slice(&body).unwrap();
    assert!(status.last_error.unwrap().contains("is one of this stack's own buckets"));
    assert_eq!(staging_2.list("reports/").await.unwrap(), before, "nothing written beside the reports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_secret_is_scheduled_for_deletion_is_skipped_not_retried() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "staging-leaving").await;
    let prefix = unique_tenant_prefix("tenants-leaving");
    publish_synthetic_run(&staging, run_id(), 20, 20).await;
    let beta = onboard_beta(&admin, &prefix).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    // The customer leaves after fanout: the operator deletes the secret with
    // a recovery window, so it is only scheduled for deletion.
    secrets_manager_client(&admin)
        .delete_secret()
        .secret_id(format!("{prefix}beta-music"))
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();

    let deps = s3_deps(&admin, &admin, &staging, &prefix);
    let done = handle_deliverer_event(&deps, sample_event("deliver-s3/job-created-url-encoded.json"), None)
        .await
        .expect("a skipped job succeeds: no retry");
    assert_eq!(done.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Skipped));
    let status = status_of(&staging, "beta-music", "lake-tsv").await;
    assert_eq!((status.outcome, status.attempts.len()), (DeliveryOutcome::Skipped, 1));
    let reason = status.last_error.unwrap();
    assert!(reason.contains("scheduled for deletion") && reason.contains("nothing was delivered"), "{reason}");
    assert!(keys_under(&beta.config, &beta.bucket, "").await.is_empty(), "nothing delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_recipients_the_most_validation_allows_each_receive_the_email_exactly_once() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    verify_sender(&admin).await;
    let staging = staging_store(&admin, "staging-fifty").await;
    let prefix = unique_tenant_prefix("tenants-fifty");
    publish_synthetic_run(&staging, run_id(), 30, 30).await;
    let unique = unique_bucket_name("fifty");
    let recipients: Vec<String> = (0..popularity_reports::tenant::MAX_EMAIL_RECIPIENTS)
        .map(|i| format!("reader-{i:02}-{unique}@acme.example"))
        .collect();
    let secret = json!({
        "schemaVersion": 1, "tenantId": "acme", "plan": "enterprise", "enabled": true,
        "connectors": {"inbox": {"type": "email", "recipients": recipients}},
        "feeds": [{"id": "weekly-tracks", "connector": "inbox", "reports": ["track"]}]
    });
    let parsed = popularity_reports::tenant::parse_tenant_secret("acme", &secret.to_string());
    assert!(parsed.is_ok(), "50 recipients pass validation: {:?}", parsed.err());
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(&admin, &prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();

    let deps = email_deps(&admin, &staging, &prefix, None);
    let sent = handle_deliverer_event(&deps, sample_event("deliver-email/job-created.json"), None).await;
    let sent = sent.unwrap_or_else(|e| panic!("50 validated recipients must be deliverable: {e}"));
    assert_eq!(sent.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered));

    let all = sent_emails(&endpoint).await;
    let ours: Vec<_> = all.iter().filter(|m| recipients.iter().any(|r| m.is_to(r))).collect();
    assert_eq!(ours.len(), 1, "one message for the run and feed");
    let raw = ours[0].raw_data.as_deref().expect("sent as a raw message");
    let headers = raw.split("\r\n\r\n").next().unwrap().replace("\r\n ", " ");
    let to: Vec<&str> =
        headers.lines().find_map(|l| l.strip_prefix("To: ")).expect("a To: header").split(',').map(str::trim).collect();
    for recipient in &recipients {
        assert_eq!(emails_to(&all, recipient).len(), 1, "{recipient} receives one email");
        assert_eq!(to.iter().filter(|a| *a == recipient).count(), 1, "{recipient} is named once");
    }
    assert_eq!(to.len(), recipients.len(), "no one else: {to:?}");
    assert_eq!(ours[0].destinations.len(), recipients.len(), "moto counted 50 recipients");
}
