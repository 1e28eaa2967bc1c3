//! The `generate` and `rank` subcommands: parse locations, build the store
//! for each (a directory, or an S3 bucket through the default AWS
//! configuration, which honours `AWS_ENDPOINT_URL`), call the library.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use popularity_reports::domain::{Compression, Encoding, Format};
use popularity_reports::rank::{check_run_time, rank_run, RankSettings};
use popularity_reports::sample::{self, SampleProgress, SampleSpec};
use popularity_reports::scoring::ScoringRules;
use popularity_reports::store::{s3_client, LocalDirStore, ObjectSink, ObjectStore, S3Store, StoreLocation};

#[derive(Args)]
pub struct GenerateArgs {
    /// Number of tracks in the catalogue (1,000 to 100,000,000).
    #[arg(long)]
    pub tracks: u64,
    /// Number of days of plays, ending with --end-date.
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    /// Last day of plays (UTC), YYYY-MM-DD.
    #[arg(long)]
    pub end_date: NaiveDate,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A directory, or s3://bucket[/prefix].
    #[arg(long)]
    pub out: StoreLocation,
}

#[derive(Args)]
pub struct RankArgs {
    /// Where catalogue/ and plays/ are: a directory, or s3://bucket[/prefix].
    #[arg(long)]
    pub data: StoreLocation,
    /// Where reports/ and manifests/ go: a directory, or s3://bucket[/prefix].
    #[arg(long)]
    pub out: StoreLocation,
    /// Run time T (RFC 3339), as the schedule event's `time`.
    #[arg(long)]
    pub time: DateTime<Utc>,
    /// json, jsonl or tsv (staging reports are text; parquet is for deliveries).
    #[arg(long, default_value = "json")]
    pub format: Format,
    /// Compress parts with gzip (adds .gz).
    #[arg(long)]
    pub gzip: bool,
    #[arg(long, env = "PART_ROWS", default_value_t = 5_000_000)]
    pub part_rows: u64,
    #[arg(long, env = "LOOKBACK_DAYS", default_value_t = 28)]
    pub lookback_days: u32,
    #[arg(long, env = "HALF_LIFE_DAYS", default_value_t = 7.0)]
    pub half_life_days: f64,
    /// Decoding and writing threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Input objects up to this many MiB are fetched whole, larger ones by
    /// ranged GETs of their row groups.
    #[arg(long, default_value_t = popularity_reports::input::WHOLE_READ_MAX_BYTES >> 20)]
    pub whole_read_max_mib: u64,
    /// The engine: `lambda` ranks in this process with the rank Lambda's
    /// code; `athena-standin` executes the state machine of template.yaml
    /// with DuckDB standing in for Athena, then the real publish step
    /// (docs/scaling.md, "Running the Athena path locally"; JSON parts only).
    #[arg(long, value_enum, default_value_t = crate::standin_command::LocalEngine::Lambda)]
    pub engine: crate::standin_command::LocalEngine,
    #[command(flatten)]
    pub standin: crate::standin_command::StandinArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// A directory, or s3://bucket[/prefix].
    pub location: StoreLocation,
    /// Only keys starting with this (relative to the location).
    #[arg(long, default_value = "")]
    pub prefix: String,
}

/// A store of either kind, so one code path serves both.
pub enum AnyStore {
    Directory(LocalDirStore),
    S3(S3Store),
}

impl AnyStore {
    pub async fn open(location: &StoreLocation) -> Self {
        match location {
            StoreLocation::Directory(path) => AnyStore::Directory(LocalDirStore::new(path)),
            StoreLocation::S3 { bucket, prefix } => {
                let config = popularity_reports::sdk_config::load_sdk_config().await;
                AnyStore::S3(S3Store::new(s3_client(&config), bucket.clone(), prefix))
            }
        }
    }
}

/// Calls `$body` with `$store` bound to the concrete store inside `$any`.
macro_rules! with_store {
    ($any:expr, $store:ident => $body:expr) => {
        match $any {
            AnyStore::Directory($store) => $body,
            AnyStore::S3($store) => $body,
        }
    };
}

pub async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let spec = SampleSpec { tracks: args.tracks, days: args.days, end_date: args.end_date, seed: args.seed };
    let store = AnyStore::open(&args.out).await;
    let started = Instant::now();
    let interactive = std::io::stderr().is_terminal();
    let progress = move |p: SampleProgress| {
        let line = format!(
            "  {}/{} files, {} rows, {:.1} s",
            p.files_done,
            p.files_total,
            p.rows_written,
            started.elapsed().as_secs_f64()
        );
        if interactive {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    };
    let summary = with_store!(&store, s => sample::generate(s, &spec, &progress).await)?;
    if interactive {
        eprintln!();
    }
    println!(
        "generated {} tracks ({} artists, {} products) and {} play rows in {} files in {:.1} s",
        summary.catalogue_rows,
        summary.artists,
        summary.products,
        summary.play_rows,
        summary.files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn rank(args: RankArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.format.is_text(),
        "--format {}: staging reports are text (json, jsonl or tsv); parquet is a delivery format a feed asks for",
        args.format
    );
    let mut settings = RankSettings {
        rules: ScoringRules { lookback_days: args.lookback_days, half_life_days: args.half_life_days },
        part_rows: args.part_rows,
        encoding: Encoding {
            format: args.format,
            compression: if args.gzip { Compression::Gzip } else { Compression::None },
        },
        ..RankSettings::default()
    };
    if let Some(threads) = args.threads {
        settings.threads = threads;
    }
    settings.whole_read_max_bytes = args.whole_read_max_mib.saturating_mul(1 << 20);
    settings
        .rules
        .check()
        .map_err(|e| anyhow::anyhow!("--lookback-days / --half-life-days (or LOOKBACK_DAYS / HALF_LIFE_DAYS): {e}"))?;
    check_run_time(args.time, Utc::now()).map_err(|e| anyhow::anyhow!("--time: {e}"))?;
    if args.engine == crate::standin_command::LocalEngine::AthenaStandin {
        return crate::standin_command::rank(&args, settings).await;
    }
    let data = AnyStore::open(&args.data).await;
    let out = AnyStore::open(&args.out).await;
    let started = Instant::now();
    let published =
        with_store!(&data, input => with_store!(&out, output => rank_run(input, output, &settings, args.time).await))
            .context("ranking failed")?;
    if !published.newly_published {
        eprintln!("run {} is already published there; nothing was written", published.manifest.run_id);
    }
    print_published(&published.manifest, &out, started.elapsed().as_secs_f64());
    Ok(())
}

/// The summary `popularity rank` prints of a published run.
pub fn print_published(manifest: &popularity_reports::manifest::RunManifest, out: &AnyStore, elapsed: f64) {
    for report in &manifest.reports {
        let bytes: u64 = report.parts.iter().map(|p| p.bytes).sum();
        println!(
            "{:<20} {:>12} rows {:>4} part(s) {:>14} bytes",
            report.data_type,
            report.rows,
            report.parts.len(),
            bytes
        );
    }
    let manifest_key = popularity_reports::manifest::run_manifest_key(manifest.run_id);
    let described = with_store!(out, s => s.describe(&manifest_key));
    println!(
        "run {} ranked {} play rows of {} days in {:.2} s; manifest {}",
        manifest.run_id,
        manifest.inputs.play_rows,
        manifest.scoring.days_with_plays.len(),
        elapsed,
        described
    );
    if manifest.inputs.unknown_track_play_rows > 0 {
        println!("ignored {} play rows of tracks not in the catalogue", manifest.inputs.unknown_track_play_rows);
    }
    if let (Some(engine), Some(reason)) = (manifest.engine, &manifest.engine_reason) {
        println!("engine {engine}: {reason}");
    }
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = AnyStore::open(&args.location).await;
    let entries = with_store!(&store, s => s.list(&args.prefix).await)?;
    for entry in &entries {
        let described = with_store!(&store, s => s.describe(&entry.key));
        println!("{:>14}  {described}", entry.size);
    }
    println!("{} object(s)", entries.len());
    Ok(())
}
