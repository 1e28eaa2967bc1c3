//! Workload identity federation from our AWS roles to Google. The
//! configuration is the standard external-account JSON that `gcloud iam
//! workload-identity-pools create-cred-config --aws` writes
//! (`GOOGLE_EXTERNAL_ACCOUNT_CONFIG`; not a secret: it names a pool, not a
//! credential). The subject token is an AWS `GetCallerIdentity` request
//! signed (SigV4, by the `aws-sigv4` crate) with the credentials of the
//! function's own role, taken from its AWS SDK configuration, so a function
//! and a test alike federate as whatever role they run as. Google's STS
//! forwards that request to AWS to learn the role, checks it against the
//! provider's conditions and answers with a federated token; the exchange
//! and its caching are the `google-cloud-auth` crate's.
//!
//! Locally the JSON's `token_url` points at a double of Google's STS and
//! its `regional_cred_verification_url` at moto's STS; nothing else differs.

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use google_cloud_auth::credentials::external_account::ProgrammaticBuilder;
use google_cloud_auth::credentials::subject_token::{
    Builder as SubjectTokenBuilder, SubjectToken, SubjectTokenProvider,
};
use google_cloud_auth::credentials::Credentials;
use google_cloud_auth::errors::SubjectTokenProviderError;
use serde_json::Value;

/// The subject-token type of an AWS-signed `GetCallerIdentity`.
pub const AWS_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
/// The scope of the federated token: enough to call IAM and IAM Credentials.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's IAM API.
pub const GOOGLE_IAM_ENDPOINT: &str = "https://iam.googleapis.com";
/// Google's IAM Service Account Credentials API.
pub const GOOGLE_IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// Where the signed request goes unless the configuration says otherwise.
const DEFAULT_VERIFICATION_URL: &str = "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
/// The header that binds a signed request to one provider.
const TARGET_RESOURCE_HEADER: &str = "x-goog-cloud-target-resource";

/// The external-account configuration is unusable, or federation failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("GOOGLE_EXTERNAL_ACCOUNT_CONFIG is not usable: {0}")]
    Config(String),
    #[error("keyless Google is not configured in this deployment: {0}")]
    NotConfigured(&'static str),
    #[error("the federated Google credentials cannot be built: {0}")]
    Build(String),
}

/// What we use of the external-account JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAccountConfig {
    /// `//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
    pub audience: String,
    /// Google's STS token endpoint (or a double's).
    pub token_url: String,
    /// Where the signed `GetCallerIdentity` is addressed, `{region}` still in it.
    pub verification_url: String,
}

impl ExternalAccountConfig {
    /// Parses and checks the JSON. A config that impersonates one common
    /// account (`service_account_impersonation_url`) is refused: we
    /// impersonate each tenant's own account.
    pub fn parse(json: &str) -> Result<ExternalAccountConfig, FederationError> {
        let bad = |why: &str| FederationError::Config(why.to_owned());
        let value: Value = serde_json::from_str(json).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
        if text("type").as_deref() != Some("external_account") {
            return Err(bad("\"type\" must be \"external_account\""));
        }
        let audience = text("audience").ok_or_else(|| bad("\"audience\" is missing"))?;
        if pool_of_audience(&audience).is_none() {
            return Err(FederationError::Config(format!(
                "\"audience\" {audience:?} is not //iam.googleapis.com/projects/<number>/locations/global/\
                 workloadIdentityPools/<pool>/providers/<provider>"
            )));
        }
        if text("subject_token_type").as_deref() != Some(AWS_SUBJECT_TOKEN_TYPE) {
            return Err(FederationError::Config(format!(
                "\"subject_token_type\" must be {AWS_SUBJECT_TOKEN_TYPE:?} (an AWS provider)"
            )));
        }
        let token_url = text("token_url").ok_or_else(|| bad("\"token_url\" is missing"))?;
        if !(token_url.starts_with("https://") || token_url.starts_with("http://")) {
            return Err(bad("\"token_url\" is not an http(s) URL"));
        }
        if value.get("service_account_impersonation_url").is_some_and(|v| !v.is_null()) {
            return Err(bad(
                "it impersonates one service account (service_account_impersonation_url); write it without \
                 --service-account: each tenant's own account is impersonated",
            ));
        }
        let source = value.get("credential_source").ok_or_else(|| bad("\"credential_source\" is missing"))?;
        if !source.get("environment_id").and_then(Value::as_str).is_some_and(|id| id.starts_with("aws")) {
            return Err(bad("\"credential_source.environment_id\" must be \"aws1\" (an AWS provider)"));
        }
        let verification_url = source
            .get("regional_cred_verification_url")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_VERIFICATION_URL)
            .to_owned();
        Ok(ExternalAccountConfig { audience, token_url, verification_url })
    }

    /// The principal set of every session of `role_arn` through this
    /// config's pool (Google's default AWS attribute mapping: `aws_role`).
    pub fn role_member(&self, role_arn: &str) -> Option<String> {
        deliverer_member(&self.audience, role_arn)
    }
}

/// `projects/<number>/locations/global/workloadIdentityPools/<pool>` of an audience.
fn pool_of_audience(audience: &str) -> Option<&str> {
    let path = audience.strip_prefix("//iam.googleapis.com/")?;
    let (pool, provider) = path.split_once("/providers/")?;
    let mut parts = pool.split('/');
    let shaped = parts.next() == Some("projects")
        && parts.next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts.next() == Some("locations")
        && parts.next() == Some("global")
        && parts.next() == Some("workloadIdentityPools")
        && parts.next().is_some_and(|p| !p.is_empty())
        && parts.next().is_none()
        && !provider.is_empty()
        && !provider.contains('/');
    shaped.then_some(pool)
}

/// The IAM member for every session of the AWS role `role_arn`
/// (`arn:aws:iam::<account>:role/<name>`, paths allowed) federated through
/// the pool of `audience`: `principalSet://…/attribute.aws_role/arn:aws:sts::<account>:assumed-role/<name>`.
pub fn deliverer_member(audience: &str, role_arn: &str) -> Option<String> {
    let pool = pool_of_audience(audience)?;
    let rest = role_arn.strip_prefix("arn:aws:iam::")?;
    let (account, role) = rest.split_once(":role/")?;
    let name = role.rsplit('/').next().filter(|n| !n.is_empty())?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "principalSet://iam.googleapis.com/{pool}/attribute.aws_role/arn:aws:sts::{account}:assumed-role/{name}"
    ))
}

/// Keyless Google as a function or command is configured for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    pub external_account: ExternalAccountConfig,
    /// Our project, where the tenants' service accounts live (`GOOGLE_PROJECT_ID`).
    pub project_id: String,
    /// `GOOGLE_IAM_ENDPOINT` (a double's, locally).
    pub iam_endpoint: String,
    /// `GOOGLE_IAM_CREDENTIALS_ENDPOINT` (a double's, locally).
    pub iam_credentials_endpoint: String,
}

impl FederationConfig {
    /// From the variables' values; `None` when `GOOGLE_EXTERNAL_ACCOUNT_CONFIG`
    /// is unset (keyless Google off). With it, `GOOGLE_PROJECT_ID` is required.
    pub fn from_values(
        external_account_json: Option<&str>,
        project_id: Option<&str>,
        iam_endpoint: Option<&str>,
        iam_credentials_endpoint: Option<&str>,
    ) -> Result<Option<FederationConfig>, FederationError> {
        let Some(json) = external_account_json.map(str::trim).filter(|j| !j.is_empty()) else { return Ok(None) };
        let external_account = ExternalAccountConfig::parse(json)?;
        let project_id = project_id
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .ok_or(FederationError::NotConfigured("GOOGLE_PROJECT_ID (our Google project) is not set"))?;
        if !is_project_id(project_id) {
            return Err(FederationError::Config(format!(
                "GOOGLE_PROJECT_ID {project_id:?} is not a Google project id (6-30 lower-case letters, digits, hyphens)"
            )));
        }
        let endpoint = |value: Option<&str>, default: &str| {
            value.map(str::trim).filter(|v| !v.is_empty()).unwrap_or(default).trim_end_matches('/').to_owned()
        };
        Ok(Some(FederationConfig {
            external_account,
            project_id: project_id.to_owned(),
            iam_endpoint: endpoint(iam_endpoint, GOOGLE_IAM_ENDPOINT),
            iam_credentials_endpoint: endpoint(iam_credentials_endpoint, GOOGLE_IAM_CREDENTIALS_ENDPOINT),
        }))
    }

    /// The federated credentials of the AWS role the SDK configuration
    /// `aws` acts as (its credentials and region).
    pub fn federated_credentials_of(&self, aws: &aws_config::SdkConfig) -> Result<Credentials, FederationError> {
        let credentials = aws
            .credentials_provider()
            .ok_or(FederationError::NotConfigured("the AWS SDK configuration has no credentials to federate with"))?;
        let region = aws.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".to_owned());
        self.federated_credentials(credentials, &region)
    }

    /// The federated credentials of whatever AWS role `aws` runs as.
    pub fn federated_credentials(
        &self,
        aws_credentials: SharedCredentialsProvider,
        region: &str,
    ) -> Result<Credentials, FederationError> {
        let provider = SignedCallerIdentity {
            credentials: aws_credentials,
            region: region.to_owned(),
            url: self.external_account.verification_url.replace("{region}", region),
            audience: self.external_account.audience.clone(),
        };
        ProgrammaticBuilder::new(Arc::new(provider))
            .with_audience(self.external_account.audience.clone())
            .with_subject_token_type(AWS_SUBJECT_TOKEN_TYPE.to_owned())
            .with_token_url(self.external_account.token_url.clone())
            .with_scopes(vec![CLOUD_PLATFORM_SCOPE.to_owned()])
            .build()
            .map_err(|e| FederationError::Build(e.to_string()))
    }
}

fn is_project_id(id: &str) -> bool {
    (6..=30).contains(&id.len())
        && id.as_bytes()[0].is_ascii_lowercase()
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.ends_with('-')
}

/// Signs `GetCallerIdentity` with the function's own AWS credentials.
struct SignedCallerIdentity {
    credentials: SharedCredentialsProvider,
    region: String,
    url: String,
    audience: String,
}

impl std::fmt::Debug for SignedCallerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedCallerIdentity").field("url", &self.url).finish_non_exhaustive()
    }
}

/// The AWS request could not be signed. Never carries a credential.
#[derive(Debug, thiserror::Error)]
#[error("the AWS GetCallerIdentity request for Google's STS could not be signed: {reason}")]
pub struct SigningFailure {
    reason: String,
    transient: bool,
}

impl SubjectTokenProviderError for SigningFailure {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

impl SubjectTokenProvider for SignedCallerIdentity {
    type Error = SigningFailure;

    async fn subject_token(&self) -> Result<SubjectToken, SigningFailure> {
        let failed = |reason: String, transient: bool| SigningFailure { reason, transient };
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| failed(format!("no AWS credentials: {}", crate::aws_errors::cut(&e.to_string())), true))?;
        let url = url::Url::parse(&self.url).map_err(|e| failed(format!("{:?} is not a URL: {e}", self.url), false))?;
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(failed(format!("{:?} has no host", self.url), false)),
        };
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(e.to_string(), false))?
            .into();
        let headers = [("host", host.as_str()), (TARGET_RESOURCE_HEADER, self.audience.as_str())];
        let signable = SignableRequest::new("POST", url.as_str(), headers.iter().copied(), SignableBody::Bytes(b""))
            .map_err(|e| failed(e.to_string(), false))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| failed(e.to_string(), false))?.into_parts();
        let mut all: Vec<Value> =
            headers.iter().map(|(key, value)| serde_json::json!({"key": key, "value": value})).collect();
        for (key, value) in instructions.headers() {
            all.push(serde_json::json!({"key": key, "value": value}));
        }
        let request = serde_json::json!({"url": url.as_str(), "method": "POST", "headers": all, "body": ""});
        let token: String = url::form_urlencoded::byte_serialize(request.to_string().as_bytes()).collect();
        Ok(SubjectTokenBuilder::new(token).build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIENCE: &str =
        "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/reports/providers/aws";

    fn config(extra: &str) -> String {
        format!(
            r#"{{"type":"external_account","audience":"{AUDIENCE}","subject_token_type":"{AWS_SUBJECT_TOKEN_TYPE}",
            "token_url":"https://sts.googleapis.com/v1/token",
            "credential_source":{{"environment_id":"aws1","regional_cred_verification_url":"https://sts.{{region}}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"}}{extra}}}"#
        )
    }

    #[test]
    fn gclouds_config_is_read() {
        let parsed = ExternalAccountConfig::parse(&config("")).unwrap();
        assert_eq!(parsed.audience, AUDIENCE);
        assert_eq!(parsed.token_url, "https://sts.googleapis.com/v1/token");
        assert!(parsed.verification_url.contains("{region}"));
    }

    #[test]
    fn a_config_impersonating_one_account_is_refused() {
        let error = ExternalAccountConfig::parse(&config(
            r#","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x@p.iam.gserviceaccount.com:generateAccessToken""#,
        ))
        .unwrap_err();
        assert!(error.to_string().contains("each tenant's own account"), "{error}");
    }

    #[test]
    fn bad_audiences_and_sources_are_named() {
        let error = ExternalAccountConfig::parse(&config("").replace("providers/aws", "")).unwrap_err();
        assert!(error.to_string().contains("\"audience\""), "{error}");
        let error = ExternalAccountConfig::parse(&config("").replace("aws1", "azure")).unwrap_err();
        assert!(error.to_string().contains("environment_id"), "{error}");
        assert!(ExternalAccountConfig::parse("{").unwrap_err().to_string().contains("not JSON"));
    }

    #[test]
    fn the_deliverer_member_follows_the_default_aws_mapping() {
        assert_eq!(
            deliverer_member(AUDIENCE, "arn:aws:iam::111122223333:role/service-role/stack-DeliverGcsRole-AB12")
                .unwrap(),
            "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/reports/\
             attribute.aws_role/arn:aws:sts::111122223333:assumed-role/stack-DeliverGcsRole-AB12"
        );
        assert!(deliverer_member(AUDIENCE, "arn:aws:iam::111122223333:user/someone").is_none());
        assert!(deliverer_member(AUDIENCE, "arn:aws:iam::1111:role/x").is_none());
    }

    #[test]
    fn without_the_config_keyless_is_off_and_with_it_the_project_is_required() {
        assert_eq!(FederationConfig::from_values(None, None, None, None).unwrap(), None);
        let error = FederationConfig::from_values(Some(&config("")), None, None, None).unwrap_err();
        assert!(error.to_string().contains("GOOGLE_PROJECT_ID"), "{error}");
        let on =
            FederationConfig::from_values(Some(&config("")), Some("our-reports"), None, Some("http://127.0.0.1:9/"))
                .unwrap()
                .unwrap();
        assert_eq!(on.iam_endpoint, GOOGLE_IAM_ENDPOINT);
        assert_eq!(on.iam_credentials_endpoint, "http://127.0.0.1:9");
        assert!(FederationConfig::from_values(Some(&config("")), Some("Bad_Project"), None, None).is_err());
    }
}
