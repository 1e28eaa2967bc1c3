//! Reading what one UNLOAD wrote: the data manifest Athena keeps beside its
//! query results (the S3 URIs of the files the query wrote), the files it
//! lists, and their rows — Parquet (`format = 'PARQUET'`, Snappy), with the
//! column names Athena gives them (lower case: `trackid`, `searchrank`,
//! `searchmodifier`) or the contract's, nullable as Athena writes them.
//!
//! A report file is read column by column, a page at a time: its footer by a
//! suffix range, checked before it is trusted (the columns, their types, and
//! every column chunk inside the file), then each column chunk through a
//! window of at most [`WINDOW_BYTES`] fetched by a ranged GET of the version
//! the footer came from, so memory is a few windows and pages per file,
//! whatever the size of the file or of its row groups. Rows come out in
//! batches, each row checked (no null, a rank that is not negative, a
//! modifier in whole hundredths). Every problem names the file, and the row
//! (1-based, counted over the whole file) or the row group where it applies;
//! nothing here guesses: a renamed, missing or extra column, a column of
//! another type, a file that is not Parquet or is cut short are all errors.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{DataType, DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::SchemaDescriptor;

use crate::domain::ReportKind;
use crate::input::{self, chunk_span, read_footer, InputError};
use crate::store::{ByteRange, ObjectStore, ObjectVersion, StoreError};

/// Bytes of one column chunk fetched at once (one ranged GET): a page is
/// fetched whole even when it is larger. A file holds a window per column
/// (three) and the page being decoded of each.
pub const WINDOW_BYTES: u64 = 2 * 1024 * 1024;

/// Ranks read at once while counting the rows a range skips.
const BATCH_ROWS_TO_SKIP: usize = 8192;

/// At least this much of a column chunk is in the window when a page
/// header is read from it (a header of numeric columns is ~30–60 bytes).
const PAGE_HEADER_BYTES: u64 = 64 * 1024;

/// Where in Athena's output a row is: the file (as the store describes it)
/// and the 1-based row in it, counted over its row groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlace {
    pub file: String,
    pub row: u64,
}

impl std::fmt::Display for RowPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, row {}", self.file, self.row)
    }
}

/// What is wrong with one row of a report file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowProblem {
    #[error("{column} is null; every row of a report has all three columns")]
    Null { column: &'static str },
    #[error("searchRank is {0}, not a rank (ranks are whole numbers from 1)")]
    NotARank(i64),
    #[error("searchModifier is {0:?}, not a number from 0 to 1 in whole hundredths")]
    BadModifier(f64),
}

/// What is wrong with the columns of a report file (its schema, in its
/// footer): the same for every row of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnProblem {
    #[error(
        "column {found:?} is not one of the report's columns ({expected}): a column renamed in the query, or \
         another query's output"
    )]
    UnknownColumn { found: String, expected: String },
    #[error("column {column} is missing; the file has columns [{found}]")]
    MissingColumn { column: &'static str, found: String },
    #[error("column {column} appears twice ({names})")]
    RepeatedColumn { column: &'static str, names: String },
    #[error("column {name:?} is {found}, expected {expected}")]
    WrongType { name: String, found: String, expected: &'static str },
    #[error("column {0:?} is nested or repeated; a report's columns are plain values")]
    Nested(String),
}

/// Why the rows of a file stopped: the file's fault, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    #[error("{place}: {problem}")]
    Row { place: RowPlace, problem: RowProblem },
    #[error("{file}: {problem} (in its schema, before row 1)")]
    Columns { file: String, problem: ColumnProblem },
    #[error("{file}: not a readable Parquet file ({detail}): it is truncated or damaged; none of its rows was used")]
    Unreadable { file: String, detail: String },
    #[error(
        "{file}: row group {row_group}, after row {rows}: the file cannot be decoded ({detail}): it is truncated or \
         damaged"
    )]
    Damaged { file: String, row_group: usize, rows: u64, detail: String },
    /// A small file read whole (the counts): the input reader's problem,
    /// which names the file, row group and column.
    #[error(transparent)]
    Input(InputError),
    #[error("reading {file} failed after row {rows}: {source}")]
    Store {
        file: String,
        rows: u64,
        #[source]
        source: StoreError,
    },
}

impl FileReadError {
    fn from_input(file: &str, error: InputError) -> Self {
        match error {
            InputError::Store(source) => FileReadError::Store { file: file.to_owned(), rows: 0, source },
            InputError::Unreadable { detail, .. } => FileReadError::Unreadable { file: file.to_owned(), detail },
            other => FileReadError::Unreadable { file: file.to_owned(), detail: other.to_string() },
        }
    }
}

/// One row of a report as Athena wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRow {
    pub id: i64,
    pub rank: u64,
    /// `searchModifier` in hundredths (0..=100).
    pub hundredths: u8,
}

const RANK_FIELD: &str = "searchRank";
const MODIFIER_FIELD: &str = "searchModifier";

/// The names a report's columns may have: the contract's (`trackId`) or
/// Athena's lower-case one (`trackid`); nothing else.
#[derive(Debug, Clone)]
pub struct ReportColumns {
    fields: [&'static str; 3],
}

impl ReportColumns {
    pub fn of(kind: ReportKind) -> Self {
        Self { fields: [kind.id_field(), RANK_FIELD, MODIFIER_FIELD] }
    }

    /// Which column `name` is: 0 the id, 1 the rank, 2 the modifier.
    fn column(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| name == *field || name == field.to_ascii_lowercase())
    }

    fn expected(&self) -> String {
        self.fields
            .iter()
            .map(|field| format!("{field} or {}", field.to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The leaf columns of `schema` holding the id, the rank and the
    /// modifier: exactly these three, INT64, INT64 and DOUBLE, plain values
    /// (required or optional).
    pub fn locate(&self, schema: &SchemaDescriptor) -> Result<[usize; 3], ColumnProblem> {
        let mut found: [Option<usize>; 3] = [None; 3];
        for (index, descriptor) in schema.columns().iter().enumerate() {
            let path = descriptor.path().string();
            if descriptor.path().parts().len() != 1 || descriptor.max_rep_level() > 0 {
                return Err(ColumnProblem::Nested(path));
            }
            let Some(column) = self.column(descriptor.name()) else {
                return Err(ColumnProblem::UnknownColumn { found: path, expected: self.expected() });
            };
            if let Some(first) = found[column].replace(index) {
                return Err(ColumnProblem::RepeatedColumn {
                    column: self.fields[column],
                    names: format!("{} and {}", schema.column(first).name(), descriptor.name()),
                });
            }
            let (wanted, expected) = if column == 2 {
                (parquet::basic::Type::DOUBLE, "DOUBLE")
            } else {
                (parquet::basic::Type::INT64, "INT64 (BIGINT)")
            };
            if descriptor.physical_type() != wanted {
                let logical = descriptor.logical_type_ref().map(|t| format!(" ({t:?})")).unwrap_or_default();
                return Err(ColumnProblem::WrongType {
                    name: descriptor.name().to_owned(),
                    found: format!("{}{logical}", descriptor.physical_type()),
                    expected,
                });
            }
        }
        let names = || schema.columns().iter().map(|c| c.name().to_owned()).collect::<Vec<_>>().join(", ");
        let mut located = [0; 3];
        for (column, index) in found.into_iter().enumerate() {
            located[column] =
                index.ok_or_else(|| ColumnProblem::MissingColumn { column: self.fields[column], found: names() })?;
        }
        Ok(located)
    }
}

/// The hundredths a modifier as Athena computes it stands for
/// (`round(x * 1E2) / 1E2`: the double nearest a whole number of
/// hundredths), or `None` for any other value.
#[inline]
pub fn modifier_hundredths(modifier: f64) -> Option<u8> {
    let hundredths = (modifier * 100.0).round();
    if !(0.0..=100.0).contains(&hundredths) {
        return None;
    }
    let hundredths = hundredths as u8;
    (f64::from(hundredths) / 100.0 == modifier).then_some(hundredths)
}

/// One report file, opened: its checked footer and where its columns are.
#[derive(Debug, Clone)]
pub struct ReportFile {
    key: String,
    name: String,
    metadata: Arc<ParquetMetaData>,
    /// Leaf indices of the id, the rank and the modifier.
    columns: [usize; 3],
    /// The contract's names of the id, the rank and the modifier.
    fields: [&'static str; 3],
    version: ObjectVersion,
    size: u64,
}

impl ReportFile {
    /// Reads and checks the footer of `key`: a Parquet file whose columns
    /// are a `kind` report's and whose column chunks lie inside it.
    pub async fn open<S: ObjectStore>(store: &S, key: &str, kind: ReportKind) -> Result<Self, FileReadError> {
        let name = store.describe(key);
        let footer = read_footer(store, key, &Arc::from(name.as_str()))
            .await
            .map_err(|e| FileReadError::from_input(&name, e))?;
        let report_columns = ReportColumns::of(kind);
        let columns = report_columns
            .locate(footer.metadata.file_metadata().schema_descr())
            .map_err(|problem| FileReadError::Columns { file: name.clone(), problem })?;
        for (row_group, group) in footer.metadata.row_groups().iter().enumerate() {
            for &index in &columns {
                let column = group.column(index);
                let span = chunk_span(column).map_err(|detail| FileReadError::Unreadable {
                    file: name.clone(),
                    detail: format!("row group {row_group}, column {}: {detail}", column.column_descr().name()),
                })?;
                if span.start < 4 || span.end > footer.data_end {
                    return Err(FileReadError::Unreadable {
                        file: name.clone(),
                        detail: format!(
                            "its footer puts row group {row_group}'s column {} at bytes {}..{}, outside the data \
                             (bytes 4..{}): corrupt footer, or the file was cut short",
                            column.column_descr().name(),
                            span.start,
                            span.end,
                            footer.data_end
                        ),
                    });
                }
            }
        }
        Ok(Self {
            key: key.to_owned(),
            name,
            metadata: Arc::new(footer.metadata),
            columns,
            fields: report_columns.fields,
            version: footer.version,
            size: footer.size,
        })
    }

    /// How the store describes the file (`s3://…`, a path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rows its footer says it holds.
    pub fn rows(&self) -> u64 {
        u64::try_from(self.metadata.file_metadata().num_rows()).unwrap_or(0)
    }
}

/// The column readers of one row group, and the rows left in it.
struct RowGroupColumns {
    index: usize,
    left: usize,
    ids: ColumnReaderImpl<Int64Type>,
    ranks: ColumnReaderImpl<Int64Type>,
    modifiers: ColumnReaderImpl<DoubleType>,
}

/// The rows of one report file, read a batch at a time, column by column.
/// Everything here blocks (each window is awaited on the runtime `handle`):
/// run it on a thread of its own.
pub struct ReportFileRows<S: ObjectStore + Clone + 'static> {
    file: ReportFile,
    store: S,
    handle: tokio::runtime::Handle,
    next_group: usize,
    group: Option<RowGroupColumns>,
    /// Rows handed out so far.
    rows: u64,
    ids: Vec<i64>,
    ranks: Vec<i64>,
    modifiers: Vec<f64>,
    levels: Vec<i16>,
    window_bytes: u64,
}

impl<S: ObjectStore + Clone + 'static> ReportFileRows<S> {
    pub fn new(file: ReportFile, store: S, handle: tokio::runtime::Handle) -> Self {
        Self {
            window_bytes: WINDOW_BYTES,
            file,
            store,
            handle,
            next_group: 0,
            group: None,
            rows: 0,
            ids: Vec::new(),
            ranks: Vec::new(),
            modifiers: Vec::new(),
            levels: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file.name
    }

    /// Starts at the first row group that may hold `rank` or a later one,
    /// by the row groups' statistics of the rank column (a row group without
    /// them may hold anything). The rows before it are not read; those of
    /// it below `rank` are skipped by [`Self::skip_below_rank`]. Statistics
    /// are only a hint here: the publish step checks that the merge before
    /// `rank` stopped at the row where this one starts.
    pub fn starting_at_rank(mut self, rank: u64) -> Self {
        let rank_column = self.file.columns[1];
        let groups = self.file.metadata.row_groups();
        let start = groups
            .iter()
            .position(|group| match group.column(rank_column).statistics() {
                Some(parquet::file::statistics::Statistics::Int64(values)) => {
                    values.max_opt().is_none_or(|&max| u64::try_from(max).is_ok_and(|max| max >= rank))
                }
                _ => true,
            })
            .unwrap_or(groups.len());
        self.next_group = start;
        self.rows = groups[..start].iter().map(|group| u64::try_from(group.num_rows()).unwrap_or(0)).sum();
        self
    }

    /// Fetches each column chunk through windows of `bytes` (at least a
    /// page) instead of [`WINDOW_BYTES`].
    pub fn with_window_bytes(mut self, bytes: u64) -> Self {
        self.window_bytes = bytes.max(PAGE_HEADER_BYTES);
        self
    }

    /// Rows read so far, counting those of the row groups skipped.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// Appends rows to `rows` until it holds `max` or the file ends (then
    /// it holds fewer). On an error, `rows` keeps the rows before it.
    pub fn read_batch(&mut self, rows: &mut Vec<ReportRow>, max: usize) -> Result<(), FileReadError> {
        while rows.len() < max {
            let Some(group) = self.group.as_mut().filter(|group| group.left > 0) else {
                if self.next_group >= self.file.metadata.num_row_groups() {
                    return Ok(());
                }
                self.group = Some(self.open_group(self.next_group)?);
                self.next_group += 1;
                continue;
            };
            let wanted = (max - rows.len()).min(group.left);
            let (file, before, index) = (&self.file, self.rows, group.index);
            let schema = file.metadata.file_metadata().schema_descr();
            let [id, rank, modifier] = file.columns;
            let level = |column: usize| schema.column(column).max_def_level();
            let check = |read: Result<bool, ReadProblem>, column: usize, levels: &[i16]| {
                let field = file.fields[file.columns.iter().position(|&c| c == column).expect("a report column")];
                match read {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        let at = levels.iter().position(|&l| l < level(column)).unwrap_or(levels.len()) as u64;
                        let place = RowPlace { file: file.name.clone(), row: before + at + 1 };
                        Err(FileReadError::Row { place, problem: RowProblem::Null { column: field } })
                    }
                    Err(ReadProblem::Ended(records)) => Err(FileReadError::Damaged {
                        file: file.name.clone(),
                        row_group: index,
                        rows: before + records as u64,
                        detail: format!("column {field} has fewer values than the row group's rows"),
                    }),
                    Err(ReadProblem::Parquet(error)) => Err(parquet_error(file, index, before, error)),
                }
            };
            check(read_column(&mut group.ids, wanted, level(id), &mut self.levels, &mut self.ids), id, &self.levels)?;
            check(
                read_column(&mut group.ranks, wanted, level(rank), &mut self.levels, &mut self.ranks),
                rank,
                &self.levels,
            )?;
            check(
                read_column(&mut group.modifiers, wanted, level(modifier), &mut self.levels, &mut self.modifiers),
                modifier,
                &self.levels,
            )?;
            rows.reserve(wanted);
            for (at, ((&id, &rank), &modifier)) in self.ids.iter().zip(&self.ranks).zip(&self.modifiers).enumerate() {
                let problem = match (u64::try_from(rank), modifier_hundredths(modifier)) {
                    (Ok(rank), Some(hundredths)) => {
                        rows.push(ReportRow { id, rank, hundredths });
                        continue;
                    }
                    (Err(_), _) => RowProblem::NotARank(rank),
                    (_, None) => RowProblem::BadModifier(modifier),
                };
                let place = RowPlace { file: self.file.name.clone(), row: self.rows + at as u64 + 1 };
                return Err(FileReadError::Row { place, problem });
            }
            self.rows += wanted as u64;
            group.left -= wanted;
        }
        Ok(())
    }

    /// Skips the rows before the first of rank `rank` or more (or the first
    /// that is not a rank: null or negative, which the range before reports)
    /// from where the reader stands, a row group at a time: it reads only
    /// the rank column to count them, then skips that many rows in all three
    /// columns, whole pages without fetching or decompressing them. Returns
    /// how many rows it skipped. Blocks.
    pub fn skip_below_rank(&mut self, rank: u64) -> Result<u64, FileReadError> {
        let mut skipped = 0;
        while self.group.is_none() && self.next_group < self.file.metadata.num_row_groups() {
            let index = self.next_group;
            let rank_column = self.file.columns[1];
            let (left, reader) = self.column_reader(index, rank_column)?;
            let descriptor = self.file.metadata.row_group(index).column(rank_column).column_descr_ptr();
            let max_level = descriptor.max_def_level();
            let mut ranks = ColumnReaderImpl::<Int64Type>::new(descriptor, reader);
            let mut below = 0;
            let mut found = false;
            while below < left && !found {
                let wanted = (left - below).min(BATCH_ROWS_TO_SKIP);
                let read = read_column(&mut ranks, wanted, max_level, &mut self.levels, &mut self.ranks);
                // A null ends the count at its row: reading it there names it.
                let counted = match read {
                    Ok(_) if max_level > 0 => {
                        self.levels.iter().position(|&level| level < max_level).unwrap_or(self.levels.len())
                    }
                    Ok(_) => self.ranks.len(),
                    Err(ReadProblem::Ended(records)) => records,
                    Err(ReadProblem::Parquet(error)) => return Err(parquet_error(&self.file, index, self.rows, error)),
                };
                let values = &self.ranks[..counted.min(self.ranks.len())];
                let at = values.iter().position(|&value| u64::try_from(value).map_or(true, |value| value >= rank));
                match at {
                    Some(at) => {
                        below += at;
                        found = true;
                    }
                    None if counted < wanted => {
                        below += counted;
                        found = true;
                    }
                    None => below += counted,
                }
            }
            if !found {
                // The whole row group is below `rank`.
                self.next_group += 1;
                self.rows += left as u64;
                skipped += left as u64;
                continue;
            }
            let mut group = self.open_group(index)?;
            self.next_group += 1;
            for column in 0..3 {
                let done = match column {
                    0 => group.ids.skip_records(below),
                    1 => group.ranks.skip_records(below),
                    _ => group.modifiers.skip_records(below),
                };
                match done {
                    Ok(done) if done == below => {}
                    Ok(done) => {
                        return Err(FileReadError::Damaged {
                            file: self.file.name.clone(),
                            row_group: index,
                            rows: self.rows + done as u64,
                            detail: format!(
                                "column {} has fewer values than the row group's rows",
                                self.file.fields[column]
                            ),
                        })
                    }
                    Err(error) => return Err(parquet_error(&self.file, index, self.rows, error)),
                }
            }
            group.left -= below;
            self.rows += below as u64;
            skipped += below as u64;
            self.group = Some(group);
        }
        Ok(skipped)
    }

    /// The page reader of one column of row group `index`, paging through
    /// its own window of the file, and the row group's rows.
    fn column_reader(
        &self,
        index: usize,
        column: usize,
    ) -> Result<(usize, Box<SerializedPageReader<ColumnChunkWindow<S>>>), FileReadError> {
        let group = self.file.metadata.row_group(index);
        let damaged = |detail: String| FileReadError::Damaged {
            file: self.file.name.clone(),
            row_group: index,
            rows: self.rows,
            detail,
        };
        let left = usize::try_from(group.num_rows())
            .map_err(|_| damaged(format!("its footer gives the row group {} rows", group.num_rows())))?;
        let chunk = group.column(column);
        let span = chunk_span(chunk).map_err(damaged)?;
        let window = ColumnChunkWindow {
            store: self.store.clone(),
            key: self.file.key.clone(),
            version: self.file.version.clone(),
            handle: self.handle.clone(),
            size: self.file.size,
            chunk: span,
            window_bytes: self.window_bytes,
            window: Mutex::new((0, Bytes::new())),
        };
        let reader = SerializedPageReader::new(Arc::new(window), chunk, left, None)
            .map(Box::new)
            .map_err(|error| parquet_error(&self.file, index, self.rows, error))?;
        Ok((left, reader))
    }

    /// Column readers for row group `index`.
    fn open_group(&self, index: usize) -> Result<RowGroupColumns, FileReadError> {
        let group = self.file.metadata.row_group(index);
        let [ids, ranks, modifiers] = self.file.columns;
        let descriptor = |column: usize| group.column(column).column_descr_ptr();
        let (left, id_pages) = self.column_reader(index, ids)?;
        Ok(RowGroupColumns {
            index,
            left,
            ids: ColumnReaderImpl::new(descriptor(ids), id_pages),
            ranks: ColumnReaderImpl::new(descriptor(ranks), self.column_reader(index, ranks)?.1),
            modifiers: ColumnReaderImpl::new(descriptor(modifiers), self.column_reader(index, modifiers)?.1),
        })
    }
}

/// A decoding error: the store's, passed through the window, or the
/// bytes'.
fn parquet_error(file: &ReportFile, row_group: usize, rows: u64, error: ParquetError) -> FileReadError {
    let name = file.name.clone();
    match error {
        ParquetError::External(inner) => match inner.downcast::<StoreError>() {
            Ok(source) => FileReadError::Store { file: name, rows, source: *source },
            Err(other) => FileReadError::Damaged { file: name, row_group, rows, detail: other.to_string() },
        },
        other => FileReadError::Damaged { file: name, row_group, rows, detail: other.to_string() },
    }
}

enum ReadProblem {
    /// The column chunk ended after this many of the rows asked for.
    Ended(usize),
    Parquet(ParquetError),
}

/// Reads exactly `rows` values of one column into `values` (cleared
/// first); `Ok(false)` when a value is null (`levels` then holds the
/// definition levels read, the first below `max_level` being the null).
fn read_column<T: DataType>(
    reader: &mut ColumnReaderImpl<T>,
    rows: usize,
    max_level: i16,
    levels: &mut Vec<i16>,
    values: &mut Vec<T::T>,
) -> Result<bool, ReadProblem> {
    values.clear();
    levels.clear();
    let mut records = 0;
    while records < rows {
        let definition = (max_level > 0).then_some(&mut *levels);
        let (read, _, _) =
            reader.read_records(rows - records, definition, None, values).map_err(ReadProblem::Parquet)?;
        if read == 0 {
            return Err(ReadProblem::Ended(records));
        }
        records += read;
    }
    Ok(values.len() == rows)
}

/// One column chunk of a file as the parquet reader sees the file: reads
/// inside the chunk are served from a window of it, fetched by a ranged
/// GET of the footer's version when a read leaves the window. The reader
/// pages forward through the chunk, so each byte is fetched once.
struct ColumnChunkWindow<S: ObjectStore> {
    store: S,
    key: String,
    version: ObjectVersion,
    handle: tokio::runtime::Handle,
    /// The whole file's size.
    size: u64,
    chunk: Range<u64>,
    window_bytes: u64,
    /// Where the window starts, and its bytes.
    window: Mutex<(u64, Bytes)>,
}

impl<S: ObjectStore> ColumnChunkWindow<S> {
    /// The window's bytes from `start` on, with at least `length` of them.
    fn from(&self, start: u64, length: u64) -> Result<Bytes, ParquetError> {
        let end = start.checked_add(length).filter(|&end| start >= self.chunk.start && end <= self.chunk.end);
        let Some(end) = end else {
            return Err(ParquetError::General(format!(
                "bytes {start}..{} are outside the column chunk (bytes {}..{})",
                start.saturating_add(length),
                self.chunk.start,
                self.chunk.end
            )));
        };
        let mut window = self.window.lock().expect("the window's lock");
        let (window_start, bytes) = &*window;
        let window_end = window_start + bytes.len() as u64;
        if start < *window_start || end > window_end {
            let fetch_end = end.max(start.saturating_add(self.window_bytes)).min(self.chunk.end);
            // A page that begins in the window keeps its bytes there: only
            // the rest is fetched.
            let kept = if (*window_start..window_end).contains(&start) {
                bytes.slice((start - window_start) as usize..)
            } else {
                Bytes::new()
            };
            let fetch_start = start + kept.len() as u64;
            let range = ByteRange::Span { start: fetch_start, end: fetch_end };
            let read = self
                .handle
                .block_on(self.store.get_range(&self.key, range, Some(&self.version)))
                .map_err(|error| ParquetError::External(Box::new(error)))?;
            if read.start != fetch_start || (read.body.len() as u64) != fetch_end - fetch_start {
                return Err(ParquetError::General(format!(
                    "asked for bytes {fetch_start}..{fetch_end}, got {} bytes from {}: the file is shorter than its \
                     footer says",
                    read.body.len(),
                    read.start
                )));
            }
            let joined = if kept.is_empty() {
                read.body
            } else {
                let mut joined = Vec::with_capacity(kept.len() + read.body.len());
                joined.extend_from_slice(&kept);
                joined.extend_from_slice(&read.body);
                Bytes::from(joined)
            };
            *window = (start, joined);
        }
        let (window_start, bytes) = &*window;
        Ok(bytes.slice((start - window_start) as usize..))
    }
}

impl<S: ObjectStore> Length for ColumnChunkWindow<S> {
    fn len(&self) -> u64 {
        self.size
    }
}

impl<S: ObjectStore> ChunkReader for ColumnChunkWindow<S> {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let header = PAGE_HEADER_BYTES.min(self.chunk.end.saturating_sub(start));
        Ok(self.from(start, header)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        Ok(self.from(start, length as u64)?.slice(..length))
    }
}

/// The S3 URIs a data manifest lists, in its order (Athena writes one per
/// line; quotes and a trailing carriage return are tolerated).
pub fn parse_data_manifest(text: &str) -> Vec<String> {
    text.lines().map(|line| line.trim().trim_matches('"').to_owned()).filter(|line| !line.is_empty()).collect()
}

/// The rows of a small Parquet file read whole (the run's counts): the
/// named INT64 columns (matched ignoring case, as Athena lower-cases them)
/// of every row, in the file's order. Problems name the file, and the row
/// group and column where they apply.
pub async fn read_int64_rows<S: ObjectStore>(
    store: &S,
    key: &str,
    columns: &[&str],
) -> Result<Vec<Vec<i64>>, FileReadError> {
    let file = store.describe(key);
    let body = store.get(key).await.map_err(|source| FileReadError::Store { file: file.clone(), rows: 0, source })?;
    let row_groups = input::inspect(&file, body.clone(), columns).map_err(FileReadError::Input)?;
    let mut rows = Vec::new();
    for row_group in 0..row_groups {
        let decoded =
            input::read_int64_columns(&file, body.clone(), row_group, columns).map_err(FileReadError::Input)?;
        let count = decoded.first().map_or(0, Vec::len);
        rows.extend((0..count).map(|row| decoded.iter().map(|column| column[row]).collect()));
    }
    Ok(rows)
}

/// Report files as UNLOAD writes them, for the tests of this module and of
/// the merge.
#[cfg(test)]
pub(crate) mod test_files {
    use std::sync::Arc;

    use parquet::basic::Compression;
    use parquet::data_type::{DoubleType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    /// One column's values (`None`: null).
    pub enum Values {
        Long(Vec<Option<i64>>),
        Int(Vec<Option<i32>>),
        Double(Vec<Option<f64>>),
    }

    fn levels<T: Copy>(values: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
        (values.iter().flatten().copied().collect(), values.iter().map(|v| i16::from(v.is_some())).collect())
    }

    /// A Parquet file of `schema` (a message type) holding `columns`, in row
    /// groups of `group_rows` and data pages of ~1 KB (many pages a group).
    pub fn parquet_file(schema: &str, columns: &[Values], group_rows: usize) -> Vec<u8> {
        let schema = Arc::new(parse_message_type(schema).unwrap());
        let descriptor = parquet::schema::types::SchemaDescriptor::new(Arc::clone(&schema));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_data_page_size_limit(1024)
            .set_write_batch_size(64)
            .build();
        let mut out = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut out, schema, Arc::new(properties)).unwrap();
        let rows = columns.first().map_or(0, |c| match c {
            Values::Long(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Double(v) => v.len(),
        });
        let mut start = 0;
        while start < rows {
            let end = (start + group_rows).min(rows);
            let mut group = writer.next_row_group().unwrap();
            for (index, values) in columns.iter().enumerate() {
                let mut column = group.next_column().unwrap().unwrap();
                let optional = descriptor.column(index).max_def_level() > 0;
                macro_rules! write {
                    ($values:expr, $type:ty) => {{
                        let (present, levels) = levels(&$values[start..end]);
                        column.typed::<$type>().write_batch(&present, optional.then_some(&levels[..]), None).unwrap();
                    }};
                }
                match values {
                    Values::Long(v) => write!(v, Int64Type),
                    Values::Int(v) => write!(v, Int32Type),
                    Values::Double(v) => write!(v, DoubleType),
                }
                column.close().unwrap();
            }
            group.close().unwrap();
            start = end;
        }
        writer.close().unwrap();
        out
    }

    /// A track report file as Athena writes it: nullable, lower-case
    /// columns; rows (id, rank, hundredths).
    pub fn track_file(rows: &[(i64, u64, u8)], group_rows: usize) -> Vec<u8> {
        parquet_file(
            "message schema { optional int64 trackid; optional int64 searchrank; optional double searchmodifier; }",
            &[
                Values::Long(rows.iter().map(|r| Some(r.0)).collect()),
                Values::Long(rows.iter().map(|r| Some(r.1 as i64)).collect()),
                Values::Double(rows.iter().map(|r| Some(f64::from(r.2) / 100.0)).collect()),
            ],
            group_rows,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_files::{parquet_file, track_file, Values};
    use super::*;
    use crate::store::{LocalDirStore, ObjectSink};

    const ATHENA_SCHEMA: &str =
        "message schema { optional int64 trackid; optional int64 searchrank; optional double searchmodifier; }";

    async fn store_with(body: Vec<u8>) -> (tempfile::TempDir, LocalDirStore) {
        let (dir, store) = LocalDirStore::in_temp_dir("report-file");
        store.put("out/f", Bytes::from(body), "application/octet-stream").await.unwrap();
        (dir, store)
    }

    /// Every row of the file, read in batches of `batch` through windows of
    /// `window` bytes.
    async fn read_all(body: Vec<u8>, batch: usize, window: u64) -> Result<Vec<ReportRow>, FileReadError> {
        let (_dir, store) = store_with(body).await;
        let file = ReportFile::open(&store, "out/f", ReportKind::Track).await?;
        let mut reader = ReportFileRows::new(file, store.clone(), tokio::runtime::Handle::current());
        reader.window_bytes = window;
        tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            loop {
                let before = rows.len();
                reader.read_batch(&mut rows, before + batch)?;
                if rows.len() < before + batch {
                    return Ok(rows);
                }
            }
        })
        .await
        .unwrap()
    }

    fn sample(rows: u64) -> Vec<(i64, u64, u8)> {
        (1..=rows).map(|rank| (rank as i64 * 7919 - 100_000, rank, 100 - (rank * 100 / (rows + 1)) as u8)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_read_the_same_across_row_groups_pages_windows_and_batches() {
        let rows = sample(10_000);
        let expected: Vec<ReportRow> =
            rows.iter().map(|&(id, rank, hundredths)| ReportRow { id, rank, hundredths }).collect();
        for (group_rows, batch, window) in
            [(3_000, 1, 4096), (3_000, 7, 100), (10_000, 4096, WINDOW_BYTES), (999, 64, 1)]
        {
            let read = read_all(track_file(&rows, group_rows), batch, window).await.unwrap();
            assert_eq!(read, expected, "row groups of {group_rows}, batches of {batch}, windows of {window}");
        }
        // The contract's names and required columns read the same.
        let contract = parquet_file(
            "message schema { required int64 searchRank; required int64 trackId; required double searchModifier; }",
            &[
                Values::Long(rows.iter().map(|r| Some(r.1 as i64)).collect()),
                Values::Long(rows.iter().map(|r| Some(r.0)).collect()),
                Values::Double(rows.iter().map(|r| Some(f64::from(r.2) / 100.0)).collect()),
            ],
            4_000,
        );
        assert_eq!(read_all(contract, 512, 4096).await.unwrap(), expected);
        // A file without rows has none.
        assert_eq!(read_all(track_file(&[], 10), 10, WINDOW_BYTES).await.unwrap(), vec![]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_null_a_negative_rank_or_a_bad_modifier_names_its_row() {
        let n = 5_000;
        let ids = || (1..=n).map(Some).collect::<Vec<Option<i64>>>();
        let ranks = || (1..=n).map(Some).collect::<Vec<Option<i64>>>();
        let modifiers = || vec![Some(0.5); n as usize];
        let mut with_null = ranks();
        with_null[3_456] = None;
        let mut negative = ranks();
        negative[4_999] = Some(-4);
        let mut odd = modifiers();
        odd[0] = Some(0.123);
        for (columns, row, expected) in [
            ([Values::Long(ids()), Values::Long(with_null), Values::Double(modifiers())], 3_457, "searchRank is null"),
            ([Values::Long(ids()), Values::Long(negative), Values::Double(modifiers())], 5_000, "searchRank is -4"),
            ([Values::Long(ids()), Values::Long(ranks()), Values::Double(odd)], 1, "searchModifier is 0.123"),
        ] {
            let error = read_all(parquet_file(ATHENA_SCHEMA, &columns, 2_000), 300, 4096).await.unwrap_err();
            assert!(matches!(&error, FileReadError::Row { place, .. } if place.row == row), "{error}");
            assert!(error.to_string().contains(&format!("out/f, row {row}: {expected}")), "{error}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn columns_renamed_missing_repeated_extra_or_mistyped_are_named_with_the_file() {
        let long = || Values::Long(vec![Some(1)]);
        let double = || Values::Double(vec![Some(1.0)]);
        for (schema, columns, expected) in [
            (
                "message m { optional int64 trackid; optional int64 search_rank; optional double searchmodifier; }",
                vec![long(), long(), double()],
                "column \"search_rank\" is not one of the report's columns",
            ),
            (
                "message m { optional int64 trackid; optional int64 searchrank; }",
                vec![long(), long()],
                "column searchModifier is missing; the file has columns [trackid, searchrank]",
            ),
            (
                "message m { optional int64 trackid; optional int64 trackId; optional int64 searchrank; \
                 optional double searchmodifier; }",
                vec![long(), long(), long(), double()],
                "column trackId appears twice (trackid and trackId)",
            ),
            (
                "message m { optional int64 trackid; optional int64 searchrank; optional double searchmodifier; \
                 optional int64 plays; }",
                vec![long(), long(), double(), long()],
                "column \"plays\" is not one of the report's columns",
            ),
            (
                "message m { optional int64 trackid; optional int32 searchrank; optional double searchmodifier; }",
                vec![long(), Values::Int(vec![Some(1)]), double()],
                "column \"searchrank\" is INT32, expected INT64",
            ),
            (
                "message m { optional int64 artistid; optional int64 searchrank; optional double searchmodifier; }",
                vec![long(), long(), double()],
                "column \"artistid\" is not one of the report's columns",
            ),
        ] {
            let error = read_all(parquet_file(schema, &columns, 10), 10, 4096).await.unwrap_err();
            assert!(matches!(error, FileReadError::Columns { .. }), "{error}");
            let text = error.to_string();
            assert!(text.contains("out/f: ") && text.contains(expected), "{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_cut_short_or_not_parquet_is_unreadable_and_named() {
        let body = track_file(&sample(5_000), 1_000);
        for cut in [body[..body.len() / 2].to_vec(), body[..body.len() - 1].to_vec(), b"{\"trackid\":1}\n".to_vec()] {
            let error = read_all(cut, 100, 4096).await.unwrap_err();
            assert!(matches!(&error, FileReadError::Unreadable { file, .. } if file.ends_with("out/f")), "{error}");
            assert!(error.to_string().contains("truncated or damaged"), "{error}");
        }
        // A damaged page (its bytes overwritten) is named with its row group.
        let mut damaged = body.clone();
        let middle = damaged.len() / 3;
        damaged[middle..middle + 400].fill(0xff);
        match read_all(damaged, 100, 4096).await {
            Err(FileReadError::Damaged { file, .. }) => assert!(file.ends_with("out/f")),
            // Bytes that still decode give rows the merge refuses instead.
            Err(FileReadError::Row { .. }) | Ok(_) => {}
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn every_hundredth_and_nothing_else_is_a_modifier() {
        for hundredths in 0..=100u8 {
            assert_eq!(modifier_hundredths(f64::from(hundredths) / 100.0), Some(hundredths));
        }
        for other in [0.123, 1.01, -0.01, f64::NAN, f64::INFINITY, 0.5 + f64::EPSILON] {
            assert_eq!(modifier_hundredths(other), None, "{other}");
        }
    }

    #[test]
    fn data_manifests_list_one_uri_a_line() {
        let text = "s3://b/athena-results/1/a/track_popularity/q_1\n\"s3://b/x/q_2\"\r\n\n";
        assert_eq!(parse_data_manifest(text), vec!["s3://b/athena-results/1/a/track_popularity/q_1", "s3://b/x/q_2"]);
    }
}
