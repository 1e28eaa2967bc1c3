//! Tenant secrets (DESIGN §6): the JSON a tenant is onboarded with, parsed
//! into a typed [`TenantConfig`] and validated field by field. Parsing walks
//! a `serde_json::Value` by hand so that every problem is reported at once,
//! each with the path of the field it concerns (`feeds[1].connector`), which
//! is what lets an operator fix a broken secret in one pass. This module does
//! no I/O, and it must never let a credential escape: credential types print
//! redacted in `Debug`, error messages never echo a credential's value, and
//! nothing here implements `Serialize`. The field-by-field reference is
//! `docs/tenants.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

pub use crate::delivery::registry::ConnectorKind;
use crate::domain::{Compression, Encoding, Format, ReportKind};
use crate::manifest::DeliveryMode;

/// The only `schemaVersion` this build understands.
pub const TENANT_SCHEMA_VERSION: u64 = 1;
/// Bounds of a feed's `intervalSeconds` (one hour to one week).
pub const MIN_INTERVAL_SECONDS: u64 = 3_600;
pub const MAX_INTERVAL_SECONDS: u64 = 604_800;
/// `fullEverySeconds` of a delta feed: its range and default (DESIGN §6).
pub const MIN_FULL_EVERY_SECONDS: u64 = 604_800;
pub const MAX_FULL_EVERY_SECONDS: u64 = 7_776_000;
pub const DEFAULT_FULL_EVERY_SECONDS: u64 = 2_592_000;
/// The id of a feed that does not give one.
pub const DEFAULT_FEED_ID: &str = "default";
/// Bounds of a google-sheets connector's `maxRows`: one report tab of that
/// many rows (a header, three columns) must fit Google's 10,000,000 cells.
pub const MAX_SHEET_ROWS: u64 = crate::delivery::connectors::sheets::MAX_ROWS_ONE_REPORT;
/// SES accepts at most 50 recipients per message.
pub const MAX_EMAIL_RECIPIENTS: usize = 50;
/// Longest key prefix accepted in a connector (S3 keys are at most 1,024
/// bytes; the rest is needed for `<data_type>/<runId>/part-NNN.<ext>`).
pub const MAX_PREFIX_BYTES: usize = 512;

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

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

/// Uploads into a Google Cloud Storage bucket as the customer's service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConnector {
    pub bucket: String,
    /// Empty, or ending with exactly one `/`.
    pub prefix: String,
    pub service_account: GcsServiceAccount,
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

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem with one field of a tenant secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// `tenantId`, `connectors.lake.roleArn`, `feeds[1].reports[0]`, or
    /// `(root)` for the document as a whole.
    pub path: String,
    pub message: String,
}

/// Every problem found in a tenant secret, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantErrors {
    errors: Vec<FieldError>,
}

impl TenantErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a TenantErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// All errors on one line, separated by `; ` (a log line or status object).
impl fmt::Display for TenantErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TenantErrors {}

#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError { path: path.to_owned(), message: message.into() });
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parse and validate the value of the secret `<TENANT_SECRET_PREFIX><suffix>`.
/// The `tenantId` inside must equal `secret_name_suffix`.
pub fn parse_tenant_secret(secret_name_suffix: &str, json: &str) -> Result<TenantConfig, TenantErrors> {
    parse(Some(secret_name_suffix), json)
}

/// As [`parse_tenant_secret`], for a document not yet stored under a secret
/// name (`popularity tenant validate`): every check but the name match.
pub fn parse_tenant_document(json: &str) -> Result<TenantConfig, TenantErrors> {
    parse(None, json)
}

/// A Google service account key file (JSON text), checked as a gcs
/// connector's `serviceAccountJson` is: what deliver-sheets reads from the
/// secret holding *our* key.
pub fn parse_service_account_key(json: &str) -> Result<GcsServiceAccount, TenantErrors> {
    let mut problems = Problems::default();
    let key = parse_service_account(&mut problems, "(key file)", &Value::String(json.to_owned()));
    match key {
        Some(key) if problems.0.is_empty() => Ok(key),
        _ => {
            if problems.0.is_empty() {
                problems.add("(key file)", "is not a service account key file");
            }
            Err(TenantErrors { errors: problems.0 })
        }
    }
}

/// Whether `id` is a valid tenant, feed or connector id: `[a-z0-9][a-z0-9-]{0,62}`,
/// safe as one segment of an S3 key.
pub fn is_safe_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A key prefix is empty or ends with exactly one `/`: the store's rule.
pub use crate::store::normalise_prefix;

const ROOT: &str = "(root)";
const ROOT_FIELDS: &[&str] = &["schemaVersion", "tenantId", "plan", "enabled", "connectors", "feeds"];
const FEED_FIELDS: &[&str] =
    &["id", "connector", "reports", "format", "compression", "mode", "intervalSeconds", "fullEverySeconds"];
const SAFE_ID_RULE: &str = "lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters";

fn parse(secret_name_suffix: Option<&str>, json: &str) -> Result<TenantConfig, TenantErrors> {
    let mut problems = Problems::default();
    let root = match serde_json::from_str::<StrictValue>(json) {
        Ok(StrictValue(value)) => value,
        Err(e) => {
            problems
                .add(ROOT, format!("not valid JSON at line {} column {}: {}", e.line(), e.column(), json_reason(&e)));
            return Err(TenantErrors { errors: problems.0 });
        }
    };
    let Some(object) = expect_object(&mut problems, ROOT, &root) else {
        return Err(TenantErrors { errors: problems.0 });
    };
    let fields = Fields { map: object, path: "" };

    let schema_version = match fields.get("schemaVersion") {
        None => {
            problems.add("schemaVersion", format!("required (this version reads {TENANT_SCHEMA_VERSION})"));
            None
        }
        Some(v) => expect_integer(&mut problems, "schemaVersion", v).and_then(|n| {
            if n == i128::from(TENANT_SCHEMA_VERSION) {
                Some(TENANT_SCHEMA_VERSION)
            } else {
                problems.add("schemaVersion", format!("{n} is not supported (expected {TENANT_SCHEMA_VERSION})"));
                None
            }
        }),
    };

    let tenant_id = fields.required_str(&mut problems, "tenantId", "required", false).and_then(|id| {
        if !is_safe_id(id) {
            problems.add("tenantId", format!("{id:?} is not a valid tenant id ({SAFE_ID_RULE})"));
            None
        } else if secret_name_suffix.is_some_and(|suffix| suffix != id) {
            let suffix = secret_name_suffix.unwrap_or_default();
            problems.add("tenantId", format!("{id:?} does not match the secret name suffix {suffix:?}"));
            None
        } else {
            Some(id.to_owned())
        }
    });

    let plan = fields
        .required_str(&mut problems, "plan", "required (one of trial, standard, enterprise)", false)
        .and_then(|name| {
            let plan = Plan::from_name(name);
            if plan.is_none() {
                problems.add("plan", format!("{name:?} is not one of trial, standard, enterprise"));
            }
            plan
        });

    let enabled = match fields.get("enabled") {
        None => Some(true),
        Some(v) => expect_bool(&mut problems, "enabled", v),
    };

    // Names of every declared connector, with its type when that is known,
    // so that a feed naming a broken connector gets no second error.
    let mut declared: BTreeMap<String, Option<ConnectorKind>> = BTreeMap::new();
    let connectors = match fields.get("connectors") {
        None => {
            problems.add("connectors", "required (an object of named connectors)");
            None
        }
        Some(v) => expect_object(&mut problems, "connectors", v).map(|map| {
            let mut connectors = BTreeMap::new();
            for (name, value) in map {
                let path = child_path("connectors", name);
                if !is_safe_id(name) {
                    problems.add(&path, format!("{name:?} is not a valid connector name ({SAFE_ID_RULE})"));
                }
                let (kind, connector) = parse_connector(&mut problems, &path, value);
                declared.insert(name.clone(), kind);
                if let Some(connector) = connector {
                    connectors.insert(name.clone(), connector);
                }
            }
            connectors
        }),
    };

    let feeds = match fields.get("feeds") {
        None => {
            problems.add("feeds", "required (an array of feeds, possibly empty)");
            None
        }
        Some(v) => expect_array(&mut problems, "feeds", v).map(|items| {
            let mut seen_ids = BTreeSet::new();
            let feeds: Vec<Feed> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    parse_feed(&mut problems, &format!("feeds[{i}]"), item, &declared, &mut seen_ids)
                })
                .collect();
            if let Some(plan) = plan {
                if items.len() > plan.feed_limit() {
                    problems.add(
                        "feeds",
                        format!(
                            "{} feeds exceed the {} plan's limit of {}",
                            items.len(),
                            plan.name(),
                            plan.feed_limit()
                        ),
                    );
                }
            }
            feeds
        }),
    };

    if let (Some(connectors), Some(feeds)) = (&connectors, &feeds) {
        check_sheet_sizes(&mut problems, connectors, feeds);
        check_destination_collisions(&mut problems, connectors, feeds);
    }

    fields.reject_unknown(&mut problems, ROOT_FIELDS, |_| None);

    match (schema_version, tenant_id, plan, enabled, connectors, feeds) {
        (Some(schema_version), Some(tenant_id), Some(plan), Some(enabled), Some(connectors), Some(feeds))
            if problems.0.is_empty() =>
        {
            Ok(TenantConfig { schema_version, tenant_id, plan, enabled, connectors, feeds })
        }
        _ => {
            if problems.0.is_empty() {
                // Unreachable by construction: every `None` above records why.
                problems.add(ROOT, "is not a valid tenant secret");
            }
            Err(TenantErrors { errors: problems.0 })
        }
    }
}

/// Returns the connector's type when it could be read, and the connector
/// when the whole of it is valid.
fn parse_connector(problems: &mut Problems, path: &str, value: &Value) -> (Option<ConnectorKind>, Option<Connector>) {
    let Some(map) = expect_object(problems, path, value) else { return (None, None) };
    let fields = Fields { map, path };
    let type_list = ConnectorKind::ALL.map(ConnectorKind::type_name).join(", ");
    let kind =
        fields.required_str(problems, "type", &format!("required (one of {type_list})"), false).and_then(|name| {
            let kind = ConnectorKind::from_type_name(name);
            if kind.is_none() {
                problems.add(&child_path(path, "type"), format!("{name:?} is not one of {type_list}"));
            }
            kind
        });
    let Some(kind) = kind else { return (None, None) };

    let required = format!("required for {}", kind.type_name());
    let connector = match kind {
        ConnectorKind::Email => parse_recipients(problems, &fields, &required)
            .map(|recipients| Connector::Email(EmailConnector { recipients })),
        ConnectorKind::S3Role => {
            let destination = parse_s3_destination(problems, &fields, &required);
            let role_arn = fields.required_str(problems, "roleArn", &required, false).and_then(|arn| {
                if is_iam_role_arn(arn) {
                    Some(arn.to_owned())
                } else {
                    problems.add(
                        &child_path(path, "roleArn"),
                        format!("{arn:?} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"),
                    );
                    None
                }
            });
            let external_id = fields
                .required_str(
                    problems,
                    "externalId",
                    &format!("{required} (the sts:ExternalId the role's trust policy requires)"),
                    true,
                )
                .and_then(|id| {
                    if is_external_id(id) {
                        Some(SecretString::new(id))
                    } else {
                        problems.add(
                            &child_path(path, "externalId"),
                            "is not valid (2 to 1,224 characters: letters, digits and +=,.@:/-)",
                        );
                        None
                    }
                });
            match (destination, role_arn, external_id) {
                (Some(destination), Some(role_arn), Some(external_id)) => {
                    Some(Connector::S3Role(S3RoleConnector { destination, role_arn, external_id }))
                }
                _ => None,
            }
        }
        ConnectorKind::S3Keys => {
            let destination = parse_s3_destination(problems, &fields, &required);
            let access_key_id = fields.required_str(problems, "accessKeyId", &required, true).and_then(|id| {
                let message = if id.starts_with("ASIA") {
                    "is not valid: it is a temporary (ASIA…) key that expires; give a long-term IAM user key (AKIA…)"
                } else if !is_long_term_access_key_id(id) {
                    "is not valid (a long-term IAM user key id: AKIA followed by 12 to 124 uppercase letters and digits)"
                } else {
                    return Some(SecretString::new(id));
                };
                problems.add(&child_path(path, "accessKeyId"), message);
                None
            });
            let secret_access_key = fields.required_str(problems, "secretAccessKey", &required, true).and_then(|key| {
                if is_secret_access_key(key) {
                    Some(SecretString::new(key))
                } else {
                    problems.add(
                        &child_path(path, "secretAccessKey"),
                        "is not valid (40 characters: letters, digits, '/' and '+')",
                    );
                    None
                }
            });
            match (destination, access_key_id, secret_access_key) {
                (Some(destination), Some(access_key_id), Some(secret_access_key)) => {
                    Some(Connector::S3Keys(S3KeysConnector { destination, access_key_id, secret_access_key }))
                }
                _ => None,
            }
        }
        ConnectorKind::S3BucketPolicy => {
            parse_s3_destination(problems, &fields, &required).map(Connector::S3BucketPolicy)
        }
        ConnectorKind::Gcs => {
            let bucket = fields.required_str(problems, "bucket", &required, false).and_then(|bucket| {
                if is_gcs_bucket_name(bucket) {
                    Some(bucket.to_owned())
                } else {
                    problems.add(
                        &child_path(path, "bucket"),
                        format!(
                            "{bucket:?} is not a GCS bucket name (3 to 63 characters: lowercase letters, digits, \
                             '-', '_' and '.', starting and ending with a letter or digit)"
                        ),
                    );
                    None
                }
            });
            let prefix = parse_prefix(problems, &fields);
            let service_account = match fields.get("serviceAccountJson") {
                None => {
                    problems.add(&child_path(path, "serviceAccountJson"), required.clone());
                    None
                }
                Some(v) => parse_service_account(problems, &child_path(path, "serviceAccountJson"), v),
            };
            match (bucket, prefix, service_account) {
                (Some(bucket), Some(prefix), Some(service_account)) => {
                    Some(Connector::Gcs(GcsConnector { bucket, prefix, service_account }))
                }
                _ => None,
            }
        }
        ConnectorKind::GoogleSheets => {
            let url = fields.required_str(problems, "spreadsheetUrl", &required, false).and_then(|url| {
                let id = spreadsheet_id(url);
                if id.is_none() {
                    problems.add(
                        &child_path(path, "spreadsheetUrl"),
                        format!(
                            "{url:?} is not a Google Sheets URL (https://docs.google.com/spreadsheets/d/<id>/edit)"
                        ),
                    );
                }
                id.map(|id| (url.to_owned(), id.to_owned()))
            });
            let max_rows = match fields.get("maxRows") {
                None => {
                    problems.add(&child_path(path, "maxRows"), format!("{required} (rows per report, 1 to 3,333,329)"));
                    None
                }
                Some(v) => {
                    let max_rows_path = child_path(path, "maxRows");
                    expect_integer(problems, &max_rows_path, v).and_then(|n| {
                        in_range(
                            problems,
                            &max_rows_path,
                            n,
                            1,
                            MAX_SHEET_ROWS,
                            "3,333,329 (a tab of that many rows and 3 columns fills Google's 10,000,000 cells)",
                        )
                    })
                }
            };
            match (url, max_rows) {
                (Some((spreadsheet_url, spreadsheet_id)), Some(max_rows)) => {
                    Some(Connector::GoogleSheets(SheetsConnector { spreadsheet_url, spreadsheet_id, max_rows }))
                }
                _ => None,
            }
        }
    };

    fields.reject_unknown(problems, kind.fields(), |field| {
        // A field of another connector type is the likeliest mistake: say so.
        ConnectorKind::ALL.into_iter().any(|k| k.fields().contains(&field)).then(|| {
            format!("unknown field for {} connectors (their fields: {})", kind.type_name(), kind.fields().join(", "))
        })
    });
    (Some(kind), connector)
}

fn parse_recipients(problems: &mut Problems, fields: &Fields<'_>, required: &str) -> Option<Vec<String>> {
    let path = child_path(fields.path, "recipients");
    let Some(value) = fields.get("recipients") else {
        problems.add(&path, format!("{required} (an array of email addresses)"));
        return None;
    };
    let items = expect_array(problems, &path, value)?;
    if items.is_empty() {
        problems.add(&path, "must list at least one email address");
        return None;
    }
    if items.len() > MAX_EMAIL_RECIPIENTS {
        problems.add(&path, format!("{} recipients exceed the limit of {MAX_EMAIL_RECIPIENTS}", items.len()));
    }
    let before = problems.0.len();
    let mut recipients: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(address) = expect_str(problems, &item_path, item, false) else { continue };
        if !is_email_address(address) {
            problems.add(&item_path, format!("{address:?} is not an email address"));
        } else if recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
            problems.add(&item_path, format!("duplicate recipient {address:?}"));
        } else {
            recipients.push(address.to_owned());
        }
    }
    (problems.0.len() == before).then_some(recipients)
}

fn parse_s3_destination(problems: &mut Problems, fields: &Fields<'_>, required: &str) -> Option<S3Destination> {
    let bucket = fields.required_str(problems, "bucketArn", required, false).and_then(|arn| {
        let message = match s3_bucket_of_arn(arn) {
            Ok(bucket) => return Some((arn.to_owned(), bucket.to_owned())),
            Err(BucketArnProblem::ObjectArn) => {
                format!("{arn:?} names objects, not a bucket: give arn:aws:s3:::<bucket> and put the path in prefix")
            }
            Err(BucketArnProblem::NotAnArn) => format!("{arn:?} is not an S3 bucket ARN (arn:aws:s3:::<bucket>)"),
            Err(BucketArnProblem::BadBucketName) => format!(
                "{arn:?} is not an S3 bucket ARN (arn:aws:s3:::<bucket>): the bucket name must be 3 to 63 \
                 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
            ),
        };
        problems.add(&child_path(fields.path, "bucketArn"), message);
        None
    });
    let region = fields.required_str(problems, "region", required, false).and_then(|region| {
        if is_aws_region(region) {
            Some(region.to_owned())
        } else {
            problems
                .add(&child_path(fields.path, "region"), format!("{region:?} is not an AWS region (like eu-west-1)"));
            None
        }
    });
    let prefix = parse_prefix(problems, fields);
    let owner_path = child_path(fields.path, "bucketOwnerAccountId");
    let bucket_owner = match fields.get("bucketOwnerAccountId") {
        None => Some(None),
        Some(value) => expect_str(problems, &owner_path, value, false).and_then(|id| {
            if is_account_id(id) {
                Some(Some(id.to_owned()))
            } else {
                problems.add(&owner_path, format!("{id:?} is not a 12-digit AWS account id"));
                None
            }
        }),
    };
    match (bucket, region, prefix, bucket_owner) {
        (Some((bucket_arn, bucket)), Some(region), Some(prefix), Some(bucket_owner)) => {
            Some(S3Destination { bucket_arn, bucket, region, prefix, bucket_owner })
        }
        _ => None,
    }
}

fn parse_prefix(problems: &mut Problems, fields: &Fields<'_>) -> Option<String> {
    let path = child_path(fields.path, "prefix");
    let Some(value) = fields.get("prefix") else { return Some(String::new()) };
    let raw = expect_str(problems, &path, value, false)?;
    let prefix = normalise_prefix(raw);
    if prefix.chars().any(char::is_control) {
        problems.add(&path, "must not contain control characters");
        None
    } else if prefix.split('/').any(|segment| segment == "." || segment == "..") {
        problems.add(&path, format!("{raw:?} must not contain '.' or '..' segments"));
        None
    } else if prefix.len() > MAX_PREFIX_BYTES {
        problems.add(&path, format!("is {} bytes long, above the limit of {MAX_PREFIX_BYTES}", prefix.len()));
        None
    } else {
        Some(prefix)
    }
}

/// `serviceAccountJson` is the key file Google hands out, either embedded as
/// an object or as a string holding its JSON. Nothing inside is echoed.
fn parse_service_account(problems: &mut Problems, path: &str, value: &Value) -> Option<GcsServiceAccount> {
    let parsed;
    let key = match value {
        Value::Object(map) => map,
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                parsed = map;
                &parsed
            }
            Ok(_) => {
                problems.add(path, "is not valid: expected a service account key file (a JSON object)");
                return None;
            }
            Err(e) => {
                problems.add(
                    path,
                    format!(
                        "is not valid JSON at line {} column {} of the key file: {}",
                        e.line(),
                        e.column(),
                        json_reason(&e)
                    ),
                );
                return None;
            }
        },
        other => {
            problems.add(
                path,
                format!(
                    "expected a service account key file (a JSON object, or a string holding one), found {}",
                    describe(other, true)
                ),
            );
            return None;
        }
    };
    let fields = Fields { map: key, path };
    let before = problems.0.len();
    match fields.get("type") {
        Some(Value::String(t)) if t == "service_account" => {}
        Some(_) => problems.add(&child_path(path, "type"), "is not valid (expected \"service_account\")"),
        None => problems.add(&child_path(path, "type"), "required (\"service_account\")"),
    }
    let client_email = match fields.get("client_email") {
        Some(Value::String(email)) if is_email_address(email) => Some(email.clone()),
        Some(_) => {
            problems
                .add(&child_path(path, "client_email"), "is not valid (expected the service account's email address)");
            None
        }
        None => {
            problems.add(&child_path(path, "client_email"), "required in a service account key");
            None
        }
    };
    match fields.get("private_key") {
        Some(Value::String(pem)) if pem.contains("-----BEGIN PRIVATE KEY-----") => {}
        Some(_) => problems.add(&child_path(path, "private_key"), "is not valid (expected a PEM private key)"),
        None => problems.add(&child_path(path, "private_key"), "required in a service account key"),
    }
    match fields.get("private_key_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => {}
        Some(_) => problems.add(&child_path(path, "private_key_id"), "is not valid (expected the key's id)"),
        None => problems.add(&child_path(path, "private_key_id"), "required in a service account key"),
    }
    match fields.get("token_uri") {
        None => {}
        Some(Value::String(uri)) if uri == GOOGLE_TOKEN_URI => {}
        Some(_) => problems.add(
            &child_path(path, "token_uri"),
            format!("is not Google's token endpoint ({GOOGLE_TOKEN_URI}); a key file must not point elsewhere"),
        ),
    }
    let client_email = client_email.filter(|_| problems.0.len() == before)?;
    let key_json = match value {
        Value::String(text) => text.clone(),
        _ => value.to_string(),
    };
    Some(GcsServiceAccount { client_email, key_json: SecretString::new(key_json) })
}

fn parse_feed(
    problems: &mut Problems,
    path: &str,
    value: &Value,
    declared: &BTreeMap<String, Option<ConnectorKind>>,
    seen_ids: &mut BTreeSet<String>,
) -> Option<Feed> {
    let map = expect_object(problems, path, value)?;
    let fields = Fields { map, path };
    let before = problems.0.len();

    let id_path = child_path(path, "id");
    let id = match fields.get("id") {
        None => Some(DEFAULT_FEED_ID),
        Some(v) => expect_str(problems, &id_path, v, false),
    }
    .and_then(|id| {
        if !is_safe_id(id) {
            problems.add(&id_path, format!("{id:?} is not a valid feed id ({SAFE_ID_RULE})"));
            None
        } else if !seen_ids.insert(id.to_owned()) {
            let hint = if id == DEFAULT_FEED_ID { " (a feed without an id is called \"default\")" } else { "" };
            problems.add(&id_path, format!("duplicate feed id {id:?}{hint}"));
            None
        } else {
            Some(id.to_owned())
        }
    });

    let mut connector_kind = None;
    let connector =
        fields.required_str(problems, "connector", "required (the name of one of the tenant's connectors)", false);
    let connector = connector.and_then(|name| match declared.get(name) {
        Some(kind) => {
            connector_kind = *kind;
            Some(name.to_owned())
        }
        None => {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            let known =
                if known.is_empty() { "there are none".to_owned() } else { format!("they are {}", known.join(", ")) };
            problems.add(&child_path(path, "connector"), format!("no connector named {name:?} ({known})"));
            None
        }
    });

    let reports = parse_reports(problems, &fields);
    let format = fields.optional_choice(
        problems,
        "format",
        &[("json", Format::Json), ("jsonl", Format::Jsonl), ("tsv", Format::Tsv)],
    );
    let compression =
        fields.optional_choice(problems, "compression", &[("none", Compression::None), ("gzip", Compression::Gzip)]);
    let mode =
        fields.optional_choice(problems, "mode", &[("full", DeliveryMode::Full), ("delta", DeliveryMode::Delta)]);

    if connector_kind == Some(ConnectorKind::GoogleSheets) {
        // A sheet always holds the top rows of the full reports: these would be ignored.
        for field in ["format", "compression", "mode"] {
            if fields.get(field).is_some() {
                problems.add(
                    &child_path(path, field),
                    "does not apply to a google-sheets connector (a sheet holds the top maxRows rows of each full report)",
                );
            }
        }
    }

    let interval_path = child_path(path, "intervalSeconds");
    let interval_seconds = match fields.get("intervalSeconds") {
        None => None,
        Some(v) => expect_integer(problems, &interval_path, v).and_then(|n| {
            in_range(problems, &interval_path, n, MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS, "604800 (one week)")
        }),
    };

    let full_every_path = child_path(path, "fullEverySeconds");
    let full_every_seconds = match (fields.get("fullEverySeconds"), mode) {
        (None, Some(Some(DeliveryMode::Delta))) => Some(DEFAULT_FULL_EVERY_SECONDS),
        (None, _) => None,
        (Some(_), Some(Some(DeliveryMode::Full))) => {
            problems
                .add(&full_every_path, "applies only to delta feeds (\"mode\": \"delta\"); a full feed is always full");
            None
        }
        (Some(v), _) => expect_integer(problems, &full_every_path, v).and_then(|n| {
            in_range(problems, &full_every_path, n, MIN_FULL_EVERY_SECONDS, MAX_FULL_EVERY_SECONDS, "7776000 (90 days)")
        }),
    };

    fields.reject_unknown(problems, FEED_FIELDS, |_| None);

    if problems.0.len() != before {
        return None;
    }
    Some(Feed {
        id: id?,
        connector: connector?,
        reports: reports?,
        encoding: Encoding { format: format??, compression: compression?? },
        mode: mode??,
        interval_seconds,
        full_every_seconds,
    })
}

/// Two feeds of the tenant must not write the same destination (DESIGN §7).
fn check_destination_collisions(problems: &mut Problems, connectors: &BTreeMap<String, Connector>, feeds: &[Feed]) {
    use crate::delivery::conflicts::{collisions_within, FeedDestination};
    for (first, second) in collisions_within(connectors, feeds) {
        let (a, b) = (&feeds[first], &feeds[second]);
        let place = |feed: &Feed| {
            connectors.get(&feed.connector).and_then(|c| FeedDestination::of(c, feed)).map(|d| d.describe())
        };
        problems.add(
            &format!("feeds[{second}]"),
            format!(
                "writes to {} where feed {:?} (feeds[{first}]) writes to {}: two feeds would write the same objects; \
                 give one of them another bucket or a prefix that does not contain the other's",
                place(b).unwrap_or_default(),
                a.id,
                place(a).unwrap_or_default()
            ),
        );
    }
}

/// A google-sheets feed must fit its spreadsheet's 10,000,000 cells even
/// when its tabs are the only ones.
fn check_sheet_sizes(problems: &mut Problems, connectors: &BTreeMap<String, Connector>, feeds: &[Feed]) {
    use crate::delivery::connectors::sheets::{cells_needed, MAX_SPREADSHEET_CELLS};
    for feed in feeds {
        let Some(Connector::GoogleSheets(sheet)) = connectors.get(&feed.connector) else { continue };
        let needed = cells_needed(feed.reports.len(), sheet.max_rows);
        if needed > MAX_SPREADSHEET_CELLS {
            let largest = (1..=sheet.max_rows)
                .rev()
                .find(|rows| cells_needed(feed.reports.len(), *rows) <= MAX_SPREADSHEET_CELLS)
                .unwrap_or(0);
            problems.add(
                "feeds",
                format!(
                    "feed {:?} needs {needed} cells in its spreadsheet ({} reports of {} rows, a header and 3 \
                     columns, and the _popularity tab), above Google's limit of {MAX_SPREADSHEET_CELLS}: give \
                     connector {:?} a maxRows of at most {largest}, or the feed fewer reports",
                    feed.id,
                    feed.reports.len(),
                    sheet.max_rows,
                    feed.connector
                ),
            );
        }
    }
}

fn parse_reports(problems: &mut Problems, fields: &Fields<'_>) -> Option<Vec<ReportKind>> {
    let path = child_path(fields.path, "reports");
    let Some(value) = fields.get("reports") else { return Some(ReportKind::ALL.to_vec()) };
    let items = expect_array(problems, &path, value)?;
    if items.is_empty() {
        problems.add(&path, "must name at least one report (track, artist, product), or be left out for all three");
        return None;
    }
    let before = problems.0.len();
    let mut chosen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(name) = expect_str(problems, &item_path, item, false) else { continue };
        match ReportKind::ALL.into_iter().find(|k| k.short_name() == name) {
            None => problems.add(&item_path, format!("{name:?} is not one of track, artist, product")),
            Some(kind) if !chosen.insert(kind) => problems.add(&item_path, format!("duplicate report {name:?}")),
            Some(_) => {}
        }
    }
    (problems.0.len() == before).then(|| chosen.into_iter().collect())
}

fn in_range(problems: &mut Problems, path: &str, n: i128, min: u64, max: u64, max_text: &str) -> Option<u64> {
    if n < i128::from(min) {
        problems.add(path, format!("{n} is below {min}"));
        None
    } else if n > i128::from(max) {
        problems.add(path, format!("{n} is above {max_text}"));
        None
    } else {
        u64::try_from(n).ok()
    }
}

// ---------------------------------------------------------------------------
// Walking JSON values with paths
// ---------------------------------------------------------------------------

/// The fields of one JSON object at `path` (empty for the root).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    /// A field's value; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required_str(&self, problems: &mut Problems, key: &str, missing: &str, secret: bool) -> Option<&'a str> {
        let path = child_path(self.path, key);
        match self.get(key) {
            None => {
                problems.add(&path, missing);
                None
            }
            Some(v) => expect_str(problems, &path, v, secret),
        }
    }

    /// `Some(None)` when the value is present but not one of `choices`;
    /// `Some(default)` when absent; `None` when present with the wrong type.
    fn optional_choice<T: Copy + Default>(
        &self,
        problems: &mut Problems,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<Option<T>> {
        let path = child_path(self.path, key);
        let Some(value) = self.get(key) else { return Some(Some(T::default())) };
        let text = expect_str(problems, &path, value, false)?;
        let found = choices.iter().find(|(name, _)| *name == text).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            problems.add(&path, format!("{text:?} is not one of {}", names.join(", ")));
        }
        Some(found)
    }

    /// One error per field not in `known`; `explain` may give a better
    /// message than the default "unknown field".
    fn reject_unknown(&self, problems: &mut Problems, known: &[&str], explain: impl Fn(&str) -> Option<String>) {
        for key in self.map.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let message = explain(key).unwrap_or_else(|| match closest(key, known) {
                Some(near) => format!("unknown field (did you mean {near:?}?)"),
                None => format!("unknown field (expected one of {})", known.join(", ")),
            });
            problems.add(&child_path(self.path, key), message);
        }
    }
}

fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (true, false) => format!("[{key:?}]"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}[{key:?}]"),
    }
}

/// What a value is, for "expected X, found Y". A secret's value is never
/// shown, only its JSON type.
fn describe(value: &Value, secret: bool) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::Number(_) | Value::String(_) if secret => match value {
            Value::Bool(_) => "a boolean".to_owned(),
            Value::Number(_) => "a number".to_owned(),
            _ => "a string".to_owned(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > 60 => format!("{:?}…", s.chars().take(60).collect::<String>()),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn expect_object<'v>(problems: &mut Problems, path: &str, value: &'v Value) -> Option<&'v Map<String, Value>> {
    let found = value.as_object();
    if found.is_none() {
        problems.add(path, format!("expected an object, found {}", describe(value, false)));
    }
    found
}

fn expect_array<'v>(problems: &mut Problems, path: &str, value: &'v Value) -> Option<&'v Vec<Value>> {
    let found = value.as_array();
    if found.is_none() {
        problems.add(path, format!("expected an array, found {}", describe(value, false)));
    }
    found
}

fn expect_str<'v>(problems: &mut Problems, path: &str, value: &'v Value, secret: bool) -> Option<&'v str> {
    let found = value.as_str();
    if found.is_none() {
        problems.add(path, format!("expected a string, found {}", describe(value, secret)));
    }
    found
}

fn expect_bool(problems: &mut Problems, path: &str, value: &Value) -> Option<bool> {
    let found = value.as_bool();
    if found.is_none() {
        problems.add(path, format!("expected true or false, found {}", describe(value, false)));
    }
    found
}

/// Any whole number, so that range errors can name negative values too.
fn expect_integer(problems: &mut Problems, path: &str, value: &Value) -> Option<i128> {
    let found = value.as_u64().map(i128::from).or_else(|| value.as_i64().map(i128::from));
    if found.is_none() {
        problems.add(path, format!("expected a whole number, found {}", describe(value, false)));
    }
    found
}

/// serde_json's message without its trailing " at line L column C".
fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The known name within edit distance 2 of `key`, if there is one.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// A JSON value parsed like `serde_json::Value`, except that a key repeated
/// within one object is an error: `Value` would silently keep the last one,
/// and a second `"feeds"` would quietly drop the first list.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key {key:?} appears twice in one object")));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

// ---------------------------------------------------------------------------
// Field formats
// ---------------------------------------------------------------------------

const ARN_PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];

enum BucketArnProblem {
    NotAnArn,
    ObjectArn,
    BadBucketName,
}

fn s3_bucket_of_arn(arn: &str) -> Result<&str, BucketArnProblem> {
    let rest = ARN_PARTITIONS
        .iter()
        .find_map(|partition| arn.strip_prefix("arn:")?.strip_prefix(partition)?.strip_prefix(":s3:::"))
        .ok_or(BucketArnProblem::NotAnArn)?;
    if rest.contains('/') {
        return Err(BucketArnProblem::ObjectArn);
    }
    if is_s3_bucket_name(rest) {
        Ok(rest)
    } else {
        Err(BucketArnProblem::BadBucketName)
    }
}

fn is_s3_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| edge(b) || b == b'.' || b == b'-')
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && !name.contains("..")
}

fn is_gcs_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| edge(b) || b == b'.' || b == b'-' || b == b'_')
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && !name.starts_with("goog")
}

/// `arn:aws:iam::<12-digit account>:role/<optional path/><name>`.
fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The only token endpoint a service-account key may name (DESIGN §6): a
/// tenant secret never steers our requests elsewhere.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

fn is_iam_role_arn(arn: &str) -> bool {
    let Some(rest) = ARN_PARTITIONS
        .iter()
        .find_map(|partition| arn.strip_prefix("arn:")?.strip_prefix(partition)?.strip_prefix(":iam::"))
    else {
        return false;
    };
    let Some((account, resource)) = rest.split_once(':') else { return false };
    let Some(role_path) = resource.strip_prefix("role/") else { return false };
    let name_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    let name = role_path.rsplit('/').next().unwrap_or_default();
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=64).contains(&name.len())
        && role_path.len() <= 512
        && role_path.split('/').all(|segment| !segment.is_empty() && segment.chars().all(name_char))
}

/// AWS's rule for `sts:ExternalId`.
fn is_external_id(id: &str) -> bool {
    (2..=1224).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c))
}

fn is_long_term_access_key_id(id: &str) -> bool {
    id.starts_with("AKIA")
        && (16..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn is_secret_access_key(key: &str) -> bool {
    key.len() == 40 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-2`, …
fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let lower = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let Some((number, words)) = parts.split_last() else { return false };
    parts.len() >= 3
        && words[0].len() == 2
        && words.iter().all(|w| lower(w))
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// A plain `local@domain.tld` address: no display names, no comments. Also
/// checks `SES_SENDER`.
pub fn is_email_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else { return false };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    address.len() <= 254 && local_ok && domain_ok
}

/// The id of `https://docs.google.com/spreadsheets/d/<id>[/…|?…|#…]`.
fn spreadsheet_id(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://docs.google.com/spreadsheets/d/")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let id = &rest[..end];
    (id.len() >= 20 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of DESIGN §6, verbatim.
    const DESIGN_EXAMPLE: &str = r#"{
      "schemaVersion": 1,
      "tenantId": "acme",
      "plan": "standard",
      "enabled": true,
      "connectors": {
        "inbox": {"type": "email", "recipients": ["data@acme.example"]},
        "lake":  {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data",
                  "region": "eu-west-1", "prefix": "massive/",
                  "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery",
                  "externalId": "mm-acme-7f3c"}
      },
      "feeds": [
        {"id": "all", "connector": "lake"},
        {"id": "weekly-tracks", "connector": "inbox", "reports": ["track"],
         "format": "tsv", "mode": "delta", "intervalSeconds": 604800}
      ]
    }"#;

    const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EXTERNAL_ID: &str = "mm-acme-7f3c";
    const PRIVATE_KEY_MARKER: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";

    fn service_account_key() -> Value {
        serde_json::json!({
            "type": "service_account",
            "project_id": "acme-analytics",
            "private_key_id": "0123456789abcdef",
            "private_key": format!("-----BEGIN PRIVATE KEY-----\n{PRIVATE_KEY_MARKER}\n-----END PRIVATE KEY-----\n"),
            "client_email": "feeds@acme-analytics.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
    }

    /// A valid secret with one connector of every type and a feed for each.
    fn every_connector_type() -> Value {
        serde_json::json!({
            "schemaVersion": 1,
            "tenantId": "acme",
            "plan": "enterprise",
            "connectors": {
                "inbox": {"type": "email", "recipients": ["data@acme.example", "ops@acme.example"]},
                "lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data", "region": "eu-west-1",
                         "prefix": "massive", "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery",
                         "externalId": EXTERNAL_ID, "bucketOwnerAccountId": "111122223333"},
                "keys": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::acme-keys", "region": "us-east-1",
                         "accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY},
                "policy": {"type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::acme-open", "region": "us-gov-west-1",
                           "prefix": "/in/bound/"},
                "gcs": {"type": "gcs", "bucket": "acme-feeds", "prefix": "popularity/",
                        "serviceAccountJson": service_account_key()},
                "sheet": {"type": "google-sheets",
                          "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit#gid=0",
                          "maxRows": 1000}
            },
            "feeds": [
                {"id": "mail", "connector": "inbox"},
                {"id": "role", "connector": "lake", "compression": "gzip"},
                {"id": "keys", "connector": "keys", "format": "jsonl"},
                {"id": "policy", "connector": "policy"},
                {"id": "gcs", "connector": "gcs", "format": "tsv", "mode": "delta", "intervalSeconds": 3600},
                {"id": "sheet", "connector": "sheet", "reports": ["product", "track"]}
            ]
        })
    }

    fn errors_of(value: &Value) -> Vec<FieldError> {
        match parse_tenant_secret("acme", &value.to_string()) {
            Ok(config) => panic!("expected errors, parsed {config:?}"),
            Err(errors) => errors.errors().to_vec(),
        }
    }

    /// Applies `edit` to a copy of the DESIGN example.
    fn design_example_with(edit: impl FnOnce(&mut Value)) -> Value {
        let mut value: Value = serde_json::from_str(DESIGN_EXAMPLE).unwrap();
        edit(&mut value);
        value
    }

    #[test]
    fn a_connector_with_its_bucket_owner_gets_no_suggestion() {
        let value = design_example_with(|v| v["connectors"]["lake"]["bucketOwnerAccountId"] = "111122223333".into());
        let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
        assert!(config.suggestions().is_empty(), "{:?}", config.suggestions());
    }

    #[test]
    fn design_example_parses_with_the_documented_defaults() {
        let config = parse_tenant_secret("acme", DESIGN_EXAMPLE).unwrap();
        assert_eq!(config.schema_version, 1);
        assert_eq!(config.tenant_id, "acme");
        assert_eq!(config.plan, Plan::Standard);
        assert!(config.enabled);
        assert_eq!(config.connectors.len(), 2);

        let Connector::Email(inbox) = &config.connectors["inbox"] else { panic!("inbox is not email") };
        assert_eq!(inbox.recipients, ["data@acme.example"]);
        let Connector::S3Role(lake) = &config.connectors["lake"] else { panic!("lake is not s3-role") };
        assert_eq!(lake.destination.bucket, "acme-data");
        assert_eq!(lake.destination.bucket_arn, "arn:aws:s3:::acme-data");
        assert_eq!(lake.destination.region, "eu-west-1");
        assert_eq!(lake.destination.prefix, "massive/");
        assert_eq!(lake.role_arn, "arn:aws:iam::111122223333:role/popularity-delivery");
        assert_eq!(lake.external_id.expose_secret(), "mm-acme-7f3c");
        let suggestions = config.suggestions();
        assert_eq!(suggestions.len(), 1, "{suggestions:?}");
        assert!(suggestions[0].starts_with("connectors.lake.bucketOwnerAccountId is not set"), "{suggestions:?}");
        assert!(suggestions[0].contains("\"bucketOwnerAccountId\": \"111122223333\""), "{suggestions:?}");

        let all = &config.feeds[0];
        assert_eq!(all.id, "all");
        assert_eq!(all.connector, "lake");
        assert_eq!(all.reports, ReportKind::ALL);
        assert_eq!(all.encoding, Encoding { format: Format::Json, compression: Compression::None });
        assert_eq!(all.mode, DeliveryMode::Full);
        assert_eq!(all.interval_seconds, None);

        let weekly = &config.feeds[1];
        assert_eq!(weekly.id, "weekly-tracks");
        assert_eq!(weekly.connector, "inbox");
        assert_eq!(weekly.reports, [ReportKind::Track]);
        assert_eq!(weekly.encoding, Encoding { format: Format::Tsv, compression: Compression::None });
        assert_eq!(weekly.mode, DeliveryMode::Delta);
        assert_eq!(weekly.interval_seconds, Some(604_800));
        assert_eq!(weekly.full_every_seconds, Some(DEFAULT_FULL_EVERY_SECONDS), "delta feeds get the default");
        assert_eq!(all.full_every_seconds, None, "full feeds have none");
        assert_eq!(config.connector_of(weekly).map(Connector::kind), Some(ConnectorKind::Email));
    }

    #[test]
    fn a_feed_with_only_a_connector_gets_id_default_and_every_default() {
        let value = design_example_with(|v| v["feeds"] = serde_json::json!([{"connector": "lake"}]));
        let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
        let feed = &config.feeds[0];
        assert_eq!(feed.id, DEFAULT_FEED_ID);
        assert_eq!(feed.reports, ReportKind::ALL);
        assert_eq!(feed.encoding, Encoding::default());
        assert_eq!(feed.mode, DeliveryMode::Full);
        assert_eq!(feed.interval_seconds, None);
    }

    #[test]
    fn enabled_defaults_to_true_and_prefix_to_empty() {
        let value = design_example_with(|v| {
            v.as_object_mut().unwrap().remove("enabled");
            v["connectors"]["lake"].as_object_mut().unwrap().remove("prefix");
        });
        let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
        assert!(config.enabled);
        assert_eq!(config.connectors["lake"].s3_destination().unwrap().prefix, "");
    }

    #[test]
    fn every_connector_type_parses_and_maps_to_its_job_kind() {
        let config = parse_tenant_secret("acme", &every_connector_type().to_string()).unwrap();
        let kinds: BTreeMap<&str, (ConnectorKind, &str)> = config
            .connectors
            .iter()
            .map(|(name, c)| (name.as_str(), (c.kind(), c.kind().job_kind().as_str())))
            .collect();
        assert_eq!(kinds["inbox"], (ConnectorKind::Email, "email"));
        assert_eq!(kinds["lake"], (ConnectorKind::S3Role, "s3"));
        assert_eq!(kinds["keys"], (ConnectorKind::S3Keys, "s3"));
        assert_eq!(kinds["policy"], (ConnectorKind::S3BucketPolicy, "s3"));
        assert_eq!(kinds["gcs"], (ConnectorKind::Gcs, "gcs"));
        assert_eq!(kinds["sheet"], (ConnectorKind::GoogleSheets, "sheets"));

        assert_eq!(config.connectors["lake"].s3_destination().unwrap().prefix, "massive/");
        assert_eq!(config.connectors["lake"].s3_destination().unwrap().bucket_owner.as_deref(), Some("111122223333"));
        assert_eq!(config.connectors["policy"].s3_destination().unwrap().prefix, "in/bound/");
        assert_eq!(config.connectors["policy"].s3_destination().unwrap().bucket_owner, None);
        let Connector::Gcs(gcs) = &config.connectors["gcs"] else { panic!("gcs") };
        assert_eq!(gcs.service_account.client_email, "feeds@acme-analytics.iam.gserviceaccount.com");
        let key: Value = serde_json::from_str(gcs.service_account.key_json.expose_secret()).unwrap();
        assert_eq!(key, service_account_key());
        let Connector::GoogleSheets(sheet) = &config.connectors["sheet"] else { panic!("sheet") };
        assert_eq!(sheet.spreadsheet_id, "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms");
        assert_eq!(sheet.max_rows, 1000);
        // Reports come out in canonical order whatever order they are listed in.
        assert_eq!(config.feeds[5].reports, [ReportKind::Track, ReportKind::Product]);
        assert_eq!(config.feeds[1].encoding.compression, Compression::Gzip);
    }

    #[test]
    fn a_service_account_key_given_as_a_json_string_is_accepted() {
        let mut value = every_connector_type();
        value["connectors"]["gcs"]["serviceAccountJson"] = Value::String(service_account_key().to_string());
        let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
        let Connector::Gcs(gcs) = &config.connectors["gcs"] else { panic!("gcs") };
        assert_eq!(gcs.service_account.key_json.expose_secret(), service_account_key().to_string());
    }

    /// Each case: the edit that breaks a valid secret, the exact path of the
    /// expected error, and a fragment of its message.
    #[test]
    fn malformed_secrets_are_rejected_with_the_path_and_reason() {
        type Edit = fn(&mut Value);
        let cases: Vec<(&str, Edit, &str, &str)> = vec![
            (
                "feed names a missing connector",
                |v| v["feeds"][1]["connector"] = "lake2".into(),
                "feeds[1].connector",
                "no connector named \"lake2\"",
            ),
            (
                "s3-role without externalId",
                |v| {
                    v["connectors"]["lake"].as_object_mut().unwrap().remove("externalId");
                },
                "connectors.lake.externalId",
                "required for s3-role",
            ),
            (
                "interval below one hour",
                |v| v["feeds"][0]["intervalSeconds"] = 120.into(),
                "feeds[0].intervalSeconds",
                "120 is below 3600",
            ),
            (
                "interval above one week",
                |v| v["feeds"][0]["intervalSeconds"] = 604_801.into(),
                "feeds[0].intervalSeconds",
                "604801 is above 604800",
            ),
            (
                "recipient without domain",
                |v| v["connectors"]["inbox"]["recipients"][0] = "data@".into(),
                "connectors.inbox.recipients[0]",
                "\"data@\" is not an email address",
            ),
            (
                "role ARN with a short account",
                |v| v["connectors"]["lake"]["roleArn"] = "arn:aws:iam::1:role/x".into(),
                "connectors.lake.roleArn",
                "\"arn:aws:iam::1:role/x\" is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)",
            ),
            (
                "bucket given by name, not ARN",
                |v| v["connectors"]["lake"]["bucketArn"] = "acme-data".into(),
                "connectors.lake.bucketArn",
                "is not an S3 bucket ARN (arn:aws:s3:::<bucket>)",
            ),
            (
                "tenant id differs from the secret name",
                |v| v["tenantId"] = "acme2".into(),
                "tenantId",
                "\"acme2\" does not match the secret name suffix \"acme\"",
            ),
            (
                "future schema version",
                |v| v["schemaVersion"] = 2.into(),
                "schemaVersion",
                "2 is not supported (expected 1)",
            ),
            (
                "misspelt connector field",
                |v| {
                    let lake = v["connectors"]["lake"].as_object_mut().unwrap();
                    let arn = lake.remove("roleArn").unwrap();
                    lake.insert("rolArn".into(), arn);
                },
                "connectors.lake.rolArn",
                "unknown field (did you mean \"roleArn\"?)",
            ),
            (
                "enabled as a string",
                |v| v["enabled"] = "yes".into(),
                "enabled",
                "expected true or false, found \"yes\"",
            ),
            (
                "two feeds with one id",
                |v| v["feeds"][1]["id"] = "all".into(),
                "feeds[1].id",
                "duplicate feed id \"all\"",
            ),
            (
                "unknown report",
                |v| v["feeds"][1]["reports"] = serde_json::json!(["track", "albums"]),
                "feeds[1].reports[1]",
                "\"albums\" is not one of track, artist, product",
            ),
            (
                "missing tenant id",
                |v| {
                    v.as_object_mut().unwrap().remove("tenantId");
                },
                "tenantId",
                "required",
            ),
            (
                "tenant id unsafe in S3 keys",
                |v| v["tenantId"] = "Acme/../x".into(),
                "tenantId",
                "is not a valid tenant id",
            ),
            (
                "feed id unsafe in S3 keys",
                |v| v["feeds"][0]["id"] = "All Reports".into(),
                "feeds[0].id",
                "\"All Reports\" is not a valid feed id",
            ),
            (
                "region not like eu-west-1",
                |v| v["connectors"]["lake"]["region"] = "Ireland".into(),
                "connectors.lake.region",
                "\"Ireland\" is not an AWS region (like eu-west-1)",
            ),
            (
                "unknown plan",
                |v| v["plan"] = "gold".into(),
                "plan",
                "\"gold\" is not one of trial, standard, enterprise",
            ),
            (
                "more feeds than the trial plan allows",
                |v| v["plan"] = "trial".into(),
                "feeds",
                "2 feeds exceed the trial plan's limit of 1",
            ),
            (
                "unknown connector type",
                |v| v["connectors"]["inbox"]["type"] = "ftp".into(),
                "connectors.inbox.type",
                "\"ftp\" is not one of email, s3-role, s3-keys, s3-bucket-policy, gcs, google-sheets",
            ),
            (
                "field of another connector type",
                |v| v["connectors"]["inbox"]["bucketArn"] = "arn:aws:s3:::acme-data".into(),
                "connectors.inbox.bucketArn",
                "unknown field for email connectors (their fields: type, recipients)",
            ),
            (
                "unknown top-level field",
                |v| v["feed"] = serde_json::json!([]),
                "feed",
                "unknown field (did you mean \"feeds\"?)",
            ),
            (
                "unknown format",
                |v| v["feeds"][1]["format"] = "csv".into(),
                "feeds[1].format",
                "\"csv\" is not one of json, jsonl, tsv",
            ),
            (
                "unknown mode",
                |v| v["feeds"][0]["mode"] = "incremental".into(),
                "feeds[0].mode",
                "\"incremental\" is not one of full, delta",
            ),
            (
                "two feeds into one folder",
                |v| v["feeds"].as_array_mut().unwrap().push(serde_json::json!({"id": "again", "connector": "lake", "reports": ["track"]})),
                "feeds[2]",
                "writes to s3://acme-data/massive/ where feed \"all\" (feeds[0]) writes to s3://acme-data/massive/: two feeds would write the same objects",
            ),
            (
                "fullEverySeconds on a full feed",
                |v| v["feeds"][0]["fullEverySeconds"] = 604_800.into(),
                "feeds[0].fullEverySeconds",
                "applies only to delta feeds (\"mode\": \"delta\"); a full feed is always full",
            ),
            (
                "fullEverySeconds below a week",
                |v| v["feeds"][1]["fullEverySeconds"] = 3_600.into(),
                "feeds[1].fullEverySeconds",
                "3600 is below 604800",
            ),
            (
                "fullEverySeconds above 90 days",
                |v| v["feeds"][1]["fullEverySeconds"] = 7_776_001.into(),
                "feeds[1].fullEverySeconds",
                "7776001 is above 7776000 (90 days)",
            ),
            (
                "interval as a string",
                |v| v["feeds"][0]["intervalSeconds"] = "3600".into(),
                "feeds[0].intervalSeconds",
                "expected a whole number, found \"3600\"",
            ),
            (
                "no recipients",
                |v| v["connectors"]["inbox"]["recipients"] = serde_json::json!([]),
                "connectors.inbox.recipients",
                "must list at least one email address",
            ),
            (
                "object ARN instead of bucket ARN",
                |v| v["connectors"]["lake"]["bucketArn"] = "arn:aws:s3:::acme-data/massive".into(),
                "connectors.lake.bucketArn",
                "names objects, not a bucket",
            ),
            (
                "empty reports list",
                |v| v["feeds"][0]["reports"] = serde_json::json!([]),
                "feeds[0].reports",
                "must name at least one report",
            ),
            (
                "a report listed twice",
                |v| v["feeds"][0]["reports"] = serde_json::json!(["artist", "artist"]),
                "feeds[0].reports[1]",
                "duplicate report \"artist\"",
            ),
            (
                "connectors as an array",
                |v| v["connectors"] = serde_json::json!([]),
                "connectors",
                "expected an object, found an array",
            ),
            (
                "feed that is not an object",
                |v| v["feeds"][0] = "lake".into(),
                "feeds[0]",
                "expected an object, found \"lake\"",
            ),
            (
                "connector name unsafe",
                |v| {
                    let connectors = v["connectors"].as_object_mut().unwrap();
                    let inbox = connectors.remove("inbox").unwrap();
                    connectors.insert("In Box".into(), inbox);
                },
                "connectors[\"In Box\"]",
                "is not a valid connector name",
            ),
        ];
        assert!(cases.len() >= 15);
        for (case, edit, path, fragment) in cases {
            let errors = errors_of(&design_example_with(edit));
            assert!(
                errors.iter().any(|e| e.path == path && e.message.contains(fragment)),
                "{case}: expected `{path}: …{fragment}…`, got {errors:#?}"
            );
        }
    }

    #[test]
    fn malformed_connectors_of_every_type_are_rejected_with_the_path_and_reason() {
        type Edit = fn(&mut Value);
        let cases: Vec<(&str, Edit, &str, &str)> = vec![
            (
                "sheet maxRows zero",
                |v| v["connectors"]["sheet"]["maxRows"] = 0.into(),
                "connectors.sheet.maxRows",
                "0 is below 1",
            ),
            (
                "sheet maxRows above ten million",
                |v| v["connectors"]["sheet"]["maxRows"] = 10_000_001.into(),
                "connectors.sheet.maxRows",
                "10000001 is above 3,333,329",
            ),
            (
                "sheet URL elsewhere",
                |v| v["connectors"]["sheet"]["spreadsheetUrl"] = "https://example.com/sheet".into(),
                "connectors.sheet.spreadsheetUrl",
                "is not a Google Sheets URL",
            ),
            (
                "gcs key of the wrong type",
                |v| v["connectors"]["gcs"]["serviceAccountJson"]["type"] = "authorized_user".into(),
                "connectors.gcs.serviceAccountJson.type",
                "expected \"service_account\"",
            ),
            (
                "gcs key without private key",
                |v| {
                    v["connectors"]["gcs"]["serviceAccountJson"].as_object_mut().unwrap().remove("private_key");
                },
                "connectors.gcs.serviceAccountJson.private_key",
                "required",
            ),
            (
                "gcs key without client email",
                |v| {
                    v["connectors"]["gcs"]["serviceAccountJson"].as_object_mut().unwrap().remove("client_email");
                },
                "connectors.gcs.serviceAccountJson.client_email",
                "required",
            ),
            (
                "gcs key with a foreign token endpoint",
                |v| v["connectors"]["gcs"]["serviceAccountJson"]["token_uri"] = "https://evil.example/token".into(),
                "connectors.gcs.serviceAccountJson.token_uri",
                "is not Google's token endpoint (https://oauth2.googleapis.com/token)",
            ),
            (
                "gcs key without a key id",
                |v| {
                    v["connectors"]["gcs"]["serviceAccountJson"].as_object_mut().unwrap().remove("private_key_id");
                },
                "connectors.gcs.serviceAccountJson.private_key_id",
                "required",
            ),
            (
                "bucket owner that is not an account id",
                |v| v["connectors"]["lake"]["bucketOwnerAccountId"] = "1111-2222-3333".into(),
                "connectors.lake.bucketOwnerAccountId",
                "is not a 12-digit AWS account id",
            ),
            (
                "gcs key that is not JSON",
                |v| v["connectors"]["gcs"]["serviceAccountJson"] = "{not json".into(),
                "connectors.gcs.serviceAccountJson",
                "is not valid JSON at line 1 column 2 of the key file",
            ),
            (
                "gcs bucket with uppercase",
                |v| v["connectors"]["gcs"]["bucket"] = "Acme".into(),
                "connectors.gcs.bucket",
                "is not a GCS bucket name",
            ),
            (
                "temporary access key",
                |v| v["connectors"]["keys"]["accessKeyId"] = "ASIAIOSFODNN7EXAMPLE".into(),
                "connectors.keys.accessKeyId",
                "temporary (ASIA…) key",
            ),
            (
                "short secret access key",
                |v| v["connectors"]["keys"]["secretAccessKey"] = "too-short".into(),
                "connectors.keys.secretAccessKey",
                "is not valid (40 characters",
            ),
            (
                "s3-keys without secret",
                |v| {
                    v["connectors"]["keys"].as_object_mut().unwrap().remove("secretAccessKey");
                },
                "connectors.keys.secretAccessKey",
                "required for s3-keys",
            ),
            (
                "bucket-policy without region",
                |v| {
                    v["connectors"]["policy"].as_object_mut().unwrap().remove("region");
                },
                "connectors.policy.region",
                "required for s3-bucket-policy",
            ),
            (
                "format on a sheet feed",
                |v| v["feeds"][5]["format"] = "tsv".into(),
                "feeds[5].format",
                "does not apply to a google-sheets connector",
            ),
            (
                "prefix climbing out",
                |v| v["connectors"]["lake"]["prefix"] = "a/../b".into(),
                "connectors.lake.prefix",
                "must not contain '.' or '..' segments",
            ),
        ];
        for (case, edit, path, fragment) in cases {
            let mut value = every_connector_type();
            edit(&mut value);
            let errors = errors_of(&value);
            assert!(
                errors.iter().any(|e| e.path == path && e.message.contains(fragment)),
                "{case}: expected `{path}: …{fragment}…`, got {errors:#?}"
            );
        }
    }

    #[test]
    fn invalid_json_is_reported_at_the_root_with_line_and_column() {
        let errors = parse_tenant_secret("acme", "{\n  \"tenantId\": \"acme\",\n    ,\n}").unwrap_err();
        assert_eq!(errors.len(), 1);
        let error = &errors.errors()[0];
        assert_eq!(error.path, "(root)");
        assert!(error.message.starts_with("not valid JSON at line 3 column 5: "), "{error}");
    }

    #[test]
    fn a_key_repeated_in_one_object_is_rejected_rather_than_silently_dropped() {
        let json = r#"{"schemaVersion": 1, "tenantId": "acme", "plan": "trial", "connectors": {},
                       "feeds": [], "feeds": []}"#;
        let errors = parse_tenant_secret("acme", json).unwrap_err();
        assert_eq!(errors.errors()[0].path, "(root)");
        assert!(errors.errors()[0].message.contains("the key \"feeds\" appears twice"), "{errors}");
    }

    #[test]
    fn a_root_that_is_not_an_object_is_one_error() {
        let errors = parse_tenant_secret("acme", "[1, 2]").unwrap_err();
        assert_eq!(errors.to_string(), "(root): expected an object, found an array");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let value = design_example_with(|v| {
            v["schemaVersion"] = 2.into();
            v["enabled"] = "yes".into();
            v["connectors"]["lake"].as_object_mut().unwrap().remove("externalId");
            v["connectors"]["inbox"]["recipients"][0] = "data@".into();
            v["feeds"][0]["intervalSeconds"] = 120.into();
            v["feeds"][1]["connector"] = "lake2".into();
        });
        let errors = parse_tenant_secret("acme", &value.to_string()).unwrap_err();
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "schemaVersion: 2 is not supported (expected 1)",
                "enabled: expected true or false, found \"yes\"",
                "connectors.inbox.recipients[0]: \"data@\" is not an email address",
                "connectors.lake.externalId: required for s3-role (the sts:ExternalId the role's trust policy requires)",
                "feeds[0].intervalSeconds: 120 is below 3600",
                "feeds[1].connector: no connector named \"lake2\" (they are inbox, lake)",
            ]
        );
        assert_eq!(errors.to_string(), lines.join("; "));
    }

    #[test]
    fn a_feed_naming_a_broken_connector_gets_no_second_error() {
        let value = design_example_with(|v| v["connectors"]["lake"]["region"] = "nowhere".into());
        let errors = errors_of(&value);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].path, "connectors.lake.region");
    }

    #[test]
    fn plan_limits_count_every_feed() {
        let feeds: Vec<Value> =
            (0..7).map(|i| serde_json::json!({"id": format!("f{i}"), "connector": "inbox"})).collect();
        let value = design_example_with(|v| v["feeds"] = Value::Array(feeds.clone()));
        let errors = errors_of(&value);
        assert_eq!(
            errors,
            [FieldError { path: "feeds".into(), message: "7 feeds exceed the standard plan's limit of 5".into() }]
        );

        let value = design_example_with(|v| {
            v["plan"] = "enterprise".into();
            v["feeds"] = Value::Array(feeds);
        });
        assert_eq!(parse_tenant_secret("acme", &value.to_string()).unwrap().feeds.len(), 7);
        assert_eq!(Plan::Trial.feed_limit(), 1);
        assert_eq!(Plan::Enterprise.feed_limit(), 50);
    }

    #[test]
    fn two_feeds_without_an_id_collide_on_default() {
        let value =
            design_example_with(|v| v["feeds"] = serde_json::json!([{"connector": "lake"}, {"connector": "inbox"}]));
        let errors = errors_of(&value);
        assert_eq!(errors[0].path, "feeds[1].id");
        assert!(errors[0].message.contains("a feed without an id is called \"default\""), "{errors:#?}");
    }

    #[test]
    fn a_document_without_a_secret_name_skips_only_the_name_check() {
        let value = design_example_with(|v| v["tenantId"] = "other".into());
        assert_eq!(parse_tenant_document(&value.to_string()).unwrap().tenant_id, "other");
        assert!(parse_tenant_secret("acme", &value.to_string()).is_err());
    }

    #[test]
    fn debug_output_shows_no_credential() {
        let config = parse_tenant_secret("acme", &every_connector_type().to_string()).unwrap();
        let debug = format!("{config:?} {config:#?}");
        for secret in [ACCESS_KEY_ID, SECRET_ACCESS_KEY, EXTERNAL_ID, PRIVATE_KEY_MARKER, "0123456789abcdef"] {
            assert!(!debug.contains(secret), "Debug output contains {secret:?}:\n{debug}");
        }
        assert!(debug.contains("\"…MPLE\""), "the last four characters of the key id identify it:\n{debug}");
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains("feeds@acme-analytics.iam.gserviceaccount.com"), "the account identity is not secret");
    }

    #[test]
    fn errors_about_credentials_never_echo_them() {
        let bad_access_key_id = "AKIA-not-valid-key-id-42";
        let bad_secret_key = "short/secret+value-that-is-invalid";
        let bad_external_id = "id with spaces and !!";
        let bad_key_json = "{\"private_key\": \"-----BEGIN PRIVATE KEY-----SEKRIT";
        let key_without_type = serde_json::json!({
            "private_key": "-----BEGIN PRIVATE KEY-----\nSEKRIT2\n-----END PRIVATE KEY-----",
            "client_email": "x"
        });
        let mut value = every_connector_type();
        value["connectors"]["keys"]["accessKeyId"] = bad_access_key_id.into();
        value["connectors"]["keys"]["secretAccessKey"] = bad_secret_key.into();
        value["connectors"]["lake"]["externalId"] = bad_external_id.into();
        value["connectors"]["gcs"]["serviceAccountJson"] = bad_key_json.into();
        value["connectors"]["gcs2"] =
            serde_json::json!({"type": "gcs", "bucket": "acme-two", "serviceAccountJson": key_without_type});
        value["connectors"]["gcs3"] =
            serde_json::json!({"type": "gcs", "bucket": "acme-three", "serviceAccountJson": 918273645});
        value["connectors"]["keys2"] = serde_json::json!({"type": "s3-keys", "bucketArn": "arn:aws:s3:::b-2",
            "region": "eu-west-1", "accessKeyId": ["AKIAARRAYED0000SECRET"], "secretAccessKey": 4242424242_u64});
        let errors = parse_tenant_secret("acme", &value.to_string()).unwrap_err();

        let paths: BTreeSet<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for path in [
            "connectors.keys.accessKeyId",
            "connectors.keys.secretAccessKey",
            "connectors.lake.externalId",
            "connectors.gcs.serviceAccountJson",
            "connectors.gcs2.serviceAccountJson.type",
            "connectors.gcs2.serviceAccountJson.client_email",
            "connectors.gcs3.serviceAccountJson",
            "connectors.keys2.accessKeyId",
            "connectors.keys2.secretAccessKey",
        ] {
            assert!(paths.contains(path), "no error at {path}: {errors:#?}");
        }
        let everything = format!("{errors}\n{errors:?}");
        for secret in [
            bad_access_key_id,
            bad_secret_key,
            bad_external_id,
            "SEKRIT",
            "SEKRIT2",
            "918273645",
            "AKIAARRAYED",
            "4242424242",
        ] {
            assert!(!everything.contains(secret), "errors contain {secret:?}:\n{everything}");
        }
    }

    #[test]
    fn prefixes_are_normalised_to_end_with_one_slash() {
        assert_eq!(normalise_prefix(""), "");
        assert_eq!(normalise_prefix("/"), "");
        assert_eq!(normalise_prefix("massive"), "massive/");
        assert_eq!(normalise_prefix("/a/b//"), "a/b/");
    }

    #[test]
    fn field_formats_accept_real_values_and_reject_near_misses() {
        assert!(is_safe_id("acme") && is_safe_id("0-day") && is_safe_id(&"a".repeat(63)));
        assert!(!is_safe_id("") && !is_safe_id("-acme") && !is_safe_id("Acme") && !is_safe_id(&"a".repeat(64)));
        for region in ["eu-west-1", "us-gov-west-1", "ap-southeast-2", "il-central-1"] {
            assert!(is_aws_region(region), "{region}");
        }
        for region in ["eu-west", "EU-WEST-1", "europe-west-1", "eu-west-100", "eu--1"] {
            assert!(!is_aws_region(region), "{region}");
        }
        assert!(is_iam_role_arn("arn:aws:iam::111122223333:role/service/popularity-delivery"));
        assert!(is_iam_role_arn("arn:aws-cn:iam::111122223333:role/x"));
        assert!(!is_iam_role_arn("arn:aws:iam::111122223333:user/x"));
        assert!(!is_iam_role_arn("arn:aws:iam::111122223333:role/"));
        assert!(is_email_address("first.last+feeds@mail.acme.example"));
        for bad in ["data@", "@acme.example", "data@acme", "Data <data@acme.example>", "a..b@acme.example"] {
            assert!(!is_email_address(bad), "{bad}");
        }
        assert!(spreadsheet_id("https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms")
            .is_some());
        assert!(is_long_term_access_key_id(ACCESS_KEY_ID) && is_secret_access_key(SECRET_ACCESS_KEY));
        assert!(is_external_id(EXTERNAL_ID) && !is_external_id("x"));
    }
}
