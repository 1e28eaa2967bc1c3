//! Parsing one connector of a tenant secret, by its `type`: the fields the
//! connector registry lists for that type, each checked for its format,
//! credentials wrapped in [`SecretString`] as soon as they are read. A
//! Google key file is checked here too, also for the secret that holds our
//! own key. Nothing a credential holds is ever echoed in an error.

use serde_json::Value;

use super::errors::{Problems, TenantErrors};
use super::formats::*;
use super::json::{
    child_path, describe, expect_array, expect_integer, expect_object, expect_str, in_range, json_reason, Fields,
};
use super::limits::*;
use super::model::{
    Connector, EmailConnector, GcsConnector, GcsServiceAccount, S3Destination, S3KeysConnector, S3RoleConnector,
    SecretString, SheetsConnector,
};
use crate::connector_registry::ConnectorKind;
use crate::store::normalise_prefix;

/// A Google service account key file (JSON text), checked as a gcs
/// connector's `serviceAccountJson` is: what deliver-sheets reads from the
/// secret holding *our* key.
pub fn parse_service_account_key(json: &str) -> Result<GcsServiceAccount, TenantErrors> {
    let mut problems = Problems::default();
    let key = parse_service_account(&mut problems, "(key file)", &Value::String(json.to_owned()));
    match key {
        Some(key) if problems.0.is_empty() => Ok(key),
        _ => {
            if problems.0.is_empty() {
                problems.add("(key file)", "is not a service account key file");
            }
            Err(TenantErrors { errors: problems.0 })
        }
    }
}

/// Returns the connector's type when it could be read, and the connector
/// when the whole of it is valid.
///
/// `tenant_id` is the secret's own id when that could be read: an
/// `externalId` must have been generated for it.
pub(super) fn parse_connector(
    problems: &mut Problems,
    path: &str,
    value: &Value,
    tenant_id: Option<&str>,
) -> (Option<ConnectorKind>, Option<Connector>) {
    let Some(map) = expect_object(problems, path, value) else { return (None, None) };
    let fields = Fields { map, path };
    let type_list = ConnectorKind::ALL.map(ConnectorKind::type_name).join(", ");
    let kind =
        fields.required_str(problems, "type", &format!("required (one of {type_list})"), false).and_then(|name| {
            let kind = ConnectorKind::from_type_name(name);
            if kind.is_none() {
                problems.add(&child_path(path, "type"), format!("{name:?} is not one of {type_list}"));
            }
            kind
        });
    let Some(kind) = kind else { return (None, None) };

    let required = format!("required for {}", kind.type_name());
    let connector = match kind {
        ConnectorKind::Email => parse_recipients(problems, &fields, &required)
            .map(|recipients| Connector::Email(EmailConnector { recipients })),
        ConnectorKind::S3Role => {
            let destination = parse_s3_destination(problems, &fields, &required, OwnerAccount::Optional);
            let role_arn = fields.required_str(problems, "roleArn", &required, false).and_then(|arn| {
                if is_iam_role_arn(arn) {
                    Some(arn.to_owned())
                } else {
                    problems.add(
                        &child_path(path, "roleArn"),
                        format!("{arn:?} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"),
                    );
                    None
                }
            });
            let external_id = fields
                .required_str(
                    problems,
                    "externalId",
                    &format!("{required} (the sts:ExternalId the role's trust policy requires)"),
                    true,
                )
                .and_then(|id| {
                    // Only our own ids are accepted: one bound to this
                    // tenant, so no two tenants (and no guessable value)
                    // can open the same role. The value is never echoed.
                    let shape_ok = match tenant_id {
                        Some(tenant_id) => is_external_id_of(tenant_id, id),
                        None => is_external_id_shape(id),
                    };
                    if shape_ok {
                        Some(SecretString::new(id))
                    } else {
                        let tenant = tenant_id.unwrap_or("<tenantId>");
                        problems.add(
                            &child_path(path, "externalId"),
                            format!(
                                "is not one of ours: it must be pr-{tenant}-<32 lowercase hex>; generate one with \
                                 `popularity tenant external-id {tenant}` and put it in the role's trust policy \
                                 (sts:ExternalId) before replacing the old one"
                            ),
                        );
                        None
                    }
                });
            match (destination, role_arn, external_id) {
                (Some(destination), Some(role_arn), Some(external_id)) => {
                    Some(Connector::S3Role(S3RoleConnector { destination, role_arn, external_id }))
                }
                _ => None,
            }
        }
        ConnectorKind::S3Keys => {
            let destination = parse_s3_destination(problems, &fields, &required, OwnerAccount::Optional);
            let access_key_id = fields.required_str(problems, "accessKeyId", &required, true).and_then(|id| {
                let message = if id.starts_with("ASIA") {
                    "is not valid: it is a temporary (ASIA…) key that expires; give a long-term IAM user key (AKIA…)"
                } else if !is_long_term_access_key_id(id) {
                    "is not valid (a long-term IAM user key id: AKIA followed by 12 to 124 uppercase letters and digits)"
                } else {
                    return Some(SecretString::new(id));
                };
                problems.add(&child_path(path, "accessKeyId"), message);
                None
            });
            let secret_access_key = fields.required_str(problems, "secretAccessKey", &required, true).and_then(|key| {
                if is_secret_access_key(key) {
                    Some(SecretString::new(key))
                } else {
                    problems.add(
                        &child_path(path, "secretAccessKey"),
                        "is not valid (40 characters: letters, digits, '/' and '+')",
                    );
                    None
                }
            });
            match (destination, access_key_id, secret_access_key) {
                (Some(destination), Some(access_key_id), Some(secret_access_key)) => {
                    Some(Connector::S3Keys(S3KeysConnector { destination, access_key_id, secret_access_key }))
                }
                _ => None,
            }
        }
        ConnectorKind::S3BucketPolicy => {
            parse_s3_destination(problems, &fields, &required, OwnerAccount::Required).map(Connector::S3BucketPolicy)
        }
        ConnectorKind::Gcs => {
            let bucket = fields.required_str(problems, "bucket", &required, false).and_then(|bucket| {
                if is_gcs_bucket_name(bucket) {
                    Some(bucket.to_owned())
                } else {
                    problems.add(
                        &child_path(path, "bucket"),
                        format!(
                            "{bucket:?} is not a GCS bucket name (3 to 63 characters: lowercase letters, digits, \
                             '-', '_' and '.', starting and ending with a letter or digit)"
                        ),
                    );
                    None
                }
            });
            let prefix = parse_prefix(problems, &fields);
            // Without a key file the connector is keyless: we write as the
            // tenant's own Google identity.
            let service_account = match fields.get("serviceAccountJson") {
                None => Some(None),
                Some(v) => parse_service_account(problems, &child_path(path, "serviceAccountJson"), v).map(Some),
            };
            match (bucket, prefix, service_account) {
                (Some(bucket), Some(prefix), Some(service_account)) => {
                    Some(Connector::Gcs(GcsConnector { bucket, prefix, service_account }))
                }
                _ => None,
            }
        }
        ConnectorKind::GoogleSheets => {
            let url = fields.required_str(problems, "spreadsheetUrl", &required, false).and_then(|url| {
                let id = spreadsheet_id(url);
                if id.is_none() {
                    problems.add(
                        &child_path(path, "spreadsheetUrl"),
                        format!(
                            "{url:?} is not a Google Sheets URL (https://docs.google.com/spreadsheets/d/<id>/edit)"
                        ),
                    );
                }
                id.map(|id| (url.to_owned(), id.to_owned()))
            });
            let max_rows = match fields.get("maxRows") {
                None => {
                    problems.add(&child_path(path, "maxRows"), format!("{required} (rows per report, 1 to 3,333,329)"));
                    None
                }
                Some(v) => {
                    let max_rows_path = child_path(path, "maxRows");
                    expect_integer(problems, &max_rows_path, v).and_then(|n| {
                        in_range(
                            problems,
                            &max_rows_path,
                            n,
                            1,
                            MAX_SHEET_ROWS,
                            "3,333,329 (a tab of that many rows and 3 columns fills Google's 10,000,000 cells)",
                        )
                    })
                }
            };
            match (url, max_rows) {
                (Some((spreadsheet_url, spreadsheet_id)), Some(max_rows)) => {
                    Some(Connector::GoogleSheets(SheetsConnector { spreadsheet_url, spreadsheet_id, max_rows }))
                }
                _ => None,
            }
        }
    };

    // When the self-service API last set the credentials: shown beside
    // their fingerprint, never used for delivery.
    if let Some(value) = fields.get("credentialsUpdatedAt") {
        let at_path = child_path(path, "credentialsUpdatedAt");
        if let Some(text) = expect_str(problems, &at_path, value, false) {
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                problems.add(&at_path, format!("{text:?} is not an RFC 3339 time (like 2026-12-07T10:00:00Z)"));
            }
        }
    }

    fields.reject_unknown(problems, kind.fields(), |field| {
        // A field of another connector type is the likeliest mistake: say so.
        ConnectorKind::ALL.into_iter().any(|k| k.fields().contains(&field)).then(|| {
            format!("unknown field for {} connectors (their fields: {})", kind.type_name(), kind.fields().join(", "))
        })
    });
    (Some(kind), connector)
}

pub(super) fn parse_recipients(problems: &mut Problems, fields: &Fields<'_>, required: &str) -> Option<Vec<String>> {
    let path = child_path(fields.path, "recipients");
    let Some(value) = fields.get("recipients") else {
        problems.add(&path, format!("{required} (an array of email addresses)"));
        return None;
    };
    let items = expect_array(problems, &path, value)?;
    if items.is_empty() {
        problems.add(&path, "must list at least one email address");
        return None;
    }
    if items.len() > MAX_EMAIL_RECIPIENTS {
        problems.add(&path, format!("{} recipients exceed the limit of {MAX_EMAIL_RECIPIENTS}", items.len()));
    }
    let before = problems.0.len();
    let mut recipients: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(address) = expect_str(problems, &item_path, item, false) else { continue };
        if !is_email_address(address) {
            problems.add(&item_path, format!("{address:?} is not an email address"));
        } else if recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
            problems.add(&item_path, format!("duplicate recipient {address:?}"));
        } else {
            recipients.push(address.to_owned());
        }
    }
    (problems.0.len() == before).then_some(recipients)
}

/// Whether an S3 destination must name the account that owns its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnerAccount {
    Optional,
    /// `s3-bucket-policy`: our own credentials do the writing, so a bucket
    /// of that name re-created in another account must never receive it.
    Required,
}

pub(super) fn parse_s3_destination(
    problems: &mut Problems,
    fields: &Fields<'_>,
    required: &str,
    owner: OwnerAccount,
) -> Option<S3Destination> {
    let bucket = fields.required_str(problems, "bucketArn", required, false).and_then(|arn| {
        let message = match s3_bucket_of_arn(arn) {
            Ok(bucket) => return Some((arn.to_owned(), bucket.to_owned())),
            Err(BucketArnProblem::ObjectArn) => {
                format!("{arn:?} names objects, not a bucket: give arn:aws:s3:::<bucket> and put the path in prefix")
            }
            Err(BucketArnProblem::NotAnArn) => format!("{arn:?} is not an S3 bucket ARN (arn:aws:s3:::<bucket>)"),
            Err(BucketArnProblem::BadBucketName) => format!(
                "{arn:?} is not an S3 bucket ARN (arn:aws:s3:::<bucket>): the bucket name must be 3 to 63 \
                 characters of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
            ),
        };
        problems.add(&child_path(fields.path, "bucketArn"), message);
        None
    });
    let region = fields.required_str(problems, "region", required, false).and_then(|region| {
        if is_aws_region(region) {
            Some(region.to_owned())
        } else {
            problems
                .add(&child_path(fields.path, "region"), format!("{region:?} is not an AWS region (like eu-west-1)"));
            None
        }
    });
    let prefix = parse_prefix(problems, fields);
    let owner_path = child_path(fields.path, "bucketOwnerAccountId");
    let bucket_owner = match fields.get("bucketOwnerAccountId") {
        None if owner == OwnerAccount::Required => {
            problems.add(
                &owner_path,
                format!(
                    "{required}: add \"bucketOwnerAccountId\": \"<the 12-digit account that owns the bucket>\" \
                     (it is sent as ExpectedBucketOwner, so our writer never writes into a bucket of the same \
                     name in another account; tenants onboarded before it was required must add it to keep \
                     delivering)"
                ),
            );
            None
        }
        None => Some(None),
        Some(value) => expect_str(problems, &owner_path, value, false).and_then(|id| {
            if is_account_id(id) {
                Some(Some(id.to_owned()))
            } else {
                problems.add(&owner_path, format!("{id:?} is not a 12-digit AWS account id"));
                None
            }
        }),
    };
    match (bucket, region, prefix, bucket_owner) {
        (Some((bucket_arn, bucket)), Some(region), Some(prefix), Some(bucket_owner)) => {
            Some(S3Destination { bucket_arn, bucket, region, prefix, bucket_owner })
        }
        _ => None,
    }
}

pub(super) fn parse_prefix(problems: &mut Problems, fields: &Fields<'_>) -> Option<String> {
    let path = child_path(fields.path, "prefix");
    let Some(value) = fields.get("prefix") else { return Some(String::new()) };
    let raw = expect_str(problems, &path, value, false)?;
    let prefix = normalise_prefix(raw);
    if prefix.chars().any(char::is_control) {
        problems.add(&path, "must not contain control characters");
        None
    } else if prefix.split('/').any(|segment| segment == "." || segment == "..") {
        problems.add(&path, format!("{raw:?} must not contain '.' or '..' segments"));
        None
    } else if prefix.len() > MAX_PREFIX_BYTES {
        problems.add(&path, format!("is {} bytes long, above the limit of {MAX_PREFIX_BYTES}", prefix.len()));
        None
    } else {
        Some(prefix)
    }
}

/// `serviceAccountJson` is the key file Google hands out, either embedded as
/// an object or as a string holding its JSON. Nothing inside is echoed.
pub(super) fn parse_service_account(problems: &mut Problems, path: &str, value: &Value) -> Option<GcsServiceAccount> {
    let parsed;
    let key = match value {
        Value::Object(map) => map,
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                parsed = map;
                &parsed
            }
            Ok(_) => {
                problems.add(path, "is not valid: expected a service account key file (a JSON object)");
                return None;
            }
            Err(e) => {
                problems.add(
                    path,
                    format!(
                        "is not valid JSON at line {} column {} of the key file: {}",
                        e.line(),
                        e.column(),
                        json_reason(&e)
                    ),
                );
                return None;
            }
        },
        other => {
            problems.add(
                path,
                format!(
                    "expected a service account key file (a JSON object, or a string holding one), found {}",
                    describe(other, true)
                ),
            );
            return None;
        }
    };
    let fields = Fields { map: key, path };
    let before = problems.0.len();
    match fields.get("type") {
        Some(Value::String(t)) if t == "service_account" => {}
        Some(_) => problems.add(&child_path(path, "type"), "is not valid (expected \"service_account\")"),
        None => problems.add(&child_path(path, "type"), "required (\"service_account\")"),
    }
    let client_email = match fields.get("client_email") {
        Some(Value::String(email)) if is_email_address(email) => Some(email.clone()),
        Some(_) => {
            problems
                .add(&child_path(path, "client_email"), "is not valid (expected the service account's email address)");
            None
        }
        None => {
            problems.add(&child_path(path, "client_email"), "required in a service account key");
            None
        }
    };
    match fields.get("private_key") {
        Some(Value::String(pem)) if pem.contains("-----BEGIN PRIVATE KEY-----") => {}
        Some(_) => problems.add(&child_path(path, "private_key"), "is not valid (expected a PEM private key)"),
        None => problems.add(&child_path(path, "private_key"), "required in a service account key"),
    }
    match fields.get("private_key_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => {}
        Some(_) => problems.add(&child_path(path, "private_key_id"), "is not valid (expected the key's id)"),
        None => problems.add(&child_path(path, "private_key_id"), "required in a service account key"),
    }
    match fields.get("token_uri") {
        None => {}
        Some(Value::String(uri)) if uri == GOOGLE_TOKEN_URI => {}
        Some(_) => problems.add(
            &child_path(path, "token_uri"),
            format!("is not Google's token endpoint ({GOOGLE_TOKEN_URI}); a key file must not point elsewhere"),
        ),
    }
    let client_email = client_email.filter(|_| problems.0.len() == before)?;
    let key_json = match value {
        Value::String(text) => text.clone(),
        _ => value.to_string(),
    };
    Some(GcsServiceAccount { client_email, key_json: SecretString::new(key_json) })
}
