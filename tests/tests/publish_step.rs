//! The publish step (`shared/src/athena/publish.rs`) on Athena-shaped
//! output, without an emulator: a run ranked by `rank_run` from the
//! generator's Parquet, its reports rewritten as UNLOAD writes them (several
//! Snappy Parquet files per report, ranks interleaved across files, each
//! file in rank order and in several row groups, nullable lower-case
//! columns, a data manifest listing them), and the run's counts as
//! `sql/run_inputs.sql` gives them.
//!
//! - Published from that output, every part is byte-identical to rank's and
//!   the manifest equal to rank's but for `generatedAt` and the engine.
//! - Six kinds of bad output — a missing file, a duplicate rank, a gap, a
//!   truncated file, a renamed column, an empty report — are refused, each
//!   naming the file and the row (the data manifest's row, the file's row,
//!   or the file's schema), and nothing is published (no manifest, no
//!   part).
//! - Publishing twice publishes once; two at once publish once; a step
//!   re-run after a crash mid-write publishes the same bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use integration_tests::athena_output::{read_report_file, report_file, AthenaOutput, AthenaRow};
use popularity_reports::athena::publish::{publish_run, AthenaRun, PublishError, PublishSettings};
use popularity_reports::athena::sql::{Attempt, RunQuery};
use popularity_reports::athena::RunFolders;
use popularity_reports::domain::{ReportKind, RunId};
use popularity_reports::engine::EngineChoice;
use popularity_reports::manifest::{run_manifest_key, Engine, RunManifest};
use popularity_reports::rank::{rank_run, RankSettings};
use popularity_reports::sample::{self, SampleSpec};
use popularity_reports::scoring::ScoringRules;
use popularity_reports::store::{
    ConditionalPut, LocalDirStore, ObjectEntry, ObjectSink, ObjectStore, StoreError, UploadReceipt, VersionedObject,
    WriteCondition,
};
use serde_json::{json, Value};

const RUN_TIME: &str = "2026-11-19T03:00:00Z";
const ATTEMPT: &str = "exec-7";
const BUCKET: &str = "st-staging";
/// Ranks per block; blocks go round-robin to the files of a report.
const BLOCK: u64 = 700;
const FILES: usize = 5;
/// Rows per row group: each track file (4,000 rows) has several.
const ROW_GROUP_ROWS: usize = 1_500;

/// Athena's names of the track report's columns.
const TRACK_NAMES: [&str; 3] = ["trackid", "searchrank", "searchmodifier"];

fn run_time() -> DateTime<Utc> {
    RUN_TIME.parse().unwrap()
}

fn run() -> RunId {
    RunId::from_time(run_time())
}

fn rules() -> ScoringRules {
    ScoringRules { lookback_days: 7, half_life_days: 7.0 }
}

fn attempt() -> Attempt {
    Attempt::new(ATTEMPT).unwrap()
}

fn folders() -> RunFolders {
    RunFolders::new(BUCKET, "")
}

/// The generator's inputs, rank's published run of them, and a staging
/// directory holding that run as Athena's output.
struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    data: LocalDirStore,
    ranked: LocalDirStore,
    staging: LocalDirStore,
    part_rows: u64,
}

fn temp_store(hint: &str) -> (tempfile::TempDir, LocalDirStore) {
    let dir = tempfile::Builder::new().prefix(hint).tempdir().unwrap();
    let store = LocalDirStore::new(dir.path());
    (dir, store)
}

impl Fixture {
    async fn new(part_rows: u64) -> Self {
        let (data_dir, data) = temp_store("publish-data-");
        let (ranked_dir, ranked) = temp_store("publish-ranked-");
        let (staging_dir, staging) = temp_store("publish-staging-");
        let spec =
            SampleSpec { tracks: 20_000, days: 10, end_date: NaiveDate::from_ymd_opt(2026, 11, 18).unwrap(), seed: 3 };
        sample::generate(&data, &spec, &|_| {}).await.unwrap();
        let settings = RankSettings { rules: rules(), part_rows, threads: 2, ..RankSettings::default() };
        let published = rank_run(&data, &ranked, &settings, run_time()).await.unwrap();
        let fixture = Self { _dirs: vec![data_dir, ranked_dir, staging_dir], data, ranked, staging, part_rows };
        fixture.output().write_from(&fixture.ranked, &published.manifest, &fixture.staging).await;
        fixture
    }

    fn output(&self) -> AthenaOutput {
        AthenaOutput {
            folders: folders(),
            run: run(),
            attempt: attempt(),
            files: FILES,
            block: BLOCK,
            row_group_rows: ROW_GROUP_ROWS,
        }
    }

    fn file_key(&self, query: RunQuery, index: usize) -> String {
        self.output().file_key(query, index)
    }

    async fn write_counts(&self, counts: &Value) {
        self.output().write_counts(&self.staging, counts).await;
    }

    fn athena_run(&self) -> AthenaRun {
        AthenaRun {
            run_time: run_time(),
            attempt: attempt(),
            engine: EngineChoice::athena("RankEngine=athena"),
            outputs: self.output().outputs(),
        }
    }

    fn settings(&self) -> PublishSettings {
        PublishSettings { rules: rules(), part_rows: self.part_rows, format_threads: 2, parts_at_once: 2 }
    }

    async fn publish_into<S: ObjectStore + Clone + 'static>(
        &self,
        staging: &S,
    ) -> Result<popularity_reports::rank::PublishedRun, PublishError> {
        publish_run(&self.data, staging, &folders(), &self.settings(), &self.athena_run()).await
    }

    async fn publish(&self) -> Result<popularity_reports::rank::PublishedRun, PublishError> {
        self.publish_into(&self.staging).await
    }

    /// Rewrites file `index` of the track report's output with `edit`
    /// applied to its rows, its columns named `names`.
    async fn edit_track_file(&self, index: usize, names: [&str; 3], edit: impl FnOnce(&mut Vec<AthenaRow>)) {
        let key = self.file_key(RunQuery::Report(ReportKind::Track), index);
        let mut rows = read_report_file(&self.staging.get(&key).await.unwrap());
        edit(&mut rows);
        let names = names.map(str::to_owned);
        let body = report_file(&names, &rows, ROW_GROUP_ROWS);
        self.staging.put(&key, Bytes::from(body), "application/octet-stream").await.unwrap();
    }

    async fn keys(store: &LocalDirStore, prefix: &str) -> Vec<String> {
        store.list(prefix).await.unwrap().into_iter().map(|e| e.key).collect()
    }

    /// Nothing of the run is published: no manifest, no part.
    async fn assert_nothing_published(&self) {
        assert_eq!(Self::keys(&self.staging, "manifests/").await, Vec::<String>::new());
        assert_eq!(Self::keys(&self.staging, "reports/").await, Vec::<String>::new());
    }
}

/// The manifest without what differs between engines by design.
fn comparable(manifest: &[u8]) -> Value {
    let mut value: Value = serde_json::from_slice(manifest).unwrap();
    for field in ["generatedAt", "engine", "engineReason"] {
        value.as_object_mut().unwrap().remove(field);
    }
    value
}

async fn assert_same_run(ranked: &LocalDirStore, published: &LocalDirStore) {
    let ranked_keys = Fixture::keys(ranked, "reports/").await;
    assert_eq!(ranked_keys, Fixture::keys(published, "reports/").await, "the same parts");
    for key in &ranked_keys {
        assert!(ranked.get(key).await.unwrap() == published.get(key).await.unwrap(), "{key} differs");
    }
    let key = run_manifest_key(run());
    assert_eq!(comparable(&ranked.get(&key).await.unwrap()), comparable(&published.get(&key).await.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athenas_output_publishes_the_same_parts_and_manifest_as_rank() {
    let fixture = Fixture::new(3_000).await;
    let published = fixture.publish().await.unwrap();
    assert!(published.newly_published);
    assert_same_run(&fixture.ranked, &fixture.staging).await;
    let manifest = published.manifest;
    assert_eq!(manifest.engine, Some(Engine::Athena));
    assert_eq!(manifest.engine_reason.as_deref(), Some("RankEngine=athena"));
    assert_eq!(manifest.report(ReportKind::Track).unwrap().parts.len(), 7, "20,000 tracks in parts of 3,000");
    let ranked: RunManifest =
        serde_json::from_slice(&fixture.ranked.get(&run_manifest_key(run())).await.unwrap()).unwrap();
    assert_eq!(ranked.engine, Some(Engine::Lambda));
}

/// Publishes a fixture whose track output `spoil` changed; the error's text.
async fn refused(spoil: impl AsyncFnOnce(&Fixture)) -> (String, Fixture) {
    let fixture = Fixture::new(50_000).await;
    spoil(&fixture).await;
    let error = fixture.publish().await.expect_err("bad output must be refused");
    eprintln!("refused: {error}");
    fixture.assert_nothing_published().await;
    (error.to_string(), fixture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_named_with_its_row_of_the_data_manifest_and_nothing_is_published() {
    let (error, fixture) = refused(async |f| {
        let key = f.file_key(RunQuery::Report(ReportKind::Track), 3);
        std::fs::remove_file(f.staging.root().join(key)).unwrap();
    })
    .await;
    let file = fixture.file_key(RunQuery::Report(ReportKind::Track), 3);
    assert!(error.contains(&file) && error.contains("(row 4)") && error.contains("does not exist"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_rank_names_both_files_and_rows_and_nothing_is_published() {
    // File 1 starts at rank 701; rank 5 (file 0, row 5) is written again first.
    let (error, _) = refused(async |f| {
        f.edit_track_file(1, TRACK_NAMES, |rows| rows.insert(0, (99, 5, 1.0))).await;
    })
    .await;
    assert!(error.contains("track_popularity") && error.contains("rank 5 appears twice"), "{error}");
    assert!(error.contains("q-track_popularity_0, row 5") && error.contains("q-track_popularity_1, row 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_repeated_at_the_seam_of_two_ranges_written_at_once_is_refused_and_nothing_is_published() {
    // Parts of 3,000: 7 parts, written as two ranges at once, parts 1-3
    // (ranks 1..=9,000) and 4-7. Rank 9,001, the second range's first, is
    // in file 2 (blocks of 700 dealt to 5 files); a copy goes into file 0,
    // after its rank 7,700 (the end of its block 10), at row 2,101.
    let fixture = Fixture::new(3_000).await;
    let key = fixture.file_key(RunQuery::Report(ReportKind::Track), 2);
    let holder = read_report_file(&fixture.staging.get(&key).await.unwrap());
    let copy = *holder.iter().find(|row| row.1 == 9_001).expect("rank 9,001 in file 2");
    let mut at = 0;
    fixture
        .edit_track_file(0, TRACK_NAMES, |rows| {
            at = rows.iter().position(|row| row.1 > 9_001).unwrap();
            assert_eq!((at, rows[at - 1].1), (2_100, 7_700));
            rows.insert(at, copy);
        })
        .await;
    let error = fixture.publish().await.expect_err("a repeated rank must be refused").to_string();
    assert!(error.contains("track_popularity") && error.contains("rank 9001 appears twice"), "{error}");
    assert!(
        error.contains("q-track_popularity_0, row 2101") && error.contains("q-track_popularity_2, row 2001"),
        "{error}"
    );
    assert_eq!(Fixture::keys(&fixture.staging, "manifests/").await, Vec::<String>::new(), "no manifest");
    // Mended, the run publishes rank's bytes over whatever parts the
    // refused attempt left.
    fixture.edit_track_file(0, TRACK_NAMES, |rows| assert_eq!(rows.remove(at), copy)).await;
    assert!(fixture.publish().await.unwrap().newly_published);
    assert_same_run(&fixture.ranked, &fixture.staging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modifier_growing_at_a_seam_is_reported_before_a_later_ranges_own_error() {
    // Two ranges as above. Rank 9,001 (file 2) gets modifier 1.0, above rank
    // 9,000's, and rank 15,000 goes missing inside the second range: one
    // merge would stop at 9,001 first, and so must the ranges.
    let fixture = Fixture::new(3_000).await;
    let missing_from = usize::try_from((15_000 - 1) / BLOCK).unwrap() % FILES;
    fixture
        .edit_track_file(2, TRACK_NAMES, |rows| {
            let row = rows.iter_mut().find(|row| row.1 == 9_001).unwrap();
            row.2 = 1.0;
        })
        .await;
    fixture.edit_track_file(missing_from, TRACK_NAMES, |rows| rows.retain(|row| row.1 != 15_000)).await;
    let error = fixture.publish().await.expect_err("a growing modifier must be refused").to_string();
    assert!(error.contains("rank 9001 has searchModifier 1, more than"), "{error}");
    assert!(!error.contains("missing"), "{error}");
    assert_eq!(Fixture::keys(&fixture.staging, "manifests/").await, Vec::<String>::new(), "no manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_ranks_names_the_missing_rank_and_where_the_next_is_and_nothing_is_published() {
    let (error, _) = refused(async |f| {
        f.edit_track_file(0, TRACK_NAMES, |rows| {
            rows.remove(9);
        })
        .await
    })
    .await;
    assert!(error.contains("rank 10 is missing") && error.contains("q-track_popularity_0, row 10"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_named_and_nothing_is_published() {
    let (error, fixture) = refused(async |f| {
        let key = f.file_key(RunQuery::Report(ReportKind::Track), 2);
        let body = f.staging.get(&key).await.unwrap();
        f.staging.put(&key, body.slice(..body.len() / 2), "application/octet-stream").await.unwrap();
    })
    .await;
    // Parquet's footer is at its end: a cut file has none, so no row of it is used.
    let file = fixture.file_key(RunQuery::Report(ReportKind::Track), 2);
    assert!(error.contains(&file) && error.contains("truncated") && error.contains("none of its rows"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_column_is_named_with_its_file_and_nothing_is_published() {
    let (error, _) = refused(async |f| {
        f.edit_track_file(4, ["trackid", "search_rank", "searchmodifier"], |_| {}).await;
    })
    .await;
    assert!(error.contains("q-track_popularity_4: column \"search_rank\""), "{error}");
    assert!(error.contains("in its schema, before row 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_report_is_named_with_its_files_and_nothing_is_published() {
    let (error, _) = refused(async |f| {
        for index in 0..FILES {
            f.edit_track_file(index, TRACK_NAMES, Vec::clear).await;
        }
    })
    .await;
    assert!(error.contains("track_popularity") && error.contains("the report is empty"), "{error}");
    assert!(error.contains("q-track_popularity_0") && error.contains("no row 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_showing_a_duplicate_track_are_bad_input_and_nothing_is_published() {
    let (error, _) = refused(async |f| {
        let counts = json!({"catalogue_rows": 20_001, "catalogue_tracks": 20_000, "artists": 1, "products": 1,
            "play_rows": 1, "unknown_track_play_rows": 0, "unknown_track_plays": 0, "negative_play_rows": 0});
        f.write_counts(&counts).await;
    })
    .await;
    assert!(error.starts_with("bad input, nothing published: 1 duplicate trackId"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_the_same_run_twice_publishes_once_and_touches_nothing_the_second_time() {
    let fixture = Fixture::new(3_000).await;
    assert!(fixture.publish().await.unwrap().newly_published);
    let manifest_path = fixture.staging.root().join(run_manifest_key(run()));
    let before =
        (std::fs::read(&manifest_path).unwrap(), std::fs::metadata(&manifest_path).unwrap().modified().unwrap());
    let again = fixture.publish().await.unwrap();
    assert!(!again.newly_published, "the second publish writes nothing");
    let after =
        (std::fs::read(&manifest_path).unwrap(), std::fs::metadata(&manifest_path).unwrap().modified().unwrap());
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishes_at_once_publish_the_run_once() {
    let fixture = Fixture::new(3_000).await;
    let (a, b) = tokio::join!(fixture.publish(), fixture.publish());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!([a.newly_published, b.newly_published].iter().filter(|n| **n).count(), 1, "exactly one publishes");
    assert_same_run(&fixture.ranked, &fixture.staging).await;
}

/// The staging store of a step that dies when it starts the upload of one
/// key: what it wrote before stays, as after a killed Lambda.
#[derive(Clone)]
struct CrashesAt {
    inner: LocalDirStore,
    key: String,
    crashed: Arc<AtomicBool>,
}

impl ObjectSink for CrashesAt {
    type Upload = <LocalDirStore as ObjectSink>::Upload;

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
        self.inner.put(key, body, content_type).await
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<Self::Upload, StoreError> {
        if key == self.key {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(StoreError::S3 {
                operation: "CreateMultipartUpload",
                location: key.into(),
                detail: "the step was killed".into(),
            });
        }
        self.inner.start_upload(key, content_type).await
    }

    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
}

impl ObjectStore for CrashesAt {
    type Reader = <LocalDirStore as ObjectStore>::Reader;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
        self.inner.get_versioned(key).await
    }

    async fn open(&self, key: &str) -> Result<Self::Reader, StoreError> {
        self.inner.open(key).await
    }

    async fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        condition: WriteCondition<'_>,
    ) -> Result<ConditionalPut, StoreError> {
        self.inner.put_conditional(key, body, content_type, condition).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_rerun_after_a_crash_mid_write_publishes_the_same_bytes() {
    let fixture = Fixture::new(3_000).await;
    // Dies after the whole track report and before the artist report.
    let crashing = CrashesAt {
        inner: fixture.staging.clone(),
        key: format!("reports/artist_popularity/{}/part-001.json", run()),
        crashed: Arc::new(AtomicBool::new(false)),
    };
    let error = fixture.publish_into(&crashing).await.expect_err("the step dies mid-write");
    assert!(crashing.crashed.load(Ordering::SeqCst));
    assert!(error.is_transient(), "a killed write is retried: {error}");
    assert!(
        !Fixture::keys(&fixture.staging, "reports/track_popularity/").await.is_empty(),
        "the track parts were written"
    );
    assert!(Fixture::keys(&fixture.staging, "manifests/").await.is_empty(), "nothing published");
    let rerun = fixture.publish().await.unwrap();
    assert!(rerun.newly_published);
    assert_same_run(&fixture.ranked, &fixture.staging).await;
}
