use super::*;
use redstream_core::ErrorKind;
use std::path::Path;

#[test]
fn defaults_are_valid() {
    RedisConfig::default().validate().unwrap();
    TransportOptions::default().validate().unwrap();
}

#[test]
fn debug_redacts_the_password() {
    let config = RedisConfig::default().with_url("redis://app:hunter2@cache:6379/0");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("redis://app:***@cache:6379/0"), "{debug}");
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        (
            RedisConfig::default().with_url("http://x"),
            "config field url",
        ),
        (
            RedisConfig::default().with_url("redis://:secret@[bad"),
            "config field url",
        ),
        (
            RedisConfig::default().with_stream_prefix("a b"),
            "config field stream_prefix",
        ),
        (
            RedisConfig::default().with_stream_prefix("a{b}"),
            "config field stream_prefix",
        ),
        (
            RedisConfig::default().with_consumer_group("a b"),
            "config field consumer_group",
        ),
        (
            RedisConfig::default().with_consumer_name("x\n"),
            "config field consumer_name",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let message = err.to_string();
        assert!(message.contains(field), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
    let err = TransportOptions::default()
        .with_read_count(0)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("read_count"), "{err}");
    let err = TransportOptions::default()
        .with_claim_idle_time(Duration::ZERO)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("claim_idle_time"), "{err}");
}

#[test]
fn an_empty_prefix_and_glob_characters_are_allowed() {
    for prefix in ["", "a*b", "events"] {
        RedisConfig::default()
            .with_stream_prefix(prefix)
            .validate()
            .unwrap();
    }
}

#[test]
fn seed_struct_literal_compiles() {
    use redstream_core::BackpressureStrategy;
    let config = RedisConfig {
        url: "redis://localhost:6379".to_string(),
        stream_prefix: "events".to_string(),
        consumer_group: "watchtower-consumers".to_string(),
        consumer_name: "consumer-1".to_string(),
        max_stream_length: 10000,
        backpressure: BackpressureConfig {
            max_queue_size: 1000,
            strategy: BackpressureStrategy::DropOldest,
            warning_threshold: 0.8,
        },
    };
    config.validate().unwrap();
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";

#[test]
fn tls_debug_hides_the_key_and_pem_text() {
    let tls = TlsOptions::default()
        .with_ca_cert_pem(CERT)
        .with_client_cert(CERT, KEY);
    let debug = format!("{:?}", TransportOptions::default().with_tls(tls));
    assert!(!debug.contains("c2VjcmV0"), "{debug}");
    assert!(!debug.contains("BEGIN"), "{debug}");
    assert!(
        debug.contains("client_key_pem: Some(\"<redacted>\")"),
        "{debug}"
    );
}

#[test]
fn tls_fields_are_checked_and_named() {
    let valid = TlsOptions::default()
        .with_ca_cert_pem(CERT)
        .with_client_cert(CERT, KEY);
    valid.validate().unwrap();
    let cases = [
        (
            TlsOptions::default().with_ca_cert_pem("not pem"),
            "tls.ca_cert_pem",
        ),
        (
            TlsOptions::default()
                .with_ca_cert_pem(CERT)
                .with_ca_cert_path("/ca.pem"),
            "tls.ca_cert_path",
        ),
        (
            TlsOptions {
                client_cert_pem: Some(CERT.to_owned()),
                ..TlsOptions::default()
            },
            "tls.client_key_pem",
        ),
        (
            TlsOptions::default().with_client_cert(CERT, "not a key"),
            "tls.client_key_pem",
        ),
        (
            TlsOptions::default().with_client_cert("not a cert", KEY),
            "tls.client_cert_pem",
        ),
    ];
    for (tls, field) in cases {
        let err = TransportOptions::default()
            .with_tls(tls)
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = valid
        .certificates("redis://:secret@cache:6379")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("tls.ca_cert_pem"), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(valid.certificates("rediss://cache:6379").unwrap().is_some());
    assert!(
        TlsOptions::default()
            .certificates("redis://cache:6379")
            .unwrap()
            .is_none()
    );
}

#[test]
fn sentinel_settings_and_key_layout() {
    let options: TransportOptions = serde_json::from_str(
        r#"{"master_name": "mymaster", "sentinel_password": "s3cret-Canary"}"#,
    )
    .unwrap();
    assert_eq!(options.connection.master_name.as_deref(), Some("mymaster"));
    assert!(!format!("{options:?}").contains("Canary"));
    let code = TransportOptions::default()
        .with_master_name("mymaster")
        .with_sentinel_username("watcher")
        .with_sentinel_password("s3cret-Canary");
    assert!(!format!("{code:?}").contains("Canary"));
    assert!(format!("{code:?}").contains("watcher"));
    let core = code.connection_options("redis-sentinel://s1:26379");
    assert_eq!(core.topology().unwrap(), Topology::Sentinel);
    assert_eq!(core.sentinel_username.as_deref(), Some("watcher"));
    // The nested section of earlier versions: refused, naming the fields that replace it.
    for old in [
        r#"{"sentinel": {"master_name": "mymaster", "password": "s3cret-Canary"}}"#,
        r#"{"sentinel": {}}"#,
    ] {
        let err = serde_json::from_str::<TransportOptions>(old)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown field `sentinel`: "), "{err}");
        for name in ["master_name", "sentinel_username", "sentinel_password"] {
            assert!(err.contains(name), "{err}");
        }
        assert!(!err.contains("Canary"), "{err}");
    }
    let unset = TransportOptions::default();
    assert_eq!(
        unset.key_layout_for(Topology::Cluster).unwrap(),
        KeyLayout::Cluster
    );
    assert_eq!(
        unset.key_layout_for(Topology::Single).unwrap(),
        KeyLayout::Plain
    );
    assert_eq!(
        unset.key_layout_for(Topology::Sentinel).unwrap(),
        KeyLayout::Plain
    );
    let plain = unset.clone().with_key_layout(KeyLayout::Plain);
    let err = plain.key_layout_for(Topology::Cluster).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("key_layout cluster"), "{err}");
    let cluster = unset.with_key_layout(KeyLayout::Cluster);
    assert_eq!(
        cluster.key_layout_for(Topology::Single).unwrap(),
        KeyLayout::Cluster
    );
    for url in [
        "redis-cluster://h1:6379,h2:6379",
        "redis-sentinel://s1:26379,s2:26379/mymaster",
        "redis-sentinel://s1:26379",
    ] {
        RedisConfig::default().with_url(url).validate().unwrap();
    }
}

#[test]
fn options_read_from_json_with_humane_durations() {
    let options: TransportOptions =
        serde_json::from_str(r#"{"block_time": "250ms", "claim_idle_time": "1m"}"#).unwrap();
    assert_eq!(options.block_time, Duration::from_millis(250));
    assert_eq!(options.claim_idle_time, Duration::from_secs(60));
    assert_eq!(options.read_count, 200);
    assert_eq!(options.connection.tls, TlsOptions::default());
    let options: TransportOptions =
        serde_json::from_str(r#"{"tls": {"ca_cert_path": "/etc/redis/ca.pem"}}"#).unwrap();
    assert_eq!(
        options.connection.tls.ca_cert_path.as_deref(),
        Some(Path::new("/etc/redis/ca.pem"))
    );
    assert_eq!(options.connection.tls.ca_cert_pem, None);
    for misspelled in [
        r#"{"block_tme": "1s"}"#,
        r#"{"tls": {"ca_file": "/etc/redis/ca.pem"}}"#,
        r#"{"circuit_breaker": {"treshold": 3}}"#,
    ] {
        let err = serde_json::from_str::<TransportOptions>(misspelled).unwrap_err();
        assert!(
            err.to_string().contains("unknown field"),
            "{misspelled}: {err}"
        );
    }
    let err = serde_json::from_str::<RedisConfig>(r#"{"urll": "redis://x"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    // Unknown fields name the transport's fields and the connection's; an error inside a
    // connection field names it.
    let err = serde_json::from_str::<TransportOptions>(r#"{"block_tme": "1s"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("unknown field `block_tme`, expected one of `read_count`"),
        "{err}"
    );
    assert!(
        err.contains("`connect_timeout`, `response_timeout`, `tls`"),
        "{err}"
    );
    let err = serde_json::from_str::<TransportOptions>(r#"{"tls": {"ca_file": "x"}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("in `tls`: unknown field `ca_file`"),
        "{err}"
    );
    // The URL is RedisConfig's.
    let err = serde_json::from_str::<TransportOptions>(r#"{"url": "redis://x"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `url`"), "{err}");
}

/// A file with every connection setting at the top level fills the embedded
/// [`ConnectionSettings`]; written back, it stays flat and reads the same.
#[test]
fn a_flat_file_fills_the_embedded_connection_settings() {
    let options: TransportOptions = serde_json::from_str(
        r#"{"read_count": 10, "connect_timeout": "1s", "response_timeout": "2s",
            "tls": {"ca_cert_path": "/etc/redis/ca.pem"}, "master_name": "mymaster",
            "sentinel_username": "watcher", "sentinel_password": "s3cret-Canary"}"#,
    )
    .unwrap();
    let expected = ConnectionSettings::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_response_timeout(Duration::from_secs(2))
        .with_tls(TlsOptions::default().with_ca_cert_path("/etc/redis/ca.pem"))
        .with_master_name("mymaster")
        .with_sentinel_username("watcher")
        .with_sentinel_password("s3cret-Canary");
    assert_eq!(options.connection(), &expected);
    assert_eq!(options.read_count, 10);
    options.validate().unwrap();
    let json = serde_json::to_value(&options).unwrap();
    assert_eq!(json["response_timeout"], "2s");
    assert!(json.get("connection").is_none(), "{json}");
    assert_eq!(
        serde_json::from_value::<TransportOptions>(json).unwrap(),
        options
    );
    // The builders set the embedded settings.
    let built = TransportOptions::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_response_timeout(Duration::from_secs(2));
    assert_eq!(built.connection.connect_timeout, Duration::from_secs(1));
    assert_eq!(built.connection().response_timeout, Duration::from_secs(2));
    let err = TransportOptions::default()
        .with_response_timeout(Duration::ZERO)
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains("config field response_timeout"),
        "{err}"
    );
}

/// [`OWN_FIELDS`] lists every field of the struct but the embedded ones.
#[test]
fn own_fields_are_listed() {
    let options = TransportOptions::default().with_key_layout(KeyLayout::Plain);
    let json = serde_json::to_value(&options).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.retain(|key| !ConnectionSettings::FIELDS.contains(key));
    keys.sort_unstable();
    let mut own = OWN_FIELDS.to_vec();
    own.sort_unstable();
    assert_eq!(keys, own);
}

/// One meaning of `max_stream_length`: absent, `null` or 0 is no limit; the seed's
/// literal compiles.
#[test]
fn max_stream_length_absent_null_or_zero_is_no_limit() {
    for json in [
        r#"{}"#,
        r#"{"max_stream_length": null}"#,
        r#"{"max_stream_length": 0}"#,
    ] {
        let config: RedisConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.max_stream_length, 0, "{json}");
    }
    let config: RedisConfig = serde_json::from_str(r#"{"max_stream_length": 10000}"#).unwrap();
    assert_eq!(config.max_stream_length, 10_000);
    let seed = RedisConfig {
        max_stream_length: 10000,
        ..RedisConfig::default()
    };
    assert_eq!(seed.max_stream_length, 10_000);
}
