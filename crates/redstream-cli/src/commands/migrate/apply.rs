//! Applying a plan: one Lua script that checks the plan still holds and then renames and
//! deletes, so nothing can slip in between the check and the change, and either everything
//! happens or nothing does.
//!
//! Every key the script touches is passed in `KEYS`, as Redis asks of scripts. The keys are in
//! many slots, so the script runs on a single Redis node only (the 0.1 layout had no cluster
//! support; `redstream migrate` refuses a node with `cluster_enabled:1`).

use redis::aio::ConnectionLike;
use redstream_core::{Error, ErrorKind, Result};

use super::plan::Plan;

/// `KEYS` = `from1, to1, from2, to2, ...` (`ARGV[1]` pairs), then the lanes to delete.
///
/// Checks first, writes after: every source exists, no target exists, every lane is a stream
/// with no entries and nothing pending in any group (or is gone). On any failure it returns
/// `{"refused", problem, key, problem, key, ...}` having written nothing; otherwise it renames
/// each pair (`RENAME` keeps a stream's consumer groups and pending entries), deletes the
/// lanes, and returns `{"ok", renamed, deleted}`. After the checks neither `RENAME` (source
/// present, target absent) nor `DEL` can fail, so the script never stops half-way.
const SCRIPT: &str = r"
local pairs_count = tonumber(ARGV[1])
local result = {'refused'}
for i = 1, pairs_count do
  local from, to = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', from) == 0 then
    result[#result + 1] = 'missing'
    result[#result + 1] = from
  end
  if redis.call('EXISTS', to) == 1 then
    result[#result + 1] = 'exists'
    result[#result + 1] = to
  end
end
for i = 2 * pairs_count + 1, #KEYS do
  local lane = KEYS[i]
  local kind = redis.call('TYPE', lane)['ok']
  if kind == 'stream' then
    local pending = 0
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', lane)) do
      for j = 1, #group - 1, 2 do
        if group[j] == 'pending' then
          pending = pending + group[j + 1]
        end
      end
    end
    if redis.call('XLEN', lane) > 0 or pending > 0 then
      result[#result + 1] = 'lane'
      result[#result + 1] = lane
    end
  elseif kind ~= 'none' then
    result[#result + 1] = 'type'
    result[#result + 1] = lane
  end
end
if #result > 1 then
  return result
end
for i = 1, pairs_count do
  redis.call('RENAME', KEYS[2 * i - 1], KEYS[2 * i])
end
local deleted = 0
for i = 2 * pairs_count + 1, #KEYS do
  deleted = deleted + redis.call('DEL', KEYS[i])
end
return {'ok', tostring(pairs_count), tostring(deleted)}
";

/// What the script found in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A key to rename is gone.
    Missing(String),
    /// A key already has a new name.
    Exists(String),
    /// A lane to delete holds entries or pending entries.
    LaneNotEmpty(String),
    /// A lane to delete is no longer a stream.
    NotAStream(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "{key} to rename no longer exists"),
            Self::Exists(key) => write!(f, "target {key} exists"),
            Self::LaneNotEmpty(key) => {
                write!(f, "lane {key} now holds entries or pending entries")
            }
            Self::NotAStream(key) => write!(f, "lane {key} is no longer a stream"),
        }
    }
}

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Everything was renamed and deleted.
    Applied {
        /// Keys renamed.
        renamed: u64,
        /// Lanes deleted (lanes already gone are not counted).
        deleted: u64,
    },
    /// The keyspace no longer matches the plan: nothing was changed.
    Refused(Vec<Problem>),
}

/// Applies `plan` in one script. The caller has checked that the plan has no blockers or
/// conflicts; the script checks again, atomically.
///
/// # Errors
///
/// A failed `EVAL`, classified. A timeout or a dropped connection leaves it unknown whether
/// the script ran (all of it or none of it): the message says to look with a dry run.
pub async fn apply<C>(conn: &mut C, plan: &Plan) -> Result<Outcome>
where
    C: ConnectionLike + Send + Sync,
{
    if plan.is_empty() {
        return Ok(Outcome::Applied {
            renamed: 0,
            deleted: 0,
        });
    }
    let mut eval = redis::cmd("EVAL");
    eval.arg(SCRIPT)
        .arg(plan.renames.len() * 2 + plan.deletions.len());
    for rename in &plan.renames {
        eval.arg(&rename.from).arg(&rename.to);
    }
    for deletion in &plan.deletions {
        eval.arg(&deletion.key);
    }
    eval.arg(plan.renames.len());
    let reply: Vec<String> = eval.query_async(conn).await.map_err(|err| {
        let err = Error::from_redis("EVAL (the migration script)", "the 0.1 keys", err);
        if matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Connection) {
            Error::backend(
                err.kind(),
                "EVAL (the migration script)",
                "the 0.1 keys",
                format!(
                    "{err}; the script either ran completely or not at all: run `redstream \
                     migrate` without --apply to see which"
                ),
            )
        } else {
            err
        }
    })?;
    parse(&reply)
}

fn unexpected(reply: &[String]) -> Error {
    Error::backend(
        ErrorKind::Unexpected,
        "EVAL (the migration script)",
        "the 0.1 keys",
        format!("unexpected reply {reply:?}"),
    )
}

fn parse(reply: &[String]) -> Result<Outcome> {
    match reply {
        [status, renamed, deleted] if status == "ok" => {
            let number = |text: &String| text.parse::<u64>().map_err(|_| unexpected(reply));
            Ok(Outcome::Applied {
                renamed: number(renamed)?,
                deleted: number(deleted)?,
            })
        }
        [status, rest @ ..] if status == "refused" && rest.len() % 2 == 0 => rest
            .chunks_exact(2)
            .map(|pair| {
                let key = pair[1].clone();
                match pair[0].as_str() {
                    "missing" => Ok(Problem::Missing(key)),
                    "exists" => Ok(Problem::Exists(key)),
                    "lane" => Ok(Problem::LaneNotEmpty(key)),
                    "type" => Ok(Problem::NotAStream(key)),
                    _ => Err(unexpected(reply)),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Outcome::Refused),
        _ => Err(unexpected(reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse(&strings(&["ok", "3", "1"])).ok(),
            Some(Outcome::Applied {
                renamed: 3,
                deleted: 1
            })
        );
        assert_eq!(
            parse(&strings(&["refused", "exists", "a", "lane", "b"])).ok(),
            Some(Outcome::Refused(vec![
                Problem::Exists("a".to_owned()),
                Problem::LaneNotEmpty("b".to_owned())
            ]))
        );
        assert!(parse(&strings(&["refused", "exists"])).is_err());
        assert!(parse(&strings(&["what"])).is_err());
    }
}
