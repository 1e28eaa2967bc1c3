//! The staged delta computation (bucket files on local disk, split when too
//! large) against a plain in-memory merge by id, on two synthetic runs in a
//! local directory: no emulator. A target of its own, as the end-to-end
//! delta test counts the "delta computed" lines of its process's log.

use integration_tests::local_stores::LocalStores;
use integration_tests::synthetic_run::{publish_synthetic_run, SyntheticRunSize};
use popularity_reports::delta::{apply_delta, ensure_delta, merge_by_id, DeltaFile, DeltaSettings, Entry, FileKind};
use popularity_reports::domain::{Compression, Encoding, Format, ReportKind, RunId};
use popularity_reports::report_writer::{Columns, PartSummary, ReportItem};
use popularity_reports::transfer::scan_items;

/// The delta of two item lists by a plain merge by id, as the expected value.
fn delta_in_memory(base: &[Entry], new: &[Entry]) -> (Vec<Entry>, Vec<i64>) {
    let (mut base, mut new) = (base.to_vec(), new.to_vec());
    base.sort_by_key(|e| e.id);
    new.sort_by_key(|e| e.id);
    let (mut upserts, mut removed) = (Vec::new(), Vec::new());
    merge_by_id::<()>(
        base,
        new,
        |e| {
            upserts.push(e);
            Ok(())
        },
        |id| {
            removed.push(id);
            Ok(())
        },
    )
    .unwrap();
    (upserts, removed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_delta_matches_the_in_memory_merge_even_when_buckets_split() {
    let stores = LocalStores::new("delta-staged");
    let store = stores.staging.clone();
    let base_run: RunId = "20261116030000".parse().unwrap();
    let new_run: RunId = "20261119030000".parse().unwrap();
    let base =
        publish_synthetic_run(&store, base_run, SyntheticRunSize { rows: 3_000, part_rows: 700, track_bytes: None })
            .await
            .unwrap();
    let new =
        publish_synthetic_run(&store, new_run, SyntheticRunSize { rows: 2_500, part_rows: 900, track_bytes: None })
            .await
            .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // Tiny buckets force splits; no id range in these manifests forces
    // the first partition over every id.
    let settings = DeltaSettings {
        scratch_dir: scratch.path().to_owned(),
        part_rows: 400,
        bucket_records: 1_500,
        max_bucket_records: 64,
    };
    let manifest = ensure_delta(&store, ReportKind::Track, &base, &new, &settings).await.unwrap();

    let read_all = |parts: Vec<PartSummary>, columns| {
        let store = store.clone();
        async move {
            scan_items(
                &store,
                &parts,
                Encoding { format: Format::Json, compression: Compression::None },
                ReportKind::Track,
                columns,
                Vec::new(),
                |all: &mut Vec<ReportItem>, item| {
                    all.push(item);
                    Ok(())
                },
            )
            .await
            .unwrap()
        }
    };
    let base_entries: Vec<Entry> = read_all(base.report(ReportKind::Track).unwrap().parts.clone(), Columns::Ranked)
        .await
        .into_iter()
        .map(Entry::from)
        .collect();
    let new_entries: Vec<Entry> = read_all(new.report(ReportKind::Track).unwrap().parts.clone(), Columns::Ranked)
        .await
        .into_iter()
        .map(Entry::from)
        .collect();
    let (expected_upserts, expected_removed) = delta_in_memory(&base_entries, &new_entries);

    let files = |kind| manifest.files.iter().filter(|f| f.kind == kind).map(DeltaFile::summary).collect::<Vec<_>>();
    let upserts: Vec<Entry> =
        read_all(files(FileKind::Upsert), Columns::Ranked).await.into_iter().map(Entry::from).collect();
    let removed: Vec<i64> =
        read_all(files(FileKind::Removed), Columns::IdOnly).await.into_iter().map(|i| i.id).collect();
    assert_eq!(upserts, expected_upserts);
    assert_eq!(removed, expected_removed);
    assert_eq!((manifest.upserts, manifest.removed), (upserts.len() as u64, removed.len() as u64));
    assert!(files(FileKind::Upsert).iter().all(|f| f.rows <= 400));
    assert_eq!(apply_delta(&base_entries, &upserts, &removed), new_entries);
    assert!(std::fs::read_dir(scratch.path()).unwrap().next().is_none(), "the scratch space is cleaned up");

    // A second call reads the staged delta instead of computing again.
    let again = ensure_delta(&store, ReportKind::Track, &base, &new, &settings).await.unwrap();
    assert_eq!(again, manifest);
}
