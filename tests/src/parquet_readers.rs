//! Delivered Parquet report files read back two ways: by the parquet crate
//! here (the schema checked against docs/design.md, "Reports and layouts",
//! then every column value), and by DuckDB and Polars from the project's
//! `.venv` through `tests/python/check_parquet.py`, each file on its own,
//! compared row for row with what staging holds.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use parquet::basic::{Repetition, Type as PhysicalType};
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};
use popularity_reports::domain::{Compression, ReportKind};
use popularity_reports::report_writer::{Columns, ReportItem};
use serde_json::json;

use crate::reference::Line;

/// A delivered Parquet file as the parquet crate reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetPart {
    /// Rows per row group, in order.
    pub row_groups: Vec<i64>,
    /// The column compressions used, each once (`ZSTD(..)` printed as `ZSTD`).
    pub codecs: Vec<String>,
    pub ids: Vec<i64>,
    /// Empty for a file of ids alone.
    pub ranks: Vec<i64>,
    pub modifiers: Vec<f64>,
}

impl ParquetPart {
    /// The rows as report lines (ranked files).
    pub fn lines(&self) -> Vec<Line> {
        assert_eq!(self.ranks.len(), self.ids.len(), "a ranked file");
        (0..self.ids.len()).map(|i| (self.ids[i], self.ranks[i] as u64, self.modifiers[i])).collect()
    }
}

/// Reads a delivered Parquet file, checking its schema: required columns
/// `<idField>` INT64, and for [`Columns::Ranked`] `searchRank` INT64 and
/// `searchModifier` DOUBLE, in that order and nothing else.
///
/// # Panics
/// When the file is not Parquet or its schema differs.
pub fn read_parquet_part(bytes: &[u8], kind: ReportKind, columns: Columns) -> ParquetPart {
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(bytes)).expect("a Parquet file");
    let metadata = reader.metadata();
    let schema = metadata.file_metadata().schema_descr();
    let described: Vec<(String, PhysicalType, Repetition)> = schema
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.physical_type(), c.self_type().get_basic_info().repetition()))
        .collect();
    let mut expected = vec![(kind.id_field().to_owned(), PhysicalType::INT64, Repetition::REQUIRED)];
    if columns == Columns::Ranked {
        expected.push(("searchRank".to_owned(), PhysicalType::INT64, Repetition::REQUIRED));
        expected.push(("searchModifier".to_owned(), PhysicalType::DOUBLE, Repetition::REQUIRED));
    }
    assert_eq!(described, expected, "the schema of a {} file", kind.data_type());
    let mut codecs: Vec<String> = metadata
        .row_groups()
        .iter()
        .flat_map(|g| g.columns().iter().map(|c| format!("{:?}", c.compression())))
        .map(|codec| codec.split('(').next().unwrap_or_default().to_owned())
        .collect();
    codecs.sort();
    codecs.dedup();
    let mut part = ParquetPart {
        row_groups: metadata.row_groups().iter().map(|g| g.num_rows()).collect(),
        codecs,
        ids: Vec::new(),
        ranks: Vec::new(),
        modifiers: Vec::new(),
    };
    for group in 0..reader.num_row_groups() {
        let row_group = reader.get_row_group(group).expect("a row group");
        for column in 0..expected.len() {
            match row_group.get_column_reader(column).expect("a column reader") {
                ColumnReader::Int64ColumnReader(mut values) => {
                    let target = if column == 0 { &mut part.ids } else { &mut part.ranks };
                    while values.read_records(usize::MAX, None, None, target).expect("INT64 values").0 > 0 {}
                }
                ColumnReader::DoubleColumnReader(mut values) => {
                    while values.read_records(usize::MAX, None, None, &mut part.modifiers).expect("DOUBLEs").0 > 0 {}
                }
                _ => panic!("column {column} has a type no report column has"),
            }
        }
    }
    part
}

/// The name DuckDB's `parquet_metadata` gives a column compression, lowercased.
fn codec_name(compression: Compression) -> &'static str {
    match compression {
        Compression::Zstd => "zstd",
        Compression::Snappy => "snappy",
        Compression::None | Compression::Gzip => panic!("{compression} is not a Parquet column compression"),
    }
}

/// One file for [`check_with_duckdb_and_polars`]: where it is, what it is,
/// and the rows staging holds for it.
#[derive(Debug, Clone)]
pub struct ExpectedParquet {
    pub path: PathBuf,
    pub kind: ReportKind,
    pub columns: Columns,
    pub compression: Compression,
    /// Checked when given.
    pub row_groups: Option<Vec<i64>>,
    /// For [`Columns::IdOnly`], only the ids count.
    pub rows: Vec<ReportItem>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root").to_path_buf()
}

/// Has DuckDB and Polars, from the project's `.venv`, read every file on
/// its own and compare it with `files`' rows, column names and types,
/// compression and row groups (`tests/python/check_parquet.py`). Returns
/// the checker's summary line (files, rows, engine versions).
///
/// # Panics
/// When `.venv` lacks DuckDB or Polars (the test command installs them), or
/// when any file differs: the message lists each difference.
pub fn check_with_duckdb_and_polars(files: &[ExpectedParquet]) -> serde_json::Value {
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    let available = std::process::Command::new(&python).args(["-c", "import duckdb, polars"]).output();
    assert!(
        available.as_ref().is_ok_and(|out| out.status.success()),
        "{} cannot import duckdb and polars: run `bash scripts/emulator.sh install && .venv/bin/python -m pip \
         install duckdb polars` (scripts/test.sh does both)",
        python.display()
    );
    let spec = json!({"files": files.iter().map(|file| {
        let rows: Vec<serde_json::Value> = file.rows.iter().map(|item| match file.columns {
            Columns::Ranked => json!([item.id, item.search_rank, item.search_modifier()]),
            Columns::IdOnly => json!([item.id]),
        }).collect();
        let mut entry = json!({
            "path": file.path, "idField": file.kind.id_field(),
            "columns": match file.columns { Columns::Ranked => "ranked", Columns::IdOnly => "id-only" },
            "compression": codec_name(file.compression), "rows": rows,
        });
        if let Some(groups) = &file.row_groups {
            entry["rowGroups"] = json!(groups);
        }
        entry
    }).collect::<Vec<_>>()});
    let spec_file = tempfile::Builder::new().suffix(".json").tempfile().expect("a temporary file");
    std::fs::write(spec_file.path(), spec.to_string()).expect("writing the checker's spec");
    let output = std::process::Command::new(&python)
        .arg(root.join("tests/python/check_parquet.py"))
        .arg(spec_file.path())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "DuckDB or Polars read something other than staging:\n{stderr}");
    serde_json::from_slice(&output.stdout).expect("the checker prints one JSON line")
}
