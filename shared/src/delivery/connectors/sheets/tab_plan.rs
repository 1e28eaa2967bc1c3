//! The plan of a delivery's tabs: which tabs it writes, in which order
//! (tabs that shrink first, so the spreadsheet's cell count never rises
//! above both where it starts and where it ends), with which sheetIds
//! (kept for existing tabs, deterministic for new ones), and the check
//! against Google's 10,000,000 cells before anything is written.

use crate::delivery::error::DeliveryError;
use crate::domain::ReportKind;
use crate::tenant::limits::{MAX_SPREADSHEET_CELLS, REPORT_COLUMNS, STATUS_COLUMNS};

use super::client::Tab;

/// The tab written last, saying which run each report tab holds.
pub const STATUS_TAB: &str = "_popularity";

/// A tab this delivery writes: where it is and how large it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TargetTab {
    pub(super) title: String,
    pub(super) sheet_id: i64,
    /// `None` when the tab must be created.
    pub(super) existing: Option<Tab>,
    pub(super) rows: u64,
    pub(super) columns: u64,
}

impl TargetTab {
    pub(super) fn cells(&self) -> u64 {
        self.rows * self.columns
    }

    pub(super) fn current_cells(&self) -> u64 {
        self.existing.as_ref().map_or(0, |tab| tab.rows * tab.columns)
    }

    /// `addSheet` for a new tab, else `updateSheetProperties` to the exact grid.
    pub(super) fn shape_request(&self) -> String {
        match self.existing {
            None => serde_json::json!({"addSheet": {"properties": {"sheetId": self.sheet_id, "title": self.title,
                "gridProperties": {"rowCount": self.rows, "columnCount": self.columns}}}})
            .to_string(),
            Some(_) => serde_json::json!({"updateSheetProperties": {"properties": {"sheetId": self.sheet_id,
                "gridProperties": {"rowCount": self.rows, "columnCount": self.columns}},
                "fields": "gridProperties.rowCount,gridProperties.columnCount"}})
            .to_string(),
        }
    }
}

/// A sheetId for a new tab: deterministic from its title (so a retry asks
/// for the same one) and not used by another tab.
pub(super) fn new_sheet_id(title: &str, taken: &[i64]) -> i64 {
    let mut id = title.bytes().fold(0x1F2E_3D4Ci64, |h, b| (h.wrapping_mul(31) + i64::from(b)) & 0x3FFF_FFFF) + 1;
    while taken.contains(&id) {
        id = (id + 7919) & 0x3FFF_FFFF;
    }
    id
}

/// The tabs a delivery writes, in the order it writes them (tabs that
/// shrink first, so the spreadsheet's cell count never rises above both
/// where it starts and where it ends), and the budget check.
pub(super) fn plan_tabs(
    tabs: &[Tab],
    reports: &[(ReportKind, u64)],
    status_rows: u64,
) -> Result<Vec<TargetTab>, DeliveryError> {
    let mut taken: Vec<i64> = tabs.iter().map(|t| t.sheet_id).collect();
    let mut target = |title: &str, rows: u64, columns: u64| {
        let existing = tabs.iter().find(|t| t.title == title).cloned();
        let sheet_id = match &existing {
            Some(tab) => tab.sheet_id,
            None => {
                let id = new_sheet_id(title, &taken);
                taken.push(id);
                id
            }
        };
        TargetTab { title: title.to_owned(), sheet_id, existing, rows, columns }
    };
    let mut planned: Vec<TargetTab> =
        reports.iter().map(|(kind, rows)| target(kind.data_type(), rows + 1, REPORT_COLUMNS)).collect();
    let status = target(STATUS_TAB, status_rows, STATUS_COLUMNS);
    let ours: Vec<&str> = planned.iter().map(|t| t.title.as_str()).chain([STATUS_TAB]).collect();
    let others: u64 = tabs.iter().filter(|t| !ours.contains(&t.title.as_str())).map(|t| t.rows * t.columns).sum();
    let needed = planned.iter().map(TargetTab::cells).sum::<u64>() + status.cells();
    if others + needed > MAX_SPREADSHEET_CELLS {
        return Err(DeliveryError::CannotFit {
            reason: format!(
                "the spreadsheet would need {} cells, above Google's limit of {MAX_SPREADSHEET_CELLS}: these reports \
                 need {needed} cells and the other tabs use {others}, leaving {} available; lower maxRows or remove \
                 tabs; nothing was written",
                others + needed,
                MAX_SPREADSHEET_CELLS.saturating_sub(others)
            ),
        });
    }
    planned.sort_by_key(|tab| tab.cells() > tab.current_cells());
    planned.push(status);
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::limits::{cells_needed, MAX_ROWS_ONE_REPORT};

    fn tab(sheet_id: i64, title: &str, rows: u64, columns: u64) -> Tab {
        Tab { sheet_id, title: title.into(), rows, columns }
    }

    #[test]
    fn report_tabs_keep_their_ids_new_ones_get_free_ids_and_shrinking_tabs_come_first() {
        let tabs = [tab(0, "Sheet1", 1000, 26), tab(77, "artist_popularity", 5000, 3)];
        let plan = plan_tabs(&tabs, &[(ReportKind::Track, 100), (ReportKind::Artist, 10)], 3).unwrap();
        let shapes: Vec<(&str, u64, u64, bool)> =
            plan.iter().map(|t| (t.title.as_str(), t.rows, t.columns, t.existing.is_some())).collect();
        assert_eq!(
            shapes,
            [("artist_popularity", 11, 3, true), ("track_popularity", 101, 3, false), ("_popularity", 3, 4, false)]
        );
        assert_eq!(plan[0].sheet_id, 77, "a report tab keeps its sheetId");
        assert!(plan[1].sheet_id > 0 && plan[1].sheet_id != 77 && plan[1].sheet_id != plan[2].sheet_id);
        assert_eq!(
            plan[1].sheet_id,
            plan_tabs(&tabs, &[(ReportKind::Track, 100)], 2).unwrap()[0].sheet_id,
            "deterministic"
        );
    }

    #[test]
    fn over_the_cell_limit_nothing_is_planned_and_the_error_says_needed_and_available() {
        let tabs = [tab(0, "customer data", 2_000_000, 4)];
        let error = plan_tabs(&tabs, &[(ReportKind::Track, 1_000_000)], 2).unwrap_err();
        assert!(error.is_permanent());
        let text = error.to_string();
        assert!(text.contains("would need 11000011 cells"), "{text}");
        assert!(text.contains("leaving 2000000 available"), "{text}");
        // The tabs this delivery replaces do not count against it.
        let ours = [tab(1, "track_popularity", 3_000_000, 3)];
        assert!(plan_tabs(&ours, &[(ReportKind::Track, 1_000_000)], 2).is_ok());
    }

    #[test]
    fn the_largest_max_rows_fits_exactly() {
        assert_eq!(MAX_ROWS_ONE_REPORT, 3_333_329);
        assert!(cells_needed(1, MAX_ROWS_ONE_REPORT) <= MAX_SPREADSHEET_CELLS);
        assert!(cells_needed(1, MAX_ROWS_ONE_REPORT + 1) > MAX_SPREADSHEET_CELLS);
    }
}
