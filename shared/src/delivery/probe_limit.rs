//! The rate limit of connection tests: at most [`TESTS_PER_WINDOW`] tests of
//! one tenant's connector in any rolling [`WINDOW_SECONDS`]. Each test
//! costs the customer something (an email from our SES identity, a probe
//! upload in their bucket), and anyone who may write `connection-tests/`
//! could otherwise request them without end. The deliverer that would run
//! the test keeps a small ledger per tenant and connector in staging
//! (`connection-test-ledger/<tenantId>/<connector>.json`, the times of the
//! tests in the window), updated by a conditional write so that concurrent
//! tests are counted once each; the test over the limit is refused before
//! any request reaches the destination, with the time the next one is
//! allowed.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{ConditionalPut, ObjectStore, StoreError, WriteCondition, CONTROL_OBJECT_MAX_BYTES};

/// How many tests of one connector a window admits.
pub const TESTS_PER_WINDOW: usize = 10;
/// The rolling window, in seconds: an hour.
pub const WINDOW_SECONDS: i64 = 3_600;
/// Where the ledgers live in staging.
pub const LEDGER_PREFIX: &str = "connection-test-ledger/";
/// Conditional writes lost to a concurrent test before giving up (each
/// loss waits a little longer, with jitter, before reading again).
const MAX_CONFLICTS: u32 = 24;

/// The ledger of one tenant's connector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ledger {
    /// When each test in the window was admitted, oldest first.
    tested_at: Vec<DateTime<Utc>>,
}

/// The wait after the `conflicts`-th lost write: 10 ms a loss so far, up to
/// 200 ms, plus random jitter of as much again, so that concurrent tests
/// stop colliding.
fn conflict_backoff(conflicts: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = std::time::Duration::from_millis(u64::from(conflicts.min(20)) * 10);
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    base + base.mul_f64((random % 1000) as f64 / 1000.0)
}

/// Whether a test may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    Refused { next_allowed_at: DateTime<Utc> },
}

impl Admission {
    /// What the refused test's result says.
    pub fn refusal(tenant_id: &str, connector: &str, next_allowed_at: DateTime<Utc>) -> String {
        format!(
            "refused: connector {connector:?} of tenant {tenant_id:?} was tested {TESTS_PER_WINDOW} times in the last \
             hour, the most allowed; nothing was sent to the destination. The next test is allowed at {}",
            next_allowed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The ledger's key.
pub fn ledger_key(tenant_id: &str, connector: &str) -> String {
    format!("{LEDGER_PREFIX}{tenant_id}/{connector}.json")
}

/// Admits a test of `connector` of `tenant_id` at `now`, recording it, or
/// refuses it when the window is full. Fails only when staging cannot be
/// read or written (the invocation is retried).
pub async fn admit_test<S: ObjectStore>(
    staging: &S,
    tenant_id: &str,
    connector: &str,
    now: DateTime<Utc>,
) -> Result<Admission, StoreError> {
    let key = ledger_key(tenant_id, connector);
    let window_start = now - Duration::seconds(WINDOW_SECONDS);
    for conflicts in 0..MAX_CONFLICTS {
        if conflicts > 0 {
            tokio::time::sleep(conflict_backoff(conflicts)).await;
        }
        let (mut ledger, version) = match staging.get_versioned(&key).await {
            Ok(object) if object.body.len() as u64 <= CONTROL_OBJECT_MAX_BYTES => {
                // A ledger that does not parse is started afresh rather than
                // blocking the connector's tests for good.
                (serde_json::from_slice::<Ledger>(&object.body).unwrap_or_default(), Some(object.version))
            }
            Ok(object) => (Ledger::default(), Some(object.version)),
            Err(StoreError::NotFound { .. }) => (Ledger::default(), None),
            Err(error) => return Err(error),
        };
        ledger.tested_at.retain(|at| *at > window_start);
        ledger.tested_at.sort_unstable();
        if ledger.tested_at.len() >= TESTS_PER_WINDOW {
            let oldest_counted = ledger.tested_at[ledger.tested_at.len() - TESTS_PER_WINDOW];
            return Ok(Admission::Refused { next_allowed_at: oldest_counted + Duration::seconds(WINDOW_SECONDS) });
        }
        ledger.tested_at.push(now);
        let body = Bytes::from(serde_json::to_vec(&ledger).expect("a ledger serialises"));
        let condition = match &version {
            Some(version) => WriteCondition::Unchanged(version),
            None => WriteCondition::Absent,
        };
        match staging.put_conditional(&key, body, "application/json", condition).await? {
            ConditionalPut::Written(_) => return Ok(Admission::Allowed),
            ConditionalPut::ConditionFailed => continue,
        }
    }
    Err(StoreError::Changed {
        location: staging.describe(&key),
        detail: format!("{MAX_CONFLICTS} concurrent tests changed it in turn; the test is retried"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDirStore;

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-12-07T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
    }

    #[tokio::test]
    async fn the_eleventh_test_within_an_hour_is_refused_until_the_first_leaves_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let staging = LocalDirStore::new(dir.path());
        for minute in 0..10 {
            assert_eq!(admit_test(&staging, "acme", "lake", at(minute * 5)).await.unwrap(), Admission::Allowed);
        }
        let refused = admit_test(&staging, "acme", "lake", at(50)).await.unwrap();
        assert_eq!(refused, Admission::Refused { next_allowed_at: at(60) }, "the first test leaves the window at 60");
        assert_eq!(
            admit_test(&staging, "acme", "lake", at(59)).await.unwrap(),
            Admission::Refused { next_allowed_at: at(60) },
            "a refused test is not counted"
        );
        assert_eq!(admit_test(&staging, "acme", "other", at(50)).await.unwrap(), Admission::Allowed, "per connector");
        assert_eq!(admit_test(&staging, "beta", "lake", at(50)).await.unwrap(), Admission::Allowed, "per tenant");
        assert_eq!(admit_test(&staging, "acme", "lake", at(60)).await.unwrap(), Admission::Allowed, "an hour on");
        assert_eq!(
            admit_test(&staging, "acme", "lake", at(61)).await.unwrap(),
            Admission::Refused { next_allowed_at: at(65) },
            "the window rolls: the test of minute 5 is the oldest counted"
        );
        let message = Admission::refusal("acme", "lake", at(65));
        assert!(message.contains("2026-12-07T11:05:00Z") && message.contains("nothing was sent"), "{message}");
    }
}
