//! `popularity console --listen 127.0.0.1:PORT`: the self-service API and
//! web console as a plain HTTP server on this machine, from the same router
//! the `console` Lambda serves. It reads the console function's variables
//! (docs/deploy.md) and runs connection tests and retries in this process
//! with the deliverers `popularity deliver` uses, since no S3 notification
//! starts a deployed function here. Plain HTTP, so it listens on loopback
//! only.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use popularity_reports::config::ConsoleConfig;
use popularity_reports::console::aws::aws_app;
use popularity_reports::console::dispatch::StagingEvents;
use popularity_reports::console::routes::router;
use popularity_reports::delivery::{parse_deliverer_key, JobKind};

use crate::local_deliverers::{Handled, LocalDeliverers};

#[derive(Args)]
pub struct ConsoleArgs {
    /// The loopback address and port to listen on (port 0: any free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Connection tests and retries run by this process's deliverers.
struct InProcessDeliverers(LocalDeliverers);

impl StagingEvents for InProcessDeliverers {
    async fn written(&self, kind: JobKind, key: &str) {
        let parsed = match parse_deliverer_key(key) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::error!(%error, "the console wrote a key no deliverer takes");
                return;
            }
        };
        match self.0.handle(kind, &[parsed]).await {
            Ok(handled) => {
                for outcome in handled {
                    let failed = match outcome {
                        Handled::Job(result) => result.err(),
                        Handled::ConnectionTest(result) => result.err(),
                    };
                    if let Some(error) = failed {
                        tracing::warn!(%key, %error, "the local deliverer failed");
                    }
                }
            }
            Err(error) => tracing::warn!(%key, error = %format!("{error:#}"), "no local deliverer ran"),
        }
    }
}

pub async fn console(args: ConsoleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "--listen {}: the local console serves plain HTTP, so it listens on a loopback address only (127.0.0.1:PORT)",
        args.listen
    );
    {
        let config = ConsoleConfig::from_env().context("the console's configuration")?;
        let aws = popularity_reports::sdk_config::load_sdk_config().await;
        let deliverers = LocalDeliverers::from_env().await.context("the local deliverers")?;
        let app = aws_app(&aws, &config, InProcessDeliverers(deliverers))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        // The one line scripts wait for: the console's address.
        println!("console listening on http://{address}/");
        axum::serve(listener, router(app)).await.context("the console server stopped")
    }
}
