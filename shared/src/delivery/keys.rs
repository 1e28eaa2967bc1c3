//! The staging keys deliveries are made of (docs/design.md, "Reports and layouts"): job objects
//! `jobs/<kind>/<runId>/<tenantId>/<feedId>.json`, status objects
//! `status/<runId>/<tenantId>/<feedId>.json`, connection-test requests
//! `connection-tests/<kind>/<requestId>/<tenantId>/<connectorName>.json` and
//! their results `connection-test-results/<requestId>/<tenantId>/<connectorName>.json`
//! — and the decoding of the URL-encoded keys S3 events carry, done here and
//! nowhere else. Pure functions, no I/O.

use std::string::FromUtf8Error;

use crate::connector_registry::{JobKind, UnknownJobKind};
use crate::domain::RunId;
use crate::tenant::is_safe_id;

pub const JOBS_PREFIX: &str = "jobs/";
pub const STATUS_PREFIX: &str = "status/";
pub const CONNECTION_TESTS_PREFIX: &str = "connection-tests/";
pub const CONNECTION_TEST_RESULTS_PREFIX: &str = "connection-test-results/";

/// The feed id of the status object fanout writes for a tenant whose secret
/// cannot be used at all (`status/<runId>/<tenantId>/_tenant.json`). No feed
/// can have it: feed ids start with a letter or digit.
pub const TENANT_STATUS_FEED_ID: &str = "_tenant";

/// `jobs/<kind>/<runId>/<tenantId>/<feedId>.json`.
pub fn job_key(kind: JobKind, run_id: RunId, tenant_id: &str, feed_id: &str) -> String {
    format!("{JOBS_PREFIX}{kind}/{run_id}/{tenant_id}/{feed_id}.json")
}

/// `status/<runId>/<tenantId>/<feedId>.json`.
pub fn status_key(run_id: RunId, tenant_id: &str, feed_id: &str) -> String {
    format!("{STATUS_PREFIX}{run_id}/{tenant_id}/{feed_id}.json")
}

/// `connection-tests/<kind>/<requestId>/<tenantId>/<connectorName>.json`.
pub fn connection_test_key(kind: JobKind, request_id: &str, tenant_id: &str, connector: &str) -> String {
    format!("{CONNECTION_TESTS_PREFIX}{kind}/{request_id}/{tenant_id}/{connector}.json")
}

/// `connection-test-results/<requestId>/<tenantId>/<connectorName>.json`.
pub fn connection_test_result_key(request_id: &str, tenant_id: &str, connector: &str) -> String {
    format!("{CONNECTION_TEST_RESULTS_PREFIX}{request_id}/{tenant_id}/{connector}.json")
}

/// The `<tenantId>` segment of a key for a secret-name suffix that may not be
/// a valid id (an invalid secret can be named anything): valid ids are kept,
/// anything else has each byte outside `[a-z0-9-]` written as `%XX`, so the
/// segment is one key segment and still readable.
pub fn tenant_key_segment(tenant_id_from_name: &str) -> String {
    if is_safe_id(tenant_id_from_name) {
        return tenant_id_from_name.to_owned();
    }
    let mut segment = String::with_capacity(tenant_id_from_name.len() * 3);
    for byte in tenant_id_from_name.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    if segment.is_empty() {
        segment.push_str("%00");
    }
    segment
}

/// The identifiers a job key is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKeyParts {
    pub kind: JobKind,
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
}

impl JobKeyParts {
    pub fn job_key(&self) -> String {
        job_key(self.kind, self.run_id, &self.tenant_id, &self.feed_id)
    }

    /// Where the deliverer of this job writes its status.
    pub fn status_key(&self) -> String {
        status_key(self.run_id, &self.tenant_id, &self.feed_id)
    }
}

/// The identifiers a connection-test request key is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionTestKeyParts {
    pub kind: JobKind,
    pub request_id: String,
    pub tenant_id: String,
    pub connector: String,
}

impl ConnectionTestKeyParts {
    pub fn request_key(&self) -> String {
        connection_test_key(self.kind, &self.request_id, &self.tenant_id, &self.connector)
    }

    pub fn result_key(&self) -> String {
        connection_test_result_key(&self.request_id, &self.tenant_id, &self.connector)
    }
}

/// What an object-created event for a deliverer is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelivererKey {
    Job(JobKeyParts),
    ConnectionTest(ConnectionTestKeyParts),
}

impl DelivererKey {
    pub fn kind(&self) -> JobKind {
        match self {
            DelivererKey::Job(parts) => parts.kind,
            DelivererKey::ConnectionTest(parts) => parts.kind,
        }
    }

    /// The key itself, for messages.
    pub fn key(&self) -> String {
        match self {
            DelivererKey::Job(parts) => parts.job_key(),
            DelivererKey::ConnectionTest(parts) => parts.request_key(),
        }
    }
}

/// The longest key echoed in an error: a hostile event can carry a key of
/// any length, and an error quoting it whole would flood logs and statuses.
const MAX_ECHOED_KEY_CHARS: usize = 300;

/// `key` as errors quote it: whole up to [`MAX_ECHOED_KEY_CHARS`], cut with `…` beyond.
pub fn echoed_key(key: &str) -> String {
    match key.char_indices().nth(MAX_ECHOED_KEY_CHARS) {
        None => key.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &key[..cut], key.len()),
    }
}

/// A staging key that cannot be used, with what is wrong with it. Keys are
/// quoted through [`echoed_key`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "S3 event key {key:?} has a malformed escape at byte {position}: '%' must be followed by two hexadecimal digits"
    )]
    MalformedEscape { key: String, position: usize },
    #[error("S3 event key {key:?} does not decode to UTF-8 text")]
    NotUtf8 {
        key: String,
        #[source]
        source: FromUtf8Error,
    },
    #[error("{key:?} is not a job key of the form jobs/<kind>/<runId>/<tenantId>/<feedId>.json: {reason}")]
    NotAJobKey { key: String, reason: String },
    #[error(
        "{key:?} is not a connection-test key of the form \
         connection-tests/<kind>/<requestId>/<tenantId>/<connectorName>.json: {reason}"
    )]
    NotAConnectionTestKey { key: String, reason: String },
    #[error("{key:?} is neither a job (jobs/…) nor a connection test (connection-tests/…); check the S3 notification filters")]
    NotADelivererKey { key: String },
}

/// Decode an object key as S3 event notifications carry it: URL-encoded,
/// with `+` for a space. The decoded bytes must be UTF-8, as every S3 key is.
pub fn decode_s3_event_key(encoded: &str) -> Result<String, KeyError> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let high = bytes.get(i + 1).and_then(|&b| hex_value(b));
                let low = bytes.get(i + 2).and_then(|&b| hex_value(b));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(KeyError::MalformedEscape { key: echoed_key(encoded), position: i });
                };
                decoded.push(high << 4 | low);
                i += 2;
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8(decoded).map_err(|source| KeyError::NotUtf8 { key: echoed_key(encoded), source })
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// `<kind>/<a>/<b>/<c>.json` after a prefix: the kind and three checked ids
/// (the first of which may be a run id, checked by the caller).
fn split_four<'k>(
    rest: &'k str,
    fail: &dyn Fn(String) -> KeyError,
) -> Result<(JobKind, &'k str, &'k str, &'k str), KeyError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let [kind, first, tenant_id, file] = segments[..] else {
        return Err(fail(format!("expected 4 segments after the prefix, found {}", segments.len())));
    };
    let kind: JobKind = kind.parse().map_err(|e: UnknownJobKind| fail(e.to_string()))?;
    if !is_safe_id(tenant_id) {
        return Err(fail(format!("tenant id {:?} is not a valid id", echoed_key(tenant_id))));
    }
    let name =
        file.strip_suffix(".json").ok_or_else(|| fail(format!("{:?} does not end with .json", echoed_key(file))))?;
    Ok((kind, first, tenant_id, name))
}

/// Split a decoded job key (see [`decode_s3_event_key`]) into its parts,
/// checking each as fanout would have written it.
pub fn parse_job_key(key: &str) -> Result<JobKeyParts, KeyError> {
    let fail = |reason: String| KeyError::NotAJobKey { key: echoed_key(key), reason };
    let rest = key.strip_prefix(JOBS_PREFIX).ok_or_else(|| fail(format!("it does not start with {JOBS_PREFIX:?}")))?;
    let (kind, run_id, tenant_id, feed_id) = split_four(rest, &fail)?;
    let run_id: RunId = run_id.parse().map_err(fail)?;
    if !is_safe_id(feed_id) {
        return Err(fail(format!("feed id {:?} is not a valid id", echoed_key(feed_id))));
    }
    Ok(JobKeyParts { kind, run_id, tenant_id: tenant_id.to_owned(), feed_id: feed_id.to_owned() })
}

/// Split a decoded connection-test request key into its parts.
pub fn parse_connection_test_key(key: &str) -> Result<ConnectionTestKeyParts, KeyError> {
    let fail = |reason: String| KeyError::NotAConnectionTestKey { key: echoed_key(key), reason };
    let rest = key
        .strip_prefix(CONNECTION_TESTS_PREFIX)
        .ok_or_else(|| fail(format!("it does not start with {CONNECTION_TESTS_PREFIX:?}")))?;
    let (kind, request_id, tenant_id, connector) = split_four(rest, &fail)?;
    if !is_safe_id(request_id) {
        return Err(fail(format!("request id {:?} is not a valid id", echoed_key(request_id))));
    }
    if !is_safe_id(connector) {
        return Err(fail(format!("connector name {:?} is not a valid id", echoed_key(connector))));
    }
    Ok(ConnectionTestKeyParts {
        kind,
        request_id: request_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        connector: connector.to_owned(),
    })
}

/// A decoded key of an event a deliverer receives: a job or a connection test.
pub fn parse_deliverer_key(key: &str) -> Result<DelivererKey, KeyError> {
    if key.starts_with(JOBS_PREFIX) {
        parse_job_key(key).map(DelivererKey::Job)
    } else if key.starts_with(CONNECTION_TESTS_PREFIX) {
        parse_connection_test_key(key).map(DelivererKey::ConnectionTest)
    } else {
        Err(KeyError::NotADelivererKey { key: echoed_key(key) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunId {
        "20261119030000".parse().unwrap()
    }

    #[test]
    fn job_and_status_keys_follow_the_design_layout_and_round_trip() {
        assert_eq!(job_key(JobKind::S3, run(), "acme", "all"), "jobs/s3/20261119030000/acme/all.json");
        assert_eq!(status_key(run(), "acme", "all"), "status/20261119030000/acme/all.json");
        for kind in JobKind::ALL {
            let parts = JobKeyParts { kind, run_id: run(), tenant_id: "acme".into(), feed_id: "weekly-tracks".into() };
            let key = parts.job_key();
            assert_eq!(parse_job_key(&key).unwrap(), parts, "{key}");
            assert_eq!(parse_deliverer_key(&key).unwrap(), DelivererKey::Job(parts.clone()));
            assert_eq!(parts.status_key(), "status/20261119030000/acme/weekly-tracks.json");
        }
    }

    #[test]
    fn connection_test_keys_follow_the_design_layout_and_round_trip() {
        let parts = ConnectionTestKeyParts {
            kind: JobKind::Gcs,
            request_id: "req-7".into(),
            tenant_id: "acme".into(),
            connector: "bucket".into(),
        };
        assert_eq!(parts.request_key(), "connection-tests/gcs/req-7/acme/bucket.json");
        assert_eq!(parts.result_key(), "connection-test-results/req-7/acme/bucket.json");
        assert_eq!(parse_deliverer_key(&parts.request_key()).unwrap(), DelivererKey::ConnectionTest(parts.clone()));
        for (key, fragment) in [
            ("connection-tests/gcs/Req/acme/bucket.json", "request id \"Req\""),
            ("connection-tests/gcs/req/acme/Bucket.json", "connector name \"Bucket\""),
            ("connection-tests/ftp/req/acme/bucket.json", "unknown job kind"),
            ("connection-tests/gcs/req/acme.json", "expected 4 segments"),
        ] {
            let error = parse_deliverer_key(key).unwrap_err().to_string();
            assert!(error.contains(fragment) && error.contains("connection-tests/"), "{key}: {error}");
        }
        let error = parse_deliverer_key("manifests/20261119030000.json").unwrap_err();
        assert!(matches!(error, KeyError::NotADelivererKey { .. }), "{error}");
    }

    #[test]
    fn a_key_from_an_s3_event_is_decoded_then_parsed() {
        let decoded = decode_s3_event_key("jobs%2Fs3/20261119030000/acme/all.json").unwrap();
        let parts = parse_job_key(&decoded).unwrap();
        assert_eq!((parts.kind, parts.tenant_id.as_str(), parts.feed_id.as_str()), (JobKind::S3, "acme", "all"));
    }

    #[test]
    fn malformed_job_keys_are_rejected_with_the_reason() {
        let cases = [
            ("status/20261119030000/acme/all.json", "does not start with \"jobs/\""),
            ("jobs/s3/20261119030000/acme/x/all.json", "expected 4 segments"),
            ("jobs/s3/20261119030000/all.json", "expected 4 segments"),
            ("jobs/ftp/20261119030000/acme/all.json", "unknown job kind \"ftp\""),
            ("jobs/s3/2026111903/acme/all.json", "14 digits"),
            ("jobs/s3/20261119030000/Acme/all.json", "tenant id \"Acme\""),
            ("jobs/s3/20261119030000/acme/all.txt", "does not end with .json"),
            ("jobs/s3/20261119030000/acme/a b.json", "feed id \"a b\""),
            ("jobs/s3/20261119030000/acme/.json", "feed id \"\""),
        ];
        for (key, fragment) in cases {
            let error = parse_job_key(key).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, KeyError::NotAJobKey { .. }), "{key}: {error:?}");
            assert!(message.contains(fragment) && message.contains(key), "{key}: {message}");
        }
    }

    #[test]
    fn a_huge_key_is_cut_in_errors() {
        let key = format!("jobs/s3/20261119030000/acme/{}.json", "x".repeat(200_000));
        let message = parse_job_key(&key).unwrap_err().to_string();
        assert!(message.len() < 2_000, "{} bytes", message.len());
        assert!(message.contains("bytes in all"), "{message}");
    }

    #[test]
    fn s3_event_keys_are_url_decoded_with_plus_for_space() {
        assert_eq!(decode_s3_event_key("a%20b").unwrap(), "a b");
        assert_eq!(decode_s3_event_key("a+b").unwrap(), "a b");
        assert_eq!(decode_s3_event_key("a%2Fb%2f").unwrap(), "a/b/");
        assert_eq!(decode_s3_event_key("%2B").unwrap(), "+");
        assert_eq!(decode_s3_event_key("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_s3_event_key("plain/key.json").unwrap(), "plain/key.json");
        assert_eq!(decode_s3_event_key("").unwrap(), "");
    }

    #[test]
    fn malformed_escapes_and_non_utf8_are_rejected_with_the_position() {
        for (key, position) in [("a%G1", 1), ("a%4", 1), ("%", 0), ("ok%2Fthen%z", 9), ("%4%41", 0)] {
            let error = decode_s3_event_key(key).unwrap_err();
            assert_eq!(error, KeyError::MalformedEscape { key: key.into(), position }, "{key}");
            assert!(error.to_string().contains("two hexadecimal digits"), "{error}");
        }
        let error = decode_s3_event_key("bad%FF").unwrap_err();
        assert!(matches!(error, KeyError::NotUtf8 { .. }), "{error:?}");
        assert!(error.to_string().contains("does not decode to UTF-8"), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }
}
