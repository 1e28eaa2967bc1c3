//! Writing one tab: report items as the Sheets API's cells (an id beyond
//! 2^53 − 1 as text, so no digit is lost), gathered into `batchUpdate`s of
//! at most ~2 MB, the tab's shape request first. A tab small enough for
//! one request is replaced by one atomic `batchUpdate`.

use tracing::warn;

use crate::report_writer::ReportItem;

use super::client::{SheetsClient, SheetsError};
use super::tab_plan::TargetTab;

/// The largest integer a spreadsheet number holds exactly.
const MAX_EXACT_INTEGER: i64 = (1 << 53) - 1;

/// `{"userEnteredValue":{"numberValue":N}}` or `…{"stringValue":"S"}`.
fn push_number(out: &mut String, value: impl itoa::Integer) {
    out.push_str("{\"userEnteredValue\":{\"numberValue\":");
    out.push_str(itoa::Buffer::new().format(value));
    out.push_str("}}");
}

fn push_text(out: &mut String, text: &str) {
    out.push_str("{\"userEnteredValue\":{\"stringValue\":");
    out.push_str(&serde_json::to_string(text).expect("a string serialises"));
    out.push_str("}}");
}

/// One report item as a row: id (text beyond 2^53 − 1), rank, modifier.
fn push_item_row(out: &mut String, item: &ReportItem) {
    out.push_str("{\"values\":[");
    if item.id.unsigned_abs() > MAX_EXACT_INTEGER as u64 {
        push_text(out, itoa::Buffer::new().format(item.id));
    } else {
        push_number(out, item.id);
    }
    out.push(',');
    push_number(out, item.search_rank);
    out.push_str(",{\"userEnteredValue\":{\"numberValue\":");
    out.push_str(&format!("{:?}", item.search_modifier()));
    out.push_str("}}]}");
}

fn push_text_row(out: &mut String, cells: &[&str]) {
    out.push_str("{\"values\":[");
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_text(out, cell);
    }
    out.push_str("]}");
}

/// An `updateCells` request writing `rows` (JSON row texts) from `row_index`.
fn update_cells(sheet_id: i64, row_index: u64, rows: &str) -> String {
    format!(
        "{{\"updateCells\":{{\"start\":{{\"sheetId\":{sheet_id},\"rowIndex\":{row_index},\"columnIndex\":0}},\
         \"rows\":[{rows}],\"fields\":\"userEnteredValue\"}}}}"
    )
}

/// Requests gathered into `batchUpdate`s of at most the client's request
/// size ([`MAX_REQUEST_BYTES`] unless lowered).
pub(super) struct Batches<'c> {
    pub(super) client: &'c SheetsClient,
    pub(super) spreadsheet: &'c str,
    pub(super) limit: usize,
    pub(super) pending: Vec<String>,
    pub(super) bytes: usize,
    pub(super) sent: u32,
    /// Tabs (sheetId, title) the pending batch creates.
    pub(super) adds: Vec<(i64, String)>,
}

impl Batches<'_> {
    /// Bytes the current batch can still take.
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes + 64)
    }

    async fn push(&mut self, request: String) -> Result<(), SheetsError> {
        if !self.pending.is_empty() && self.bytes + request.len() + 1 > self.limit {
            self.flush().await?;
        }
        self.bytes += request.len() + 1;
        self.pending.push(request);
        Ok(())
    }

    /// The request that gives `tab` its exact grid (creating it if need be).
    async fn push_shape(&mut self, tab: &TargetTab) -> Result<(), SheetsError> {
        self.push(tab.shape_request()).await?;
        if tab.existing.is_none() {
            self.adds.push((tab.sheet_id, tab.title.clone()));
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), SheetsError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.client.batch_update(self.spreadsheet, &self.pending).await {
            Ok(_) => {}
            Err(SheetsError::Refused { spreadsheet, message }) if !self.adds.is_empty() => {
                // A batch is applied whole or not at all. Refused after a
                // retry, a batch that creates tabs may have been applied by
                // an earlier try whose answer was lost (a timeout, a 5xx):
                // then the tabs exist now, with our ids, and the batch is done.
                let tabs = self.client.tabs(&spreadsheet).await?;
                let applied =
                    self.adds.iter().all(|(id, title)| tabs.iter().any(|t| t.sheet_id == *id && &t.title == title));
                if !applied {
                    return Err(SheetsError::Refused { spreadsheet, message });
                }
                warn!(
                    spreadsheet,
                    "a retried batchUpdate was refused because an earlier try had applied it; continuing"
                );
            }
            Err(error) => return Err(error),
        }
        self.sent += 1;
        self.pending.clear();
        self.adds.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Bytes of an `updateCells` request around its rows.
const UPDATE_CELLS_OVERHEAD: usize = 160;
/// At most this many bytes a row takes in a request (a 20-digit id as text).
const MAX_ROW_BYTES: usize = 200;

/// What was sent for one tab: bytes of its rows' JSON and their SHA-256, a
/// fingerprint of exactly what the tab was given.
pub(super) struct WrittenTab {
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

/// Writes one tab: its shape request (create, or resize to the exact grid),
/// then the header and rows in `updateCells` requests that each fill what is
/// left of a batch. A tab small enough for one request starts a new batch if
/// the current one cannot hold it whole, so it is replaced atomically.
pub(super) async fn write_tab(
    batches: &mut Batches<'_>,
    tab: &TargetTab,
    header: &[&str],
    items: RowsSource<'_>,
) -> Result<WrittenTab, SheetsError> {
    use sha2::Digest;
    let estimate = UPDATE_CELLS_OVERHEAD + 300 + (items.len() + 1) * MAX_ROW_BYTES;
    if estimate <= batches.limit && estimate > batches.room() {
        batches.flush().await?;
    }
    batches.push_shape(tab).await?;
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    let mut rows = String::new();
    let mut first_row = 0u64;
    let mut next_row = 0u64;
    let mut row = String::new();
    for index in 0..=items.len() {
        row.clear();
        match index {
            0 => push_text_row(&mut row, header),
            _ => items.row(index - 1, &mut row),
        }
        hasher.update(row.as_bytes());
        bytes += row.len() as u64;
        if !rows.is_empty() && UPDATE_CELLS_OVERHEAD + rows.len() + 1 + row.len() > batches.room() {
            batches.push(update_cells(tab.sheet_id, first_row, &rows)).await?;
            batches.flush().await?;
            rows.clear();
            first_row = next_row;
        }
        if !rows.is_empty() {
            rows.push(',');
        }
        rows.push_str(&row);
        next_row += 1;
    }
    batches.push(update_cells(tab.sheet_id, first_row, &rows)).await?;
    Ok(WrittenTab { bytes, sha256: hex::encode(hasher.finalize()) })
}

/// Rows to write after the header.
pub(super) enum RowsSource<'a> {
    Items(&'a [ReportItem]),
    Text(&'a [Vec<String>]),
}

impl RowsSource<'_> {
    fn len(&self) -> usize {
        match self {
            RowsSource::Items(items) => items.len(),
            RowsSource::Text(rows) => rows.len(),
        }
    }

    fn row(&self, index: usize, out: &mut String) {
        match self {
            RowsSource::Items(items) => push_item_row(out, &items[index]),
            RowsSource::Text(rows) => {
                let cells: Vec<&str> = rows[index].iter().map(String::as_str).collect();
                push_text_row(out, &cells);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_beyond_two_to_the_53_are_text_and_numbers_stay_numbers() {
        let mut row = String::new();
        push_item_row(&mut row, &ReportItem { id: 42, search_rank: 1, modifier_hundredths: 57 });
        assert_eq!(
            row,
            r#"{"values":[{"userEnteredValue":{"numberValue":42}},{"userEnteredValue":{"numberValue":1}},{"userEnteredValue":{"numberValue":0.57}}]}"#
        );
        row.clear();
        push_item_row(&mut row, &ReportItem { id: (1 << 53) + 1, search_rank: 2, modifier_hundredths: 100 });
        assert!(row.starts_with(r#"{"values":[{"userEnteredValue":{"stringValue":"9007199254740993"}}"#), "{row}");
        assert!(row.ends_with(r#"{"userEnteredValue":{"numberValue":1.0}}]}"#), "{row}");
    }
}
