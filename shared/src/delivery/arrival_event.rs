//! Arrival events (docs/design.md, "Events"): once a feed's outcome for a
//! run is known, one object `notifications/<runId>/<tenantId>/<feedId>/<type>.json`
//! in staging says so — `delivery.succeeded`, `delivery.failed` (the first
//! failure of the run's delivery, saying whether a retry can help and whose
//! move it is) or `delivery.abandoned` (the sweeper's re-drives are over).
//! Each is created once (a conditional create), with an id of its own that
//! receivers de-duplicate on, and its creation starts the notifier. This
//! module is the event's shape, its keys and how it is made from a status
//! object; pure, no I/O. An event names objects, sizes and causes, never a
//! credential or an email address.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::job::DeliveryPlan;
use crate::delivery::status::{Blame, DeliveryOutcome, DeliveryStatus};
use crate::domain::RunId;
use crate::manifest::DeliveryMode;
use crate::tenant::is_safe_id;

pub const NOTIFICATIONS_PREFIX: &str = "notifications/";
pub const NOTIFICATION_STATUS_PREFIX: &str = "notification-status/";
/// The only `schemaVersion` of events this build writes and reads.
pub const ARRIVAL_EVENT_SCHEMA_VERSION: u32 = 1;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "delivery.succeeded")]
    Succeeded,
    #[serde(rename = "delivery.failed")]
    Failed,
    #[serde(rename = "delivery.abandoned")]
    Abandoned,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::Succeeded, EventType::Failed, EventType::Abandoned];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Succeeded => "delivery.succeeded",
            EventType::Failed => "delivery.failed",
            EventType::Abandoned => "delivery.abandoned",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identifiers an event's key is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKeyParts {
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
    pub event_type: EventType,
}

impl EventKeyParts {
    /// `notifications/<runId>/<tenantId>/<feedId>/<type>.json`.
    pub fn event_key(&self) -> String {
        format!("{NOTIFICATIONS_PREFIX}{}", self.relative_key())
    }

    /// `notification-status/<runId>/<tenantId>/<feedId>/<type>.json`: what
    /// each target made of the event.
    pub fn status_key(&self) -> String {
        format!("{NOTIFICATION_STATUS_PREFIX}{}", self.relative_key())
    }

    fn relative_key(&self) -> String {
        format!("{}/{}/{}/{}.json", self.run_id, self.tenant_id, self.feed_id, self.event_type)
    }
}

/// Why a key is not an event's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not an event key of the form notifications/<runId>/<tenantId>/<feedId>/<type>.json: {reason}")]
pub struct EventKeyError {
    pub key: String,
    pub reason: &'static str,
}

/// The parts of `notifications/<runId>/<tenantId>/<feedId>/<type>.json`.
pub fn parse_event_key(key: &str) -> Result<EventKeyParts, EventKeyError> {
    let error = |reason| EventKeyError { key: crate::delivery::keys::echoed_key(key), reason };
    let rest = key.strip_prefix(NOTIFICATIONS_PREFIX).ok_or_else(|| error("it is not under notifications/"))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let [run, tenant, feed, file] = segments.as_slice() else { return Err(error("it does not have four segments")) };
    let run_id = run.parse().map_err(|_| error("the run id is not YYYYMMDDHHmmss"))?;
    if !is_safe_id(tenant) || !is_safe_id(feed) {
        return Err(error("the tenant or feed id is not an id"));
    }
    let event_type = file.strip_suffix(".json").and_then(EventType::from_name).ok_or_else(|| {
        error("the file is not delivery.succeeded.json, delivery.failed.json or delivery.abandoned.json")
    })?;
    Ok(EventKeyParts { run_id, tenant_id: (*tenant).to_owned(), feed_id: (*feed).to_owned(), event_type })
}

/// Where the feed delivers, as the job named it (no credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDestination {
    /// The connector's name in the tenant secret.
    pub connector: String,
    /// Its `type` (`s3-role`, `gcs`, …).
    pub connector_type: String,
    /// Bucket, prefix and reports (`s3://acme-data/massive/ track,artist`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One object a delivery wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventObject {
    pub key: String,
    /// Rows of a report part; absent for `_manifest.json` and links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub bytes: u64,
    pub sha256: String,
}

/// `notifications/<runId>/<tenantId>/<feedId>/<type>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArrivalEvent {
    pub schema_version: u32,
    /// Unique to this event and stable: every send of it carries this id
    /// (`webhook-id`), so receivers de-duplicate.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub tenant_id: String,
    pub feed_id: String,
    pub run_id: RunId,
    /// When the outcome was recorded.
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<EventDestination>,
    /// `full` or `delta`, with `baseRunId` or `fullReason` (succeeded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeliveryMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run_id: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// Every object written, `_manifest.json` files last (succeeded only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<EventObject>,
    /// The `_manifest.json` of each report (succeeded, file connectors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_keys: Vec<String>,
    /// The cause on one line (failed and abandoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Whether we try again (failed and abandoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Whose move it is (failed and abandoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<Blame>,
    /// Attempts so far (failed and abandoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// The longest cause kept in an event.
const MAX_CAUSE_CHARS: usize = 500;

fn one_line(text: &str) -> String {
    let flat = text.replace(['\n', '\r'], " ");
    match flat.char_indices().nth(MAX_CAUSE_CHARS) {
        None => flat,
        Some((at, _)) => format!("{}…", &flat[..at]),
    }
}

/// A fresh event id, `evt_` and 32 hex digits of the random source
/// (the clock and process when the generator fails, which it does not).
pub fn new_event_id(now: DateTime<Utc>) -> String {
    let random: [u8; 16] = crate::tenant::random_bytes().unwrap_or_else(|_| {
        (u128::from(std::process::id()) << 64 | now.timestamp_nanos_opt().unwrap_or_default() as u128).to_be_bytes()
    });
    format!("evt_{}", hex::encode(random))
}

impl ArrivalEvent {
    /// The event a recorded status calls for, if any: `delivered` →
    /// succeeded; `failed` or `invalid` → failed; anything else (skipped,
    /// in progress) none.
    pub fn for_status(
        status: &DeliveryStatus,
        destination: Option<EventDestination>,
        id: String,
    ) -> Option<ArrivalEvent> {
        let event_type = match status.outcome {
            DeliveryOutcome::Delivered => EventType::Succeeded,
            DeliveryOutcome::Failed | DeliveryOutcome::Invalid => EventType::Failed,
            DeliveryOutcome::Skipped | DeliveryOutcome::InProgress => return None,
        };
        Some(ArrivalEvent::of_type(event_type, status, destination, id))
    }

    /// The sweeper's: re-drives of a failed delivery are over.
    pub fn abandoned(status: &DeliveryStatus, id: String, time: DateTime<Utc>) -> ArrivalEvent {
        let mut event = ArrivalEvent::of_type(EventType::Abandoned, status, None, id);
        event.time = time;
        event.retryable = Some(false);
        event
    }

    fn of_type(
        event_type: EventType,
        status: &DeliveryStatus,
        destination: Option<EventDestination>,
        id: String,
    ) -> ArrivalEvent {
        let mut event = ArrivalEvent {
            schema_version: ARRIVAL_EVENT_SCHEMA_VERSION,
            id,
            event_type,
            tenant_id: status.tenant_id.clone(),
            feed_id: status.feed_id.clone(),
            run_id: status.run_id,
            time: status.updated_at,
            destination: destination.map(|mut d| {
                if d.target.is_none() {
                    d.target = status.plan.as_ref().and_then(|plan| plan.target.clone());
                }
                d
            }),
            mode: None,
            base_run_id: None,
            full_reason: None,
            objects: Vec::new(),
            manifest_keys: Vec::new(),
            cause: None,
            retryable: None,
            blame: None,
            attempts: None,
        };
        if event_type == EventType::Succeeded {
            if let Some(DeliveryPlan { mode, base_run_id, full_reason, .. }) = status.plan.clone() {
                (event.mode, event.base_run_id, event.full_reason) = (Some(mode), base_run_id, full_reason);
            }
            event.objects = status
                .objects
                .iter()
                .map(|object| EventObject {
                    key: object.key.clone(),
                    rows: status
                        .delivered_parts
                        .iter()
                        .find(|part| part.origin.key == object.key)
                        .map(|part| part.rows),
                    bytes: object.bytes,
                    sha256: object.sha256.clone(),
                })
                .collect();
            event.manifest_keys = status
                .objects
                .iter()
                .filter(|object| object.key.ends_with("/_manifest.json"))
                .map(|object| object.key.clone())
                .collect();
        } else {
            event.cause = status.last_error.as_deref().map(one_line);
            event.retryable = Some(status.outcome == DeliveryOutcome::Failed);
            event.blame = Some(status.blame.unwrap_or(Blame::Provider));
            event.attempts = Some(u32::try_from(status.attempts.len()).unwrap_or(u32::MAX));
        }
        event
    }

    pub fn key_parts(&self) -> EventKeyParts {
        EventKeyParts {
            run_id: self.run_id,
            tenant_id: self.tenant_id.clone(),
            feed_id: self.feed_id.clone(),
            event_type: self.event_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::status::{AttemptResult, DeliveredObject};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn run() -> RunId {
        "20261119030000".parse().unwrap()
    }

    #[test]
    fn keys_round_trip_and_anything_else_is_refused() {
        let parts = EventKeyParts {
            run_id: run(),
            tenant_id: "acme".into(),
            feed_id: "all".into(),
            event_type: EventType::Failed,
        };
        assert_eq!(parts.event_key(), "notifications/20261119030000/acme/all/delivery.failed.json");
        assert_eq!(parts.status_key(), "notification-status/20261119030000/acme/all/delivery.failed.json");
        assert_eq!(parse_event_key(&parts.event_key()).unwrap(), parts);
        for bad in [
            "notifications/20261119030000/acme/all/delivery.retried.json",
            "notifications/2026/acme/all/delivery.failed.json",
            "notifications/20261119030000/Acme/all/delivery.failed.json",
            "notifications/20261119030000/acme/delivery.failed.json",
            "status/20261119030000/acme/all.json",
        ] {
            assert!(parse_event_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_delivered_status_makes_a_succeeded_event_with_objects_rows_and_manifests() {
        let mut status = DeliveryStatus::first_record(
            run(),
            "acme",
            "all",
            at("2026-11-19T03:20:00Z"),
            at("2026-11-19T03:21:00Z"),
            AttemptResult::Delivered(vec![
                DeliveredObject::new("s3://b/p/track_popularity/20261119030000/part-001.json".into(), 10, "aa".into()),
                DeliveredObject::new("s3://b/p/track_popularity/20261119030000/_manifest.json".into(), 5, "bb".into()),
            ]),
        );
        status.plan = Some(DeliveryPlan::full());
        let destination = EventDestination { connector: "lake".into(), connector_type: "s3-role".into(), target: None };
        let event = ArrivalEvent::for_status(&status, Some(destination), "evt_1".into()).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "delivery.succeeded");
        assert_eq!(json["mode"], "full");
        assert_eq!(json["manifestKeys"][0], "s3://b/p/track_popularity/20261119030000/_manifest.json");
        assert_eq!(json["objects"].as_array().unwrap().len(), 2);
        assert!(json.get("cause").is_none() && json.get("blame").is_none(), "{json}");
        let back: ArrivalEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_failed_status_makes_a_failed_event_saying_whether_a_retry_helps_and_whose_move_it_is() {
        let mut status = DeliveryStatus::first_record(
            run(),
            "acme",
            "all",
            at("2026-11-19T03:20:00Z"),
            at("2026-11-19T03:21:00Z"),
            AttemptResult::Failed("AccessDenied: not authorized\nto assume the role".into()),
        );
        status.blame = Some(Blame::Customer);
        let event = ArrivalEvent::for_status(&status, None, "evt_2".into()).unwrap();
        assert_eq!(event.event_type, EventType::Failed);
        assert_eq!(event.cause.as_deref(), Some("AccessDenied: not authorized to assume the role"));
        assert_eq!((event.retryable, event.blame, event.attempts), (Some(true), Some(Blame::Customer), Some(1)));
        let abandoned = ArrivalEvent::abandoned(&status, "evt_3".into(), at("2026-11-20T04:00:00Z"));
        assert_eq!((abandoned.event_type, abandoned.retryable), (EventType::Abandoned, Some(false)));
        let skipped = DeliveryStatus::first_record(
            run(),
            "acme",
            "all",
            at("2026-11-19T03:20:00Z"),
            at("2026-11-19T03:21:00Z"),
            AttemptResult::Skipped("disabled".into()),
        );
        assert_eq!(ArrivalEvent::for_status(&skipped, None, "evt_4".into()), None);
    }

    #[test]
    fn event_ids_are_unique() {
        let now = at("2026-11-19T03:20:00Z");
        let ids: std::collections::BTreeSet<String> = (0..100).map(|_| new_event_id(now)).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|id| id.len() == 36 && id.starts_with("evt_")));
    }
}
