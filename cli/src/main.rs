//! `popularity`: the operator's command line. Onboards and tests tenants,
//! reports a run's delivery status and re-drives its failed deliveries, and
//! runs the same ranking, fanout and delivery code as the Lambdas against a
//! directory or a bucket (with sample data to rank). Arguments and output
//! only; the work is done by `popularity_reports`. The benchmarks are not
//! here: they are `popularity-bench` (bench/), which is not shipped.

// `with_store!` is shared with the subcommands declared after this one.
#[macro_use]
mod commands;
mod athena_standin;
mod console_command;
mod delivery_commands;
mod link_signer_command;
mod local_deliverers;
mod portal_command;
mod redeliver_command;
mod standin_command;
mod status_command;
mod tenant_command;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: popularity_reports::memory::HugePageHintAllocator = popularity_reports::memory::HugePageHintAllocator;

#[derive(Parser)]
#[command(
    name = "popularity",
    version,
    about = "Popularity reports: onboard tenants, follow and redeliver a run's deliveries, rank and deliver locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with tenant secrets (docs/tenants.md): validate, add, test, external-id, webhook-secret,
    /// revoke-links.
    Tenant(tenant_command::TenantArgs),
    /// The self-service console's users in Cognito: invite a customer or an operator.
    Portal(portal_command::PortalArgs),
    /// Serve the self-service API and web console on 127.0.0.1 (a local run).
    Console(console_command::ConsoleArgs),
    /// Rotate the key that signs emailed download links, two keys
    /// overlapping so links already sent keep working (`link-signer rotate`).
    LinkSigner(link_signer_command::LinkSignerArgs),
    /// Print the address customers share their Google Sheets with (our
    /// service account's client_email, from GOOGLE_SERVICE_ACCOUNT_SECRET).
    SheetsIdentity(delivery_commands::SheetsIdentityArgs),
    /// Print every tenant × feed of a run: job, outcome, attempts, objects, last error.
    Status(status_command::StatusArgs),
    /// Re-drive a run's failed deliveries (as the sweeper does), wait for and print their outcomes.
    Redeliver(redeliver_command::RedeliverArgs),
    /// Write the delivery jobs of a published run, as the fanout Lambda does.
    Fanout(delivery_commands::FanoutArgs),
    /// Deliver every job of a run (every connector kind), as the deliverer Lambdas do.
    Deliver(delivery_commands::DeliverArgs),
    /// Write a deterministic synthetic catalogue and daily plays as Parquet.
    Generate(commands::GenerateArgs),
    /// Rank the catalogue into the three reports and the run manifest.
    Rank(commands::RankArgs),
    /// Aggregate the day before --time from raw play events into plays/date=…/,
    /// through the state machine of template.yaml with DuckDB standing in for Athena.
    DailyPlays(standin_command::DailyPlaysArgs),
    /// List the objects under a directory or s3://bucket[/prefix], with sizes.
    List(commands::ListArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Tenant(args) => tenant_command::run(args),
        Command::Portal(args) => runtime.block_on(portal_command::portal(args)),
        Command::Console(args) => runtime.block_on(console_command::console(args)),
        Command::LinkSigner(args) => runtime.block_on(link_signer_command::run(args)),
        Command::SheetsIdentity(args) => runtime.block_on(delivery_commands::sheets_identity(args)),
        Command::Status(args) => runtime.block_on(status_command::run(args)),
        Command::Redeliver(args) => runtime.block_on(redeliver_command::run(args)),
        Command::Fanout(args) => runtime.block_on(delivery_commands::fanout(args)),
        Command::Deliver(args) => runtime.block_on(delivery_commands::deliver(args)),
        Command::Generate(args) => runtime.block_on(commands::generate(args)),
        Command::Rank(args) => runtime.block_on(commands::rank(args)),
        Command::List(args) => runtime.block_on(commands::list(args)),
        Command::DailyPlays(args) => runtime.block_on(standin_command::daily_plays(args)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn help_lists_only_what_an_operator_does_and_hides_nothing() {
        let mut cli = Cli::command();
        let hidden: Vec<&str> = cli.get_subcommands().filter(|c| c.is_hide_set()).map(|c| c.get_name()).collect();
        assert!(hidden.is_empty(), "hidden subcommands in the operator binary: {hidden:?}");
        let listed: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
        for operator_task in ["tenant", "status", "redeliver", "fanout", "deliver", "rank", "generate"] {
            assert!(listed.contains(&operator_task), "`popularity --help` lacks {operator_task}: {listed:?}");
        }
        let help = cli.render_long_help().to_string();
        assert!(!help.to_lowercase().contains("bench"), "`popularity --help` speaks of benchmarks:\n{help}");
    }
}
