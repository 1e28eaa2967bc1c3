//! An S3 bucket, under an optional key prefix, as an [`ObjectStore`]. Small
//! objects go up in one PutObject; streamed uploads buffer chunks into 8 MiB
//! parts and switch to a multipart upload only once there is more than one
//! part, so every object is published whole or not at all. This module must
//! not leave an open multipart upload behind: any failure inside an upload
//! aborts it before the error is returned. It never reads the environment:
//! callers hand it a client built from their own configuration.

use std::collections::VecDeque;

use crate::aws_errors::{cut, display_chain, one_line};
use aws_sdk_s3::config::ResponseChecksumValidation;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};

use super::location::normalise_prefix;
use super::ports::{
    ByteRange, ConditionalPut, ObjectEntry, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, ObjectVersion,
    RangeRead, StoreError, UploadReceipt, VersionedObject, WriteCondition, UPLOAD_CHUNK_BYTES,
};

/// S3 numbers parts 1..=10,000; with 8 MiB parts an object may reach ~78 GiB.
const MAX_PARTS: i32 = 10_000;

/// Builds an S3 client from the shared configuration. An endpoint override
/// (`AWS_ENDPOINT_URL`, or `endpoint_url` on the loader) means a local
/// emulator such as moto, which only understands path-style addressing
/// (`http://host/bucket/key`), so path style is forced then. A service-specific
/// `AWS_ENDPOINT_URL_S3` alone is not seen here.
pub fn s3_client(config: &aws_config::SdkConfig) -> Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    Client::from_conf(builder.build())
}

/// Objects stored in `bucket` under `prefix`.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// Sent as `ExpectedBucketOwner` on every call, so that a bucket deleted
    /// and re-created under the same name by another account is refused.
    expected_owner: Option<String>,
}

/// Every GetObject of this adapter goes without the SDK's response checksum
/// validation, decided here once for every read. The objects this system
/// reads are of two kinds. Data — Parquet inputs, report parts — is written
/// by multipart uploads (by rank, Athena, Spark), whose checksum is one of
/// parts (`<crc>-N`): the SDK cannot validate it and only logs a warning
/// per object read (66 lines for one 100M-track run), noise that hides the
/// warnings that matter. Those bytes are checked where it counts: a part is
/// verified against the run manifest's SHA-256 by [`crate::transfer`], and
/// the Parquet decoder refuses a damaged footer or page. Control objects
/// (jobs, status, manifests) are parsed strictly. Every byte in transit is
/// authenticated by TLS already.
fn without_checksum_validation() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().response_checksum_validation(ResponseChecksumValidation::WhenRequired)
}

impl S3Store {
    /// GetObject of `key` in this store's bucket, its owner checked.
    fn get_object(&self, key: &str) -> aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(self.full_key(key))
    }

    /// A store rooted at `s3://bucket/prefix`. The prefix is normalised to be
    /// empty or end with exactly one `/`.
    pub fn new(client: Client, bucket: impl Into<String>, prefix: &str) -> Self {
        Self { client, bucket: bucket.into(), prefix: normalise_prefix(prefix), expected_owner: None }
    }

    /// Every call checks that the bucket belongs to this 12-digit account.
    pub fn with_expected_owner(mut self, account_id: Option<String>) -> Self {
        self.expected_owner = account_id;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn expected_owner(&self) -> Option<&str> {
        self.expected_owner.as_deref()
    }

    /// The full key of `key`, prefix included.
    pub fn full_key_of(&self, key: &str) -> String {
        self.full_key(key)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error<E>(&self, operation: &'static str, key: &str, error: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sdk_error(operation, self.describe(key), error)
    }
}

/// A failed SDK call as a [`StoreError`], its detail on one line: code,
/// message, HTTP status and request id (plain `Display` of an SDK error says
/// only "service error").
fn sdk_error<E>(operation: &'static str, location: String, error: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    StoreError::S3 { operation, location, detail: one_line(&error) }
}

/// Whether a failed GetObject means "no object at that key". A missing bucket
/// is also a 404, but it is a misconfiguration, not an absent object.
fn is_missing_key(error: &SdkError<GetObjectError>) -> bool {
    let Some(service_error) = error.as_service_error() else {
        return false;
    };
    if service_error.is_no_such_key() {
        return true;
    }
    let status_is_404 = error.raw_response().is_some_and(|response| response.status().as_u16() == 404);
    status_is_404 && service_error.code() != Some("NoSuchBucket")
}

/// Whether a failed GetObject with `If-Match` means the object is no longer
/// at that version: S3 answers 412 `PreconditionFailed`, an unmodelled error.
fn is_precondition_failed(error: &SdkError<GetObjectError>) -> bool {
    let status = error.raw_response().map(|response| response.status().as_u16());
    error.as_service_error().is_some_and(|e| e.code() == Some("PreconditionFailed")) || status == Some(412)
}

/// `(first byte, object size)` from a `Content-Range: bytes a-b/size` header.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let (span, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, _last) = span.split_once('-')?;
    Some((first.trim().parse().ok()?, size.trim().parse().ok()?))
}

/// Whether a failed conditional PutObject (`If-None-Match: *`) means "an
/// object already exists at that key". S3 answers 412 `PreconditionFailed`
/// once the object exists, and 409 `ConditionalRequestConflict` while a
/// competing conditional write of the same key is in flight (that writer is
/// the one creating the object). Neither is a modelled error variant, so the
/// code and the raw status are what can be matched.
fn is_already_existing(error: &SdkError<PutObjectError>) -> bool {
    let Some(service_error) = error.as_service_error() else {
        return false;
    };
    let status = error.raw_response().map(|response| response.status().as_u16());
    match service_error.code() {
        Some("PreconditionFailed" | "ConditionalRequestConflict") => true,
        Some(_) => false,
        None => status == Some(412),
    }
}

/// Sends one PutObject, with `If-None-Match: *` or `If-Match: <ETag>` when a
/// condition is given, and returns the new object's ETag.
async fn put_object(
    client: &Client,
    bucket: &str,
    expected_owner: Option<&str>,
    key: &str,
    body: Bytes,
    content_type: &str,
    condition: Option<WriteCondition<'_>>,
) -> Result<ObjectVersion, SdkError<PutObjectError>> {
    let (if_none_match, if_match) = match condition {
        None => (None, None),
        Some(WriteCondition::Absent) => (Some("*".to_owned()), None),
        Some(WriteCondition::Unchanged(version)) => (None, Some(version.0.clone())),
    };
    client
        .put_object()
        .bucket(bucket)
        .set_expected_bucket_owner(expected_owner.map(str::to_owned))
        .key(key)
        .content_type(content_type)
        .set_if_none_match(if_none_match)
        .set_if_match(if_match)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from(body))
        .send()
        .await
        .map(|output| ObjectVersion(output.e_tag().unwrap_or_default().to_owned()))
}

/// Whether a failed conditional PutObject with `If-Match` means the object
/// went away since it was read (404), which for the writer is the same as
/// having changed.
fn is_gone(error: &SdkError<PutObjectError>) -> bool {
    let status = error.raw_response().map(|response| response.status().as_u16());
    error.as_service_error().is_some_and(|e| e.code() == Some("NoSuchKey")) || status == Some(404)
}

impl ObjectSink for S3Store {
    type Upload = S3Upload;

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<UploadReceipt, StoreError> {
        put_object(&self.client, &self.bucket, self.expected_owner(), &self.full_key(key), body, content_type, None)
            .await
            .map(|_| UploadReceipt::default())
            .map_err(|e| self.error("PutObject", key, e))
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<S3Upload, StoreError> {
        Ok(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            expected_owner: self.expected_owner.clone(),
            key: self.full_key(key),
            location: self.describe(key),
            content_type: content_type.to_owned(),
            pending: PartBuffer::default(),
            multipart: None,
            failed: false,
        })
    }

    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }
}

/// The largest object one CopyObject may copy (S3's limit).
pub const COPY_OBJECT_MAX_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// The part size of a multipart copy: 1 GiB, so a 5 TB object (S3's
/// largest) needs 5,000 of S3's 10,000 parts.
pub const COPY_PART_BYTES: u64 = 1024 * 1024 * 1024;

/// `bucket/key` as CopySource takes it: every byte but unreserved
/// characters and `/` percent-encoded.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut encoded = format!("{bucket}/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl S3Store {
    /// A multipart copy of `source` (`size` bytes) to `target` in parts of
    /// `part_bytes` (at least 5 MiB but for the last, as S3 requires),
    /// aborted on any failure. [`ObjectStore::copy_within`] uses it past 5
    /// GiB; public so that tests can show it with small objects.
    pub async fn copy_in_parts(
        &self,
        source: &str,
        target: &str,
        size: u64,
        part_bytes: u64,
    ) -> Result<(), StoreError> {
        let part_bytes = part_bytes.max(1);
        let target_key = self.full_key(target);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&target_key)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", target, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let mut parts = Vec::new();
        let mut start = 0;
        let mut failure = None;
        while start < size {
            let end = (start + part_bytes).min(size);
            let part_number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            if part_number > MAX_PARTS {
                failure = Some(StoreError::S3 {
                    operation: "UploadPartCopy",
                    location: self.describe(target),
                    detail: format!("the object needs more than {MAX_PARTS} parts of {part_bytes} bytes"),
                });
                break;
            }
            let copied = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .set_expected_source_bucket_owner(self.expected_owner.clone())
                .copy_source(copy_source(&self.bucket, &self.full_key(source)))
                .copy_source_range(format!("bytes={start}-{}", end - 1))
                .key(&target_key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .send()
                .await;
            match copied {
                Ok(output) => {
                    let etag = output.copy_part_result().and_then(|result| result.e_tag()).unwrap_or_default();
                    parts.push(CompletedPart::builder().part_number(part_number).e_tag(etag).build());
                }
                Err(e) => {
                    failure = Some(self.error("UploadPartCopy", target, e));
                    break;
                }
            }
            start = end;
        }
        if failure.is_none() {
            let completed = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .key(&target_key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await;
            match completed {
                Ok(_) => return Ok(()),
                Err(e) => failure = Some(self.error("CompleteMultipartUpload", target, e)),
            }
        }
        // Best effort: an upload left open is aborted by the next attempt
        // or the bucket's lifecycle rule.
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&target_key)
            .upload_id(&upload_id)
            .send()
            .await;
        Err(failure.unwrap_or_else(|| StoreError::S3 {
            operation: "UploadPartCopy",
            location: self.describe(target),
            detail: "the copy failed".to_owned(),
        }))
    }
}

impl ObjectStore for S3Store {
    type Reader = S3Reader;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                // A zero-byte "folder" object named exactly like the store's
                // prefix is the root itself, not an object in it.
                if key.is_empty() {
                    continue;
                }
                let size = object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                // The ETag GetObject answers with too: the same version.
                let version = object.e_tag().filter(|tag| !tag.is_empty()).map(|tag| ObjectVersion(tag.to_owned()));
                found.push(ObjectEntry { key: key.to_owned(), size, version });
            }
        }
        // S3 already lists in UTF-8 byte order; sorting keeps the port's
        // promise whatever an emulator does.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_versioned(key).await.map(|object| object.body)
    }

    async fn get_at_most(&self, key: &str, limit: u64) -> Result<Bytes, StoreError> {
        let output = match self.get_object(key).customize().config_override(without_checksum_validation()).send().await
        {
            Ok(output) => output,
            Err(e) if is_missing_key(&e) => return Err(StoreError::NotFound { location: self.describe(key) }),
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        // Refused from the headers: the body is dropped unread, which
        // closes the connection instead of downloading it.
        let size = output.content_length().and_then(|length| u64::try_from(length).ok()).unwrap_or(0);
        if size > limit {
            return Err(StoreError::TooLarge { location: self.describe(key), size, limit });
        }
        let body = output.body.collect().await.map_err(|e| StoreError::S3 {
            operation: "GetObject",
            location: self.describe(key),
            detail: cut(&display_chain(&e)),
        })?;
        let body = body.into_bytes();
        // A server that sent no Content-Length (or a wrong one) is checked
        // after all.
        if body.len() as u64 > limit {
            return Err(StoreError::TooLarge { location: self.describe(key), size: body.len() as u64, limit });
        }
        Ok(body)
    }

    async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
        let output = match self.get_object(key).customize().config_override(without_checksum_validation()).send().await
        {
            Ok(output) => output,
            Err(e) if is_missing_key(&e) => return Err(StoreError::NotFound { location: self.describe(key) }),
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        let version = ObjectVersion(output.e_tag().unwrap_or_default().to_owned());
        let body = output.body.collect().await.map_err(|e| StoreError::S3 {
            operation: "GetObject",
            location: self.describe(key),
            detail: cut(&display_chain(&e)),
        })?;
        Ok(VersionedObject { body: body.into_bytes(), version })
    }

    /// One GetObject with a `Range` header (and `If-Match` when a version is
    /// given). The answer's ETag is checked against the version as well, so
    /// a server that ignored `If-Match` would still not mix versions. No
    /// response checksum validation: a ranged answer carries no checksum of
    /// its bytes (S3 omits the whole object's; moto too).
    async fn get_range(
        &self,
        key: &str,
        range: ByteRange,
        if_version: Option<&ObjectVersion>,
    ) -> Result<RangeRead, StoreError> {
        let request =
            self.get_object(key).range(range.http_header()).set_if_match(if_version.map(|version| version.0.clone()));
        let output = match request.customize().config_override(without_checksum_validation()).send().await {
            Ok(output) => output,
            Err(e) if is_missing_key(&e) && if_version.is_some() => {
                return Err(StoreError::Changed {
                    location: self.describe(key),
                    detail: "it was deleted after an earlier part of it was read".to_owned(),
                });
            }
            Err(e) if is_missing_key(&e) => return Err(StoreError::NotFound { location: self.describe(key) }),
            Err(e) if if_version.is_some() && is_precondition_failed(&e) => {
                let expected = if_version.map_or("", |v| v.0.as_str());
                return Err(StoreError::Changed {
                    location: self.describe(key),
                    detail: format!("GetObject with If-Match {expected} was refused: {}", one_line(&e)),
                });
            }
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        let version = ObjectVersion(output.e_tag().unwrap_or_default().to_owned());
        if let Some(expected) = if_version {
            if version != *expected {
                return Err(StoreError::Changed {
                    location: self.describe(key),
                    detail: format!("asked for ETag {}, the answer is of ETag {}", expected.0, version.0),
                });
            }
        }
        let content_range = output.content_range().map(str::to_owned);
        let length = output.content_length().and_then(|l| u64::try_from(l).ok());
        let body = output.body.collect().await.map_err(|e| StoreError::S3 {
            operation: "GetObject",
            location: self.describe(key),
            detail: cut(&display_chain(&e)),
        })?;
        let body = body.into_bytes();
        let (start, object_size) = match content_range.as_deref() {
            Some(value) => parse_content_range(value).ok_or_else(|| StoreError::S3 {
                operation: "GetObject",
                location: self.describe(key),
                detail: format!("the answer's Content-Range {value:?} is not bytes a-b/size"),
            })?,
            // A 200 with the whole object (a range covering all of it).
            None => (0, length.unwrap_or(body.len() as u64)),
        };
        Ok(RangeRead { body, start, object_size, version })
    }

    /// Streams the object without the SDK's response checksum validation:
    /// objects uploaded in parts carry a composite (part-level) CRC that the
    /// SDK cannot check and only warns about, once per read. Streamed reads
    /// are verified by their callers instead — [`crate::transfer`] checks
    /// every byte against the manifest's SHA-256.
    async fn open(&self, key: &str) -> Result<S3Reader, StoreError> {
        match self.get_object(key).customize().config_override(without_checksum_validation()).send().await {
            Ok(output) => Ok(S3Reader { body: output.body, location: self.describe(key) }),
            Err(e) if is_missing_key(&e) => Err(StoreError::NotFound { location: self.describe(key) }),
            Err(e) => Err(self.error("GetObject", key, e)),
        }
    }

    async fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        condition: WriteCondition<'_>,
    ) -> Result<ConditionalPut, StoreError> {
        let owner = self.expected_owner();
        match put_object(&self.client, &self.bucket, owner, &self.full_key(key), body, content_type, Some(condition))
            .await
        {
            Ok(version) => Ok(ConditionalPut::Written(version)),
            Err(e) if is_already_existing(&e) => Ok(ConditionalPut::ConditionFailed),
            Err(e) if matches!(condition, WriteCondition::Unchanged(_)) && is_gone(&e) => {
                Ok(ConditionalPut::ConditionFailed)
            }
            Err(e) => Err(self.error("PutObject", key, e)),
        }
    }

    /// CopyObject up to 5 GiB, a multipart copy (UploadPartCopy) beyond:
    /// server-side, so no byte passes through this process.
    async fn copy_within(&self, source: &str, target: &str, size: u64) -> Result<(), StoreError> {
        if size <= COPY_OBJECT_MAX_BYTES {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .set_expected_source_bucket_owner(self.expected_owner.clone())
                .copy_source(copy_source(&self.bucket, &self.full_key(source)))
                .key(self.full_key(target))
                .send()
                .await
                .map_err(|e| self.error("CopyObject", target, e))?;
            return Ok(());
        }
        self.copy_in_parts(source, target, size, COPY_PART_BYTES).await
    }

    /// ListMultipartUploads under the prefix, page by page, and an
    /// AbortMultipartUpload for each upload found.
    async fn abort_unfinished_uploads(&self, prefix: &str) -> Result<usize, StoreError> {
        let (mut key_marker, mut upload_id_marker) = (None::<String>, None::<String>);
        let mut aborted = 0;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", prefix, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else { continue };
                let abort = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .set_expected_bucket_owner(self.expected_owner.clone())
                    .key(key)
                    .upload_id(upload_id);
                match abort.send().await {
                    Ok(_) => aborted += 1,
                    // Finished or aborted meanwhile (by the attempt itself).
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => {}
                    Err(e) => return Err(sdk_error("AbortMultipartUpload", format!("s3://{}/{key}", self.bucket), e)),
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_id_marker.is_none() {
                return Ok(aborted);
            }
        }
    }
}

/// The body of a GetObject, read as it arrives.
#[derive(Debug)]
pub struct S3Reader {
    body: ByteStream,
    location: String,
}

impl ObjectReader for S3Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        self.body.try_next().await.map_err(|e| StoreError::S3 {
            operation: "GetObject",
            location: self.location.clone(),
            detail: cut(&display_chain(&e)),
        })
    }
}

/// Bytes written but not yet uploaded. Chunks are kept as they came, so a
/// chunk of exactly one part size (what `ChunkWriter` sends) becomes a part
/// without being copied.
#[derive(Debug, Default)]
struct PartBuffer {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl PartBuffer {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The first `size` bytes (or all, if fewer) as one contiguous buffer.
    fn take(&mut self, size: usize) -> Bytes {
        let size = size.min(self.len);
        self.len -= size;
        if let Some(front) = self.chunks.front_mut() {
            if front.len() >= size {
                let part = front.split_to(size);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
                return part;
            }
        }
        let mut part = BytesMut::with_capacity(size);
        while part.len() < size {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let wanted = size - part.len();
            if front.len() <= wanted {
                part.extend_from_slice(front);
                self.chunks.pop_front();
            } else {
                part.extend_from_slice(&front.split_to(wanted));
            }
        }
        part.freeze()
    }

    fn take_all(&mut self) -> Bytes {
        self.take(self.len)
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

/// A multipart upload that has been created and not yet completed or aborted.
#[derive(Debug)]
struct OpenMultipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

/// A streamed upload to S3, created by [`S3Store::start_upload`].
///
/// At most one part plus one incoming chunk is held in memory. Nothing is
/// sent until more than one part has been written; an object that fits in
/// one part goes up as a single PutObject on [`ObjectUpload::finish`].
#[derive(Debug)]
pub struct S3Upload {
    client: Client,
    bucket: String,
    expected_owner: Option<String>,
    /// Full key, prefix included.
    key: String,
    location: String,
    content_type: String,
    pending: PartBuffer,
    multipart: Option<OpenMultipart>,
    /// Set once an operation failed and the upload was aborted.
    failed: bool,
}

impl S3Upload {
    fn error<E>(&self, operation: &'static str, error: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sdk_error(operation, self.location.clone(), error)
    }

    fn refuse_after_failure(&self, operation: &'static str) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::S3 {
                operation,
                location: self.location.clone(),
                detail: "the upload was already aborted after an earlier failure".to_owned(),
            });
        }
        Ok(())
    }

    async fn create_multipart(&self) -> Result<OpenMultipart, StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&self.key)
            .content_type(&self.content_type)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", e))?;
        match created.upload_id() {
            Some(upload_id) => Ok(OpenMultipart { upload_id: upload_id.to_owned(), parts: Vec::new() }),
            None => Err(StoreError::S3 {
                operation: "CreateMultipartUpload",
                location: self.location.clone(),
                detail: "the response carried no upload id".to_owned(),
            }),
        }
    }

    /// Uploads the next part, creating the multipart upload on first use.
    async fn upload_part(&mut self, body: Bytes) -> Result<(), StoreError> {
        let multipart = match self.multipart.take() {
            Some(open) => open,
            None => self.create_multipart().await?,
        };
        let multipart = self.multipart.insert(multipart);
        let part_number = i32::try_from(multipart.parts.len() + 1).unwrap_or(i32::MAX);
        if part_number > MAX_PARTS {
            return Err(StoreError::S3 {
                operation: "UploadPart",
                location: self.location.clone(),
                detail: format!("the object needs more than {MAX_PARTS} parts of {UPLOAD_CHUNK_BYTES} bytes"),
            });
        }
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .part_number(part_number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_error("UploadPart", self.location.clone(), e))?;
        let mut part = CompletedPart::builder().part_number(part_number);
        if let Some(etag) = uploaded.e_tag() {
            part = part.e_tag(etag);
        }
        if let Some(checksum) = uploaded.checksum_crc32() {
            part = part.checksum_crc32(checksum);
        }
        multipart.parts.push(part.build());
        Ok(())
    }

    /// Sends every full part while more than one part is buffered, so the
    /// last part (which may be small) is always kept for `finish`.
    async fn upload_full_parts(&mut self) -> Result<(), StoreError> {
        while self.pending.len() > UPLOAD_CHUNK_BYTES {
            let part = self.pending.take(UPLOAD_CHUNK_BYTES);
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            let body = self.pending.take_all();
            let owner = self.expected_owner.as_deref();
            return put_object(&self.client, &self.bucket, owner, &self.key, body, &self.content_type, None)
                .await
                .map(|_| ())
                .map_err(|e| self.error("PutObject", e));
        }
        let last = self.pending.take_all();
        if !last.is_empty() {
            self.upload_part(last).await?;
        }
        let Some(multipart) = self.multipart.as_ref() else {
            return Ok(());
        };
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(multipart.parts.clone())).build())
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", e))?;
        self.multipart = None;
        Ok(())
    }

    /// Aborts the multipart upload, if one was created.
    async fn abort_multipart(&mut self) -> Result<(), StoreError> {
        self.pending.clear();
        let Some(multipart) = self.multipart.take() else {
            return Ok(());
        };
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("AbortMultipartUpload", e))
    }

    /// Cleans up after `error` and returns it: the caller's failure is what
    /// matters, an abort that also fails is only logged.
    async fn fail(&mut self, error: StoreError) -> StoreError {
        self.failed = true;
        if let Err(abort_error) = self.abort_multipart().await {
            tracing::warn!(
                bucket = %self.bucket,
                key = %self.key,
                error = %abort_error,
                "could not abort the multipart upload after a failure"
            );
        }
        error
    }
}

impl ObjectUpload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.refuse_after_failure("UploadPart")?;
        self.pending.push(chunk);
        match self.upload_full_parts().await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail(error).await),
        }
    }

    async fn finish(mut self) -> Result<UploadReceipt, StoreError> {
        self.refuse_after_failure("CompleteMultipartUpload")?;
        match self.complete().await {
            Ok(()) => Ok(UploadReceipt::default()),
            Err(error) => Err(self.fail(error).await),
        }
    }

    async fn abort(mut self) -> Result<(), StoreError> {
        self.abort_multipart().await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Dropped without finish or abort (a cancelled task, a panic): abort
        // in the background so the bucket is not billed for orphaned parts.
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .key(&self.key)
            .upload_id(multipart.upload_id);
        let (bucket, key) = (self.bucket.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = request.send().await {
                        tracing::warn!(%bucket, %key, error = %one_line(&e),
                            "could not abort a dropped multipart upload");
                    }
                });
            }
            Err(_) => tracing::warn!(%bucket, %key,
                "a multipart upload was dropped outside a runtime and stays open"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::presigning::PresigningConfig;
    use aws_sdk_s3::primitives::SdkBody;
    use aws_sdk_s3::types::error::NoSuchKey;

    use super::*;

    fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
        let mut builder = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "unit-test",
            )));
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder.build()
    }

    async fn presigned_get_url(client: &Client) -> String {
        let config = PresigningConfig::expires_in(Duration::from_secs(60)).unwrap();
        let request = client.get_object().bucket("reports-bucket").key("a/b.json").presigned(config).await.unwrap();
        request.uri().to_owned()
    }

    fn store(prefix: &str) -> S3Store {
        S3Store::new(s3_client(&sdk_config(None)), "bucket", prefix)
    }

    fn get_failure(error: GetObjectError, status: u16) -> SdkError<GetObjectError> {
        let response = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(error, response)
    }

    fn chunks(sizes: &[usize]) -> PartBuffer {
        let mut buffer = PartBuffer::default();
        let mut next = 0u8;
        for &size in sizes {
            let chunk: Vec<u8> = (0..size)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            buffer.push(Bytes::from(chunk));
        }
        buffer
    }

    #[tokio::test]
    async fn with_an_endpoint_override_the_client_addresses_buckets_by_path() {
        let client = s3_client(&sdk_config(Some("http://127.0.0.1:5000")));
        let url = presigned_get_url(&client).await;
        assert!(url.starts_with("http://127.0.0.1:5000/reports-bucket/a/b.json?"), "{url}");
    }

    #[tokio::test]
    async fn without_an_endpoint_override_the_client_uses_virtual_hosted_buckets() {
        let client = s3_client(&sdk_config(None));
        let url = presigned_get_url(&client).await;
        assert!(url.starts_with("https://reports-bucket.s3."), "{url}");
    }

    #[test]
    fn prefixes_are_normalised_and_described_keys_include_them() {
        let nested = store("/raw/music");
        assert_eq!(nested.bucket(), "bucket");
        assert_eq!(nested.prefix(), "raw/music/");
        assert_eq!(nested.describe("a/b.json"), "s3://bucket/raw/music/a/b.json");
        assert_eq!(nested.full_key("a/b.json"), "raw/music/a/b.json");

        let bare = store("");
        assert_eq!(bare.prefix(), "");
        assert_eq!(bare.describe("a.json"), "s3://bucket/a.json");
    }

    #[test]
    fn content_ranges_give_the_first_byte_and_the_object_size() {
        assert_eq!(parse_content_range("bytes 0-99/200"), Some((0, 200)));
        assert_eq!(parse_content_range("bytes 1048576-2097151/987654321"), Some((1_048_576, 987_654_321)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("0-99/200"), None);
    }

    #[test]
    fn a_refused_if_match_is_a_precondition_failure_and_a_denied_read_is_not() {
        let refused = GetObjectError::generic(ErrorMetadata::builder().code("PreconditionFailed").build());
        assert!(is_precondition_failed(&get_failure(refused, 412)));
        let denied = GetObjectError::generic(ErrorMetadata::builder().code("AccessDenied").build());
        assert!(!is_precondition_failed(&get_failure(denied, 403)));
    }

    #[test]
    fn no_such_key_and_anonymous_404s_mean_the_object_is_missing() {
        let no_such_key = GetObjectError::NoSuchKey(NoSuchKey::builder().build());
        assert!(is_missing_key(&get_failure(no_such_key, 404)));
        let bare_404 = GetObjectError::generic(ErrorMetadata::builder().build());
        assert!(is_missing_key(&get_failure(bare_404, 404)));
    }

    #[test]
    fn a_missing_bucket_or_a_denied_read_is_not_a_missing_object() {
        let no_bucket = GetObjectError::generic(ErrorMetadata::builder().code("NoSuchBucket").build());
        assert!(!is_missing_key(&get_failure(no_bucket, 404)));
        let denied = GetObjectError::generic(ErrorMetadata::builder().code("AccessDenied").build());
        assert!(!is_missing_key(&get_failure(denied, 403)));
    }

    fn put_failure(code: Option<&str>, status: u16) -> SdkError<PutObjectError> {
        let mut metadata = ErrorMetadata::builder();
        if let Some(code) = code {
            metadata = metadata.code(code);
        }
        let response = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(metadata.build()), response)
    }

    #[test]
    fn a_failed_precondition_or_a_conditional_conflict_means_the_object_exists() {
        assert!(is_already_existing(&put_failure(Some("PreconditionFailed"), 412)));
        assert!(is_already_existing(&put_failure(None, 412)));
        assert!(is_already_existing(&put_failure(Some("ConditionalRequestConflict"), 409)));
    }

    #[test]
    fn other_put_failures_do_not_mean_the_object_exists() {
        assert!(!is_already_existing(&put_failure(Some("AccessDenied"), 403)));
        assert!(!is_already_existing(&put_failure(Some("NoSuchBucket"), 404)));
        assert!(!is_already_existing(&put_failure(Some("OperationAborted"), 409)));
        assert!(!is_already_existing(&put_failure(None, 409)));
        assert!(!is_already_existing(&put_failure(None, 500)));
    }

    #[test]
    fn sdk_errors_are_rendered_with_their_code_and_message() {
        let denied =
            GetObjectError::generic(ErrorMetadata::builder().code("AccessDenied").message("no read for you").build());
        let error = sdk_error("GetObject", "s3://b/k".to_owned(), get_failure(denied, 403));
        let message = error.to_string();
        assert!(message.starts_with("S3 GetObject s3://b/k failed: "), "{message}");
        assert!(message.contains("AccessDenied"), "{message}");
        assert!(message.contains("no read for you"), "{message}");
    }

    #[test]
    fn a_part_of_exactly_one_chunk_is_taken_whole() {
        let mut buffer = chunks(&[UPLOAD_CHUNK_BYTES, 10]);
        let first_chunk_start = buffer.chunks[0].as_ptr();
        let part = buffer.take(UPLOAD_CHUNK_BYTES);
        assert_eq!(part.len(), UPLOAD_CHUNK_BYTES);
        assert_eq!(part.as_ptr(), first_chunk_start, "the chunk was copied");
        assert_eq!(buffer.len(), 10);
    }

    #[test]
    fn parts_span_uneven_chunks_in_order() {
        let sizes = [3, 1, 7, 0, 12, 5];
        let mut expected = chunks(&sizes);
        let expected = expected.take_all();
        let mut buffer = chunks(&sizes);
        assert_eq!(buffer.len(), 28);
        let mut rebuilt = Vec::new();
        for size in [4, 10, 1, 20] {
            let part = buffer.take(size);
            assert_eq!(part.len(), size.min(28 - rebuilt.len()));
            rebuilt.extend_from_slice(&part);
        }
        assert_eq!(rebuilt, expected);
        assert_eq!(buffer.len(), 0);
        assert!(buffer.take_all().is_empty());
    }
}
