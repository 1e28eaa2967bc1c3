//! The `status` subcommand: where every tenant × feed of one run stands,
//! read from the staging store (a directory, or a bucket through the default
//! AWS configuration, which honours `AWS_ENDPOINT_URL`). Arguments and
//! output only; the report is built by `popularity_reports::status_report`.

use anyhow::Context;
use clap::Args;
use popularity_reports::domain::RunId;
use popularity_reports::status_report::run_status;
use popularity_reports::store::{ObjectSink, StoreLocation};

use crate::commands::AnyStore;

/// The environment variable the Lambda functions name the staging bucket by.
const STAGING_BUCKET_VARIABLE: &str = "STAGING_BUCKET";

#[derive(Args)]
pub struct StatusArgs {
    /// The run, as its id YYYYMMDDHHmmss (UTC).
    #[arg(value_name = "RUN_ID")]
    pub run_id: RunId,
    /// The staging store: a directory or s3://bucket[/prefix]. Defaults to
    /// s3://$STAGING_BUCKET.
    #[arg(long, value_name = "LOCATION")]
    pub staging: Option<StoreLocation>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let location = staging_location(args.staging, std::env::var(STAGING_BUCKET_VARIABLE).ok())?;
    let store = AnyStore::open(&location).await;
    let described = with_store!(&store, s => s.describe(""));
    let report = with_store!(&store, s => run_status(s, args.run_id).await)
        .with_context(|| format!("could not read the state of run {} under {described}", args.run_id))?;
    anyhow::ensure!(!report.is_empty(), "no jobs or status objects for run {} under {described}", args.run_id);
    print!("{}", report.render_table());
    Ok(())
}

/// `--staging` if given, else the bucket named by `STAGING_BUCKET`.
fn staging_location(argument: Option<StoreLocation>, bucket: Option<String>) -> anyhow::Result<StoreLocation> {
    if let Some(location) = argument {
        return Ok(location);
    }
    match bucket.filter(|bucket| !bucket.trim().is_empty()) {
        Some(bucket) => format!("s3://{}", bucket.trim())
            .parse()
            .with_context(|| format!("{STAGING_BUCKET_VARIABLE}={bucket:?} is not a bucket name")),
        None => anyhow::bail!("say where the staging store is: --staging <LOCATION> or {STAGING_BUCKET_VARIABLE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_wins_over_the_environment() {
        let argument: StoreLocation = "/tmp/staging".parse().unwrap();
        let location = staging_location(Some(argument.clone()), Some("prod-staging".into())).unwrap();
        assert_eq!(location, argument);
    }

    #[test]
    fn staging_bucket_names_a_bucket_not_a_directory() {
        let location = staging_location(None, Some("prod-staging".into())).unwrap();
        assert_eq!(location, StoreLocation::S3 { bucket: "prod-staging".into(), prefix: String::new() });
    }

    #[test]
    fn without_either_the_error_says_what_to_set() {
        for bucket in [None, Some(String::new())] {
            let message = staging_location(None, bucket).unwrap_err().to_string();
            assert!(message.contains("--staging") && message.contains("STAGING_BUCKET"), "{message}");
        }
    }
}
