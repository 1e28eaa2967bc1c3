//! Which engine ranks a run (docs/scaling.md, "Choosing the engine"): the
//! template parameter `RankEngine` (`lambda`, `athena` or `auto`), and for
//! `auto` the decision from the catalogue's size, counted from the Parquet
//! footers alone (a suffix GET per object, never the data), against what
//! one rank Lambda of the configured memory can hold.
//!
//! It decides and explains; it does not rank, start queries or publish. The
//! decision and its reason are logged by the caller and written into the run
//! manifest (`engine`, `engineReason`).

use futures_util::{StreamExt, TryStreamExt};

use crate::input::{self, InputError, ParquetObject, CATALOGUE_COLUMNS};
use crate::manifest::Engine;
use crate::store::ObjectStore;

/// Peak memory of one rank run per catalogue track, measured at 100M tracks
/// × 28 days: 4.66 GB (docs/benchmarks.md, "Full size"). Peak memory is
/// linear in the catalogue; longer windows add play rows, not memory per
/// track.
pub const RANK_BYTES_PER_TRACK: u64 = 47;

/// The share of the function's memory a run may be planned to use; the rest
/// is margin for the runtime, the allocator and the spread between
/// measurements (4.30–4.66 GB at 100M in two runs).
pub const RANK_MEMORY_PLANNED_PERCENT: u64 = 80;

/// Footers read at once when counting the catalogue's rows.
const FOOTERS_IN_FLIGHT: usize = 8;

/// The `RankEngine` template parameter (`RANK_ENGINE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RankEngineSetting {
    /// One rank Lambda ranks every run (the stack's first engine).
    #[default]
    Lambda,
    /// Every run is ranked by the `sql/` queries on Athena.
    Athena,
    /// Athena when the catalogue is past what one rank Lambda can hold
    /// ([`lambda_track_limit`]), the Lambda otherwise.
    Auto,
}

impl RankEngineSetting {
    pub const EXPECTED: &'static str = "lambda, athena or auto";

    pub fn name(self) -> &'static str {
        match self {
            RankEngineSetting::Lambda => "lambda",
            RankEngineSetting::Athena => "athena",
            RankEngineSetting::Auto => "auto",
        }
    }

    /// Parses the parameter's value; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "lambda" => Some(RankEngineSetting::Lambda),
            "athena" => Some(RankEngineSetting::Athena),
            "auto" => Some(RankEngineSetting::Auto),
            _ => None,
        }
    }
}

/// The engine of one run and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineChoice {
    pub engine: Engine,
    pub reason: String,
}

impl EngineChoice {
    /// The Lambda engine, for `reason`.
    pub fn lambda(reason: impl Into<String>) -> Self {
        Self { engine: Engine::Lambda, reason: reason.into() }
    }

    /// The Athena engine, for `reason`.
    pub fn athena(reason: impl Into<String>) -> Self {
        Self { engine: Engine::Athena, reason: reason.into() }
    }
}

/// The catalogue's size as its Parquet footers state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueSize {
    pub rows: u64,
    pub files: usize,
}

/// The most catalogue tracks one rank Lambda of `memory_mb` is planned to
/// hold: [`RANK_MEMORY_PLANNED_PERCENT`] of its memory at
/// [`RANK_BYTES_PER_TRACK`] a track (182,764,565 at 10,240 MB, 53,687,091 at
/// 3,008 MB).
pub fn lambda_track_limit(memory_mb: u32) -> u64 {
    u64::from(memory_mb) * 1024 * 1024 * RANK_MEMORY_PLANNED_PERCENT / 100 / RANK_BYTES_PER_TRACK
}

/// The engine `setting` gives a catalogue of `size` (needed for `auto`
/// only) with a rank Lambda of `rank_memory_mb`.
pub fn choose_engine(setting: RankEngineSetting, size: Option<CatalogueSize>, rank_memory_mb: u32) -> EngineChoice {
    match (setting, size) {
        (RankEngineSetting::Lambda, _) => EngineChoice::lambda("RankEngine=lambda"),
        (RankEngineSetting::Athena, _) => EngineChoice::athena("RankEngine=athena"),
        (RankEngineSetting::Auto, None) => {
            EngineChoice::athena("RankEngine=auto, and the catalogue's size is unknown: Athena has no memory limit")
        }
        (RankEngineSetting::Auto, Some(size)) => {
            let limit = lambda_track_limit(rank_memory_mb);
            let counted = format!(
                "{} catalogue tracks (footers of {} file(s)) against {limit} for a {rank_memory_mb} MB rank \
                 Lambda ({RANK_BYTES_PER_TRACK} bytes a track, {RANK_MEMORY_PLANNED_PERCENT}% of its memory)",
                size.rows, size.files
            );
            if size.rows > limit {
                EngineChoice::athena(format!("RankEngine=auto: {counted}: past the Lambda's limit"))
            } else {
                EngineChoice::lambda(format!("RankEngine=auto: {counted}: within the Lambda's limit"))
            }
        }
    }
}

/// Counts the catalogue's rows from the footers of its objects: one suffix
/// GET per object (a second for a footer longer than 64 KiB), never the
/// data. The footers are checked as `rank` checks them (the three catalogue
/// columns must be there), so a broken catalogue fails here, naming the
/// object, before any query is started.
pub async fn count_catalogue_rows<S: ObjectStore>(store: &S) -> Result<CatalogueSize, InputError> {
    let files = input::find_catalogue(store).await?;
    let rows: Vec<u64> = futures_util::stream::iter(files.iter())
        // A whole-read limit of 0 makes every object a ranged read: the
        // footer only.
        .map(|file| async move { ParquetObject::open(store, file, &CATALOGUE_COLUMNS, 0).await.map(|o| o.rows()) })
        .buffered(FOOTERS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(CatalogueSize { rows: rows.iter().sum(), files: files.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lambda_limit_follows_the_measured_bytes_per_track_and_the_memory() {
        assert_eq!(lambda_track_limit(10_240), 182_764_565);
        assert_eq!(lambda_track_limit(3_008), 53_687_091);
        // The measured run: 100M tracks fit the largest Lambda.
        assert!(lambda_track_limit(10_240) > 100_000_000);
        assert!(lambda_track_limit(10_240) * RANK_BYTES_PER_TRACK <= 10_240 * 1024 * 1024);
    }

    #[test]
    fn auto_picks_athena_only_past_the_limit_and_says_why() {
        let limit = lambda_track_limit(10_240);
        let at = |rows| choose_engine(RankEngineSetting::Auto, Some(CatalogueSize { rows, files: 12 }), 10_240);
        let within = at(limit);
        assert_eq!(within.engine, Engine::Lambda);
        assert!(within.reason.contains("182764565 catalogue tracks (footers of 12 file(s))"), "{}", within.reason);
        assert!(within.reason.contains("within"), "{}", within.reason);
        let past = at(limit + 1);
        assert_eq!(past.engine, Engine::Athena);
        assert!(past.reason.contains("past the Lambda's limit"), "{}", past.reason);
        // A smaller Lambda hands over sooner.
        let small = choose_engine(RankEngineSetting::Auto, Some(CatalogueSize { rows: 60_000_000, files: 1 }), 3_008);
        assert_eq!(small.engine, Engine::Athena);
    }

    #[test]
    fn a_fixed_setting_decides_whatever_the_size() {
        let huge = Some(CatalogueSize { rows: u64::MAX, files: 1 });
        assert_eq!(choose_engine(RankEngineSetting::Lambda, huge, 512).engine, Engine::Lambda);
        assert_eq!(
            choose_engine(RankEngineSetting::Athena, Some(CatalogueSize { rows: 1, files: 1 }), 10_240).engine,
            Engine::Athena
        );
        assert_eq!(choose_engine(RankEngineSetting::Athena, None, 10_240).reason, "RankEngine=athena");
    }

    #[test]
    fn the_setting_parses_its_three_values_only() {
        for setting in [RankEngineSetting::Lambda, RankEngineSetting::Athena, RankEngineSetting::Auto] {
            assert_eq!(RankEngineSetting::parse(setting.name()), Some(setting));
        }
        assert_eq!(RankEngineSetting::parse("Athena"), None);
        assert_eq!(RankEngineSetting::parse(""), None);
    }
}
