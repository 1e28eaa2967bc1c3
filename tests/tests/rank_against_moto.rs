//! The rank handler against moto's S3: every event in `events/rank/` ranks
//! sample data from a data bucket (under a prefix) into a staging bucket.
//! The published reports equal the reference implementation line for line,
//! the manifest agrees with the parts and was written last, and a re-run of
//! the same event writes nothing and says the run was already published.

use std::collections::BTreeMap;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::NaiveDate;
use integration_tests::reference::reference_reports;
use integration_tests::reports::{assert_report_invariants, parse_part, sha256_hex};
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config};
use popularity_reports::domain::{Encoding, ReportKind};
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps, RankHandlerError};
use popularity_reports::input::{self, CATALOGUE_COLUMNS, PLAYS_COLUMNS};
use popularity_reports::manifest::RunManifest;
use popularity_reports::rank::RankSettings;
use popularity_reports::sample::{self, SampleSpec};
use popularity_reports::store::{s3_client, ObjectSink, ObjectStore, S3Store};

const DATA_PREFIX: &str = "warehouse/music/";

fn rank_events() -> Vec<(String, EventBridgeEvent<serde_json::Value>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/rank");
    let mut events: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let event = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), event)
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(events.len() >= 2, "events/rank/ holds the schedule events");
    events
}

/// Reads the sample data back with the input decoder, for the reference.
async fn load_inputs(data: &S3Store) -> (Vec<(i64, i64, i64)>, Vec<(NaiveDate, i64, i64)>) {
    let mut catalogue = Vec::new();
    for file in input::find_catalogue(data).await.unwrap() {
        let bytes = data.get(&file.key).await.unwrap();
        for group in 0..input::inspect(&file.key, bytes.clone(), &CATALOGUE_COLUMNS).unwrap() {
            let c = input::read_int64_columns(&file.key, bytes.clone(), group, &CATALOGUE_COLUMNS).unwrap();
            catalogue.extend((0..c[0].len()).map(|i| (c[0][i], c[1][i], c[2][i])));
        }
    }
    let mut plays = Vec::new();
    for entry in data.list("plays/").await.unwrap() {
        let day = NaiveDate::parse_from_str(&entry.key["plays/date=".len().."plays/date=YYYY-MM-DD".len()], "%Y-%m-%d")
            .unwrap();
        let bytes = data.get(&entry.key).await.unwrap();
        for group in 0..input::inspect(&entry.key, bytes.clone(), &PLAYS_COLUMNS).unwrap() {
            let c = input::read_int64_columns(&entry.key, bytes.clone(), group, &PLAYS_COLUMNS).unwrap();
            plays.extend((0..c[0].len()).map(|i| (day, c[0][i], c[1][i])));
        }
    }
    (catalogue, plays)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rank_event_publishes_reports_equal_to_the_reference() {
    let config = sdk_config(&moto_endpoint()).await;
    let s3 = s3_client(&config);
    let data_bucket = fresh_bucket(&s3, "data").await;
    let staging_bucket = fresh_bucket(&s3, "staging").await;
    let data = S3Store::new(s3.clone(), data_bucket, DATA_PREFIX);
    let spec =
        SampleSpec { tracks: 3_000, days: 35, end_date: NaiveDate::from_ymd_opt(2026, 11, 18).unwrap(), seed: 11 };
    sample::generate(&data, &spec, &|_| {}).await.unwrap();
    let (catalogue, plays) = load_inputs(&data).await;
    let deps = RankDeps {
        data,
        staging: S3Store::new(s3.clone(), staging_bucket.clone(), ""),
        settings: RankSettings { part_rows: 1_000, ..RankSettings::default() },
    };

    for (name, event) in rank_events() {
        let run_time = event.time.unwrap();
        let response = handle_schedule_event(&deps, event.clone()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let manifest_key = format!("manifests/{}.json", response.run_id);
        assert_eq!(response.manifest_key, format!("s3://{staging_bucket}/{manifest_key}"));
        let manifest: RunManifest = serde_json::from_slice(&deps.staging.get(&manifest_key).await.unwrap()).unwrap();
        assert_eq!(manifest.run_id.to_string(), run_time.format("%Y%m%d%H%M%S").to_string());

        let expected = reference_reports(&catalogue, &plays, run_time, 28, 7.0);
        let mut part_shas: BTreeMap<String, String> = BTreeMap::new();
        for kind in ReportKind::ALL {
            let report = manifest.report(kind).unwrap();
            let mut lines = Vec::new();
            for (number, part) in report.parts.iter().enumerate() {
                assert_eq!(
                    part.key,
                    format!("reports/{}/{}/part-{:03}.json", kind.data_type(), manifest.run_id, number + 1)
                );
                let bytes = deps.staging.get(&part.key).await.unwrap();
                assert_eq!(part.sha256, sha256_hex(&bytes), "{name}: {}", part.key);
                assert_eq!(part.bytes, bytes.len() as u64);
                let part_lines = parse_part(&bytes, Encoding::default(), kind);
                assert_eq!(part.rows, part_lines.len() as u64);
                lines.extend(part_lines);
                part_shas.insert(part.key.clone(), part.sha256.clone());
            }
            assert_report_invariants(kind.data_type(), &lines);
            assert_eq!(report.rows, expected[kind.data_type()].len() as u64, "{name}: {} row count", kind.data_type());
            assert_eq!(lines, expected[kind.data_type()], "{name}: {} differs from the reference", kind.data_type());
        }
        assert_eq!(manifest.report(ReportKind::Track).unwrap().rows, catalogue.len() as u64);
        assert_eq!(
            manifest.inputs.play_rows as usize,
            plays.iter().filter(|p| manifest.scoring.days_with_plays.contains(&p.0)).count()
        );
        // The window is the run's day and the 27 before it; the sample has
        // plays up to its end date only.
        let window_days_with_data = (0..28)
            .map(|back| run_time.date_naive() - chrono::Duration::days(back))
            .filter(|day| *day <= spec.end_date && *day > spec.end_date - chrono::Duration::days(spec.days as i64))
            .count();
        assert_eq!(
            manifest.scoring.days_with_plays.len(),
            window_days_with_data,
            "{name}: days of the window with plays"
        );

        // The manifest was written after every part.
        let listed = s3.list_objects_v2().bucket(&staging_bucket).send().await.unwrap();
        let modified = |key: &str| {
            listed.contents().iter().find(|o| o.key() == Some(key)).and_then(|o| o.last_modified().cloned()).unwrap()
        };
        let manifest_time = modified(&manifest_key);
        for key in part_shas.keys() {
            assert!(modified(key) <= manifest_time, "{key} is newer than the manifest");
        }

        assert!(!response.already_published, "{name}: the first run publishes");

        // A published run is immutable: re-running the same event writes
        // nothing (no object is newer) and says the run was already published.
        let before: BTreeMap<String, _> = listed
            .contents()
            .iter()
            .map(|o| (o.key().unwrap().to_owned(), (o.last_modified().cloned(), o.e_tag().map(str::to_owned))))
            .collect();
        let again = handle_schedule_event(&deps, event).await.unwrap();
        assert!(again.already_published, "{name}: the re-run must say the run was already published");
        assert_eq!(
            (again.tracks, again.artists, again.products),
            (response.tracks, response.artists, response.products)
        );
        let relisted = s3.list_objects_v2().bucket(&staging_bucket).send().await.unwrap();
        let after: BTreeMap<String, _> = relisted
            .contents()
            .iter()
            .map(|o| (o.key().unwrap().to_owned(), (o.last_modified().cloned(), o.e_tag().map(str::to_owned))))
            .collect();
        assert_eq!(after, before, "{name}: a re-run of a published run must write nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_in_the_bucket_publishes_nothing() {
    let config = sdk_config(&moto_endpoint()).await;
    let s3 = s3_client(&config);
    let data = S3Store::new(s3.clone(), fresh_bucket(&s3, "data").await, DATA_PREFIX);
    let spec = SampleSpec { tracks: 1_000, days: 3, end_date: NaiveDate::from_ymd_opt(2026, 11, 18).unwrap(), seed: 3 };
    sample::generate(&data, &spec, &|_| {}).await.unwrap();
    data.put("plays/2026-11-18/extra.parquet", bytes::Bytes::from_static(b"x"), "application/octet-stream")
        .await
        .unwrap();
    let deps = RankDeps {
        data,
        staging: S3Store::new(s3.clone(), fresh_bucket(&s3, "staging").await, ""),
        settings: RankSettings::default(),
    };
    let (_, event) = rank_events().remove(0);
    let error = handle_schedule_event(&deps, event).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!("{DATA_PREFIX}plays/2026-11-18/extra.parquet")) && error.contains("date=YYYY-MM-DD"),
        "{error}"
    );
    assert!(deps.staging.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_scheduled_event_without_time_is_rejected() {
    let config = sdk_config(&moto_endpoint()).await;
    let s3 = s3_client(&config);
    let deps = RankDeps {
        data: S3Store::new(s3.clone(), "unused-data", ""),
        staging: S3Store::new(s3, "unused-staging", ""),
        settings: RankSettings::default(),
    };
    let (_, mut event) = rank_events().remove(0);
    event.time = None;
    let error = handle_schedule_event(&deps, event).await.unwrap_err();
    assert!(matches!(error, RankHandlerError::MissingTime));
}
