//! Why a delivery attempt failed, typed so that it says whether a retry can
//! help (docs/design.md, "Delivery rules"). Permanent errors — an invalid job, tenant secret or run
//! manifest, a report the run does not have, a destination that can never
//! fit the data — are recorded as `invalid` and the invocation succeeds, so
//! nothing retries what cannot work. Everything else is transient —
//! including a destination that refuses access, is missing or is full,
//! which the customer can fix — recorded as `failed` and retried. Messages
//! name the object or connector concerned and never a credential. Each
//! error also says whose move it is ([`DeliveryError::blame`]): the
//! customer's when their side refused us in a way they can change, which is
//! what failure notices and `delivery.failed` events tell them.

use std::fmt;

use crate::delivery::status::Blame;
use crate::store::StoreError;
use crate::tenant::directory::DirectoryError;
use crate::transfer::TransferError;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("job {location} cannot be delivered: {reason}")]
    InvalidJob { location: String, reason: String },
    #[error("run manifest {location} cannot be used: {reason}")]
    InvalidManifest { location: String, reason: String },
    #[error("the run manifest {location} has no {data_type} report")]
    MissingReport { location: String, data_type: &'static str },
    /// The tenant secret, or the connector in it, cannot serve this job
    /// (invalid, connector removed or retyped since fanout).
    #[error("{0}")]
    InvalidTenant(String),
    /// The connector's settings can never work as they are (a key file the
    /// client library refuses, for instance).
    #[error("connector {connector:?} cannot be used: {reason}")]
    InvalidConnector { connector: String, reason: String },
    /// The data can never fit the destination as configured.
    #[error("{reason}")]
    CannotFit { reason: String },
    #[error("could not {action} {location}: {source}")]
    Staging {
        action: &'static str,
        location: String,
        #[source]
        source: StoreError,
    },
    /// Another attempt took over this attempt's claim (it outlived its
    /// expiry): this one stops, and the other's outcome stands.
    #[error("another attempt took over the claim in {status} while this one was delivering; this one stops here")]
    ClaimLost { status: String },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The delta against the job's base run could not be computed or read.
    #[error("the delta against the base run: {0}")]
    Delta(#[from] crate::delta::DeltaError),
    #[error("connector {connector:?}: {source}")]
    Destination {
        connector: String,
        #[source]
        source: StoreError,
    },
    /// A connector's own failure (mail, links, a Google API), which the
    /// connector classified when it mapped it here.
    #[error(transparent)]
    Connector(ConnectorFailure),
}

/// A failure of one connector's own machinery, as the connector mapped it:
/// the delivery core keeps the error as its source and knows only whether a
/// retry can help. Each connector converts its error types into this
/// (`impl From<MailError> for DeliveryError` beside `MailError`), so the
/// core never names a connector's types. Displays as its source does.
#[derive(Debug)]
pub struct ConnectorFailure {
    permanent: bool,
    blame: Blame,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ConnectorFailure {
    /// Retrying the same job can never succeed (recorded as `invalid`).
    pub fn permanent(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConnectorFailure { permanent: true, blame: Blame::Provider, source: Box::new(source) }
    }

    /// A retry may succeed (recorded as `failed`, then retried).
    pub fn transient(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConnectorFailure { permanent: false, blame: Blame::Provider, source: Box::new(source) }
    }

    /// As the connector's own error says.
    pub fn classified(permanent: bool, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConnectorFailure { permanent, blame: Blame::Provider, source: Box::new(source) }
    }

    /// The same failure, as the customer's to fix (ours by default).
    pub fn customers(mut self) -> Self {
        self.blame = Blame::Customer;
        self
    }

    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    pub fn blame(&self) -> Blame {
        self.blame
    }

    /// The connector's own error, for a caller that knows its type.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }
}

impl fmt::Display for ConnectorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// Transparent, as `#[error(transparent)]` would be: the chain goes on with
/// the source's own source, so the message is not printed twice.
impl std::error::Error for ConnectorFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl DeliveryError {
    /// Whether retrying the same job can never succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliveryError::InvalidJob { .. }
            | DeliveryError::InvalidManifest { .. }
            | DeliveryError::MissingReport { .. }
            | DeliveryError::InvalidTenant(_)
            | DeliveryError::InvalidConnector { .. }
            | DeliveryError::CannotFit { .. } => true,
            DeliveryError::Transfer(error) => error.is_permanent(),
            DeliveryError::Delta(error) => error.is_permanent(),
            DeliveryError::Connector(failure) => failure.is_permanent(),
            DeliveryError::Staging { .. }
            | DeliveryError::ClaimLost { .. }
            | DeliveryError::Directory(_)
            | DeliveryError::Destination { .. } => false,
        }
    }
}

impl DeliveryError {
    /// Whose move it is: the customer's when their destination or their
    /// settings refused (access denied, a bucket or spreadsheet missing,
    /// an invalid connector, data that cannot fit), ours otherwise.
    pub fn blame(&self) -> Blame {
        match self {
            DeliveryError::InvalidTenant(_)
            | DeliveryError::InvalidConnector { .. }
            | DeliveryError::CannotFit { .. } => Blame::Customer,
            DeliveryError::Destination { source, .. } => destination_blame(source),
            DeliveryError::Transfer(TransferError::Write(source)) => destination_blame(source),
            DeliveryError::Connector(failure) => failure.blame(),
            DeliveryError::InvalidJob { .. }
            | DeliveryError::InvalidManifest { .. }
            | DeliveryError::MissingReport { .. }
            | DeliveryError::Staging { .. }
            | DeliveryError::ClaimLost { .. }
            | DeliveryError::Directory(_)
            | DeliveryError::Transfer(_)
            | DeliveryError::Delta(_) => Blame::Provider,
        }
    }
}

/// A destination's refusal is the customer's to fix when the destination
/// says so (the error codes S3, STS and GCS give for access, identity, keys,
/// a missing or moved bucket, and a role of theirs we could not assume); a
/// timeout, throttling or a server error is ours to wait out.
fn destination_blame(error: &StoreError) -> Blame {
    const CUSTOMER_CODES: [&str; 14] = [
        "AccessDenied",
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidBucketState",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "KMS.",
        "AssumeRole",
        "ExpiredToken",
        "failed to load credentials",
    ];
    match error {
        StoreError::S3 { detail, .. } if CUSTOMER_CODES.iter().any(|code| detail.contains(code)) => Blame::Customer,
        // A keyless upload refused at 401: the token of our own identity.
        StoreError::Gcs { status: Some(401), detail, .. }
            if detail.starts_with(crate::google_identity::TENANT_IDENTITY_REFUSED) =>
        {
            Blame::Provider
        }
        StoreError::Gcs { status: Some(401 | 403 | 404), .. } => Blame::Customer,
        _ => Blame::Provider,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_work_is_permanent_and_what_the_customer_can_fix_is_transient() {
        let permanent = [
            DeliveryError::InvalidJob { location: "jobs/x".into(), reason: "not JSON".into() },
            DeliveryError::InvalidManifest { location: "manifests/x".into(), reason: "schemaVersion 99".into() },
            DeliveryError::MissingReport { location: "manifests/x".into(), data_type: "track_popularity" },
            DeliveryError::InvalidTenant("tenant secret t is invalid: plan: required".into()),
            DeliveryError::CannotFit { reason: "needs 12,000,000 cells".into() },
        ];
        for error in &permanent {
            assert!(error.is_permanent(), "{error}");
        }
        let denied = StoreError::S3 {
            operation: "PutObject",
            location: "s3://customer/x".into(),
            detail: "AccessDenied".into(),
        };
        let transient = [
            DeliveryError::Destination { connector: "lake".into(), source: denied },
            DeliveryError::Staging {
                action: "read",
                location: "status/x".into(),
                source: StoreError::NotFound { location: "x".into() },
            },
        ];
        for error in &transient {
            assert!(!error.is_permanent(), "{error}");
        }
    }

    #[test]
    fn what_the_customer_refused_is_theirs_to_fix_and_everything_else_is_ours() {
        let s3 = |detail: &str| StoreError::S3 {
            operation: "PutObject",
            location: "s3://customer/x".into(),
            detail: detail.into(),
        };
        let at_destination = |detail: &str| DeliveryError::Destination { connector: "lake".into(), source: s3(detail) };
        let customers = [
            at_destination("AccessDenied: Access Denied (HTTP 403)"),
            at_destination("NoSuchBucket: The specified bucket does not exist (HTTP 404)"),
            DeliveryError::Transfer(TransferError::Write(s3("InvalidAccessKeyId: revoked (HTTP 403)"))),
            at_destination(
                "dispatch failure: other: an error occurred while loading credentials: AccessDenied: not authorized                  to perform sts:AssumeRole",
            ),
            DeliveryError::Destination {
                connector: "gcs".into(),
                source: StoreError::Gcs { operation: "upload", location: "gs://b/x".into(), status: Some(403), detail: "x".into() },
            },
            DeliveryError::Connector(ConnectorFailure::transient(std::io::Error::other("not shared")).customers()),
            DeliveryError::InvalidTenant("plan: required".into()),
        ];
        for error in &customers {
            assert_eq!(error.blame(), Blame::Customer, "{error}");
        }
        let ours = [
            at_destination("SlowDown: Please reduce your request rate (HTTP 503)"),
            at_destination("request has timed out"),
            DeliveryError::Transfer(TransferError::Read(s3("AccessDenied: staging (HTTP 403)"))),
            DeliveryError::Staging { action: "read", location: "status/x".into(), source: s3("AccessDenied: x") },
            DeliveryError::Connector(ConnectorFailure::transient(std::io::Error::other("SES throttled"))),
            // Google refusing the token of a tenant's identity of ours.
            DeliveryError::Destination {
                connector: "gcs".into(),
                source: StoreError::Gcs {
                    operation: "upload",
                    location: "gs://b/x".into(),
                    status: Some(401),
                    detail: format!("{}: invalid credentials", crate::google_identity::TENANT_IDENTITY_REFUSED),
                },
            },
        ];
        for error in &ours {
            assert_eq!(error.blame(), Blame::Provider, "{error}");
        }
    }
}
