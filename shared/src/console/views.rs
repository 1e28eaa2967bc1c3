//! What the self-service API answers with: the tenant (`/v1/me`), its
//! connectors with credentials shown only as set or not, its feeds, their
//! deliveries and connection tests, and what a customer pastes into their
//! own account to let us deliver. Each view is built from the tenant
//! document and the staging bucket; none holds a credential's value — a
//! credential becomes `{"set": true, "updatedAt": …, "fingerprint": …}`,
//! the fingerprint being the first 12 hex digits of the value's SHA-256.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::problem::{CheckResult, FieldProblem};
use crate::connector_registry::ConnectorKind;
use crate::delivery::connection_probe::ConnectionTestResult;
use crate::delivery::connectors::s3::TENANT_SESSION_TAG;
use crate::delivery::feed_index::IndexedDelivery;
use crate::delivery::status::{Blame, DeliveryOutcome};
use crate::domain::{Compression, Format};
use crate::manifest::DeliveryMode;
use crate::tenant::{Feed, TenantConfig};

/// The tenant, its plan and how much of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    pub tenant_id: String,
    pub plan: String,
    pub enabled: bool,
    /// Active (not paused) feeds the plan allows.
    pub feed_limit: usize,
    pub active_feeds: usize,
    /// Feeds in all, paused ones included.
    pub feeds: usize,
    /// Feeds a tenant may keep, paused ones included.
    pub max_feeds: usize,
    pub connectors: usize,
    /// The reports a feed may name (`track`, `artist`, `product`).
    pub reports: Vec<String>,
    /// The signed-in user's address, when the token carries one.
    pub email: Option<String>,
    /// Whether the signed-in user may act on every tenant.
    pub operator: bool,
    /// The tenant document's version: the ETag to send in If-Match.
    pub version: String,
    /// What is wrong with the stored document, when it does not validate
    /// (an operator edited it by hand); changes are refused until it does.
    pub problems: Vec<FieldProblem>,
}

/// A credential as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialState {
    pub set: bool,
    /// When the API last set it (absent for one set by hand).
    pub updated_at: Option<String>,
    /// The first 12 hex digits of its SHA-256: tells two values apart
    /// without revealing either.
    pub fingerprint: Option<String>,
}

impl CredentialState {
    pub fn of(value: &Value, updated_at: Option<&str>) -> CredentialState {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        CredentialState {
            set: true,
            updated_at: updated_at.map(str::to_owned),
            fingerprint: Some(digest[..12].to_owned()),
        }
    }
}

/// Whether `value` is a credential as the API showed it (sent back on an
/// edit): it means "keep the stored one".
pub fn is_masked_credential(value: &Value) -> bool {
    value.as_object().is_some_and(|object| object.get("set") == Some(&Value::Bool(true)))
}

/// A connector: its fields as in the tenant document, each credential
/// replaced by its [`CredentialState`], plus its name, the feeds using it
/// and what the customer must set up on their side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectorView(pub Value);

impl utoipa::PartialSchema for ConnectorView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        ObjectBuilder::new()
            .property("name", ObjectBuilder::new().schema_type(Type::String))
            .required("name")
            .property("type", ObjectBuilder::new().schema_type(Type::String))
            .required("type")
            .property("usedBy", ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .required("usedBy")
            .property("setup", ObjectBuilder::new().schema_type(Type::Object))
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(true)))
            .description(Some(
                "The connector's fields as in the tenant secret (docs/tenants.md); each credential \
                 (accessKeyId, secretAccessKey, serviceAccountJson) is shown as {set, updatedAt, fingerprint}.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ConnectorView {}

/// The connectors of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ConnectorList {
    pub connectors: Vec<ConnectorView>,
}

/// The view of connector `name` of `document` (the tenant document's
/// `connectors.<name>` object).
pub fn connector_view(
    name: &str,
    connector: &Map<String, Value>,
    tenant: &TenantConfig,
    setup: Value,
) -> ConnectorView {
    let kind = connector.get("type").and_then(Value::as_str).and_then(ConnectorKind::from_type_name);
    let credentials = kind.map(ConnectorKind::credentials).unwrap_or_default();
    let updated_at = connector.get("credentialsUpdatedAt").and_then(Value::as_str);
    let mut view = Map::new();
    view.insert("name".to_owned(), Value::String(name.to_owned()));
    for (field, value) in connector {
        let shown = if credentials.contains(&field.as_str()) {
            serde_json::to_value(CredentialState::of(value, updated_at)).expect("a state serialises")
        } else {
            value.clone()
        };
        view.insert(field.clone(), shown);
    }
    let used_by: Vec<Value> =
        tenant.feeds.iter().filter(|feed| feed.connector == name).map(|feed| Value::String(feed.id.clone())).collect();
    view.insert("usedBy".to_owned(), Value::Array(used_by));
    view.insert("setup".to_owned(), setup);
    ConnectorView(Value::Object(view))
}

/// The last known delivery state of one run of a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryState {
    Delivered,
    Failed,
    InProgress,
    Skipped,
    Invalid,
}

impl From<DeliveryOutcome> for DeliveryState {
    fn from(outcome: DeliveryOutcome) -> Self {
        match outcome {
            DeliveryOutcome::Delivered => DeliveryState::Delivered,
            DeliveryOutcome::Failed => DeliveryState::Failed,
            DeliveryOutcome::InProgress => DeliveryState::InProgress,
            DeliveryOutcome::Skipped => DeliveryState::Skipped,
            DeliveryOutcome::Invalid => DeliveryState::Invalid,
        }
    }
}

/// One run's delivery of a feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub run_id: String,
    pub state: DeliveryState,
    /// When its status last changed.
    pub at: DateTime<Utc>,
    pub attempts: u32,
    pub objects: u32,
    pub bytes: u64,
    pub rows: Option<u64>,
    /// `full` or `delta`, once an attempt read the job.
    pub mode: Option<String>,
    /// The run a delta is against.
    pub base_run_id: Option<String>,
    /// Why a delta feed's delivery was full.
    pub full_reason: Option<String>,
    /// The one-line cause of the latest failure.
    pub cause: Option<String>,
    /// Whether trying again can help (a failure, not an invalid job).
    pub retryable: Option<bool>,
    /// Whose move it is: `customer` or `provider`.
    pub blame: Option<String>,
    /// The fix, in plain words, when it is the customer's.
    pub fix: Option<String>,
}

impl DeliveryView {
    pub fn of(entry: &IndexedDelivery) -> DeliveryView {
        let failed = matches!(entry.outcome, DeliveryOutcome::Failed | DeliveryOutcome::Invalid);
        let cause = if failed || entry.outcome == DeliveryOutcome::Skipped { entry.last_error.clone() } else { None };
        let blame = entry.blame.filter(|_| failed);
        DeliveryView {
            run_id: entry.run_id.to_string(),
            state: entry.outcome.into(),
            at: entry.updated_at,
            attempts: entry.attempts,
            objects: entry.objects,
            bytes: entry.bytes,
            rows: entry.rows,
            mode: entry.mode.map(|mode| mode_name(mode).to_owned()),
            base_run_id: entry.base_run_id.map(|run| run.to_string()),
            full_reason: entry.full_reason.clone(),
            fix: match (blame, cause.as_deref()) {
                (Some(Blame::Customer), Some(cause)) => Some(customer_fix(cause)),
                _ => None,
            },
            cause,
            retryable: failed.then_some(entry.outcome == DeliveryOutcome::Failed),
            blame: blame.map(|blame| blame.as_str().to_owned()),
        }
    }
}

fn mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::Full => "full",
        DeliveryMode::Delta => "delta",
    }
}

/// What a customer does about a failure that is theirs, in plain words.
fn customer_fix(cause: &str) -> String {
    let lower = cause.to_ascii_lowercase();
    if lower.contains("assumerole") || lower.contains("sts:") {
        "Our delivery role could not assume your role: check the role's trust policy names our principal and your \
         external id exactly (Connectors, then the connector's setup)."
    } else if lower.contains("nosuchbucket") {
        "The bucket does not exist (any more): create it, or change the connector's bucket."
    } else if lower.contains("accessdenied") || lower.contains("forbidden") || lower.contains("403") {
        "Your bucket or role refused the write: check its policy grants what the connector's setup lists."
    } else if lower.contains("invalidaccesskeyid") || lower.contains("signaturedoesnotmatch") {
        "The access key was refused (deleted or rotated): give the connector the new key."
    } else if lower.contains("not shared") || lower.contains("not found") {
        "The spreadsheet is not shared with our address as Editor, or its URL is wrong: share it again."
    } else {
        "The destination refused the delivery: check the connector's setup, then press Test."
    }
    .to_owned()
}

/// A feed, with its latest delivery and when it is next due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedView {
    pub id: String,
    pub connector: String,
    pub connector_type: Option<String>,
    /// `track`, `artist`, `product`.
    pub reports: Vec<String>,
    pub format: String,
    pub compression: String,
    pub mode: String,
    pub interval_seconds: Option<u64>,
    pub full_every_seconds: Option<u64>,
    pub paused: bool,
    pub last_delivery: Option<DeliveryView>,
    /// The feed is due again at the first scheduled run from this time on
    /// (its latest delivery plus `intervalSeconds`); absent when it is due
    /// at every run.
    pub next_due_from: Option<DateTime<Utc>>,
}

fn format_name(format: Format) -> String {
    serde_json::to_value(format).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn compression_name(compression: Compression) -> String {
    serde_json::to_value(compression).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl FeedView {
    pub fn of(feed: &Feed, tenant: &TenantConfig, deliveries: &[IndexedDelivery]) -> FeedView {
        let last_delivered = deliveries.iter().find(|entry| entry.outcome == DeliveryOutcome::Delivered);
        let next_due_from = feed.interval_seconds.zip(last_delivered).map(|(interval, entry)| {
            entry.run_id.time() + chrono::Duration::seconds(i64::try_from(interval).unwrap_or(i64::MAX))
        });
        FeedView {
            id: feed.id.clone(),
            connector: feed.connector.clone(),
            connector_type: tenant.connector_of(feed).map(|connector| connector.kind().type_name().to_owned()),
            reports: feed.reports.iter().map(|kind| kind.short_name().to_owned()).collect(),
            format: format_name(feed.encoding.format),
            compression: compression_name(feed.encoding.compression),
            mode: mode_name(feed.mode).to_owned(),
            interval_seconds: feed.interval_seconds,
            full_every_seconds: feed.full_every_seconds,
            paused: feed.paused,
            last_delivery: deliveries.first().map(DeliveryView::of),
            next_due_from,
        }
    }

    /// Of a feed's deliveries (newest run first), the ones [`FeedView::of`]
    /// reads: the newest, and the newest delivered one when that is another.
    /// Its view of these is its view of all of them, so the feed list keeps
    /// no more of an index between requests.
    pub fn deliveries_read(deliveries: &[IndexedDelivery]) -> Vec<IndexedDelivery> {
        let mut read: Vec<IndexedDelivery> = deliveries.first().cloned().into_iter().collect();
        match deliveries.iter().position(|entry| entry.outcome == DeliveryOutcome::Delivered) {
            Some(newest_delivered) if newest_delivered > 0 => read.push(deliveries[newest_delivered].clone()),
            _ => {}
        }
        read
    }
}

/// The feeds of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FeedList {
    pub feeds: Vec<FeedView>,
}

/// A feed's recent deliveries, newest run first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    pub feed_id: String,
    pub deliveries: Vec<DeliveryView>,
}

/// What became of a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryView {
    pub run_id: String,
    pub feed_id: String,
    /// `redriven`: the job was started again; its outcome follows on the
    /// feed's deliveries.
    pub result: String,
}

/// A connection test's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTestView {
    pub request_id: String,
    pub connector: String,
    pub ok: bool,
    pub checks: Vec<CheckResult>,
    pub warnings: Vec<String>,
    /// What the probe left at the destination (objects, open uploads, messages).
    pub left_behind: Vec<String>,
    pub finished_at: DateTime<Utc>,
}

impl ConnectionTestView {
    pub fn of(result: &ConnectionTestResult) -> ConnectionTestView {
        ConnectionTestView {
            request_id: result.request_id.clone(),
            connector: result.connector.clone(),
            ok: result.ok,
            checks: result.checks.iter().map(CheckResult::from).collect(),
            warnings: result.warnings.clone(),
            left_behind: result.left_behind.clone(),
            finished_at: result.finished_at,
        }
    }
}

/// What a customer sets up on their side before creating a connector.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupView {
    /// A fresh external id for a new `s3-role` connector; send it back as
    /// its `externalId`.
    pub external_id: String,
    /// The AWS principal our deliveries come from: trusted by an s3-role
    /// role, named in an s3-bucket-policy bucket policy.
    pub delivery_principal: Option<String>,
    /// The Google address a google-sheets spreadsheet is shared with.
    pub google_share_with: Option<String>,
    /// Per connector type, what to create, with placeholders
    /// (`<BUCKET>`, `<PREFIX>`) where the connector's own values go.
    #[schema(value_type = Object)]
    pub instructions: BTreeMap<String, Value>,
}

/// Where our deliveries come from, for the instructions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OurIdentities {
    pub delivery_principal: Option<String>,
    /// The role `s3-bucket-policy` writes come from, in sessions tagged
    /// with the tenant (`BUCKET_POLICY_WRITER_ROLE_ARN`).
    pub bucket_policy_writer: Option<String>,
    /// Our common Google address (the older keyed path).
    pub google_share_with: Option<String>,
    /// Keyless Google: our project, where each tenant's own identity lives
    /// (`GOOGLE_PROJECT_ID`).
    pub google_project: Option<String>,
}

impl OurIdentities {
    /// The Google address `tenant_id` grants: its own identity with keyless
    /// Google, else our common one.
    pub fn google_address(&self, tenant_id: &str) -> Option<String> {
        match &self.google_project {
            Some(project) => Some(crate::google_identity::tenant_service_account(tenant_id, project)),
            None => self.google_share_with.clone(),
        }
    }
}

const PRINCIPAL_PLACEHOLDER: &str = "<OUR_DELIVERY_ROLE_ARN>";
const WRITER_PLACEHOLDER: &str = "<OUR_BUCKET_POLICY_WRITER_ROLE_ARN>";

/// What the customer creates for a connector of `kind` of tenant
/// `tenant_id` writing to `bucket` under `prefix` (placeholders when
/// unknown).
pub fn setup_instructions(
    kind: ConnectorKind,
    ours: &OurIdentities,
    tenant_id: &str,
    bucket: &str,
    prefix: &str,
    external_id: Option<&str>,
    service_account: Option<&str>,
) -> Value {
    let principal = ours.delivery_principal.as_deref().unwrap_or(PRINCIPAL_PLACEHOLDER);
    let writes = json!({"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
        "Resource": format!("arn:aws:s3:::{bucket}/{prefix}*")});
    let lists = json!({"Effect": "Allow", "Action": ["s3:ListBucketMultipartUploads"],
        "Resource": format!("arn:aws:s3:::{bucket}")});
    match kind {
        ConnectorKind::S3Role => json!({
            "steps": "Create a role in your account with this trust policy and this permissions policy, then give \
                      the connector its roleArn and the externalId shown here.",
            "trustPolicy": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id.unwrap_or("<EXTERNAL_ID>")}}}]},
            "permissionsPolicy": {"Version": "2012-10-17", "Statement": [writes, lists]},
        }),
        ConnectorKind::S3BucketPolicy => {
            // Our writer role, only in sessions tagged with this tenant: no
            // other tenant's deliveries can write here.
            let writer = ours.bucket_policy_writer.as_deref().unwrap_or(WRITER_PLACEHOLDER);
            let only_this_tenant =
                json!({"StringEquals": {format!("aws:PrincipalTag/{TENANT_SESSION_TAG}"): tenant_id}});
            let mut writes = writes;
            let mut lists = lists;
            for statement in [&mut writes, &mut lists] {
                statement["Principal"] = json!({"AWS": writer});
                statement["Condition"] = only_this_tenant.clone();
            }
            json!({
                "steps": "Add these statements to your bucket's policy, with the condition as shown (it admits our \
                          deliveries for you and no one else's); keep Object Ownership at \"Bucket owner \
                          enforced\"; give the connector the 12-digit account id that owns the bucket.",
                "bucketPolicy": {"Version": "2012-10-17", "Statement": [writes, lists]},
            })
        }
        ConnectorKind::S3Keys => json!({
            "steps": "Create an IAM user with this policy and one access key; give the connector the key's id and \
                      secret.",
            "userPolicy": {"Version": "2012-10-17", "Statement": [writes, lists]},
        }),
        ConnectorKind::Gcs => match (service_account, &ours.google_project) {
            (None, Some(project)) => json!({
                "steps": "Grant this address, our Google identity for you alone, the role Storage Object Creator \
                          on the bucket, and nothing else. No key changes hands. (If you prefer, give us a key file \
                          of a service account of yours instead, and grant that account.)",
                "grant": {"role": "roles/storage.objectCreator", "bucket": format!("gs://{bucket}"),
                          "member": format!("serviceAccount:{}",
                              crate::google_identity::tenant_service_account(tenant_id, project))},
            }),
            _ => json!({
                "steps": "Grant the service account of the key you give us the role Storage Object Creator on the \
                          bucket, and nothing else.",
                "grant": {"role": "roles/storage.objectCreator", "bucket": format!("gs://{bucket}"),
                          "member": service_account.map(|email| format!("serviceAccount:{email}"))},
            }),
        },
        ConnectorKind::GoogleSheets => json!({
            "steps": "Share the spreadsheet as Editor with this address (our Google identity for you alone when \
                      it starts with pr-).",
            "shareWith": ours.google_address(tenant_id),
        }),
        ConnectorKind::Email => json!({
            "steps": "Nothing to set up: allow mail from our sender through your filters.",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_keyless_google_each_tenant_is_shown_its_own_address() {
        let common = Some("popularity@ops.iam.gserviceaccount.com".to_owned());
        let keyed = OurIdentities { google_share_with: common.clone(), ..OurIdentities::default() };
        let keyless = OurIdentities { google_project: Some("our-tenants".to_owned()), ..keyed.clone() };
        let sheets =
            |ours: &OurIdentities| setup_instructions(ConnectorKind::GoogleSheets, ours, "acme", "", "", None, None);
        assert_eq!(sheets(&keyed)["shareWith"], json!(common));
        assert_eq!(sheets(&keyless)["shareWith"], "pr-acme@our-tenants.iam.gserviceaccount.com");
        let gcs = |ours: &OurIdentities, key: Option<&str>| {
            setup_instructions(ConnectorKind::Gcs, ours, "acme", "acme-feeds", "p/", None, key)
        };
        assert_eq!(
            gcs(&keyless, None)["grant"]["member"],
            "serviceAccount:pr-acme@our-tenants.iam.gserviceaccount.com"
        );
        assert_eq!(gcs(&keyless, None)["grant"]["role"], "roles/storage.objectCreator");
        // A connector with a key of the customer's own: that account.
        let own = "feeds@acme.iam.gserviceaccount.com";
        assert_eq!(gcs(&keyless, Some(own))["grant"]["member"], format!("serviceAccount:{own}"));
        assert_eq!(gcs(&keyed, None)["grant"]["member"], Value::Null);
    }
}
