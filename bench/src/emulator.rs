//! The moto server as the benchmarks use it: SDK configuration that points
//! at it with test credentials (never the developer's own AWS profile), and
//! the few bucket operations that set up and reset a benchmark.

use anyhow::Context;
use popularity_reports::store::s3_client;

/// The region of every benchmark's buckets and secrets on moto.
pub const REGION: &str = "us-east-1";

/// SDK configuration for the emulator: its endpoint, test credentials and
/// region, so nothing of the developer's own AWS profile is used.
pub async fn emulator_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint.trim_end_matches('/'))
        .region(aws_config::Region::new(REGION))
        .test_credentials()
        .load()
        .await
}

/// Creates `bucket` unless this account already has it. (Helpers take the
/// configuration, not a client: the benchmarks do not depend on the SDK
/// crates, so they cannot name their client types.)
pub async fn ensure_bucket(config: &aws_config::SdkConfig, bucket: &str) -> anyhow::Result<()> {
    match s3_client(config).create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating bucket {bucket}"))),
    }
}

/// Deletes one object, e.g. a job's status, so the next delivery is not a no-op.
pub async fn delete_object(config: &aws_config::SdkConfig, bucket: &str, key: &str) -> anyhow::Result<()> {
    s3_client(config)
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("deleting s3://{bucket}/{key}"))?;
    Ok(())
}
