//! Athena's output of a run, made from a run `rank` published: each report
//! as UNLOAD writes it (several gzip JSON-lines files, blocks of ranks
//! round-robin across them so each file is in rank order and the files
//! interleave, lower-case column names), the run's counts as
//! `sql/run_inputs.sql` gives them, and a data manifest per query listing
//! its files. For the publish step's tests, which need Athena's output
//! without DuckDB.

use std::io::Write;

use bytes::Bytes;
use popularity_reports::athena::publish::QueryOutput;
use popularity_reports::athena::sql::{Attempt, RunQuery};
use popularity_reports::athena::RunFolders;
use popularity_reports::domain::{ReportKind, RunId};
use popularity_reports::manifest::RunManifest;
use popularity_reports::store::{ObjectSink, ObjectStore};
use serde_json::{json, Value};

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
}

/// gzip of `text`, as UNLOAD compresses JSON.
pub fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// One row as UNLOAD writes it: lower-case names, JSON numbers.
pub fn athena_line(kind: ReportKind, id: i64, rank: u64, modifier: f64) -> String {
    format!(
        "{{\"{}\":{id},\"searchrank\":{rank},\"searchmodifier\":{modifier:?}}}\n",
        kind.id_field().to_ascii_lowercase()
    )
}

impl AthenaOutput {
    /// The data manifest of `query`, in the attempt's query-results folder.
    pub fn manifest_key(&self, query: RunQuery) -> String {
        format!("{}q-{}-manifest.csv", self.folders.query_results_folder(self.run, &self.attempt), query.name())
    }

    /// File `index` of `query`'s output.
    pub fn file_key(&self, query: RunQuery, index: usize) -> String {
        format!("{}q-{}_{index}.gz", self.folders.output_folder(self.run, &self.attempt, query), query.name())
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
            let mut files = vec![String::new(); self.files];
            for part in &report.parts {
                let body = ranked.get(&part.key).await.expect("rank's part");
                let items: Vec<Value> = serde_json::from_slice(&body).expect("a JSON part");
                for item in items {
                    let rank = item["searchRank"].as_u64().expect("a rank");
                    let id = item[kind.id_field()].as_i64().expect("an id");
                    let line = athena_line(kind, id, rank, item["searchModifier"].as_f64().expect("a modifier"));
                    files[((rank - 1) / self.block) as usize % self.files].push_str(&line);
                }
            }
            let query = RunQuery::Report(kind);
            let keys: Vec<String> = (0..self.files).map(|index| self.file_key(query, index)).collect();
            for (key, text) in keys.iter().zip(&files) {
                staging.put(key, Bytes::from(gzip(text)), "application/gzip").await.expect("writing a file");
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
        staging.put(&key, Bytes::from(gzip(&format!("{counts}\n"))), "application/gzip").await.expect("the counts");
        self.write_data_manifest(staging, RunQuery::RunInputs, &[key]).await;
    }

    async fn write_data_manifest<S: ObjectSink>(&self, staging: &S, query: RunQuery, keys: &[String]) {
        let text: String = keys.iter().map(|key| format!("{}\n", self.folders.uri(key))).collect();
        staging.put(&self.manifest_key(query), Bytes::from(text), "text/csv").await.expect("a data manifest");
    }
}
