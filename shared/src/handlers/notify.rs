//! The `notify` function's handler: an S3 `ObjectCreated` event names
//! arrival events (`notifications/<runId>/<tenantId>/<feedId>/<type>.json`);
//! each is sent to its tenant's targets through [`crate::notify`]. Records
//! are handled one by one, so one bad record does not keep the others from
//! being sent; if any could not be handled (staging or the tenant directory
//! unreadable), the invocation fails with all their errors and is retried —
//! targets that accepted meanwhile are not sent again. A target that did not
//! accept does not fail the invocation: the sweeper re-drives it on the
//! retry schedule.

use aws_lambda_events::s3::S3Event;
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{instrument, warn};

use crate::delivery::arrival_event::{parse_event_key, EventKeyError};
use crate::delivery::connectors::email::MailSender;
use crate::delivery::keys::{decode_s3_event_key, KeyError};
use crate::notify::{notify_event, EventBusSender, EventReport, NotifyDeps, NotifyError, WebhookSender};
use crate::store::ObjectStore;
use crate::tenant::directory::TenantDirectory;

/// The function's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyResponse {
    pub events: Vec<EventReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyHandlerError {
    #[error("S3 event record {index} has no object key")]
    MissingKey { index: usize },
    #[error("S3 event record {index}: {source}")]
    Key {
        index: usize,
        #[source]
        source: KeyError,
    },
    #[error("S3 event record {index}: {source}; check the S3 notification filters")]
    NotAnEvent {
        index: usize,
        #[source]
        source: EventKeyError,
    },
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("{} records failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | "))]
    Several(Vec<NotifyHandlerError>),
}

impl From<NotifyHandlerError> for Diagnostic {
    fn from(error: NotifyHandlerError) -> Self {
        let error_type = match &error {
            NotifyHandlerError::MissingKey { .. }
            | NotifyHandlerError::Key { .. }
            | NotifyHandlerError::NotAnEvent { .. } => "InvalidEvent",
            NotifyHandlerError::Notify(_) | NotifyHandlerError::Several(_) => "NotificationFailed",
        };
        Diagnostic { error_type: error_type.to_owned(), error_message: error.to_string() }
    }
}

/// Handles an S3 event for the notifier.
#[instrument(skip_all)]
pub async fn handle_notify_event<S, T, W, B, M>(
    deps: &NotifyDeps<S, T, W, B, M>,
    event: S3Event,
) -> Result<NotifyResponse, NotifyHandlerError>
where
    S: ObjectStore,
    T: TenantDirectory,
    W: WebhookSender,
    B: EventBusSender,
    M: MailSender,
{
    let mut response = NotifyResponse::default();
    let mut failures = Vec::new();
    for (index, record) in event.records.iter().enumerate() {
        let parts = record
            .s3
            .object
            .key
            .as_deref()
            .ok_or(NotifyHandlerError::MissingKey { index })
            .and_then(|key| decode_s3_event_key(key).map_err(|source| NotifyHandlerError::Key { index, source }))
            .and_then(|key| parse_event_key(&key).map_err(|source| NotifyHandlerError::NotAnEvent { index, source }));
        let handled = match parts {
            Ok(parts) => notify_event(deps, &parts).await.map_err(NotifyHandlerError::from),
            Err(error) => Err(error),
        };
        match handled {
            Ok(report) => response.events.push(report),
            Err(error) => {
                warn!(%error, "an event record could not be handled");
                failures.push(error);
            }
        }
    }
    match failures.len() {
        0 => Ok(response),
        1 => Err(failures.remove(0)),
        _ => Err(NotifyHandlerError::Several(failures)),
    }
}
