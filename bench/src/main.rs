//! `popularity-bench`: the benchmarks of docs/benchmarks.md, kept out of the
//! operator's `popularity` binary. Each subcommand prepares its data once,
//! runs the measured work in a child process (the operator binary's
//! `popularity rank`, or a hidden worker subcommand of this binary) and
//! reads the child's wall time, CPU time and peak RSS from `wait4`. The work
//! measured is done by `popularity_reports` exactly as the Lambdas and the
//! CLI do it; this crate only prepares, spawns and reports. Not deployed.

mod console;
mod delivery;
mod delta;
mod emulator;
mod fanout;
mod measured_child;
mod publish;
mod rank;
mod sheets;

use clap::{Parser, Subcommand};

// The same allocator as the Lambdas and `popularity`, so the workers measure
// what ships.
#[global_allocator]
static ALLOCATOR: popularity_reports::memory::HugePageHintAllocator = popularity_reports::memory::HugePageHintAllocator;

#[derive(Parser)]
#[command(name = "popularity-bench", version, about = "Benchmarks of popularity reports (docs/benchmarks.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark `popularity rank` on local files (generated once, then reused).
    Rank(rank::RankBenchArgs),
    /// Benchmark deliver-s3 (or deliver-gcs) against moto: delivery vs a plain multipart upload (time, peak RSS).
    Delivery(delivery::DeliveryBenchArgs),
    /// Benchmark fanout against moto: N tenant secrets, load_tenants and fan_out_run timed.
    Fanout(fanout::FanoutBenchArgs),
    /// Benchmark delta computation: two runs three days apart, every report's delta (time, CPU, peak RSS, size).
    Delta(delta::DeltaBenchArgs),
    /// Benchmark the publish step: a stand-in of Athena's output merged and written as parts, against writing the same parts from memory (time, peak RSS).
    Publish(publish::PublishBenchArgs),
    /// Benchmark deliver-sheets against the project's Sheets double: requests, bytes, time, peak RSS per maxRows.
    Sheets(sheets::SheetsBenchArgs),
    /// Benchmark the self-service API against moto: p50/p99 of the feed list and a feed's deliveries, start-up.
    Console(console::ConsoleBenchArgs),
    /// One measured delivery or baseline upload, run by `delivery` in a child process.
    #[command(hide = true)]
    DeliveryWorker(delivery::DeliveryWorkerArgs),
    /// One measured delta computation, run by `delta` in a child process.
    #[command(hide = true)]
    DeltaWorker(delta::DeltaWorkerArgs),
    /// One measured publish or baseline write, run by `publish` in a child process.
    #[command(hide = true)]
    PublishWorker(publish::PublishWorkerArgs),
    /// One measured sheets delivery, run by `sheets` in a child process.
    #[command(hide = true)]
    SheetsWorker(sheets::SheetsWorkerArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Rank(args) => rank::run(args),
        Command::Console(args) => runtime.block_on(console::run(args)),
        Command::Delivery(args) => runtime.block_on(delivery::run(args)),
        Command::Fanout(args) => runtime.block_on(fanout::run(args)),
        Command::Delta(args) => runtime.block_on(delta::run(args)),
        Command::Publish(args) => runtime.block_on(publish::run(args)),
        Command::Sheets(args) => runtime.block_on(sheets::run(args)),
        Command::DeliveryWorker(args) => runtime.block_on(delivery::run_worker(args)),
        Command::DeltaWorker(args) => runtime.block_on(delta::run_worker(args)),
        Command::PublishWorker(args) => runtime.block_on(publish::run_worker(args)),
        Command::SheetsWorker(args) => runtime.block_on(sheets::run_worker(args)),
    }
}
