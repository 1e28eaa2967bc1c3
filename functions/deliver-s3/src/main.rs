//! The `deliver-s3` Lambda: an S3 event for `jobs/s3/…` streams the run's
//! reports into the tenant's bucket and records the outcome under
//! `status/`; one for `connection-tests/s3/…` probes the connector. Wiring
//! only; the logic lives in `popularity_reports::delivery`.
// The handler's future (SDK calls inside a streamed copy) nests deeper than
// rustc's default layout query limit.
#![recursion_limit = "256"]

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::DeliverS3Config;
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::DeliverDeps;
use popularity_reports::handlers::deliver::{handle_deliverer_event, invocation_deadline};
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant::directory::{
    secrets_manager_client, SecretsManagerTenants, DESTINATION_CHECK_LISTING_LIFETIME,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let DeliverS3Config { delivery: config, writer } = DeliverS3Config::from_env()?;
    let aws = load_sdk_config().await;
    let staging = S3Store::new(s3_client(&aws), config.staging_bucket.clone(), "");
    let destinations = S3Destinations::new(aws.clone(), config.own_buckets()).with_writer_settings(&writer);
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&aws), config.tenant_secret_prefix.clone())?
            .requiring_kms_key(config.tenant_secrets_kms_key_id.clone())
            // Every tenant is read before each write, to check the destination
            // against the others' (the cross-tenant check fanout runs); once
            // a minute at most in a warm function.
            .caching_listing_for(DESTINATION_CHECK_LISTING_LIFETIME),
        deliverer: S3Deliverer { staging, destinations },
        now: chrono::Utc::now,
    };
    run(service_fn(|event: LambdaEvent<S3Event>| {
        handle_deliverer_event(&deps, event.payload, invocation_deadline(&event.context))
    }))
    .await
}
