//! What each request of the self-service API does, apart from HTTP: who the
//! caller is and which tenant they act on, reading the tenant document and
//! the staging bucket into views, and changing the document. Every change
//! goes through [`Console::commit`]: the edited document is validated by the
//! same parser as `popularity tenant validate` (field checks, plan quota,
//! collisions within the tenant), compared with every other tenant (no
//! shared destination, never saying whose it is) and with our own buckets,
//! probed by the real connection test when a connector changes, and only
//! then stored — in place of the version the caller read (If-Match), or not
//! at all.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::auth::{AuthError, Caller, TokenVerifier};
use super::dispatch::{run_probe, ProbeError, ProbeRequest, StagingEvents};
use super::document::{draft_stage, DocumentError, TenantDocument, TenantDocuments};
use super::feed_list_cache::FeedListCache;
use super::problem::{ApiError, CheckResult, FieldProblem};
use super::views::{
    connector_view, is_masked_credential, setup_instructions, ConnectionTestView, ConnectorList, ConnectorView,
    DeliveryList, DeliveryView, FeedList, FeedView, MeView, OurIdentities, RetryView, SetupView,
};
use crate::connector_registry::ConnectorKind;
use crate::delivery::feed_index::{read_feed_index, IndexedDelivery};
use crate::delivery::keys::JobKeyParts;
use crate::delivery::redrive::{redrive_job, RedriveDecision, RedrivePolicy};
use crate::domain::{ReportKind, RunId};
use crate::store::ObjectStore;
use crate::tenant::conflicts::{conflicts_across, own_bucket_refusal};
use crate::tenant::directory::{valid_by_seniority, TenantDirectory};
use crate::tenant::{
    is_external_id_of, is_safe_id, new_external_id, parse_tenant_secret, Connector, TenantConfig, TenantErrors,
    MAX_FEEDS,
};

/// How long the other tenants, read for the collision check, are reused:
/// fanout checks again at every run, so a minute-old view is safe.
const OTHER_TENANTS_TTL: Duration = Duration::from_secs(60);
/// How often a connection test's result is looked for.
const PROBE_POLL: Duration = Duration::from_millis(200);

/// The adapters the console runs on.
pub trait ConsolePorts: Send + Sync + 'static {
    type Documents: TenantDocuments + 'static;
    type Tenants: TenantDirectory + 'static;
    type Staging: ObjectStore + 'static;
    type Events: StagingEvents + 'static;
}

/// Settings the console reads once (see `config::ConsoleConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// The stack's own buckets, never a destination.
    pub own_buckets: Vec<String>,
    pub ours: OurIdentities,
    /// How long a create or update waits for its connection test.
    pub probe_wait: Duration,
}

/// The self-service API's state: the ports and the verifier.
pub struct Console<P: ConsolePorts> {
    pub documents: P::Documents,
    pub tenants: P::Tenants,
    pub staging: P::Staging,
    pub events: P::Events,
    pub verifier: TokenVerifier,
    pub settings: ConsoleSettings,
    /// The clock; tests pin it.
    pub now: fn() -> DateTime<Utc>,
    others: Mutex<Option<(Instant, Vec<TenantConfig>)>>,
    /// What the feed list keeps of the delivery indexes between requests.
    feed_lists: FeedListCache,
}

/// A credential-free one-line rendering of a document error.
impl From<DocumentError> for ApiError {
    fn from(error: DocumentError) -> Self {
        match error {
            DocumentError::Changed { current, .. } => {
                ApiError::PreconditionFailed { given: "the one read".to_owned(), current }
            }
            DocumentError::NotJson { .. } => ApiError::Conflict(error.to_string()),
            DocumentError::Service { .. } => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Keys(_) => ApiError::Internal(error.to_string()),
            _ => ApiError::Unauthorized(error.to_string()),
        }
    }
}

/// A request id: `console-<UTC time>-<random>`.
fn request_id(now: DateTime<Utc>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("console-{}-{:08x}", now.format("%Y%m%d%H%M%S"), random & 0xffff_ffff)
}

/// The ETag an If-Match header names: quotes and a weak marker removed.
pub fn etag_of(if_match: &str) -> &str {
    if_match.trim().trim_start_matches("W/").trim_matches('"')
}

/// Where a change lands in the tenant document, to say where a problem is
/// in the request's own terms.
enum Target<'a> {
    Connector(&'a str),
    Feed(usize),
    Whole,
}

impl Target<'_> {
    fn path(&self, path: &str) -> String {
        let prefix = match self {
            Target::Connector(name) => format!("connectors.{name}"),
            Target::Feed(index) => format!("feeds[{index}]"),
            Target::Whole => return path.to_owned(),
        };
        match path.strip_prefix(&prefix) {
            Some("") => "(body)".to_owned(),
            Some(rest) => rest.trim_start_matches('.').to_owned(),
            None => path.to_owned(),
        }
    }

    fn problems(&self, errors: &TenantErrors) -> Vec<FieldProblem> {
        errors
            .iter()
            .map(|error| FieldProblem { path: self.path(&error.path), message: error.message.clone() })
            .collect()
    }
}

fn validation(problems: Vec<FieldProblem>) -> ApiError {
    let detail = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; ");
    ApiError::Validation { detail, errors: problems }
}

fn object_of<'v>(value: &'v mut Value, key: &str) -> Result<&'v mut Map<String, Value>, ApiError> {
    value.get_mut(key).and_then(Value::as_object_mut).ok_or_else(|| {
        ApiError::Conflict(format!("the tenant document has no {key} object; an operator must repair it"))
    })
}

fn feeds_of(value: &mut Value) -> Result<&mut Vec<Value>, ApiError> {
    value
        .get_mut("feeds")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| ApiError::Conflict("the tenant document has no feeds array; an operator must repair it".into()))
}

fn body_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::invalid_field("(body)", format!("expected a JSON object, found {}", json_type(&other)))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Applies a JSON merge patch (RFC 7386) to an object: `null` removes a field.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
        } else {
            target.insert(key, value);
        }
    }
}

impl<P: ConsolePorts> Console<P> {
    pub fn new(
        documents: P::Documents,
        tenants: P::Tenants,
        staging: P::Staging,
        events: P::Events,
        verifier: TokenVerifier,
        settings: ConsoleSettings,
    ) -> Self {
        Console {
            documents,
            tenants,
            staging,
            events,
            verifier,
            settings,
            now: Utc::now,
            others: Mutex::new(None),
            feed_lists: FeedListCache::default(),
        }
    }

    /// The same console with its clock replaced.
    pub fn with_clock(mut self, now: fn() -> DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// The caller of a request with this `Authorization` header.
    pub async fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        Ok(self.verifier.verify_header(authorization).await?)
    }

    /// The tenant `caller` acts on: their own, or for an operator the one
    /// named (`?tenantId=`). A customer naming another tenant gets 404, as
    /// for anything else that is not theirs.
    pub fn tenant_of(&self, caller: &Caller, named: Option<&str>) -> Result<String, ApiError> {
        match (caller.operator, named, caller.tenant_id.as_deref()) {
            (true, Some(named), _) if is_safe_id(named) => Ok(named.to_owned()),
            (true, Some(named), _) => Err(ApiError::NotFound(format!("tenant {named:?}"))),
            (_, None, Some(own)) => Ok(own.to_owned()),
            (false, Some(named), Some(own)) if named == own => Ok(own.to_owned()),
            (false, Some(named), _) => Err(ApiError::NotFound(format!("tenant {named:?}"))),
            (true, None, None) => Err(ApiError::BadRequest(
                "an operator names the tenant to act on: add ?tenantId=<tenantId> to the request".to_owned(),
            )),
            (false, None, None) => Err(ApiError::Unauthorized(
                "the user belongs to no tenant (no custom:tenantId); ask an operator to invite you again".to_owned(),
            )),
        }
    }

    async fn document(&self, tenant_id: &str) -> Result<TenantDocument, ApiError> {
        self.documents.read(tenant_id).await?.ok_or_else(|| ApiError::NotFound(format!("tenant {tenant_id:?}")))
    }

    /// The document's validated config, or a 409 saying what an operator
    /// must repair first.
    fn config_of(document: &TenantDocument) -> Result<TenantConfig, ApiError> {
        let json = document.value.to_string();
        parse_tenant_secret(&document.tenant_id, &json).map_err(|errors| {
            ApiError::Conflict(format!(
                "the stored tenant document does not validate, so nothing can be changed until an operator repairs \
                 it: {errors}"
            ))
        })
    }

    pub async fn me(&self, caller: &Caller, tenant_id: &str) -> Result<MeView, ApiError> {
        let document = self.document(tenant_id).await?;
        let json = document.value.to_string();
        let (config, problems) = match parse_tenant_secret(tenant_id, &json) {
            Ok(config) => (Some(config), Vec::new()),
            Err(errors) => (None, Target::Whole.problems(&errors)),
        };
        let count = |key: &str| document.value.get(key).map_or(0, |v| v.as_array().map_or(0, Vec::len));
        let connectors = document.value.get("connectors").and_then(Value::as_object).map_or(0, Map::len);
        let plan = document.value.get("plan").and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(MeView {
            tenant_id: tenant_id.to_owned(),
            feed_limit: config.as_ref().map_or(0, |c| c.plan.feed_limit()),
            active_feeds: config.as_ref().map_or(0, |c| c.feeds.iter().filter(|feed| !feed.paused).count()),
            feeds: count("feeds"),
            max_feeds: MAX_FEEDS,
            enabled: config.as_ref().is_some_and(|c| c.enabled),
            plan,
            connectors,
            reports: ReportKind::ALL.iter().map(|kind| kind.short_name().to_owned()).collect(),
            email: caller.email.clone(),
            operator: caller.operator,
            version: document.version,
            problems,
        })
    }

    /// What a customer sets up before creating a connector, with a fresh external id.
    pub fn setup(&self, tenant_id: &str) -> Result<SetupView, ApiError> {
        let ours = &self.settings.ours;
        let instructions: BTreeMap<String, Value> = ConnectorKind::ALL
            .into_iter()
            .map(|kind| {
                (
                    kind.type_name().to_owned(),
                    setup_instructions(kind, ours, tenant_id, "<BUCKET>", "<PREFIX>", None, None),
                )
            })
            .collect();
        let external_id = new_external_id(tenant_id)
            .map_err(|_| ApiError::Internal("the system's random generator failed".to_owned()))?;
        Ok(SetupView {
            external_id,
            delivery_principal: ours.delivery_principal.clone(),
            google_share_with: ours.google_address(tenant_id),
            instructions,
        })
    }

    fn connector_setup(&self, tenant_id: &str, connector: &Connector) -> Value {
        let ours = &self.settings.ours;
        match connector {
            Connector::S3Role(role) => setup_instructions(
                connector.kind(),
                ours,
                tenant_id,
                &role.destination.bucket,
                &role.destination.prefix,
                Some(role.external_id.expose_secret()),
                None,
            ),
            Connector::S3Keys(keys) => setup_instructions(
                connector.kind(),
                ours,
                tenant_id,
                &keys.destination.bucket,
                &keys.destination.prefix,
                None,
                None,
            ),
            Connector::S3BucketPolicy(destination) => setup_instructions(
                connector.kind(),
                ours,
                tenant_id,
                &destination.bucket,
                &destination.prefix,
                None,
                None,
            ),
            Connector::Gcs(gcs) => setup_instructions(
                connector.kind(),
                ours,
                tenant_id,
                &gcs.bucket,
                &gcs.prefix,
                None,
                gcs.service_account.as_ref().map(|key| key.client_email.as_str()),
            ),
            Connector::GoogleSheets(_) | Connector::Email(_) => {
                setup_instructions(connector.kind(), ours, tenant_id, "", "", None, None)
            }
        }
    }

    fn views_of(&self, document: &TenantDocument, config: &TenantConfig) -> Vec<ConnectorView> {
        let Some(connectors) = document.value.get("connectors").and_then(Value::as_object) else { return Vec::new() };
        connectors
            .iter()
            .filter_map(|(name, value)| {
                let object = value.as_object()?;
                let setup = config
                    .connectors
                    .get(name)
                    .map(|c| self.connector_setup(&config.tenant_id, c))
                    .unwrap_or(Value::Null);
                Some(connector_view(name, object, config, setup))
            })
            .collect()
    }

    pub async fn connectors(&self, tenant_id: &str) -> Result<(ConnectorList, String), ApiError> {
        let document = self.document(tenant_id).await?;
        let config = Self::config_of(&document)?;
        Ok((ConnectorList { connectors: self.views_of(&document, &config) }, document.version))
    }

    pub async fn connector(&self, tenant_id: &str, name: &str) -> Result<(ConnectorView, String), ApiError> {
        let document = self.document(tenant_id).await?;
        let config = Self::config_of(&document)?;
        let view = self
            .views_of(&document, &config)
            .into_iter()
            .find(|view| view.0.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| ApiError::NotFound(format!("connector {name:?}")))?;
        Ok((view, document.version))
    }

    /// Creates connector `body.name`, after its connection test passed.
    pub async fn create_connector(
        &self,
        tenant_id: &str,
        if_match: Option<&str>,
        body: Value,
    ) -> Result<(ConnectorView, String), ApiError> {
        let mut fields = body_object(body)?;
        let name = match fields.remove("name") {
            Some(Value::String(name)) if is_safe_id(&name) => name,
            Some(Value::String(name)) => {
                return Err(ApiError::invalid_field(
                    "name",
                    format!("{name:?} is not a valid connector name (lowercase letters, digits and '-')"),
                ))
            }
            _ => return Err(ApiError::invalid_field("name", "required (the new connector's name)")),
        };
        for read_only in ["usedBy", "setup"] {
            fields.remove(read_only);
        }
        let kind = fields.get("type").and_then(Value::as_str).and_then(ConnectorKind::from_type_name);
        let document = self.document(tenant_id).await?;
        check_version(&document, if_match)?;
        let mut value = document.value.clone();
        if object_of(&mut value, "connectors")?.contains_key(&name) {
            return Err(ApiError::Conflict(format!(
                "connector {name:?} exists already: change it with PATCH /v1/connectors/{name}"
            )));
        }
        if let Some(kind) = kind {
            for field in kind.credentials() {
                if fields.get(*field).is_some_and(is_masked_credential) {
                    return Err(ApiError::invalid_field(*field, "give the credential's value to create a connector"));
                }
            }
            if !kind.credentials().is_empty() && kind.credentials().iter().any(|f| fields.contains_key(*f)) {
                let at = (self.now)().format("%Y-%m-%dT%H:%M:%SZ").to_string();
                fields.insert("credentialsUpdatedAt".to_owned(), Value::String(at));
            }
            self.check_external_id(tenant_id, kind, &fields)?;
        }
        object_of(&mut value, "connectors")?.insert(name.clone(), Value::Object(fields));
        let version = self.commit(&document, if_match, value, Target::Connector(&name), Some(&name)).await?;
        info!(tenant = %tenant_id, connector = %name, "connector created");
        let (view, _) = self.connector(tenant_id, &name).await?;
        Ok((view, version))
    }

    /// Changes connector `name` by a merge patch, after its connection test passed.
    pub async fn update_connector(
        &self,
        tenant_id: &str,
        name: &str,
        if_match: Option<&str>,
        body: Value,
    ) -> Result<(ConnectorView, String), ApiError> {
        let mut patch = body_object(body)?;
        match patch.remove("name") {
            None => {}
            Some(Value::String(given)) if given == name => {}
            Some(_) => {
                return Err(ApiError::invalid_field("name", "a connector cannot be renamed; create another one"))
            }
        }
        for read_only in ["usedBy", "setup", "credentialsUpdatedAt"] {
            patch.remove(read_only);
        }
        let document = self.document(tenant_id).await?;
        check_version(&document, if_match)?;
        let mut value = document.value.clone();
        let connectors = object_of(&mut value, "connectors")?;
        let stored = connectors
            .get_mut(name)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::NotFound(format!("connector {name:?}")))?;
        let stored_type = stored.get("type").and_then(Value::as_str).map(str::to_owned);
        if let Some(new_type) = patch.get("type") {
            if new_type.as_str() != stored_type.as_deref() {
                return Err(ApiError::invalid_field(
                    "type",
                    "a connector's type cannot change; create a connector of the new type and move its feeds",
                ));
            }
        }
        let kind = stored_type.as_deref().and_then(ConnectorKind::from_type_name);
        let credentials = kind.map(ConnectorKind::credentials).unwrap_or_default();
        let destination = kind.map(ConnectorKind::destination_fields).unwrap_or_default();
        // A credential shown masked and sent back means "keep the stored one".
        patch.retain(|field, value| !(credentials.contains(&field.as_str()) && is_masked_credential(value)));
        for field in credentials {
            if patch.get(*field).is_some_and(Value::is_null) {
                return Err(ApiError::invalid_field(*field, "a credential cannot be removed, only replaced"));
            }
        }
        let moves = destination.iter().any(|field| patch.get(*field).is_some_and(|v| stored.get(*field) != Some(v)));
        let all_credentials_given = credentials.iter().all(|field| patch.contains_key(*field));
        if moves && !all_credentials_given {
            return Err(ApiError::Validation {
                detail: format!(
                    "changing {} needs the credentials again ({}), so stored keys never follow a new destination",
                    destination.join(" or "),
                    credentials.join(", ")
                ),
                errors: credentials
                    .iter()
                    .filter(|field| !patch.contains_key(**field))
                    .map(|field| FieldProblem {
                        path: (*field).to_owned(),
                        message: "required again when the destination changes".to_owned(),
                    })
                    .collect(),
            });
        }
        if credentials.iter().any(|field| patch.contains_key(*field)) {
            let at = (self.now)().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            patch.insert("credentialsUpdatedAt".to_owned(), Value::String(at));
        }
        merge(stored, patch);
        if let Some(kind) = kind {
            let snapshot = stored.clone();
            self.check_external_id(tenant_id, kind, &snapshot)?;
        }
        let version = self.commit(&document, if_match, value, Target::Connector(name), Some(name)).await?;
        info!(tenant = %tenant_id, connector = %name, "connector updated");
        let (view, _) = self.connector(tenant_id, name).await?;
        Ok((view, version))
    }

    /// An s3-role connector's external id is one we generate for this
    /// tenant (`GET /v1/setup` gives one).
    fn check_external_id(
        &self,
        tenant_id: &str,
        kind: ConnectorKind,
        fields: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        if kind != ConnectorKind::S3Role {
            return Ok(());
        }
        match fields.get("externalId").and_then(Value::as_str) {
            Some(id) if is_external_id_of(tenant_id, id) => Ok(()),
            Some(_) => Err(ApiError::invalid_field(
                "externalId",
                format!(
                    "is not an external id we generated for this tenant (pr-{tenant_id}-<32 lowercase hex>): take the \
                     one GET /v1/setup gives, and put it in your role's trust policy"
                ),
            )),
            None => Err(ApiError::invalid_field(
                "externalId",
                "required: take the one GET /v1/setup gives, and put it in your role's trust policy",
            )),
        }
    }

    pub async fn delete_connector(
        &self,
        tenant_id: &str,
        name: &str,
        if_match: Option<&str>,
    ) -> Result<String, ApiError> {
        let document = self.document(tenant_id).await?;
        check_version(&document, if_match)?;
        let config = Self::config_of(&document)?;
        let users: Vec<&str> =
            config.feeds.iter().filter(|feed| feed.connector == name).map(|feed| feed.id.as_str()).collect();
        let mut value = document.value.clone();
        if object_of(&mut value, "connectors")?.remove(name).is_none() {
            return Err(ApiError::NotFound(format!("connector {name:?}")));
        }
        if !users.is_empty() {
            return Err(ApiError::Conflict(format!(
                "connector {name:?} is used by feed(s) {}: delete them or move them to another connector first",
                users.join(", ")
            )));
        }
        let version = self.commit(&document, if_match, value, Target::Whole, None).await?;
        info!(tenant = %tenant_id, connector = %name, "connector deleted");
        Ok(version)
    }

    /// Tests the stored connector `name`.
    pub async fn test_connector(&self, tenant_id: &str, name: &str) -> Result<ConnectionTestView, ApiError> {
        let document = self.document(tenant_id).await?;
        let config = Self::config_of(&document)?;
        let connector = config.connectors.get(name).ok_or_else(|| ApiError::NotFound(format!("connector {name:?}")))?;
        let result = self.probe(tenant_id, name, connector.kind(), None, None).await?;
        Ok(ConnectionTestView::of(&result))
    }

    async fn probe(
        &self,
        tenant_id: &str,
        connector: &str,
        kind: ConnectorKind,
        stage: Option<&str>,
        id: Option<&str>,
    ) -> Result<crate::delivery::connection_probe::ConnectionTestResult, ApiError> {
        let now = (self.now)();
        let fresh = request_id(now);
        let request = ProbeRequest {
            kind: kind.job_kind(),
            request_id: id.unwrap_or(&fresh),
            tenant_id,
            connector,
            secret_version_stage: stage,
            requested_at: now,
        };
        run_probe(&self.staging, &self.events, request, self.settings.probe_wait, PROBE_POLL).await.map_err(|error| {
            match error {
                ProbeError::TimedOut { .. } => ApiError::Timeout(error.to_string()),
                _ => ApiError::Internal(error.to_string()),
            }
        })
    }

    /// Every feed with its latest delivery: the tenant document and, at the
    /// same time, one listing of the feeds' indexes; each index read only
    /// when it changed since this function last read it ([`FeedListCache`]).
    pub async fn feeds(&self, tenant_id: &str) -> Result<(FeedList, String), ApiError> {
        let (document, listed) = tokio::join!(self.document(tenant_id), FeedListCache::list(&self.staging, tenant_id));
        let document = document?;
        let config = Self::config_of(&document)?;
        let listed = listed.map_err(|error| ApiError::Internal(error.to_string()))?;
        let feed_ids: Vec<&str> = config.feeds.iter().map(|feed| feed.id.as_str()).collect();
        let deliveries = self
            .feed_lists
            .deliveries(&self.staging, listed, &feed_ids)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        let feeds = config
            .feeds
            .iter()
            .zip(&deliveries)
            .map(|(feed, deliveries)| FeedView::of(feed, &config, deliveries))
            .collect();
        Ok((FeedList { feeds }, document.version))
    }

    pub async fn feed(&self, tenant_id: &str, id: &str) -> Result<(FeedView, String), ApiError> {
        let document = self.document(tenant_id).await?;
        let config = Self::config_of(&document)?;
        let feed =
            config.feeds.iter().find(|feed| feed.id == id).ok_or_else(|| ApiError::NotFound(format!("feed {id:?}")))?;
        let index = read_feed_index(&self.staging, tenant_id, id)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        Ok((FeedView::of(feed, &config, &index.deliveries), document.version))
    }

    pub async fn create_feed(
        &self,
        tenant_id: &str,
        if_match: Option<&str>,
        body: Value,
    ) -> Result<(FeedView, String), ApiError> {
        let mut fields = body_object(body)?;
        for read_only in ["lastDelivery", "nextDueFrom", "connectorType"] {
            fields.remove(read_only);
        }
        let id = match fields.get("id") {
            Some(Value::String(id)) => id.clone(),
            _ => return Err(ApiError::invalid_field("id", "required (the new feed's id)")),
        };
        let document = self.document(tenant_id).await?;
        check_version(&document, if_match)?;
        let mut value = document.value.clone();
        let feeds = feeds_of(&mut value)?;
        if feeds.iter().any(|feed| feed.get("id").and_then(Value::as_str) == Some(&id)) {
            return Err(ApiError::Conflict(format!("feed {id:?} exists already: change it with PATCH /v1/feeds/{id}")));
        }
        let index = feeds.len();
        feeds.push(Value::Object(fields));
        let version = self.commit(&document, if_match, value, Target::Feed(index), None).await?;
        info!(tenant = %tenant_id, feed = %id, "feed created");
        let (view, _) = self.feed(tenant_id, &id).await?;
        Ok((view, version))
    }

    pub async fn update_feed(
        &self,
        tenant_id: &str,
        id: &str,
        if_match: Option<&str>,
        body: Value,
    ) -> Result<(FeedView, String), ApiError> {
        let mut patch = body_object(body)?;
        for read_only in ["lastDelivery", "nextDueFrom", "connectorType"] {
            patch.remove(read_only);
        }
        match patch.remove("id") {
            None => {}
            Some(Value::String(given)) if given == id => {}
            Some(_) => return Err(ApiError::invalid_field("id", "a feed cannot be renamed; create another one")),
        }
        let document = self.document(tenant_id).await?;
        check_version(&document, if_match)?;
        let mut value = document.value.clone();
        let feeds = feeds_of(&mut value)?;
        let index = feeds
            .iter()
            .position(|feed| feed.get("id").and_then(Value::as_str) == Some(id))
            .ok_or_else(|| ApiError::NotFound(format!("feed {id:?}")))?;
        let stored =
            feeds[index].as_object_mut().ok_or_else(|| ApiError::Conflict(format!("feed {id:?} is not an object")))?;
        merge(stored, patch);
        let version = self.commit(&document, if_match, value, Target::Feed(index), None).await?;
        info!(tenant = %tenant_id, feed = %id, "feed updated");
        let (view, _) = self.feed(tenant_id, id).await?;
        Ok((view, version))
    }

    pub async fn delete_feed(&self, tenant_id: &str, id: &str, if_match: Option<&str>) -> Result<String, ApiError> {
        let document = self.document(tenant_id).await?;
        check_version(&document, if_match)?;
        let mut value = document.value.clone();
        let feeds = feeds_of(&mut value)?;
        let before = feeds.len();
        feeds.retain(|feed| feed.get("id").and_then(Value::as_str) != Some(id));
        if feeds.len() == before {
            return Err(ApiError::NotFound(format!("feed {id:?}")));
        }
        let version = self.commit(&document, if_match, value, Target::Whole, None).await?;
        info!(tenant = %tenant_id, feed = %id, "feed deleted");
        Ok(version)
    }

    pub async fn deliveries(&self, tenant_id: &str, id: &str) -> Result<DeliveryList, ApiError> {
        let document = self.document(tenant_id).await?;
        let config = Self::config_of(&document)?;
        if !config.feeds.iter().any(|feed| feed.id == id) {
            return Err(ApiError::NotFound(format!("feed {id:?}")));
        }
        let index = read_feed_index(&self.staging, tenant_id, id)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        Ok(DeliveryList { feed_id: id.to_owned(), deliveries: index.deliveries.iter().map(DeliveryView::of).collect() })
    }

    /// Re-drives the failed delivery of feed `id` in run `run_id`, as
    /// `popularity redeliver` does for one job.
    pub async fn retry(&self, tenant_id: &str, id: &str, run_id: &str) -> Result<RetryView, ApiError> {
        let document = self.document(tenant_id).await?;
        let config = Self::config_of(&document)?;
        let feed =
            config.feeds.iter().find(|feed| feed.id == id).ok_or_else(|| ApiError::NotFound(format!("feed {id:?}")))?;
        let run: RunId = run_id.parse().map_err(|_| ApiError::NotFound(format!("run {run_id:?}")))?;
        let index = read_feed_index(&self.staging, tenant_id, id)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        let known: Option<&IndexedDelivery> = index.deliveries.iter().find(|entry| entry.run_id == run);
        if known.is_none() {
            return Err(ApiError::NotFound(format!("delivery of feed {id:?} in run {run_id:?}")));
        }
        let connector =
            config.connector_of(feed).ok_or_else(|| ApiError::Conflict(format!("feed {id:?} has no connector")))?;
        let parts = JobKeyParts {
            kind: connector.kind().job_kind(),
            run_id: run,
            tenant_id: tenant_id.to_owned(),
            feed_id: id.to_owned(),
        };
        let report = redrive_job(&self.staging, parts.clone(), &RedrivePolicy::operator(), (self.now)())
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        match report.decision {
            RedriveDecision::Redriven => {
                self.events.written(parts.kind, &parts.job_key()).await;
                info!(tenant = %tenant_id, feed = %id, run_id = %run, "delivery re-driven");
                Ok(RetryView { run_id: run.to_string(), feed_id: id.to_owned(), result: "redriven".to_owned() })
            }
            decision => Err(ApiError::Conflict(format!(
                "the delivery of run {run_id} was not re-driven: {} ({})",
                decision.as_str(),
                report.outcome.map_or("no status yet", |outcome| outcome.as_str())
            ))),
        }
    }

    /// Every other valid tenant, for the collision check (cached a minute).
    /// Every enabled tenant, oldest first (cached briefly).
    async fn tenants_by_seniority(&self) -> Result<Vec<TenantConfig>, ApiError> {
        {
            let cached = self.others.lock().expect("not poisoned");
            if let Some((at, tenants)) = cached.as_ref() {
                if at.elapsed() < OTHER_TENANTS_TTL {
                    return Ok(tenants.clone());
                }
            }
        }
        let entries = self.tenants.load_tenants().await.map_err(|error| ApiError::Internal(error.to_string()))?;
        let tenants: Vec<TenantConfig> =
            valid_by_seniority(&entries).into_iter().filter(|config| config.enabled).cloned().collect();
        *self.others.lock().expect("not poisoned") = Some((Instant::now(), tenants.clone()));
        Ok(tenants)
    }

    /// Validates `value` as the tenant's new document, checks it against
    /// the other tenants and our buckets, tests connector `probe` (if any)
    /// on a draft version, and stores it in place of the version read.
    async fn commit(
        &self,
        document: &TenantDocument,
        if_match: Option<&str>,
        value: Value,
        target: Target<'_>,
        probe: Option<&str>,
    ) -> Result<String, ApiError> {
        let expected = check_version(document, if_match)?;
        let tenant_id = document.tenant_id.as_str();
        let json = serde_json::to_string_pretty(&value).expect("a document serialises");
        let config = parse_tenant_secret(tenant_id, &json).map_err(|errors| validation(target.problems(&errors)))?;

        let mut problems = Vec::new();
        for (name, connector) in &config.connectors {
            if let Some(reason) =
                connector.s3_destination().and_then(|d| own_bucket_refusal(&d.bucket, &self.settings.own_buckets))
            {
                problems
                    .push(FieldProblem { path: target.path(&format!("connectors.{name}.bucketArn")), message: reason });
            }
        }
        if !problems.is_empty() {
            return Err(validation(problems));
        }
        if config.enabled {
            // The tenant keeps its place among the others: it is a newcomer
            // only to destinations another tenant already had.
            let tenants = self.tenants_by_seniority().await?;
            let mut all: Vec<&TenantConfig> =
                tenants.iter().map(|other| if other.tenant_id == tenant_id { &config } else { other }).collect();
            if !all.iter().any(|other| other.tenant_id == tenant_id) {
                all.push(&config);
            }
            let refused: Vec<String> = conflicts_across(&all)
                .into_keys()
                .filter(|(tenant, _)| tenant == tenant_id)
                .map(|(_, feed)| feed)
                .collect();
            if !refused.is_empty() {
                // Never says whose destination it is.
                return Err(ApiError::Validation {
                    detail: format!(
                        "feed(s) {} would write where another customer's delivery already writes: choose another \
                         bucket or prefix",
                        refused.join(", ")
                    ),
                    errors: refused
                        .iter()
                        .map(|feed| FieldProblem {
                            path: format!("feeds.{feed}"),
                            message: "its destination is taken by another customer's delivery".to_owned(),
                        })
                        .collect(),
                });
            }
        }

        if let Some(connector_name) = probe {
            let kind = config.connectors.get(connector_name).map(Connector::kind).ok_or_else(|| {
                ApiError::Internal(format!("connector {connector_name:?} vanished from the document being stored"))
            })?;
            let id = request_id((self.now)());
            let stage = draft_stage(&id);
            let draft = self.documents.write_draft(tenant_id, &json, &stage).await?;
            let result = self.probe(tenant_id, connector_name, kind, Some(&stage), Some(&id)).await;
            if let Err(error) = self.documents.discard_draft(tenant_id, &draft, &stage).await {
                warn!(tenant = %tenant_id, %error, "could not remove a draft's label; it stays unused");
            }
            let result = result?;
            if !result.ok {
                return Err(ApiError::ConnectionTestFailed {
                    detail: format!(
                        "the connection test of {connector_name:?} failed, so nothing was stored: {}",
                        result
                            .checks
                            .iter()
                            .filter(|check| !check.ok && check.required)
                            .map(|check| format!("{}: {}", check.name, check.detail))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    checks: result.checks.iter().map(CheckResult::from).collect(),
                    warnings: result.warnings,
                });
            }
        }
        let version = self.documents.replace(tenant_id, &json, expected).await.map_err(|error| match error {
            DocumentError::Changed { current, .. } => {
                ApiError::PreconditionFailed { given: expected.to_owned(), current }
            }
            other => other.into(),
        })?;
        Ok(version)
    }
}

/// The version the caller read, which must still be the document's.
fn check_version<'a>(document: &TenantDocument, if_match: Option<&'a str>) -> Result<&'a str, ApiError> {
    let given = etag_of(if_match.ok_or(ApiError::PreconditionRequired)?);
    if given != document.version {
        return Err(ApiError::PreconditionFailed { given: given.to_owned(), current: document.version.clone() });
    }
    Ok(given)
}
