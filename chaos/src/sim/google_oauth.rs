//! Google's OAuth token endpoint for service accounts, as far as a client
//! exchanging a signed JWT needs it: `POST /oauth2/token` with the form
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`.
//! The JWT must be RS256-signed by a configured account's key, addressed to
//! a `…/oauth2/token` audience, unexpired, with a scope. The access token it
//! returns is then accepted by every region of the simulator.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Simulator;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A service account the simulator knows: its email and public key.
#[derive(Debug)]
pub struct KnownAccount {
    pub email: String,
    /// DER `RSAPublicKey`.
    public_key: Vec<u8>,
}

#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
}

impl KnownAccount {
    pub fn from_key_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let key: KeyFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a service-account key", path.display()))?;
        let body: String = key
            .private_key
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        let der = STANDARD.decode(body)?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("{}: not an RSA key: {e}", path.display()))?;
        Ok(Self {
            email: key.client_email,
            public_key: pair.public().as_ref().to_vec(),
        })
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `application/x-www-form-urlencoded` value decoding.
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a signed token request; returns the account's email.
pub fn verify_assertion(
    accounts: &[KnownAccount],
    assertion: &str,
    now: u64,
) -> Result<String, String> {
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the assertion is not a JWT".into());
    };
    let decode = |p: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "bad base64url in the JWT".to_owned())?;
        serde_json::from_slice(&bytes).map_err(|_| "bad JSON in the JWT".to_owned())
    };
    let header = decode(h)?;
    let claims = decode(c)?;
    if header["alg"] != "RS256" {
        return Err("the JWT must be signed with RS256".into());
    }
    let email = claims["iss"].as_str().unwrap_or_default();
    let account = accounts
        .iter()
        .find(|a| a.email == email)
        .ok_or_else(|| format!("unknown service account {email:?}"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "bad signature encoding".to_owned())?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &account.public_key,
    )
    .verify(format!("{h}.{c}").as_bytes(), &signature)
    .map_err(|_| "invalid JWT signature".to_owned())?;
    if !claims["aud"]
        .as_str()
        .is_some_and(|a| a.ends_with("/oauth2/token") || a.ends_with("/token"))
    {
        return Err("the JWT's audience must be the token endpoint".into());
    }
    if claims["scope"].as_str().is_none_or(str::is_empty) {
        return Err("the JWT must carry a scope".into());
    }
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if exp <= now || iat > now + 60 || exp > iat + 3600 {
        return Err("the JWT is expired, from the future, or lives over an hour".into());
    }
    Ok(account.email.clone())
}

pub async fn token(State(sim): State<Arc<Simulator>>, body: String) -> Response {
    let mut grant_type = None;
    let mut assertion = None;
    for pair in body.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "grant_type" => grant_type = Some(form_decode(v)),
            "assertion" => assertion = Some(form_decode(v)),
            _ => {}
        }
    }
    if grant_type.as_deref() != Some(GRANT_TYPE) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = assertion else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    match verify_assertion(&sim.service_accounts, &assertion, now_secs()) {
        Ok(email) => {
            let access_token = format!("ya29.sim-{}", uuid::Uuid::new_v4().simple());
            if let Ok(mut issued) = sim.issued_tokens.lock() {
                issued.insert(access_token.clone());
            }
            tracing::info!(%email, "access token issued");
            Json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
                .into_response()
        }
        Err(why) => oauth_error("invalid_grant", &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_decode("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
            GRANT_TYPE
        );
        assert_eq!(form_decode("a+b%2"), "a b%2");
        assert_eq!(form_decode("%é%zz"), "%é%zz");
    }
}
