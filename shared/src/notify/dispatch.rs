//! Sending one arrival event to every target of its tenant (docs/design.md,
//! "Events"): read the event and its notification status, re-read the
//! tenant secret (events hold no credentials), send to each target that is
//! due — never to one that accepted — and record every send in the status
//! with a conditional write. Two invocations of one event (an S3 event
//! delivered twice, a re-drive) may both send to a target that has not yet
//! accepted, which at-least-once delivery allows; the second write then
//! finds the status changed, reads it back and merges, so no send is lost
//! from the record. A target that did not accept is left for the sweeper,
//! which re-drives the event on the retry schedule; the invocation itself
//! succeeds, so Lambda's quick retries do not use up the schedule. Before
//! any target, the event's failure or recovery notice to the tenant's
//! contacts is handled once ([`super::notices`]); a notice that cannot be
//! sent fails the invocation before any target is sent to.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, instrument, warn};

use super::notices::{handle_notice, NoticeError};
use super::status::{NotificationStatus, SendAttempt, TargetState, NOTIFICATION_STATUS_SCHEMA_VERSION};
use super::targets::{EventBusSender, SendFailure, WebhookSender};
use crate::delivery::arrival_event::{ArrivalEvent, EventKeyParts, ARRIVAL_EVENT_SCHEMA_VERSION};
use crate::delivery::connectors::email::MailSender;
use crate::metrics::emit_metrics;
use crate::store::{ConditionalPut, ObjectStore, ObjectVersion, StoreError, WriteCondition, CONTROL_OBJECT_MAX_BYTES};
use crate::tenant::directory::{DirectoryError, TenantDirectory};
use crate::tenant::NotificationTarget;

const JSON: &str = "application/json";
/// Conditional writes of one status before the invocation gives up (and is retried).
const STATUS_WRITES: usize = 4;

/// What the notifier needs.
pub struct NotifyDeps<S, T, W, B, M> {
    pub staging: S,
    pub tenants: T,
    pub webhooks: W,
    pub buses: B,
    /// Failure and recovery notices to the tenant's contacts.
    pub mailer: M,
    /// `SES_SENDER`: the verified identity notices come from.
    pub sender: String,
    /// The clock; tests pin it.
    pub now: fn() -> DateTime<Utc>,
}

/// What became of one event in one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    pub event_key: String,
    pub status_key: String,
    /// Sends made now, and how many were accepted.
    pub sent: usize,
    pub accepted: usize,
    /// Targets paused by this invocation (their last allowed send failed).
    pub paused: usize,
    /// Why nothing was sent, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Why an event could not be handled; the invocation fails and is retried.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("could not read {location}: {source}")]
    Read {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("could not record the sends in {location}: {source}")]
    Write {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("{location} changed {STATUS_WRITES} times while this invocation recorded its sends; it will be retried")]
    Contended { location: String },
    #[error("the tenant secret of {tenant_id:?} could not be read: {source}")]
    Tenant {
        tenant_id: String,
        #[source]
        source: DirectoryError,
    },
    #[error(transparent)]
    Notice(#[from] NoticeError),
}

/// The status as stored, and the version a conditional write must replace.
async fn read_status<S: ObjectStore>(
    store: &S,
    key: &str,
) -> Result<Option<(Result<NotificationStatus, String>, ObjectVersion)>, NotifyError> {
    match store.get_versioned(key).await {
        Ok(object) => {
            let status = serde_json::from_slice::<NotificationStatus>(&object.body)
                .map_err(|e| e.to_string())
                .and_then(|status| match status.schema_version {
                    NOTIFICATION_STATUS_SCHEMA_VERSION => Ok(status),
                    other => Err(format!("schemaVersion {other} is not one this build reads")),
                });
            Ok(Some((status, object.version)))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(source) => Err(NotifyError::Read { location: store.describe(key), source }),
    }
}

/// Sends the event at `parts` to every target of its tenant that is due.
#[instrument(skip_all, fields(run_id = %parts.run_id, tenant = %parts.tenant_id, feed = %parts.feed_id, event_type = %parts.event_type))]
pub async fn notify_event<S, T, W, B, M>(
    deps: &NotifyDeps<S, T, W, B, M>,
    parts: &EventKeyParts,
) -> Result<EventReport, NotifyError>
where
    S: ObjectStore,
    T: TenantDirectory,
    W: WebhookSender,
    B: EventBusSender,
    M: MailSender,
{
    let event_key = parts.event_key();
    let status_key = parts.status_key();
    let mut report = EventReport { event_key: event_key.clone(), status_key: status_key.clone(), ..Default::default() };
    let body = match deps.staging.get_at_most(&event_key, CONTROL_OBJECT_MAX_BYTES).await {
        Ok(body) => body,
        Err(too_large @ StoreError::TooLarge { .. }) => {
            warn!(%event_key, error = %too_large, "the event object is too large to be one of ours; nothing to send");
            report.skipped = Some(too_large.to_string());
            return Ok(report);
        }
        Err(StoreError::NotFound { .. }) => {
            warn!(%event_key, "the event object is gone (expired?); nothing to send");
            report.skipped = Some("the event object no longer exists".to_owned());
            return Ok(report);
        }
        Err(source) => return Err(NotifyError::Read { location: deps.staging.describe(&event_key), source }),
    };
    let event = match decode_event(&body, parts) {
        Ok(event) => event,
        Err(reason) => {
            warn!(%event_key, %reason, "not an event this build can send; left alone");
            report.skipped = Some(reason);
            return Ok(report);
        }
    };
    let now = (deps.now)();
    let stored = read_status(&deps.staging, &status_key).await?;
    let (mut status, mut version) = match stored {
        Some((Ok(status), version)) => (status, Some(version)),
        Some((Err(reason), version)) => {
            warn!(%status_key, %reason, "the notification status is damaged; it is replaced");
            (NotificationStatus::new(&event, now), Some(version))
        }
        None => (NotificationStatus::new(&event, now), None),
    };

    match targets_of(deps, &event).await? {
        Ok((targets, contacts)) => {
            status.skipped = None;
            if status.notice.is_none() {
                status.notice =
                    Some(handle_notice(&deps.staging, &deps.mailer, &deps.sender, &contacts, &event, now).await?);
            }
            status.reconcile(&targets);
            send_due(deps, &event, &body, &targets, &mut status, &mut report, now).await;
        }
        Err(reason) => {
            info!(%event_key, %reason, "nothing is sent for this event");
            report.skipped = Some(reason.clone());
            status.skipped = Some(reason);
        }
    }
    status.updated_at = now;

    // Record, merging with whatever another invocation recorded meanwhile.
    for _ in 0..STATUS_WRITES {
        let condition = match &version {
            Some(version) => WriteCondition::Unchanged(version),
            None => WriteCondition::Absent,
        };
        let json = Bytes::from(serde_json::to_vec_pretty(&status).expect("statuses serialise"));
        let written = deps
            .staging
            .put_conditional(&status_key, json, JSON, condition)
            .await
            .map_err(|source| NotifyError::Write { location: deps.staging.describe(&status_key), source })?;
        match written {
            ConditionalPut::Written(_) => {
                emit_metrics(
                    "PopularityReports",
                    &[("Function", "notify")],
                    &[
                        ("NotificationsSent", report.sent as f64),
                        ("NotificationsAccepted", report.accepted as f64),
                        ("NotificationTargetsPaused", report.paused as f64),
                    ],
                );
                info!(%event_key, sent = report.sent, accepted = report.accepted, paused = report.paused, "event handled");
                return Ok(report);
            }
            ConditionalPut::ConditionFailed => match read_status(&deps.staging, &status_key).await? {
                Some((Ok(theirs), their_version)) => {
                    status.merge_from(&theirs);
                    version = Some(their_version);
                }
                Some((Err(_), their_version)) => version = Some(their_version),
                None => version = None,
            },
        }
    }
    Err(NotifyError::Contended { location: deps.staging.describe(&status_key) })
}

fn decode_event(body: &[u8], parts: &EventKeyParts) -> Result<ArrivalEvent, String> {
    let event: ArrivalEvent = serde_json::from_slice(body).map_err(|e| format!("not an event: {e}"))?;
    if event.schema_version != ARRIVAL_EVENT_SCHEMA_VERSION {
        return Err(format!("schemaVersion {} is not one this build reads", event.schema_version));
    }
    if event.key_parts() != *parts {
        return Err("it is not the event its key names".to_owned());
    }
    Ok(event)
}

/// The tenant's targets and contacts, or why none are served (`Ok(Err(reason))`).
async fn targets_of<S, T: TenantDirectory, W, B, M>(
    deps: &NotifyDeps<S, T, W, B, M>,
    event: &ArrivalEvent,
) -> Result<Result<(Vec<NotificationTarget>, Vec<String>), String>, NotifyError> {
    let entry = deps
        .tenants
        .load_tenant(&event.tenant_id)
        .await
        .map_err(|source| NotifyError::Tenant { tenant_id: event.tenant_id.clone(), source })?;
    let Some(entry) = entry else {
        return Ok(Err(format!("the secret of tenant {:?} no longer exists", event.tenant_id)));
    };
    match entry.config {
        Err(error) => Ok(Err(format!("the tenant secret cannot be used: {}", error.describe(&entry.secret_name)))),
        Ok(tenant) if !tenant.enabled => Ok(Err("the tenant is disabled".to_owned())),
        Ok(tenant) => Ok(Ok((tenant.notifications, tenant.contacts))),
    }
}

/// Sends to every target due now, recording each send.
async fn send_due<S, T, W, B, M>(
    deps: &NotifyDeps<S, T, W, B, M>,
    event: &ArrivalEvent,
    body: &[u8],
    targets: &[NotificationTarget],
    status: &mut NotificationStatus,
    report: &mut EventReport,
    now: DateTime<Utc>,
) where
    W: WebhookSender,
    B: EventBusSender,
{
    for target in targets {
        let id = super::status::target_id(target);
        let Some(record) = status.targets.iter_mut().find(|record| record.target_id == id) else { continue };
        if record.due_at().is_none_or(|due| due > now) {
            continue;
        }
        let sent: Result<String, SendFailure> = match target {
            NotificationTarget::Webhook(webhook) => deps.webhooks.send(webhook, &event.id, body).await,
            NotificationTarget::EventBridge(bus) => {
                deps.buses.put(bus, event, std::str::from_utf8(body).unwrap_or_default()).await
            }
        };
        report.sent += 1;
        let (attempt, refused) = match sent {
            Ok(receipt) => {
                report.accepted += 1;
                info!(target = %record.address, %receipt, "accepted");
                (SendAttempt { at: now, accepted: true, detail: receipt }, false)
            }
            Err(failure) => {
                warn!(target = %record.address, detail = %failure.detail, refused = failure.refused, "not accepted");
                (SendAttempt { at: now, accepted: false, detail: failure.detail }, failure.refused)
            }
        };
        record.record(attempt, refused);
        match record.state {
            TargetState::Paused => {
                report.paused += 1;
                warn!(target = %record.address, sends = record.attempts.len(),
                    "notification target paused: it refused every send for more than a day (alarm NotificationTargetsPaused)");
            }
            TargetState::Refused => {
                warn!(target = %record.address, "notification target refused: it can never be sent to as it is");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::delivery::arrival_event::{EventType, NOTIFICATION_STATUS_PREFIX};
    use crate::store::{LocalDirStore, ObjectSink};
    use crate::tenant::directory::InMemoryTenants;
    use crate::tenant::{EventBridgeTarget, WebhookTarget};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw4mJ1Bm0ZjS0=";

    /// Refuses the first `failures` sends, then accepts; records each event id.
    #[derive(Default)]
    struct FlakyEndpoint {
        failures: usize,
        calls: AtomicUsize,
        ids: Mutex<Vec<String>>,
    }

    impl WebhookSender for FlakyEndpoint {
        async fn send(&self, _: &WebhookTarget, event_id: &str, _: &[u8]) -> Result<String, SendFailure> {
            self.ids.lock().unwrap().push(event_id.to_owned());
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                Err(SendFailure { refused: false, detail: "HTTP 503".into() })
            } else {
                Ok("HTTP 204".into())
            }
        }
    }

    impl MailSender for FlakyEndpoint {
        async fn send(
            &self,
            _: &crate::delivery::connectors::email::EmailMessage,
        ) -> Result<String, crate::delivery::connectors::email::MailError> {
            Ok("message-1".into())
        }
    }

    impl EventBusSender for FlakyEndpoint {
        async fn put(&self, _: &EventBridgeTarget, event: &ArrivalEvent, _: &str) -> Result<String, SendFailure> {
            self.ids.lock().unwrap().push(event.id.clone());
            Ok("event 1".into())
        }
    }

    fn tenant(notifications: serde_json::Value) -> InMemoryTenants {
        let secret = serde_json::json!({"schemaVersion": 1, "tenantId": "acme", "plan": "standard",
            "connectors": {}, "feeds": [], "notifications": notifications});
        InMemoryTenants::new("popularity-reports/tenants/").with_secret("acme", secret.to_string())
    }

    async fn staged_event(store: &LocalDirStore) -> EventKeyParts {
        let event: ArrivalEvent = serde_json::from_value(serde_json::json!({"schemaVersion": 1,
            "id": "evt_0123", "type": "delivery.succeeded", "tenantId": "acme", "feedId": "all",
            "runId": "20261119030000", "time": "2026-11-19T03:21:00Z"}))
        .unwrap();
        let parts = event.key_parts();
        store.put(&parts.event_key(), Bytes::from(serde_json::to_vec(&event).unwrap()), JSON).await.unwrap();
        parts
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    async fn stored_status(store: &LocalDirStore, parts: &EventKeyParts) -> NotificationStatus {
        serde_json::from_slice(&store.get(&parts.status_key()).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_target_that_fails_is_due_again_on_the_schedule_and_once_it_accepts_it_is_never_sent_again() {
        let (_dir, store) = LocalDirStore::in_temp_dir("notify-flaky");
        let parts = staged_event(&store).await;
        let webhooks = FlakyEndpoint { failures: 2, ..Default::default() };
        let tenants = tenant(serde_json::json!([
            {"type": "webhook", "url": "https://hooks.acme.example/x", "signingSecret": SECRET},
            {"type": "eventbridge", "eventBusArn": "arn:aws:events:eu-west-1:111122223333:event-bus/b"}]));
        let mut deps = NotifyDeps {
            staging: store.clone(),
            tenants,
            webhooks,
            buses: FlakyEndpoint::default(),
            mailer: FlakyEndpoint::default(),
            sender: "reports@example.com".into(),
            now: || at("2026-11-19T03:21:05Z"),
        };
        let first = notify_event(&deps, &parts).await.unwrap();
        assert_eq!((first.sent, first.accepted), (2, 1), "the bus accepts, the webhook does not");
        // Invoked again at once (a duplicate S3 event): nothing is due.
        let repeat = notify_event(&deps, &parts).await.unwrap();
        assert_eq!(repeat.sent, 0);
        deps.now = || at("2026-11-19T03:26:05Z");
        assert_eq!(notify_event(&deps, &parts).await.unwrap().accepted, 0, "second send, 5 min later, fails");
        deps.now = || at("2026-11-19T03:40:00Z");
        assert_eq!(notify_event(&deps, &parts).await.unwrap().sent, 0, "the third is due 30 min after the second");
        deps.now = || at("2026-11-19T04:00:00Z");
        assert_eq!(notify_event(&deps, &parts).await.unwrap().accepted, 1);
        deps.now = || at("2026-11-21T04:00:00Z");
        assert_eq!(notify_event(&deps, &parts).await.unwrap().sent, 0, "accepted: never sent again");
        let status = stored_status(&store, &parts).await;
        assert_eq!(status.next_due(), None);
        let hook = &status.targets[0];
        assert_eq!((hook.state, hook.attempts.len()), (super::super::status::TargetState::Accepted, 3));
        assert!(deps.webhooks.ids.lock().unwrap().iter().all(|id| id == "evt_0123"), "one id for every send");
        assert_eq!(deps.buses.ids.lock().unwrap().len(), 1);
        let json = String::from_utf8(store.get(&parts.status_key()).await.unwrap().to_vec()).unwrap();
        assert!(!json.contains("MfKQ9r8GKYqr"), "{json}");
        assert!(parts.status_key().starts_with(NOTIFICATION_STATUS_PREFIX) && parts.event_type == EventType::Succeeded);
    }

    #[tokio::test]
    async fn a_tenant_that_is_gone_or_has_no_targets_gets_nothing_sent_and_a_status_saying_why() {
        let (_dir, store) = LocalDirStore::in_temp_dir("notify-none");
        let parts = staged_event(&store).await;
        let deps = NotifyDeps {
            staging: store.clone(),
            tenants: InMemoryTenants::new("popularity-reports/tenants/"),
            webhooks: FlakyEndpoint::default(),
            buses: FlakyEndpoint::default(),
            mailer: FlakyEndpoint::default(),
            sender: "reports@example.com".into(),
            now: || at("2026-11-19T03:21:05Z"),
        };
        let report = notify_event(&deps, &parts).await.unwrap();
        assert!(report.skipped.unwrap().contains("no longer exists"));
        assert!(stored_status(&store, &parts).await.skipped.is_some());
        let deps = NotifyDeps { tenants: tenant(serde_json::json!([])), ..deps };
        let report = notify_event(&deps, &parts).await.unwrap();
        assert_eq!((report.sent, report.skipped), (0, None));
        let status = stored_status(&store, &parts).await;
        assert_eq!((status.targets.len(), status.skipped.clone(), status.next_due()), (0, None, None));
    }
}
