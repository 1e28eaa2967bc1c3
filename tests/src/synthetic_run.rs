//! A synthetic published run: the three canonical JSON reports, filled with
//! generated items by the real [`PartWriter`] and streamed into the staging
//! store part by part, then the run manifest last — exactly what `rank`
//! publishes, without ranking anything. The delivery tests stage small runs
//! with it and the delivery benchmarks (`popularity-bench delivery`,
//! `sheets`) a track report of a chosen size (1 GB and more, with bounded
//! memory). Test and benchmark data only: nothing deployed uses it.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use bytes::Bytes;

use popularity_reports::domain::{part_key, Compression, Encoding, Format, ReportKind, RunId};
use popularity_reports::manifest::{
    run_manifest_key, DeliveryMode, InputSummary, ReportManifest, RunManifest, ScoringSummary, MANIFEST_SCHEMA_VERSION,
    REPORTS_PREFIX,
};
use popularity_reports::report_writer::{PartSummary, PartWriter, ReportItem};
use popularity_reports::store::{upload_from_blocking, ObjectStore, StoreError, StreamedUploadError};

/// The encoding of every synthetic part: canonical JSON, uncompressed.
const CANONICAL: Encoding = Encoding { format: Format::Json, compression: Compression::None };

/// How big a synthetic run is.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticRunSize {
    /// Items in each report (but the track report when `track_bytes` is set).
    pub rows: u64,
    /// Items per part at most.
    pub part_rows: u64,
    /// Fill the track report up to about this many bytes instead.
    pub track_bytes: Option<u64>,
}

/// What failed while staging a synthetic run.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticRunError {
    #[error("writing the synthetic part {key}: {source}")]
    Part {
        key: String,
        #[source]
        source: StreamedUploadError<std::io::Error>,
    },
    #[error("writing the synthetic run manifest: {0}")]
    Manifest(#[source] StoreError),
}

/// Item `index` of a report of `rows` items: distinct ids per report kind
/// (negative ones included), ranks 1.., modifiers falling from 100 to 0.
pub fn synthetic_item(kind: ReportKind, index: u64, rows: u64) -> ReportItem {
    let step = 1_000_003 * (kind as i64 + 1);
    ReportItem {
        id: index as i64 * step - 5_000_000,
        search_rank: index + 1,
        modifier_hundredths: (100 - index.min(rows) * 100 / rows.max(1)) as u8,
    }
}

/// The first `rows` items of a report, as [`publish_synthetic_run`] writes
/// them for a run of `rows` items.
pub fn synthetic_items(kind: ReportKind, rows: u64) -> Vec<ReportItem> {
    (0..rows).map(|index| synthetic_item(kind, index, rows)).collect()
}

/// Streams the three reports of `run` into `staging` (under `reports/`) and
/// then its manifest, and returns the manifest.
pub async fn publish_synthetic_run<S: ObjectStore>(
    staging: &S,
    run: RunId,
    size: SyntheticRunSize,
) -> Result<RunManifest, SyntheticRunError> {
    let mut reports = Vec::new();
    for kind in ReportKind::ALL {
        let (row_target, byte_target) = match size.track_bytes {
            Some(track_bytes) if kind == ReportKind::Track => (u64::MAX, track_bytes),
            _ => (size.rows, u64::MAX),
        };
        let (mut parts, mut rows, mut bytes) = (Vec::new(), 0u64, 0u64);
        while rows < row_target && bytes < byte_target {
            let key = format!("{REPORTS_PREFIX}{}", part_key(kind, run, parts.len() + 1, CANONICAL));
            let items = rows..rows.saturating_add(size.part_rows.max(1)).min(row_target);
            let (total_rows, bytes_left) = (row_target, byte_target - bytes);
            let (part, _) = upload_from_blocking(staging, &key, CANONICAL.content_type(), move |out| {
                write_part(kind, items, total_rows, bytes_left, out)
            })
            .await
            .map_err(|source| SyntheticRunError::Part { key: key.clone(), source })?;
            rows += part.rows;
            bytes += part.bytes;
            parts.push(PartSummary { key, ..part });
        }
        reports.push(ReportManifest {
            data_type: kind.data_type().to_owned(),
            id_field: kind.id_field().to_owned(),
            rows,
            parts,
            id_range: None,
        });
    }
    let manifest = synthetic_manifest(run, reports);
    let body = serde_json::to_vec_pretty(&manifest).expect("a run manifest serialises");
    staging
        .put(&run_manifest_key(run), Bytes::from(body), "application/json")
        .await
        .map_err(SyntheticRunError::Manifest)?;
    Ok(manifest)
}

/// The manifest `rank` would write for these reports, over a 28-day window
/// ending the day before the run.
fn synthetic_manifest(run: RunId, reports: Vec<ReportManifest>) -> RunManifest {
    let day = run.time().date_naive();
    let track_rows = reports.first().map_or(0, |report| report.rows);
    RunManifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: run,
        run_time: run.time(),
        generated_at: run.time() + chrono::Duration::minutes(4),
        engine: None,
        engine_reason: None,
        mode: DeliveryMode::Full,
        format: CANONICAL.format,
        compression: CANONICAL.compression,
        scoring: ScoringSummary {
            lookback_days: 28,
            half_life_days: 7.0,
            first_day: day - chrono::Duration::days(28),
            last_day: day - chrono::Duration::days(1),
            days_with_plays: vec![day - chrono::Duration::days(1)],
        },
        inputs: InputSummary {
            catalogue_files: 1,
            catalogue_rows: track_rows,
            play_files: 1,
            play_rows: track_rows,
            unknown_track_play_rows: 0,
            unknown_track_plays: 0,
        },
        reports,
    }
}

/// One part holding `items` of a `total_rows`-item report, stopping early
/// once `max_bytes` have been handed on (the writer hands its output on in
/// blocks, so a part may overshoot by up to one block). The key is filled in by the caller.
fn write_part<W: Write>(
    kind: ReportKind,
    items: std::ops::Range<u64>,
    total_rows: u64,
    max_bytes: u64,
    out: &mut W,
) -> std::io::Result<PartSummary> {
    let written = Rc::new(Cell::new(0u64));
    let counting = CountingWriter { inner: out, written: written.clone() };
    let mut writer = PartWriter::new(kind, CANONICAL, counting)?;
    for index in items {
        if written.get() >= max_bytes {
            break;
        }
        writer.push(synthetic_item(kind, index, total_rows))?;
    }
    let (rows, bytes, sha256, _) = writer.finish()?;
    Ok(PartSummary { key: String::new(), rows, bytes, sha256 })
}

/// Counts the bytes that reach the upload, so a part can stop at a size.
struct CountingWriter<'a, W> {
    inner: &'a mut W,
    written: Rc<Cell<u64>>,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.written.set(self.written.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_stores::LocalStores;

    fn run() -> RunId {
        "20261119030000".parse().unwrap()
    }

    #[tokio::test]
    async fn parts_hold_the_items_in_order_and_the_manifest_describes_them() {
        let stores = LocalStores::new("synthetic-run");
        let staging = &stores.staging;
        let size = SyntheticRunSize { rows: 25, part_rows: 10, track_bytes: None };
        let manifest = publish_synthetic_run(staging, run(), size).await.unwrap();
        let stored: RunManifest =
            serde_json::from_slice(&staging.get(&run_manifest_key(run())).await.unwrap()).unwrap();
        assert_eq!(stored.reports.len(), 3);
        for (report, kind) in manifest.reports.iter().zip(ReportKind::ALL) {
            assert_eq!(report.rows, 25);
            assert_eq!(report.parts.iter().map(|p| p.rows).collect::<Vec<_>>(), vec![10, 10, 5]);
            let mut expected = PartWriter::new(kind, CANONICAL, Vec::new()).unwrap();
            for item in synthetic_items(kind, 25).into_iter().take(10) {
                expected.push(item).unwrap();
            }
            let (_, _, sha256, body) = expected.finish().unwrap();
            assert_eq!(staging.get(&report.parts[0].key).await.unwrap(), body);
            assert_eq!(report.parts[0].sha256, sha256);
        }
        assert_eq!(stored.reports[0].parts, manifest.reports[0].parts);
    }

    #[tokio::test]
    async fn a_byte_target_bounds_the_track_report_only() {
        let stores = LocalStores::new("synthetic-run-bytes");
        let staging = &stores.staging;
        let size = SyntheticRunSize { rows: 1_000, part_rows: 1_000_000, track_bytes: Some(2_000_000) };
        let manifest = publish_synthetic_run(staging, run(), size).await.unwrap();
        let track = &manifest.reports[0];
        let track_bytes: u64 = track.parts.iter().map(|p| p.bytes).sum();
        assert!(track.rows > 1_000, "the byte target, not the row count, bounds the track report");
        // The writer hands its output on in blocks, so a part overshoots by
        // less than one block.
        let block = popularity_reports::report_writer::LINE_BUFFER_BYTES as u64 + 256;
        assert!((2_000_000..2_000_000 + block).contains(&track_bytes), "{track_bytes} bytes");
        assert!(manifest.reports[1..].iter().all(|report| report.rows == 1_000));
    }
}
