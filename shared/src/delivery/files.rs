//! A run's reports as files at a customer's destination (DESIGN §5), the
//! same for every connector that holds files (S3 and GCS): each part of a
//! report is streamed from staging — converted on the way when the feed asks
//! for another format or compression — to `<prefix><data_type>/<runId>/part-NNN.<ext>`,
//! then `<prefix><data_type>/<runId>/_manifest.json` is written last, so a
//! consumer that sees the manifest may read every part. Names and bytes are
//! deterministic per run and feed, so a retried delivery writes the same.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::delivery::error::DeliveryError;
use crate::delivery::job::DeliveryJob;
use crate::delivery::status::DeliveredObject;
use crate::domain::{part_key, report_run_prefix, Compression, Encoding, Format, ReportKind, RunId};
use crate::manifest::{run_manifest_key, DeliveryMode, RunManifest};
use crate::report_writer::PartSummary;
use crate::store::{ObjectSink, ObjectStore, UploadReceipt};
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
    /// `key` is the full object name at the destination, prefix included.
    pub parts: Vec<PartSummary>,
}

/// `<data_type>/<runId>/_manifest.json`, relative to the destination prefix.
pub fn destination_manifest_key(kind: ReportKind, run: RunId) -> String {
    format!("{}_manifest.json", report_run_prefix(kind, run))
}

/// The status entry of an object a destination finished.
pub fn delivered_object(location: String, bytes: u64, sha256: String, receipt: UploadReceipt) -> DeliveredObject {
    DeliveredObject {
        key: location,
        bytes,
        sha256,
        crc32c: receipt.crc32c,
        md5: receipt.md5,
        already_existed: receipt.already_existed,
    }
}

/// Writes one report of the job's run into `destination` (rooted at the
/// connector's bucket and `prefix`): every part, then `_manifest.json`.
/// Returns the objects written, in that order.
pub async fn deliver_report_files<S: ObjectStore, D: ObjectSink>(
    staging: &S,
    destination: &D,
    prefix: &str,
    job: &DeliveryJob,
    manifest: &RunManifest,
    kind: ReportKind,
) -> Result<Vec<DeliveredObject>, DeliveryError> {
    let report = manifest.report(kind).ok_or_else(|| DeliveryError::MissingReport {
        location: staging.describe(&run_manifest_key(job.run_id)),
        data_type: kind.data_type(),
    })?;
    let source_encoding = Encoding { format: manifest.format, compression: manifest.compression };
    let target_encoding = job.encoding();
    let mut delivered = Vec::with_capacity(report.parts.len() + 1);
    let mut parts = Vec::with_capacity(report.parts.len());
    for (index, source) in report.parts.iter().enumerate() {
        let target_key = part_key(kind, job.run_id, index + 1, target_encoding);
        let moved = transfer_part(
            staging,
            destination,
            PartTransfer {
                kind,
                columns: crate::report_writer::Columns::Ranked,
                source,
                source_encoding,
                target_key: &target_key,
                target_encoding,
            },
        )
        .await?;
        let summary = moved.summary;
        delivered.push(delivered_object(
            destination.describe(&target_key),
            summary.bytes,
            summary.sha256.clone(),
            moved.receipt,
        ));
        parts.push(PartSummary { key: format!("{prefix}{target_key}"), ..summary });
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
    let sha256 = hex::encode(Sha256::digest(&body));
    let bytes = body.len() as u64;
    let receipt = destination
        .put(&manifest_key, Bytes::from(body), "application/json")
        .await
        .map_err(|source| DeliveryError::Destination { connector: job.connector.clone(), source })?;
    delivered.push(delivered_object(destination.describe(&manifest_key), bytes, sha256, receipt));
    Ok(delivered)
}
