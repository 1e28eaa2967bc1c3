//! The first step of both state machines (docs/scaling.md, "The state
//! machine"). For a run: whether its manifest already exists (a second start
//! of one scheduled time then publishes nothing), which engine ranks it and
//! why ([`crate::engine`]), and for Athena the run's queries, ready to start,
//! with the folders they write into. For a day of raw play events: whether
//! `plays/date=<day>/` is already written (its `_SUCCESS` marker), or left
//! half written by a failed attempt, and the query that writes it.
//!
//! It reads listings, footers and the manifest; it writes nothing and starts
//! nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::domain::RunId;
use crate::engine::{choose_engine, count_catalogue_rows, EngineChoice, RankEngineSetting};
use crate::input::{InputError, PLAYS_PREFIX};
use crate::manifest::{run_manifest_key, Engine};
use crate::rank::{check_run_time, RunTimeError};
use crate::scoring::{ScoringRules, ScoringRulesError};
use crate::store::{ObjectStore, StoreError};

use super::sql::{unload, with_day, Attempt, RunQuery, SqlError, UnloadFormat, DAILY_PLAYS_SQL};
use super::{RunFolders, ATHENA_RESULTS_PREFIX};

/// How runs are planned (the publish function's configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSettings {
    pub rules: ScoringRules,
    pub engine: RankEngineSetting,
    /// The rank function's memory, for `auto`.
    pub rank_memory_mb: u32,
}

/// What the state machine does with a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPlan {
    pub run_id: String,
    pub time: DateTime<Utc>,
    pub attempt: String,
    /// The run's manifest exists: nothing is to be done.
    pub already_published: bool,
    pub engine: Engine,
    pub engine_reason: String,
    /// The catalogue's rows from its footers, when they were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue_rows: Option<u64>,
    /// `s3://` folder of the attempt's query results and data manifests.
    pub query_results: String,
    /// The attempt's queries by name ([`RunQuery::name`]), as UNLOAD
    /// statements; empty unless the engine is Athena.
    pub queries: BTreeMap<String, String>,
}

/// Why a run or a day could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("nothing started: {0}")]
    RunTime(#[from] RunTimeError),
    #[error("nothing started: {0}")]
    Sql(#[from] SqlError),
    #[error("the scoring settings cannot be used, nothing started: {0}")]
    Settings(#[from] ScoringRulesError),
    #[error("bad input, nothing started: {0}")]
    Input(#[source] InputError),
    #[error("could not read the catalogue's footers or staging, nothing started; a retry may succeed: {0}")]
    Read(#[source] StoreError),
}

impl From<InputError> for PlanError {
    fn from(error: InputError) -> Self {
        match error {
            InputError::Store(store) => PlanError::Read(store),
            bad => PlanError::Input(bad),
        }
    }
}

/// Plans the run of `time` for the attempt (Step Functions execution) named
/// `attempt`.
pub async fn plan_run<D: ObjectStore, S: ObjectStore>(
    data: &D,
    staging: &S,
    folders: &RunFolders,
    settings: &PlanSettings,
    time: DateTime<Utc>,
    attempt: &str,
) -> Result<RunPlan, PlanError> {
    settings.rules.check()?;
    check_run_time(time, Utc::now())?;
    let attempt = Attempt::new(attempt)?;
    let run = RunId::from_time(time);
    let query_results = folders.uri(&folders.query_results_folder(run, &attempt));
    let mut plan = RunPlan {
        run_id: run.to_string(),
        time,
        attempt: attempt.to_string(),
        already_published: false,
        engine: Engine::Lambda,
        engine_reason: String::new(),
        catalogue_rows: None,
        query_results,
        queries: BTreeMap::new(),
    };
    match staging.get(&run_manifest_key(run)).await {
        Ok(_) => {
            info!(run_id = %run, "run already published; nothing is started");
            plan.already_published = true;
            plan.engine_reason = "the run is already published".into();
            return Ok(plan);
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(error) => return Err(PlanError::Read(error)),
    }
    let size = match settings.engine {
        RankEngineSetting::Auto => Some(count_catalogue_rows(data).await?),
        RankEngineSetting::Lambda | RankEngineSetting::Athena => None,
    };
    let EngineChoice { engine, reason } = choose_engine(settings.engine, size, settings.rank_memory_mb);
    info!(run_id = %run, engine = %engine, engine_reason = %reason, catalogue_rows = size.map(|s| s.rows),
          "engine chosen");
    plan.engine = engine;
    plan.engine_reason = reason;
    plan.catalogue_rows = size.map(|s| s.rows);
    if engine == Engine::Athena {
        for query in RunQuery::ALL {
            let select = query.select(time, &settings.rules, &attempt)?;
            let location = folders.uri(&folders.output_folder(run, &attempt, query));
            plan.queries.insert(query.name().to_owned(), unload(&select, &location, query.output_format()));
        }
    }
    Ok(plan)
}

/// What the daily state machine does with one day of raw play events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayPlan {
    pub day: NaiveDate,
    /// `plays/date=<day>/_SUCCESS` exists: the day is written, nothing is to
    /// be done.
    pub already_written: bool,
    /// The folder holds files but no `_SUCCESS`: an earlier attempt failed
    /// half way (Athena does not delete what a failed UNLOAD wrote).
    pub partially_written: bool,
    /// The folder's data files, when partially written (for the message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<String>,
    /// `s3://` of `plays/date=<day>/`.
    pub location: String,
    /// Bucket and object key of the `_SUCCESS` marker written last.
    pub marker_bucket: String,
    pub marker_key: String,
    /// `s3://` folder of the attempt's query results.
    pub query_results: String,
    /// `sql/daily_plays.sql` for the day, as an UNLOAD into `location`.
    pub query: String,
}

/// The marker written into a day's folder once it is complete. rank skips
/// it (a name starting with `_` is never data).
pub const DAY_WRITTEN_MARKER: &str = "_SUCCESS";

/// Plans the aggregation of the day before `time` (a schedule firing just
/// after midnight UTC aggregates the day that just ended).
pub async fn plan_day<D: ObjectStore>(
    data: &D,
    data_folders: &RunFolders,
    staging_folders: &RunFolders,
    time: DateTime<Utc>,
    attempt: &str,
) -> Result<DayPlan, PlanError> {
    check_run_time(time, Utc::now())?;
    let attempt = Attempt::new(attempt)?;
    let day = time.date_naive() - Duration::days(1);
    let folder = format!("{PLAYS_PREFIX}date={}/", day.format("%Y-%m-%d"));
    let marker = format!("{folder}{DAY_WRITTEN_MARKER}");
    let listed = data.list(&folder).await.map_err(PlanError::Read)?;
    let already_written = listed.iter().any(|entry| entry.key == marker);
    let leftovers: Vec<String> = if already_written {
        Vec::new()
    } else {
        listed.iter().filter(|entry| !entry.key.ends_with('/')).map(|entry| data.describe(&entry.key)).collect()
    };
    let location = data_folders.uri(&folder);
    let select = with_day(DAILY_PLAYS_SQL, "sql/daily_plays.sql", day)?;
    let query_results =
        staging_folders.uri(&format!("{ATHENA_RESULTS_PREFIX}daily-plays/{}/{attempt}/", day.format("%Y-%m-%d")));
    info!(day = %day, already_written, leftovers = leftovers.len(), "day planned");
    Ok(DayPlan {
        day,
        already_written,
        partially_written: !leftovers.is_empty(),
        leftovers,
        query: unload(&select, &location, UnloadFormat::Parquet),
        location,
        marker_bucket: data_folders.bucket().to_owned(),
        marker_key: data_folders.object_key(&marker),
        query_results,
    })
}
