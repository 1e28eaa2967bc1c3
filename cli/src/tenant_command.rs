//! The `tenant` subcommands: check a tenant secret (docs/design.md, "Tenants") on the
//! operator's machine (`validate`), store it in Secrets Manager (`add`, in
//! [`tenant_add`]), test its connectors (`test`, in [`tenant_test`]) and
//! generate an s3-role externalId (`external-id`) or a webhook signing
//! secret (`webhook-secret`), print a tenant's Google address
//! (`google-identity`, in [`tenant_google`]), and revoke the links already
//! emailed to a tenant (`revoke-links`).
//! `validate` and `add` run the same checks, so nothing invalid is ever
//! stored; none prints a secret value.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use popularity_reports::tenant::{parse_tenant_document, parse_tenant_secret, TenantConfig};

#[path = "tenant_add.rs"]
mod tenant_add;
#[path = "tenant_google.rs"]
pub mod tenant_google;
#[path = "tenant_test.rs"]
pub mod tenant_test;

#[derive(Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    pub command: TenantCommand,
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Check a tenant secret's JSON and print every problem, one per line
    /// (exit status 1 when there is any). See docs/tenants.md.
    Validate(ValidateArgs),
    /// Validate a tenant secret's JSON (as `validate` does) and, only if it
    /// is valid, store it as the secret `<prefix><tenantId>`, creating it or
    /// writing a new version. AWS settings come from the usual environment
    /// (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL for moto). A disabled
    /// tenant ("enabled": false) also has its emailed links revoked, as
    /// `revoke-links` does (needs STAGING_BUCKET).
    Add(tenant_add::AddArgs),
    /// Test the tenant's connectors (or one): write connection-test requests,
    /// wait for the deliverers' results and print them (exit 1 on any
    /// failure). Reads STAGING_BUCKET and TENANT_SECRET_PREFIX; with
    /// --local also each deliverer's own variables.
    Test(tenant_test::TestArgs),
    /// Print a fresh random externalId for a tenant's s3-role connector (one
    /// line, the value alone). Always use one from here, never a value the
    /// customer chose (AWS's confused-deputy guidance): the customer puts it
    /// in their role's trust policy and you put it in the tenant secret.
    ExternalId(ExternalIdArgs),
    /// Print the address of the tenant's own Google identity of ours
    /// (keyless Google): what its customer grants Storage Object Creator on
    /// a bucket, or shares a spreadsheet with as Editor. Derived from the
    /// tenantId and GOOGLE_PROJECT_ID; `tenant add` creates the account.
    GoogleIdentity(tenant_google::GoogleIdentityArgs),
    /// Make every link already emailed to the tenant stop working: deletes
    /// its link copies under links/<tenantId>/ in STAGING_BUCKET (each link
    /// then gets 404 or 403). Other tenants' links keep working; later
    /// deliveries send new links. `tenant add` of a disabled tenant
    /// ("enabled": false) does the same.
    RevokeLinks(RevokeLinksArgs),
    /// Print a fresh webhook signing secret (`whsec_` and the base64 of 32
    /// random bytes; one line, the value alone). Show it to the customer
    /// once, for verifying our signatures, and put it in the tenant secret as
    /// the webhook's "signingSecret"; it is never printed again anywhere.
    WebhookSecret,
}

#[derive(Args)]
pub struct ExternalIdArgs {
    /// The tenant the value is for (it becomes part of the value, so a
    /// trust policy shows whose it is).
    pub tenant_id: String,
}

#[derive(Args)]
pub struct RevokeLinksArgs {
    /// The tenant whose links to revoke.
    pub tenant_id: String,
    /// The staging bucket (the functions' STAGING_BUCKET).
    #[arg(long, env = "STAGING_BUCKET")]
    pub staging_bucket: String,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The JSON file holding the secret's value.
    pub file: PathBuf,
    /// The tenant id the secret will be stored under (the suffix of its
    /// name); when given, `tenantId` must equal it.
    #[arg(long)]
    pub tenant_id: Option<String>,
}

pub fn run(args: TenantArgs) -> anyhow::Result<()> {
    match args.command {
        TenantCommand::Validate(args) => validate(args),
        TenantCommand::Add(args) => tenant_add::add(args),
        TenantCommand::Test(args) => runtime()?.block_on(tenant_test::test(args)),
        TenantCommand::ExternalId(args) => {
            println!("{}", external_id(&args.tenant_id)?);
            Ok(())
        }
        TenantCommand::GoogleIdentity(args) => {
            println!("{}", tenant_google::google_identity(&args)?);
            Ok(())
        }
        TenantCommand::RevokeLinks(args) => runtime()?.block_on(async {
            let deleted = revoke_links(&args.staging_bucket, &args.tenant_id).await?;
            println!(
                "revoked the links of tenant {}: {deleted} link cop{} deleted from s3://{}/links/{}/",
                args.tenant_id,
                if deleted == 1 { "y" } else { "ies" },
                args.staging_bucket,
                args.tenant_id
            );
            Ok(())
        }),
        TenantCommand::WebhookSecret => {
            println!("{}", popularity_reports::tenant::new_webhook_signing_secret()?);
            Ok(())
        }
    }
}

/// `pr-<tenantId>-<32 random hex digits>`, as the self-service API gives.
fn external_id(tenant_id: &str) -> anyhow::Result<String> {
    if !popularity_reports::tenant::is_safe_id(tenant_id) {
        anyhow::bail!("{tenant_id:?} is not a tenant id (lowercase letters, digits and '-')");
    }
    popularity_reports::tenant::new_external_id(tenant_id)
        .map_err(|_| anyhow::anyhow!("the system's random generator failed"))
}

/// Deletes the tenant's link copies in `staging_bucket`; how many there were.
async fn revoke_links(staging_bucket: &str, tenant_id: &str) -> anyhow::Result<usize> {
    let config = popularity_reports::sdk_config::load_sdk_config().await;
    let client = popularity_reports::store::s3_client(&config);
    Ok(popularity_reports::delivery::connectors::email::link_copies::revoke_tenant_links(
        &client,
        staging_bucket,
        tenant_id,
    )
    .await?)
}

/// A runtime for the subcommands that talk to AWS; validation stays synchronous.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let file = args.file.display().to_string();
    let (_, config) = read_tenant_file(&args.file, args.tenant_id.as_deref())?;
    println!("{file}: {}", summary(&config));
    for suggestion in config.suggestions() {
        println!("{file}: suggestion: {suggestion}");
    }
    let project = std::env::var("GOOGLE_PROJECT_ID").ok().filter(|p| !p.trim().is_empty());
    if let Some(project) = project.filter(|_| tenant_google::needs_google_identity(&config)) {
        let address = popularity_reports::google_identity::tenant_service_account(&config.tenant_id, project.trim());
        println!("{file}: google identity: {address} (the customer grants this address; `tenant add` creates it)");
    }
    Ok(())
}

/// Reads and checks a tenant secret file: its JSON text and parsed config,
/// or an error after printing every problem, one per line. With `tenant_id`,
/// the file's `tenantId` must equal it; without, it must merely be present.
fn read_tenant_file(path: &Path, tenant_id: Option<&str>) -> anyhow::Result<(String, TenantConfig)> {
    let file = path.display().to_string();
    let json = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
    let parsed = match tenant_id {
        Some(tenant_id) => parse_tenant_secret(tenant_id, &json),
        None => parse_tenant_document(&json),
    };
    match parsed {
        Ok(config) => Ok((json, config)),
        Err(errors) => {
            for error in &errors {
                println!("{file}: {error}");
            }
            let count = errors.len();
            anyhow::bail!("{file} is not a valid tenant secret ({count} problem{})", if count == 1 { "" } else { "s" })
        }
    }
}

/// `valid tenant acme (2 connectors, 2 feeds: all -> lake [s3-role], …)`.
fn summary(config: &TenantConfig) -> String {
    let feeds: Vec<String> = config
        .feeds
        .iter()
        .map(|feed| match config.connector_of(feed) {
            Some(connector) => format!("{} -> {} [{}]", feed.id, feed.connector, connector.kind()),
            None => format!("{} -> {}", feed.id, feed.connector),
        })
        .collect();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut line = format!(
        "valid tenant {} ({}, {}",
        config.tenant_id,
        plural(config.connectors.len(), "connector"),
        plural(config.feeds.len(), "feed")
    );
    if !feeds.is_empty() {
        line.push_str(": ");
        line.push_str(&feeds.join(", "));
    }
    line.push(')');
    if !config.notifications.is_empty() {
        let types: Vec<&str> = config.notifications.iter().map(|target| target.type_name()).collect();
        line.push_str(&format!(", {} ({})", plural(types.len(), "notification target"), types.join(", ")));
    }
    if !config.contacts.is_empty() {
        line.push_str(&format!(", {}", plural(config.contacts.len(), "contact")));
    }
    line.push_str(&format!(", {} plan", config.plan));
    if !config.enabled {
        line.push_str(", disabled");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_feed_with_its_connector() {
        let json = r#"{"schemaVersion": 1, "tenantId": "acme", "plan": "standard", "enabled": false,
            "connectors": {"inbox": {"type": "email", "recipients": ["data@acme.example"]}},
            "feeds": [{"id": "all", "connector": "inbox"}]}"#;
        let config = parse_tenant_document(json).unwrap();
        assert_eq!(
            summary(&config),
            "valid tenant acme (1 connector, 1 feed: all -> inbox [email]), standard plan, disabled"
        );
    }
}
