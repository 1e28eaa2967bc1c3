//! Tests of tenant parsing: the documented example, every field's rules,
//! and that no error message echoes a credential.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::formats::*;
use super::*;
use crate::domain::{Compression, Encoding, Format, ReportKind};
use crate::manifest::DeliveryMode;

/// The example of docs/design.md, "Tenants", verbatim.
const CONTRACT_EXAMPLE: &str = r#"{
  "schemaVersion": 1,
  "tenantId": "acme",
  "plan": "standard",
  "enabled": true,
  "connectors": {
    "inbox": {"type": "email", "recipients": ["data@acme.example"]},
    "lake":  {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data",
              "region": "eu-west-1", "prefix": "massive/",
              "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery",
              "externalId": "pr-acme-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b"}
  },
  "feeds": [
    {"id": "all", "connector": "lake"},
    {"id": "weekly-tracks", "connector": "inbox", "reports": ["track"],
     "format": "tsv", "mode": "delta", "intervalSeconds": 604800}
  ]
}"#;

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EXTERNAL_ID: &str = "pr-acme-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b";
const PRIVATE_KEY_MARKER: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";

fn service_account_key() -> Value {
    serde_json::json!({
        "type": "service_account",
        "project_id": "acme-analytics",
        "private_key_id": "0123456789abcdef",
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{PRIVATE_KEY_MARKER}\n-----END PRIVATE KEY-----\n"),
        "client_email": "feeds@acme-analytics.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
}

/// A valid secret with one connector of every type and a feed for each.
fn every_connector_type() -> Value {
    serde_json::json!({
        "schemaVersion": 1,
        "tenantId": "acme",
        "plan": "enterprise",
        "connectors": {
            "inbox": {"type": "email", "recipients": ["data@acme.example", "ops@acme.example"]},
            "lake": {"type": "s3-role", "bucketArn": "arn:aws:s3:::acme-data", "region": "eu-west-1",
                     "prefix": "massive", "roleArn": "arn:aws:iam::111122223333:role/popularity-delivery",
                     "externalId": EXTERNAL_ID, "bucketOwnerAccountId": "111122223333"},
            "keys": {"type": "s3-keys", "bucketArn": "arn:aws:s3:::acme-keys", "region": "us-east-1",
                     "accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY},
            "policy": {"type": "s3-bucket-policy", "bucketArn": "arn:aws:s3:::acme-open", "region": "us-gov-west-1",
                       "prefix": "/in/bound/", "bucketOwnerAccountId": "444455556666"},
            "gcs": {"type": "gcs", "bucket": "acme-feeds", "prefix": "popularity/",
                    "serviceAccountJson": service_account_key()},
            "sheet": {"type": "google-sheets",
                      "spreadsheetUrl": "https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit#gid=0",
                      "maxRows": 1000}
        },
        "feeds": [
            {"id": "mail", "connector": "inbox"},
            {"id": "role", "connector": "lake", "compression": "gzip"},
            {"id": "keys", "connector": "keys", "format": "jsonl"},
            {"id": "policy", "connector": "policy"},
            {"id": "gcs", "connector": "gcs", "format": "tsv", "mode": "delta", "intervalSeconds": 3600},
            {"id": "sheet", "connector": "sheet", "reports": ["product", "track"]}
        ]
    })
}

fn errors_of(value: &Value) -> Vec<FieldError> {
    match parse_tenant_secret("acme", &value.to_string()) {
        Ok(config) => panic!("expected errors, parsed {config:?}"),
        Err(errors) => errors.errors().to_vec(),
    }
}

/// Applies `edit` to a copy of the contract's example.
fn design_example_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut value: Value = serde_json::from_str(CONTRACT_EXAMPLE).unwrap();
    edit(&mut value);
    value
}

#[test]
fn a_connector_with_its_bucket_owner_gets_no_suggestion() {
    let value = design_example_with(|v| v["connectors"]["lake"]["bucketOwnerAccountId"] = "111122223333".into());
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    assert!(config.suggestions().is_empty(), "{:?}", config.suggestions());
}

#[test]
fn design_example_parses_with_the_documented_defaults() {
    let config = parse_tenant_secret("acme", CONTRACT_EXAMPLE).unwrap();
    assert_eq!(config.schema_version, 1);
    assert_eq!(config.tenant_id, "acme");
    assert_eq!(config.plan, Plan::Standard);
    assert!(config.enabled);
    assert_eq!(config.connectors.len(), 2);

    let Connector::Email(inbox) = &config.connectors["inbox"] else { panic!("inbox is not email") };
    assert_eq!(inbox.recipients, ["data@acme.example"]);
    let Connector::S3Role(lake) = &config.connectors["lake"] else { panic!("lake is not s3-role") };
    assert_eq!(lake.destination.bucket, "acme-data");
    assert_eq!(lake.destination.bucket_arn, "arn:aws:s3:::acme-data");
    assert_eq!(lake.destination.region, "eu-west-1");
    assert_eq!(lake.destination.prefix, "massive/");
    assert_eq!(lake.role_arn, "arn:aws:iam::111122223333:role/popularity-delivery");
    assert_eq!(lake.external_id.expose_secret(), EXTERNAL_ID);
    let suggestions = config.suggestions();
    assert_eq!(suggestions.len(), 1, "{suggestions:?}");
    assert!(suggestions[0].starts_with("connectors.lake.bucketOwnerAccountId is not set"), "{suggestions:?}");
    assert!(suggestions[0].contains("\"bucketOwnerAccountId\": \"111122223333\""), "{suggestions:?}");

    let all = &config.feeds[0];
    assert_eq!(all.id, "all");
    assert_eq!(all.connector, "lake");
    assert_eq!(all.reports, ReportKind::ALL);
    assert_eq!(all.encoding, Encoding { format: Format::Json, compression: Compression::None });
    assert_eq!(all.mode, DeliveryMode::Full);
    assert_eq!(all.interval_seconds, None);

    let weekly = &config.feeds[1];
    assert_eq!(weekly.id, "weekly-tracks");
    assert_eq!(weekly.connector, "inbox");
    assert_eq!(weekly.reports, [ReportKind::Track]);
    assert_eq!(weekly.encoding, Encoding { format: Format::Tsv, compression: Compression::None });
    assert_eq!(weekly.mode, DeliveryMode::Delta);
    assert_eq!(weekly.interval_seconds, Some(604_800));
    assert_eq!(weekly.full_every_seconds, Some(DEFAULT_FULL_EVERY_SECONDS), "delta feeds get the default");
    assert_eq!(all.full_every_seconds, None, "full feeds have none");
    assert_eq!(config.connector_of(weekly).map(Connector::kind), Some(ConnectorKind::Email));
}

#[test]
fn a_feed_with_only_a_connector_gets_id_default_and_every_default() {
    let value = design_example_with(|v| v["feeds"] = serde_json::json!([{"connector": "lake"}]));
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    let feed = &config.feeds[0];
    assert_eq!(feed.id, DEFAULT_FEED_ID);
    assert_eq!(feed.reports, ReportKind::ALL);
    assert_eq!(feed.encoding, Encoding::default());
    assert_eq!(feed.mode, DeliveryMode::Full);
    assert_eq!(feed.interval_seconds, None);
}

#[test]
fn enabled_defaults_to_true_and_prefix_to_empty() {
    let value = design_example_with(|v| {
        v.as_object_mut().unwrap().remove("enabled");
        v["connectors"]["lake"].as_object_mut().unwrap().remove("prefix");
    });
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    assert!(config.enabled);
    assert_eq!(config.connectors["lake"].s3_destination().unwrap().prefix, "");
}

#[test]
fn every_connector_type_parses_and_maps_to_its_job_kind() {
    let config = parse_tenant_secret("acme", &every_connector_type().to_string()).unwrap();
    let kinds: BTreeMap<&str, (ConnectorKind, &str)> =
        config.connectors.iter().map(|(name, c)| (name.as_str(), (c.kind(), c.kind().job_kind().as_str()))).collect();
    assert_eq!(kinds["inbox"], (ConnectorKind::Email, "email"));
    assert_eq!(kinds["lake"], (ConnectorKind::S3Role, "s3"));
    assert_eq!(kinds["keys"], (ConnectorKind::S3Keys, "s3"));
    assert_eq!(kinds["policy"], (ConnectorKind::S3BucketPolicy, "s3"));
    assert_eq!(kinds["gcs"], (ConnectorKind::Gcs, "gcs"));
    assert_eq!(kinds["sheet"], (ConnectorKind::GoogleSheets, "sheets"));

    assert_eq!(config.connectors["lake"].s3_destination().unwrap().prefix, "massive/");
    assert_eq!(config.connectors["lake"].s3_destination().unwrap().bucket_owner.as_deref(), Some("111122223333"));
    assert_eq!(config.connectors["policy"].s3_destination().unwrap().prefix, "in/bound/");
    assert_eq!(config.connectors["policy"].s3_destination().unwrap().bucket_owner.as_deref(), Some("444455556666"));
    let Connector::Gcs(gcs) = &config.connectors["gcs"] else { panic!("gcs") };
    assert_eq!(gcs.service_account.as_ref().unwrap().client_email, "feeds@acme-analytics.iam.gserviceaccount.com");
    let key: Value = serde_json::from_str(gcs.service_account.as_ref().unwrap().key_json.expose_secret()).unwrap();
    assert_eq!(key, service_account_key());
    let Connector::GoogleSheets(sheet) = &config.connectors["sheet"] else { panic!("sheet") };
    assert_eq!(sheet.spreadsheet_id, "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms");
    assert_eq!(sheet.max_rows, 1000);
    // Reports come out in canonical order whatever order they are listed in.
    assert_eq!(config.feeds[5].reports, [ReportKind::Track, ReportKind::Product]);
    assert_eq!(config.feeds[1].encoding.compression, Compression::Gzip);
}

#[test]
fn a_service_account_key_given_as_a_json_string_is_accepted() {
    let mut value = every_connector_type();
    value["connectors"]["gcs"]["serviceAccountJson"] = Value::String(service_account_key().to_string());
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    let Connector::Gcs(gcs) = &config.connectors["gcs"] else { panic!("gcs") };
    assert_eq!(gcs.service_account.as_ref().unwrap().key_json.expose_secret(), service_account_key().to_string());
}

#[test]
fn a_sheets_connector_is_told_to_share_with_the_tenants_own_address() {
    let config = parse_tenant_secret("acme", &every_connector_type().to_string()).unwrap();
    let suggestions = config.suggestions();
    assert!(
        suggestions.iter().any(|s| s.starts_with("connectors.sheet:") && s.contains("tenant google-identity acme")),
        "{suggestions:?}"
    );
}

#[test]
fn a_gcs_connector_without_a_key_is_keyless() {
    let mut value = every_connector_type();
    value["connectors"]["gcs"].as_object_mut().unwrap().remove("serviceAccountJson");
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    let Connector::Gcs(gcs) = &config.connectors["gcs"] else { panic!("gcs") };
    assert!(gcs.service_account.is_none());
    // A key that is there must still be a valid one.
    value["connectors"]["gcs"]["serviceAccountJson"] = serde_json::json!({"type": "service_account"});
    assert!(parse_tenant_secret("acme", &value.to_string()).is_err());
}

/// Each case: the edit that breaks a valid secret, the exact path of the
/// expected error, and a fragment of its message.
#[test]
fn malformed_secrets_are_rejected_with_the_path_and_reason() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "feed names a missing connector",
            |v| v["feeds"][1]["connector"] = "lake2".into(),
            "feeds[1].connector",
            "no connector named \"lake2\"",
        ),
        (
            "s3-role without externalId",
            |v| {
                v["connectors"]["lake"].as_object_mut().unwrap().remove("externalId");
            },
            "connectors.lake.externalId",
            "required for s3-role",
        ),
        (
            "interval below one hour",
            |v| v["feeds"][0]["intervalSeconds"] = 120.into(),
            "feeds[0].intervalSeconds",
            "120 is below 3600",
        ),
        (
            "interval above one week",
            |v| v["feeds"][0]["intervalSeconds"] = 604_801.into(),
            "feeds[0].intervalSeconds",
            "604801 is above 604800",
        ),
        (
            "recipient without domain",
            |v| v["connectors"]["inbox"]["recipients"][0] = "data@".into(),
            "connectors.inbox.recipients[0]",
            "\"data@\" is not an email address",
        ),
        (
            "role ARN with a short account",
            |v| v["connectors"]["lake"]["roleArn"] = "arn:aws:iam::1:role/x".into(),
            "connectors.lake.roleArn",
            "\"arn:aws:iam::1:role/x\" is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)",
        ),
        (
            "bucket given by name, not ARN",
            |v| v["connectors"]["lake"]["bucketArn"] = "acme-data".into(),
            "connectors.lake.bucketArn",
            "is not an S3 bucket ARN (arn:aws:s3:::<bucket>)",
        ),
        (
            "tenant id differs from the secret name",
            |v| v["tenantId"] = "acme2".into(),
            "tenantId",
            "\"acme2\" does not match the secret name suffix \"acme\"",
        ),
        (
            "future schema version",
            |v| v["schemaVersion"] = 2.into(),
            "schemaVersion",
            "2 is not supported (expected 1)",
        ),
        (
            "misspelt connector field",
            |v| {
                let lake = v["connectors"]["lake"].as_object_mut().unwrap();
                let arn = lake.remove("roleArn").unwrap();
                lake.insert("rolArn".into(), arn);
            },
            "connectors.lake.rolArn",
            "unknown field (did you mean \"roleArn\"?)",
        ),
        (
            "enabled as a string",
            |v| v["enabled"] = "yes".into(),
            "enabled",
            "expected true or false, found \"yes\"",
        ),
        (
            "two feeds with one id",
            |v| v["feeds"][1]["id"] = "all".into(),
            "feeds[1].id",
            "duplicate feed id \"all\"",
        ),
        (
            "unknown report",
            |v| v["feeds"][1]["reports"] = serde_json::json!(["track", "albums"]),
            "feeds[1].reports[1]",
            "\"albums\" is not one of track, artist, product",
        ),
        (
            "missing tenant id",
            |v| {
                v.as_object_mut().unwrap().remove("tenantId");
            },
            "tenantId",
            "required",
        ),
        (
            "tenant id unsafe in S3 keys",
            |v| v["tenantId"] = "Acme/../x".into(),
            "tenantId",
            "is not a valid tenant id",
        ),
        (
            "feed id unsafe in S3 keys",
            |v| v["feeds"][0]["id"] = "All Reports".into(),
            "feeds[0].id",
            "\"All Reports\" is not a valid feed id",
        ),
        (
            "region not like eu-west-1",
            |v| v["connectors"]["lake"]["region"] = "Ireland".into(),
            "connectors.lake.region",
            "\"Ireland\" is not an AWS region (like eu-west-1)",
        ),
        (
            "unknown plan",
            |v| v["plan"] = "gold".into(),
            "plan",
            "\"gold\" is not one of trial, standard, enterprise",
        ),
        (
            "more feeds than the trial plan allows",
            |v| v["plan"] = "trial".into(),
            "feeds",
            "2 active feeds exceed the trial plan's limit of 1",
        ),
        (
            "unknown connector type",
            |v| v["connectors"]["inbox"]["type"] = "ftp".into(),
            "connectors.inbox.type",
            "\"ftp\" is not one of email, s3-role, s3-keys, s3-bucket-policy, gcs, google-sheets",
        ),
        (
            "field of another connector type",
            |v| v["connectors"]["inbox"]["bucketArn"] = "arn:aws:s3:::acme-data".into(),
            "connectors.inbox.bucketArn",
            "unknown field for email connectors (their fields: type, recipients)",
        ),
        (
            "unknown top-level field",
            |v| v["feed"] = serde_json::json!([]),
            "feed",
            "unknown field (did you mean \"feeds\"?)",
        ),
        (
            "unknown format",
            |v| v["feeds"][1]["format"] = "csv".into(),
            "feeds[1].format",
            "\"csv\" is not one of json, jsonl, tsv",
        ),
        (
            "unknown mode",
            |v| v["feeds"][0]["mode"] = "incremental".into(),
            "feeds[0].mode",
            "\"incremental\" is not one of full, delta",
        ),
        (
            "two feeds into one folder",
            |v| v["feeds"].as_array_mut().unwrap().push(serde_json::json!({"id": "again", "connector": "lake", "reports": ["track"]})),
            "feeds[2]",
            "writes to s3://acme-data/massive/ where feed \"all\" (feeds[0]) writes to s3://acme-data/massive/: two feeds would write the same objects",
        ),
        (
            "fullEverySeconds on a full feed",
            |v| v["feeds"][0]["fullEverySeconds"] = 604_800.into(),
            "feeds[0].fullEverySeconds",
            "applies only to delta feeds (\"mode\": \"delta\"); a full feed is always full",
        ),
        (
            "fullEverySeconds below a week",
            |v| v["feeds"][1]["fullEverySeconds"] = 3_600.into(),
            "feeds[1].fullEverySeconds",
            "3600 is below 604800",
        ),
        (
            "fullEverySeconds above 90 days",
            |v| v["feeds"][1]["fullEverySeconds"] = 7_776_001.into(),
            "feeds[1].fullEverySeconds",
            "7776001 is above 7776000 (90 days)",
        ),
        (
            "interval as a string",
            |v| v["feeds"][0]["intervalSeconds"] = "3600".into(),
            "feeds[0].intervalSeconds",
            "expected a whole number, found \"3600\"",
        ),
        (
            "no recipients",
            |v| v["connectors"]["inbox"]["recipients"] = serde_json::json!([]),
            "connectors.inbox.recipients",
            "must list at least one email address",
        ),
        (
            "object ARN instead of bucket ARN",
            |v| v["connectors"]["lake"]["bucketArn"] = "arn:aws:s3:::acme-data/massive".into(),
            "connectors.lake.bucketArn",
            "names objects, not a bucket",
        ),
        (
            "empty reports list",
            |v| v["feeds"][0]["reports"] = serde_json::json!([]),
            "feeds[0].reports",
            "must name at least one report",
        ),
        (
            "a report listed twice",
            |v| v["feeds"][0]["reports"] = serde_json::json!(["artist", "artist"]),
            "feeds[0].reports[1]",
            "duplicate report \"artist\"",
        ),
        (
            "connectors as an array",
            |v| v["connectors"] = serde_json::json!([]),
            "connectors",
            "expected an object, found an array",
        ),
        (
            "feed that is not an object",
            |v| v["feeds"][0] = "lake".into(),
            "feeds[0]",
            "expected an object, found \"lake\"",
        ),
        (
            "connector name unsafe",
            |v| {
                let connectors = v["connectors"].as_object_mut().unwrap();
                let inbox = connectors.remove("inbox").unwrap();
                connectors.insert("In Box".into(), inbox);
            },
            "connectors[\"In Box\"]",
            "is not a valid connector name",
        ),
    ];
    assert!(cases.len() >= 15);
    for (case, edit, path, fragment) in cases {
        let errors = errors_of(&design_example_with(edit));
        assert!(
            errors.iter().any(|e| e.path == path && e.message.contains(fragment)),
            "{case}: expected `{path}: …{fragment}…`, got {errors:#?}"
        );
    }
}

#[test]
fn malformed_connectors_of_every_type_are_rejected_with_the_path_and_reason() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "sheet maxRows zero",
            |v| v["connectors"]["sheet"]["maxRows"] = 0.into(),
            "connectors.sheet.maxRows",
            "0 is below 1",
        ),
        (
            "sheet maxRows above ten million",
            |v| v["connectors"]["sheet"]["maxRows"] = 10_000_001.into(),
            "connectors.sheet.maxRows",
            "10000001 is above 3,333,329",
        ),
        (
            "sheet URL elsewhere",
            |v| v["connectors"]["sheet"]["spreadsheetUrl"] = "https://example.com/sheet".into(),
            "connectors.sheet.spreadsheetUrl",
            "is not a Google Sheets URL",
        ),
        (
            "gcs key of the wrong type",
            |v| v["connectors"]["gcs"]["serviceAccountJson"]["type"] = "authorized_user".into(),
            "connectors.gcs.serviceAccountJson.type",
            "expected \"service_account\"",
        ),
        (
            "gcs key without private key",
            |v| {
                v["connectors"]["gcs"]["serviceAccountJson"].as_object_mut().unwrap().remove("private_key");
            },
            "connectors.gcs.serviceAccountJson.private_key",
            "required",
        ),
        (
            "gcs key without client email",
            |v| {
                v["connectors"]["gcs"]["serviceAccountJson"].as_object_mut().unwrap().remove("client_email");
            },
            "connectors.gcs.serviceAccountJson.client_email",
            "required",
        ),
        (
            "gcs key with a foreign token endpoint",
            |v| v["connectors"]["gcs"]["serviceAccountJson"]["token_uri"] = "https://evil.example/token".into(),
            "connectors.gcs.serviceAccountJson.token_uri",
            "is not Google's token endpoint (https://oauth2.googleapis.com/token)",
        ),
        (
            "gcs key without a key id",
            |v| {
                v["connectors"]["gcs"]["serviceAccountJson"].as_object_mut().unwrap().remove("private_key_id");
            },
            "connectors.gcs.serviceAccountJson.private_key_id",
            "required",
        ),
        (
            "bucket owner that is not an account id",
            |v| v["connectors"]["lake"]["bucketOwnerAccountId"] = "1111-2222-3333".into(),
            "connectors.lake.bucketOwnerAccountId",
            "is not a 12-digit AWS account id",
        ),
        (
            "gcs key that is not JSON",
            |v| v["connectors"]["gcs"]["serviceAccountJson"] = "{not json".into(),
            "connectors.gcs.serviceAccountJson",
            "is not valid JSON at line 1 column 2 of the key file",
        ),
        (
            "gcs bucket with uppercase",
            |v| v["connectors"]["gcs"]["bucket"] = "Acme".into(),
            "connectors.gcs.bucket",
            "is not a GCS bucket name",
        ),
        (
            "temporary access key",
            |v| v["connectors"]["keys"]["accessKeyId"] = "ASIAIOSFODNN7EXAMPLE".into(),
            "connectors.keys.accessKeyId",
            "temporary (ASIA…) key",
        ),
        (
            "short secret access key",
            |v| v["connectors"]["keys"]["secretAccessKey"] = "too-short".into(),
            "connectors.keys.secretAccessKey",
            "is not valid (40 characters",
        ),
        (
            "s3-keys without secret",
            |v| {
                v["connectors"]["keys"].as_object_mut().unwrap().remove("secretAccessKey");
            },
            "connectors.keys.secretAccessKey",
            "required for s3-keys",
        ),
        (
            "bucket-policy without its owner account",
            |v| {
                v["connectors"]["policy"].as_object_mut().unwrap().remove("bucketOwnerAccountId");
            },
            "connectors.policy.bucketOwnerAccountId",
            "required for s3-bucket-policy: add \"bucketOwnerAccountId\"",
        ),
        (
            "an externalId made by hand",
            |v| v["connectors"]["lake"]["externalId"] = "mm-acme-7f3c".into(),
            "connectors.lake.externalId",
            "must be pr-acme-<32 lowercase hex>; generate one with `popularity tenant external-id acme`",
        ),
        (
            "another tenant's externalId",
            |v| v["connectors"]["lake"]["externalId"] = "pr-globex-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b".into(),
            "connectors.lake.externalId",
            "is not one of ours",
        ),
        (
            "bucket-policy without region",
            |v| {
                v["connectors"]["policy"].as_object_mut().unwrap().remove("region");
            },
            "connectors.policy.region",
            "required for s3-bucket-policy",
        ),
        (
            "format on a sheet feed",
            |v| v["feeds"][5]["format"] = "tsv".into(),
            "feeds[5].format",
            "does not apply to a google-sheets connector",
        ),
        (
            "prefix climbing out",
            |v| v["connectors"]["lake"]["prefix"] = "a/../b".into(),
            "connectors.lake.prefix",
            "must not contain '.' or '..' segments",
        ),
    ];
    for (case, edit, path, fragment) in cases {
        let mut value = every_connector_type();
        edit(&mut value);
        let errors = errors_of(&value);
        assert!(
            errors.iter().any(|e| e.path == path && e.message.contains(fragment)),
            "{case}: expected `{path}: …{fragment}…`, got {errors:#?}"
        );
    }
}

#[test]
fn invalid_json_is_reported_at_the_root_with_line_and_column() {
    let errors = parse_tenant_secret("acme", "{\n  \"tenantId\": \"acme\",\n    ,\n}").unwrap_err();
    assert_eq!(errors.len(), 1);
    let error = &errors.errors()[0];
    assert_eq!(error.path, "(root)");
    assert!(error.message.starts_with("not valid JSON at line 3 column 5: "), "{error}");
}

#[test]
fn a_key_repeated_in_one_object_is_rejected_rather_than_silently_dropped() {
    let json = r#"{"schemaVersion": 1, "tenantId": "acme", "plan": "trial", "connectors": {},
                   "feeds": [], "feeds": []}"#;
    let errors = parse_tenant_secret("acme", json).unwrap_err();
    assert_eq!(errors.errors()[0].path, "(root)");
    assert!(errors.errors()[0].message.contains("the key \"feeds\" appears twice"), "{errors}");
}

#[test]
fn a_root_that_is_not_an_object_is_one_error() {
    let errors = parse_tenant_secret("acme", "[1, 2]").unwrap_err();
    assert_eq!(errors.to_string(), "(root): expected an object, found an array");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let value = design_example_with(|v| {
        v["schemaVersion"] = 2.into();
        v["enabled"] = "yes".into();
        v["connectors"]["lake"].as_object_mut().unwrap().remove("externalId");
        v["connectors"]["inbox"]["recipients"][0] = "data@".into();
        v["feeds"][0]["intervalSeconds"] = 120.into();
        v["feeds"][1]["connector"] = "lake2".into();
    });
    let errors = parse_tenant_secret("acme", &value.to_string()).unwrap_err();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "schemaVersion: 2 is not supported (expected 1)",
            "enabled: expected true or false, found \"yes\"",
            "connectors.inbox.recipients[0]: \"data@\" is not an email address",
            "connectors.lake.externalId: required for s3-role (the sts:ExternalId the role's trust policy requires)",
            "feeds[0].intervalSeconds: 120 is below 3600",
            "feeds[1].connector: no connector named \"lake2\" (they are inbox, lake)",
        ]
    );
    assert_eq!(errors.to_string(), lines.join("; "));
}

#[test]
fn a_feed_naming_a_broken_connector_gets_no_second_error() {
    let value = design_example_with(|v| v["connectors"]["lake"]["region"] = "nowhere".into());
    let errors = errors_of(&value);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "connectors.lake.region");
}

#[test]
fn plan_limits_count_every_active_feed() {
    let feeds: Vec<Value> = (0..7).map(|i| serde_json::json!({"id": format!("f{i}"), "connector": "inbox"})).collect();
    let value = design_example_with(|v| v["feeds"] = Value::Array(feeds.clone()));
    let errors = errors_of(&value);
    assert_eq!(
        errors,
        [FieldError {
            path: "feeds".into(),
            message: "7 active feeds exceed the standard plan's limit of 5 (pause or remove 2)".into()
        }]
    );

    let value = design_example_with(|v| {
        v["plan"] = "enterprise".into();
        v["feeds"] = Value::Array(feeds.clone());
    });
    assert_eq!(parse_tenant_secret("acme", &value.to_string()).unwrap().feeds.len(), 7);
    // Paused feeds wait outside the limit: 7 feeds, 2 paused, fit in 5.
    let value = design_example_with(|v| {
        let mut some_paused = feeds.clone();
        some_paused[0]["paused"] = true.into();
        some_paused[1]["paused"] = true.into();
        v["feeds"] = Value::Array(some_paused);
    });
    assert_eq!(parse_tenant_secret("acme", &value.to_string()).unwrap().feeds.len(), 7);
    assert_eq!(Plan::Trial.feed_limit(), 1);
    assert_eq!(Plan::Enterprise.feed_limit(), 50);
}

#[test]
fn two_feeds_without_an_id_collide_on_default() {
    let value =
        design_example_with(|v| v["feeds"] = serde_json::json!([{"connector": "lake"}, {"connector": "inbox"}]));
    let errors = errors_of(&value);
    assert_eq!(errors[0].path, "feeds[1].id");
    assert!(errors[0].message.contains("a feed without an id is called \"default\""), "{errors:#?}");
}

#[test]
fn a_document_without_a_secret_name_skips_only_the_name_check() {
    let value = design_example_with(|v| {
        v["tenantId"] = "other".into();
        v["connectors"]["lake"]["externalId"] = "pr-other-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b".into();
    });
    assert_eq!(parse_tenant_document(&value.to_string()).unwrap().tenant_id, "other");
    assert!(parse_tenant_secret("acme", &value.to_string()).is_err());
}

#[test]
fn debug_output_shows_no_credential() {
    let config = parse_tenant_secret("acme", &every_connector_type().to_string()).unwrap();
    let debug = format!("{config:?} {config:#?}");
    for secret in [ACCESS_KEY_ID, SECRET_ACCESS_KEY, EXTERNAL_ID, PRIVATE_KEY_MARKER, "0123456789abcdef"] {
        assert!(!debug.contains(secret), "Debug output contains {secret:?}:\n{debug}");
    }
    assert!(debug.contains("\"…MPLE\""), "the last four characters of the key id identify it:\n{debug}");
    assert!(debug.contains("<redacted>"));
    assert!(debug.contains("feeds@acme-analytics.iam.gserviceaccount.com"), "the account identity is not secret");
}

#[test]
fn errors_about_credentials_never_echo_them() {
    let bad_access_key_id = "AKIA-not-valid-key-id-42";
    let bad_secret_key = "short/secret+value-that-is-invalid";
    let bad_external_id = "id with spaces and !!";
    let bad_key_json = "{\"private_key\": \"-----BEGIN PRIVATE KEY-----SEKRIT";
    let key_without_type = serde_json::json!({
        "private_key": "-----BEGIN PRIVATE KEY-----\nSEKRIT2\n-----END PRIVATE KEY-----",
        "client_email": "x"
    });
    let mut value = every_connector_type();
    value["connectors"]["keys"]["accessKeyId"] = bad_access_key_id.into();
    value["connectors"]["keys"]["secretAccessKey"] = bad_secret_key.into();
    value["connectors"]["lake"]["externalId"] = bad_external_id.into();
    value["connectors"]["gcs"]["serviceAccountJson"] = bad_key_json.into();
    value["connectors"]["gcs2"] =
        serde_json::json!({"type": "gcs", "bucket": "acme-two", "serviceAccountJson": key_without_type});
    value["connectors"]["gcs3"] =
        serde_json::json!({"type": "gcs", "bucket": "acme-three", "serviceAccountJson": 918273645});
    value["connectors"]["keys2"] = serde_json::json!({"type": "s3-keys", "bucketArn": "arn:aws:s3:::b-2",
        "region": "eu-west-1", "accessKeyId": ["AKIAARRAYED0000SECRET"], "secretAccessKey": 4242424242_u64});
    let errors = parse_tenant_secret("acme", &value.to_string()).unwrap_err();

    let paths: BTreeSet<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "connectors.keys.accessKeyId",
        "connectors.keys.secretAccessKey",
        "connectors.lake.externalId",
        "connectors.gcs.serviceAccountJson",
        "connectors.gcs2.serviceAccountJson.type",
        "connectors.gcs2.serviceAccountJson.client_email",
        "connectors.gcs3.serviceAccountJson",
        "connectors.keys2.accessKeyId",
        "connectors.keys2.secretAccessKey",
    ] {
        assert!(paths.contains(path), "no error at {path}: {errors:#?}");
    }
    let everything = format!("{errors}\n{errors:?}");
    for secret in [
        bad_access_key_id,
        bad_secret_key,
        bad_external_id,
        "SEKRIT",
        "SEKRIT2",
        "918273645",
        "AKIAARRAYED",
        "4242424242",
    ] {
        assert!(!everything.contains(secret), "errors contain {secret:?}:\n{everything}");
    }
}

#[test]
fn prefixes_are_normalised_to_end_with_one_slash() {
    assert_eq!(normalise_prefix(""), "");
    assert_eq!(normalise_prefix("/"), "");
    assert_eq!(normalise_prefix("massive"), "massive/");
    assert_eq!(normalise_prefix("/a/b//"), "a/b/");
}

#[test]
fn field_formats_accept_real_values_and_reject_near_misses() {
    assert!(is_safe_id("acme") && is_safe_id("0-day") && is_safe_id(&"a".repeat(63)));
    assert!(!is_safe_id("") && !is_safe_id("-acme") && !is_safe_id("Acme") && !is_safe_id(&"a".repeat(64)));
    for region in ["eu-west-1", "us-gov-west-1", "ap-southeast-2", "il-central-1"] {
        assert!(is_aws_region(region), "{region}");
    }
    for region in ["eu-west", "EU-WEST-1", "europe-west-1", "eu-west-100", "eu--1"] {
        assert!(!is_aws_region(region), "{region}");
    }
    assert!(is_iam_role_arn("arn:aws:iam::111122223333:role/service/popularity-delivery"));
    assert!(is_iam_role_arn("arn:aws-cn:iam::111122223333:role/x"));
    assert!(!is_iam_role_arn("arn:aws:iam::111122223333:user/x"));
    assert!(!is_iam_role_arn("arn:aws:iam::111122223333:role/"));
    assert!(is_email_address("first.last+feeds@mail.acme.example"));
    for bad in ["data@", "@acme.example", "data@acme", "Data <data@acme.example>", "a..b@acme.example"] {
        assert!(!is_email_address(bad), "{bad}");
    }
    assert!(
        spreadsheet_id("https://docs.google.com/spreadsheets/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms").is_some()
    );
    assert!(is_long_term_access_key_id(ACCESS_KEY_ID) && is_secret_access_key(SECRET_ACCESS_KEY));
    assert!(is_external_id_shape(EXTERNAL_ID) && !is_external_id_shape("x"));
    assert!(is_external_id_shape("pr-a-b-0123456789abcdef0123456789abcdef"), "a tenant id may hold '-'");
    for not_ours in [
        "pr-acme-7F3C9A2B5E1D4C6F8A0B1C2D3E4F5A6B",
        "pr-acme-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6",
        "pr--7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b",
        "mm-acme-7f3c9a2b5e1d4c6f8a0b1c2d3e4f5a6b",
    ] {
        assert!(!is_external_id_shape(not_ours), "{not_ours}");
    }
}

#[test]
fn parquet_feeds_take_zstd_by_default_or_snappy_for_every_file_connector() {
    let mut value = every_connector_type();
    value["feeds"] = serde_json::json!([
        {"id": "inbox", "connector": "inbox", "format": "parquet"},
        {"id": "lake", "connector": "lake", "format": "parquet", "compression": "snappy"},
        {"id": "keys", "connector": "keys", "format": "parquet", "compression": "zstd", "mode": "delta"},
        {"id": "policy", "connector": "policy", "format": "parquet"},
        {"id": "gcs", "connector": "gcs", "format": "parquet", "compression": "snappy"}
    ]);
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    let encodings: Vec<(&str, Format, Compression)> =
        config.feeds.iter().map(|f| (f.id.as_str(), f.encoding.format, f.encoding.compression)).collect();
    assert_eq!(
        encodings,
        [
            ("inbox", Format::Parquet, Compression::Zstd),
            ("lake", Format::Parquet, Compression::Snappy),
            ("keys", Format::Parquet, Compression::Zstd),
            ("policy", Format::Parquet, Compression::Zstd),
            ("gcs", Format::Parquet, Compression::Snappy),
        ]
    );
}

#[test]
fn gzip_with_parquet_and_column_compressions_with_text_are_refused_naming_the_field() {
    let cases = [
        ("parquet", "gzip", "compression \"gzip\" does not apply to format \"parquet\": parquet takes \"zstd\" (the default) or \"snappy\""),
        ("parquet", "none", "compression \"none\" does not apply to format \"parquet\": parquet takes \"zstd\" (the default) or \"snappy\""),
        ("tsv", "zstd", "compression \"zstd\" does not apply to format \"tsv\": tsv takes \"none\" (the default) or \"gzip\""),
        ("json", "snappy", "compression \"snappy\" does not apply to format \"json\": json takes \"none\" (the default) or \"gzip\""),
    ];
    for (format, compression, expected) in cases {
        let value = design_example_with(|v| {
            v["feeds"][0]["format"] = format.into();
            v["feeds"][0]["compression"] = compression.into();
        });
        let errors = errors_of(&value);
        assert_eq!(errors.len(), 1, "{format}/{compression}: {errors:?}");
        assert_eq!(errors[0].path, "feeds[0].compression", "{format}/{compression}");
        assert!(errors[0].message.starts_with(expected), "{format}/{compression}: {}", errors[0].message);
    }
    let value = design_example_with(|v| v["feeds"][0]["compression"] = "lz4".into());
    let errors = errors_of(&value);
    assert_eq!(
        (errors[0].path.as_str(), errors[0].message.as_str()),
        ("feeds[0].compression", "\"lz4\" is not one of none, gzip, zstd, snappy")
    );
    // A sheet takes neither, whatever the pair.
    let mut value = every_connector_type();
    value["feeds"][5]["format"] = "parquet".into();
    let errors = errors_of(&value);
    assert_eq!(errors[0].path, "feeds[5].format", "{errors:?}");
}

/// A signing secret of the documented form: `whsec_` and the base64 of 32 bytes.
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw4mJ1Bm0ZjS0=";

fn with_notifications(notifications: Value, contacts: Value) -> Value {
    design_example_with(|v| {
        v["notifications"] = notifications;
        v["contacts"] = contacts;
    })
}

#[test]
fn notifications_and_contacts_are_optional_and_parse_into_typed_targets() {
    let plain = parse_tenant_secret("acme", CONTRACT_EXAMPLE).unwrap();
    assert!(plain.notifications.is_empty() && plain.contacts.is_empty());
    let value = with_notifications(
        serde_json::json!([
            {"type": "webhook", "url": "https://hooks.acme.example/popularity?source=x", "signingSecret": SIGNING_SECRET},
            {"type": "eventbridge", "eventBusArn": "arn:aws:events:eu-west-1:111122223333:event-bus/data-arrivals"}
        ]),
        serde_json::json!(["data-team@acme.example", "oncall@acme.example"]),
    );
    let config = parse_tenant_secret("acme", &value.to_string()).unwrap();
    assert_eq!(config.contacts, ["data-team@acme.example", "oncall@acme.example"]);
    let [NotificationTarget::Webhook(hook), NotificationTarget::EventBridge(bus)] = config.notifications.as_slice()
    else {
        panic!("{:?}", config.notifications)
    };
    assert_eq!(hook.url, "https://hooks.acme.example/popularity?source=x");
    assert_eq!(hook.signing_key().map(|key| key.len()), Some(32));
    assert_eq!((bus.region.as_str(), config.notifications[1].type_name()), ("eu-west-1", "eventbridge"));
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains(SIGNING_SECRET) && !debug.contains("MfKQ9r8GKYqr"), "{debug}");
}

#[test]
fn malformed_notifications_and_contacts_are_rejected_naming_the_field() {
    let short_secret = "whsec_c2hvcnQ="; // 5 bytes
    let value = with_notifications(
        serde_json::json!([
            {"type": "webhook", "url": "http://hooks.acme.example/x", "signingSecret": SIGNING_SECRET},
            {"type": "webhook", "url": "https://hooks.acme.example/y", "signingSecret": short_secret},
            {"type": "webhook", "url": "https://user:pw@hooks.acme.example/", "signingSecret": "plain-text-sekrit"},
            {"type": "webhook", "url": "not a url"},
            {"type": "eventbridge", "eventBusArn": "arn:aws:sns:eu-west-1:111122223333:topic"},
            {"type": "eventbridge", "eventBusArn": "arn:aws:events:eu-west-1:111122223333:event-bus/b", "url": "x"},
            {"type": "sqs"},
            {"url": "https://x.example/"},
            {"type": "eventbridge", "eventBusArn": "arn:aws:events:eu-west-1:111122223333:event-bus/dup"},
            {"type": "eventbridge", "eventBusArn": "arn:aws:events:eu-west-1:111122223333:event-bus/dup"},
            "a string"
        ]),
        serde_json::json!(["ok@acme.example", "not-an-address", "OK@acme.example", 7]),
    );
    let errors = errors_of(&value);
    let found: BTreeMap<&str, &str> = errors.iter().map(|e| (e.path.as_str(), e.message.as_str())).collect();
    let expect = [
        ("notifications", "11 targets exceed the limit of 10"),
        ("notifications[0].url", "must be an https:// URL"),
        ("notifications[1].signingSecret", "base64 of 24 to 64 bytes"),
        ("notifications[2].url", "user name or password"),
        ("notifications[2].signingSecret", "does not start with whsec_"),
        ("notifications[3].url", "is not a URL"),
        ("notifications[3].signingSecret", "required for webhook"),
        ("notifications[4].eventBusArn", "is not an event bus ARN"),
        ("notifications[5].url", "unknown field"),
        ("notifications[6].type", "\"sqs\" is not one of webhook, eventbridge"),
        ("notifications[7].type", "required"),
        ("notifications[9]", "duplicate target"),
        ("notifications[10]", "expected an object"),
        ("contacts[1]", "is not an email address"),
        ("contacts[2]", "duplicate contact"),
        ("contacts[3]", "expected a string"),
    ];
    for (path, fragment) in expect {
        let message = found.get(path).unwrap_or_else(|| panic!("no error at {path}: {errors:#?}"));
        assert!(message.contains(fragment), "{path}: {message}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    let everything = format!("{errors:?}");
    for secret in [short_secret, "c2hvcnQ", "plain-text-sekrit", "user:pw"] {
        assert!(!everything.contains(secret), "errors contain {secret:?}:\n{everything}");
    }
    let not_lists = with_notifications(serde_json::json!({"type": "webhook"}), "a@b.example".into());
    let paths: Vec<String> = errors_of(&not_lists).into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["notifications", "contacts"]);
}

#[test]
fn a_loopback_http_webhook_is_accepted_for_local_runs_only_by_the_notifiers_setting() {
    // The parser accepts it; the notifier refuses it unless WEBHOOKS_ALLOW_LOOPBACK=true.
    let value = with_notifications(
        serde_json::json!([{"type": "webhook", "url": "http://127.0.0.1:8080/hook", "signingSecret": SIGNING_SECRET}]),
        serde_json::json!([]),
    );
    assert!(parse_tenant_secret("acme", &value.to_string()).is_ok());
    let other_http = with_notifications(
        serde_json::json!([{"type": "webhook", "url": "http://localhost:8080/hook", "signingSecret": SIGNING_SECRET}]),
        serde_json::json!([]),
    );
    assert_eq!(errors_of(&other_http)[0].path, "notifications[0].url");
}

#[test]
fn generated_webhook_secrets_have_the_documented_form_and_differ() {
    let first = new_webhook_signing_secret().unwrap();
    let second = new_webhook_signing_secret().unwrap();
    assert!(first.starts_with("whsec_") && first != second, "{first} {second}");
    assert_eq!(webhook_signing_key(&first).map(|key| key.len()), Some(32));
    assert_eq!(first.len(), "whsec_".len() + 44);
}
