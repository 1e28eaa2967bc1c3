//! `popularity rank --engine athena-standin` (and `popularity daily-plays`):
//! the Athena path of template.yaml run locally by the stand-ins of
//! [`crate::athena_standin`], into the same `--out` as `popularity rank`, so
//! that the two can be compared byte for byte.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Args;
use popularity_reports::athena::plan::PlanSettings;
use popularity_reports::athena::RunFolders;
use popularity_reports::domain::{Format, RunId};
use popularity_reports::engine::RankEngineSetting;
use popularity_reports::manifest::{run_manifest_key, RunManifest};
use popularity_reports::rank::{check_run_time, RankSettings};
use popularity_reports::scoring::ScoringRules;
use popularity_reports::store::{ObjectStore, StoreLocation};

use crate::athena_standin::asl::{Execution, Outcome};
use crate::athena_standin::{
    execute, execution_name, scheduled_event, StandinTasks, StandinTools, DAILY_PLAYS_STATE_MACHINE, RANK_STATE_MACHINE,
};
use crate::commands::{print_published, AnyStore};

/// The engines `popularity rank` runs here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalEngine {
    /// This process, with the rank Lambda's code.
    Lambda,
    /// The state machine of template.yaml, DuckDB standing in for Athena.
    AthenaStandin,
}

/// Options of the Athena stand-in.
#[derive(Args, Debug, Clone)]
pub struct StandinArgs {
    /// athena-standin: the checkout holding template.yaml, scripts/ and the
    /// .venv with DuckDB (default: the current directory).
    #[arg(long)]
    pub checkout: Option<PathBuf>,
    /// athena-standin: the most files each UNLOAD writes (Athena writes
    /// several, in parallel).
    #[arg(long, default_value_t = 16)]
    pub standin_files: usize,
    /// athena-standin: the RankEngine setting the plan step sees: athena,
    /// or auto to let it count the catalogue and choose.
    #[arg(long, default_value = "athena")]
    pub rank_engine: String,
    /// athena-standin with auto: the rank function's memory (MB) auto
    /// compares the catalogue with.
    #[arg(long, default_value_t = popularity_reports::config::DEFAULT_RANK_MEMORY_MB)]
    pub rank_memory_mb: u32,
}

impl StandinArgs {
    fn tools(&self) -> anyhow::Result<StandinTools> {
        let root = match &self.checkout {
            Some(root) => root.clone(),
            None => std::env::current_dir()?,
        };
        let tools = StandinTools::in_checkout(&root, self.standin_files.max(1));
        tools.check()?;
        Ok(tools)
    }

    fn plan(&self, rules: ScoringRules) -> anyhow::Result<PlanSettings> {
        let engine = RankEngineSetting::parse(&self.rank_engine).with_context(|| {
            format!("--rank-engine {:?}: expected {}", self.rank_engine, RankEngineSetting::EXPECTED)
        })?;
        Ok(PlanSettings { rules, engine, rank_memory_mb: self.rank_memory_mb })
    }
}

/// A store's `s3://` root for the stand-in, and its directory when local.
fn folders_of(location: &StoreLocation, local_bucket: &str) -> (RunFolders, Option<PathBuf>) {
    match location {
        StoreLocation::Directory(path) => (RunFolders::new(local_bucket, ""), Some(path.clone())),
        StoreLocation::S3 { bucket, prefix } => (RunFolders::new(bucket, prefix), None),
    }
}

/// The stand-ins, over the stores of `data` and `out`.
#[allow(clippy::too_many_arguments)]
async fn execute_machine(
    tools: &StandinTools,
    data: &StoreLocation,
    out: &StoreLocation,
    rank: RankSettings,
    plan: PlanSettings,
    machine: &str,
    time: DateTime<Utc>,
) -> anyhow::Result<Execution> {
    let (data_folders, data_root) = folders_of(data, "local-data");
    let (staging_folders, staging_root) = folders_of(out, "local-staging");
    let data_store = AnyStore::open(data).await;
    let out_store = AnyStore::open(out).await;
    let name = execution_name("standin");
    with_store!(&data_store, d => with_store!(&out_store, o => {
        let mut tasks = StandinTasks::new(
            tools, d.clone(), data_root.clone(), data_folders.clone(), o.clone(), staging_root.clone(),
            staging_folders.clone(), rank, plan,
        )?;
        execute(&mut tasks, machine, scheduled_event(time), &name).await
    }))
}

fn outcome(machine: &str, execution: &Execution) -> anyhow::Result<()> {
    eprintln!("{machine}: {}", execution.states.join(" -> "));
    match &execution.outcome {
        Outcome::Succeeded { .. } => Ok(()),
        Outcome::Failed { error, cause } => bail!("{machine} failed with {error}: {cause}"),
    }
}

/// `popularity rank --engine athena-standin`.
pub async fn rank(args: &crate::commands::RankArgs, settings: RankSettings) -> anyhow::Result<()> {
    if args.format != Format::Json || args.gzip {
        bail!("--engine athena-standin publishes the canonical reports (json, uncompressed) as the publish step does");
    }
    let tools = args.standin.tools()?;
    let plan = args.standin.plan(settings.rules)?;
    let started = Instant::now();
    let execution =
        execute_machine(&tools, &args.data, &args.out, settings, plan, RANK_STATE_MACHINE, args.time).await?;
    outcome(RANK_STATE_MACHINE, &execution)?;
    let out = AnyStore::open(&args.out).await;
    let run = RunId::from_time(args.time);
    let body = with_store!(&out, s => s.get(&run_manifest_key(run)).await).context("reading the run's manifest")?;
    let manifest: RunManifest = serde_json::from_slice(&body)?;
    if execution.states.iter().any(|s| s == "AlreadyPublished") {
        eprintln!("run {run} is already published there; nothing was written");
    }
    print_published(&manifest, &out, started.elapsed().as_secs_f64());
    Ok(())
}

/// `popularity daily-plays`: one day of raw play events into plays/.
#[derive(Args)]
pub struct DailyPlaysArgs {
    /// Where play-events/ is and plays/ goes: a directory, or s3://bucket[/prefix].
    #[arg(long)]
    pub data: StoreLocation,
    /// Where the queries' results go (a staging directory or bucket).
    #[arg(long)]
    pub out: StoreLocation,
    /// The schedule's time: the day before it is aggregated.
    #[arg(long)]
    pub time: DateTime<Utc>,
    #[command(flatten)]
    pub standin: StandinArgs,
}

pub async fn daily_plays(args: DailyPlaysArgs) -> anyhow::Result<()> {
    check_run_time(args.time, Utc::now()).map_err(|e| anyhow::anyhow!("--time: {e}"))?;
    let tools = args.standin.tools()?;
    let rules = ScoringRules::default();
    let plan = args.standin.plan(rules)?;
    let rank = RankSettings { rules, ..RankSettings::default() };
    let execution =
        execute_machine(&tools, &args.data, &args.out, rank, plan, DAILY_PLAYS_STATE_MACHINE, args.time).await?;
    outcome(DAILY_PLAYS_STATE_MACHINE, &execution)?;
    let day = (args.time - chrono::Duration::days(1)).format("%Y-%m-%d");
    if execution.states.iter().any(|s| s == "DayAlreadyWritten") {
        println!("plays/date={day}/ is already written; nothing was written");
    } else {
        println!("plays/date={day}/ written");
    }
    Ok(())
}
