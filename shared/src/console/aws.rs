//! The console on its AWS adapters: tenant documents and the directory in
//! Secrets Manager, the staging bucket in S3, Cognito for sign-in, all
//! built once from the function's configuration. The deliverers are
//! reached through `E`: the bucket's notifications in AWS, the deliverers
//! themselves in a local `popularity console`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;

use super::auth::{CognitoSettings, TokenVerifier};
use super::dispatch::StagingEvents;
use super::document::SecretsManagerDocuments;
use super::routes::App;
use super::service::{Console, ConsolePorts, ConsoleSettings};
use super::sign_in::CognitoSignIn;
use super::views::OurIdentities;
use crate::config::ConsoleConfig;
use crate::store::{s3_client, S3Store};
use crate::tenant::directory::{secrets_manager_client, DirectoryError, SecretsManagerTenants};

/// Secrets Manager, S3 and the deliverers reached through `E`.
pub struct AwsPorts<E>(PhantomData<E>);

impl<E: StagingEvents + 'static> ConsolePorts for AwsPorts<E> {
    type Documents = SecretsManagerDocuments;
    type Tenants = SecretsManagerTenants;
    type Staging = S3Store;
    type Events = E;
}

/// The application for `config`, its clients built from `aws`.
pub fn aws_app<E: StagingEvents + 'static>(
    aws: &SdkConfig,
    config: &ConsoleConfig,
    events: E,
) -> Result<Arc<App<AwsPorts<E>>>, DirectoryError> {
    let secrets = secrets_manager_client(aws);
    let prefix = config.delivery.tenant_secret_prefix.clone();
    let console = Console::new(
        SecretsManagerDocuments::new(secrets.clone(), prefix.clone()),
        SecretsManagerTenants::new(secrets, prefix)?
            .requiring_kms_key(config.delivery.tenant_secrets_kms_key_id.clone()),
        S3Store::new(s3_client(aws), config.delivery.staging_bucket.clone(), ""),
        events,
        TokenVerifier::new(CognitoSettings {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            jwks_url: config.jwks_url.clone(),
        }),
        ConsoleSettings {
            own_buckets: config.delivery.own_buckets(),
            ours: OurIdentities {
                delivery_principal: config.delivery_principal.clone(),
                bucket_policy_writer: config.bucket_policy_writer.clone(),
                google_share_with: config.google_share_address.clone(),
                google_project: config.google_project_id.clone(),
            },
            probe_wait: Duration::from_secs(config.connection_test_wait_seconds),
        },
    );
    let sign_in = CognitoSignIn::new(aws_sdk_cognitoidentityprovider::Client::new(aws), config.client_id.clone());
    Ok(Arc::new(App { console, sign_in: Some(sign_in) }))
}
