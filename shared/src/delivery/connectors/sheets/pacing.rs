//! Pacing of write requests: Google allows one user (our one service
//! account, writing for every customer) 60 write requests a minute, so every
//! write of this process waits its turn here.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Paces write requests to a number a minute, over every spreadsheet this
/// process writes (Google counts them per user, and we are one user).
#[derive(Debug)]
pub(super) struct Pacer {
    pub(super) interval: Duration,
    pub(super) last: Mutex<Option<Instant>>,
}

impl Pacer {
    pub(super) async fn wait(&self) {
        let mut last = self.last.lock().await;
        if let Some(previous) = *last {
            let next = previous + self.interval;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        *last = Some(Instant::now());
    }
}
