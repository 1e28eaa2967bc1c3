//! `popularity tenant add FILE`: onboards a tenant by storing its secret
//! (docs/design.md, "Tenants") as `<prefix><tenantId>` in Secrets Manager. The file goes
//! through the same checks as `tenant validate` first, then is compared
//! with every other tenant (no shared destination, no shared externalId),
//! and nothing is written unless both pass. Then, unless `--no-test`, it tests every connector as
//! `popularity tenant test` does (docs/design.md, "Connection tests"). Prints the secret's name,
//! never its value. With `--kms-key-id` (or `TENANT_SECRET_KMS_KEY`) the
//! secret is encrypted under that KMS key — the stack's tenant secrets key,
//! output `TenantSecretsKeyArn` — instead of the account's default key.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use popularity_reports::tenant::conflicts::conflicts_across;
use popularity_reports::tenant::directory::{
    put_tenant_secret_under_key, secrets_manager_client, SecretsManagerTenants, TenantDirectory,
    DEFAULT_TENANT_SECRET_PREFIX,
};
use popularity_reports::tenant::TenantConfig;

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
    /// The KMS key to encrypt the secret under: the stack's output
    /// TenantSecretsKeyArn (a key id, key ARN, alias/NAME or alias ARN).
    /// Without it a new secret gets the account's default key
    /// (aws/secretsmanager) and an existing one keeps its key.
    #[arg(long, env = "TENANT_SECRET_KMS_KEY")]
    pub kms_key_id: Option<String>,
    /// Store the secret without testing its connectors.
    #[arg(long)]
    pub no_test: bool,
    #[command(flatten)]
    pub test: TestOptions,
}

pub fn add(args: AddArgs) -> anyhow::Result<()> {
    let (json, config) = read_tenant_file(&args.file, None)?;
    let kms_key_id = kms_key_id(args.kms_key_id.as_deref())?;
    let runtime = runtime()?;
    let outcome = runtime
        .block_on(async {
            let sdk_config = popularity_reports::sdk_config::load_sdk_config().await;
            let client = secrets_manager_client(&sdk_config);
            refuse_conflicts(&SecretsManagerTenants::new(client.clone(), &args.prefix)?, &config).await?;
            put_tenant_secret_under_key(&client, &args.prefix, &json, &config.tenant_id, kms_key_id)
                .await
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("cannot store tenant {} from {}", config.tenant_id, args.file.display()))?;
    println!("{} secret {}", if outcome.created { "created" } else { "updated" }, outcome.secret_name);
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

/// The KMS key given, if any (an empty `TENANT_SECRET_KMS_KEY` is none),
/// checked for the shapes Secrets Manager accepts so that a typo is named
/// here rather than as a service error after the conflict checks.
fn kms_key_id(given: Option<&str>) -> anyhow::Result<Option<&str>> {
    let Some(key) = given.map(str::trim).filter(|key| !key.is_empty()) else { return Ok(None) };
    let well_formed = if let Some(alias) = key.strip_prefix("alias/") {
        !alias.is_empty() && !alias.starts_with("aws/")
    } else if key.starts_with("arn:") {
        key.split(':').nth(2) == Some("kms") && (key.contains(":key/") || key.contains(":alias/"))
    } else {
        is_key_id(key)
    };
    anyhow::ensure!(
        well_formed,
        "--kms-key-id (TENANT_SECRET_KMS_KEY) {key:?} is not a customer managed KMS key: give the stack's \
         TenantSecretsKeyArn output (arn:aws:kms:REGION:ACCOUNT:key/ID), a key id, alias/NAME or an alias ARN; \
         leave it unset for the account's default key"
    );
    Ok(Some(key))
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

/// Refuses a tenant whose feeds would write where another tenant's do, or
/// whose s3-role connectors share an externalId with another tenant's
/// (docs/design.md, "Delivery rules"): fanout would refuse both tenants'
/// feeds, so nothing is stored.
async fn refuse_conflicts(directory: &SecretsManagerTenants, config: &TenantConfig) -> anyhow::Result<()> {
    let entries = directory.load_tenants().await.context("reading the other tenants to compare destinations")?;
    let others: Vec<&TenantConfig> = entries
        .iter()
        .filter_map(|entry| entry.config.as_ref().ok())
        .filter(|other| other.tenant_id != config.tenant_id)
        .collect();
    let mut all = others;
    all.push(config);
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
            no_test: true,
            test: TestOptions { connector: None, local: false, timeout_seconds: 1 },
        });
        let message = result.unwrap_err().to_string();
        assert!(message.contains("is not a valid tenant secret"), "{message}");
    }

    #[test]
    fn kms_key_ids_of_every_accepted_shape_pass_and_typos_are_named() {
        for key in [
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:alias/popularity-reports-tenant-secrets",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/popularity-reports-tenant-secrets",
        ] {
            assert_eq!(kms_key_id(Some(key)).unwrap(), Some(key));
        }
        assert_eq!(kms_key_id(None).unwrap(), None);
        assert_eq!(kms_key_id(Some("  ")).unwrap(), None, "an empty variable means the default key");
        for typo in ["popularity-reports-tenant-secrets", "alias/", "alias/aws/secretsmanager", "arn:aws:s3:::bucket"] {
            let message = kms_key_id(Some(typo)).unwrap_err().to_string();
            assert!(message.contains(typo) && message.contains("TenantSecretsKeyArn"), "{message}");
        }
    }
}
