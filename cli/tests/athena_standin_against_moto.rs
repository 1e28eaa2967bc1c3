//! The Athena path end to end, locally, against `popularity rank` (needs
//! moto, and the project's `.venv` with DuckDB: `bash scripts/emulator.sh
//! install`, `.venv/bin/python -m pip install duckdb`).
//!
//! 1,000,000 tracks × 28 days in a data bucket on moto are ranked twice at
//! the same time into two staging buckets: by `popularity rank` (the rank
//! Lambda's code) and by `popularity rank --engine athena-standin` (the
//! state machine of template.yaml executed state by state, the `sql/` files
//! in DuckDB with UNLOAD-shaped output, then the real publish step). Every
//! published part is byte-identical, and the manifests equal but for
//! `generatedAt` and the engine; each run is then fanned out and delivered
//! by deliver-s3 to a customer's bucket, and the delivered objects are
//! identical too (`_manifest.json` but for `generatedAt`). A second start
//! of the same run publishes nothing new.
//!
//! Without the emulator, on directories: `RankEngine=auto` keeps the
//! Lambda (the rank handler, invoked by the state machine) within its
//! memory and hands over to Athena past it, with the same reports; a day of
//! raw play events is aggregated once by the daily state machine, a re-run
//! writes nothing, and a half-written day is refused.

use std::path::{Path, PathBuf};
use std::process::Output;

use integration_tests::athena_output::read_report_file;
use integration_tests::delivery::{
    create_raw_secret, event_for_key, pinned_now, run_id, s3_deliver_deps, staging_store, unique_tenant_prefix,
};
use integration_tests::{customer, moto_endpoint, sdk_config, unique_bucket_name};
use parquet::basic::Type as PhysicalType;
use parquet::file::reader::{FileReader, SerializedFileReader};
use popularity_reports::handlers::deliver::handle_deliverer_event;
use popularity_reports::handlers::fanout::{fan_out_run, FanoutDeps};
use popularity_reports::store::{s3_client, ObjectStore, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};
use serde_json::Value;

const RUN_TIME: &str = "2026-11-19T03:00:00Z";

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ is in the checkout").to_path_buf()
}

fn popularity(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(args)
        .current_dir(checkout())
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the popularity binary runs")
}

fn succeeded(what: &str, output: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// Every object under `prefix`, with its bytes.
async fn objects(store: &S3Store, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in store.list(prefix).await.unwrap() {
        let body = store.get(&entry.key).await.unwrap();
        all.push((entry.key, body.to_vec()));
    }
    all
}

/// A manifest without what differs between two publications by design.
fn comparable(bytes: &[u8]) -> Value {
    let mut value: Value = serde_json::from_slice(bytes).unwrap();
    for field in ["generatedAt", "engine", "engineReason"] {
        value.as_object_mut().unwrap().remove(field);
    }
    value
}

/// Fans the run of `staging` out to one tenant whose feed takes every
/// report into `bucket` (an `s3-bucket-policy` connector), then delivers it.
async fn deliver(admin: &aws_config::SdkConfig, staging: &S3Store, bucket: &str, hint: &str) {
    let prefix = unique_tenant_prefix(hint);
    let secret = serde_json::json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
        "connectors": {"lake": {"type": "s3-bucket-policy", "bucketArn": format!("arn:aws:s3:::{bucket}"),
            "region": "us-east-1", "prefix": "in/", "bucketOwnerAccountId": "123456789012"}},
        "feeds": [{"id": "all", "connector": "lake"}]});
    create_raw_secret(admin, &format!("{prefix}acme"), &secret.to_string()).await;
    let tenants = || SecretsManagerTenants::new(secrets_manager_client(admin), prefix.as_str()).unwrap();
    let fanout = FanoutDeps { staging: staging.clone(), tenants: tenants(), own_buckets: vec![] };
    let fanned_out = fan_out_run(&fanout, run_id(), pinned_now()).await.unwrap();
    assert_eq!(fanned_out.jobs_created, 1, "{fanned_out:?}");
    let deps = s3_deliver_deps(admin, staging, tenants(), pinned_now);
    let key = format!("jobs/s3/{}/acme/all.json", run_id());
    handle_deliverer_event(&deps, event_for_key(&key), None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_tracks_ranked_on_the_athena_path_publish_and_deliver_the_same_bytes_as_rank() {
    assert_eq!(RUN_TIME.parse::<chrono::DateTime<chrono::Utc>>().unwrap(), run_id().time());
    let admin = sdk_config(&moto_endpoint()).await;
    let s3 = s3_client(&admin);
    let data = unique_bucket_name("standin-data");
    s3.create_bucket().bucket(&data).send().await.unwrap();
    let data_uri = format!("s3://{data}/warehouse");
    succeeded(
        "generate",
        popularity(&[
            "generate",
            "--tracks",
            "1000000",
            "--days",
            "28",
            "--end-date",
            "2026-11-18",
            "--seed",
            "23",
            "--out",
            &data_uri,
        ]),
    );
    let by_lambda = staging_store(&admin, "standin-lambda").await;
    let by_athena = staging_store(&admin, "standin-athena").await;

    let lambda_uri = format!("s3://{}", by_lambda.bucket());
    succeeded("rank", popularity(&["rank", "--data", &data_uri, "--out", &lambda_uri, "--time", RUN_TIME]));
    let athena_uri = format!("s3://{}", by_athena.bucket());
    let standin = ["rank", "--engine", "athena-standin", "--data", &data_uri, "--out", &athena_uri, "--time", RUN_TIME];
    let printed = succeeded("rank --engine athena-standin", popularity(&standin));
    assert!(
        printed.contains("RankStateMachine: PlanRun -> ChooseEngine -> ScoreTracks -> RankAndCount -> TrackPopularity")
            && printed.contains("-> Publish -> Published"),
        "the states of the definition, in order: {printed}"
    );
    assert!(printed.contains("engine athena: RankEngine=athena"), "{printed}");

    // Athena's output as UNLOAD writes it: several Parquet files per report,
    // each in rank order, lower-case columns (DuckDB marks them required
    // where Trino writes optional ones; the publish step reads both).
    let results = by_athena.list("athena-results/").await.unwrap();
    let track_files: Vec<_> = results.iter().filter(|e| e.key.contains("/track_popularity/")).collect();
    assert_eq!(track_files.len(), 16, "{track_files:?}");
    assert_eq!(results.iter().filter(|e| e.key.ends_with("-manifest.csv")).count(), 5, "a data manifest per query");
    let first = by_athena.get(&track_files[0].key).await.unwrap();
    let reader = SerializedFileReader::new(first.clone()).expect("a Parquet file");
    let columns: Vec<_> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.physical_type()))
        .collect();
    assert_eq!(
        columns,
        [
            ("trackid".to_owned(), PhysicalType::INT64),
            ("searchrank".to_owned(), PhysicalType::INT64),
            ("searchmodifier".to_owned(), PhysicalType::DOUBLE)
        ]
    );
    let rows = read_report_file(&first);
    assert!(!rows.is_empty() && rows.windows(2).all(|w| w[0].1 < w[1].1), "a file in rank order");

    // The published runs: the same parts, byte for byte; the same manifest.
    let lambda_parts = objects(&by_lambda, "reports/").await;
    let athena_parts = objects(&by_athena, "reports/").await;
    assert_eq!(lambda_parts.len(), 3, "one part of each report at 1M tracks");
    assert_eq!(
        lambda_parts.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        athena_parts.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for ((key, lambda), (_, athena)) in lambda_parts.iter().zip(&athena_parts) {
        assert!(lambda == athena, "{key} differs");
    }
    let manifest_key = format!("manifests/{}.json", run_id());
    let lambda_manifest = by_lambda.get(&manifest_key).await.unwrap();
    let athena_manifest = by_athena.get(&manifest_key).await.unwrap();
    assert_eq!(comparable(&lambda_manifest), comparable(&athena_manifest));
    let athena: Value = serde_json::from_slice(&athena_manifest).unwrap();
    assert_eq!(
        (athena["engine"].as_str(), athena["inputs"]["catalogueRows"].as_u64()),
        (Some("athena"), Some(1_000_000))
    );

    // Started again: nothing new is written.
    let before = by_athena.list("").await.unwrap();
    let again = succeeded("a second start", popularity(&standin));
    assert!(
        again.contains("PlanRun -> ChooseEngine -> AlreadyPublished") && again.contains("already published"),
        "{again}"
    );
    assert_eq!(by_athena.list("").await.unwrap(), before, "no object added or changed in size");
    assert!(by_athena.get(&manifest_key).await.unwrap() == athena_manifest);

    // Delivered by fanout and deliver-s3: the same objects.
    let owner = customer::account_config(&admin, "444444444444").await;
    let (from_lambda, from_athena) = (unique_bucket_name("standin-cust-l"), unique_bucket_name("standin-cust-a"));
    for bucket in [&from_lambda, &from_athena] {
        s3_client(&owner).create_bucket().bucket(bucket).send().await.unwrap();
    }
    deliver(&admin, &by_lambda, &from_lambda, "standin-l").await;
    deliver(&admin, &by_athena, &from_athena, "standin-a").await;
    let delivered = |bucket: &str| S3Store::new(s3_client(&owner), bucket.to_owned(), "");
    let (lambda_delivered, athena_delivered) =
        (objects(&delivered(&from_lambda), "in/").await, objects(&delivered(&from_athena), "in/").await);
    assert_eq!(lambda_delivered.len(), 6, "three parts and three _manifest.json");
    assert_eq!(lambda_delivered.len(), athena_delivered.len());
    for ((key, lambda), (other, athena)) in lambda_delivered.iter().zip(&athena_delivered) {
        assert_eq!(key, other);
        if key.ends_with("_manifest.json") {
            assert_eq!(comparable(lambda), comparable(athena), "{key}");
        } else {
            assert!(lambda == athena, "{key} differs");
        }
    }
}

/// The binary without an emulator: local directories only.
fn run_local(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_popularity"))
        .args(args)
        .current_dir(checkout())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the popularity binary runs")
}

fn failed(what: &str, output: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{what} should have failed:\n{text}");
    text
}

#[test]
fn auto_keeps_the_lambda_within_its_memory_and_hands_over_to_athena_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    succeeded(
        "generate",
        run_local(&[
            "generate",
            "--tracks",
            "20000",
            "--days",
            "10",
            "--end-date",
            "2026-11-18",
            "--out",
            &path("data"),
        ]),
    );
    let rank = |out: &str, memory: &str| {
        let args =
            ["rank", "--engine", "athena-standin", "--rank-engine", "auto", "--rank-memory-mb", memory, "--data"];
        let mut args: Vec<&str> = args.to_vec();
        let (data, out) = (path("data"), path(out));
        args.extend([data.as_str(), "--out", out.as_str(), "--time", RUN_TIME]);
        succeeded("rank --rank-engine auto", run_local(&args))
    };
    // 20,000 tracks fit a 10,240 MB Lambda: rank, invoked by the state machine.
    let within = rank("lambda", "10240");
    assert!(within.contains("ChooseEngine -> RankOnLambda -> Published"), "{within}");
    assert!(
        within.contains(
            "engine lambda: RankEngine=auto: 20000 catalogue tracks (footers of 1 file(s)) against 182764565"
        ),
        "{within}"
    );
    // A 1 MB Lambda holds 17,848: Athena.
    let past = rank("athena", "1");
    assert!(past.contains("ChooseEngine -> ScoreTracks ->") && past.contains("past the Lambda's limit"), "{past}");
    // Either way, the same reports.
    for kind in ["track_popularity", "artist_popularity", "product_popularity"] {
        let part = format!("reports/{kind}/{}/part-001.json", run_id());
        let read = |out: &str| std::fs::read(dir.path().join(out).join(&part)).unwrap();
        assert!(read("lambda") == read("athena"), "{part}");
    }
}

#[test]
fn a_day_of_raw_play_events_is_written_once_and_a_half_written_day_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("data/play-events/date=2026-11-18");
    std::fs::create_dir_all(&events).unwrap();
    // 2,000 plays of 100 tracks on 2026-11-18, written by DuckDB.
    let script = format!(
        "import duckdb; db = duckdb.connect(); db.execute(\"SET TimeZone = 'UTC'\"); \
         db.execute(\"COPY (SELECT (i % 100) + 7 AS trackId, TIMESTAMP '2026-11-18 00:00:00' + INTERVAL 1 SECOND * (i * 40) \
         AS playedAt FROM range(2000) t(i)) TO '{}' (FORMAT parquet)\")",
        events.join("e.parquet").display()
    );
    let python = checkout().join(".venv/bin/python");
    let made = std::process::Command::new(&python).args(["-c", &script]).status().unwrap();
    assert!(made.success(), "writing the events with {}", python.display());
    let data = dir.path().join("data").to_string_lossy().into_owned();
    let staging = dir.path().join("staging").to_string_lossy().into_owned();
    let args = ["daily-plays", "--data", &data, "--out", &staging, "--time", "2026-11-19T00:30:00Z"];
    let day = dir.path().join("data/plays/date=2026-11-18");
    let files = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&day).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };

    let first = succeeded("daily-plays", run_local(&args));
    assert!(first.contains("PlanDay -> IsTheDayWritten -> AggregateDay -> MarkDayWritten -> DayWritten"), "{first}");
    let written = files();
    assert!(written.contains(&"_SUCCESS".to_owned()) && written.len() > 1, "{written:?}");

    let again = succeeded("daily-plays again", run_local(&args));
    assert!(again.contains("DayAlreadyWritten") && again.contains("already written"), "{again}");
    assert_eq!(files(), written, "a re-run does not double the day");

    // What a failed attempt leaves: files without _SUCCESS.
    std::fs::remove_file(day.join("_SUCCESS")).unwrap();
    let refused = failed("daily-plays over leftovers", run_local(&args));
    assert!(refused.contains("DayPartiallyWritten"), "{refused}");
    assert_eq!(files().len(), written.len() - 1, "nothing added to the leftovers");

    // rank reads the day as rank reads any day of plays: 2,000 plays of 100 tracks.
    let out = dir.path().join("ranked").to_string_lossy().into_owned();
    std::fs::write(day.join("_SUCCESS"), b"").unwrap();
    let catalogue = dir.path().join("data/catalogue");
    std::fs::create_dir_all(&catalogue).unwrap();
    let script = format!(
        "import duckdb; duckdb.connect().execute(\"COPY (SELECT i + 7 AS trackId, i % 10 AS masterArtistId, i % 20 AS productId \
         FROM range(100) t(i)) TO '{}' (FORMAT parquet)\")",
        catalogue.join("c.parquet").display()
    );
    assert!(std::process::Command::new(&python).args(["-c", &script]).status().unwrap().success());
    let ranked =
        succeeded("rank", run_local(&["rank", "--data", &data, "--out", &out, "--time", "2026-11-19T03:00:00Z"]));
    assert!(ranked.contains("ranked 100 play rows of 1 days"), "{ranked}");
}
