//! The storage ports themselves — [`ObjectSink`], [`ObjectStore`],
//! [`ObjectReader`], [`ObjectUpload`] — with the values they exchange and
//! [`StoreError`]. Every adapter in this folder implements them; nothing
//! here knows an adapter.

use std::future::Future;

use bytes::Bytes;

/// Size of the chunks report writers hand to an upload, and of the parts of
/// an S3 multipart upload (S3 needs at least 5 MiB for all but the last).
pub const UPLOAD_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// One object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Key relative to the store root.
    pub key: String,
    pub size: u64,
    /// The version [`ObjectStore::get_versioned`] would read now, where the
    /// listing says it (S3's ETag): a caller holding an object read at this
    /// version knows it unchanged without reading it again. `None` where a
    /// listing cannot say it cheaply (a local file's version hashes its
    /// bytes); such an object must be read to know it.
    pub version: Option<ObjectVersion>,
}

/// What [`ObjectStore::put_if_absent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the given bytes.
    Created,
    /// An object already existed at the key; it was left untouched.
    AlreadyExists,
}

/// One stored version of an object: S3's ETag, or a hash of a local file's
/// bytes. Opaque; only compared for equality by the store that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectVersion(pub String);

/// An object's bytes together with the version they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedObject {
    pub body: Bytes,
    pub version: ObjectVersion,
}

/// Which bytes of an object [`ObjectStore::get_range`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The last `n` bytes (all of a shorter object): how a Parquet footer
    /// is read without knowing the object's size.
    Suffix(u64),
    /// Bytes `start..end` (end exclusive); an end past the object's end
    /// reads to its end.
    Span { start: u64, end: u64 },
}

impl ByteRange {
    /// The HTTP `Range` header value (`bytes=-n`, `bytes=a-b` inclusive).
    pub fn http_header(&self) -> String {
        match *self {
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
            ByteRange::Span { start, end } => format!("bytes={start}-{}", end.saturating_sub(1)),
        }
    }

    /// `start..end` within an object of `size` bytes (an end past the end
    /// is cut to it), or `None` when the range starts past the end or is empty.
    pub fn within(&self, size: u64) -> Option<std::ops::Range<u64>> {
        let (start, end) = match *self {
            ByteRange::Suffix(n) => (size.saturating_sub(n), size),
            ByteRange::Span { start, end } => (start, end.min(size)),
        };
        (start < end || (start == 0 && size == 0)).then_some(start..end)
    }
}

/// What [`ObjectStore::get_range`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRead {
    pub body: Bytes,
    /// Where in the object `body` starts.
    pub start: u64,
    /// The whole object's size.
    pub object_size: u64,
    /// The version the bytes are of.
    pub version: ObjectVersion,
}

/// When [`ObjectStore::put_conditional`] may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteCondition<'a> {
    /// Only if no object exists at the key (S3's `If-None-Match: *`).
    Absent,
    /// Only if the object is still at this version (S3's `If-Match: <ETag>`).
    Unchanged(&'a ObjectVersion),
}

/// What [`ObjectStore::put_conditional`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionalPut {
    /// The condition held; the object now holds the bytes, at this version.
    Written(ObjectVersion),
    /// The condition did not hold (an object exists, or it changed or went
    /// away since it was read); nothing was written.
    ConditionFailed,
}

/// What a finished upload (or a `put`) reports about the object it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReceipt {
    /// The store never overwrites and found the object already finalized
    /// (GCS with `ifGenerationMatch=0` answering 412): nothing was written,
    /// and the existing object stands. Only a caller that writes
    /// deterministic bytes may treat that as written.
    pub already_existed: bool,
    /// CRC32C of the stored bytes as the store computed it (base64), when it says.
    pub crc32c: Option<String>,
    /// MD5 of the stored bytes as the store computed it (base64), when it says.
    pub md5: Option<String>,
}

/// A place objects are written to, and nothing else: the narrow port of a
/// destination that may not read, list or delete (a customer's bucket that
/// granted only object creation). Every [`ObjectStore`] is one.
pub trait ObjectSink: Send + Sync {
    type Upload: ObjectUpload;

    /// Writes a small object in one request, replacing any object at `key`
    /// where the store allows that (a sink that never overwrites reports an
    /// existing object in the receipt instead).
    fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<UploadReceipt, StoreError>> + Send;

    /// Starts a streamed upload of an object of any size.
    fn start_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> impl Future<Output = Result<Self::Upload, StoreError>> + Send;

    /// A human-readable name of `key` in this store (`s3://bucket/prefix/key`,
    /// `gs://bucket/prefix/key` or a file path), for messages and manifests.
    fn describe(&self, key: &str) -> String;
}

/// The most bytes a control object read whole may have: a delivery job, a
/// connection-test request or result, an arrival event. Ours are a few KB;
/// anything near this was not written by us.
pub const CONTROL_OBJECT_MAX_BYTES: u64 = 1024 * 1024;

/// The most bytes a run manifest read whole may have (a 100M-track run's
/// is well under 1 MB).
pub const MANIFEST_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// A place objects are read from and written to.
pub trait ObjectStore: ObjectSink {
    type Reader: ObjectReader;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectEntry>, StoreError>> + Send;

    /// The whole object.
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes, StoreError>> + Send;

    /// The whole object, refused with [`StoreError::TooLarge`] when it is
    /// longer than `limit` bytes: for objects others may write (jobs,
    /// connection-test requests, events), so that a huge one is a clear,
    /// permanent refusal rather than memory exhausted and retried. The
    /// default reads it and then checks; stores that know an object's
    /// length first (S3's Content-Length) refuse it unread.
    fn get_at_most(&self, key: &str, limit: u64) -> impl Future<Output = Result<Bytes, StoreError>> + Send {
        async move {
            let body = self.get(key).await?;
            let size = body.len() as u64;
            if size > limit {
                return Err(StoreError::TooLarge { location: self.describe(key), size, limit });
            }
            Ok(body)
        }
    }

    /// The whole object and the version it is, for a later
    /// [`ObjectStore::put_conditional`] that must not overwrite a change
    /// made in between.
    fn get_versioned(&self, key: &str) -> impl Future<Output = Result<VersionedObject, StoreError>> + Send;

    /// A range of the object's bytes, and the version they are of. With
    /// `if_version`, only from that version (S3's `If-Match: <ETag>`): an
    /// object replaced since is [`StoreError::Changed`], so that a reader
    /// assembling an object from several ranges never mixes two versions.
    /// A version from `get_range` is comparable with other `get_range`
    /// versions of the same store (a local file's is its length and
    /// modification time, not the hash [`ObjectStore::get_versioned`] gives).
    /// The default reads the whole object and slices it.
    fn get_range(
        &self,
        key: &str,
        range: ByteRange,
        if_version: Option<&ObjectVersion>,
    ) -> impl Future<Output = Result<RangeRead, StoreError>> + Send {
        async move {
            let whole = self.get_versioned(key).await?;
            if let Some(expected) = if_version {
                if whole.version != *expected {
                    return Err(StoreError::Changed {
                        location: self.describe(key),
                        detail: format!("version {} was read before, now it is {}", expected.0, whole.version.0),
                    });
                }
            }
            let object_size = whole.body.len() as u64;
            let Some(span) = range.within(object_size) else {
                return Err(StoreError::RangeNotSatisfiable {
                    location: self.describe(key),
                    range: range.http_header(),
                    size: object_size,
                });
            };
            let body = whole.body.slice(span.start as usize..span.end as usize);
            Ok(RangeRead { body, start: span.start, object_size, version: whole.version })
        }
    }

    /// Opens the object for reading in chunks, so that objects of any size
    /// can be streamed with bounded memory. The chunks are not checked
    /// against a stored checksum: a caller that needs integrity verifies
    /// them (as [`crate::transfer`] does against the manifest's SHA-256).
    fn open(&self, key: &str) -> impl Future<Output = Result<Self::Reader, StoreError>> + Send;

    /// Writes a small object in one request only if `condition` holds.
    /// Atomic: of any number of concurrent callers with the same condition
    /// at most one writes; the others get [`ConditionalPut::ConditionFailed`]
    /// and the object keeps the winner's bytes. This is how at-least-once
    /// event handlers create an object exactly once, and how an attempt
    /// claims a job without a lock service.
    fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        condition: WriteCondition<'_>,
    ) -> impl Future<Output = Result<ConditionalPut, StoreError>> + Send;

    /// [`ObjectStore::put_conditional`] with [`WriteCondition::Absent`]: an
    /// existing object is never replaced.
    fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send {
        async move {
            match self.put_conditional(key, body, content_type, WriteCondition::Absent).await? {
                ConditionalPut::Written(_) => Ok(PutOutcome::Created),
                ConditionalPut::ConditionFailed => Ok(PutOutcome::AlreadyExists),
            }
        }
    }

    /// Copies the object at `source` (`size` bytes) to `target` in this
    /// store, replacing any object there. The default streams it through
    /// this process in chunks (memory bounded); S3 copies server-side, so
    /// no byte leaves the bucket.
    fn copy_within(
        &self,
        source: &str,
        target: &str,
        size: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = size;
        async move {
            let mut reader = self.open(source).await?;
            let mut upload = self.start_upload(target, "application/octet-stream").await?;
            loop {
                match reader.next_chunk().await {
                    Ok(Some(chunk)) => {
                        if let Err(error) = upload.write(chunk).await {
                            let _ = upload.abort().await;
                            return Err(error);
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let _ = upload.abort().await;
                        return Err(error);
                    }
                }
            }
            upload.finish().await.map(|_| ())
        }
    }

    /// Aborts every unfinished streamed upload under `prefix` and returns
    /// how many there were. An upload aborts itself on any failure it sees,
    /// but not when its process is killed (a Lambda timeout): this is how
    /// the next attempt clears what such an attempt left behind. A store
    /// whose uploads leave nothing visible behind has nothing to abort.
    fn abort_unfinished_uploads(&self, prefix: &str) -> impl Future<Output = Result<usize, StoreError>> + Send {
        let _ = prefix;
        async { Ok(0) }
    }
}

/// A streamed read of one object, opened by [`ObjectStore::open`]. Owns
/// everything it needs, so it can be moved to a task of its own.
pub trait ObjectReader: Send + 'static {
    /// The next chunk, or `None` at the end of the object.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;
}

/// A streamed upload: chunks in order, then `finish` or `abort`.
pub trait ObjectUpload: Send {
    /// Appends bytes. Chunks may have any size; the store buffers as needed.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Publishes the object. Nothing is visible at the key before this returns.
    fn finish(self) -> impl Future<Output = Result<UploadReceipt, StoreError>> + Send;
    /// Discards everything written; leaves no object and no open upload.
    fn abort(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Why a storage operation failed. Messages name the object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location} does not exist")]
    NotFound { location: String },
    #[error("{operation} {location} failed: {source}")]
    Io {
        operation: &'static str,
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// An S3 call failed; `detail` is the SDK error rendered with its context
    /// (error code, message, request id).
    #[error("S3 {operation} {location} failed: {detail}")]
    S3 { operation: &'static str, location: String, detail: String },
    /// A read conditional on a version found the object replaced (or gone)
    /// since that version was read.
    #[error("{location} changed while it was being read ({detail}); it was not read further, so that no two versions of it are mixed")]
    Changed { location: String, detail: String },
    /// An object read whole is longer than its limit
    /// ([`ObjectStore::get_at_most`]); it was not read.
    #[error(
        "{location} is {size} bytes, above the limit of {limit} bytes for an object of its kind, so it was not \
         read; it is refused as invalid (a retry would not change that)"
    )]
    TooLarge { location: String, size: u64, limit: u64 },
    /// A ranged read asked for bytes the object does not have.
    #[error("{location} has no bytes in range {range}: it is {size} bytes long")]
    RangeNotSatisfiable { location: String, range: String, size: u64 },
    /// A Google Cloud Storage call failed; `status` is the HTTP status when
    /// the service answered, `detail` its error message (never a credential).
    #[error("GCS {operation} {location} failed: {detail}")]
    Gcs { operation: &'static str, location: String, status: Option<u16>, detail: String },
}
