//! Property test: on random small catalogues and plays, written as real
//! Parquet files, the optimised pipeline (`rank_run`) publishes exactly what
//! the plain reference implementation computes — every id, rank and
//! modifier, in every format, part size and thread count.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use integration_tests::local_stores::LocalStores;
use integration_tests::parquet_fixtures::{catalogue_file, plays_file};
use integration_tests::reference::reference_reports;
use integration_tests::reports::{assert_report_invariants, parse_part, sha256_hex};
use popularity_reports::domain::{Compression, Encoding, Format, ReportKind};
use popularity_reports::rank::{rank_run, RankSettings};
use popularity_reports::scoring::ScoringRules;
use popularity_reports::store::{LocalDirStore, ObjectSink, ObjectStore};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    catalogue: Vec<(i64, i64, i64)>,
    plays: Vec<(NaiveDate, i64, i64)>,
    run_time: DateTime<Utc>,
    lookback_days: u32,
    half_life_days: f64,
    part_rows: u64,
    encoding: Encoding,
    threads: usize,
    row_group_rows: usize,
    catalogue_files: usize,
}

fn track_id_strategy() -> BoxedStrategy<Vec<i64>> {
    prop_oneof![
        // Compact ids: the direct-table index.
        prop::collection::hash_set(0i64..200, 1..60),
        // Sparse ids over the whole i64 range: the sorted index.
        prop::collection::hash_set(any::<i64>(), 1..60),
    ]
    .prop_map(|set| set.into_iter().collect())
    .boxed()
}

fn plays_count() -> impl Strategy<Value = i64> {
    // Small counts make many ties; huge ones push scores past 64 bits.
    prop_oneof![8 => 0i64..20, 1 => 0i64..1_000_000, 1 => (1i64 << 40)..(1i64 << 50)]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (track_id_strategy(), 1u32..10, 0i64..86_400, 0usize..3, 1u64..40, 0usize..6, 1usize..4, 1usize..25, 1usize..4)
        .prop_flat_map(|(tracks, lookback, second, half_life, part_rows, encoding, threads, row_group_rows, files)| {
            let n = tracks.len();
            let catalogue = (prop::collection::vec(0i64..6, n), prop::collection::vec(0i64..9, n)).prop_map(
                move |(artists, products)| {
                    tracks
                        .iter()
                        .zip(artists.iter().zip(&products))
                        .map(|(&t, (&a, &p))| (t, a * 1000, p * 7 - 20))
                        .collect::<Vec<_>>()
                },
            );
            (catalogue, Just((lookback, second, half_life, part_rows, encoding, threads, row_group_rows, files)))
        })
        .prop_flat_map(
            |(catalogue, (lookback, second, half_life, part_rows, encoding, threads, row_group_rows, files))| {
                let known: Vec<i64> = catalogue.iter().map(|c| c.0).collect();
                let track = prop_oneof![9 => prop::sample::select(known), 1 => any::<i64>()];
                // Days from before the window to the run day itself.
                let plays = prop::collection::vec((0i64..(lookback as i64 + 3), track, plays_count()), 0..120);
                (
                    Just(catalogue),
                    plays,
                    Just((lookback, second, half_life, part_rows, encoding, threads, row_group_rows, files)),
                )
            },
        )
        .prop_map(
            |(catalogue, plays, (lookback, second, half_life, part_rows, encoding, threads, row_group_rows, files))| {
                let run_day = NaiveDate::from_ymd_opt(2026, 11, 19).unwrap();
                let run_time = run_day.and_hms_opt(0, 0, 0).unwrap().and_utc() + Duration::seconds(second);
                let encodings = [Format::Json, Format::Jsonl, Format::Tsv];
                Case {
                    catalogue,
                    plays: plays.into_iter().map(|(back, t, p)| (run_day - Duration::days(back), t, p)).collect(),
                    run_time,
                    lookback_days: lookback,
                    half_life_days: [7.0, 1.0, 2.5][half_life],
                    part_rows,
                    encoding: Encoding {
                        format: encodings[encoding % 3],
                        compression: if encoding >= 3 { Compression::Gzip } else { Compression::None },
                    },
                    threads,
                    row_group_rows,
                    catalogue_files: files,
                }
            },
        )
}

async fn write_inputs(store: &LocalDirStore, case: &Case) {
    let per_file = case.catalogue.len().div_ceil(case.catalogue_files);
    for (i, rows) in case.catalogue.chunks(per_file).enumerate() {
        let bytes = catalogue_file(rows, case.row_group_rows);
        store.put(&format!("catalogue/part-{i}.parquet"), bytes.into(), "application/octet-stream").await.unwrap();
    }
    let mut days: Vec<NaiveDate> = case.plays.iter().map(|p| p.0).collect();
    days.sort();
    days.dedup();
    for day in days {
        let rows: Vec<(i64, i64)> = case.plays.iter().filter(|p| p.0 == day).map(|p| (p.1, p.2)).collect();
        // Two files per day, to sum a track across files.
        let (first, second) = rows.split_at(rows.len() / 2);
        for (i, half) in [first, second].into_iter().enumerate().filter(|(_, h)| !h.is_empty()) {
            let key = format!("plays/date={day}/part-{i}.parquet");
            store.put(&key, plays_file(half, case.row_group_rows).into(), "application/octet-stream").await.unwrap();
        }
    }
}

async fn check(case: Case) -> Result<(), TestCaseError> {
    let stores = LocalStores::new("ranking-reference");
    let (input, output) = (&stores.data, &stores.staging);
    write_inputs(input, &case).await;
    let settings = RankSettings {
        rules: ScoringRules { lookback_days: case.lookback_days, half_life_days: case.half_life_days },
        part_rows: case.part_rows,
        encoding: case.encoding,
        threads: case.threads,
        ..RankSettings::default()
    };
    let manifest = rank_run(input, output, &settings, case.run_time).await.unwrap().manifest;
    let expected =
        reference_reports(&case.catalogue, &case.plays, case.run_time, case.lookback_days, case.half_life_days);
    for kind in ReportKind::ALL {
        let report = manifest.report(kind).unwrap();
        let mut lines = Vec::new();
        for part in &report.parts {
            let bytes = output.get(&part.key).await.unwrap();
            prop_assert_eq!(&part.sha256, &sha256_hex(&bytes));
            prop_assert_eq!(part.bytes, bytes.len() as u64);
            let part_lines = parse_part(&bytes, case.encoding, kind);
            prop_assert_eq!(part.rows, part_lines.len() as u64);
            prop_assert!(part.rows <= case.part_rows);
            lines.extend(part_lines);
        }
        prop_assert_eq!(report.rows, lines.len() as u64);
        assert_report_invariants(kind.data_type(), &lines);
        prop_assert_eq!(&lines, &expected[kind.data_type()], "{} differs from the reference", kind.data_type());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn optimised_pipeline_matches_reference(case in case_strategy()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check(case))?;
    }
}

async fn rank_small(
    catalogue: &[(i64, i64, i64)],
    plays: &[(i64, i64)],
    part_rows: u64,
) -> (LocalStores, popularity_reports::manifest::RunManifest) {
    let stores = LocalStores::new("ranking-reference");
    let (input, output) = (&stores.data, &stores.staging);
    input
        .put("catalogue/part-0.parquet", catalogue_file(catalogue, 2).into(), "application/octet-stream")
        .await
        .unwrap();
    if !plays.is_empty() {
        input
            .put("plays/date=2026-11-18/part-0.parquet", plays_file(plays, 2).into(), "application/octet-stream")
            .await
            .unwrap();
    }
    let settings = RankSettings { part_rows, ..RankSettings::default() };
    let manifest = rank_run(input, output, &settings, "2026-11-19T03:00:00Z".parse().unwrap()).await.unwrap().manifest;
    (stores, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_nobody_played_ranks_by_id_with_zero_modifiers() {
    let (stores, manifest) = rank_small(&[(30, 2, 9), (10, 1, 9), (20, 2, 8)], &[], 100).await;
    let part = &manifest.report(ReportKind::Track).unwrap().parts[0];
    let lines = parse_part(&stores.staging.get(&part.key).await.unwrap(), Encoding::default(), ReportKind::Track);
    assert_eq!(lines, vec![(10, 1, 0.0), (20, 2, 0.0), (30, 3, 0.0)]);
    let artists = &manifest.report(ReportKind::Artist).unwrap().parts[0];
    let lines = parse_part(&stores.staging.get(&artists.key).await.unwrap(), Encoding::default(), ReportKind::Artist);
    assert_eq!(lines, vec![(1, 1, 0.0), (2, 2, 0.0)]);
    assert_eq!(manifest.inputs.play_rows, 0);
    assert!(manifest.scoring.days_with_plays.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_split_into_numbered_parts_of_at_most_part_rows() {
    let catalogue: Vec<(i64, i64, i64)> = (1..=5).map(|t| (t, 100 + t, 200)).collect();
    let (stores, manifest) = rank_small(&catalogue, &[(3, 10), (5, 7), (1, 7)], 2).await;
    let tracks = manifest.report(ReportKind::Track).unwrap();
    let keys: Vec<&str> = tracks.parts.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "reports/track_popularity/20261119030000/part-001.json",
            "reports/track_popularity/20261119030000/part-002.json",
            "reports/track_popularity/20261119030000/part-003.json"
        ]
    );
    assert_eq!(tracks.parts.iter().map(|p| p.rows).collect::<Vec<_>>(), [2, 2, 1]);
    let mut lines = Vec::new();
    for part in &tracks.parts {
        lines.extend(parse_part(&stores.staging.get(&part.key).await.unwrap(), Encoding::default(), ReportKind::Track));
    }
    // Track 3 leads; 1 and 5 tie and rank by id; 2 and 4 were not played.
    let order: Vec<i64> = lines.iter().map(|l| l.0).collect();
    assert_eq!(order, [3, 1, 5, 2, 4]);
    assert_eq!(manifest.report(ReportKind::Product).unwrap().parts.len(), 1);
}
