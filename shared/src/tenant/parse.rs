//! Parsing a tenant secret: the document's root fields and its feeds, walked
//! by hand over a strict JSON value so that every problem is reported at
//! once with its path, then the rules that span several fields (the plan's
//! feed limit, feeds that would write one destination, sheets that would
//! not fit). Connectors are parsed in [`super::parse_connector`]. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::conflicts::{collisions_within, FeedDestination};
use super::errors::{Problems, TenantErrors};
use super::formats::is_safe_id;
use super::json::{
    child_path, expect_array, expect_bool, expect_integer, expect_object, expect_str, in_range, json_reason, Fields,
    StrictValue,
};
use super::limits::*;
use super::model::{Connector, Feed, Plan, TenantConfig};
use super::parse_connector::parse_connector;
use super::parse_notifications::{parse_contacts, parse_notifications};
use crate::connector_registry::ConnectorKind;
use crate::domain::{Compression, Encoding, Format, ReportKind};
use crate::manifest::DeliveryMode;

/// Parse and validate the value of the secret `<TENANT_SECRET_PREFIX><suffix>`.
/// The `tenantId` inside must equal `secret_name_suffix`.
pub fn parse_tenant_secret(secret_name_suffix: &str, json: &str) -> Result<TenantConfig, TenantErrors> {
    parse(Some(secret_name_suffix), json)
}

/// As [`parse_tenant_secret`], for a document not yet stored under a secret
/// name (`popularity tenant validate`): every check but the name match.
pub fn parse_tenant_document(json: &str) -> Result<TenantConfig, TenantErrors> {
    parse(None, json)
}

const ROOT: &str = "(root)";
const ROOT_FIELDS: &[&str] =
    &["schemaVersion", "tenantId", "plan", "enabled", "connectors", "feeds", "notifications", "contacts"];
const FEED_FIELDS: &[&str] =
    &["id", "connector", "reports", "format", "compression", "mode", "intervalSeconds", "fullEverySeconds", "paused"];
pub(super) const SAFE_ID_RULE: &str =
    "lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters";

fn parse(secret_name_suffix: Option<&str>, json: &str) -> Result<TenantConfig, TenantErrors> {
    let mut problems = Problems::default();
    let root = match serde_json::from_str::<StrictValue>(json) {
        Ok(StrictValue(value)) => value,
        Err(e) => {
            problems
                .add(ROOT, format!("not valid JSON at line {} column {}: {}", e.line(), e.column(), json_reason(&e)));
            return Err(TenantErrors { errors: problems.0 });
        }
    };
    let Some(object) = expect_object(&mut problems, ROOT, &root) else {
        return Err(TenantErrors { errors: problems.0 });
    };
    let fields = Fields { map: object, path: "" };

    let schema_version = match fields.get("schemaVersion") {
        None => {
            problems.add("schemaVersion", format!("required (this version reads {TENANT_SCHEMA_VERSION})"));
            None
        }
        Some(v) => expect_integer(&mut problems, "schemaVersion", v).and_then(|n| {
            if n == i128::from(TENANT_SCHEMA_VERSION) {
                Some(TENANT_SCHEMA_VERSION)
            } else {
                problems.add("schemaVersion", format!("{n} is not supported (expected {TENANT_SCHEMA_VERSION})"));
                None
            }
        }),
    };

    let tenant_id = fields.required_str(&mut problems, "tenantId", "required", false).and_then(|id| {
        if !is_safe_id(id) {
            problems.add("tenantId", format!("{id:?} is not a valid tenant id ({SAFE_ID_RULE})"));
            None
        } else if secret_name_suffix.is_some_and(|suffix| suffix != id) {
            let suffix = secret_name_suffix.unwrap_or_default();
            problems.add("tenantId", format!("{id:?} does not match the secret name suffix {suffix:?}"));
            None
        } else {
            Some(id.to_owned())
        }
    });

    let plan = fields
        .required_str(&mut problems, "plan", "required (one of trial, standard, enterprise)", false)
        .and_then(|name| {
            let plan = Plan::from_name(name);
            if plan.is_none() {
                problems.add("plan", format!("{name:?} is not one of trial, standard, enterprise"));
            }
            plan
        });

    let enabled = match fields.get("enabled") {
        None => Some(true),
        Some(v) => expect_bool(&mut problems, "enabled", v),
    };

    // Names of every declared connector, with its type when that is known,
    // so that a feed naming a broken connector gets no second error.
    let mut declared: BTreeMap<String, Option<ConnectorKind>> = BTreeMap::new();
    let connectors = match fields.get("connectors") {
        None => {
            problems.add("connectors", "required (an object of named connectors)");
            None
        }
        Some(v) => expect_object(&mut problems, "connectors", v).map(|map| {
            let mut connectors = BTreeMap::new();
            for (name, value) in map {
                let path = child_path("connectors", name);
                if !is_safe_id(name) {
                    problems.add(&path, format!("{name:?} is not a valid connector name ({SAFE_ID_RULE})"));
                }
                let (kind, connector) = parse_connector(&mut problems, &path, value, tenant_id.as_deref());
                declared.insert(name.clone(), kind);
                if let Some(connector) = connector {
                    connectors.insert(name.clone(), connector);
                }
            }
            connectors
        }),
    };

    let feeds = match fields.get("feeds") {
        None => {
            problems.add("feeds", "required (an array of feeds, possibly empty)");
            None
        }
        Some(v) => expect_array(&mut problems, "feeds", v).map(|items| {
            let mut seen_ids = BTreeSet::new();
            let feeds: Vec<Feed> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    parse_feed(&mut problems, &format!("feeds[{i}]"), item, &declared, &mut seen_ids)
                })
                .collect();
            // The plan bounds the feeds that deliver; paused ones wait.
            let active = items.iter().filter(|item| item.get("paused") != Some(&Value::Bool(true))).count();
            if let Some(plan) = plan {
                if active > plan.feed_limit() {
                    problems.add(
                        "feeds",
                        format!(
                            "{active} active feeds exceed the {} plan's limit of {} (pause or remove {})",
                            plan.name(),
                            plan.feed_limit(),
                            active - plan.feed_limit()
                        ),
                    );
                }
            }
            if items.len() > MAX_FEEDS {
                problems.add(
                    "feeds",
                    format!("{} feeds exceed the limit of {MAX_FEEDS}, paused ones included", items.len()),
                );
            }
            feeds
        }),
    };

    let notifications = parse_notifications(&mut problems, fields.get("notifications"));
    let contacts = parse_contacts(&mut problems, fields.get("contacts"));

    if let (Some(connectors), Some(feeds)) = (&connectors, &feeds) {
        check_sheet_sizes(&mut problems, connectors, feeds);
        check_destination_collisions(&mut problems, connectors, feeds);
    }

    fields.reject_unknown(&mut problems, ROOT_FIELDS, |_| None);

    match (schema_version, tenant_id, plan, enabled, connectors, feeds, notifications, contacts) {
        (
            Some(schema_version),
            Some(tenant_id),
            Some(plan),
            Some(enabled),
            Some(connectors),
            Some(feeds),
            Some(notifications),
            Some(contacts),
        ) if problems.0.is_empty() => {
            Ok(TenantConfig { schema_version, tenant_id, plan, enabled, connectors, feeds, notifications, contacts })
        }
        _ => {
            if problems.0.is_empty() {
                // Unreachable by construction: every `None` above records why.
                problems.add(ROOT, "is not a valid tenant secret");
            }
            Err(TenantErrors { errors: problems.0 })
        }
    }
}

fn parse_feed(
    problems: &mut Problems,
    path: &str,
    value: &Value,
    declared: &BTreeMap<String, Option<ConnectorKind>>,
    seen_ids: &mut BTreeSet<String>,
) -> Option<Feed> {
    let map = expect_object(problems, path, value)?;
    let fields = Fields { map, path };
    let before = problems.0.len();

    let id_path = child_path(path, "id");
    let id = match fields.get("id") {
        None => Some(DEFAULT_FEED_ID),
        Some(v) => expect_str(problems, &id_path, v, false),
    }
    .and_then(|id| {
        if !is_safe_id(id) {
            problems.add(&id_path, format!("{id:?} is not a valid feed id ({SAFE_ID_RULE})"));
            None
        } else if !seen_ids.insert(id.to_owned()) {
            let hint = if id == DEFAULT_FEED_ID { " (a feed without an id is called \"default\")" } else { "" };
            problems.add(&id_path, format!("duplicate feed id {id:?}{hint}"));
            None
        } else {
            Some(id.to_owned())
        }
    });

    let mut connector_kind = None;
    let connector =
        fields.required_str(problems, "connector", "required (the name of one of the tenant's connectors)", false);
    let connector = connector.and_then(|name| match declared.get(name) {
        Some(kind) => {
            connector_kind = *kind;
            Some(name.to_owned())
        }
        None => {
            let known: Vec<&str> = declared.keys().map(String::as_str).collect();
            let known =
                if known.is_empty() { "there are none".to_owned() } else { format!("they are {}", known.join(", ")) };
            problems.add(&child_path(path, "connector"), format!("no connector named {name:?} ({known})"));
            None
        }
    });

    let reports = parse_reports(problems, &fields);
    let format = fields.optional_choice(
        problems,
        "format",
        &[("json", Format::Json), ("jsonl", Format::Jsonl), ("tsv", Format::Tsv), ("parquet", Format::Parquet)],
    );
    let compression = parse_compression(problems, &fields, format.flatten());
    let mode =
        fields.optional_choice(problems, "mode", &[("full", DeliveryMode::Full), ("delta", DeliveryMode::Delta)]);

    if connector_kind == Some(ConnectorKind::GoogleSheets) {
        // A sheet always holds the top rows of the full reports: these would be ignored.
        for field in ["format", "compression", "mode"] {
            if fields.get(field).is_some() {
                problems.add(
                    &child_path(path, field),
                    "does not apply to a google-sheets connector (a sheet holds the top maxRows rows of each full report)",
                );
            }
        }
    }

    let interval_path = child_path(path, "intervalSeconds");
    let interval_seconds = match fields.get("intervalSeconds") {
        None => None,
        Some(v) => expect_integer(problems, &interval_path, v).and_then(|n| {
            in_range(problems, &interval_path, n, MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS, "604800 (one week)")
        }),
    };

    let full_every_path = child_path(path, "fullEverySeconds");
    let full_every_seconds = match (fields.get("fullEverySeconds"), mode) {
        (None, Some(Some(DeliveryMode::Delta))) => Some(DEFAULT_FULL_EVERY_SECONDS),
        (None, _) => None,
        (Some(_), Some(Some(DeliveryMode::Full))) => {
            problems
                .add(&full_every_path, "applies only to delta feeds (\"mode\": \"delta\"); a full feed is always full");
            None
        }
        (Some(v), _) => expect_integer(problems, &full_every_path, v).and_then(|n| {
            in_range(problems, &full_every_path, n, MIN_FULL_EVERY_SECONDS, MAX_FULL_EVERY_SECONDS, "7776000 (90 days)")
        }),
    };

    let paused = match fields.get("paused") {
        None => Some(false),
        Some(v) => expect_bool(problems, &child_path(path, "paused"), v),
    };

    fields.reject_unknown(problems, FEED_FIELDS, |_| None);

    if problems.0.len() != before {
        return None;
    }
    Some(Feed {
        id: id?,
        connector: connector?,
        reports: reports?,
        encoding: Encoding { format: format??, compression: compression?? },
        mode: mode??,
        interval_seconds,
        full_every_seconds,
        paused: paused?,
    })
}

/// A feed's `compression`: of the whole part for the text formats (`none`,
/// the default, or `gzip`), of Parquet's columns for `parquet` (`zstd`, the
/// default, or `snappy`); one of the other kind is refused, naming the
/// field and what the format takes. `format` is `None` when it was invalid:
/// then only the name is checked.
fn parse_compression(problems: &mut Problems, fields: &Fields, format: Option<Format>) -> Option<Option<Compression>> {
    let choices = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("zstd", Compression::Zstd),
        ("snappy", Compression::Snappy),
    ];
    if fields.get("compression").is_none() {
        return Some(Some(format.unwrap_or_default().default_compression()));
    }
    let compression = fields.optional_choice(problems, "compression", &choices);
    if let (Some(Some(chosen)), Some(format)) = (compression, format) {
        if let Err(mismatch) = (Encoding { format, compression: chosen }).check() {
            let why = if format.is_text() {
                "Parquet's column compressions apply only to \"format\": \"parquet\""
            } else {
                "Parquet files compress their columns themselves; a gzipped Parquet file is not one engines read"
            };
            problems.add(&child_path(fields.path, "compression"), format!("{mismatch} ({why})"));
            return Some(None);
        }
    }
    compression
}

/// Two feeds of the tenant must not write the same destination (docs/design.md, "Delivery rules").
fn check_destination_collisions(problems: &mut Problems, connectors: &BTreeMap<String, Connector>, feeds: &[Feed]) {
    for (first, second) in collisions_within(connectors, feeds) {
        let (a, b) = (&feeds[first], &feeds[second]);
        let place = |feed: &Feed| {
            connectors.get(&feed.connector).and_then(|c| FeedDestination::of(c, feed)).map(|d| d.describe())
        };
        problems.add(
            &format!("feeds[{second}]"),
            format!(
                "writes to {} where feed {:?} (feeds[{first}]) writes to {}: two feeds would write the same objects; \
                 give one of them another bucket or a prefix that does not contain the other's",
                place(b).unwrap_or_default(),
                a.id,
                place(a).unwrap_or_default()
            ),
        );
    }
}

/// A google-sheets feed must fit its spreadsheet's 10,000,000 cells even
/// when its tabs are the only ones.
fn check_sheet_sizes(problems: &mut Problems, connectors: &BTreeMap<String, Connector>, feeds: &[Feed]) {
    for feed in feeds {
        let Some(Connector::GoogleSheets(sheet)) = connectors.get(&feed.connector) else { continue };
        let needed = cells_needed(feed.reports.len(), sheet.max_rows);
        if needed > MAX_SPREADSHEET_CELLS {
            let largest = (1..=sheet.max_rows)
                .rev()
                .find(|rows| cells_needed(feed.reports.len(), *rows) <= MAX_SPREADSHEET_CELLS)
                .unwrap_or(0);
            problems.add(
                "feeds",
                format!(
                    "feed {:?} needs {needed} cells in its spreadsheet ({} reports of {} rows, a header and 3 \
                     columns, and the _popularity tab), above Google's limit of {MAX_SPREADSHEET_CELLS}: give \
                     connector {:?} a maxRows of at most {largest}, or the feed fewer reports",
                    feed.id,
                    feed.reports.len(),
                    sheet.max_rows,
                    feed.connector
                ),
            );
        }
    }
}

fn parse_reports(problems: &mut Problems, fields: &Fields<'_>) -> Option<Vec<ReportKind>> {
    let path = child_path(fields.path, "reports");
    let Some(value) = fields.get("reports") else { return Some(ReportKind::ALL.to_vec()) };
    let items = expect_array(problems, &path, value)?;
    if items.is_empty() {
        problems.add(&path, "must name at least one report (track, artist, product), or be left out for all three");
        return None;
    }
    let before = problems.0.len();
    let mut chosen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(name) = expect_str(problems, &item_path, item, false) else { continue };
        match ReportKind::ALL.into_iter().find(|k| k.short_name() == name) {
            None => problems.add(&item_path, format!("{name:?} is not one of track, artist, product")),
            Some(kind) if !chosen.insert(kind) => problems.add(&item_path, format!("duplicate report {name:?}")),
            Some(_) => {}
        }
    }
    (problems.0.len() == before).then(|| chosen.into_iter().collect())
}
