//! `S3Store` against moto's server: the S3 adapter of the `ObjectStore` port
//! must list (paginated, relative to its prefix), read, write and stream
//! uploads exactly as the port promises, and never leave a partial object or
//! an open multipart upload behind.
//!
//! Needs `MOTO_ENDPOINT` (see `integration_tests::moto_endpoint`). Every test
//! works in its own bucket, so the tests run in parallel on one server.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use integration_tests::{fresh_bucket, moto_endpoint, sdk_config};
use popularity_reports::store::{
    s3_client, upload_from_blocking, ObjectEntry, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, PutOutcome,
    S3Store, StoreError, UPLOAD_CHUNK_BYTES,
};

const MIB: usize = 1024 * 1024;

async fn moto_client() -> Client {
    s3_client(&sdk_config(&moto_endpoint()).await)
}

/// A store in a bucket of its own, and a plain client to look behind it.
async fn fresh_store(name_hint: &str, prefix: &str) -> (S3Store, Client) {
    let client = moto_client().await;
    let bucket = fresh_bucket(&client, name_hint).await;
    (S3Store::new(client.clone(), bucket, prefix), client)
}

/// Keys of the multipart uploads still open in `bucket`.
async fn open_uploads(client: &Client, bucket: &str) -> Vec<String> {
    let listed = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListMultipartUploads {bucket}: {}", DisplayErrorContext(&e)));
    listed.uploads().iter().filter_map(|u| u.key()).map(str::to_owned).collect()
}

/// Every key in `bucket`, prefix included, as S3 itself reports it.
async fn raw_keys(client: &Client, bucket: &str) -> Vec<String> {
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {}", DisplayErrorContext(&e)));
    listed.contents().iter().filter_map(|o| o.key()).map(str::to_owned).collect()
}

async fn etag(client: &Client, bucket: &str, key: &str) -> String {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HeadObject {bucket}/{key}: {}", DisplayErrorContext(&e)));
    head.e_tag().unwrap_or_default().trim_matches('"').to_owned()
}

/// Deterministic bytes that differ from part to part, so a reordered or
/// repeated part cannot go unnoticed.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 7) % 251) as u8 ^ (i >> 20) as u8).collect()
}

fn keys(entries: &[ObjectEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.key.as_str()).collect()
}

fn assert_not_found(result: Result<Bytes, StoreError>, location: &str) {
    match result {
        Err(err @ StoreError::NotFound { .. }) => {
            assert!(err.to_string().contains(location), "{err}")
        }
        Err(other) => panic!("expected NotFound for {location}, got: {other}"),
        Ok(body) => panic!("expected NotFound for {location}, got {} bytes", body.len()),
    }
}

#[tokio::test]
async fn objects_put_without_a_prefix_read_back_and_list_under_a_key_prefix() {
    let (store, _) = fresh_store("plain", "").await;
    assert_eq!(store.prefix(), "");
    store.put("reports/a/part-001.json", Bytes::from_static(b"[1]"), "application/json").await.unwrap();
    store.put("reports/b/part-001.json", Bytes::from_static(b"[22]"), "application/json").await.unwrap();
    store.put("manifests/x.json", Bytes::from_static(b"{}"), "application/json").await.unwrap();

    assert_eq!(&store.get("reports/b/part-001.json").await.unwrap()[..], b"[22]");
    let all = store.list("").await.unwrap();
    assert_eq!(keys(&all), ["manifests/x.json", "reports/a/part-001.json", "reports/b/part-001.json"]);
    assert_eq!(all[2].size, 4);
    let reports = store.list("reports/a").await.unwrap();
    // A listing's version is the one a read answers with.
    let version = Some(store.get_versioned("reports/a/part-001.json").await.unwrap().version);
    assert_eq!(reports, vec![ObjectEntry { key: "reports/a/part-001.json".into(), size: 3, version }]);
    assert!(store.list("nothing/").await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_and_listings_are_relative_to_the_store_prefix() {
    let (store, client) = fresh_store("prefixed", "/tenants/acme").await;
    let bucket = store.bucket().to_owned();
    assert_eq!(store.prefix(), "tenants/acme/");
    store.put("track/part-001.tsv", Bytes::from_static(b"trackId\n"), "text/tab-separated-values").await.unwrap();
    // Neighbours that share the prefix's text but are not below it.
    for outside in ["tenants/acme-other/track.tsv", "tenants/acme.tsv", "track/part-001.tsv"] {
        client.put_object().bucket(&bucket).key(outside).body(ByteStream::from_static(b"no")).send().await.unwrap();
    }

    assert!(raw_keys(&client, &bucket).await.contains(&"tenants/acme/track/part-001.tsv".to_owned()));
    let listed = store.list("").await.unwrap();
    let version = Some(store.get_versioned("track/part-001.tsv").await.unwrap().version);
    assert_eq!(listed, vec![ObjectEntry { key: "track/part-001.tsv".into(), size: 8, version }]);
    assert_eq!(keys(&store.list("track/").await.unwrap()), ["track/part-001.tsv"]);
    assert_eq!(&store.get("track/part-001.tsv").await.unwrap()[..], b"trackId\n");
    assert_eq!(store.describe("track/part-001.tsv"), format!("s3://{bucket}/tenants/acme/track/part-001.tsv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_more_than_one_page_returns_every_object_in_key_order() {
    const OBJECTS: usize = 1005;
    let (store, _) = fresh_store("many", "runs/").await;
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..OBJECTS {
        let (store, limit) = (store.clone(), limit.clone());
        puts.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore closed");
            let body = Bytes::from(i.to_string());
            store.put(&format!("p/{i:05}.txt"), body, "text/plain").await
        });
    }
    while let Some(put) = puts.join_next().await {
        put.expect("put task panicked").unwrap();
    }
    store.put("q/outside-the-listed-prefix.txt", Bytes::from_static(b"q"), "text/plain").await.unwrap();

    // ListObjectsV2 answers at most 1,000 keys a page.
    let listed = store.list("p/").await.unwrap();
    assert_eq!(listed.len(), OBJECTS);
    for (i, entry) in listed.iter().enumerate() {
        assert_eq!(entry.key, format!("p/{i:05}.txt"));
        assert_eq!(entry.size, i.to_string().len() as u64);
    }
    assert_eq!(store.list("").await.unwrap().len(), OBJECTS + 1);
}

#[tokio::test]
async fn a_conditional_create_creates_once_and_never_replaces() {
    let (store, client) = fresh_store("create-once", "jobs").await;
    let key = "run-1/acme.json";
    let first = store.put_if_absent(key, Bytes::from_static(b"{\"n\":1}"), "application/json").await.unwrap();
    assert_eq!(first, PutOutcome::Created);
    let tag = etag(&client, store.bucket(), "jobs/run-1/acme.json").await;
    let second = store.put_if_absent(key, Bytes::from_static(b"{\"n\":2}"), "application/json").await.unwrap();
    assert_eq!(second, PutOutcome::AlreadyExists);
    assert_eq!(&store.get(key).await.unwrap()[..], b"{\"n\":1}");
    assert_eq!(etag(&client, store.bucket(), "jobs/run-1/acme.json").await, tag, "the object was rewritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_conditional_creates_exactly_one_wins() {
    let (store, _) = fresh_store("create-race", "").await;
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let store = store.clone();
        attempts.spawn(async move {
            let outcome = store.put_if_absent("jobs/once.json", Bytes::from(vec![i; 64 * 1024]), "application/json");
            (i, outcome.await.unwrap())
        });
    }
    let mut winners = Vec::new();
    while let Some(attempt) = attempts.join_next().await {
        let (i, outcome) = attempt.expect("create task panicked");
        if outcome == PutOutcome::Created {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(store.get("jobs/once.json").await.unwrap(), vec![winners[0]; 64 * 1024]);
    assert_eq!(store.list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_conditional_create_in_a_bucket_that_does_not_exist_is_an_s3_error() {
    let store = S3Store::new(moto_client().await, "no-such-bucket-for-s3-store-tests", "x");
    let err = store.put_if_absent("a.json", Bytes::from_static(b"{}"), "application/json").await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::S3 { operation: "PutObject", .. }), "{message}");
    assert!(message.contains("s3://no-such-bucket-for-s3-store-tests/x/a.json"), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");
}

#[tokio::test]
async fn reading_a_missing_key_is_not_found_and_names_the_key() {
    let (store, _) = fresh_store("missing", "out").await;
    let location = format!("s3://{}/out/reports/nope.json", store.bucket());
    assert_not_found(store.get("reports/nope.json").await, &location);
}

#[tokio::test]
async fn reading_from_a_bucket_that_does_not_exist_is_an_s3_error_not_a_missing_object() {
    let store = S3Store::new(moto_client().await, "no-such-bucket-for-s3-store-tests", "");
    let err = store.get("a.json").await.unwrap_err();
    assert!(matches!(err, StoreError::S3 { operation: "GetObject", .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("s3://no-such-bucket-for-s3-store-tests/a.json"), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");
}

#[tokio::test]
async fn a_small_upload_is_published_by_one_put_object_on_finish() {
    let (store, client) = fresh_store("small", "").await;
    let body = patterned(3 * MIB + 17);
    let mut upload = store.start_upload("small.bin", "application/octet-stream").await.unwrap();
    for piece in body.chunks(MIB) {
        upload.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert!(open_uploads(&client, store.bucket()).await.is_empty(), "a small upload started a multipart upload");
    assert_not_found(store.get("small.bin").await, "small.bin");
    upload.finish().await.unwrap();

    assert_eq!(store.get("small.bin").await.unwrap(), body);
    // A multipart object's ETag ends in "-<parts>"; a PutObject's does not.
    let tag = etag(&client, store.bucket(), "small.bin").await;
    assert!(!tag.contains('-'), "ETag {tag} says the object was uploaded in parts");
}

#[tokio::test]
async fn an_empty_upload_publishes_an_empty_object() {
    let (store, _) = fresh_store("empty", "").await;
    let upload = store.start_upload("empty.json", "application/json").await.unwrap();
    upload.finish().await.unwrap();
    assert!(store.get("empty.json").await.unwrap().is_empty());
    let version = Some(store.get_versioned("empty.json").await.unwrap().version);
    assert_eq!(store.list("").await.unwrap(), vec![ObjectEntry { key: "empty.json".into(), size: 0, version }]);
}

#[tokio::test]
async fn an_upload_of_exactly_one_part_is_still_a_single_put_object() {
    let (store, client) = fresh_store("one-part", "").await;
    let mut upload = store.start_upload("one.bin", "application/octet-stream").await.unwrap();
    upload.write(Bytes::from(patterned(UPLOAD_CHUNK_BYTES))).await.unwrap();
    upload.finish().await.unwrap();
    assert_eq!(store.get("one.bin").await.unwrap().len(), UPLOAD_CHUNK_BYTES);
    assert!(!etag(&client, store.bucket(), "one.bin").await.contains('-'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_mib_upload_in_uneven_chunks_round_trips_byte_for_byte() {
    let (store, client) = fresh_store("large", "deliveries").await;
    let body = patterned(20 * MIB);
    let mut upload = store.start_upload("track/part-001.json", "application/json").await.unwrap();
    let uneven = [1, 3 * MIB - 1, 5 * MIB + 13, 7, 4 * MIB + 999, MIB / 3, 2 * MIB];
    let mut offset = 0;
    for size in uneven.iter().cycle() {
        if offset == body.len() {
            break;
        }
        let end = (offset + size).min(body.len());
        upload.write(Bytes::copy_from_slice(&body[offset..end])).await.unwrap();
        offset = end;
    }
    assert_eq!(open_uploads(&client, store.bucket()).await, ["deliveries/track/part-001.json"]);
    assert_not_found(store.get("track/part-001.json").await, "track/part-001.json");
    upload.finish().await.unwrap();

    let stored = store.get("track/part-001.json").await.unwrap();
    assert_eq!(stored.len(), body.len());
    assert!(stored == body, "the stored bytes differ from the uploaded ones");
    // 20 MiB in 8 MiB parts: 8 + 8 + 4.
    let tag = etag(&client, store.bucket(), "deliveries/track/part-001.json").await;
    assert!(tag.ends_with("-3"), "ETag {tag}: expected a three-part object");
    assert!(open_uploads(&client, store.bucket()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_producer_streams_into_s3_through_the_chunk_writer() {
    let (store, _) = fresh_store("producer", "").await;
    let total = 2 * UPLOAD_CHUNK_BYTES + 4321;
    let written = upload_from_blocking(&store, "produced.bin", "application/octet-stream", move |out| {
        let block = patterned(64 * 1024);
        let mut left = total;
        while left > 0 {
            let n = left.min(block.len());
            out.write_all(&block[..n])?;
            left -= n;
        }
        Ok::<_, std::io::Error>(total)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(store.get("produced.bin").await.unwrap().len(), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_leaves_no_object_and_no_open_upload() {
    let (store, client) = fresh_store("aborted", "").await;
    let mut upload = store.start_upload("half.bin", "application/octet-stream").await.unwrap();
    upload.write(Bytes::from(patterned(12 * MIB))).await.unwrap();
    assert_eq!(open_uploads(&client, store.bucket()).await, ["half.bin"]);

    upload.abort().await.unwrap();
    assert!(open_uploads(&client, store.bucket()).await.is_empty());
    assert!(store.list("").await.unwrap().is_empty());
    assert_not_found(store.get("half.bin").await, "half.bin");
}

/// Sends UploadPart requests to a closed port once `cut` is set, as if the
/// network went away part-way through an upload; other calls go through.
#[derive(Debug)]
struct CutOffUploadParts {
    cut: Arc<AtomicBool>,
    endpoint: String,
    unreachable: String,
}

impl Intercept for CutOffUploadParts {
    fn name(&self) -> &'static str {
        "CutOffUploadParts"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri();
        if self.cut.load(Ordering::SeqCst) && uri.contains("partNumber=") {
            let redirected = uri.replacen(&self.endpoint, &self.unreachable, 1);
            context.request_mut().set_uri(redirected)?;
        }
        Ok(())
    }
}

/// A loopback address nothing listens on.
fn closed_local_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_loses_the_network_part_way_fails_naming_the_key_and_is_aborted() {
    let endpoint = moto_endpoint();
    let client = moto_client().await;
    let bucket = fresh_bucket(&client, "cut-off").await;
    let cut = Arc::new(AtomicBool::new(false));
    let interceptor =
        CutOffUploadParts { cut: cut.clone(), endpoint: endpoint.clone(), unreachable: closed_local_endpoint() };
    let flaky_config =
        client.config().to_builder().interceptor(interceptor).retry_config(RetryConfig::disabled()).build();
    let store = S3Store::new(Client::from_conf(flaky_config), bucket.clone(), "out");

    let mut upload = store.start_upload("track/part-001.json", "application/json").await.unwrap();
    upload.write(Bytes::from(patterned(10 * MIB))).await.unwrap();
    assert_eq!(open_uploads(&client, &bucket).await, ["out/track/part-001.json"]);

    cut.store(true, Ordering::SeqCst);
    let err = upload.write(Bytes::from(patterned(10 * MIB))).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::S3 { operation: "UploadPart", .. }), "{message}");
    assert!(message.contains(&format!("s3://{bucket}/out/track/part-001.json")), "{message}");

    assert!(open_uploads(&client, &bucket).await.is_empty(), "the failed upload was left open");
    assert!(raw_keys(&client, &bucket).await.is_empty());
    // The upload is spent: finishing it now must not publish anything.
    cut.store(false, Ordering::SeqCst);
    assert!(upload.finish().await.is_err());
    assert!(raw_keys(&client, &bucket).await.is_empty());
}

/// moto deletes a bucket even while a multipart upload is open in it, and
/// the upload goes with it; so "no open upload" is checked on a bucket
/// re-created under the same name. The network test above proves the abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_bucket_is_deleted_part_way_fails_naming_the_key() {
    let (store, client) = fresh_store("deleted", "").await;
    let bucket = store.bucket().to_owned();
    let mut upload = store.start_upload("artist/part-001.json", "application/json").await.unwrap();
    upload.write(Bytes::from(patterned(10 * MIB))).await.unwrap();
    client.delete_bucket().bucket(&bucket).send().await.unwrap();

    let err = upload.finish().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::S3 { operation: "UploadPart", .. }), "{message}");
    assert!(message.contains(&format!("s3://{bucket}/artist/part-001.json")), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");

    client.create_bucket().bucket(&bucket).send().await.unwrap();
    assert!(open_uploads(&client, &bucket).await.is_empty());
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_upload_into_a_bucket_that_does_not_exist_fails_naming_the_key() {
    let store = S3Store::new(moto_client().await, "no-such-bucket-for-s3-store-tests", "x");
    let mut upload = store.start_upload("big.bin", "application/octet-stream").await.unwrap();
    let err = upload.write(Bytes::from(patterned(9 * MIB))).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::S3 { operation: "CreateMultipartUpload", .. }), "{message}");
    assert!(message.contains("s3://no-such-bucket-for-s3-store-tests/x/big.bin"), "{message}");

    let small = store.start_upload("small.bin", "application/octet-stream").await.unwrap();
    let err = small.finish().await.unwrap_err();
    assert!(matches!(err, StoreError::S3 { operation: "PutObject", .. }), "{err}");
    assert!(err.to_string().contains("s3://no-such-bucket-for-s3-store-tests/x/small.bin"), "{err}");
}

/// Log lines written while a test runs, for the assertion that none is a warning.
#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A current-thread runtime, so the subscriber set for this thread sees
/// every log line of the SDK's request futures.
#[tokio::test]
async fn reading_an_object_uploaded_in_parts_logs_no_checksum_warning() {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (store, client) = fresh_store("part-level", "").await;
    let body = patterned(2 * UPLOAD_CHUNK_BYTES + 17);
    let mut upload = store.start_upload("plays/part-0.parquet", "application/octet-stream").await.unwrap();
    upload.write(Bytes::copy_from_slice(&body)).await.unwrap();
    upload.finish().await.unwrap();
    let tag = etag(&client, store.bucket(), "plays/part-0.parquet").await;
    assert!(tag.ends_with("-3"), "ETag {tag}: expected an object of three parts");
    // The object's checksum is one of parts (`<crc>-3`): the SDK cannot
    // validate it and would say so once per object read.
    let raw = client
        .get_object()
        .bucket(store.bucket())
        .key("plays/part-0.parquet")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(raw.checksum_crc32().is_some_and(|crc| crc.ends_with("-3")), "checksum {:?}", raw.checksum_crc32());
    assert!(log.text().contains("part-level checksum"), "the plain client warns: {}", log.text());
    log.0.lock().unwrap().clear();

    assert!(store.get("plays/part-0.parquet").await.unwrap() == body);
    assert!(store.get_versioned("plays/part-0.parquet").await.unwrap().body == body);
    let mut reader = store.open("plays/part-0.parquet").await.unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        streamed.extend_from_slice(&chunk);
    }
    assert!(streamed == body);
    assert_eq!(log.text(), "", "the store's reads log no warning");
}

/// `copy_within` copies server-side, under the store's prefix: one
/// CopyObject for a small object, a multipart copy (UploadPartCopy) in
/// parts for a large one (shown with 5 MiB parts, S3's smallest, instead
/// of the 1 GiB used past 5 GiB), byte for byte, with no upload left open;
/// a missing source is an error naming the target and leaves nothing.
#[tokio::test]
async fn objects_are_copied_server_side_whole_or_in_parts() {
    let (store, client) = fresh_store("copy-within", "root/").await;
    let small = Bytes::from_static(b"a small report part\n");
    store.put("reports/a.json", small.clone(), "application/json").await.unwrap();
    store.copy_within("reports/a.json", "links/acme/1/a.json", small.len() as u64).await.unwrap();
    assert_eq!(store.get("links/acme/1/a.json").await.unwrap(), small);

    let large = Bytes::from(patterned(12 * MIB + 3));
    store.put("reports/large.json", large.clone(), "application/json").await.unwrap();
    store
        .copy_in_parts("reports/large.json", "links/acme/1/large.json", large.len() as u64, 5 * MIB as u64)
        .await
        .unwrap();
    assert_eq!(store.get("links/acme/1/large.json").await.unwrap(), large);
    assert!(
        raw_keys(&client, store.bucket()).await.contains(&"root/links/acme/1/large.json".to_owned()),
        "under the store's prefix"
    );
    // A multipart object's ETag ends with the number of parts: 3.
    assert!(etag(&client, store.bucket(), "root/links/acme/1/large.json").await.ends_with("-3"), "three parts");
    assert!(open_uploads(&client, store.bucket()).await.is_empty());

    let missing =
        store.copy_in_parts("reports/none.json", "links/acme/1/none.json", 6 * MIB as u64, 5 * MIB as u64).await;
    let error = missing.unwrap_err().to_string();
    assert!(error.contains("UploadPartCopy") && error.contains("links/acme/1/none.json"), "{error}");
    assert!(open_uploads(&client, store.bucket()).await.is_empty(), "the failed copy was aborted");
    assert!(store.copy_within("reports/none.json", "links/acme/1/none2.json", 10).await.is_err());
    assert!(!raw_keys(&client, store.bucket()).await.iter().any(|key| key.contains("none")));
}
