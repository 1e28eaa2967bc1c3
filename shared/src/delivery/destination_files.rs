//! A run's reports as files at a customer's destination (docs/design.md,
//! "Reports and layouts"), the same for every connector that holds files (S3
//! and GCS): each part of a report — or, for a delta delivery, each file of
//! its delta against the base run ([`ReportSource`]) — is streamed from
//! staging, converted on the way when the feed asks for another format or
//! compression, to `<prefix><data_type>/<runId>/part-NNN.<ext>` (and a
//! delta's `removed-NNN.<ext>`), then
//! `<prefix><data_type>/<runId>/_manifest.json` is written last, so a
//! consumer that sees the manifest may read every file. Names and bytes are
//! deterministic per run and feed, so a retried delivery writes the same;
//! with a [`PartLedger`] of the job's status, it skips the parts an earlier
//! attempt recorded as delivered ([`crate::delivery::resume`]) and records
//! each part it delivers.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::delivery::error::DeliveryError;
use crate::delivery::job::DeliveryJob;
use crate::delivery::resume::PartLedger;
use crate::delivery::staging::DeliveryStaging;
use crate::delivery::status::{DeliveredObject, PartOrigin, SourcePart};
use crate::delta::{ensure_delta, DeltaSettings, FileKind};
use crate::domain::{file_key, report_run_prefix, Compression, Encoding, Format, ReportKind, RunId};
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
    /// The run a delta is against (delta only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run_id: Option<RunId>,
    pub data_type: String,
    pub id_field: String,
    pub format: Format,
    pub compression: Compression,
    /// Items in this run's full report (for a delta too: what applying it
    /// to the base must leave).
    pub rows: u64,
    /// Rows of the `upsert` and of the `removed` files (delta only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upserts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// `key` is the full object name at the destination, prefix included.
    pub parts: Vec<DestinationPart>,
}

/// One file in a destination manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPart {
    /// `upsert` or `removed` (delta only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    #[serde(flatten)]
    pub part: PartSummary,
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
        skipped: false,
        rows: None,
    }
}

/// One staged file a report delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub kind: FileKind,
    pub part: PartSummary,
}

/// What one report of a job delivers, from staging: the run's canonical
/// parts (full), or its delta against the job's base run, computed into
/// `deltas/` by the first delivery that needs it (docs/design.md, "Delta feeds").
#[derive(Debug, Clone)]
pub struct ReportSource {
    pub kind: ReportKind,
    /// The encoding of the staged files.
    pub encoding: Encoding,
    pub base_run_id: Option<RunId>,
    /// Items in this run's full report.
    pub rows: u64,
    /// Upsert (or full) files first, then removed files, each in order.
    pub files: Vec<SourceFile>,
}

impl ReportSource {
    /// The source of `kind` for `job`, whose run manifest is `manifest`.
    pub async fn resolve<S: ObjectStore>(
        staging: &S,
        job: &DeliveryJob,
        manifest: &RunManifest,
        kind: ReportKind,
    ) -> Result<ReportSource, DeliveryError> {
        let report = manifest.report(kind).ok_or_else(|| DeliveryError::MissingReport {
            location: staging.describe(&run_manifest_key(job.run_id)),
            data_type: kind.data_type(),
        })?;
        let base = job.plan.base().map_err(|reason| DeliveryError::InvalidJob {
            location: staging.describe(&job.job_key()),
            reason: reason.to_string(),
        })?;
        let Some(base) = base else {
            return Ok(ReportSource {
                kind,
                encoding: Encoding { format: manifest.format, compression: manifest.compression },
                base_run_id: None,
                rows: report.rows,
                files: report
                    .parts
                    .iter()
                    .map(|part| SourceFile { kind: FileKind::Upsert, part: part.clone() })
                    .collect(),
            });
        };
        let base_manifest = DeliveryStaging::new(staging).read_manifest(base).await?;
        let delta = ensure_delta(staging, kind, &base_manifest, manifest, &DeltaSettings::default()).await?;
        Ok(ReportSource {
            kind,
            encoding: Encoding { format: delta.format, compression: delta.compression },
            base_run_id: Some(base),
            rows: report.rows,
            files: delta.files.iter().map(|file| SourceFile { kind: file.kind, part: file.summary() }).collect(),
        })
    }

    /// Rows of the files of one kind.
    pub fn rows_of(&self, kind: FileKind) -> u64 {
        self.files.iter().filter(|f| f.kind == kind).map(|f| f.part.rows).sum()
    }

    /// Each file with the number it has among the files of its kind (1-based).
    pub fn numbered(&self) -> impl Iterator<Item = (usize, &SourceFile)> {
        let mut counts = [0usize; 2];
        self.files.iter().map(move |file| {
            let slot = &mut counts[usize::from(file.kind == FileKind::Removed)];
            *slot += 1;
            (*slot, file)
        })
    }
}

/// Writes one report of the job's run into `destination` (rooted at the
/// connector's bucket and `prefix`): every file — converted to the feed's
/// encoding on the way — that `ledger` does not say an earlier attempt
/// delivered, each recorded in `ledger` as it completes, then
/// `_manifest.json`, always. Returns the objects of the report, skipped ones
/// included, in that order.
pub async fn deliver_report_files<S: ObjectStore, D: ObjectSink, L: PartLedger>(
    staging: &S,
    destination: &D,
    prefix: &str,
    job: &DeliveryJob,
    manifest: &RunManifest,
    kind: ReportKind,
    ledger: &L,
) -> Result<Vec<DeliveredObject>, DeliveryError> {
    let source = ReportSource::resolve(staging, job, manifest, kind).await?;
    let target_encoding = job.encoding();
    let mut delivered = Vec::with_capacity(source.files.len() + 1);
    let mut parts = Vec::with_capacity(source.files.len());
    for (number, file) in source.numbered() {
        let target_key = file_key(kind, job.run_id, file.kind.stem(), number, target_encoding);
        let origin = PartOrigin {
            key: destination.describe(&target_key),
            connector: job.connector.clone(),
            connector_type: job.connector_type.clone(),
            format: job.format,
            compression: job.compression,
            source: SourcePart { key: file.part.key.clone(), bytes: file.part.bytes, sha256: file.part.sha256.clone() },
        };
        let summary = if let Some(earlier) = ledger.skip(&origin) {
            let mut object =
                DeliveredObject::new(origin.key, earlier.bytes, earlier.sha256.clone()).with_rows(earlier.rows);
            object.skipped = true;
            delivered.push(object);
            PartSummary { key: target_key.clone(), rows: earlier.rows, bytes: earlier.bytes, sha256: earlier.sha256 }
        } else {
            let moved = transfer_part(
                staging,
                destination,
                PartTransfer {
                    kind,
                    columns: file.kind.columns(),
                    source: &file.part,
                    source_encoding: source.encoding,
                    target_key: &target_key,
                    target_encoding,
                },
            )
            .await?;
            let summary = moved.summary;
            ledger.record(origin.clone(), &summary).await?;
            delivered.push(
                delivered_object(origin.key, summary.bytes, summary.sha256.clone(), moved.receipt)
                    .with_rows(summary.rows),
            );
            summary
        };
        let delta_kind = source.base_run_id.map(|_| file.kind);
        parts.push(DestinationPart {
            kind: delta_kind,
            part: PartSummary { key: format!("{prefix}{target_key}"), ..summary },
        });
    }
    let is_delta = source.base_run_id.is_some();
    let destination_manifest = DestinationManifest {
        schema_version: DESTINATION_MANIFEST_SCHEMA_VERSION,
        run_id: job.run_id,
        generated_at: manifest.generated_at,
        mode: job.plan.mode,
        base_run_id: source.base_run_id,
        data_type: kind.data_type().to_owned(),
        id_field: kind.id_field().to_owned(),
        format: job.format,
        compression: job.compression,
        rows: source.rows,
        upserts: is_delta.then(|| source.rows_of(FileKind::Upsert)),
        removed: is_delta.then(|| source.rows_of(FileKind::Removed)),
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
