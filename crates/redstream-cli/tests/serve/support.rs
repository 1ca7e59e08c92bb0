//! A dashboard served in-process on a free port over a private redis-server, and an HTTP client
//! for it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_cli::serve::{AppState, ServeConfig, serve};
use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::task::JoinHandle;

pub(crate) const TOKEN: &str = "test-token-5f2b9c";

/// A running dashboard and what a test needs around it.
pub(crate) struct Dashboard {
    pub(crate) redis: Arc<RedisServer>,
    /// A transport of the test's own, to publish and dead-letter with.
    pub(crate) transport: RedisTransport,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// The token requests carry by default (the configured one).
    pub(crate) token: Option<String>,
    server: JoinHandle<()>,
    state: AppState,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.state.shutdown_token().cancel();
        self.server.abort();
    }
}

/// One answer: status, headers and body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// Checks the error shape `{ "error": { "kind", "message" } }`, the status and the kind.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert!(
            self.header("content-type").starts_with("application/json"),
            "{:?}",
            self.headers
        );
        let json = self.json();
        assert_eq!(json["error"]["kind"], kind, "{}", self.text);
        let message = json["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty());
        assert_eq!(json.as_object().unwrap().len(), 1, "{}", self.text);
        assert_eq!(json["error"].as_object().unwrap().len(), 2, "{}", self.text);
    }
}

pub(crate) async fn transport(url: &str) -> RedisTransport {
    RedisTransport::new(RedisConfig {
        url: url.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .unwrap()
}

impl Dashboard {
    /// A dashboard with `config` over a fresh redis-server.
    pub(crate) async fn start(config: ServeConfig) -> Self {
        Self::start_on(RedisServer::start().await.unwrap(), config).await
    }

    pub(crate) async fn start_on(redis: RedisServer, config: ServeConfig) -> Self {
        let url = redis.url();
        Self::start_as(redis, &url, config).await
    }

    /// A dashboard that connects with `url` (another user, say); the test's own transport
    /// connects with the server's URL.
    pub(crate) async fn start_as(redis: RedisServer, url: &str, config: ServeConfig) -> Self {
        let token = config.token.clone();
        let state = AppState::new(transport(url).await, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served = state.clone();
        let server = tokio::spawn(async move {
            serve(listener, served, std::future::pending())
                .await
                .unwrap();
        });
        Self {
            transport: transport(&redis.url()).await,
            redis: Arc::new(redis),
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            token,
            server,
            state,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws{}{path}", self.base.trim_start_matches("http"))
    }

    /// Sends a request with the dashboard's token (if any) as a bearer header.
    pub(crate) async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let token = self.token.clone();
        self.send_as(method, path, body, token.as_deref()).await
    }

    pub(crate) async fn send_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.unwrap()).await
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Publishes an event of `event_type` and returns its entry id.
    pub(crate) async fn publish(&self, event_type: &str, payload: Value) -> String {
        self.transport
            .publish(Event::new(event_type, payload, EventMetadata::default()))
            .await
            .unwrap()
    }

    /// Dead-letters an event of `event_type` by hand and returns the dead letter's id.
    pub(crate) async fn dead_letter(
        &self,
        event_type: &str,
        payload: Value,
        error: &str,
    ) -> String {
        let event = Event::new(event_type, payload, EventMetadata::default());
        self.transport.publish_to_dlq(event, error).await.unwrap()
    }

    pub(crate) async fn conn(&self) -> MultiplexedConnection {
        self.redis.connection().await.unwrap()
    }
}

pub(crate) async fn answer(response: reqwest::Response) -> Answer {
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// The payloads of the events in `stream`, oldest first.
pub(crate) async fn payloads(conn: &mut MultiplexedConnection, stream: &str) -> Vec<Value> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries
        .iter()
        .map(|(_, fields)| {
            let (_, envelope) = fields.iter().find(|(k, _)| k == "event").unwrap();
            serde_json::from_str::<Value>(envelope).unwrap()["payload"].clone()
        })
        .collect()
}

/// Creates `group` on `stream` from its start, and has `consumer` read `count` entries (which
/// stay pending).
pub(crate) async fn read_as(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
) {
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

/// The stream named `name` in a `/api/streams` answer or a snapshot.
pub(crate) fn stream<'a>(streams: &'a Value, name: &str) -> &'a Value {
    streams
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stream {name} in {streams}"))
}
