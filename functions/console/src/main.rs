//! The `console` Lambda: the self-service API and web console behind API
//! Gateway's HTTP API. Wiring only; the router lives in
//! `popularity_reports::console`. Connection tests and retries reach the
//! deliverers through the staging bucket's notifications.

use lambda_http::{run, tracing, Error};
use popularity_reports::config::ConsoleConfig;
use popularity_reports::console::aws::aws_app;
use popularity_reports::console::dispatch::DeployedDeliverers;
use popularity_reports::console::routes::router;
use popularity_reports::sdk_config::load_sdk_config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = ConsoleConfig::from_env()?;
    let aws = load_sdk_config().await;
    let app = aws_app(&aws, &config, DeployedDeliverers)?;
    run(router(app)).await
}
