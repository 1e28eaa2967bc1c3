//! One ranking run from input store to staging store (docs/design.md,
//! "Inputs", "Scores and ranks" and "Reports and layouts"): find the
//! catalogue and the plays of the window, decode them on every core, score
//! and rank, write each report in parts, then the run manifest last.
//!
//! A run is all or nothing: every input is validated before anything is
//! written, and the manifest — the only thing that starts deliveries — is
//! written only after every part is stored. A published run is immutable
//! (docs/design.md, "Delivery rules"): a run whose manifest exists is not ranked again, and the
//! manifest is created conditionally, so of two racing runs of one time only
//! one publishes. Deliverers rely on this (a GCS object that already exists
//! is taken as written by an earlier attempt of the same run).
//!
//! A run refuses what it cannot name or score (issue 13, item 7): a run time
//! before 2000, more than a day ahead of now, or past year 9999 (whose run
//! id would not be 14 digits), and scoring settings outside
//! [`ScoringRules::check`]. A window without plays of catalogue tracks is
//! published (every item scores 0) with a warning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, Utc};
use futures_util::{StreamExt, TryStreamExt};
use tracing::{info, warn};

use crate::domain::{part_key, Encoding, ReportKind, RunId};
use crate::engine::EngineChoice;
use crate::input::{self, InputError, InputFile, InputPlace, CATALOGUE_COLUMNS, PLAYS_COLUMNS};
use crate::manifest::{
    run_manifest_key, DeliveryMode, IdRange, InputSummary, ReportManifest, RunManifest, ScoringSummary,
    MANIFEST_SCHEMA_VERSION, REPORTS_PREFIX,
};
use crate::ranking::{group_scores, rank_by_score, BatchCounts, Catalogue, IdIndex, RankedItems, ScoreAccumulator};
use crate::report_writer::{PartSummary, PartWriter, ReportItem};
use crate::scoring::{modifier_hundredths, ScoringRules, ScoringRulesError};
use crate::store::{upload_from_blocking, ObjectStore, PutOutcome, StoreError, StreamedUploadError};

/// Everything a run needs besides its stores and time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankSettings {
    pub rules: ScoringRules,
    /// At most this many items per part.
    pub part_rows: u64,
    pub encoding: Encoding,
    /// Decoding and writing threads.
    pub threads: usize,
    /// Input objects up to this size are fetched whole; larger ones (a
    /// catalogue written as one object) by ranged GETs of their row groups,
    /// so memory does not grow with the object ([`input::ParquetObject`]).
    pub whole_read_max_bytes: u64,
}

impl Default for RankSettings {
    fn default() -> Self {
        Self {
            rules: ScoringRules::default(),
            part_rows: 5_000_000,
            encoding: Encoding::default(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            whole_read_max_bytes: input::WHOLE_READ_MAX_BYTES,
        }
    }
}

/// The earliest run time a run accepts (RFC 3339). None of our data is
/// older; an earlier time is a zeroed or mistyped one (1970 is what a zero
/// timestamp gives).
pub const EARLIEST_RUN_TIME: &str = "2000-01-01T00:00:00Z";

/// How far a run time may be ahead of the clock: a scheduled event's time
/// is the moment it fires, and the plays of later days do not exist yet. A
/// day leaves room for clock skew and a run started by hand for the same day.
pub const MAX_RUN_TIME_AHEAD_HOURS: i64 = 24;

/// A run time no run can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunTimeError {
    #[error("run time {time} is before {EARLIEST_RUN_TIME}, the earliest a run may have (a zeroed or mistyped time?)")]
    BeforeEarliest { time: DateTime<Utc> },
    #[error("run time {time} is past year 9999: its run id would not be 14 digits YYYYMMDDhhmmss")]
    Unnameable { time: DateTime<Utc> },
    #[error(
        "run time {time} is more than {MAX_RUN_TIME_AHEAD_HOURS} hours ahead of now ({now}): the plays of its \
         window do not exist yet"
    )]
    TooFarAhead { time: DateTime<Utc>, now: DateTime<Utc> },
}

/// Refuses a run time that cannot name a run or that lies too far from
/// `now` (see [`EARLIEST_RUN_TIME`], [`MAX_RUN_TIME_AHEAD_HOURS`]).
pub fn check_run_time(time: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), RunTimeError> {
    let earliest: DateTime<Utc> = EARLIEST_RUN_TIME.parse().expect("a valid RFC 3339 time");
    if time < earliest {
        return Err(RunTimeError::BeforeEarliest { time });
    }
    if time.year() > 9999 {
        return Err(RunTimeError::Unnameable { time });
    }
    if time > now + Duration::hours(MAX_RUN_TIME_AHEAD_HOURS) {
        return Err(RunTimeError::TooFarAhead { time, now });
    }
    Ok(())
}

/// Whether any play of a catalogue track fell inside the run's window;
/// without one every item of every report scores 0.
pub fn window_has_plays(manifest: &RunManifest) -> bool {
    manifest.inputs.play_rows > manifest.inputs.unknown_track_play_rows
}

/// Why a run published nothing.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error("nothing published: {0}")]
    RunTime(#[from] RunTimeError),
    #[error("the scoring settings cannot be used, nothing published: {0}")]
    Settings(#[from] ScoringRulesError),
    #[error("bad input, nothing published: {0}")]
    Input(#[source] InputError),
    /// The input could not be read (a network or service failure, or an
    /// object replaced while it was read): not the data's fault, and a
    /// retry may well succeed.
    #[error("could not read the input, nothing published; a retry may succeed: {0}")]
    ReadInput(#[source] StoreError),
    #[error("could not write report part {key}: {source}")]
    WritePart {
        key: String,
        #[source]
        source: StreamedUploadError<std::io::Error>,
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

impl From<InputError> for RankError {
    fn from(error: InputError) -> Self {
        match error {
            InputError::Store(store) => Self::ReadInput(store),
            bad => Self::Input(bad),
        }
    }
}

/// What a call of [`rank_run`] published.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedRun {
    pub manifest: RunManifest,
    /// `false` when the run was already published (by an earlier or a
    /// concurrent invocation): nothing of it was written again, and
    /// `manifest` is the one already there.
    pub newly_published: bool,
}

/// The published manifest of `run`, if there is one.
pub(crate) async fn published_manifest<O: ObjectStore>(
    output: &O,
    run: RunId,
) -> Result<Option<RunManifest>, RankError> {
    let key = run_manifest_key(run);
    match output.get(&key).await {
        Ok(body) => serde_json::from_slice(&body).map(Some).map_err(|e| RankError::PublishedManifestUnreadable {
            run,
            location: output.describe(&key),
            reason: e.to_string(),
        }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(source) => Err(RankError::CheckPublished { run, source }),
    }
}

/// What the manifest of a run ranked by [`rank_run`] says about its engine.
pub const LAMBDA_ENGINE_REASON: &str = "ranked in one process by the rank Lambda's code (RankEngine=lambda)";

/// Ranks the catalogue in `input` as of `run_time` and publishes the reports
/// and the run manifest into `output`, unless that run is already published.
pub async fn rank_run<I: ObjectStore, O: ObjectStore>(
    input: &I,
    output: &O,
    settings: &RankSettings,
    run_time: DateTime<Utc>,
) -> Result<PublishedRun, RankError> {
    rank_run_as(input, output, settings, run_time, EngineChoice::lambda(LAMBDA_ENGINE_REASON)).await
}

/// [`rank_run`], recording `engine` (always the Lambda engine, with the
/// reason it was chosen) in the run manifest.
pub async fn rank_run_as<I: ObjectStore, O: ObjectStore>(
    input: &I,
    output: &O,
    settings: &RankSettings,
    run_time: DateTime<Utc>,
    engine: EngineChoice,
) -> Result<PublishedRun, RankError> {
    settings.rules.check()?;
    check_run_time(run_time, Utc::now())?;
    let started = std::time::Instant::now();
    let elapsed_ms = || started.elapsed().as_millis() as u64;
    let run = RunId::from_time(run_time);
    info!(run_id = %run, engine = %engine.engine, engine_reason = %engine.reason, "engine chosen");
    if let Some(manifest) = published_manifest(output, run).await? {
        info!(run_id = %run, "run already published; nothing is written again");
        return Ok(PublishedRun { manifest, newly_published: false });
    }
    let window = settings.rules.window(run_time);
    let days: Vec<_> = window.iter().map(|d| d.day).collect();
    // List everything first: a misnamed folder fails the run before any work.
    let catalogue_files = input::find_catalogue(input).await?;
    let plays_by_day = input::find_plays(input, &days).await?;
    info!(run_id = %run, elapsed_ms = elapsed_ms(), "inputs listed");

    let threads = settings.threads.max(1);
    let catalogue = Arc::new(read_catalogue(input, &catalogue_files, threads, settings.whole_read_max_bytes).await?);
    info!(run_id = %run, tracks = catalogue.tracks.len(), artists = catalogue.artist_ids.len(),
          products = catalogue.product_ids.len(), elapsed_ms = elapsed_ms(), "catalogue read");

    let mut play_files = Vec::new();
    for (day, files) in &plays_by_day {
        let weight = window.iter().find(|w| w.day == *day).expect("day of the window").weight;
        play_files.extend(files.iter().map(|f| (f.clone(), weight)));
    }
    let (track_scores, counts) =
        read_plays(input, &play_files, Arc::clone(&catalogue), threads, settings.whole_read_max_bytes).await?;
    if counts.unknown_track_rows > 0 {
        warn!(run_id = %run, unknown_track_play_rows = counts.unknown_track_rows,
              unknown_track_plays = counts.unknown_track_plays as u64, "plays of tracks not in the catalogue were ignored");
    }
    info!(run_id = %run, play_rows = counts.rows, elapsed_ms = elapsed_ms(), "plays scored");
    if counts.rows == counts.unknown_track_rows {
        warn!(run_id = %run, first_day = ?days.first(), last_day = ?days.last(), play_files = play_files.len(),
              play_rows = counts.rows,
              "no plays of catalogue tracks fall inside the window: every item scores 0 and ranks by id \
               (are the plays/date=YYYY-MM-DD/ folders of these days missing or empty?)");
    }

    let catalogue = Arc::into_inner(catalogue).expect("no reader holds the catalogue any more");
    let reports =
        tokio::task::spawn_blocking(move || rank_reports(catalogue, track_scores)).await.expect("ranking panicked");
    info!(run_id = %run, elapsed_ms = elapsed_ms(), "reports ranked");

    let reports: Vec<Arc<RankedReport>> = reports.into_iter().map(Arc::new).collect();
    let report_manifests = write_reports(output, run, &reports, settings, threads).await?;
    drop(reports);
    info!(run_id = %run, elapsed_ms = elapsed_ms(), "report parts written");

    let manifest = RunManifest {
        schema_version: MANIFEST_SCHEMA_VERSION,
        run_id: run,
        run_time,
        generated_at: Utc::now(),
        engine: Some(engine.engine),
        engine_reason: Some(engine.reason),
        mode: DeliveryMode::Full,
        format: settings.encoding.format,
        compression: settings.encoding.compression,
        scoring: ScoringSummary {
            lookback_days: settings.rules.lookback_days,
            half_life_days: settings.rules.half_life_days,
            first_day: days.first().copied().unwrap_or(run_time.date_naive()),
            last_day: days.last().copied().unwrap_or(run_time.date_naive()),
            days_with_plays: plays_by_day.iter().map(|(d, _)| *d).collect(),
        },
        inputs: InputSummary {
            catalogue_files: catalogue_files.len() as u64,
            catalogue_rows: report_manifests[0].rows,
            play_files: play_files.len() as u64,
            play_rows: counts.rows,
            unknown_track_play_rows: counts.unknown_track_rows,
            unknown_track_plays: u64::try_from(counts.unknown_track_plays).unwrap_or(u64::MAX),
        },
        reports: report_manifests,
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let created = output
        .put_if_absent(&run_manifest_key(run), Bytes::from(body), "application/json")
        .await
        .map_err(RankError::WriteManifest)?;
    if created == PutOutcome::AlreadyExists {
        warn!(run_id = %run, "another invocation published this run first; its manifest stands");
        let manifest = published_manifest(output, run).await?.unwrap_or(manifest);
        return Ok(PublishedRun { manifest, newly_published: false });
    }
    info!(run_id = %run, key = %output.describe(&run_manifest_key(run)), elapsed_ms = elapsed_ms(), "run manifest published");
    Ok(PublishedRun { manifest, newly_published: true })
}

/// A report ready to write: rank `r + 1` is `items.get(r)`.
#[derive(Debug)]
pub struct RankedReport {
    pub kind: ReportKind,
    pub items: RankedItems,
    max_score: u128,
    id_range: Option<IdRange>,
}

impl RankedReport {
    /// Ranks items given in id order (`ids` ascending) with their scores.
    pub fn new(kind: ReportKind, ids: Vec<i64>, scores: Vec<u128>) -> Self {
        let id_range = ids.first().zip(ids.last()).map(|(&min, &max)| IdRange { min, max });
        let items = rank_by_score(ids, scores);
        let max_score = items.max();
        Self { kind, items, max_score, id_range }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn hundredths_at(&self, rank: usize) -> u8 {
        modifier_hundredths(self.items.get(rank).0, self.max_score)
    }

    /// Calls `emit` for ranks `first..last` (0-based, exclusive end) in order.
    pub fn for_each_item(
        &self,
        ranks: std::ops::Range<usize>,
        mut emit: impl FnMut(ReportItem) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        // The modifier never increases along the rank order (every step of
        // its formula is monotone, in f64 too), so it is constant on at most
        // 101 runs of ranks. Each run's end is found by binary search: a few
        // thousand logarithms per report instead of one per item.
        let mut rank = ranks.start;
        while rank < ranks.end {
            let hundredths = self.hundredths_at(rank);
            let run_length = (rank..ranks.end).collect_run_length(|r| self.hundredths_at(r) == hundredths);
            for r in rank..rank + run_length {
                emit(ReportItem {
                    id: self.items.get(r).1,
                    search_rank: r as u64 + 1,
                    modifier_hundredths: hundredths,
                })?;
            }
            rank += run_length;
        }
        Ok(())
    }
}

/// Length of the prefix of a range on which a predicate holds, for a
/// predicate that holds on a prefix and fails after it.
trait RunLength {
    fn collect_run_length(self, holds: impl Fn(usize) -> bool) -> usize;
}

impl RunLength for std::ops::Range<usize> {
    fn collect_run_length(self, holds: impl Fn(usize) -> bool) -> usize {
        let (mut low, mut high) = (self.start, self.end);
        while low < high {
            let middle = low + (high - low) / 2;
            if holds(middle) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low - self.start
    }
}

/// Aggregates artist and product scores and orders all three reports.
pub fn rank_reports(catalogue: Catalogue, track_scores: Vec<u128>) -> Vec<RankedReport> {
    let started = std::time::Instant::now();
    let Catalogue { tracks, artist_of_track, product_of_track, artist_ids, product_ids } = catalogue;
    let (artist_scores, product_scores) = std::thread::scope(|scope| {
        let artists = scope.spawn(|| group_scores(&track_scores, &artist_of_track, artist_ids.len()));
        let products = group_scores(&track_scores, &product_of_track, product_ids.len());
        (artists.join().expect("grouping panicked"), products)
    });
    drop((artist_of_track, product_of_track));
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "grouped");
    let (track_report, (artist_report, product_report)) = std::thread::scope(|scope| {
        let groups = scope.spawn(|| {
            (
                RankedReport::new(ReportKind::Artist, artist_ids, artist_scores),
                RankedReport::new(ReportKind::Product, product_ids, product_scores),
            )
        });
        let ids = tracks.into_ids();
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "index freed");
        let track = RankedReport::new(ReportKind::Track, ids, track_scores);
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "tracks sorted");
        let groups = groups.join().expect("ranking panicked");
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "groups sorted");
        (track, groups)
    });
    vec![track_report, artist_report, product_report]
}

/// One row group of one input file, queued for a decoding thread.
struct DecodeUnit {
    file: Arc<str>,
    file_index: usize,
    data: input::RowGroupBytes,
    row_group: usize,
    weight: u64,
}

/// Fetches `files` one after another (the next while the current decodes;
/// a file over `whole_read_max_bytes` by ranged GETs, a few row groups in
/// flight) and runs `decode` on `threads` threads, one row group at a time.
/// The queue to the decoders is bounded, so at most a few row groups (or
/// two small files) are held at once. Stops at the first error, from the
/// store or from `decode`.
async fn decode_in_parallel<S, T, D>(
    store: &S,
    files: &[(InputFile, u64)],
    columns: &'static [&'static str],
    threads: usize,
    whole_read_max_bytes: u64,
    decode: D,
) -> Result<Vec<T>, InputError>
where
    S: ObjectStore,
    T: Send + 'static,
    D: Fn(&DecodeUnit, &mut Vec<Vec<i64>>) -> Result<T, InputError> + Send + Sync + 'static,
{
    let (sender, receiver) = flume::bounded::<DecodeUnit>(threads * 2);
    let failed = Arc::new(AtomicBool::new(false));
    let workers_failed = Arc::clone(&failed);
    let workers = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let receiver = receiver.clone();
                    let (decode, failed) = (&decode, &workers_failed);
                    scope.spawn(move || {
                        let mut results = Vec::new();
                        // Reused across row groups: fresh memory costs page faults.
                        let mut buffers = vec![Vec::new(); columns.len()];
                        for unit in receiver.iter() {
                            if failed.load(Ordering::Relaxed) {
                                continue;
                            }
                            let outcome =
                                unit.data.decode_into(&mut buffers).and_then(|()| decode(&unit, &mut buffers));
                            match outcome {
                                Ok(value) => results.push(value),
                                Err(error) => {
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(error);
                                }
                            }
                        }
                        Ok(results)
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut first_error = None;
            for handle in handles {
                match handle.join().expect("decoding thread panicked") {
                    Ok(results) => all.extend(results),
                    Err(error) => first_error = first_error.or(Some(error)),
                }
            }
            first_error.map_or(Ok(all), Err)
        })
    });

    let produced = async {
        for (file_index, (file, weight)) in files.iter().enumerate() {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let object = input::ParquetObject::open(store, file, columns, whole_read_max_bytes).await?;
            let name = Arc::clone(object.name());
            let mut row_groups = futures_util::stream::iter(0..object.row_groups())
                .map(|row_group| object.fetch_row_group(store, row_group))
                .buffered(input::ROW_GROUPS_IN_FLIGHT);
            while let Some(data) = row_groups.next().await {
                let data = data?;
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let row_group = data.row_group();
                let unit = DecodeUnit { file: Arc::clone(&name), file_index, data, row_group, weight: *weight };
                if sender.send_async(unit).await.is_err() {
                    break;
                }
            }
        }
        Ok::<_, InputError>(())
    }
    .await;
    drop(sender);
    let decoded = workers.await.expect("decoding pool panicked");
    produced?;
    decoded
}

async fn read_catalogue<S: ObjectStore>(
    store: &S,
    files: &[InputFile],
    threads: usize,
    whole_read_max_bytes: u64,
) -> Result<Catalogue, InputError> {
    let files: Vec<(InputFile, u64)> = files.iter().map(|f| (f.clone(), 0)).collect();
    let mut chunks =
        decode_in_parallel(store, &files, &CATALOGUE_COLUMNS, threads, whole_read_max_bytes, |unit, buffers| {
            // The catalogue keeps every row group, so it takes the buffers
            // (and leaves ones as large, so the next decode allocates once).
            let columns: Vec<Vec<i64>> = buffers
                .iter_mut()
                .map(|b| {
                    let capacity = b.len();
                    std::mem::replace(b, Vec::with_capacity(capacity))
                })
                .collect();
            Ok((unit.file_index, unit.row_group, columns))
        })
        .await?;
    chunks.sort_unstable_by_key(|&(file, row_group, _)| (file, row_group));
    let rows: usize = chunks.iter().map(|(_, _, c)| c[0].len()).sum();
    let names: Vec<String> = files.iter().map(|(f, _)| store.describe(&f.key)).collect();
    if rows == 0 {
        return Err(InputError::EmptyCatalogue { files: names.join(", ") });
    }
    // Where each file's rows start, to name the file of a duplicate.
    let mut file_starts = vec![usize::MAX; names.len()];
    let mut next_row = 0;
    for (file, _, columns) in &chunks {
        file_starts[*file] = file_starts[*file].min(next_row);
        next_row += columns[0].len();
    }
    let place_of_row = move |row: usize| {
        let file = file_starts
            .iter()
            .enumerate()
            .filter(|(_, &start)| start <= row)
            .max_by_key(|(_, &start)| start)
            .map_or(0, |(f, _)| f);
        format!("{} (row {})", names[file], row - file_starts[file])
    };
    tokio::task::spawn_blocking(move || {
        // The row groups stay as decoded: joining them would touch 24 bytes
        // a track of fresh memory again.
        let column = |index: usize| chunks.iter().map(|(_, _, c)| &c[index][..]).collect::<Vec<&[i64]>>();
        let (track_ids, artist_ids, product_ids) = (column(0), column(1), column(2));
        Catalogue::build(&track_ids, &artist_ids, &product_ids).map_err(|duplicate| InputError::DuplicateTrack {
            track_id: duplicate.id,
            first: place_of_row(duplicate.first_row),
            second: place_of_row(duplicate.second_row),
        })
    })
    .await
    .expect("catalogue build panicked")
}

async fn read_plays<S: ObjectStore>(
    store: &S,
    files: &[(InputFile, u64)],
    catalogue: Arc<Catalogue>,
    threads: usize,
    whole_read_max_bytes: u64,
) -> Result<(Vec<u128>, BatchCounts), InputError> {
    let accumulator = Arc::new(ScoreAccumulator::new(catalogue.tracks.len()));
    let sink = Arc::clone(&accumulator);
    let batches =
        decode_in_parallel(store, files, &PLAYS_COLUMNS, threads, whole_read_max_bytes, move |unit, columns| {
            let (track_ids, plays) = (&columns[0], &columns[1]);
            if let Some(row) = plays.iter().position(|&p| p < 0) {
                return Err(InputError::NegativePlays {
                    place: InputPlace {
                        file: unit.file.to_string(),
                        row_group: Some(unit.row_group),
                        column: Some("plays".into()),
                    },
                    track_id: track_ids[row],
                    plays: plays[row],
                });
            }
            let tracks: &IdIndex = &catalogue.tracks;
            Ok(sink.add_batch(tracks, track_ids, plays, unit.weight))
        })
        .await?;
    let mut counts = BatchCounts::default();
    for batch in batches {
        counts.add(batch);
    }
    let scores = Arc::into_inner(accumulator).expect("decoders finished").into_scores();
    Ok((scores, counts))
}

/// Writes the parts of every report, `threads` at a time (all parts of all
/// reports share one pool, so a large report does not leave cores idle
/// while small ones wait), and returns each report's manifest entry.
async fn write_reports<O: ObjectStore>(
    output: &O,
    run: RunId,
    reports: &[Arc<RankedReport>],
    settings: &RankSettings,
    threads: usize,
) -> Result<Vec<ReportManifest>, RankError> {
    let part_rows = settings.part_rows.max(1) as usize;
    let encoding = settings.encoding;
    let jobs: Vec<(usize, usize)> = reports
        .iter()
        .enumerate()
        .flat_map(|(index, report)| (0..report.len().div_ceil(part_rows).max(1)).map(move |part| (index, part)))
        .collect();
    let parts: Vec<(usize, PartSummary)> = futures_util::stream::iter(jobs)
        .map(|(index, part)| {
            let report = Arc::clone(&reports[index]);
            let key = format!("{REPORTS_PREFIX}{}", part_key(report.kind, run, part + 1, encoding));
            async move {
                let ranks = part * part_rows..((part + 1) * part_rows).min(report.len());
                let kind = report.kind;
                let written = upload_from_blocking(output, &key, encoding.content_type(), move |sink| {
                    let mut writer = PartWriter::new(kind, encoding, sink)?;
                    report.for_each_item(ranks, |item| writer.push(item))?;
                    let (rows, bytes, sha256, _) = writer.finish()?;
                    Ok::<_, std::io::Error>((rows, bytes, sha256))
                })
                .await;
                match written {
                    Ok(((rows, bytes, sha256), _)) => Ok((index, PartSummary { key, rows, bytes, sha256 })),
                    Err(source) => Err(RankError::WritePart { key, source }),
                }
            }
        })
        .buffered(threads)
        .try_collect()
        .await?;
    Ok(reports
        .iter()
        .enumerate()
        .map(|(index, report)| ReportManifest {
            data_type: report.kind.data_type().to_owned(),
            id_field: report.kind.id_field().to_owned(),
            rows: report.len() as u64,
            parts: parts.iter().filter(|(i, _)| *i == index).map(|(_, p)| p.clone()).collect(),
            id_range: report.id_range,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_to_read_the_input_is_not_called_bad_input() {
        let unreachable = StoreError::S3 {
            operation: "GetObject",
            location: "s3://data/plays/date=2026-11-18/part-0.parquet".into(),
            detail: "request has timed out".into(),
        };
        let error = RankError::from(InputError::Store(unreachable));
        assert!(matches!(error, RankError::ReadInput(_)), "{error}");
        assert!(error.to_string().starts_with("could not read the input"), "{error}");
        let bad = RankError::from(InputError::NoCatalogue { location: "s3://data/".into() });
        assert!(bad.to_string().starts_with("bad input"), "{bad}");
    }

    #[test]
    fn modifier_runs_give_the_same_items_as_computing_each_one() {
        let scores: Vec<u128> = (0..3000u128).map(|i| ((i * i * 7919) % 100_003) << 20).collect();
        let ids: Vec<i64> = (0..3000).collect();
        let report = RankedReport::new(ReportKind::Track, ids, scores.clone());
        let max = scores.iter().copied().max().unwrap();
        for ranks in [0..3000, 17..2500, 2999..3000, 5..5] {
            let mut items = Vec::new();
            report
                .for_each_item(ranks.clone(), |item| {
                    items.push(item);
                    Ok(())
                })
                .unwrap();
            let expected: Vec<ReportItem> = ranks
                .map(|r| {
                    let id = report.items.get(r).1;
                    let hundredths = modifier_hundredths(scores[id as usize], max);
                    ReportItem { id, search_rank: r as u64 + 1, modifier_hundredths: hundredths }
                })
                .collect();
            assert_eq!(items, expected);
        }
    }
}
