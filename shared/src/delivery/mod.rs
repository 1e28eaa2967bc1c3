//! Delivery: everything between a published run and a tenant's destination
//! (docs/design.md, "Reports and layouts", "Tenants" and "Delivery rules"),
//! in one place. Fanout decides which feeds are due and writes their jobs;
//! each deliverer function claims a job, delivers it through its connector
//! and records the outcome; connection tests probe a connector with the
//! customer's grants.
//!
//! Layout, from the bottom up (a module imports only those above it in
//! this list, and the connector registry and tenant model below delivery):
//! - [`keys`]: staging key layouts and S3 event key decoding;
//! - [`job`], [`status`]: the job and status objects (claims included);
//! - [`arrival_event`]: the `notifications/…` event a feed's outcome calls for, and its keys;
//! - [`error`]: delivery errors that say permanent or transient, and the
//!   [`ConnectorFailure`](error::ConnectorFailure) a connector maps its own errors into;
//! - [`feed_index`]: each feed's recent deliveries, one object a feed, kept beside its status objects;
//! - [`staging`]: the staging bucket as deliveries see it (the one status reader);
//! - [`resume`]: the parts earlier attempts of a job delivered, and when a retry skips them;
//! - [`destination_files`]: a run's reports (or their deltas) as files at a
//! destination, `_manifest.json` last;
//! - [`connection_probe`]: connection-test requests, the checks of a probe, results;
//! - [`deliverer`]: the [`Deliverer`] trait every connector kind implements, and its dependencies;
//! - [`attempt`]: one attempt at one job, the same for every connector;
//! - [`probe_runner`]: answering one connection-test request;
//! - [`redrive`]: re-driving deliveries whose own retries are over (the
//! sweeper, `popularity redeliver`);
//! - [`connectors`]: one module per connector kind, its deliverer beside its adapter.
//!
//! Adding a connector kind: a row in [`crate::connector_registry`], a module
//! in [`connectors`], a function crate under `functions/`, and its template
//! entry.

pub mod arrival_event;
pub mod attempt;
pub mod connection_probe;
pub mod connectors;
pub mod deliverer;
pub mod destination_files;
pub mod error;
pub mod feed_index;
pub mod job;
pub mod keys;
pub mod probe_limit;
pub mod probe_runner;
pub mod redrive;
pub mod resume;
pub mod staging;
pub mod status;

pub use crate::connector_registry::{ConnectorKind, JobKind, UnknownJobKind};
pub use arrival_event::{parse_event_key, ArrivalEvent, EventKeyParts, EventType};
pub use attempt::{deliver_job, JobDisposition, JobError, JobReport};
pub use deliverer::{DeliverDeps, Deliverer};
pub use error::{ConnectorFailure, DeliveryError};
pub use job::{decode_job, DeliveryJob, DeliveryPlan, JobDecodeError, UnknownConnector, DELIVERY_JOB_SCHEMA_VERSION};
pub use keys::{
    connection_test_key, connection_test_result_key, decode_s3_event_key, job_key, parse_connection_test_key,
    parse_deliverer_key, parse_job_key, status_key, tenant_key_segment, ConnectionTestKeyParts, DelivererKey,
    JobKeyParts, KeyError, CONNECTION_TESTS_PREFIX, CONNECTION_TEST_RESULTS_PREFIX, JOBS_PREFIX, STATUS_PREFIX,
    TENANT_STATUS_FEED_ID,
};
pub use staging::{DeliveryStaging, StatusRecord, UnusableStatus};
pub use status::{
    Attempt, AttemptResult, Blame, Claim, DeliveredObject, DeliveredPart, DeliveryOutcome, DeliveryStatus, PartOrigin,
    SourcePart, DELIVERY_STATUS_SCHEMA_VERSION,
};
