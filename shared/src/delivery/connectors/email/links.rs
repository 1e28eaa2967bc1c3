//! Presigned download links for email delivery (docs/design.md, "Delivery rules"). A presigned URL
//! lives no longer than the credentials that signed it, and a Lambda role's
//! credentials last hours, not 7 days. So links are signed with the
//! long-term keys of a dedicated signing user, read from the secret named
//! by `LINK_SIGNER_SECRET` (`{"accessKeyId": …, "secretAccessKey": …}`) at
//! each delivery, so a rotated key is picked up. Without that secret the
//! function signs with its own credentials and reports their real, shorter
//! expiry, which the email then states; session credentials that do not say
//! when they expire (Lambda's, from environment variables) are assumed to
//! last only [`UNKNOWN_SESSION_LINK_LIFETIME`]. Key values never leave this
//! module except inside the signature of a URL.

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_s3::presigning::PresigningConfig;

use crate::aws_errors::{cut, display_chain, one_line};
use crate::delivery::error::{ConnectorFailure, DeliveryError};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::warn;

/// Links for some keys and when they stop working. Its `Debug` shows each
/// link through [`redacted_url`]: a presigned URL is a bearer credential
/// for 7 days, so it must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedLinks {
    /// In the order of the keys asked for.
    pub urls: Vec<String>,
    pub expires_at: DateTime<Utc>,
    /// The links expire before the configured lifetime because the signing
    /// credentials do.
    pub shortened: bool,
}

impl std::fmt::Debug for SignedLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedLinks")
            .field("urls", &self.urls.iter().map(|url| redacted_url(url)).collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("shortened", &self.shortened)
            .finish()
    }
}

/// Query parameters of a presigned URL that say when it was signed and for
/// how long, and nothing that grants access: kept by [`redacted_url`].
const HARMLESS_QUERY_PARAMETERS: [&str; 2] = ["X-Amz-Date", "X-Amz-Expires"];

/// `url` as a log line or `Debug` may show it: scheme, host and path (so
/// the bucket and key) and when it was signed and for how long are kept;
/// every other query parameter (`X-Amz-Credential`, `X-Amz-Signature`,
/// `X-Amz-Security-Token`, …), any user info and any fragment become
/// `<redacted>`. Anyone holding a presigned URL can fetch the object until
/// it expires, so the whole URL is as secret as a password.
pub fn redacted_url(url: &str) -> String {
    let without_fragment = url.split_once('#').map_or(url, |(before, _)| before);
    let (location, query) = match without_fragment.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (without_fragment, None),
    };
    let mut shown = match location.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
                None => location.to_owned(),
            }
        }
        None => location.to_owned(),
    };
    if let Some(query) = query {
        let mut kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                HARMLESS_QUERY_PARAMETERS.iter().any(|harmless| harmless.eq_ignore_ascii_case(name))
            })
            .collect();
        let dropped = query.split('&').filter(|pair| !pair.is_empty()).count() > kept.len();
        if dropped {
            kept.push("<redacted>");
        }
        shown.push('?');
        shown.push_str(&kept.join("&"));
    }
    shown
}

/// How long links signed with the function's own session credentials are
/// said to last when those credentials carry no expiry. A presigned URL dies
/// with the session that signed it, and Lambda hands the function its role's
/// session in environment variables, from which the SDK learns no expiry.
/// The session typically has hours left, but Lambda does not say how many,
/// so the email promises a conservative hour rather than the full TTL (an
/// assumption, not a guarantee). Links that must last longer, and surely,
/// need `LINK_SIGNER_SECRET`.
pub const UNKNOWN_SESSION_LINK_LIFETIME: Duration = Duration::from_secs(3_600);

/// When links signed with the function's own credentials stop working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnCredentialsExpiry {
    expires_at: DateTime<Utc>,
    /// Sooner than the configured lifetime.
    shortened: bool,
    /// Why, for the log line; never a key value.
    basis: &'static str,
}

/// The expiry of links signed at `now` with credentials that expire at
/// `credentials_expire` (if known) and do or do not carry a session token,
/// when links valid until `wanted` were asked for.
fn own_credentials_expiry(
    now: DateTime<Utc>,
    wanted: DateTime<Utc>,
    credentials_expire: Option<DateTime<Utc>>,
    has_session_token: bool,
) -> OwnCredentialsExpiry {
    let (limit, basis) = match (credentials_expire, has_session_token) {
        (Some(at), _) => (at, "the signing credentials' own expiry"),
        (None, true) => (
            now + chrono::Duration::from_std(UNKNOWN_SESSION_LINK_LIFETIME).unwrap_or_default(),
            "session credentials without a known expiry: links limited to the assumed session lifetime; \
             set LINK_SIGNER_SECRET for links that last the full TTL",
        ),
        (None, false) => (wanted, "long-term keys without an expiry: the full lifetime"),
    };
    let expires_at = limit.min(wanted);
    OwnCredentialsExpiry { expires_at, shortened: expires_at < wanted, basis }
}

/// Signs GET links for objects of the staging bucket.
pub trait LinkSigner: Send + Sync {
    fn sign(&self, keys: &[String], now: DateTime<Utc>) -> impl Future<Output = Result<SignedLinks, LinkError>> + Send;
}

/// Why links could not be signed. Names secrets and objects, never a key value.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The signer secret's value is not what it must be: fixing it is the
    /// operator's job, so retrying the delivery cannot help.
    #[error("link signer secret {secret_name:?}: {reason}")]
    SignerSecret { secret_name: String, reason: String },
    #[error("could not read the link signer secret {secret_name:?}: {detail}")]
    SignerSecretUnreadable { secret_name: String, detail: String },
    #[error("could not load credentials to sign download links: {detail}")]
    Credentials { detail: String },
    #[error("could not presign {location}: {detail}")]
    Presign { location: String, detail: String },
}

impl LinkError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, LinkError::SignerSecret { .. })
    }
}

impl From<LinkError> for DeliveryError {
    fn from(error: LinkError) -> Self {
        let permanent = error.is_permanent();
        DeliveryError::Connector(ConnectorFailure::classified(permanent, error))
    }
}

/// The value of the `LINK_SIGNER_SECRET` secret.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignerKeys {
    access_key_id: String,
    secret_access_key: String,
}

/// Parses the signer secret; the error names what is wrong, never a value.
fn parse_signer_keys(secret_name: &str, json: &str) -> Result<Credentials, LinkError> {
    let invalid = |reason: String| LinkError::SignerSecret { secret_name: secret_name.to_owned(), reason };
    let keys: SignerKeys = serde_json::from_str(json).map_err(|e| {
        // serde's messages quote unknown field names, not values; but a
        // syntax error's position is all that is safe to show in general.
        let reason = if e.is_syntax() || e.is_eof() {
            format!("it is not valid JSON (line {}, column {})", e.line(), e.column())
        } else {
            format!(
                "it must be {{\"accessKeyId\": \"…\", \"secretAccessKey\": \"…\"}} ({})",
                e.to_string().split(" at line").next().unwrap_or_default()
            )
        };
        invalid(reason)
    })?;
    if keys.access_key_id.trim().is_empty() || keys.secret_access_key.trim().is_empty() {
        return Err(invalid("accessKeyId and secretAccessKey must not be empty".to_owned()));
    }
    Ok(Credentials::new(keys.access_key_id, keys.secret_access_key, None, None, "link-signer"))
}

/// Presigns with the S3 SDK.
#[derive(Debug, Clone)]
pub struct S3LinkSigner {
    base: SdkConfig,
    bucket: String,
    signer_secret: Option<String>,
    ttl: Duration,
}

impl S3LinkSigner {
    /// Links to objects of `bucket`, valid `ttl_seconds` (at most 604,800),
    /// signed with the keys in `signer_secret` or, without it, the
    /// credentials of `base`.
    pub fn new(base: SdkConfig, bucket: impl Into<String>, signer_secret: Option<String>, ttl_seconds: u64) -> Self {
        Self { base, bucket: bucket.into(), signer_secret, ttl: Duration::from_secs(ttl_seconds) }
    }

    async fn signer_keys(&self, secret_name: &str) -> Result<Credentials, LinkError> {
        let client = aws_sdk_secretsmanager::Client::new(&self.base);
        let output = client.get_secret_value().secret_id(secret_name).send().await.map_err(|e| {
            LinkError::SignerSecretUnreadable { secret_name: secret_name.to_owned(), detail: one_line(&e) }
        })?;
        let json = output.secret_string().ok_or_else(|| LinkError::SignerSecret {
            secret_name: secret_name.to_owned(),
            reason: "it has no SecretString value".to_owned(),
        })?;
        parse_signer_keys(secret_name, json)
    }

    async fn own_credentials(&self) -> Result<Credentials, LinkError> {
        let provider = self
            .base
            .credentials_provider()
            .ok_or_else(|| LinkError::Credentials { detail: "no AWS credentials are configured".to_owned() })?;
        provider.provide_credentials().await.map_err(|e| LinkError::Credentials { detail: cut(&display_chain(&e)) })
    }
}

impl LinkSigner for S3LinkSigner {
    async fn sign(&self, keys: &[String], now: DateTime<Utc>) -> Result<SignedLinks, LinkError> {
        let wanted_expiry = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let (credentials, expires_at, shortened) = match &self.signer_secret {
            Some(secret_name) => (self.signer_keys(secret_name).await?, wanted_expiry, false),
            None => {
                let credentials = self.own_credentials().await?;
                let expiry = own_credentials_expiry(
                    now,
                    wanted_expiry,
                    credentials.expiry().map(DateTime::<Utc>::from),
                    credentials.session_token().is_some(),
                );
                warn!(
                    expires_at = %expiry.expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    shortened = expiry.shortened,
                    basis = expiry.basis,
                    "LINK_SIGNER_SECRET is not set: download links are signed with the function's own credentials \
                     and expire with them"
                );
                (credentials, expiry.expires_at, expiry.shortened)
            }
        };
        let lifetime = (expires_at - now).to_std().map_err(|_| LinkError::Credentials {
            detail: "the signing credentials have already expired".to_owned(),
        })?;
        let mut builder = aws_sdk_s3::config::Builder::from(&self.base)
            .credentials_provider(SharedCredentialsProvider::new(credentials));
        if self.base.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        let client = aws_sdk_s3::Client::from_conf(builder.build());
        let start: SystemTime = now.into();
        let mut urls = Vec::with_capacity(keys.len());
        for key in keys {
            let presigning =
                PresigningConfig::builder().start_time(start).expires_in(lifetime).build().map_err(|e| {
                    LinkError::Presign {
                        location: format!("s3://{}/{key}", self.bucket),
                        detail: format!("a link valid {} s is not possible: {e}", lifetime.as_secs()),
                    }
                })?;
            let request =
                client.get_object().bucket(&self.bucket).key(key).presigned(presigning).await.map_err(|e| {
                    LinkError::Presign { location: format!("s3://{}/{key}", self.bucket), detail: one_line(&e) }
                })?;
            urls.push(request.uri().to_owned());
        }
        Ok(SignedLinks { urls, expires_at, shortened })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a bearer link must never show in `Debug` or a log line.
    fn assert_no_bearer_parts(shown: &str, access_key_id: &str) {
        let lower = shown.to_ascii_lowercase();
        for forbidden in ["x-amz-signature", "signature", "x-amz-credential", "credential", "x-amz-security-token"] {
            assert!(!lower.contains(forbidden), "{forbidden:?} in {shown}");
        }
        assert!(!shown.contains(access_key_id), "the access key id in {shown}");
    }

    #[tokio::test]
    async fn signed_links_debug_shows_bucket_key_and_expiry_but_never_the_signature() {
        let credentials =
            Credentials::new("AKIAEXAMPLELINKS", "secret", Some("session-token".to_owned()), None, "test");
        let signer = S3LinkSigner::new(config_with(credentials), "staging", None, 604_800);
        let signed = signer.sign(&["reports/20261119030000/track/part-000.json".to_owned()], Utc::now()).await.unwrap();
        assert!(signed.urls[0].contains("X-Amz-Signature="), "a real presigned URL: {}", signed.urls[0]);
        for shown in [format!("{signed:?}"), format!("{signed:#?}")] {
            assert_no_bearer_parts(&shown, "AKIAEXAMPLELINKS");
            assert!(!shown.contains("session-token"), "{shown}");
            assert!(
                shown.contains("staging") && shown.contains("reports/20261119030000/track/part-000.json"),
                "{shown}"
            );
            assert!(shown.contains("X-Amz-Expires=3600") && shown.contains("<redacted>"), "{shown}");
            assert!(shown.contains("expires_at"), "{shown}");
        }
    }

    #[test]
    fn redacted_urls_keep_the_object_and_the_expiry_only() {
        let url = "https://staging.s3.eu-west-1.amazonaws.com/reports/a%20b.json?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Credential=AKIAEXAMPLE%2F20261119%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261119T031000Z\
                   &X-Amz-Expires=604800&X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd#frag";
        assert_eq!(
            redacted_url(url),
            "https://staging.s3.eu-west-1.amazonaws.com/reports/a%20b.json\
             ?X-Amz-Date=20261119T031000Z&X-Amz-Expires=604800&<redacted>"
        );
        assert_eq!(redacted_url("http://user:pass@127.0.0.1:5000/b/k"), "http://<redacted>@127.0.0.1:5000/b/k");
        assert_eq!(redacted_url("http://127.0.0.1:5000/b/k"), "http://127.0.0.1:5000/b/k");
        assert_no_bearer_parts(&redacted_url(url), "AKIAEXAMPLE");
    }

    #[test]
    fn signer_secret_errors_name_the_secret_and_never_a_value() {
        let secret_value = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let cases = [
            format!("{{\"accessKeyId\": \"AKIAEXAMPLE\", \"secretAccessKey\": \"{secret_value}\""),
            format!("{{\"accessKeyId\": \"AKIAEXAMPLE\", \"secret\": \"{secret_value}\"}}"),
            format!("{{\"accessKeyId\": \"\", \"secretAccessKey\": \"{secret_value}\"}}"),
            format!("[\"{secret_value}\"]"),
        ];
        for json in cases {
            let err = parse_signer_keys("popularity-reports/link-signer", &json).unwrap_err();
            assert!(err.is_permanent());
            let err = err.to_string();
            assert!(err.contains("popularity-reports/link-signer"), "{err}");
            assert!(!err.contains(secret_value) && !err.contains("AKIAEXAMPLE"), "{err}");
        }
        let credentials = parse_signer_keys(
            "s",
            &format!("{{\"accessKeyId\": \"AKIAEXAMPLE\", \"secretAccessKey\": \"{secret_value}\"}}"),
        )
        .unwrap();
        assert_eq!(credentials.access_key_id(), "AKIAEXAMPLE");
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    const WEEK: chrono::Duration = chrono::Duration::seconds(604_800);

    #[test]
    fn when_session_credentials_have_no_expiry_links_are_shortened_to_the_bound() {
        let now = at("2026-11-19T03:10:00Z");
        let expiry = own_credentials_expiry(now, now + WEEK, None, true);
        assert_eq!(expiry.expires_at, at("2026-11-19T04:10:00Z"));
        assert!(expiry.shortened);
        assert!(expiry.basis.contains("without a known expiry"), "{}", expiry.basis);
    }

    #[test]
    fn when_the_requested_lifetime_is_below_the_bound_it_is_kept() {
        let now = at("2026-11-19T03:10:00Z");
        let wanted = now + chrono::Duration::minutes(20);
        let expiry = own_credentials_expiry(now, wanted, None, true);
        assert_eq!(expiry.expires_at, wanted);
        assert!(!expiry.shortened);
    }

    #[test]
    fn when_session_credentials_expire_before_the_lifetime_links_expire_with_them() {
        let now = at("2026-11-19T03:10:00Z");
        let expiry = own_credentials_expiry(now, now + WEEK, Some(at("2026-11-19T09:10:00Z")), true);
        assert_eq!(expiry.expires_at, at("2026-11-19T09:10:00Z"));
        assert!(expiry.shortened);
        // A known expiry later than the lifetime does not extend it.
        let later = own_credentials_expiry(now, now + WEEK, Some(at("2026-12-31T00:00:00Z")), true);
        assert_eq!(later.expires_at, now + WEEK);
        assert!(!later.shortened);
    }

    #[test]
    fn when_long_term_keys_have_no_expiry_links_get_the_full_lifetime() {
        let now = at("2026-11-19T03:10:00Z");
        let expiry = own_credentials_expiry(now, now + WEEK, None, false);
        assert_eq!(expiry.expires_at, now + WEEK);
        assert!(!expiry.shortened);
    }

    fn config_with(credentials: Credentials) -> SdkConfig {
        aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    }

    fn expires_param(url: &str) -> u64 {
        url.split("X-Amz-Expires=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn links_signed_with_environment_session_credentials_state_the_bound() {
        // What aws-config's environment provider builds in Lambda: a session
        // token and no expiry.
        let credentials = Credentials::new("ASIAEXAMPLE", "secret", Some("token".to_owned()), None, "Environment");
        let signer = S3LinkSigner::new(config_with(credentials), "staging", None, 604_800);
        let now = Utc::now();
        let signed = signer.sign(&["reports/a.json".to_owned()], now).await.unwrap();
        assert_eq!(signed.expires_at, now + chrono::Duration::hours(1));
        assert!(signed.shortened);
        assert_eq!(expires_param(&signed.urls[0]), 3_600, "{}", signed.urls[0]);
        assert!(signed.urls[0].contains("X-Amz-Security-Token="), "{}", signed.urls[0]);
    }

    #[tokio::test]
    async fn links_signed_with_long_term_own_keys_get_the_full_lifetime() {
        let credentials = Credentials::new("AKIAEXAMPLE", "secret", None, None, "Environment");
        let signer = S3LinkSigner::new(config_with(credentials), "staging", None, 604_800);
        let now = Utc::now();
        let signed = signer.sign(&["reports/a.json".to_owned()], now).await.unwrap();
        assert_eq!(signed.expires_at, now + WEEK);
        assert!(!signed.shortened);
        assert_eq!(expires_param(&signed.urls[0]), 604_800, "{}", signed.urls[0]);
    }

    #[tokio::test]
    async fn links_carry_the_signer_key_and_the_full_lifetime() {
        let base = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let signer = S3LinkSigner::new(base, "staging", None, 604_800);
        // No credentials at all: a clear error, not a panic.
        let err = signer.sign(&["reports/a.json".to_owned()], Utc::now()).await.unwrap_err();
        assert!(err.to_string().contains("credentials"), "{err}");
    }
}
