//! `popularity-bench console`: the self-service API's latency benchmark of
//! docs/benchmarks.md, against a moto server. Stores one tenant with many
//! feeds and a full delivery index for each, serves the console's router on
//! a 127.0.0.1 listener exactly as `popularity console` does, and times
//! `GET /v1/feeds` and one feed's `GET /v1/feeds/{id}/deliveries` with a
//! signed-in user's token (p50, p99, max). It also times the console's
//! start: building its adapters, the first request, which fetches the
//! user pool's keys, and the first feed list, which reads every feed's
//! index (the timed ones find them unchanged and read none). Measurement
//! and wiring only.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use clap::Args;
use integration_tests::console::{add_user, console_app, console_config, fresh_user_pool, serve};
use popularity_reports::console::dispatch::DeployedDeliverers;
use popularity_reports::delivery::feed_index::{feed_index_key, FeedIndex, IndexedDelivery, FEED_INDEX_SCHEMA_VERSION};
use popularity_reports::delivery::status::DeliveryOutcome;
use popularity_reports::domain::RunId;
use popularity_reports::store::{s3_client, ObjectSink, S3Store};
use popularity_reports::tenant::directory::{put_tenant_secret, secrets_manager_client};

use crate::emulator::{emulator_config, ensure_bucket};

const PASSWORD: &str = "Bench-console-1!";

#[derive(Args)]
pub struct ConsoleBenchArgs {
    /// The moto server, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "MOTO_ENDPOINT")]
    pub endpoint: String,
    /// Feeds of the one tenant (the enterprise plan allows 50 active).
    #[arg(long, default_value_t = 50)]
    pub feeds: usize,
    /// Deliveries in each feed's index (the index keeps at most 100).
    #[arg(long, default_value_t = 100)]
    pub deliveries: usize,
    /// Timed requests of each kind, after ten untimed ones.
    #[arg(long, default_value_t = 300)]
    pub requests: usize,
}

pub async fn run(args: ConsoleBenchArgs) -> anyhow::Result<()> {
    ensure!((1..=50).contains(&args.feeds), "--feeds must be 1 to 50 (the enterprise plan's limit)");
    ensure!((1..=100).contains(&args.deliveries), "--deliveries must be 1 to 100 (what an index keeps)");
    let aws = emulator_config(&args.endpoint).await;
    let tag = Utc::now().format("%H%M%S").to_string();
    let staging_bucket = format!("bench-console-staging-{tag}");
    let prefix = format!("bench-console-{tag}/tenants/");
    let tenant_id = "bench-tenant";
    ensure_bucket(&aws, &staging_bucket).await?;

    let document = tenant_document(tenant_id, args.feeds);
    put_tenant_secret(&secrets_manager_client(&aws), &prefix, &document.to_string(), tenant_id)
        .await
        .context("storing the benchmark tenant's secret")?;
    let staging = S3Store::new(s3_client(&aws), staging_bucket.clone(), "");
    for feed in 0..args.feeds {
        let index = feed_index(tenant_id, &feed_id(feed), args.deliveries);
        staging
            .put(
                &feed_index_key(tenant_id, &feed_id(feed)),
                Bytes::from(serde_json::to_vec(&index)?),
                "application/json",
            )
            .await
            .context("writing a feed index")?;
    }
    let pool = fresh_user_pool(&aws, "bench-console").await;
    let email = "bench@example.com";
    add_user(&aws, &pool, email, Some(tenant_id), false, PASSWORD).await;

    let started = Instant::now();
    let config = console_config(&args.endpoint, &pool, &staging_bucket, &prefix);
    let app = console_app(&aws, &config, DeployedDeliverers);
    let init = started.elapsed();
    let base = serve(app).await;

    let http = reqwest::Client::builder().no_proxy().build()?;
    let sign_in_body = serde_json::json!({"email": email, "password": PASSWORD}).to_string();
    let sign_in = http
        .post(format!("{base}/auth/sign-in"))
        .header("content-type", "application/json")
        .body(sign_in_body)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let sign_in: serde_json::Value = serde_json::from_slice(&sign_in).context("sign-in answered no JSON")?;
    let token = sign_in["idToken"].as_str().context("sign-in answered no idToken")?.to_owned();

    let first = time_one(&http, &base, "/v1/me", &token).await?;
    let first_list = time_one(&http, &base, "/v1/feeds", &token).await?;
    let feeds = measure(&http, &base, "/v1/feeds", &token, args.requests).await?;
    let deliveries_path = format!("/v1/feeds/{}/deliveries", feed_id(0));
    let deliveries = measure(&http, &base, &deliveries_path, &token, args.requests).await?;

    println!(
        "console on moto: {} feeds x {} deliveries, {} timed requests each",
        args.feeds, args.deliveries, args.requests
    );
    println!(
        "start: adapters built in {:.1} ms; first request (fetches the pool's keys) {:.1} ms; first feed list \
         (reads every index) {:.1} ms",
        ms(init),
        ms(first),
        ms(first_list)
    );
    for (path, stats) in [("GET /v1/feeds", &feeds), ("GET /v1/feeds/{id}/deliveries", &deliveries)] {
        println!(
            "{path}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} bytes",
            ms(stats.p50),
            ms(stats.p99),
            ms(stats.max),
            stats.bytes
        );
    }
    Ok(())
}

fn feed_id(n: usize) -> String {
    format!("feed-{n:02}")
}

/// An enterprise tenant with `feeds` feeds, each to its own prefix of one
/// bucket through its own `s3-bucket-policy` connector.
fn tenant_document(tenant_id: &str, feeds: usize) -> serde_json::Value {
    let connectors: serde_json::Map<String, serde_json::Value> = (0..feeds)
        .map(|n| {
            let connector = serde_json::json!({
                "type": "s3-bucket-policy",
                "bucketArn": "arn:aws:s3:::bench-console-destination",
                "region": "us-east-1",
                "prefix": format!("{}/", feed_id(n)),
                "bucketOwnerAccountId": "444455556666",
            });
            (format!("dest-{n:02}"), connector)
        })
        .collect();
    let feeds: Vec<serde_json::Value> = (0..feeds)
        .map(|n| serde_json::json!({"id": feed_id(n), "connector": format!("dest-{n:02}"), "intervalSeconds": 86_400}))
        .collect();
    serde_json::json!({
        "schemaVersion": 1, "tenantId": tenant_id, "plan": "enterprise",
        "connectors": connectors, "feeds": feeds,
    })
}

/// A full index: `deliveries` runs three and a half days apart, newest
/// first, every tenth one failed on the customer's side.
fn feed_index(tenant_id: &str, feed_id: &str, deliveries: usize) -> FeedIndex {
    let newest = Utc.with_ymd_and_hms(2026, 12, 7, 6, 0, 0).single().expect("a valid time");
    let deliveries = (0..deliveries)
        .map(|n| {
            let at = newest - chrono::Duration::hours(84 * n as i64);
            let failed = n % 10 == 9;
            IndexedDelivery {
                run_id: RunId::from_time(at),
                outcome: if failed { DeliveryOutcome::Failed } else { DeliveryOutcome::Delivered },
                updated_at: at + chrono::Duration::minutes(7),
                attempts: if failed { 3 } else { 1 },
                objects: if failed { 0 } else { 4 },
                bytes: if failed { 0 } else { 1_234_567_890 },
                rows: (!failed).then_some(12_000_000),
                mode: None,
                base_run_id: None,
                full_reason: None,
                last_error: failed.then(|| "AccessDenied writing the destination".to_owned()),
                redrives: 0,
                blame: None,
                target: None,
            }
        })
        .collect();
    FeedIndex {
        schema_version: FEED_INDEX_SCHEMA_VERSION,
        tenant_id: tenant_id.to_owned(),
        feed_id: feed_id.to_owned(),
        deliveries,
    }
}

struct Latencies {
    p50: Duration,
    p99: Duration,
    max: Duration,
    bytes: usize,
}

async fn time_one(http: &reqwest::Client, base: &str, path: &str, token: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = http.get(format!("{base}{path}")).bearer_auth(token).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    ensure!(status.is_success(), "GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
    Ok(started.elapsed())
}

async fn measure(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    requests: usize,
) -> anyhow::Result<Latencies> {
    for _ in 0..10 {
        time_one(http, base, path, token).await?;
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        times.push(time_one(http, base, path, token).await?);
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    let bytes = http.get(format!("{base}{path}")).bearer_auth(token).send().await?.bytes().await?.len();
    Ok(Latencies { p50: at(0.50), p99: at(0.99), max: *times.last().expect("at least one request"), bytes })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
