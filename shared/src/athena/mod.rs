//! The Athena engine (docs/scaling.md, "The Athena engine"): a run ranked by
//! the `sql/` queries on Athena, orchestrated by the stack's Step Functions
//! state machine, and published by the publish step exactly as the rank
//! Lambda publishes one.
//!
//! - [`sql`]: the `sql/` files as the package ships them, with a run's values
//!   filled in and wrapped in UNLOAD into the run's folder;
//! - [`plan`]: the state machine's first step: is the run published, which
//!   engine, and the queries of an Athena run (also a day of raw plays);
//! - [`output`]: reading what an UNLOAD wrote: the data manifest, the rows
//!   of Parquet files with Athena's lower-case column names, a column
//!   window at a time;
//! - [`merge`]: one report's files merged by `searchRank` in one streaming
//!   pass, with every check of a report;
//! - [`part_formatters`]: the parts' text formatted on helper threads,
//!   written in rank order;
//! - [`publish`]: the publish step: parts and run manifest, manifest last.
//!
//! It starts no query and polls nothing: Step Functions runs the queries
//! (`template.yaml`, `statemachine/`), these steps run as Lambda tasks of it.

pub mod merge;
pub mod output;
pub mod part_formatters;
pub mod plan;
pub mod publish;
pub mod sql;

use crate::domain::RunId;
use sql::{Attempt, RunQuery};

/// Everything a run writes under staging's `athena-results/`.
pub const ATHENA_RESULTS_PREFIX: &str = "athena-results/";

/// Where a run's Athena objects are, as keys of the staging store and as
/// the `s3://` URIs Athena and its data manifests use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolders {
    bucket: String,
    /// The store's key prefix, empty or ending with `/`.
    prefix: String,
    /// `s3://<bucket>/<prefix>`, ending with `/`.
    root_uri: String,
}

impl RunFolders {
    /// The folders of a staging store rooted at `s3://bucket/prefix`.
    pub fn new(bucket: &str, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let root_uri = format!("s3://{bucket}/{prefix}");
        Self { bucket: bucket.to_owned(), prefix, root_uri }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key in the bucket of a key of the store (prefix added).
    pub fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// `athena-results/<runId>/<attempt>/`: everything one attempt writes.
    pub fn run_folder(&self, run: RunId, attempt: &Attempt) -> String {
        format!("{ATHENA_RESULTS_PREFIX}{run}/{attempt}/")
    }

    /// The folder a query's UNLOAD writes into.
    pub fn output_folder(&self, run: RunId, attempt: &Attempt, query: RunQuery) -> String {
        format!("{}{}/", self.run_folder(run, attempt), query.name())
    }

    /// Where Athena keeps the attempt's query results, metadata and data
    /// manifests (each query's `ResultConfiguration.OutputLocation`).
    pub fn query_results_folder(&self, run: RunId, attempt: &Attempt) -> String {
        format!("{}queries/", self.run_folder(run, attempt))
    }

    /// The `s3://` URI of a key of the staging store.
    pub fn uri(&self, key: &str) -> String {
        format!("{}{key}", self.root_uri)
    }

    /// The key of the staging store an `s3://` URI names, if it is inside it.
    pub fn key_of(&self, uri: &str) -> Option<String> {
        uri.strip_prefix(&self.root_uri).filter(|key| !key.is_empty()).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_keys_map_both_ways_inside_the_store_only() {
        let folders = RunFolders::new("st-staging", "");
        let run: RunId = "20261119030000".parse().unwrap();
        let attempt = Attempt::new("exec-1").unwrap();
        let folder = folders.output_folder(run, &attempt, RunQuery::RunInputs);
        assert_eq!(folder, "athena-results/20261119030000/exec-1/run_inputs/");
        assert_eq!(folders.uri(&folder), "s3://st-staging/athena-results/20261119030000/exec-1/run_inputs/");
        assert_eq!(folders.key_of(&folders.uri("a/b")), Some("a/b".to_owned()));
        assert_eq!(folders.key_of("s3://other/a/b"), None);
        assert_eq!(folders.key_of("s3://st-staging-2/a"), None);
        let prefixed = RunFolders::new("b", "/p/q/");
        assert_eq!(prefixed.uri("k"), "s3://b/p/q/k");
        assert_eq!(prefixed.key_of("s3://b/p/q/k"), Some("k".to_owned()));
        assert_eq!((prefixed.bucket(), prefixed.object_key("k").as_str()), ("b", "p/q/k"));
    }
}
