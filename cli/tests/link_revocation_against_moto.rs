//! Per-tenant link revocation against moto: two tenants are emailed a run
//! through deliver-email's handler (links to their own copies under
//! `links/<tenantId>/`), every link fetches; `popularity tenant revoke-links
//! acme` makes acme's links answer 404 while beta's still fetch; storing
//! beta disabled with `popularity tenant add` revokes beta's too; revoking
//! again deletes nothing. A retried delivery of an email job copies
//! nothing again and signs the same links.

use std::process::Output;

use integration_tests::customer::{emails_to, http_get, links_in, mime_bodies, sent_emails};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, sample_event, staging_store,
    unique_tenant_prefix, RUN_ID,
};
use integration_tests::{create_kms_key, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, LinkSigner, S3LinkSigner, SesMailer};
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, JobDisposition};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::store::{ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const SENDER: &str = "reports@popularity.example";

fn tenant(tenant_id: &str, recipient: &str, enabled: bool) -> serde_json::Value {
    json!({"schemaVersion": 1, "tenantId": tenant_id, "plan": "standard", "enabled": enabled,
        "connectors": {"inbox": {"type": "email", "recipients": [recipient]}},
        "feeds": [{"id": "mail", "connector": "inbox", "reports": ["track"]}]})
}

fn popularity(staging: &str, prefix: &str, args: &[&str], kms_key: Option<&str>) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_popularity"));
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("STAGING_BUCKET", staging)
        .env("TENANT_SECRET_PREFIX", prefix)
        .env_remove("TENANT_SECRETS_KMS_KEY_ID");
    if let Some(key) = kms_key {
        command.env("TENANT_SECRETS_KMS_KEY_ID", key);
    }
    command.output().expect("the popularity binary runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The links of the one email sent to `recipient`.
async fn links_to(endpoint: &str, recipient: &str) -> Vec<String> {
    let emails = emails_to(&sent_emails(endpoint).await, recipient);
    assert_eq!(emails.len(), 1, "one email to {recipient}");
    let (text, _) = mime_bodies(emails[0].raw_data.as_deref().unwrap());
    let links = links_in(&text);
    assert!(!links.is_empty(), "{text}");
    links
}

async fn statuses(links: &[String]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for link in links {
        statuses.push(http_get(link).await.0);
    }
    statuses
}

type EmailDeps = DeliverDeps<S3Store, SecretsManagerTenants, EmailDeliverer<S3Store, S3LinkSigner, SesMailer>>;

fn email_deps(admin: &aws_config::SdkConfig, staging: &S3Store, prefix: &str, signer_secret: &str) -> EmailDeps {
    DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap(),
        deliverer: EmailDeliverer {
            staging: staging.clone(),
            signer: S3LinkSigner::new(admin.clone(), staging.bucket(), Some(signer_secret.to_owned()), 604_800),
            mailer: SesMailer::new(admin),
            sender: SENDER.to_owned(),
            now: chrono::Utc::now,
        },
        now: pinned_now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_links_and_disabling_stop_that_tenants_links_and_no_others() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    let kms_key = create_kms_key(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, "revoke-links").await;
    let prefix = unique_tenant_prefix("revoke-links");
    publish_synthetic_run(&staging, run_id(), 900, 400).await;
    let acme_inbox = format!("{}@acme.example", unique_bucket_name("revoke"));
    let beta_inbox = format!("{}@beta.example", unique_bucket_name("revoke"));
    create_raw_secret(&admin, &format!("{prefix}acme"), &tenant("acme", &acme_inbox, true).to_string()).await;
    create_raw_secret(&admin, &format!("{prefix}beta"), &tenant("beta", &beta_inbox, true).to_string()).await;
    let signer_secret = format!("{}/link-signer", unique_bucket_name("revoke"));
    create_raw_secret(
        &admin,
        &signer_secret,
        &json!({"accessKeyId": "AKIALINKSIGNER000001", "secretAccessKey": "link/signer/secret/key/0123456789abcdef"})
            .to_string(),
    )
    .await;

    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&admin), &prefix).unwrap(),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, sample_event("fanout/manifest-created.json"), pinned_now()).await.unwrap();
    let deps = email_deps(&admin, &staging, &prefix, &signer_secret);
    for tenant_id in ["acme", "beta"] {
        let job = format!("jobs/email/{RUN_ID}/{tenant_id}/mail.json");
        let sent = handle_deliverer_event(&deps, event_for_key(&job), None).await.unwrap();
        assert_eq!(sent.jobs[0].disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered), "{tenant_id}");
    }
    let acme_links = links_to(&endpoint, &acme_inbox).await;
    let beta_links = links_to(&endpoint, &beta_inbox).await;
    for link in &acme_links {
        assert!(link.contains(&format!("/links/acme/{RUN_ID}/mail/reports/")), "a copy of acme's own: {link}");
    }
    assert!(statuses(&acme_links).await.iter().chain(&statuses(&beta_links).await).all(|s| *s == 200));
    let acme_copies = staging.list(&format!("links/acme/{RUN_ID}/mail/")).await.unwrap();
    assert_eq!(acme_copies.len(), acme_links.len() + 1, "one copy per link and the _signed-at marker");

    // What a retried attempt prepares (the same sources, in the same
    // folder) copies nothing again and signs the very same links.
    let before = staging.list(&format!("links/acme/{RUN_ID}/mail/")).await.unwrap();
    let copies = popularity_reports::delivery::connectors::email::link_copies::prepare_link_copies(
        &staging,
        &format!("links/acme/{RUN_ID}/mail/"),
        &before
            .iter()
            .filter(|entry| !entry.key.ends_with("_signed-at"))
            .map(|entry| (entry.key.trim_start_matches(&format!("links/acme/{RUN_ID}/mail/")).to_owned(), entry.size))
            .collect::<Vec<_>>(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(copies.copied, 0, "nothing copied twice");
    let signed_again = deps.deliverer.signer.sign(&copies.keys, copies.signed_at).await.unwrap();
    let mut sorted_sent = acme_links.clone();
    sorted_sent.sort();
    let mut sorted_again = signed_again.urls.clone();
    sorted_again.sort();
    assert_eq!(sorted_again, sorted_sent, "a message sent again carries the same links");

    let revoked = popularity(staging.bucket(), &prefix, &["tenant", "revoke-links", "acme"], None);
    let out = text(&revoked);
    assert!(revoked.status.success(), "{out}");
    assert!(
        out.contains(&format!("revoked the links of tenant acme: {} link copies deleted", acme_links.len() + 1)),
        "{out}"
    );
    let acme_after = statuses(&acme_links).await;
    assert!(acme_after.iter().all(|s| *s == 404 || *s == 403), "acme's links stop working: {acme_after:?}");
    assert!(statuses(&beta_links).await.iter().all(|s| *s == 200), "beta's links still work");
    let again = popularity(staging.bucket(), &prefix, &["tenant", "revoke-links", "acme"], None);
    assert!(text(&again).contains("0 link copies deleted"), "{}", text(&again));

    // Disabling beta through `tenant add` revokes beta's links.
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), tenant("beta", &beta_inbox, false).to_string()).unwrap();
    let path = file.path().to_str().unwrap();
    let without_bucket = popularity("", &prefix, &["tenant", "add", path], Some(&kms_key));
    let out = text(&without_bucket);
    assert!(!without_bucket.status.success() && out.contains("nothing was stored"), "{out}");
    assert!(statuses(&beta_links).await.iter().all(|s| *s == 200), "nothing revoked when nothing was stored");
    let disabled = popularity(staging.bucket(), &prefix, &["tenant", "add", path], Some(&kms_key));
    let out = text(&disabled);
    assert!(disabled.status.success(), "{out}");
    assert!(out.contains("tenant beta is disabled: its links are revoked"), "{out}");
    let beta_after = statuses(&beta_links).await;
    assert!(
        beta_after.iter().all(|s| *s == 404 || *s == 403),
        "a disabled tenant's links stop working: {beta_after:?}"
    );

    let bad = popularity(staging.bucket(), &prefix, &["tenant", "revoke-links", "Not/A/Tenant"], None);
    assert!(!bad.status.success() && text(&bad).contains("is not a tenant id"), "{}", text(&bad));
}
