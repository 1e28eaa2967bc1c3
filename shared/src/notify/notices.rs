//! Failure notices to a tenant's `contacts` (docs/design.md, "Events"):
//! when a feed's delivery fails in a way the customer can fix (the event's
//! `blame` is `customer`), its contacts get one email with the cause and
//! the fix in plain words, the feed, and when we try again — at most one
//! per feed per day (UTC) — and, once the feed is delivered again, one
//! "delivering again" email. A failure that is ours sends nothing. The
//! per-feed state `notices/<tenantId>/<feedId>.json` is claimed with a
//! conditional write before the mail goes out, so two events racing for the
//! same day send one notice; a send that fails puts the state back and
//! fails the invocation, which is retried. Mail goes through the same SES
//! path as email delivery ([`MailSender`], with its configuration set).
//! Addresses are never logged.

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::status::NoticeRecord;
use crate::delivery::arrival_event::{ArrivalEvent, EventType};
use crate::delivery::connectors::email::message::html_escape;
use crate::delivery::connectors::email::{EmailMessage, MailError, MailSender};
use crate::delivery::status::Blame;
use crate::store::{ConditionalPut, ObjectStore, ObjectVersion, StoreError, WriteCondition};

pub const NOTICES_PREFIX: &str = "notices/";

/// `notices/<tenantId>/<feedId>.json`.
pub fn notice_state_key(tenant_id: &str, feed_id: &str) -> String {
    format!("{NOTICES_PREFIX}{tenant_id}/{feed_id}.json")
}

/// What the contacts of one feed were last told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeState {
    /// A failure notice was sent and no recovery notice since.
    pub failing: bool,
    /// The UTC day of the last failure notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notice_on: Option<NaiveDate>,
    pub updated_at: DateTime<Utc>,
}

/// Why a notice could not be handled; the invocation is retried.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("could not read or write the notice state {location}: {source}")]
    State {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("the notice state {location} changed while this invocation claimed it; it will be retried")]
    Contended { location: String },
    #[error("the {kind} notice could not be sent (it will be retried): {source}")]
    Send {
        kind: &'static str,
        #[source]
        source: MailError,
    },
}

/// Which notice an event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Failure,
    Recovery,
}

impl Notice {
    fn name(self) -> &'static str {
        match self {
            Notice::Failure => "failure",
            Notice::Recovery => "recovery",
        }
    }
}

/// Sends the notice `event` calls for, if any, and says what was done.
pub async fn handle_notice<S: ObjectStore, M: MailSender>(
    staging: &S,
    mailer: &M,
    sender: &str,
    contacts: &[String],
    event: &ArrivalEvent,
    now: DateTime<Utc>,
) -> Result<NoticeRecord, NoticeError> {
    let record = |kind: &str, sent: bool, detail: &str| NoticeRecord {
        kind: kind.to_owned(),
        at: now,
        detail: detail.to_owned(),
        sent,
    };
    let customers = event.blame == Some(Blame::Customer);
    let wanted = match event.event_type {
        EventType::Failed | EventType::Abandoned if customers => Notice::Failure,
        EventType::Failed | EventType::Abandoned => {
            return Ok(record("none", false, "not the customer's to fix: no notice"))
        }
        EventType::Succeeded => Notice::Recovery,
    };
    if contacts.is_empty() && wanted == Notice::Failure {
        return Ok(record("none", false, "the tenant has no contacts"));
    }
    let key = notice_state_key(&event.tenant_id, &event.feed_id);
    let location = staging.describe(&key);
    let state_error = |source| NoticeError::State { location: location.clone(), source };
    let (previous, version) = match staging.get_versioned(&key).await {
        Ok(object) => (serde_json::from_slice::<NoticeState>(&object.body).ok(), Some(object.version)),
        Err(StoreError::NotFound { .. }) => (None, None),
        Err(source) => return Err(state_error(source)),
    };
    let today = now.date_naive();
    let next = match wanted {
        Notice::Failure if previous.as_ref().and_then(|state| state.last_notice_on) == Some(today) => {
            return Ok(record("none", false, "a failure notice for this feed was already sent today"));
        }
        Notice::Failure => NoticeState { failing: true, last_notice_on: Some(today), updated_at: now },
        Notice::Recovery => match &previous {
            Some(state) if state.failing => NoticeState { failing: false, updated_at: now, ..state.clone() },
            _ => return Ok(record("none", false, "no failure notice is outstanding")),
        },
    };
    if contacts.is_empty() {
        // A recovery with nobody left to tell: the state is closed all the same.
        write_state(staging, &key, &next, version.as_ref()).await.map_err(state_error)?;
        return Ok(record("none", false, "the tenant has no contacts"));
    }
    let Some(written) = write_state(staging, &key, &next, version.as_ref()).await.map_err(state_error)? else {
        return Err(NoticeError::Contended { location });
    };
    let message = match wanted {
        Notice::Failure => failure_message(sender, contacts, event),
        Notice::Recovery => recovery_message(sender, contacts, event),
    };
    match mailer.send(&message).await {
        Ok(message_id) => {
            info!(kind = wanted.name(), contacts = contacts.len(), %message_id, "notice sent");
            Ok(record(wanted.name(), true, &format!("sent to {} contacts", contacts.len())))
        }
        Err(source) => {
            // Put the state back so the retry sends it; if that fails too,
            // the day's notice is lost, which is better than two.
            if let Some(previous) = &previous {
                let _ = write_state(staging, &key, previous, Some(&written)).await;
            } else {
                let closed = NoticeState { failing: false, last_notice_on: None, updated_at: now };
                let _ = write_state(staging, &key, &closed, Some(&written)).await;
            }
            Err(NoticeError::Send { kind: wanted.name(), source })
        }
    }
}

/// `None` when the state changed since it was read.
async fn write_state<S: ObjectStore>(
    staging: &S,
    key: &str,
    state: &NoticeState,
    version: Option<&ObjectVersion>,
) -> Result<Option<ObjectVersion>, StoreError> {
    let condition = match version {
        Some(version) => WriteCondition::Unchanged(version),
        None => WriteCondition::Absent,
    };
    let body = Bytes::from(serde_json::to_vec_pretty(state).expect("notice states serialise"));
    match staging.put_conditional(key, body, "application/json", condition).await? {
        ConditionalPut::Written(version) => Ok(Some(version)),
        ConditionalPut::ConditionFailed => Ok(None),
    }
}

/// What happened and what to do, in plain words, from the one-line cause.
pub fn explain(cause: &str) -> (&'static str, String) {
    let has = |needle: &str| cause.contains(needle);
    if has("AssumeRole") || has("loading credentials") || has("load credentials") {
        (
            "we could not assume the IAM role you gave us",
            "check that the role still exists and that its trust policy still trusts our delivery principal with \
             the external id we gave you"
                .to_owned(),
        )
    } else if has("NoSuchBucket") {
        ("the destination bucket does not exist", "create the bucket again, or tell us which bucket to use".to_owned())
    } else if has("InvalidAccessKeyId") || has("SignatureDoesNotMatch") || has("InvalidClientTokenId") {
        (
            "the access keys you gave us were refused (deleted, deactivated or rotated)",
            "create a new access key for the delivery user and send it to us".to_owned(),
        )
    } else if has("PermanentRedirect") || has("AuthorizationHeaderMalformed") {
        ("the bucket is in another region than the one you gave us", "tell us the bucket's region".to_owned())
    } else if has("is not shared with") {
        let address = cause.split("is not shared with ").nth(1).and_then(|rest| rest.split(' ').next());
        (
            "the spreadsheet is no longer shared with us",
            format!("share it as Editor with {}", address.unwrap_or("the address we gave you")),
        )
    } else if has("spreadsheet") && has("was not found") {
        ("the spreadsheet was deleted, or its URL changed", "tell us the spreadsheet's current URL".to_owned())
    } else if has("GCS") {
        (
            "your Cloud Storage bucket refused our upload",
            "check that the bucket exists and that the service account holds Storage Object Creator on it".to_owned(),
        )
    } else if has("AccessDenied") {
        (
            "your bucket refused our write",
            "check that the role's or user's policy, and the bucket policy, still allow s3:PutObject on the \
             destination prefix"
                .to_owned(),
        )
    } else {
        (
            "the destination refused our delivery",
            "check its permissions; the error below says what it refused".to_owned(),
        )
    }
}

fn destination_text(event: &ArrivalEvent) -> String {
    match &event.destination {
        Some(destination) => match &destination.target {
            Some(target) => format!("connector \"{}\" ({})", destination.connector, target),
            None => format!("connector \"{}\" ({})", destination.connector, destination.connector_type),
        },
        None => "your destination".to_owned(),
    }
}

fn failure_message(sender: &str, contacts: &[String], event: &ArrivalEvent) -> EmailMessage {
    let cause = event.cause.as_deref().unwrap_or("no detail was recorded");
    let (what, fix) = explain(cause);
    let retry = match event.event_type {
        EventType::Abandoned => "We have stopped retrying this run. Once this is fixed, the next run is delivered \
                                 as usual; ask us if you need this run sent again."
            .to_owned(),
        _ => "We will try again within the hour, and then at growing intervals for about a day.".to_owned(),
    };
    let subject = format!("Action needed: popularity reports feed \"{}\" could not be delivered", event.feed_id);
    let text = format!(
        "Hello,\n\nWe could not deliver run {run} of your popularity reports feed \"{feed}\" to {destination}.\n\n\
         What happened: {what}.\nWhat to do: {fix}.\n\n{retry}\n\nThe error, as your destination gave it:\n{cause}\n\n\
         You receive at most one such notice a day for this feed, and one more once it is delivered again.\n",
        run = event.run_id,
        feed = event.feed_id,
        destination = destination_text(event),
    );
    EmailMessage { from: sender.to_owned(), to: contacts.to_vec(), subject, html: html_of(&text), text }
}

fn recovery_message(sender: &str, contacts: &[String], event: &ArrivalEvent) -> EmailMessage {
    let subject = format!("Delivering again: popularity reports feed \"{}\"", event.feed_id);
    let text = format!(
        "Hello,\n\nYour popularity reports feed \"{feed}\" is delivering again: run {run} was delivered to \
         {destination} at {time}.\n\nThank you for fixing it.\n",
        feed = event.feed_id,
        run = event.run_id,
        destination = destination_text(event),
        time = event.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    EmailMessage { from: sender.to_owned(), to: contacts.to_vec(), subject, html: html_of(&text), text }
}

fn html_of(text: &str) -> String {
    let paragraphs: Vec<String> =
        text.split("\n\n").map(|p| format!("<p>{}</p>", html_escape(p.trim()).replace('\n', "<br>"))).collect();
    format!("<html><body>{}</body></html>", paragraphs.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_explained_in_plain_words_with_a_fix() {
        let cases = [
            (
                "dispatch failure: an error occurred while loading credentials: AccessDenied: sts:AssumeRole",
                "assume the IAM role",
            ),
            ("S3 PutObject s3://b/k failed: NoSuchBucket: gone", "does not exist"),
            ("S3 PutObject s3://b/k failed: InvalidAccessKeyId: x", "access keys"),
            (
                "spreadsheet 1x is not shared with feeds@ours.iam.gserviceaccount.com as Editor (share it)",
                "no longer shared",
            ),
            ("S3 PutObject s3://b/k failed: AccessDenied: Access Denied (HTTP 403)", "refused our write"),
            ("something new", "refused our delivery"),
        ];
        for (cause, fragment) in cases {
            let (what, fix) = explain(cause);
            assert!(what.contains(fragment), "{cause}: {what}");
            assert!(!fix.is_empty());
        }
        assert!(explain(cases[3].0).1.contains("feeds@ours.iam.gserviceaccount.com"));
    }
}
