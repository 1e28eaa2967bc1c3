//! Parses the `--data` / `--out` arguments of the operator CLI: either a
//! local directory or `s3://bucket[/prefix]`.

use std::path::PathBuf;

/// Where a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{input:?} is not a directory path or s3://bucket[/prefix]: {reason}")]
pub struct StoreLocationError {
    input: String,
    reason: &'static str,
}

impl std::str::FromStr for StoreLocation {
    type Err = StoreLocationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| StoreLocationError { input: input.to_owned(), reason };
        match input.strip_prefix("s3://") {
            None if input.is_empty() => Err(fail("it is empty")),
            None => Ok(Self::Directory(PathBuf::from(input))),
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(fail("the bucket name is empty"));
                }
                Ok(Self::S3 { bucket: bucket.to_owned(), prefix: normalise_prefix(prefix) })
            }
        }
    }
}

/// A key prefix is empty or ends with exactly one `/`.
pub fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_normalised_prefix() {
        let parsed: StoreLocation = "s3://data/raw/music".parse().unwrap();
        assert_eq!(parsed, StoreLocation::S3 { bucket: "data".into(), prefix: "raw/music/".into() });
        let bare: StoreLocation = "s3://data".parse().unwrap();
        assert_eq!(bare, StoreLocation::S3 { bucket: "data".into(), prefix: String::new() });
    }

    #[test]
    fn an_s3_url_without_bucket_is_rejected() {
        let err = "s3:///x".parse::<StoreLocation>().unwrap_err();
        assert!(err.to_string().contains("bucket name is empty"), "{err}");
    }

    #[test]
    fn anything_else_is_a_directory() {
        let parsed: StoreLocation = "/tmp/out".parse().unwrap();
        assert_eq!(parsed, StoreLocation::Directory("/tmp/out".into()));
    }
}
