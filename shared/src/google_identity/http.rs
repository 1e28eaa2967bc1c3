//! The plumbing the IAM API calls share: their HTTP client, and the bearer
//! headers of credentials with errors that never hold a token.

/// The HTTP client of our calls to Google's IAM APIs: bounded waits, and no
/// redirect (one would carry our bearer token elsewhere).
pub(super) fn google_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a TLS client can be built")
}

/// The `Authorization` headers of `credentials`, or why there are none
/// (whether a retry can help, and the reason, never a token).
pub(super) async fn authorization_headers(
    credentials: &google_cloud_auth::credentials::Credentials,
) -> Result<http::HeaderMap, (bool, String)> {
    use google_cloud_auth::credentials::CacheableResource;
    match credentials.headers(http::Extensions::new()).await {
        Ok(CacheableResource::New { data, .. }) => Ok(data),
        Ok(CacheableResource::NotModified) => Err((false, "no token was produced".to_owned())),
        Err(error) => Err((error.is_transient(), crate::aws_errors::cut(&error.to_string()))),
    }
}
