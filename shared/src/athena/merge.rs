//! The k-way merge of one report's files by `searchRank`, in one streaming
//! pass (docs/scaling.md, "The publish step"). UNLOAD writes a report as
//! several Parquet files, each in rank order but not ordered among
//! themselves; the merge reads every file at once, a batch of rows at a time
//! on a thread of its own (fetching, decompressing and decoding its three
//! columns), and hands the rows on in rank order
//! while it checks what a report must be: ranks exactly 1..n, without a gap
//! or a repeat, in rank order within each file, modifiers that never grow
//! with the rank, and n as the run's counts say. The first deviation stops
//! it with an error naming the file and the row.
//!
//! A merge may cover a range of ranks only ([`ReportMerge::over`]), so that
//! the publish step writes several parts at once, each range merged on its
//! own: the range's decoders start at the row groups whose statistics say
//! they may hold its first rank and skip the rows below it, and the merge
//! stops at the range's end. [`RangeEnd::check_followed_by`] then checks
//! that two neighbouring ranges meet: each file's rows split exactly where
//! one stopped and the next started, and the modifier does not grow across
//! the seam. Together the ranges check what one merge of the whole report
//! checks.
//!
//! Memory is bounded by the number of files, never by the report's size or
//! its files' row groups: a few batches, three column windows and pages per
//! file. It writes nothing; the publish step
//! turns what it hands on into parts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::domain::ReportKind;
use crate::report_writer::ReportItem;
use crate::store::ObjectStore;

use super::output::{FileReadError, ReportFile, ReportFileRows, ReportRow, RowPlace, WINDOW_BYTES};

/// Rows a decoder hands the merge at once.
const BATCH_ROWS: usize = 4096;
/// Batches each decoder may decode ahead of the merge: 65,536 rows (1.5 MB)
/// a file. The merge takes ranks from one file at a time for a while (each
/// file holds runs of consecutive ranks); meanwhile the other files'
/// decoders work ahead on the other core, so decoding and merging overlap
/// instead of taking turns. Memory: this times the number of files.
const BATCHES_IN_FLIGHT: usize = 16;

/// Why a report's files do not make a report.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    File(#[from] FileReadError),
    #[error("{place}: rank {rank} follows rank {previous} in the same file: the file is not in rank order")]
    OutOfOrder { place: RowPlace, rank: u64, previous: u64 },
    #[error("{place}: rank {rank}: ranks start at 1")]
    RankZero { place: RowPlace, rank: u64 },
    #[error("rank {rank} appears twice: {first} and {second}")]
    Duplicate { rank: u64, first: RowPlace, second: RowPlace },
    #[error("rank {rank} is missing: no file has it, and the next rank is {next_rank} at {next}")]
    Missing { rank: u64, next_rank: u64, next: RowPlace },
    #[error(
        "{place}: rank {rank} has searchModifier {modifier}, more than {previous} at rank {previous_rank} \
         ({previous_place}): modifiers never grow with the rank"
    )]
    ModifierGrows {
        place: RowPlace,
        rank: u64,
        modifier: f64,
        previous: f64,
        previous_rank: u64,
        previous_place: RowPlace,
    },
    #[error("the report is empty: no row 1 in any of its {files} file(s) ({names})")]
    Empty { files: usize, names: String },
    #[error(
        "the report ends at rank {found} ({last}), but the run's counts say it has {expected} items: a file of its \
         output is missing, or the query dropped rows"
    )]
    TooFew { found: u64, expected: u64, last: RowPlace },
    #[error("{place}: rank {rank} is past the {expected} items the run's counts say the report has")]
    TooMany { place: RowPlace, rank: u64, expected: u64 },
    #[error("the decoder of {file} stopped without a result (it panicked)")]
    DecoderLost { file: String },
    #[error(
        "{file}: the merge of the ranks below {rank} stopped at {stopped}, but the merge from rank {rank} started at \
         {started}: the file is not in rank order, or its row groups' statistics of the rank are wrong"
    )]
    SeamMismatch { file: String, rank: u64, stopped: String, started: String },
}

/// One batch of consecutive rows of a file, or the problem that ended it.
struct Batch {
    first_row: u64,
    rows: Vec<ReportRow>,
}

/// One file being merged: its current batch, and the channel the rest
/// arrives on.
struct Source {
    name: String,
    receiver: flume::Receiver<Result<Batch, FileReadError>>,
    /// Used batches' vectors, back to the decoder.
    spare: flume::Sender<Vec<ReportRow>>,
    batch: Batch,
    at: usize,
    last_rank: Option<u64>,
    /// The row number of the first row this merge loaded from the file
    /// (`None`: it had none in the merge's range).
    first_row: Option<u64>,
}

impl Source {
    /// The row at the head and its row number, loading the next batch when
    /// the current one is used up; `None` at the end of the file.
    fn head(&mut self) -> Result<Option<(ReportRow, u64)>, MergeError> {
        while self.at >= self.batch.rows.len() {
            match self.receiver.recv() {
                Ok(Ok(batch)) => {
                    let used = std::mem::replace(&mut self.batch, batch);
                    // Handed back for the decoder to fill again: fresh memory
                    // costs page faults (a report's worth of them).
                    let _ = self.spare.try_send(used.rows);
                    self.at = 0;
                }
                Ok(Err(error)) => return Err(error.into()),
                Err(flume::RecvError::Disconnected) => return Ok(None),
            }
        }
        Ok(Some((self.batch.rows[self.at], self.batch.first_row + self.at as u64)))
    }

    fn place(&self, row: u64) -> RowPlace {
        RowPlace { file: self.name.clone(), row }
    }
}

/// How a range's merge began: where it started reading each file, and its
/// first item. Enough to check the seam with the range before, whether or
/// not the range went on to fail.
#[derive(Debug, Clone)]
pub struct RangeStart {
    first_rank: u64,
    /// Every file's first row was loaded (the merge started).
    started: bool,
    /// Per file: its name and the row the range started at (`None`: it
    /// had no row of the range).
    first_rows: Vec<(String, Option<u64>)>,
    /// The first item's place and modifier.
    first_item: Option<(RowPlace, u8)>,
}

/// How a range's merge ended, once it had handed on all its items: where
/// it stopped reading each file, and its last item. Its decoders are gone.
#[derive(Debug, Clone)]
pub struct RangeEnd {
    pub start: RangeStart,
    /// Per file: the row of its next head, where the range stopped (`None`:
    /// the file ended).
    stopped: Vec<Option<u64>>,
    last_item: Option<(RowPlace, u8)>,
    items: u64,
    ids: Option<(i64, i64)>,
}

impl RangeEnd {
    /// Checks that the range starting as `next` continues this one: every
    /// file's rows split exactly where this range stopped reading them and
    /// `next` started (when `next` started at all), and the modifier does
    /// not grow across the seam.
    pub fn check_followed_by(&self, next: &RangeStart) -> Result<(), MergeError> {
        let seam = next.first_rank;
        if next.started {
            for (&stopped, (file, started)) in self.stopped.iter().zip(&next.first_rows) {
                if stopped != *started {
                    return Err(MergeError::SeamMismatch {
                        file: file.clone(),
                        rank: seam,
                        stopped: describe_row(stopped),
                        started: describe_row(*started),
                    });
                }
            }
        }
        if let (Some((previous_place, previous)), Some((place, hundredths))) = (&self.last_item, &next.first_item) {
            if hundredths > previous {
                return Err(MergeError::ModifierGrows {
                    place: place.clone(),
                    rank: seam,
                    modifier: f64::from(*hundredths) / 100.0,
                    previous: f64::from(*previous) / 100.0,
                    previous_rank: seam - 1,
                    previous_place: previous_place.clone(),
                });
            }
        }
        Ok(())
    }

    /// Items the range handed on.
    pub fn items(&self) -> u64 {
        self.items
    }
}

/// Joins the ends of consecutive ranges of one report: checks every seam
/// and that they hold `expected_rows` items together; returns that count
/// and the smallest and largest id.
pub fn join_ranges(ends: &[RangeEnd], expected_rows: u64) -> Result<(u64, Option<(i64, i64)>), MergeError> {
    for pair in ends.windows(2) {
        pair[0].check_followed_by(&pair[1].start)?;
    }
    let items: u64 = ends.iter().map(RangeEnd::items).sum();
    if items != expected_rows {
        // Only when a range before the last ran out with every file, so the
        // last range had nothing; that range reports it first.
        let last = ends.iter().rev().find_map(|end| end.last_item.as_ref().map(|(place, _)| place.clone()));
        return Err(MergeError::TooFew {
            found: items,
            expected: expected_rows,
            last: last.unwrap_or(RowPlace { file: "no file".into(), row: 0 }),
        });
    }
    let ids = ends.iter().filter_map(|end| end.ids).reduce(|(min, max), (low, high)| (min.min(low), max.max(high)));
    Ok((items, ids))
}

/// Where a file's rows split between two ranges of ranks: the row, or the
/// end of the file.
fn describe_row(row: Option<u64>) -> String {
    row.map_or_else(|| "the end of the file".to_owned(), |row| format!("row {row}"))
}

/// The merge of one report's files: [`ReportMerge::next_item`] hands the
/// items on in rank order. Everything it does blocks: run it on a blocking
/// thread.
pub struct ReportMerge {
    sources: Vec<Source>,
    /// (rank, source) of the head of every source with rows left, but for
    /// `first`.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    /// (rank, source) of a head that comes before every head in `heads`,
    /// kept out of the heap: the source of the row just handed on usually
    /// has the next rank too (files hold runs of consecutive ranks), and
    /// then one comparison with the heap's top replaces a push and a pop.
    first: Option<(u64, usize)>,
    /// Every source's first head is loaded (until then all go to the heap).
    started_all: bool,
    started: bool,
    /// The range's first rank, and its end (exclusive; `None`: the report's
    /// end).
    first_rank: u64,
    end_rank: Option<u64>,
    next_rank: u64,
    expected_rows: Option<u64>,
    /// Where the last item handed on came from (source, row) and its
    /// modifier; a place is spelt out only for an error, never per row.
    last: Option<(usize, u64, u8)>,
    /// The same of the first item handed on.
    first_item: Option<(usize, u64, u8)>,
    ids: Option<(i64, i64)>,
}

impl ReportMerge {
    /// Reads and checks the footer of each of `files` (keys of `store`), then
    /// merges the whole report ([`ReportMerge::over`] ranks `1..`).
    /// `expected_rows`, when known, is the number of items the report must
    /// have.
    pub async fn open<S: ObjectStore + Clone + 'static>(
        store: &S,
        kind: ReportKind,
        files: &[String],
        expected_rows: Option<u64>,
    ) -> Result<Self, MergeError> {
        let opened = Self::open_files(store, kind, files).await?;
        Ok(Self::over(store, &opened, 1, None, expected_rows, WINDOW_BYTES))
    }

    /// Reads and checks the footer of each of `files`.
    pub async fn open_files<S: ObjectStore>(
        store: &S,
        kind: ReportKind,
        files: &[String],
    ) -> Result<Vec<ReportFile>, MergeError> {
        let mut opened = Vec::with_capacity(files.len());
        for key in files {
            opened.push(ReportFile::open(store, key, kind).await?);
        }
        Ok(opened)
    }

    /// Merges the items of ranks `first_rank` up to `end_rank` (exclusive;
    /// `None`: to the report's end) of the opened `files`, starting a
    /// decoder thread for each on the current Tokio runtime's blocking pool.
    /// `expected_rows` is the whole report's; each file's columns are
    /// fetched through windows of `window_bytes` ([`WINDOW_BYTES`] for one
    /// merge; ranges merged at once share that).
    pub fn over<S: ObjectStore + Clone + 'static>(
        store: &S,
        files: &[ReportFile],
        first_rank: u64,
        end_rank: Option<u64>,
        expected_rows: Option<u64>,
        window_bytes: u64,
    ) -> Self {
        let handle = tokio::runtime::Handle::current();
        let first_rank = first_rank.max(1);
        let mut sources = Vec::with_capacity(files.len());
        for file in files {
            let name = file.name().to_owned();
            let mut rows =
                ReportFileRows::new(file.clone(), store.clone(), handle.clone()).with_window_bytes(window_bytes);
            if first_rank > 1 {
                rows = rows.starting_at_rank(first_rank);
            }
            let first_row = rows.rows_read() + 1;
            let (sender, receiver) = flume::bounded(BATCHES_IN_FLIGHT);
            let (spare, spares) = flume::bounded(BATCHES_IN_FLIGHT + 2);
            tokio::task::spawn_blocking(move || decode_file(rows, first_rank, sender, spares));
            sources.push(Source {
                name,
                receiver,
                spare,
                batch: Batch { first_row, rows: Vec::new() },
                at: 0,
                last_rank: None,
                first_row: None,
            });
        }
        Self {
            sources,
            heads: BinaryHeap::new(),
            first: None,
            started: false,
            started_all: false,
            first_rank,
            end_rank,
            next_rank: first_rank,
            expected_rows,
            last: None,
            first_item: None,
            ids: None,
        }
    }

    /// Loads the head of `index` into the heap, checking the file's order;
    /// into `first` instead when it comes before every head in the heap
    /// and `first` is free.
    fn push_head(&mut self, index: usize) -> Result<(), MergeError> {
        let source = &mut self.sources[index];
        if let Some((row, number)) = source.head()? {
            if let Some(previous) = source.last_rank.filter(|&previous| row.rank <= previous) {
                return Err(MergeError::OutOfOrder { place: source.place(number), rank: row.rank, previous });
            }
            source.last_rank = Some(row.rank);
            source.first_row.get_or_insert(number);
            let head = (row.rank, index);
            match self.heads.peek() {
                // What the heap would hand out next anyway.
                Some(Reverse(top)) if head > *top => self.heads.push(Reverse(head)),
                _ if self.first.is_none() && self.started_all => self.first = Some(head),
                _ => self.heads.push(Reverse(head)),
            }
        }
        Ok(())
    }

    fn start(&mut self) -> Result<(), MergeError> {
        if !self.started {
            self.started = true;
            for index in 0..self.sources.len() {
                self.push_head(index)?;
            }
            self.started_all = true;
            if self.heads.is_empty() && self.first.is_none() && self.first_rank == 1 {
                let names: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(MergeError::Empty { files: names.len(), names: names.join(", ") });
            }
        }
        Ok(())
    }

    /// Whether items are left (every check of the end passed when not).
    pub fn has_more(&mut self) -> Result<bool, MergeError> {
        self.start()?;
        let lowest_head = match (self.first, self.heads.peek()) {
            (Some((rank, _)), _) | (None, Some(&Reverse((rank, _)))) => Some(rank),
            (None, None) => None,
        };
        if let Some(rank) = lowest_head {
            // At the range's end, a head below it is a rank handed on again:
            // next_item names it.
            return Ok(self.end_rank.is_none_or(|end| self.next_rank < end || rank < end));
        }
        let found = self.next_rank - 1;
        if let (Some(expected), Some((source, row, _))) = (self.expected_rows, self.last) {
            if found < expected {
                return Err(MergeError::TooFew { found, expected, last: self.sources[source].place(row) });
            }
        }
        Ok(false)
    }

    /// The next item in rank order, or `None` after the last one.
    pub fn next_item(&mut self) -> Result<Option<ReportItem>, MergeError> {
        if !self.has_more()? {
            return Ok(None);
        }
        let (rank, index) = match self.first.take() {
            Some(head) => head,
            None => self.heads.pop().expect("has_more saw a head").0,
        };
        let source = &mut self.sources[index];
        let row = source.batch.rows[source.at];
        let number = source.batch.first_row + source.at as u64;
        source.at += 1;
        let place = || self.sources[index].place(number);
        // The heap hands out non-decreasing ranks, so a rank below the next
        // expected one is the rank just handed out, again.
        if rank < self.next_rank {
            return Err(match self.last {
                Some((first, first_row, _)) => {
                    MergeError::Duplicate { rank, first: self.sources[first].place(first_row), second: place() }
                }
                None => MergeError::RankZero { place: place(), rank },
            });
        }
        if rank > self.next_rank {
            return Err(MergeError::Missing { rank: self.next_rank, next_rank: rank, next: place() });
        }
        if let Some(expected) = self.expected_rows.filter(|&expected| rank > expected) {
            return Err(MergeError::TooMany { place: place(), rank, expected });
        }
        if let Some((previous_source, previous_row, previous)) =
            self.last.filter(|&(_, _, previous)| row.hundredths > previous)
        {
            return Err(MergeError::ModifierGrows {
                place: place(),
                rank,
                modifier: f64::from(row.hundredths) / 100.0,
                previous: f64::from(previous) / 100.0,
                previous_rank: rank - 1,
                previous_place: self.sources[previous_source].place(previous_row),
            });
        }
        self.next_rank += 1;
        self.last = Some((index, number, row.hundredths));
        self.first_item.get_or_insert((index, number, row.hundredths));
        self.ids = Some(self.ids.map_or((row.id, row.id), |(min, max)| (min.min(row.id), max.max(row.id))));
        self.push_head(index)?;
        Ok(Some(ReportItem { id: row.id, search_rank: rank, modifier_hundredths: row.hundredths }))
    }

    /// Appends the next items in rank order to `items`, at most `max`;
    /// returns how many (0 after the last one). The same items and checks
    /// as [`ReportMerge::next_item`] called `max` times, faster: after the
    /// first, it takes whole runs of consecutive ranks from the file at
    /// hand in one pass over its batch, up to the next file's head, and
    /// leaves anything a run cannot take (a gap, a repeat, a growing
    /// modifier, the range's or the report's end) to `next_item`.
    pub fn next_items(&mut self, items: &mut Vec<ReportItem>, max: usize) -> Result<usize, MergeError> {
        let mut taken = 0;
        while taken < max {
            let Some(item) = self.next_item()? else { break };
            items.push(item);
            taken += 1;
            while taken < max {
                let run = self.take_run(items, max - taken)?;
                if run == 0 {
                    break;
                }
                taken += run;
            }
        }
        Ok(taken)
    }

    /// Takes the rows of the file whose head is `first` while they are the
    /// next ranks, below every other file's head and every end, with a
    /// modifier that does not grow; at most `max`. Returns how many.
    fn take_run(&mut self, items: &mut Vec<ReportItem>, max: usize) -> Result<usize, MergeError> {
        let (Some((rank, index)), Some((_, _, mut hundredths))) = (self.first, self.last) else {
            return Ok(0);
        };
        if rank != self.next_rank {
            return Ok(0);
        }
        let others = self.heads.peek().map_or(u64::MAX, |Reverse((rank, _))| *rank);
        let end = self.end_rank.unwrap_or(u64::MAX);
        let past_report = self.expected_rows.map_or(u64::MAX, |expected| expected.saturating_add(1));
        let limit = others.min(end).min(past_report);
        let source = &mut self.sources[index];
        let rows = &source.batch.rows[source.at..];
        let (mut min_id, mut max_id) = self.ids.unwrap_or((i64::MAX, i64::MIN));
        let mut next = rank;
        for row in rows.iter().take(max) {
            if row.rank != next || next >= limit || row.hundredths > hundredths {
                break;
            }
            items.push(ReportItem { id: row.id, search_rank: next, modifier_hundredths: row.hundredths });
            hundredths = row.hundredths;
            min_id = min_id.min(row.id);
            max_id = max_id.max(row.id);
            next += 1;
        }
        let taken = (next - rank) as usize;
        if taken == 0 {
            return Ok(0);
        }
        source.at += taken;
        source.last_rank = Some(next - 1);
        let number = source.batch.first_row + source.at as u64 - 1;
        self.next_rank = next;
        self.last = Some((index, number, hundredths));
        self.ids = Some((min_id, max_id));
        self.first = None;
        self.push_head(index)?;
        Ok(taken)
    }

    /// The smallest and largest id handed on.
    pub fn id_range(&self) -> Option<(i64, i64)> {
        self.ids
    }

    /// How this merge began (see [`RangeStart`]).
    pub fn range_start(&self) -> RangeStart {
        RangeStart {
            first_rank: self.first_rank,
            started: self.started_all,
            first_rows: self.sources.iter().map(|source| (source.name.clone(), source.first_row)).collect(),
            first_item: self.first_item.map(|(source, row, hundredths)| (self.sources[source].place(row), hundredths)),
        }
    }

    /// Ends a merge that has handed on all its items: notes where it
    /// stopped in each file, then lets its decoders go. Blocks.
    pub fn finish(mut self) -> Result<RangeEnd, MergeError> {
        let mut stopped = Vec::with_capacity(self.sources.len());
        for source in &mut self.sources {
            stopped.push(source.head()?.map(|(_, row)| row));
        }
        Ok(RangeEnd {
            start: self.range_start(),
            stopped,
            last_item: self.last.map(|(source, row, hundredths)| (self.sources[source].place(row), hundredths)),
            items: self.next_rank - self.first_rank,
            ids: self.ids,
        })
    }
}

/// Reads one file on its own thread and sends its rows in batches, from
/// its first row of rank `from` or more (the rows before it belong to the
/// range before, and are skipped unread but for their ranks); stops when
/// the merge hangs up (it failed elsewhere).
fn decode_file<S: ObjectStore + Clone + 'static>(
    mut rows: ReportFileRows<S>,
    from: u64,
    sender: flume::Sender<Result<Batch, FileReadError>>,
    spares: flume::Receiver<Vec<ReportRow>>,
) {
    let fresh = || {
        let mut rows = spares.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS));
        rows.clear();
        rows
    };
    if from > 1 {
        if let Err(error) = rows.skip_below_rank(from) {
            let _ = sender.send(Err(error));
            return;
        }
    }
    let mut first_row = rows.rows_read() + 1;
    loop {
        let mut batch = fresh();
        let read = rows.read_batch(&mut batch, BATCH_ROWS);
        let full = batch.len() == BATCH_ROWS;
        let count = batch.len() as u64;
        if !batch.is_empty() && sender.send(Ok(Batch { first_row, rows: batch })).is_err() {
            return;
        }
        first_row += count;
        match read {
            Ok(()) if full => {}
            Ok(()) => return,
            Err(error) => {
                let _ = sender.send(Err(error));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalDirStore, ObjectSink};
    use bytes::Bytes;

    /// Stores each of `files` as a track report file as Athena writes it
    /// (rows (rank, id, hundredths), row groups of `group_rows`); returns
    /// the store and the keys.
    async fn stored(files: &[&[(u64, i64, u8)]], group_rows: usize) -> (tempfile::TempDir, LocalDirStore, Vec<String>) {
        let (dir, store) = LocalDirStore::in_temp_dir("merge");
        let mut keys = Vec::new();
        for (index, rows) in files.iter().enumerate() {
            let key = format!("out/f{index}");
            let rows: Vec<(i64, u64, u8)> = rows.iter().map(|&(rank, id, h)| (id, rank, h)).collect();
            let body = super::super::output::test_files::track_file(&rows, group_rows);
            store.put(&key, Bytes::from(body), "application/octet-stream").await.unwrap();
            keys.push(key);
        }
        (dir, store, keys)
    }

    async fn merge(files: &[&[(u64, i64, u8)]], expected: Option<u64>) -> Result<Vec<ReportItem>, MergeError> {
        let (_dir, store, keys) = stored(files, 1_000).await;
        let mut merge = ReportMerge::open(&store, ReportKind::Track, &keys, expected).await?;
        tokio::task::spawn_blocking(move || {
            let mut items = Vec::new();
            while merge.next_items(&mut items, 1_000)? > 0 {}
            Ok(items)
        })
        .await
        .unwrap()
    }

    /// The same as [`merge`], an item at a time.
    async fn merge_one_by_one(
        files: &[&[(u64, i64, u8)]],
        expected: Option<u64>,
    ) -> Result<Vec<ReportItem>, MergeError> {
        let (_dir, store, keys) = stored(files, 1_000).await;
        let mut merge = ReportMerge::open(&store, ReportKind::Track, &keys, expected).await?;
        tokio::task::spawn_blocking(move || {
            let mut items = Vec::new();
            while let Some(item) = merge.next_item()? {
                items.push(item);
            }
            Ok(items)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_hand_on_the_items_and_find_the_errors_of_one_item_at_a_time() {
        let files = dealt(30_000, 4, 977);
        let mut spoilt = files.clone();
        spoilt[2][1_500].2 = 100; // a growing modifier inside a run
        let mut gap = files.clone();
        gap[1].remove(800);
        let mut repeat = files.clone();
        let copy = repeat[3][10];
        repeat[0].insert(5, copy);
        for (name, files, expected) in [
            ("whole", &files, Some(30_000)),
            ("too many", &files, Some(29_000)),
            ("spoilt", &spoilt, None),
            ("gap", &gap, None),
            ("repeat", &repeat, None),
        ] {
            let refs: Vec<&[(u64, i64, u8)]> = files.iter().map(Vec::as_slice).collect();
            let runs = merge(&refs, expected).await.map_err(|e| e.to_string());
            let one_by_one = merge_one_by_one(&refs, expected).await.map_err(|e| e.to_string());
            let tail = |result: Result<Vec<ReportItem>, String>| {
                result.map_err(|text| {
                    text.split("/tmp/")
                        .map(|p| p.split_once('/').map_or(p, |(_, rest)| rest))
                        .collect::<Vec<_>>()
                        .join("")
                })
            };
            let (runs, one_by_one) = (tail(runs), tail(one_by_one));
            assert_eq!(runs, one_by_one, "{name}");
            assert_eq!(runs.is_ok(), name == "whole", "{name}: {runs:?}");
        }
    }

    /// Merges `files` (row groups of `group_rows`) as ranges cut at
    /// `seams`, each run to its end, then joins them as the publish step
    /// does.
    async fn merge_in_ranges(
        files: &[&[(u64, i64, u8)]],
        group_rows: usize,
        seams: &[u64],
        expected: u64,
    ) -> Result<Vec<ReportItem>, MergeError> {
        let (_dir, store, keys) = stored(files, group_rows).await;
        let opened = ReportMerge::open_files(&store, ReportKind::Track, &keys).await?;
        let starts: Vec<u64> = std::iter::once(1).chain(seams.iter().copied()).collect();
        let merges: Vec<ReportMerge> = starts
            .iter()
            .enumerate()
            .map(|(index, &first)| {
                ReportMerge::over(
                    &store,
                    &opened,
                    first,
                    starts.get(index + 1).copied(),
                    Some(expected),
                    WINDOW_BYTES / 2,
                )
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut items = Vec::new();
            let mut ends = Vec::new();
            for mut merge in merges {
                while merge.next_items(&mut items, 333)? > 0 {}
                ends.push(merge.finish()?);
            }
            join_ranges(&ends, expected)?;
            Ok(items)
        })
        .await
        .unwrap()
    }

    /// Ranks 1..=rows dealt to `files` files in blocks of `block`, with ids
    /// rank × 10 and modifiers falling.
    fn dealt(rows: u64, files: u64, block: u64) -> Vec<Vec<(u64, i64, u8)>> {
        (0..files)
            .map(|file| {
                (1..=rows)
                    .filter(|rank| ((rank - 1) / block) % files == file)
                    .map(|rank| (rank, rank as i64 * 10, (100 - rank * 100 / (rows + 1)) as u8))
                    .collect()
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_merged_apart_give_the_items_of_one_merge() {
        let files = dealt(20_000, 3, 700);
        let files: Vec<&[(u64, i64, u8)]> = files.iter().map(Vec::as_slice).collect();
        let whole = merge(&files, Some(20_000)).await.unwrap();
        assert_eq!(whole.len(), 20_000);
        // Seams inside a block, on a block's edge, inside and on the edge of
        // a row group (of 1,000 rows of a file), and next to each other.
        for seams in [vec![10_001], vec![701, 1_401], vec![4_000, 4_001, 19_999], vec![2_101, 15_000]] {
            let items = merge_in_ranges(&files, 1_000, &seams, 20_000).await.unwrap();
            assert_eq!(items, whole, "seams {seams:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_reads_only_the_row_groups_that_may_hold_its_ranks() {
        let (_dir, store) = LocalDirStore::in_temp_dir("merge");
        let rows: Vec<(i64, u64, u8)> = (1..=5_000).map(|rank| (rank as i64, rank, 10)).collect();
        let body = super::super::output::test_files::track_file(&rows, 1_000);
        store.put("out/f0", Bytes::from(body), "application/octet-stream").await.unwrap();
        let file = ReportFile::open(&store, "out/f0", ReportKind::Track).await.unwrap();
        let handle = tokio::runtime::Handle::current();
        let rows_from = |rank| ReportFileRows::new(file.clone(), store.clone(), handle.clone()).starting_at_rank(rank);
        assert_eq!(rows_from(1).rows_read(), 0);
        assert_eq!(rows_from(3_500).rows_read(), 3_000, "row groups 1-3 end below 3,500");
        assert_eq!(rows_from(3_001).rows_read(), 3_000);
        assert_eq!(rows_from(3_000).rows_read(), 2_000);
        assert_eq!(rows_from(9_000).rows_read(), 5_000, "no row group holds 9,000");
        // Inside the row group, the rows below are skipped by their ranks;
        // the next row read is the first of rank 3,500 or more.
        let first_read = |mut rows: ReportFileRows<LocalDirStore>, rank: u64| {
            let skipped = rows.skip_below_rank(rank).unwrap();
            let mut batch = Vec::new();
            rows.read_batch(&mut batch, 10).unwrap();
            (skipped, rows.rows_read(), batch.first().map(|row| row.rank))
        };
        let (inside, past) = (rows_from(3_500), rows_from(9_000));
        let (first_read, none) =
            tokio::task::spawn_blocking(move || (first_read(inside, 3_500), first_read(past, 9_000))).await.unwrap();
        assert_eq!(first_read, (499, 3_509, Some(3_500)));
        assert_eq!(none, (0, 5_000, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deviations_at_a_seam_are_found_as_one_merge_finds_them() {
        let rows = 4_000u64;
        let seam = 2_001;
        let base = dealt(rows, 2, 500);
        // Rank 2,000 (the last before the seam) twice.
        let mut twice = base.clone();
        let copy = *twice[0].iter().find(|r| r.0 == 2_000).or(twice[1].iter().find(|r| r.0 == 2_000)).unwrap();
        let other = usize::from(twice[0].iter().any(|r| r.0 == 2_000));
        let at = twice[other].iter().position(|r| r.0 > 2_000).unwrap_or(twice[other].len());
        twice[other].insert(at, copy);
        let refs: Vec<&[(u64, i64, u8)]> = twice.iter().map(Vec::as_slice).collect();
        let error = merge_in_ranges(&refs, 300, &[seam], rows).await.unwrap_err();
        assert!(matches!(error, MergeError::Duplicate { rank: 2_000, .. }), "{error}");
        // Rank 2,001 (the first after it) twice.
        let mut twice = base.clone();
        let copy = *twice[0].iter().chain(&twice[1]).find(|r| r.0 == 2_001).unwrap();
        let other = usize::from(twice[0].iter().any(|r| r.0 == 2_001));
        let at = twice[other].iter().position(|r| r.0 > 2_001).unwrap_or(twice[other].len());
        twice[other].insert(at, copy);
        let refs: Vec<&[(u64, i64, u8)]> = twice.iter().map(Vec::as_slice).collect();
        let error = merge_in_ranges(&refs, 300, &[seam], rows).await.unwrap_err();
        assert!(matches!(error, MergeError::Duplicate { rank: 2_001, .. }), "{error}");
        // Ranks 2,000 and 2,001 missing: the range before names the gap and
        // where the next rank is.
        let gap: Vec<Vec<(u64, i64, u8)>> =
            base.iter().map(|f| f.iter().copied().filter(|r| r.0 != 2_000 && r.0 != 2_001).collect()).collect();
        let refs: Vec<&[(u64, i64, u8)]> = gap.iter().map(Vec::as_slice).collect();
        let error = merge_in_ranges(&refs, 300, &[seam], rows).await.unwrap_err();
        assert!(matches!(error, MergeError::Missing { rank: 2_000, next_rank: 2_002, .. }), "{error}");
        // A copy of rank 1,999 after rank 2,300 in the other file: out of
        // order, found by the range after the seam, naming the row.
        let mut disordered = base.clone();
        let other = usize::from(disordered[0].iter().any(|r| r.0 == 1_999));
        let copy = *disordered[1 - other].iter().find(|r| r.0 == 1_999).unwrap();
        let to = disordered[other].iter().position(|r| r.0 > 2_300).unwrap();
        disordered[other].insert(to, copy);
        let refs: Vec<&[(u64, i64, u8)]> = disordered.iter().map(Vec::as_slice).collect();
        let error = merge_in_ranges(&refs, 300, &[seam], rows).await.unwrap_err();
        assert!(
            matches!(&error, MergeError::OutOfOrder { place, rank: 1_999, previous: 2_300 } if place.row == to as u64 + 1),
            "{error}"
        );
        let whole = merge(&refs, Some(rows)).await.unwrap_err();
        let tail = |error: &MergeError| error.to_string().rsplit('/').next().unwrap_or_default().to_owned();
        assert_eq!(tail(&whole), tail(&error), "one merge finds the same");
        // The modifier growing exactly across the seam.
        let mut growing = base.clone();
        for file in &mut growing {
            for row in file.iter_mut().filter(|r| r.0 >= 2_001) {
                row.2 = 100;
            }
        }
        let refs: Vec<&[(u64, i64, u8)]> = growing.iter().map(Vec::as_slice).collect();
        let error = merge_in_ranges(&refs, 300, &[seam], rows).await.unwrap_err();
        assert!(matches!(&error, MergeError::ModifierGrows { rank: 2_001, .. }), "{error}");
        // Fewer rows than the counts say, ending before the seam.
        let short: Vec<Vec<(u64, i64, u8)>> =
            base.iter().map(|f| f.iter().copied().filter(|r| r.0 <= 1_500).collect()).collect();
        let refs: Vec<&[(u64, i64, u8)]> = short.iter().map(Vec::as_slice).collect();
        let error = merge_in_ranges(&refs, 300, &[seam], rows).await.unwrap_err();
        assert!(matches!(&error, MergeError::TooFew { found: 1_500, expected: 4_000, .. }), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interleaved_files_merge_into_rank_order() {
        let a: Vec<(u64, i64, u8)> = (1..=9000).filter(|r| (r / 100) % 3 == 0).map(|r| (r, r as i64 * 10, 0)).collect();
        let b: Vec<(u64, i64, u8)> = (1..=9000).filter(|r| (r / 100) % 3 == 1).map(|r| (r, r as i64 * 10, 0)).collect();
        let c: Vec<(u64, i64, u8)> = (1..=9000).filter(|r| (r / 100) % 3 == 2).map(|r| (r, r as i64 * 10, 0)).collect();
        let items = merge(&[&c, &a, &b], Some(9000)).await.unwrap();
        assert_eq!(items.len(), 9000);
        assert!(items
            .iter()
            .enumerate()
            .all(|(i, item)| item.search_rank == i as u64 + 1 && item.id == (i as i64 + 1) * 10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_duplicate_names_both_places() {
        let error = merge(&[&[(1, 5, 100), (2, 6, 50)], &[(2, 7, 50), (3, 8, 10)]], None).await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, MergeError::Duplicate { rank: 2, .. }), "{text}");
        assert!(text.contains("f0, row 2") && text.contains("f1, row 1"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_names_the_missing_rank_and_where_the_next_one_is() {
        let error = merge(&[&[(1, 5, 100), (2, 6, 50)], &[(4, 7, 50)]], None).await.unwrap_err();
        assert!(
            matches!(&error, MergeError::Missing { rank: 3, next_rank: 4, next } if next.row == 1 && next.file.ends_with("f1")),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_out_of_order_a_growing_modifier_and_wrong_counts_are_refused() {
        // Ranks 1, 3, 2 in one file: rank 2 comes from the other file first,
        // then the file's own 2 after its 3 is out of order.
        let error = merge(&[&[(1, 5, 100), (3, 6, 50), (2, 7, 50)], &[(2, 8, 50)]], None).await.unwrap_err();
        assert!(
            matches!(&error, MergeError::OutOfOrder { place, rank: 2, previous: 3 } if place.row == 3 && place.file.ends_with("f0")),
            "{error}"
        );
        let error = merge(&[&[(1, 5, 40), (2, 6, 50)]], None).await.unwrap_err();
        assert!(matches!(&error, MergeError::ModifierGrows { rank: 2, .. }), "{error}");
        let error = merge(&[&[(1, 5, 40), (2, 6, 30)]], Some(3)).await.unwrap_err();
        assert!(matches!(&error, MergeError::TooFew { found: 2, expected: 3, last } if last.row == 2), "{error}");
        let error = merge(&[&[(1, 5, 40), (2, 6, 30)]], Some(1)).await.unwrap_err();
        assert!(matches!(&error, MergeError::TooMany { rank: 2, expected: 1, .. }), "{error}");
        let error = merge(&[&[(0, 5, 40)]], None).await.unwrap_err();
        assert!(matches!(&error, MergeError::RankZero { rank: 0, .. }), "{error}");
        let error = merge(&[&[], &[]], None).await.unwrap_err();
        assert!(matches!(&error, MergeError::Empty { files: 2, .. }), "{error}");
    }
}
