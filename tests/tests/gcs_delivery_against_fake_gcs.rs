//! fanout and deliver-gcs against moto (staging, tenant secrets) and
//! fake-gcs-server behind the project's guard (a signed JWT on every
//! request, Storage Object Creator only: no read, list, delete or
//! overwrite, 412 for `ifGenerationMatch=0` on an existing name). Every
//! format and compression arrives and parses back to the staged rows with
//! `_manifest.json` finalized after every part (Parquet also read by DuckDB
//! and Polars); a replay of a delivered job
//! makes no request; a replay after the status object is lost ends
//! delivered through 412s, never a 403; a wrong key, a wrong bucket and a
//! bucket not shared are named; a foreign `token_uri` is refused before any
//! request; the connection test creates one object and says it stays; no
//! key or token is ever logged.

use std::collections::BTreeMap;

use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, pinned_now, publish_synthetic_run, run_id,
    staging_store, synthetic_items, unique_tenant_prefix,
};
use integration_tests::gcs_guard::GcsGuard;
use integration_tests::google_keys::TestServiceAccount;
use integration_tests::parquet_readers::{check_with_duckdb_and_polars, ExpectedParquet};
use integration_tests::reports::{parse_part, sha256_hex};
use integration_tests::{gcs_emulator_endpoint, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connection_probe::{ConnectionTestRequest, ConnectionTestResult};
use popularity_reports::delivery::connectors::gcs::GcsDeliverer;
use popularity_reports::delivery::destination_files::DestinationManifest;
use popularity_reports::delivery::probe_runner::run_connection_test;
use popularity_reports::delivery::{
    connection_test_key, deliver_job, parse_connection_test_key, parse_job_key, DeliverDeps, DeliveryOutcome,
    DeliveryStatus, JobDisposition, JobKind,
};
use popularity_reports::domain::{Encoding, ReportKind};
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::report_writer::Columns;
use popularity_reports::store::{ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const ROWS: u64 = 2_500;
const PART_ROWS: u64 = 1_000;

/// A tenant with a GCS bucket on fake-gcs-server behind a guard, and a
/// published run in a staging bucket on moto.
struct Scene {
    admin: aws_config::SdkConfig,
    staging: S3Store,
    prefix: String,
    guard: GcsGuard,
    bucket: String,
    account: TestServiceAccount,
}

impl Scene {
    async fn new(hint: &str) -> Scene {
        let admin = sdk_config(&moto_endpoint()).await;
        let staging = staging_store(&admin, &format!("staging-{hint}")).await;
        publish_synthetic_run(&staging, run_id(), ROWS, PART_ROWS).await;
        let guard = GcsGuard::start(&gcs_emulator_endpoint());
        let bucket = unique_bucket_name(&format!("gcs-{hint}"));
        guard.create_bucket(&bucket).await;
        let account = TestServiceAccount::generate(&format!("feeds-{hint}@acme-analytics.iam.gserviceaccount.com"));
        guard.register(&account);
        guard.grant_object_creator(&bucket, &account.client_email);
        Scene { admin, staging, prefix: unique_tenant_prefix(hint), guard, bucket, account }
    }

    /// Stores the tenant `acme` with one gcs connector per entry of `feeds`
    /// (feed id, format, compression), each under its own prefix.
    async fn onboard(&self, connector: serde_json::Value, feeds: &[(&str, &str, &str)]) {
        let mut connectors = serde_json::Map::new();
        let mut feed_list = Vec::new();
        for (id, format, compression) in feeds {
            let mut this = connector.clone();
            this["prefix"] = format!("feeds/{id}/").into();
            connectors.insert((*id).to_owned(), this);
            feed_list.push(json!({"id": id, "connector": id, "format": format, "compression": compression}));
        }
        let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "enterprise",
            "connectors": connectors, "feeds": feed_list});
        create_raw_secret(&self.admin, &format!("{}acme", self.prefix), &secret.to_string()).await;
    }

    fn connector(&self) -> serde_json::Value {
        json!({"type": "gcs", "bucket": self.bucket, "serviceAccountJson": self.account.key_json()})
    }

    fn tenants(&self) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), self.prefix.as_str()).unwrap()
    }

    fn deps(&self) -> DeliverDeps<S3Store, SecretsManagerTenants, GcsDeliverer<S3Store>> {
        DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: GcsDeliverer {
                staging: self.staging.clone(),
                endpoint: self.guard.endpoint(),
                identities: None,
            },
            now: pinned_now,
        }
    }

    async fn fan_out(&self) {
        let deps = FanoutDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            own_buckets: vec![self.staging.bucket().to_owned()],
        };
        fan_out_run(&deps, run_id(), pinned_now()).await.unwrap();
    }

    async fn status(&self, feed: &str) -> DeliveryStatus {
        let body = self.staging.get(&format!("status/{}/acme/{feed}.json", run_id())).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn deliver(&self, feed: &str) -> Result<JobDisposition, String> {
        let parts = parse_job_key(&format!("jobs/gcs/{}/acme/{feed}.json", run_id())).unwrap();
        deliver_job(&self.deps(), &parts, None).await.map(|report| report.disposition).map_err(|e| e.to_string())
    }
}

fn encoding(format: &str, compression: &str) -> Encoding {
    Encoding { format: format.parse().unwrap(), compression: serde_json::from_value(json!(compression)).unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_and_compression_arrives_whole_with_the_manifest_finalized_last() {
    let logs = capture_logs();
    let scene = Scene::new("formats").await;
    let feeds = [
        ("json", "json", "none"),
        ("json-gz", "json", "gzip"),
        ("jsonl", "jsonl", "none"),
        ("jsonl-gz", "jsonl", "gzip"),
        ("tsv", "tsv", "none"),
        ("tsv-gz", "tsv", "gzip"),
        ("parquet", "parquet", "zstd"),
        ("parquet-snappy", "parquet", "snappy"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut for_python = Vec::new();
    scene.onboard(scene.connector(), &feeds).await;
    scene.fan_out().await;

    for (feed, format, compression) in feeds {
        assert_eq!(scene.deliver(feed).await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered), "{feed}");
        let encoding = encoding(format, compression);
        let status = scene.status(feed).await;
        assert_eq!(status.outcome, DeliveryOutcome::Delivered);
        for kind in ReportKind::ALL {
            let folder = format!("feeds/{feed}/{}/{}/", kind.data_type(), run_id());
            let manifest_name = format!("{folder}_manifest.json");
            let manifest_bytes = scene.guard.read_object(&scene.bucket, &manifest_name).await.expect("manifest");
            let manifest: DestinationManifest = serde_json::from_slice(&manifest_bytes).unwrap();
            assert_eq!((manifest.format, manifest.compression), (encoding.format, encoding.compression));
            assert_eq!(manifest.parts.len(), 3, "{ROWS} rows in parts of {PART_ROWS}");
            let mut lines = Vec::new();
            for (number, part) in manifest.parts.iter().map(|p| &p.part).enumerate() {
                assert_eq!(part.key, format!("{folder}part-{:03}.{}", number + 1, encoding.extension()));
                let stored = scene.guard.read_object(&scene.bucket, &part.key).await.expect("part");
                assert_eq!((part.bytes, part.sha256.as_str()), (stored.len() as u64, sha256_hex(&stored).as_str()));
                lines.extend(parse_part(&stored, encoding, kind));
                if format == "parquet" {
                    let path = dir.path().join(part.key.replace('/', "_"));
                    std::fs::write(&path, &stored).unwrap();
                    let staged = synthetic_items(kind, ROWS).into_iter().skip(number * PART_ROWS as usize);
                    let rows: Vec<_> = staged.take(PART_ROWS as usize).collect();
                    let row_groups = Some(vec![rows.len() as i64]);
                    let (columns, compression) = (Columns::Ranked, encoding.compression);
                    for_python.push(ExpectedParquet { path, kind, columns, compression, row_groups, rows });
                }
                let recorded = status.objects.iter().find(|o| o.key.ends_with(&part.key)).expect("in the status");
                assert_eq!(recorded.sha256, part.sha256);
                assert!(recorded.crc32c.is_some() && !recorded.already_existed, "{recorded:?}");
            }
            let expected: Vec<(i64, u64, f64)> = synthetic_items(kind, ROWS)
                .iter()
                .map(|item| (item.id, item.search_rank, item.search_modifier()))
                .collect();
            assert_eq!(lines, expected, "{feed} {kind}");
        }
    }

    // DuckDB and Polars read each Parquet part on its own as staged.
    let summary = check_with_duckdb_and_polars(&for_python);
    assert_eq!(summary["files"], json!(2 * 3 * 3), "two Parquet feeds, three reports of three parts: {summary}");

    // Per report, the manifest was finalized after all of its parts.
    let finalized = scene.guard.finalized_objects();
    let position: BTreeMap<&str, usize> = finalized.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    for name in &finalized {
        if let Some(folder) = name.strip_suffix("_manifest.json") {
            for part in finalized.iter().filter(|n| n.starts_with(folder) && n.contains("/part-")) {
                assert!(position[part.as_str()] < position[name.as_str()], "{part} after {name}");
            }
        }
    }
    assert_eq!(finalized.len(), feeds.len() * 3 * 4, "3 parts and a manifest per report and feed");
    // Object Creator only: nothing but uploads was ever asked for.
    assert!(scene.guard.requests().iter().all(|r| r.status != 403), "a forbidden request was made");

    let logs_text = logs.text();
    assert!(!logs_text.contains("eyJ"), "a JWT reached the logs");
    let key = scene.account.key_json();
    let private_key = key["private_key"].as_str().unwrap();
    let key_body = private_key.lines().nth(1).unwrap();
    assert_logs_hold_none_of(&logs, &[key_body, &scene.account.private_key_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_job_makes_no_request_and_a_lost_status_ends_delivered_through_412s() {
    let scene = Scene::new("replay").await;
    scene.onboard(scene.connector(), &[("lake", "tsv", "gzip")]).await;
    scene.fan_out().await;
    assert_eq!(scene.deliver("lake").await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let first = scene.status("lake").await;

    let before = scene.guard.requests().len();
    assert_eq!(scene.deliver("lake").await.unwrap(), JobDisposition::AlreadyDelivered);
    assert_eq!(scene.guard.requests().len(), before, "a delivered job makes no request");

    // A crash after the objects were finalized but before the status was
    // written: the next attempt finds every object there (412), never 403.
    let key = format!("status/{}/acme/lake.json", run_id());
    let client = popularity_reports::store::s3_client(&scene.admin);
    client.delete_object().bucket(scene.staging.bucket()).key(&key).send().await.unwrap();
    let before = scene.guard.requests().len();
    assert_eq!(scene.deliver("lake").await.unwrap(), JobDisposition::Attempted(DeliveryOutcome::Delivered));
    let replay: Vec<_> = scene.guard.requests().into_iter().skip(before).collect();
    assert!(replay.iter().any(|r| r.status == 412), "the replay met the finalized objects");
    assert!(replay.iter().all(|r| r.status != 403), "never a 403: {replay:?}");
    let second = scene.status("lake").await;
    assert!(second.objects.iter().all(|o| o.already_existed), "{:?}", second.objects);
    let keys = |s: &DeliveryStatus| s.objects.iter().map(|o| (o.key.clone(), o.sha256.clone())).collect::<Vec<_>>();
    assert_eq!(keys(&second), keys(&first), "the same names and bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_a_wrong_bucket_and_a_bucket_not_shared_are_named_and_retried() {
    let scene = Scene::new("refused").await;
    let stranger = TestServiceAccount::generate("stranger@other.iam.gserviceaccount.com");
    let unshared = TestServiceAccount::generate("unshared@acme-analytics.iam.gserviceaccount.com");
    scene.guard.register(&unshared);
    let mut wrong_key = scene.connector();
    wrong_key["serviceAccountJson"] = stranger.key_json();
    let mut wrong_bucket = scene.connector();
    wrong_bucket["bucket"] = unique_bucket_name("no-such-bucket").into();
    let mut not_shared = scene.connector();
    not_shared["serviceAccountJson"] = unshared.key_json();

    // Each its own prefix: three feeds into one folder would collide
    // (docs/design.md, "Delivery rules").
    for (connector, prefix) in [(&mut wrong_key, "a/"), (&mut wrong_bucket, "b/"), (&mut not_shared, "c/")] {
        connector["prefix"] = prefix.into();
    }
    let mut connectors = serde_json::Map::new();
    connectors.insert("wrong-key".into(), wrong_key);
    connectors.insert("wrong-bucket".into(), wrong_bucket);
    connectors.insert("not-shared".into(), not_shared);
    let feeds: Vec<_> = ["wrong-key", "wrong-bucket", "not-shared"]
        .iter()
        .map(|id| json!({"id": id, "connector": id, "reports": ["artist"]}))
        .collect();
    let secret = json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": connectors, "feeds": feeds});
    create_raw_secret(&scene.admin, &format!("{}acme", scene.prefix), &secret.to_string()).await;
    scene.fan_out().await;

    for (feed, fragment) in [
        ("wrong-key", "the key was refused"),
        ("wrong-bucket", "the bucket does not exist"),
        ("not-shared", "storage.objects.create"),
    ] {
        let error = scene.deliver(feed).await.unwrap_err();
        assert!(error.contains(fragment), "{feed}: {error}");
        let status = scene.status(feed).await;
        assert_eq!(status.outcome, DeliveryOutcome::Failed, "{feed}: the customer can fix it, so it is retried");
        assert!(status.last_error.as_deref().unwrap().contains(fragment), "{feed}: {:?}", status.last_error);
    }
    assert!(scene.guard.finalized_objects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_naming_a_foreign_token_endpoint_is_refused_before_any_request() {
    let scene = Scene::new("token-uri").await;
    let mut connector = scene.connector();
    connector["serviceAccountJson"]["token_uri"] = "http://127.0.0.1:9/token".into();
    scene.onboard(connector, &[("lake", "json", "none")]).await;
    scene.fan_out().await;
    let status: DeliveryStatus =
        serde_json::from_slice(&scene.staging.get(&format!("status/{}/acme/_tenant.json", run_id())).await.unwrap())
            .unwrap();
    assert_eq!(status.outcome, DeliveryOutcome::Invalid);
    let error = status.last_error.unwrap();
    assert!(error.contains("connectors.lake.serviceAccountJson.token_uri"), "{error}");
    assert!(scene.staging.list("jobs/").await.unwrap().is_empty(), "no job for an invalid tenant");
    assert!(scene.guard.requests().is_empty(), "no request was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_creates_one_object_and_says_it_stays() {
    let scene = Scene::new("probe").await;
    scene.onboard(scene.connector(), &[("lake", "json", "none")]).await;
    let request = |id: &str| ConnectionTestRequest {
        request_id: id.into(),
        tenant_id: "acme".into(),
        connector: "lake".into(),
        requested_at: pinned_now(),
        secret_version_stage: None,
    };
    let key = connection_test_key(JobKind::Gcs, "req-1", "acme", "lake");
    scene.staging.put(&key, serde_json::to_vec(&request("req-1")).unwrap().into(), "application/json").await.unwrap();
    let outcome = run_connection_test(&scene.deps(), &parse_connection_test_key(&key).unwrap()).await.unwrap();
    assert_eq!(outcome.ok, Some(true));
    let result: ConnectionTestResult =
        serde_json::from_slice(&scene.staging.get(&outcome.result_key).await.unwrap()).unwrap();
    assert!(result.ok && result.checks[0].name == "storage.objects.create", "{result:?}");
    assert!(result.left_behind[0].contains("_connection-test/req-1.txt"), "{result:?}");
    assert_eq!(scene.guard.finalized_objects(), ["feeds/lake/_connection-test/req-1.txt"]);

    // The same request again: answered once, nothing more is written.
    let again = run_connection_test(&scene.deps(), &parse_connection_test_key(&key).unwrap()).await.unwrap();
    assert_eq!(again.ok, None);
    assert_eq!(scene.guard.finalized_objects().len(), 1);

    // Without the grant, the probe fails naming the permission.
    scene.guard.revoke_object_creator(&scene.bucket, &scene.account.client_email);
    let key = connection_test_key(JobKind::Gcs, "req-2", "acme", "lake");
    scene.staging.put(&key, serde_json::to_vec(&request("req-2")).unwrap().into(), "application/json").await.unwrap();
    let outcome = run_connection_test(&scene.deps(), &parse_connection_test_key(&key).unwrap()).await.unwrap();
    assert_eq!(outcome.ok, Some(false));
    let result: ConnectionTestResult =
        serde_json::from_slice(&scene.staging.get(&outcome.result_key).await.unwrap()).unwrap();
    assert!(result.checks[0].detail.contains("storage.objects.create"), "{result:?}");
}
