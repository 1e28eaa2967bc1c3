//! The `rank` function: an EventBridge scheduled event starts one run whose
//! id is the event's `time` (docs/design.md, "Scores and ranks"). A published run is immutable: a
//! re-delivered event whose run is already published writes nothing and
//! says so in its response (`alreadyPublished`). An event time no run can
//! have (before 2000, past year 9999, more than a day ahead of now) is
//! refused, naming it; a window without plays is published with a warning
//! and the metric `RunsWithoutPlays`.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{info, instrument};

use crate::domain::RunId;
use crate::engine::EngineChoice;
use crate::manifest::run_manifest_key;
use crate::manifest::RunManifest;
use crate::metrics::emit_metrics;
use crate::rank::{check_run_time, rank_run_as, window_has_plays, RankError, RankSettings, RunTimeError};
use crate::store::ObjectStore;

/// What the rank handler needs: where inputs are, where reports go, how to rank.
pub struct RankDeps<I, O> {
    pub data: I,
    pub staging: O,
    pub settings: RankSettings,
}

/// The function's result, also visible in `cargo lambda invoke` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RankResponse {
    pub run_id: String,
    pub manifest_key: String,
    pub tracks: u64,
    pub artists: u64,
    pub products: u64,
    /// The run was published before this invocation; nothing was written.
    pub already_published: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RankHandlerError {
    #[error("the scheduled event has no `time`; the run id is derived from it")]
    MissingTime,
    #[error("the scheduled event's `time` cannot be a run's time, nothing published: {0}")]
    EventTime(#[source] RunTimeError),
    #[error(transparent)]
    Rank(#[from] RankError),
}

impl From<RankHandlerError> for Diagnostic {
    fn from(error: RankHandlerError) -> Self {
        let error_type = match &error {
            RankHandlerError::MissingTime
            | RankHandlerError::EventTime(_)
            | RankHandlerError::Rank(RankError::RunTime(_)) => "InvalidEvent",
            RankHandlerError::Rank(RankError::Settings(_)) => "InvalidSettings",
            RankHandlerError::Rank(RankError::Input(_)) => "BadInput",
            RankHandlerError::Rank(RankError::ReadInput(_)) => "ReadFailed",
            RankHandlerError::Rank(_) => "PublishFailed",
        };
        Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

/// Ranks the catalogue as of the event's time and publishes the reports.
#[instrument(skip_all, fields(run_id))]
pub async fn handle_schedule_event<I: ObjectStore, O: ObjectStore>(
    deps: &RankDeps<I, O>,
    event: EventBridgeEvent<serde_json::Value>,
) -> Result<RankResponse, RankHandlerError> {
    let time = event.time.ok_or(RankHandlerError::MissingTime)?;
    check_run_time(time, chrono::Utc::now()).map_err(RankHandlerError::EventTime)?;
    let run = RunId::from_time(time);
    tracing::Span::current().record("run_id", tracing::field::display(run));
    let published = rank_run_as(&deps.data, &deps.staging, &deps.settings, time, engine_of(&event.detail)).await?;
    let manifest = published.manifest;
    emit_metrics("PopularityReports", &[("Function", "rank")], &run_metrics(&manifest));
    let rows = |i: usize| manifest.reports.get(i).map_or(0, |r| r.rows);
    let response = RankResponse {
        run_id: run.to_string(),
        manifest_key: deps.staging.describe(&run_manifest_key(run)),
        tracks: rows(0),
        artists: rows(1),
        products: rows(2),
        already_published: !published.newly_published,
    };
    info!(tracks = response.tracks, artists = response.artists, products = response.products, "run published");
    Ok(response)
}

/// The engine choice of this run: the one the state machine made and passes
/// in the event's `detail` (`engineReason`) when `RankEngine` is `auto`, or
/// that of a run started by rank's own schedule (`RankEngine=lambda`).
pub fn engine_of(detail: &serde_json::Value) -> EngineChoice {
    match detail.get("engineReason").and_then(serde_json::Value::as_str) {
        Some(reason) => EngineChoice::lambda(reason),
        None => EngineChoice::lambda("RankEngine=lambda: started by rank's own schedule"),
    }
}

/// The metrics of a run: its input counts, and `RunsWithoutPlays` = 1 when
/// no play of a catalogue track fell inside its window (every item scored
/// 0), for an alarm.
pub fn run_metrics(manifest: &RunManifest) -> [(&'static str, f64); 4] {
    [
        ("CatalogueTracks", manifest.inputs.catalogue_rows as f64),
        ("PlayRows", manifest.inputs.play_rows as f64),
        ("UnknownTrackPlayRows", manifest.inputs.unknown_track_play_rows as f64),
        ("RunsWithoutPlays", if window_has_plays(manifest) { 0.0 } else { 1.0 }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::ScoringRulesError;

    #[test]
    fn the_state_machines_reason_reaches_the_manifest_and_a_direct_start_says_so() {
        let passed = serde_json::json!({"engine": "lambda", "engineReason": "RankEngine=auto: 10 tracks"});
        assert_eq!(engine_of(&passed), EngineChoice::lambda("RankEngine=auto: 10 tracks"));
        assert!(engine_of(&serde_json::json!({})).reason.contains("rank's own schedule"));
    }

    #[test]
    fn refused_times_and_settings_have_error_types_and_messages_naming_them() {
        let time = "1970-01-01T00:00:00Z".parse().unwrap();
        let refused = Diagnostic::from(RankHandlerError::EventTime(RunTimeError::BeforeEarliest { time }));
        assert_eq!(refused.error_type, "InvalidEvent");
        assert!(refused.error_message.contains("`time`") && refused.error_message.contains("1970-01-01"));
        let settings = RankHandlerError::Rank(RankError::Settings(ScoringRulesError::HalfLifeDays(1e-300)));
        let refused = Diagnostic::from(settings);
        assert_eq!(refused.error_type, "InvalidSettings");
        assert!(refused.error_message.contains("half-life of 1e-300 days"), "{}", refused.error_message);
    }
}
