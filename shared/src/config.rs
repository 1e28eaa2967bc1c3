//! Typed configuration of each function, read once at cold start from the
//! environment variables of DESIGN §8. A missing or malformed variable fails
//! the cold start with its name and what was expected. Nothing else in the
//! library reads the environment.

use crate::rank::RankSettings;
use crate::scoring::ScoringRules;

/// A configuration variable is missing or malformed.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is not set; {purpose}")]
    Missing { name: &'static str, purpose: &'static str },
    #[error("environment variable {name}={value:?} is malformed: expected {expected}")]
    Malformed { name: &'static str, value: String, expected: &'static str },
}

/// `main` returning this error prints its `Debug`: make that the message.
impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Reads variables through `lookup` so tests need not touch the process
/// environment.
struct Variables<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Variables<F> {
    fn required(&self, name: &'static str, purpose: &'static str) -> Result<String, ConfigError> {
        match (self.0)(name) {
            Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
            _ => Err(ConfigError::Missing { name, purpose }),
        }
    }

    fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &'static str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        let Some(text) = self.optional(name) else { return Ok(default) };
        match text.parse::<T>() {
            Ok(value) if valid(&value) => Ok(value),
            _ => Err(ConfigError::Malformed { name, value: text, expected }),
        }
    }
}

/// Configuration of the `rank` function.
#[derive(Debug, Clone, PartialEq)]
pub struct RankConfig {
    pub staging_bucket: String,
    pub data_bucket: String,
    pub data_prefix: String,
    pub rules: ScoringRules,
    pub part_rows: u64,
}

impl RankConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Variables(lookup);
        Ok(Self {
            staging_bucket: vars.required("STAGING_BUCKET", "name the bucket reports and manifests are written to")?,
            data_bucket: vars.required("DATA_BUCKET", "name the bucket holding catalogue/ and plays/")?,
            data_prefix: vars.optional("DATA_PREFIX").unwrap_or_default(),
            rules: ScoringRules {
                lookback_days: vars
                    .parsed("LOOKBACK_DAYS", 28, "a whole number of days from 1 to 366", |d| (1..=366).contains(d))?,
                half_life_days: vars
                    .parsed("HALF_LIFE_DAYS", 7.0, "a positive number of days", |h: &f64| h.is_finite() && *h > 0.0)?,
            },
            part_rows: vars.parsed("PART_ROWS", 5_000_000, "a whole number of items from 1 to 4000000000", |n| {
                (1..=4_000_000_000).contains(n)
            })?,
        })
    }

    /// Settings of a run with this configuration (canonical JSON reports).
    pub fn settings(&self) -> RankSettings {
        RankSettings { rules: self.rules, part_rows: self.part_rows, ..RankSettings::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_apply_when_only_buckets_are_set() {
        let config =
            RankConfig::from_lookup(lookup(&[("STAGING_BUCKET", "staging"), ("DATA_BUCKET", "data")])).unwrap();
        assert_eq!(config.data_prefix, "");
        assert_eq!(config.rules, ScoringRules { lookback_days: 28, half_life_days: 7.0 });
        assert_eq!(config.part_rows, 5_000_000);
    }

    #[test]
    fn when_staging_bucket_is_missing_the_error_names_it() {
        let err = RankConfig::from_lookup(lookup(&[("DATA_BUCKET", "data")])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { name: "STAGING_BUCKET", .. }));
        assert!(err.to_string().contains("STAGING_BUCKET"));
    }

    #[test]
    fn when_a_number_is_malformed_the_error_names_variable_and_value() {
        for (name, value) in
            [("LOOKBACK_DAYS", "0"), ("LOOKBACK_DAYS", "four"), ("HALF_LIFE_DAYS", "-1"), ("PART_ROWS", "0")]
        {
            let err = RankConfig::from_lookup(lookup(&[("STAGING_BUCKET", "s"), ("DATA_BUCKET", "d"), (name, value)]))
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(name) && text.contains(value), "{text}");
        }
    }
}
