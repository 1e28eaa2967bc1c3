//! The self-service application: a tenant-scoped HTTP API and the web
//! console on top of it, through which a customer manages their own
//! connectors (tested before they are stored) and feeds and sees their
//! deliveries (docs/design.md, "Self-service API and console"). Identity is
//! Amazon Cognito's; the tenant's Secrets Manager entry stays the only
//! truth about the tenant; deliveries are read from the staging bucket.
//! The console never holds a connector's permissions: connection tests and
//! retries are requests the deliverers act on.
//!
//! Layout, from the bottom up:
//! - [`problem`]: every error as RFC 9457 problem details;
//! - [`auth`]: verifying Cognito ID tokens against the pool's keys, and who the caller is;
//! - [`sign_in`]: Cognito's password sign-in for the console's page;
//! - [`document`]: the tenant secret as an editable document with a version, drafts for tests;
//! - [`dispatch`]: how a connection test or a retry reaches a deliverer, and waiting for a test;
//! - [`views`]: what the API answers with, credentials shown only as set or not;
//! - [`feed_list_cache`]: the feed list's delivery indexes kept between requests, revalidated by one listing;
//! - [`service`]: what each request does, every change validated, tested and stored in one place;
//! - [`pages`]: the console's page, script and style sheet;
//! - [`routes`]: the HTTP router and its OpenAPI document;
//! - [`users`]: the user pool as the template makes it, and inviting users;
//! - [`aws`]: the console on its AWS adapters, built from its configuration.

pub mod auth;
pub mod aws;
pub mod dispatch;
pub mod document;
pub mod feed_list_cache;
pub mod pages;
pub mod problem;
pub mod routes;
pub mod service;
pub mod sign_in;
pub mod users;
pub mod views;
