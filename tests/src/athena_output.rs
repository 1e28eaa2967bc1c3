//! Athena's output of a run, made from a run `rank` published: each report
//! as UNLOAD writes it (several Snappy Parquet files, blocks of ranks
//! round-robin across them so each file is in rank order and the files
//! interleave, nullable columns with lower-case names), the run's counts as
//! `sql/run_inputs.sql` gives them, and a data manifest per query listing
//! its files. For the publish step's tests and benchmark, which need
//! Athena's output without DuckDB.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::column::reader::ColumnReader;
use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use popularity_reports::athena::publish::QueryOutput;
use popularity_reports::athena::sql::{Attempt, RunQuery};
use popularity_reports::athena::RunFolders;
use popularity_reports::domain::{ReportKind, RunId};
use popularity_reports::manifest::RunManifest;
use popularity_reports::store::{ObjectSink, ObjectStore};
use serde_json::{json, Value};

/// One row of a report file: id, rank, modifier.
pub type AthenaRow = (i64, u64, f64);

/// Rows per row group of the files written here: Parquet writers' usual
/// 128 MB row group holds a few million rows of a report's three columns.
pub const ROW_GROUP_ROWS: usize = 4 * 1024 * 1024;

/// Where one attempt's output goes and how it is cut into files.
#[derive(Debug, Clone)]
pub struct AthenaOutput {
    pub folders: RunFolders,
    pub run: RunId,
    pub attempt: Attempt,
    /// Files per report.
    pub files: usize,
    /// Consecutive ranks per block.
    pub block: u64,
    /// Rows per row group of each file.
    pub row_group_rows: usize,
}

/// The column names UNLOAD gives a `kind` report: the contract's, lower-cased.
pub fn athena_names(kind: ReportKind) -> [String; 3] {
    [kind.id_field().to_ascii_lowercase(), "searchrank".into(), "searchmodifier".into()]
}

/// Streams report rows into a Parquet file as UNLOAD writes one: three
/// nullable columns (INT64, INT64, DOUBLE) named `names`, Snappy, row
/// groups of `row_group_rows`, 1 MB pages, dictionaries where they pay.
pub struct ReportFileWriter<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    row_group_rows: usize,
    ids: Vec<i64>,
    ranks: Vec<i64>,
    modifiers: Vec<f64>,
    levels: Vec<i16>,
}

impl<W: Write + Send> ReportFileWriter<W> {
    pub fn new(out: W, names: &[String; 3], row_group_rows: usize) -> parquet::errors::Result<Self> {
        let schema = format!(
            "message schema {{ optional int64 {}; optional int64 {}; optional double {}; }}",
            names[0], names[1], names[2]
        );
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = SerializedFileWriter::new(out, Arc::new(parse_message_type(&schema)?), Arc::new(properties))?;
        let row_group_rows = row_group_rows.max(1);
        let capacity = row_group_rows.min(1 << 20);
        Ok(Self {
            writer,
            row_group_rows,
            ids: Vec::with_capacity(capacity),
            ranks: Vec::with_capacity(capacity),
            modifiers: Vec::with_capacity(capacity),
            levels: Vec::new(),
        })
    }

    pub fn push(&mut self, (id, rank, modifier): AthenaRow) -> parquet::errors::Result<()> {
        self.ids.push(id);
        self.ranks.push(rank as i64);
        self.modifiers.push(modifier);
        if self.ids.len() >= self.row_group_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> parquet::errors::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        self.levels.resize(self.ids.len(), 1);
        let mut group = self.writer.next_row_group()?;
        let mut column = group.next_column()?.expect("three columns");
        column.typed::<Int64Type>().write_batch(&self.ids, Some(&self.levels), None)?;
        column.close()?;
        let mut column = group.next_column()?.expect("three columns");
        column.typed::<Int64Type>().write_batch(&self.ranks, Some(&self.levels), None)?;
        column.close()?;
        let mut column = group.next_column()?.expect("three columns");
        column.typed::<DoubleType>().write_batch(&self.modifiers, Some(&self.levels), None)?;
        column.close()?;
        group.close()?;
        self.ids.clear();
        self.ranks.clear();
        self.modifiers.clear();
        Ok(())
    }

    pub fn finish(mut self) -> parquet::errors::Result<W> {
        self.flush()?;
        self.writer.into_inner()
    }
}

/// A whole report file in memory, columns named `names`.
pub fn report_file(names: &[String; 3], rows: &[AthenaRow], row_group_rows: usize) -> Vec<u8> {
    let mut writer = ReportFileWriter::new(Vec::new(), names, row_group_rows).expect("a Parquet writer");
    for row in rows {
        writer.push(*row).expect("writing into memory");
    }
    writer.finish().expect("writing into memory")
}

/// The rows of a report file written by [`report_file`] (its three columns
/// in order, no nulls).
pub fn read_report_file(bytes: &[u8]) -> Vec<AthenaRow> {
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(bytes)).expect("a Parquet file");
    let mut rows = Vec::new();
    for index in 0..reader.num_row_groups() {
        let group = reader.get_row_group(index).expect("a row group");
        let count = group.metadata().num_rows() as usize;
        let (mut ids, mut ranks, mut modifiers) = (Vec::new(), Vec::new(), Vec::new());
        let mut levels = Vec::new();
        match group.get_column_reader(0).expect("column 0") {
            ColumnReader::Int64ColumnReader(mut r) => r.read_records(count, Some(&mut levels), None, &mut ids),
            _ => panic!("column 0 is not INT64"),
        }
        .expect("ids");
        match group.get_column_reader(1).expect("column 1") {
            ColumnReader::Int64ColumnReader(mut r) => r.read_records(count, Some(&mut levels), None, &mut ranks),
            _ => panic!("column 1 is not INT64"),
        }
        .expect("ranks");
        match group.get_column_reader(2).expect("column 2") {
            ColumnReader::DoubleColumnReader(mut r) => r.read_records(count, Some(&mut levels), None, &mut modifiers),
            _ => panic!("column 2 is not DOUBLE"),
        }
        .expect("modifiers");
        assert_eq!((ids.len(), ranks.len(), modifiers.len()), (count, count, count), "no nulls");
        rows.extend((0..count).map(|i| (ids[i], ranks[i] as u64, modifiers[i])));
    }
    rows
}

/// `sql/run_inputs.sql`'s one row as UNLOAD writes it: nullable BIGINT
/// columns named as the query names them.
pub fn counts_file(counts: &Value) -> Vec<u8> {
    let object = counts.as_object().expect("counts are an object");
    let names: Vec<&String> = object.keys().collect();
    let schema = format!(
        "message schema {{ {} }}",
        names.iter().map(|name| format!("optional int64 {name};")).collect::<Vec<_>>().join(" ")
    );
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut out = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut out, Arc::new(parse_message_type(&schema).unwrap()), Arc::new(properties))
            .unwrap();
    let mut group = writer.next_row_group().unwrap();
    for name in names {
        let value = object[name].as_i64().expect("a count");
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<Int64Type>().write_batch(&[value], Some(&[1]), None).unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    out
}

impl AthenaOutput {
    /// The data manifest of `query`, in the attempt's query-results folder.
    pub fn manifest_key(&self, query: RunQuery) -> String {
        format!("{}q-{}-manifest.csv", self.folders.query_results_folder(self.run, &self.attempt), query.name())
    }

    /// File `index` of `query`'s output (named as UNLOAD names Parquet
    /// files: no extension).
    pub fn file_key(&self, query: RunQuery, index: usize) -> String {
        format!("{}q-{}_{index}", self.folders.output_folder(self.run, &self.attempt, query), query.name())
    }

    /// What the state machine hands the publish step: each query's data
    /// manifest.
    pub fn outputs(&self) -> Vec<QueryOutput> {
        RunQuery::ALL
            .into_iter()
            .filter(|query| *query != RunQuery::TrackScores)
            .map(|query| QueryOutput {
                query: query.name().to_owned(),
                query_execution_id: Some(format!("q-{}", query.name())),
                data_manifest: Some(self.folders.uri(&self.manifest_key(query))),
            })
            .collect()
    }

    /// The output of every report of `manifest` (read from `ranked`) and
    /// the run's counts, written into `staging`.
    pub async fn write_from<R: ObjectStore, S: ObjectSink>(&self, ranked: &R, manifest: &RunManifest, staging: &S) {
        for report in &manifest.reports {
            let kind = report.kind().expect("a report kind");
            let mut files: Vec<Vec<AthenaRow>> = vec![Vec::new(); self.files];
            for part in &report.parts {
                let body = ranked.get(&part.key).await.expect("rank's part");
                let items: Vec<Value> = serde_json::from_slice(&body).expect("a JSON part");
                for item in items {
                    let rank = item["searchRank"].as_u64().expect("a rank");
                    let id = item[kind.id_field()].as_i64().expect("an id");
                    let modifier = item["searchModifier"].as_f64().expect("a modifier");
                    files[((rank - 1) / self.block) as usize % self.files].push((id, rank, modifier));
                }
            }
            let query = RunQuery::Report(kind);
            let keys: Vec<String> = (0..self.files).map(|index| self.file_key(query, index)).collect();
            for (key, rows) in keys.iter().zip(&files) {
                let body = report_file(&athena_names(kind), rows, self.row_group_rows);
                staging.put(key, Bytes::from(body), "application/octet-stream").await.expect("writing a file");
            }
            self.write_data_manifest(staging, query, &keys).await;
        }
        let rows = |kind| manifest.report(kind).expect("every report").rows;
        let counts = json!({
            "catalogue_rows": manifest.inputs.catalogue_rows, "catalogue_tracks": manifest.inputs.catalogue_rows,
            "artists": rows(ReportKind::Artist), "products": rows(ReportKind::Product),
            "play_rows": manifest.inputs.play_rows, "unknown_track_play_rows": manifest.inputs.unknown_track_play_rows,
            "unknown_track_plays": manifest.inputs.unknown_track_plays, "negative_play_rows": 0});
        self.write_counts(staging, &counts).await;
    }

    /// `sql/run_inputs.sql`'s one row and its data manifest.
    pub async fn write_counts<S: ObjectSink>(&self, staging: &S, counts: &Value) {
        let key = self.file_key(RunQuery::RunInputs, 0);
        staging.put(&key, Bytes::from(counts_file(counts)), "application/octet-stream").await.expect("the counts");
        self.write_data_manifest(staging, RunQuery::RunInputs, &[key]).await;
    }

    async fn write_data_manifest<S: ObjectSink>(&self, staging: &S, query: RunQuery, keys: &[String]) {
        let text: String = keys.iter().map(|key| format!("{}\n", self.folders.uri(key))).collect();
        staging.put(&self.manifest_key(query), Bytes::from(text), "text/csv").await.expect("a data manifest");
    }
}
