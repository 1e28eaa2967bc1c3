//! Sending one event to one target: the ports ([`WebhookSender`],
//! [`EventBusSender`]) and their adapters. [`HttpWebhooks`] posts Standard
//! Webhooks requests guarded against server-side request forgery: `https`
//! only (`http://127.0.0.1` too under the local setting), the host resolved
//! here and every address it resolves to checked by
//! [`super::address_guard`], then the request pinned to the checked address
//! (reqwest's `resolve`), so a second lookup cannot swap it; no redirects,
//! no proxies, a 10 s timeout and a cap on the response read. [`EventBridgeBuses`]
//! calls `PutEvents` on the customer's bus in its region. Neither ever puts
//! the signing secret, or a URL's query, in a result or a log line.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::{DateTime, Utc};

use super::address_guard::check_address;
use super::signature::sign;
use crate::aws_errors::one_line;
use crate::delivery::arrival_event::ArrivalEvent;
use crate::tenant::{EventBridgeTarget, WebhookTarget};

/// The whole request, connection included, must finish within this.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a response read at most (the status is what counts).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// EventBridge `Source` of every event we put.
pub const EVENT_SOURCE: &str = "popularity-reports";

/// Why a target did not accept an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct SendFailure {
    /// Sending again cannot help as things are (a URL that is not https, an
    /// address that is not public): not retried.
    pub refused: bool,
    /// One line, never a secret or a URL's query.
    pub detail: String,
}

impl SendFailure {
    fn refused(detail: impl Into<String>) -> Self {
        SendFailure { refused: true, detail: detail.into() }
    }

    fn failed(detail: impl Into<String>) -> Self {
        SendFailure { refused: false, detail: detail.into() }
    }
}

/// Posts an event to a customer's webhook.
pub trait WebhookSender: Send + Sync {
    /// `Ok` with a one-line receipt (`HTTP 204`) when the endpoint answered 2xx.
    fn send(
        &self,
        target: &WebhookTarget,
        event_id: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<String, SendFailure>> + Send;
}

/// Puts an event on a customer's EventBridge bus.
pub trait EventBusSender: Send + Sync {
    fn put(
        &self,
        target: &EventBridgeTarget,
        event: &ArrivalEvent,
        body: &str,
    ) -> impl Future<Output = Result<String, SendFailure>> + Send;
}

/// A webhook URL as logs and statuses show it: without its query, which
/// may carry a token.
pub fn shown_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

/// Standard Webhooks over HTTPS, guarded (see the module's documentation).
#[derive(Debug, Clone)]
pub struct HttpWebhooks {
    /// `WEBHOOKS_ALLOW_LOOPBACK=true`: loopback addresses, and
    /// `http://127.0.0.1`, for local runs only.
    pub allow_loopback: bool,
    pub timeout: Duration,
    /// The clock of `webhook-timestamp`; tests pin it.
    pub now: fn() -> DateTime<Utc>,
}

impl HttpWebhooks {
    pub fn new(allow_loopback: bool) -> Self {
        HttpWebhooks { allow_loopback, timeout: WEBHOOK_TIMEOUT, now: Utc::now }
    }

    /// The address to connect to, checked; or why the URL is refused.
    async fn checked_address(&self, url: &url::Url) -> Result<SocketAddr, SendFailure> {
        let shown = shown_url(url.as_str());
        let host = url.host().ok_or_else(|| SendFailure::refused(format!("{shown} has no host")))?;
        let local_http = self.allow_loopback && url.scheme() == "http" && url.host_str() == Some("127.0.0.1");
        if url.scheme() != "https" && !local_http {
            return Err(SendFailure::refused(format!("{shown} is not an https:// URL; only https is sent to")));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match host {
            url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            url::Host::Domain(name) => {
                let lookup = tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, port))).await;
                match lookup {
                    Ok(Ok(found)) => found.map(|address| address.ip()).collect(),
                    Ok(Err(error)) => return Err(SendFailure::failed(format!("could not resolve {name}: {error}"))),
                    Err(_) => return Err(SendFailure::failed(format!("resolving {name} timed out"))),
                }
            }
        };
        let first = *addresses.first().ok_or_else(|| SendFailure::failed(format!("{shown} resolved to nothing")))?;
        // Every address must pass, not just the one used: a name that also
        // resolves inward is refused whatever order the resolver gives.
        for address in &addresses {
            if let Err(why) = check_address(*address, self.allow_loopback) {
                return Err(SendFailure::refused(format!(
                    "{shown} resolves to {address}, {}; webhooks go only to public addresses",
                    why.describe()
                )));
            }
        }
        Ok(SocketAddr::new(first, port))
    }
}

impl WebhookSender for HttpWebhooks {
    async fn send(&self, target: &WebhookTarget, event_id: &str, body: &[u8]) -> Result<String, SendFailure> {
        let url = url::Url::parse(&target.url).map_err(|_| SendFailure::refused("the webhook URL is not a URL"))?;
        let address = self.checked_address(&url).await?;
        let key = target
            .signing_key()
            .ok_or_else(|| SendFailure::refused("the webhook's signingSecret is not whsec_ and base64"))?;
        let timestamp = (self.now)().timestamp();
        let signature = sign(&key, event_id, timestamp, body);
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .connect_timeout(self.timeout);
        if let Some(url::Host::Domain(name)) = url.host() {
            // Connect to the address checked above, whatever a second lookup would say.
            client = client.resolve(name, address);
        }
        let client = client.build().map_err(|e| SendFailure::failed(format!("no HTTP client: {}", e.without_url())))?;
        let response = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "popularity-reports-notify/1")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|error| SendFailure::failed(request_failure(error)))?;
        let status = response.status();
        drain(response).await;
        if status.is_success() {
            Ok(format!("HTTP {}", status.as_u16()))
        } else if status.is_redirection() {
            Err(SendFailure::failed(format!("HTTP {} (redirects are not followed)", status.as_u16())))
        } else {
            Err(SendFailure::failed(format!("HTTP {}", status.as_u16())))
        }
    }
}

/// A reqwest error on one line, without the URL (its query may hold a token).
fn request_failure(error: reqwest::Error) -> String {
    let timed_out = error.is_timeout();
    let text = crate::aws_errors::display_chain(&error.without_url());
    if timed_out {
        format!("no answer within {} s: {text}", WEBHOOK_TIMEOUT.as_secs())
    } else {
        text
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of the body, so a connection can be
/// reused when the answer is small and a huge one costs nothing.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read >= MAX_RESPONSE_BYTES {
            break;
        }
    }
}

/// `PutEvents` on the customer's bus, with our role, in the bus's region.
#[derive(Debug, Clone)]
pub struct EventBridgeBuses {
    config: aws_config::SdkConfig,
}

impl EventBridgeBuses {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        EventBridgeBuses { config: config.clone() }
    }

    fn client(&self, region: &str) -> aws_sdk_eventbridge::Client {
        let config = aws_sdk_eventbridge::config::Builder::from(&self.config)
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        aws_sdk_eventbridge::Client::from_conf(config)
    }
}

impl EventBusSender for EventBridgeBuses {
    async fn put(&self, target: &EventBridgeTarget, event: &ArrivalEvent, body: &str) -> Result<String, SendFailure> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&target.event_bus_arn)
            .source(EVENT_SOURCE)
            .detail_type(event.event_type.as_str())
            .detail(body)
            .time(aws_smithy_types::DateTime::from_secs(event.time.timestamp()))
            .build();
        let output = self.client(&target.region).put_events().entries(entry).send().await.map_err(|error| {
            SendFailure::failed(format!("PutEvents {}: {}", target.event_bus_arn, one_line(&error)))
        })?;
        let entry = output.entries().first();
        match entry.and_then(|entry| entry.event_id()) {
            Some(id) if output.failed_entry_count() == 0 => Ok(format!("event {id}")),
            _ => Err(SendFailure::failed(format!(
                "PutEvents {} refused the entry: {}: {}",
                target.event_bus_arn,
                entry.and_then(|e| e.error_code()).unwrap_or("no error code"),
                entry.and_then(|e| e.error_message()).unwrap_or("no message")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::SecretString;

    fn target(url: &str) -> WebhookTarget {
        WebhookTarget {
            url: url.to_owned(),
            signing_secret: SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw4mJ1Bm0ZjS0="),
        }
    }

    #[tokio::test]
    async fn urls_that_are_not_https_or_reach_non_public_addresses_are_refused_before_any_connection() {
        let strict = HttpWebhooks::new(false);
        for url in [
            "https://127.0.0.1/hook",
            "https://10.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/hook",
            "https://[fd00:ec2::254]/hook",
            "https://[::ffff:169.254.169.254]/hook",
            "http://127.0.0.1:9/hook",
            "http://93.184.216.34/hook",
            "https://localhost/hook",
        ] {
            let failure = strict.send(&target(url), "evt_1", b"{}").await.unwrap_err();
            assert!(failure.refused, "{url}: {failure:?}");
            assert!(!failure.detail.contains("whsec_"), "{}", failure.detail);
        }
        // The local setting opens loopback alone, and http only to 127.0.0.1.
        let local = HttpWebhooks::new(true);
        for url in ["https://10.0.0.1/hook", "https://169.254.169.254/", "http://93.184.216.34/hook"] {
            assert!(local.send(&target(url), "evt_1", b"{}").await.unwrap_err().refused, "{url}");
        }
    }

    #[test]
    fn a_url_is_shown_without_its_query() {
        assert_eq!(shown_url("https://h.example/p?token=s3cret"), "https://h.example/p?…");
        assert_eq!(shown_url("https://h.example/p"), "https://h.example/p");
    }
}
