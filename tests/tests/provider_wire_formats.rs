//! The provider clients and the simulator against request and response
//! bodies in the shape of the providers' public documentation
//! (`tests/fixtures/providers/`), and Vertex AI's service-account token flow
//! end to end against the simulator's token endpoint.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cell::llm::oauth::{OAuthTokens, TokenSource};
use cell::llm::openai_compatible::OpenAiCompatible;
use cell::llm::vertex::{self, VertexAi};
use cell::llm::{ChatRequest, ProviderError, azure};
use serde_json::{Value, json};

const SIM_KEY: &str = "sim-key";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/providers")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// Every key path in `v` (array elements as `[]`).
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{prefix}.{k}");
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn paths(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    key_paths(v, "", &mut out);
    out
}

fn chat_request() -> ChatRequest {
    ChatRequest {
        system: "You are a physics teacher.".into(),
        user: "<context>\n[1] Rayleigh scattering makes the sky blue.\n</context>\nQuestion: Why is the sky blue?".into(),
        max_tokens: 256,
        temperature: 0.2,
    }
}

#[test]
fn clients_read_the_documented_answers() {
    let vertex =
        vertex::parse_response("v", &fixture("vertex_generate_content_response.json"), "x")
            .unwrap();
    assert_eq!(
        vertex.content,
        "Sunlight is scattered by the molecules of the air, and blue light is scattered the most."
    );
    assert_eq!(vertex.model, "gemini-2.0-flash-001");
    assert_eq!(
        (
            vertex.usage.prompt_tokens,
            vertex.usage.completion_tokens,
            vertex.usage.total_tokens
        ),
        (16, 19, 35)
    );
    let blocked = vertex::parse_response("v", &fixture("vertex_blocked_response.json"), "x");
    assert!(
        matches!(&blocked, Err(ProviderError::Decode { message, .. }) if message.contains("SAFETY")),
        "{blocked:?}"
    );
    assert_eq!(
        vertex::error_message(&fixture("vertex_error_429.json")),
        "RESOURCE_EXHAUSTED: Resource exhausted. Please try again later."
    );

    let openai =
        azure::parse_chat_completion("o", &fixture("openai_chat_completion_response.json"), "x")
            .unwrap();
    assert_eq!(
        openai.content,
        "\n\nHello there, how may I assist you today?"
    );
    assert_eq!(openai.usage.total_tokens, 21);
    assert_eq!(
        azure::openai_error_message(&fixture("openai_error_429.json")),
        "Rate limit reached for requests"
    );

    let az =
        azure::parse_chat_completion("a", &fixture("azure_chat_completion_response.json"), "x")
            .unwrap();
    assert_eq!(
        az.content,
        "Yes, customer managed keys are supported by Azure OpenAI."
    );
    assert_eq!(az.usage.prompt_tokens, 23);
    assert!(
        azure::openai_error_message(&fixture("azure_error_429.json"))
            .contains("retry after 2 seconds")
    );
}

#[test]
fn clients_send_the_documented_request_shapes() {
    let sent = vertex::request_body(&chat_request());
    assert_eq!(
        paths(&sent),
        paths(&fixture_json("vertex_generate_content_request.json"))
    );
    let client = OpenAiCompatible {
        name: "o".into(),
        region: "r".into(),
        base_url: "http://x/v1".into(),
        model: "gpt-4o-mini".into(),
        api_key: None,
        timeout: Duration::from_secs(1),
        http: cell::llm::http::ProviderHttp::new().unwrap(),
    };
    assert_eq!(
        paths(&client.request_body(&chat_request())),
        paths(&fixture_json("openai_chat_completion_request.json"))
    );
    assert_eq!(client.url(), "http://x/v1/chat/completions");
}

/// A simulator in this process, on a free port.
async fn simulator(config: Value) -> String {
    let config: chaos::sim::Config = serde_json::from_value(config).unwrap();
    let sim = chaos::sim::Simulator::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, chaos::sim::routes(sim)).await });
    url
}

fn regions(extra: Value) -> Value {
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "api_key": SIM_KEY,
        "regions": [
            {"name": "vertex-us-central1", "deployments": ["gemini-2.0-flash"]},
            {"name": "openai-local", "deployments": ["gpt-4o-mini"]},
            {"name": "vertex-throttled", "deployments": ["gemini-2.0-flash"], "faults": {"throttle_rate": 1.0}}
        ]
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
}

#[tokio::test]
async fn the_simulator_accepts_the_documented_requests() {
    let sim = simulator(regions(json!({}))).await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{sim}/vertex-us-central1/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"))
        .bearer_auth(SIM_KEY)
        .json(&fixture_json("vertex_generate_content_request.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let documented = paths(&fixture_json("vertex_generate_content_response.json"));
    for required in [
        ".candidates",
        ".candidates[].content",
        ".candidates[].content.role",
        ".candidates[].content.parts",
        ".candidates[].content.parts[].text",
        ".candidates[].finishReason",
        ".usageMetadata.promptTokenCount",
        ".usageMetadata.candidatesTokenCount",
        ".usageMetadata.totalTokenCount",
        ".modelVersion",
        ".createTime",
        ".responseId",
    ] {
        assert!(documented.contains(required), "fixture lacks {required}");
        assert!(
            paths(&body).contains(required),
            "simulator lacks {required}: {body}"
        );
    }

    let response = http
        .post(format!("{sim}/openai-local/v1/chat/completions"))
        .bearer_auth(SIM_KEY)
        .json(&fixture_json("openai_chat_completion_request.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let documented = paths(&fixture_json("openai_chat_completion_response.json"));
    for required in [
        ".id",
        ".object",
        ".created",
        ".model",
        ".choices[].index",
        ".choices[].message.role",
        ".choices[].message.content",
        ".choices[].finish_reason",
        ".usage.prompt_tokens",
        ".usage.completion_tokens",
        ".usage.total_tokens",
    ] {
        assert!(documented.contains(required), "fixture lacks {required}");
        assert!(
            paths(&body).contains(required),
            "simulator lacks {required}: {body}"
        );
    }

    // Google-shaped errors from the Vertex paths.
    let response = http
        .post(format!("{sim}/vertex-throttled/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"))
        .bearer_auth(SIM_KEY)
        .json(&fixture_json("vertex_generate_content_request.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(paths(&body), paths(&fixture_json("vertex_error_429.json")));
}

/// A service-account key file as Google issues them, with a fresh RSA key.
fn service_account_key(dir: &Path, name: &str, token_uri: &str) -> PathBuf {
    let pem_path = dir.join(format!("{name}.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed to make a test key");
    assert!(status.success());
    let key = json!({
        "type": "service_account",
        "project_id": "cellnet-test",
        "private_key_id": format!("{name}-key-id"),
        "private_key": std::fs::read_to_string(&pem_path).unwrap(),
        "client_email": format!("{name}@cellnet-test.iam.gserviceaccount.com"),
        "client_id": "1234567890",
        "token_uri": token_uri,
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

fn vertex_client(sim: &str, region: &str, source: TokenSource) -> VertexAi {
    VertexAi {
        name: region.into(),
        region: "us-central1".into(),
        endpoint: format!("{sim}/{region}"),
        project: "cellnet-test".into(),
        location: "us-central1".into(),
        model: "gemini-2.0-flash".into(),
        auth: OAuthTokens::new(source),
        timeout: Duration::from_secs(5),
        http: cell::llm::http::ProviderHttp::new().unwrap(),
    }
}

#[tokio::test]
async fn vertex_answers_with_a_token_from_a_service_account_key() {
    let dir = tempfile::tempdir().unwrap();
    // The simulator's address is needed in the key (token_uri) before it starts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let token_uri = format!("http://127.0.0.1:{port}/oauth2/token");
    let trusted = service_account_key(dir.path(), "trusted", &token_uri);
    let stranger = service_account_key(dir.path(), "stranger", &token_uri);
    let config: chaos::sim::Config = serde_json::from_value(regions(json!({
        "listen": format!("127.0.0.1:{port}"),
        "service_account_key_files": [trusted],
    })))
    .unwrap();
    let sim_state = chaos::sim::Simulator::new(config).unwrap();
    let issued = sim_state.clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, chaos::sim::routes(sim_state)).await });
    let sim = format!("http://127.0.0.1:{port}");

    let source = TokenSource::service_account(&std::fs::read_to_string(&trusted).unwrap()).unwrap();
    let client = vertex_client(&sim, "vertex-us-central1", source);
    let answer = client.chat(&chat_request(), "req-1").await.unwrap();
    assert!(answer.content.contains("Rayleigh"), "{}", answer.content);
    assert_eq!(answer.model, "gemini-2.0-flash");
    assert!(answer.usage.total_tokens > 0);
    // The token is cached: a second answer needs no new exchange.
    client.chat(&chat_request(), "req-2").await.unwrap();
    assert_eq!(issued.issued_tokens.lock().unwrap().len(), 1);

    // A key the token endpoint does not know gets no token; the error says so
    // and lets the cell move on to another region.
    let source =
        TokenSource::service_account(&std::fs::read_to_string(&stranger).unwrap()).unwrap();
    let refused = vertex_client(&sim, "vertex-us-central1", source)
        .chat(&chat_request(), "req-3")
        .await
        .unwrap_err();
    assert!(refused.is_retryable());
    assert!(
        refused.to_string().contains("unknown service account"),
        "{refused}"
    );

    // A wrong static token is a 401 in Google's shape.
    let wrong = vertex_client(
        &sim,
        "vertex-us-central1",
        TokenSource::Static(common::config::Secret::new("nope")),
    )
    .chat(&chat_request(), "req-4")
    .await
    .unwrap_err();
    assert!(
        matches!(&wrong, ProviderError::Status { status: 401, message, .. } if message.starts_with("UNAUTHENTICATED")),
        "{wrong}"
    );

    // Throttled: a retryable 429 naming RESOURCE_EXHAUSTED.
    let throttled = vertex_client(
        &sim,
        "vertex-throttled",
        TokenSource::Static(common::config::Secret::new(SIM_KEY)),
    )
    .chat(&chat_request(), "req-5")
    .await
    .unwrap_err();
    assert!(throttled.is_retryable());
    assert!(
        throttled.to_string().contains("RESOURCE_EXHAUSTED"),
        "{throttled}"
    );
}

#[tokio::test]
async fn openai_compatible_servers_answer_through_the_client() {
    let sim = simulator(regions(json!({}))).await;
    let client = OpenAiCompatible {
        name: "openai-local".into(),
        region: "local".into(),
        base_url: format!("{sim}/openai-local/v1"),
        model: "gpt-4o-mini".into(),
        api_key: Some(common::config::Secret::new(SIM_KEY)),
        timeout: Duration::from_secs(5),
        http: cell::llm::http::ProviderHttp::new().unwrap(),
    };
    let answer = client.chat(&chat_request(), "req-1").await.unwrap();
    assert!(answer.content.contains("Rayleigh"), "{}", answer.content);
    let unknown = OpenAiCompatible {
        model: "gpt-9".into(),
        ..client
    };
    let err = unknown.chat(&chat_request(), "req-2").await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Status { status: 404, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn streams_end_in_their_marker_or_in_an_error() {
    use cell::llm::stream::StreamEvent;
    use futures::StreamExt;
    let sim = simulator(regions(json!({"regions": [
        {"name": "openai-local", "deployments": ["gpt-4o-mini"]},
        {"name": "openai-cut", "deployments": ["gpt-4o-mini"], "faults": {"cut_after_chunks": 2}},
        {"name": "vertex-us-central1", "deployments": ["gemini-2.0-flash"]},
        {"name": "vertex-cut", "deployments": ["gemini-2.0-flash"], "faults": {"cut_after_chunks": 1}}
    ]})))
    .await;
    let openai = |region: &str| OpenAiCompatible {
        name: region.into(),
        region: "local".into(),
        base_url: format!("{sim}/{region}/v1"),
        model: "gpt-4o-mini".into(),
        api_key: Some(common::config::Secret::new(SIM_KEY)),
        timeout: Duration::from_secs(5),
        http: cell::llm::http::ProviderHttp::new().unwrap(),
    };
    let collect = |mut s: cell::llm::stream::TokenStream| async move {
        let mut events = Vec::new();
        while let Some(e) = s.next().await {
            events.push(e);
        }
        events
    };

    let whole = collect(
        openai("openai-local")
            .chat_stream(&chat_request(), "r1")
            .await
            .unwrap(),
    )
    .await;
    let text: String = whole
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Delta(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(text.contains("Rayleigh"), "{whole:?}");
    assert!(
        matches!(whole.last(), Some(Ok(StreamEvent::Done { usage, .. })) if usage.total_tokens > 0),
        "{whole:?}"
    );

    let cut = collect(
        openai("openai-cut")
            .chat_stream(&chat_request(), "r2")
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(cut.first(), Some(Ok(StreamEvent::Delta(_)))),
        "{cut:?}"
    );
    assert!(matches!(cut.last(), Some(Err(_))), "{cut:?}");

    let vertex = |region: &str| {
        vertex_client(
            &sim,
            region,
            TokenSource::Static(common::config::Secret::new(SIM_KEY)),
        )
    };
    let whole = collect(
        vertex("vertex-us-central1")
            .chat_stream(&chat_request(), "r3")
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(whole.last(), Some(Ok(StreamEvent::Done { usage, model: Some(m) })) if usage.total_tokens > 0 && m == "gemini-2.0-flash"),
        "{whole:?}"
    );
    let cut = collect(
        vertex("vertex-cut")
            .chat_stream(&chat_request(), "r4")
            .await
            .unwrap(),
    )
    .await;
    assert!(matches!(cut.last(), Some(Err(_))), "{cut:?}");
}

#[tokio::test]
async fn azure_accepts_an_entra_bearer_token_from_a_command() {
    use cell::llm::azure::{AzureAuth, AzureOpenAi};
    let sim = simulator(regions(json!({"regions": [
        {"name": "azure-eastus", "deployments": ["gpt-4o-mini"]}
    ]})))
    .await;
    let client = |command: &str| AzureOpenAi {
        name: "azure-eastus".into(),
        region: "eastus".into(),
        endpoint: format!("{sim}/azure-eastus"),
        deployment: "gpt-4o-mini".into(),
        api_version: azure::DEFAULT_API_VERSION.into(),
        auth: AzureAuth::Entra(OAuthTokens::new(TokenSource::Command(command.into()))),
        timeout: Duration::from_secs(5),
        http: cell::llm::http::ProviderHttp::new().unwrap(),
    };
    let answer = client(&format!("echo {SIM_KEY}"))
        .chat(&chat_request(), "r1")
        .await
        .unwrap();
    assert!(answer.content.contains("Rayleigh"));
    let failed = client("exit 3")
        .chat(&chat_request(), "r2")
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("no Entra token"), "{failed}");
    assert!(failed.is_retryable());
}
