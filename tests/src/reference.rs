//! A plain, obviously-correct implementation of docs/design.md, "Scores and
//! ranks", written straight from the text with maps and sorts and no
//! attention to speed. The property tests compare the optimised pipeline with
//! it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};

/// One report line: id, searchRank, searchModifier.
pub type Line = (i64, u64, f64);

/// The three reports, keyed by data_type.
pub fn reference_reports(
    catalogue: &[(i64, i64, i64)],
    plays: &[(NaiveDate, i64, i64)],
    run_time: DateTime<Utc>,
    lookback_days: u32,
    half_life_days: f64,
) -> BTreeMap<&'static str, Vec<Line>> {
    let start_of = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let earliest = run_time - Duration::days(lookback_days as i64);
    let mut weights: HashMap<NaiveDate, u128> = HashMap::new();
    let mut day = earliest.date_naive() - Duration::days(1);
    while day <= run_time.date_naive() + Duration::days(1) {
        if earliest <= start_of(day) && start_of(day) < run_time {
            let age = (run_time - start_of(day)).num_milliseconds() as f64 / 1000.0 / 86400.0;
            weights.insert(day, (2f64.powf(-age / half_life_days) * 4294967296.0).round() as u128);
        }
        day += Duration::days(1);
    }
    let mut track_scores: HashMap<i64, u128> = catalogue.iter().map(|&(t, _, _)| (t, 0)).collect();
    for &(day, track, count) in plays {
        if let (Some(w), Some(score)) = (weights.get(&day), track_scores.get_mut(&track)) {
            *score += count as u128 * w;
        }
    }
    let mut artist_scores: HashMap<i64, u128> = HashMap::new();
    let mut product_scores: HashMap<i64, u128> = HashMap::new();
    for &(track, artist, product) in catalogue {
        *artist_scores.entry(artist).or_default() += track_scores[&track];
        *product_scores.entry(product).or_default() += track_scores[&track];
    }
    BTreeMap::from([
        ("track_popularity", rank(track_scores)),
        ("artist_popularity", rank(artist_scores)),
        ("product_popularity", rank(product_scores)),
    ])
}

fn rank(scores: HashMap<i64, u128>) -> Vec<Line> {
    let mut items: Vec<(i64, u128)> = scores.into_iter().collect();
    items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let max = items.first().map_or(0, |i| i.1);
    items
        .iter()
        .enumerate()
        .map(|(i, &(id, s))| {
            let modifier = if max == 0 {
                0.0
            } else {
                let x = (1.0 + s as f64 / 4294967296.0).ln() / (1.0 + max as f64 / 4294967296.0).ln();
                (x * 100.0).round() / 100.0
            };
            (id, i as u64 + 1, modifier)
        })
        .collect()
}
