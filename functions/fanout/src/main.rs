//! The `fanout` Lambda: an S3 event for `manifests/<runId>.json` becomes one
//! job object per due (tenant, feed) under `jobs/`. Wiring only; the handler
//! lives in `popularity_reports::handlers::fanout`.
#![recursion_limit = "256"]

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::DeliveryConfig;
use popularity_reports::handlers::fanout::{handle_manifest_event, FanoutDeps};
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = DeliveryConfig::from_env()?;
    let aws = load_sdk_config().await;
    let deps = FanoutDeps {
        staging: S3Store::new(s3_client(&aws), config.staging_bucket.clone(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&aws), config.tenant_secret_prefix.clone())?
            .requiring_kms_key(config.tenant_secrets_kms_key_id.clone()),
        own_buckets: config.own_buckets(),
    };
    run(service_fn(|event: LambdaEvent<S3Event>| handle_manifest_event(&deps, event.payload, chrono::Utc::now()))).await
}
