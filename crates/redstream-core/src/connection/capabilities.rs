//! [`Capabilities`]: which of the stream commands added after Redis 7 a server has, found by
//! asking it (`COMMAND DOCS`) rather than by its version, so that Valkey, Redis and builds in
//! between are judged by what they accept.
//!
//! Nothing in redstream uses these commands yet: no server that has them can be installed
//! where the project is tested, and a path that cannot be tested does not ship. The detection
//! does ship, tested on the servers at hand (Redis 7.0, Valkey 8 and 9 have none of them), so
//! that each path can be added behind it, with its fallback (today's commands) kept for the
//! servers without it. `docs/transport.md` says what each would change.

use redis::{Cmd, Value};

use super::Connection;
use crate::{Error, ErrorKind, Result};

/// The stream commands and options newer than Redis 7 that a server accepts.
///
/// Found with [`Connection::capabilities`]. On a cluster, a capability counts only when every
/// master has it (during a rolling upgrade, a command may reach either version).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `XACKDEL` (acknowledge and delete in one command) and the `KEEPREF | DELREF | ACKED`
    /// deletion policies of `XADD`/`XTRIM`/`XDELEX`: Redis 8.2.
    pub xackdel: bool,
    /// `XREADGROUP ... CLAIM min-idle-time`: a read that also hands over idle pending entries,
    /// instead of a separate `XAUTOCLAIM` loop: Redis 8.4.
    pub xreadgroup_claim: bool,
    /// `XADD ... IDMP producer-id idempotent-id` (and `IDMPAUTO`): a publish sent again after a
    /// lost reply adds nothing the second time: Redis 8.6.
    pub idempotent_xadd: bool,
    /// `XNACK`: give pending entries back to the group at once (shutdown, a failed handler)
    /// instead of waiting for them to go idle: Redis 8.8.
    pub xnack: bool,
}

impl Capabilities {
    /// None of them: what a server without `COMMAND DOCS` (before Redis 7), or a user not
    /// allowed to run it, is taken to have. Every redstream path works without them.
    pub const NONE: Self = Self {
        xackdel: false,
        xreadgroup_claim: false,
        idempotent_xadd: false,
        xnack: false,
    };

    /// The commands `COMMAND DOCS` is asked about.
    pub const PROBED: [&'static str; 4] = ["XADD", "XREADGROUP", "XACKDEL", "XNACK"];

    /// The probe: `COMMAND DOCS` for the commands whose presence, or whose arguments, tell the
    /// capabilities.
    #[must_use]
    pub fn probe() -> Cmd {
        let mut cmd = redis::cmd("COMMAND");
        cmd.arg("DOCS").arg(&Self::PROBED[..]);
        cmd
    }

    /// Reads a `COMMAND DOCS` reply for (at least) the [probed](Self::probe) commands. A reply
    /// of another shape gives [`NONE`](Self::NONE) rather than an error: detection must
    /// never be what stops a connection that works.
    #[must_use]
    pub fn from_command_docs(reply: &Value) -> Self {
        let docs = CommandDocs::new(reply);
        Self {
            xackdel: docs.has_command("XACKDEL"),
            xreadgroup_claim: docs.has_argument("XREADGROUP", "CLAIM"),
            idempotent_xadd: docs.has_argument("XADD", "IDMP"),
            xnack: docs.has_command("XNACK"),
        }
    }

    /// What both `self` and `other` have: a cluster's capabilities from its masters'.
    #[must_use]
    pub fn intersect(self, other: Self) -> Self {
        Self {
            xackdel: self.xackdel && other.xackdel,
            xreadgroup_claim: self.xreadgroup_claim && other.xreadgroup_claim,
            idempotent_xadd: self.idempotent_xadd && other.idempotent_xadd,
            xnack: self.xnack && other.xnack,
        }
    }

    /// The names of the capabilities present, for logs and the CLI (`XACKDEL`,
    /// `XREADGROUP CLAIM`, `XADD IDMP`, `XNACK`).
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.xackdel, "XACKDEL"),
            (self.xreadgroup_claim, "XREADGROUP CLAIM"),
            (self.idempotent_xadd, "XADD IDMP"),
            (self.xnack, "XNACK"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
}

/// A `COMMAND DOCS` reply (RESP2 or RESP3), read: which commands the server has and which
/// arguments they take. [`Capabilities`] is built from it; it serves as well to ask about any
/// other command.
#[derive(Debug, Clone)]
pub struct CommandDocs<'a> {
    docs: Vec<(&'a Value, &'a Value)>,
}

impl<'a> CommandDocs<'a> {
    /// `reply`, a map from command name to its documentation. A reply of another shape reads
    /// as no command at all.
    #[must_use]
    pub fn new(reply: &'a Value) -> Self {
        Self {
            docs: pairs(reply).unwrap_or_default(),
        }
    }

    fn doc(&self, command: &str) -> Option<&'a Value> {
        self.docs
            .iter()
            .find(|(key, _)| text(key).is_some_and(|k| k.eq_ignore_ascii_case(command)))
            .map(|(_, doc)| *doc)
    }

    /// Whether the reply documents `command` (a server leaves out the commands it does not
    /// have).
    #[must_use]
    pub fn has_command(&self, command: &str) -> bool {
        self.doc(command).is_some()
    }

    /// Whether `command` takes an argument introduced by `token` (`NOMKSTREAM`, `CLAIM`),
    /// anywhere in its argument tree.
    #[must_use]
    pub fn has_argument(&self, command: &str, token: &str) -> bool {
        self.doc(command).is_some_and(|doc| {
            field(doc, "arguments").is_some_and(|args| tree_has_token(args, token))
        })
    }
}

impl Connection {
    /// Which stream commands newer than Redis 7 the server has (on a cluster: every master),
    /// asked with `COMMAND DOCS`. A server that does not know `COMMAND DOCS` (before 7.0), or a
    /// user whose ACL does not allow it (`+command|docs`), gives
    /// [`Capabilities::NONE`]: redstream then uses the commands every server has.
    ///
    /// # Errors
    ///
    /// The classified error of `COMMAND DOCS` when the server could not be asked (connection
    /// lost, timeout): not knowing is not the same as knowing there is none.
    pub async fn capabilities(&self) -> Result<Capabilities> {
        let probe = Capabilities::probe();
        let answers: Vec<Result<Value>> = match self.topology() {
            super::Topology::Cluster => {
                let mut answers = Vec::new();
                for master in self.cluster_masters().await? {
                    answers.push(self.query_node::<Value>(&master, &probe).await);
                }
                answers
            }
            _ => {
                let mut conn = self.clone();
                vec![
                    probe
                        .query_async::<Value>(&mut conn)
                        .await
                        .map_err(|err| Error::from_redis("COMMAND DOCS", self.target(), err)),
                ]
            }
        };
        let mut found: Option<Capabilities> = None;
        for answer in answers {
            let these = match answer {
                Ok(reply) => Capabilities::from_command_docs(&reply),
                Err(err) if unanswerable(&err) => {
                    tracing::debug!(error = %err, "cannot ask the server's commands; assuming none newer than Redis 7");
                    Capabilities::NONE
                }
                Err(err) => return Err(err),
            };
            found = Some(found.map_or(these, |all| all.intersect(these)));
        }
        Ok(found.unwrap_or(Capabilities::NONE))
    }
}

/// An error that means "this server will not say", not "could not ask": the user may not run
/// `COMMAND DOCS` (`NOPERM`), or the server does not have it (an error reply, such as
/// `ERR unknown subcommand`).
fn unanswerable(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::PermissionDenied | ErrorKind::Server)
}

/// The key/value pairs of a RESP3 map, or of a RESP2 array of alternating keys and values.
fn pairs(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(entries) => Some(entries.iter().map(|(k, v)| (k, v)).collect()),
        Value::Array(items) if items.len() % 2 == 0 => Some(
            items
                .chunks_exact(2)
                .map(|pair| (&pair[0], &pair[1]))
                .collect(),
        ),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// The value of `name` in a map-like `value`.
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    pairs(value)?
        .into_iter()
        .find(|(key, _)| text(key).is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v)
}

/// Whether an `arguments` array (of argument maps, nested through their own `arguments`)
/// has an argument whose `token` is `token`. Depth is bounded by the reply, which Redis
/// builds from its command table (a few levels).
fn tree_has_token(arguments: &Value, token: &str) -> bool {
    let Value::Array(arguments) = arguments else {
        return false;
    };
    arguments.iter().any(|argument| {
        field(argument, "token")
            .and_then(text)
            .is_some_and(|t| t.eq_ignore_ascii_case(token))
            || field(argument, "arguments").is_some_and(|nested| tree_has_token(nested, token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (bulk(k), v)).collect())
    }

    fn argument(name: &str, token: Option<&str>, nested: Vec<Value>) -> Value {
        let mut entries = vec![("name", bulk(name))];
        if let Some(token) = token {
            entries.push(("token", bulk(token)));
        }
        if !nested.is_empty() {
            entries.push(("arguments", Value::Array(nested)));
        }
        map(entries)
    }

    /// A reply shaped as Redis 8.8 documents these commands: CLAIM at the top of XREADGROUP's
    /// arguments, IDMP nested in a oneof block of XADD's.
    fn redis_8_8() -> Value {
        map(vec![
            (
                "xadd",
                map(vec![(
                    "arguments",
                    Value::Array(vec![
                        argument("key", None, vec![]),
                        argument(
                            "idmp-block",
                            None,
                            vec![
                                argument("idmpauto", Some("IDMPAUTO"), vec![]),
                                argument("idmp", Some("IDMP"), vec![]),
                            ],
                        ),
                    ]),
                )]),
            ),
            (
                "xreadgroup",
                map(vec![(
                    "arguments",
                    Value::Array(vec![
                        argument("count", Some("COUNT"), vec![]),
                        argument("min-idle-time", Some("CLAIM"), vec![]),
                    ]),
                )]),
            ),
            ("xackdel", map(vec![])),
            ("xnack", map(vec![])),
        ])
    }

    #[test]
    fn every_capability_is_read_from_its_place_in_the_docs() {
        let all = Capabilities::from_command_docs(&redis_8_8());
        assert_eq!(
            all,
            Capabilities {
                xackdel: true,
                xreadgroup_claim: true,
                idempotent_xadd: true,
                xnack: true,
            }
        );
        assert_eq!(
            all.names(),
            ["XACKDEL", "XREADGROUP CLAIM", "XADD IDMP", "XNACK"]
        );
    }

    #[test]
    fn resp2_replies_read_the_same() {
        fn to_resp2(value: Value) -> Value {
            match value {
                Value::Map(entries) => Value::Array(
                    entries
                        .into_iter()
                        .flat_map(|(k, v)| [k, to_resp2(v)])
                        .collect(),
                ),
                Value::Array(items) => Value::Array(items.into_iter().map(to_resp2).collect()),
                other => other,
            }
        }
        assert_eq!(
            Capabilities::from_command_docs(&to_resp2(redis_8_8())),
            Capabilities::from_command_docs(&redis_8_8())
        );
    }

    #[test]
    fn replies_of_other_shapes_give_none() {
        for reply in [
            Value::Nil,
            Value::Int(3),
            Value::Array(vec![bulk("odd")]),
            map(vec![("xadd", Value::Int(1))]),
            map(vec![(
                "xreadgroup",
                map(vec![("arguments", bulk("CLAIM"))]),
            )]),
        ] {
            assert_eq!(
                Capabilities::from_command_docs(&reply),
                Capabilities::NONE,
                "{reply:?}"
            );
        }
    }

    #[test]
    fn a_cluster_has_what_every_master_has() {
        let all = Capabilities::from_command_docs(&redis_8_8());
        let older = Capabilities {
            xackdel: true,
            ..Capabilities::NONE
        };
        assert_eq!(all.intersect(older), older);
        assert_eq!(older.intersect(Capabilities::NONE), Capabilities::NONE);
    }
}
