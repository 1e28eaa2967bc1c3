//! Deterministic synthetic input data: a catalogue and daily plays written as
//! Parquet in exactly the layout docs/design.md, "Inputs" expects in the data bucket, at
//! any scale from 1 thousand to 100 million tracks, so that the whole system
//! can be run and measured without real data. It writes only through the
//! [`ObjectStore`] port and never holds a whole file, or the catalogue, in
//! memory: each file is produced one row group at a time and streamed out.
//!
//! # Layout
//!
//! - `catalogue/part-NNNNN.parquet`: `trackId`, `masterArtistId`, `productId`
//!   (INT64, required), one row per track in trackId order, at most
//!   [`CATALOGUE_PART_ROWS`] rows per file.
//! - `plays/date=YYYY-MM-DD/part-NNNNN.parquet`: `trackId`, `plays` (INT64,
//!   required) for each of the `days` UTC days ending at `end_date`, only
//!   tracks played that day, in trackId order. A day is split into one part
//!   per [`PLAYS_PART_TRACKS`] tracks of the catalogue (one part up to 50M
//!   tracks), which keeps a part near 15M rows.
//!
//! Row groups hold at most [`ROW_GROUP_ROWS`] rows; pages are SNAPPY-compressed with
//! the writer's default encodings, as Athena or Spark would write them.
//!
//! # The distribution
//!
//! Every random value is a pure function of `(seed, what, track index,
//! day)` through SplitMix64, so the output does not depend on how many
//! files are written at once, or in which order; the same spec gives the
//! same bytes (on one platform: the plays use `f64` `exp`/`ln`/`sin`).
//!
//! - **Track ids** start at 100,000,000 and ascend by 1, plus an extra gap
//!   of 1–3 before about 1 track in 8.
//! - **Products**: consecutive runs of 1–19 tracks (uniform, mean 10) share
//!   a productId; **artists**: consecutive runs of 1–3 products (mean 2)
//!   share a masterArtistId. So there is about one product per 10 tracks
//!   and one artist per 20. Ids ascend from 500,000,000 (products) and
//!   900,000,000 (artists).
//! - **Plays** of track `i` on day `d` are Poisson(λ) with
//!   `λ = base_i × weekday_d × wave_i(d) × noise_{i,d}`:
//!   - `base_i = 0.14 × u^(-1/1.2)`, `u` uniform in (0, 1]: a Pareto tail
//!     (α = 1.2), the continuous form of Zipf's law: the k-th most played
//!     of N tracks has a rate near `0.14 × (N / k)^0.83`: the most played
//!     of 1M tracks gets some 10–25 thousand plays a day, of 10M some
//!     100–500 thousand (it varies several-fold with the seed), and the
//!     tenth about a seventh of the first.
//!   - `weekday_d`: 0.93–0.98 Monday to Thursday, 1.07 Friday, 1.12
//!     Saturday, 1.01 Sunday.
//!   - `wave_i(d) = exp(0.3 × sin(2π (d / 91 + phase_i)))`: each track rises
//!     and fades over a quarter year, so rankings move from run to run.
//!   - `noise_{i,d}` uniform in [0.8, 1.2).
//!   - The draw is by inversion below λ = 40 and by the normal approximation
//!     above, rounded and clamped at 0.
//!
//!   About 30% of tracks are played on a given day, whatever the scale.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{Datelike, NaiveDate, Weekday};
use parquet::basic::Compression;
use parquet::data_type::Int64Type;
use parquet::errors::ParquetError;
use parquet::file::properties::{WriterProperties, WriterPropertiesPtr};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::store::{upload_from_blocking, ObjectStore, StoreError, StreamedUploadError};

/// Smallest and largest catalogue the generator accepts.
pub const MIN_TRACKS: u64 = 1_000;
pub const MAX_TRACKS: u64 = 100_000_000;
/// Most days of plays one spec may ask for.
pub const MAX_DAYS: u32 = 366;
/// Rows per row group, in every file.
pub const ROW_GROUP_ROWS: usize = 1_048_576;
/// Rows per catalogue part file.
pub const CATALOGUE_PART_ROWS: u64 = 10_000_000;
/// Catalogue tracks covered by one plays part file of a day.
pub const PLAYS_PART_TRACKS: u64 = 50_000_000;
/// The first track, product and artist ids.
pub const FIRST_TRACK_ID: i64 = 100_000_000;
pub const FIRST_PRODUCT_ID: i64 = 500_000_000;
pub const FIRST_ARTIST_ID: i64 = 900_000_000;

/// Files written at once, each by its own blocking thread.
const CONCURRENT_FILES: usize = 2;
const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";
const CATALOGUE_SCHEMA: &str = "message catalogue {
    required int64 trackId;
    required int64 masterArtistId;
    required int64 productId;
}";
const PLAYS_SCHEMA: &str = "message plays {
    required int64 trackId;
    required int64 plays;
}";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Catalogue size, [`MIN_TRACKS`]..=[`MAX_TRACKS`].
    pub tracks: u64,
    /// Days of plays, 1..=[`MAX_DAYS`], ending at `end_date`.
    pub days: u32,
    /// The last day with plays (UTC), included.
    pub end_date: NaiveDate,
    pub seed: u64,
}

impl SampleSpec {
    /// Checks the ranges the generator supports.
    pub fn validate(&self) -> Result<(), SampleError> {
        if !(MIN_TRACKS..=MAX_TRACKS).contains(&self.tracks) {
            return Err(SampleError::InvalidSpec {
                field: "tracks",
                value: self.tracks.to_string(),
                expected: "between 1,000 and 100,000,000",
            });
        }
        if !(1..=MAX_DAYS).contains(&self.days) {
            return Err(SampleError::InvalidSpec {
                field: "days",
                value: self.days.to_string(),
                expected: "between 1 and 366",
            });
        }
        if self.first_date().is_none() {
            return Err(SampleError::InvalidSpec {
                field: "end_date",
                value: self.end_date.to_string(),
                expected: "a date at least `days` days after the earliest supported date",
            });
        }
        Ok(())
    }

    /// The first day with plays: `end_date - days + 1`.
    pub fn first_date(&self) -> Option<NaiveDate> {
        self.end_date.checked_sub_days(chrono::Days::new(u64::from(self.days.max(1)) - 1))
    }
}

/// Reported after each finished file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleProgress {
    pub files_done: usize,
    pub files_total: usize,
    /// Rows in the finished files, catalogue and plays together.
    pub rows_written: u64,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSummary {
    pub catalogue_rows: u64,
    pub play_rows: u64,
    /// Keys written, relative to the store root: catalogue parts, then plays
    /// by date.
    pub files: Vec<String>,
    /// Distinct masterArtistIds in the catalogue.
    pub artists: u64,
    /// Distinct productIds in the catalogue.
    pub products: u64,
}

/// Why the sample could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("invalid sample spec: {field} is {value}, expected {expected}")]
    InvalidSpec { field: &'static str, value: String, expected: &'static str },
    #[error(
        "{location} already exists and this sample would not replace it, so the data set \
         would mix two samples; generate into an empty location, or remove catalogue/ and \
         plays/ there first"
    )]
    StaleObject { location: String },
    #[error("writing Parquet file {location} failed: {source}")]
    Parquet {
        location: String,
        #[source]
        source: ParquetError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes the catalogue and daily plays described by `spec` into `store`
/// (see the module documentation for layout and distribution), two files at a
/// time, calling `progress` after each file. Objects already present at the
/// same keys are replaced; any other object under `catalogue/` or `plays/`
/// is refused before anything is written. On error, files already finished
/// stay; the one being written is not published.
pub async fn generate<S: ObjectStore>(
    store: &S,
    spec: &SampleSpec,
    progress: &(dyn Fn(SampleProgress) + Sync),
) -> Result<SampleSummary, SampleError> {
    spec.validate()?;
    let plan = {
        let spec = spec.clone();
        // One pass over every track to find where each part file starts.
        match tokio::task::spawn_blocking(move || SamplePlan::new(&spec)).await {
            Ok(plan) => plan,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    };
    refuse_stale_objects(store, &plan).await?;
    tracing::info!(tracks = spec.tracks, days = spec.days, files = plan.jobs.len(), "generating sample data");

    // Two workers take files in turn. Each file's CPU work runs on its own
    // blocking thread inside `upload_from_blocking`, so polling both workers
    // from this one task keeps both cores busy while memory stays at two
    // files' row groups and streaming buffers.
    let next_job = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let files_total = plan.jobs.len();
    let worker = || async {
        loop {
            let index = next_job.fetch_add(1, Ordering::Relaxed);
            let Some(job) = plan.jobs.get(index) else {
                return Ok::<(), SampleError>(());
            };
            let rows = write_file(store, job).await?;
            let report = {
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                tally.files_done += 1;
                match job.content {
                    FileContent::Catalogue { .. } => tally.catalogue_rows += rows,
                    FileContent::Plays { .. } => tally.play_rows += rows,
                }
                SampleProgress {
                    files_done: tally.files_done,
                    files_total,
                    rows_written: tally.catalogue_rows + tally.play_rows,
                }
            };
            progress(report);
        }
    };
    const _: () = assert!(CONCURRENT_FILES == 2, "one worker future per concurrent file");
    tokio::try_join!(worker(), worker())?;

    let tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(SampleSummary {
        catalogue_rows: tally.catalogue_rows,
        play_rows: tally.play_rows,
        files: plan.jobs.iter().map(|job| job.key.clone()).collect(),
        artists: plan.artists,
        products: plan.products,
    })
}

#[derive(Debug, Default)]
struct Tally {
    files_done: usize,
    catalogue_rows: u64,
    play_rows: u64,
}

async fn refuse_stale_objects<S: ObjectStore>(store: &S, plan: &SamplePlan) -> Result<(), SampleError> {
    let planned: HashSet<&str> = plan.jobs.iter().map(|job| job.key.as_str()).collect();
    for prefix in ["catalogue/", "plays/"] {
        if let Some(stale) = store.list(prefix).await?.into_iter().find(|entry| !planned.contains(entry.key.as_str())) {
            return Err(SampleError::StaleObject { location: store.describe(&stale.key) });
        }
    }
    Ok(())
}

async fn write_file<S: ObjectStore>(store: &S, job: &FileJob) -> Result<u64, SampleError> {
    let content = job.content.clone();
    upload_from_blocking(store, &job.key, PARQUET_CONTENT_TYPE, move |out| content.write_parquet(out))
        .await
        .map(|(bytes, _)| bytes)
        .map_err(|e| match e {
            StreamedUploadError::Produce(source) => SampleError::Parquet { location: store.describe(&job.key), source },
            StreamedUploadError::Store(e) => SampleError::Store(e),
        })
}

/// Every file to write, in summary order, with the catalogue state each
/// starts from.
struct SamplePlan {
    jobs: Vec<FileJob>,
    artists: u64,
    products: u64,
}

struct FileJob {
    key: String,
    content: FileContent,
}

#[derive(Clone)]
enum FileContent {
    Catalogue { start: CatalogueCursor, rows: u64 },
    Plays { start: CatalogueCursor, tracks: u64, day: PlayDay },
}

impl SamplePlan {
    fn new(spec: &SampleSpec) -> Self {
        let (starts, end) = catalogue_checkpoints(spec.seed, spec.tracks, CATALOGUE_PART_ROWS);
        let mut jobs = Vec::new();
        for (part, start) in starts.iter().enumerate() {
            let rows = (spec.tracks - start.next_index).min(CATALOGUE_PART_ROWS);
            jobs.push(FileJob {
                key: format!("catalogue/part-{part:05}.parquet"),
                content: FileContent::Catalogue { start: start.clone(), rows },
            });
        }
        let first_date = spec.first_date().expect("validated spec");
        let per_plays_part = (PLAYS_PART_TRACKS / CATALOGUE_PART_ROWS) as usize;
        for date in first_date.iter_days().take(spec.days as usize) {
            let day = PlayDay::new(date);
            for (part, start) in starts.iter().step_by(per_plays_part).enumerate() {
                let tracks = (spec.tracks - start.next_index).min(PLAYS_PART_TRACKS);
                jobs.push(FileJob {
                    key: format!("plays/date={}/part-{part:05}.parquet", date.format("%Y-%m-%d")),
                    content: FileContent::Plays { start: start.clone(), tracks, day },
                });
            }
        }
        SamplePlan { jobs, artists: end.artists, products: end.products }
    }
}

/// The cursor at tracks 0, `every`, 2 × `every`, … below `tracks`, and after
/// the last track.
fn catalogue_checkpoints(seed: u64, tracks: u64, every: u64) -> (Vec<CatalogueCursor>, CatalogueCursor) {
    let mut cursor = CatalogueCursor::new(seed);
    let mut starts = Vec::new();
    while cursor.next_index < tracks {
        starts.push(cursor.clone());
        for _ in 0..every.min(tracks - cursor.next_index) {
            cursor.next_row();
        }
    }
    (starts, cursor)
}

impl FileContent {
    /// Writes one whole Parquet file, one row group at a time; returns its
    /// rows.
    fn write_parquet(&self, out: impl Write + Send) -> Result<u64, ParquetError> {
        match self {
            FileContent::Catalogue { start, rows } => write_catalogue(out, start.clone(), *rows),
            FileContent::Plays { start, tracks, day } => write_plays(out, start.clone(), *tracks, day),
        }
    }
}

fn writer_properties() -> WriterPropertiesPtr {
    Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build())
}

fn write_catalogue(out: impl Write + Send, mut cursor: CatalogueCursor, rows: u64) -> Result<u64, ParquetError> {
    let schema = Arc::new(parse_message_type(CATALOGUE_SCHEMA)?);
    let mut writer = SerializedFileWriter::new(out, schema, writer_properties())?;
    let capacity = (rows as usize).min(ROW_GROUP_ROWS);
    let mut track_ids = Vec::with_capacity(capacity);
    let mut artist_ids = Vec::with_capacity(capacity);
    let mut product_ids = Vec::with_capacity(capacity);
    let mut left = rows;
    while left > 0 {
        let group = left.min(ROW_GROUP_ROWS as u64);
        track_ids.clear();
        artist_ids.clear();
        product_ids.clear();
        for _ in 0..group {
            let row = cursor.next_row();
            track_ids.push(row.track_id);
            artist_ids.push(row.artist_id);
            product_ids.push(row.product_id);
        }
        write_row_group(&mut writer, &[&track_ids, &artist_ids, &product_ids])?;
        left -= group;
    }
    writer.close()?;
    Ok(rows)
}

fn write_plays(
    out: impl Write + Send,
    mut cursor: CatalogueCursor,
    tracks: u64,
    day: &PlayDay,
) -> Result<u64, ParquetError> {
    let schema = Arc::new(parse_message_type(PLAYS_SCHEMA)?);
    let mut writer = SerializedFileWriter::new(out, schema, writer_properties())?;
    // About a third of the tracks are played: start smaller than a full group.
    let capacity = ((tracks / 2) as usize).min(ROW_GROUP_ROWS);
    let mut track_ids = Vec::with_capacity(capacity);
    let mut plays = Vec::with_capacity(capacity);
    let mut rows = 0;
    for _ in 0..tracks {
        let index = cursor.next_index;
        let track_id = cursor.next_track_id();
        let played = day.plays(cursor.seed, index);
        if played > 0 {
            track_ids.push(track_id);
            plays.push(played);
            if track_ids.len() == ROW_GROUP_ROWS {
                write_row_group(&mut writer, &[&track_ids, &plays])?;
                rows += track_ids.len() as u64;
                track_ids.clear();
                plays.clear();
            }
        }
    }
    if !track_ids.is_empty() {
        write_row_group(&mut writer, &[&track_ids, &plays])?;
        rows += track_ids.len() as u64;
    }
    writer.close()?;
    Ok(rows)
}

/// Writes one row group whose columns, in schema order, are `columns`.
fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    columns: &[&[i64]],
) -> Result<(), ParquetError> {
    let mut row_group = writer.next_row_group()?;
    for values in columns {
        let mut column = row_group
            .next_column()?
            .ok_or_else(|| ParquetError::General("the schema has fewer columns than the sample writes".into()))?;
        column.typed::<Int64Type>().write_batch(values, None, None)?;
        column.close()?;
    }
    row_group.close()?;
    Ok(())
}

/// Walks the catalogue track by track. Everything it yields follows from the
/// seed and the track, product and artist indexes, so a clone taken at any
/// track continues exactly as the original would.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CatalogueCursor {
    seed: u64,
    /// Index (0-based) of the track the next call yields.
    next_index: u64,
    last_track_id: i64,
    product_id: i64,
    product_tracks_left: u64,
    artist_id: i64,
    artist_products_left: u64,
    /// Products and artists started so far.
    products: u64,
    artists: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CatalogueRow {
    track_id: i64,
    artist_id: i64,
    product_id: i64,
}

impl CatalogueCursor {
    fn new(seed: u64) -> Self {
        CatalogueCursor {
            seed,
            next_index: 0,
            last_track_id: FIRST_TRACK_ID - 1,
            product_id: FIRST_PRODUCT_ID - 1,
            product_tracks_left: 0,
            artist_id: FIRST_ARTIST_ID - 1,
            artist_products_left: 0,
            products: 0,
            artists: 0,
        }
    }

    fn next_track_id(&mut self) -> i64 {
        let index = self.next_index;
        self.next_index += 1;
        let mut step = 1;
        if index > 0 {
            let h = hash(self.seed, Stream::TrackGap, index, 0);
            if h & 7 == 0 {
                step += 1 + (h >> 3) % 3;
            }
        }
        self.last_track_id += step as i64;
        self.last_track_id
    }

    fn next_row(&mut self) -> CatalogueRow {
        let track_id = self.next_track_id();
        if self.product_tracks_left == 0 {
            if self.artist_products_left == 0 {
                self.artist_products_left = 1 + hash(self.seed, Stream::ArtistRun, self.artists, 0) % 3;
                self.artists += 1;
                self.artist_id += 1;
            }
            self.artist_products_left -= 1;
            self.product_tracks_left = 1 + hash(self.seed, Stream::ProductRun, self.products, 0) % 19;
            self.products += 1;
            self.product_id += 1;
        }
        self.product_tracks_left -= 1;
        CatalogueRow { track_id, artist_id: self.artist_id, product_id: self.product_id }
    }
}

/// Base daily rate: `RATE_SCALE × u^(-1/RATE_TAIL)`. Tuned so that ~30% of
/// tracks are played on a day.
const RATE_SCALE: f64 = 0.14;
const RATE_TAIL: f64 = 1.2;
/// Keeps the one-in-2^53 draw from becoming absurd.
const MAX_RATE: f64 = 50_000_000.0;
const WAVE_AMPLITUDE: f64 = 0.3;
const WAVE_PERIOD_DAYS: f64 = 91.0;
/// Monday first.
const WEEKDAY_FACTOR: [f64; 7] = [0.94, 0.93, 0.95, 0.98, 1.07, 1.12, 1.01];
/// Above this rate the normal approximation replaces inversion.
const NORMAL_APPROXIMATION_RATE: f64 = 40.0;

/// What the plays of one day share across tracks.
#[derive(Debug, Clone, Copy)]
struct PlayDay {
    /// Days since 1970-01-01: keys the per-day randomness, so a date has the
    /// same plays whatever window it is generated in.
    epoch_day: i64,
    weekday_factor: f64,
}

impl PlayDay {
    fn new(date: NaiveDate) -> Self {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        let weekday: Weekday = date.weekday();
        PlayDay {
            epoch_day: (date - epoch).num_days(),
            weekday_factor: WEEKDAY_FACTOR[weekday.num_days_from_monday() as usize],
        }
    }

    /// Plays of the track at `index` on this day.
    fn plays(&self, seed: u64, index: u64) -> i64 {
        let base = (RATE_SCALE * (-unit_open(hash(seed, Stream::Rate, index, 0)).ln() / RATE_TAIL).exp()).min(MAX_RATE);
        let phase = unit(hash(seed, Stream::Phase, index, 0));
        let wave =
            (WAVE_AMPLITUDE * (std::f64::consts::TAU * (self.epoch_day as f64 / WAVE_PERIOD_DAYS + phase)).sin()).exp();
        let daily = hash(seed, Stream::Daily, index, self.epoch_day as u64);
        let noise = 0.8 + 0.4 * unit(daily);
        let rate = base * self.weekday_factor * wave * noise;
        let draw = splitmix64(daily ^ 0x5EED_D4A7_0F91_A7E5);
        poisson(rate, draw)
    }
}

/// A Poisson(`rate`) draw from the 64 random bits `draw`.
fn poisson(rate: f64, draw: u64) -> i64 {
    if rate < NORMAL_APPROXIMATION_RATE {
        let u = unit(draw);
        let mut probability = (-rate).exp();
        let mut cumulative = probability;
        let mut k = 0;
        // Beyond 200 the remaining mass is below f64 precision for rate < 40.
        while u > cumulative && k < 200 {
            k += 1;
            probability *= rate / k as f64;
            cumulative += probability;
        }
        k
    } else {
        let u1 = unit_open(draw);
        let u2 = unit(splitmix64(draw));
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (rate + rate.sqrt() * z).round().max(0.0) as i64
    }
}

/// Independent random streams drawn from the same (seed, index, day).
#[derive(Clone, Copy)]
#[repr(u64)]
enum Stream {
    TrackGap = 1,
    ProductRun = 2,
    ArtistRun = 3,
    Rate = 4,
    Phase = 5,
    Daily = 6,
}

/// SplitMix64's output function: a bijection that scrambles every input bit
/// into every output bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits for (seed, stream, a, b): counter-based, so any value can
/// be drawn on any thread in any order.
fn hash(seed: u64, stream: Stream, a: u64, b: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed ^ ((stream as u64) << 56)) ^ a) ^ b)
}

/// Uniform in [0, 1).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in (0, 1].
fn unit_open(bits: u64) -> f64 {
    1.0 - unit(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDirStore;
    use bytes::Bytes;
    use parquet::basic::{Repetition, Type as PhysicalType};
    use parquet::column::reader::ColumnReader;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use tempfile::TempDir;

    /// A store on a fresh directory, removed when dropped.
    struct Scratch {
        store: LocalDirStore,
        _dir: TempDir,
    }

    impl Scratch {
        fn new(name: &str) -> Self {
            let (dir, store) = LocalDirStore::in_temp_dir(&format!("sample-{name}"));
            Scratch { store, _dir: dir }
        }

        fn store(&self) -> LocalDirStore {
            self.store.clone()
        }
    }

    fn spec(tracks: u64, days: u32, seed: u64) -> SampleSpec {
        SampleSpec { tracks, days, end_date: NaiveDate::from_ymd_opt(2024, 3, 10).unwrap(), seed }
    }

    fn no_progress(_: SampleProgress) {}

    async fn generate_into(dir: &Scratch, spec: &SampleSpec) -> SampleSummary {
        generate(&dir.store(), spec, &no_progress).await.unwrap()
    }

    fn read_file(dir: &Scratch, key: &str) -> Bytes {
        Bytes::from(std::fs::read(dir.store.root().join(key)).unwrap())
    }

    /// Every value of column `column`, across row groups.
    fn read_column(file: &Bytes, column: usize) -> Vec<i64> {
        let reader = SerializedFileReader::new(file.clone()).unwrap();
        let mut values = Vec::new();
        for group in 0..reader.num_row_groups() {
            let row_group = reader.get_row_group(group).unwrap();
            let ColumnReader::Int64ColumnReader(mut column_reader) = row_group.get_column_reader(column).unwrap()
            else {
                panic!("column {column} is not INT64");
            };
            loop {
                let (records, _, _) = column_reader.read_records(usize::MAX, None, None, &mut values).unwrap();
                if records == 0 {
                    break;
                }
            }
        }
        values
    }

    /// Column names, each checked to be a required INT64.
    fn required_int64_columns(file: &Bytes) -> Vec<String> {
        let reader = SerializedFileReader::new(file.clone()).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        (0..schema.num_columns())
            .map(|i| {
                let column = schema.column(i);
                assert_eq!(column.physical_type(), PhysicalType::INT64, "{}", column.name());
                assert_eq!(column.self_type().get_basic_info().repetition(), Repetition::REQUIRED, "{}", column.name());
                column.name().to_string()
            })
            .collect()
    }

    fn row_count(file: &Bytes) -> u64 {
        let reader = SerializedFileReader::new(file.clone()).unwrap();
        reader.metadata().file_metadata().num_rows() as u64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_one_catalogue_part_and_one_plays_file_per_day_ending_at_end_date() {
        let dir = Scratch::new("layout");
        let summary = generate_into(&dir, &spec(2_000, 3, 1)).await;
        let expected = vec![
            "catalogue/part-00000.parquet",
            "plays/date=2024-03-08/part-00000.parquet",
            "plays/date=2024-03-09/part-00000.parquet",
            "plays/date=2024-03-10/part-00000.parquet",
        ];
        assert_eq!(summary.files, expected);
        let listed: Vec<String> = dir.store().list("").await.unwrap().into_iter().map(|entry| entry.key).collect();
        assert_eq!(listed, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_read_back_with_the_declared_schema_and_the_summary_row_counts() {
        let dir = Scratch::new("schema");
        let summary = generate_into(&dir, &spec(3_000, 2, 7)).await;
        let catalogue = read_file(&dir, &summary.files[0]);
        assert_eq!(required_int64_columns(&catalogue), ["trackId", "masterArtistId", "productId"]);
        assert_eq!(row_count(&catalogue), 3_000);
        assert_eq!(summary.catalogue_rows, 3_000);
        let mut play_rows = 0;
        for key in &summary.files[1..] {
            let plays = read_file(&dir, key);
            assert_eq!(required_int64_columns(&plays), ["trackId", "plays"]);
            play_rows += row_count(&plays);
            let reader = SerializedFileReader::new(plays).unwrap();
            for column in reader.metadata().row_group(0).columns() {
                assert_eq!(column.compression(), Compression::SNAPPY);
            }
        }
        assert_eq!(play_rows, summary.play_rows);
        assert!(play_rows > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_same_seed_gives_identical_bytes() {
        let (first, second) = (Scratch::new("same-a"), Scratch::new("same-b"));
        let spec = spec(5_000, 3, 42);
        let summary = generate_into(&first, &spec).await;
        assert_eq!(generate_into(&second, &spec).await, summary);
        for key in &summary.files {
            assert_eq!(read_file(&first, key), read_file(&second, key), "{key}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_different_seed_gives_different_plays() {
        let (first, second) = (Scratch::new("seed-a"), Scratch::new("seed-b"));
        let summary = generate_into(&first, &spec(5_000, 2, 1)).await;
        generate_into(&second, &spec(5_000, 2, 2)).await;
        for key in &summary.files[1..] {
            let plays_a = read_column(&read_file(&first, key), 1);
            let plays_b = read_column(&read_file(&second, key), 1);
            assert_ne!(plays_a, plays_b, "{key}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_catalogue_has_one_row_per_track_grouped_into_products_and_artists() {
        let dir = Scratch::new("catalogue");
        let tracks = 20_000;
        let summary = generate_into(&dir, &spec(tracks, 1, 3)).await;
        let catalogue = read_file(&dir, &summary.files[0]);
        let (track_ids, artist_ids, product_ids) =
            (read_column(&catalogue, 0), read_column(&catalogue, 1), read_column(&catalogue, 2));
        assert_eq!(track_ids.len() as u64, tracks);
        assert_eq!(track_ids[0], FIRST_TRACK_ID);
        assert_eq!(product_ids[0], FIRST_PRODUCT_ID);
        assert_eq!(artist_ids[0], FIRST_ARTIST_ID);
        let steps: Vec<i64> = track_ids.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(steps.iter().all(|step| (1..=4).contains(step)), "ascending, unique ids");
        let gaps = steps.iter().filter(|&&step| step > 1).count() as f64 / steps.len() as f64;
        assert!((0.10..0.15).contains(&gaps), "about 1 in 8 tracks after a gap: {gaps}");

        // Products and artists are consecutive runs with ascending ids.
        for ids in [&product_ids, &artist_ids] {
            assert!(ids.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        }
        let products = (product_ids.last().unwrap() - FIRST_PRODUCT_ID + 1) as u64;
        let artists = (artist_ids.last().unwrap() - FIRST_ARTIST_ID + 1) as u64;
        assert_eq!((summary.products, summary.artists), (products, artists));
        let tracks_per_product = tracks as f64 / products as f64;
        let tracks_per_artist = tracks as f64 / artists as f64;
        assert!((9.0..11.0).contains(&tracks_per_product), "{tracks_per_product}");
        assert!((18.0..22.0).contains(&tracks_per_artist), "{tracks_per_artist}");
        let mut run = 1;
        for w in product_ids.windows(2) {
            run = if w[1] == w[0] { run + 1 } else { 1 };
            assert!(run <= 19, "a product has at most 19 tracks");
        }
        // Every product belongs to one artist.
        let mut artist_of_product = std::collections::HashMap::new();
        for (product, artist) in product_ids.iter().zip(&artist_ids) {
            assert_eq!(*artist_of_product.entry(*product).or_insert(*artist), *artist);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn about_thirty_percent_of_tracks_are_played_each_day_in_track_order() {
        let dir = Scratch::new("share");
        let tracks = 20_000;
        let summary = generate_into(&dir, &spec(tracks, 7, 11)).await;
        let catalogue: HashSet<i64> = read_column(&read_file(&dir, &summary.files[0]), 0).into_iter().collect();
        for key in &summary.files[1..] {
            let file = read_file(&dir, key);
            let (track_ids, plays) = (read_column(&file, 0), read_column(&file, 1));
            let share = track_ids.len() as f64 / tracks as f64;
            assert!((0.25..=0.35).contains(&share), "{key}: {share}");
            assert!(track_ids.windows(2).all(|w| w[0] < w[1]), "{key}: in trackId order");
            assert!(track_ids.iter().all(|id| catalogue.contains(id)), "{key}");
            assert!(plays.iter().all(|&p| p > 0), "{key}: only played tracks");
            // The Pareto tail: the top track far above the typical one.
            assert!(*plays.iter().max().unwrap() > 100, "{key}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_hold_at_most_1048576_rows() {
        let dir = Scratch::new("row-groups");
        let tracks = ROW_GROUP_ROWS as u64 + 1_000;
        let summary = generate_into(&dir, &spec(tracks, 1, 5)).await;
        let reader = SerializedFileReader::new(read_file(&dir, &summary.files[0])).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|group| group.num_rows()).collect();
        assert_eq!(groups, [ROW_GROUP_ROWS as i64, 1_000]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_is_reported_after_each_file() {
        let dir = Scratch::new("progress");
        let reports = Mutex::new(Vec::new());
        let record = |report: SampleProgress| reports.lock().unwrap().push(report);
        let summary = generate(&dir.store(), &spec(2_000, 4, 9), &record).await.unwrap();
        let reports = reports.into_inner().unwrap();
        assert_eq!(reports.len(), 5);
        for (i, report) in reports.iter().enumerate() {
            assert_eq!((report.files_done, report.files_total), (i + 1, 5));
        }
        assert_eq!(reports.last().unwrap().rows_written, summary.catalogue_rows + summary.play_rows);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_spec_values_are_refused_naming_the_field() {
        let dir = Scratch::new("invalid");
        for (bad, field) in [
            (spec(999, 1, 0), "tracks"),
            (spec(100_000_001, 1, 0), "tracks"),
            (spec(1_000, 0, 0), "days"),
            (spec(1_000, 367, 0), "days"),
        ] {
            let err = generate(&dir.store(), &bad, &no_progress).await.unwrap_err();
            assert!(matches!(&err, SampleError::InvalidSpec { field: f, .. } if *f == field), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(dir.store().list("").await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_of_another_sample_are_refused_before_writing() {
        let dir = Scratch::new("stale");
        generate_into(&dir, &spec(1_000, 3, 1)).await;
        // The same spec again replaces its own files.
        generate_into(&dir, &spec(1_000, 3, 1)).await;
        let mut shorter = spec(1_000, 2, 1);
        shorter.end_date = NaiveDate::from_ymd_opt(2024, 3, 9).unwrap();
        let err = generate(&dir.store(), &shorter, &no_progress).await.unwrap_err();
        assert!(matches!(err, SampleError::StaleObject { .. }), "{err}");
        assert!(err.to_string().contains("date=2024-03-10"), "{err}");
    }

    #[test]
    fn a_cursor_resumed_from_a_checkpoint_continues_the_sequential_catalogue() {
        let tracks = 25_000;
        let mut sequential = CatalogueCursor::new(77);
        let rows: Vec<CatalogueRow> = (0..tracks).map(|_| sequential.next_row()).collect();
        let (starts, end) = catalogue_checkpoints(77, tracks, 10_000);
        assert_eq!(starts.len(), 3);
        assert_eq!(end, sequential);
        for start in starts {
            let from = start.next_index as usize;
            let mut resumed = start.clone();
            let resumed_rows: Vec<CatalogueRow> = (0..tracks as usize - from).map(|_| resumed.next_row()).collect();
            assert_eq!(resumed_rows, rows[from..]);
        }
    }

    #[test]
    fn plays_of_a_date_do_not_depend_on_the_window_it_is_generated_in() {
        let day = PlayDay::new(NaiveDate::from_ymd_opt(2024, 3, 10).unwrap());
        let again = PlayDay::new(NaiveDate::from_ymd_opt(2024, 3, 10).unwrap());
        let next = PlayDay::new(NaiveDate::from_ymd_opt(2024, 3, 11).unwrap());
        let plays = |day: &PlayDay| (0..2_000).map(|i| day.plays(5, i)).collect::<Vec<_>>();
        assert_eq!(plays(&day), plays(&again));
        assert_ne!(plays(&day), plays(&next));
    }

    #[test]
    fn poisson_draws_have_the_requested_mean() {
        for rate in [0.3, 5.0, 39.0, 41.0, 10_000.0] {
            let n = 20_000;
            let total: i64 = (0..n).map(|i| poisson(rate, splitmix64(i))).sum();
            let mean = total as f64 / n as f64;
            assert!((mean - rate).abs() < 0.05 * rate + 0.02, "rate {rate}: mean {mean}");
        }
    }

    /// Measures speed and calibration; run with
    /// `cargo test --release -p popularity-reports --lib sample:: -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, minutes in debug builds"]
    async fn measure_generation_speed() {
        let day = PlayDay::new(NaiveDate::from_ymd_opt(2024, 3, 10).unwrap());
        let sample: Vec<i64> = (0..100_000).map(|i| day.plays(1, i)).collect();
        let played = sample.iter().filter(|&&p| p > 0).count();
        println!("played share at 100k tracks: {:.3}", played as f64 / 1e5);
        for tracks in [1_000_000u64, 10_000_000] {
            let dir = Scratch::new("speed");
            let started = std::time::Instant::now();
            let summary = generate_into(&dir, &spec(tracks, 14, 1)).await;
            let elapsed = started.elapsed().as_secs_f64();
            let rows = summary.catalogue_rows + summary.play_rows;
            let top = read_column(&read_file(&dir, summary.files.last().unwrap()), 1).into_iter().max().unwrap();
            let bytes: u64 =
                summary.files.iter().map(|key| std::fs::metadata(dir.store.root().join(key)).unwrap().len()).sum();
            println!(
                "{tracks} tracks x 14 days: {elapsed:.1} s, {rows} rows ({:.1} M rows/s), \
                 played share {:.3}, top plays {top}, {:.0} MB",
                rows as f64 / elapsed / 1e6,
                summary.play_rows as f64 / 14.0 / tracks as f64,
                bytes as f64 / 1e6
            );
        }
    }
}
