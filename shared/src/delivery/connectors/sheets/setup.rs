//! Who `deliver-sheets` writes as, from its configuration: each tenant's
//! own identity when keyless Google is configured (and, while
//! `GOOGLE_SERVICE_ACCOUNT_SECRET` is still set, our common account for
//! spreadsheets not yet re-shared), otherwise our common account alone;
//! with neither, every Sheets job fails saying Google Sheets is not
//! configured in this deployment.

use crate::config::SheetsConfig;
use crate::google_identity::{tenant_identities, FederationError};

use super::client::{IdentityError, RetryPolicy, SheetsClient, SheetsIdentity};
use super::deliverer::SheetsClients;

/// The writers could not be set up: the cold start fails with this.
#[derive(Debug, thiserror::Error)]
pub enum SheetsSetupError {
    #[error(transparent)]
    CommonKey(#[from] IdentityError),
    #[error(transparent)]
    Federation(#[from] FederationError),
}

/// The clients of `config`, reaching Google as the AWS role of `aws`.
pub async fn load_sheets_clients(
    config: &SheetsConfig,
    aws: &aws_config::SdkConfig,
    secrets: &aws_sdk_secretsmanager::Client,
    retry: RetryPolicy,
) -> Result<SheetsClients, SheetsSetupError> {
    let endpoint = config.sheets_endpoint.clone();
    let writes_per_minute = config.writes_per_minute;
    let make = move |identity: SheetsIdentity| SheetsClient::new(identity, &endpoint, writes_per_minute, retry);
    let common = match &config.service_account_secret {
        Some(secret) => Some(make(SheetsIdentity::load(secrets, secret).await?)),
        None => None,
    };
    let clients = match (&config.google, common) {
        (Some(google), common) => {
            let keyless = SheetsClients::keyless(tenant_identities(google, aws)?, Box::new(make));
            match common {
                Some(common) => keyless.with_common_fallback(common),
                None => keyless,
            }
        }
        (None, Some(common)) => SheetsClients::common(common),
        (None, None) => SheetsClients::none(),
    };
    Ok(clients)
}
