//! The formats of a tenant secret's fields: ids safe as S3 key segments,
//! bucket and role ARNs, AWS regions, access keys, external ids, email
//! addresses, spreadsheet URLs, webhook URLs and signing secrets, event bus
//! ARNs. Predicates only; the parser turns a `false` into a message naming
//! the field and the rule. The generators here, [`new_webhook_signing_secret`]
//! and [`new_external_id`], make values of the forms checked, from one random
//! source ([`random_bytes`]).

/// Whether `id` is a valid tenant, feed or connector id: `[a-z0-9][a-z0-9-]{0,62}`,
/// safe as one segment of an S3 key.
pub fn is_safe_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) const ARN_PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];

pub(super) enum BucketArnProblem {
    NotAnArn,
    ObjectArn,
    BadBucketName,
}

pub(super) fn s3_bucket_of_arn(arn: &str) -> Result<&str, BucketArnProblem> {
    let rest = ARN_PARTITIONS
        .iter()
        .find_map(|partition| arn.strip_prefix("arn:")?.strip_prefix(partition)?.strip_prefix(":s3:::"))
        .ok_or(BucketArnProblem::NotAnArn)?;
    if rest.contains('/') {
        return Err(BucketArnProblem::ObjectArn);
    }
    if is_s3_bucket_name(rest) {
        Ok(rest)
    } else {
        Err(BucketArnProblem::BadBucketName)
    }
}

pub(super) fn is_s3_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| edge(b) || b == b'.' || b == b'-')
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && !name.contains("..")
}

pub(super) fn is_gcs_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| edge(b) || b == b'.' || b == b'-' || b == b'_')
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && !name.starts_with("goog")
}

/// `arn:aws:iam::<12-digit account>:role/<optional path/><name>`.
pub(super) fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The only token endpoint a service-account key may name (docs/design.md, "Tenants"): a
/// tenant secret never steers our requests elsewhere.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

pub fn is_iam_role_arn(arn: &str) -> bool {
    let Some(rest) = ARN_PARTITIONS
        .iter()
        .find_map(|partition| arn.strip_prefix("arn:")?.strip_prefix(partition)?.strip_prefix(":iam::"))
    else {
        return false;
    };
    let Some((account, resource)) = rest.split_once(':') else { return false };
    let Some(role_path) = resource.strip_prefix("role/") else { return false };
    let name_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    let name = role_path.rsplit('/').next().unwrap_or_default();
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=64).contains(&name.len())
        && role_path.len() <= 512
        && role_path.split('/').all(|segment| !segment.is_empty() && segment.chars().all(name_char))
}

/// AWS's rule for `sts:ExternalId`.
/// Whether `id` has the shape of one of our external ids for *some* tenant
/// (`pr-<safe id>-<32 lowercase hex>`): what is checked when the tenant id
/// itself could not be read.
pub(super) fn is_external_id_shape(id: &str) -> bool {
    id.strip_prefix("pr-")
        .and_then(|rest| rest.rsplit_once('-'))
        .is_some_and(|(tenant_id, _)| is_safe_id(tenant_id) && is_external_id_of(tenant_id, id))
}

pub(super) fn is_long_term_access_key_id(id: &str) -> bool {
    id.starts_with("AKIA")
        && (16..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

pub(super) fn is_secret_access_key(key: &str) -> bool {
    key.len() == 40 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-2`, …
pub(super) fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let lower = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let Some((number, words)) = parts.split_last() else { return false };
    parts.len() >= 3
        && words[0].len() == 2
        && words.iter().all(|w| lower(w))
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// A plain `local@domain.tld` address: no display names, no comments. Also
/// checks `SES_SENDER`.
pub fn is_email_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else { return false };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    address.len() <= 254 && local_ok && domain_ok
}

/// The id of `https://docs.google.com/spreadsheets/d/<id>[/…|?…|#…]`.
pub(super) fn spreadsheet_id(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://docs.google.com/spreadsheets/d/")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let id = &rest[..end];
    (id.len() >= 20 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')).then_some(id)
}

/// The prefix of a webhook signing secret (the Standard Webhooks convention).
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a signing secret we generate, and the range accepted
/// (docs/design.md, "Events": 24 to 64).
pub const WEBHOOK_SECRET_BYTES: usize = 32;
pub const WEBHOOK_SECRET_BYTES_RANGE: std::ops::RangeInclusive<usize> = 24..=64;

/// The HMAC key of a `whsec_<base64>` signing secret: the bytes after the
/// prefix, base64-decoded, when there are 24 to 64 of them.
pub fn webhook_signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let encoded = secret.strip_prefix(WEBHOOK_SECRET_PREFIX)?;
    let key = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    WEBHOOK_SECRET_BYTES_RANGE.contains(&key.len()).then_some(key)
}

/// The system's random source failed (it never does on Linux once booted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system's random number generator failed; no secret was made")]
pub struct RandomUnavailable;

/// `N` bytes from the operating system's generator, through aws-lc-rs: the
/// one random source of the values made for tenants (signing secrets,
/// external ids) and of event ids.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| RandomUnavailable)?;
    Ok(bytes)
}

/// A fresh `whsec_` + base64 of 32 random bytes ([`random_bytes`]), for a
/// tenant's webhook.
pub fn new_webhook_signing_secret() -> Result<String, RandomUnavailable> {
    use base64::Engine as _;
    let key: [u8; WEBHOOK_SECRET_BYTES] = random_bytes()?;
    Ok(format!("{WEBHOOK_SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(key)))
}

/// What is wrong with a webhook URL, for the parser's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WebhookUrlProblem {
    NotAUrl,
    NotHttps,
    Credentials,
    Fragment,
    TooLong,
}

/// Longest webhook URL accepted.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2_048;

/// An `https://host[:port]/…` URL without user info or fragment; or, for
/// local runs only, `http://127.0.0.1:…` (the notifier refuses it unless
/// `WEBHOOKS_ALLOW_LOOPBACK=true`). Whether the host is public is checked
/// by the notifier on the address it connects to, not here.
pub(super) fn check_webhook_url(text: &str) -> Result<(), WebhookUrlProblem> {
    if text.len() > MAX_WEBHOOK_URL_BYTES {
        return Err(WebhookUrlProblem::TooLong);
    }
    let url = url::Url::parse(text).map_err(|_| WebhookUrlProblem::NotAUrl)?;
    if url.host().is_none() {
        return Err(WebhookUrlProblem::NotAUrl);
    }
    let local = url.scheme() == "http" && url.host_str() == Some("127.0.0.1");
    if url.scheme() != "https" && !local {
        return Err(WebhookUrlProblem::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookUrlProblem::Credentials);
    }
    if url.fragment().is_some() {
        return Err(WebhookUrlProblem::Fragment);
    }
    Ok(())
}

/// The region of `arn:<partition>:events:<region>:<12-digit account>:event-bus/<name>`,
/// whose name is 1 to 256 of letters, digits, `.`, `-`, `_` and `/`.
pub(super) fn event_bus_region(arn: &str) -> Option<&str> {
    let rest = ARN_PARTITIONS
        .iter()
        .find_map(|partition| arn.strip_prefix("arn:")?.strip_prefix(partition)?.strip_prefix(":events:"))?;
    let mut parts = rest.splitn(3, ':');
    let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    let name = resource.strip_prefix("event-bus/")?;
    let name_ok =
        (1..=256).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_/".contains(c));
    (is_aws_region(region) && is_account_id(account) && name_ok).then_some(region)
}

/// A new external id for `tenant_id`: `pr-<tenantId>-<32 lowercase hex>`,
/// 128 bits from [`random_bytes`]. Ours, never the customer's: the tenant
/// id in it binds it to one tenant.
pub fn new_external_id(tenant_id: &str) -> Result<String, RandomUnavailable> {
    let random: [u8; 16] = random_bytes()?;
    Ok(format!("pr-{tenant_id}-{}", hex::encode(random)))
}

/// Whether `id` has the form of an external id generated for `tenant_id`.
pub fn is_external_id_of(tenant_id: &str, id: &str) -> bool {
    id.strip_prefix("pr-")
        .and_then(|rest| rest.strip_prefix(tenant_id))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}
