//! Arrival events leave the stack here (docs/design.md, "Events"): the
//! notifier sends each `notifications/…` event a deliverer created to every
//! target of its tenant — signed Standard Webhooks requests to a public
//! HTTPS endpoint, `PutEvents` to the customer's EventBridge bus — and
//! records what each target made of it under `notification-status/…`; the
//! sweeper re-drives events whose targets are due again. A failure the
//! customer can fix is also told to the tenant's contacts, by email. Nothing here
//! delivers data or changes a delivery's status, and no signing secret
//! leaves this module except as a signature.
//!
//! Layout, from the bottom up:
//! - [`signature`]: the Standard Webhooks signature (HMAC-SHA256);
//! - [`address_guard`]: which addresses a webhook may reach (no loopback, private, link-local);
//! - [`targets`]: the senders' ports and adapters (guarded HTTPS, EventBridge);
//! - [`status`]: the notification status, per-target sends and the retry schedule;
//! - [`notices`]: failure and recovery notices to the tenant's contacts, once a day at most;
//! - [`dispatch`]: one event sent to every due target, recorded;
//! - [`redrive`]: events due again, re-driven by the sweeper.

pub mod address_guard;
pub mod dispatch;
pub mod notices;
pub mod redrive;
pub mod signature;
pub mod status;
pub mod targets;

pub use dispatch::{notify_event, EventReport, NotifyDeps, NotifyError};
pub use targets::{EventBridgeBuses, EventBusSender, HttpWebhooks, SendFailure, WebhookSender};
