//! Bridges synchronous producers (report formatting, Parquet writing) to an
//! asynchronous [`ObjectUpload`]: the producer runs on a blocking thread and
//! writes into a [`ChunkWriter`]; filled chunks cross a small bounded channel
//! to the upload, so memory stays at a few chunks whatever the object size.

use std::io::{self, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::ports::{ObjectSink, ObjectUpload, StoreError, UploadReceipt, UPLOAD_CHUNK_BYTES};

/// Chunks in flight between the producer and the upload.
const CHUNKS_IN_FLIGHT: usize = 2;

/// An `io::Write` that hands fixed-size chunks to an upload task.
pub struct ChunkWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Bytes>,
}

impl ChunkWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(UPLOAD_CHUNK_BYTES));
        self.sender
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = UPLOAD_CHUNK_BYTES - self.buffer.len();
        let taken = data.len().min(room);
        self.buffer.extend_from_slice(&data[..taken]);
        if self.buffer.len() == UPLOAD_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a streamed upload failed: the producer's own error, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum StreamedUploadError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Produce(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs `produce` on a blocking thread and streams everything it writes into
/// `key`. The object is published only if `produce` returns `Ok` and every
/// chunk was stored; otherwise the upload is aborted and nothing is left.
/// When the store fails first, its error is returned (the producer then sees
/// a broken pipe, which is only a consequence). Returns what `produce`
/// returned and what the store said about the object.
pub async fn upload_from_blocking<S, T, E, F>(
    store: &S,
    key: &str,
    content_type: &str,
    produce: F,
) -> Result<(T, UploadReceipt), StreamedUploadError<E>>
where
    S: ObjectSink,
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
    F: FnOnce(&mut ChunkWriter) -> Result<T, E> + Send + 'static,
{
    let mut upload = store.start_upload(key, content_type).await?;
    let (sender, mut receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let producer = tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter { buffer: Vec::with_capacity(UPLOAD_CHUNK_BYTES), sender };
        let produced = produce(&mut writer)?;
        // Dropping the sender ends the upload loop; the last, partly filled
        // chunk goes back to it directly.
        let ChunkWriter { buffer, sender } = writer;
        drop(sender);
        Ok::<_, ProducerFailure<E>>((produced, buffer))
    });

    let mut store_failure = None;
    while let Some(chunk) = receiver.recv().await {
        if let Err(e) = upload.write(chunk).await {
            store_failure = Some(e);
            break;
        }
    }
    // Dropping the receiver unblocks a producer waiting to send after a failure.
    drop(receiver);
    let produced = producer.await.expect("report producer panicked");

    if let Some(error) = store_failure {
        let _ = upload.abort().await;
        return Err(StreamedUploadError::Store(error));
    }
    match produced {
        Ok((value, buffer)) => {
            if !buffer.is_empty() {
                if let Err(e) = upload.write(Bytes::from(buffer)).await {
                    let _ = upload.abort().await;
                    return Err(e.into());
                }
            }
            let receipt = upload.finish().await?;
            Ok((value, receipt))
        }
        Err(ProducerFailure(e)) => {
            let _ = upload.abort().await;
            Err(StreamedUploadError::Produce(e))
        }
    }
}

struct ProducerFailure<E>(E);

impl<E> From<E> for ProducerFailure<E> {
    fn from(e: E) -> Self {
        ProducerFailure(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalDirStore, ObjectStore};

    #[derive(Debug, thiserror::Error)]
    #[error("producer gave up after {0} bytes")]
    struct GaveUp(usize);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn everything_written_arrives_in_order_across_chunks() {
        let (_dir, store) = LocalDirStore::in_temp_dir("streaming");
        let total = UPLOAD_CHUNK_BYTES * 2 + 12345;
        let (written, _) = upload_from_blocking(&store, "big.bin", "application/octet-stream", move |w| {
            for i in 0..total {
                w.write_all(&[(i % 251) as u8])?;
            }
            Ok::<_, io::Error>(total)
        })
        .await
        .unwrap();
        let stored = store.get("big.bin").await.unwrap();
        assert_eq!(stored.len(), written);
        assert!(stored.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_producer_publishes_nothing() {
        let (_dir, store) = LocalDirStore::in_temp_dir("streaming");
        let err = upload_from_blocking(&store, "dir/half.bin", "application/octet-stream", |w| {
            w.write_all(&vec![7u8; UPLOAD_CHUNK_BYTES + 10]).map_err(|_| GaveUp(0))?;
            Err::<(), _>(GaveUp(UPLOAD_CHUNK_BYTES + 10))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, StreamedUploadError::Produce(GaveUp(_))));
        assert!(store.list("").await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(store.root().join("dir")).unwrap().count(), 0);
    }
}
