//! `redstream state get|put|del|keys`: the key/value state of `redstream-state`, under its own
//! prefix (`--state-prefix`; key `k` is the Redis key `prefix:k`, or `{prefix}:k` with
//! `--state-layout cluster`). Values are JSON, as the state store writes them. Every command
//! goes through a `StateStore`, so the key names and the `SCAN` pattern of `state keys` come
//! from the state crate.

use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use redstream_state::{KeyLayout, StateBackend, StateStore, Ttl};
use serde::Serialize;

use super::{duration, millis, output};
use crate::{CliError, CliResult, GlobalArgs, connect};

/// Options of `redstream state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The state store's key prefix, as in `StateBackend::Redis { key_prefix }`.
    #[arg(
        long,
        env = "REDSTREAM_STATE_PREFIX",
        global = true,
        hide_env_values = true
    )]
    pub state_prefix: Option<String>,
    /// How the store names its keys, as its `key_layout` setting: `plain` names key `k`
    /// `prefix:k`; `cluster` names it `{prefix}:k`, which keeps a store's keys in one Redis
    /// Cluster slot (and is the layout earlier versions wrote by default). Default: the
    /// store's own choice, `cluster` on a Redis Cluster and `plain` elsewhere.
    #[arg(
        long,
        env = "REDSTREAM_STATE_LAYOUT",
        hide_env_values = true,
        global = true,
        value_parser = PossibleValuesParser::new(["plain", "cluster"])
            .try_map(|name| name.parse::<KeyLayout>())
    )]
    pub state_layout: Option<KeyLayout>,
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// `redstream state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the value of a key, and its time to live.
    Get {
        /// The key, without the prefix.
        key: String,
    },
    /// Store a JSON value under a key, replacing any value and TTL it had.
    Put {
        /// The key, without the prefix.
        key: String,
        /// The value: one JSON value, e.g. '{"count":3}' or '"text"'.
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Expire the key after this long, e.g. `10m` (default: never).
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
    },
    /// Delete a key.
    Del {
        /// The key, without the prefix.
        key: String,
    },
    /// List keys of the store (SCAN, never KEYS), sorted.
    Keys {
        /// A glob over the keys without the prefix (`*`, `?`, `[...]`, `\` before a literal
        /// one of these), e.g. `user:*`.
        #[arg(long, default_value = "*")]
        pattern: String,
        /// List at most this many keys.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

/// Runs a `state` subcommand.
pub async fn run(global: &GlobalArgs, args: StateArgs) -> CliResult<()> {
    let prefix = args.state_prefix.ok_or_else(|| {
        CliError::usage(
            "the state commands need the store's prefix: pass --state-prefix or set \
             REDSTREAM_STATE_PREFIX (the redstream-state default has none)",
        )
    })?;
    let layout = args.state_layout;
    StateBackend::redis(global.url.clone(), prefix.clone()).validate()?;
    match args.command {
        StateCommand::Get { key } => get(global, &prefix, layout, &key).await,
        StateCommand::Put { key, value, ttl } => {
            put(global, &prefix, layout, &key, &value, ttl).await
        }
        StateCommand::Del { key } => del(global, &prefix, layout, &key).await,
        StateCommand::Keys { pattern, limit } => {
            list(global, &prefix, layout, &pattern, limit).await
        }
    }
}

/// The Redis key of `key` in `store`'s layout (the one it chose on the server it opened).
fn redis_key(store: &StateStore, key: &str) -> String {
    store.redis_key(key).unwrap_or_default()
}

fn ttl_ms(ttl: Ttl) -> Option<u64> {
    ttl.remaining().map(millis)
}

async fn get(
    global: &GlobalArgs,
    prefix: &str,
    layout: Option<KeyLayout>,
    key: &str,
) -> CliResult<()> {
    let store = connect::state(global, prefix, layout).await?;
    let value: Option<serde_json::Value> = store.get(key).await?;
    let Some(value) = value else {
        return Err(CliError::NotFound(format!(
            "no such key {key:?} in the state store with prefix {prefix} (Redis key {})",
            redis_key(&store, key)
        )));
    };
    let ttl = ttl_ms(store.ttl(key).await?);
    if global.json {
        #[derive(Serialize)]
        struct Got<'a> {
            key: &'a str,
            redis_key: String,
            value: serde_json::Value,
            ttl_ms: Option<u64>,
        }
        return output::json(&Got {
            key,
            redis_key: redis_key(&store, key),
            value,
            ttl_ms: ttl,
        });
    }
    let pretty = serde_json::to_string_pretty(&value)
        .map_err(|err| CliError::io("writing JSON", std::io::Error::other(err)))?;
    output::print_table(&output::fields([
        ("key", key.to_owned()),
        ("redis key", redis_key(&store, key)),
        (
            "expires in",
            ttl.map_or_else(|| "never".to_owned(), |ms| output::ms(Some(ms))),
        ),
        ("value", pretty),
    ]))
}

async fn put(
    global: &GlobalArgs,
    prefix: &str,
    layout: Option<KeyLayout>,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
) -> CliResult<()> {
    let value: serde_json::Value = serde_json::from_str(value)
        .map_err(|err| CliError::usage(format!("the value is not valid JSON: {err}")))?;
    let store: StateStore = connect::state(global, prefix, layout).await?;
    match ttl {
        Some(ttl) => store.put_with_ttl(key, &value, ttl).await?,
        None => store.put(key, &value).await?,
    }
    if global.json {
        #[derive(Serialize)]
        struct Put<'a> {
            key: &'a str,
            redis_key: String,
            ttl_ms: Option<u64>,
        }
        return output::json(&Put {
            key,
            redis_key: redis_key(&store, key),
            ttl_ms: ttl.map(millis),
        });
    }
    let expiry = ttl.map_or_else(
        || "no expiry".to_owned(),
        |ttl| format!("expires in {}", output::duration(ttl)),
    );
    output::line(format!(
        "stored {key} ({}), {expiry}",
        redis_key(&store, key)
    ))
}

async fn del(
    global: &GlobalArgs,
    prefix: &str,
    layout: Option<KeyLayout>,
    key: &str,
) -> CliResult<()> {
    let store = connect::state(global, prefix, layout).await?;
    let existed = store.exists(key).await?;
    store.delete(key).await?;
    if global.json {
        #[derive(Serialize)]
        struct Deleted<'a> {
            key: &'a str,
            redis_key: String,
            existed: bool,
        }
        return output::json(&Deleted {
            key,
            redis_key: redis_key(&store, key),
            existed,
        });
    }
    if existed {
        output::line(format!("deleted {key} ({})", redis_key(&store, key)))
    } else {
        output::line(format!("{key} ({}) did not exist", redis_key(&store, key)))
    }
}

/// The store's keys matching `pattern` (one `SCAN` walk), the first `limit` in sort order.
async fn list(
    global: &GlobalArgs,
    prefix: &str,
    layout: Option<KeyLayout>,
    pattern: &str,
    limit: u32,
) -> CliResult<()> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let store = connect::state(global, prefix, layout).await?;
    let mut found = store.list_keys_matching(pattern).await?;
    let truncated = found.len() > limit;
    found.truncate(limit);
    if global.json {
        #[derive(Serialize)]
        struct Listed<'a> {
            prefix: &'a str,
            pattern: &'a str,
            keys: &'a [String],
            truncated: bool,
        }
        return output::json(&Listed {
            prefix,
            pattern,
            keys: &found,
            truncated,
        });
    }
    if found.is_empty() {
        return output::line(format!(
            "no keys match {pattern} in the store with prefix {prefix} ({}*)",
            redis_key(&store, "")
        ));
    }
    let mut table = output::table(&["KEY"]);
    for key in &found {
        table.add_row(vec![key.as_str()]);
    }
    output::print_table(&table)?;
    if truncated {
        output::line(format!(
            "showing the first {limit} keys in sort order: more match; narrow --pattern or \
             raise --limit"
        ))?;
    }
    Ok(())
}
