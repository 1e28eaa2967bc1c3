//! Reads published reports back for assertions: parses a part in any
//! format and compression into (id, searchRank, searchModifier) lines, and
//! checks the invariants every report must satisfy.

use std::io::Read;

use popularity_reports::domain::{Compression, Encoding, Format, ReportKind};
use sha2::{Digest, Sha256};

use crate::parquet_readers::read_parquet_part;
use crate::reference::Line;
use popularity_reports::report_writer::Columns;

/// The lines of one part (a Parquet part's schema checked too).
pub fn parse_part(bytes: &[u8], encoding: Encoding, kind: ReportKind) -> Vec<Line> {
    if encoding.format == Format::Parquet {
        return read_parquet_part(bytes, kind, Columns::Ranked).lines();
    }
    let mut text = String::new();
    match encoding.compression {
        Compression::Gzip => {
            flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).expect("a valid gzip stream");
        }
        Compression::None | Compression::Zstd | Compression::Snappy => {
            text = String::from_utf8(bytes.to_vec()).expect("report parts are UTF-8")
        }
    }
    let from_object = |object: &serde_json::Value| -> Line {
        assert_eq!(object.as_object().unwrap().len(), 3, "exactly three fields: {object}");
        (
            object[kind.id_field()].as_i64().expect("integer id"),
            object["searchRank"].as_u64().expect("integer rank"),
            object["searchModifier"].as_f64().expect("number modifier"),
        )
    };
    match encoding.format {
        Format::Json => {
            let array: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
            array.iter().map(from_object).collect()
        }
        Format::Jsonl => text
            .lines()
            .map(|line| from_object(&serde_json::from_str(line).expect("one JSON object per line")))
            .collect(),
        Format::Parquet => unreachable!("read above"),
        Format::Tsv => {
            let mut lines = text.lines();
            let header = format!("{}\tsearchRank\tsearchModifier", kind.id_field());
            assert_eq!(lines.next(), Some(header.as_str()));
            lines
                .map(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    assert_eq!(fields.len(), 3, "{line}");
                    (fields[0].parse().unwrap(), fields[1].parse().unwrap(), fields[2].parse().unwrap())
                })
                .collect()
        }
    }
}

/// Ranks are 1..n in order, modifiers are in [0, 1] and never increase, and
/// the top item has 1.0 unless nothing was played.
pub fn assert_report_invariants(data_type: &str, lines: &[Line]) {
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line.1, i as u64 + 1, "{data_type}: ranks must be 1..n without gaps");
        assert!((0.0..=1.0).contains(&line.2), "{data_type}: modifier {} out of [0,1]", line.2);
    }
    assert!(lines.windows(2).all(|w| w[0].2 >= w[1].2), "{data_type}: modifiers must not increase with rank");
    if let Some(top) = lines.first() {
        let nothing_played = lines.iter().all(|l| l.2 == 0.0);
        assert!(top.2 == 1.0 || nothing_played, "{data_type}: top modifier is {}", top.2);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The text of a gzip stream (one or more members).
///
/// # Panics
/// When `data` is not valid gzip of UTF-8 text.
pub fn gunzip(data: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(data).read_to_string(&mut text).unwrap();
    text
}
