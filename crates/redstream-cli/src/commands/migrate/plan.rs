//! Finding the keys of the 0.1 layout and deciding what happens to each: the plan.
//!
//! Only reads: `SCAN` (escaped `MATCH` patterns, never `KEYS`), `XLEN` and `XINFO GROUPS` of
//! the lane streams, and `EXISTS` of every target.

use std::collections::{BTreeMap, HashSet};

use redis::aio::ConnectionLike;
use redstream_core::keys::{self, KeyLayout, StreamNames};
use redstream_core::{Error, Result};
use redstream_state::Keys as StateKeys;
use serde::Serialize;

use super::Options;

/// The lanes of the 0.1 layout: `{P}:<type>#<lane>`.
const LANES: [&str; 3] = ["critical", "high", "low"];

/// The part of a sink progress key between the stream and the sink's id.
const SINK_MARK: &str = ":redstream-sink:";

/// `EXISTS` calls per pipeline when looking for conflicts.
const EXISTS_BATCH: usize = 500;

/// What a key of the 0.1 layout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyKind {
    /// The stream of an event type, `{P}:<type>`.
    Stream,
    /// The dead-letter stream, `{P}:dlq`.
    Dlq,
    /// A priority lane, `{P}:<type>#critical|high|low`.
    Lane,
    /// A state value or hash, `{S}:<key>`.
    State,
    /// A state checkpoint record, `{S}#checkpoint:<name>`.
    Checkpoint,
    /// A sink's progress record, `<stream>:redstream-sink:<id>`.
    SinkProgress,
}

impl KeyKind {
    /// The name shown in tables and JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Dlq => "dlq",
            Self::Lane => "lane",
            Self::State => "state",
            Self::Checkpoint => "checkpoint",
            Self::SinkProgress => "sink_progress",
        }
    }
}

/// A key renamed to its new name (`RENAME` keeps a stream's groups and pending entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rename {
    /// What the key is.
    pub kind: KeyKind,
    /// Its name in the 0.1 layout.
    pub from: String,
    /// Its new name.
    pub to: String,
}

/// An empty lane stream with nothing pending, deleted: priority now lives in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Deletion {
    /// What the key is (always a lane).
    pub kind: KeyKind,
    /// The key.
    pub key: String,
}

/// A consumer group of a blocking lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupState {
    /// The group's name.
    pub group: String,
    /// Entries delivered to the group and not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group, when the server knows.
    pub lag: Option<u64>,
}

/// A lane stream that still holds entries or pending entries: the migration refuses to apply
/// until it is drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Blocker {
    /// The lane stream.
    pub key: String,
    /// Its length (`XLEN`).
    pub entries: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupState>,
}

impl Blocker {
    /// Pending entries over all groups.
    #[must_use]
    pub fn pending(&self) -> u64 {
        self.groups.iter().map(|g| g.pending).sum()
    }
}

/// Why a rename cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConflictReason {
    /// A key already has the new name.
    TargetExists,
    /// Two keys of the 0.1 layout would get the same new name.
    DuplicateTarget,
}

/// A rename that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Conflict {
    /// The key to rename.
    pub from: String,
    /// Its new name.
    pub to: String,
    /// What is in the way.
    pub reason: ConflictReason,
}

/// A key that was found but is left as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Skipped {
    /// The key.
    pub key: String,
    /// Why it stays.
    pub reason: String,
}

/// Everything the migration would do, and what stands in its way.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// The stream prefix `P`.
    pub prefix: String,
    /// The state prefixes `S`.
    pub state_prefixes: Vec<String>,
    /// The layout migrated to (`plain` or `cluster` in JSON).
    pub layout: KeyLayout,
    /// Whether this plan has been applied.
    pub applied: bool,
    /// Keys renamed, sorted by kind and old name.
    pub renames: Vec<Rename>,
    /// Empty lanes deleted.
    pub deletions: Vec<Deletion>,
    /// Lanes that must be drained first.
    pub blockers: Vec<Blocker>,
    /// Renames that cannot be done.
    pub conflicts: Vec<Conflict>,
    /// Keys found and left alone.
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// Whether the plan changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.renames.is_empty() && self.deletions.is_empty()
    }

    /// Whether anything stands in the way of applying it.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        !self.blockers.is_empty() || !self.conflicts.is_empty()
    }
}

/// The old (0.1) name of a prefix's keys: `{prefix}`.
fn old_base(prefix: &str) -> String {
    format!("{{{prefix}}}")
}

/// Reads the keyspace and builds the plan. Changes nothing.
///
/// # Errors
///
/// The first failed Redis command, classified.
pub async fn plan<C>(conn: &mut C, options: &Options) -> Result<Plan>
where
    C: ConnectionLike + Send + Sync,
{
    let mut builder = Builder::default();
    streams(conn, options, &mut builder).await?;
    sink_progress(conn, &mut builder).await?;
    if options.layout == KeyLayout::Plain {
        for state_prefix in &options.state_prefixes {
            state(conn, state_prefix, &mut builder).await?;
        }
    }
    let conflicts = conflicts(conn, &builder.renames).await?;
    let mut renames = builder.renames;
    renames.sort_by(|a, b| (a.kind, &a.from).cmp(&(b.kind, &b.from)));
    Ok(Plan {
        prefix: options.prefix.clone(),
        state_prefixes: options.state_prefixes.clone(),
        layout: options.layout,
        applied: false,
        renames,
        deletions: builder.deletions,
        blockers: builder.blockers,
        conflicts,
        skipped: builder.skipped,
    })
}

/// The plan under construction, and every key already given a fate (a state prefix equal to
/// the stream prefix finds the streams again; the first decision stands).
#[derive(Default)]
struct Builder {
    seen: HashSet<String>,
    renames: Vec<Rename>,
    deletions: Vec<Deletion>,
    blockers: Vec<Blocker>,
    skipped: Vec<Skipped>,
}

impl Builder {
    /// Marks `key` as decided; false when it already was.
    fn claim(&mut self, key: &str) -> bool {
        self.seen.insert(key.to_owned())
    }

    fn rename(&mut self, kind: KeyKind, from: String, to: String) {
        self.renames.push(Rename { kind, from, to });
    }

    fn skip(&mut self, key: String, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            key,
            reason: reason.into(),
        });
    }
}

/// The streams `{P}:*`: event streams and the DLQ are renamed, lanes deleted or blocking.
async fn streams<C>(conn: &mut C, options: &Options, plan: &mut Builder) -> Result<()>
where
    C: ConnectionLike + Send + Sync,
{
    let names = StreamNames::new(&options.prefix, options.layout);
    let head = format!("{}:", old_base(&options.prefix));
    let pattern = format!("{}*", keys::escape_glob(&head));
    for key in keys::scan(conn, &pattern, Some("stream"), &pattern).await? {
        plan.claim(&key);
        let Some(rest) = key.strip_prefix(&head) else {
            continue;
        };
        if rest == keys::DLQ_NAME {
            let to = names.dlq();
            plan.rename(KeyKind::Dlq, key, to);
        } else if let Some(lane_of) = lane_type(rest) {
            if lane_of.is_empty() {
                plan.skip(key, "not a stream name that redstream 0.1 writes");
            } else {
                lane(conn, key, plan).await?;
            }
        } else if rest.is_empty() || rest.contains(['{', '}', '#']) {
            plan.skip(key, "not a stream name that redstream 0.1 writes");
        } else {
            let to = names.stream(rest);
            plan.rename(KeyKind::Stream, key, to);
        }
    }
    Ok(())
}

/// The event type of a lane name `<type>#critical|high|low`.
fn lane_type(rest: &str) -> Option<&str> {
    let (event_type, lane) = rest.rsplit_once('#')?;
    LANES.contains(&lane).then_some(event_type)
}

/// Decides a lane: deleted when empty with nothing pending, a blocker otherwise.
async fn lane<C>(conn: &mut C, key: String, plan: &mut Builder) -> Result<()>
where
    C: ConnectionLike + Send + Sync,
{
    let entries: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query_async(conn)
        .await
        .map_err(|err| Error::from_redis("XLEN", key.clone(), err))?;
    let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(conn)
        .await
        .map_err(|err| Error::from_redis("XINFO GROUPS", key.clone(), err))?;
    let groups: Vec<GroupState> = reply
        .groups
        .into_iter()
        .map(|g| GroupState {
            group: g.name,
            pending: g.pending as u64,
            lag: g.lag.map(|lag| lag as u64),
        })
        .collect();
    let blocker = Blocker {
        key,
        entries,
        groups,
    };
    if blocker.entries == 0 && blocker.pending() == 0 {
        plan.deletions.push(Deletion {
            kind: KeyKind::Lane,
            key: blocker.key,
        });
    } else {
        plan.blockers.push(blocker);
    }
    Ok(())
}

/// The sink progress hashes `<stream>:redstream-sink:<id>`, renamed to the stream's companion.
/// A progress key of a stream that is itself renamed follows the stream to its new name.
async fn sink_progress<C>(conn: &mut C, plan: &mut Builder) -> Result<()>
where
    C: ConnectionLike + Send + Sync,
{
    let pattern = format!("*{}*", keys::escape_glob(SINK_MARK));
    let moved: BTreeMap<String, String> = plan
        .renames
        .iter()
        .map(|r| (r.from.clone(), r.to.clone()))
        .collect();
    for key in keys::scan(conn, &pattern, Some("hash"), &pattern).await? {
        if !plan.claim(&key) {
            continue;
        }
        let Some((stream, id)) = key.rsplit_once(SINK_MARK) else {
            continue;
        };
        let valid_id = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if stream.is_empty() || !valid_id {
            plan.skip(key, "not a progress key that redstream-sink writes");
            continue;
        }
        let stream = moved.get(stream).map_or(stream, String::as_str);
        let to = redstream_sink::keys::progress_key(stream, id);
        if to == key {
            plan.skip(key, "already named as the sink names it");
        } else {
            plan.rename(KeyKind::SinkProgress, key, to);
        }
    }
    Ok(())
}

/// The state keys `{S}:*` and checkpoints `{S}#checkpoint:*` (the state crate's cluster layout,
/// the default of 0.1), renamed to `S:*` and `S#checkpoint:*` (its plain layout). Both names come
/// from the state crate's own key builder.
async fn state<C>(conn: &mut C, state_prefix: &str, plan: &mut Builder) -> Result<()>
where
    C: ConnectionLike + Send + Sync,
{
    let old = StateKeys::new(state_prefix, KeyLayout::Cluster);
    let new = StateKeys::new(state_prefix, KeyLayout::Plain);
    let values = old.scan_pattern("");
    for key in keys::scan(conn, &values, None, &values).await? {
        if !plan.claim(&key) {
            continue;
        }
        if let Some(user_key) = old.user_key(&key) {
            let to = new.key(user_key);
            plan.rename(KeyKind::State, key, to);
        }
    }
    let checkpoints = old.checkpoint_scan_pattern();
    for key in keys::scan(conn, &checkpoints, None, &checkpoints).await? {
        if !plan.claim(&key) {
            continue;
        }
        if let Some(name) = old.checkpoint_name(&key) {
            let to = new.checkpoint(name);
            plan.rename(KeyKind::Checkpoint, key, to);
        }
    }
    Ok(())
}

/// Renames whose target exists, or whose target another rename also has.
async fn conflicts<C>(conn: &mut C, renames: &[Rename]) -> Result<Vec<Conflict>>
where
    C: ConnectionLike + Send + Sync,
{
    let mut conflicts = Vec::new();
    let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
    for rename in renames {
        if let Some(first) = targets.insert(&rename.to, &rename.from) {
            for from in [first, rename.from.as_str()] {
                conflicts.push(Conflict {
                    from: from.to_owned(),
                    to: rename.to.clone(),
                    reason: ConflictReason::DuplicateTarget,
                });
            }
        }
    }
    for batch in renames.chunks(EXISTS_BATCH) {
        let mut pipe = redis::pipe();
        for rename in batch {
            pipe.cmd("EXISTS").arg(&rename.to);
        }
        let found: Vec<u64> = pipe
            .query_async(conn)
            .await
            .map_err(|err| Error::from_redis("EXISTS", "the new key names", err))?;
        for (rename, found) in batch.iter().zip(found) {
            if found > 0 {
                conflicts.push(Conflict {
                    from: rename.from.clone(),
                    to: rename.to.clone(),
                    reason: ConflictReason::TargetExists,
                });
            }
        }
    }
    conflicts.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    conflicts.dedup();
    Ok(conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_recognised() {
        assert_eq!(lane_type("order.created#high"), Some("order.created"));
        assert_eq!(lane_type("order.created#critical"), Some("order.created"));
        assert_eq!(lane_type("#low"), Some(""));
        assert_eq!(lane_type("order.created#normal"), None);
        assert_eq!(lane_type("order.created"), None);
    }
}
