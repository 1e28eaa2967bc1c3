//! The `deliver-email` Lambda: an S3 event for `jobs/email/…` sends one SES
//! email with presigned links to the run's reports and records the outcome
//! under `status/`. Wiring only; the logic lives in
//! `popularity_reports::handlers::{deliver, deliver_email}`.
#![recursion_limit = "256"]

use aws_config::BehaviorVersion;
use aws_lambda_events::s3::S3Event;
use lambda_runtime::{run, service_fn, tracing, Error, LambdaEvent};
use popularity_reports::config::EmailConfig;
use popularity_reports::email::SesMailer;
use popularity_reports::handlers::deliver::{handle_job_event, DeliverDeps};
use popularity_reports::handlers::deliver_email::EmailDeliverer;
use popularity_reports::links::S3LinkSigner;
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant_directory::{secrets_manager_client, SecretsManagerTenants};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = EmailConfig::from_env()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let bucket = config.delivery.staging_bucket.clone();
    let staging = S3Store::new(s3_client(&aws), bucket.clone(), "");
    let deps = DeliverDeps {
        staging: staging.clone(),
        tenants: SecretsManagerTenants::new(
            secrets_manager_client(&aws),
            config.delivery.tenant_secret_prefix.clone(),
        )?,
        deliverer: EmailDeliverer {
            staging,
            signer: S3LinkSigner::new(aws.clone(), bucket, config.link_signer_secret.clone(), config.link_ttl_seconds),
            mailer: SesMailer::new(&aws),
            sender: config.sender.clone(),
            now: chrono::Utc::now,
        },
        now: chrono::Utc::now,
    };
    run(service_fn(|event: LambdaEvent<S3Event>| handle_job_event(&deps, event.payload))).await
}
