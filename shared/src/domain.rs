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
    /// A standalone Parquet file per part with typed columns (the id and
    /// `searchRank` INT64, `searchModifier` DOUBLE), its columns compressed
    /// by Parquet itself (docs/design.md, "Reports and layouts"). Written
    /// only at destinations: staging parts are always text.
    Parquet,
}

impl Format {
    /// Every format, in the order messages list them.
    pub const ALL: [Format; 4] = [Format::Json, Format::Jsonl, Format::Tsv, Format::Parquet];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Tsv => "tsv",
            Format::Parquet => "parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        self.name()
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Jsonl => "application/x-ndjson",
            Format::Tsv => "text/tab-separated-values",
            // Registered with IANA in 2024.
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Whether parts are lines of text (read and written line by line).
    pub fn is_text(self) -> bool {
        self != Format::Parquet
    }

    /// The compressions this format takes, its default first: the whole
    /// part gzipped or not for text, Parquet's own column compression for
    /// Parquet.
    pub fn compressions(self) -> &'static [Compression] {
        if self.is_text() {
            &[Compression::None, Compression::Gzip]
        } else {
            &[Compression::Zstd, Compression::Snappy]
        }
    }

    /// The compression of a feed that names none.
    pub fn default_compression(self) -> Compression {
        self.compressions()[0]
    }

    /// `"zstd" (the default) or "snappy"`: [`Format::compressions`] for messages.
    pub fn compressions_text(self) -> String {
        match self.compressions() {
            [default, other] => format!("{:?} (the default) or {:?}", default.name(), other.name()),
            all => all.iter().map(|c| format!("{:?}", c.name())).collect::<Vec<_>>().join(", "),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected json, jsonl, tsv or parquet")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// Compression of a part: of the whole part for the text formats (`none`
/// or `gzip`), of each column chunk inside the file for Parquet (`zstd` or
/// `snappy`). [`Format::compressions`] says which goes with which.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
    Snappy,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
        }
    }

    /// The suffix added after the format's extension: `.gz` for gzip;
    /// nothing for Parquet's column compression, which is inside the file.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::None | Compression::Zstd | Compression::Snappy => "",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression given with a format it does not apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "compression {:?} does not apply to format {:?}: {} takes {}",
    .compression.name(),
    .format.name(),
    .format.name(),
    .format.compressions_text()
)]
pub struct EncodingMismatch {
    pub format: Format,
    pub compression: Compression,
}

/// How a report part is encoded: format plus compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Encoding {
    pub format: Format,
    pub compression: Compression,
}

impl Encoding {
    /// Whether the compression goes with the format ([`Format::compressions`]).
    pub fn check(self) -> Result<Self, EncodingMismatch> {
        if self.format.compressions().contains(&self.compression) {
            Ok(self)
        } else {
            Err(EncodingMismatch { format: self.format, compression: self.compression })
        }
    }

    /// `json`, `tsv.gz`, `parquet`, ...
    pub fn extension(self) -> String {
        format!("{}{}", self.format.extension(), self.compression.suffix())
    }

    pub fn content_type(self) -> &'static str {
        match self.compression {
            Compression::Gzip => "application/gzip",
            Compression::None | Compression::Zstd | Compression::Snappy => self.format.content_type(),
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
        let parquet = Encoding { format: Format::Parquet, compression: Compression::Zstd };
        assert_eq!(part_key(ReportKind::Track, run, 1, parquet), "track_popularity/20261119030000/part-001.parquet");
        assert_eq!(
            file_key(ReportKind::Track, run, "removed", 2, parquet),
            "track_popularity/20261119030000/removed-002.parquet"
        );
    }

    #[test]
    fn parquet_takes_its_own_column_compression_and_text_formats_none_or_gzip() {
        for format in Format::ALL {
            for compression in [Compression::None, Compression::Gzip, Compression::Zstd, Compression::Snappy] {
                let valid = Encoding { format, compression }.check().is_ok();
                let expected = match format {
                    Format::Parquet => matches!(compression, Compression::Zstd | Compression::Snappy),
                    _ => matches!(compression, Compression::None | Compression::Gzip),
                };
                assert_eq!(valid, expected, "{format} with {compression}");
            }
        }
        assert_eq!(Format::Parquet.default_compression(), Compression::Zstd);
        assert_eq!(Format::Tsv.default_compression(), Compression::None);
        let error = Encoding { format: Format::Parquet, compression: Compression::Gzip }.check().unwrap_err();
        assert_eq!(
            error.to_string(),
            "compression \"gzip\" does not apply to format \"parquet\": parquet takes \"zstd\" (the default) or \"snappy\""
        );
        let error = Encoding { format: Format::Json, compression: Compression::Snappy }.check().unwrap_err();
        assert!(error.to_string().ends_with("json takes \"none\" (the default) or \"gzip\""), "{error}");
    }

    #[test]
    fn formats_parse_by_name_and_name_the_choices_when_unknown() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>().unwrap(), format);
        }
        assert_eq!(
            "csv".parse::<Format>().unwrap_err().to_string(),
            "unknown format \"csv\": expected json, jsonl, tsv or parquet"
        );
        let parquet = Encoding { format: Format::Parquet, compression: Compression::Snappy };
        assert_eq!(
            (parquet.extension().as_str(), parquet.content_type()),
            ("parquet", "application/vnd.apache.parquet")
        );
    }
}
