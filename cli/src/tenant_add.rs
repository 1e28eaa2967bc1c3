//! `popularity tenant add FILE`: onboards a tenant by storing its secret
//! (docs/design.md, "Tenants") as `<prefix><tenantId>` in Secrets Manager. The file goes
//! through the same checks as `tenant validate` first, then is compared
//! with every other tenant (no shared destination), and nothing is
//! written unless both pass. Then, unless `--no-test`, it tests every connector as
//! `popularity tenant test` does (docs/design.md, "Connection tests"). Prints the secret's name,
//! never its value. The secret is always encrypted under the stack's tenant
//! secrets key (`TENANT_SECRETS_KMS_KEY_ID`, output `TenantSecretsKeyArn`),
//! the only key the functions accept: without it nothing is stored. A tenant
//! with a keyless `gcs` or a `google-sheets` connector first gets its own
//! Google identity ([`super::tenant_google`]); if that fails, nothing is
//! stored. Storing a disabled tenant (`"enabled": false`) also revokes the
//! links already emailed to it (`tenant revoke-links`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use popularity_reports::tenant::conflicts::conflicts_across;
use popularity_reports::tenant::directory::{
    put_tenant_secret_under_key, secrets_manager_client, valid_by_seniority, SecretsManagerTenants, TenantDirectory,
    DEFAULT_TENANT_SECRET_PREFIX,
};
use popularity_reports::tenant::TenantConfig;

use super::tenant_google::{ensure_google_identity, GoogleOnboardingOptions};
use super::tenant_test::{run_tests, TestOptions};
use super::{read_tenant_file, runtime};
use crate::local_deliverers::LocalDeliverers;

#[derive(Args)]
pub struct AddArgs {
    /// The JSON file holding the secret's value; its `tenantId` names the secret.
    pub file: PathBuf,
    /// The secret name prefix, ending with '/'.
    #[arg(long, env = "TENANT_SECRET_PREFIX", default_value = DEFAULT_TENANT_SECRET_PREFIX)]
    pub prefix: String,
    /// The stack's tenant secrets key, its ARN (output TenantSecretsKeyArn):
    /// the secret is created, or moved, under it. Required: the functions
    /// refuse a tenant secret under any other key.
    #[arg(long, env = "TENANT_SECRETS_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// The staging bucket (the functions' STAGING_BUCKET): needed when the
    /// tenant is disabled, whose emailed links are then revoked.
    #[arg(long, env = "STAGING_BUCKET")]
    pub staging_bucket: Option<String>,
    /// Store the secret without testing its connectors.
    #[arg(long)]
    pub no_test: bool,
    #[command(flatten)]
    pub test: TestOptions,
    #[command(flatten)]
    pub google: GoogleOnboardingOptions,
}

pub fn add(args: AddArgs) -> anyhow::Result<()> {
    let (json, config) = read_tenant_file(&args.file, None)?;
    let kms_key_id = kms_key_id(args.kms_key_id.as_deref())?;
    // Disabling a tenant revokes its links: know where before storing.
    let revoke_in = match (config.enabled, args.staging_bucket.as_deref().map(str::trim)) {
        (true, _) => None,
        (false, Some(bucket)) if !bucket.is_empty() => Some(bucket.to_owned()),
        (false, _) => anyhow::bail!(
            "nothing was stored: tenant {} is disabled (\"enabled\": false), which also revokes the links already \
             emailed to it; set STAGING_BUCKET (or --staging-bucket) to the staging bucket",
            config.tenant_id
        ),
    };
    let runtime = runtime()?;
    let outcome = runtime
        .block_on(async {
            let sdk_config = popularity_reports::sdk_config::load_sdk_config().await;
            let client = secrets_manager_client(&sdk_config);
            let others = SecretsManagerTenants::new(client.clone(), &args.prefix)?
                .requiring_kms_key(Some(kms_key_id.to_owned()));
            refuse_conflicts(&others, &config).await?;
            let google = ensure_google_identity(&args.google, &config, &sdk_config).await?;
            let stored = put_tenant_secret_under_key(&client, &args.prefix, &json, &config.tenant_id, Some(kms_key_id))
                .await
                .map_err(anyhow::Error::from)?;
            anyhow::Ok((stored, google))
        })
        .with_context(|| format!("cannot store tenant {} from {}", config.tenant_id, args.file.display()))?;
    let (outcome, google) = outcome;
    if let Some(address) = google {
        println!("google identity {address} (the customer grants this address; only our deliverers can act as it)");
    }
    println!("{} secret {}", if outcome.created { "created" } else { "updated" }, outcome.secret_name);
    if let Some(bucket) = revoke_in {
        let deleted = runtime.block_on(super::revoke_links(&bucket, &config.tenant_id)).with_context(|| {
            format!(
                "tenant {} is disabled but its links were not revoked; run `popularity tenant revoke-links {}`",
                config.tenant_id, config.tenant_id
            )
        })?;
        println!(
            "tenant {} is disabled: its links are revoked ({deleted} link cop{} deleted); connectors not tested",
            config.tenant_id,
            if deleted == 1 { "y" } else { "ies" }
        );
        return Ok(());
    }
    if args.no_test {
        return Ok(());
    }
    runtime.block_on(async {
        let deliverers = LocalDeliverers::from_env()
            .await
            .context("testing the connectors (--no-test skips it)")?
            .with_tenant_prefix(&args.prefix);
        let results = run_tests(&deliverers, &config.tenant_id, &args.test).await?;
        super::tenant_test::report(&config.tenant_id, &results)
    })
}

/// The stack's key, required and checked for its shape (a KMS key ARN), so
/// that a missing or mistyped key is named here rather than as a service
/// error after the conflict checks, or as a secret every function refuses.
fn kms_key_id(given: Option<&str>) -> anyhow::Result<&str> {
    let Some(key) = given.map(str::trim).filter(|key| !key.is_empty()) else {
        anyhow::bail!(
            "nothing was stored: tenant secrets are stored only under the stack's tenant secrets key, which the \
             functions require; set TENANT_SECRETS_KMS_KEY_ID (or --kms-key-id) to the stack's \
             TenantSecretsKeyArn output"
        )
    };
    let key_id = key
        .strip_prefix("arn:")
        .filter(|rest| rest.split(':').nth(1) == Some("kms"))
        .and_then(|rest| rest.rsplit_once(":key/"))
        .map(|(_, id)| id);
    anyhow::ensure!(
        key_id.is_some_and(is_key_id),
        "nothing was stored: --kms-key-id (TENANT_SECRETS_KMS_KEY_ID) {key:?} is not a KMS key ARN: give the \
         stack's TenantSecretsKeyArn output (arn:aws:kms:REGION:ACCOUNT:key/ID)"
    );
    Ok(key)
}

/// A KMS key id: a UUID (`1234abcd-12ab-34cd-56ef-1234567890ab`) or a
/// multi-Region key's `mrk-` and 32 hex digits.
fn is_key_id(key: &str) -> bool {
    let hex = |text: &str, length: usize| text.len() == length && text.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(rest) = key.strip_prefix("mrk-") {
        return hex(rest, 32);
    }
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, length)| hex(group, length))
}

/// Refuses a tenant whose feeds would write where an older tenant's
/// already do (docs/design.md, "Delivery rules"): fanout would refuse its
/// feeds, so nothing is stored. A tenant stored again keeps its place among
/// the others (oldest first); a new one comes last.
async fn refuse_conflicts(directory: &SecretsManagerTenants, config: &TenantConfig) -> anyhow::Result<()> {
    let entries = directory.load_tenants().await.context("reading the other tenants to compare destinations")?;
    let mut all: Vec<&TenantConfig> = valid_by_seniority(&entries)
        .into_iter()
        .map(|other| if other.tenant_id == config.tenant_id { config } else { other })
        .collect();
    if !all.iter().any(|other| other.tenant_id == config.tenant_id) {
        all.push(config);
    }
    let conflicts: Vec<String> = conflicts_across(&all)
        .into_iter()
        .filter(|((tenant, _), _)| *tenant == config.tenant_id)
        .map(|((_, feed), reason)| format!("feed {feed:?}: {reason}"))
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    anyhow::bail!("nothing was stored: {}", conflicts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_file_is_invalid_add_refuses_before_reaching_aws() {
        let file = tempfile::Builder::new().prefix("tenant-add-invalid-").suffix(".json").tempfile().unwrap();
        std::fs::write(file.path(), r#"{"schemaVersion": 1, "plan": "gold"}"#).unwrap();
        let result = add(AddArgs {
            file: file.path().to_owned(),
            prefix: DEFAULT_TENANT_SECRET_PREFIX.to_owned(),
            kms_key_id: None,
            staging_bucket: None,
            no_test: true,
            test: TestOptions { connector: None, local: false, timeout_seconds: 1 },
            google: GoogleOnboardingOptions::default(),
        });
        let message = result.unwrap_err().to_string();
        assert!(message.contains("is not a valid tenant secret"), "{message}");
    }

    #[test]
    fn only_a_kms_key_arn_is_accepted_and_without_one_nothing_is_stored() {
        for key in [
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        ] {
            assert_eq!(kms_key_id(Some(key)).unwrap(), key);
        }
        for missing in [None, Some("  ")] {
            let message = kms_key_id(missing).unwrap_err().to_string();
            assert!(
                message.contains("nothing was stored") && message.contains("TENANT_SECRETS_KMS_KEY_ID"),
                "{message}"
            );
        }
        for typo in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/popularity-reports-tenant-secrets",
            "arn:aws:kms:eu-west-1:123456789012:alias/popularity-reports-tenant-secrets",
            "arn:aws:s3:::bucket",
        ] {
            let message = kms_key_id(Some(typo)).unwrap_err().to_string();
            assert!(message.contains(typo) && message.contains("TenantSecretsKeyArn"), "{message}");
        }
    }
}
