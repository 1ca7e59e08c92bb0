//! Configuration text as users write it: the sink's YAML and TOML files and the JSON forms of the
//! transport's and the state store's options. Parsing must return a configuration or an error,
//! never panic, and no error may print a URL's password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redstream_sink::SinkConfig::from_yaml_str(text);
    let _ = redstream_sink::SinkConfig::from_toml_str(text);
    let _ = serde_json::from_str::<redstream_transport::TransportOptions>(text);
    let _ = serde_json::from_str::<redstream_transport::RedisConfig>(text);
    let _ = serde_json::from_str::<redstream_state::StateConfig>(text);
    let _ = redstream_core::redact_url(text);
});
