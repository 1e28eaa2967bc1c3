//! Object storage ports: the narrow interfaces through which every stage reads
//! its inputs and publishes its outputs, whether the objects live in an S3
//! bucket (under an optional key prefix), in a local directory or, for unit
//! tests, in memory, and through which deliverers write into a customer's
//! storage: [`ObjectSink`] writes only (all a customer's grant allows),
//! [`ObjectStore`] also reads, lists and writes conditionally (our own
//! buckets).
//!
//! Keys passed to a store are relative to its root (bucket + prefix, or
//! directory) and always use `/`. A store never makes an object visible until
//! it is whole: `put` is atomic, and an [`ObjectUpload`] publishes nothing
//! until [`ObjectUpload::finish`] succeeds; [`ObjectUpload::abort`] (or an
//! error) leaves no object and no open multipart upload behind.

mod local;
mod location;
mod memory;
mod ports;
mod s3;
mod streaming;

pub use local::{LocalDirStore, LocalReader, LocalUpload};
pub use location::{normalise_prefix, StoreLocation, StoreLocationError};
pub use memory::{InMemoryReader, InMemoryStore, InMemoryUpload};
pub use ports::{
    ByteRange, ConditionalPut, ObjectEntry, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, ObjectVersion,
    PutOutcome, RangeRead, StoreError, UploadReceipt, VersionedObject, WriteCondition, CONTROL_OBJECT_MAX_BYTES,
    MANIFEST_MAX_BYTES, UPLOAD_CHUNK_BYTES,
};
pub use s3::{s3_client, S3Reader, S3Store, S3Upload};
pub use streaming::{upload_from_blocking, ChunkWriter, StreamedUploadError};
