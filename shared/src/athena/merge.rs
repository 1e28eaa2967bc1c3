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
//! Memory is bounded by the number of files, never by the report's size or
//! its files' row groups: a few batches, three column windows and pages per
//! file. It writes nothing; the publish step
//! turns what it hands on into parts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::domain::ReportKind;
use crate::report_writer::ReportItem;
use crate::store::ObjectStore;

use super::output::{FileReadError, ReportFile, ReportFileRows, ReportRow, RowPlace};

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
    next_rank: u64,
    expected_rows: Option<u64>,
    /// Where the last item handed on came from (source, row) and its
    /// modifier; a place is spelt out only for an error, never per row.
    last: Option<(usize, u64, u8)>,
    ids: Option<(i64, i64)>,
}

impl ReportMerge {
    /// Reads and checks the footer of each of `files` (keys of `store`), then
    /// starts a decoder thread for each on the current Tokio runtime's
    /// blocking pool. `expected_rows`, when known, is the number of items the
    /// report must have.
    pub async fn open<S: ObjectStore + Clone + 'static>(
        store: &S,
        kind: ReportKind,
        files: &[String],
        expected_rows: Option<u64>,
    ) -> Result<Self, MergeError> {
        let handle = tokio::runtime::Handle::current();
        let mut sources = Vec::with_capacity(files.len());
        let mut opened = Vec::with_capacity(files.len());
        for key in files {
            opened.push(ReportFile::open(store, key, kind).await?);
        }
        for file in opened {
            let name = file.name().to_owned();
            let rows = ReportFileRows::new(file, store.clone(), handle.clone());
            let (sender, receiver) = flume::bounded(BATCHES_IN_FLIGHT);
            let (spare, spares) = flume::bounded(BATCHES_IN_FLIGHT + 2);
            tokio::task::spawn_blocking(move || decode_file(rows, sender, spares));
            sources.push(Source {
                name,
                receiver,
                spare,
                batch: Batch { first_row: 1, rows: Vec::new() },
                at: 0,
                last_rank: None,
            });
        }
        Ok(Self {
            sources,
            heads: BinaryHeap::new(),
            first: None,
            started: false,
            started_all: false,
            next_rank: 1,
            expected_rows,
            last: None,
            ids: None,
        })
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
            if self.heads.is_empty() && self.first.is_none() {
                let names: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(MergeError::Empty { files: names.len(), names: names.join(", ") });
            }
        }
        Ok(())
    }

    /// Whether items are left (every check of the end passed when not).
    pub fn has_more(&mut self) -> Result<bool, MergeError> {
        self.start()?;
        if self.first.is_some() || !self.heads.is_empty() {
            return Ok(true);
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
        self.ids = Some(self.ids.map_or((row.id, row.id), |(min, max)| (min.min(row.id), max.max(row.id))));
        self.push_head(index)?;
        Ok(Some(ReportItem { id: row.id, search_rank: rank, modifier_hundredths: row.hundredths }))
    }

    /// Items handed on so far.
    pub fn items(&self) -> u64 {
        self.next_rank - 1
    }

    /// The smallest and largest id handed on.
    pub fn id_range(&self) -> Option<(i64, i64)> {
        self.ids
    }
}

/// Reads one file on its own thread and sends its rows in batches; stops
/// when the merge hangs up (it failed elsewhere).
fn decode_file<S: ObjectStore + Clone + 'static>(
    mut rows: ReportFileRows<S>,
    sender: flume::Sender<Result<Batch, FileReadError>>,
    spares: flume::Receiver<Vec<ReportRow>>,
) {
    let fresh = || {
        let mut rows = spares.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH_ROWS));
        rows.clear();
        rows
    };
    let mut first_row = 1;
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

    /// A track report file as Athena writes it: rows (rank, id, hundredths).
    fn file_bytes(rows: &[(u64, i64, u8)]) -> Vec<u8> {
        let rows: Vec<(i64, u64, u8)> = rows.iter().map(|&(rank, id, h)| (id, rank, h)).collect();
        super::super::output::test_files::track_file(&rows, 1_000)
    }

    async fn merge(files: &[&[(u64, i64, u8)]], expected: Option<u64>) -> Result<Vec<ReportItem>, MergeError> {
        let (_dir, store) = LocalDirStore::in_temp_dir("merge");
        let mut keys = Vec::new();
        for (index, rows) in files.iter().enumerate() {
            let key = format!("out/f{index}");
            store.put(&key, Bytes::from(file_bytes(rows)), "application/octet-stream").await.unwrap();
            keys.push(key);
        }
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
