//! Objects in memory as an [`ObjectStore`], for unit tests of code that
//! reads and writes a store and of what it asks of it: every read of an
//! object is recorded ([`InMemoryStore::reads`]), so that a test can count
//! requests as it would count GetObjects. Each write is a new version (a
//! generation number), which a listing reports as S3's does its ETag.
//! Writes replace the whole object under one lock: a conditional write is
//! atomic, and an upload publishes nothing before it finishes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::ports::{
    ConditionalPut, ObjectEntry, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, ObjectVersion, StoreError,
    UploadReceipt, VersionedObject, WriteCondition,
};

/// Objects by key, each with its version, and every read made.
#[derive(Debug, Clone, Default)]
pub struct InMemoryStore {
    shared: Arc<Mutex<Contents>>,
}

#[derive(Debug, Default)]
struct Contents {
    objects: BTreeMap<String, (Bytes, ObjectVersion)>,
    generation: u64,
    reads: Vec<String>,
}

impl Contents {
    fn store(&mut self, key: &str, body: Bytes) -> ObjectVersion {
        self.generation += 1;
        let version = ObjectVersion(format!("generation-{}", self.generation));
        self.objects.insert(key.to_owned(), (body, version.clone()));
        version
    }
}

impl InMemoryStore {
    fn contents(&self) -> std::sync::MutexGuard<'_, Contents> {
        self.shared.lock().expect("not poisoned")
    }

    /// The key of every object read so far (whole, ranged or streamed), in
    /// the order read; listings are not reads.
    pub fn reads(&self) -> Vec<String> {
        self.contents().reads.clone()
    }

    /// Removes the object at `key`; `false` when there was none.
    pub fn remove(&self, key: &str) -> bool {
        self.contents().objects.remove(key).is_some()
    }

    fn read(&self, key: &str) -> Result<VersionedObject, StoreError> {
        let mut contents = self.contents();
        contents.reads.push(key.to_owned());
        let (body, version) =
            contents.objects.get(key).cloned().ok_or_else(|| StoreError::NotFound { location: self.describe(key) })?;
        Ok(VersionedObject { body, version })
    }
}

impl ObjectSink for InMemoryStore {
    type Upload = InMemoryUpload;

    async fn put(&self, key: &str, body: Bytes, _content_type: &str) -> Result<UploadReceipt, StoreError> {
        self.contents().store(key, body);
        Ok(UploadReceipt::default())
    }

    async fn start_upload(&self, key: &str, _content_type: &str) -> Result<InMemoryUpload, StoreError> {
        Ok(InMemoryUpload { store: self.clone(), key: key.to_owned(), body: BytesMut::new() })
    }

    fn describe(&self, key: &str) -> String {
        format!("memory:{key}")
    }
}

impl ObjectStore for InMemoryStore {
    type Reader = InMemoryReader;

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StoreError> {
        let contents = self.contents();
        let found = contents
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (body, version))| ObjectEntry {
                key: key.clone(),
                size: body.len() as u64,
                version: Some(version.clone()),
            })
            .collect();
        Ok(found)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.read(key).map(|object| object.body)
    }

    async fn get_versioned(&self, key: &str) -> Result<VersionedObject, StoreError> {
        self.read(key)
    }

    async fn open(&self, key: &str) -> Result<InMemoryReader, StoreError> {
        self.read(key).map(|object| InMemoryReader { rest: Some(object.body) })
    }

    async fn put_conditional(
        &self,
        key: &str,
        body: Bytes,
        _content_type: &str,
        condition: WriteCondition<'_>,
    ) -> Result<ConditionalPut, StoreError> {
        let mut contents = self.contents();
        let current = contents.objects.get(key).map(|(_, version)| version);
        let holds = match condition {
            WriteCondition::Absent => current.is_none(),
            WriteCondition::Unchanged(expected) => current == Some(expected),
        };
        if !holds {
            return Ok(ConditionalPut::ConditionFailed);
        }
        Ok(ConditionalPut::Written(contents.store(key, body)))
    }
}

/// An object read in one chunk.
#[derive(Debug)]
pub struct InMemoryReader {
    rest: Option<Bytes>,
}

impl ObjectReader for InMemoryReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        Ok(self.rest.take().filter(|body| !body.is_empty()))
    }
}

/// An upload kept in memory until it finishes.
#[derive(Debug)]
pub struct InMemoryUpload {
    store: InMemoryStore,
    key: String,
    body: BytesMut,
}

impl ObjectUpload for InMemoryUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.body.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self) -> Result<UploadReceipt, StoreError> {
        self.store.contents().store(&self.key, self.body.freeze());
        Ok(UploadReceipt::default())
    }

    async fn abort(self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_gives_the_version_a_read_gives_and_every_write_is_a_new_one() {
        let store = InMemoryStore::default();
        store.put("a/1.json", Bytes::from_static(b"1"), "application/json").await.unwrap();
        store.put("a/2.json", Bytes::from_static(b"22"), "application/json").await.unwrap();
        store.put("b.json", Bytes::from_static(b"3"), "application/json").await.unwrap();
        let listed = store.list("a/").await.unwrap();
        assert_eq!(
            listed.iter().map(|entry| (entry.key.as_str(), entry.size)).collect::<Vec<_>>(),
            [("a/1.json", 1), ("a/2.json", 2)]
        );
        let read = store.get_versioned("a/1.json").await.unwrap();
        assert_eq!(listed[0].version.as_ref(), Some(&read.version));

        let rewritten = store.put_conditional(
            "a/1.json",
            Bytes::from_static(b"1"),
            "application/json",
            WriteCondition::Unchanged(&read.version),
        );
        let ConditionalPut::Written(new_version) = rewritten.await.unwrap() else { panic!("the version was current") };
        assert_ne!(new_version, read.version, "the same bytes written again are a new version");
        let stale = store.put_conditional(
            "a/1.json",
            Bytes::from_static(b"x"),
            "application/json",
            WriteCondition::Unchanged(&read.version),
        );
        assert_eq!(stale.await.unwrap(), ConditionalPut::ConditionFailed);
        assert_eq!(store.reads(), ["a/1.json"]);
    }

    #[tokio::test]
    async fn an_upload_is_invisible_until_it_finishes_and_a_removed_object_is_gone() {
        let store = InMemoryStore::default();
        let mut upload = store.start_upload("big.bin", "application/octet-stream").await.unwrap();
        upload.write(Bytes::from_static(b"ab")).await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        upload.write(Bytes::from_static(b"c")).await.unwrap();
        upload.finish().await.unwrap();
        let mut reader = store.open("big.bin").await.unwrap();
        assert_eq!(reader.next_chunk().await.unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(reader.next_chunk().await.unwrap(), None);

        assert!(store.remove("big.bin"));
        assert!(matches!(store.get("big.bin").await, Err(StoreError::NotFound { .. })));
        assert!(store.list("").await.unwrap().is_empty());
    }
}
