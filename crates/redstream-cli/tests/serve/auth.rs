//! The token, the Host check and the Origin check.

use redstream_cli::serve::ServeConfig;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{Dashboard, TOKEN, answer};

async fn protected() -> Dashboard {
    Dashboard::start(ServeConfig {
        token: Some(TOKEN.to_owned()),
        allow_writes: true,
        ..ServeConfig::default()
    })
    .await
}

const PATHS: [&str; 11] = [
    "/",
    "/health",
    "/metrics",
    "/api/streams",
    "/api/streams/info",
    "/api/metrics",
    "/api/dlq",
    "/api/stream/nope",
    "/api/streams/nope?count=1",
    "/api/pending/nope/g",
    "/no/such/route",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_needs_the_token() {
    let d = protected().await;
    for path in PATHS {
        for token in [None, Some("wrong"), Some(""), Some("test-token-5f2b9")] {
            let refused = d.send_as(Method::GET, path, None, token).await;
            refused.assert_error(401, "unauthorized");
            assert_eq!(
                refused.header("www-authenticate"),
                "Bearer realm=\"redstream\"",
                "{path}"
            );
            assert!(!refused.text.contains(TOKEN));
        }
        let accepted = d.send_as(Method::GET, path, None, Some(TOKEN)).await;
        assert_ne!(accepted.status, 401, "{path}: {}", accepted.text);
    }
    // The write actions too, before anything else is looked at.
    for path in ["/api/dlq/redrive", "/api/dlq/purge"] {
        d.send_as(Method::POST, path, Some(json!({ "all": true })), None)
            .await
            .assert_error(401, "unauthorized");
    }
    let counted = d.get("/api/metrics").await.json();
    assert!(
        counted["dashboard"]["auth_failures_total"]
            .as_u64()
            .unwrap()
            >= 46
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_token_works_on_the_page_and_the_websocket_only() {
    let d = protected().await;
    let page = d
        .send_as(Method::GET, &format!("/?token={TOKEN}"), None, None)
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("streams-table"));
    d.send_as(Method::GET, "/?token=wrong", None, None)
        .await
        .assert_error(401, "unauthorized");
    for path in ["/health", "/api/streams", "/metrics"] {
        d.send_as(Method::GET, &format!("{path}?token={TOKEN}"), None, None)
            .await
            .assert_error(401, "unauthorized");
    }

    // WebSocket: no token, a wrong one, then the query form and the header form.
    for url in [d.ws_url("/ws"), d.ws_url("/ws?token=nope")] {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401);
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url(&format!("/ws?token={TOKEN}")))
        .await
        .unwrap();
    let first = crate::websocket::next_json(&mut socket).await;
    assert_eq!(first["type"], "snapshot");
    let mut request = d.ws_url("/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        crate::websocket::next_json(&mut socket).await["type"],
        "snapshot"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_method_or_path_spelling_skips_the_token() {
    let d = protected().await;
    // Every method, on the page, an endpoint and a route that does not exist.
    for method in [
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::TRACE,
    ] {
        for path in ["/", "/api/streams", "/api/dlq/purge", "/nope"] {
            let refused = d.send_as(method.clone(), path, None, None).await;
            assert_eq!(refused.status, 401, "{method} {path}: {}", refused.text);
        }
    }
    // The query token is taken on `/` and `/ws` exactly: not on other spellings of them, which
    // would reach other routes (or none), nor on any other path.
    for path in [
        "//",
        "/%2F",
        "/ws/",
        "/%77s",
        "/WS",
        "/ws/../api/streams",
        "/./api/streams",
        "/api/streams",
        "/api/dlq/redrive",
        "/api/stream/ws",
    ] {
        let refused = d
            .send_as(Method::GET, &format!("{path}?token={TOKEN}"), None, None)
            .await;
        assert_eq!(refused.status, 401, "{path}: {}", refused.text);
    }
    // A token in the query does not help a write either.
    let write = d
        .http
        .post(d.url(&format!("/api/dlq/purge?token={TOKEN}")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    answer(write).await.assert_error(401, "unauthorized");
    // Schemes and spellings of the header that are not `Bearer <token>`.
    for value in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        TOKEN.to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Bearer x{TOKEN}"),
    ] {
        let refused = d
            .http
            .get(d.url("/api/streams"))
            .header("authorization", value.clone())
            .send()
            .await
            .unwrap();
        answer(refused).await.assert_error(401, "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_hosts_and_origins_are_refused() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let port = d.base.rsplit(':').next().unwrap().to_owned();
    // DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    let rebound = d
        .http
        .get(d.url("/api/streams"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    answer(rebound).await.assert_error(403, "forbidden_host");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let ok = d
            .http
            .get(d.url("/health"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }

    // Another site's page posting or reading with the browser's Origin header.
    let cross = d
        .http
        .get(d.url("/api/streams"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    answer(cross).await.assert_error(403, "forbidden_origin");
    let null = d
        .http
        .post(d.url("/api/dlq/purge"))
        .header("origin", "null")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    answer(null).await.assert_error(403, "forbidden_origin");
    let same = d
        .http
        .get(d.url("/api/streams"))
        .header("origin", d.base.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200);

    // Cross-site WebSocket hijacking.
    let mut request = d.ws_url("/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static("http://evil.example"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }

    // IP addresses are answered: a rebinding page always comes under a DNS name.
    let by_address = d
        .http
        .get(d.url("/health"))
        .header("host", format!("10.1.2.3:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_address.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_host_names_and_a_token_open_other_names() {
    let listed = Dashboard::start(ServeConfig {
        allowed_hosts: vec!["dashboard.internal".to_owned(), ".corp.example".to_owned()],
        ..ServeConfig::default()
    })
    .await;
    let status = |d: &Dashboard, host: &'static str| {
        let request = d.http.get(d.url("/health")).header("host", host).send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&listed, "Dashboard.Internal:8090").await, 200);
    assert_eq!(status(&listed, "ops.corp.example").await, 200);
    assert_eq!(status(&listed, "evil.example").await, 403);
    assert_eq!(status(&listed, "corp.example.evil.example").await, 403);

    let any = Dashboard::start(ServeConfig {
        allowed_hosts: vec!["*".to_owned()],
        ..ServeConfig::default()
    })
    .await;
    assert_eq!(status(&any, "evil.example").await, 200);

    // With a token, the token is what a rebinding page lacks: any name is answered with it,
    // and none without it.
    let token = Dashboard::start(ServeConfig {
        token: Some(TOKEN.to_owned()),
        ..ServeConfig::default()
    })
    .await;
    let with_token = token
        .http
        .get(token.url("/health"))
        .header("host", "dashboard.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
    let without = token
        .http
        .get(token.url("/health"))
        .header("host", "dashboard.example")
        .send()
        .await
        .unwrap();
    answer(without).await.assert_error(401, "unauthorized");
}
