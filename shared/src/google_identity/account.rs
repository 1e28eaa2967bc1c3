//! The address of a tenant's Google identity, derived from its tenantId
//! alone, so every function and command computes the same one without a
//! lookup: `pr-<tenantId>@<project>.iam.gserviceaccount.com` when that
//! account id fits Google's rule (6–30 characters, a lower-case letter
//! first, letters, digits and hyphens, no hyphen last), and otherwise
//! `pr-<up to 15 characters of the tenantId>-<10 hex of its SHA-256>`. The
//! two forms cannot meet: a direct id never ends in a hyphen and ten hex
//! digits (such tenantIds take the hashed form too).

use sha2::{Digest, Sha256};

/// The prefix of every tenant account id.
pub const ACCOUNT_ID_PREFIX: &str = "pr-";
/// Hex digits of the tenantId's SHA-256 in a hashed account id.
pub const ACCOUNT_ID_HASH_HEX: usize = 10;
/// Characters of the tenantId kept in a hashed account id.
const HASHED_HEAD_CHARS: usize = 15;

/// Whether `id` is a valid service-account id for Google.
pub fn is_valid_account_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (6..=30).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}

/// Whether `id` ends like a hashed account id (`-` and ten hex digits).
fn looks_hashed(id: &str) -> bool {
    let Some(split) = id.len().checked_sub(ACCOUNT_ID_HASH_HEX + 1) else { return false };
    let (head, tail) = id.split_at(split);
    !head.is_empty()
        && tail.starts_with('-')
        && tail[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The account id of `tenant_id`'s Google identity.
pub fn tenant_account_id(tenant_id: &str) -> String {
    let direct = format!("{ACCOUNT_ID_PREFIX}{tenant_id}");
    if is_valid_account_id(&direct) && !looks_hashed(&direct) {
        return direct;
    }
    let digest = hex::encode(Sha256::digest(tenant_id.as_bytes()));
    let head: String = tenant_id.chars().take(HASHED_HEAD_CHARS).collect();
    let head = head.trim_end_matches('-');
    format!("{ACCOUNT_ID_PREFIX}{head}-{}", &digest[..ACCOUNT_ID_HASH_HEX])
}

/// The address of `tenant_id`'s Google identity in our project.
pub fn tenant_service_account(tenant_id: &str, project_id: &str) -> String {
    format!("{}@{project_id}.iam.gserviceaccount.com", tenant_account_id(tenant_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_id_that_fits_is_used_as_it_is() {
        assert_eq!(tenant_account_id("acme"), "pr-acme");
        assert_eq!(tenant_service_account("acme", "our-proj"), "pr-acme@our-proj.iam.gserviceaccount.com");
        assert_eq!(tenant_account_id("a-27-char-tenant-id-okay-x"), "pr-a-27-char-tenant-id-okay-x");
    }

    #[test]
    fn every_tenant_id_gets_a_valid_account_id() {
        for tenant in ["a", "ab", "7", "0abc", "abc-", "x".repeat(28).as_str(), "y".repeat(63).as_str(), "q-0123456789"]
        {
            let id = tenant_account_id(tenant);
            assert!(is_valid_account_id(&id), "{tenant} -> {id}");
        }
        assert!(tenant_account_id("ab").starts_with("pr-ab-"));
        assert!(tenant_account_id(&"y".repeat(63)).starts_with("pr-yyyyyyyyyyyyyyy-"));
    }

    #[test]
    fn a_tenant_id_shaped_like_a_hashed_one_is_hashed_too() {
        // "ab" hashes to pr-ab-<10 hex>; a tenant named "ab-<those 10 hex>"
        // must not get the same account.
        let hashed = tenant_account_id("ab");
        let lookalike = hashed.trim_start_matches(ACCOUNT_ID_PREFIX).to_owned();
        assert_ne!(tenant_account_id(&lookalike), hashed);
        assert!(is_valid_account_id(&tenant_account_id(&lookalike)));
    }

    #[test]
    fn distinct_long_tenants_with_one_head_differ() {
        let one = "long-tenant-name-number-one";
        let two = "long-tenant-name-number-two";
        assert!(tenant_account_id(&format!("{one}-padding")).len() <= 30);
        assert_ne!(tenant_account_id(&format!("{one}-padding")), tenant_account_id(&format!("{two}-padding")));
    }
}
