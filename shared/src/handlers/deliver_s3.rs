//! The `deliver-s3` function's delivery (DESIGN §5, §7): for each report of
//! the feed, stream every staging part (read with our credentials) into the
//! customer's bucket (written with theirs: an assumed role with the tenant's
//! external id, the tenant's own keys, or our role where their bucket
//! policy trusts us) at `<prefix><data_type>/<runId>/part-NNN.<ext>`,
//! converting when the feed asks for another encoding, then write
//! `<prefix><data_type>/<runId>/_manifest.json` last. Customers grant only
//! `s3:PutObject`, `s3:ListBucket`/`s3:ListBucketMultipartUploads` and
//! `s3:AbortMultipartUpload`: nothing here reads their bucket.

use std::future::Future;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::delivery::{DeliveredObject, DeliveryJob, JobKind};
use crate::domain::{part_key, report_run_prefix, Compression, Encoding, Format, ReportKind, RunId};
use crate::handlers::deliver::Deliverer;
use crate::manifest::{DeliveryMode, RunManifest};
use crate::report_writer::PartSummary;
use crate::store::{ObjectStore, S3Store};
use crate::tenant::{Connector, TenantConfig};
use crate::transfer::{transfer_part, PartTransfer};

/// The only `schemaVersion` of destination manifests this build writes.
pub const DESTINATION_MANIFEST_SCHEMA_VERSION: u32 = 1;

/// `<prefix><data_type>/<runId>/_manifest.json`: what a consumer may read
/// once it exists. Deterministic per run and feed, so a retried delivery
/// writes the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationManifest {
    pub schema_version: u32,
    pub run_id: RunId,
    pub generated_at: DateTime<Utc>,
    pub mode: DeliveryMode,
    pub data_type: String,
    pub id_field: String,
    pub format: Format,
    pub compression: Compression,
    pub rows: u64,
    /// `key` is the full object key in the destination bucket.
    pub parts: Vec<PartSummary>,
}

/// `<data_type>/<runId>/_manifest.json`, relative to the destination prefix.
pub fn destination_manifest_key(kind: ReportKind, run: RunId) -> String {
    format!("{}_manifest.json", report_run_prefix(kind, run))
}

/// Opens the customer's bucket for one connector.
pub trait Destinations: Send + Sync {
    type Store: ObjectStore;

    /// A store rooted at the connector's bucket and prefix, with the
    /// connector's credentials. Errors name the connector, never a credential.
    fn open(
        &self,
        tenant_id: &str,
        connector_name: &str,
        connector: &Connector,
    ) -> impl Future<Output = Result<Self::Store, String>> + Send;
}

/// Customer buckets on S3, reached through the shared SDK configuration
/// (which carries `AWS_ENDPOINT_URL` for emulators).
#[derive(Debug, Clone)]
pub struct S3Destinations {
    base: SdkConfig,
}

impl S3Destinations {
    pub fn new(base: SdkConfig) -> Self {
        Self { base }
    }
}

/// `popularity-<tenantId>`, cut to STS's 64-character limit. Shows in the
/// customer's CloudTrail, so they can tell which tenant a session served.
pub fn role_session_name(tenant_id: &str) -> String {
    let mut name = format!("popularity-{tenant_id}");
    name.truncate(64);
    name
}

impl Destinations for S3Destinations {
    type Store = S3Store;

    async fn open(&self, tenant_id: &str, connector_name: &str, connector: &Connector) -> Result<S3Store, String> {
        let Some(destination) = connector.s3_destination() else {
            return Err(format!("connector {connector_name:?} of type {} is not an S3 connector", connector.kind()));
        };
        let region = Region::new(destination.region.clone());
        let credentials = match connector {
            Connector::S3Role(role) => {
                let provider = AssumeRoleProvider::builder(role.role_arn.clone())
                    .external_id(role.external_id.expose_secret())
                    .session_name(role_session_name(tenant_id))
                    .region(region.clone())
                    .configure(&self.base)
                    .build()
                    .await;
                Some(SharedCredentialsProvider::new(provider))
            }
            Connector::S3Keys(keys) => Some(SharedCredentialsProvider::new(Credentials::new(
                keys.access_key_id.expose_secret(),
                keys.secret_access_key.expose_secret(),
                None,
                None,
                "tenant-s3-keys",
            ))),
            _ => None,
        };
        let mut builder = aws_sdk_s3::config::Builder::from(&self.base).region(region);
        if let Some(credentials) = credentials {
            builder = builder.credentials_provider(credentials);
        }
        if self.base.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        let client = aws_sdk_s3::Client::from_conf(builder.build());
        Ok(S3Store::new(client, destination.bucket.clone(), &destination.prefix))
    }
}

/// Aborts the multipart uploads an earlier attempt left open under
/// `folder` when it was killed (a timeout) before it could abort them
/// itself, so the customer is not left paying for their parts. Best effort:
/// a customer policy without `s3:ListBucketMultipartUploads` makes this a
/// warning, not a failed delivery.
async fn clear_killed_attempt<S: ObjectStore>(destination: &S, folder: &str) {
    match destination.abort_unfinished_uploads(folder).await {
        Ok(0) => {}
        Ok(aborted) => {
            warn!(folder = %destination.describe(folder), aborted, "aborted multipart uploads an earlier attempt left open")
        }
        Err(error) => warn!(%error, "could not look for multipart uploads an earlier attempt left open"),
    }
}

/// Delivers `jobs/s3/` jobs.
pub struct S3Deliverer<S, D> {
    pub staging: S,
    pub destinations: D,
}

impl<S: ObjectStore, D: Destinations> Deliverer for S3Deliverer<S, D> {
    fn kind(&self) -> JobKind {
        JobKind::S3
    }

    async fn deliver(
        &self,
        job: &DeliveryJob,
        tenant: &TenantConfig,
        connector: &Connector,
        manifest: &RunManifest,
    ) -> Result<Vec<DeliveredObject>, String> {
        let destination = self.destinations.open(&tenant.tenant_id, &job.connector, connector).await?;
        let prefix = connector.s3_destination().map(|d| d.prefix.as_str()).unwrap_or_default();
        let source_encoding = Encoding { format: manifest.format, compression: manifest.compression };
        let target_encoding = Encoding { format: job.format, compression: job.compression };
        let mut delivered = Vec::new();
        for &kind in &job.reports {
            let report = manifest
                .report(kind)
                .ok_or_else(|| format!("the run manifest {} has no {} report", job.manifest_key, kind.data_type()))?;
            clear_killed_attempt(&destination, &report_run_prefix(kind, job.run_id)).await;
            let mut parts = Vec::with_capacity(report.parts.len());
            for (index, source) in report.parts.iter().enumerate() {
                let target_key = part_key(kind, job.run_id, index + 1, target_encoding);
                let written = transfer_part(
                    &self.staging,
                    &destination,
                    PartTransfer { kind, source, source_encoding, target_key: &target_key, target_encoding },
                )
                .await
                .map_err(|e| e.to_string())?;
                delivered.push(DeliveredObject {
                    key: destination.describe(&target_key),
                    bytes: written.bytes,
                    sha256: written.sha256.clone(),
                });
                parts.push(PartSummary { key: format!("{prefix}{target_key}"), ..written });
            }
            let destination_manifest = DestinationManifest {
                schema_version: DESTINATION_MANIFEST_SCHEMA_VERSION,
                run_id: job.run_id,
                generated_at: manifest.generated_at,
                mode: job.mode,
                data_type: kind.data_type().to_owned(),
                id_field: kind.id_field().to_owned(),
                format: job.format,
                compression: job.compression,
                rows: parts.iter().map(|p| p.rows).sum(),
                parts,
            };
            let body = serde_json::to_vec_pretty(&destination_manifest).expect("a manifest serialises");
            let manifest_key = destination_manifest_key(kind, job.run_id);
            let sha256 = {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&body))
            };
            let bytes = body.len() as u64;
            destination.put(&manifest_key, Bytes::from(body), "application/json").await.map_err(|e| e.to_string())?;
            delivered.push(DeliveredObject { key: destination.describe(&manifest_key), bytes, sha256 });
        }
        Ok(delivered)
    }
}
