use super::*;

fn env(name: &str) -> Option<String> {
    (name == "REDIS_URI").then(|| "redis://:secret@127.0.0.1:6379".to_owned())
}

#[test]
fn expands_variables() {
    let got = expand_env("uri", "${REDIS_URI}/0", env).unwrap();
    assert_eq!(got, "redis://:secret@127.0.0.1:6379/0");
    assert_eq!(expand_env("uri", "a$$b$c", env).unwrap(), "a$b$c");
}

#[test]
fn unset_or_malformed_variables_name_the_field() {
    let err = expand_env("uri", "${NOPE}", env).unwrap_err();
    assert!(err.to_string().contains("config field uri"), "{err}");
    assert!(err.to_string().contains("NOPE"), "{err}");
    assert!(expand_env("uri", "${REDIS_URI", env).is_err());
    assert!(expand_env("uri", "${}", env).is_err());
}

#[test]
fn parses_toml_with_defaults() {
    let config = SinkConfig::from_toml_str(
        r#"
        id = "orders-redis"
        uri = "redis://127.0.0.1:6379"
        stream = "{orders}.events"
        max_stream_length = 100
        send_timeout = "250ms"
        [retry]
        max_attempts = "unlimited"
        "#,
    )
    .unwrap();
    assert!(config.required);
    assert_eq!(config.max_batch_events, 1_000);
    assert_eq!(config.trim_length(), Some(100));
    assert_eq!(
        config.connection.response_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(config.retry.max_attempts, None);
}

#[test]
fn rejects_invalid_fields_by_name() {
    let base = SinkConfig::new("s", "redis://127.0.0.1:1", "x");
    base.validate().unwrap();
    let cases = [
        (
            SinkConfig {
                id: String::new(),
                ..base.clone()
            },
            "id",
        ),
        (
            SinkConfig {
                id: "a b".into(),
                ..base.clone()
            },
            "id",
        ),
        (base.clone().with_url("http://x"), "url"),
        (
            SinkConfig {
                stream: String::new(),
                ..base.clone()
            },
            "stream",
        ),
        (
            SinkConfig {
                stream: "orders events".into(),
                ..base.clone()
            },
            "stream",
        ),
        (base.clone().with_max_batch_events(0), "max_batch_events"),
        (base.clone().with_max_batch_bytes(0), "max_batch_bytes"),
        (
            base.clone().with_response_timeout(Duration::ZERO),
            "response_timeout",
        ),
        (
            base.clone().with_connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert!(
            err.to_string().contains(&format!("config field {field}")),
            "{field}: {err}"
        );
    }
    let err = SinkConfig::from_toml_str("id = \"s\"\nstrem = \"x\"").unwrap_err();
    assert!(err.to_string().contains("strem"), "{err}");
}

#[test]
fn parses_yaml_with_durability_and_timeouts() {
    let config = SinkConfig::from_yaml_str(
        "id: orders-redis\nuri: redis://127.0.0.1:6379\nstream: orders.events\nrequired: false\n\
         batch_timeout: 30s\ndurability:\n  replicas: 1\n  timeout: 100ms\n",
    )
    .unwrap();
    assert!(!config.required);
    assert!(config.exactly_once);
    assert_eq!(config.batch_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        config.durability,
        Some(Durability::new(1, Duration::from_millis(100)))
    );
    let err = SinkConfig::from_yaml_str("id: s\nstrem: x\n").unwrap_err();
    assert!(err.to_string().contains("strem"), "{err}");
    let err = SinkConfig::from_yaml_str("id: s\nstream: x\nbatch_timeout: 10\n").unwrap_err();
    assert!(err.to_string().contains("batch_timeout"), "{err}");
}

/// A sentinel password written as a number in a file is refused without being shown, in
/// YAML and in TOML (the connection fields are flattened into the sink's config, where serde
/// would otherwise print the value it buffered).
#[test]
fn a_numeric_sentinel_password_is_refused_unseen() {
    let yaml = "id: s\nuri: redis-sentinel://s1:26379/mymaster\nstream: x\n\
                sentinel_password: 20240611\n";
    let toml = "id = \"s\"\nuri = \"redis-sentinel://s1:26379/mymaster\"\nstream = \"x\"\n\
                sentinel_password = 20240611\n";
    for err in [
        SinkConfig::from_yaml_str(yaml).unwrap_err(),
        SinkConfig::from_toml_str(toml).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(!text.contains("20240611"), "{text}");
        assert!(
            text.contains("sentinel_password") || text.contains("not shown"),
            "{text}"
        );
    }
    let quoted = yaml.replace("20240611", "\"20240611\"");
    let config = SinkConfig::from_yaml_str(&quoted).unwrap();
    assert_eq!(
        config.connection().sentinel_password.as_deref(),
        Some("20240611")
    );
}

#[test]
fn rejects_bad_durability_and_batch_timeout() {
    let base = SinkConfig::new("s", "redis://127.0.0.1:1", "x");
    let cases = [
        (
            base.clone()
                .with_durability(Some(Durability::new(0, Duration::from_secs(1)))),
            "durability.replicas",
        ),
        (
            base.clone()
                .with_durability(Some(Durability::new(1, Duration::ZERO))),
            "durability.timeout",
        ),
        (
            base.clone().with_batch_timeout(Some(Duration::ZERO)),
            "batch_timeout",
        ),
        // A sink that is not required and retries for ever would hold the checkpoint.
        (
            base.clone()
                .with_required(false)
                .with_retry(RetryPolicy::unlimited()),
            "retry.max_attempts",
        ),
        // A NotDurable retry without the progress key would write the batch again.
        (
            base.clone()
                .with_exactly_once(false)
                .with_durability(Some(Durability::new(1, Duration::from_millis(100)))),
            "exactly_once",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert!(
            err.to_string().contains(&format!("config field {field}")),
            "{field}: {err}"
        );
    }
}

#[test]
fn an_optional_sink_may_retry_for_ever_only_within_a_batch_timeout() {
    let optional = SinkConfig::new("s", "redis://127.0.0.1:1", "x")
        .with_required(false)
        .with_retry(RetryPolicy::unlimited());
    optional.validate().unwrap_err();
    optional
        .clone()
        .with_batch_timeout(Some(Duration::from_secs(30)))
        .validate()
        .unwrap();
    optional.with_required(true).validate().unwrap();
}

#[test]
fn config_files_are_read_by_extension() {
    let dir = std::env::temp_dir().join(format!("redstream-sink-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = dir.join("sink.yaml");
    std::fs::write(&yaml, "id: a\nstream: s\n").unwrap();
    assert_eq!(SinkConfig::from_file(&yaml).unwrap().id, "a");
    let toml = dir.join("sink.toml");
    std::fs::write(&toml, "id = \"b\"\nstream = \"s\"\n").unwrap();
    assert_eq!(SinkConfig::from_file(&toml).unwrap().id, "b");
    let json = dir.join("sink.json");
    std::fs::write(&json, "{}").unwrap();
    let err = SinkConfig::from_file(&json).unwrap_err();
    assert!(err.to_string().contains(".yaml"), "{err}");
    let err = SinkConfig::from_file(dir.join("missing.yaml")).unwrap_err();
    assert!(err.to_string().contains("cannot be read"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every section refuses a field it does not know, naming it, in YAML and TOML alike: a
/// misspelled `ca_file` under `tls:` must not fall back to the system's roots, nor a
/// misspelled retry bound to the default one.
#[test]
fn every_section_refuses_unknown_fields() {
    let base = "id: s\nuri: rediss://127.0.0.1:6379\nstream: x\n";
    let yaml_cases = [
        ("tls:\n  ca_file: /etc/redis/ca.pem\n", "ca_file"),
        ("retry:\n  max_atempts: 3\n", "max_atempts"),
        (
            "retry:\n  initial_delay: 10ms\n  maxdelay: 1s\n",
            "maxdelay",
        ),
        (
            "durability:\n  replicas: 1\n  timeout: 1s\n  replica: 2\n",
            "replica",
        ),
        ("max_stream_lenght: 10\n", "max_stream_lenght"),
    ];
    for (section, field) in yaml_cases {
        let err = SinkConfig::from_yaml_str(&format!("{base}{section}")).unwrap_err();
        assert_eq!(err.kind(), redstream_core::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert!(err.to_string().contains("unknown field"), "{field}: {err}");
    }
    let base = "id = \"s\"\nuri = \"rediss://127.0.0.1:6379\"\nstream = \"x\"\n";
    let toml_cases = [
        ("[tls]\nca_file = \"/etc/redis/ca.pem\"\n", "ca_file"),
        ("[retry]\nmax_atempts = 3\n", "max_atempts"),
        (
            "[durability]\nreplicas = 1\ntimeout = \"1s\"\nreplica = 2\n",
            "replica",
        ),
    ];
    for (section, field) in toml_cases {
        let err = SinkConfig::from_toml_str(&format!("{base}{section}")).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert!(err.to_string().contains("unknown field"), "{field}: {err}");
    }
    // The path of the field at fault, at the top level (among the sink's fields and the
    // embedded connection's) and inside a connection field, and the fields expected.
    for (text, wanted) in [
        (
            "id: s\nstream: x\nstrem: y\n",
            "config field strem: unknown field `strem`, expected one of `id`, `stream`",
        ),
        (
            "id: s\nstream: x\nresponse_timout: 1s\n",
            "`durability`, `url`, `connect_timeout`, `response_timeout`, `tls`",
        ),
        (
            "id: s\nstream: x\ntls:\n  ca_file: /ca.pem\n",
            "config field tls.ca_file: unknown field `ca_file`",
        ),
        (
            "id: s\nstream: x\nconnect_timeout: 5\n",
            "config field connect_timeout: invalid type",
        ),
        (
            "id: s\nstream: x\nretry:\n  max_atempts: 3\n",
            "config field retry.max_atempts: retry: unknown field `max_atempts`",
        ),
    ] {
        let err = SinkConfig::from_yaml_str(text).unwrap_err().to_string();
        assert!(err.contains(wanted), "{text}: {err}");
    }
    // The fields spelled right are taken.
    let config = SinkConfig::from_yaml_str(
        "id: s\nuri: rediss://127.0.0.1:6379\nstream: x\ntls:\n  ca_cert_path: /etc/ca.pem\n\
         retry:\n  max_attempts: 3\n",
    )
    .unwrap();
    assert_eq!(
        config.connection.tls.ca_cert_path.as_deref(),
        Some(Path::new("/etc/ca.pem"))
    );
    assert_eq!(config.retry.max_attempts, Some(3));
}

#[test]
fn debug_redacts_the_password() {
    let config = SinkConfig::new("s", "redis://:hunter2@127.0.0.1:1", "x");
    let text = format!("{config:?}");
    assert!(!text.contains("hunter2"), "{text}");
    // A Sentinel URL's password and the sentinels' own, from a file with the old names.
    let config = SinkConfig::from_yaml_str(
        "id: s\nuri: redis-sentinel://u:hunter3@s1:26379/mymaster\nstream: x\n\
         sentinel_password: hunter4\n",
    )
    .unwrap();
    let text = format!("{config:?}");
    for secret in ["hunter3", "hunter4"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(
        text.contains("redis-sentinel://u:***@s1:26379/mymaster"),
        "{text}"
    );
    assert!(text.contains("sentinel_password: Some(\"***\")"), "{text}");
}

/// `url` is the URL's name, `uri` its old one; `response_timeout` is the reply timeout's,
/// `send_timeout` its old one: the old names are read from files, and a file giving both
/// names of one field is refused, in YAML and TOML, without showing a password.
#[test]
fn old_names_uri_and_send_timeout() {
    let yaml = SinkConfig::from_yaml_str("id: s\nurl: redis://h:1\nstream: x\n").unwrap();
    assert_eq!(yaml.redis_url(), "redis://h:1");
    let old = SinkConfig::from_yaml_str("id: s\nuri: redis://h:2\nstream: x\n").unwrap();
    assert_eq!(old.connection.url, "redis://h:2");
    assert_eq!(old.connection_options().url, "redis://h:2");
    let toml =
        SinkConfig::from_toml_str("id = \"s\"\nuri = \"redis://h:3\"\nstream = \"x\"").unwrap();
    assert_eq!(toml.redis_url(), "redis://h:3");
    // ${NAME} is expanded under the old name too.
    let err = SinkConfig::from_yaml_str("id: s\nuri: ${REDSTREAM_SINK_TEST_UNSET}\nstream: x\n")
        .unwrap_err();
    assert!(err.to_string().contains("config field url"), "{err}");
    assert!(
        err.to_string().contains("REDSTREAM_SINK_TEST_UNSET"),
        "{err}"
    );

    let send = SinkConfig::from_yaml_str("id: s\nstream: x\nsend_timeout: 250ms\n").unwrap();
    assert_eq!(send.connection.response_timeout, Duration::from_millis(250));
    let response =
        SinkConfig::from_yaml_str("id: s\nstream: x\nresponse_timeout: 250ms\n").unwrap();
    assert_eq!(response, send);

    for (text, old, new) in [
        (
            "id: s\nurl: redis://h:1\nuri: redis://:secret@h:2\nstream: x\n",
            "uri",
            "url",
        ),
        (
            "id: s\nuri: redis://:secret@h:2\nurl: redis://h:1\nstream: x\n",
            "uri",
            "url",
        ),
        (
            "id: s\nstream: x\nresponse_timeout: 250ms\nsend_timeout: 1s\n",
            "send_timeout",
            "response_timeout",
        ),
    ] {
        let err = SinkConfig::from_yaml_str(text).unwrap_err();
        assert_eq!(err.kind(), redstream_core::ErrorKind::InvalidInput);
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{old}` is the old name of `{new}`")),
            "{message}"
        );
        assert!(message.contains("give it once"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
    let err = SinkConfig::from_toml_str(
        "id = \"s\"\nurl = \"redis://h:1\"\nuri = \"redis://h:2\"\nstream = \"x\"",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`uri` is the old name of `url`"),
        "{err}"
    );
    let err = SinkConfig::from_toml_str(
        "id = \"s\"\nstream = \"x\"\nsend_timeout = \"1s\"\nresponse_timeout = \"1s\"",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`send_timeout` is the old name of `response_timeout`"),
        "{err}"
    );

    // In code, the old builder still sets the response timeout.
    #[allow(deprecated)]
    let code = SinkConfig::new("s", "redis://h:4", "x").with_send_timeout(Duration::from_secs(2));
    assert_eq!(code.connection.response_timeout, Duration::from_secs(2));
    assert_eq!(code.with_url("redis://h:6").connection().url, "redis://h:6");
}

/// A file with every connection field at the top level fills the embedded
/// [`ConnectionOptions`]; written back, it stays flat and reads the same.
#[test]
fn a_flat_file_fills_the_embedded_connection_options() {
    let config = SinkConfig::from_yaml_str(
        "id: s\nstream: x\nurl: rediss-sentinel://s1:26379,s2:26379\nconnect_timeout: 1s\n\
         response_timeout: 2s\ntls:\n  ca_cert_path: /etc/redis/ca.pem\n\
         master_name: mymaster\nsentinel_username: watcher\nsentinel_password: hunter5\n\
         max_stream_length: 100\n",
    )
    .unwrap();
    let expected = ConnectionOptions::new("rediss-sentinel://s1:26379,s2:26379")
        .with_connect_timeout(Duration::from_secs(1))
        .with_response_timeout(Duration::from_secs(2))
        .with_tls(TlsOptions {
            ca_cert_path: Some("/etc/redis/ca.pem".into()),
            ..TlsOptions::default()
        })
        .with_master_name("mymaster")
        .with_sentinel_username("watcher")
        .with_sentinel_password("hunter5");
    assert_eq!(config.connection(), &expected);
    assert_eq!(config.max_stream_length, 100);
    assert_eq!(config.topology().unwrap(), Topology::Sentinel);
    assert!(!format!("{config:?}").contains("hunter5"));
    let toml = SinkConfig::from_toml_str(
        "id = \"s\"\nstream = \"x\"\nurl = \"rediss-sentinel://s1:26379,s2:26379\"\n\
         connect_timeout = \"1s\"\nresponse_timeout = \"2s\"\nmaster_name = \"mymaster\"\n\
         sentinel_username = \"watcher\"\nsentinel_password = \"hunter5\"\n\
         max_stream_length = 100\n[tls]\nca_cert_path = \"/etc/redis/ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(toml, config);
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["url"], "rediss-sentinel://s1:26379,s2:26379");
    assert!(json.get("connection").is_none(), "{json}");
    assert_eq!(serde_json::from_value::<SinkConfig>(json).unwrap(), config);
}

/// [`SinkConfig::OWN_FIELDS`] lists every field of the struct but the embedded ones.
#[test]
fn own_fields_are_listed() {
    let json = serde_json::to_value(SinkConfig::default()).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.retain(|key| !ConnectionOptions::FIELDS.contains(key));
    keys.sort_unstable();
    let mut own = SinkConfig::OWN_FIELDS.to_vec();
    own.sort_unstable();
    assert_eq!(keys, own);
}

/// One meaning of `max_stream_length`: absent, `null` or 0 is no limit.
#[test]
fn max_stream_length_absent_null_or_zero_is_no_limit() {
    for text in [
        "",
        "max_stream_length: null\n",
        "max_stream_length: 0\n",
        "max_stream_length: ~\n",
    ] {
        let config = SinkConfig::from_yaml_str(&format!("id: s\nstream: x\n{text}")).unwrap();
        assert_eq!(config.max_stream_length, 0, "{text}");
        assert_eq!(config.trim_length(), None, "{text}");
    }
    let config = SinkConfig::new("s", "redis://h", "x").with_max_stream_length(10);
    assert_eq!(config.trim_length(), Some(10));
    let err = SinkConfig::from_yaml_str("id: s\nstream: x\nmax_stream_length: -1\n").unwrap_err();
    assert!(
        err.to_string().contains("config field max_stream_length"),
        "{err}"
    );
}

/// Every URL form core accepts, and the Sentinel settings, in files and in code.
#[test]
fn cluster_and_sentinel_urls_and_settings() {
    for (url, topology) in [
        ("redis://127.0.0.1:6379/0", Topology::Single),
        ("rediss://127.0.0.1:6379", Topology::Single),
        (
            "redis-cluster://10.0.0.1:6379,10.0.0.2:6379",
            Topology::Cluster,
        ),
        (
            "redis-sentinel://s1:26379,s2:26379/mymaster",
            Topology::Sentinel,
        ),
    ] {
        let config = SinkConfig::new("s", url, "x");
        config.validate().unwrap();
        assert_eq!(config.topology().unwrap(), topology, "{url}");
    }
    // `${NAME}` is expanded in sentinel_password: PATH is set wherever tests run.
    let path = std::env::var("PATH").unwrap();
    let config = SinkConfig::from_yaml_str(
        "id: s\nurl: redis-sentinel://s1:26379,s2:26379\nstream: x\nmaster_name: mymaster\n\
         sentinel_username: watcher\nsentinel_password: ${PATH}\n",
    )
    .unwrap();
    let options = config.connection_options();
    assert_eq!(options.master_name.as_deref(), Some("mymaster"));
    assert_eq!(options.sentinel_username.as_deref(), Some("watcher"));
    assert_eq!(options.sentinel_password.as_deref(), Some(path.as_str()));
    assert!(!format!("{config:?}").contains(&path));
    let config = SinkConfig::from_toml_str(
        "id = \"s\"\nurl = \"redis-sentinel://s1:26379\"\nstream = \"x\"\n\
         master_name = \"mymaster\"\nsentinel_password = \"pw\"\n",
    )
    .unwrap();
    assert_eq!(config.topology().unwrap(), Topology::Sentinel);
    let code = SinkConfig::new("s", "redis-sentinel://s1:26379", "x")
        .with_master_name("mymaster")
        .with_sentinel_username("watcher")
        .with_sentinel_password("pw");
    code.validate().unwrap();
    // Sentinel settings without a Sentinel URL, and unknown forms, are refused by name.
    let err = SinkConfig::new("s", "redis://h:1", "x")
        .with_master_name("mymaster")
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains("config field master_name"),
        "{err}"
    );
    let err = SinkConfig::from_yaml_str("id: s\nurl: http://h\nstream: x\n").unwrap_err();
    assert!(err.to_string().contains("config field url"), "{err}");
    let err = SinkConfig::from_yaml_str("id: s\nstream: x\nsentinel_pasword: pw\n").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    assert!(err.to_string().contains("sentinel_pasword"), "{err}");
    assert!(!err.to_string().contains(": pw"), "{err}");
}
