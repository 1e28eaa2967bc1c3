//! `popularity`: the operator's command line. Generates sample data, runs
//! the same ranking and delivery code as the Lambdas against a directory or a
//! bucket, reports a run's delivery status, and benchmarks. Arguments and
//! output only; the work is done by `popularity_reports`.

mod bench;
mod bench_delivery;
mod bench_delta;
mod bench_publish;
mod bench_sheets;
// `with_store!` is shared with the subcommands declared after this one.
#[macro_use]
mod commands;
mod athena_standin;
mod delivery_commands;
mod local_deliverers;
mod redeliver_command;
mod standin_command;
mod status_command;
mod tenant_command;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: popularity_reports::memory::HugePageHintAllocator = popularity_reports::memory::HugePageHintAllocator;

#[derive(Parser)]
#[command(name = "popularity", version, about = "Popularity reports: sample data, ranking, benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic synthetic catalogue and daily plays as Parquet.
    Generate(commands::GenerateArgs),
    /// Rank the catalogue into the three reports and the run manifest.
    Rank(commands::RankArgs),
    /// Aggregate the day before --time from raw play events into plays/date=…/,
    /// through the state machine of template.yaml with DuckDB standing in for Athena.
    DailyPlays(standin_command::DailyPlaysArgs),
    /// List the objects under a directory or s3://bucket[/prefix], with sizes.
    List(commands::ListArgs),
    /// Benchmark `rank` on local files (generated once, then reused).
    Bench(bench::BenchArgs),
    /// Benchmark deliver-s3 against moto: delivery vs a plain multipart upload (time, peak RSS).
    BenchDelivery(bench_delivery::BenchDeliveryArgs),
    /// Benchmark fanout against moto: N tenant secrets, load_tenants and fan_out_run timed.
    BenchFanout(bench_delivery::BenchFanoutArgs),
    /// Benchmark delta computation: two runs three days apart, every report's
    /// delta (time, CPU, peak RSS, size).
    BenchDelta(bench_delta::BenchDeltaArgs),
    /// One measured delta computation, run by bench-delta in a child process.
    #[command(hide = true)]
    BenchDeltaWorker(bench_delta::DeltaWorkerArgs),
    /// Benchmark the publish step: a stand-in of Athena's output merged and
    /// written as parts, against writing the same parts from memory (time, peak RSS).
    BenchPublish(bench_publish::BenchPublishArgs),
    /// One measured publish or baseline write, run by bench-publish in a child process.
    #[command(hide = true)]
    BenchPublishWorker(bench_publish::PublishWorkerArgs),
    /// Benchmark deliver-sheets against the project's Sheets double:
    /// requests, bytes, time, peak RSS per maxRows.
    BenchSheets(bench_sheets::BenchSheetsArgs),
    /// One measured sheets delivery, run by bench-sheets in a child process.
    #[command(hide = true)]
    BenchSheetsWorker(bench_sheets::SheetsWorkerArgs),
    /// One measured delivery or baseline upload, run by bench-delivery in a child process.
    #[command(hide = true)]
    BenchDeliveryWorker(bench_delivery::DeliveryWorkerArgs),
    /// Work with tenant secrets (docs/design.md, "Tenants"): `tenant validate FILE`.
    Tenant(tenant_command::TenantArgs),
    /// Print every tenant × feed of a run: job, outcome, attempts, objects, last error.
    Status(status_command::StatusArgs),
    /// Write the delivery jobs of a published run, as the fanout Lambda does.
    Fanout(delivery_commands::FanoutArgs),
    /// Deliver every job of a run (every connector kind), as the deliverer Lambdas do.
    Deliver(delivery_commands::DeliverArgs),
    /// Re-drive a run's failed deliveries (as the sweeper does), wait for and print their outcomes.
    Redeliver(redeliver_command::RedeliverArgs),
    /// Print the address customers share their Google Sheets with (our
    /// service account's client_email, from GOOGLE_SERVICE_ACCOUNT_SECRET).
    SheetsIdentity(delivery_commands::SheetsIdentityArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Generate(args) => runtime.block_on(commands::generate(args)),
        Command::Rank(args) => runtime.block_on(commands::rank(args)),
        Command::List(args) => runtime.block_on(commands::list(args)),
        Command::DailyPlays(args) => runtime.block_on(standin_command::daily_plays(args)),
        Command::Bench(args) => bench::run(args),
        Command::BenchDelivery(args) => runtime.block_on(bench_delivery::run_delivery(args)),
        Command::BenchFanout(args) => runtime.block_on(bench_delivery::run_fanout(args)),
        Command::BenchDeliveryWorker(args) => runtime.block_on(bench_delivery::run_worker(args)),
        Command::BenchDelta(args) => runtime.block_on(bench_delta::run(args)),
        Command::BenchDeltaWorker(args) => runtime.block_on(bench_delta::run_worker(args)),
        Command::BenchSheets(args) => runtime.block_on(bench_sheets::run(args)),
        Command::BenchPublish(args) => runtime.block_on(bench_publish::run(args)),
        Command::BenchPublishWorker(args) => runtime.block_on(bench_publish::run_worker(args)),
        Command::BenchSheetsWorker(args) => runtime.block_on(bench_sheets::run_worker(args)),
        Command::Tenant(args) => tenant_command::run(args),
        Command::Status(args) => runtime.block_on(status_command::run(args)),
        Command::Fanout(args) => runtime.block_on(delivery_commands::fanout(args)),
        Command::Deliver(args) => runtime.block_on(delivery_commands::deliver(args)),
        Command::Redeliver(args) => runtime.block_on(redeliver_command::run(args)),
        Command::SheetsIdentity(args) => runtime.block_on(delivery_commands::sheets_identity(args)),
    }
}
