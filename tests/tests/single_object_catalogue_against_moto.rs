//! A catalogue written as one Parquet object of many row groups (Spark's
//! `coalesce(1)`, a single-file Athena UNLOAD), ranked from moto's S3 (issue
//! 14 §1). Read by ranged GETs (the footer by a suffix range, then each row
//! group's column chunks, `If-Match` on the first answer's ETag) it gives
//! byte for byte the reports that whole reads of the same object, and the
//! usual several-object layout, give. A corrupt footer, a truncated object
//! and an object replaced mid-read each fail the run with an error naming
//! the object, and publish nothing to staging.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use integration_tests::local_stores::LocalStores;
use integration_tests::parquet_fixtures::{catalogue_file, parquet_file, Column};
use integration_tests::reference::reference_reports;
use integration_tests::reports::parse_part;
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config};
use popularity_reports::domain::{Encoding, ReportKind};
use popularity_reports::input::{self, InputError, CATALOGUE_COLUMNS, PLAYS_COLUMNS};
use popularity_reports::manifest::ReportManifest;
use popularity_reports::rank::{rank_run, RankError, RankSettings};
use popularity_reports::sample::{self, SampleSpec};
use popularity_reports::store::{
    s3_client, ByteRange, ConditionalPut, ObjectEntry, ObjectSink, ObjectStore, ObjectVersion, RangeRead, S3Reader,
    S3Store, S3Upload, StoreError, UploadReceipt, VersionedObject, WriteCondition,
};

const SINGLE_KEY: &str = "catalogue/catalogue.parquet";
/// Row groups of the single object: small, so that it has many.
const SINGLE_ROW_GROUP_ROWS: usize = 1_500;

fn run_time() -> DateTime<Utc> {
    "2026-11-19T03:00:00Z".parse().unwrap()
}

fn spec() -> SampleSpec {
    SampleSpec { tracks: 20_000, days: 10, end_date: NaiveDate::from_ymd_opt(2026, 11, 18).unwrap(), seed: 14 }
}

/// Ranged reads for every object (limit 0), or whole reads for every object.
fn settings(ranged: bool) -> RankSettings {
    RankSettings {
        part_rows: 7_000,
        whole_read_max_bytes: if ranged { 0 } else { u64::MAX },
        ..RankSettings::default()
    }
}

/// An input store that counts whole and ranged reads and can replace one
/// object by other bytes just before the first conditional ranged read of
/// it (that is, after its footer was read): a writer finishing mid-run.
struct ObservedStore {
    inner: S3Store,
    whole_reads: AtomicUsize,
    ranged_reads: AtomicUsize,
    replace_mid_read: Option<(String, Bytes)>,
    replaced: AtomicBool,
}

impl ObservedStore {
    fn new(inner: S3Store) -> Self {
        Self {
            inner,
            whole_reads: AtomicUsize::new(0),
            ranged_reads: AtomicUsize::new(0),
            replace_mid_read: None,
            replaced: AtomicBool::new(false),
        }
    }
}

impl ObjectSink for ObservedStore {
    type Upload = S3Upload;

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
        self.inner.put(key, body, content_type).await
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<S3Upload, StoreError> {
        self.inner.start_upload(key, content_type).await
    }

    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
}

impl ObjectStore for ObservedStore {
    type Reader = S3Reader;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.whole_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }

    async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
        self.whole_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_versioned(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: ByteRange,
        if_version: Option<&ObjectVersion>,
    ) -> Result<RangeRead, StoreError> {
        self.ranged_reads.fetch_add(1, Ordering::SeqCst);
        if let Some((replaced_key, bytes)) = &self.replace_mid_read {
            if key == replaced_key && if_version.is_some() && !self.replaced.swap(true, Ordering::SeqCst) {
                self.inner.put(key, bytes.clone(), "application/vnd.apache.parquet").await?;
            }
        }
        self.inner.get_range(key, range, if_version).await
    }

    async fn open(&self, key: &str) -> Result<S3Reader, StoreError> {
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

/// The catalogue rows of the generated sample, read back with the decoder.
async fn catalogue_rows(data: &S3Store) -> Vec<(i64, i64, i64)> {
    let mut rows = Vec::new();
    for file in input::find_catalogue(data).await.unwrap() {
        let bytes = data.get(&file.key).await.unwrap();
        for group in 0..input::inspect(&file.key, bytes.clone(), &CATALOGUE_COLUMNS).unwrap() {
            let c = input::read_int64_columns(&file.key, bytes.clone(), group, &CATALOGUE_COLUMNS).unwrap();
            rows.extend((0..c[0].len()).map(|i| (c[0][i], c[1][i], c[2][i])));
        }
    }
    rows
}

async fn play_rows(data: &S3Store) -> Vec<(NaiveDate, i64, i64)> {
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
    plays
}

/// The catalogue as one object of many row groups, with a column rank does
/// not need between the ones it does (so a row group's chunks are not one
/// contiguous span of needed bytes).
fn single_object_catalogue(rows: &[(i64, i64, i64)]) -> Vec<u8> {
    parquet_file(
        &[
            Column::Int64("trackId", rows.iter().map(|r| r.0).collect()),
            Column::Utf8(
                "title",
                rows.iter().map(|r| format!("title of track {} from product {}", r.0, r.2)).collect(),
            ),
            Column::Int64("masterArtistId", rows.iter().map(|r| r.1).collect()),
            Column::Int64("productId", rows.iter().map(|r| r.2).collect()),
        ],
        SINGLE_ROW_GROUP_ROWS,
    )
}

/// The generated sample under `prefix`, its catalogue replaced by `catalogue`
/// (key, bytes) objects.
async fn data_with_catalogue(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    catalogue: &[(String, Vec<u8>)],
) -> S3Store {
    let data = S3Store::new(s3.clone(), bucket, prefix);
    sample::generate(&data, &spec(), &|_| {}).await.unwrap();
    for file in input::find_catalogue(&data).await.unwrap() {
        s3.delete_object().bucket(bucket).key(data.full_key_of(&file.key)).send().await.unwrap();
    }
    for (key, bytes) in catalogue {
        data.put(key, Bytes::from(bytes.clone()), "application/vnd.apache.parquet").await.unwrap();
    }
    data
}

/// Ranks `input` into a fresh staging bucket; the reports' manifests and
/// every part's bytes.
async fn rank_into_fresh_staging<I: ObjectStore>(
    s3: &aws_sdk_s3::Client,
    input: &I,
    ranged: bool,
) -> (Vec<ReportManifest>, Vec<(String, Bytes)>) {
    let staging = S3Store::new(s3.clone(), fresh_bucket(s3, "staging").await, "");
    let published = rank_run(input, &staging, &settings(ranged), run_time()).await.unwrap();
    assert!(published.newly_published);
    let mut parts = Vec::new();
    for report in &published.manifest.reports {
        for part in &report.parts {
            parts.push((part.key.clone(), staging.get(&part.key).await.unwrap()));
        }
    }
    (published.manifest.reports, parts)
}

/// The staging bucket holds no object at all.
async fn assert_nothing_published(s3: &aws_sdk_s3::Client, bucket: &str) {
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.is_empty(), "a failed run published {keys:?}");
}

/// Runs rank on `input` (ranged or whole reads) into a fresh staging bucket,
/// expects an input error, checks that nothing was published, and returns
/// the error.
async fn failed_run<I: ObjectStore>(s3: &aws_sdk_s3::Client, input: &I, ranged: bool) -> RankError {
    let bucket = fresh_bucket(s3, "staging").await;
    let staging = S3Store::new(s3.clone(), bucket.clone(), "");
    let error = match rank_run(input, &staging, &settings(ranged), run_time()).await {
        Ok(published) => panic!("the run published {}", published.manifest.run_id),
        Err(error) => error,
    };
    eprintln!("{} reads: {error}", if ranged { "ranged" } else { "whole" });
    assert_nothing_published(s3, &bucket).await;
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_of_a_single_object_catalogue_publish_the_reports_of_whole_reads_and_of_the_usual_layout() {
    let config = sdk_config(&moto_endpoint()).await;
    let s3 = s3_client(&config);
    let bucket = fresh_bucket(&s3, "data").await;

    let generated = S3Store::new(s3.clone(), bucket.clone(), "generated/");
    sample::generate(&generated, &spec(), &|_| {}).await.unwrap();
    let rows = catalogue_rows(&generated).await;
    let plays = play_rows(&generated).await;
    assert_eq!(rows.len(), 20_000);

    // The usual layout: several objects. And the one-object layout.
    let parts: Vec<(String, Vec<u8>)> = rows
        .chunks(7_000)
        .enumerate()
        .map(|(n, chunk)| (format!("catalogue/part-{n:05}.parquet"), catalogue_file(chunk, 4_000)))
        .collect();
    let usual = data_with_catalogue(&s3, &bucket, "usual/", &parts).await;
    let single_bytes = single_object_catalogue(&rows);
    let single = data_with_catalogue(&s3, &bucket, "single/", &[(SINGLE_KEY.to_owned(), single_bytes.clone())]).await;
    let row_groups = input::inspect(SINGLE_KEY, Bytes::from(single_bytes), &CATALOGUE_COLUMNS).unwrap();
    assert_eq!(row_groups, 20_000usize.div_ceil(SINGLE_ROW_GROUP_ROWS));
    let play_objects = single.list("plays/").await.unwrap().len();

    let (usual_reports, usual_parts) = rank_into_fresh_staging(&s3, &usual, false).await;

    let whole = ObservedStore::new(single.clone());
    let (whole_reports, whole_parts) = rank_into_fresh_staging(&s3, &whole, false).await;
    assert_eq!(whole.ranged_reads.load(Ordering::SeqCst), 0, "whole reads sent ranged GETs");
    assert_eq!(whole.whole_reads.load(Ordering::SeqCst), 1 + play_objects);

    let ranged = ObservedStore::new(single.clone());
    let (ranged_reports, ranged_parts) = rank_into_fresh_staging(&s3, &ranged, true).await;
    assert_eq!(ranged.whole_reads.load(Ordering::SeqCst), 0, "ranged reads fetched an object whole");
    // At least a footer and one GET per row group of the catalogue, and a
    // footer and a GET per plays object (each holds one row group).
    let ranged_gets = ranged.ranged_reads.load(Ordering::SeqCst);
    assert!(ranged_gets >= 1 + row_groups + 2 * play_objects, "{ranged_gets} ranged GETs");

    // Byte for byte the same reports, three ways.
    assert_eq!(ranged_parts, whole_parts, "ranged reads differ from whole reads of the same object");
    assert_eq!(ranged_parts, usual_parts, "the single object differs from the usual layout");
    assert_eq!(ranged_reports, whole_reports);
    assert_eq!(ranged_reports, usual_reports);

    // And they are the right ranks.
    let expected = reference_reports(&rows, &plays, run_time(), 28, 7.0);
    for (report, kind) in ranged_reports.iter().zip(ReportKind::ALL) {
        let mut lines = Vec::new();
        for part in &report.parts {
            let (_, bytes) = ranged_parts.iter().find(|(key, _)| *key == part.key).unwrap();
            lines.extend(parse_part(bytes, Encoding::default(), kind));
        }
        assert_eq!(lines, expected[kind.data_type()], "{} differs from the reference", kind.data_type());
    }
}

/// The single-object layout under a fresh prefix, its catalogue object
/// replaced by `damage(bytes)`.
async fn damaged_single_object(s3: &aws_sdk_s3::Client, damage: impl Fn(&mut Vec<u8>)) -> (S3Store, String) {
    let bucket = fresh_bucket(s3, "data").await;
    let rows: Vec<(i64, i64, i64)> =
        (0..20_000).map(|i| (100_000_000 + i, 900_000_000 + i % 97, 500_000_000 + i % 1_001)).collect();
    let mut bytes = single_object_catalogue(&rows);
    damage(&mut bytes);
    let data = data_with_catalogue(s3, &bucket, "single/", &[(SINGLE_KEY.to_owned(), bytes)]).await;
    let name = data.describe(SINGLE_KEY);
    (data, name)
}

/// The metadata length the last 8 bytes give.
fn metadata_length(bytes: &[u8]) -> usize {
    let tail = &bytes[bytes.len() - 8..];
    u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize
}

fn unreadable_place(error: &RankError) -> &input::InputPlace {
    match error {
        RankError::Input(InputError::Unreadable { place, .. }) => place,
        other => panic!("expected an unreadable input, got: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_footer_fails_the_run_naming_the_object_and_publishes_nothing() {
    let s3 = s3_client(&sdk_config(&moto_endpoint()).await);

    // Metadata overwritten with bytes that are no Thrift.
    let (data, name) = damaged_single_object(&s3, |bytes| {
        let length = metadata_length(bytes);
        let end = bytes.len() - 8;
        bytes[end - length..end].fill(0xff);
    })
    .await;
    for ranged in [true, false] {
        let error = failed_run(&s3, &data, ranged).await;
        assert_eq!(unreadable_place(&error).file, name);
        let message = error.to_string();
        assert!(message.contains(&name) && message.contains("not a readable Parquet file"), "{message}");
        if ranged {
            assert!(message.contains("corrupt footer"), "{message}");
        }
    }

    // A metadata length longer than the object.
    let (data, name) = damaged_single_object(&s3, |bytes| {
        let at = bytes.len() - 8;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    })
    .await;
    let error = failed_run(&s3, &data, true).await;
    assert_eq!(unreadable_place(&error).file, name);
    let message = error.to_string();
    assert!(message.contains("more than the") && message.contains("corrupt footer"), "{message}");

    // A footer that puts a column chunk past the end of the data: the first
    // row group's trackId chunk, moved by rewriting its offset in the
    // metadata is hard to do by hand, so the footer of a longer file is
    // put on a shorter one instead.
    let (data, name) = damaged_single_object(&s3, |bytes| {
        let length = metadata_length(bytes);
        let footer = bytes[bytes.len() - 8 - length..].to_vec();
        let keep = bytes.len() / 2;
        bytes.truncate(keep);
        bytes.extend_from_slice(&footer);
    })
    .await;
    for ranged in [true, false] {
        let error = failed_run(&s3, &data, ranged).await;
        let place = unreadable_place(&error);
        assert_eq!(place.file, name);
        assert!(place.row_group.is_some(), "the row group is named: {error}");
        let message = error.to_string();
        assert!(message.contains("outside the data"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_object_fails_the_run_naming_the_object_and_publishes_nothing() {
    let s3 = s3_client(&sdk_config(&moto_endpoint()).await);
    for keep_fraction in [2, 5] {
        let (data, name) =
            damaged_single_object(&s3, |bytes| bytes.truncate(bytes.len() - bytes.len() / keep_fraction)).await;
        for ranged in [true, false] {
            let error = failed_run(&s3, &data, ranged).await;
            assert_eq!(unreadable_place(&error).file, name, "{error}");
            let message = error.to_string();
            assert!(message.contains(&name), "{message}");
            if ranged {
                assert!(message.contains("does not end with the Parquet magic PAR1"), "{message}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_after_its_footer_was_read_fails_the_run_and_publishes_nothing() {
    let s3 = s3_client(&sdk_config(&moto_endpoint()).await);
    let rows: Vec<(i64, i64, i64)> =
        (0..20_000).map(|i| (100_000_000 + i, 900_000_000 + i % 97, 500_000_000 + i % 1_001)).collect();
    let (data, name) = damaged_single_object(&s3, |_| {}).await;
    let mut replacement = rows.clone();
    replacement.truncate(10_000);
    let mut observed = ObservedStore::new(data);
    observed.replace_mid_read = Some((SINGLE_KEY.to_owned(), Bytes::from(single_object_catalogue(&replacement))));

    let error = failed_run(&s3, &observed, true).await;
    assert!(observed.replaced.load(Ordering::SeqCst), "the object was not replaced");
    let message = error.to_string();
    match &error {
        RankError::ReadInput(StoreError::Changed { location, .. }) => assert_eq!(*location, name),
        other => panic!("expected the object to be reported as changed, got: {other}"),
    }
    // moto honours If-Match on GetObject: the refusal comes from the server
    // (412), not only from comparing the answer's ETag.
    assert!(message.contains("PreconditionFailed") || message.contains("412"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_gets_return_the_asked_bytes_and_refuse_a_stale_version() {
    let s3 = s3_client(&sdk_config(&moto_endpoint()).await);
    let store = S3Store::new(s3.clone(), fresh_bucket(&s3, "ranges").await, "p/");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store.put("k.bin", Bytes::from(body.clone()), "application/octet-stream").await.unwrap();

    let tail = store.get_range("k.bin", ByteRange::Suffix(1_000), None).await.unwrap();
    assert_eq!((tail.start, tail.object_size), (99_000, 100_000));
    assert_eq!(tail.body, body[99_000..]);
    let longer = store.get_range("k.bin", ByteRange::Suffix(500_000), None).await.unwrap();
    assert_eq!((longer.start, longer.body.len()), (0, 100_000), "a suffix longer than the object is all of it");

    let span = store.get_range("k.bin", ByteRange::Span { start: 10, end: 20_010 }, Some(&tail.version)).await.unwrap();
    assert_eq!(span.start, 10);
    assert_eq!(span.body, body[10..20_010]);
    assert_eq!(span.version, tail.version);

    store.put("k.bin", Bytes::from_static(b"another version"), "application/octet-stream").await.unwrap();
    let stale = store.get_range("k.bin", ByteRange::Span { start: 0, end: 5 }, Some(&tail.version)).await;
    match stale {
        Err(StoreError::Changed { location, .. }) => assert_eq!(location, store.describe("k.bin")),
        other => panic!("a read of a stale version must fail as changed, got {other:?}"),
    }
    let missing = store.get_range("absent.bin", ByteRange::Suffix(10), None).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_of_local_files_publish_the_reports_of_whole_reads() {
    let rows: Vec<(i64, i64, i64)> =
        (0..20_000).map(|i| (100_000_000 + i, 900_000_000 + i % 97, 500_000_000 + i % 1_001)).collect();
    let mut published = Vec::new();
    for ranged in [false, true] {
        let stores = LocalStores::new("single-object-local");
        sample::generate(&stores.data, &spec(), &|_| {}).await.unwrap();
        for file in input::find_catalogue(&stores.data).await.unwrap() {
            std::fs::remove_file(stores.data.root().join(&file.key)).unwrap();
        }
        stores
            .data
            .put(SINGLE_KEY, Bytes::from(single_object_catalogue(&rows)), "application/vnd.apache.parquet")
            .await
            .unwrap();
        let manifest = rank_run(&stores.data, &stores.staging, &settings(ranged), run_time()).await.unwrap().manifest;
        let mut parts = Vec::new();
        for report in &manifest.reports {
            for part in &report.parts {
                parts.push((part.key.clone(), stores.staging.get(&part.key).await.unwrap()));
            }
        }
        assert_eq!(manifest.reports[0].rows, 20_000);
        published.push(parts);
    }
    assert_eq!(published[0], published[1], "ranged reads of a local file differ from whole reads");
}
