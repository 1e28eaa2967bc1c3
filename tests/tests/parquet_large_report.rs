//! One 10,000,000-row track report converted to Parquet by the delivery's
//! own conversion (`transfer_part`, as deliver-s3, deliver-gcs and
//! deliver-email run it), from canonical JSON parts of 5,000,000 rows in a
//! local staging directory into a local destination: every part is read
//! back in row groups of exactly 1,000,000 rows holding the staged ids,
//! ranks and modifiers, and the process's peak resident memory while
//! converting stays within 256 MB — one row group of values and the
//! streams' buffers, whatever the report's size.
//!
//! Ignored by default (about 700 MB of JSON on disk, minutes in a debug
//! build); run it in release, on its own so nothing else shares the
//! process's memory:
//!
//! ```sh
//! cargo test --release -p integration-tests --test parquet_large_report -- --ignored
//! ```

use popularity_reports::domain::{Encoding, Format, ReportKind};
use popularity_reports::parquet_writer::ROW_GROUP_ROWS;
use popularity_reports::report_writer::{Columns, PartSummary, PartWriter, ReportItem};
use popularity_reports::store::LocalDirStore;
use popularity_reports::transfer::{transfer_part, PartTransfer};

const ROWS: u64 = 10_000_000;
const PART_ROWS: u64 = 5_000_000;
const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// Item `index` of the report: ids scattered over 40 bits as real catalogue
/// ids are (not in rank order), ranks 1..n, modifiers falling from 1.0 to 0.
fn item(index: u64) -> ReportItem {
    let mut x = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    ReportItem { id: (x >> 24) as i64, search_rank: index + 1, modifier_hundredths: (100 - index * 100 / ROWS) as u8 }
}

/// A `/proc/self/status` figure in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of kB");
    kib * 1024
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux ≥ 4.0).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM through /proc/self/clear_refs");
}

/// Writes the staged canonical JSON parts straight to files.
fn stage(staging: &LocalDirStore) -> Vec<PartSummary> {
    let mut parts = Vec::new();
    for number in 0..ROWS.div_ceil(PART_ROWS) {
        let key = format!("reports/track_popularity/20261119030000/part-{:03}.json", number + 1);
        let path = staging.root().join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut writer = PartWriter::new(ReportKind::Track, Encoding::default(), file).unwrap();
        for index in number * PART_ROWS..((number + 1) * PART_ROWS).min(ROWS) {
            writer.push(item(index)).unwrap();
        }
        let (rows, bytes, sha256, mut file) = writer.finish().unwrap();
        std::io::Write::flush(&mut file).unwrap();
        parts.push(PartSummary { key, rows, bytes, sha256 });
    }
    parts
}

#[test]
#[ignore = "10M rows, ~700 MB on disk: run in release (docs/testing.md)"]
fn a_ten_million_row_report_converts_to_parquet_in_million_row_groups_within_256_mb() {
    let dir = tempfile::tempdir().unwrap();
    let staging = LocalDirStore::new(dir.path().join("staging"));
    let destination = LocalDirStore::new(dir.path().join("destination"));
    let parts = stage(&staging);
    assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), ROWS);
    let json_bytes: u64 = parts.iter().map(|p| p.bytes).sum();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let target = Encoding { format: Format::Parquet, compression: popularity_reports::domain::Compression::Zstd };
    reset_peak_rss();
    let before = proc_status_bytes("VmRSS:");
    let started = std::time::Instant::now();
    let moved: Vec<PartSummary> = runtime.block_on(async {
        let mut moved = Vec::new();
        for (number, part) in parts.iter().enumerate() {
            let target_key = format!("track_popularity/20261119030000/part-{:03}.parquet", number + 1);
            let transfer = PartTransfer {
                kind: ReportKind::Track,
                columns: Columns::Ranked,
                source: part,
                source_encoding: Encoding::default(),
                target_key: &target_key,
                target_encoding: target,
            };
            moved.push(transfer_part(&staging, &destination, transfer).await.unwrap().summary);
        }
        moved
    });
    let seconds = started.elapsed().as_secs_f64();
    let peak = proc_status_bytes("VmHWM:");
    let parquet_bytes: u64 = moved.iter().map(|p| p.bytes).sum();
    eprintln!(
        "10M rows: {:.1} MB of JSON to {:.1} MB of Parquet (zstd) in {seconds:.1} s; RSS {:.0} MB before, \
         peak {:.0} MB",
        json_bytes as f64 / 1e6,
        parquet_bytes as f64 / 1e6,
        before as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(peak <= MEMORY_LIMIT_BYTES, "peak RSS {} MB while converting, over 256 MiB", peak / 1_000_000);

    // Every part: row groups of exactly ROW_GROUP_ROWS, the staged rows in order.
    let mut next = 0u64;
    for (summary, part) in moved.iter().zip(&parts) {
        let body = std::fs::read(destination.root().join(&summary.key)).unwrap();
        assert_eq!((summary.rows, summary.bytes), (part.rows, body.len() as u64));
        assert_eq!(summary.sha256, integration_tests::reports::sha256_hex(&body));
        let read = integration_tests::parquet_readers::read_parquet_part(&body, ReportKind::Track, Columns::Ranked);
        assert_eq!(read.row_groups, vec![ROW_GROUP_ROWS as i64; (PART_ROWS as usize) / ROW_GROUP_ROWS]);
        for i in 0..read.ids.len() {
            let expected = item(next);
            let modifier = f64::from(expected.modifier_hundredths) / 100.0;
            assert_eq!((read.ids[i], read.ranks[i], read.modifiers[i]), (expected.id, next as i64 + 1, modifier));
            next += 1;
        }
    }
    assert_eq!(next, ROWS);
}
