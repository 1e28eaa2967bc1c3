//! The tenant model: a validated tenant secret ([`TenantConfig`]), its
//! plan, feeds and connectors, and the redacted credential type
//! [`SecretString`]. Values of these types exist only after
//! [`super::parse_tenant_secret`] accepted the document, so code that holds
//! one need not check it again. Credential-holding types print redacted in
//! `Debug`, and nothing here implements `Serialize`: a credential cannot
//! leave through a log line or a status object by accident.

use std::collections::BTreeMap;
use std::fmt;

use crate::connector_registry::ConnectorKind;
use crate::domain::{Encoding, ReportKind};
use crate::manifest::DeliveryMode;

/// A validated tenant secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    pub schema_version: u64,
    pub tenant_id: String,
    pub plan: Plan,
    /// A disabled tenant is skipped by fanout; its secret is still validated.
    pub enabled: bool,
    /// Destinations with their credentials, by the name feeds refer to.
    pub connectors: BTreeMap<String, Connector>,
    pub feeds: Vec<Feed>,
    /// Where arrival events go (`notifications`, docs/design.md, "Events"); may be empty.
    pub notifications: Vec<NotificationTarget>,
    /// Addresses told in plain words when a delivery fails in a way they
    /// can fix (`contacts`); may be empty.
    pub contacts: Vec<String>,
}

impl TenantConfig {
    /// The connector a feed delivers to. Always `Some` for a config returned
    /// by [`parse_tenant_secret`], which checks every reference.
    pub fn connector_of(&self, feed: &Feed) -> Option<&Connector> {
        self.connectors.get(&feed.connector)
    }

    /// Advice on optional fields worth setting, one line each (never an
    /// error): an `s3-role` connector without `bucketOwnerAccountId` is
    /// offered its role's account, so that a bucket of the same name
    /// re-created by someone else never receives the tenant's data.
    pub fn suggestions(&self) -> Vec<String> {
        self.connectors
            .iter()
            .filter_map(|(name, connector)| match connector {
                Connector::S3Role(role) if role.destination.bucket_owner.is_none() => {
                    let account = role.role_arn.split(':').nth(4).filter(|account| account.len() == 12)?;
                    Some(format!(
                        "connectors.{name}.bucketOwnerAccountId is not set: if bucket {} belongs to the role's \
                         account, add \"bucketOwnerAccountId\": \"{account}\" (sent as ExpectedBucketOwner, so a \
                         bucket of that name re-created by someone else never receives this tenant's data)",
                        role.destination.bucket
                    ))
                }
                Connector::GoogleSheets(_) => Some(format!(
                    "connectors.{name}: with keyless Google the spreadsheet is written as this tenant's own Google \
                     address (`popularity tenant google-identity {}` prints it): the customer shares the \
                     spreadsheet with it as Editor; one shared only with our older common address keeps working \
                     until the operator turns the common account off",
                    self.tenant_id
                )),
                _ => None,
            })
            .collect()
    }
}

/// The customer's plan, which bounds how many feeds it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    Trial,
    Standard,
    Enterprise,
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Trial, Plan::Standard, Plan::Enterprise];

    pub fn name(self) -> &'static str {
        match self {
            Plan::Trial => "trial",
            Plan::Standard => "standard",
            Plan::Enterprise => "enterprise",
        }
    }

    /// The most feeds a tenant on this plan may have.
    pub fn feed_limit(self) -> usize {
        match self {
            Plan::Trial => 1,
            Plan::Standard => 5,
            Plan::Enterprise => 50,
        }
    }

    pub fn from_name(name: &str) -> Option<Plan> {
        Plan::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to send, where, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Unique within the tenant; part of job and status keys.
    pub id: String,
    /// Name of a connector of the same tenant.
    pub connector: String,
    /// In canonical order (track, artist, product), without duplicates.
    pub reports: Vec<ReportKind>,
    pub encoding: Encoding,
    pub mode: DeliveryMode,
    /// Least time between two deliveries; `None` delivers every run.
    pub interval_seconds: Option<u64>,
    /// A delta feed's longest time between two full deliveries (between
    /// run times); `None` for a full feed.
    pub full_every_seconds: Option<u64>,
    /// A paused feed is kept but not delivered, and does not count against
    /// the plan's limit.
    pub paused: bool,
}

/// A destination and the credentials to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connector {
    Email(EmailConnector),
    S3Role(S3RoleConnector),
    S3Keys(S3KeysConnector),
    /// We write with our own role; the customer's bucket policy trusts our account.
    S3BucketPolicy(S3Destination),
    Gcs(GcsConnector),
    GoogleSheets(SheetsConnector),
}

impl Connector {
    pub fn kind(&self) -> ConnectorKind {
        match self {
            Connector::Email(_) => ConnectorKind::Email,
            Connector::S3Role(_) => ConnectorKind::S3Role,
            Connector::S3Keys(_) => ConnectorKind::S3Keys,
            Connector::S3BucketPolicy(_) => ConnectorKind::S3BucketPolicy,
            Connector::Gcs(_) => ConnectorKind::Gcs,
            Connector::GoogleSheets(_) => ConnectorKind::GoogleSheets,
        }
    }

    /// Bucket, region and prefix of the three S3 connector types.
    pub fn s3_destination(&self) -> Option<&S3Destination> {
        match self {
            Connector::S3Role(c) => Some(&c.destination),
            Connector::S3Keys(c) => Some(&c.destination),
            Connector::S3BucketPolicy(d) => Some(d),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConnector {
    pub recipients: Vec<String>,
}

/// Where files go in a customer's S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Destination {
    /// `arn:aws:s3:::<bucket>`, as given.
    pub bucket_arn: String,
    /// The bucket name taken from the ARN.
    pub bucket: String,
    pub region: String,
    /// Empty, or ending with exactly one `/`.
    pub prefix: String,
    /// The 12-digit account that owns the bucket (`bucketOwnerAccountId`),
    /// sent as `ExpectedBucketOwner` on every call to the bucket.
    pub bucket_owner: Option<String>,
}

/// Writes through a cross-account role assumed with an external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3RoleConnector {
    pub destination: S3Destination,
    pub role_arn: String,
    pub external_id: SecretString,
}

/// Writes with long-term IAM user keys the customer provisioned.
#[derive(Clone, PartialEq, Eq)]
pub struct S3KeysConnector {
    pub destination: S3Destination,
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for S3KeysConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3KeysConnector")
            .field("destination", &self.destination)
            .field("access_key_id", &format_args!("\"…{}\"", last_chars(self.access_key_id.expose_secret(), 4)))
            .field("secret_access_key", &self.secret_access_key)
            .finish()
    }
}

/// Uploads into a Google Cloud Storage bucket: keyless, as the tenant's own
/// Google identity of ours (the customer grants its address Object
/// Creator), or, when the secret holds a key file, as the customer's
/// service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConnector {
    pub bucket: String,
    /// Empty, or ending with exactly one `/`.
    pub prefix: String,
    /// `None`: keyless (docs/design.md, "Tenants").
    pub service_account: Option<GcsServiceAccount>,
}

/// A service account key file (`"type": "service_account"`).
#[derive(Clone, PartialEq, Eq)]
pub struct GcsServiceAccount {
    /// The account's identity, `…@….iam.gserviceaccount.com`; not a secret.
    pub client_email: String,
    /// The whole key file, as JSON text.
    pub key_json: SecretString,
}

impl fmt::Debug for GcsServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsServiceAccount")
            .field("client_email", &self.client_email)
            .field("key_json", &self.key_json)
            .finish()
    }
}

/// Writes the top `max_rows` of each report into a Google Sheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetsConnector {
    pub spreadsheet_url: String,
    /// The `<id>` of `https://docs.google.com/spreadsheets/d/<id>/…`.
    pub spreadsheet_id: String,
    pub max_rows: u64,
}

/// One target of a tenant's arrival events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationTarget {
    Webhook(WebhookTarget),
    EventBridge(EventBridgeTarget),
}

impl NotificationTarget {
    /// `webhook` or `eventbridge`, as the secret names the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            NotificationTarget::Webhook(_) => "webhook",
            NotificationTarget::EventBridge(_) => "eventbridge",
        }
    }

    /// Where events go, for logs and status objects: the URL or the bus
    /// ARN, never the signing secret.
    pub fn address(&self) -> &str {
        match self {
            NotificationTarget::Webhook(webhook) => &webhook.url,
            NotificationTarget::EventBridge(bus) => &bus.event_bus_arn,
        }
    }
}

/// An HTTPS endpoint of the customer's, sent Standard Webhooks requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    /// `whsec_<base64>`, generated by `popularity tenant webhook-secret`.
    pub signing_secret: SecretString,
}

impl WebhookTarget {
    /// The HMAC key: the base64 after `whsec_`, decoded. Always `Some` for
    /// a target [`super::parse_tenant_secret`] accepted.
    pub fn signing_key(&self) -> Option<Vec<u8>> {
        super::formats::webhook_signing_key(self.signing_secret.expose_secret())
    }
}

/// An event bus in the customer's account that allows our notifier's role
/// to `events:PutEvents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBridgeTarget {
    /// `arn:aws:events:<region>:<account>:event-bus/<name>`.
    pub event_bus_arn: String,
    /// The region of the ARN, where PutEvents is sent.
    pub region: String,
}

/// A credential. `Debug` prints `"<redacted>"`; the value is only reachable
/// through [`SecretString::expose_secret`], so every use is visible in review.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

fn last_chars(value: &str, n: usize) -> &str {
    let start = value.char_indices().rev().nth(n.saturating_sub(1)).map_or(0, |(i, _)| i);
    &value[start..]
}
