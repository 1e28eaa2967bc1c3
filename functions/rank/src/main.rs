//! The `rank` Lambda: reads the catalogue and plays from `DATA_BUCKET`,
//! publishes the three reports and the run manifest into `STAGING_BUCKET`.
//! Wiring only; the handler lives in `popularity_reports::handlers::rank`.
// The handler's future (S3 SDK calls inside a streamed, buffered upload
// pipeline) nests deeper than rustc's default layout query limit.
#![recursion_limit = "256"]

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::RankConfig;
use popularity_reports::handlers::rank::{handle_schedule_event, RankDeps};
use popularity_reports::memory::HugePageHintAllocator;
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};

#[global_allocator]
static ALLOCATOR: HugePageHintAllocator = HugePageHintAllocator;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = RankConfig::from_env()?;
    let aws = load_sdk_config().await;
    let s3 = s3_client(&aws);
    let deps = RankDeps {
        data: S3Store::new(s3.clone(), config.data_bucket.clone(), &config.data_prefix),
        staging: S3Store::new(s3, config.staging_bucket.clone(), ""),
        settings: config.settings(),
    };
    run(service_fn(|event: LambdaEvent<EventBridgeEvent>| handle_schedule_event(&deps, event.payload))).await
}
