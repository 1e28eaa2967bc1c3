//! Keyless Google in onboarding: `popularity tenant google-identity
//! <tenantId>` prints the address a tenant's customer grants, and `tenant
//! add` creates that identity (idempotently) for a tenant with a keyless
//! `gcs` or a `google-sheets` connector, letting only our deliverers'
//! federated principals impersonate it, before the secret is stored. The
//! command federates from its own AWS role, as the functions do.

use anyhow::Context;
use clap::Args;
use popularity_reports::google_identity::{deliverer_member, tenant_service_account, FederationConfig, GoogleIamAdmin};
use popularity_reports::tenant::{Connector, TenantConfig};

#[derive(Args)]
pub struct GoogleIdentityArgs {
    /// The tenant whose address to print.
    pub tenant_id: String,
    /// Our Google project, where the tenants' service accounts live.
    #[arg(long, env = "GOOGLE_PROJECT_ID")]
    pub project: String,
}

/// The tenant's address, one line.
pub fn google_identity(args: &GoogleIdentityArgs) -> anyhow::Result<String> {
    anyhow::ensure!(
        popularity_reports::tenant::is_safe_id(&args.tenant_id),
        "{:?} is not a tenant id (lowercase letters, digits and '-')",
        args.tenant_id
    );
    Ok(tenant_service_account(&args.tenant_id, &args.project))
}

/// Keyless Google as `tenant add` is configured for it.
#[derive(Args, Clone, Default)]
pub struct GoogleOnboardingOptions {
    /// The external-account JSON of our workload identity pool (not a
    /// secret), or `@FILE` to read it from a file.
    #[arg(long = "google-external-account-config", env = "GOOGLE_EXTERNAL_ACCOUNT_CONFIG")]
    pub external_account_config: Option<String>,
    /// Our Google project, where the tenants' service accounts live.
    #[arg(long = "google-project", env = "GOOGLE_PROJECT_ID")]
    pub project: Option<String>,
    /// The roles of deliver-gcs and deliver-sheets, comma-separated (the
    /// stack's GoogleDelivererRoleArns output): only their sessions may
    /// impersonate the tenant's identity.
    #[arg(long = "google-deliverer-roles", env = "GOOGLE_DELIVERER_ROLE_ARNS")]
    pub deliverer_roles: Option<String>,
    /// Google's IAM API, or a double's (local runs only).
    #[arg(long = "google-iam-endpoint", env = "GOOGLE_IAM_ENDPOINT")]
    pub iam_endpoint: Option<String>,
}

/// Whether `config` writes to Google as its own identity.
pub fn needs_google_identity(config: &TenantConfig) -> bool {
    config.connectors.values().any(|connector| match connector {
        Connector::Gcs(gcs) => gcs.service_account.is_none(),
        Connector::GoogleSheets(_) => true,
        _ => false,
    })
}

/// Whether `config` has a keyless `gcs` connector (which cannot work
/// without keyless Google, unlike Sheets' older common account).
fn has_keyless_gcs(config: &TenantConfig) -> bool {
    config.connectors.values().any(|c| matches!(c, Connector::Gcs(gcs) if gcs.service_account.is_none()))
}

/// Creates the tenant's Google identity when it needs one. Returns the
/// address, or `None` when the tenant needs none or keyless Google is not
/// configured for a tenant that can do without (Sheets on the common
/// account).
pub async fn ensure_google_identity(
    options: &GoogleOnboardingOptions,
    config: &TenantConfig,
    aws: &aws_config::SdkConfig,
) -> anyhow::Result<Option<String>> {
    if !needs_google_identity(config) {
        return Ok(None);
    }
    let json = match options.external_account_config.as_deref().map(str::trim).filter(|j| !j.is_empty()) {
        Some(file) if file.starts_with('@') => {
            Some(std::fs::read_to_string(&file[1..]).with_context(|| format!("cannot read {}", &file[1..]))?)
        }
        other => other.map(str::to_owned),
    };
    let federation = FederationConfig::from_values(
        json.as_deref(),
        options.project.as_deref(),
        options.iam_endpoint.as_deref(),
        None,
    )
    .context("keyless Google (GOOGLE_EXTERNAL_ACCOUNT_CONFIG)")?;
    let Some(federation) = federation else {
        anyhow::ensure!(
            !has_keyless_gcs(config),
            "nothing was stored: a gcs connector without serviceAccountJson writes as the tenant's own Google \
             identity, and keyless Google is not configured here (set GOOGLE_EXTERNAL_ACCOUNT_CONFIG, \
             GOOGLE_PROJECT_ID and GOOGLE_DELIVERER_ROLE_ARNS; docs/operations.md, \"Keyless Google\")"
        );
        return Ok(None);
    };
    let roles = options.deliverer_roles.as_deref().unwrap_or_default();
    let members: Vec<String> = roles
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
        .map(|role| {
            deliverer_member(&federation.external_account.audience, role).with_context(|| {
                format!(
                    "GOOGLE_DELIVERER_ROLE_ARNS: {role:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        !members.is_empty(),
        "nothing was stored: GOOGLE_DELIVERER_ROLE_ARNS (the stack's GoogleDelivererRoleArns output) is not set, so \
         no deliverer could act as the tenant's Google identity"
    );
    let caller = federation.federated_credentials_of(aws)?;
    let admin = GoogleIamAdmin::new(&federation.iam_endpoint, &federation.project_id, caller);
    let address = admin
        .ensure_tenant_identity(&config.tenant_id, &members)
        .await
        .with_context(|| format!("nothing was stored: tenant {}'s Google identity", config.tenant_id))?;
    Ok(Some(address))
}
