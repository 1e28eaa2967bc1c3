//! A customer's webhook endpoint on 127.0.0.1: `tests/python/webhook_receiver.py`
//! run with the project's `.venv` Python, which checks each request's
//! Standard Webhooks signature with Python's own `hmac` (independently of
//! the notifier's implementation), answers 500 to the first well-signed
//! requests it is told to fail and 204 after, and lists what it received.
//! The process is this test's own and is killed when the value is dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    /// The signature checked out under Python's hmac.
    pub valid: bool,
    /// What the receiver answered.
    pub status: u16,
    pub body: String,
}

pub struct WebhookReceiver {
    child: Child,
    pub port: u16,
}

impl WebhookReceiver {
    /// Starts a receiver that verifies with `secret` and fails the first
    /// `fail_first` well-signed requests.
    ///
    /// # Panics
    /// When `.venv/bin/python` is missing or the receiver does not start.
    pub fn start(secret: &str, fail_first: u32) -> WebhookReceiver {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join(".venv/bin/python");
        let script = root.join("tests/python/webhook_receiver.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--secret", secret, "--fail-first", &fail_first.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} {}: {e} (run scripts/emulator.sh install)", python.display(), script.display())
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the receiver prints its port");
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("the webhook receiver did not start: {line:?}");
        };
        WebhookReceiver { child, port }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub async fn received(&self) -> Vec<Received> {
        let (status, body) = crate::customer::http_get(&self.url("/received")).await;
        assert_eq!(status, 200);
        let list: Vec<Value> = serde_json::from_slice(&body).expect("the receiver answers JSON");
        list.iter()
            .map(|r| Received {
                id: r["id"].as_str().unwrap_or_default().to_owned(),
                timestamp: r["timestamp"].as_str().unwrap_or_default().to_owned(),
                valid: r["valid"].as_bool().unwrap_or(false),
                status: r["status"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0),
                body: r["body"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
