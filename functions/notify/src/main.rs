//! The `notify` Lambda: an S3 event for `notifications/…` sends that arrival
//! event to every webhook and EventBridge bus of its tenant and records each
//! target's sends under `notification-status/…`; a failure the customer can
//! fix is emailed to the tenant's contacts (SES). Wiring only; the handler
//! lives in `popularity_reports::handlers::notify`.
#![recursion_limit = "256"]

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::NotifyConfig;
use popularity_reports::delivery::connectors::email::SesMailer;
use popularity_reports::handlers::notify::handle_notify_event;
use popularity_reports::notify::{EventBridgeBuses, HttpWebhooks, NotifyDeps};
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = NotifyConfig::from_env()?;
    let aws = load_sdk_config().await;
    let deps = NotifyDeps {
        staging: S3Store::new(s3_client(&aws), config.staging_bucket.clone(), ""),
        tenants: SecretsManagerTenants::new(secrets_manager_client(&aws), config.tenant_secret_prefix.clone())?
            .requiring_kms_key(config.tenant_secrets_kms_key_id.clone()),
        webhooks: HttpWebhooks::new(config.webhooks_allow_loopback),
        buses: EventBridgeBuses::new(&aws),
        mailer: SesMailer::new(&aws).with_configuration_set(config.configuration_set.clone()),
        sender: config.sender.clone(),
        now: chrono::Utc::now,
    };
    run(service_fn(|event: LambdaEvent<S3Event>| handle_notify_event(&deps, event.payload))).await
}
