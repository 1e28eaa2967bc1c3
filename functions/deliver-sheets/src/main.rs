//! The `deliver-sheets` Lambda: an S3 event for `jobs/sheets/…` writes the
//! top rows of the run's reports into the tenant's Google Sheet as the
//! tenant's own Google identity of ours (keyless, by workload identity
//! federation from this function's role) or, on the older keyed path, as our
//! common service account (its key read once, at cold start, from the
//! secret `GOOGLE_SERVICE_ACCOUNT_SECRET` names), and records the outcome under
//! `status/`; one for `connection-tests/sheets/…` probes the spreadsheet.
//! Wiring only; the logic lives in `popularity_reports::delivery`.
#![recursion_limit = "256"]

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::SheetsConfig;
use popularity_reports::delivery::connectors::sheets::{load_sheets_clients, RetryPolicy, SheetsDeliverer};
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
    let config = SheetsConfig::from_env()?;
    let aws = load_sdk_config().await;
    let secrets = secrets_manager_client(&aws);
    let clients = load_sheets_clients(config.identity_settings(), &aws, &secrets, RetryPolicy::default()).await?;
    let staging = S3Store::new(s3_client(&aws), config.delivery.staging_bucket.clone(), "");
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(secrets, config.delivery.tenant_secret_prefix.clone())?
            .requiring_kms_key(config.delivery.tenant_secrets_kms_key_id.clone())
            // Every tenant is read before each write, to check the destination
            // against the others' (the cross-tenant check fanout runs); once
            // a minute at most in a warm function.
            .caching_listing_for(DESTINATION_CHECK_LISTING_LIFETIME),
        deliverer: SheetsDeliverer { staging, clients, now: chrono::Utc::now },
        now: chrono::Utc::now,
    };
    run(service_fn(|event: LambdaEvent<S3Event>| {
        handle_deliverer_event(&deps, event.payload, invocation_deadline(&event.context))
    }))
    .await
}
