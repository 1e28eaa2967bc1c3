//! Serialises ranked items into report parts (docs/design.md, "Reports and
//! layouts") — JSON array, JSON lines or TSV, optionally gzip — while
//! counting rows and bytes and hashing the bytes exactly as stored (after
//! compression) with SHA-256. Parquet parts are written by
//! [`crate::parquet_writer`], which counts and hashes with the same writer.
//!
//! This is on the hot path (hundreds of millions of lines per run), so lines
//! are assembled by hand into a reused buffer with `itoa`, and the modifier,
//! which only takes 101 values, comes from a precomputed table. The bytes
//! are identical to what `serde_json` prints for the same item; the tests
//! check that.

use std::io::{self, Write};
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Compression, Encoding, Format, ReportKind};

/// One line of a report, as consumers see it. The `id` is written under the
/// report's own id field name (`trackId`, `masterArtistId`, `productId`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportItem {
    pub id: i64,
    pub search_rank: u64,
    /// `searchModifier` in hundredths (0..=100).
    pub modifier_hundredths: u8,
}

impl ReportItem {
    pub fn search_modifier(&self) -> f64 {
        f64::from(self.modifier_hundredths) / 100.0
    }
}

/// Which fields the rows of a part carry: the three of a report (id,
/// `searchRank`, `searchModifier`), or the id alone (the `removed-NNN` files
/// of a delta, docs/design.md, "Delta feeds").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Columns {
    #[default]
    Ranked,
    IdOnly,
}

/// What a finished part holds, for manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartSummary {
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The text of `hundredths / 100` as serde_json (ryu) prints an f64:
/// "0.0", "0.07", "0.5", "1.0".
fn modifier_text(hundredths: u8) -> &'static [u8] {
    static TABLE: OnceLock<Vec<String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=100u8)
            .map(|h| {
                let value = f64::from(h) / 100.0;
                let text = format!("{value:?}");
                debug_assert!(text.contains('.'), "{text}");
                text
            })
            .collect()
    })[usize::from(hundredths)]
    .as_bytes()
}

/// Counts and hashes the bytes that reach the underlying writer.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The bytes that went through, their hex SHA-256, and the writer.
    pub(crate) fn finish(self) -> (u64, String, W) {
        (self.bytes, hex::encode(self.hasher.finalize()), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(data)?;
        self.hasher.update(&data[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Sink<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(GzEncoder<HashingWriter<W>>),
}

/// Writes one report part into `W`.
pub struct PartWriter<W: Write> {
    sink: Sink<W>,
    format: Format,
    columns: Columns,
    id_field: &'static [u8],
    line: Vec<u8>,
    rows: u64,
}

/// Lines are gathered into a buffer of about this size before each write.
pub const LINE_BUFFER_BYTES: usize = 256 * 1024;

/// Formats `items` as a part of `kind` in `format` holding `rows_before`
/// rows before them would hold them (the separator before the first), into
/// `out`: exactly what [`PartWriter::push`] writes for them. For parts
/// formatted a chunk at a time on other threads.
pub fn format_items(kind: ReportKind, format: Format, items: &[ReportItem], rows_before: u64, out: &mut Vec<u8>) {
    let id_field = kind.id_field().as_bytes();
    for (index, &item) in items.iter().enumerate() {
        format_item(format, Columns::Ranked, id_field, item, rows_before + index as u64, out);
    }
}

/// One item's text after `rows_before` rows of its part.
#[inline]
fn format_item(
    format: Format,
    columns: Columns,
    id_field: &[u8],
    item: ReportItem,
    rows_before: u64,
    line: &mut Vec<u8>,
) {
    let mut numbers = itoa::Buffer::new();
    let ranked = columns != Columns::IdOnly;
    match format {
        // `with_columns` refuses Parquet: the arm only completes the match.
        Format::Json | Format::Jsonl | Format::Parquet => {
            if format == Format::Json && rows_before > 0 {
                line.extend_from_slice(b",\n");
            }
            line.extend_from_slice(b"{\"");
            line.extend_from_slice(id_field);
            line.extend_from_slice(b"\":");
            line.extend_from_slice(numbers.format(item.id).as_bytes());
            if ranked {
                line.extend_from_slice(b",\"searchRank\":");
                line.extend_from_slice(numbers.format(item.search_rank).as_bytes());
                line.extend_from_slice(b",\"searchModifier\":");
                line.extend_from_slice(modifier_text(item.modifier_hundredths));
            }
            line.push(b'}');
            if format == Format::Jsonl {
                line.push(b'\n');
            }
        }
        Format::Tsv => {
            line.extend_from_slice(numbers.format(item.id).as_bytes());
            if ranked {
                line.push(b'\t');
                line.extend_from_slice(numbers.format(item.search_rank).as_bytes());
                line.push(b'\t');
                line.extend_from_slice(modifier_text(item.modifier_hundredths));
            }
            line.push(b'\n');
        }
    }
}

impl<W: Write> PartWriter<W> {
    /// Starts a part and writes its header (`[` or the TSV header line).
    pub fn new(kind: ReportKind, encoding: Encoding, inner: W) -> io::Result<Self> {
        Self::with_columns(kind, encoding, Columns::Ranked, inner)
    }

    /// Starts a part whose rows carry `columns`. A text format only, with
    /// `none` or `gzip`: anything else is `InvalidInput`.
    pub fn with_columns(kind: ReportKind, encoding: Encoding, columns: Columns, inner: W) -> io::Result<Self> {
        let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
        if !encoding.format.is_text() {
            return Err(invalid(format!("{} parts are not text: they are written by parquet_writer", encoding.format)));
        }
        let encoding = encoding.check().map_err(|e| invalid(e.to_string()))?;
        let hashing = HashingWriter::new(inner);
        let sink = match encoding.compression {
            Compression::Gzip => Sink::Gzip(GzEncoder::new(hashing, flate2::Compression::default())),
            Compression::None | Compression::Zstd | Compression::Snappy => Sink::Plain(hashing),
        };
        let mut writer = Self {
            sink,
            format: encoding.format,
            columns,
            id_field: kind.id_field().as_bytes(),
            line: Vec::with_capacity(LINE_BUFFER_BYTES + 256),
            rows: 0,
        };
        match writer.format {
            Format::Json => writer.line.extend_from_slice(b"[\n"),
            Format::Jsonl | Format::Parquet => {}
            Format::Tsv => {
                writer.line.extend_from_slice(writer.id_field);
                if columns == Columns::Ranked {
                    writer.line.extend_from_slice(b"\tsearchRank\tsearchModifier");
                }
                writer.line.push(b'\n');
            }
        }
        Ok(writer)
    }

    /// Appends one item (its id alone in a part of [`Columns::IdOnly`]).
    #[inline]
    pub fn push(&mut self, item: ReportItem) -> io::Result<()> {
        format_item(self.format, self.columns, self.id_field, item, self.rows, &mut self.line);
        self.rows += 1;
        if self.line.len() >= LINE_BUFFER_BYTES {
            self.flush_lines()?;
        }
        Ok(())
    }

    /// Appends `rows` items formatted elsewhere by [`format_items`] (with
    /// this part's rows so far as `rows_before`): the same bytes as pushing
    /// them one by one. Uncompressed parts only (`InvalidInput` for gzip):
    /// deflate's output depends on how its input is cut into writes.
    pub fn push_formatted(&mut self, bytes: &[u8], rows: u64) -> io::Result<()> {
        if matches!(self.sink, Sink::Gzip(_)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "items formatted elsewhere go into uncompressed parts only",
            ));
        }
        self.flush_lines()?;
        if let Sink::Plain(w) = &mut self.sink {
            w.write_all(bytes)?;
        }
        self.rows += rows;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn flush_lines(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(w) => w.write_all(&self.line)?,
            Sink::Gzip(w) => w.write_all(&self.line)?,
        }
        self.line.clear();
        Ok(())
    }

    /// Writes the closing bytes and returns the part's rows, bytes and
    /// SHA-256 (of the stored, possibly compressed, bytes) with the writer.
    pub fn finish(mut self) -> io::Result<(u64, u64, String, W)> {
        if self.format == Format::Json {
            self.line.extend_from_slice(if self.rows > 0 { b"\n]\n" } else { b"]\n" });
        }
        self.flush_lines()?;
        let hashing = match self.sink {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish()?,
        };
        let (bytes, sha256, inner) = hashing.finish();
        Ok((self.rows, bytes, sha256, inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn write_part(kind: ReportKind, encoding: Encoding, items: &[ReportItem]) -> (Vec<u8>, u64, u64, String) {
        let mut writer = PartWriter::new(kind, encoding, Vec::new()).unwrap();
        for &item in items {
            writer.push(item).unwrap();
        }
        let (rows, bytes, sha, out) = writer.finish().unwrap();
        (out, rows, bytes, sha)
    }

    fn sample_items() -> Vec<ReportItem> {
        (0..=100u8)
            .map(|h| ReportItem {
                id: i64::from(h) * 7919 - 300,
                search_rank: 101 - u64::from(h),
                modifier_hundredths: h,
            })
            .chain([ReportItem { id: i64::MAX, search_rank: u64::MAX, modifier_hundredths: 0 }])
            .chain([ReportItem { id: i64::MIN, search_rank: 1, modifier_hundredths: 100 }])
            .collect()
    }

    /// The item as serde_json prints it, fields in report order.
    fn serde_object(kind: ReportKind, item: &ReportItem) -> String {
        struct InOrder<'a>(ReportKind, &'a ReportItem);
        impl Serialize for InOrder<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry(self.0.id_field(), &self.1.id)?;
                map.serialize_entry("searchRank", &self.1.search_rank)?;
                map.serialize_entry("searchModifier", &((self.1.search_modifier() * 100.0).round() / 100.0))?;
                map.end()
            }
        }
        serde_json::to_string(&InOrder(kind, item)).unwrap()
    }

    #[test]
    fn json_lines_are_byte_identical_to_serde_json() {
        let items = sample_items();
        for kind in ReportKind::ALL {
            let (out, rows, _, _) =
                write_part(kind, Encoding { format: Format::Jsonl, compression: Compression::None }, &items);
            assert_eq!(rows, items.len() as u64);
            let expected: String = items.iter().map(|i| serde_object(kind, i) + "\n").collect();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn items_formatted_in_chunks_elsewhere_write_the_same_bytes() {
        let items = sample_items();
        for format in [Format::Json, Format::Jsonl, Format::Tsv] {
            let encoding = Encoding { format, compression: Compression::None };
            let whole = write_part(ReportKind::Artist, encoding, &items);
            let mut writer = PartWriter::new(ReportKind::Artist, encoding, Vec::new()).unwrap();
            for chunk in items.chunks(7) {
                let mut bytes = Vec::new();
                format_items(ReportKind::Artist, format, chunk, writer.rows(), &mut bytes);
                writer.push_formatted(&bytes, chunk.len() as u64).unwrap();
            }
            let (rows, bytes, sha, out) = writer.finish().unwrap();
            assert_eq!((out, rows, bytes, sha), whole, "{format:?}");
        }
        // Deflate's output depends on how its input is cut: gzip parts refuse.
        let gzip = Encoding { format: Format::Json, compression: Compression::Gzip };
        let mut writer = PartWriter::new(ReportKind::Artist, gzip, Vec::new()).unwrap();
        let error = writer.push_formatted(b"{}", 1).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn json_parts_are_an_array_with_one_object_per_line() {
        let items = sample_items();
        let (out, _, _, _) = write_part(ReportKind::Track, Encoding::default(), &items);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"["));
        assert_eq!(lines.last(), Some(&"]"));
        for (line, item) in lines[1..lines.len() - 1].iter().zip(&items) {
            assert_eq!(line.trim_end_matches(','), serde_object(ReportKind::Track, item));
        }
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.len(), items.len());
        assert_eq!(parsed[1]["searchModifier"].as_f64(), Some(0.01));
        assert_eq!(parsed[100]["searchModifier"].as_f64(), Some(1.0));
    }

    #[test]
    fn an_empty_json_part_is_an_empty_array() {
        let (out, rows, _, _) = write_part(ReportKind::Artist, Encoding::default(), &[]);
        assert_eq!(rows, 0);
        assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&out).unwrap().len(), 0);
    }

    #[test]
    fn tsv_has_a_header_with_the_three_field_names() {
        let items = [
            ReportItem { id: 42, search_rank: 1, modifier_hundredths: 100 },
            ReportItem { id: 7, search_rank: 2, modifier_hundredths: 5 },
        ];
        let (out, _, _, _) =
            write_part(ReportKind::Product, Encoding { format: Format::Tsv, compression: Compression::None }, &items);
        assert_eq!(String::from_utf8(out).unwrap(), "productId\tsearchRank\tsearchModifier\n42\t1\t1.0\n7\t2\t0.05\n");
    }

    #[test]
    fn id_only_parts_carry_the_id_field_alone() {
        let items = [
            ReportItem { id: 42, search_rank: 0, modifier_hundredths: 0 },
            ReportItem { id: -7, search_rank: 0, modifier_hundredths: 0 },
        ];
        let write = |format| {
            let mut writer = PartWriter::with_columns(
                ReportKind::Artist,
                Encoding { format, compression: Compression::None },
                Columns::IdOnly,
                Vec::new(),
            )
            .unwrap();
            for &item in &items {
                writer.push(item).unwrap();
            }
            String::from_utf8(writer.finish().unwrap().3).unwrap()
        };
        assert_eq!(write(Format::Json), "[\n{\"masterArtistId\":42},\n{\"masterArtistId\":-7}\n]\n");
        assert_eq!(write(Format::Jsonl), "{\"masterArtistId\":42}\n{\"masterArtistId\":-7}\n");
        assert_eq!(write(Format::Tsv), "masterArtistId\n42\n-7\n");
    }

    #[test]
    fn a_text_writer_refuses_parquet_and_mismatched_compressions() {
        for encoding in [
            Encoding { format: Format::Parquet, compression: Compression::Zstd },
            Encoding { format: Format::Tsv, compression: Compression::Snappy },
        ] {
            let error = PartWriter::new(ReportKind::Track, encoding, Vec::new()).err().expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        }
    }

    #[test]
    fn modifier_texts_are_what_ryu_prints() {
        for h in 0..=100u8 {
            let value = (f64::from(h) / 100.0 * 100.0).round() / 100.0;
            assert_eq!(modifier_text(h), ryu::Buffer::new().format(value).as_bytes(), "{h}");
        }
    }

    #[test]
    fn gzip_parts_decompress_to_the_plain_part_and_hash_the_stored_bytes() {
        let items = sample_items();
        let (plain, _, _, _) =
            write_part(ReportKind::Track, Encoding { format: Format::Tsv, compression: Compression::None }, &items);
        let (gz, rows, bytes, sha) =
            write_part(ReportKind::Track, Encoding { format: Format::Tsv, compression: Compression::Gzip }, &items);
        assert_eq!(rows, items.len() as u64);
        assert_eq!(bytes, gz.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&gz)));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut unzipped).unwrap();
        assert_eq!(unzipped, plain);
    }
}
