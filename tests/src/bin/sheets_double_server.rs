//! The project's Sheets API v4 double as a process of its own, for the
//! Sheets benchmark (`popularity-bench sheets`), whose deliveries run in
//! another process so that their peak memory is theirs alone. It generates
//! a service account, writes its key file, creates one spreadsheet shared
//! with it (Google's write quota off: the client paces itself), prints
//! `endpoint <url>` and then answers each `stats` line on stdin with one
//! JSON line of what it served since the previous one, and each `show` line
//! with one JSON line of the spreadsheet's tabs (title, grid, first rows),
//! for the main-job command's report; it exits when stdin closes. Listens
//! on 127.0.0.1 only.
//!
//! For keyless Google (the main-job command), `--identity-sts MOTO_URL
//! --audience PROVIDER` also starts the Google identity double (STS, IAM,
//! IAM Credentials; tokens it issues open this spreadsheet) and prints
//! `identity <url>`, and `--gcs-upstream FAKE_GCS_URL` the GCS guard in
//! front of fake-gcs-server (`gcs <url>`): then the spreadsheet is shared
//! with no one until a `share EMAIL` line, and more lines stand for the
//! customers' and our own one-time Google setup: `allow-role ARN` (the
//! provider admits the AWS role, and it may administer service accounts),
//! `gcs-bucket NAME` and `gcs-grant BUCKET EMAIL` (Object Creator).
//!
//! Usage: sheets-double-server --key-file PATH --spreadsheet ID [--client-email EMAIL]
//!        [--identity-sts URL --audience PROVIDER] [--gcs-upstream URL]

use std::io::{BufRead, Write};

use integration_tests::gcs_guard::GcsGuard;
use integration_tests::google_identity_double::GoogleIdentityDouble;
use integration_tests::google_keys::TestServiceAccount;
use integration_tests::sheets_double::{SheetsDouble, TabSpec};

fn argument(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.next()?;
    args.next()
}

fn main() {
    let key_file = argument("--key-file").expect("--key-file PATH is required");
    let spreadsheet = argument("--spreadsheet").expect("--spreadsheet ID is required");
    let email = argument("--client-email").unwrap_or_else(|| "popularity-bench@ops.iam.gserviceaccount.com".into());
    let double = SheetsDouble::start();
    double.set_write_quota_per_minute(None);
    let account = TestServiceAccount::generate(&email);
    double.register(&account);
    double.create_spreadsheet(&spreadsheet, &[TabSpec::new("Sheet1", 1_000, 26)]);
    let guard = argument("--gcs-upstream").map(|upstream| GcsGuard::start(&upstream));
    let identity = argument("--identity-sts").map(|sts| {
        let audience = argument("--audience").expect("--identity-sts needs --audience PROVIDER");
        let mut registries = vec![double.registry()];
        registries.extend(guard.as_ref().map(GcsGuard::registry));
        GoogleIdentityDouble::start(&sts, &audience, registries)
    });
    if identity.is_none() {
        double.share(&spreadsheet, &email);
    }
    std::fs::write(&key_file, account.key_json_string()).expect("writing the key file");
    let mut out = std::io::stdout();
    writeln!(out, "endpoint {}", double.endpoint()).and_then(|()| out.flush()).expect("stdout");
    if let Some(identity) = &identity {
        writeln!(out, "identity {}", identity.endpoint()).and_then(|()| out.flush()).expect("stdout");
    }
    if let Some(guard) = &guard {
        writeln!(out, "gcs {}", guard.endpoint()).and_then(|()| out.flush()).expect("stdout");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut served = 0;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answered = match (words.as_slice(), &identity, &guard) {
            (["allow-role", arn], Some(identity), _) => {
                identity.allow_aws_role(arn);
                identity.allow_admin_role(arn);
                true
            }
            (["share", email], _, _) => {
                double.share(&spreadsheet, email);
                true
            }
            (["gcs-bucket", bucket], _, Some(guard)) => {
                runtime.block_on(guard.create_bucket(bucket));
                true
            }
            (["gcs-grant", bucket, email], _, Some(guard)) => {
                guard.grant_object_creator(bucket, email);
                true
            }
            _ => false,
        };
        if answered {
            writeln!(out, "ok {line}").and_then(|()| out.flush()).expect("stdout");
            continue;
        }
        if line.trim() == "show" {
            let tabs: Vec<serde_json::Value> = double
                .tabs(&spreadsheet)
                .iter()
                .map(|tab| {
                    let rows = double.values(&spreadsheet, &tab.title);
                    serde_json::json!({"title": tab.title, "rows": tab.row_count, "columns": tab.column_count,
                        "firstRows": rows.iter().take(4).collect::<Vec<_>>()})
                })
                .collect();
            writeln!(out, "{}", serde_json::json!({"tabs": tabs})).and_then(|()| out.flush()).expect("stdout");
            continue;
        }
        if line.trim() != "stats" {
            continue;
        }
        let requests = double.requests();
        let new = &requests[served.min(requests.len())..];
        served = requests.len();
        let writes: Vec<_> = new.iter().filter(|r| r.is_write).collect();
        let stats = serde_json::json!({
            "requests": new.len(),
            "writes": writes.len(),
            "bytesSent": new.iter().map(|r| r.body_size).sum::<usize>(),
            "largestRequest": new.iter().map(|r| r.body_size).max().unwrap_or(0),
            "throttled": new.iter().filter(|r| r.status == 429).count(),
            "cells": double.total_cells(&spreadsheet),
        });
        writeln!(out, "{stats}").and_then(|()| out.flush()).expect("stdout");
    }
}
