//! Parsing a tenant's arrival-event targets (`notifications`) and failure
//! contacts (`contacts`), docs/design.md, "Events": each target by its
//! `type`, every field checked for its form with errors naming the field's
//! path, the signing secret wrapped in [`SecretString`] as soon as it is
//! read. A signing secret's value never appears in a message: only what is
//! wrong with its form. Whether a webhook's host is a public address is not
//! decided here (names resolve differently over time): the notifier checks
//! the address it connects to.

use std::collections::BTreeSet;

use serde_json::Value;

use super::errors::Problems;
use super::formats::{
    check_webhook_url, event_bus_region, is_email_address, webhook_signing_key, WebhookUrlProblem,
    MAX_WEBHOOK_URL_BYTES, WEBHOOK_SECRET_BYTES_RANGE, WEBHOOK_SECRET_PREFIX,
};
use super::json::{child_path, expect_array, expect_object, expect_str, Fields};
use super::limits::{MAX_CONTACTS, MAX_NOTIFICATION_TARGETS};
use super::model::{EventBridgeTarget, NotificationTarget, SecretString, WebhookTarget};

const TYPES: &str = "webhook, eventbridge";
const WEBHOOK_FIELDS: &[&str] = &["type", "url", "signingSecret"];
const EVENTBRIDGE_FIELDS: &[&str] = &["type", "eventBusArn"];

/// The `notifications` array: absent is none. `None` when any target is wrong.
pub(super) fn parse_notifications(problems: &mut Problems, value: Option<&Value>) -> Option<Vec<NotificationTarget>> {
    let path = "notifications";
    let Some(value) = value else { return Some(Vec::new()) };
    let items = expect_array(problems, path, value)?;
    let before = problems.0.len();
    if items.len() > MAX_NOTIFICATION_TARGETS {
        problems.add(path, format!("{} targets exceed the limit of {MAX_NOTIFICATION_TARGETS}", items.len()));
    }
    let mut seen = BTreeSet::new();
    let mut targets = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(target) = parse_target(problems, &item_path, item) else { continue };
        if !seen.insert(target.address().to_owned()) {
            problems.add(&item_path, format!("duplicate target {:?}", target.address()));
            continue;
        }
        targets.push(target);
    }
    (problems.0.len() == before).then_some(targets)
}

fn parse_target(problems: &mut Problems, path: &str, value: &Value) -> Option<NotificationTarget> {
    let map = expect_object(problems, path, value)?;
    let fields = Fields { map, path };
    let before = problems.0.len();
    let kind = fields.required_str(problems, "type", &format!("required (one of {TYPES})"), false)?;
    let target = match kind {
        "webhook" => {
            fields.reject_unknown(problems, WEBHOOK_FIELDS, |_| None);
            parse_webhook(problems, &fields).map(NotificationTarget::Webhook)
        }
        "eventbridge" => {
            fields.reject_unknown(problems, EVENTBRIDGE_FIELDS, |_| None);
            parse_event_bus(problems, &fields).map(NotificationTarget::EventBridge)
        }
        other => {
            problems.add(&child_path(path, "type"), format!("{other:?} is not one of {TYPES}"));
            None
        }
    };
    (problems.0.len() == before).then_some(target).flatten()
}

fn parse_webhook(problems: &mut Problems, fields: &Fields<'_>) -> Option<WebhookTarget> {
    let url_path = child_path(fields.path, "url");
    let url = fields.required_str(problems, "url", "required for webhook (an https:// URL)", false).and_then(|url| {
        let why = match check_webhook_url(url) {
            Ok(()) => return Some(url.to_owned()),
            Err(WebhookUrlProblem::NotAUrl) => "is not a URL".to_owned(),
            Err(WebhookUrlProblem::NotHttps) => "must be an https:// URL".to_owned(),
            Err(WebhookUrlProblem::Credentials) => "must not carry a user name or password".to_owned(),
            Err(WebhookUrlProblem::Fragment) => "must not have a #fragment".to_owned(),
            Err(WebhookUrlProblem::TooLong) => format!("is longer than {MAX_WEBHOOK_URL_BYTES} bytes"),
        };
        // A URL may carry a token in its query or a password: only its
        // start is echoed, and nothing of one with user info.
        let shown: String = url.chars().take(60).collect();
        let shown = if url.contains('@') {
            "the URL".to_owned()
        } else {
            format!("{shown:?}{}", if shown.len() < url.len() { "…" } else { "" })
        };
        problems.add(&url_path, format!("{shown} {why}"));
        None
    });
    let secret_path = child_path(fields.path, "signingSecret");
    let secret = fields
        .required_str(
            problems,
            "signingSecret",
            "required for webhook (generate one with `popularity tenant webhook-secret`)",
            true,
        )
        .and_then(|secret| {
            if webhook_signing_key(secret).is_some() {
                return Some(SecretString::new(secret));
            }
            let (min, max) = (WEBHOOK_SECRET_BYTES_RANGE.start(), WEBHOOK_SECRET_BYTES_RANGE.end());
            let why = if secret.starts_with(WEBHOOK_SECRET_PREFIX) {
                format!("is not {WEBHOOK_SECRET_PREFIX} followed by the base64 of {min} to {max} bytes")
            } else {
                format!("does not start with {WEBHOOK_SECRET_PREFIX}")
            };
            problems.add(
                &secret_path,
                format!("the value (not shown) {why}; generate one with `popularity tenant webhook-secret`"),
            );
            None
        });
    Some(WebhookTarget { url: url?, signing_secret: secret? })
}

fn parse_event_bus(problems: &mut Problems, fields: &Fields<'_>) -> Option<EventBridgeTarget> {
    let path = child_path(fields.path, "eventBusArn");
    let arn = fields.required_str(
        problems,
        "eventBusArn",
        "required for eventbridge (arn:aws:events:<region>:<account>:event-bus/<name>)",
        false,
    )?;
    match event_bus_region(arn) {
        Some(region) => Some(EventBridgeTarget { event_bus_arn: arn.to_owned(), region: region.to_owned() }),
        None => {
            problems.add(
                &path,
                format!(
                    "{arn:?} is not an event bus ARN (arn:aws:events:<region>:<12-digit account>:event-bus/<name>)"
                ),
            );
            None
        }
    }
}

/// The `contacts` array of email addresses: absent is none.
pub(super) fn parse_contacts(problems: &mut Problems, value: Option<&Value>) -> Option<Vec<String>> {
    let path = "contacts";
    let Some(value) = value else { return Some(Vec::new()) };
    let items = expect_array(problems, path, value)?;
    let before = problems.0.len();
    if items.len() > MAX_CONTACTS {
        problems.add(path, format!("{} contacts exceed the limit of {MAX_CONTACTS}", items.len()));
    }
    let mut contacts: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(address) = expect_str(problems, &item_path, item, false) else { continue };
        if !is_email_address(address) {
            problems.add(&item_path, format!("{address:?} is not an email address"));
        } else if contacts.iter().any(|c| c.eq_ignore_ascii_case(address)) {
            problems.add(&item_path, format!("duplicate contact {address:?}"));
        } else {
            contacts.push(address.to_owned());
        }
    }
    (problems.0.len() == before).then_some(contacts)
}
