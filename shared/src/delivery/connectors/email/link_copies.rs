//! The objects emailed links point at: per-tenant copies under
//! `links/<tenantId>/<runId>/<feedId>/<source key>` in the staging bucket,
//! so that one tenant's links can be made to stop working
//! ([`revoke_tenant_links`], `popularity tenant revoke-links`, and disabling
//! a tenant) by deleting its copies: a presigned URL of a deleted object
//! gets 404 (403 without `s3:ListBucket`), while other tenants' links, to
//! their own copies, keep working. Copies are made server-side (CopyObject,
//! a multipart copy past 5 GiB) and expire by a lifecycle rule after 8
//! days, outliving every link (7 days at most) to them.
//!
//! A retried delivery reuses what the first attempt made: the copies (same
//! key and size) and the signing time recorded in the folder's
//! [`SIGNED_AT_MARKER`], so that a message sent again (email is at least
//! once) carries the very same links. A marker older than
//! [`REUSE_SIGNING_TIME_FOR`] is not reused: the links are signed afresh
//! and every copy is made again, so that no link outlives its copy.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::aws_errors::one_line;
use crate::delivery::error::DeliveryError;
use crate::domain::RunId;
use crate::store::{ObjectStore, StoreError};

/// Where every link copy lives in the staging bucket.
pub const LINKS_PREFIX: &str = "links/";

/// The object in a link folder recording when its links were signed
/// (RFC 3339).
pub const SIGNED_AT_MARKER: &str = "_signed-at";

/// How long a retried delivery signs its links at the first attempt's
/// time, so a message sent again repeats the same links; later it signs
/// afresh (and copies again), so links never lose more than this of their
/// lifetime.
pub const REUSE_SIGNING_TIME_FOR: chrono::Duration = chrono::Duration::hours(24);

/// `links/<tenantId>/`: every link copy of the tenant.
pub fn tenant_links_prefix(tenant_id: &str) -> String {
    format!("{LINKS_PREFIX}{tenant_id}/")
}

/// `links/<tenantId>/<runId>/<feedId>/`: the copies one email links to.
pub fn link_folder(tenant_id: &str, run: RunId, feed_id: &str) -> String {
    format!("{}{run}/{feed_id}/", tenant_links_prefix(tenant_id))
}

/// The copies behind one email's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCopies {
    /// The copies' keys, in the order of the sources.
    pub keys: Vec<String>,
    /// When to sign the links: now, or the earlier attempt's time.
    pub signed_at: DateTime<Utc>,
    /// Copies made by this call (the others were reused).
    pub copied: usize,
}

/// Makes (or finds, from an earlier attempt) the copies of `sources`
/// (staging key and size) in `folder`, and the time to sign links to them.
pub async fn prepare_link_copies<S: ObjectStore>(
    staging: &S,
    folder: &str,
    sources: &[(String, u64)],
    now: DateTime<Utc>,
) -> Result<LinkCopies, DeliveryError> {
    let staging_error = |action: &'static str, key: &str, source: StoreError| DeliveryError::Staging {
        action,
        location: staging.describe(key),
        source,
    };
    let existing = staging.list(folder).await.map_err(|e| staging_error("list", folder, e))?;
    let marker_key = format!("{folder}{SIGNED_AT_MARKER}");
    let earlier = match existing.iter().find(|entry| entry.key == marker_key) {
        Some(_) => {
            let body =
                staging.get_at_most(&marker_key, 1024).await.map_err(|e| staging_error("read", &marker_key, e))?;
            std::str::from_utf8(&body)
                .ok()
                .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
                .map(|at| at.with_timezone(&Utc))
                .filter(|at| *at <= now && now - *at <= REUSE_SIGNING_TIME_FOR)
        }
        None => None,
    };
    let signed_at = match earlier {
        Some(at) => at,
        None => {
            // Written before any copy, so every copy is at least as young
            // as the links to it.
            let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            staging
                .put(&marker_key, Bytes::from(stamp), "text/plain")
                .await
                .map_err(|e| staging_error("write", &marker_key, e))?;
            now.with_nanosecond_zeroed()
        }
    };
    let mut keys = Vec::with_capacity(sources.len());
    let mut copied = 0;
    for (source, size) in sources {
        let target = format!("{folder}{source}");
        let reusable = earlier.is_some() && existing.iter().any(|entry| entry.key == target && entry.size == *size);
        if !reusable {
            staging.copy_within(source, &target, *size).await.map_err(|e| staging_error("copy", &target, e))?;
            copied += 1;
        }
        keys.push(target);
    }
    Ok(LinkCopies { keys, signed_at, copied })
}

trait WholeSeconds {
    fn with_nanosecond_zeroed(self) -> Self;
}

impl WholeSeconds for DateTime<Utc> {
    /// The marker keeps whole seconds; so must the time links are signed at
    /// the first time, for a retry to sign at the very same time.
    fn with_nanosecond_zeroed(self) -> Self {
        DateTime::from_timestamp(self.timestamp(), 0).unwrap_or(self)
    }
}

/// Why a tenant's links could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("{tenant_id:?} is not a tenant id (lowercase letters, digits and '-'); nothing was deleted")]
    BadTenantId { tenant_id: String },
    #[error("could not {operation} under s3://{bucket}/{prefix}: {detail}; run the command again")]
    S3 { operation: &'static str, bucket: String, prefix: String, detail: String },
}

/// Deletes every link copy of `tenant_id` in `bucket` (the staging bucket)
/// and returns how many there were: every link already sent to the tenant
/// stops working. Idempotent: a second call finds nothing.
pub async fn revoke_tenant_links(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    tenant_id: &str,
) -> Result<usize, RevokeError> {
    if !crate::tenant::is_safe_id(tenant_id) {
        return Err(RevokeError::BadTenantId { tenant_id: tenant_id.to_owned() });
    }
    let prefix = tenant_links_prefix(tenant_id);
    let failed = |operation: &'static str, detail: String| RevokeError::S3 {
        operation,
        bucket: bucket.to_owned(),
        prefix: prefix.clone(),
        detail,
    };
    let mut deleted = 0;
    // Pages of at most 1,000 keys, DeleteObjects' limit; deleting while
    // listing is safe because each page starts over from the prefix.
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(|e| failed("ListObjectsV2", one_line(&e)))?;
        let objects: Vec<aws_sdk_s3::types::ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|object| object.key())
            .filter_map(|key| aws_sdk_s3::types::ObjectIdentifier::builder().key(key).build().ok())
            .collect();
        if objects.is_empty() {
            return Ok(deleted);
        }
        let count = objects.len();
        let delete = aws_sdk_s3::types::Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| failed("DeleteObjects", e.to_string()))?;
        let output = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| failed("DeleteObjects", one_line(&e)))?;
        if let Some(error) = output.errors().first() {
            return Err(failed(
                "DeleteObjects",
                format!(
                    "{} of {count} not deleted, the first {} ({}: {})",
                    output.errors().len(),
                    error.key().unwrap_or("?"),
                    error.code().unwrap_or("?"),
                    error.message().unwrap_or("?")
                ),
            ));
        }
        deleted += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InMemoryStore, ObjectSink};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    async fn staging_with_parts() -> (InMemoryStore, Vec<(String, u64)>) {
        let staging = InMemoryStore::default();
        let mut sources = Vec::new();
        for (key, body) in [("reports/20261119030000/track/part-000.json", "[1]"), ("downloads/acme/x.tsv", "a\tb\n")] {
            staging.put(key, Bytes::from(body), "application/json").await.unwrap();
            sources.push((key.to_owned(), body.len() as u64));
        }
        (staging, sources)
    }

    #[tokio::test]
    async fn copies_go_under_the_tenant_and_a_retry_reuses_them_and_the_signing_time() {
        let (staging, sources) = staging_with_parts().await;
        let folder = link_folder("acme", "20261119030000".parse().unwrap(), "all");
        assert_eq!(folder, "links/acme/20261119030000/all/");
        let first = prepare_link_copies(&staging, &folder, &sources, at("2026-11-19T03:10:00.750Z")).await.unwrap();
        assert_eq!(first.copied, 2);
        assert_eq!(first.signed_at, at("2026-11-19T03:10:00Z"), "whole seconds, as the marker keeps");
        assert_eq!(
            first.keys,
            [
                "links/acme/20261119030000/all/reports/20261119030000/track/part-000.json",
                "links/acme/20261119030000/all/downloads/acme/x.tsv"
            ]
        );
        assert_eq!(staging.get(&first.keys[1]).await.unwrap(), Bytes::from("a\tb\n"));

        let retry = prepare_link_copies(&staging, &folder, &sources, at("2026-11-19T05:00:00Z")).await.unwrap();
        assert_eq!(retry.copied, 0, "nothing copied twice");
        assert_eq!(retry.signed_at, first.signed_at, "the same links");
        assert_eq!(retry.keys, first.keys);

        // A copy lost meanwhile is made again; the rest reused.
        assert!(staging.remove(&first.keys[0]));
        let again = prepare_link_copies(&staging, &folder, &sources, at("2026-11-19T06:00:00Z")).await.unwrap();
        assert_eq!((again.copied, again.signed_at), (1, first.signed_at));
    }

    #[tokio::test]
    async fn a_retry_more_than_a_day_later_signs_afresh_and_copies_again() {
        let (staging, sources) = staging_with_parts().await;
        let folder = link_folder("acme", "20261119030000".parse().unwrap(), "all");
        prepare_link_copies(&staging, &folder, &sources, at("2026-11-19T03:10:00Z")).await.unwrap();
        let late = prepare_link_copies(&staging, &folder, &sources, at("2026-11-20T03:10:01Z")).await.unwrap();
        assert_eq!((late.copied, late.signed_at), (2, at("2026-11-20T03:10:01Z")));
        let marker = staging.get(&format!("{folder}{SIGNED_AT_MARKER}")).await.unwrap();
        assert_eq!(marker, Bytes::from("2026-11-20T03:10:01Z"));
    }

    #[tokio::test]
    async fn a_marker_that_is_not_a_time_or_from_the_future_is_replaced() {
        let (staging, sources) = staging_with_parts().await;
        let folder = link_folder("beta", "20261119030000".parse().unwrap(), "all");
        for junk in ["not a time", "2030-01-01T00:00:00Z"] {
            staging.put(&format!("{folder}{SIGNED_AT_MARKER}"), Bytes::from(junk), "text/plain").await.unwrap();
            let copies = prepare_link_copies(&staging, &folder, &sources, at("2026-11-19T03:10:00Z")).await.unwrap();
            assert_eq!((copies.copied, copies.signed_at), (2, at("2026-11-19T03:10:00Z")), "{junk}");
        }
    }
}
