//! The self-service application's one HTTP router: the API under `/v1/`
//! (documented by the OpenAPI document it serves at `/v1/openapi.json`),
//! the sign-in helper under `/auth/`, and the console's pages at `/`. The
//! same router runs in Lambda behind API Gateway (`lambda_http`) and
//! locally on a 127.0.0.1 listener (`axum::serve`). Request bodies are
//! bounded; every response forbids framing and sniffing, and pages load
//! nothing but their own origin's files. Logs name routes, tenants and
//! statuses, never a body or a header.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, OpenApi};

use super::pages;
use super::problem::{ApiError, Problem};
use super::service::{Console, ConsolePorts};
use super::sign_in::{CognitoSignIn, NewPasswordRequest, SignInAnswer, SignInError, SignInRequest};
use super::views::{
    ConnectionTestView, ConnectorList, ConnectorView, DeliveryList, FeedList, FeedView, MeView, RetryView, SetupView,
};

/// The largest request body accepted (a connector with a key file is ~3 KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every response carries: nothing but our own origin, no framing,
/// no sniffing, no referrer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     object-src 'none'";

/// `?tenantId=`: the tenant an operator acts on.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuery {
    /// For operators only: the tenant to act on. A customer's own tenant is
    /// the one their user belongs to.
    pub tenant_id: Option<String>,
}

/// The router's state: the console and, where sign-in is served, Cognito.
pub struct App<P: ConsolePorts> {
    pub console: Console<P>,
    pub sign_in: Option<CognitoSignIn>,
}

type Shared<P> = State<Arc<App<P>>>;

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

/// Who a `/v1/` request comes from and which tenant it acts on: its bearer
/// token checked against the pool's keys, `?tenantId=` for operators, and
/// the `If-Match` a change carries. Every tenant-scoped handler takes it,
/// so none can skip the check.
struct ActingOn {
    caller: super::auth::Caller,
    tenant: String,
    if_match: Option<String>,
}

impl ActingOn {
    fn if_match(&self) -> Option<&str> {
        self.if_match.as_deref()
    }
}

impl<P: ConsolePorts> FromRequestParts<Arc<App<P>>> for ActingOn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App<P>>) -> Result<Self, ApiError> {
        let Query(query) = Query::<TenantQuery>::from_request_parts(parts, app)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let caller = app.console.caller(authorization(&parts.headers)).await?;
        let tenant = app.console.tenant_of(&caller, query.tenant_id.as_deref())?;
        let if_match = parts.headers.get(header::IF_MATCH).and_then(|value| value.to_str().ok()).map(str::to_owned);
        Ok(ActingOn { caller, tenant, if_match })
    }
}

/// A JSON answer with the tenant document's version as its ETag.
fn with_etag(status: StatusCode, body: impl serde::Serialize, version: &str) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn json_body(body: Result<Json<Value>, axum::extract::rejection::JsonRejection>) -> Result<Value, ApiError> {
    body.map(|Json(value)| value).map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit: MAX_BODY_BYTES },
        _ => ApiError::BadRequest(format!("the request body is not the JSON expected: {}", rejection.body_text())),
    })
}

#[utoipa::path(get, path = "/v1/me", params(TenantQuery), tag = "tenant",
    responses((status = 200, body = MeView, description = "The tenant, its plan and its use"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn me<P: ConsolePorts>(State(app): Shared<P>, acting: ActingOn) -> Result<Response, ApiError> {
    let view = app.console.me(&acting.caller, &acting.tenant).await?;
    let version = view.version.clone();
    Ok(with_etag(StatusCode::OK, view, &version))
}

#[utoipa::path(get, path = "/v1/setup", params(TenantQuery), tag = "connectors",
    responses((status = 200, body = SetupView, description = "What to set up before creating a connector, with a fresh external id"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn setup<P: ConsolePorts>(State(app): Shared<P>, acting: ActingOn) -> Result<Json<SetupView>, ApiError> {
    Ok(Json(app.console.setup(&acting.tenant)?))
}

#[utoipa::path(get, path = "/v1/connectors", params(TenantQuery), tag = "connectors",
    responses((status = 200, body = ConnectorList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_connectors<P: ConsolePorts>(State(app): Shared<P>, acting: ActingOn) -> Result<Response, ApiError> {
    let (list, version) = app.console.connectors(&acting.tenant).await?;
    Ok(with_etag(StatusCode::OK, list, &version))
}

#[utoipa::path(post, path = "/v1/connectors", params(TenantQuery, ("If-Match" = String, Header, description = "The tenant document's ETag")), tag = "connectors",
    request_body(content = Object, description = "The connector's fields (docs/tenants.md) and its `name`"),
    responses((status = 201, body = ConnectorView, description = "Tested and stored"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem, description = "Invalid, or its connection test failed: nothing was stored"),
              (status = 428, body = Problem), (status = 504, body = Problem)))]
async fn create_connector<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (view, version) = app.console.create_connector(&acting.tenant, acting.if_match(), json_body(body)?).await?;
    Ok(with_etag(StatusCode::CREATED, view, &version))
}

#[utoipa::path(get, path = "/v1/connectors/{name}", params(("name" = String, Path), TenantQuery), tag = "connectors",
    responses((status = 200, body = ConnectorView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_connector<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (view, version) = app.console.connector(&acting.tenant, &name).await?;
    Ok(with_etag(StatusCode::OK, view, &version))
}

#[utoipa::path(patch, path = "/v1/connectors/{name}", params(("name" = String, Path), TenantQuery, ("If-Match" = String, Header)), tag = "connectors",
    request_body(content = Object, description = "A JSON merge patch of the connector's fields; an omitted or masked credential keeps the stored one"),
    responses((status = 200, body = ConnectorView, description = "Tested and stored"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem),
              (status = 422, body = Problem), (status = 428, body = Problem), (status = 504, body = Problem)))]
async fn update_connector<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(name): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (view, version) =
        app.console.update_connector(&acting.tenant, &name, acting.if_match(), json_body(body)?).await?;
    Ok(with_etag(StatusCode::OK, view, &version))
}

#[utoipa::path(delete, path = "/v1/connectors/{name}", params(("name" = String, Path), TenantQuery, ("If-Match" = String, Header)), tag = "connectors",
    responses((status = 204, description = "Deleted"), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "A feed uses it"), (status = 412, body = Problem), (status = 428, body = Problem)))]
async fn delete_connector<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let version = app.console.delete_connector(&acting.tenant, &name, acting.if_match()).await?;
    Ok(with_etag(StatusCode::NO_CONTENT, (), &version))
}

#[utoipa::path(post, path = "/v1/connectors/{name}/test", params(("name" = String, Path), TenantQuery), tag = "connectors",
    responses((status = 200, body = ConnectionTestView, description = "The test ran; `ok` says whether it passed"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 504, body = Problem)))]
async fn test_connector<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(name): Path<String>,
) -> Result<Json<ConnectionTestView>, ApiError> {
    Ok(Json(app.console.test_connector(&acting.tenant, &name).await?))
}

#[utoipa::path(get, path = "/v1/feeds", params(TenantQuery), tag = "feeds",
    responses((status = 200, body = FeedList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn list_feeds<P: ConsolePorts>(State(app): Shared<P>, acting: ActingOn) -> Result<Response, ApiError> {
    let (list, version) = app.console.feeds(&acting.tenant).await?;
    Ok(with_etag(StatusCode::OK, list, &version))
}

#[utoipa::path(post, path = "/v1/feeds", params(TenantQuery, ("If-Match" = String, Header)), tag = "feeds",
    request_body(content = Object, description = "The feed's fields (docs/tenants.md) with its `id`"),
    responses((status = 201, body = FeedView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn create_feed<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (view, version) = app.console.create_feed(&acting.tenant, acting.if_match(), json_body(body)?).await?;
    Ok(with_etag(StatusCode::CREATED, view, &version))
}

#[utoipa::path(get, path = "/v1/feeds/{id}", params(("id" = String, Path), TenantQuery), tag = "feeds",
    responses((status = 200, body = FeedView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_feed<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (view, version) = app.console.feed(&acting.tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, view, &version))
}

#[utoipa::path(patch, path = "/v1/feeds/{id}", params(("id" = String, Path), TenantQuery, ("If-Match" = String, Header)), tag = "feeds",
    request_body(content = Object, description = "A JSON merge patch of the feed's fields (interval, format, compression, delta settings, paused)"),
    responses((status = 200, body = FeedView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn update_feed<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let (view, version) = app.console.update_feed(&acting.tenant, &id, acting.if_match(), json_body(body)?).await?;
    Ok(with_etag(StatusCode::OK, view, &version))
}

#[utoipa::path(delete, path = "/v1/feeds/{id}", params(("id" = String, Path), TenantQuery, ("If-Match" = String, Header)), tag = "feeds",
    responses((status = 204, description = "Deleted"), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 428, body = Problem)))]
async fn delete_feed<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let version = app.console.delete_feed(&acting.tenant, &id, acting.if_match()).await?;
    Ok(with_etag(StatusCode::NO_CONTENT, (), &version))
}

#[utoipa::path(get, path = "/v1/feeds/{id}/deliveries", params(("id" = String, Path), TenantQuery), tag = "deliveries",
    responses((status = 200, body = DeliveryList, description = "Newest run first"), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn deliveries<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    Ok(Json(app.console.deliveries(&acting.tenant, &id).await?))
}

#[utoipa::path(post, path = "/v1/feeds/{id}/deliveries/{runId}/retry", params(("id" = String, Path), ("runId" = String, Path), TenantQuery), tag = "deliveries",
    responses((status = 202, body = RetryView, description = "Re-driven; the outcome follows on the feed's deliveries"),
              (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem, description = "Delivered, invalid, or being delivered")))]
async fn retry<P: ConsolePorts>(
    State(app): Shared<P>,
    acting: ActingOn,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::ACCEPTED, Json(app.console.retry(&acting.tenant, &id, &run_id).await?)).into_response())
}

#[utoipa::path(post, path = "/auth/sign-in", tag = "sign-in", request_body = SignInRequest,
    responses((status = 200, body = SignInAnswer), (status = 401, body = Problem), (status = 413, body = Problem), (status = 400, body = Problem)))]
async fn sign_in<P: ConsolePorts>(
    State(app): Shared<P>,
    body: Result<Json<SignInRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SignInAnswer>, ApiError> {
    let Json(request) = body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let cognito =
        app.sign_in.as_ref().ok_or_else(|| ApiError::Internal("sign-in is not configured here".to_owned()))?;
    cognito.sign_in(&request).await.map(Json).map_err(sign_in_error)
}

#[utoipa::path(post, path = "/auth/new-password", tag = "sign-in", request_body = NewPasswordRequest,
    responses((status = 200, body = SignInAnswer), (status = 401, body = Problem), (status = 413, body = Problem), (status = 400, body = Problem)))]
async fn new_password<P: ConsolePorts>(
    State(app): Shared<P>,
    body: Result<Json<NewPasswordRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SignInAnswer>, ApiError> {
    let Json(request) = body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let cognito =
        app.sign_in.as_ref().ok_or_else(|| ApiError::Internal("sign-in is not configured here".to_owned()))?;
    cognito.new_password(&request).await.map(Json).map_err(sign_in_error)
}

fn sign_in_error(error: SignInError) -> ApiError {
    match error {
        SignInError::Refused => ApiError::Unauthorized(error.to_string()),
        SignInError::BadPassword(_) => ApiError::BadRequest(error.to_string()),
        SignInError::Service(_) => ApiError::Internal(error.to_string()),
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Popularity reports self-service API", version = "1",
         description = "Connectors, feeds and deliveries of one tenant. Authorization: Bearer <Cognito ID token>. \
                        Changes need If-Match with the tenant document's ETag. Errors are RFC 9457 problem details."),
    paths(me, setup, list_connectors, create_connector, get_connector, update_connector, delete_connector, test_connector,
          list_feeds, create_feed, get_feed, update_feed, delete_feed, deliveries, retry, sign_in, new_password),
    components(schemas(Problem, MeView, SetupView, ConnectorList, ConnectorView, ConnectionTestView, FeedList, FeedView,
                       DeliveryList, RetryView, SignInRequest, NewPasswordRequest, SignInAnswer)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cognito",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("cognito", Vec::<String>::new())]);
    }
}

/// The OpenAPI document as served and as kept in `docs/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises")
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// Headers every response carries, and no caching of the API's answers.
async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/v1/") || request.uri().path().starts_with("/auth/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Every request's route and status, and nothing of its content.
async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    tracing::info!(%method, route = %path, status = response.status().as_u16(), "request");
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound("this path".to_owned())
}

/// The application's router over `app`.
pub fn router<P: ConsolePorts>(app: Arc<App<P>>) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/me", get(me::<P>))
        .route("/v1/setup", get(setup::<P>))
        .route("/v1/connectors", get(list_connectors::<P>).post(create_connector::<P>))
        .route(
            "/v1/connectors/{name}",
            get(get_connector::<P>).patch(update_connector::<P>).delete(delete_connector::<P>),
        )
        .route("/v1/connectors/{name}/test", post(test_connector::<P>))
        .route("/v1/feeds", get(list_feeds::<P>).post(create_feed::<P>))
        .route("/v1/feeds/{id}", get(get_feed::<P>).patch(update_feed::<P>).delete(delete_feed::<P>))
        .route("/v1/feeds/{id}/deliveries", get(deliveries::<P>))
        .route("/v1/feeds/{id}/deliveries/{run_id}/retry", post(retry::<P>))
        .route("/auth/sign-in", post(sign_in::<P>))
        .route("/auth/new-password", post(new_password::<P>))
        .merge(pages::routes())
        .fallback(not_found)
        .with_state(app)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(access_log))
        .layer(middleware::from_fn(security_headers))
}
