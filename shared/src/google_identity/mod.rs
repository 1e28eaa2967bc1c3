//! Keyless Google (docs/design.md, "Tenants", and docs/operations.md,
//! "Keyless Google"): each tenant with a Google destination has a service
//! account of ours, `pr-…@<our project>.iam.gserviceaccount.com`, which the
//! customer grants (Object Creator on a bucket, Editor on a spreadsheet).
//! Our functions hold no Google key: they sign an AWS `GetCallerIdentity`
//! with their own role's credentials, exchange it at Google's STS for a
//! federated token (workload identity federation, through the official
//! `google-cloud-auth` crate), and with that token ask IAM Credentials for a
//! short-lived token of the tenant's account (`generateAccessToken`). Every
//! Google call of a tenant's delivery runs as that account, so Google's own
//! authorization, not our bookkeeping, keeps tenant B out of A's bucket or
//! spreadsheet.
//!
//! [`account`] derives the address from the tenantId, [`federation`] reads
//! the external-account configuration and makes the federated credentials,
//! [`impersonation`] the per-tenant tokens (cached for their lifetime across
//! a warm function's invocations), and [`admin`] the onboarding side: create
//! the account (idempotently) and let only our deliverers impersonate it.

/// How a connector's error begins when Google refused the token of a
/// tenant's identity of ours: our side to fix, whatever the HTTP status
/// would otherwise suggest.
pub const TENANT_IDENTITY_REFUSED: &str = "Google refused our tenant identity's token (our side to fix)";

pub mod account;
pub mod admin;
pub mod federation;
mod http;
pub mod impersonation;

pub use account::{tenant_account_id, tenant_service_account, ACCOUNT_ID_HASH_HEX};
pub use admin::{AdminError, GoogleIamAdmin, TOKEN_CREATOR_ROLE};
pub use federation::{
    deliverer_member, ExternalAccountConfig, FederationConfig, FederationError, AWS_SUBJECT_TOKEN_TYPE,
    CLOUD_PLATFORM_SCOPE, GOOGLE_IAM_CREDENTIALS_ENDPOINT, GOOGLE_IAM_ENDPOINT,
};
pub use impersonation::{ImpersonationError, TenantIdentities};

/// Our tenants' identities as a function running with the AWS role of `aws`
/// reaches them.
pub fn tenant_identities(
    config: &FederationConfig,
    aws: &aws_config::SdkConfig,
) -> Result<TenantIdentities, FederationError> {
    Ok(TenantIdentities::new(config, config.federated_credentials_of(aws)?))
}
