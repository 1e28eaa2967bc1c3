//! The `publish` function: the Lambda steps of the stack's state machines
//! (docs/scaling.md, "The state machine"), one event type per step, chosen
//! by its `step` field:
//! - `plan`: is the run of `time` published, which engine ranks it (logged,
//!   with the reason), and for Athena its queries;
//! - `publish`: Athena's output of the attempt into a published run, parts
//!   then the manifest, exactly as rank publishes one;
//! - `plan-day`: whether the day before `time` is already aggregated from raw
//!   play events, and the query that does it.
//!
//! Errors carry stable error types, which are what the state machine's
//! `Retry` and `Catch` fields see: a permanent one (`BadAthenaOutput`,
//! `BadInput`, `InvalidEvent`) is not retried; `ReadFailed` and
//! `PublishFailed` are.

use chrono::{DateTime, Utc};
use lambda_runtime::Diagnostic;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use crate::athena::plan::{plan_day, plan_run, DayPlan, PlanError, PlanSettings, RunPlan};
use crate::athena::publish::{publish_run, AthenaRun, PublishError, PublishSettings, QueryOutput};
use crate::athena::sql::{Attempt, SqlError};
use crate::athena::RunFolders;
use crate::engine::EngineChoice;
use crate::handlers::rank::run_metrics;
use crate::manifest::{run_manifest_key, Engine};
use crate::metrics::emit_metrics;
use crate::store::ObjectStore;

/// What the publish function needs: the data bucket (listings, footers),
/// the staging bucket, where each is as `s3://` URIs, and the settings.
pub struct RunStepDeps<D, S> {
    pub data: D,
    pub staging: S,
    pub data_folders: RunFolders,
    pub staging_folders: RunFolders,
    pub plan: PlanSettings,
    pub publish: PublishSettings,
}

/// One step of a state machine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum RunStepEvent {
    Plan(PlanEvent),
    Publish(PublishEvent),
    PlanDay(PlanEvent),
}

/// `plan` and `plan-day`: the scheduled event's time and the execution's name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEvent {
    pub time: DateTime<Utc>,
    pub attempt: String,
}

/// `publish`: the plan, and what each query of the attempt left.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishEvent {
    pub plan: RunPlan,
    pub results: Vec<QueryOutput>,
}

/// What a step returns to the state machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RunStepResponse {
    Plan(RunPlan),
    Published(PublishResponse),
    Day(DayPlan),
}

/// What the publish step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishResponse {
    pub run_id: String,
    pub manifest_key: String,
    pub engine: Engine,
    pub tracks: u64,
    pub artists: u64,
    pub products: u64,
    /// The run was published before this step; nothing was written.
    pub already_published: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunStepError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the publish step was given a plan for the {0} engine; only Athena runs are published by it")]
    NotAnAthenaPlan(Engine),
    #[error("nothing published: {0}")]
    Attempt(#[source] SqlError),
}

impl From<RunStepError> for Diagnostic {
    fn from(error: RunStepError) -> Self {
        let error_type = match &error {
            RunStepError::Plan(PlanError::RunTime(_) | PlanError::Sql(_) | PlanError::Settings(_))
            | RunStepError::NotAnAthenaPlan(_)
            | RunStepError::Attempt(_)
            | RunStepError::Publish(PublishError::RunTime(_)) => "InvalidEvent",
            RunStepError::Plan(PlanError::Input(_))
            | RunStepError::Publish(PublishError::BadInput(_) | PublishError::Input(_)) => "BadInput",
            RunStepError::Plan(PlanError::Read(_)) => "ReadFailed",
            RunStepError::Publish(publish) if publish.is_transient() => "PublishFailed",
            RunStepError::Publish(_) => "BadAthenaOutput",
        };
        Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

/// Runs one step.
#[instrument(skip_all, fields(step))]
pub async fn handle_run_step<D: ObjectStore, S: ObjectStore + Clone + 'static>(
    deps: &RunStepDeps<D, S>,
    event: RunStepEvent,
) -> Result<RunStepResponse, RunStepError> {
    match event {
        RunStepEvent::Plan(event) => {
            tracing::Span::current().record("step", "plan");
            let plan =
                plan_run(&deps.data, &deps.staging, &deps.staging_folders, &deps.plan, event.time, &event.attempt)
                    .await?;
            Ok(RunStepResponse::Plan(plan))
        }
        RunStepEvent::PlanDay(event) => {
            tracing::Span::current().record("step", "plan-day");
            let plan =
                plan_day(&deps.data, &deps.data_folders, &deps.staging_folders, event.time, &event.attempt).await?;
            Ok(RunStepResponse::Day(plan))
        }
        RunStepEvent::Publish(event) => {
            tracing::Span::current().record("step", "publish");
            publish(deps, event).await.map(RunStepResponse::Published)
        }
    }
}

async fn publish<D: ObjectStore, S: ObjectStore + Clone + 'static>(
    deps: &RunStepDeps<D, S>,
    event: PublishEvent,
) -> Result<PublishResponse, RunStepError> {
    let plan = event.plan;
    if plan.engine != Engine::Athena {
        return Err(RunStepError::NotAnAthenaPlan(plan.engine));
    }
    let run = AthenaRun {
        run_time: plan.time,
        attempt: Attempt::new(&plan.attempt).map_err(RunStepError::Attempt)?,
        engine: EngineChoice { engine: plan.engine, reason: plan.engine_reason },
        outputs: event.results,
    };
    let published = publish_run(&deps.data, &deps.staging, &deps.staging_folders, &deps.publish, &run).await?;
    let manifest = published.manifest;
    // The run's metrics under Function=rank whatever the engine, so that
    // the alarms on them (RunsWithoutPlays) watch every run.
    emit_metrics("PopularityReports", &[("Function", "rank")], &run_metrics(&manifest));
    let rows = |i: usize| manifest.reports.get(i).map_or(0, |r| r.rows);
    let response = PublishResponse {
        run_id: manifest.run_id.to_string(),
        manifest_key: deps.staging.describe(&run_manifest_key(manifest.run_id)),
        engine: manifest.engine.unwrap_or(Engine::Athena),
        tracks: rows(0),
        artists: rows(1),
        products: rows(2),
        already_published: !published.newly_published,
    };
    info!(run_id = %response.run_id, tracks = response.tracks, artists = response.artists,
          products = response.products, already_published = response.already_published, "publish step done");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_parses_from_the_json_the_state_machine_sends() {
        let plan: RunStepEvent =
            serde_json::from_str(r#"{"step":"plan","time":"2026-11-19T03:00:00Z","attempt":"e-1"}"#).unwrap();
        assert!(matches!(plan, RunStepEvent::Plan(PlanEvent { ref attempt, .. }) if attempt == "e-1"));
        let day: RunStepEvent =
            serde_json::from_str(r#"{"step":"plan-day","time":"2026-11-19T00:30:00Z","attempt":"e-2"}"#).unwrap();
        assert!(matches!(day, RunStepEvent::PlanDay(_)));
        let unknown = serde_json::from_str::<RunStepEvent>(r#"{"step":"rank","time":"2026-11-19T03:00:00Z"}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn bad_output_is_permanent_and_a_failed_write_is_retried() {
        let bad = RunStepError::Publish(PublishError::NoDataManifest { query: "track_popularity" });
        assert_eq!(Diagnostic::from(bad).error_type, "BadAthenaOutput");
        let failed = RunStepError::Publish(PublishError::WriteManifest(crate::store::StoreError::S3 {
            operation: "PutObject",
            location: "s3://b/manifests/x.json".into(),
            detail: "timeout".into(),
        }));
        assert_eq!(Diagnostic::from(failed).error_type, "PublishFailed");
        let input = RunStepError::Publish(PublishError::BadInput("duplicates".into()));
        assert_eq!(Diagnostic::from(input).error_type, "BadInput");
        assert_eq!(Diagnostic::from(RunStepError::NotAnAthenaPlan(Engine::Lambda)).error_type, "InvalidEvent");
    }
}
