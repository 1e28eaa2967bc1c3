//! `popularity-bench delta`: the delta benchmark of docs/benchmarks.md.
//! Generates the sample data once, ranks it at two run times three days
//! apart with the operator binary's `popularity rank` (kept for later runs),
//! then computes the delta of every report between the two runs in a child
//! process (`popularity-bench delta-worker`), several times, and reports
//! wall time, CPU time and the child's peak resident memory, and each
//! delta's size as a share of its full report.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use clap::Args;
use popularity_reports::delta::{ensure_delta, DeltaManifest, DeltaSettings, DELTAS_PREFIX};
use popularity_reports::domain::{ReportKind, RunId};
use popularity_reports::manifest::{run_manifest_key, RunManifest};
use popularity_reports::store::{LocalDirStore, ObjectStore};

use crate::measured_child::spawn_and_wait;
use crate::rank::{ensure_sample_data, popularity_binary};

#[derive(Args)]
pub struct DeltaBenchArgs {
    #[arg(long, default_value_t = 10_000_000)]
    pub tracks: u64,
    /// Days of plays generated; both runs look back over what there is.
    #[arg(long, default_value_t = 17)]
    pub days: u32,
    /// Where sample data sets and the two ranked runs are kept between runs.
    #[arg(long, default_value = "target/bench-data")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where the delta's scratch files go (default: the system temp dir).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// The `popularity` binary that generates and ranks the two runs
    /// (default: the one beside this binary).
    #[arg(long)]
    pub popularity: Option<PathBuf>,
}

/// The hidden subcommand the benchmark runs in a child process.
#[derive(Args)]
pub struct DeltaWorkerArgs {
    #[arg(long)]
    pub staging: PathBuf,
    #[arg(long)]
    pub base: RunId,
    #[arg(long)]
    pub run: RunId,
    #[arg(long)]
    pub scratch: Option<PathBuf>,
}

const BASE_TIME: &str = "2026-11-16T03:00:00Z";
const RUN_TIME: &str = "2026-11-19T03:00:00Z";

pub async fn run(args: DeltaBenchArgs) -> anyhow::Result<()> {
    let popularity = popularity_binary(args.popularity.clone())?;
    let bench = std::env::current_exe().context("locating the popularity-bench binary")?;
    let data = ensure_sample_data(&popularity, &args.dir, args.tracks, args.days)?;
    let staging = args.dir.join(format!("delta-staging-{}-{}", args.tracks, args.days));
    let (base, run): (RunId, RunId) =
        ("20261116030000".parse().map_err(anyhow::Error::msg)?, "20261119030000".parse().map_err(anyhow::Error::msg)?);
    for (time, id) in [(BASE_TIME, base), (RUN_TIME, run)] {
        if !staging.join(run_manifest_key(id)).exists() {
            eprintln!("ranking {} at {time} into {} (once)", data.display(), staging.display());
            let status = Command::new(&popularity)
                .args(["rank", "--time", time, "--data"])
                .arg(&data)
                .arg("--out")
                .arg(&staging)
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("ranking the run at {time} failed");
            }
        }
    }
    let mut measured = Vec::new();
    for attempt in 1..=args.runs {
        let _ = std::fs::remove_dir_all(staging.join(DELTAS_PREFIX));
        let mut command = Command::new(&bench);
        command.args(["delta-worker", "--base", &base.to_string(), "--run", &run.to_string(), "--staging"]);
        command.arg(&staging);
        if let Some(scratch) = &args.scratch {
            command.arg("--scratch").arg(scratch);
        }
        let (_, usage) = spawn_and_wait(command.stdout(Stdio::null()), "delta")?;
        eprintln!(
            "run {attempt}: {:.2} s wall, {:.2} s CPU, peak RSS {} MB",
            usage.seconds,
            usage.cpu_seconds,
            usage.peak_rss_bytes / 1_000_000
        );
        measured.push(usage);
    }
    measured.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let median = &measured[measured.len() / 2];
    let peak = measured.iter().map(|m| m.peak_rss_bytes).max().unwrap_or(0);
    println!("tracks:      {}", args.tracks);
    println!("runs:        {base} -> {run}");
    println!("wall time:   best {:.2} s, median {:.2} s", measured[0].seconds, median.seconds);
    println!("CPU time:    median {:.2} s", median.cpu_seconds);
    println!("peak RSS:    {} MB", peak / 1_000_000);
    let store = LocalDirStore::new(&staging);
    let new: RunManifest = serde_json::from_slice(&store.get(&run_manifest_key(run)).await?)?;
    for kind in ReportKind::ALL {
        let key = popularity_reports::delta::delta_manifest_key(kind, run, base);
        let delta: DeltaManifest = serde_json::from_slice(&store.get(&key).await?)?;
        let rows = new.report(kind).map_or(0, |r| r.rows);
        let share = |n: u64| if rows == 0 { 0.0 } else { n as f64 * 100.0 / rows as f64 };
        println!(
            "{:<8} {:>11} rows; delta {:>11} upserts ({:.1} %), {:>9} removed ({:.1} %)",
            kind.data_type(),
            rows,
            delta.upserts,
            share(delta.upserts),
            delta.removed,
            share(delta.removed)
        );
    }
    Ok(())
}

/// One measured computation of every report's delta.
pub async fn run_worker(args: DeltaWorkerArgs) -> anyhow::Result<()> {
    let store = LocalDirStore::new(&args.staging);
    let read = |run: RunId| {
        let store = store.clone();
        async move {
            let body = store.get(&run_manifest_key(run)).await?;
            anyhow::Ok(serde_json::from_slice::<RunManifest>(&body)?)
        }
    };
    let (base, run) = (read(args.base).await?, read(args.run).await?);
    let mut settings = DeltaSettings::default();
    if let Some(scratch) = args.scratch {
        settings.scratch_dir = scratch;
    }
    for kind in ReportKind::ALL {
        let delta = ensure_delta(&store, kind, &base, &run, &settings).await?;
        println!("{} {} upserts {} removed", kind.data_type(), delta.upserts, delta.removed);
    }
    Ok(())
}
