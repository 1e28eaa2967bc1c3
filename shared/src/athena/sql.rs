//! The `sql/` files a run sends to Athena, compiled into the package
//! (`include_str!`), with the run's values filled in and wrapped in UNLOAD
//! statements that write into the run's own folder of the staging bucket
//! (docs/scaling.md, "One scan, then the reports").
//!
//! Each file keeps sample values where a run's values go (the `run` step of
//! `track_scores.sql`, the `run_id`/`attempt` partition of the report files,
//! the day of `daily_plays.sql`); each is replaced here, and a file in which
//! a placeholder is not found exactly once is an error naming the file,
//! never a query sent with the sample value. Only values this module
//! formats itself reach the SQL text (digits, a checked attempt name).

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{ReportKind, RunId};
use crate::scoring::ScoringRules;

/// One query of a run, named as its file in `sql/` and as its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunQuery {
    /// `sql/track_scores.sql`: the one scan of catalogue and plays.
    TrackScores,
    /// `sql/<data_type>.sql`: one report, ranked from the track scores.
    Report(ReportKind),
    /// `sql/run_inputs.sql`: the counts of the run manifest's `inputs`.
    RunInputs,
}

impl RunQuery {
    /// Every query of a run, in the order they run (the scan first).
    pub const ALL: [RunQuery; 5] = [
        RunQuery::TrackScores,
        RunQuery::Report(ReportKind::Track),
        RunQuery::Report(ReportKind::Artist),
        RunQuery::Report(ReportKind::Product),
        RunQuery::RunInputs,
    ];

    /// The file's name without `.sql`; also the key of the query in the
    /// plan and of its output folder.
    pub fn name(self) -> &'static str {
        match self {
            RunQuery::TrackScores => "track_scores",
            RunQuery::Report(kind) => kind.data_type(),
            RunQuery::RunInputs => "run_inputs",
        }
    }

    /// The file's text as the package ships it.
    pub fn file_text(self) -> &'static str {
        match self {
            RunQuery::TrackScores => TRACK_SCORES_SQL,
            RunQuery::Report(ReportKind::Track) => TRACK_POPULARITY_SQL,
            RunQuery::Report(ReportKind::Artist) => ARTIST_POPULARITY_SQL,
            RunQuery::Report(ReportKind::Product) => PRODUCT_POPULARITY_SQL,
            RunQuery::RunInputs => RUN_INPUTS_SQL,
        }
    }

    /// How UNLOAD writes its output: Snappy Parquet for every query — the
    /// scores for the next queries to read through the `run_scores` table,
    /// the reports and the counts for the publish step, which reads their
    /// columns (docs/scaling.md, "The publish step").
    pub fn output_format(self) -> UnloadFormat {
        UnloadFormat::Parquet
    }

    /// The query with the run's values, as a plain SELECT.
    pub fn select(self, run_time: DateTime<Utc>, rules: &ScoringRules, attempt: &Attempt) -> Result<String, SqlError> {
        let text = self.file_text();
        let file = format!("sql/{}.sql", self.name());
        match self {
            RunQuery::TrackScores => with_run_parameters(text, &file, run_time, rules),
            RunQuery::Report(_) | RunQuery::RunInputs => with_run_key(text, &file, RunId::from_time(run_time), attempt),
        }
    }
}

impl fmt::Display for RunQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const TRACK_SCORES_SQL: &str = include_str!("../../../sql/track_scores.sql");
pub const TRACK_POPULARITY_SQL: &str = include_str!("../../../sql/track_popularity.sql");
pub const ARTIST_POPULARITY_SQL: &str = include_str!("../../../sql/artist_popularity.sql");
pub const PRODUCT_POPULARITY_SQL: &str = include_str!("../../../sql/product_popularity.sql");
pub const RUN_INPUTS_SQL: &str = include_str!("../../../sql/run_inputs.sql");
pub const DAILY_PLAYS_SQL: &str = include_str!("../../../sql/daily_plays.sql");

/// Every file of `sql/` the package ships, by name (without `.sql`).
pub const SHIPPED_SQL_FILES: [(&str, &str); 6] = [
    ("track_scores", TRACK_SCORES_SQL),
    ("track_popularity", TRACK_POPULARITY_SQL),
    ("artist_popularity", ARTIST_POPULARITY_SQL),
    ("product_popularity", PRODUCT_POPULARITY_SQL),
    ("run_inputs", RUN_INPUTS_SQL),
    ("daily_plays", DAILY_PLAYS_SQL),
];

/// A query that could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error(
        "{file}: expected exactly one {placeholder}, found {found}; the file shipped with this package no longer \
         has the place the run's value goes"
    )]
    Placeholder { file: String, placeholder: &'static str, found: usize },
    #[error(
        "attempt name {0:?} cannot name a run's folder: expected 1 to 80 letters, digits, '-' or '_' (a Step \
         Functions execution name)"
    )]
    Attempt(String),
}

/// The name of one attempt at a run: the Step Functions execution's name,
/// which keeps two executions of one scheduled time in separate folders (an
/// UNLOAD refuses a folder that holds objects). Checked, since it is written
/// into S3 keys and SQL literals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attempt(String);

impl Attempt {
    pub fn new(name: &str) -> Result<Self, SqlError> {
        let valid =
            (1..=80).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(SqlError::Attempt(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an UNLOAD writes its files. Parquet only: the compression is named,
/// since Athena's default for Parquet is GZIP, slower to read than Snappy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadFormat {
    Parquet,
}

impl UnloadFormat {
    fn with_clause(self) -> &'static str {
        match self {
            UnloadFormat::Parquet => "WITH (format = 'PARQUET', compression = 'SNAPPY')",
        }
    }
}

/// `select` as an UNLOAD into `location` (an `s3://…/` folder), its comment
/// lines dropped.
pub fn unload(select: &str, location: &str, format: UnloadFormat) -> String {
    let body: Vec<&str> = select.lines().filter(|line| !line.trim_start().starts_with("--")).collect();
    let body = body.join("\n");
    let body = body.trim().trim_end_matches(';').trim_end();
    format!("UNLOAD (\n{body}\n) TO '{location}' {}", format.with_clause())
}

/// Replaces the one occurrence of `<before><anything but quote><after>`.
fn replace_quoted(
    text: &str,
    file: &str,
    placeholder: &'static str,
    before: &str,
    after: &str,
    value: &str,
) -> Result<String, SqlError> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(before) {
        let start = from + found;
        let value_start = start + before.len();
        if let Some(length) = text[value_start..].find('\'') {
            let value_end = value_start + length;
            if text[value_end..].starts_with(after) {
                spans.push((value_start, value_end));
            }
        }
        from = value_start;
    }
    match spans.as_slice() {
        [(start, end)] => Ok(format!("{}{value}{}", &text[..*start], &text[*end..])),
        other => Err(SqlError::Placeholder { file: file.to_owned(), placeholder, found: other.len() }),
    }
}

/// Replaces the token just before `suffix` (a run of characters other than
/// space, '(' and newline), which must occur exactly once.
fn replace_token_before(
    text: &str,
    file: &str,
    placeholder: &'static str,
    suffix: &str,
    value: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<String, SqlError> {
    let found: Vec<usize> = text.match_indices(suffix).map(|(i, _)| i).collect();
    let error = |found| SqlError::Placeholder { file: file.to_owned(), placeholder, found };
    let [end] = found.as_slice() else { return Err(error(found.len())) };
    let start = text[..*end].rfind([' ', '(', '\n']).map_or(0, |i| i + 1);
    if !valid(&text[start..*end]) {
        return Err(error(0));
    }
    Ok(format!("{}{value}{}", &text[..start], &text[*end..]))
}

/// `track_scores.sql` with T, `LOOKBACK_DAYS` and `HALF_LIFE_DAYS`.
pub fn with_run_parameters(
    text: &str,
    file: &str,
    run_time: DateTime<Utc>,
    rules: &ScoringRules,
) -> Result<String, SqlError> {
    let time = run_time.format("%Y-%m-%d %H:%M:%S").to_string();
    let text = replace_quoted(text, file, "TIMESTAMP '…' AS run_time", "TIMESTAMP '", "' AS run_time", &time)?;
    let text = replace_token_before(
        &text,
        file,
        "<digits> AS lookback_days",
        " AS lookback_days",
        &rules.lookback_days.to_string(),
        |token| !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()),
    )?;
    // `{:?}` prints an f64 so that it reads back as the same value (7.0, 3.5).
    replace_token_before(
        &text,
        file,
        "CAST(<number> AS DOUBLE) AS half_life_days",
        " AS DOUBLE) AS half_life_days",
        &format!("{:?}", rules.half_life_days),
        |token| !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
    )
}

/// A report file or `run_inputs.sql` reading the run's partition of
/// `run_scores`.
pub fn with_run_key(text: &str, file: &str, run: RunId, attempt: &Attempt) -> Result<String, SqlError> {
    let text = replace_quoted(text, file, "run_id = '…'", "run_id = '", "' AND attempt = '", &run.to_string())?;
    replace_quoted(&text, file, "attempt = '…'", "' AND attempt = '", "'", attempt.as_str())
}

/// `daily_plays.sql` for `day`.
pub fn with_day(text: &str, file: &str, day: NaiveDate) -> Result<String, SqlError> {
    replace_quoted(text, file, "e.\"date\" = '…'", "e.\"date\" = '", "'", &day.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_run_parameters_replace_the_sample_values_once_each() {
        let rules = ScoringRules { lookback_days: 366, half_life_days: 3.5 };
        let sql = with_run_parameters(TRACK_SCORES_SQL, "sql/track_scores.sql", time("2027-01-02T03:04:05Z"), &rules)
            .unwrap();
        assert!(sql.contains("TIMESTAMP '2027-01-02 03:04:05' AS run_time"), "{sql}");
        assert!(sql.contains("        366 AS lookback_days"), "{sql}");
        assert!(sql.contains("CAST(3.5 AS DOUBLE) AS half_life_days"), "{sql}");
        assert!(!sql.contains("2026-11-19 03:00:00"));
        let seven = ScoringRules { lookback_days: 28, half_life_days: 7.0 };
        let sql = with_run_parameters(TRACK_SCORES_SQL, "f", time("2026-11-19T03:00:00Z"), &seven).unwrap();
        assert!(sql.contains("CAST(7.0 AS DOUBLE) AS half_life_days"), "{sql}");
    }

    #[test]
    fn a_file_without_its_placeholder_is_an_error_naming_it() {
        let rules = ScoringRules::default();
        let missing = with_run_parameters("SELECT 1", "sql/x.sql", time("2026-11-19T03:00:00Z"), &rules).unwrap_err();
        assert_eq!(
            missing,
            SqlError::Placeholder { file: "sql/x.sql".into(), placeholder: "TIMESTAMP '…' AS run_time", found: 0 }
        );
        assert!(missing.to_string().starts_with("sql/x.sql: expected exactly one"), "{missing}");
        let twice = format!("{TRACK_SCORES_SQL}\n-- 1 AS lookback_days");
        assert!(matches!(
            with_run_parameters(&twice, "f", time("2026-11-19T03:00:00Z"), &rules),
            Err(SqlError::Placeholder { found: 2, .. })
        ));
    }

    #[test]
    fn reports_and_counts_read_the_runs_own_partition() {
        let run: RunId = "20270102030405".parse().unwrap();
        let attempt = Attempt::new("2f1c9e0a-7d7b-4d55-9d07-3c6f1c1e2b10").unwrap();
        for query in RunQuery::ALL.into_iter().filter(|q| *q != RunQuery::TrackScores) {
            let sql = query.select(run.time(), &ScoringRules::default(), &attempt).unwrap();
            assert!(
                sql.contains("run_id = '20270102030405' AND attempt = '2f1c9e0a-7d7b-4d55-9d07-3c6f1c1e2b10'"),
                "{query}: {sql}"
            );
            assert!(sql.contains("FROM run_scores\n"), "{query}");
        }
    }

    #[test]
    fn attempt_names_are_checked_before_they_reach_a_key_or_a_literal() {
        assert!(Attempt::new("local-1").is_ok());
        for bad in ["", "a'b", "a/b", "a b", &"x".repeat(81)] {
            assert!(matches!(Attempt::new(bad), Err(SqlError::Attempt(_))), "{bad:?}");
        }
    }

    #[test]
    fn unload_wraps_the_select_without_its_comments() {
        let sql = unload("-- a comment\nSELECT 1 AS x -- kept\nFROM t\n", "s3://b/p/", UnloadFormat::Parquet);
        assert_eq!(
            sql,
            "UNLOAD (\nSELECT 1 AS x -- kept\nFROM t\n) TO 's3://b/p/' WITH (format = 'PARQUET', compression = 'SNAPPY')"
        );
        for query in RunQuery::ALL {
            assert_eq!(query.output_format(), UnloadFormat::Parquet, "{query}");
        }
    }

    #[test]
    fn the_day_replaces_the_sample_day() {
        let sql =
            with_day(DAILY_PLAYS_SQL, "sql/daily_plays.sql", NaiveDate::from_ymd_opt(2027, 1, 2).unwrap()).unwrap();
        assert!(sql.contains("e.\"date\" = '2027-01-02'"));
        assert!(!sql.contains("2026-11-18"));
    }
}
