//! Deltas between two runs of one report (docs/design.md, "Delta feeds"): the
//! items that are new or whose `searchRank` or `searchModifier` changed
//! since the base run (`upsert` files, in ascending id order, the usual
//! three fields), and the ids of the base run that are gone (`removed`
//! files, the id field alone, ascending). Upserting every upsert row by id
//! and deleting every removed id in the base run's full report gives exactly
//! this run's full report.
//!
//! A delta is computed once per (report, base run, run) into staging under
//! `deltas/<data_type>/<runId>/<baseRunId>/` — canonical JSON parts, the
//! same rules as `reports/`, and its `_manifest.json` last, created
//! conditionally — and every feed that needs it converts from there. A
//! second computation running at the same time writes the same bytes to the
//! same keys, and the first manifest stands.
//!
//! The canonical reports are in rank order, so the merge by id runs over
//! range partitions: each report is streamed once into bucket files of
//! (id, rank, modifier) records on local disk, by id range; then bucket by
//! bucket, in id order, both sides are loaded, sorted and merged. A bucket
//! that is too large is split again by its own id range. Memory is bounded
//! by the bucket size whatever the catalogue size; disk holds both runs'
//! records (13 bytes an item each) and the delta's parts.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::domain::{Compression, Encoding, Format, ReportKind, RunId};
use crate::manifest::RunManifest;
use crate::report_writer::{Columns, PartSummary, PartWriter, ReportItem};
use crate::store::{upload_from_blocking, LocalDirStore, ObjectStore, PutOutcome, StoreError, StreamedUploadError};
use crate::transfer::{scan_items, transfer_part, PartTransfer, TransferError};

pub const DELTAS_PREFIX: &str = "deltas/";
/// The only `schemaVersion` of delta manifests this build writes and reads.
pub const DELTA_MANIFEST_SCHEMA_VERSION: u32 = 1;
const CANONICAL: Encoding = Encoding { format: Format::Json, compression: Compression::None };
/// Bytes of one bucket record: id (8), rank (4), modifier hundredths (1).
const RECORD_BYTES: usize = 13;

/// `deltas/<data_type>/<runId>/<baseRunId>/`.
pub fn delta_prefix(kind: ReportKind, run: RunId, base: RunId) -> String {
    format!("{DELTAS_PREFIX}{}/{run}/{base}/", kind.data_type())
}

/// `deltas/<data_type>/<runId>/<baseRunId>/_manifest.json`.
pub fn delta_manifest_key(kind: ReportKind, run: RunId, base: RunId) -> String {
    format!("{}_manifest.json", delta_prefix(kind, run, base))
}

/// What a file of a delta holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// New or changed items: `part-NNN`.
    Upsert,
    /// Ids of the base run no longer present: `removed-NNN`.
    Removed,
}

impl FileKind {
    /// The file name stem: `part` or `removed`.
    pub fn stem(self) -> &'static str {
        match self {
            FileKind::Upsert => "part",
            FileKind::Removed => "removed",
        }
    }

    pub fn columns(self) -> Columns {
        match self {
            FileKind::Upsert => Columns::Ranked,
            FileKind::Removed => Columns::IdOnly,
        }
    }
}

/// One file of a delta in staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaFile {
    pub kind: FileKind,
    /// The staging key.
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl DeltaFile {
    pub fn summary(&self) -> PartSummary {
        PartSummary { key: self.key.clone(), rows: self.rows, bytes: self.bytes, sha256: self.sha256.clone() }
    }
}

/// `deltas/<data_type>/<runId>/<baseRunId>/_manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaManifest {
    pub schema_version: u32,
    pub data_type: String,
    pub id_field: String,
    pub run_id: RunId,
    pub base_run_id: RunId,
    pub generated_at: DateTime<Utc>,
    pub format: Format,
    pub compression: Compression,
    /// Rows of the upsert files, then of the removed files.
    pub upserts: u64,
    pub removed: u64,
    /// Upsert files first, then removed files, each in order.
    pub files: Vec<DeltaFile>,
}

/// One item of a report keyed by id: what a delta compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub id: i64,
    pub rank: u64,
    pub hundredths: u8,
}

impl Entry {
    pub fn item(self) -> ReportItem {
        ReportItem { id: self.id, search_rank: self.rank, modifier_hundredths: self.hundredths }
    }
}

impl From<ReportItem> for Entry {
    fn from(item: ReportItem) -> Self {
        Entry { id: item.id, rank: item.search_rank, hundredths: item.modifier_hundredths }
    }
}

/// The core: merges the base and the new report, both in ascending id
/// order, calling `upsert` for every new entry that is new or changed and
/// `removed` for every base id that is gone, each in ascending id order.
pub fn merge_by_id<E>(
    base: impl IntoIterator<Item = Entry>,
    new: impl IntoIterator<Item = Entry>,
    mut upsert: impl FnMut(Entry) -> Result<(), E>,
    mut removed: impl FnMut(i64) -> Result<(), E>,
) -> Result<(), E> {
    let mut base = base.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    loop {
        match (base.peek().copied(), new.peek().copied()) {
            (None, None) => return Ok(()),
            (Some(old), None) => {
                removed(old.id)?;
                base.next();
            }
            (None, Some(entry)) => {
                upsert(entry)?;
                new.next();
            }
            (Some(old), Some(entry)) => {
                if old.id < entry.id {
                    removed(old.id)?;
                    base.next();
                } else if entry.id < old.id {
                    upsert(entry)?;
                    new.next();
                } else {
                    if (old.rank, old.hundredths) != (entry.rank, entry.hundredths) {
                        upsert(entry)?;
                    }
                    base.next();
                    new.next();
                }
            }
        }
    }
}

/// Applies a delta to a full report, as a customer would: upsert by id,
/// delete the removed ids. Returns the report in rank order.
pub fn apply_delta(base: &[Entry], upserts: &[Entry], removed: &[i64]) -> Vec<Entry> {
    let mut by_id: std::collections::BTreeMap<i64, Entry> = base.iter().map(|e| (e.id, *e)).collect();
    for id in removed {
        by_id.remove(id);
    }
    for entry in upserts {
        by_id.insert(entry.id, *entry);
    }
    let mut report: Vec<Entry> = by_id.into_values().collect();
    report.sort_by_key(|e| (e.rank, e.id));
    report
}

/// Why a delta could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("computing the delta on local disk ({path}) failed: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("could not {action} {location}: {source}")]
    Staging {
        action: &'static str,
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("delta manifest {location} is not valid: {reason}")]
    InvalidManifest { location: String, reason: String },
    #[error("run {run} has no {data_type} report")]
    MissingReport { run: RunId, data_type: &'static str },
}

impl DeltaError {
    /// Whether computing it again can never work.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeltaError::Transfer(error) => error.is_permanent(),
            DeltaError::MissingReport { .. } => true,
            DeltaError::Io { .. } | DeltaError::Staging { .. } | DeltaError::InvalidManifest { .. } => false,
        }
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> DeltaError + '_ {
    move |source| DeltaError::Io { path: path.display().to_string(), source }
}

/// How a delta is computed.
#[derive(Debug, Clone)]
pub struct DeltaSettings {
    /// Where bucket files and the delta's parts are kept while computing.
    pub scratch_dir: PathBuf,
    /// Rows per staged delta part (as `PART_ROWS` for reports).
    pub part_rows: u64,
    /// Records (both sides) a partition aims to put in each bucket: the
    /// number of buckets follows from the reports' rows.
    pub bucket_records: usize,
    /// The most records (both sides) merged in memory at once; a larger
    /// bucket is split again.
    pub max_bucket_records: usize,
}

impl Default for DeltaSettings {
    fn default() -> Self {
        DeltaSettings {
            scratch_dir: std::env::temp_dir(),
            part_rows: 5_000_000,
            bucket_records: 500_000,
            max_bucket_records: 2_000_000,
        }
    }
}

// ---------------------------------------------------------------------------
// Bucket files
// ---------------------------------------------------------------------------

/// Buckets for `records` at about `per_bucket` each (1 to 4096).
/// At most 256, so both sides' files stay well inside Lambda's 1,024 open
/// files (a larger bucket is split again when merged).
fn bucket_count(records: usize, per_bucket: usize) -> usize {
    records.div_ceil(per_bucket.max(1)).clamp(1, MAX_BUCKETS)
}

/// The most bucket files one side of a partition keeps open.
const MAX_BUCKETS: usize = 256;
/// Scratch folders older than this were left by a killed computation (no
/// invocation runs longer than 15 minutes) and are removed.
const STALE_SCRATCH: std::time::Duration = std::time::Duration::from_secs(20 * 60);
const SCRATCH_PREFIX: &str = "delta-";

/// Removes scratch folders that a computation killed mid-way (a Lambda
/// timeout) left in `dir`; a warm Lambda keeps its /tmp between invocations.
fn remove_stale_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > STALE_SCRATCH));
        if stale && std::fs::remove_dir_all(entry.path()).is_ok() {
            tracing::warn!(path = %entry.path().display(), "removed the scratch folder of a delta computation that did not finish");
        }
    }
}

/// What one bucket file holds.
#[derive(Debug, Clone, Copy, Default)]
struct BucketStats {
    records: usize,
    min: i64,
    max: i64,
}

/// Records written by id range into `count` files.
struct Buckets {
    paths: Vec<PathBuf>,
    writers: Vec<BufWriter<File>>,
    stats: Vec<BucketStats>,
    lo: i64,
    hi: i64,
}

impl Buckets {
    fn create(dir: &Path, tag: &str, count: usize, lo: i64, hi: i64) -> io::Result<Buckets> {
        std::fs::create_dir_all(dir)?;
        let mut paths = Vec::with_capacity(count);
        let mut writers = Vec::with_capacity(count);
        for index in 0..count {
            let path = dir.join(format!("{tag}-{index:05}.bin"));
            writers.push(BufWriter::with_capacity(64 * 1024, File::create(&path)?));
            paths.push(path);
        }
        Ok(Buckets { paths, writers, stats: vec![BucketStats::default(); count], lo, hi })
    }

    /// The bucket of `id`: its place in `lo..=hi` (ids outside go to the ends).
    fn bucket_of(&self, id: i64) -> usize {
        let count = self.writers.len() as i128;
        let span = i128::from(self.hi) - i128::from(self.lo) + 1;
        let offset = (i128::from(id) - i128::from(self.lo)).clamp(0, span - 1);
        (offset * count / span) as usize
    }

    fn push(&mut self, entry: Entry) -> io::Result<()> {
        let index = self.bucket_of(entry.id);
        let mut record = [0u8; RECORD_BYTES];
        record[..8].copy_from_slice(&entry.id.to_le_bytes());
        let rank = u32::try_from(entry.rank).map_err(|_| io::Error::other("a rank above 4 billion"))?;
        record[8..12].copy_from_slice(&rank.to_le_bytes());
        record[12] = entry.hundredths;
        self.writers[index].write_all(&record)?;
        let stats = &mut self.stats[index];
        if stats.records == 0 {
            stats.min = entry.id;
            stats.max = entry.id;
        } else {
            stats.min = stats.min.min(entry.id);
            stats.max = stats.max.max(entry.id);
        }
        stats.records += 1;
        Ok(())
    }

    /// Flushes every file; returns each bucket's path and what it holds.
    fn finish(self) -> io::Result<Vec<(PathBuf, BucketStats)>> {
        for mut writer in self.writers {
            writer.flush()?;
        }
        Ok(self.paths.into_iter().zip(self.stats).collect())
    }
}

/// Every record of a bucket file, into `entries` (cleared first).
fn read_bucket(path: &Path, records: usize, entries: &mut Vec<Entry>) -> io::Result<()> {
    entries.clear();
    entries.reserve(records);
    entries.extend(BucketIter::open(path, records)?);
    if entries.len() != records {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bucket file {} holds fewer than its {records} records", path.display()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Output parts
// ---------------------------------------------------------------------------

/// Delta rows of one kind written into local canonical parts of at most
/// `part_rows` rows, named `<stem>-NNN.json`.
struct PartFiles {
    kind: ReportKind,
    file_kind: FileKind,
    dir: PathBuf,
    part_rows: u64,
    current: Option<PartWriter<BufWriter<File>>>,
    done: Vec<PartSummary>,
}

impl PartFiles {
    fn new(kind: ReportKind, file_kind: FileKind, dir: &Path, part_rows: u64) -> PartFiles {
        PartFiles { kind, file_kind, dir: dir.to_owned(), part_rows: part_rows.max(1), current: None, done: Vec::new() }
    }

    fn push(&mut self, item: ReportItem) -> io::Result<()> {
        if self.current.is_none() {
            let name = format!("{}-{:03}.json", self.file_kind.stem(), self.done.len() + 1);
            let file = BufWriter::with_capacity(256 * 1024, File::create(self.dir.join(&name))?);
            self.current = Some(PartWriter::with_columns(self.kind, CANONICAL, self.file_kind.columns(), file)?);
            self.done.push(PartSummary { key: name, rows: 0, bytes: 0, sha256: String::new() });
        }
        let writer = self.current.as_mut().expect("a part is open");
        writer.push(item)?;
        let summary = self.done.last_mut().expect("the open part");
        summary.rows += 1;
        if summary.rows >= self.part_rows {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        if let Some(writer) = self.current.take() {
            let (rows, bytes, sha256, mut file) = writer.finish()?;
            file.flush()?;
            let summary = self.done.last_mut().expect("the open part");
            (summary.rows, summary.bytes, summary.sha256) = (rows, bytes, sha256);
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<Vec<PartSummary>> {
        self.close()?;
        Ok(self.done)
    }
}

/// The upsert rows of a delta, in ascending id order, pulled one at a time
/// so that each staged part can be streamed straight into its upload. The
/// bucket pairs are merged in id order as they are reached (a pair too
/// large to load is split again by its own id range); the removed ids met on
/// the way go to `removed`.
struct DeltaMerger {
    dir: PathBuf,
    settings: DeltaSettings,
    /// Bucket pairs not merged yet, in id order.
    pending: std::collections::VecDeque<(Bucket, Bucket)>,
    /// Upserts of the bucket pair merged last; those from `taken` on are
    /// not yet taken. The three buffers are reused from pair to pair, so
    /// memory stays at one pair's worth.
    upserts: Vec<Entry>,
    taken: usize,
    base_buffer: Vec<Entry>,
    new_buffer: Vec<Entry>,
    removed: PartFiles,
    splits: usize,
}

type Bucket = (PathBuf, BucketStats);

impl DeltaMerger {
    fn next_upsert(&mut self) -> io::Result<Option<Entry>> {
        loop {
            if let Some(&entry) = self.upserts.get(self.taken) {
                self.taken += 1;
                return Ok(Some(entry));
            }
            let Some((base, new)) = self.pending.pop_front() else {
                return Ok(None);
            };
            self.merge_pair(base, new)?;
        }
    }

    /// Merges one pair into `current` and `removed`, or splits it into
    /// smaller pairs at the front of `pending`.
    fn merge_pair(&mut self, (base_path, base_stats): Bucket, (new_path, new_stats): Bucket) -> io::Result<()> {
        let filled = [base_stats, new_stats].into_iter().filter(|s| s.records > 0);
        let lo = filled.clone().map(|s| s.min).min().unwrap_or(0);
        let hi = filled.map(|s| s.max).max().unwrap_or(0);
        if base_stats.records + new_stats.records > self.settings.max_bucket_records && lo < hi {
            self.splits += 1;
            let sub = self.dir.join(format!("split-{}", self.splits));
            let count = bucket_count(base_stats.records + new_stats.records, self.settings.bucket_records).max(2);
            let split = |path: &Path, records: usize, tag: &str| -> io::Result<Vec<Bucket>> {
                let mut buckets = Buckets::create(&sub, tag, count, lo, hi)?;
                for entry in BucketIter::open(path, records)? {
                    buckets.push(entry)?;
                }
                buckets.finish()
            };
            let base_parts = split(&base_path, base_stats.records, "base")?;
            let new_parts = split(&new_path, new_stats.records, "new")?;
            for pair in base_parts.into_iter().zip(new_parts).rev() {
                self.pending.push_front(pair);
            }
        } else {
            read_bucket(&base_path, base_stats.records, &mut self.base_buffer)?;
            read_bucket(&new_path, new_stats.records, &mut self.new_buffer)?;
            self.base_buffer.sort_unstable_by_key(|e| e.id);
            self.new_buffer.sort_unstable_by_key(|e| e.id);
            let (upserts, removed) = (&mut self.upserts, &mut self.removed);
            upserts.clear();
            self.taken = 0;
            merge_by_id(
                self.base_buffer.iter().copied(),
                self.new_buffer.iter().copied(),
                |entry| {
                    upserts.push(entry);
                    Ok(())
                },
                |id| removed.push(ReportItem { id, search_rank: 0, modifier_hundredths: 0 }),
            )?;
        }
        std::fs::remove_file(&base_path)?;
        std::fs::remove_file(&new_path)
    }
}

/// The records of a bucket file one by one (for splitting it without
/// loading it).
struct BucketIter {
    reader: BufReader<File>,
    left: usize,
}

impl BucketIter {
    fn open(path: &Path, records: usize) -> io::Result<BucketIter> {
        Ok(BucketIter { reader: BufReader::with_capacity(256 * 1024, File::open(path)?), left: records })
    }
}

impl Iterator for BucketIter {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.left == 0 {
            return None;
        }
        let mut record = [0u8; RECORD_BYTES];
        self.reader.read_exact(&mut record).ok()?;
        self.left -= 1;
        Some(Entry {
            id: i64::from_le_bytes(record[..8].try_into().ok()?),
            rank: u64::from(u32::from_le_bytes(record[8..12].try_into().ok()?)),
            hundredths: record[12],
        })
    }
}

// ---------------------------------------------------------------------------
// Staging
// ---------------------------------------------------------------------------

/// The delta of `kind` between `base` and `run`, from staging, computed
/// and staged first if no complete one is there.
pub async fn ensure_delta<S: ObjectStore>(
    staging: &S,
    kind: ReportKind,
    base: &RunManifest,
    run: &RunManifest,
    settings: &DeltaSettings,
) -> Result<DeltaManifest, DeltaError> {
    let key = delta_manifest_key(kind, run.run_id, base.run_id);
    if let Some(existing) = read_delta_manifest(staging, &key, kind, run.run_id, base.run_id).await? {
        return Ok(existing);
    }
    let started = std::time::Instant::now();
    let manifest = compute_delta(staging, kind, base, run, settings).await?;
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest).expect("a delta manifest serialises"));
    let created = staging
        .put_if_absent(&key, body, "application/json")
        .await
        .map_err(|source| DeltaError::Staging { action: "write", location: staging.describe(&key), source })?;
    if created == PutOutcome::AlreadyExists {
        // A concurrent computation finished first; its manifest stands.
        if let Some(existing) = read_delta_manifest(staging, &key, kind, run.run_id, base.run_id).await? {
            return Ok(existing);
        }
    }
    info!(data_type = kind.data_type(), run_id = %run.run_id, base_run_id = %base.run_id,
          upserts = manifest.upserts, removed = manifest.removed, ms = started.elapsed().as_millis() as u64,
          "delta computed");
    Ok(manifest)
}

async fn read_delta_manifest<S: ObjectStore>(
    staging: &S,
    key: &str,
    kind: ReportKind,
    run: RunId,
    base: RunId,
) -> Result<Option<DeltaManifest>, DeltaError> {
    let body = match staging.get(key).await {
        Ok(body) => body,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(source) => return Err(DeltaError::Staging { action: "read", location: staging.describe(key), source }),
    };
    let invalid = |reason: String| DeltaError::InvalidManifest { location: staging.describe(key), reason };
    let manifest: DeltaManifest = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    if manifest.schema_version != DELTA_MANIFEST_SCHEMA_VERSION
        || manifest.data_type != kind.data_type()
        || manifest.run_id != run
        || manifest.base_run_id != base
    {
        return Err(invalid(format!(
            "it is the {} delta of run {} against {} (schema {}), not the one its key names",
            manifest.data_type, manifest.run_id, manifest.base_run_id, manifest.schema_version
        )));
    }
    Ok(Some(manifest))
}

/// Partitions both reports by id on local disk, merges bucket by bucket
/// into local parts, and stages them; returns the (not yet written) manifest.
async fn compute_delta<S: ObjectStore>(
    staging: &S,
    kind: ReportKind,
    base: &RunManifest,
    run: &RunManifest,
    settings: &DeltaSettings,
) -> Result<DeltaManifest, DeltaError> {
    let report_of = |manifest: &RunManifest| {
        manifest
            .report(kind)
            .cloned()
            .ok_or(DeltaError::MissingReport { run: manifest.run_id, data_type: kind.data_type() })
    };
    let (base_report, new_report) = (report_of(base)?, report_of(run)?);
    std::fs::create_dir_all(&settings.scratch_dir).map_err(io_error(&settings.scratch_dir))?;
    remove_stale_scratch(&settings.scratch_dir);
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}-{}-", kind.data_type(), run.run_id))
        .tempdir_in(&settings.scratch_dir)
        .map_err(io_error(&settings.scratch_dir))?;
    let dir = scratch.path().to_owned();
    let started = std::time::Instant::now();
    // The id range of the first partition: the reports' own, where the
    // manifests give it, else every id (the first level then splits by the
    // ranges it sees).
    let ranges = [base_report.id_range, new_report.id_range];
    let (lo, hi) = match ranges {
        [Some(a), Some(b)] => (a.min.min(b.min), a.max.max(b.max)),
        [None, Some(r)] | [Some(r), None] => (r.min, r.max),
        [None, None] => (i64::MIN, i64::MAX),
    };
    let count = bucket_count((base_report.rows + new_report.rows) as usize, settings.bucket_records);
    let buckets_dir = dir.join("buckets");
    let partition = |tag: &'static str| {
        let buckets_dir = buckets_dir.clone();
        move || Buckets::create(&buckets_dir, tag, count, lo, hi)
    };
    let canonical = |m: &RunManifest| Encoding { format: m.format, compression: m.compression };
    let push = |buckets: &mut Buckets, item: ReportItem| buckets.push(Entry::from(item));
    let base_buckets = partition("base")().map_err(io_error(&buckets_dir))?;
    let new_buckets = partition("new")().map_err(io_error(&buckets_dir))?;
    // Both reports are read at once: parsing is most of the work.
    let (base_buckets, new_buckets) = tokio::try_join!(
        scan_items(staging, &base_report.parts, canonical(base), kind, Columns::Ranked, base_buckets, push),
        scan_items(staging, &new_report.parts, canonical(run), kind, Columns::Ranked, new_buckets, push),
    )?;
    let scanned_ms = started.elapsed().as_millis() as u64;
    let pairs = base_buckets
        .finish()
        .and_then(|base| Ok(base.into_iter().zip(new_buckets.finish()?).collect()))
        .map_err(io_error(&buckets_dir))?;
    let out = dir.join("out");
    std::fs::create_dir_all(&out).map_err(io_error(&out))?;
    let mut merger = Some(DeltaMerger {
        dir: buckets_dir.clone(),
        settings: settings.clone(),
        pending: pairs,
        upserts: Vec::new(),
        taken: 0,
        base_buffer: Vec::new(),
        new_buffer: Vec::new(),
        removed: PartFiles::new(kind, FileKind::Removed, &out, settings.part_rows),
        splits: 0,
    });

    // Upsert parts are streamed from the merge straight into staging.
    let prefix = delta_prefix(kind, run.run_id, base.run_id);
    let mut files = Vec::new();
    let part_rows = settings.part_rows.max(1);
    loop {
        let mut taken = merger.take().expect("the merger is back after every part");
        let (mut taken, first) = tokio::task::spawn_blocking(move || {
            let first = taken.next_upsert();
            (taken, first)
        })
        .await
        .expect("the delta merge panicked");
        let Some(first) = first.map_err(io_error(&dir))? else {
            merger = Some(taken);
            break;
        };
        let number = files.len() + 1;
        let key = format!("{prefix}{}-{number:03}.json", FileKind::Upsert.stem());
        let written = upload_from_blocking(staging, &key, CANONICAL.content_type(), move |sink| {
            let mut writer = PartWriter::with_columns(kind, CANONICAL, Columns::Ranked, sink)?;
            writer.push(first.item())?;
            let mut rows = 1;
            while rows < part_rows {
                let Some(entry) = taken.next_upsert()? else { break };
                writer.push(entry.item())?;
                rows += 1;
            }
            let (rows, bytes, sha256, _) = writer.finish()?;
            Ok::<_, io::Error>((taken, rows, bytes, sha256))
        })
        .await;
        let ((taken, rows, bytes, sha256), _) = written.map_err(|error| match error {
            StreamedUploadError::Store(source) => {
                DeltaError::Staging { action: "write", location: staging.describe(&key), source }
            }
            StreamedUploadError::Produce(source) => DeltaError::Io { path: dir.display().to_string(), source },
        })?;
        files.push(DeltaFile { kind: FileKind::Upsert, key, rows, bytes, sha256 });
        merger = Some(taken);
    }

    let upserts_ms = started.elapsed().as_millis() as u64;
    // Removed ids (usually few) were kept on local disk; staged last.
    let removed_parts = merger.expect("the merger").removed.finish().map_err(io_error(&out))?;
    let local = LocalDirStore::new(&out);
    for part in removed_parts {
        let key = format!("{prefix}{}", part.key);
        let moved = transfer_part(
            &local,
            staging,
            PartTransfer {
                kind,
                columns: FileKind::Removed.columns(),
                source: &part,
                source_encoding: CANONICAL,
                target_key: &key,
                target_encoding: CANONICAL,
            },
        )
        .await?;
        let summary = moved.summary;
        files.push(DeltaFile {
            kind: FileKind::Removed,
            key,
            rows: summary.rows,
            bytes: summary.bytes,
            sha256: summary.sha256,
        });
    }
    drop(scratch);
    tracing::debug!(scanned_ms, upserts_ms, total_ms = started.elapsed().as_millis() as u64, "delta phases");
    let rows = |wanted: FileKind| files.iter().filter(|f| f.kind == wanted).map(|f| f.rows).sum();
    Ok(DeltaManifest {
        schema_version: DELTA_MANIFEST_SCHEMA_VERSION,
        data_type: kind.data_type().to_owned(),
        id_field: kind.id_field().to_owned(),
        run_id: run.run_id,
        base_run_id: base.run_id,
        generated_at: run.generated_at,
        format: CANONICAL.format,
        compression: CANONICAL.compression,
        upserts: rows(FileKind::Upsert),
        removed: rows(FileKind::Removed),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(items: &[(i64, u64, u8)]) -> Vec<Entry> {
        items.iter().map(|&(id, rank, hundredths)| Entry { id, rank, hundredths }).collect()
    }

    fn delta(base: &[Entry], new: &[Entry]) -> (Vec<Entry>, Vec<i64>) {
        let (mut base, mut new) = (base.to_vec(), new.to_vec());
        base.sort_by_key(|e| e.id);
        new.sort_by_key(|e| e.id);
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        merge_by_id::<()>(
            base,
            new,
            |e| {
                upserts.push(e);
                Ok(())
            },
            |id| {
                removed.push(id);
                Ok(())
            },
        )
        .unwrap();
        (upserts, removed)
    }

    #[test]
    fn new_changed_and_removed_items_and_nothing_else() {
        let base = entries(&[(1, 1, 100), (2, 2, 50), (3, 3, 50), (9, 4, 0)]);
        let new = entries(&[(1, 1, 100), (3, 2, 50), (2, 3, 50), (5, 4, 0)]);
        let (upserts, removed) = delta(&base, &new);
        assert_eq!(upserts, entries(&[(2, 3, 50), (3, 2, 50), (5, 4, 0)]));
        assert_eq!(removed, [9]);
        assert_eq!(apply_delta(&base, &upserts, &removed), new);
    }

    /// A report of distinct ids from `ids`, ranked by a score with ties.
    fn report(ids: Vec<i64>, scores: Vec<u8>) -> Vec<Entry> {
        let mut items: Vec<(u8, i64)> = scores.into_iter().zip(ids).collect();
        items.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let max = items.first().map_or(0, |i| i.0);
        items
            .iter()
            .enumerate()
            .map(|(r, &(score, id))| Entry {
                id,
                rank: r as u64 + 1,
                hundredths: if max == 0 { 0 } else { (u32::from(score) * 100 / u32::from(max)) as u8 },
            })
            .collect()
    }

    fn report_strategy() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::btree_set(-50i64..150, 0..120)
            .prop_flat_map(|ids| {
                let n = ids.len();
                (Just(ids.into_iter().collect::<Vec<_>>()), prop::collection::vec(0u8..6, n))
            })
            .prop_map(|(ids, scores)| report(ids, scores))
    }

    proptest! {
        #[test]
        fn applying_the_delta_to_the_base_gives_the_new_report_and_the_delta_holds_only_changes(
            base in report_strategy(),
            new in report_strategy(),
        ) {
            let (upserts, removed) = delta(&base, &new);
            prop_assert_eq!(apply_delta(&base, &upserts, &removed), new.clone());
            prop_assert!(upserts.windows(2).all(|w| w[0].id < w[1].id), "upserts in ascending id order");
            prop_assert!(removed.windows(2).all(|w| w[0] < w[1]), "removed ids ascending");
            for entry in &upserts {
                prop_assert!(!base.contains(entry), "an unchanged row is in the delta: {:?}", entry);
            }
            for id in &removed {
                prop_assert!(base.iter().any(|e| e.id == *id) && !new.iter().any(|e| e.id == *id));
            }
        }
    }

    #[test]
    fn bucket_files_stay_few_whatever_the_catalogue_and_stale_scratch_goes() {
        assert_eq!(bucket_count(20_000_000, 500_000), 40);
        assert_eq!(bucket_count(200_000_000, 500_000), MAX_BUCKETS, "100M tracks: 2 x 256 files open at most");
        assert_eq!(bucket_count(0, 500_000), 1);
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("delta-track_popularity-20261119030000-x");
        let fresh = dir.path().join("delta-track_popularity-20261122030000-y");
        let other = dir.path().join("something-else");
        for path in [&stale, &fresh, &other] {
            std::fs::create_dir(path).unwrap();
        }
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3_600);
        std::fs::File::open(&stale).unwrap().set_modified(old).unwrap();
        std::fs::File::open(&other).unwrap().set_modified(old).unwrap();
        remove_stale_scratch(dir.path());
        assert!(!stale.exists() && fresh.exists() && other.exists());
    }

    #[test]
    fn buckets_place_ids_by_range_and_clamp_the_ends() {
        let dir = tempfile::tempdir().unwrap();
        let buckets = Buckets::create(dir.path(), "t", 4, 0, 99).unwrap();
        assert_eq!([-5, 0, 24, 25, 99, 1000].map(|id| buckets.bucket_of(id)), [0, 0, 0, 1, 3, 3]);
        let full = Buckets::create(dir.path(), "u", 256, i64::MIN, i64::MAX).unwrap();
        assert_eq!((full.bucket_of(i64::MIN), full.bucket_of(0), full.bucket_of(i64::MAX)), (0, 128, 255));
    }
}
