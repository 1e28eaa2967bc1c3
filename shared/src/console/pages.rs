//! The console's pages: one HTML page, its script and its style sheet,
//! compiled into the binary and served from our own origin — no CDN, no
//! external script, no build chain. The page signs in through `/auth/`,
//! keeps the Cognito ID token in the tab's session storage, and calls the
//! `/v1/` API with it; it renders nothing a response did not give it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS)
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}

/// `/` and the assets it loads.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/assets/app.js", get(script)).route("/assets/app.css", get(style))
}
