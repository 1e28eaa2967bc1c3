//! Test harness for the integration tests: finds the moto server the tests
//! run against, builds SDK configuration for it, and hands out buckets that no
//! other test shares. It must not reset or otherwise touch state other tests
//! may be using: the tests of every target run in parallel against one
//! server, so isolation comes from unique bucket names, not from resets.
//!
//! Layout:
//! - this file: the emulator endpoint, SDK configuration, fresh buckets;
//! - [`parquet_fixtures`]: small Parquet inputs, valid and malformed;
//! - [`reference`]: a slow, obviously correct ranking to compare against;
//! - [`reports`]: reading published reports back and checking invariants;
//! - [`console`]: the self-service console on moto: user pools, users,
//!   the router on a loopback port, a client checking answers against OpenAPI;
//! - [`parquet_readers`]: delivered Parquet files read back by the parquet
//!   crate, and by DuckDB and Polars from `.venv`;
//! - [`customer`]: a customer's side of a delivery (another account, its
//!   bucket, delivery role or user, IAM enforcement, sent mail, links);
//! - [`fault_proxy`]: a TCP proxy that cuts a connection mid-request, or
//!   (HTTP mode) fails the n-th request of an AWS call kind;
//! - [`fault_matrix`]: the fault matrix's cells (call kind × request ×
//!   fault × burst), the baseline they come from, and the outcome table;
//! - [`google_keys`]: generated service-account keys and the checks of the
//!   self-signed JWTs Google's client libraries send;
//! - [`google_identity_double`]: Google's STS (workload identity federation
//!   from AWS roles, checked against moto), IAM service accounts and their
//!   policies, and IAM Credentials' `generateAccessToken`, on one base URL;
//! - [`gcs_guard`]: an HTTP guard in front of fake-gcs-server that adds what
//!   it lacks — authentication and an Object-Creator-only permission model;
//! - [`sheets_double`]: the project's Sheets API v4 double (tabs, grids,
//!   atomic batchUpdate, the 10M-cell limit, sharing, 429s, tokens);
//! - `http_double` (private): what the Google doubles share — the server on
//!   127.0.0.1 with its own thread and runtime, the request log, armed
//!   faults, the bearer-token check, query strings and JSON answers;
//! - [`local_stores`]: input and staging directories for tests without the
//!   emulator, removed when dropped;
//! - [`synthetic_run`]: a published run of generated items, of a chosen
//!   size, staged without ranking (the delivery tests and benchmarks);
//! - [`template_policies`]: each function's IAM policy and environment from
//!   the transformed SAM template, resolved to a test's own names;
//! - [`athena_output`]: Athena's output of a run (UNLOAD's files, counts,
//!   data manifests) made from a run rank published, for the publish step;
//! - [`webhook_receiver`]: a customer's webhook endpoint on 127.0.0.1 that
//!   checks signatures with Python's `hmac`, failing the first requests on demand.
//!
//! Tests of IAM enforcement run against a second server,
//! [`moto_auth_endpoint`], because moto's enforcement switch is global to a
//! server; see [`customer::enforce_iam`].
//!
//! Build S3 clients with `popularity_reports::store::s3_client`, which turns
//! on the path-style addressing moto needs.

pub mod athena_output;
pub mod console;
pub mod customer;
pub mod delivery;
pub mod event_bus;
pub mod fault_matrix;
pub mod fault_proxy;
pub mod gcs_guard;
pub mod google_identity_double;
pub mod google_keys;
mod http_double;
pub mod local_stores;
pub mod parquet_fixtures;
pub mod parquet_readers;
pub mod reference;
pub mod reports;
pub mod sheets_double;
pub mod synthetic_run;
pub mod template_policies;
pub mod webhook_receiver;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::DisplayErrorContext;

/// S3 bucket names are at most 63 characters.
const MAX_BUCKET_NAME: usize = 63;

/// The moto server's endpoint, from `MOTO_ENDPOINT`.
///
/// # Panics
/// When `MOTO_ENDPOINT` is unset or empty, with a message saying how to start
/// the emulator.
pub fn moto_endpoint() -> String {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().trim_end_matches('/').to_owned(),
        _ => panic!(
            "MOTO_ENDPOINT is not set: these tests need moto's server. \
             Start the emulator with scripts/test.sh, or \
             export MOTO_ENDPOINT=$(scripts/emulator.sh start)"
        ),
    }
}

/// The endpoint of the second moto server, reserved for tests that turn IAM
/// enforcement on ([`customer::enforce_iam`]), from `MOTO_AUTH_ENDPOINT`.
///
/// # Panics
/// When `MOTO_AUTH_ENDPOINT` is unset or empty, with a message saying how to
/// start that server.
pub fn moto_auth_endpoint() -> String {
    match std::env::var("MOTO_AUTH_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().trim_end_matches('/').to_owned(),
        _ => panic!(
            "MOTO_AUTH_ENDPOINT is not set: tests of IAM enforcement need a moto server of their own \
             (enforcement is global to a server). Run scripts/test.sh, which starts it, or \
             export MOTO_AUTH_ENDPOINT=$(scripts/emulator.sh start)"
        ),
    }
}

/// fake-gcs-server's endpoint, from `GCS_EMULATOR_ENDPOINT`. Tests reach it
/// through a [`gcs_guard::GcsGuard`] of their own.
///
/// # Panics
/// When `GCS_EMULATOR_ENDPOINT` is unset or empty, with a message saying how
/// to start the emulator.
pub fn gcs_emulator_endpoint() -> String {
    match std::env::var("GCS_EMULATOR_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().trim_end_matches('/').to_owned(),
        _ => panic!(
            "GCS_EMULATOR_ENDPOINT is not set: these tests need fake-gcs-server. Run scripts/test.sh, or \
             export GCS_EMULATOR_ENDPOINT=$(scripts/emulator.sh start-gcs)"
        ),
    }
}

/// SDK configuration for the emulator at `endpoint`: static test credentials
/// (`testing`/`testing`) and region `us-east-1`, so nothing from the
/// developer's own AWS profile is used.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "integration-tests"))
        .load()
        .await
}

/// A bucket name no other test (in this or another process) uses: the hint,
/// then process id, a per-process counter and the clock's nanoseconds.
pub fn unique_bucket_name(name_hint: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let suffix = format!("-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));

    let mut hint: String = name_hint
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    hint.truncate(MAX_BUCKET_NAME - suffix.len());
    let hint = hint.trim_matches('-');
    let hint = if hint.is_empty() { "test" } else { hint };
    format!("{hint}{suffix}")
}

/// Creates a bucket named after `name_hint` and unique to this call, and
/// returns its name.
///
/// # Panics
/// When the emulator refuses to create it.
pub async fn fresh_bucket(client: &aws_sdk_s3::Client, name_hint: &str) -> String {
    let bucket = unique_bucket_name(name_hint);
    if let Err(e) = client.create_bucket().bucket(&bucket).send().await {
        panic!("could not create bucket {bucket} in the emulator: {}", DisplayErrorContext(&e));
    }
    bucket
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_valid_bucket_name(name: &str) -> bool {
        (3..=MAX_BUCKET_NAME).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn bucket_names_are_valid_and_unique_whatever_the_hint() {
        let long_hint = "Upload_Aborted Part-Way ".repeat(10);
        let names: Vec<_> = ["s3-store", "", "--", "UPPER case!", long_hint.as_str()]
            .into_iter()
            .chain(std::iter::repeat_n("same", 50))
            .map(unique_bucket_name)
            .collect();
        for name in &names {
            assert!(is_valid_bucket_name(name), "{name:?}");
        }
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len());
        assert!(names[0].starts_with("s3-store-"), "{}", names[0]);
    }
}

/// A customer managed KMS key created on the emulator at `endpoint`, as the
/// stack's TenantSecretsKey would be; returns its ARN. KMS `CreateKey` over
/// its JSON protocol (the workspace has no KMS SDK crate): moto reads the
/// service and region from the credential scope and checks no signature.
pub async fn create_kms_key(endpoint: &str) -> String {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client without TLS builds")
        .post(endpoint)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(r#"{"Description": "popularity reports tenant secrets (test)"}"#)
        .send()
        .await
        .expect("KMS CreateKey reaches the emulator");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "KMS CreateKey answered {status}: {body}");
    let key: serde_json::Value = serde_json::from_str(&body).expect("CreateKey answers JSON");
    key["KeyMetadata"]["Arn"].as_str().expect("CreateKey returns the key's ARN").to_owned()
}
