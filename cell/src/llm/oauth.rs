//! OAuth bearer tokens for the clouds' APIs (Vertex AI; Azure OpenAI with
//! Entra ID), three ways:
//!
//! - a Google service-account key file: a JWT (RS256, signed with the key's
//!   private key) exchanged at the key's `token_uri` for an access token
//!   (grant type `urn:ietf:params:oauth:grant-type:jwt-bearer`);
//! - a command that prints a token (e.g. `gcloud auth print-access-token`,
//!   `az account get-access-token --resource https://cognitiveservices.azure.com --query accessToken -o tsv`);
//! - a token taken as is from an environment variable.
//!
//! Tokens are cached until shortly before they expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Secret;

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Tokens are renewed this long before they expire.
const RENEW_EARLY: Duration = Duration::from_secs(60);
/// How long a token printed by a command is used (gcloud's last an hour).
const COMMAND_TOKEN_LIFETIME: Duration = Duration::from_secs(45 * 60);

/// The fields of a service-account key file this client uses.
#[derive(Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

pub enum TokenSource {
    ServiceAccount {
        email: String,
        key_id: Option<String>,
        key: Box<ring::signature::RsaKeyPair>,
        token_uri: String,
    },
    Command(String),
    Static(Secret),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::ServiceAccount { email, .. } => write!(f, "ServiceAccount({email})"),
            TokenSource::Command(c) => write!(f, "Command({c:?})"),
            TokenSource::Static(_) => write!(f, "Static(…)"),
        }
    }
}

impl TokenSource {
    /// Reads a service-account key (JSON, with a PKCS#8 PEM private key).
    pub fn service_account(json: &str) -> Result<Self, String> {
        let key: ServiceAccountKey =
            serde_json::from_str(json).map_err(|e| format!("not a service-account key: {e}"))?;
        let der = pem_body(&key.private_key)?;
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("private_key is not a usable RSA key: {e}"))?;
        Ok(TokenSource::ServiceAccount {
            email: key.client_email,
            key_id: key.private_key_id,
            key: Box::new(pair),
            token_uri: key.token_uri,
        })
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_body(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("private_key is not PEM: {e}"))
}

/// A signed JWT asking for an access token with `scope`.
pub fn signed_assertion(
    email: &str,
    key_id: Option<&str>,
    key: &ring::signature::RsaKeyPair,
    audience: &str,
    now_secs: u64,
) -> Result<String, String> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": audience,
        "iat": now_secs,
        "exp": now_secs + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing the token request failed".to_owned())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token source with its cached token.
#[derive(Debug)]
pub struct OAuthTokens {
    source: TokenSource,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl OAuthTokens {
    pub fn new(source: TokenSource) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    /// A valid access token, fetched or renewed when needed.
    pub async fn token(&self, http: &reqwest::Client, timeout: Duration) -> Result<Secret, String> {
        if let TokenSource::Static(token) = &self.source {
            return Ok(token.clone());
        }
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = match &self.source {
            TokenSource::Static(token) => (token.clone(), Duration::MAX),
            TokenSource::Command(command) => {
                let out = tokio::time::timeout(
                    timeout,
                    tokio::process::Command::new("sh")
                        .args(["-c", command])
                        .output(),
                )
                .await
                .map_err(|_| format!("token command {command:?} timed out"))?
                .map_err(|e| format!("cannot run the token command {command:?}: {e}"))?;
                let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.status.success() || token.is_empty() {
                    return Err(format!(
                        "token command {command:?} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                (Secret::new(token), COMMAND_TOKEN_LIFETIME)
            }
            TokenSource::ServiceAccount {
                email,
                key_id,
                key,
                token_uri,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let assertion = signed_assertion(email, key_id.as_deref(), key, token_uri, now)?;
                let send = http
                    .post(token_uri)
                    .form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", assertion.as_str()),
                    ])
                    .send();
                let response = tokio::time::timeout(timeout, send)
                    .await
                    .map_err(|_| format!("token exchange at {token_uri} timed out"))?
                    .map_err(|e| format!("token exchange at {token_uri} failed: {e}"))?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!(
                        "token exchange at {token_uri} refused ({status}): {}",
                        super::wire::snippet(&body)
                    ));
                }
                let parsed: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| format!("unreadable token response: {e}"))?;
                let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600));
                (Secret::new(parsed.access_token), lifetime)
            }
        };
        let until = Instant::now() + lifetime.saturating_sub(RENEW_EARLY);
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}
