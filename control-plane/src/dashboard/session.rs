//! The dashboard's session cookie: its expiry and an HMAC-SHA256 of it keyed
//! by the operator token. No session store, so every control-plane replica
//! accepts it; changing the operator token ends every session.

use ring::hmac;

pub const COOKIE: &str = "cellnet_dashboard";
/// A session lasts a working day.
pub const LIFETIME_MS: u64 = 12 * 3600 * 1000;
const VERSION: &str = "v1";

fn key(operator_token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, operator_token.as_bytes())
}

fn message(expires_ms: u64) -> String {
    format!("cellnet dashboard session {VERSION} until {expires_ms}")
}

/// A cookie value valid until `expires_ms`.
pub fn issue(operator_token: &str, expires_ms: u64) -> String {
    let tag = hmac::sign(&key(operator_token), message(expires_ms).as_bytes());
    format!("{VERSION}.{expires_ms}.{}", hex::encode(tag.as_ref()))
}

/// Whether a cookie value was issued with this token and is unexpired.
pub fn valid(operator_token: &str, value: &str, now_ms: u64) -> bool {
    let mut parts = value.split('.');
    let (Some(VERSION), Some(expires), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(expires_ms), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    expires_ms > now_ms
        && hmac::verify(&key(operator_token), message(expires_ms).as_bytes(), &tag).is_ok()
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// `Set-Cookie` for a new session: not readable by scripts, sent only to
/// the dashboard, never on cross-site requests.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME_MS / 1000
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_for_its_token_until_it_expires() {
        let cookie = issue("secret-token", 2_000);
        assert!(valid("secret-token", &cookie, 1_999));
        assert!(!valid("secret-token", &cookie, 2_000));
        assert!(!valid("other-token", &cookie, 1_000));
        // A longer life cannot be written in: the tag covers the expiry.
        let forged = cookie.replacen(".2000.", ".9999999.", 1);
        assert!(!valid("secret-token", &forged, 1_000));
        for junk in [
            "",
            "v1",
            "v1.2000",
            "v1.x.00",
            "v2.2000.00",
            "v1.2000.zz.extra",
        ] {
            assert!(!valid("secret-token", junk, 1_000), "{junk}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append(axum::http::header::COOKIE, "a=1".parse().unwrap());
        headers.append(
            axum::http::header::COOKIE,
            format!("b=2; {COOKIE}=v1.5.ab").parse().unwrap(),
        );
        assert_eq!(from_headers(&headers), Some("v1.5.ab"));
        assert_eq!(from_headers(&axum::http::HeaderMap::new()), None);
    }
}
