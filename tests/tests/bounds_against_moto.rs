//! Bounds against moto's S3: an object read whole that is larger than its
//! limit is refused from its Content-Length, unread, and a delivery job that
//! large is a permanent `invalid` naming the object and the limit; the
//! connection-test ledger admits 10 tests of a connector in an hour and
//! refuses the 11th, also when the tests run at once (conditional writes).

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use integration_tests::delivery::staging_store;
use integration_tests::{moto_endpoint, sdk_config};
use popularity_reports::delivery::keys::parse_job_key;
use popularity_reports::delivery::probe_limit::{admit_test, Admission, TESTS_PER_WINDOW};
use popularity_reports::delivery::staging::DeliveryStaging;
use popularity_reports::delivery::DeliveryError;
use popularity_reports::store::{ObjectSink, ObjectStore, StoreError, CONTROL_OBJECT_MAX_BYTES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_its_limit_is_refused_unread_and_a_job_that_large_is_invalid() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "bounds").await;
    let limit = CONTROL_OBJECT_MAX_BYTES;
    staging.put("small.json", Bytes::from_static(b"{}"), "application/json").await.unwrap();
    let huge = Bytes::from(vec![b' '; usize::try_from(limit).unwrap() + 1]);
    staging.put("huge.json", huge.clone(), "application/json").await.unwrap();

    assert_eq!(staging.get_at_most("small.json", limit).await.unwrap(), Bytes::from_static(b"{}"));
    match staging.get_at_most("huge.json", limit).await {
        Err(StoreError::TooLarge { location, size, limit: refused_at }) => {
            assert!(location.contains("huge.json"), "{location}");
            assert_eq!((size, refused_at), (limit + 1, limit));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(staging.get_at_most("missing.json", limit).await, Err(StoreError::NotFound { .. })));

    // A job object that large: refused as invalid (permanent), not retried.
    let parts = parse_job_key("jobs/s3/20261119030000/acme/all.json").unwrap();
    staging.put(&parts.job_key(), huge, "application/json").await.unwrap();
    let error = DeliveryStaging::new(&staging).read_job(&parts).await.unwrap_err();
    assert!(matches!(error, DeliveryError::InvalidJob { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("above the limit of {limit} bytes")) && message.contains("all.json"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_tests_of_a_connector_in_an_hour_are_admitted_even_at_once_and_the_eleventh_is_refused() {
    let admin = sdk_config(&moto_endpoint()).await;
    let staging = staging_store(&admin, "test-limit").await;
    let now: DateTime<Utc> = "2026-12-07T10:00:00Z".parse().unwrap();

    let mut tests = tokio::task::JoinSet::new();
    for n in 0..TESTS_PER_WINDOW + 2 {
        let staging = staging.clone();
        let at = now + Duration::seconds(i64::try_from(n).unwrap());
        tests.spawn(async move { admit_test(&staging, "acme", "lake", at).await.unwrap() });
    }
    let mut admitted = 0;
    while let Some(admission) = tests.join_next().await {
        if admission.unwrap() == Admission::Allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, TESTS_PER_WINDOW, "concurrent tests are each counted once");
    let later = admit_test(&staging, "acme", "lake", now + Duration::minutes(30)).await.unwrap();
    assert!(matches!(later, Admission::Refused { next_allowed_at } if next_allowed_at > now + Duration::minutes(59)));
    let ledger = staging.list("connection-test-ledger/acme/").await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
}
