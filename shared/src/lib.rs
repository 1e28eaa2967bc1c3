//! The popularity reports library: everything the Lambda functions and the
//! operator CLI do, behind narrow ports so the same code runs against S3 (or
//! moto's server) and against a local directory.
//!
//! Layout:
//! - [`domain`]: report kinds, run ids, formats — the vocabulary of DESIGN.md.
//! - [`store`]: the `ObjectStore` port with its S3 and local-directory adapters.

pub mod config;
pub mod delivery;
pub mod domain;
pub mod email;
pub mod handlers;
pub mod input;
pub mod links;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod rank;
pub mod ranking;
pub mod report_writer;
pub mod sample;
pub mod scoring;
pub mod status_report;
pub mod store;
pub mod synthetic_run;
pub mod tenant;
pub mod tenant_directory;
pub mod transfer;
