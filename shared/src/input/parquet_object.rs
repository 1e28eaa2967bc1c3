//! Reads one Parquet object of the input a row group at a time, so that a
//! catalogue written as a single large object (Spark's `coalesce(1)`, a
//! single-file Athena UNLOAD) costs memory in proportion to a few row
//! groups, not to the object. An object up to `whole_read_max_bytes` (by
//! default [`WHOLE_READ_MAX_BYTES`]) is fetched whole in one GET, as the
//! generator's files always were; a larger one by ranged GETs: the footer by
//! a suffix range, then, for each row group, the byte spans of the needed
//! column chunks only, [`ROW_GROUPS_IN_FLIGHT`] row groups at a time. Every
//! ranged GET after the first carries `If-Match` with the version (ETag) the
//! first one answered, and each answer's version is checked too, so an
//! object replaced mid-read fails the run ([`StoreError::Changed`]) instead
//! of mixing two versions.
//!
//! The footer is checked before it is trusted — the trailing magic, the
//! metadata length, and the byte span of every needed column chunk against
//! the object's size — so a truncated object or a corrupt footer is an error
//! naming the object (and the row group and column where it applies), never
//! a panic or a read past the end. This module fetches and checks bytes; it
//! does not interpret values (the ranking does), nor validate column types
//! beyond what [`super::locate_columns`] does for every input.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::future::try_join_all;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{ReaderProperties, ReaderPropertiesPtr};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedRowGroupReader;

use super::{decode_row_group, locate_columns, InputError, InputFile, InputPlace};
use crate::store::{ByteRange, ObjectStore, ObjectVersion};

/// Objects up to this size are read whole, in one GET: fewer requests for
/// the many ~100 MB files of a usual layout, and the memory is bounded all
/// the same (one object decoding, the next one arriving: at most ~2 × this).
/// Larger objects are read by ranged GETs of their row groups.
pub const WHOLE_READ_MAX_BYTES: u64 = 128 * 1024 * 1024;

/// Row groups of one object fetched at once by ranged GETs. With the
/// decoding queue (two row groups per thread) and the row groups being
/// decoded, this bounds what a ranged read holds: at 1,048,576 rows a row
/// group of the three catalogue columns is ~10–20 MB.
pub const ROW_GROUPS_IN_FLIGHT: usize = 4;

/// The suffix fetched first: the footer of a file of a few thousand row
/// groups fits; a longer footer costs one more GET.
const FOOTER_GUESS_BYTES: u64 = 64 * 1024;

/// Needed column chunks closer than this are fetched in one GET (the bytes
/// between them are read and ignored) rather than two.
const MERGE_GAP_BYTES: u64 = 64 * 1024;

/// "PAR1": the first and last four bytes of every (unencrypted) Parquet file.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
/// Metadata length (4 bytes, little-endian) and the magic.
const FOOTER_TAIL_BYTES: u64 = 8;

/// One Parquet object opened for reading: its footer, decoded and checked
/// once, and the object's bytes when it was small enough to fetch whole.
#[derive(Debug)]
pub struct ParquetObject {
    key: String,
    name: Arc<str>,
    metadata: Arc<ParquetMetaData>,
    /// Indices, in the file's schema, of the columns asked for, in that order.
    columns: Arc<[usize]>,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Whole(Arc<FetchedBytes>),
    Ranged { size: u64, version: ObjectVersion },
}

impl ParquetObject {
    /// Fetches and checks the footer of `file` (the whole object when it is
    /// at most `whole_read_max_bytes`), and locates `columns` in it.
    pub async fn open<S: ObjectStore>(
        store: &S,
        file: &InputFile,
        columns: &[&str],
        whole_read_max_bytes: u64,
    ) -> Result<Self, InputError> {
        let name: Arc<str> = store.describe(&file.key).into();
        let (metadata, data_end, source) = if file.size <= whole_read_max_bytes {
            let bytes = store.get(&file.key).await?;
            let metadata = ParquetMetaDataReader::new()
                .parse_and_finish(&bytes)
                .map_err(|e| unreadable(&name, None, None, e.to_string()))?;
            // The reader checked the tail: magic, and a length that fits.
            let size = bytes.len() as u64;
            let tail = &bytes[bytes.len() - FOOTER_TAIL_BYTES as usize..];
            let metadata_length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
            let data_end = size.saturating_sub(FOOTER_TAIL_BYTES + metadata_length);
            (metadata, data_end, Source::Whole(Arc::new(FetchedBytes { size, pieces: vec![(0, bytes)] })))
        } else {
            let footer = read_footer(store, &file.key, &name).await?;
            (footer.metadata, footer.data_end, Source::Ranged { size: footer.size, version: footer.version })
        };
        let column_indices = locate_columns(&name, &metadata, columns)?;
        let object =
            Self { key: file.key.clone(), name, metadata: Arc::new(metadata), columns: column_indices.into(), source };
        object.check_column_chunks(data_end)?;
        Ok(object)
    }

    /// How the object is described in messages (`s3://…`, a path).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn row_groups(&self) -> usize {
        self.metadata.num_row_groups()
    }

    /// The rows the footer says the object holds.
    pub fn rows(&self) -> u64 {
        u64::try_from(self.metadata.file_metadata().num_rows()).unwrap_or(0)
    }

    /// Whether the object is read by ranged GETs (it is larger than the
    /// whole-read limit).
    pub fn is_ranged(&self) -> bool {
        matches!(self.source, Source::Ranged { .. })
    }

    /// The bytes of `row_group`'s needed column chunks: already here for an
    /// object read whole, one ranged GET per span of adjacent chunks (all
    /// sent at once) otherwise.
    pub async fn fetch_row_group<S: ObjectStore>(
        &self,
        store: &S,
        row_group: usize,
    ) -> Result<RowGroupBytes, InputError> {
        let data = match &self.source {
            Source::Whole(bytes) => Arc::clone(bytes),
            Source::Ranged { size, version } => {
                let spans = merged_spans(self.chunk_spans(row_group));
                let fetches = spans.iter().map(|span| async move {
                    let range = ByteRange::Span { start: span.start, end: span.end };
                    let read = store.get_range(&self.key, range, Some(version)).await?;
                    let expected = span.end - span.start;
                    if read.start != span.start || read.body.len() as u64 != expected {
                        return Err(unreadable(
                            &self.name,
                            Some(row_group),
                            None,
                            format!(
                                "asked for bytes {}..{} of {size}, got {} bytes from {}: the object is shorter \
                                 than its footer says (truncated?)",
                                span.start,
                                span.end,
                                read.body.len(),
                                read.start
                            ),
                        ));
                    }
                    Ok((span.start, read.body))
                });
                let pieces = try_join_all(fetches).await?;
                Arc::new(FetchedBytes { size: *size, pieces })
            }
        };
        Ok(RowGroupBytes {
            file: Arc::clone(&self.name),
            metadata: Arc::clone(&self.metadata),
            columns: Arc::clone(&self.columns),
            row_group,
            data,
        })
    }

    /// Byte spans of the needed column chunks of `row_group`, unmerged.
    fn chunk_spans(&self, row_group: usize) -> Vec<Range<u64>> {
        let group = self.metadata.row_group(row_group);
        self.columns.iter().filter_map(|&index| chunk_span(group.column(index)).ok()).collect()
    }

    /// Every needed column chunk must lie between the leading magic and the
    /// footer: a footer that says otherwise is corrupt, or the object was cut
    /// short. Checked up front, so that no read goes past the end and the
    /// parquet reader (which asserts on negative offsets) never sees them.
    fn check_column_chunks(&self, data_end: u64) -> Result<(), InputError> {
        for row_group in 0..self.metadata.num_row_groups() {
            let group = self.metadata.row_group(row_group);
            for &index in self.columns.iter() {
                let name = group.column(index).column_descr().name();
                let span = chunk_span(group.column(index))
                    .map_err(|detail| unreadable(&self.name, Some(row_group), Some(name), detail))?;
                if span.start < PARQUET_MAGIC.len() as u64 || span.end > data_end {
                    return Err(unreadable(
                        &self.name,
                        Some(row_group),
                        Some(name),
                        format!(
                            "its footer puts the column chunk at bytes {}..{}, outside the data (bytes 4..{data_end}): \
                             corrupt footer, or the object was cut short",
                            span.start, span.end
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The bytes of one row group's needed column chunks (or of the whole
/// object), with the footer to decode them: ready for any thread.
#[derive(Debug, Clone)]
pub struct RowGroupBytes {
    file: Arc<str>,
    metadata: Arc<ParquetMetaData>,
    columns: Arc<[usize]>,
    row_group: usize,
    data: Arc<FetchedBytes>,
}

impl RowGroupBytes {
    /// How the object is described in messages.
    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub fn row_group(&self) -> usize {
        self.row_group
    }

    /// Bytes held for this row group (shared by every row group of an
    /// object read whole).
    pub fn fetched_bytes(&self) -> u64 {
        self.data.pieces.iter().map(|(_, piece)| piece.len() as u64).sum()
    }

    /// Decodes the columns the object was opened with, in that order, into
    /// caller-owned vectors, cleared first. INT32 columns are widened; a null
    /// or undecodable page is an error naming the place.
    pub fn decode_into(&self, decoded: &mut [Vec<i64>]) -> Result<(), InputError> {
        assert_eq!(self.columns.len(), decoded.len());
        let place = |column: Option<&str>| InputPlace {
            file: self.file.to_string(),
            row_group: Some(self.row_group),
            column: column.map(str::to_owned),
        };
        let group = self.metadata.row_group(self.row_group);
        let reader = SerializedRowGroupReader::new(
            Arc::clone(&self.data),
            group,
            self.metadata.page_index_for_row_group(self.row_group),
            reader_properties(),
        )
        .map_err(|e| InputError::Decode { place: place(None), detail: e.to_string() })?;
        decode_row_group(&reader, &self.columns, decoded, place)
    }
}

fn reader_properties() -> ReaderPropertiesPtr {
    Arc::new(ReaderProperties::builder().build())
}

/// A decoded footer of an object read by ranges.
pub(crate) struct Footer {
    pub(crate) metadata: ParquetMetaData,
    /// The object's size.
    pub(crate) size: u64,
    /// Where the footer starts: every column chunk ends at or before it.
    pub(crate) data_end: u64,
    /// The version every later range must come from.
    pub(crate) version: ObjectVersion,
}

/// Reads the footer by a suffix range (and, for a long footer, one more
/// range conditional on the first answer's version) and decodes it.
pub(crate) async fn read_footer<S: ObjectStore>(store: &S, key: &str, name: &Arc<str>) -> Result<Footer, InputError> {
    let tail = store.get_range(key, ByteRange::Suffix(FOOTER_GUESS_BYTES), None).await?;
    let size = tail.object_size;
    let minimum = PARQUET_MAGIC.len() as u64 + FOOTER_TAIL_BYTES;
    if size < minimum || tail.body.len() < FOOTER_TAIL_BYTES as usize {
        return Err(unreadable(
            name,
            None,
            None,
            format!("it is {size} bytes long, too short for a Parquet file (truncated?)"),
        ));
    }
    let last8 = &tail.body[tail.body.len() - FOOTER_TAIL_BYTES as usize..];
    if &last8[4..] != PARQUET_MAGIC {
        return Err(unreadable(
            name,
            None,
            None,
            format!(
                "it does not end with the Parquet magic PAR1 (the last 4 of its {size} bytes are {:02x?}): the \
                 object was cut short, or it is not Parquet",
                &last8[4..]
            ),
        ));
    }
    let metadata_length = u64::from(u32::from_le_bytes([last8[0], last8[1], last8[2], last8[3]]));
    if metadata_length + minimum > size {
        return Err(unreadable(
            name,
            None,
            None,
            format!(
                "its footer says the metadata is {metadata_length} bytes, more than the {size}-byte object holds: \
                 corrupt footer"
            ),
        ));
    }
    let footer_start = size - FOOTER_TAIL_BYTES - metadata_length;
    let metadata_bytes = if footer_start >= tail.start {
        let from = (footer_start - tail.start) as usize;
        tail.body.slice(from..tail.body.len() - FOOTER_TAIL_BYTES as usize)
    } else {
        let range = ByteRange::Span { start: footer_start, end: size - FOOTER_TAIL_BYTES };
        let rest = store.get_range(key, range, Some(&tail.version)).await?;
        if rest.body.len() as u64 != metadata_length {
            return Err(unreadable(
                name,
                None,
                None,
                format!("its {metadata_length}-byte footer came back as {} bytes (truncated?)", rest.body.len()),
            ));
        }
        rest.body
    };
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata_bytes).map_err(|e| {
        unreadable(name, None, None, format!("corrupt footer ({metadata_length} bytes of metadata): {e}"))
    })?;
    Ok(Footer { metadata, size, data_end: footer_start, version: tail.version })
}

/// A column chunk's bytes: from its dictionary page (or first data page) on,
/// `compressed_size` long. An error for negative offsets or sizes.
pub(crate) fn chunk_span(column: &parquet::file::metadata::ColumnChunkMetaData) -> Result<Range<u64>, String> {
    let start = column.dictionary_page_offset().unwrap_or_else(|| column.data_page_offset());
    let length = column.compressed_size();
    match (u64::try_from(start), u64::try_from(length)) {
        (Ok(start), Ok(length)) => Ok(start..start.saturating_add(length)),
        _ => Err(format!("its footer gives the column chunk offset {start} and size {length}: corrupt footer")),
    }
}

/// Sorts spans and joins those that overlap or lie within [`MERGE_GAP_BYTES`].
fn merged_spans(mut spans: Vec<Range<u64>>) -> Vec<Range<u64>> {
    spans.sort_by_key(|span| span.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end.saturating_add(MERGE_GAP_BYTES) => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

fn unreadable(name: &str, row_group: Option<usize>, column: Option<&str>, detail: String) -> InputError {
    InputError::Unreadable {
        place: InputPlace { file: name.to_owned(), row_group, column: column.map(str::to_owned) },
        detail,
    }
}

/// The parts of one object that were fetched, at their offsets: what the
/// parquet reader sees as the file. A read outside them is an error, not a
/// fetch: every span a row group needs is fetched before it is decoded.
#[derive(Debug)]
struct FetchedBytes {
    /// The whole object's size.
    size: u64,
    /// `(offset, bytes)`, not overlapping.
    pieces: Vec<(u64, Bytes)>,
}

impl FetchedBytes {
    /// The piece holding byte `start`, and where in it `start` is.
    fn piece_at(&self, start: u64) -> Result<(&Bytes, usize), ParquetError> {
        self.pieces
            .iter()
            .find(|(offset, piece)| *offset <= start && start < offset + piece.len() as u64)
            .map(|(offset, piece)| (piece, (start - offset) as usize))
            .ok_or_else(|| ParquetError::General(format!("byte {start} of the object was not fetched")))
    }
}

impl Length for FetchedBytes {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for FetchedBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let (piece, from) = self.piece_at(start)?;
        Ok(piece.slice(from..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (piece, from) = self.piece_at(start)?;
        if from + length > piece.len() {
            return Err(ParquetError::General(format!(
                "bytes {start}..{} of the object were not fetched",
                start + length as u64
            )));
        }
        Ok(piece.slice(from..from + length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_closer_than_the_gap_are_fetched_together() {
        let far = MERGE_GAP_BYTES + 1;
        let spans = vec![200..300, 0..100, 100 + MERGE_GAP_BYTES..150 + MERGE_GAP_BYTES, 400 + far * 3..500 + far * 3];
        assert_eq!(
            merged_spans(spans),
            vec![0..150 + MERGE_GAP_BYTES, 400 + far * 3..500 + far * 3],
            "0..100, 200..300 and the span a gap away merge; the far one stays apart"
        );
    }

    #[test]
    fn fetched_bytes_refuse_reads_outside_what_was_fetched() {
        let fetched = FetchedBytes {
            size: 1_000,
            pieces: vec![(100, Bytes::from_static(b"abcdef")), (500, Bytes::from_static(b"xyz"))],
        };
        assert_eq!(fetched.get_bytes(102, 3).unwrap(), Bytes::from_static(b"cde"));
        assert_eq!(fetched.get_bytes(500, 3).unwrap(), Bytes::from_static(b"xyz"));
        assert!(fetched.get_bytes(104, 3).is_err(), "runs past the piece");
        assert!(fetched.get_bytes(99, 1).is_err(), "before the piece");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut fetched.get_read(503 - 3).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, "xyz");
        assert_eq!(Length::len(&fetched), 1_000);
    }
}
