//! Parquet deliveries (docs/design.md, "Reports and layouts") against
//! moto's server, through the real fanout and deliver handlers, for every
//! connector kind on AWS: `s3-role` (zstd by default), `s3-keys` (snappy),
//! `s3-bucket-policy`, and email links to converted downloads. Each file is
//! a standalone Parquet file with the typed schema, named
//! `part-NNN.parquet`, listed in `_manifest.json` with its rows, bytes and
//! SHA-256, and read back equal to staging row for row by the parquet crate
//! and by DuckDB and Polars from `.venv`. A delta feed in Parquet delivers
//! upsert parts and `removed-NNN.parquet` (the id alone) that, applied to
//! its base, give exactly the full report.

use std::collections::BTreeMap;
use std::path::Path;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use bytes::Bytes;
use integration_tests::customer::{
    account_config, create_delivery_role, create_delivery_user, emails_to, http_get, links_in, mime_bodies, sent_emails,
};
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, publish_synthetic_run, run_id, staging_store, synthetic_items,
    unique_tenant_prefix, RUN_ID,
};
use integration_tests::parquet_fixtures::{catalogue_file, plays_file};
use integration_tests::parquet_readers::{check_with_duckdb_and_polars, read_parquet_part, ExpectedParquet};
use integration_tests::reports::sha256_hex;
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::destination_files::DestinationManifest;
use popularity_reports::delivery::{DeliverDeps, DeliveryOutcome, DeliveryStatus, JobDisposition};
use popularity_reports::delta::FileKind;
use popularity_reports::domain::{Compression, Format, ReportKind};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps};
use popularity_reports::manifest::{DeliveryMode, RunManifest};
use popularity_reports::rank::RankSettings;
use popularity_reports::report_writer::{Columns, ReportItem};
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const OUR_ACCOUNT: &str = "123456789012";
const SENDER: &str = "reports@popularity.example";
const ROWS: u64 = 2_500;
const PART_ROWS: u64 = 1_000;
const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";

fn tenants(admin: &aws_config::SdkConfig, prefix: &str) -> SecretsManagerTenants {
    SecretsManagerTenants::new(secrets_manager_client(admin), prefix).unwrap()
}

/// Delivers every job of `run` (s3 and email) through the deliver handlers;
/// each must end delivered.
async fn deliver_all(admin: &aws_config::SdkConfig, staging: &S3Store, prefix: &str, run: &str) {
    let s3 = DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(admin, prefix),
        deliverer: S3Deliverer {
            staging: staging.clone(),
            destinations: S3Destinations::new(admin.clone(), vec![staging.bucket().to_owned()]),
        },
        now: pinned_now,
    };
    let email = DeliverDeps {
        staging: staging.clone(),
        tenants: tenants(admin, prefix),
        deliverer: EmailDeliverer {
            staging: staging.clone(),
            signer: S3LinkSigner::new(admin.clone(), staging.bucket(), None, 604_800),
            mailer: SesMailer::new(admin),
            sender: SENDER.to_owned(),
            now: chrono::Utc::now,
        },
        now: pinned_now,
    };
    for kind in ["s3", "email"] {
        for job in staging.list(&format!("jobs/{kind}/{run}/")).await.unwrap() {
            let event = event_for_key(&job.key);
            let response = match kind {
                "s3" => handle_deliverer_event(&s3, event, None).await,
                _ => handle_deliverer_event(&email, event, None).await,
            };
            let response = response.unwrap_or_else(|e| panic!("{}: {e}", job.key));
            let disposition = &response.jobs[0].disposition;
            assert_eq!(*disposition, JobDisposition::Attempted(DeliveryOutcome::Delivered), "{}", job.key);
        }
    }
}

async fn fan_out(admin: &aws_config::SdkConfig, staging: &S3Store, prefix: &str, run: &str) {
    let fanout = FanoutDeps {
        staging: staging.clone(),
        tenants: tenants(admin, prefix),
        own_buckets: vec![staging.bucket().to_owned()],
    };
    handle_manifest_event(&fanout, event_for_key(&format!("manifests/{run}.json")), pinned_now()).await.unwrap();
}

async fn status_of(staging: &S3Store, run: &str, feed: &str) -> DeliveryStatus {
    serde_json::from_slice(&staging.get(&format!("status/{run}/acme/{feed}.json")).await.unwrap()).unwrap()
}

/// Keeps `body` as `dir/<name>` for the Python readers; returns the path.
fn keep(dir: &Path, name: &str, body: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name.replace('/', "_"));
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aws_connector_kind_delivers_parquet_that_duckdb_and_polars_read_as_staged() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, "staging-parquet").await;
    let prefix = unique_tenant_prefix("tenants-parquet");
    publish_synthetic_run(&staging, run_id(), ROWS, PART_ROWS).await;

    // A customer per S3 connector kind, each in an account of its own.
    let role_account = account_config(&admin, "222222222222").await;
    let role_bucket = fresh_bucket(&s3_client(&role_account), "pq-role").await;
    let external_id = popularity_reports::tenant::new_external_id("acme").unwrap();
    let role_arn = create_delivery_role(
        &role_account,
        &unique_bucket_name("popularity-delivery"),
        OUR_ACCOUNT,
        &external_id,
        &role_bucket,
    )
    .await;
    let keys_account = account_config(&admin, "333333333333").await;
    let keys_bucket = fresh_bucket(&s3_client(&keys_account), "pq-keys").await;
    let (access_key_id, secret_access_key) =
        create_delivery_user(&keys_account, &unique_bucket_name("delivery"), &keys_bucket, true).await;
    let policy_account = account_config(&admin, "444444444444").await;
    let policy_bucket = fresh_bucket(&s3_client(&policy_account), "pq-policy").await;
    let recipient = format!("{}@acme.example", unique_bucket_name("pq-inbox"));
    let arn = |bucket: &str| format!("arn:aws:s3:::{bucket}");
    let secret = json!({
        "schemaVersion": 1, "tenantId": "acme", "plan": "enterprise", "enabled": true,
        "connectors": {
            "role": {"type": "s3-role", "bucketArn": arn(&role_bucket), "region": "us-east-1",
                     "prefix": "massive/", "roleArn": role_arn, "externalId": external_id},
            "keys": {"type": "s3-keys", "bucketArn": arn(&keys_bucket), "region": "us-east-1",
                     "accessKeyId": access_key_id, "secretAccessKey": secret_access_key},
            "policy": {"type": "s3-bucket-policy", "bucketArn": arn(&policy_bucket), "region": "us-east-1",
                       "prefix": "in/", "bucketOwnerAccountId": "444444444444"},
            "inbox": {"type": "email", "recipients": [recipient]}
        },
        "feeds": [
            {"id": "role", "connector": "role", "format": "parquet"},
            {"id": "keys", "connector": "keys", "format": "parquet", "compression": "snappy"},
            {"id": "policy", "connector": "policy", "format": "parquet", "compression": "zstd",
             "reports": ["artist", "product"]},
            {"id": "inbox", "connector": "inbox", "format": "parquet", "reports": ["track"]}
        ]
    });
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    fan_out(&admin, &staging, &prefix, RUN_ID).await;
    deliver_all(&admin, &staging, &prefix, RUN_ID).await;

    let dir = tempfile::tempdir().unwrap();
    let mut for_python = Vec::new();
    let staged = |kind: ReportKind, part: usize| -> Vec<ReportItem> {
        synthetic_items(kind, ROWS).into_iter().skip(part * PART_ROWS as usize).take(PART_ROWS as usize).collect()
    };
    let s3_feeds = [
        ("role", &role_account, &role_bucket, "massive/", Compression::Zstd, ReportKind::ALL.to_vec()),
        ("keys", &keys_account, &keys_bucket, "", Compression::Snappy, ReportKind::ALL.to_vec()),
        (
            "policy",
            &policy_account,
            &policy_bucket,
            "in/",
            Compression::Zstd,
            vec![ReportKind::Artist, ReportKind::Product],
        ),
    ];
    for (feed, account, bucket, folder, compression, reports) in s3_feeds {
        let customer = S3Store::new(s3_client(account), bucket.as_str(), "");
        let status = status_of(&staging, RUN_ID, feed).await;
        assert_eq!(status.outcome, DeliveryOutcome::Delivered, "{feed}");
        let listed: Vec<String> = customer.list("").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(listed.len(), reports.len() * 4, "{feed}: 3 parts and a manifest per report: {listed:?}");
        for kind in reports {
            let report_folder = format!("{folder}{}/{RUN_ID}/", kind.data_type());
            let manifest: DestinationManifest =
                serde_json::from_slice(&customer.get(&format!("{report_folder}_manifest.json")).await.unwrap())
                    .unwrap();
            assert_eq!((manifest.format, manifest.compression), (Format::Parquet, compression), "{feed}");
            assert_eq!((manifest.mode, manifest.rows, manifest.parts.len()), (DeliveryMode::Full, ROWS, 3));
            for (number, entry) in manifest.parts.iter().enumerate() {
                let part = &entry.part;
                assert_eq!(part.key, format!("{report_folder}part-{:03}.parquet", number + 1));
                let body = customer.get(&part.key).await.unwrap();
                assert_eq!((part.bytes, part.sha256.clone()), (body.len() as u64, sha256_hex(&body)), "{}", part.key);
                let recorded = status.objects.iter().find(|o| o.key.ends_with(&part.key)).expect("in the status");
                assert_eq!((recorded.bytes, &recorded.sha256), (part.bytes, &part.sha256));
                let read = read_parquet_part(&body, kind, Columns::Ranked);
                let expected = staged(kind, number);
                assert_eq!(part.rows, expected.len() as u64);
                assert_eq!(read.row_groups, [expected.len() as i64], "a part below a million rows is one row group");
                assert_eq!(read.codecs, [compression.name().to_uppercase()], "{}", part.key);
                let lines: Vec<(i64, u64, f64)> =
                    expected.iter().map(|i| (i.id, i.search_rank, i.search_modifier())).collect();
                assert_eq!(read.lines(), lines, "{}", part.key);
                for_python.push(ExpectedParquet {
                    path: keep(dir.path(), &format!("{feed}/{}", part.key), &body),
                    kind,
                    columns: Columns::Ranked,
                    compression,
                    row_groups: Some(vec![expected.len() as i64]),
                    rows: expected,
                });
            }
        }
        let head = s3_client(account)
            .head_object()
            .bucket(bucket.as_str())
            .key(listed.iter().find(|k| k.ends_with("part-001.parquet")).unwrap());
        assert_eq!(head.send().await.unwrap().content_type(), Some(PARQUET_CONTENT_TYPE), "{feed}");
    }

    // Email: links to Parquet downloads converted into staging.
    let emails = emails_to(&sent_emails(&endpoint).await, &recipient);
    assert_eq!(emails.len(), 1);
    let (text, _) = mime_bodies(emails[0].raw_data.as_deref().unwrap());
    assert!(text.contains("(parquet"), "the email names the format: {text}");
    let links = links_in(&text);
    assert_eq!(links.len(), 3, "{text}");
    for (number, link) in links.iter().enumerate() {
        let name = format!("/downloads/acme/{RUN_ID}/track_popularity/zstd/part-{:03}.parquet", number + 1);
        assert!(link.contains(&name), "{link}");
        let (code, body) = http_get(link).await;
        assert_eq!(code, 200, "{link}");
        let expected = staged(ReportKind::Track, number);
        let read = read_parquet_part(&body, ReportKind::Track, Columns::Ranked);
        assert_eq!(read.ids, expected.iter().map(|i| i.id).collect::<Vec<_>>());
        for_python.push(ExpectedParquet {
            path: keep(dir.path(), &format!("inbox-part-{number}.parquet"), &body),
            kind: ReportKind::Track,
            columns: Columns::Ranked,
            compression: Compression::Zstd,
            row_groups: Some(vec![expected.len() as i64]),
            rows: expected,
        });
    }
    let inbox = status_of(&staging, RUN_ID, "inbox").await;
    assert_eq!((inbox.outcome, inbox.objects.len()), (DeliveryOutcome::Delivered, 3));

    let summary = check_with_duckdb_and_polars(&for_python);
    assert_eq!(summary["files"], json!(for_python.len()), "{summary}");
    assert_eq!(summary["files"], json!(3 * 3 + 3 * 3 + 2 * 3 + 3), "{summary}");
}

// ---------------------------------------------------------------------------
// Delta feeds in Parquet
// ---------------------------------------------------------------------------

const RUN_1: &str = "20261116030000";
const RUN_2: &str = "20261119030000";

/// Tracks 1..=400 (run 1), or 16..=420 with 401..=420 by a new artist (run 2).
fn catalogue(run: u8) -> Vec<(i64, i64, i64)> {
    match run {
        1 => (1..=400).map(|id| (id, id % 37 + 1, id % 91 + 1)).collect(),
        _ => (16..=400)
            .map(|id| (id, id % 37 + 1, id % 91 + 1))
            .chain((401..=420).map(|id| (id, 38, id % 91 + 1)))
            .collect(),
    }
}

fn plays_of(day: u32, tracks: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    tracks
        .filter(|id| (id * 7 + i64::from(day)) % 5 != 0)
        .map(|id| (id, (id * 31 + i64::from(day) * 17) % 23 + 1))
        .collect()
}

async fn put(store: &S3Store, key: &str, body: Vec<u8>) {
    store.put(key, Bytes::from(body), "application/octet-stream").await.unwrap();
}

async fn rank_at(deps: &RankDeps<S3Store, S3Store>, time: &str) -> RunManifest {
    let event: EventBridgeEvent<serde_json::Value> = serde_json::from_value(json!({
        "version": "0", "id": "parquet-delta", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": OUR_ACCOUNT, "time": time, "region": "eu-west-1", "resources": [], "detail": {}
    }))
    .unwrap();
    let response = handle_schedule_event(deps, event).await.unwrap();
    serde_json::from_slice(&deps.staging.get(&format!("manifests/{}.json", response.run_id)).await.unwrap()).unwrap()
}

/// The rows of a staged canonical JSON delta file: the three fields, or the id alone.
fn staged_json_items(body: &[u8], kind: ReportKind) -> Vec<ReportItem> {
    let array: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
    array
        .iter()
        .map(|object| ReportItem {
            id: object[kind.id_field()].as_i64().unwrap(),
            search_rank: object["searchRank"].as_u64().unwrap_or(0),
            modifier_hundredths: object["searchModifier"].as_f64().map_or(0, |m| (m * 100.0).round() as u8),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_delta_upserts_and_removes_exactly_the_changes_and_readers_agree() {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let s3 = s3_client(&admin);
    let staging = staging_store(&admin, "staging-pq-delta").await;
    let bucket = fresh_bucket(&s3, "pq-delta-customer").await;
    let customer = S3Store::new(s3.clone(), bucket.clone(), "");
    let data = S3Store::new(s3.clone(), fresh_bucket(&s3, "pq-delta-data").await, "");
    let (access_key_id, secret_key) =
        create_delivery_user(&admin, &unique_bucket_name("pq-delta-writer"), &bucket, true).await;
    let prefix = unique_tenant_prefix("tenants-pq-delta");
    let recipient = format!("{}@acme.example", unique_bucket_name("pq-delta"));
    let keys = |folder: &str| {
        json!({"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
               "prefix": folder, "accessKeyId": access_key_id, "secretAccessKey": secret_key})
    };
    let secret = json!({
        "schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": true,
        "connectors": {"delta": keys("delta/"), "full": keys("full/"),
                       "inbox": {"type": "email", "recipients": [recipient]}},
        "feeds": [
            {"id": "delta", "connector": "delta", "mode": "delta", "format": "parquet", "compression": "snappy"},
            {"id": "full", "connector": "full", "format": "parquet"},
            {"id": "inbox", "connector": "inbox", "mode": "delta", "format": "parquet", "reports": ["track"]}
        ]
    });
    create_raw_secret(&admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let rank = RankDeps {
        data: data.clone(),
        staging: staging.clone(),
        settings: RankSettings { part_rows: 150, ..RankSettings::default() },
    };

    put(&data, "catalogue/catalogue.parquet", catalogue_file(&catalogue(1), 100)).await;
    for day in 13..=15 {
        put(&data, &format!("plays/date=2026-11-{day}/part-0.parquet"), plays_file(&plays_of(day, 1..=400), 100)).await;
    }
    rank_at(&rank, "2026-11-16T03:00:00Z").await;
    fan_out(&admin, &staging, &prefix, RUN_1).await;
    deliver_all(&admin, &staging, &prefix, RUN_1).await;

    put(&data, "catalogue/catalogue.parquet", catalogue_file(&catalogue(2), 100)).await;
    put(&data, "plays/date=2026-11-18/part-0.parquet", plays_file(&plays_of(18, 16..=420), 100)).await;
    let run_2 = rank_at(&rank, "2026-11-19T03:00:00Z").await;
    fan_out(&admin, &staging, &prefix, RUN_2).await;
    deliver_all(&admin, &staging, &prefix, RUN_2).await;

    let manifest_of = |folder: &str, kind: ReportKind, run: &str| {
        let key = format!("{folder}{}/{run}/_manifest.json", kind.data_type());
        let customer = customer.clone();
        async move { serde_json::from_slice::<DestinationManifest>(&customer.get(&key).await.unwrap()).unwrap() }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut for_python = Vec::new();
    for kind in ReportKind::ALL {
        // What the delta feed received in run 1 (full), by id.
        let mut applied: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
        let first = manifest_of("delta/", kind, RUN_1).await;
        assert_eq!(
            (first.mode, first.format, first.compression),
            (DeliveryMode::Full, Format::Parquet, Compression::Snappy)
        );
        for entry in &first.parts {
            let body = customer.get(&entry.part.key).await.unwrap();
            for (id, rank, modifier) in read_parquet_part(&body, kind, Columns::Ranked).lines() {
                applied.insert(id, (rank, modifier));
            }
        }
        // Run 2's delta: upserts, then removed ids.
        let delta = manifest_of("delta/", kind, RUN_2).await;
        assert_eq!((delta.mode, delta.base_run_id), (DeliveryMode::Delta, Some(RUN_1.parse().unwrap())));
        let staged_delta = format!("deltas/{}/{RUN_2}/{RUN_1}/", kind.data_type());
        let mut numbers = [0usize; 2];
        let mut removed_ids = Vec::new();
        for entry in &delta.parts {
            let file_kind = entry.kind.expect("a delta manifest names each file's kind");
            let body = customer.get(&entry.part.key).await.unwrap();
            assert_eq!((entry.part.bytes, entry.part.sha256.clone()), (body.len() as u64, sha256_hex(&body)));
            let slot = &mut numbers[usize::from(file_kind == FileKind::Removed)];
            *slot += 1;
            let name = format!("{}-{:03}", file_kind.stem(), *slot);
            assert_eq!(entry.part.key, format!("delta/{}/{RUN_2}/{name}.parquet", kind.data_type()));
            let staged = staged_json_items(&staging.get(&format!("{staged_delta}{name}.json")).await.unwrap(), kind);
            let columns = file_kind.columns();
            let read = read_parquet_part(&body, kind, columns);
            assert_eq!(read.ids, staged.iter().map(|i| i.id).collect::<Vec<_>>(), "{}", entry.part.key);
            match file_kind {
                FileKind::Upsert => {
                    for (id, rank, modifier) in read.lines() {
                        applied.insert(id, (rank, modifier));
                    }
                }
                FileKind::Removed => {
                    assert!(read.ranks.is_empty() && read.modifiers.is_empty(), "the id alone");
                    for &id in &read.ids {
                        assert!(applied.remove(&id).is_some(), "removed id {id} was not in run 1");
                        removed_ids.push(id);
                    }
                }
            }
            for_python.push(ExpectedParquet {
                path: keep(dir.path(), &entry.part.key, &body),
                kind,
                columns,
                compression: Compression::Snappy,
                row_groups: Some(vec![staged.len() as i64]),
                rows: staged,
            });
        }
        if kind == ReportKind::Track {
            assert_eq!(removed_ids, (1..=15).collect::<Vec<i64>>(), "exactly the dropped tracks, ascending");
            assert!(numbers[1] >= 1 && delta.upserts.unwrap() >= 20, "{numbers:?}");
        }
        // Base + delta = what the full feed received in run 2.
        let mut expected: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
        let full = manifest_of("full/", kind, RUN_2).await;
        assert_eq!(full.compression, Compression::Zstd, "zstd by default");
        for entry in &full.parts {
            let body = customer.get(&entry.part.key).await.unwrap();
            for (id, rank, modifier) in read_parquet_part(&body, kind, Columns::Ranked).lines() {
                expected.insert(id, (rank, modifier));
            }
        }
        assert_eq!(applied, expected, "{}: run 1 + delta = run 2", kind.data_type());
        assert_eq!(expected.len() as u64, run_2.report(kind).unwrap().rows);
    }

    // The email links the delta's files converted to Parquet.
    let emails = emails_to(&sent_emails(&endpoint).await, &recipient);
    assert_eq!(emails.len(), 2, "one email per run");
    let (text, _) = mime_bodies(emails[1].raw_data.as_deref().unwrap());
    let links = links_in(&text);
    let removed_link = links.iter().find(|l| l.contains("/removed-001.parquet")).expect("a removed-ids link");
    assert!(removed_link.contains(&format!("/delta-{RUN_1}/zstd/removed-001.parquet")), "{removed_link}");
    let (code, body) = http_get(removed_link).await;
    assert_eq!(code, 200);
    assert_eq!(read_parquet_part(&body, ReportKind::Track, Columns::IdOnly).ids, (1..=15).collect::<Vec<i64>>());

    let summary = check_with_duckdb_and_polars(&for_python);
    assert_eq!(summary["files"], json!(for_python.len()), "{summary}");
}
