//! The popularity reports library: everything the Lambda functions and the
//! operator CLI do, behind narrow ports so the same code runs against S3 (or
//! moto's server) and against a local directory.
//!
//! Layout, one line per module, from the bottom layer up. A module imports
//! only modules of its own layer or below, never one that imports it
//! (`tests/tests/repository_layout.rs` checks that no import circle exists):
//! - [`domain`]: report kinds, run ids, formats: the vocabulary of `docs/design.md`;
//! - [`connector_registry`]: connector types, their fields, job kinds and deliverer functions (pure data);
//! - [`aws_errors`]: one-line, credential-free renderings of SDK errors;
//! - [`sdk_config`]: the AWS SDK configuration with its timeouts;
//! - [`metrics`]: CloudWatch embedded-metric-format lines;
//! - [`memory`]: the system allocator with a transparent-huge-page hint on large blocks;
//! - [`store`]: the `ObjectStore`/`ObjectSink` ports, their S3, local-directory and in-memory adapters;
//! - [`report_writer`]: JSON / JSONL / TSV report parts, written streaming;
//! - [`parquet_writer`]: Parquet report parts (typed columns, zstd or snappy), written a row group at a time;
//! - [`manifest`]: the run manifest and the delivery mode;
//! - [`transfer`]: streamed copy or conversion of one part between stores;
//! - [`input`]: decoding the catalogue and daily plays from Parquet;
//! - [`scoring`]: day weights and exact integer scores (docs/design.md, "Scores and ranks");
//! - [`ranking`]: id indexes, score sums and the radix ranking;
//! - [`rank`]: one run, its reports and the manifest last;
//! - [`engine`]: which engine ranks a run (`RankEngine`: lambda, athena, auto), from the catalogue's footers;
//! - [`athena`]: the Athena engine: the `sql/` queries of a run, and its publish step (Athena's output to a run);
//! - [`delta`]: a run's changes against a base run, computed once in staging;
//! - [`sample`]: the deterministic synthetic catalogue and plays;
//! - [`google_identity`]: keyless Google: each tenant's identity of ours, federation from our AWS roles, impersonation, onboarding;
//! - [`tenant`]: the tenant secret's model, parsing, limits, cross-feed rules and directory;
//! - [`delivery`]: jobs, status and claims, the deliverer, connection probes and every connector;
//! - [`notify`]: arrival events sent to webhooks and EventBridge buses, their re-drives;
//! - [`status_report`]: the table of `popularity status`;
//! - [`console`]: the self-service API and web console (Cognito identity, tenant documents, views, router);
//! - [`config`]: each function's typed configuration, read once (docs/design.md, "Environment variables");
//! - [`handlers`]: the Lambda handlers (rank, fanout, every deliverer, notify, the sweeper).

pub mod athena;
pub mod aws_errors;
pub mod config;
pub mod connector_registry;
pub mod console;
pub mod delivery;
pub mod delta;
pub mod domain;
pub mod engine;
pub mod google_identity;
pub mod handlers;
pub mod input;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod parquet_writer;
pub mod rank;
pub mod ranking;
pub mod report_writer;
pub mod sample;
pub mod scoring;
pub mod sdk_config;
pub mod status_report;
pub mod store;
pub mod tenant;
pub mod transfer;
