//! The `rank` function: an EventBridge scheduled event starts one run whose
//! id is the event's `time` (DESIGN §4). A published run is immutable: a
//! re-delivered event whose run is already published writes nothing and
//! says so in its response (`alreadyPublished`).

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{info, instrument};

use crate::domain::RunId;
use crate::manifest::run_manifest_key;
use crate::metrics::emit_metrics;
use crate::rank::{rank_run, RankError, RankSettings};
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
    #[error(transparent)]
    Rank(#[from] RankError),
}

impl From<RankHandlerError> for Diagnostic {
    fn from(error: RankHandlerError) -> Self {
        let error_type = match &error {
            RankHandlerError::MissingTime => "InvalidEvent",
            RankHandlerError::Rank(RankError::Input(_)) => "BadInput",
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
    let run = RunId::from_time(time);
    tracing::Span::current().record("run_id", tracing::field::display(run));
    let published = rank_run(&deps.data, &deps.staging, &deps.settings, time).await?;
    let manifest = published.manifest;
    emit_metrics(
        "PopularityReports",
        &[("Function", "rank")],
        &[
            ("CatalogueTracks", manifest.inputs.catalogue_rows as f64),
            ("PlayRows", manifest.inputs.play_rows as f64),
            ("UnknownTrackPlayRows", manifest.inputs.unknown_track_play_rows as f64),
        ],
    );
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
