//! Parquet report parts (docs/design.md, "Reports and layouts"): each part
//! a standalone Parquet file with typed, required columns — the id as
//! INT64 under its report's field name, `searchRank` INT64 and
//! `searchModifier` DOUBLE, or the id alone for a delta's `removed` files —
//! its column chunks compressed by Parquet itself with zstd or snappy. Like
//! [`crate::report_writer`], it counts rows and bytes and hashes the bytes
//! as stored with SHA-256, for the destination manifest.
//!
//! Written streaming into any `Write`: rows are gathered column by column
//! for one row group of [`ROW_GROUP_ROWS`] (about 17 MB of values), then
//! the group's pages are encoded, compressed and passed on, so memory is one
//! row group whatever the part's size. It must not buffer a whole part, and
//! it does not read Parquet (the input's decoder is in [`crate::input`]).
//!
//! Encodings are chosen for what every engine reads (data pages of format
//! version 1): PLAIN for the id and `searchRank`, whose values are nearly
//! all distinct, so a dictionary would only be built to be dropped; a
//! dictionary for `searchModifier`, which takes at most 101 values.
//! Statistics and the page index are written, so engines can skip pages.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::data_type::{DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::types::{ColumnPath, Type as SchemaType};

use crate::domain::{Compression, Encoding, EncodingMismatch, Format, ReportKind};
use crate::report_writer::{Columns, HashingWriter, ReportItem};

/// Rows per row group: large enough that engines read columns in long
/// runs, small enough that a group's values (8 + 8 + 1 bytes a row) stay
/// far below the delivery's memory budget.
pub const ROW_GROUP_ROWS: usize = 1_000_000;

/// zstd's level 1 (the parquet crate's default): on 10M rows level 3 saved
/// 3% of the bytes for more CPU on the delivery's one conversion thread
/// (docs/benchmarks.md, "Parquet against JSON").
const ZSTD_LEVEL: i32 = 1;

/// Values converted to DOUBLE at a time when a row group is written.
const MODIFIER_BATCH: usize = 64 * 1024;

const SEARCH_RANK: &str = "searchRank";
const SEARCH_MODIFIER: &str = "searchModifier";

/// Why a Parquet part could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ParquetPartError {
    #[error("a Parquet part cannot be written with this encoding: {0}")]
    Encoding(#[from] EncodingMismatch),
    #[error("{format} parts are text, not Parquet: they are written by report_writer")]
    NotParquet { format: Format },
    #[error("searchRank {rank} of id {id} is beyond Parquet's INT64")]
    RankOutOfRange { id: i64, rank: u64 },
    #[error("encoding the Parquet part: {0}")]
    Parquet(#[from] ParquetError),
}

/// Writes one report part as a Parquet file into `W`.
pub struct ParquetPartWriter<W: Write + Send> {
    file: SerializedFileWriter<HashingWriter<W>>,
    columns: Columns,
    group_rows: usize,
    ids: Vec<i64>,
    ranks: Vec<i64>,
    hundredths: Vec<u8>,
    /// Reused for the DOUBLE values of one batch of modifiers.
    modifiers: Vec<f64>,
    rows: u64,
}

impl<W: Write + Send> ParquetPartWriter<W> {
    /// Starts a part of `kind` whose rows carry `columns`, in `encoding`
    /// (Parquet with `zstd` or `snappy`).
    pub fn new(kind: ReportKind, encoding: Encoding, columns: Columns, out: W) -> Result<Self, ParquetPartError> {
        Self::with_row_group_rows(kind, encoding, columns, ROW_GROUP_ROWS, out)
    }

    /// As [`ParquetPartWriter::new`], with row groups of `group_rows` rows
    /// (at least one).
    pub fn with_row_group_rows(
        kind: ReportKind,
        encoding: Encoding,
        columns: Columns,
        group_rows: usize,
        out: W,
    ) -> Result<Self, ParquetPartError> {
        if encoding.format != Format::Parquet {
            return Err(ParquetPartError::NotParquet { format: encoding.format });
        }
        let compression = match encoding.check()?.compression {
            Compression::Snappy => ParquetCompression::SNAPPY,
            Compression::Zstd | Compression::None | Compression::Gzip => {
                ParquetCompression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?)
            }
        };
        let group_rows = group_rows.max(1);
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(group_rows))
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from(SEARCH_MODIFIER), true)
            .build();
        let file = SerializedFileWriter::new(HashingWriter::new(out), schema(kind, columns)?, Arc::new(properties))?;
        let capacity = group_rows.min(ROW_GROUP_ROWS);
        let ranked = columns == Columns::Ranked;
        Ok(Self {
            file,
            columns,
            group_rows,
            ids: Vec::with_capacity(capacity),
            ranks: Vec::with_capacity(if ranked { capacity } else { 0 }),
            hundredths: Vec::with_capacity(if ranked { capacity } else { 0 }),
            modifiers: Vec::new(),
            rows: 0,
        })
    }

    /// Appends one item (its id alone in a part of [`Columns::IdOnly`]).
    #[inline]
    pub fn push(&mut self, item: ReportItem) -> Result<(), ParquetPartError> {
        if self.columns == Columns::Ranked {
            let rank = i64::try_from(item.search_rank)
                .map_err(|_| ParquetPartError::RankOutOfRange { id: item.id, rank: item.search_rank })?;
            self.ranks.push(rank);
            self.hundredths.push(item.modifier_hundredths);
        }
        self.ids.push(item.id);
        self.rows += 1;
        if self.ids.len() >= self.group_rows {
            self.write_row_group()?;
        }
        Ok(())
    }

    /// Encodes the gathered rows as one row group and passes its pages on.
    fn write_row_group(&mut self) -> Result<(), ParquetPartError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let mut group = self.file.next_row_group()?;
        let mut column = next_column(group.next_column()?)?;
        column.typed::<Int64Type>().write_batch(&self.ids, None, None)?;
        column.close()?;
        if self.columns == Columns::Ranked {
            let mut column = next_column(group.next_column()?)?;
            column.typed::<Int64Type>().write_batch(&self.ranks, None, None)?;
            column.close()?;
            let mut column = next_column(group.next_column()?)?;
            let writer = column.typed::<DoubleType>();
            for batch in self.hundredths.chunks(MODIFIER_BATCH) {
                self.modifiers.clear();
                self.modifiers.extend(batch.iter().map(|&h| f64::from(h) / 100.0));
                writer.write_batch(&self.modifiers, None, None)?;
            }
            column.close()?;
        }
        group.close()?;
        self.ids.clear();
        self.ranks.clear();
        self.hundredths.clear();
        Ok(())
    }

    /// Writes the last row group and the footer; returns the part's rows,
    /// bytes and SHA-256 (of the file as stored) with the writer.
    pub fn finish(mut self) -> Result<(u64, u64, String, W), ParquetPartError> {
        self.write_row_group()?;
        let (bytes, sha256, out) = self.file.into_inner()?.finish();
        Ok((self.rows, bytes, sha256, out))
    }
}

/// The column the schema promises next.
fn next_column(column: Option<SerializedColumnWriter<'_>>) -> Result<SerializedColumnWriter<'_>, ParquetError> {
    column.ok_or_else(|| ParquetError::General("the Parquet schema has fewer columns than a report row".into()))
}

/// `message <data_type> { required int64 <idField>; required int64
/// searchRank; required double searchModifier; }`, or the id alone.
fn schema(kind: ReportKind, columns: Columns) -> Result<Arc<SchemaType>, ParquetError> {
    use parquet::basic::{Repetition, Type as PhysicalType};
    let field = |name: &str, physical: PhysicalType| {
        SchemaType::primitive_type_builder(name, physical).with_repetition(Repetition::REQUIRED).build().map(Arc::new)
    };
    let mut fields = vec![field(kind.id_field(), PhysicalType::INT64)?];
    if columns == Columns::Ranked {
        fields.push(field(SEARCH_RANK, PhysicalType::INT64)?);
        fields.push(field(SEARCH_MODIFIER, PhysicalType::DOUBLE)?);
    }
    Ok(Arc::new(SchemaType::group_type_builder(kind.data_type()).with_fields(fields).build()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parquet::basic::{Encoding as PageEncoding, Type as PhysicalType};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    use sha2::{Digest, Sha256};

    const ZSTD: Encoding = Encoding { format: Format::Parquet, compression: Compression::Zstd };
    const SNAPPY: Encoding = Encoding { format: Format::Parquet, compression: Compression::Snappy };

    fn items(count: u64) -> Vec<ReportItem> {
        (0..count)
            .map(|i| ReportItem {
                id: (i as i64 * 7919) - 1_000_000,
                search_rank: i + 1,
                modifier_hundredths: (100 - i * 100 / count.max(1)) as u8,
            })
            .chain([ReportItem { id: i64::MAX, search_rank: i64::MAX as u64, modifier_hundredths: 0 }])
            .chain([ReportItem { id: i64::MIN, search_rank: 1, modifier_hundredths: 100 }])
            .collect()
    }

    fn write(
        kind: ReportKind,
        encoding: Encoding,
        columns: Columns,
        group_rows: usize,
        items: &[ReportItem],
    ) -> Vec<u8> {
        let mut writer =
            ParquetPartWriter::with_row_group_rows(kind, encoding, columns, group_rows, Vec::new()).unwrap();
        for &item in items {
            writer.push(item).unwrap();
        }
        let (rows, bytes, sha256, out) = writer.finish().unwrap();
        assert_eq!(rows, items.len() as u64);
        assert_eq!(bytes, out.len() as u64);
        assert_eq!(sha256, hex::encode(Sha256::digest(&out)));
        out
    }

    /// Every row as (id, rank, modifier), read by the parquet crate's row reader.
    fn read_rows(file: &[u8]) -> Vec<(i64, Option<i64>, Option<f64>)> {
        let reader = SerializedFileReader::new(Bytes::copy_from_slice(file)).unwrap();
        reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
                let int = |f: &Field| match f {
                    Field::Long(v) => *v,
                    other => panic!("expected INT64, found {other:?}"),
                };
                match fields.as_slice() {
                    [id] => (int(id), None, None),
                    [id, rank, Field::Double(modifier)] => (int(id), Some(int(rank)), Some(*modifier)),
                    other => panic!("unexpected row {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn a_part_reads_back_row_for_row_with_the_declared_types_in_row_groups_of_the_set_size() {
        let items = items(2_500);
        for (kind, encoding) in [(ReportKind::Track, ZSTD), (ReportKind::Artist, SNAPPY), (ReportKind::Product, ZSTD)] {
            let file = write(kind, encoding, Columns::Ranked, 1_000, &items);
            let reader = SerializedFileReader::new(Bytes::from(file.clone())).unwrap();
            let metadata = reader.metadata();
            let schema = metadata.file_metadata().schema_descr();
            let described: Vec<(String, PhysicalType, bool)> = schema
                .columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.physical_type(), c.self_type().is_optional()))
                .collect();
            assert_eq!(
                described,
                [
                    (kind.id_field().to_owned(), PhysicalType::INT64, false),
                    ("searchRank".to_owned(), PhysicalType::INT64, false),
                    ("searchModifier".to_owned(), PhysicalType::DOUBLE, false),
                ]
            );
            let groups: Vec<i64> = metadata.row_groups().iter().map(|g| g.num_rows()).collect();
            assert_eq!(groups, [1_000, 1_000, 502], "{kind}");
            for group in metadata.row_groups() {
                for column in group.columns() {
                    let codec = column.compression();
                    let expected = match encoding.compression {
                        Compression::Snappy => matches!(codec, parquet::basic::Compression::SNAPPY),
                        _ => matches!(codec, parquet::basic::Compression::ZSTD(_)),
                    };
                    assert!(expected, "{} is compressed with {codec:?}", column.column_path());
                }
                let modifier = group.column(2);
                assert!(modifier.encodings().any(|e| e == PageEncoding::RLE_DICTIONARY), "a dictionary of modifiers");
                assert!(group.column(0).encodings().all(|e| e != PageEncoding::RLE_DICTIONARY), "ids are PLAIN");
            }
            let expected: Vec<(i64, Option<i64>, Option<f64>)> = items
                .iter()
                .map(|i| (i.id, Some(i.search_rank as i64), Some(f64::from(i.modifier_hundredths) / 100.0)))
                .collect();
            assert_eq!(read_rows(&file), expected, "{kind}");
        }
    }

    #[test]
    fn modifiers_are_the_doubles_the_json_text_reads_as() {
        let items: Vec<ReportItem> =
            (0..=100u8).map(|h| ReportItem { id: i64::from(h), search_rank: 1, modifier_hundredths: h }).collect();
        let file = write(ReportKind::Track, ZSTD, Columns::Ranked, ROW_GROUP_ROWS, &items);
        let mut json =
            crate::report_writer::PartWriter::new(ReportKind::Track, Encoding::default(), Vec::new()).unwrap();
        for &item in &items {
            json.push(item).unwrap();
        }
        let text = json.finish().unwrap().3;
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&text).unwrap();
        for ((_, _, modifier), object) in read_rows(&file).into_iter().zip(&parsed) {
            assert_eq!(modifier.unwrap().to_bits(), object["searchModifier"].as_f64().unwrap().to_bits());
        }
    }

    #[test]
    fn removed_id_files_hold_the_id_column_alone() {
        let ids = [
            ReportItem { id: -7, search_rank: 0, modifier_hundredths: 0 },
            ReportItem { id: 42, search_rank: 0, modifier_hundredths: 0 },
        ];
        let file = write(ReportKind::Artist, SNAPPY, Columns::IdOnly, ROW_GROUP_ROWS, &ids);
        let reader = SerializedFileReader::new(Bytes::from(file.clone())).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        assert_eq!(schema.num_columns(), 1);
        assert_eq!(
            (schema.column(0).name(), schema.column(0).physical_type()),
            ("masterArtistId", PhysicalType::INT64)
        );
        assert_eq!(read_rows(&file), [(-7, None, None), (42, None, None)]);
    }

    #[test]
    fn an_empty_part_is_a_valid_file_with_the_schema_and_no_row_group() {
        let file = write(ReportKind::Product, ZSTD, Columns::Ranked, ROW_GROUP_ROWS, &[]);
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 0);
        assert_eq!(reader.metadata().file_metadata().schema_descr().column(0).name(), "productId");
    }

    #[test]
    fn the_same_rows_give_the_same_bytes() {
        let items = items(3_000);
        let first = write(ReportKind::Track, ZSTD, Columns::Ranked, 1_000, &items);
        let second = write(ReportKind::Track, ZSTD, Columns::Ranked, 1_000, &items);
        assert_eq!(first, second, "a retried delivery must write the same object");
    }

    #[test]
    fn text_formats_gzip_and_ranks_beyond_int64_are_refused_with_the_reason() {
        let gzip = Encoding { format: Format::Parquet, compression: Compression::Gzip };
        let error = ParquetPartWriter::new(ReportKind::Track, gzip, Columns::Ranked, Vec::new()).err().unwrap();
        assert!(error.to_string().contains("\"gzip\" does not apply to format \"parquet\""), "{error}");
        let json = ParquetPartWriter::new(ReportKind::Track, Encoding::default(), Columns::Ranked, Vec::new());
        assert!(matches!(json.err().unwrap(), ParquetPartError::NotParquet { format: Format::Json }));
        let mut writer = ParquetPartWriter::new(ReportKind::Track, ZSTD, Columns::Ranked, Vec::new()).unwrap();
        let error = writer.push(ReportItem { id: 5, search_rank: u64::MAX, modifier_hundredths: 0 }).unwrap_err();
        assert_eq!(error.to_string(), format!("searchRank {} of id 5 is beyond Parquet's INT64", u64::MAX));
    }
}
