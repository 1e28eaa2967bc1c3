//! The notification status `notification-status/<runId>/<tenantId>/<feedId>/<type>.json`
//! (docs/design.md, "Events"): what each target of the tenant made of one
//! event — every send with its time and result — and the retry schedule
//! that decides when a target that did not accept is due again: growing
//! delays over more than a day, after which the target is paused for this
//! event and the operator's alarm fires. A target that accepted is never
//! due again. Pure types and rules, no I/O; the dispatcher reads and writes
//! the object with conditional writes.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::targets::shown_url;
use crate::delivery::arrival_event::{ArrivalEvent, EventType};
use crate::domain::RunId;
use crate::tenant::NotificationTarget;

/// The only `schemaVersion` of notification statuses this build writes and reads.
pub const NOTIFICATION_STATUS_SCHEMA_VERSION: u32 = 1;

/// Minutes from a failed send to the next, by the number of sends so far:
/// the second send 5 minutes after the first, … the eighth 12 hours after
/// the seventh — 27 h 35 min in all. The sweeper re-drives due events on
/// its schedule (hourly), so later sends wait for the next sweep.
pub const RETRY_DELAYS_MINUTES: [i64; 7] = [5, 30, 60, 120, 240, 480, 720];
/// Sends to one target after which a target that never accepted is paused.
pub const MAX_SENDS: usize = RETRY_DELAYS_MINUTES.len() + 1;

/// Where one target stands with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    /// Not accepted yet; due again on the schedule.
    Pending,
    /// Answered 2xx (or PutEvents took it): never sent again.
    Accepted,
    /// Refused [`MAX_SENDS`] times: no more sends; the operator's alarm fires.
    Paused,
    /// Can never be sent as it is (not https, not a public address).
    Refused,
    /// No longer among the tenant's targets.
    Removed,
}

/// One send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendAttempt {
    pub at: DateTime<Utc>,
    pub accepted: bool,
    /// `HTTP 204`, `HTTP 500`, `event <id>`, or why it failed; one line.
    pub detail: String,
}

/// One target's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    /// Stable for the target's type and address (its full URL or bus ARN).
    pub target_id: String,
    #[serde(rename = "type")]
    pub target_type: String,
    /// The URL without its query, or the bus ARN. Never the signing secret.
    pub address: String,
    pub state: TargetState,
    pub attempts: Vec<SendAttempt>,
}

impl TargetRecord {
    pub fn new(target: &NotificationTarget) -> Self {
        TargetRecord {
            target_id: target_id(target),
            target_type: target.type_name().to_owned(),
            address: match target {
                NotificationTarget::Webhook(webhook) => shown_url(&webhook.url),
                NotificationTarget::EventBridge(bus) => bus.event_bus_arn.clone(),
            },
            state: TargetState::Pending,
            attempts: Vec::new(),
        }
    }

    /// When this target is due a send: at once if never sent, after the
    /// schedule's delay if its last send failed, never otherwise.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        if self.state != TargetState::Pending {
            return None;
        }
        match self.attempts.last() {
            None => Some(DateTime::<Utc>::MIN_UTC),
            Some(last) => {
                let delay = RETRY_DELAYS_MINUTES.get(self.attempts.len() - 1).copied().unwrap_or(0);
                Some(last.at + Duration::minutes(delay))
            }
        }
    }

    /// Adds a send and moves the state: accepted, refused, paused after the last allowed send, or still pending.
    pub fn record(&mut self, attempt: SendAttempt, refused: bool) {
        let accepted = attempt.accepted;
        self.attempts.push(attempt);
        self.state = if accepted {
            TargetState::Accepted
        } else if refused {
            TargetState::Refused
        } else if self.attempts.len() >= MAX_SENDS {
            TargetState::Paused
        } else {
            TargetState::Pending
        };
    }
}

/// `<type>:` and 16 hex digits of the SHA-256 of the full address, so a
/// changed URL (query included) is a new target, and the query is not shown.
pub fn target_id(target: &NotificationTarget) -> String {
    let digest = Sha256::digest(format!("{}\n{}", target.type_name(), target.address()).as_bytes());
    format!("{}:{}", target.type_name(), &hex::encode(digest)[..16])
}

/// `notification-status/<runId>/<tenantId>/<feedId>/<type>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    pub schema_version: u32,
    pub event_id: String,
    pub event_type: EventType,
    pub run_id: RunId,
    pub tenant_id: String,
    pub feed_id: String,
    pub targets: Vec<TargetRecord>,
    /// Why nothing is sent at all (the tenant is gone, disabled or invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The failure notice or recovery notice sent to the tenant's contacts
    /// for this event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<NoticeRecord>,
    pub updated_at: DateTime<Utc>,
}

/// A notice to the tenant's contacts (failure notices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeRecord {
    /// `failure` or `recovery`; `none` when this event called for no notice.
    pub kind: String,
    pub at: DateTime<Utc>,
    /// Sent, or why not (already sent today, no contacts, not the customer's to fix).
    pub detail: String,
    pub sent: bool,
}

impl NotificationStatus {
    pub fn new(event: &ArrivalEvent, now: DateTime<Utc>) -> Self {
        NotificationStatus {
            schema_version: NOTIFICATION_STATUS_SCHEMA_VERSION,
            event_id: event.id.clone(),
            event_type: event.event_type,
            run_id: event.run_id,
            tenant_id: event.tenant_id.clone(),
            feed_id: event.feed_id.clone(),
            targets: Vec::new(),
            skipped: None,
            notice: None,
            updated_at: now,
        }
    }

    /// The records of the tenant's current targets, in their order, new ones
    /// pending; records of targets the tenant no longer has that were still
    /// pending become `removed`.
    pub fn reconcile(&mut self, targets: &[NotificationTarget]) {
        for target in targets {
            let id = target_id(target);
            if !self.targets.iter().any(|record| record.target_id == id) {
                self.targets.push(TargetRecord::new(target));
            }
        }
        for record in &mut self.targets {
            let current = targets.iter().any(|target| target_id(target) == record.target_id);
            if !current && record.state == TargetState::Pending {
                record.state = TargetState::Removed;
            }
        }
    }

    /// The earliest moment a target is due a send; `None` when none ever will be.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.targets.iter().filter_map(TargetRecord::due_at).min()
    }

    /// Adds what another invocation recorded meanwhile (read back after a
    /// conditional write failed) to this one's sends: the sends of both,
    /// in time order, and the state they come to.
    pub fn merge_from(&mut self, stored: &NotificationStatus) {
        for theirs in &stored.targets {
            match self.targets.iter_mut().find(|ours| ours.target_id == theirs.target_id) {
                None => self.targets.push(theirs.clone()),
                Some(ours) => {
                    let mut attempts = theirs.attempts.clone();
                    for attempt in &ours.attempts {
                        if !attempts.contains(attempt) {
                            attempts.push(attempt.clone());
                        }
                    }
                    attempts.sort_by_key(|attempt| attempt.at);
                    let refused = ours.state == TargetState::Refused || theirs.state == TargetState::Refused;
                    let removed = ours.state == TargetState::Removed;
                    ours.attempts.clear();
                    ours.state = TargetState::Pending;
                    for attempt in attempts {
                        ours.record(attempt, false);
                        if ours.state == TargetState::Accepted {
                            break;
                        }
                    }
                    if ours.state == TargetState::Pending && refused {
                        ours.state = TargetState::Refused;
                    } else if ours.state == TargetState::Pending && removed {
                        ours.state = TargetState::Removed;
                    }
                }
            }
        }
        if self.notice.is_none() {
            self.notice.clone_from(&stored.notice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{EventBridgeTarget, SecretString, WebhookTarget};

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-11-19T03:30:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
    }

    fn webhook(url: &str) -> NotificationTarget {
        NotificationTarget::Webhook(WebhookTarget {
            url: url.into(),
            signing_secret: SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        })
    }

    fn failed(minutes: i64) -> SendAttempt {
        SendAttempt { at: at(minutes), accepted: false, detail: "HTTP 500".into() }
    }

    #[test]
    fn a_failing_target_is_due_on_growing_delays_over_a_day_then_paused() {
        let mut record = TargetRecord::new(&webhook("https://h.example/hook?token=x"));
        assert_eq!(record.address, "https://h.example/hook?…");
        assert_eq!(record.due_at(), Some(DateTime::<Utc>::MIN_UTC), "never sent: due at once");
        let mut now = 0;
        let mut gaps = Vec::new();
        while record.state == TargetState::Pending {
            record.record(failed(now), false);
            if let Some(due) = record.due_at() {
                let gap = (due - at(now)).num_minutes();
                gaps.push(gap);
                now += gap;
            }
        }
        assert_eq!(gaps, RETRY_DELAYS_MINUTES);
        assert_eq!((record.state, record.attempts.len()), (TargetState::Paused, MAX_SENDS));
        assert!(gaps.iter().sum::<i64>() >= 24 * 60, "retries span at least a day");
        assert_eq!(record.due_at(), None);
    }

    #[test]
    fn an_accepting_target_is_never_due_again_and_a_refused_one_neither() {
        let mut record = TargetRecord::new(&webhook("https://h.example/hook"));
        record.record(failed(0), false);
        record.record(SendAttempt { at: at(6), accepted: true, detail: "HTTP 204".into() }, false);
        assert_eq!((record.state, record.due_at()), (TargetState::Accepted, None));
        let mut refused = TargetRecord::new(&webhook("http://h.example/hook"));
        refused.record(SendAttempt { at: at(0), accepted: false, detail: "not https".into() }, true);
        assert_eq!((refused.state, refused.due_at()), (TargetState::Refused, None));
    }

    #[test]
    fn targets_follow_the_tenant_and_concurrent_sends_merge() {
        let event: ArrivalEvent = serde_json::from_value(serde_json::json!({"schemaVersion": 1, "id": "evt_1",
            "type": "delivery.succeeded", "tenantId": "acme", "feedId": "all", "runId": "20261119030000",
            "time": "2026-11-19T03:21:00Z"}))
        .unwrap();
        let bus = NotificationTarget::EventBridge(EventBridgeTarget {
            event_bus_arn: "arn:aws:events:eu-west-1:111122223333:event-bus/b".into(),
            region: "eu-west-1".into(),
        });
        let mut status = NotificationStatus::new(&event, at(0));
        status.reconcile(&[webhook("https://h.example/a"), bus.clone()]);
        assert_eq!(status.targets.len(), 2);
        status.reconcile(&[bus]);
        assert_eq!(status.targets[0].state, TargetState::Removed);
        assert_eq!(status.next_due(), Some(DateTime::<Utc>::MIN_UTC));

        let mut ours = status.clone();
        ours.targets[1].record(failed(0), false);
        let mut theirs = status.clone();
        theirs.targets[1].record(SendAttempt { at: at(1), accepted: true, detail: "event x".into() }, false);
        ours.merge_from(&theirs);
        assert_eq!((ours.targets[1].state, ours.targets[1].attempts.len()), (TargetState::Accepted, 2));
        assert_eq!(ours.next_due(), None);
        let json = serde_json::to_string(&ours).unwrap();
        assert!(!json.contains("whsec_"), "{json}");
    }
}
