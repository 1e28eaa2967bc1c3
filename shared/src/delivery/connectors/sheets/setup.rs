//! Who `deliver-sheets` writes as, from its configuration: each tenant's
//! own identity when keyless Google is configured (and, while
//! `GOOGLE_SERVICE_ACCOUNT_SECRET` is still set, our common account for
//! spreadsheets not yet re-shared), otherwise our common account alone;
//! with neither, every Sheets job fails saying Google Sheets is not
//! configured in this deployment.

use crate::google_identity::{tenant_identities, FederationConfig, FederationError};

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

/// Who `deliver-sheets` is configured to write as (from `SheetsConfig`).
#[derive(Debug, Clone, Copy)]
pub struct SheetsSettings<'a> {
    /// `GOOGLE_SERVICE_ACCOUNT_SECRET`: our common account's key (older path).
    pub common_key_secret: Option<&'a str>,
    /// Keyless Google.
    pub google: Option<&'a FederationConfig>,
    /// `SHEETS_API_ENDPOINT`.
    pub endpoint: &'a str,
    /// `SHEETS_WRITES_PER_MINUTE`, per identity.
    pub writes_per_minute: u32,
}

/// The clients of `settings`, reaching Google as the AWS role of `aws`.
pub async fn load_sheets_clients(
    settings: SheetsSettings<'_>,
    aws: &aws_config::SdkConfig,
    secrets: &aws_sdk_secretsmanager::Client,
    retry: RetryPolicy,
) -> Result<SheetsClients, SheetsSetupError> {
    let endpoint = settings.endpoint.to_owned();
    let writes_per_minute = settings.writes_per_minute;
    let make = move |identity: SheetsIdentity| SheetsClient::new(identity, &endpoint, writes_per_minute, retry);
    let common = match settings.common_key_secret {
        Some(secret) => Some(make(SheetsIdentity::load(secrets, secret).await?)),
        None => None,
    };
    let clients = match (settings.google, common) {
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
