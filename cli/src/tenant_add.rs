//! `popularity tenant add FILE`: onboards a tenant by storing its secret
//! (DESIGN §6) as `<prefix><tenantId>` in Secrets Manager. The file goes
//! through the same checks as `tenant validate` first, then is compared
//! with every other tenant (no shared destination, no shared externalId),
//! and nothing is written unless both pass. Then, unless `--no-test`, it tests every connector as
//! `popularity tenant test` does (DESIGN §5). Prints the secret's name,
//! never its value.

use std::path::PathBuf;

use anyhow::Context;
use aws_config::BehaviorVersion;
use clap::Args;
use popularity_reports::delivery::conflicts::conflicts_across;
use popularity_reports::tenant::TenantConfig;
use popularity_reports::tenant_directory::{
    put_tenant_secret, secrets_manager_client, SecretsManagerTenants, TenantDirectory, DEFAULT_TENANT_SECRET_PREFIX,
};

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
    /// Store the secret without testing its connectors.
    #[arg(long)]
    pub no_test: bool,
    #[command(flatten)]
    pub test: TestOptions,
}

pub fn add(args: AddArgs) -> anyhow::Result<()> {
    let (json, config) = read_tenant_file(&args.file, None)?;
    let runtime = runtime()?;
    let outcome = runtime
        .block_on(async {
            let sdk_config = aws_config::load_defaults(BehaviorVersion::latest()).await;
            let client = secrets_manager_client(&sdk_config);
            refuse_conflicts(&SecretsManagerTenants::new(client.clone(), &args.prefix)?, &config).await?;
            put_tenant_secret(&client, &args.prefix, &json, &config.tenant_id).await.map_err(anyhow::Error::from)
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

/// Refuses a tenant whose feeds would write where another tenant's do, or
/// whose s3-role connectors share an externalId with another tenant's
/// (DESIGN §7): fanout would refuse both tenants' feeds, so nothing is stored.
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
            no_test: true,
            test: TestOptions { connector: None, local: false, timeout_seconds: 1 },
        });
        let message = result.unwrap_err().to_string();
        assert!(message.contains("is not a valid tenant secret"), "{message}");
    }
}
