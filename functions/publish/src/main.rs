//! The `publish` Lambda: the steps of the Athena engine's state machines
//! (plan a run, publish Athena's output as a run, plan a day of raw plays),
//! reading `DATA_BUCKET` and writing `STAGING_BUCKET`. Wiring only; the
//! handler lives in `popularity_reports::handlers::publish`.
// The handler's future (S3 SDK calls inside a streamed, buffered upload
// pipeline) nests deeper than rustc's default layout query limit.
#![recursion_limit = "256"]

use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::athena::RunFolders;
use popularity_reports::config::PublishConfig;
use popularity_reports::handlers::publish::{handle_run_step, RunStepDeps, RunStepEvent};
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Before the step's threads allocate (docs/benchmarks.md, "The publish
    // step": peak RSS).
    popularity_reports::memory::limit_malloc_arenas(popularity_reports::memory::PUBLISH_MALLOC_ARENAS);
    tracing::init_default_subscriber();
    let config = PublishConfig::from_env()?;
    let aws = load_sdk_config().await;
    let s3 = s3_client(&aws);
    let rank = &config.rank;
    let deps = RunStepDeps {
        data: S3Store::new(s3.clone(), rank.data_bucket.clone(), &rank.data_prefix),
        staging: S3Store::new(s3, rank.staging_bucket.clone(), ""),
        data_folders: RunFolders::new(&rank.data_bucket, &rank.data_prefix),
        staging_folders: RunFolders::new(&rank.staging_bucket, ""),
        plan: config.plan_settings(),
        publish: config.publish_settings(),
    };
    run(service_fn(|event: LambdaEvent<RunStepEvent>| handle_run_step(&deps, event.payload))).await
}
