//! Standard Webhooks signatures (docs/design.md, "Events"): the
//! `webhook-signature` header is `v1,` and the base64 of the HMAC-SHA256,
//! keyed by the signing secret's bytes (the base64 after `whsec_`, decoded),
//! of `<webhook-id>.<webhook-timestamp>.<body>`. HMAC is aws-lc-rs's, the
//! crate the TLS stack already uses. The key is borrowed, never kept or
//! printed.

use aws_lc_rs::hmac;
use base64::Engine as _;

/// The `webhook-signature` value for one request.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(context.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::webhook_signing_key;

    /// The specification's published vector (its libraries' `TestWebhookSign`).
    #[test]
    fn the_standard_webhooks_test_vector_is_reproduced() {
        let key = webhook_signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn any_change_of_id_timestamp_or_body_changes_the_signature() {
        let key = webhook_signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = sign(&key, "msg_1", 1_614_265_330, b"{}");
        assert_ne!(base, sign(&key, "msg_2", 1_614_265_330, b"{}"));
        assert_ne!(base, sign(&key, "msg_1", 1_614_265_331, b"{}"));
        assert_ne!(base, sign(&key, "msg_1", 1_614_265_330, b"{ }"));
    }
}
