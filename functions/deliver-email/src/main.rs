//! The `deliver-email` Lambda: an S3 event for `jobs/email/…` sends one SES
//! email with presigned links to the run's reports and records the outcome
//! under `status/`; one for `connection-tests/email/…` sends a test message.
//! Wiring only; the logic lives in `popularity_reports::delivery`.
#![recursion_limit = "256"]

use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::EmailConfig;
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::DeliverDeps;
use popularity_reports::handlers::deliver::{handle_deliverer_event, invocation_deadline};
use popularity_reports::sdk_config::load_sdk_config;
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = EmailConfig::from_env()?;
    let aws = load_sdk_config().await;
    let bucket = config.delivery.staging_bucket.clone();
    let staging = S3Store::new(s3_client(&aws), bucket.clone(), "");
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(
            secrets_manager_client(&aws),
            config.delivery.tenant_secret_prefix.clone(),
        )?
        .requiring_kms_key(config.delivery.tenant_secrets_kms_key_id.clone()),
        deliverer: EmailDeliverer {
            staging,
            signer: S3LinkSigner::new(aws.clone(), bucket, config.link_signer_secret.clone(), config.link_ttl_seconds),
            mailer: SesMailer::new(&aws).with_configuration_set(config.configuration_set.clone()),
            sender: config.sender.clone(),
            now: chrono::Utc::now,
        },
        now: chrono::Utc::now,
    };
    run(service_fn(|event: LambdaEvent<S3Event>| {
        handle_deliverer_event(&deps, event.payload, invocation_deadline(&event.context))
    }))
    .await
}
