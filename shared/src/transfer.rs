//! Moves one report part from one store to another — staging into a
//! customer's bucket, or staging into `downloads/` — streaming, with memory
//! bounded by a few chunks whatever the part's size (docs/design.md, "Delivery rules").
//!
//! The source is read on a task of its own, so downloading overlaps
//! uploading, and its bytes are checked against the run manifest (count and
//! SHA-256) as they pass: a part that changed since rank wrote it is never
//! delivered. When the target encoding equals the source's, bytes are copied
//! unchanged; otherwise each line is parsed and re-written in the target
//! format and compression on a blocking thread — a text part by
//! [`PartWriter`], a Parquet file by [`ParquetPartWriter`] — and the result
//! is counted and hashed again for the destination manifest. Sources are
//! always text (staging holds no Parquet). Any failure aborts the
//! target upload, so the target key holds the whole part or nothing.

use std::io::{self, BufRead, Read};

use bytes::{Bytes, BytesMut};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::domain::{Compression, Encoding, Format, ReportKind};
use crate::parquet_writer::{ParquetPartError, ParquetPartWriter};
use crate::report_writer::{Columns, PartSummary, PartWriter, ReportItem};
use crate::store::{
    upload_from_blocking, ObjectReader, ObjectSink, ObjectStore, ObjectUpload, StoreError, StreamedUploadError,
    UploadReceipt,
};

/// Source bytes are gathered into chunks of this size before crossing to the
/// upload, so a slow upload holds at most `CHUNKS_IN_FLIGHT` of them.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
const CHUNKS_IN_FLIGHT: usize = 16;

/// One part to move.
#[derive(Debug, Clone, Copy)]
pub struct PartTransfer<'a> {
    pub kind: ReportKind,
    /// The fields of each row: a report's three, or a removed-ids file's id.
    pub columns: Columns,
    /// The part as the run manifest lists it: source key, rows, bytes, SHA-256.
    pub source: &'a PartSummary,
    pub source_encoding: Encoding,
    pub target_key: &'a str,
    pub target_encoding: Encoding,
}

/// Why a part could not be moved. Messages name the object.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the source failed.
    #[error(transparent)]
    Read(StoreError),
    /// Writing the target failed.
    #[error(transparent)]
    Write(StoreError),
    #[error(
        "staging object {location} does not match the run manifest: expected {expected_bytes} bytes with SHA-256 \
         {expected_sha256}, read {actual_bytes} bytes with SHA-256 {actual_sha256}"
    )]
    SourceChanged {
        location: String,
        expected_bytes: u64,
        expected_sha256: String,
        actual_bytes: u64,
        actual_sha256: String,
    },
    #[error("staging object {location} line {line}: {reason}")]
    Malformed { location: String, line: u64, reason: String },
    #[error("converting {location}: {reason}")]
    Convert { location: String, reason: String },
    #[error(
        "staging object {location} is listed as {format} with compression {compression}, but staging parts are \
         text (json, jsonl or tsv; none or gzip): the run manifest is not one this build writes"
    )]
    SourceEncoding { location: String, format: Format, compression: Compression },
}

impl TransferError {
    /// Whether moving the same part again can never succeed: the staging part
    /// is gone or no longer what the run manifest lists, so the run itself is
    /// broken. Failures to read or write it otherwise are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            TransferError::Read(StoreError::NotFound { .. }) => true,
            TransferError::SourceChanged { .. }
            | TransferError::Malformed { .. }
            | TransferError::SourceEncoding { .. } => true,
            TransferError::Read(_) | TransferError::Write(_) | TransferError::Convert { .. } => false,
        }
    }
}

/// A part as moved: what the target now holds (its key relative to the
/// target store, rows, bytes, SHA-256) and what the target said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferredPart {
    pub summary: PartSummary,
    pub receipt: UploadReceipt,
}

/// Moves one part.
pub async fn transfer_part<S: ObjectStore, D: ObjectSink>(
    source: &S,
    target: &D,
    transfer: PartTransfer<'_>,
) -> Result<TransferredPart, TransferError> {
    let location = source.describe(&transfer.source.key);
    check_source_encoding(transfer.source_encoding, &location)?;
    let reader = source.open(&transfer.source.key).await.map_err(TransferError::Read)?;
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let expected = transfer.source.clone();
    let read_task = tokio::spawn(read_and_verify(reader, expected, location.clone(), sender));
    let result = if transfer.source_encoding == transfer.target_encoding {
        copy_unchanged(target, transfer, receiver).await
    } else {
        convert(target, transfer, location, receiver).await
    };
    // The reader ends by itself once the receiver is gone; wait so that no
    // download outlives the call.
    let _ = read_task.await;
    result
}

/// Reads a part of `store` whole and checks it against the run manifest's
/// figures (bytes and SHA-256), with memory bounded by one chunk: what a
/// link to it will serve is what the manifest promises.
pub async fn verify_part<S: ObjectStore>(store: &S, part: &PartSummary) -> Result<(), TransferError> {
    let mut reader = store.open(&part.key).await.map_err(TransferError::Read)?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = reader.next_chunk().await.map_err(TransferError::Read)? {
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
    }
    let actual_sha256 = hex::encode(hasher.finalize());
    if bytes != part.bytes || actual_sha256 != part.sha256 {
        return Err(TransferError::SourceChanged {
            location: store.describe(&part.key),
            expected_bytes: part.bytes,
            expected_sha256: part.sha256.clone(),
            actual_bytes: bytes,
            actual_sha256,
        });
    }
    Ok(())
}

/// Reads the source in chunks of [`READ_CHUNK_BYTES`], checks its size and
/// hash against the manifest, and forwards chunks; the last item is an error
/// if the source failed or did not match.
async fn read_and_verify<R: ObjectReader>(
    mut reader: R,
    expected: PartSummary,
    location: String,
    sender: mpsc::Sender<Result<Bytes, TransferError>>,
) {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut pending = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        let chunk = match reader.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                let _ = sender.send(Err(TransferError::Read(error))).await;
                return;
            }
        };
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        if pending.len() >= READ_CHUNK_BYTES {
            let full = pending.split().freeze();
            pending.reserve(READ_CHUNK_BYTES);
            if sender.send(Ok(full)).await.is_err() {
                return;
            }
        }
    }
    let actual_sha256 = hex::encode(hasher.finalize());
    if bytes != expected.bytes || actual_sha256 != expected.sha256 {
        let _ = sender
            .send(Err(TransferError::SourceChanged {
                location,
                expected_bytes: expected.bytes,
                expected_sha256: expected.sha256,
                actual_bytes: bytes,
                actual_sha256,
            }))
            .await;
        return;
    }
    if !pending.is_empty() {
        let _ = sender.send(Ok(pending.freeze())).await;
    }
}

async fn copy_unchanged<D: ObjectSink>(
    target: &D,
    transfer: PartTransfer<'_>,
    mut receiver: mpsc::Receiver<Result<Bytes, TransferError>>,
) -> Result<TransferredPart, TransferError> {
    let mut upload = target
        .start_upload(transfer.target_key, transfer.target_encoding.content_type())
        .await
        .map_err(TransferError::Write)?;
    while let Some(item) = receiver.recv().await {
        let written = match item {
            Ok(chunk) => upload.write(chunk).await.map_err(TransferError::Write),
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            drop(receiver);
            if let Err(abort_error) = upload.abort().await {
                tracing::warn!(target = %target.describe(transfer.target_key), error = %abort_error, "could not abort the upload after a failure");
            }
            return Err(error);
        }
    }
    let receipt = upload.finish().await.map_err(TransferError::Write)?;
    let summary = PartSummary {
        key: transfer.target_key.to_owned(),
        rows: transfer.source.rows,
        bytes: transfer.source.bytes,
        sha256: transfer.source.sha256.clone(),
    };
    Ok(TransferredPart { summary, receipt })
}

async fn convert<D: ObjectSink>(
    target: &D,
    transfer: PartTransfer<'_>,
    location: String,
    receiver: mpsc::Receiver<Result<Bytes, TransferError>>,
) -> Result<TransferredPart, TransferError> {
    let PartTransfer { kind, columns, source, source_encoding, target_key, target_encoding } = transfer;
    let expected_rows = source.rows;
    let produce_location = location.clone();
    let produced = upload_from_blocking(target, target_key, target_encoding.content_type(), move |out| {
        let input = ChannelReader { receiver, current: Bytes::new(), failure: None };
        let result = reencode(kind, columns, source_encoding, target_encoding, input, out, &produce_location);
        result.map_err(ProduceError)
    })
    .await;
    let ((rows, bytes, sha256), receipt) = match produced {
        Ok(produced) => produced,
        Err(StreamedUploadError::Store(error)) => return Err(TransferError::Write(error)),
        Err(StreamedUploadError::Produce(ProduceError(error))) => return Err(error),
    };
    if rows != expected_rows {
        return Err(TransferError::Convert {
            location,
            reason: format!("read {rows} rows but the run manifest lists {expected_rows}"),
        });
    }
    Ok(TransferredPart { summary: PartSummary { key: target_key.to_owned(), rows, bytes, sha256 }, receipt })
}

/// Staging parts are text, in an encoding [`PartWriter`] writes.
fn check_source_encoding(encoding: Encoding, location: &str) -> Result<(), TransferError> {
    if encoding.format.is_text() && encoding.check().is_ok() {
        return Ok(());
    }
    Err(TransferError::SourceEncoding {
        location: location.to_owned(),
        format: encoding.format,
        compression: encoding.compression,
    })
}

/// A [`TransferError`] as the error type of a blocking producer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ProduceError(TransferError);

/// What to do after an item: go on, or stop parsing (the rest of the part is
/// still read, so that its size and hash are checked).
enum ItemFlow {
    Continue,
    SkipRest,
}

/// Parses the lines of a part in `source` encoding and hands each item to
/// `each`, until it says to skip the rest; then reads on to the end without
/// parsing. A failure of the reader (a part that does not match the run
/// manifest) is returned as such, also when it shows in the skipped rest.
fn for_each_item(
    kind: ReportKind,
    columns: Columns,
    source: Encoding,
    input: &mut ChannelReader,
    location: &str,
    mut each: impl FnMut(ReportItem) -> Result<ItemFlow, TransferError>,
) -> Result<(), TransferError> {
    check_source_encoding(source, location)?;
    let read_failure = |error: io::Error, input: &mut ChannelReader| {
        input
            .failure
            .take()
            .unwrap_or_else(|| TransferError::Convert { location: location.to_owned(), reason: error.to_string() })
    };
    let mut parser = LineParser::new(kind, source.format, columns);
    let mut line = Vec::with_capacity(128);
    let mut number = 0u64;
    let mut parsing = true;
    let outcome = {
        let decoded: Box<dyn Read + '_> = match source.compression {
            Compression::Gzip => Box::new(MultiGzDecoder::new(&mut *input)),
            // `check_source_encoding` leaves only `none` here.
            Compression::None | Compression::Zstd | Compression::Snappy => Box::new(&mut *input),
        };
        let mut lines = io::BufReader::with_capacity(256 * 1024, decoded);
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(error) => break Err(error),
            }
            if !parsing {
                continue;
            }
            number += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            match parser.parse(text) {
                Ok(Some(item)) => {
                    if let ItemFlow::SkipRest = each(item)? {
                        parsing = false;
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(TransferError::Malformed { location: location.to_owned(), line: number, reason })
                }
            }
        }
    };
    if let Err(error) = outcome {
        return Err(read_failure(error, input));
    }
    if parsing {
        parser.finish().map_err(|reason| TransferError::Malformed {
            location: location.to_owned(),
            line: number,
            reason,
        })?;
    }
    Ok(())
}

/// Parses every line of a part in `source` encoding and writes it in
/// `target` encoding; returns rows, bytes and SHA-256 of what was written.
fn reencode<W: io::Write + Send>(
    kind: ReportKind,
    columns: Columns,
    source: Encoding,
    target: Encoding,
    mut input: ChannelReader,
    out: W,
    location: &str,
) -> Result<(u64, u64, String), TransferError> {
    if target.format == Format::Parquet {
        let parquet_error =
            |e: ParquetPartError| TransferError::Convert { location: location.to_owned(), reason: e.to_string() };
        let mut writer = ParquetPartWriter::new(kind, target, columns, out).map_err(parquet_error)?;
        for_each_item(kind, columns, source, &mut input, location, |item| {
            writer.push(item).map_err(parquet_error)?;
            Ok(ItemFlow::Continue)
        })?;
        let (rows, bytes, sha256, _) = writer.finish().map_err(parquet_error)?;
        return Ok((rows, bytes, sha256));
    }
    let write_error = |e: io::Error| TransferError::Convert { location: location.to_owned(), reason: e.to_string() };
    let mut writer = PartWriter::with_columns(kind, target, columns, out).map_err(write_error)?;
    for_each_item(kind, columns, source, &mut input, location, |item| {
        writer.push(item).map_err(write_error)?;
        Ok(ItemFlow::Continue)
    })?;
    let (rows, bytes, sha256, _) = writer.finish().map_err(write_error)?;
    Ok((rows, bytes, sha256))
}

/// Calls `each` with every item of the parts in order, on a blocking thread
/// that owns `state` (returned at the end), each part read and checked
/// against the run manifest as it passes. Memory: a few chunks and `state`.
/// An item an error-free `each` accepted may belong to a part that turns out
/// not to match its manifest: the caller discards `state` on any error.
pub async fn scan_items<S: ObjectStore, T: Send + 'static>(
    store: &S,
    parts: &[PartSummary],
    encoding: Encoding,
    kind: ReportKind,
    columns: Columns,
    mut state: T,
    each: fn(&mut T, ReportItem) -> io::Result<()>,
) -> Result<T, TransferError> {
    for part in parts {
        let location = store.describe(&part.key);
        let reader = store.open(&part.key).await.map_err(TransferError::Read)?;
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let read_task = tokio::spawn(read_and_verify(reader, part.clone(), location.clone(), sender));
        let scanned = tokio::task::spawn_blocking(move || {
            let mut input = ChannelReader { receiver, current: Bytes::new(), failure: None };
            let result = for_each_item(kind, columns, encoding, &mut input, &location, |item| {
                each(&mut state, item)
                    .map_err(|e| TransferError::Convert { location: location.clone(), reason: e.to_string() })?;
                Ok(ItemFlow::Continue)
            });
            result.map(|()| state)
        })
        .await
        .expect("the item scanner panicked");
        let _ = read_task.await;
        state = scanned?;
    }
    Ok(state)
}

/// The first `limit` items of a report, from its parts in order, each part
/// read to its end and checked against the run manifest (bytes and SHA-256)
/// before any item of it is returned. Memory holds the items returned and a
/// few chunks.
pub async fn read_top_items<S: ObjectStore>(
    store: &S,
    parts: &[PartSummary],
    encoding: Encoding,
    kind: ReportKind,
    limit: u64,
) -> Result<Vec<ReportItem>, TransferError> {
    let mut items: Vec<ReportItem> = Vec::with_capacity(usize::try_from(limit.min(1 << 20)).unwrap_or(0));
    for part in parts {
        if items.len() as u64 >= limit {
            break;
        }
        let location = store.describe(&part.key);
        let reader = store.open(&part.key).await.map_err(TransferError::Read)?;
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let read_task = tokio::spawn(read_and_verify(reader, part.clone(), location.clone(), sender));
        let wanted = limit - items.len() as u64;
        let parsed = tokio::task::spawn_blocking(move || {
            let mut input = ChannelReader { receiver, current: Bytes::new(), failure: None };
            let mut found = Vec::new();
            for_each_item(kind, Columns::Ranked, encoding, &mut input, &location, |item| {
                found.push(item);
                Ok(if found.len() as u64 >= wanted { ItemFlow::SkipRest } else { ItemFlow::Continue })
            })
            .map(|()| found)
        })
        .await
        .expect("the item parser panicked");
        let _ = read_task.await;
        items.extend(parsed?);
    }
    Ok(items)
}

/// Blocking `Read` over the chunks the reader task forwards. A failure of
/// the reader task is kept aside so the caller reports it, not the I/O error
/// it turns into.
struct ChannelReader {
    receiver: mpsc::Receiver<Result<Bytes, TransferError>>,
    current: Bytes,
    failure: Option<TransferError>,
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => {
                    let message = error.to_string();
                    self.failure = Some(error);
                    return Err(io::Error::other(message));
                }
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Reads the lines of a part written by [`PartWriter`] back into items.
struct LineParser {
    format: Format,
    columns: Columns,
    /// `{"trackId":` and so on.
    object_start: Vec<u8>,
    id_field: &'static str,
    /// For JSON: whether `[` and `]` were seen.
    opened: bool,
    closed: bool,
    /// For TSV: whether the header was seen.
    header_seen: bool,
}

impl LineParser {
    fn new(kind: ReportKind, format: Format, columns: Columns) -> Self {
        Self {
            format,
            columns,
            object_start: format!("{{\"{}\":", kind.id_field()).into_bytes(),
            id_field: kind.id_field(),
            opened: false,
            closed: false,
            header_seen: false,
        }
    }

    /// The item on `line`, `None` for a structural line (`[`, `]`, header).
    fn parse(&mut self, line: &[u8]) -> Result<Option<ReportItem>, String> {
        match self.format {
            Format::Json => {
                if !self.opened {
                    return if line == b"[" {
                        self.opened = true;
                        Ok(None)
                    } else {
                        Err("a JSON part must start with a line holding only '['".to_owned())
                    };
                }
                if self.closed {
                    return Err("text after the closing ']'".to_owned());
                }
                if line == b"]" {
                    self.closed = true;
                    return Ok(None);
                }
                self.parse_object(line.strip_suffix(b",").unwrap_or(line)).map(Some)
            }
            Format::Jsonl => self.parse_object(line).map(Some),
            Format::Parquet => Err("a Parquet file has no lines".to_owned()),
            Format::Tsv => {
                if !self.header_seen {
                    let header = match self.columns {
                        Columns::Ranked => format!("{}\tsearchRank\tsearchModifier", self.id_field),
                        Columns::IdOnly => self.id_field.to_owned(),
                    };
                    return if line == header.as_bytes() {
                        self.header_seen = true;
                        Ok(None)
                    } else {
                        Err(format!("expected the header line {header:?}"))
                    };
                }
                if self.columns == Columns::IdOnly {
                    return Ok(Some(id_only(parse_number(line, self.id_field)?)));
                }
                let mut fields = line.split(|&b| b == b'\t');
                let (Some(id), Some(rank), Some(modifier), None) =
                    (fields.next(), fields.next(), fields.next(), fields.next())
                else {
                    return Err("expected three tab-separated fields".to_owned());
                };
                Ok(Some(ReportItem {
                    id: parse_number(id, self.id_field)?,
                    search_rank: parse_number(rank, "searchRank")?,
                    modifier_hundredths: parse_modifier(modifier)?,
                }))
            }
        }
    }

    fn parse_object(&self, line: &[u8]) -> Result<ReportItem, String> {
        if self.columns == Columns::IdOnly {
            let id = line
                .strip_prefix(self.object_start.as_slice())
                .and_then(|rest| rest.strip_suffix(b"}"))
                .ok_or_else(|| format!("expected {{\"{}\":<integer>}}", self.id_field))?;
            return Ok(id_only(parse_number(id, self.id_field)?));
        }
        let malformed = || {
            format!("expected {{\"{}\":<integer>,\"searchRank\":<integer>,\"searchModifier\":<number>}}", self.id_field)
        };
        let rest = line.strip_prefix(self.object_start.as_slice()).ok_or_else(malformed)?;
        let rest = rest.strip_suffix(b"}").ok_or_else(malformed)?;
        let (id, rest) = split_once(rest, b",\"searchRank\":").ok_or_else(malformed)?;
        let (rank, modifier) = split_once(rest, b",\"searchModifier\":").ok_or_else(malformed)?;
        Ok(ReportItem {
            id: parse_number(id, self.id_field)?,
            search_rank: parse_number(rank, "searchRank")?,
            modifier_hundredths: parse_modifier(modifier)?,
        })
    }

    /// Checks the part was complete.
    fn finish(&self) -> Result<(), String> {
        match self.format {
            Format::Json if !(self.opened && self.closed) => {
                Err("the JSON array is not closed: the part is truncated".to_owned())
            }
            Format::Tsv if !self.header_seen => Err("the TSV part has no header line".to_owned()),
            _ => Ok(()),
        }
    }
}

/// The row of an id-only part, as a report item without rank or modifier.
fn id_only(id: i64) -> ReportItem {
    ReportItem { id, search_rank: 0, modifier_hundredths: 0 }
}

fn split_once<'a>(text: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = text.windows(separator.len()).position(|window| window == separator)?;
    Some((&text[..at], &text[at + separator.len()..]))
}

fn parse_number<T: std::str::FromStr>(text: &[u8], field: &str) -> Result<T, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{field} {:?} is not an integer in range", String::from_utf8_lossy(text)))
}

/// `searchModifier` text (`0.07`, `1.0`) as hundredths.
fn parse_modifier(text: &[u8]) -> Result<u8, String> {
    let invalid = || format!("searchModifier {:?} is not a number from 0 to 1", String::from_utf8_lossy(text));
    let value: f64 = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or_else(invalid)?;
    let hundredths = (value * 100.0).round();
    if !(0.0..=100.0).contains(&hundredths) {
        return Err(invalid());
    }
    Ok(hundredths as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDirStore;

    fn items(count: u64) -> Vec<ReportItem> {
        (0..count)
            .map(|i| ReportItem {
                id: (i as i64 * 7919) - 1000,
                search_rank: i + 1,
                modifier_hundredths: (100 - (i * 100 / count.max(1))) as u8,
            })
            .collect()
    }

    fn encode(kind: ReportKind, encoding: Encoding, items: &[ReportItem]) -> (Vec<u8>, u64, u64, String) {
        let mut writer = PartWriter::new(kind, encoding, Vec::new()).unwrap();
        for &item in items {
            writer.push(item).unwrap();
        }
        let (rows, bytes, sha, out) = writer.finish().unwrap();
        (out, rows, bytes, sha)
    }

    async fn stage(
        store: &LocalDirStore,
        key: &str,
        kind: ReportKind,
        encoding: Encoding,
        items: &[ReportItem],
    ) -> PartSummary {
        let (body, rows, bytes, sha256) = encode(kind, encoding, items);
        store.put(key, Bytes::from(body), "application/octet-stream").await.unwrap();
        PartSummary { key: key.to_owned(), rows, bytes, sha256 }
    }

    const JSON: Encoding = Encoding { format: Format::Json, compression: Compression::None };

    fn all_encodings() -> Vec<Encoding> {
        let mut all = Vec::new();
        for format in [Format::Json, Format::Jsonl, Format::Tsv] {
            for compression in [Compression::None, Compression::Gzip] {
                all.push(Encoding { format, compression });
            }
        }
        all
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_encoding_converts_to_every_other_byte_for_byte() {
        let (_dir, store) = LocalDirStore::in_temp_dir("transfer-convert");
        let items = items(3000);
        for (i, source_encoding) in all_encodings().into_iter().enumerate() {
            let kind = ReportKind::ALL[i % 3];
            let source_key = format!("in/{i}.{}", source_encoding.extension());
            let source = stage(&store, &source_key, kind, source_encoding, &items).await;
            for target_encoding in all_encodings() {
                let target_key = format!("out/{i}/part.{}", target_encoding.extension());
                let moved = transfer_part(
                    &store,
                    &store,
                    PartTransfer {
                        kind,
                        columns: Columns::Ranked,
                        source: &source,
                        source_encoding,
                        target_key: &target_key,
                        target_encoding,
                    },
                )
                .await
                .unwrap()
                .summary;
                let (expected, rows, bytes, sha256) = encode(kind, target_encoding, &items);
                let written = store.get(&target_key).await.unwrap();
                if target_encoding.compression == Compression::None {
                    assert_eq!(written.as_ref(), expected.as_slice(), "{source_encoding:?} -> {target_encoding:?}");
                }
                assert_eq!(moved.rows, rows);
                assert_eq!(moved.bytes, written.len() as u64);
                assert_eq!(moved.sha256, hex::encode(Sha256::digest(&written)));
                if target_encoding.compression == Compression::None {
                    assert_eq!((moved.bytes, moved.sha256.as_str()), (bytes, sha256.as_str()));
                }
            }
        }
    }

    /// Every row of a Parquet file as items, through the parquet crate's row reader.
    fn parquet_items(file: Bytes, columns: Columns) -> Vec<ReportItem> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::record::Field;
        let reader = SerializedFileReader::new(file).unwrap();
        reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                let fields: Vec<Field> = row.get_column_iter().map(|(_, f)| f.clone()).collect();
                match (columns, fields.as_slice()) {
                    (Columns::IdOnly, [Field::Long(id)]) => id_only(*id),
                    (Columns::Ranked, [Field::Long(id), Field::Long(rank), Field::Double(modifier)]) => ReportItem {
                        id: *id,
                        search_rank: *rank as u64,
                        modifier_hundredths: (modifier * 100.0).round() as u8,
                    },
                    other => panic!("unexpected row {other:?}"),
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_text_encoding_converts_to_parquet_row_for_row() {
        let (_dir, store) = LocalDirStore::in_temp_dir("transfer-parquet");
        let items = items(3000);
        let removed: Vec<ReportItem> = items.iter().map(|i| id_only(i.id)).collect();
        for (i, source_encoding) in all_encodings().into_iter().enumerate() {
            let kind = ReportKind::ALL[i % 3];
            for (columns, rows) in [(Columns::Ranked, &items), (Columns::IdOnly, &removed)] {
                let source_key = format!("in/{i}-{columns:?}.{}", source_encoding.extension());
                let (body, count, bytes, sha256) = {
                    let mut writer = PartWriter::with_columns(kind, source_encoding, columns, Vec::new()).unwrap();
                    for &item in rows.iter() {
                        writer.push(item).unwrap();
                    }
                    let (count, bytes, sha, out) = writer.finish().unwrap();
                    (out, count, bytes, sha)
                };
                store.put(&source_key, Bytes::from(body), "application/octet-stream").await.unwrap();
                let source = PartSummary { key: source_key, rows: count, bytes, sha256 };
                for compression in [Compression::Zstd, Compression::Snappy] {
                    let target_encoding = Encoding { format: Format::Parquet, compression };
                    let target_key = format!("out/{i}-{columns:?}-{compression}.parquet");
                    let moved = transfer_part(
                        &store,
                        &store,
                        PartTransfer {
                            kind,
                            columns,
                            source: &source,
                            source_encoding,
                            target_key: &target_key,
                            target_encoding,
                        },
                    )
                    .await
                    .unwrap()
                    .summary;
                    let written = store.get(&target_key).await.unwrap();
                    assert_eq!(&written[..4], b"PAR1", "{source_encoding:?} -> {target_encoding:?}");
                    assert_eq!(moved.rows, rows.len() as u64);
                    assert_eq!(moved.bytes, written.len() as u64);
                    assert_eq!(moved.sha256, hex::encode(Sha256::digest(&written)));
                    assert_eq!(&parquet_items(written, columns), rows, "{source_encoding:?} -> {target_encoding:?}");
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_listed_as_parquet_is_refused_as_permanent_before_any_read() {
        let (_dir, store) = LocalDirStore::in_temp_dir("transfer-parquet-source");
        let source = PartSummary { key: "reports/a.parquet".into(), rows: 1, bytes: 1, sha256: "0".repeat(64) };
        let parquet = Encoding { format: Format::Parquet, compression: Compression::Zstd };
        let err = transfer_part(
            &store,
            &store,
            PartTransfer {
                kind: ReportKind::Track,
                columns: Columns::Ranked,
                source: &source,
                source_encoding: parquet,
                target_key: "out/a.json",
                target_encoding: JSON,
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, TransferError::SourceEncoding { .. }) && err.is_permanent(), "{err}");
        assert!(err.to_string().contains("reports/a.parquet") && err.to_string().contains("parquet"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unchanged_copy_is_identical_and_keeps_the_manifest_figures() {
        let (_dir, store) = LocalDirStore::in_temp_dir("transfer-copy");
        let source = stage(&store, "reports/a.json", ReportKind::Track, JSON, &items(70_000)).await;
        let moved = transfer_part(
            &store,
            &store,
            PartTransfer {
                kind: ReportKind::Track,
                columns: Columns::Ranked,
                source: &source,
                source_encoding: JSON,
                target_key: "out/a.json",
                target_encoding: JSON,
            },
        )
        .await
        .unwrap()
        .summary;
        assert_eq!(store.get("out/a.json").await.unwrap(), store.get("reports/a.json").await.unwrap());
        assert_eq!((moved.rows, moved.bytes, moved.sha256), (source.rows, source.bytes, source.sha256));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_that_differs_from_the_manifest_publishes_nothing() {
        let (_dir, store) = LocalDirStore::in_temp_dir("transfer-changed");
        let mut source = stage(&store, "reports/a.json", ReportKind::Track, JSON, &items(5000)).await;
        source.sha256 = "0".repeat(64);
        for target_encoding in [JSON, Encoding { format: Format::Tsv, compression: Compression::Gzip }] {
            let err = transfer_part(
                &store,
                &store,
                PartTransfer {
                    kind: ReportKind::Track,
                    columns: Columns::Ranked,
                    source: &source,
                    source_encoding: JSON,
                    target_key: "out/a",
                    target_encoding,
                },
            )
            .await
            .unwrap_err();
            assert!(matches!(err, TransferError::SourceChanged { .. }), "{err}");
            assert!(err.is_permanent(), "a staging part that changed can never be delivered");
            assert!(err.to_string().contains("reports/a.json"), "{err}");
            assert!(store.list("out/").await.unwrap().is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_or_truncated_source_names_the_line_and_publishes_nothing() {
        let (_dir, store) = LocalDirStore::in_temp_dir("transfer-malformed");
        let tsv = Encoding { format: Format::Tsv, compression: Compression::None };
        let cases: [(&str, &[u8], &str); 4] = [
            (
                "bad-object",
                b"[\n{\"trackId\":1,\"searchRank\":1,\"searchModifier\":1.0},\n{\"trackId\":x}\n]\n",
                "line 3",
            ),
            ("truncated", b"[\n{\"trackId\":1,\"searchRank\":1,\"searchModifier\":1.0},\n", "truncated"),
            ("modifier", b"[\n{\"trackId\":1,\"searchRank\":1,\"searchModifier\":7.5}\n]\n", "searchModifier"),
            ("no-open", b"{\"trackId\":1,\"searchRank\":1,\"searchModifier\":1.0}\n", "line 1"),
        ];
        for (name, body, expected) in cases {
            let key = format!("reports/{name}.json");
            store.put(&key, Bytes::from_static(body), "application/json").await.unwrap();
            let source = PartSummary {
                key: key.clone(),
                rows: 2,
                bytes: body.len() as u64,
                sha256: hex::encode(Sha256::digest(body)),
            };
            let target_key = format!("out/{name}.tsv");
            let err = transfer_part(
                &store,
                &store,
                PartTransfer {
                    kind: ReportKind::Track,
                    columns: Columns::Ranked,
                    source: &source,
                    source_encoding: JSON,
                    target_key: &target_key,
                    target_encoding: tsv,
                },
            )
            .await
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expected) && text.contains(&key), "{name}: {text}");
            assert!(store.list("out/").await.unwrap().is_empty(), "{name}");
        }
    }
}
