//! The console's pages: one HTML page, its script and its style sheet,
//! compiled into the binary and served from our own origin — no CDN, no
//! external script, no inline script or style (the Content-Security-Policy
//! allows only 'self'), no build chain. The page signs in through `/auth/`,
//! keeps the Cognito ID token in the tab's session storage, and calls the
//! `/v1/` API with it; it renders nothing a response did not give it, and
//! API data only as text. Its pages are hash routes of `/` (`#/dashboard`,
//! `#/connectors`, `#/feeds`, `#/usage`), so one document serves them all.
//! Browsers revalidate each file on every load (`no-cache`), so a new
//! build's files are used at once.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_JS)
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_CSS)
}

/// `/` and the assets it loads.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/assets/app.js", get(script)).route("/assets/app.css", get(style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_has_no_inline_script_or_style() {
        for tag in INDEX_HTML.match_indices("<script").map(|(at, _)| &INDEX_HTML[at..]) {
            let tag = &tag[..tag.find('>').expect("a closed tag")];
            assert!(tag.contains("src=\"/assets/"), "an inline or foreign script: {tag}");
        }
        for (name, text) in [("index.html", INDEX_HTML), ("app.css", APP_CSS)] {
            assert!(!text.contains("<style") && !text.contains(" style="), "{name} has an inline style");
            assert!(!text.contains("@import") && !text.contains("url(http"), "{name} loads from elsewhere");
        }
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "a foreign address in the page");
    }

    #[test]
    fn the_script_renders_api_data_as_text_and_keeps_the_token_in_session_storage() {
        for forbidden in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!APP_JS.contains(forbidden), "app.js uses {forbidden}");
        }
        assert!(
            !APP_JS.contains("localStorage.setItem") && !APP_JS.contains("document.cookie ="),
            "the token leaves the tab"
        );
        assert!(APP_JS.contains("sessionStorage.setItem(TOKEN_KEY"), "the token is kept in sessionStorage");
    }
}
