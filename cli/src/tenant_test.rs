//! `popularity tenant test <tenantId> [--connector NAME]` (docs/design.md,
//! "Connection tests"): writes one connection-test request per connector of
//! the tenant (or the one named) into the staging bucket, where its S3 event
//! starts the deliverer of that connector's kind; waits for the results and
//! prints them, exit 1 on any failure. With `--local` the probes run in this
//! process instead of the deployed functions (locally against the emulators,
//! or when the stack is not reachable). Prints names, checks and warnings;
//! never a secret.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use popularity_reports::delivery::connection_probe::{ConnectionTestRequest, ConnectionTestResult};
use popularity_reports::delivery::{ConnectionTestKeyParts, DelivererKey};
use popularity_reports::store::{ObjectSink, ObjectStore, StoreError};
use popularity_reports::tenant::directory::TenantDirectory;
use popularity_reports::tenant::is_safe_id;

use crate::local_deliverers::{Handled, LocalDeliverers};

#[derive(Args, Clone)]
pub struct TestArgs {
    /// The tenant, as the suffix of its secret's name.
    pub tenant_id: String,
    #[command(flatten)]
    pub options: TestOptions,
}

#[derive(Args, Clone)]
pub struct TestOptions {
    /// Test only this connector.
    #[arg(long)]
    pub connector: Option<String>,
    /// Run the probes in this process instead of waiting for the deployed
    /// deliverer functions.
    #[arg(long)]
    pub local: bool,
    /// How long to wait for the deployed functions' results.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
}

/// A request id no other test has: `test-<UTC time>-<random>`.
fn request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("test-{}-{:06x}", chrono::Utc::now().format("%Y%m%d%H%M%S"), random & 0xff_ffff)
}

pub async fn test(args: TestArgs) -> anyhow::Result<()> {
    let deliverers = LocalDeliverers::from_env().await?;
    let results = run_tests(&deliverers, &args.tenant_id, &args.options).await?;
    report(&args.tenant_id, &results)
}

/// Prints every result; an error when any test failed or got no result.
pub fn report(tenant_id: &str, results: &[(String, Result<ConnectionTestResult, String>)]) -> anyhow::Result<()> {
    let failed = results.iter().filter(|(_, result)| !result.as_ref().is_ok_and(|r| r.ok)).count();
    for (connector, result) in results {
        print_result(connector, result);
    }
    if failed > 0 {
        bail!("{failed} of {} connection tests of tenant {tenant_id} failed", results.len());
    }
    Ok(())
}

/// Writes the requests, has them answered and returns each connector's
/// result (or why there is none).
pub async fn run_tests(
    deliverers: &LocalDeliverers,
    tenant_id: &str,
    options: &TestOptions,
) -> anyhow::Result<Vec<(String, Result<ConnectionTestResult, String>)>> {
    anyhow::ensure!(is_safe_id(tenant_id), "{tenant_id:?} is not a tenant id");
    let entry = deliverers
        .tenants()?
        .load_tenant(tenant_id)
        .await?
        .with_context(|| format!("there is no secret for tenant {tenant_id}"))?;
    let tenant = entry.config.map_err(|error| anyhow::anyhow!(error.describe(&entry.secret_name)))?;
    let connectors: Vec<(&String, _)> = tenant
        .connectors
        .iter()
        .filter(|(name, _)| options.connector.as_deref().is_none_or(|wanted| wanted == name.as_str()))
        .collect();
    if connectors.is_empty() {
        bail!("tenant {tenant_id} has no connector {:?}", options.connector.as_deref().unwrap_or("(any)"));
    }
    let request_id = request_id();
    let staging = deliverers.staging();
    let mut pending = Vec::new();
    let mut results = Vec::new();
    for (name, connector) in connectors {
        let kind = connector.kind().job_kind();
        if !kind.is_supported() {
            results.push((name.clone(), Err(format!("{} connectors are not supported yet", connector.kind()))));
            continue;
        }
        let parts = ConnectionTestKeyParts {
            kind,
            request_id: request_id.clone(),
            tenant_id: tenant_id.to_owned(),
            connector: name.clone(),
        };
        let request = ConnectionTestRequest {
            request_id: request_id.clone(),
            tenant_id: tenant_id.to_owned(),
            connector: name.clone(),
            requested_at: chrono::Utc::now(),
            secret_version_stage: None,
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&request)?);
        staging.put(&parts.request_key(), body, "application/json").await?;
        pending.push(parts);
    }
    if options.local {
        for parts in &pending {
            for handled in deliverers.handle(parts.kind, &[DelivererKey::ConnectionTest(parts.clone())]).await? {
                if let Handled::ConnectionTest(Err(error)) = handled {
                    bail!("the {} probe of {} failed to run: {error}", parts.kind, parts.connector);
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(options.timeout_seconds);
    for parts in pending {
        let key = parts.result_key();
        let result = loop {
            match staging.get(&key).await {
                Ok(body) => break Ok(serde_json::from_slice::<ConnectionTestResult>(&body)?),
                Err(StoreError::NotFound { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(StoreError::NotFound { .. }) => {
                    break Err(format!(
                        "no result at {} after {} s: is deliver-{} deployed with its S3 notification? \
                         (--local runs the probe here)",
                        staging.describe(&key),
                        options.timeout_seconds,
                        parts.kind
                    ))
                }
                Err(error) => return Err(error.into()),
            }
        };
        results.push((parts.connector, result));
    }
    Ok(results)
}

fn print_result(connector: &str, result: &Result<ConnectionTestResult, String>) {
    match result {
        Err(reason) => println!("{connector}: NOT TESTED: {reason}"),
        Ok(result) => {
            let kind = result.connector_type.as_deref().unwrap_or("?");
            println!("{connector} [{kind}]: {}", if result.ok { "OK" } else { "FAILED" });
            for check in &result.checks {
                let mark = match (check.ok, check.required) {
                    (true, _) => "ok",
                    (false, true) => "FAILED",
                    (false, false) => "missing (optional)",
                };
                println!("  {:<32} {mark}: {}", check.name, check.detail);
            }
            for warning in &result.warnings {
                println!("  warning: {warning}");
            }
            for left in &result.left_behind {
                println!("  left behind: {left}");
            }
        }
    }
}
