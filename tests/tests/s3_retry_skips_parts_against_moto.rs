//! deliver-s3 against moto's server: a retried delivery skips the parts an
//! earlier attempt of the same job delivered, by what that attempt recorded
//! in the status object (destination key, bytes, SHA-256 of the staging
//! part) — customers grant only `s3:PutObject`, so nothing is read back
//! from their bucket — and uploads the rest, then each `_manifest.json`.
//! The customer's bucket is reached through the fault proxy (retries off),
//! which cuts the first attempt's connection part-way through a later part
//! and counts the bytes the retry sends; a destination that changed since
//! (another prefix) gets every part again.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use integration_tests::customer::{account_config, keys_under, open_multipart_uploads};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, unique_tenant_prefix,
    RUN_ID,
};
use integration_tests::fault_proxy::FaultProxy;
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::destination_files::DestinationManifest;
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, DeliveryStatus, JobDisposition, JobError};
use popularity_reports::handlers::deliver::{handle_deliverer_event, DeliverError};
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::manifest::RunManifest;
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const CUSTOMER_ACCOUNT: &str = "444444444444";
const TENANT: &str = "acme";
const FEED: &str = "lake-feed";

/// A published run (track and artist reports of three parts each, ~600 KB
/// a part) fanned out to one feed of tenant `acme`: both reports through an
/// `s3-bucket-policy` connector into a bucket of the customer's account,
/// under `prefix`.
struct Scene {
    admin: SdkConfig,
    customer: SdkConfig,
    staging: S3Store,
    manifest: RunManifest,
    tenant_prefix: String,
    bucket: String,
    proxy: FaultProxy,
}

impl Scene {
    async fn new(hint: &str) -> Scene {
        let endpoint = moto_endpoint();
        let admin = sdk_config(&endpoint).await;
        let staging = staging_store(&admin, &format!("staging-{hint}")).await;
        let manifest = publish_synthetic_run(&staging, run_id(), 30_000, 10_000).await;
        for report in &manifest.reports[..2] {
            assert_eq!(report.parts.len(), 3, "{}", report.data_type);
            assert!(report.parts.iter().all(|p| p.bytes > 200_000), "parts far larger than any request's headers");
        }
        let customer = account_config(&admin, CUSTOMER_ACCOUNT).await;
        let bucket = fresh_bucket(&s3_client(&customer), &format!("{hint}-dest")).await;
        let scene = Scene {
            admin,
            customer,
            staging,
            manifest,
            tenant_prefix: unique_tenant_prefix(hint),
            bucket,
            proxy: FaultProxy::start(&endpoint),
        };
        scene.write_secret("massive/").await;
        let tenants = scene.tenants();
        let fanout = FanoutDeps { staging: scene.staging.clone(), tenants, own_buckets: vec![] };
        fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
        scene
    }

    fn secret(&self, prefix: &str) -> serde_json::Value {
        json!({"schemaVersion": 1, "tenantId": TENANT, "plan": "trial",
            "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{}", self.bucket),
                "region": "us-east-1", "prefix": prefix, "bucketOwnerAccountId": CUSTOMER_ACCOUNT}},
            "feeds": [{"id": FEED, "connector": "lake", "reports": ["track", "artist"]}]})
    }

    async fn write_secret(&self, prefix: &str) {
        create_raw_secret(&self.admin, &format!("{}{TENANT}", self.tenant_prefix), &self.secret(prefix).to_string())
            .await;
    }

    async fn change_prefix(&self, prefix: &str) {
        aws_sdk_secretsmanager::Client::new(&self.admin)
            .put_secret_value()
            .secret_id(format!("{}{TENANT}", self.tenant_prefix))
            .secret_string(self.secret(prefix).to_string())
            .send()
            .await
            .unwrap();
    }

    fn tenants(&self) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), self.tenant_prefix.as_str()).unwrap()
    }

    /// deliver-s3 as its `main.rs` builds it, except that the customer's
    /// bucket is reached through the fault proxy with the SDK's retries off
    /// (staging and status are reached directly).
    fn deliverer(&self) -> DeliverDeps<S3Store, SecretsManagerTenants, S3Deliverer<S3Store>> {
        let through_proxy = self
            .admin
            .to_builder()
            .endpoint_url(self.proxy.endpoint())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: S3Deliverer {
                staging: self.staging.clone(),
                destinations: S3Destinations::new(through_proxy, vec![self.staging.bucket().to_owned()]),
            },
            now: pinned_now,
        }
    }

    async fn deliver(&self) -> Result<JobDisposition, DeliverError> {
        let job_key = format!("jobs/s3/{RUN_ID}/{TENANT}/{FEED}.json");
        let done = handle_deliverer_event(&self.deliverer(), event_for_key(&job_key), None).await?;
        Ok(done.jobs[0].disposition)
    }

    async fn status(&self) -> DeliveryStatus {
        let body = self.staging.get(&format!("status/{RUN_ID}/{TENANT}/{FEED}.json")).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// The destination key of part `n` (1-based) of report `report` (0 track, 1 artist).
    fn part_key(&self, prefix: &str, report: usize, n: usize) -> String {
        format!("{prefix}{}/{RUN_ID}/part-{n:03}.json", self.manifest.reports[report].data_type)
    }

    fn manifest_key(&self, prefix: &str, report: usize) -> String {
        format!("{prefix}{}/{RUN_ID}/_manifest.json", self.manifest.reports[report].data_type)
    }

    fn part_bytes(&self, report: usize, n: usize) -> u64 {
        self.manifest.reports[report].parts[n - 1].bytes
    }

    /// LastModified (whole seconds) of every object in the customer's bucket.
    async fn written_at(&self) -> BTreeMap<String, i64> {
        let client = s3_client(&self.customer);
        let mut all = BTreeMap::new();
        for key in keys_under(&self.customer, &self.bucket, "").await {
            let head = client.head_object().bucket(&self.bucket).key(&key).send().await.unwrap();
            all.insert(key, head.last_modified().unwrap().secs());
        }
        all
    }

    /// Panics unless every part of both reports under `prefix` is
    /// byte-identical to its staging part and each `_manifest.json` lists
    /// exactly those parts, with their bytes and SHA-256.
    async fn assert_destination_matches_staging(&self, prefix: &str) {
        let destination = S3Store::new(s3_client(&self.customer), self.bucket.clone(), "");
        for (report, staged) in self.manifest.reports[..2].iter().enumerate() {
            for (index, part) in staged.parts.iter().enumerate() {
                let key = self.part_key(prefix, report, index + 1);
                let delivered = destination.get(&key).await.unwrap();
                assert!(delivered == self.staging.get(&part.key).await.unwrap(), "{key} differs from {}", part.key);
            }
            let body = destination.get(&self.manifest_key(prefix, report)).await.unwrap();
            let listed: DestinationManifest = serde_json::from_slice(&body).unwrap();
            let listed: Vec<(String, u64, u64, String)> = listed
                .parts
                .iter()
                .map(|p| (p.part.key.clone(), p.part.rows, p.part.bytes, p.part.sha256.clone()))
                .collect();
            let expected: Vec<(String, u64, u64, String)> = staged
                .parts
                .iter()
                .enumerate()
                .map(|(index, p)| (self.part_key(prefix, report, index + 1), p.rows, p.bytes, p.sha256.clone()))
                .collect();
            assert_eq!(listed, expected, "{}", staged.data_type);
        }
    }
}

/// S3's LastModified has whole seconds: wait for the next one.
async fn next_second() {
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_skips_the_parts_an_earlier_attempt_delivered_and_uploads_the_rest_then_the_manifest() {
    let scene = Scene::new("resume").await;
    let prefix = "massive/";

    // The first attempt: the track report's three parts and its manifest,
    // the artist report's first part, then the connection is cut half-way
    // through the artist report's second part.
    let track: u64 = (1..=3).map(|n| scene.part_bytes(0, n)).sum();
    let cut_at = track + scene.part_bytes(1, 1) + scene.part_bytes(1, 2) / 2;
    scene.proxy.break_after_upstream_bytes(cut_at);
    let error = scene.deliver().await.unwrap_err();
    assert!(matches!(error, DeliverError::Job(JobError::Failed { .. })), "{error}");
    assert_eq!(scene.proxy.faults_fired(), 1);
    let failed = scene.status().await;
    assert_eq!(failed.outcome, DeliveryOutcome::Failed);
    let cause = failed.last_error.clone().unwrap();
    assert!(cause.contains(&scene.part_key(prefix, 1, 2)), "cut in the artist report's part 2: {cause}");
    let delivered_first = [
        scene.part_key(prefix, 0, 1),
        scene.part_key(prefix, 0, 2),
        scene.part_key(prefix, 0, 3),
        scene.part_key(prefix, 1, 1),
    ];
    let recorded: Vec<String> = failed.delivered_parts.iter().map(|p| p.origin.key.clone()).collect();
    let in_bucket = |key: &str| format!("s3://{}/{key}", scene.bucket);
    assert_eq!(
        recorded,
        delivered_first.iter().map(|k| in_bucket(k)).collect::<Vec<_>>(),
        "recorded as each completed"
    );
    for (part, staged) in failed
        .delivered_parts
        .iter()
        .zip(scene.manifest.reports[0].parts.iter().chain(&scene.manifest.reports[1].parts[..1]))
    {
        assert_eq!((part.attempt, part.bytes, &part.sha256), (1, staged.bytes, &staged.sha256), "{}", part.origin.key);
        assert_eq!((&part.origin.source.key, &part.origin.source.sha256), (&staged.key, &staged.sha256));
    }
    let mut expected_keys: Vec<String> = delivered_first.to_vec();
    expected_keys.push(scene.manifest_key(prefix, 0));
    expected_keys.sort();
    assert_eq!(keys_under(&scene.customer, &scene.bucket, "").await, expected_keys, "no artist manifest yet");
    let first_written = scene.written_at().await;
    next_second().await;

    // The retry: only the artist report's parts 2 and 3 are uploaded, then
    // both manifests.
    let before = scene.proxy.bytes_forwarded_upstream();
    assert_eq!(scene.deliver().await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let sent = scene.proxy.bytes_forwarded_upstream() - before;
    let remaining = scene.part_bytes(1, 2) + scene.part_bytes(1, 3);
    let skipped_bytes = track + scene.part_bytes(1, 1);
    assert!(sent >= remaining, "the remaining parts were uploaded: {sent} bytes sent, {remaining} expected");
    assert!(
        sent < remaining + 64 * 1024,
        "the retry sent {sent} bytes: the {skipped_bytes} bytes of the parts delivered before were sent again"
    );

    let status = scene.status().await;
    assert_eq!(status.outcome, DeliveryOutcome::Delivered);
    let attempts: Vec<(DeliveryOutcome, u32)> = status.attempts.iter().map(|a| (a.outcome, a.skipped_parts)).collect();
    assert_eq!(attempts, [(DeliveryOutcome::Failed, 0), (DeliveryOutcome::Delivered, 4)]);
    let objects: Vec<(String, bool)> = status.objects.iter().map(|o| (o.key.clone(), o.skipped)).collect();
    assert_eq!(
        objects,
        [
            (in_bucket(&scene.part_key(prefix, 0, 1)), true),
            (in_bucket(&scene.part_key(prefix, 0, 2)), true),
            (in_bucket(&scene.part_key(prefix, 0, 3)), true),
            (in_bucket(&scene.manifest_key(prefix, 0)), false),
            (in_bucket(&scene.part_key(prefix, 1, 1)), true),
            (in_bucket(&scene.part_key(prefix, 1, 2)), false),
            (in_bucket(&scene.part_key(prefix, 1, 3)), false),
            (in_bucket(&scene.manifest_key(prefix, 1)), false),
        ]
    );
    let by_attempt: Vec<u32> = status.delivered_parts.iter().map(|p| p.attempt).collect();
    assert_eq!(by_attempt, [1, 1, 1, 1, 2, 2]);

    let written = scene.written_at().await;
    for key in &delivered_first {
        assert_eq!(written[key], first_written[key], "{key} was written again");
    }
    for key in [scene.part_key(prefix, 1, 2), scene.part_key(prefix, 1, 3)] {
        assert!(written[&key] > first_written[&scene.part_key(prefix, 0, 1)], "{key} written by the retry");
    }
    for report in 0..2 {
        let manifest = &scene.manifest_key(prefix, report);
        let latest_part = (1..=3).map(|n| written[&scene.part_key(prefix, report, n)]).max().unwrap();
        assert!(written[manifest] >= latest_part, "{manifest} written last");
        assert!(written[manifest] > first_written[&scene.part_key(prefix, 0, 1)], "{manifest} written by the retry");
    }
    scene.assert_destination_matches_staging(prefix).await;
    assert!(open_multipart_uploads(&scene.customer, &scene.bucket).await.is_empty());

    // Delivered is final: another event changes nothing.
    assert_eq!(scene.deliver().await.unwrap(), JobDisposition::AlreadyDelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_into_a_destination_that_changed_uploads_every_part_again() {
    let scene = Scene::new("resume-moved").await;
    let cut_at = scene.part_bytes(0, 1) + scene.part_bytes(0, 2) / 2;
    scene.proxy.break_after_upstream_bytes(cut_at);
    scene.deliver().await.unwrap_err();
    assert_eq!(scene.status().await.delivered_parts.len(), 1, "the track report's first part was recorded");

    // The customer points the connector elsewhere before the retry: nothing
    // recorded is there, so everything is uploaded.
    scene.change_prefix("moved/").await;
    let before = scene.proxy.bytes_forwarded_upstream();
    assert_eq!(scene.deliver().await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let sent = scene.proxy.bytes_forwarded_upstream() - before;
    let every_part: u64 = (0..2).flat_map(|r| (1..=3).map(move |n| (r, n))).map(|(r, n)| scene.part_bytes(r, n)).sum();
    assert!(sent >= every_part, "{sent} bytes sent, every part is {every_part}");
    let status = scene.status().await;
    assert_eq!(status.attempts.last().map(|a| a.skipped_parts), Some(0));
    assert!(status.objects.iter().all(|o| !o.skipped), "{:?}", status.objects);
    scene.assert_destination_matches_staging("moved/").await;
}
