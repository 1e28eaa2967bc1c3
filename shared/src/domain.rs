//! The vocabulary of the product (docs/design.md, "Scores and ranks" and
//! "Reports and layouts"): the three report kinds, run identifiers, output
//! formats and compression. Pure types, no I/O.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// One of the three popularity reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    Track,
    Artist,
    Product,
}

impl ReportKind {
    pub const ALL: [ReportKind; 3] = [ReportKind::Track, ReportKind::Artist, ReportKind::Product];

    /// The `data_type` of docs/design.md, "Reports and layouts": the first
    /// path segment of every report key.
    pub fn data_type(self) -> &'static str {
        match self {
            ReportKind::Track => "track_popularity",
            ReportKind::Artist => "artist_popularity",
            ReportKind::Product => "product_popularity",
        }
    }

    /// The name of the id field of each item.
    pub fn id_field(self) -> &'static str {
        match self {
            ReportKind::Track => "trackId",
            ReportKind::Artist => "masterArtistId",
            ReportKind::Product => "productId",
        }
    }

    /// The short name tenants use in a feed's `reports` list.
    pub fn short_name(self) -> &'static str {
        match self {
            ReportKind::Track => "track",
            ReportKind::Artist => "artist",
            ReportKind::Product => "product",
        }
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.data_type())
    }
}

/// Serialisation of a report part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON array of objects, one object per line.
    #[default]
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Tab-separated values with a header line.
    Tsv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Tsv => "tsv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Jsonl => "application/x-ndjson",
            Format::Tsv => "text/tab-separated-values",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::Jsonl),
            "tsv" => Ok(Format::Tsv),
            other => Err(format!("unknown format {other:?}: expected json, jsonl or tsv")),
        }
    }
}

/// Compression applied to a whole part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl Compression {
    /// The suffix added after the format's extension.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
        }
    }
}

/// How a report part is encoded: format plus compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Encoding {
    pub format: Format,
    pub compression: Compression,
}

impl Encoding {
    /// `json`, `tsv.gz`, ...
    pub fn extension(self) -> String {
        format!("{}{}", self.format.extension(), self.compression.suffix())
    }

    pub fn content_type(self) -> &'static str {
        match self.compression {
            Compression::None => self.format.content_type(),
            Compression::Gzip => "application/gzip",
        }
    }
}

/// The run identifier: the run time T as `YYYYMMDDHHmmss` UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(DateTime<Utc>);

impl RunId {
    const FORMAT: &'static str = "%Y%m%d%H%M%S";

    /// The run of a schedule time. Sub-second precision is dropped, as the
    /// identifier has none.
    pub fn from_time(time: DateTime<Utc>) -> Self {
        use chrono::Timelike;
        RunId(time.with_nanosecond(0).unwrap_or(time))
    }

    pub fn time(self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format(Self::FORMAT))
    }
}

impl std::str::FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("run id {s:?} is not 14 digits YYYYMMDDHHmmss"));
        }
        NaiveDateTime::parse_from_str(s, Self::FORMAT)
            .map(|t| RunId(t.and_utc()))
            .map_err(|e| format!("run id {s:?} is not a valid UTC time YYYYMMDDHHmmss: {e}"))
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Key of part `number` (1-based) of a report in the canonical layout:
/// `<data_type>/<runId>/part-NNN.<ext>`, without any leading prefix.
pub fn part_key(kind: ReportKind, run: RunId, number: usize, encoding: Encoding) -> String {
    file_key(kind, run, "part", number, encoding)
}

/// `<data_type>/<runId>/<stem>-NNN.<ext>`: `part` files, and a delta's
/// `removed` files beside them.
pub fn file_key(kind: ReportKind, run: RunId, stem: &str, number: usize, encoding: Encoding) -> String {
    format!("{}{stem}-{:03}.{}", report_run_prefix(kind, run), number, encoding.extension())
}

/// The folder of one report of one run, `<data_type>/<runId>/`, holding its
/// parts (and, at a destination, its `_manifest.json`).
pub fn report_run_prefix(kind: ReportKind, run: RunId) -> String {
    format!("{}/{}/", kind.data_type(), run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_the_utc_time_as_fourteen_digits() {
        let time: DateTime<Utc> = "2026-11-19T03:00:07.250Z".parse().unwrap();
        let run = RunId::from_time(time);
        assert_eq!(run.to_string(), "20261119030007");
        assert_eq!("20261119030007".parse::<RunId>().unwrap(), run);
    }

    #[test]
    fn malformed_run_ids_are_rejected_with_the_reason() {
        assert!("2026111903000".parse::<RunId>().unwrap_err().contains("14 digits"));
        assert!("20261339030007".parse::<RunId>().unwrap_err().contains("valid UTC time"));
    }

    #[test]
    fn part_keys_are_numbered_from_one_with_three_digits() {
        let run: RunId = "20261119030000".parse().unwrap();
        let gz = Encoding { format: Format::Tsv, compression: Compression::Gzip };
        assert_eq!(part_key(ReportKind::Artist, run, 7, gz), "artist_popularity/20261119030000/part-007.tsv.gz");
    }
}
