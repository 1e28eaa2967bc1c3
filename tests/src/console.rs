//! The self-service console on moto for tests: a user pool made as the
//! template makes it, users with known passwords, the router served on a
//! 127.0.0.1 listener exactly as `popularity console` serves it, sign-in
//! through its own `/auth/sign-in`, and an HTTP client that checks every
//! answer against the OpenAPI document the console serves.

use std::sync::Arc;

use aws_config::SdkConfig;
use popularity_reports::config::{ConsoleConfig, DeliveryConfig};
use popularity_reports::console::aws::{aws_app, AwsPorts};
use popularity_reports::console::dispatch::StagingEvents;
use popularity_reports::console::routes::{router, App};
use popularity_reports::console::users::{create_user_pool, invite, Invitation, UserPool};
use serde_json::Value;

/// The issuer moto writes into its tokens (AWS's form, whatever the endpoint).
pub fn moto_issuer(user_pool_id: &str) -> String {
    format!("https://cognito-idp.us-east-1.amazonaws.com/{user_pool_id}")
}

/// A user pool of its own on the emulator at `endpoint`.
pub async fn fresh_user_pool(config: &SdkConfig, hint: &str) -> UserPool {
    let client = aws_sdk_cognitoidentityprovider::Client::new(config);
    create_user_pool(&client, &crate::unique_bucket_name(hint)).await.expect("a user pool on moto")
}

/// A user of `tenant_id` (or an operator) with a permanent `password`.
pub async fn add_user(
    config: &SdkConfig,
    pool: &UserPool,
    email: &str,
    tenant_id: Option<&str>,
    operator: bool,
    password: &str,
) {
    let client = aws_sdk_cognitoidentityprovider::Client::new(config);
    let invitation = Invitation { email, tenant_id, operator, password: Some(password) };
    invite(&client, &pool.user_pool_id, &invitation).await.expect("a user on moto");
}

/// The console's configuration on moto at `endpoint`.
pub fn console_config(endpoint: &str, pool: &UserPool, staging_bucket: &str, tenant_prefix: &str) -> ConsoleConfig {
    ConsoleConfig {
        delivery: DeliveryConfig {
            staging_bucket: staging_bucket.to_owned(),
            tenant_secret_prefix: tenant_prefix.to_owned(),
            tenant_secrets_kms_key_id: None,
            data_bucket: None,
        },
        user_pool_id: pool.user_pool_id.clone(),
        client_id: pool.client_id.clone(),
        issuer: moto_issuer(&pool.user_pool_id),
        jwks_url: format!("{endpoint}/{}/.well-known/jwks.json", pool.user_pool_id),
        delivery_principal: Some(
            "arn:aws:iam::123456789012:role/popularity-reports-DeliverS3FunctionRole-TEST".to_owned(),
        ),
        bucket_policy_writer: Some(
            "arn:aws:iam::123456789012:role/popularity-reports-BucketPolicyWriterRole-TEST".to_owned(),
        ),
        google_share_address: Some("popularity-delivery@our-project.iam.gserviceaccount.com".to_owned()),
        google_project_id: None,
        connection_test_wait_seconds: 20,
    }
}

/// The console's application on moto, with `events` standing for the deliverers.
pub fn console_app<E: StagingEvents + 'static>(
    config: &SdkConfig,
    console: &ConsoleConfig,
    events: E,
) -> Arc<App<AwsPorts<E>>> {
    aws_app(config, console, events).expect("the console's adapters")
}

/// Serves `app` on a free 127.0.0.1 port; returns its base URL (no
/// trailing slash). The server lives as long as the test's runtime.
pub async fn serve<P: popularity_reports::console::service::ConsolePorts>(app: Arc<App<P>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, router(app)).await.expect("the console serves") });
    format!("http://{address}")
}

/// One answer of the console.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// A client of one console, checking each answer against its OpenAPI document.
#[derive(Clone)]
pub struct ConsoleClient {
    pub base: String,
    http: reqwest::Client,
    openapi: Arc<Value>,
}

impl ConsoleClient {
    pub fn new(base: &str) -> ConsoleClient {
        let http = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
        let openapi: Value =
            serde_json::from_str(&popularity_reports::console::routes::openapi_json()).expect("the OpenAPI document");
        ConsoleClient { base: base.to_owned(), http, openapi: Arc::new(openapi) }
    }

    /// Signs in through `/auth/sign-in`; the ID token.
    pub async fn sign_in(&self, email: &str, password: &str) -> String {
        let body = serde_json::json!({"email": email, "password": password});
        let answer = self.call("POST", "/auth/sign-in", None, None, Some(&body)).await;
        assert_eq!(answer.status, 200, "sign-in of {email}: {}", answer.text);
        answer.json()["idToken"].as_str().expect("an ID token").to_owned()
    }

    /// A request; the answer is checked against the OpenAPI document when
    /// its path is documented there.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, token, if_match, body).await
    }

    /// As [`Self::call`], with a body given as text.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        if_match: Option<&str>,
        body: Option<String>,
    ) -> Answer {
        let method_value: reqwest::Method = method.parse().expect("an HTTP method");
        let mut request = self.http.request(method_value, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(version) = if_match {
            request = request.header("if-match", format!("\"{version}\""));
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let etag = header("etag").map(|tag| tag.trim_matches('"').to_owned());
        let content_type = header("content-type");
        let text = response.text().await.expect("a body");
        let answer = Answer { status, etag, content_type, text };
        self.check_against_openapi(method, path, &answer);
        answer
    }

    /// Fails when a documented route answers with a status or a body the
    /// document does not describe.
    fn check_against_openapi(&self, method: &str, path: &str, answer: &Answer) {
        let path_only = path.split('?').next().unwrap_or(path);
        let Some((template, operation)) = find_operation(&self.openapi, method, path_only) else {
            if path_only.starts_with("/v1/") && path_only != "/v1/openapi.json" && (200..300).contains(&answer.status) {
                panic!("{method} {path_only} answered {} but is not in the OpenAPI document", answer.status);
            }
            return;
        };
        let responses = &operation["responses"];
        let Some(described) = responses.get(answer.status.to_string()) else {
            panic!(
                "{method} {template} answered {}, which its OpenAPI operation does not list: {}",
                answer.status, answer.text
            )
        };
        let Some(content) = described.get("content").and_then(Value::as_object) else {
            return;
        };
        let Some((media, schema)) = content.iter().next().map(|(media, c)| (media.clone(), c["schema"].clone())) else {
            return;
        };
        let expected_type = if answer.status >= 400 { "application/problem+json" } else { media.as_str() };
        let got_type = answer.content_type.as_deref().unwrap_or_default();
        assert!(
            got_type.starts_with(expected_type) || (answer.status >= 400 && got_type.starts_with("application/json")),
            "{method} {template} answered {} as {got_type}, documented as {expected_type}",
            answer.status
        );
        let instance: Value = serde_json::from_str(&answer.text)
            .unwrap_or_else(|e| panic!("{method} {template} answered {} with no JSON ({e})", answer.status));
        let mut root = serde_json::json!({"components": self.openapi["components"].clone()});
        if let Value::Object(fields) = schema {
            for (key, value) in fields {
                root[key] = value;
            }
        }
        let validator =
            jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("the schema of {method} {template}: {e}"));
        let problems: Vec<String> =
            validator.iter_errors(&instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(
            problems.is_empty(),
            "{method} {template} {} does not match its OpenAPI schema: {problems:?}\n{}",
            answer.status,
            answer.text
        );
    }
}

/// The operation of `method` on the documented path template matching `path`.
pub fn find_operation<'d>(openapi: &'d Value, method: &str, path: &str) -> Option<(String, &'d Value)> {
    let paths = openapi["paths"].as_object()?;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    for (template, item) in paths {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(part, segment)| (part.starts_with('{') && !segment.is_empty()) || part == segment);
        if matches {
            if let Some(operation) = item.get(method.to_ascii_lowercase()) {
                return Some((template.clone(), operation));
            }
        }
    }
    None
}
