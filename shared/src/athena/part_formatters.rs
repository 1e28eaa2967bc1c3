//! The publish step's parts formatted on helper threads (docs/scaling.md,
//! "The publish step"): the merge hands out one item at a time, in rank
//! order, and the parts must be written in that order; formatting the items
//! as text is most of the work of writing a part, and needs no order. So the
//! merging thread cuts the items into chunks of [`CHUNK_ITEMS`], helper
//! threads format the chunks (each knowing how many rows of its part come
//! before it, for the separator), and the merging thread writes the
//! formatted chunks into the part in order, hashing them as it goes. The
//! bytes are those [`PartWriter::push`] writes item by item.
//!
//! Memory is bounded by [`CHUNKS_IN_FLIGHT`] chunks (items and text, ~1 MB
//! each), whatever the part's size. With no helper, the merging thread
//! formats the items itself.

use std::collections::BTreeMap;
use std::io::Write;

use crate::domain::{Compression, Encoding, ReportKind};
use crate::report_writer::{format_items, PartWriter, ReportItem};

use super::merge::{MergeError, ReportMerge};

/// Items formatted by one helper at a time.
pub const CHUNK_ITEMS: usize = 8 * 1024;
/// Chunks handed to the helpers and not yet written, at most.
pub const CHUNKS_IN_FLIGHT: usize = 8;

/// Why a part could not be written: the merge refused the data, or the
/// writer failed.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error(transparent)]
    Merge(MergeError),
    #[error("formatting the part failed: {0}")]
    Format(#[from] std::io::Error),
}

struct Job {
    sequence: u64,
    items: Vec<ReportItem>,
    rows_before: u64,
}

struct Formatted {
    sequence: u64,
    items: Vec<ReportItem>,
    text: Vec<u8>,
}

/// The helper threads of one report. They end when this is dropped.
pub struct PartFormatters {
    /// `None` when there is no helper.
    jobs: Option<flume::Sender<Job>>,
    done: flume::Receiver<Formatted>,
    /// Used text buffers, back to the helpers.
    spare_text: flume::Sender<Vec<u8>>,
    spare_items: Vec<Vec<ReportItem>>,
    next_sequence: u64,
}

impl PartFormatters {
    /// Starts `helpers` threads formatting items of a `kind` report in
    /// `encoding` (none: the merging thread formats them, as it does for a
    /// compressed encoding, whose bytes depend on how its input is cut).
    pub fn start(kind: ReportKind, encoding: Encoding, helpers: usize) -> Self {
        let format = encoding.format;
        let helpers = if encoding.compression == Compression::None { helpers } else { 0 };
        let (jobs, job_queue) = flume::bounded::<Job>(CHUNKS_IN_FLIGHT);
        let (finished, done) = flume::bounded::<Formatted>(CHUNKS_IN_FLIGHT);
        let (spare_text, spare_texts) = flume::bounded::<Vec<u8>>(CHUNKS_IN_FLIGHT + helpers);
        for index in 0..helpers {
            let (job_queue, finished, spare_texts) = (job_queue.clone(), finished.clone(), spare_texts.clone());
            std::thread::Builder::new()
                .name(format!("format-{index}"))
                .spawn(move || {
                    while let Ok(job) = job_queue.recv() {
                        let mut text = spare_texts.try_recv().unwrap_or_default();
                        text.clear();
                        format_items(kind, format, &job.items, job.rows_before, &mut text);
                        let formatted = Formatted { sequence: job.sequence, items: job.items, text };
                        if finished.send(formatted).is_err() {
                            return;
                        }
                    }
                })
                .expect("a formatting thread starts");
        }
        Self { jobs: (helpers > 0).then_some(jobs), done, spare_text, spare_items: Vec::new(), next_sequence: 0 }
    }

    /// Writes the next items of `merge`, at most `max_rows`, into `writer`;
    /// returns how many. Blocks: run it on a blocking thread.
    pub fn write_part<W: Write>(
        &mut self,
        merge: &mut ReportMerge,
        writer: &mut PartWriter<W>,
        max_rows: u64,
    ) -> Result<u64, PartError> {
        let Some(jobs) = self.jobs.clone() else {
            let mut rows = 0;
            let mut items = self.spare_items.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_ITEMS));
            while rows < max_rows {
                items.clear();
                let wanted = (max_rows - rows).min(CHUNK_ITEMS as u64) as usize;
                let merged = merge.next_items(&mut items, wanted).map_err(PartError::Merge)?;
                for &item in &items {
                    writer.push(item)?;
                }
                rows += merged as u64;
                if merged < wanted {
                    break;
                }
            }
            self.spare_items.push(items);
            return Ok(rows);
        };
        let mut queued = 0u64;
        let mut merged_all = false;
        let mut written = self.next_sequence;
        let mut waiting: BTreeMap<u64, Formatted> = BTreeMap::new();
        loop {
            // Write what is formatted, in order; wait when enough is queued
            // or nothing is left to queue.
            loop {
                while let Some(formatted) = waiting.remove(&written) {
                    writer.push_formatted(&formatted.text, formatted.items.len() as u64)?;
                    written += 1;
                    let _ = self.spare_text.try_send(formatted.text);
                    self.spare_items.push(formatted.items);
                }
                let outstanding = self.next_sequence - written;
                let must_wait = outstanding >= CHUNKS_IN_FLIGHT as u64 || (merged_all && outstanding > 0);
                let formatted = if must_wait {
                    self.done.recv().map_err(|_| helper_lost())?
                } else {
                    match self.done.try_recv() {
                        Ok(formatted) => formatted,
                        Err(flume::TryRecvError::Empty) => break,
                        Err(flume::TryRecvError::Disconnected) => return Err(helper_lost()),
                    }
                };
                waiting.insert(formatted.sequence, formatted);
            }
            if merged_all {
                return Ok(queued);
            }
            let mut items = self.spare_items.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK_ITEMS));
            items.clear();
            let rows_before = queued;
            let wanted = (max_rows - queued).min(CHUNK_ITEMS as u64) as usize;
            queued += merge.next_items(&mut items, wanted).map_err(PartError::Merge)? as u64;
            merged_all = items.len() < CHUNK_ITEMS || queued == max_rows;
            if items.is_empty() {
                continue;
            }
            let job = Job { sequence: self.next_sequence, items, rows_before };
            jobs.send(job).map_err(|_| helper_lost())?;
            self.next_sequence += 1;
        }
    }
}

fn helper_lost() -> PartError {
    PartError::Format(std::io::Error::other("a thread formatting the part stopped (it panicked)"))
}
