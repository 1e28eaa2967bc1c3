//! Reading what one UNLOAD wrote: the data manifest Athena keeps beside its
//! query results (the S3 URIs of the files the query wrote), the files it
//! lists, and their rows — JSON lines, gzip-compressed or not, with the
//! column names Athena gives them (lower case: `trackid`, `searchrank`,
//! `searchmodifier`).
//!
//! A file is read as a stream (one chunk of the object, the decoder's window
//! and one line at a time), so memory does not grow with the file. Every
//! problem names the file and the row (the 1-based line), and nothing here
//! guesses: a renamed or missing column, a value of the wrong kind, a
//! modifier that is not a whole number of hundredths, a file that ends
//! inside a row or inside its gzip stream are all errors.

use std::io::{self, BufRead, Read};

use bytes::Bytes;

use crate::domain::ReportKind;
use crate::store::{ObjectReader, ObjectStore, StoreError};

/// Where in Athena's output a row is: the file (as the store describes it)
/// and the 1-based row (line) in it.
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("not a JSON object of numbers ({0})")]
    Syntax(String),
    #[error(
        "column {found:?} is not one of the report's columns ({expected}): a column renamed in the query, or \
         another query's output"
    )]
    UnknownColumn { found: String, expected: String },
    #[error("column {0} is missing")]
    MissingColumn(&'static str),
    #[error("column {column} appears twice")]
    RepeatedColumn { column: &'static str },
    #[error("{column} is {value:?}, not a whole number in range")]
    NotAnInteger { column: &'static str, value: String },
    #[error("searchModifier is {0:?}, not a number from 0 to 1 in whole hundredths")]
    BadModifier(String),
    #[error("the file ends inside this row (no end of line): the file is truncated")]
    UnfinishedRow,
}

/// One row of a report as Athena wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRow {
    pub id: i64,
    pub rank: u64,
    /// `searchModifier` in hundredths (0..=100).
    pub hundredths: u8,
}

/// The names a report's columns may have: the contract's (`trackId`) or
/// Athena's lower-case one (`trackid`); nothing else.
#[derive(Debug, Clone)]
pub struct ReportColumns {
    id_field: &'static str,
    /// Each column's two accepted names, as bytes: the contract's, then
    /// Athena's lower-case one.
    names: [[Vec<u8>; 2]; 3],
    /// The text around the values of a line as UNLOAD writes it (lower-case
    /// names, in the query's order, no spaces): `{"trackid":`,
    /// `,"searchrank":`, `,"searchmodifier":`, `}`.
    athena_layout: [Vec<u8>; 4],
}

const RANK_FIELD: &str = "searchRank";
const MODIFIER_FIELD: &str = "searchModifier";

impl ReportColumns {
    pub fn of(kind: ReportKind) -> Self {
        let both = |field: &str| [field.as_bytes().to_vec(), field.to_ascii_lowercase().into_bytes()];
        let lower = |field: &str| field.to_ascii_lowercase();
        let athena_layout = [
            format!("{{\"{}\":", lower(kind.id_field())).into_bytes(),
            format!(",\"{}\":", lower(RANK_FIELD)).into_bytes(),
            format!(",\"{}\":", lower(MODIFIER_FIELD)).into_bytes(),
            b"}".to_vec(),
        ];
        Self {
            id_field: kind.id_field(),
            names: [both(kind.id_field()), both(RANK_FIELD), both(MODIFIER_FIELD)],
            athena_layout,
        }
    }

    /// Which column `name` is: 0 the id, 1 the rank, 2 the modifier.
    fn column(&self, name: &[u8]) -> Option<usize> {
        self.names.iter().position(|[contract, athena]| name == athena.as_slice() || name == contract.as_slice())
    }

    fn expected(&self) -> String {
        format!(
            "{} or {}, searchRank or searchrank, searchModifier or searchmodifier",
            self.id_field,
            self.id_field.to_ascii_lowercase()
        )
    }

    /// A line exactly as UNLOAD writes it, read without the general
    /// reader: this runs for every row of a report. `None` for anything
    /// else (other spacing, order or names, a bad value), which the general
    /// reader then reads or names.
    fn parse_athena_layout(&self, line: &[u8]) -> Option<ReportRow> {
        let [open, rank_key, modifier_key, close] = &self.athena_layout;
        let rest = line.strip_prefix(open.as_slice())?.strip_suffix(close.as_slice())?;
        let (id, rest) = split_number(rest);
        let rest = rest.strip_prefix(rank_key.as_slice())?;
        let (rank, rest) = split_number(rest);
        let modifier = rest.strip_prefix(modifier_key.as_slice())?;
        Some(ReportRow {
            id: parse_integer(id)?,
            rank: u64::try_from(parse_integer(rank)?).ok()?,
            hundredths: parse_hundredths(modifier)?,
        })
    }

    /// A line exactly as UNLOAD writes it, at the start of `bytes` and
    /// whole in it: the row and the bytes the line takes with its end of
    /// line. This runs for every row of a report, straight on the
    /// decoder's buffer: ids and ranks of digits alone (at most 18), the
    /// modifier as `0.d`, `0.dd` or `1.0`. `None` for anything else, which
    /// [`parse_line`] then reads or names; every line taken here is read by
    /// it to the same row.
    #[inline]
    fn parse_athena_line(&self, bytes: &[u8]) -> Option<(ReportRow, usize)> {
        let [open, rank_key, modifier_key, _] = &self.athena_layout;
        let at = eat(bytes, 0, open)?;
        let (id, at) = match bytes.get(at) {
            Some(b'-') => digits(bytes, at + 1).map(|(value, at)| (-(value as i64), at))?,
            _ => digits(bytes, at).map(|(value, at)| (value as i64, at))?,
        };
        let at = eat(bytes, at, rank_key)?;
        let (rank, at) = digits(bytes, at)?;
        let at = eat(bytes, at, modifier_key)?;
        let (hundredths, at) = short_hundredths(bytes, at)?;
        match bytes.get(at..at + 2)? {
            [b'}', b'\n'] => Some((ReportRow { id, rank, hundredths }, at + 2)),
            _ => None,
        }
    }

    /// Parses one line: a flat JSON object with exactly the three columns,
    /// in any order, each a number.
    pub fn parse(&self, line: &[u8]) -> Result<ReportRow, RowProblem> {
        if let Some(row) = self.parse_athena_layout(line) {
            return Ok(row);
        }
        let mut values: [Option<&[u8]>; 3] = [None; 3];
        let mut cursor = Cursor { bytes: line, at: 0 };
        cursor.expect(b'{')?;
        cursor.skip_space();
        if cursor.peek() != Some(b'}') {
            loop {
                let key = cursor.string()?;
                cursor.expect(b':')?;
                let value = cursor.number()?;
                let Some(column) = self.column(key) else {
                    return Err(RowProblem::UnknownColumn {
                        found: String::from_utf8_lossy(key).into_owned(),
                        expected: self.expected(),
                    });
                };
                if values[column].replace(value).is_some() {
                    return Err(RowProblem::RepeatedColumn { column: self.name(column) });
                }
                cursor.skip_space();
                match cursor.next() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    _ => return Err(RowProblem::Syntax("expected ',' or '}' after a value".into())),
                }
            }
        } else {
            cursor.next();
        }
        cursor.skip_space();
        if cursor.peek().is_some() {
            return Err(RowProblem::Syntax("text after the object".into()));
        }
        let value = |column: usize| values[column].ok_or(RowProblem::MissingColumn(self.name(column)));
        let (id, rank, modifier) = (value(0)?, value(1)?, value(2)?);
        let id =
            parse_integer(id).ok_or_else(|| RowProblem::NotAnInteger { column: self.id_field, value: text(id) })?;
        let rank = parse_integer(rank)
            .and_then(|r| u64::try_from(r).ok())
            .ok_or_else(|| RowProblem::NotAnInteger { column: RANK_FIELD, value: text(rank) })?;
        let hundredths = parse_hundredths(modifier).ok_or_else(|| RowProblem::BadModifier(text(modifier)))?;
        Ok(ReportRow { id, rank, hundredths })
    }

    fn name(&self, column: usize) -> &'static str {
        [self.id_field, RANK_FIELD, MODIFIER_FIELD][column]
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where `expected` ends when `bytes` has it at `at`. Compared a word at a
/// time: the names are short, and a call to memcmp per column per row
/// showed in profiles.
#[inline(always)]
fn eat(bytes: &[u8], at: usize, expected: &[u8]) -> Option<usize> {
    let end = at.checked_add(expected.len())?;
    let found = bytes.get(at..end)?;
    let word = |bytes: &[u8], at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let mut i = 0;
    while i + 8 <= expected.len() {
        if word(found, i) != word(expected, i) {
            return None;
        }
        i += 8;
    }
    while i < expected.len() {
        if found[i] != expected[i] {
            return None;
        }
        i += 1;
    }
    Some(end)
}

/// The digits at `at` (1 to 18 of them, so no overflow) as a number, and
/// where they end.
#[inline(always)]
fn digits(bytes: &[u8], start: usize) -> Option<(u64, usize)> {
    let mut at = start;
    let mut value: u64 = 0;
    while let Some(&byte) = bytes.get(at) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
        at += 1;
    }
    (at > start && at - start <= 18).then_some((value, at))
}

/// A modifier as UNLOAD prints the usual ones (`0.d`, `0.dd` without a
/// trailing zero, `1.0`) at `at`, and where it ends; `None` for any other
/// spelling, which [`parse_hundredths`] reads.
#[inline(always)]
fn short_hundredths(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    match *bytes.get(at..at + 4)? {
        [b'0', b'.', tenths, hundredths] if tenths.is_ascii_digit() => {
            let tenths = (tenths - b'0') * 10;
            if !hundredths.is_ascii_digit() {
                Some((tenths, at + 3))
            } else if hundredths != b'0' {
                Some((tenths + (hundredths - b'0'), at + 4))
            } else {
                None
            }
        }
        [b'1', b'.', b'0', _] => Some((100, at + 3)),
        _ => None,
    }
}

/// A whole number written as JSON writes one (`-12`, `12`; also `12.0`, as
/// some writers print a BIGINT that passed through a DOUBLE). Digits are
/// read by hand: this runs for every id and rank of a report.
fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_suffix(b".0").unwrap_or(bytes);
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        value = value.checked_mul(10)?;
        value = if negative { value.checked_sub(digit)? } else { value.checked_add(digit)? };
    }
    Some(value)
}

/// A modifier `k / 100` for k in 0..=100, as any writer prints that double
/// (`0.27`, `1.0`, `0`, `7.0E-2`): the exact f64 of `k as f64 / 100.0`. The
/// usual spellings (`0.d`, `0.dd`, `1.0`) are read by hand; anything else
/// through f64 and checked.
fn parse_hundredths(bytes: &[u8]) -> Option<u8> {
    let fast = match bytes {
        [b'0', b'.', tenths] if tenths.is_ascii_digit() => Some((tenths - b'0') * 10),
        [b'0', b'.', tenths, hundredths]
            if tenths.is_ascii_digit() && hundredths.is_ascii_digit() && *hundredths != b'0' =>
        {
            Some((tenths - b'0') * 10 + (hundredths - b'0'))
        }
        [b'1', b'.', b'0'] => Some(100),
        _ => None,
    };
    if fast.is_some() {
        return fast;
    }
    let value: f64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    let hundredths = (value * 100.0).round();
    if !(0.0..=100.0).contains(&hundredths) || hundredths / 100.0 != value {
        return None;
    }
    Some(hundredths as u8)
}

/// The number at the start of `bytes` and what follows it.
fn split_number(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end =
        bytes.iter().position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')).unwrap_or(bytes.len());
    bytes.split_at(end)
}

/// A tiny reader of one flat JSON object: keys without escapes, numbers as
/// values. Enough for UNLOAD's lines, and strict about the rest.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), RowProblem> {
        self.skip_space();
        match self.next() {
            Some(found) if found == byte => Ok(()),
            Some(found) => Err(RowProblem::Syntax(format!("expected '{}', found '{}'", byte as char, found as char))),
            None => Err(RowProblem::Syntax(format!("expected '{}', found the end of the line", byte as char))),
        }
    }

    fn string(&mut self) -> Result<&'a [u8], RowProblem> {
        self.expect(b'"')?;
        let start = self.at;
        while let Some(byte) = self.next() {
            match byte {
                b'"' => return Ok(&self.bytes[start..self.at - 1]),
                b'\\' => return Err(RowProblem::Syntax("escaped characters in a column name".into())),
                _ => {}
            }
        }
        Err(RowProblem::Syntax("unterminated column name".into()))
    }

    fn number(&mut self) -> Result<&'a [u8], RowProblem> {
        self.skip_space();
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.at += 1;
        }
        if start == self.at {
            let rest = String::from_utf8_lossy(&self.bytes[start..]).chars().take(20).collect::<String>();
            return Err(RowProblem::Syntax(format!("expected a number, found {rest:?}")));
        }
        Ok(&self.bytes[start..self.at])
    }
}

/// The S3 URIs a data manifest lists, in its order (Athena writes one per
/// line; quotes and a trailing carriage return are tolerated).
pub fn parse_data_manifest(text: &str) -> Vec<String> {
    text.lines().map(|line| line.trim().trim_matches('"').to_owned()).filter(|line| !line.is_empty()).collect()
}

/// An [`ObjectReader`] as a blocking [`Read`], for a decoder running on a
/// thread of its own: each chunk is awaited on the runtime `handle`.
pub struct BlockingObjectRead<R: ObjectReader> {
    reader: R,
    handle: tokio::runtime::Handle,
    chunk: Bytes,
    done: bool,
}

impl<R: ObjectReader> BlockingObjectRead<R> {
    pub fn new(reader: R, handle: tokio::runtime::Handle) -> Self {
        Self { reader, handle, chunk: Bytes::new(), done: false }
    }
}

impl<R: ObjectReader> BlockingObjectRead<R> {
    /// Waits for the next chunk when the current one is used up.
    fn load(&mut self) -> io::Result<()> {
        while self.chunk.is_empty() && !self.done {
            match self.handle.block_on(self.reader.next_chunk()) {
                Ok(Some(chunk)) => self.chunk = chunk,
                Ok(None) => self.done = true,
                Err(error) => return Err(io::Error::other(StoreReadFailed(error))),
            }
        }
        Ok(())
    }
}

impl<R: ObjectReader> Read for BlockingObjectRead<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.load()?;
        let taken = out.len().min(self.chunk.len());
        out[..taken].copy_from_slice(&self.chunk[..taken]);
        let _ = self.chunk.split_to(taken);
        Ok(taken)
    }
}

/// The store's chunks are the buffer: the decompressor reads them where
/// they are, without a copy.
impl<R: ObjectReader> BufRead for BlockingObjectRead<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.load()?;
        Ok(&self.chunk)
    }

    fn consume(&mut self, amount: usize) {
        let _ = self.chunk.split_to(amount);
    }
}

/// A store failure carried through `io::Error` by [`BlockingObjectRead`],
/// so the reader can tell it from a decoding problem.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreReadFailed(pub StoreError);

/// Why the rows of a file stopped: the file's fault, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    #[error("{place}: {problem}")]
    Row { place: RowPlace, problem: RowProblem },
    #[error("{file}: after row {rows}, the file cannot be decompressed ({detail}): it is truncated or damaged")]
    Damaged { file: String, rows: u64, detail: String },
    #[error("reading {file} failed after row {rows}: {source}")]
    Store {
        file: String,
        rows: u64,
        #[source]
        source: StoreError,
    },
}

/// The rows of one file, read line by line (decompressed when the file
/// starts with gzip's magic bytes).
pub struct ReportFileRows {
    lines: Box<dyn BufRead + Send>,
    columns: ReportColumns,
    file: String,
    rows: u64,
    line: Vec<u8>,
}

/// Bytes buffered between the (decompressed) stream and the line reader.
const LINE_READER_BYTES: usize = 256 * 1024;

impl ReportFileRows {
    /// Reads `input`, the bytes of `file`, as rows of a `kind` report.
    pub fn new<R: BufRead + Send + 'static>(
        mut input: R,
        kind: ReportKind,
        file: String,
    ) -> Result<Self, FileReadError> {
        let gzip = match input.fill_buf() {
            Ok(start) => start.starts_with(&[0x1f, 0x8b]),
            Err(error) => return Err(read_error(error, &file, 0)),
        };
        let lines: Box<dyn BufRead + Send> = if gzip {
            Box::new(io::BufReader::with_capacity(LINE_READER_BYTES, flate2::bufread::MultiGzDecoder::new(input)))
        } else {
            Box::new(input)
        };
        Ok(Self { lines, columns: ReportColumns::of(kind), file, rows: 0, line: Vec::with_capacity(128) })
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Appends rows to `rows` until it holds `max` or the file ends (then
    /// it holds fewer). Lines whole in the decoder's buffer are parsed
    /// where they are, one after the other; only one that spans two
    /// buffers is copied. On an error, `rows` keeps the rows before it.
    pub fn read_batch(&mut self, rows: &mut Vec<ReportRow>, max: usize) -> Result<(), FileReadError> {
        while rows.len() < max {
            let buffer = self.lines.fill_buf().map_err(|error| read_error(error, &self.file, self.rows))?;
            if buffer.is_empty() {
                if self.line.is_empty() {
                    return Ok(());
                }
                self.rows += 1;
                return Err(self.row_error(RowProblem::UnfinishedRow));
            }
            if !self.line.is_empty() {
                // The rest of a line begun in the previous buffer.
                match memchr_newline(buffer) {
                    Some(end) => {
                        self.line.extend_from_slice(&buffer[..end]);
                        self.lines.consume(end + 1);
                        self.rows += 1;
                        let parsed = parse_line(&self.columns, &self.line);
                        self.line.clear();
                        rows.push(parsed.map_err(|problem| self.row_error(problem))?);
                    }
                    None => {
                        let length = buffer.len();
                        self.line.extend_from_slice(buffer);
                        self.lines.consume(length);
                    }
                }
                continue;
            }
            let mut at = 0;
            let mut failed = None;
            while rows.len() < max {
                let rest = &buffer[at..];
                if let Some((row, length)) = self.columns.parse_athena_line(rest) {
                    self.rows += 1;
                    rows.push(row);
                    at += length;
                    continue;
                }
                match memchr_newline(rest) {
                    Some(end) => {
                        self.rows += 1;
                        at += end + 1;
                        match parse_line(&self.columns, &rest[..end]) {
                            Ok(row) => rows.push(row),
                            Err(problem) => {
                                failed = Some(problem);
                                break;
                            }
                        }
                    }
                    None => {
                        self.line.extend_from_slice(rest);
                        at = buffer.len();
                        break;
                    }
                }
            }
            self.lines.consume(at);
            if let Some(problem) = failed {
                return Err(self.row_error(problem));
            }
        }
        Ok(())
    }

    fn row_error(&self, problem: RowProblem) -> FileReadError {
        FileReadError::Row { place: RowPlace { file: self.file.clone(), row: self.rows }, problem }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// One line without its end: not blank, then a row.
fn parse_line(columns: &ReportColumns, line: &[u8]) -> Result<ReportRow, RowProblem> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(RowProblem::Syntax("an empty line".into()));
    }
    columns.parse(line)
}

/// A read that failed: the store's failure, or the bytes' (a gzip stream
/// that is cut short or damaged).
fn read_error(error: io::Error, file: &str, rows: u64) -> FileReadError {
    let file = file.to_owned();
    let detail = error.to_string();
    match error.into_inner().map(|inner| inner.downcast::<StoreReadFailed>()) {
        Some(Ok(store)) => FileReadError::Store { file, rows, source: store.0 },
        Some(Err(other)) => FileReadError::Damaged { file, rows, detail: other.to_string() },
        None => FileReadError::Damaged { file, rows, detail },
    }
}

/// The rows of a small file read whole (the run's counts): each line parsed
/// as a JSON object.
pub async fn read_json_lines<S: ObjectStore>(
    store: &S,
    key: &str,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, FileReadError> {
    let file = store.describe(key);
    let body = store.get(key).await.map_err(|source| FileReadError::Store { file: file.clone(), rows: 0, source })?;
    let mut text = Vec::new();
    let read = if body.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut text)
    } else {
        text.extend_from_slice(&body);
        Ok(body.len())
    };
    read.map_err(|e| FileReadError::Damaged { file: file.clone(), rows: 0, detail: e.to_string() })?;
    let mut rows = Vec::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let place = RowPlace { file: file.clone(), row: index as u64 + 1 };
        let row = serde_json::from_slice(line)
            .map_err(|e| FileReadError::Row { place, problem: RowProblem::Syntax(e.to_string()) })?;
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rows_of(bytes: Vec<u8>, kind: ReportKind) -> Result<Vec<ReportRow>, FileReadError> {
        rows_in_batches(io::Cursor::new(bytes), kind, 3)
    }

    fn rows_in_batches<R: BufRead + Send + 'static>(
        input: R,
        kind: ReportKind,
        batch: usize,
    ) -> Result<Vec<ReportRow>, FileReadError> {
        let mut reader = ReportFileRows::new(input, kind, "s3://b/f.gz".into()).unwrap();
        let mut rows = Vec::new();
        loop {
            let before = rows.len();
            reader.read_batch(&mut rows, before + batch)?;
            if rows.len() < before + batch {
                return Ok(rows);
            }
        }
    }

    #[test]
    fn lines_split_across_buffers_and_batches_read_the_same() {
        let text: String = (1..=500u64)
            .map(|rank| {
                let modifier = ["1.0", "0.5", "0.07", "0.1", "7.0E-2", "0.50", "0"][rank as usize % 7];
                let id = rank as i64 * 7919 - 100_000;
                if rank % 11 == 0 {
                    format!("{{ \"searchrank\":{rank}, \"trackid\":{id}, \"searchmodifier\":{modifier} }}\r\n")
                } else {
                    format!("{{\"trackid\":{id},\"searchrank\":{rank},\"searchmodifier\":{modifier}}}\n")
                }
            })
            .collect();
        let expected: Vec<ReportRow> = text
            .lines()
            .map(|line| ReportColumns::of(ReportKind::Track).parse(line.trim_end().as_bytes()).unwrap())
            .collect();
        assert_eq!(expected.len(), 500);
        for (capacity, batch) in [(7, 1), (64, 5), (1000, 64), (1 << 20, 4096)] {
            let input = io::BufReader::with_capacity(capacity, io::Cursor::new(text.clone().into_bytes()));
            assert_eq!(rows_in_batches(input, ReportKind::Track, batch).unwrap(), expected, "{capacity} {batch}");
        }
        assert_eq!(rows_in_batches(io::Cursor::new(gzip(&text)), ReportKind::Track, 7).unwrap(), expected);
    }

    #[test]
    fn the_fast_line_reads_what_the_general_reader_reads() {
        let columns = ReportColumns::of(ReportKind::Track);
        let mut lines = vec![
            "{\"trackid\":-0,\"searchrank\":1,\"searchmodifier\":0.0}".to_owned(),
            "{\"trackid\":123456789012345678,\"searchrank\":999999999999999999,\"searchmodifier\":1.0}".into(),
            "{\"trackid\":-123456789012345678,\"searchrank\":7,\"searchmodifier\":0.99}".into(),
        ];
        for hundredths in 0..=100u8 {
            let modifier = format!("{:?}", f64::from(hundredths) / 100.0);
            lines.push(format!("{{\"trackid\":{hundredths},\"searchrank\":2,\"searchmodifier\":{modifier}}}"));
        }
        for line in &lines {
            let fast = columns.parse_athena_line(format!("{line}\n").as_bytes());
            let (row, length) = fast.unwrap_or_else(|| panic!("{line}"));
            assert_eq!((row, length), (columns.parse(line.as_bytes()).unwrap(), line.len() + 1), "{line}");
        }
        // Lines the fast reader leaves to the general one.
        for line in [
            "{\"trackid\":1234567890123456789,\"searchrank\":1,\"searchmodifier\":1.0}",
            "{\"trackid\":12.0,\"searchrank\":1,\"searchmodifier\":1.0}",
            "{\"trackid\":+1,\"searchrank\":1,\"searchmodifier\":1.0}",
            "{\"trackid\":1,\"searchrank\":-1,\"searchmodifier\":1.0}",
            "{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":0.50}",
            "{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":1.00}",
            "{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":0.5}}",
            "{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":0.5}\r",
            "{\"trackid\":,\"searchrank\":1,\"searchmodifier\":0.5}",
            "{\"trackId\":1,\"searchRank\":1,\"searchModifier\":0.5}",
        ] {
            assert!(columns.parse_athena_line(format!("{line}\n").as_bytes()).is_none(), "{line}");
        }
        // A line not whole in the buffer.
        assert!(columns.parse_athena_line(b"{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":0.5}").is_none());
        assert!(columns.parse_athena_line(b"{\"trackid\":1,\"searchrank\":1,\"searchmo").is_none());
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn athenas_lower_case_rows_and_the_contracts_names_both_parse() {
        let text = "{\"trackid\":42,\"searchrank\":1,\"searchmodifier\":1.0}\n\
                    {\"searchRank\":2,\"trackId\":-7,\"searchModifier\":0.07}\n\
                    { \"trackid\" : 9 , \"searchrank\" : 3 , \"searchmodifier\" : 7.0E-2 }\n\
                    {\"trackid\":10.0,\"searchrank\":4,\"searchmodifier\":0}\n";
        let expected = vec![
            ReportRow { id: 42, rank: 1, hundredths: 100 },
            ReportRow { id: -7, rank: 2, hundredths: 7 },
            ReportRow { id: 9, rank: 3, hundredths: 7 },
            ReportRow { id: 10, rank: 4, hundredths: 0 },
        ];
        assert_eq!(rows_of(text.as_bytes().to_vec(), ReportKind::Track).unwrap(), expected);
        assert_eq!(rows_of(gzip(text), ReportKind::Track).unwrap(), expected);
    }

    fn problem(line: &str, kind: ReportKind) -> RowProblem {
        ReportColumns::of(kind).parse(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_renamed_missing_repeated_or_mistyped_column_is_named() {
        let renamed = problem("{\"trackid\":1,\"search_rank\":1,\"searchmodifier\":1.0}", ReportKind::Track);
        assert!(matches!(&renamed, RowProblem::UnknownColumn { found, .. } if found == "search_rank"), "{renamed}");
        // Another report's id field is not this report's.
        let other = problem("{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":1.0}", ReportKind::Artist);
        assert!(matches!(&other, RowProblem::UnknownColumn { found, .. } if found == "trackid"), "{other}");
        // Mixed case other than the contract's is not Athena's either.
        let shouting = problem("{\"TRACKID\":1,\"searchrank\":1,\"searchmodifier\":1.0}", ReportKind::Track);
        assert!(matches!(shouting, RowProblem::UnknownColumn { .. }));
        assert_eq!(
            problem("{\"trackid\":1,\"searchrank\":1}", ReportKind::Track),
            RowProblem::MissingColumn("searchModifier")
        );
        assert!(matches!(
            problem("{\"trackid\":1,\"trackid\":2,\"searchrank\":1,\"searchmodifier\":1.0}", ReportKind::Track),
            RowProblem::RepeatedColumn { column: "trackId" }
        ));
        assert!(matches!(
            problem("{\"trackid\":1.5,\"searchrank\":1,\"searchmodifier\":1.0}", ReportKind::Track),
            RowProblem::NotAnInteger { column: "trackId", .. }
        ));
        assert!(matches!(
            problem("{\"trackid\":1,\"searchrank\":-1,\"searchmodifier\":1.0}", ReportKind::Track),
            RowProblem::NotAnInteger { column: "searchRank", .. }
        ));
        assert!(matches!(
            problem("{\"trackid\":\"1\",\"searchrank\":1,\"searchmodifier\":1}", ReportKind::Track),
            RowProblem::Syntax(_)
        ));
        for modifier in ["0.123", "1.01", "-0.01", "NaN"] {
            let line = format!("{{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":{modifier}}}");
            assert!(
                matches!(
                    ReportColumns::of(ReportKind::Track).parse(line.as_bytes()),
                    Err(RowProblem::BadModifier(_) | RowProblem::Syntax(_))
                ),
                "{modifier}"
            );
        }
    }

    #[test]
    fn every_hundredth_parses_back_to_itself() {
        for hundredths in 0..=100u8 {
            let text = format!("{:?}", f64::from(hundredths) / 100.0);
            assert_eq!(parse_hundredths(text.as_bytes()), Some(hundredths), "{text}");
        }
    }

    #[test]
    fn a_truncated_file_is_named_with_the_row_it_stopped_in() {
        let text = "{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":1.0}\n{\"trackid\":2,\"searchrank\":2,\"search";
        let error = rows_of(text.as_bytes().to_vec(), ReportKind::Track).unwrap_err();
        assert!(
            matches!(&error, FileReadError::Row { place, problem: RowProblem::UnfinishedRow } if place.row == 2),
            "{error}"
        );
        let mut compressed = gzip(&"{\"trackid\":1,\"searchrank\":1,\"searchmodifier\":1.0}\n".repeat(1000));
        compressed.truncate(compressed.len() / 2);
        let error = rows_of(compressed, ReportKind::Track).unwrap_err();
        assert!(matches!(&error, FileReadError::Damaged { file, .. } if file == "s3://b/f.gz"), "{error}");
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    #[test]
    fn data_manifests_list_one_uri_a_line() {
        let text = "s3://b/athena-results/1/a/track_popularity/q_1.gz\n\"s3://b/x/q_2.gz\"\r\n\n";
        assert_eq!(
            parse_data_manifest(text),
            vec!["s3://b/athena-results/1/a/track_popularity/q_1.gz", "s3://b/x/q_2.gz"]
        );
    }
}
