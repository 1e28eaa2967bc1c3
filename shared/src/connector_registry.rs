//! The one registry of connector kinds (docs/design.md, "Shape" and "Tenants"): for each connector
//! `type` of a tenant secret, its fields, the `jobs/<kind>/` its jobs go to,
//! and for each job kind the Lambda function that delivers it and whether
//! this build has that function. Tenant parsing, fanout, the CLI and the
//! template-consistency tests all read these tables; adding a connector kind
//! is a row here, a connector file under `connectors/`, a function crate and
//! its template entry. Pure data, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The `type` of a connector in a tenant secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectorKind {
    Email,
    S3Role,
    S3Keys,
    S3BucketPolicy,
    Gcs,
    GoogleSheets,
}

/// The `<kind>` of `jobs/<kind>/...` and `connection-tests/<kind>/...`: which
/// deliverer function handles a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    S3,
    Email,
    Gcs,
    Sheets,
}

/// One row of [`CONNECTOR_TYPES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorType {
    pub kind: ConnectorKind,
    /// The `type` value in the secret.
    pub type_name: &'static str,
    /// Every field a connector of this type may have, `type` included.
    pub fields: &'static [&'static str],
    /// The fields that are credentials: write-only in the self-service API,
    /// shown as set or not with a fingerprint, never as a value.
    pub credentials: &'static [&'static str],
    /// The fields naming where data goes whose change needs the credentials
    /// given again, so that stored keys never follow a new destination.
    pub destination: &'static [&'static str],
    pub job_kind: JobKind,
}

/// One row of [`DELIVERER_FUNCTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelivererFunction {
    pub job_kind: JobKind,
    /// The function's crate under `functions/` and its binary name, which
    /// the template's `BuildProperties: Binary` names.
    pub function: &'static str,
    /// Whether this build has the function; fanout gives the feeds of an
    /// unsupported kind a `skipped` status saying "not supported yet".
    pub supported: bool,
}

/// Fields every S3 connector type shares.
const S3_FIELDS: [&str; 5] = ["type", "bucketArn", "region", "prefix", "bucketOwnerAccountId"];

pub const CONNECTOR_TYPES: [ConnectorType; 6] = [
    ConnectorType {
        kind: ConnectorKind::Email,
        type_name: "email",
        fields: &["type", "recipients"],
        credentials: &[],
        destination: &[],
        job_kind: JobKind::Email,
    },
    ConnectorType {
        kind: ConnectorKind::S3Role,
        type_name: "s3-role",
        fields: &[S3_FIELDS[0], S3_FIELDS[1], S3_FIELDS[2], S3_FIELDS[3], S3_FIELDS[4], "roleArn", "externalId"],
        credentials: &[],
        destination: &[],
        job_kind: JobKind::S3,
    },
    ConnectorType {
        kind: ConnectorKind::S3Keys,
        type_name: "s3-keys",
        fields: &[
            S3_FIELDS[0],
            S3_FIELDS[1],
            S3_FIELDS[2],
            S3_FIELDS[3],
            S3_FIELDS[4],
            "accessKeyId",
            "secretAccessKey",
            "credentialsUpdatedAt",
        ],
        credentials: &["accessKeyId", "secretAccessKey"],
        destination: &["bucketArn"],
        job_kind: JobKind::S3,
    },
    ConnectorType {
        kind: ConnectorKind::S3BucketPolicy,
        type_name: "s3-bucket-policy",
        fields: &S3_FIELDS,
        credentials: &[],
        destination: &[],
        job_kind: JobKind::S3,
    },
    ConnectorType {
        kind: ConnectorKind::Gcs,
        type_name: "gcs",
        fields: &["type", "bucket", "prefix", "serviceAccountJson", "credentialsUpdatedAt"],
        credentials: &["serviceAccountJson"],
        destination: &["bucket"],
        job_kind: JobKind::Gcs,
    },
    ConnectorType {
        kind: ConnectorKind::GoogleSheets,
        type_name: "google-sheets",
        fields: &["type", "spreadsheetUrl", "maxRows"],
        credentials: &[],
        destination: &[],
        job_kind: JobKind::Sheets,
    },
];

pub const DELIVERER_FUNCTIONS: [DelivererFunction; 4] = [
    DelivererFunction { job_kind: JobKind::S3, function: "deliver-s3", supported: true },
    DelivererFunction { job_kind: JobKind::Email, function: "deliver-email", supported: true },
    DelivererFunction { job_kind: JobKind::Gcs, function: "deliver-gcs", supported: true },
    DelivererFunction { job_kind: JobKind::Sheets, function: "deliver-sheets", supported: true },
];

impl ConnectorKind {
    pub const ALL: [ConnectorKind; 6] = [
        ConnectorKind::Email,
        ConnectorKind::S3Role,
        ConnectorKind::S3Keys,
        ConnectorKind::S3BucketPolicy,
        ConnectorKind::Gcs,
        ConnectorKind::GoogleSheets,
    ];

    /// This kind's row of [`CONNECTOR_TYPES`].
    pub fn spec(self) -> &'static ConnectorType {
        CONNECTOR_TYPES.iter().find(|row| row.kind == self).expect("every connector kind has a row")
    }

    /// The `type` value in the secret.
    pub fn type_name(self) -> &'static str {
        self.spec().type_name
    }

    pub fn from_type_name(name: &str) -> Option<ConnectorKind> {
        CONNECTOR_TYPES.iter().find(|row| row.type_name == name).map(|row| row.kind)
    }

    /// Every field a connector of this type may have, `type` included.
    pub fn fields(self) -> &'static [&'static str] {
        self.spec().fields
    }

    /// The fields that are credentials (write-only).
    pub fn credentials(self) -> &'static [&'static str] {
        self.spec().credentials
    }

    /// The fields whose change needs the credentials again.
    pub fn destination_fields(self) -> &'static [&'static str] {
        self.spec().destination
    }

    /// The deliverer of this connector type.
    pub fn job_kind(self) -> JobKind {
        self.spec().job_kind
    }

    /// Whether this build delivers to this connector type.
    pub fn is_supported(self) -> bool {
        self.job_kind().is_supported()
    }

    /// Whether a delta feed to this type gets deltas (docs/design.md, "Delta feeds"): all but
    /// `google-sheets`, which always holds the top rows of the full reports.
    pub fn takes_deltas(self) -> bool {
        self != ConnectorKind::GoogleSheets
    }

    /// The three S3 types, which share a deliverer and a destination shape.
    pub fn is_s3(self) -> bool {
        self.job_kind() == JobKind::S3
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [JobKind::S3, JobKind::Email, JobKind::Gcs, JobKind::Sheets];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::S3 => "s3",
            JobKind::Email => "email",
            JobKind::Gcs => "gcs",
            JobKind::Sheets => "sheets",
        }
    }

    /// This kind's row of [`DELIVERER_FUNCTIONS`].
    pub fn deliverer(self) -> &'static DelivererFunction {
        DELIVERER_FUNCTIONS.iter().find(|row| row.job_kind == self).expect("every job kind has a deliverer row")
    }

    /// The function (and binary) that delivers jobs of this kind.
    pub fn function(self) -> &'static str {
        self.deliverer().function
    }

    pub fn is_supported(self) -> bool {
        self.deliverer().supported
    }

    /// The connector types delivered by this kind's function.
    pub fn connector_kinds(self) -> impl Iterator<Item = ConnectorKind> {
        ConnectorKind::ALL.into_iter().filter(move |kind| kind.job_kind() == self)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = UnknownJobKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownJobKind(s.to_owned()))
    }
}

/// A `<kind>` segment that names no deliverer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job kind {0:?}: expected s3, email, gcs or sheets")]
pub struct UnknownJobKind(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_row_and_type_names_round_trip() {
        for kind in ConnectorKind::ALL {
            assert_eq!(CONNECTOR_TYPES.iter().filter(|row| row.kind == kind).count(), 1, "{kind:?}");
            assert_eq!(ConnectorKind::from_type_name(kind.type_name()), Some(kind));
            assert_eq!(kind.fields()[0], "type", "{kind}");
        }
        for job_kind in JobKind::ALL {
            assert_eq!(DELIVERER_FUNCTIONS.iter().filter(|row| row.job_kind == job_kind).count(), 1);
            assert_eq!(job_kind.as_str().parse::<JobKind>().unwrap(), job_kind);
            assert_eq!(job_kind.function(), format!("deliver-{job_kind}"));
            assert!(job_kind.connector_kinds().count() >= 1, "{job_kind} delivers no connector type");
        }
        assert_eq!(ConnectorKind::from_type_name("ftp"), None);
        assert!("ftp".parse::<JobKind>().unwrap_err().to_string().contains("expected s3, email, gcs or sheets"));
    }

    #[test]
    fn the_design_routes_each_connector_type_to_its_deliverer() {
        let routes: Vec<(&str, &str)> =
            ConnectorKind::ALL.into_iter().map(|kind| (kind.type_name(), kind.job_kind().function())).collect();
        assert_eq!(
            routes,
            [
                ("email", "deliver-email"),
                ("s3-role", "deliver-s3"),
                ("s3-keys", "deliver-s3"),
                ("s3-bucket-policy", "deliver-s3"),
                ("gcs", "deliver-gcs"),
                ("google-sheets", "deliver-sheets"),
            ]
        );
    }
}
