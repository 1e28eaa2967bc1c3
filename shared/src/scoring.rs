//! The exact scoring rules of docs/design.md, "Scores and ranks": which UTC
//! days a run looks at, the integer weight of each day, and the rounding of
//! `searchModifier`. Scores are integers so every correct implementation, in
//! any summation order, produces the same ranks.

use chrono::{DateTime, Duration, NaiveDate, Utc};

/// 2^32: day weights are fixed-point fractions with 32 fractional bits.
pub const WEIGHT_ONE: f64 = 4_294_967_296.0;

/// The window lengths a run accepts, in days.
pub const LOOKBACK_DAYS_RANGE: std::ops::RangeInclusive<u32> = 1..=366;
/// The half-lives a run accepts, in days. Below 0.1 even the newest day of
/// the window weighs next to nothing (a day old at most, it keeps 2^-10 at
/// 0.1, and rounds to a weight of 0 below 1/33 — every report all zeros);
/// above 3650 (ten years) every day of a window of at most 366 days weighs
/// the same within 7 %, so a longer half-life only hides a typo.
pub const HALF_LIFE_DAYS_RANGE: std::ops::RangeInclusive<f64> = 0.1..=3650.0;
/// [`LOOKBACK_DAYS_RANGE`] in words, for messages.
pub const LOOKBACK_DAYS_EXPECTED: &str = "a whole number of days from 1 to 366";
/// [`HALF_LIFE_DAYS_RANGE`] in words, for messages.
pub const HALF_LIFE_DAYS_EXPECTED: &str = "a number of days from 0.1 to 3650";

/// A scoring setting outside what a run accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoringRulesError {
    #[error("a lookback of {0} days cannot be used: expected {LOOKBACK_DAYS_EXPECTED}")]
    LookbackDays(u32),
    #[error("a half-life of {0:?} days cannot be used: expected {HALF_LIFE_DAYS_EXPECTED}")]
    HalfLifeDays(f64),
}

/// Whether `days` is a usable half-life (finite and within
/// [`HALF_LIFE_DAYS_RANGE`]).
pub fn is_usable_half_life(days: f64) -> bool {
    days.is_finite() && HALF_LIFE_DAYS_RANGE.contains(&days)
}

/// How far back a run looks and how fast plays lose weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringRules {
    pub lookback_days: u32,
    pub half_life_days: f64,
}

impl Default for ScoringRules {
    fn default() -> Self {
        Self { lookback_days: 28, half_life_days: 7.0 }
    }
}

/// One day of the window with its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedDay {
    pub day: NaiveDate,
    pub weight: u64,
}

impl ScoringRules {
    /// Refuses settings that cannot give meaningful scores (see
    /// [`HALF_LIFE_DAYS_RANGE`]).
    pub fn check(&self) -> Result<(), ScoringRulesError> {
        if !LOOKBACK_DAYS_RANGE.contains(&self.lookback_days) {
            return Err(ScoringRulesError::LookbackDays(self.lookback_days));
        }
        if !is_usable_half_life(self.half_life_days) {
            return Err(ScoringRulesError::HalfLifeDays(self.half_life_days));
        }
        Ok(())
    }

    /// The days d with `T - lookback <= start of d < T`, oldest first, each
    /// with `w_d = round(2^(-age_d / H) * 2^32)`, age_d = (T - start of d) in days.
    pub fn window(&self, run_time: DateTime<Utc>) -> Vec<WeightedDay> {
        let earliest = run_time - Duration::days(i64::from(self.lookback_days));
        let mut day = earliest.date_naive();
        if day_start(day) < earliest {
            day = day.succ_opt().expect("date in range");
        }
        let mut days = Vec::with_capacity(self.lookback_days as usize);
        while day_start(day) < run_time {
            days.push(WeightedDay { day, weight: self.weight(run_time, day) });
            day = day.succ_opt().expect("date in range");
        }
        days
    }

    fn weight(&self, run_time: DateTime<Utc>, day: NaiveDate) -> u64 {
        let age_seconds = (run_time - day_start(day)).num_milliseconds() as f64 / 1000.0;
        let age_days = age_seconds / 86_400.0;
        (2f64.powf(-age_days / self.half_life_days) * WEIGHT_ONE).round() as u64
    }
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// `searchModifier` as an integer number of hundredths (0..=100):
/// `round(ln(1 + S/2^32) / ln(1 + S_max/2^32), 2)`, 0 when `S_max` is 0.
/// The published value is exactly `hundredths as f64 / 100.0`, which is what
/// `(x * 100.0).round() / 100.0` yields.
pub fn modifier_hundredths(score: u128, max_score: u128) -> u8 {
    if max_score == 0 {
        return 0;
    }
    let scale = |s: u128| (1.0 + s as f64 / WEIGHT_ONE).ln();
    let ratio = scale(score) / scale(max_score);
    (ratio * 100.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn window_has_lookback_days_ending_with_the_day_of_the_run() {
        let days = ScoringRules::default().window(at("2026-11-19T03:00:00Z"));
        assert_eq!(days.len(), 28);
        assert_eq!(days.first().unwrap().day, NaiveDate::from_ymd_opt(2026, 10, 23).unwrap());
        assert_eq!(days.last().unwrap().day, NaiveDate::from_ymd_opt(2026, 11, 19).unwrap());
    }

    #[test]
    fn a_run_at_midnight_excludes_the_day_that_starts_then() {
        let days = ScoringRules { lookback_days: 2, half_life_days: 7.0 }.window(at("2026-11-19T00:00:00Z"));
        let dates: Vec<_> = days.iter().map(|d| d.day.to_string()).collect();
        assert_eq!(dates, ["2026-11-17", "2026-11-18"]);
        // Ages are exactly 2 and 1 days.
        assert_eq!(days[0].weight, (2f64.powf(-2.0 / 7.0) * WEIGHT_ONE).round() as u64);
        assert_eq!(days[1].weight, (2f64.powf(-1.0 / 7.0) * WEIGHT_ONE).round() as u64);
    }

    #[test]
    fn weights_halve_every_half_life_and_use_fractional_ages() {
        let rules = ScoringRules { lookback_days: 15, half_life_days: 7.0 };
        let days = rules.window(at("2026-11-19T12:00:00Z"));
        let today = days.last().unwrap();
        assert_eq!(today.weight, (2f64.powf(-0.5 / 7.0) * WEIGHT_ONE).round() as u64);
        let week_ago = days.iter().find(|d| d.day == NaiveDate::from_ymd_opt(2026, 11, 12).unwrap()).unwrap();
        assert_eq!(week_ago.weight, (2f64.powf(-7.5 / 7.0) * WEIGHT_ONE).round() as u64);
        assert!(days.windows(2).all(|w| w[0].weight < w[1].weight));
    }

    #[test]
    fn half_lives_too_short_or_too_long_to_mean_anything_are_refused() {
        for half_life in [1e-300, 0.0, -7.0, 0.09, 3650.5, 1e300, f64::NAN, f64::INFINITY] {
            let rules = ScoringRules { lookback_days: 28, half_life_days: half_life };
            let error = rules.check().unwrap_err();
            assert!(matches!(error, ScoringRulesError::HalfLifeDays(_)), "{half_life}");
            assert!(error.to_string().contains(&format!("{half_life:?} days")), "{error}");
        }
        for lookback in [0, 367] {
            let rules = ScoringRules { lookback_days: lookback, half_life_days: 7.0 };
            assert_eq!(rules.check(), Err(ScoringRulesError::LookbackDays(lookback)));
        }
        for (lookback, half_life) in [(1, 0.1), (28, 7.0), (366, 3650.0)] {
            assert_eq!(ScoringRules { lookback_days: lookback, half_life_days: half_life }.check(), Ok(()));
        }
    }

    #[test]
    fn at_the_shortest_half_life_the_newest_day_still_weighs() {
        // A run at midnight: the newest day of its window is a whole day old.
        let rules = ScoringRules { lookback_days: 28, half_life_days: *HALF_LIFE_DAYS_RANGE.start() };
        let days = rules.window(at("2026-11-19T00:00:00Z"));
        assert!(days.last().unwrap().weight >= 1 << 22, "{:?}", days.last());
        // Where a half-life that passed the old check (> 0) left every weight 0.
        let degenerate = ScoringRules { lookback_days: 28, half_life_days: 1e-300 };
        assert!(degenerate.window(at("2026-11-19T00:00:00Z")).iter().all(|d| d.weight == 0));
    }

    #[test]
    fn modifier_is_one_for_the_top_and_zero_without_plays() {
        assert_eq!(modifier_hundredths(5 << 32, 5 << 32), 100);
        assert_eq!(modifier_hundredths(0, 5 << 32), 0);
        assert_eq!(modifier_hundredths(0, 0), 0);
    }

    #[test]
    fn modifier_rounds_half_away_from_zero_on_the_log_scale() {
        // ln(1 + 1) / ln(1 + 3) = 0.5 exactly -> 50.
        assert_eq!(modifier_hundredths(1 << 32, 3 << 32), 50);
        let expected = ((1.0f64 + 10.0).ln() / (1.0f64 + 1000.0).ln() * 100.0).round() as u8;
        assert_eq!(modifier_hundredths(10 << 32, 1000 << 32), expected);
        assert_eq!(expected, 35);
    }
}
