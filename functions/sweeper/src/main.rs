//! The `sweeper` Lambda: on its schedule, re-drives the failed and stalled
//! deliveries of recent runs by re-writing their job objects. Wiring only;
//! the handler lives in `popularity_reports::handlers::sweeper`.
#![recursion_limit = "256"]

use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::SweeperConfig;
use popularity_reports::handlers::sweeper::{handle_sweep, SweeperDeps};
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = SweeperConfig::from_env()?;
    let aws = load_sdk_config().await;
    let deps = SweeperDeps {
        staging: S3Store::new(s3_client(&aws), config.staging_bucket.clone(), ""),
        sweep_days: config.sweep_days,
        max_redrives: config.max_redrives,
        now: chrono::Utc::now,
    };
    // The scheduled event carries nothing the sweep needs.
    run(service_fn(|_: LambdaEvent<serde_json::Value>| handle_sweep(&deps))).await
}
