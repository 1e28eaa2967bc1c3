//! The publish step (docs/scaling.md, "The publish step"): turns what the
//! run's queries wrote into staging's `athena-results/<runId>/<attempt>/`
//! into a published run, exactly as the rank Lambda publishes one —
//! `reports/<data_type>/<runId>/part-NNN.json` of the same sizes and bytes,
//! then `manifests/<runId>.json` with the same fields, last, created only if
//! absent. Fanout and the deliverers then see an ordinary run.
//!
//! It trusts nothing it reads: each query's files are those Athena's data
//! manifest lists (a listed file that is missing, or a file in the folder
//! that is not listed, is refused); each report is merged by rank with every
//! check of [`super::merge`] and must have as many items as the run's counts
//! say; the counts must show valid input. Any deviation fails naming the
//! file and the row, and no manifest is written, so nothing is published.
//! It never reads the catalogue or the plays themselves, only their listing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::domain::{part_key, Encoding, ReportKind, RunId};
use crate::engine::EngineChoice;
use crate::input::{self, InputError};
use crate::manifest::{
    run_manifest_key, DeliveryMode, IdRange, InputSummary, ReportManifest, RunManifest, ScoringSummary,
    MANIFEST_SCHEMA_VERSION, REPORTS_PREFIX,
};
use crate::rank::{check_run_time, PublishedRun, RunTimeError};
use crate::report_writer::{PartSummary, PartWriter};
use crate::scoring::ScoringRules;
use crate::store::{upload_from_blocking, ObjectStore, PutOutcome, StoreError, StreamedUploadError};

use super::merge::{join_ranges, MergeError, RangeEnd, RangeStart, ReportMerge};
use super::output::{parse_data_manifest, read_int64_rows, FileReadError, RowPlace, WINDOW_BYTES};
pub use super::part_formatters::PartError;
use super::part_formatters::PartFormatters;
use super::sql::{Attempt, RunQuery};
use super::RunFolders;

/// What the publish step needs besides its stores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishSettings {
    pub rules: ScoringRules,
    /// At most this many items per part (`PART_ROWS`), as for rank.
    pub part_rows: u64,
    /// Threads formatting the parts' text beside the merges, shared among
    /// the ranges written at once, each getting at least one if any (0:
    /// each merge's thread formats its parts itself); the function's cores.
    pub format_threads: usize,
    /// Ranges of parts merged and written at once (at least 1); the
    /// function's cores, as rank writes its parts.
    pub parts_at_once: usize,
}

/// What one of the run's queries left: its id and the data manifest Athena
/// wrote (`QueryExecution.Statistics.DataManifestLocation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryOutput {
    /// The query's name ([`RunQuery::name`]).
    pub query: String,
    #[serde(default)]
    pub query_execution_id: Option<String>,
    /// `s3://…` of the data manifest.
    #[serde(default)]
    pub data_manifest: Option<String>,
}

/// One attempt at a run, as the state machine hands it to the publish step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AthenaRun {
    pub run_time: DateTime<Utc>,
    pub attempt: Attempt,
    pub engine: EngineChoice,
    pub outputs: Vec<QueryOutput>,
}

/// The run's counts (`sql/run_inputs.sql`), as its one row states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCounts {
    pub catalogue_rows: u64,
    pub catalogue_tracks: u64,
    pub artists: u64,
    pub products: u64,
    pub play_rows: u64,
    pub unknown_track_play_rows: u64,
    pub unknown_track_plays: u64,
    pub negative_play_rows: u64,
}

/// Why the publish step published nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("nothing published: {0}")]
    RunTime(#[from] RunTimeError),
    #[error(
        "Athena's output of {query} is not usable, nothing published: the state machine gave no data manifest for it"
    )]
    NoDataManifest { query: &'static str },
    #[error(
        "Athena's output of {query} is not usable, nothing published: its data manifest {manifest} names {file} \
         (row {row}), which is not in the run's folder {folder}"
    )]
    OutsideTheRun { query: &'static str, manifest: String, row: usize, file: String, folder: String },
    #[error(
        "Athena's output of {query} is not usable, nothing published: {file} is listed in its data manifest \
         {manifest} (row {row}) but does not exist"
    )]
    MissingFile { query: &'static str, manifest: String, row: usize, file: String },
    #[error(
        "Athena's output of {query} is not usable, nothing published: {file} is in its folder but not in its data \
         manifest {manifest} (left by another attempt, or put there by hand)"
    )]
    UnlistedFile { query: &'static str, manifest: String, file: String },
    #[error(
        "Athena's output of {query} is not usable, nothing published: the report is empty: its data manifest \
         {manifest} has no row 1 (the query wrote no file)"
    )]
    NoFiles { query: &'static str, manifest: String },
    #[error("{report}: Athena's output is not a report, nothing published: {source}")]
    Report {
        report: ReportKind,
        #[source]
        source: MergeError,
    },
    #[error("Athena's output of run_inputs is not usable, nothing published: {0}")]
    Counts(String),
    #[error("bad input, nothing published: {0}")]
    BadInput(String),
    #[error("bad input, nothing published: {0}")]
    Input(#[source] InputError),
    #[error(
        "could not read Athena's output or the data bucket's listing, nothing published; a retry may succeed: {0}"
    )]
    Read(#[source] StoreError),
    #[error("could not write report part {key}: {source}")]
    WritePart {
        key: String,
        #[source]
        source: Box<StreamedUploadError<PartError>>,
    },
    #[error("could not write the run manifest: {0}")]
    WriteManifest(#[source] StoreError),
    #[error("could not check whether run {run} is already published: {source}")]
    CheckPublished {
        run: RunId,
        #[source]
        source: StoreError,
    },
    #[error("run manifest {location} exists but cannot be read, so run {run} is left as it is: {reason}")]
    PublishedManifestUnreadable { run: RunId, location: String, reason: String },
}

impl PublishError {
    /// Whether a retry of the same step may succeed: the store failed, not
    /// the data. Athena's output and the input do not change on a retry.
    pub fn is_transient(&self) -> bool {
        match self {
            PublishError::Read(_)
            | PublishError::WriteManifest(_)
            | PublishError::CheckPublished { .. }
            | PublishError::Report { source: MergeError::File(FileReadError::Store { .. }), .. } => true,
            PublishError::WritePart { source, .. } => matches!(**source, StreamedUploadError::Store(_)),
            PublishError::Input(InputError::Store(_)) => true,
            _ => false,
        }
    }
}

impl From<InputError> for PublishError {
    fn from(error: InputError) -> Self {
        match error {
            InputError::Store(store) => PublishError::Read(store),
            bad => PublishError::Input(bad),
        }
    }
}

/// Publishes the run of `run` from Athena's output in `staging` (whose
/// objects `folders` locates) and the listing of `data`, unless that run is
/// already published.
pub async fn publish_run<D: ObjectStore, S: ObjectStore + Clone + 'static>(
    data: &D,
    staging: &S,
    folders: &RunFolders,
    settings: &PublishSettings,
    run: &AthenaRun,
) -> Result<PublishedRun, PublishError> {
    check_run_time(run.run_time, Utc::now())?;
    let run_id = RunId::from_time(run.run_time);
    info!(run_id = %run_id, attempt = %run.attempt, engine = %run.engine.engine, engine_reason = %run.engine.reason,
          "publishing Athena's output");
    if let Some(manifest) = published_manifest(staging, run_id).await? {
        info!(run_id = %run_id, "run already published; nothing is written again");
        return Ok(PublishedRun { manifest, newly_published: false });
    }
    let started = std::time::Instant::now();
    let counts = read_counts(staging, folders, run).await?;
    check_counts(&counts)?;

    // What rank would say about its input, from the listing alone.
    let window = settings.rules.window(run.run_time);
    let days: Vec<_> = window.iter().map(|d| d.day).collect();
    let catalogue_files = input::find_catalogue(data).await?;
    let plays_by_day = input::find_plays(data, &days).await?;

    let mut reports = Vec::with_capacity(3);
    for kind in ReportKind::ALL {
        let query = RunQuery::Report(kind);
        let files = output_files(staging, folders, run, query).await?;
        let expected = match kind {
            ReportKind::Track => counts.catalogue_rows,
            ReportKind::Artist => counts.artists,
            ReportKind::Product => counts.products,
        };
        let report = publish_report(staging, run_id, kind, &files, expected, settings).await?;
        info!(run_id = %run_id, report = %kind, rows = report.rows, parts = report.parts.len(), files = files.len(),
              elapsed_ms = started.elapsed().as_millis() as u64, "report merged and written");
        reports.push(report);
    }

    let manifest = RunManifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id,
        run_time: run.run_time,
        generated_at: Utc::now(),
        engine: Some(run.engine.engine),
        engine_reason: Some(run.engine.reason.clone()),
        mode: DeliveryMode::Full,
        format: Encoding::default().format,
        compression: Encoding::default().compression,
        scoring: ScoringSummary {
            lookback_days: settings.rules.lookback_days,
            half_life_days: settings.rules.half_life_days,
            first_day: days.first().copied().unwrap_or(run.run_time.date_naive()),
            last_day: days.last().copied().unwrap_or(run.run_time.date_naive()),
            days_with_plays: plays_by_day.iter().map(|(d, _)| *d).collect(),
        },
        inputs: InputSummary {
            catalogue_files: catalogue_files.len() as u64,
            catalogue_rows: counts.catalogue_rows,
            play_files: plays_by_day.iter().map(|(_, files)| files.len() as u64).sum(),
            play_rows: counts.play_rows,
            unknown_track_play_rows: counts.unknown_track_play_rows,
            unknown_track_plays: counts.unknown_track_plays,
        },
        reports,
    };
    if counts.unknown_track_play_rows > 0 {
        warn!(run_id = %run_id, unknown_track_play_rows = counts.unknown_track_play_rows,
              unknown_track_plays = counts.unknown_track_plays, "plays of tracks not in the catalogue were ignored");
    }
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let created = staging
        .put_if_absent(&run_manifest_key(run_id), Bytes::from(body), "application/json")
        .await
        .map_err(PublishError::WriteManifest)?;
    if created == PutOutcome::AlreadyExists {
        warn!(run_id = %run_id, "another attempt published this run first; its manifest stands");
        let manifest = published_manifest(staging, run_id).await?.unwrap_or(manifest);
        return Ok(PublishedRun { manifest, newly_published: false });
    }
    info!(run_id = %run_id, key = %staging.describe(&run_manifest_key(run_id)),
          elapsed_ms = started.elapsed().as_millis() as u64, "run manifest published");
    Ok(PublishedRun { manifest, newly_published: true })
}

async fn published_manifest<S: ObjectStore>(staging: &S, run: RunId) -> Result<Option<RunManifest>, PublishError> {
    let key = run_manifest_key(run);
    match staging.get(&key).await {
        Ok(body) => serde_json::from_slice(&body).map(Some).map_err(|e| PublishError::PublishedManifestUnreadable {
            run,
            location: staging.describe(&key),
            reason: e.to_string(),
        }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(source) => Err(PublishError::CheckPublished { run, source }),
    }
}

/// The data files `query` wrote, as keys of `staging`: those its data
/// manifest lists, each checked to exist, inside the query's own folder,
/// which must hold no other data file.
pub async fn output_files<S: ObjectStore>(
    staging: &S,
    folders: &RunFolders,
    run: &AthenaRun,
    query: RunQuery,
) -> Result<Vec<String>, PublishError> {
    let name = query.name();
    let run_id = RunId::from_time(run.run_time);
    let manifest_uri = run
        .outputs
        .iter()
        .find(|output| output.query == name)
        .and_then(|output| output.data_manifest.clone())
        .ok_or(PublishError::NoDataManifest { query: name })?;
    let folder = folders.output_folder(run_id, &run.attempt, query);
    let folder_uri = folders.uri(&folder);
    let manifest_key = folders.key_of(&manifest_uri).ok_or_else(|| PublishError::OutsideTheRun {
        query: name,
        manifest: manifest_uri.clone(),
        row: 0,
        file: manifest_uri.clone(),
        folder: folders.uri(&folders.run_folder(run_id, &run.attempt)),
    })?;
    let text = staging.get(&manifest_key).await.map_err(PublishError::Read)?;
    let listed = parse_data_manifest(&String::from_utf8_lossy(&text));
    if listed.is_empty() && query != RunQuery::RunInputs {
        return Err(PublishError::NoFiles { query: name, manifest: manifest_uri });
    }
    let present = staging.list(&folder).await.map_err(PublishError::Read)?;
    let mut keys = Vec::with_capacity(listed.len());
    for (index, uri) in listed.iter().enumerate() {
        let outside = || PublishError::OutsideTheRun {
            query: name,
            manifest: manifest_uri.clone(),
            row: index + 1,
            file: uri.clone(),
            folder: folder_uri.clone(),
        };
        let key = folders.key_of(uri).filter(|key| key.starts_with(&folder)).ok_or_else(outside)?;
        if !present.iter().any(|entry| entry.key == key) {
            return Err(PublishError::MissingFile {
                query: name,
                manifest: manifest_uri.clone(),
                row: index + 1,
                file: staging.describe(&key),
            });
        }
        keys.push(key);
    }
    if let Some(extra) =
        present.iter().find(|entry| is_data_file(&entry.key[folder.len()..]) && !keys.contains(&entry.key))
    {
        return Err(PublishError::UnlistedFile {
            query: name,
            manifest: manifest_uri.clone(),
            file: staging.describe(&extra.key),
        });
    }
    Ok(keys)
}

/// A data file of an output folder: not a folder marker, nothing hidden.
fn is_data_file(below: &str) -> bool {
    !below.is_empty() && !below.ends_with('/') && !below.split('/').any(|p| p.starts_with('_') || p.starts_with('.'))
}

/// The columns of `sql/run_inputs.sql`'s one row, in [`RunCounts`]' order.
const COUNT_COLUMNS: [&str; 8] = [
    "catalogue_rows",
    "catalogue_tracks",
    "artists",
    "products",
    "play_rows",
    "unknown_track_play_rows",
    "unknown_track_plays",
    "negative_play_rows",
];

async fn read_counts<S: ObjectStore>(
    staging: &S,
    folders: &RunFolders,
    run: &AthenaRun,
) -> Result<RunCounts, PublishError> {
    let files = output_files(staging, folders, run, RunQuery::RunInputs).await?;
    let mut rows = Vec::new();
    for key in &files {
        let read = read_int64_rows(staging, key, &COUNT_COLUMNS).await.map_err(|error| match error {
            FileReadError::Store { source, .. } => PublishError::Read(source),
            other => PublishError::Counts(other.to_string()),
        })?;
        rows.extend(read.into_iter().enumerate().map(|(index, row)| (key.clone(), index, row)));
    }
    let [(key, index, row)] = <[_; 1]>::try_from(rows).map_err(|rows: Vec<_>| {
        let files = files.iter().map(|k| staging.describe(k)).collect::<Vec<_>>().join(", ");
        PublishError::Counts(format!("{files}: expected exactly one row of counts, found {}", rows.len()))
    })?;
    let count = |column: usize| {
        u64::try_from(row[column]).map_err(|_| {
            let place = RowPlace { file: staging.describe(&key), row: index as u64 + 1 };
            PublishError::Counts(format!("{place}: {} is {}, not a count", COUNT_COLUMNS[column], row[column]))
        })
    };
    Ok(RunCounts {
        catalogue_rows: count(0)?,
        catalogue_tracks: count(1)?,
        artists: count(2)?,
        products: count(3)?,
        play_rows: count(4)?,
        unknown_track_play_rows: count(5)?,
        unknown_track_plays: count(6)?,
        negative_play_rows: count(7)?,
    })
}

/// Refuses input `rank` would refuse (Athena's counts cannot name the file:
/// `popularity rank --data` on the same data does).
fn check_counts(counts: &RunCounts) -> Result<(), PublishError> {
    if counts.catalogue_rows == 0 {
        return Err(PublishError::BadInput("the catalogue has no rows; the catalogue must list every track".into()));
    }
    if counts.catalogue_tracks < counts.catalogue_rows {
        return Err(PublishError::BadInput(format!(
            "{} duplicate trackId row(s) in the catalogue ({} rows, {} distinct trackIds); `popularity rank --data` \
             on the same data names the files",
            counts.catalogue_rows - counts.catalogue_tracks,
            counts.catalogue_rows,
            counts.catalogue_tracks
        )));
    }
    if counts.negative_play_rows > 0 {
        return Err(PublishError::BadInput(format!(
            "{} play row(s) with negative plays inside the window; `popularity rank --data` on the same data names \
             the files",
            counts.negative_play_rows
        )));
    }
    Ok(())
}

/// Decoder threads the ranges of one report may take at once: each range
/// runs one per file on the blocking pool (Tokio's default is 512 threads,
/// which the parts' producers and the store's file reads share), so a
/// report of many files is written in fewer ranges.
const DECODER_THREADS: usize = 256;

/// Merges one report's files and writes its parts, as rank writes them.
///
/// The parts are cut into [`PublishSettings::parts_at_once`] ranges of
/// consecutive parts (fewer when the files are many: [`DECODER_THREADS`]),
/// each merged and written on its own and all at once (rank, too, writes
/// as many parts at once as it has cores). Their seams are checked in rank
/// order as the ranges end, a failed range's start included, so the ranges
/// together check all one merge would and report the first deviation by
/// rank: the lowest failing range's error, or a seam's before it.
async fn publish_report<S: ObjectStore + Clone + 'static>(
    staging: &S,
    run: RunId,
    kind: ReportKind,
    files: &[String],
    expected_rows: u64,
    settings: &PublishSettings,
) -> Result<ReportManifest, PublishError> {
    let report_error = |source| PublishError::Report { report: kind, source };
    let opened = ReportMerge::open_files(staging, kind, files).await.map_err(report_error)?;
    let part_rows = settings.part_rows.max(1);
    let planned_parts = expected_rows.div_ceil(part_rows).max(1);
    let ranges_for_files = (DECODER_THREADS / opened.len().max(1)).max(1);
    let ranges = (settings.parts_at_once.clamp(1, ranges_for_files) as u64).min(planned_parts);
    let helpers = settings.format_threads.div_ceil(ranges as usize);
    let bounds: Vec<u64> = (0..=ranges).map(|range| range * planned_parts / ranges).collect();
    let written = futures_util::future::join_all(bounds.windows(2).map(|parts| {
        let last = parts[1] == planned_parts;
        let end_rank = (!last).then_some(parts[1] * part_rows + 1);
        let first_rank = parts[0] * part_rows + 1;
        let window = WINDOW_BYTES / ranges;
        let merge = ReportMerge::over(staging, &opened, first_rank, end_rank, Some(expected_rows), window);
        write_parts(staging, run, kind, merge, parts[0], helpers, part_rows)
    }))
    .await;
    let mut ends: Vec<RangeEnd> = Vec::with_capacity(written.len());
    let mut parts = Vec::new();
    for range in written {
        match range {
            Ok((end, range_parts)) => {
                if let Some(before) = ends.last() {
                    before.check_followed_by(&end.start).map_err(report_error)?;
                }
                ends.push(end);
                parts.extend(range_parts);
            }
            Err(RangeFailure { start, error }) => {
                if let (Some(before), Some(start)) = (ends.last(), start) {
                    before.check_followed_by(&start).map_err(report_error)?;
                }
                return Err(error);
            }
        }
    }
    let (items, id_range) = join_ranges(&ends, expected_rows).map_err(report_error)?;
    Ok(ReportManifest {
        data_type: kind.data_type().to_owned(),
        id_field: kind.id_field().to_owned(),
        rows: items,
        parts,
        id_range: id_range.map(|(min, max)| IdRange { min, max }),
    })
}

/// Why a range wrote no complete set of parts, with how it began when its
/// merge got that far (for the seam with the range before).
struct RangeFailure {
    start: Option<RangeStart>,
    error: PublishError,
}

/// Writes the parts of one range, numbered from `first_part + 1`, until its
/// merge ends; returns how the range ended (for the seam checks) and the
/// parts.
async fn write_parts<S: ObjectStore + Clone + 'static>(
    staging: &S,
    run: RunId,
    kind: ReportKind,
    mut merge: ReportMerge,
    first_part: u64,
    helpers: usize,
    part_rows: u64,
) -> Result<(RangeEnd, Vec<PartSummary>), RangeFailure> {
    let report_error = |source| PublishError::Report { report: kind, source };
    let encoding = Encoding::default();
    let mut formatters = PartFormatters::start(kind, encoding, helpers);
    let mut parts = Vec::new();
    // Where a part that fails leaves how the range began.
    let failed_start = Arc::new(Mutex::new(None));
    loop {
        let number = first_part as usize + parts.len() + 1;
        let key = format!("{REPORTS_PREFIX}{}", part_key(kind, run, number, encoding));
        let start_slot = Arc::clone(&failed_start);
        let written = upload_from_blocking(staging, &key, encoding.content_type(), move |sink| {
            let write = || {
                let mut writer = PartWriter::new(kind, encoding, sink)?;
                formatters.write_part(&mut merge, &mut writer, part_rows)?;
                let more = merge.has_more().map_err(PartError::Merge)?;
                let (rows, bytes, sha256, _) = writer.finish()?;
                Ok::<_, PartError>((more, rows, bytes, sha256))
            };
            match write() {
                Ok((more, rows, bytes, sha256)) => Ok((merge, formatters, more, rows, bytes, sha256)),
                Err(error) => {
                    *start_slot.lock().expect("not poisoned") = Some(merge.range_start());
                    Err(error)
                }
            }
        })
        .await;
        let ((returned, returned_formatters, more, rows, bytes, sha256), _) = match written {
            Ok(written) => written,
            Err(source) => {
                let error = match source {
                    StreamedUploadError::Produce(PartError::Merge(merge)) => report_error(merge),
                    source => PublishError::WritePart { key: key.clone(), source: Box::new(source) },
                };
                let start = failed_start.lock().expect("not poisoned").take();
                return Err(RangeFailure { start, error });
            }
        };
        merge = returned;
        formatters = returned_formatters;
        parts.push(PartSummary { key, rows, bytes, sha256 });
        if !more {
            break;
        }
    }
    // Ended: note where, and let the decoders go before the other ranges end.
    let ended = tokio::task::spawn_blocking(move || merge.finish()).await.expect("finishing a merge does not panic");
    match ended {
        Ok(end) => Ok((end, parts)),
        Err(error) => Err(RangeFailure { start: None, error: report_error(error) }),
    }
}
