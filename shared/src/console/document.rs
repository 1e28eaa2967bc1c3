//! The tenant's Secrets Manager entry as the self-service API edits it: one
//! JSON document with a version (the secret's `VersionId`, the API's
//! ETag). The entry stays the one truth — a tenant edited by hand and one
//! edited through the API are the same thing — so there is no copy to keep
//! in step.
//!
//! Concurrent edits lose nothing. Secrets Manager has no conditional write,
//! but it refuses to give one version id two different values: every write
//! of the API names its new version after the version it replaces
//! ([`next_version_id`]), so of two edits made from the same version only
//! the first is stored and the second fails as "changed meanwhile" (412).
//! A hand edit made between the API's read and its write is caught by the
//! version check just before the write.
//!
//! A connector is tested before it is stored: the edited document is first
//! written as a version that is not current, labelled `draft-<requestId>`,
//! which the deliverer of its kind probes; only when every check passes is
//! the same text written as the current version, and the label is then
//! removed. Nothing here logs or returns a secret's value except to the
//! caller that edits it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::Client;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The label of a draft version written for a connection test.
pub fn draft_stage(request_id: &str) -> String {
    format!("draft-{request_id}")
}

/// The version id the API gives the version that replaces `current`:
/// derived from it, so that only one replacement of a version can exist.
pub fn next_version_id(current: &str) -> String {
    hex::encode(Sha256::digest(format!("popularity-reports/tenant-document/{current}").as_bytes()))
}

/// A tenant's secret, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantDocument {
    pub tenant_id: String,
    /// The secret's value, parsed as JSON (not yet validated).
    pub value: Value,
    /// The current version's id: the ETag.
    pub version: String,
}

/// Values of tenant documents hold credentials: `Debug` shows the version only.
impl std::fmt::Debug for TenantDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDocument")
            .field("tenant_id", &self.tenant_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why a document could not be read or written. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the secret of tenant {tenant_id:?} is not a JSON document ({reason}); an operator must repair it")]
    NotJson { tenant_id: String, reason: String },
    /// Another write replaced the version the change was made from.
    #[error("the secret of tenant {tenant_id:?} changed meanwhile (now at version {current})")]
    Changed { tenant_id: String, current: String },
    #[error("Secrets Manager {operation} on the secret of tenant {tenant_id:?} failed: {detail}")]
    Service { operation: &'static str, tenant_id: String, detail: String },
}

/// Where tenant documents live.
pub trait TenantDocuments: Send + Sync {
    /// The current document of `tenant_id`; `None` when it has no secret.
    fn read(&self, tenant_id: &str) -> impl Future<Output = Result<Option<TenantDocument>, DocumentError>> + Send;

    /// Writes `json` as a version that is not current, labelled `stage`.
    fn write_draft(
        &self,
        tenant_id: &str,
        json: &str,
        stage: &str,
    ) -> impl Future<Output = Result<String, DocumentError>> + Send;

    /// Removes the label `stage` from the draft `version`.
    fn discard_draft(
        &self,
        tenant_id: &str,
        version: &str,
        stage: &str,
    ) -> impl Future<Output = Result<(), DocumentError>> + Send;

    /// Writes `json` as the current version in place of `expected`,
    /// unless the current version is no longer `expected`
    /// ([`DocumentError::Changed`]). Returns the new version's id.
    fn replace(
        &self,
        tenant_id: &str,
        json: &str,
        expected: &str,
    ) -> impl Future<Output = Result<String, DocumentError>> + Send;
}

/// The tenant secrets `<prefix><tenantId>` in Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretsManagerDocuments {
    client: Client,
    prefix: String,
}

impl SecretsManagerDocuments {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        SecretsManagerDocuments { client, prefix: prefix.into() }
    }

    fn name(&self, tenant_id: &str) -> String {
        format!("{}{tenant_id}", self.prefix)
    }

    fn service_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        operation: &'static str,
        tenant_id: &str,
        error: aws_sdk_secretsmanager::error::SdkError<E>,
    ) -> DocumentError {
        DocumentError::Service {
            operation,
            tenant_id: tenant_id.to_owned(),
            detail: crate::aws_errors::one_line(&error),
        }
    }
}

fn parse(tenant_id: &str, json: &str, version: String) -> Result<TenantDocument, DocumentError> {
    let value = serde_json::from_str(json)
        .map_err(|error| DocumentError::NotJson { tenant_id: tenant_id.to_owned(), reason: error.to_string() })?;
    Ok(TenantDocument { tenant_id: tenant_id.to_owned(), value, version })
}

impl TenantDocuments for SecretsManagerDocuments {
    async fn read(&self, tenant_id: &str) -> Result<Option<TenantDocument>, DocumentError> {
        let output = match self.client.get_secret_value().secret_id(self.name(tenant_id)).send().await {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                return Ok(None)
            }
            // Scheduled for deletion: gone for the API as for delivery.
            Err(error) if error.code() == Some("InvalidRequestException") => return Ok(None),
            Err(error) => return Err(Self::service_error("GetSecretValue", tenant_id, error)),
        };
        let json = output.secret_string().ok_or_else(|| DocumentError::NotJson {
            tenant_id: tenant_id.to_owned(),
            reason: "the secret holds no SecretString".to_owned(),
        })?;
        let version = output.version_id().unwrap_or_default().to_owned();
        parse(tenant_id, json, version).map(Some)
    }

    async fn write_draft(&self, tenant_id: &str, json: &str, stage: &str) -> Result<String, DocumentError> {
        let output = self
            .client
            .put_secret_value()
            .secret_id(self.name(tenant_id))
            .secret_string(json)
            .version_stages(stage)
            .send()
            .await
            .map_err(|error| Self::service_error("PutSecretValue", tenant_id, error))?;
        Ok(output.version_id().unwrap_or_default().to_owned())
    }

    async fn discard_draft(&self, tenant_id: &str, version: &str, stage: &str) -> Result<(), DocumentError> {
        self.client
            .update_secret_version_stage()
            .secret_id(self.name(tenant_id))
            .version_stage(stage)
            .remove_from_version_id(version)
            .send()
            .await
            .map(drop)
            .map_err(|error| Self::service_error("UpdateSecretVersionStage", tenant_id, error))
    }

    async fn replace(&self, tenant_id: &str, json: &str, expected: &str) -> Result<String, DocumentError> {
        let name = self.name(tenant_id);
        let described = self
            .client
            .describe_secret()
            .secret_id(&name)
            .send()
            .await
            .map_err(|error| Self::service_error("DescribeSecret", tenant_id, error))?;
        let current = described
            .version_ids_to_stages()
            .into_iter()
            .flatten()
            .find(|(_, stages)| stages.iter().any(|stage| stage == "AWSCURRENT"))
            .map(|(version, _)| version.clone())
            .unwrap_or_default();
        if current != expected {
            return Err(DocumentError::Changed { tenant_id: tenant_id.to_owned(), current });
        }
        let next = next_version_id(expected);
        match self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(json)
            .client_request_token(&next)
            .send()
            .await
        {
            Ok(output) => Ok(output.version_id().unwrap_or(&next).to_owned()),
            // The version that replaces `expected` exists with another value:
            // another edit made from the same version was stored first.
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_exists_exception()) => {
                Err(DocumentError::Changed { tenant_id: tenant_id.to_owned(), current: next })
            }
            Err(error) => Err(Self::service_error("PutSecretValue", tenant_id, error)),
        }
    }
}

/// Tenant documents in memory, for unit tests of the API's logic.
#[derive(Default)]
pub struct InMemoryDocuments {
    /// tenant → (versions by id with value and labels, current version id)
    secrets: Mutex<BTreeMap<String, (BTreeMap<String, (String, Vec<String>)>, String)>>,
    next: Mutex<u64>,
}

impl InMemoryDocuments {
    pub fn with_secret(self, tenant_id: &str, json: &str) -> Self {
        {
            let mut secrets = self.secrets.lock().expect("not poisoned");
            let version = format!("v0-{tenant_id}");
            let versions = BTreeMap::from([(version.clone(), (json.to_owned(), vec!["AWSCURRENT".to_owned()]))]);
            secrets.insert(tenant_id.to_owned(), (versions, version));
        }
        self
    }

    /// The value labelled `stage`, for the in-memory directory's drafts.
    pub fn labelled(&self, tenant_id: &str, stage: &str) -> Option<String> {
        let secrets = self.secrets.lock().expect("not poisoned");
        let (versions, _) = secrets.get(tenant_id)?;
        versions.values().find(|(_, labels)| labels.iter().any(|label| label == stage)).map(|(json, _)| json.clone())
    }

    fn fresh_version(&self) -> String {
        let mut next = self.next.lock().expect("not poisoned");
        *next += 1;
        format!("draft-version-{next}")
    }
}

impl TenantDocuments for InMemoryDocuments {
    async fn read(&self, tenant_id: &str) -> Result<Option<TenantDocument>, DocumentError> {
        let found = {
            let secrets = self.secrets.lock().expect("not poisoned");
            secrets.get(tenant_id).map(|(versions, current)| (versions[current].0.clone(), current.clone()))
        };
        found.map(|(json, version)| parse(tenant_id, &json, version)).transpose()
    }

    async fn write_draft(&self, tenant_id: &str, json: &str, stage: &str) -> Result<String, DocumentError> {
        let version = self.fresh_version();
        let mut secrets = self.secrets.lock().expect("not poisoned");
        let (versions, _) = secrets.get_mut(tenant_id).ok_or_else(|| DocumentError::Service {
            operation: "PutSecretValue",
            tenant_id: tenant_id.to_owned(),
            detail: "ResourceNotFoundException".to_owned(),
        })?;
        versions.insert(version.clone(), (json.to_owned(), vec![stage.to_owned()]));
        Ok(version)
    }

    async fn discard_draft(&self, tenant_id: &str, version: &str, stage: &str) -> Result<(), DocumentError> {
        let mut secrets = self.secrets.lock().expect("not poisoned");
        if let Some((json_and_labels, _)) =
            secrets.get_mut(tenant_id).and_then(|(versions, _)| versions.get_mut(version).map(|entry| (entry, ())))
        {
            json_and_labels.1.retain(|label| label != stage);
        }
        Ok(())
    }

    async fn replace(&self, tenant_id: &str, json: &str, expected: &str) -> Result<String, DocumentError> {
        let mut secrets = self.secrets.lock().expect("not poisoned");
        let (versions, current) = secrets.get_mut(tenant_id).ok_or_else(|| DocumentError::Service {
            operation: "PutSecretValue",
            tenant_id: tenant_id.to_owned(),
            detail: "ResourceNotFoundException".to_owned(),
        })?;
        if current != expected {
            return Err(DocumentError::Changed { tenant_id: tenant_id.to_owned(), current: current.clone() });
        }
        let next = next_version_id(expected);
        if let Some((stored, _)) = versions.get(&next) {
            if stored != json {
                return Err(DocumentError::Changed { tenant_id: tenant_id.to_owned(), current: next });
            }
        }
        for (_, labels) in versions.values_mut() {
            labels.retain(|label| label != "AWSCURRENT");
        }
        versions.insert(next.clone(), (json.to_owned(), vec!["AWSCURRENT".to_owned()]));
        *current = next.clone();
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn of_two_edits_from_one_version_only_the_first_is_stored() {
        let documents = InMemoryDocuments::default().with_secret("acme", r#"{"a": 1}"#);
        let read = documents.read("acme").await.unwrap().unwrap();
        let first = documents.replace("acme", r#"{"a": 2}"#, &read.version).await.unwrap();
        let second = documents.replace("acme", r#"{"a": 3}"#, &read.version).await.unwrap_err();
        assert!(matches!(second, DocumentError::Changed { .. }), "{second}");
        let now = documents.read("acme").await.unwrap().unwrap();
        assert_eq!(now.version, first);
        assert_eq!(now.value, serde_json::json!({"a": 2}));
    }

    #[test]
    fn the_next_version_id_is_a_valid_client_request_token_and_depends_on_the_version_replaced() {
        let next = next_version_id("3f1c5a1e-0000-4000-8000-000000000001");
        assert_eq!(next.len(), 64);
        assert!(next.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(next, next_version_id("3f1c5a1e-0000-4000-8000-000000000002"));
    }
}
