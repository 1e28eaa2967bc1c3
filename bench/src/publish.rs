//! `popularity-bench publish`: the publish step's benchmark of
//! docs/benchmarks.md ("The publish step"). Writes, once, a stand-in of
//! Athena's output for a track report of `--rows` ranks in `--files` Snappy
//! Parquet files as UNLOAD writes them (blocks of ranks round-robin across
//! files, nullable lower-case columns, row groups of 4,194,304 rows, a data
//! manifest; small artist and product reports beside it),
//! then, in child processes (`popularity-bench publish-worker`) measured
//! with `wait4`:
//! - `publish`: the real publish step (`publish_run`) from that output into
//!   a local staging directory;
//! - `memory`: the same parts written from items already in memory, the
//!   way rank writes its parts (every part through `PartWriter`, as many
//!   at once as there are cores) — the baseline.
//!
//! Both write the same bytes (checked through the parts' SHA-256); each
//! prints its own time for the work itself, and the parent adds each
//! child's peak RSS and CPU time, then the ratios of publish to memory.
//! `--split` adds `merge`: the track report's files read and merged alone,
//! nothing written, to see how much of publish is reading.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use integration_tests::athena_output::{athena_names, counts_file, ReportFileWriter, ROW_GROUP_ROWS};
use popularity_reports::athena::merge::ReportMerge;
use popularity_reports::athena::publish::{publish_run, AthenaRun, PublishSettings, QueryOutput};
use popularity_reports::athena::sql::{Attempt, RunQuery};
use popularity_reports::athena::RunFolders;
use popularity_reports::domain::{part_key, Encoding, ReportKind, RunId};
use popularity_reports::engine::EngineChoice;
use popularity_reports::manifest::REPORTS_PREFIX;
use popularity_reports::report_writer::{PartSummary, PartWriter, ReportItem};
use popularity_reports::scoring::ScoringRules;
use popularity_reports::store::{upload_from_blocking, LocalDirStore, ObjectSink, ObjectStore};

use crate::measured_child::spawn_and_wait;

#[derive(Args)]
pub struct PublishBenchArgs {
    /// Ranks of the track report.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// Files Athena's output of each large report is split into.
    #[arg(long, default_value_t = 16)]
    pub files: usize,
    #[arg(long, default_value_t = 5_000_000)]
    pub part_rows: u64,
    /// Where the stand-in output is kept between runs.
    #[arg(long, default_value = "target/bench-data")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also measure the track report's read and merge alone (`merge`: the
    /// publish step without writing parts), to split its time.
    #[arg(long)]
    pub split: bool,
    /// Threads formatting parts beside the merges, shared among the ranges
    /// (the publish function uses its cores; 0: each merge's thread formats
    /// its parts).
    #[arg(long)]
    pub format_threads: Option<usize>,
    /// Ranges of parts the publish step merges and writes at once (the
    /// publish function uses its cores).
    #[arg(long)]
    pub parts_at_once: Option<usize>,
}

#[derive(Args)]
pub struct PublishWorkerArgs {
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub rows: u64,
    #[arg(long)]
    pub part_rows: u64,
    /// `publish`, `memory` or `merge`.
    #[arg(long)]
    pub mode: String,
    #[arg(long)]
    pub format_threads: Option<usize>,
    #[arg(long)]
    pub parts_at_once: Option<usize>,
}

const RUN_TIME: &str = "2026-11-19T03:00:00Z";
const ATTEMPT: &str = "bench";
const BUCKET: &str = "bench-staging";
/// Rows of the artist and product reports: small beside the tracks.
const SMALL_REPORT_ROWS: u64 = 10_000;

fn run_id() -> RunId {
    RunId::from_time(RUN_TIME.parse().expect("a valid time"))
}

fn folders() -> RunFolders {
    RunFolders::new(BUCKET, "")
}

fn attempt() -> Attempt {
    Attempt::new(ATTEMPT).expect("a valid attempt name")
}

fn report_rows(kind: ReportKind, rows: u64) -> u64 {
    if kind == ReportKind::Track {
        rows
    } else {
        SMALL_REPORT_ROWS
    }
}

/// The item of rank `rank` (1-based) of a report of `rows`: distinct ids (an
/// odd multiplier is a bijection on u32), modifiers falling from 1.0.
fn item(rank: u64, rows: u64) -> ReportItem {
    let id = i64::from((rank as u32).wrapping_mul(2_654_435_761));
    let hundredths = 100 - ((rank - 1) * 100 / rows) as u8;
    ReportItem { id, search_rank: rank, modifier_hundredths: hundredths }
}

/// Ranks per block of the round-robin: every file gets several blocks.
fn block(rows: u64, files: usize) -> u64 {
    (rows / (files as u64 * 8)).max(1)
}

/// Writes the stand-in output under `root` once.
fn ensure_output(root: &Path, rows: u64, files: usize) -> anyhow::Result<()> {
    let marker = root.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    let started = Instant::now();
    eprintln!("writing a stand-in output of {rows} ranks in {files} files into {} (once)", root.display());
    let _ = std::fs::remove_dir_all(root);
    // publish lists the catalogue and the plays; their contents are not read.
    std::fs::create_dir_all(root.join("data/catalogue"))?;
    std::fs::write(root.join("data/catalogue/part-0.parquet"), b"not read")?;
    let staging = root.join("staging");
    let (run, attempt, folders) = (run_id(), attempt(), folders());
    for kind in ReportKind::ALL {
        let query = RunQuery::Report(kind);
        let total = report_rows(kind, rows);
        let count = if kind == ReportKind::Track { files } else { 2 };
        let folder = folders.output_folder(run, &attempt, query);
        std::fs::create_dir_all(staging.join(&folder))?;
        let keys: Vec<String> = (0..count).map(|i| format!("{folder}q-bench_{i:03}")).collect();
        let size = block(total, count);
        // Two files at a time: each buffers a row group (~100 MB) while it
        // is written.
        let indexed: Vec<(usize, &String)> = keys.iter().enumerate().collect();
        for pair in indexed.chunks(2) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = pair
                    .iter()
                    .map(|&(index, key)| {
                        let path = staging.join(key);
                        scope.spawn(move || write_file(&path, kind, total, size, count, index))
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| h.join().expect("a writer thread"))
            })?;
        }
        write_manifest(&staging, query, &keys)?;
    }
    let counts = serde_json::json!({"catalogue_rows": rows, "catalogue_tracks": rows, "artists": SMALL_REPORT_ROWS,
        "products": SMALL_REPORT_ROWS, "play_rows": rows * 9, "unknown_track_play_rows": 0,
        "unknown_track_plays": 0, "negative_play_rows": 0});
    let folder = folders.output_folder(run, &attempt, RunQuery::RunInputs);
    std::fs::create_dir_all(staging.join(&folder))?;
    let key = format!("{folder}q-bench_000");
    std::fs::write(staging.join(&key), counts_file(&counts))?;
    write_manifest(&staging, RunQuery::RunInputs, &[key])?;
    std::fs::write(&marker, b"")?;
    eprintln!("  written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn write_file(path: &Path, kind: ReportKind, rows: u64, block: u64, files: usize, index: usize) -> anyhow::Result<()> {
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut out = ReportFileWriter::new(file, &athena_names(kind), ROW_GROUP_ROWS)?;
    let mut first = index as u64 * block + 1;
    while first <= rows {
        for rank in first..(first + block).min(rows + 1) {
            let item = item(rank, rows);
            out.push((item.id, rank, f64::from(item.modifier_hundredths) / 100.0))?;
        }
        first += block * files as u64;
    }
    out.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn write_manifest(staging: &Path, query: RunQuery, keys: &[String]) -> anyhow::Result<()> {
    let folder = folders().query_results_folder(run_id(), &attempt());
    std::fs::create_dir_all(staging.join(&folder))?;
    let text: String = keys.iter().map(|key| format!("{}\n", folders().uri(key))).collect();
    std::fs::write(staging.join(format!("{folder}{}-manifest.csv", query.name())), text)?;
    Ok(())
}

pub async fn run(args: PublishBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the popularity-bench binary")?;
    let root = args.dir.join(format!("publish-parquet-{}-{}", args.rows, args.files));
    ensure_output(&root, args.rows, args.files)?;
    let mut measured: Vec<(String, f64, f64, f64, u64, String)> = Vec::new();
    let modes: &[&str] = if args.split { &["publish", "memory", "merge"] } else { &["publish", "memory"] };
    for attempt in 1..=args.runs {
        for &mode in modes {
            for folder in ["staging/reports", "staging/manifests", "memory"] {
                let _ = std::fs::remove_dir_all(root.join(folder));
            }
            let mut command = Command::new(&exe);
            command.args(["publish-worker", "--mode", mode, "--rows", &args.rows.to_string()]);
            command.args(["--part-rows", &args.part_rows.to_string(), "--root"]).arg(&root);
            if let Some(threads) = args.format_threads {
                command.args(["--format-threads", &threads.to_string()]);
            }
            if let Some(ranges) = args.parts_at_once {
                command.args(["--parts-at-once", &ranges.to_string()]);
            }
            let (mut child, usage) = spawn_and_wait(command.stdout(Stdio::piped()), mode)?;
            let mut printed = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().expect("piped"), &mut printed)?;
            let mut lines = printed.lines();
            let work: f64 = lines.next().and_then(|l| l.parse().ok()).context("the worker's time")?;
            let digest = lines.next().unwrap_or_default().to_owned();
            eprintln!(
                "run {attempt} {mode:<8} {work:>7.2} s work, {:>7.2} s process, {:>7.2} s CPU, peak RSS {} MB",
                usage.seconds,
                usage.cpu_seconds,
                usage.peak_rss_bytes / 1_000_000
            );
            measured.push((mode.to_owned(), work, usage.seconds, usage.cpu_seconds, usage.peak_rss_bytes, digest));
        }
    }
    let digests: std::collections::BTreeSet<&str> =
        measured.iter().filter(|m| m.0 != "merge").map(|m| m.5.as_str()).collect();
    if digests.len() != 1 {
        bail!("the publish step and the baseline wrote different parts: {digests:?}");
    }
    println!("ranks:        {} (track report; artist and product {SMALL_REPORT_ROWS} each)", args.rows);
    println!("files:        {} per report, part rows {}", args.files, args.part_rows);
    // (work median, work best, CPU median) of each mode.
    let mut summary = std::collections::BTreeMap::new();
    for &mode in modes {
        let mut runs: Vec<_> = measured.iter().filter(|m| m.0 == mode).collect();
        runs.sort_by(|a, b| a.1.total_cmp(&b.1));
        let median = runs[runs.len() / 2];
        let mut cpu: Vec<f64> = runs.iter().map(|m| m.3).collect();
        cpu.sort_by(f64::total_cmp);
        let peak = runs.iter().map(|m| m.4).max().unwrap_or(0);
        println!(
            "{mode:<8}      work median {:.2} s (best {:.2} s), process {:.2} s, CPU {:.2} s (median), peak RSS {} MB",
            median.1,
            runs[0].1,
            median.2,
            cpu[cpu.len() / 2],
            peak / 1_000_000
        );
        summary.insert(mode, (median.1, runs[0].1, cpu[cpu.len() / 2]));
    }
    let (publish, memory) = (summary["publish"], summary["memory"]);
    println!(
        "publish / memory: work median {:.2}x, best {:.2}x, CPU {:.2}x (target: 1.2x)",
        publish.0 / memory.0,
        publish.1 / memory.1,
        publish.2 / memory.2
    );
    println!("same parts:   yes (SHA-256 of every part equal)");
    Ok(())
}

/// One measured publish or baseline write; prints its work time and a
/// digest of its parts' SHA-256s.
pub async fn run_worker(args: PublishWorkerArgs) -> anyhow::Result<()> {
    let staging = LocalDirStore::new(args.root.join("staging"));
    let rules = ScoringRules::default();
    let started = Instant::now();
    let parts: Vec<PartSummary> = match args.mode.as_str() {
        "publish" => {
            // As the publish function's main does.
            popularity_reports::memory::limit_malloc_arenas(popularity_reports::memory::PUBLISH_MALLOC_ARENAS);
            let data = LocalDirStore::new(args.root.join("data"));
            let run = AthenaRun {
                run_time: RUN_TIME.parse()?,
                attempt: attempt(),
                engine: EngineChoice::athena("bench-publish"),
                outputs: RunQuery::ALL
                    .into_iter()
                    .filter(|q| *q != RunQuery::TrackScores)
                    .map(|q| QueryOutput {
                        query: q.name().to_owned(),
                        query_execution_id: None,
                        data_manifest: Some(folders().uri(&format!(
                            "{}{}-manifest.csv",
                            folders().query_results_folder(run_id(), &attempt()),
                            q.name()
                        ))),
                    })
                    .collect(),
            };
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let format_threads = args.format_threads.unwrap_or(cores);
            let parts_at_once = args.parts_at_once.unwrap_or(cores);
            let settings = PublishSettings { rules, part_rows: args.part_rows, format_threads, parts_at_once };
            let published = publish_run(&data, &staging, &folders(), &settings, &run).await?;
            published.manifest.reports.into_iter().flat_map(|r| r.parts).collect()
        }
        "memory" => {
            let reports: Vec<(ReportKind, std::sync::Arc<Vec<ReportItem>>)> = ReportKind::ALL
                .into_iter()
                .map(|kind| {
                    let rows = report_rows(kind, args.rows);
                    (kind, std::sync::Arc::new((1..=rows).map(|rank| item(rank, rows)).collect()))
                })
                .collect();
            let out = LocalDirStore::new(args.root.join("memory"));
            let started = Instant::now();
            let parts = write_from_memory(&out, &reports, args.part_rows).await?;
            println!("{:.3}", started.elapsed().as_secs_f64());
            println!("{}", digest(&parts));
            return Ok(());
        }
        "merge" => {
            let folder = folders().output_folder(run_id(), &attempt(), RunQuery::Report(ReportKind::Track));
            let mut keys: Vec<String> = staging.list(&folder).await?.into_iter().map(|e| e.key).collect();
            keys.sort();
            let mut merge = ReportMerge::open(&staging, ReportKind::Track, &keys, Some(args.rows)).await?;
            let items = tokio::task::spawn_blocking(move || {
                let (mut items, mut batch) = (0u64, Vec::with_capacity(8192));
                loop {
                    batch.clear();
                    match merge.next_items(&mut batch, 8192)? {
                        0 => break,
                        merged => items += merged as u64,
                    }
                }
                anyhow::Ok(items)
            })
            .await??;
            println!("{:.3}", started.elapsed().as_secs_f64());
            println!("merged {items}");
            return Ok(());
        }
        other => bail!("--mode {other}: expected publish, memory or merge"),
    };
    println!("{:.3}", started.elapsed().as_secs_f64());
    println!("{}", digest(&parts));
    Ok(())
}

fn digest(parts: &[PartSummary]) -> String {
    parts.iter().map(|p| format!("{}={}", p.key, p.sha256)).collect::<Vec<_>>().join(",")
}

/// Every part of every report written from memory, as many at once as
/// there are cores: what rank's last phase does.
async fn write_from_memory<S: ObjectSink>(
    out: &S,
    reports: &[(ReportKind, std::sync::Arc<Vec<ReportItem>>)],
    part_rows: u64,
) -> anyhow::Result<Vec<PartSummary>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let part_rows = part_rows.max(1) as usize;
    let encoding = Encoding::default();
    let jobs: Vec<(ReportKind, std::sync::Arc<Vec<ReportItem>>, usize)> = reports
        .iter()
        .flat_map(|(kind, items)| (0..items.len().div_ceil(part_rows)).map(move |part| (*kind, items.clone(), part)))
        .collect();
    let parts: Vec<PartSummary> = futures_util::stream::iter(jobs)
        .map(|(kind, items, part)| async move {
            let key = format!("{REPORTS_PREFIX}{}", part_key(kind, run_id(), part + 1, encoding));
            let range = part * part_rows..((part + 1) * part_rows).min(items.len());
            let ((rows, bytes, sha256), _) = upload_from_blocking(out, &key, encoding.content_type(), move |sink| {
                let mut writer = PartWriter::new(kind, encoding, sink)?;
                for item in &items[range] {
                    writer.push(*item)?;
                }
                let (rows, bytes, sha256, _) = writer.finish()?;
                Ok::<_, std::io::Error>((rows, bytes, sha256))
            })
            .await?;
            anyhow::Ok(PartSummary { key, rows, bytes, sha256 })
        })
        .buffered(threads)
        .try_collect()
        .await?;
    Ok(parts)
}
