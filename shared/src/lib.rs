//! The popularity reports library: everything the Lambda functions and the
//! operator CLI do, behind narrow ports so the same code runs against S3 (or
//! moto's server) and against a local directory.
//!
//! Layout:
//! - [`domain`]: report kinds, run ids, formats — the vocabulary of DESIGN.md;
//! - [`config`]: each function's typed configuration, read once (DESIGN §8);
//! - [`store`]: the `ObjectSink`/`ObjectStore` ports with their S3 and
//!   local-directory adapters, and streaming from a blocking producer;
//! - ranking: [`input`] (Parquet decoding), [`scoring`] (DESIGN §4),
//!   [`ranking`] (id indexes, exact scores, radix ranking), [`report_writer`]
//!   (JSON / JSONL / TSV parts), [`rank`] (one run, manifest last),
//!   [`manifest`] (the run manifest);
//! - tenants: [`tenant`] (the secret schema, DESIGN §6) and
//!   [`tenant_directory`] (Secrets Manager);
//! - [`delivery`]: jobs, status and claims, the connector registry, the
//!   connectors (S3, email, GCS) and connection tests (DESIGN §5–§7);
//! - [`transfer`]: streamed copy or conversion of one part between stores;
//! - [`handlers`]: the Lambda handlers (rank, fanout, every deliverer, the
//!   sweeper that re-drives failed deliveries);
//! - [`status_report`]: the table of `popularity status`;
//! - tools: [`sample`] (synthetic data), [`metrics`], [`memory`],
//!   [`aws_errors`], [`sdk_config`] (the AWS SDK configuration with its
//!   timeouts).

pub mod aws_errors;
pub mod config;
pub mod delivery;
pub mod delta;
pub mod domain;
pub mod handlers;
pub mod input;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod rank;
pub mod ranking;
pub mod report_writer;
pub mod sample;
pub mod scoring;
pub mod sdk_config;
pub mod status_report;
pub mod store;
pub mod tenant;
pub mod tenant_directory;
pub mod transfer;
