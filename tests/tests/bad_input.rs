//! Every kind of bad input fails the run with an error that names the file
//! (and the row group and column where they apply), and publishes nothing:
//! no manifest, no report part. Unknown tracks in plays are the exception:
//! counted and ignored.

use chrono::{DateTime, Utc};
use integration_tests::local_stores::LocalStores;
use integration_tests::parquet_fixtures::{catalogue_file, parquet_file, plays_file, Column};
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
