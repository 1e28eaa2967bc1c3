//! Run manifests (docs/design.md, "Reports and layouts"):
//! `manifests/<runId>.json`, written last by rank so that its creation means
//! every report part is complete. It lists each report's parts with rows,
//! bytes and SHA-256, and how the run was scored.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Compression, Format, ReportKind, RunId};
use crate::report_writer::PartSummary;

pub const MANIFEST_SCHEMA_VERSION: u32 = 1;
pub const MANIFESTS_PREFIX: &str = "manifests/";
pub const REPORTS_PREFIX: &str = "reports/";

/// Key of the run manifest in the staging store.
pub fn run_manifest_key(run: RunId) -> String {
    format!("{MANIFESTS_PREFIX}{run}.json")
}

/// Whether a delivery holds whole reports or only what changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    #[default]
    Full,
    Delta,
}

/// One report of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportManifest {
    pub data_type: String,
    pub id_field: String,
    pub rows: u64,
    pub parts: Vec<PartSummary>,
    /// The smallest and largest id in the report (absent in manifests
    /// written before it was added, and when the report is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_range: Option<IdRange>,
}

/// The smallest and largest id of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub min: i64,
    pub max: i64,
}

impl ReportManifest {
    pub fn kind(&self) -> Option<ReportKind> {
        ReportKind::ALL.into_iter().find(|k| k.data_type() == self.data_type)
    }
}

/// How the run was scored, so a consumer can tell what the numbers mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoringSummary {
    pub lookback_days: u32,
    pub half_life_days: f64,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Days of the window that had plays files.
    pub days_with_plays: Vec<NaiveDate>,
}

/// What the run read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputSummary {
    pub catalogue_files: u64,
    pub catalogue_rows: u64,
    pub play_files: u64,
    pub play_rows: u64,
    /// Play rows whose trackId is not in the catalogue (ignored).
    pub unknown_track_play_rows: u64,
    pub unknown_track_plays: u64,
}

/// The engine that ranked a run (docs/scaling.md, "Choosing the engine"):
/// the `rank` Lambda, or the `sql/` queries on Athena turned into the run by
/// the publish step. Either writes the same reports, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Lambda,
    Athena,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Lambda => "lambda",
            Engine::Athena => "athena",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `manifests/<runId>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunManifest {
    pub schema_version: u32,
    pub run_id: RunId,
    pub run_time: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    /// Which engine ranked the run (absent in manifests written before the
    /// engine was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    /// Why that engine: the `RankEngine` setting and, for `auto`, the
    /// catalogue's size against the Lambda's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_reason: Option<String>,
    pub mode: DeliveryMode,
    pub format: Format,
    pub compression: Compression,
    pub scoring: ScoringSummary,
    pub inputs: InputSummary,
    pub reports: Vec<ReportManifest>,
}

impl RunManifest {
    pub fn report(&self, kind: ReportKind) -> Option<&ReportManifest> {
        self.reports.iter().find(|r| r.data_type == kind.data_type())
    }
}
