//! Presigned download links for email delivery (DESIGN §7). A presigned URL
//! lives no longer than the credentials that signed it, and a Lambda role's
//! credentials last hours, not 7 days. So links are signed with the
//! long-term keys of a dedicated signing user, read from the secret named
//! by `LINK_SIGNER_SECRET` (`{"accessKeyId": …, "secretAccessKey": …}`) at
//! each delivery, so a rotated key is picked up. Without that secret the
//! function signs with its own credentials and reports their real, shorter
//! expiry, which the email then states. Key values never leave this module
//! except inside the signature of a URL.

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::warn;

/// Links for some keys and when they stop working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLinks {
    /// In the order of the keys asked for.
    pub urls: Vec<String>,
    pub expires_at: DateTime<Utc>,
    /// The links expire before the configured lifetime because the signing
    /// credentials do.
    pub shortened: bool,
}

/// Signs GET links for objects of the staging bucket.
pub trait LinkSigner: Send + Sync {
    fn sign(&self, keys: &[String], now: DateTime<Utc>) -> impl Future<Output = Result<SignedLinks, String>> + Send;
}

/// The value of the `LINK_SIGNER_SECRET` secret.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignerKeys {
    access_key_id: String,
    secret_access_key: String,
}

/// Parses the signer secret; the error names what is wrong, never a value.
fn parse_signer_keys(secret_name: &str, json: &str) -> Result<Credentials, String> {
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
        format!("link signer secret {secret_name:?}: {reason}")
    })?;
    if keys.access_key_id.trim().is_empty() || keys.secret_access_key.trim().is_empty() {
        return Err(format!("link signer secret {secret_name:?}: accessKeyId and secretAccessKey must not be empty"));
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

    async fn signer_keys(&self, secret_name: &str) -> Result<Credentials, String> {
        let client = aws_sdk_secretsmanager::Client::new(&self.base);
        let output = client.get_secret_value().secret_id(secret_name).send().await.map_err(|e| {
            format!("could not read the link signer secret {secret_name:?}: {}", DisplayErrorContext(&e))
        })?;
        let json = output
            .secret_string()
            .ok_or_else(|| format!("link signer secret {secret_name:?} has no SecretString value"))?;
        parse_signer_keys(secret_name, json)
    }

    async fn own_credentials(&self) -> Result<Credentials, String> {
        let provider = self
            .base
            .credentials_provider()
            .ok_or_else(|| "no AWS credentials are configured to sign download links".to_owned())?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| format!("could not load credentials to sign download links: {}", DisplayErrorContext(&e)))
    }
}

impl LinkSigner for S3LinkSigner {
    async fn sign(&self, keys: &[String], now: DateTime<Utc>) -> Result<SignedLinks, String> {
        let wanted_expiry = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let (credentials, expires_at, shortened) = match &self.signer_secret {
            Some(secret_name) => (self.signer_keys(secret_name).await?, wanted_expiry, false),
            None => {
                let credentials = self.own_credentials().await?;
                let credentials_expire = credentials.expiry().map(DateTime::<Utc>::from);
                let expires_at = credentials_expire.map_or(wanted_expiry, |at| at.min(wanted_expiry));
                warn!(
                    expires_at = %expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    "LINK_SIGNER_SECRET is not set: download links are signed with the function's own credentials \
                     and expire with them"
                );
                (credentials, expires_at, expires_at < wanted_expiry)
            }
        };
        let lifetime =
            (expires_at - now).to_std().map_err(|_| "the signing credentials have already expired".to_owned())?;
        let mut builder = aws_sdk_s3::config::Builder::from(&self.base)
            .credentials_provider(SharedCredentialsProvider::new(credentials));
        if self.base.endpoint_url().is_some() {
            builder = builder.force_path_style(true);
        }
        let client = aws_sdk_s3::Client::from_conf(builder.build());
        let start: SystemTime = now.into();
        let mut urls = Vec::with_capacity(keys.len());
        for key in keys {
            let presigning = PresigningConfig::builder()
                .start_time(start)
                .expires_in(lifetime)
                .build()
                .map_err(|e| format!("cannot presign a link valid {} s: {e}", lifetime.as_secs()))?;
            let request =
                client.get_object().bucket(&self.bucket).key(key).presigned(presigning).await.map_err(|e| {
                    format!("could not presign s3://{}/{key}: {}", self.bucket, DisplayErrorContext(&e))
                })?;
            urls.push(request.uri().to_owned());
        }
        Ok(SignedLinks { urls, expires_at, shortened })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn links_carry_the_signer_key_and_the_full_lifetime() {
        let base = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let signer = S3LinkSigner::new(base, "staging", None, 604_800);
        // No credentials at all: a clear error, not a panic.
        let err = signer.sign(&["reports/a.json".to_owned()], Utc::now()).await.unwrap_err();
        assert!(err.contains("credentials"), "{err}");
    }
}
