//! Re-driving arrival events (docs/design.md, "Events"), for the sweeper:
//! an event whose notification status says a target is due again on the
//! retry schedule — or that has no status at all some minutes after it was
//! created (its S3 event was lost, or every invocation failed) — is
//! re-driven by re-writing its object with the very bytes it holds, which
//! starts the notifier again. It never sends anything itself, and never
//! re-drives an event whose targets all accepted, were paused or refused.

use chrono::{DateTime, Duration, Utc};
use tracing::{info, warn};

use super::status::NotificationStatus;
use crate::delivery::arrival_event::{parse_event_key, ArrivalEvent, EventKeyParts, NOTIFICATIONS_PREFIX};
use crate::domain::RunId;
use crate::store::{ObjectStore, StoreError};

/// An event without a notification status this long after its `time` is
/// re-driven: the notifier normally records one within seconds, and
/// Lambda's own retries are over within minutes.
pub const EVENT_SETTLE_MINUTES: i64 = 15;

/// What one sweep did to the events of one run.
#[derive(Debug, Default)]
pub struct EventSweep {
    pub events: u64,
    pub redriven: u64,
    pub errors: Vec<EventRedriveError>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not {action} {location} (the next sweep tries again): {source}")]
pub struct EventRedriveError {
    pub action: &'static str,
    pub location: String,
    #[source]
    pub source: StoreError,
}

/// Looks at every event of `run` and re-drives those due.
pub async fn redrive_events<S: ObjectStore>(staging: &S, run: RunId, now: DateTime<Utc>) -> EventSweep {
    let mut sweep = EventSweep::default();
    let prefix = format!("{NOTIFICATIONS_PREFIX}{run}/");
    let listed = match staging.list(&prefix).await {
        Ok(listed) => listed,
        Err(source) => {
            sweep.errors.push(EventRedriveError { action: "list", location: staging.describe(&prefix), source });
            return sweep;
        }
    };
    for entry in listed {
        let parts = match parse_event_key(&entry.key) {
            Ok(parts) => parts,
            Err(error) => {
                warn!(%error, "not an event key; left alone");
                continue;
            }
        };
        sweep.events += 1;
        match redrive_event(staging, &parts, now).await {
            Ok(true) => sweep.redriven += 1,
            Ok(false) => {}
            Err(error) => sweep.errors.push(error),
        }
    }
    sweep
}

/// `true` when the event was re-driven.
async fn redrive_event<S: ObjectStore>(
    staging: &S,
    parts: &EventKeyParts,
    now: DateTime<Utc>,
) -> Result<bool, EventRedriveError> {
    let event_key = parts.event_key();
    let status_key = parts.status_key();
    let failed = |action, key: &str, source| EventRedriveError { action, location: staging.describe(key), source };
    // `None`: no status yet; `Some(due)`: whether a target is due.
    let due = match staging.get(&status_key).await {
        Ok(body) => Some(match serde_json::from_slice::<NotificationStatus>(&body) {
            Ok(status) => status.next_due().is_some_and(|due| due <= now),
            // The notifier replaces a damaged status.
            Err(_) => true,
        }),
        Err(StoreError::NotFound { .. }) => None,
        Err(source) => return Err(failed("read", &status_key, source)),
    };
    if due == Some(false) {
        return Ok(false);
    }
    let body = match staging.get(&event_key).await {
        Ok(body) => body,
        Err(StoreError::NotFound { .. }) => return Ok(false),
        Err(source) => return Err(failed("read", &event_key, source)),
    };
    if due.is_none() {
        let created = serde_json::from_slice::<ArrivalEvent>(&body).map_or(now, |event| event.time);
        if now - created < Duration::minutes(EVENT_SETTLE_MINUTES) {
            return Ok(false);
        }
    }
    staging.put(&event_key, body, "application/json").await.map_err(|source| failed("re-write", &event_key, source))?;
    info!(%event_key, "event re-driven: its object was re-written");
    Ok(true)
}
