//! Delta feeds (docs/design.md, "Delta feeds") end to end against moto's server, through the
//! real handlers: rank ranks Parquet input from a data bucket, fanout plans
//! each feed's delivery, deliver-s3 and deliver-email deliver it.
//!
//! Run 1 is delivered full to every feed (first delivery). Then the
//! catalogue changes (tracks dropped, tracks and an artist added) and a day
//! of plays is added; run 2 is delivered as a delta against run 1. Applying
//! it to what the customer received in run 1 gives, byte for byte after
//! sorting, what a full feed received in run 2; the removed ids are exactly
//! the dropped tracks; two delta feeds share one `deltas/` computation; the
//! email links the delta files and says what it is against. Run 3 comes
//! after run 2's reports left staging and a week after run 1: delta feeds
//! whose base is gone get a full delivery saying why, a feed whose reports
//! changed gets one saying that, and a feed whose `fullEverySeconds` has
//! elapsed gets a full one saying that.

use std::collections::BTreeMap;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use bytes::Bytes;
use integration_tests::customer::{create_delivery_user, emails_to, http_get, links_in, mime_bodies, sent_emails};
use integration_tests::delivery::{
    assert_logs_hold_none_of, capture_logs, create_raw_secret, event_for_key, pinned_now, staging_store,
    unique_tenant_prefix,
};
use integration_tests::parquet_fixtures::{catalogue_file, plays_file};
use integration_tests::reports::{gunzip, sha256_hex};
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config, unique_bucket_name};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::destination_files::DestinationManifest;
use popularity_reports::delivery::{DeliverDeps, DeliveryJob, DeliveryOutcome, DeliveryStatus, JobDisposition};
use popularity_reports::delta::FileKind;
use popularity_reports::domain::{ReportKind, RunId};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps};
use popularity_reports::manifest::{DeliveryMode, RunManifest};
use popularity_reports::rank::RankSettings;
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::json;

const SENDER: &str = "reports@popularity.example";
const RUN_1: &str = "20261116030000";
const RUN_2: &str = "20261119030000";
const RUN_3: &str = "20261123030000";

fn run(id: &str) -> RunId {
    id.parse().unwrap()
}

/// The catalogue of run 1: tracks 1..=400 by 37 artists on 91 products.
fn catalogue_1() -> Vec<(i64, i64, i64)> {
    (1..=400).map(|id| (id, id % 37 + 1, id % 91 + 1)).collect()
}

/// Run 2's: tracks 1..=15 are gone, 401..=420 are new, by a new artist 38.
fn catalogue_2() -> Vec<(i64, i64, i64)> {
    (16..=400).map(|id| (id, id % 37 + 1, id % 91 + 1)).chain((401..=420).map(|id| (id, 38, id % 91 + 1))).collect()
}

/// Plays of a day: a deterministic spread with ties, over `tracks`.
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
        "version": "0", "id": "delta-test", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": time, "region": "eu-west-1", "resources": [], "detail": {}
    }))
    .unwrap();
    let response = handle_schedule_event(deps, event).await.unwrap();
    let key = format!("manifests/{}.json", response.run_id);
    serde_json::from_slice(&deps.staging.get(&key).await.unwrap()).unwrap()
}

struct Scene {
    endpoint: String,
    admin: aws_config::SdkConfig,
    staging: S3Store,
    customer: S3Store,
    tenants_prefix: String,
    recipient: String,
    secret_key: String,
    secret: serde_json::Value,
}

impl Scene {
    fn tenants(&self) -> SecretsManagerTenants {
        SecretsManagerTenants::new(secrets_manager_client(&self.admin), &self.tenants_prefix).unwrap()
    }

    async fn fan_out(&self, run_id: &str) {
        let fanout = FanoutDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            own_buckets: vec![self.staging.bucket().to_owned()],
        };
        let event = event_for_key(&format!("manifests/{run_id}.json"));
        handle_manifest_event(&fanout, event, pinned_now()).await.unwrap();
    }

    async fn job(&self, kind: &str, run_id: &str, feed: &str) -> DeliveryJob {
        let body = self.staging.get(&format!("jobs/{kind}/{run_id}/acme/{feed}.json")).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn status(&self, run_id: &str, feed: &str) -> DeliveryStatus {
        serde_json::from_slice(&self.staging.get(&format!("status/{run_id}/acme/{feed}.json")).await.unwrap()).unwrap()
    }

    /// Delivers every job of the run through the deliver-s3 and deliver-email handlers.
    async fn deliver(&self, run_id: &str) {
        let s3 = DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: S3Deliverer {
                staging: self.staging.clone(),
                destinations: S3Destinations::new(self.admin.clone(), vec![self.staging.bucket().to_owned()]),
            },
            now: pinned_now,
        };
        let email = DeliverDeps {
            staging: self.staging.clone(),
            tenants: self.tenants(),
            deliverer: EmailDeliverer {
                staging: self.staging.clone(),
                signer: S3LinkSigner::new(self.admin.clone(), self.staging.bucket(), None, 604_800),
                mailer: SesMailer::new(&self.admin),
                sender: SENDER.to_owned(),
                now: chrono::Utc::now,
            },
            now: pinned_now,
        };
        for kind in ["s3", "email"] {
            for job in self.staging.list(&format!("jobs/{kind}/{run_id}/")).await.unwrap() {
                let event = event_for_key(&job.key);
                let response = match kind {
                    "s3" => handle_deliverer_event(&s3, event, None).await,
                    _ => handle_deliverer_event(&email, event, None).await,
                };
                let response = response.unwrap_or_else(|e| panic!("{}: {e}", job.key));
                assert_eq!(
                    response.jobs[0].disposition,
                    JobDisposition::Attempted(DeliveryOutcome::Delivered),
                    "{}",
                    job.key
                );
            }
        }
    }

    async fn destination_manifest(&self, folder: &str, kind: ReportKind, run_id: &str) -> DestinationManifest {
        let key = format!("{folder}{}/{run_id}/_manifest.json", kind.data_type());
        serde_json::from_slice(&self.customer.get(&key).await.unwrap()).unwrap()
    }

    /// The data lines of a delivered gzip TSV file (header checked and dropped).
    async fn tsv_lines(&self, key: &str, header: &str) -> Vec<String> {
        let text = gunzip(&self.customer.get(key).await.unwrap());
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(header), "{key}");
        lines.map(str::to_owned).collect()
    }
}

async fn scene() -> Scene {
    let endpoint = moto_endpoint();
    let admin = sdk_config(&endpoint).await;
    aws_sdk_ses::Client::new(&admin).verify_email_identity().email_address(SENDER).send().await.unwrap();
    let staging = staging_store(&admin, "staging-delta").await;
    let bucket = fresh_bucket(&s3_client(&admin), "delta-customer").await;
    let customer = S3Store::new(s3_client(&admin), bucket.clone(), "");
    let (access_key_id, secret_key) =
        create_delivery_user(&admin, &unique_bucket_name("delta-writer"), &bucket, true).await;
    let tenants_prefix = unique_tenant_prefix("tenants-delta");
    let recipient = format!("{}@acme.example", unique_bucket_name("delta"));
    let keys = |prefix: &str| {
        json!({"type": "s3-keys", "bucketArn": format!("arn:aws:s3:::{bucket}"), "region": "us-east-1",
               "prefix": prefix, "accessKeyId": access_key_id, "secretAccessKey": secret_key})
    };
    let secret = json!({
        "schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": true,
        "connectors": {
            "delta-a": keys("delta-a/"), "delta-b": keys("delta-b/"), "full": keys("full/"),
            "forced": keys("forced/"),
            "inbox": {"type": "email", "recipients": [recipient]}
        },
        "feeds": [
            {"id": "delta-a", "connector": "delta-a", "mode": "delta", "format": "tsv", "compression": "gzip"},
            {"id": "delta-b", "connector": "delta-b", "mode": "delta"},
            {"id": "full", "connector": "full", "format": "tsv", "compression": "gzip"},
            {"id": "forced", "connector": "forced", "mode": "delta", "fullEverySeconds": 604800},
            {"id": "inbox", "connector": "inbox", "mode": "delta", "reports": ["track"]}
        ]
    });
    create_raw_secret(&admin, &format!("{tenants_prefix}acme"), &secret.to_string()).await;
    Scene { endpoint, admin, staging, customer, tenants_prefix, recipient, secret_key, secret }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_feeds_deliver_exactly_what_changed_and_fall_back_to_full_saying_why() {
    let logs = capture_logs();
    let scene = scene().await;
    let s3 = s3_client(&scene.admin);
    let data = S3Store::new(s3.clone(), fresh_bucket(&s3, "delta-data").await, "");
    let rank = RankDeps {
        data: data.clone(),
        staging: scene.staging.clone(),
        settings: RankSettings { part_rows: 150, ..RankSettings::default() },
    };

    // ---- Run 1: every feed's first delivery is full.
    put(&data, "catalogue/catalogue.parquet", catalogue_file(&catalogue_1(), 100)).await;
    for day in 13..=15 {
        let plays = plays_of(day, 1..=400);
        put(&data, &format!("plays/date=2026-11-{day}/part-0.parquet"), plays_file(&plays, 100)).await;
    }
    rank_at(&rank, "2026-11-16T03:00:00Z").await;
    scene.fan_out(RUN_1).await;
    for feed in ["delta-a", "delta-b", "forced"] {
        let job = scene.job("s3", RUN_1, feed).await;
        assert_eq!((job.plan.mode, job.plan.base_run_id), (DeliveryMode::Full, None), "{feed}");
        let reason = job.plan.full_reason.unwrap_or_default();
        assert!(reason.contains("no earlier delivery of this feed"), "{feed}: {reason}");
    }
    let full_job = scene.job("s3", RUN_1, "full").await;
    assert_eq!(
        (full_job.plan.mode, full_job.plan.full_reason),
        (DeliveryMode::Full, None),
        "a full feed needs no reason"
    );
    scene.deliver(RUN_1).await;
    assert_eq!(scene.status(RUN_1, "delta-a").await.plan.unwrap().mode, DeliveryMode::Full);

    // ---- Run 2: tracks dropped and added, a day of plays more.
    put(&data, "catalogue/catalogue.parquet", catalogue_file(&catalogue_2(), 100)).await;
    put(&data, "plays/date=2026-11-18/part-0.parquet", plays_file(&plays_of(18, 16..=420), 100)).await;
    let run_2 = rank_at(&rank, "2026-11-19T03:00:00Z").await;
    scene.fan_out(RUN_2).await;
    for (kind, feed) in [("s3", "delta-a"), ("s3", "delta-b"), ("s3", "forced"), ("email", "inbox")] {
        let job = scene.job(kind, RUN_2, feed).await;
        assert_eq!((job.plan.mode, job.plan.base_run_id), (DeliveryMode::Delta, Some(run(RUN_1))), "{feed}");
    }
    scene.deliver(RUN_2).await;
    let status = scene.status(RUN_2, "delta-a").await;
    let plan = status.plan.expect("the status says what was delivered");
    assert_eq!((plan.mode, plan.base_run_id), (DeliveryMode::Delta, Some(run(RUN_1))));

    // Applying delta-a's files to what delta-a received in run 1 gives what
    // the full feed received in run 2, line for line after sorting.
    for kind in ReportKind::ALL {
        let header = format!("{}\tsearchRank\tsearchModifier", kind.id_field());
        let id_of = |line: &str| line.split('\t').next().unwrap().to_owned();
        let mut applied: BTreeMap<String, String> = BTreeMap::new();
        let first = scene.destination_manifest("delta-a/", kind, RUN_1).await;
        assert_eq!(first.mode, DeliveryMode::Full);
        for part in &first.parts {
            for line in scene.tsv_lines(&part.part.key, &header).await {
                applied.insert(id_of(&line), line);
            }
        }
        let delta = scene.destination_manifest("delta-a/", kind, RUN_2).await;
        assert_eq!((delta.mode, delta.base_run_id), (DeliveryMode::Delta, Some(run(RUN_1))));
        let mut removed_ids = Vec::new();
        for part in &delta.parts {
            let body = scene.customer.get(&part.part.key).await.unwrap();
            assert_eq!((part.part.bytes, part.part.sha256.clone()), (body.len() as u64, sha256_hex(&body)));
            match part.kind {
                Some(FileKind::Upsert) => {
                    assert!(part.part.key.contains("/part-"), "{}", part.part.key);
                    for line in scene.tsv_lines(&part.part.key, &header).await {
                        applied.insert(id_of(&line), line);
                    }
                }
                Some(FileKind::Removed) => {
                    assert!(part.part.key.contains("/removed-"), "{}", part.part.key);
                    for id in scene.tsv_lines(&part.part.key, kind.id_field()).await {
                        assert!(applied.remove(&id).is_some(), "removed id {id} was not in run 1");
                        removed_ids.push(id.parse::<i64>().unwrap());
                    }
                }
                None => panic!("a delta manifest names each file's kind: {part:?}"),
            }
        }
        assert_eq!(delta.removed, Some(removed_ids.len() as u64));
        if kind == ReportKind::Track {
            assert_eq!(removed_ids, (1..=15).collect::<Vec<i64>>(), "exactly the dropped tracks, ascending");
            assert!(delta.upserts.unwrap() >= 20, "at least the 20 new tracks");
        }
        let mut expected = Vec::new();
        let full = scene.destination_manifest("full/", kind, RUN_2).await;
        for part in &full.parts {
            expected.extend(scene.tsv_lines(&part.part.key, &header).await);
        }
        let mut applied: Vec<String> = applied.into_values().collect();
        applied.sort();
        expected.sort();
        assert_eq!(applied, expected, "{}: run 1 + delta = run 2", kind.data_type());
        assert_eq!(delta.rows, run_2.report(kind).unwrap().rows);
    }

    // Both delta feeds (and the email) used one staged delta per report.
    let staged = scene.staging.list("deltas/").await.unwrap();
    let manifests: Vec<&str> =
        staged.iter().map(|o| o.key.as_str()).filter(|k| k.ends_with("_manifest.json")).collect();
    let mut expected_manifests =
        ReportKind::ALL.map(|k| format!("deltas/{}/{RUN_2}/{RUN_1}/_manifest.json", k.data_type())).to_vec();
    expected_manifests.sort();
    assert_eq!(manifests, expected_manifests, "one delta per report, shared by delta-a, delta-b, forced and inbox");
    assert_eq!(logs.text().matches("delta computed").count(), 3, "each delta computed once");
    let canonical = scene.destination_manifest("delta-b/", ReportKind::Track, RUN_2).await;
    let staged_manifest: serde_json::Value = serde_json::from_slice(
        &scene.staging.get(&format!("deltas/track_popularity/{RUN_2}/{RUN_1}/_manifest.json")).await.unwrap(),
    )
    .unwrap();
    let staged_shas: Vec<&str> =
        staged_manifest["files"].as_array().unwrap().iter().map(|f| f["sha256"].as_str().unwrap()).collect();
    let delivered_shas: Vec<&str> = canonical.parts.iter().map(|p| p.part.sha256.as_str()).collect();
    assert_eq!(delivered_shas, staged_shas, "a canonical-format feed receives the staged delta byte for byte");

    // The email links the delta files and says what it is against.
    let emails = emails_to(&sent_emails(&scene.endpoint).await, &scene.recipient);
    assert_eq!(emails.len(), 2, "one email per run");
    let (text, html) = mime_bodies(emails[1].raw_data.as_deref().unwrap());
    assert!(text.contains(&format!("This is a delta against run {RUN_1}")), "{text}");
    assert!(html.contains(&format!("delta against run {RUN_1}")), "{html}");
    let links = links_in(&text);
    assert!(!links.is_empty());
    for link in &links {
        assert!(link.contains(&format!("/deltas/track_popularity/{RUN_2}/{RUN_1}/")), "{link}");
        let (code, body) = http_get(link).await;
        assert_eq!(code, 200, "{link}");
        assert!(staged_shas.contains(&sha256_hex(&body).as_str()), "the link serves a staged delta file");
    }

    // ---- Run 3: run 2's reports have left staging, and it is a week after run 1.
    for part in scene.staging.list(&format!("reports/track_popularity/{RUN_2}/")).await.unwrap() {
        s3.delete_object().bucket(scene.staging.bucket()).key(&part.key).send().await.unwrap();
    }
    put(&data, "plays/date=2026-11-22/part-0.parquet", plays_file(&plays_of(22, 16..=420), 100)).await;
    rank_at(&rank, "2026-11-23T03:00:00Z").await;
    // And delta-b now asks for the track report only.
    let mut secret = scene.secret.clone();
    secret["feeds"][1]["reports"] = json!(["track"]);
    secrets_manager_client(&scene.admin)
        .put_secret_value()
        .secret_id(format!("{}acme", scene.tenants_prefix))
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap();
    scene.fan_out(RUN_3).await;
    let changed = scene.job("s3", RUN_3, "delta-b").await;
    assert_eq!((changed.plan.mode, changed.plan.base_run_id), (DeliveryMode::Full, None));
    let reason = changed.plan.full_reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("the feed changed since its last delivery (run {RUN_2})"))
            && reason.contains("delta-b/ track,artist,product, now s3://")
            && reason.ends_with("delta-b/ track"),
        "{reason}"
    );
    for (kind, feed) in [("s3", "delta-a"), ("email", "inbox")] {
        let job = scene.job(kind, RUN_3, feed).await;
        assert_eq!((job.plan.mode, job.plan.base_run_id), (DeliveryMode::Full, None), "{feed}");
        let reason = job.plan.full_reason.unwrap_or_default();
        assert!(
            reason.contains(&format!("the base run {RUN_2}")) && reason.contains("no longer in staging"),
            "{feed}: {reason}"
        );
    }
    let forced = scene.job("s3", RUN_3, "forced").await;
    assert_eq!(forced.plan.mode, DeliveryMode::Full);
    let reason = forced.plan.full_reason.unwrap_or_default();
    assert!(reason.contains("last full delivery is fullEverySeconds (604800 s) or more before this run"), "{reason}");

    assert_logs_hold_none_of(&logs, &[scene.secret_key.as_str()]);
}
