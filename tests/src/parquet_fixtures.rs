//! Builds small Parquet files for tests: any columns, any physical type,
//! nulls, several row groups — including the malformed inputs the ranking
//! must reject. Uses the parquet crate's low-level writer.

use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// One column of a fixture file.
#[derive(Debug, Clone)]
pub enum Column {
    Int64(&'static str, Vec<i64>),
    /// A nullable INT64 column.
    OptionalInt64(&'static str, Vec<Option<i64>>),
    Int32(&'static str, Vec<i32>),
    Utf8(&'static str, Vec<String>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Int64(_, v) => v.len(),
            Column::OptionalInt64(_, v) => v.len(),
            Column::Int32(_, v) => v.len(),
            Column::Utf8(_, v) => v.len(),
        }
    }

    fn schema_line(&self) -> String {
        match self {
            Column::Int64(n, _) => format!("REQUIRED INT64 {n};"),
            Column::OptionalInt64(n, _) => format!("OPTIONAL INT64 {n};"),
            Column::Int32(n, _) => format!("REQUIRED INT32 {n};"),
            Column::Utf8(n, _) => format!("REQUIRED BYTE_ARRAY {n} (UTF8);"),
        }
    }
}

/// A Parquet file with `columns` (equal lengths), `row_group_rows` rows per
/// row group.
pub fn parquet_file(columns: &[Column], row_group_rows: usize) -> Vec<u8> {
    let rows = columns.first().map_or(0, Column::len);
    assert!(columns.iter().all(|c| c.len() == rows), "columns differ in length");
    let schema =
        format!("message schema {{ {} }}", columns.iter().map(Column::schema_line).collect::<Vec<_>>().join(" "));
    let schema = Arc::new(parse_message_type(&schema).unwrap());
    let properties = Arc::new(WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY).build());
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, properties).unwrap();
    let mut start = 0;
    loop {
        let end = (start + row_group_rows.max(1)).min(rows);
        let mut group = writer.next_row_group().unwrap();
        for column in columns {
            let mut column_writer = group.next_column().unwrap().unwrap();
            match column {
                Column::Int64(_, v) => {
                    column_writer.typed::<Int64Type>().write_batch(&v[start..end], None, None).unwrap();
                }
                Column::Int32(_, v) => {
                    column_writer.typed::<Int32Type>().write_batch(&v[start..end], None, None).unwrap();
                }
                Column::OptionalInt64(_, v) => {
                    let slice = &v[start..end];
                    let values: Vec<i64> = slice.iter().flatten().copied().collect();
                    let levels: Vec<i16> = slice.iter().map(|x| i16::from(x.is_some())).collect();
                    column_writer.typed::<Int64Type>().write_batch(&values, Some(&levels), None).unwrap();
                }
                Column::Utf8(_, v) => {
                    let values: Vec<ByteArray> = v[start..end].iter().map(|s| ByteArray::from(s.as_str())).collect();
                    column_writer.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
                }
            }
            column_writer.close().unwrap();
        }
        group.close().unwrap();
        start = end;
        if start >= rows {
            break;
        }
    }
    writer.close().unwrap();
    out
}

/// A catalogue file from (trackId, masterArtistId, productId) rows.
pub fn catalogue_file(rows: &[(i64, i64, i64)], row_group_rows: usize) -> Vec<u8> {
    parquet_file(
        &[
            Column::Int64("trackId", rows.iter().map(|r| r.0).collect()),
            Column::Int64("masterArtistId", rows.iter().map(|r| r.1).collect()),
            Column::Int64("productId", rows.iter().map(|r| r.2).collect()),
        ],
        row_group_rows,
    )
}

/// A plays file from (trackId, plays) rows.
pub fn plays_file(rows: &[(i64, i64)], row_group_rows: usize) -> Vec<u8> {
    parquet_file(
        &[
            Column::Int64("trackId", rows.iter().map(|r| r.0).collect()),
            Column::Int64("plays", rows.iter().map(|r| r.1).collect()),
        ],
        row_group_rows,
    )
}
