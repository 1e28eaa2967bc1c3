//! Every kind of bad input fails the run with an error that names the file
//! (and the row group and column where they apply), and publishes nothing:
//! no manifest, no report part. Unknown tracks in plays are the exception:
//! counted and ignored. Run times no run can have (before 2000, past year
//! 9999, more than a day ahead) and degenerate settings are refused naming
//! them; a window without plays is published with a warning and a metric.
//! Input as Athena writes it (lower-case column names, objects without an
//! extension) ranks the same as the exact names.

use chrono::{DateTime, Utc};
use integration_tests::local_stores::LocalStores;
use integration_tests::parquet_fixtures::{catalogue_file, parquet_file, plays_file, Column};
use popularity_reports::handlers::rank::{handle_schedule_event, run_metrics, RankDeps};
use popularity_reports::rank::{rank_run, RankError, RankSettings};
use popularity_reports::store::{ObjectSink, ObjectStore};

const RUN_TIME: &str = "2026-11-19T03:00:00Z";
const DAY: &str = "2026-11-18";

struct Fixture {
    stores: LocalStores,
}

impl Fixture {
    /// A valid catalogue of 3 tracks and one day of plays.
    async fn valid() -> Self {
        let fixture = Fixture { stores: LocalStores::new("bad-input") };
        fixture.put("catalogue/part-0.parquet", catalogue_file(&[(1, 10, 100), (2, 10, 100), (3, 11, 101)], 2)).await;
        fixture.put(&format!("plays/date={DAY}/part-0.parquet"), plays_file(&[(1, 5), (3, 9)], 10)).await;
        fixture
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.stores.data.put(key, bytes.into(), "application/octet-stream").await.unwrap();
    }

    async fn remove(&self, key: &str) {
        std::fs::remove_file(self.stores.data.root().join(key)).unwrap();
    }

    async fn rank(&self) -> Result<popularity_reports::manifest::RunManifest, RankError> {
        let time: DateTime<Utc> = RUN_TIME.parse().unwrap();
        rank_run(&self.stores.data, &self.stores.staging, &RankSettings::default(), time).await.map(|run| run.manifest)
    }

    /// Runs, expects a bad-input error mentioning every fragment, and checks
    /// that nothing at all was published.
    async fn assert_rejected(&self, fragments: &[&str]) {
        let error = self.rank().await.expect_err("bad input must fail the run");
        assert!(matches!(error, RankError::Input(_)), "{error}");
        let message = error.to_string();
        for fragment in fragments {
            assert!(message.contains(fragment), "{message:?} should mention {fragment:?}");
        }
        assert!(self.stores.staging.list("").await.unwrap().is_empty(), "nothing may be published after: {message}");
    }
}

#[tokio::test]
async fn a_catalogue_without_a_column_is_rejected_naming_file_and_column() {
    let fixture = Fixture::valid().await;
    let file = parquet_file(&[Column::Int64("trackId", vec![1, 2]), Column::Int64("masterArtistId", vec![1, 1])], 10);
    fixture.put("catalogue/part-0.parquet", file).await;
    fixture.assert_rejected(&["catalogue/part-0.parquet", "missing column productId", "trackId, masterArtistId"]).await;
}

#[tokio::test]
async fn a_column_of_the_wrong_type_is_rejected_naming_file_and_column() {
    let fixture = Fixture::valid().await;
    let file = parquet_file(&[Column::Utf8("trackId", vec!["1".into()]), Column::Int64("plays", vec![3])], 10);
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), file).await;
    fixture
        .assert_rejected(&[
            &format!("plays/date={DAY}/part-0.parquet"),
            "column trackId",
            "BYTE_ARRAY",
            "expected INT64",
        ])
        .await;
}

#[tokio::test]
async fn int32_columns_are_widened_not_rejected() {
    let fixture = Fixture::valid().await;
    let file = parquet_file(&[Column::Int32("trackId", vec![1, 2]), Column::Int32("plays", vec![4, 4])], 10);
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), file).await;
    let manifest = fixture.rank().await.unwrap();
    assert_eq!(manifest.inputs.play_rows, 2);
}

#[tokio::test]
async fn athena_written_input_with_lower_case_columns_and_no_extension_ranks_the_same() {
    let fixture = Fixture::valid().await;
    let expected = fixture.rank().await.unwrap();
    let athena = Fixture { stores: LocalStores::new("bad-input-athena") };
    let catalogue = parquet_file(
        &[
            Column::Int64("trackid", vec![1, 2, 3]),
            Column::Int64("masterartistid", vec![10, 10, 11]),
            Column::Int64("productid", vec![100, 100, 101]),
        ],
        2,
    );
    athena.put("catalogue/20261119_020000_00007_fghij_0e4c1b8a-8c55-4f4c-9a43-6a0e1f0b9c11", catalogue).await;
    let plays = parquet_file(&[Column::Int64("trackid", vec![1, 3]), Column::Int64("plays", vec![5, 9])], 10);
    athena
        .put(&format!("plays/date={DAY}/20261119_030000_00012_abcde_1f4c0bd3-1b8b-4f2e-9c8e-1a2b3c4d5e6f"), plays)
        .await;
    let manifest = athena.rank().await.unwrap();
    assert_eq!((manifest.inputs.play_rows, manifest.inputs.catalogue_rows), (2, 3));
    // Parts carry their byte size and SHA-256: the same reports, to the byte.
    assert_eq!(manifest.reports, expected.reports);
}

#[tokio::test]
async fn a_writers_work_in_progress_and_folder_markers_are_skipped() {
    let expected = Fixture::valid().await.rank().await.unwrap();
    let fixture = Fixture::valid().await;
    let garbage = || b"half-written by a job still running".to_vec();
    fixture.put("catalogue/_temporary/0/part-9.parquet", garbage()).await;
    fixture.put("catalogue/.hive-staging/part-9", garbage()).await;
    fixture.put("catalogue/extra_$folder$", Vec::new()).await;
    fixture.put("plays/_temporary/0/part-0.parquet", garbage()).await;
    fixture.put(&format!("plays/date={DAY}/_temporary/0/part-00000"), garbage()).await;
    fixture.put(&format!("plays/date={DAY}_$folder$"), Vec::new()).await;
    fixture.put(&format!("plays/date={DAY}/marker"), Vec::new()).await;
    let manifest = fixture.rank().await.unwrap();
    assert_eq!((manifest.inputs.catalogue_files, manifest.inputs.play_files), (1, 1));
    assert_eq!(manifest.reports, expected.reports);
}

#[tokio::test]
async fn columns_that_match_only_ignoring_case_twice_are_rejected_naming_both() {
    let fixture = Fixture::valid().await;
    let file = parquet_file(
        &[Column::Int64("TRACKID", vec![1]), Column::Int64("trackid", vec![1]), Column::Int64("plays", vec![3])],
        10,
    );
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), file).await;
    fixture.assert_rejected(&[&format!("plays/date={DAY}/part-0.parquet"), "trackId", "TRACKID, trackid"]).await;
}

#[tokio::test]
async fn an_object_without_an_extension_that_is_not_parquet_is_rejected_naming_it() {
    let fixture = Fixture::valid().await;
    fixture.put(&format!("plays/date={DAY}/README"), b"plays of the 18th, exported by hand".to_vec()).await;
    fixture.assert_rejected(&[&format!("plays/date={DAY}/README"), "not a readable Parquet file"]).await;
}

#[tokio::test]
async fn a_corrupt_parquet_file_is_rejected_naming_it() {
    let fixture = Fixture::valid().await;
    fixture.put("catalogue/part-1.parquet", b"this is not parquet at all, just text".to_vec()).await;
    fixture.assert_rejected(&["catalogue/part-1.parquet", "not a readable Parquet file"]).await;
}

#[tokio::test]
async fn a_truncated_parquet_file_is_rejected_naming_it() {
    let fixture = Fixture::valid().await;
    let whole = plays_file(&(0..1000).map(|i| (i, i)).collect::<Vec<_>>(), 100);
    fixture.put(&format!("plays/date={DAY}/part-1.parquet"), whole[..whole.len() / 2].to_vec()).await;
    fixture.assert_rejected(&[&format!("plays/date={DAY}/part-1.parquet"), "not a readable Parquet file"]).await;
}

#[tokio::test]
async fn a_file_whose_pages_are_damaged_is_rejected_naming_the_row_group() {
    let fixture = Fixture::valid().await;
    let mut file = plays_file(&(0..1000).map(|i| (i, i % 7)).collect::<Vec<_>>(), 400);
    // Damage the middle of the data pages, leaving the footer intact.
    for byte in &mut file[200..260] {
        *byte ^= 0x5A;
    }
    fixture.put(&format!("plays/date={DAY}/part-1.parquet"), file).await;
    fixture.assert_rejected(&[&format!("plays/date={DAY}/part-1.parquet"), "row group 0"]).await;
}

#[tokio::test]
async fn an_empty_catalogue_is_rejected() {
    let fixture = Fixture::valid().await;
    fixture.put("catalogue/part-0.parquet", catalogue_file(&[], 10)).await;
    fixture.assert_rejected(&["catalogue/part-0.parquet", "has no rows"]).await;
}

#[tokio::test]
async fn a_missing_catalogue_is_rejected() {
    let fixture = Fixture::valid().await;
    fixture.remove("catalogue/part-0.parquet").await;
    fixture.assert_rejected(&["no catalogue files", "catalogue/"]).await;
}

#[tokio::test]
async fn duplicate_track_ids_are_rejected_naming_both_places() {
    let fixture = Fixture::valid().await;
    fixture.put("catalogue/part-1.parquet", catalogue_file(&[(7, 1, 1), (3, 1, 1)], 10)).await;
    fixture
        .assert_rejected(&[
            "duplicate trackId 3",
            "catalogue/part-0.parquet (row 2)",
            "catalogue/part-1.parquet (row 1)",
        ])
        .await;
}

#[tokio::test]
async fn negative_plays_are_rejected_naming_file_row_group_and_track() {
    let fixture = Fixture::valid().await;
    let rows: Vec<(i64, i64)> = (0..30).map(|i| (i, if i == 25 { -4 } else { 1 })).collect();
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), plays_file(&rows, 10)).await;
    fixture
        .assert_rejected(&[
            &format!("plays/date={DAY}/part-0.parquet"),
            "row group 2",
            "negative plays -4 for trackId 25",
        ])
        .await;
}

#[tokio::test]
async fn null_values_are_rejected_naming_file_row_group_and_column() {
    let fixture = Fixture::valid().await;
    let file =
        parquet_file(&[Column::Int64("trackId", vec![1, 2]), Column::OptionalInt64("plays", vec![Some(1), None])], 10);
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), file).await;
    fixture.assert_rejected(&["row group 0", "column plays", "1 null value"]).await;
}

#[tokio::test]
async fn errors_in_a_column_matched_ignoring_case_name_it_as_the_file_spells_it() {
    let fixture = Fixture::valid().await;
    let file =
        parquet_file(&[Column::Int64("trackid", vec![1, 2]), Column::OptionalInt64("PLAYS", vec![Some(1), None])], 10);
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), file).await;
    fixture.assert_rejected(&["row group 0", "column PLAYS", "1 null value"]).await;

    let fixture = Fixture::valid().await;
    let file = parquet_file(&[Column::Utf8("trackid", vec!["1".into()]), Column::Int64("plays", vec![3])], 10);
    fixture.put(&format!("plays/date={DAY}/part-0.parquet"), file).await;
    fixture.assert_rejected(&["column trackid", "expected INT64"]).await;
}

#[tokio::test]
async fn a_plays_folder_not_named_by_date_is_rejected_naming_it() {
    let fixture = Fixture::valid().await;
    fixture.put("plays/2026-11-17/part-0.parquet", plays_file(&[(1, 1)], 10)).await;
    fixture.assert_rejected(&["plays/2026-11-17/part-0.parquet", "\"2026-11-17\" is not named date=YYYY-MM-DD"]).await;
}

#[tokio::test]
async fn plays_of_unknown_tracks_are_counted_and_ignored() {
    let fixture = Fixture::valid().await;
    fixture.put(&format!("plays/date={DAY}/part-1.parquet"), plays_file(&[(999, 40), (998, 2)], 10)).await;
    let manifest = fixture.rank().await.unwrap();
    assert_eq!(manifest.inputs.unknown_track_play_rows, 2);
    assert_eq!(manifest.inputs.unknown_track_plays, 42);
    assert_eq!(manifest.report(popularity_reports::domain::ReportKind::Track).unwrap().rows, 3);
}

/// A scheduled event with `time`, as EventBridge sends it to rank.
fn schedule_event(time: &str) -> aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value> {
    serde_json::from_value(serde_json::json!({
        "version": "0", "id": "e", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": time, "region": "us-east-1", "resources": [], "detail": {}
    }))
    .unwrap()
}

#[tokio::test]
async fn run_times_no_run_can_have_are_refused_naming_the_time_and_nothing_is_published() {
    use chrono::{Duration, NaiveDate};
    let fixture = Fixture::valid().await;
    let at = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let cases: [(DateTime<Utc>, &str); 5] = [
        (at(10000, 1, 1), "past year 9999"),
        (at(9999, 12, 31), "ahead of now"),
        (at(1970, 1, 1), "before 2000-01-01T00:00:00Z"),
        (at(2000, 1, 1) - Duration::seconds(1), "before 2000-01-01T00:00:00Z"),
        (Utc::now() + Duration::hours(25), "more than 24 hours ahead of now"),
    ];
    for (time, reason) in cases {
        let outcome = rank_run(&fixture.stores.data, &fixture.stores.staging, &RankSettings::default(), time).await;
        let error = outcome.expect_err("refused");
        assert!(matches!(error, RankError::RunTime(_)), "{time}: {error}");
        let message = error.to_string();
        assert!(message.contains(&time.to_string()) && message.contains(reason), "{message}");
        assert!(fixture.stores.staging.list("").await.unwrap().is_empty(), "nothing published for {time}");
    }

    // Through the function: the event's time is named as such.
    let deps = RankDeps {
        data: fixture.stores.data.clone(),
        staging: fixture.stores.staging.clone(),
        settings: RankSettings::default(),
    };
    let error = handle_schedule_event(&deps, schedule_event("1970-01-01T00:00:00Z")).await.unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("the scheduled event's `time` cannot be a run's time"), "{message}");
    assert!(message.contains("1970-01-01 00:00:00 UTC"), "{message}");
    assert!(fixture.stores.staging.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_degenerate_half_life_is_refused_naming_it_and_nothing_is_published() {
    let fixture = Fixture::valid().await;
    let time: DateTime<Utc> = RUN_TIME.parse().unwrap();
    for half_life in [1e-300, 0.0, 1e300] {
        let mut settings = RankSettings::default();
        settings.rules.half_life_days = half_life;
        let error = rank_run(&fixture.stores.data, &fixture.stores.staging, &settings, time).await.unwrap_err();
        assert!(matches!(error, RankError::Settings(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("half-life of {half_life:?} days")) && message.contains("0.1 to 3650"),
            "{message}"
        );
        assert!(fixture.stores.staging.list("").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_window_without_plays_is_published_with_a_warning_and_the_runs_without_plays_metric() {
    let logs = integration_tests::delivery::capture_logs();
    let fixture = Fixture::valid().await;
    let deps = RankDeps {
        data: fixture.stores.data.clone(),
        staging: fixture.stores.staging.clone(),
        settings: RankSettings::default(),
    };
    // The only plays are of 2026-11-18; a window of 28 days ending 2026-10-01 has none.
    let response = handle_schedule_event(&deps, schedule_event("2026-10-01T03:00:00Z")).await.unwrap();
    assert_eq!(response.tracks, 3);
    let manifest: popularity_reports::manifest::RunManifest =
        serde_json::from_slice(&fixture.stores.staging.get("manifests/20261001030000.json").await.unwrap()).unwrap();
    let metric = |manifest: &popularity_reports::manifest::RunManifest| {
        run_metrics(manifest).into_iter().find(|(name, _)| *name == "RunsWithoutPlays").unwrap().1
    };
    assert_eq!(metric(&manifest), 1.0);
    let warnings: Vec<String> = logs
        .text()
        .lines()
        .filter(|line| {
            line.contains("20261001030000") && line.contains("no plays of catalogue tracks fall inside the window")
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);

    // A run whose window holds the plays: no warning, metric 0.
    let response = handle_schedule_event(&deps, schedule_event(RUN_TIME)).await.unwrap();
    assert!(!response.already_published);
    let manifest = fixture.rank().await.unwrap();
    assert_eq!(metric(&manifest), 0.0);
}
