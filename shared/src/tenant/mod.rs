//! Tenants: the JSON a customer is onboarded with (docs/design.md,
//! "Tenants"), parsed into a typed [`TenantConfig`] and validated field by
//! field, and the directory of every tenant's secret. Parsing reports every
//! problem at once, each with the path of the field it concerns
//! (`feeds[1].connector`), so an operator fixes a broken secret in one pass.
//!
//! This folder sits below delivery: it reads the connector registry and the
//! domain vocabulary, and nothing of how a delivery is made. It must never
//! let a credential escape: credential types print redacted in `Debug`,
//! error messages never echo a credential's value, and nothing here
//! implements `Serialize`. The field-by-field reference is `docs/tenants.md`.
//!
//! Layout:
//! - [`model`]: the validated tenant, its plan, feeds, connectors and [`SecretString`];
//! - [`limits`]: every bound a secret is checked against, Google's cell grid included;
//! - [`errors`]: [`FieldError`] and [`TenantErrors`];
//! - [`parse`]: the document's root and its feeds, and the rules across fields;
//! - [`parse_connector`]: one connector by its type, and Google key files;
//! - [`parse_notifications`]: arrival-event targets (webhooks, event buses) and failure contacts;
//! - [`json`]: walking JSON with paths, and the strict reader that refuses repeated keys;
//! - [`formats`]: ids, ARNs, regions, keys, addresses, spreadsheet and webhook URLs, signing secrets;
//! - [`conflicts`]: feeds that would write one destination, within a tenant or across tenants;
//! - [`directory`]: the [`TenantDirectory`] port and its Secrets Manager adapter.

pub mod conflicts;
pub mod directory;
pub mod errors;
pub mod formats;
mod json;
pub mod limits;
pub mod model;
pub mod parse;
pub mod parse_connector;
pub mod parse_notifications;

#[cfg(test)]
mod tests;

pub use crate::connector_registry::ConnectorKind;
pub use crate::store::normalise_prefix;
pub use directory::{DirectoryError, InMemoryTenants, SecretsManagerTenants, TenantDirectory, TenantEntry};
pub use errors::{FieldError, TenantErrors};
pub use formats::{
    is_email_address, is_external_id_of, is_safe_id, new_external_id, new_webhook_signing_secret, random_bytes,
    webhook_signing_key, RandomUnavailable, GOOGLE_TOKEN_URI,
};
pub use limits::*;
pub use model::{
    Connector, EmailConnector, EventBridgeTarget, Feed, GcsConnector, GcsServiceAccount, NotificationTarget, Plan,
    S3Destination, S3KeysConnector, S3RoleConnector, SecretString, SheetsConnector, TenantConfig, WebhookTarget,
};
pub use parse::{parse_tenant_document, parse_tenant_secret};
pub use parse_connector::parse_service_account_key;
