//! The router's signature on the tenant context it sends to cells. Cells
//! serve tenant requests only when the signature checks out, so a caller who
//! reaches a cell directly cannot act for a tenant it did not authenticate as.
//!
//! The signature is HMAC-SHA256, under a key the control plane keeps in etcd,
//! over the method, path and query, tenant, request id, a timestamp and the
//! SHA-256 of the body. The timestamp bounds replays to a short window.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Seconds since the epoch when the router signed.
pub const TIMESTAMP_HEADER: &str = "x-cellnet-timestamp";
/// `v1=<hex hmac>`.
pub const SIGNATURE_HEADER: &str = "x-cellnet-signature";
/// How far a signature's timestamp may be from the cell's clock.
pub const MAX_SKEW_SECS: u64 = 60;

/// What is signed.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub tenant: &'a str,
    pub request_id: &'a str,
    pub timestamp: u64,
    pub body: &'a [u8],
}

/// `None` only if the HMAC refused the key, which it never does (HMAC takes
/// keys of any length).
fn mac(key: &[u8], parts: &SignedParts<'_>) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    let body = Sha256::digest(parts.body);
    for field in [
        parts.method.as_bytes(),
        parts.path_and_query.as_bytes(),
        parts.tenant.as_bytes(),
        parts.request_id.as_bytes(),
        parts.timestamp.to_string().as_bytes(),
        body.as_slice(),
    ] {
        // Length-prefixed so that fields cannot run into each other.
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    Some(mac)
}

/// The signature header value for `parts`.
pub fn sign(key: &[u8], parts: &SignedParts<'_>) -> String {
    let tag = mac(key, parts).map(|m| hex::encode(m.finalize().into_bytes()));
    format!("v1={}", tag.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request carries no router signature")]
    Missing,
    #[error("the router signature is malformed")]
    Malformed,
    #[error("the router signature is too old or from the future")]
    Expired,
    #[error("the router signature does not match the request")]
    Mismatch,
}

/// Checks `signature` (the header value) for `parts` at time `now`, made
/// under any of `keys` (the current key and, after a rotation, the previous).
pub fn verify<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    parts: &SignedParts<'_>,
    signature: Option<&str>,
    now: u64,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let hex_mac = signature
        .strip_prefix("v1=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_mac).map_err(|_| SignatureError::Malformed)?;
    if now.abs_diff(parts.timestamp) > MAX_SKEW_SECS {
        return Err(SignatureError::Expired);
    }
    // Constant-time comparison.
    let matches = |key: &[u8]| mac(key, parts).is_some_and(|m| m.verify_slice(&expected).is_ok());
    if keys.into_iter().any(matches) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(tenant: &'a str, body: &'static [u8]) -> SignedParts<'a> {
        SignedParts {
            method: "POST",
            path_and_query: "/v1/query",
            tenant,
            request_id: "r1",
            timestamp: 1000,
            body,
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        let key = b"k".repeat(32);
        let sig = sign(&key, &parts("acme", b"{}"));
        assert_eq!(
            verify([key.as_slice()], &parts("acme", b"{}"), Some(&sig), 1010),
            Ok(())
        );
        assert_eq!(
            verify([key.as_slice()], &parts("globex", b"{}"), Some(&sig), 1010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                [key.as_slice()],
                &parts("acme", b"{\"x\":1}"),
                Some(&sig),
                1010
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify([&b"other"[..]], &parts("acme", b"{}"), Some(&sig), 1010),
            Err(SignatureError::Mismatch)
        );
        // Under any of the keys given: a rotation's previous key still counts.
        assert_eq!(
            verify(
                [&b"other"[..], key.as_slice()],
                &parts("acme", b"{}"),
                Some(&sig),
                1010
            ),
            Ok(())
        );
        assert_eq!(
            verify([], &parts("acme", b"{}"), Some(&sig), 1010),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify([key.as_slice()], &parts("acme", b"{}"), Some(&sig), 2000),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify([key.as_slice()], &parts("acme", b"{}"), None, 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify([key.as_slice()], &parts("acme", b"{}"), Some("v1=zz"), 1000),
            Err(SignatureError::Malformed)
        );
    }
}
