//! `popularity-bench rank`: the ranking benchmark of docs/benchmarks.md.
//! Generates the sample data once (kept for later runs), then runs the
//! operator binary's `popularity rank` on local files in a child process
//! several times and reports wall time, input rows per second and the
//! child's peak resident memory (from `wait4`'s rusage, so the generator's
//! memory is not counted).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use crate::measured_child::spawn_and_wait;

#[derive(Args)]
pub struct RankBenchArgs {
    #[arg(long, default_value_t = 10_000_000)]
    pub tracks: u64,
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Where sample data sets are kept between runs.
    #[arg(long, default_value = "target/bench-data")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Passed to `rank --threads`.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where each run writes its reports (default: <dir>/rank-output).
    /// A tmpfs such as /dev/shm takes the machine's disk out of the measure.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Passed to `rank --format`.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// The `popularity` binary to measure (default: the one beside this
    /// binary, as `cargo build --release -p popularity-cli -p popularity-bench`
    /// puts them).
    #[arg(long)]
    pub popularity: Option<PathBuf>,
}

const END_DATE: &str = "2026-11-18";
const RUN_TIME: &str = "2026-11-19T03:00:00Z";

struct Measured {
    seconds: f64,
    peak_rss_bytes: u64,
}

pub fn run(args: RankBenchArgs) -> anyhow::Result<()> {
    let popularity = popularity_binary(args.popularity.clone())?;
    let data = ensure_sample_data(&popularity, &args.dir, args.tracks, args.days)?;
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("rank-output"));
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let _ = std::fs::remove_dir_all(&out);
        let mut command = Command::new(&popularity);
        command
            .args(["rank", "--time", RUN_TIME, "--format", &args.format, "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out);
        if let Some(threads) = args.threads {
            command.args(["--threads", &threads.to_string()]);
        }
        let measured = run_measured(&mut command)?;
        eprintln!("run {run}: {:.2} s, peak RSS {} MB", measured.seconds, measured.peak_rss_bytes / 1_000_000);
        results.push(measured);
    }
    let manifest_path = out.join("manifests").join("20261119030000.json");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
    let input_rows = manifest["inputs"]["catalogueRows"].as_u64().unwrap_or(0)
        + manifest["inputs"]["playRows"].as_u64().unwrap_or(0);
    results.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let median = &results[results.len() / 2];
    let peak = results.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0);
    println!("tracks:           {}", args.tracks);
    println!("input rows:       {input_rows} (catalogue + plays)");
    println!("runs:             {}", results.len());
    println!("wall time:        best {:.2} s, median {:.2} s", results[0].seconds, median.seconds);
    println!("throughput:       {:.1} M input rows/s (median)", input_rows as f64 / median.seconds / 1e6);
    println!("peak RSS:         {} MB ({:.0} bytes/track)", peak / 1_000_000, peak as f64 / args.tracks as f64);
    Ok(())
}

/// The operator binary: `given`, or `popularity` beside this binary. Fails
/// when it is not there, rather than measuring something else.
pub(crate) fn popularity_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => {
            let bench = std::env::current_exe().context("locating the popularity-bench binary")?;
            bench.with_file_name(format!("popularity{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if !path.is_file() {
        bail!(
            "{} is missing: build the operator binary beside this one (cargo build --release -p popularity-cli \
             -p popularity-bench) or pass --popularity PATH",
            path.display()
        );
    }
    eprintln!("measuring {}", path.display());
    Ok(path)
}

/// The sample data set of `tracks` x `days` under `dir`, generated (seed
/// 42, ending on END_DATE) the first time it is asked for.
pub(crate) fn ensure_sample_data(popularity: &Path, dir: &Path, tracks: u64, days: u32) -> anyhow::Result<PathBuf> {
    let data = dir.join(format!("tracks-{tracks}-days-{days}"));
    let ready_marker = data.join(".complete");
    if !ready_marker.exists() {
        eprintln!("generating {tracks} tracks x {days} days into {} (once)", data.display());
        let status = Command::new(popularity)
            .args(["generate", "--tracks", &tracks.to_string(), "--days", &days.to_string()])
            .args(["--end-date", END_DATE, "--seed", "42", "--out"])
            .arg(&data)
            .status()?;
        if !status.success() {
            bail!("generating the sample data failed");
        }
        std::fs::write(&ready_marker, b"")?;
    }
    Ok(data)
}

/// Runs the command to completion and measures its wall time and peak RSS.
fn run_measured(command: &mut Command) -> anyhow::Result<Measured> {
    let (_, usage) = spawn_and_wait(command.stdout(std::process::Stdio::null()), "rank")?;
    Ok(Measured { seconds: usage.seconds, peak_rss_bytes: usage.peak_rss_bytes })
}
