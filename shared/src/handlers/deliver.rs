//! The handler of every deliverer function (`deliver-s3`, `deliver-email`,
//! `deliver-gcs`, …): an S3 `ObjectCreated` event names job objects
//! (`jobs/<kind>/…`) or connection-test requests (`connection-tests/<kind>/…`).
//! Each record is handled on its own, so one bad record does not keep the
//! others from being delivered; if any failed, the invocation fails with all
//! their errors and is retried (records already done are then no-ops).
//! Delivery itself lives in [`crate::delivery`].

use aws_lambda_events::s3::S3Event;
use chrono::{DateTime, Utc};
use lambda_runtime::Diagnostic;
use serde::Serialize;
use tracing::{instrument, warn};

use crate::delivery::probe_runner::{run_connection_test, ConnectionTestError, ConnectionTestOutcome};
use crate::delivery::{
    decode_s3_event_key, deliver_job, parse_deliverer_key, DeliverDeps, Deliverer, DelivererKey, JobError, JobKind,
    JobReport, KeyError,
};
use crate::store::ObjectStore;
use crate::tenant::directory::TenantDirectory;

/// The function's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverResponse {
    pub jobs: Vec<JobReport>,
    pub connection_tests: Vec<ConnectionTestOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("S3 event record {index} has no object key")]
    MissingKey { index: usize },
    #[error("S3 event record {index}: {source}")]
    Key {
        index: usize,
        #[source]
        source: KeyError,
    },
    #[error("{key} is for deliver-{found} but this function is deliver-{expected}; check the S3 notification filters")]
    WrongKind { key: String, found: JobKind, expected: JobKind },
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    ConnectionTest(#[from] ConnectionTestError),
    #[error("{} records failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | "))]
    Several(Vec<DeliverError>),
}

impl DeliverError {
    fn error_type(&self) -> &'static str {
        match self {
            DeliverError::MissingKey { .. } | DeliverError::Key { .. } | DeliverError::WrongKind { .. } => {
                "InvalidEvent"
            }
            DeliverError::Job(JobError::Failed { .. }) | DeliverError::Several(_) => "DeliveryFailed",
            DeliverError::Job(JobError::RecordStatus { .. }) => "StatusNotRecorded",
            DeliverError::Job(JobError::CreateEvent { .. }) => "EventNotCreated",
            DeliverError::Job(JobError::ReadStatus { .. } | JobError::Claim { .. }) => "StatusNotRead",
            DeliverError::ConnectionTest(_) => "ConnectionTestFailed",
        }
    }
}

impl From<DeliverError> for Diagnostic {
    fn from(error: DeliverError) -> Self {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: error.to_string() }
    }
}

/// Handles an S3 event for a deliverer. `deadline` is when this invocation
/// is killed (the Lambda context's deadline), which bounds its claims.
#[instrument(skip_all)]
pub async fn handle_deliverer_event<S, T, D>(
    deps: &DeliverDeps<S, T, D>,
    event: S3Event,
    deadline: Option<DateTime<Utc>>,
) -> Result<DeliverResponse, DeliverError>
where
    S: ObjectStore,
    T: TenantDirectory,
    D: Deliverer,
{
    let mut response = DeliverResponse::default();
    let mut failures = Vec::new();
    for (index, record) in event.records.iter().enumerate() {
        let key = match record_key(index, record.s3.object.key.as_deref(), deps.deliverer.kind()) {
            Ok(key) => key,
            Err(error) => {
                warn!(%error, "ignoring an S3 event record this function cannot act on");
                failures.push(error);
                continue;
            }
        };
        let handled = match key {
            DelivererKey::Job(parts) => deliver_job(deps, &parts, deadline)
                .await
                .map(|report| response.jobs.push(report))
                .map_err(DeliverError::from),
            DelivererKey::ConnectionTest(parts) => run_connection_test(deps, &parts)
                .await
                .map(|outcome| response.connection_tests.push(outcome))
                .map_err(DeliverError::from),
        };
        if let Err(error) = handled {
            failures.push(error);
        }
    }
    match failures.len() {
        0 => Ok(response),
        1 => Err(failures.remove(0)),
        _ => Err(DeliverError::Several(failures)),
    }
}

/// When Lambda kills this invocation: its context's deadline.
pub fn invocation_deadline(context: &lambda_runtime::Context) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(context.deadline).ok()?)
}

/// The decoded, parsed key of record `index`, which must be for `kind`.
fn record_key(index: usize, encoded: Option<&str>, kind: JobKind) -> Result<DelivererKey, DeliverError> {
    let encoded = encoded.ok_or(DeliverError::MissingKey { index })?;
    let decoded = decode_s3_event_key(encoded).map_err(|source| DeliverError::Key { index, source })?;
    let key = parse_deliverer_key(&decoded).map_err(|source| DeliverError::Key { index, source })?;
    if key.kind() != kind {
        return Err(DeliverError::WrongKind { key: key.key(), found: key.kind(), expected: kind });
    }
    Ok(key)
}
