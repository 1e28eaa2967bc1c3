//! Every deliverer built as its Lambda function builds it — the same
//! configuration variables, clients and handlers — for the commands that do
//! a deliverer's work in this process: `popularity deliver` (jobs of a run,
//! after an outage or locally against moto) and `popularity tenant test
//! --local` (connection tests without the deployed functions). Keys are
//! handled in order, one at a time, exactly as repeated S3 events would be.

use anyhow::Context;
use aws_config::SdkConfig;
use popularity_reports::config::{DeliveryConfig, EmailConfig, GcsConfig, S3WriterConfig, SheetsConfig};
use popularity_reports::delivery::connectors::email::{EmailDeliverer, S3LinkSigner, SesMailer};
use popularity_reports::delivery::connectors::gcs::GcsDeliverer;
use popularity_reports::delivery::connectors::s3::{S3Deliverer, S3Destinations};
use popularity_reports::delivery::connectors::sheets::{load_sheets_clients, RetryPolicy, SheetsDeliverer};
use popularity_reports::delivery::probe_runner::{run_connection_test, ConnectionTestOutcome};
use popularity_reports::delivery::{deliver_job, DeliverDeps, Deliverer, DelivererKey, JobKind, JobReport};
use popularity_reports::google_identity::tenant_identities;
use popularity_reports::store::{s3_client, S3Store};
use popularity_reports::tenant::directory::{secrets_manager_client, SecretsManagerTenants};

/// What handling one key did; errors are the invocation's, as text.
pub enum Handled {
    Job(Result<JobReport, String>),
    ConnectionTest(Result<ConnectionTestOutcome, String>),
}

/// The shared configuration and clients of every deliverer.
pub struct LocalDeliverers {
    aws: SdkConfig,
    config: DeliveryConfig,
    staging: S3Store,
}

impl LocalDeliverers {
    /// Reads `STAGING_BUCKET` and `TENANT_SECRET_PREFIX` (and, when a kind
    /// needs them, its own variables) like the functions.
    pub async fn from_env() -> anyhow::Result<LocalDeliverers> {
        let config = DeliveryConfig::from_env()?;
        let aws = popularity_reports::sdk_config::load_sdk_config().await;
        let staging = S3Store::new(s3_client(&aws), config.staging_bucket.clone(), "");
        Ok(LocalDeliverers { aws, config, staging })
    }

    pub fn staging(&self) -> &S3Store {
        &self.staging
    }

    /// Tenant secrets under `prefix` instead of `TENANT_SECRET_PREFIX`
    /// (`tenant add --prefix`).
    pub fn with_tenant_prefix(mut self, prefix: &str) -> LocalDeliverers {
        self.config.tenant_secret_prefix = prefix.to_owned();
        self
    }

    pub fn tenants(&self) -> anyhow::Result<SecretsManagerTenants> {
        Ok(SecretsManagerTenants::new(secrets_manager_client(&self.aws), self.config.tenant_secret_prefix.clone())?
            .requiring_kms_key(self.config.tenant_secrets_kms_key_id.clone()))
    }

    /// Handles `keys`, all of `kind`, as the deliverer function of that kind would.
    pub async fn handle(&self, kind: JobKind, keys: &[DelivererKey]) -> anyhow::Result<Vec<Handled>> {
        let staging = self.staging.clone();
        match kind {
            JobKind::S3 => {
                let writer = S3WriterConfig::from_env().context("S3 delivery")?;
                let destinations =
                    S3Destinations::new(self.aws.clone(), self.config.own_buckets()).with_writer_settings(&writer);
                self.run(S3Deliverer { staging, destinations }, keys).await
            }
            JobKind::Email => {
                let email = EmailConfig::from_env().context("email delivery")?;
                let signer = S3LinkSigner::new(
                    self.aws.clone(),
                    self.config.staging_bucket.clone(),
                    email.link_signer_secret.clone(),
                    email.link_ttl_seconds,
                );
                let mailer = SesMailer::new(&self.aws).with_configuration_set(email.configuration_set.clone());
                let sender = email.sender.clone();
                self.run(EmailDeliverer { staging, signer, mailer, sender, now: chrono::Utc::now }, keys).await
            }
            JobKind::Gcs => {
                let gcs = GcsConfig::from_env().context("GCS delivery")?;
                let identities = gcs.google.as_ref().map(|google| tenant_identities(google, &self.aws)).transpose()?;
                self.run(GcsDeliverer { staging, endpoint: gcs.storage_endpoint.clone(), identities }, keys).await
            }
            JobKind::Sheets => {
                let sheets = SheetsConfig::from_env().context("Google Sheets delivery")?;
                let secrets = secrets_manager_client(&self.aws);
                let clients =
                    load_sheets_clients(sheets.identity_settings(), &self.aws, &secrets, RetryPolicy::default())
                        .await?;
                self.run(SheetsDeliverer { staging, clients, now: chrono::Utc::now }, keys).await
            }
        }
    }

    async fn run<D: Deliverer>(&self, deliverer: D, keys: &[DelivererKey]) -> anyhow::Result<Vec<Handled>> {
        let deps =
            DeliverDeps { staging: self.staging.clone(), tenants: self.tenants()?, deliverer, now: chrono::Utc::now };
        let mut handled = Vec::with_capacity(keys.len());
        for key in keys {
            handled.push(match key {
                DelivererKey::Job(parts) => {
                    Handled::Job(deliver_job(&deps, parts, None).await.map_err(|e| e.to_string()))
                }
                DelivererKey::ConnectionTest(parts) => {
                    Handled::ConnectionTest(run_connection_test(&deps, parts).await.map_err(|e| e.to_string()))
                }
            });
        }
        Ok(handled)
    }
}
