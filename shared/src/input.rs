//! Reads the ranking inputs of docs/design.md, "Inputs": decodes named INT64 columns of one
//! Parquet row group straight into contiguous vectors (no Arrow arrays, no
//! per-row allocation), and finds the catalogue and the plays partitions of a
//! look-back window in a store.
//!
//! It validates what it reads — column presence and type, nulls, folder names
//! — and every error names the object, and the row group and column where
//! they apply. It reads what Athena and Glue write as well as what Spark and
//! DuckDB write: column names match ignoring ASCII case when no column has
//! the exact name (Athena writes `trackid`), and data objects are `*.parquet`
//! or names without an extension (Athena's UNLOAD and CTAS name them after
//! the query id). It does not interpret values (that is the ranking's job).
//! [`ParquetObject`] reads one object a row group at a time, large objects
//! by ranged GETs (`parquet_object.rs`).

use std::fmt;

use bytes::Bytes;
use chrono::NaiveDate;
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::DataType;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};

use crate::store::{ObjectEntry, ObjectStore, StoreError};

mod parquet_object;

pub(crate) use parquet_object::{chunk_span, read_footer};
pub use parquet_object::{ParquetObject, RowGroupBytes, ROW_GROUPS_IN_FLIGHT, WHOLE_READ_MAX_BYTES};

pub const CATALOGUE_PREFIX: &str = "catalogue/";
pub const PLAYS_PREFIX: &str = "plays/";
pub const CATALOGUE_COLUMNS: [&str; 3] = ["trackId", "masterArtistId", "productId"];
pub const PLAYS_COLUMNS: [&str; 2] = ["trackId", "plays"];

/// Where in the input a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPlace {
    pub file: String,
    pub row_group: Option<usize>,
    pub column: Option<String>,
}

impl fmt::Display for InputPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(row_group) = self.row_group {
            write!(f, ", row group {row_group}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column {column}")?;
        }
        Ok(())
    }
}

/// A problem with the input data. Messages say what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{place}: not a readable Parquet file ({detail}); rewrite or remove it")]
    Unreadable { place: InputPlace, detail: String },
    #[error("{place}: missing column {column}; the file has columns [{found}]")]
    MissingColumn { place: InputPlace, column: String, found: String },
    #[error("{place}: no column is named exactly {column}, and columns [{candidates}] all match it ignoring case; rename all but one")]
    AmbiguousColumn { place: InputPlace, column: String, candidates: String },
    #[error("{place}: has type {found}, expected INT64")]
    WrongType { place: InputPlace, found: String },
    #[error("{place}: column is repeated (a list); expected one INT64 value per row")]
    Repeated { place: InputPlace },
    #[error("{place}: {nulls} null value(s); every row needs a value")]
    Nulls { place: InputPlace, nulls: usize },
    #[error("{place}: could not decode ({detail})")]
    Decode { place: InputPlace, detail: String },
    #[error("{place}: negative plays {plays} for trackId {track_id}")]
    NegativePlays { place: InputPlace, track_id: i64, plays: i64 },
    #[error("{place}: folder {folder:?} is not named date=YYYY-MM-DD; plays must be partitioned by UTC day")]
    BadPlaysFolder { place: InputPlace, folder: String },
    #[error("{location}: no catalogue files (catalogue/*.parquet, or Parquet objects without an extension); the catalogue must list every track")]
    NoCatalogue { location: String },
    #[error("the catalogue ({files}) has no rows; the catalogue must list every track")]
    EmptyCatalogue { files: String },
    #[error("duplicate trackId {track_id} in the catalogue: in {first} and {second}")]
    DuplicateTrack { track_id: i64, first: String, second: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decodes `columns` (in that order) of row group `row_group` of a Parquet
/// file held in memory. INT32 columns are widened; any other type, a missing
/// column, or a null is an error naming the place.
pub fn read_int64_columns(
    file: &str,
    bytes: Bytes,
    row_group: usize,
    columns: &[&str],
) -> Result<Vec<Vec<i64>>, InputError> {
    let mut decoded = vec![Vec::new(); columns.len()];
    read_int64_columns_into(file, bytes, row_group, columns, &mut decoded)?;
    Ok(decoded)
}

/// Like [`read_int64_columns`], into caller-owned vectors (cleared first),
/// so a decoding thread reuses its buffers from one row group to the next
/// instead of faulting in fresh memory for each.
pub fn read_int64_columns_into(
    file: &str,
    bytes: Bytes,
    row_group: usize,
    columns: &[&str],
    decoded: &mut [Vec<i64>],
) -> Result<(), InputError> {
    assert_eq!(columns.len(), decoded.len());
    let place = |column: Option<&str>| InputPlace {
        file: file.to_owned(),
        row_group: Some(row_group),
        column: column.map(str::to_owned),
    };
    let reader = open(file, bytes)?;
    let column_indices = locate_columns(file, reader.metadata(), columns)?;
    let group = reader
        .get_row_group(row_group)
        .map_err(|e| InputError::Decode { place: place(None), detail: e.to_string() })?;
    decode_row_group(group.as_ref(), &column_indices, decoded, place)
}

/// Decodes the columns at `indices` of one row group into `decoded`, each
/// vector cleared first; a null or an undecodable page is an error naming
/// its place, with the column's name as the file spells it (`trackid` in
/// Athena's output). Shared by whole-file and ranged reads.
pub(crate) fn decode_row_group(
    group: &dyn RowGroupReader,
    indices: &[usize],
    decoded: &mut [Vec<i64>],
    place: impl Fn(Option<&str>) -> InputPlace,
) -> Result<(), InputError> {
    let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
    for (&index, values) in indices.iter().zip(decoded.iter_mut()) {
        let name = group.metadata().column(index).column_descr().name();
        let column_reader = group
            .get_column_reader(index)
            .map_err(|e| InputError::Decode { place: place(Some(name)), detail: e.to_string() })?;
        values.clear();
        decode_column(column_reader, rows, values).map_err(|problem| match problem {
            ColumnProblem::Nulls(nulls) => InputError::Nulls { place: place(Some(name)), nulls },
            ColumnProblem::Decode(detail) => InputError::Decode { place: place(Some(name)), detail },
        })?;
    }
    Ok(())
}

/// The number of row groups of a Parquet file, after checking that it has
/// the named columns with usable types.
pub fn inspect(file: &str, bytes: Bytes, columns: &[&str]) -> Result<usize, InputError> {
    let reader = open(file, bytes)?;
    locate_columns(file, reader.metadata(), columns)?;
    Ok(reader.num_row_groups())
}

fn open(file: &str, bytes: Bytes) -> Result<SerializedFileReader<Bytes>, InputError> {
    SerializedFileReader::new(bytes).map_err(|e| InputError::Unreadable {
        place: InputPlace { file: file.to_owned(), row_group: None, column: None },
        detail: e.to_string(),
    })
}

fn locate_columns(file: &str, metadata: &ParquetMetaData, columns: &[&str]) -> Result<Vec<usize>, InputError> {
    let schema = metadata.file_metadata().schema_descr();
    let place = |column: &str| InputPlace { file: file.to_owned(), row_group: None, column: Some(column.to_owned()) };
    columns
        .iter()
        .map(|&name| {
            let index = match find_column(schema.columns().iter().map(|c| c.path().parts()), name) {
                ColumnMatch::Found(index) => index,
                ColumnMatch::Missing => {
                    let found = schema.columns().iter().map(|c| c.path().string()).collect::<Vec<_>>().join(", ");
                    return Err(InputError::MissingColumn {
                        place: place(name).without_column(),
                        column: name.to_owned(),
                        found,
                    });
                }
                ColumnMatch::Ambiguous(indices) => {
                    let candidates =
                        indices.iter().map(|&i| schema.column(i).path().string()).collect::<Vec<_>>().join(", ");
                    return Err(InputError::AmbiguousColumn {
                        place: place(name).without_column(),
                        column: name.to_owned(),
                        candidates,
                    });
                }
            };
            let descriptor = schema.column(index);
            // From here on the column is named as the file spells it.
            let name = descriptor.name();
            if descriptor.max_rep_level() > 0 {
                return Err(InputError::Repeated { place: place(name) });
            }
            match descriptor.physical_type() {
                PhysicalType::INT64 | PhysicalType::INT32 => Ok(index),
                other => {
                    let logical = descriptor.logical_type_ref().map(|t| format!(" ({t:?})")).unwrap_or_default();
                    Err(InputError::WrongType { place: place(name), found: format!("{other}{logical}") })
                }
            }
        })
        .collect()
}

enum ColumnMatch {
    Found(usize),
    Missing,
    Ambiguous(Vec<usize>),
}

/// The top-level column named `name` among `paths` (each a leaf column's
/// path): the one of exactly that name, else the only one whose name equals
/// it ignoring ASCII case (Athena and Glue lower-case every column name).
fn find_column<'a>(paths: impl Iterator<Item = &'a [String]> + Clone, name: &str) -> ColumnMatch {
    let top_level = |path: &'a [String]| match path {
        [only] => Some(only.as_str()),
        _ => None,
    };
    if let Some(index) = paths.clone().position(|path| top_level(path) == Some(name)) {
        return ColumnMatch::Found(index);
    }
    let folded: Vec<usize> = paths
        .enumerate()
        .filter(|(_, path)| top_level(path).is_some_and(|column| column.eq_ignore_ascii_case(name)))
        .map(|(index, _)| index)
        .collect();
    match folded.as_slice() {
        [] => ColumnMatch::Missing,
        [index] => ColumnMatch::Found(*index),
        _ => ColumnMatch::Ambiguous(folded),
    }
}

impl InputPlace {
    fn without_column(mut self) -> Self {
        self.column = None;
        self
    }
}

enum ColumnProblem {
    Nulls(usize),
    Decode(String),
}

fn decode_column(column: ColumnReader, rows: usize, values: &mut Vec<i64>) -> Result<(), ColumnProblem> {
    match column {
        ColumnReader::Int64ColumnReader(reader) => read_whole_column(reader, rows, values),
        ColumnReader::Int32ColumnReader(reader) => {
            let mut narrow = Vec::new();
            read_whole_column(reader, rows, &mut narrow)?;
            values.extend(narrow.into_iter().map(i64::from));
            Ok(())
        }
        _ => Err(ColumnProblem::Decode("unexpected physical type".into())),
    }
}

/// Appends all `rows` values of one column chunk, which must have no nulls.
fn read_whole_column<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    rows: usize,
    values: &mut Vec<T::T>,
) -> Result<(), ColumnProblem> {
    values.reserve(rows);
    let mut definition_levels = Vec::new();
    let mut records = 0;
    while records < rows {
        let (read, _, _) = reader
            .read_records(rows - records, Some(&mut definition_levels), None, values)
            .map_err(|e| ColumnProblem::Decode(e.to_string()))?;
        if read == 0 {
            return Err(ColumnProblem::Decode(format!("ended after {records} of {rows} rows")));
        }
        records += read;
    }
    check_no_nulls(rows, values.len())
}

fn check_no_nulls(rows: usize, values: usize) -> Result<(), ColumnProblem> {
    if values < rows {
        Err(ColumnProblem::Nulls(rows - values))
    } else {
        Ok(())
    }
}

/// A Parquet object of the input with what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub key: String,
    pub size: u64,
}

/// The catalogue's data objects (`catalogue/*.parquet`, or named without an
/// extension as Athena names them), sorted by key.
pub async fn find_catalogue<S: ObjectStore>(store: &S) -> Result<Vec<InputFile>, InputError> {
    let files: Vec<InputFile> = store
        .list(CATALOGUE_PREFIX)
        .await?
        .into_iter()
        .filter(|entry| is_parquet_data_file(entry, &entry.key[CATALOGUE_PREFIX.len()..]))
        .map(|ObjectEntry { key, size, .. }| InputFile { key, size })
        .collect();
    if files.is_empty() {
        return Err(InputError::NoCatalogue { location: store.describe(CATALOGUE_PREFIX) });
    }
    Ok(files)
}

/// The plays files of the given days, grouped by day (days without files are
/// absent). Every folder under `plays/` must be named `date=YYYY-MM-DD`, in
/// the window or not: a misnamed folder would otherwise be silently ignored.
/// Hidden folders (`_temporary/`, `.hive-staging/`: a writer's work in
/// progress) and EMR's `date=…_$folder$` markers are skipped.
pub async fn find_plays<S: ObjectStore>(
    store: &S,
    days: &[NaiveDate],
) -> Result<Vec<(NaiveDate, Vec<InputFile>)>, InputError> {
    let mut by_day: Vec<(NaiveDate, Vec<InputFile>)> = days.iter().map(|&d| (d, Vec::new())).collect();
    for entry in store.list(PLAYS_PREFIX).await? {
        let relative = &entry.key[PLAYS_PREFIX.len()..];
        let Some((folder, below)) = relative.split_once('/') else {
            if is_hidden(relative) || relative.is_empty() || relative.ends_with(FOLDER_MARKER_SUFFIX) {
                continue;
            }
            return Err(InputError::BadPlaysFolder {
                place: InputPlace { file: store.describe(&entry.key), row_group: None, column: None },
                folder: String::new(),
            });
        };
        if is_hidden(folder) {
            continue;
        }
        let Some(day) = parse_date_folder(folder) else {
            return Err(InputError::BadPlaysFolder {
                place: InputPlace { file: store.describe(&entry.key), row_group: None, column: None },
                folder: folder.to_owned(),
            });
        };
        if !is_parquet_data_file(&entry, below) {
            continue;
        }
        if let Some((_, files)) = by_day.iter_mut().find(|(d, _)| *d == day) {
            files.push(InputFile { key: entry.key, size: entry.size });
        }
    }
    by_day.retain(|(_, files)| !files.is_empty());
    Ok(by_day)
}

fn parse_date_folder(folder: &str) -> Option<NaiveDate> {
    let date = folder.strip_prefix("date=")?;
    if date.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// The suffix of the empty objects EMR (s3n) writes for a folder.
const FOLDER_MARKER_SUFFIX: &str = "_$folder$";

/// A data object, given its key and its path `below` the data folder
/// (`catalogue/`, `plays/date=…/`): `*.parquet` (Spark, Glue, DuckDB), or a
/// non-empty object named without an extension (Athena's UNLOAD and CTAS
/// write `<query id>_<uuid>`). Not data: anything in or under a hidden
/// folder or named hidden (`_SUCCESS`, `.crc`, `_temporary/…`, Hadoop's and
/// Spark's convention), folder markers (keys ending in `/`, empty objects
/// such as EMR's `…_$folder$`) and files of another format (`notes.csv`). A
/// non-empty extension-less object that is not Parquet fails the run with
/// an error naming it, rather than being skipped.
fn is_parquet_data_file(entry: &ObjectEntry, below: &str) -> bool {
    let name = below.rsplit('/').next().unwrap_or("");
    let extension_less = !name.contains('.') && entry.size > 0;
    !name.is_empty() && !below.split('/').any(is_hidden) && (name.ends_with(".parquet") || extension_less)
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_folders_must_be_exactly_iso_dates() {
        assert_eq!(parse_date_folder("date=2026-11-02"), NaiveDate::from_ymd_opt(2026, 11, 2));
        for bad in ["date=2026-11-2", "day=2026-11-02", "date=2026-13-01", "2026-11-02", "date=20261102"] {
            assert_eq!(parse_date_folder(bad), None, "{bad}");
        }
    }

    #[test]
    fn marker_files_are_not_data() {
        let data = |below: &str| {
            is_parquet_data_file(&ObjectEntry { key: format!("catalogue/{below}"), size: 1, version: None }, below)
        };
        assert!(data("part-0.parquet"));
        assert!(!data("_SUCCESS"));
        assert!(!data(".part-0.parquet.crc"));
        assert!(!data("notes.csv"));
        assert!(!data(""));
        assert!(!data("sub/"));
        // A writer's work in progress, in a hidden folder at any depth.
        assert!(!data("_temporary/0/_temporary/attempt_1/part-00000.parquet"));
        assert!(!data("_temporary/0/part-00000"));
        assert!(!data("sub/.hive-staging/part-00000"));
        assert!(data("sub/part-00000.parquet"));
        // Empty extension-less objects are folder markers (EMR's `x_$folder$`).
        let empty = |below: &str| {
            is_parquet_data_file(&ObjectEntry { key: format!("catalogue/{below}"), size: 0, version: None }, below)
        };
        assert!(!empty("sub_$folder$"));
        assert!(!empty("sub"));
        // What Athena's UNLOAD writes: the query id and a uuid, no extension.
        assert!(data("20261119_030000_00012_abcde_1f4c0bd3-1b8b-4f2e-9c8e-1a2b3c4d5e6f"));
    }

    fn paths(names: &[&[&str]]) -> Vec<Vec<String>> {
        names.iter().map(|path| path.iter().map(|part| part.to_string()).collect()).collect()
    }

    fn find(columns: &[Vec<String>], name: &str) -> ColumnMatch {
        find_column(columns.iter().map(Vec::as_slice), name)
    }

    #[test]
    fn columns_match_exactly_first_then_ignoring_case() {
        let athena = paths(&[&["trackid"], &["plays"]]);
        assert!(matches!(find(&athena, "trackId"), ColumnMatch::Found(0)));
        assert!(matches!(find(&athena, "plays"), ColumnMatch::Found(1)));
        assert!(matches!(find(&athena, "productId"), ColumnMatch::Missing));
        // The exact name wins over a case-folded one.
        let both = paths(&[&["TRACKID"], &["trackId"], &["trackid"]]);
        assert!(matches!(find(&both, "trackId"), ColumnMatch::Found(1)));
        // Two case-folded matches and no exact one: refuse to guess.
        let two = paths(&[&["TRACKID"], &["trackid"]]);
        assert!(matches!(find(&two, "trackId"), ColumnMatch::Ambiguous(ref i) if i == &[0, 1]));
        // A nested field of that name is not the column.
        let nested = paths(&[&["meta", "trackId"]]);
        assert!(matches!(find(&nested, "trackId"), ColumnMatch::Missing));
    }
}
