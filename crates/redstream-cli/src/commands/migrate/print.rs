//! Showing a plan: tables for people, one JSON object for scripts, and the messages of a
//! refused apply.

use std::fmt::Write as _;

use redstream_core::keys::KeyLayout;

use super::apply::Problem;
use super::plan::{Blocker, ConflictReason, Plan};
use crate::CliResult;
use crate::commands::output;

/// Prints `plan` (dry run or applied).
pub(super) fn plan(json: bool, plan: &Plan) -> CliResult<()> {
    if json {
        return output::json(plan);
    }
    let mut scope = format!("prefix {}", plan.prefix);
    if !plan.state_prefixes.is_empty() {
        let _ = write!(scope, ", state prefixes {}", plan.state_prefixes.join(", "));
    }
    if plan.is_empty() && !plan.is_blocked() {
        output::line(format!(
            "nothing to migrate: no redstream 0.1 keys found for {scope} (layout {})",
            plan.layout
        ))?;
        return skipped(plan);
    }
    output::line(format!(
        "redstream 0.1 keys for {scope}, to the {} layout:",
        plan.layout
    ))?;
    if !plan.renames.is_empty() {
        output::line("rename:")?;
        let mut table = output::table(&["KIND", "FROM", "TO"]);
        for rename in &plan.renames {
            table.add_row(vec![rename.kind.as_str(), &rename.from, &rename.to]);
        }
        output::print_table(&table)?;
    }
    if !plan.deletions.is_empty() {
        output::line("delete (empty priority lanes: priority now lives in the envelope):")?;
        let mut table = output::table(&["KIND", "KEY"]);
        for deletion in &plan.deletions {
            table.add_row(vec![deletion.kind.as_str(), &deletion.key]);
        }
        output::print_table(&table)?;
    }
    if !plan.blockers.is_empty() {
        output::line("blocked (lanes that still hold entries: drain them first):")?;
        let mut table = output::table(&["LANE", "ENTRIES", "PENDING", "GROUPS"]);
        for blocker in &plan.blockers {
            table.add_row(vec![
                blocker.key.clone(),
                blocker.entries.to_string(),
                blocker.pending().to_string(),
                groups(blocker),
            ]);
        }
        output::print_table(&table)?;
    }
    if !plan.conflicts.is_empty() {
        output::line("conflicts (the new name is taken):")?;
        let mut table = output::table(&["FROM", "TO", "PROBLEM"]);
        for conflict in &plan.conflicts {
            table.add_row(vec![
                conflict.from.as_str(),
                conflict.to.as_str(),
                reason(conflict.reason),
            ]);
        }
        output::print_table(&table)?;
    }
    skipped(plan)?;
    if plan.layout == KeyLayout::Cluster && !plan.state_prefixes.is_empty() {
        output::line("state keys keep their names in the cluster layout: nothing to rename")?;
    }
    let counts = format!(
        "{} to rename, {} to delete",
        plan.renames.len(),
        plan.deletions.len()
    );
    if plan.applied {
        output::line(format!(
            "migrated: renamed {} keys, deleted {} empty lanes",
            plan.renames.len(),
            plan.deletions.len()
        ))
    } else if plan.is_blocked() {
        output::line(format!(
            "dry run, nothing changed ({counts}): --apply is refused until the {} blocked \
             lanes and {} conflicts above are resolved (see docs/migration.md)",
            plan.blockers.len(),
            plan.conflicts.len()
        ))
    } else {
        output::line(format!(
            "dry run, nothing changed ({counts}): run again with --apply to migrate"
        ))
    }
}

fn skipped(plan: &Plan) -> CliResult<()> {
    if plan.skipped.is_empty() {
        return Ok(());
    }
    output::line("left alone:")?;
    let mut table = output::table(&["KEY", "WHY"]);
    for skipped in &plan.skipped {
        table.add_row(vec![skipped.key.as_str(), skipped.reason.as_str()]);
    }
    output::print_table(&table)
}

fn reason(reason: ConflictReason) -> &'static str {
    match reason {
        ConflictReason::TargetExists => "target exists",
        ConflictReason::DuplicateTarget => "another key gets the same name",
    }
}

/// `g1: 2 pending, lag 1; g2: ...`, or `-`.
fn groups(blocker: &Blocker) -> String {
    if blocker.groups.is_empty() {
        return "-".to_owned();
    }
    blocker
        .groups
        .iter()
        .map(|g| {
            let lag = g
                .lag
                .map_or_else(|| "unknown".to_owned(), |lag| lag.to_string());
            format!("{}: {} pending, lag {lag}", g.group, g.pending)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error of `--apply` on a plan with blockers or conflicts: each one, one per line.
pub(super) fn refusal(plan: &Plan) -> String {
    let mut text = format!(
        "refusing to migrate, nothing was changed: {} blocked lanes, {} conflicts",
        plan.blockers.len(),
        plan.conflicts.len()
    );
    for blocker in &plan.blockers {
        let _ = write!(
            text,
            "\n  lane {}: {} entries, {} pending ({}): let the redstream 0.1 consumers drain \
             it, or delete it once you no longer need its entries",
            blocker.key,
            blocker.entries,
            blocker.pending(),
            if blocker.groups.is_empty() {
                "no consumer groups".to_owned()
            } else {
                groups(blocker)
            }
        );
    }
    for conflict in &plan.conflicts {
        let _ = write!(
            text,
            "\n  {} -> {}: {}",
            conflict.from,
            conflict.to,
            reason(conflict.reason)
        );
    }
    text.push_str("\nrun `redstream migrate` without --apply to see the whole plan");
    text
}

/// The error of `--apply` when the script found the keyspace changed since the plan was made.
pub(super) fn changed_since(problems: &[Problem]) -> String {
    let mut text = String::from(
        "refusing to migrate, nothing was changed: the keys changed while the plan was made \
         (is a redstream process still running?):",
    );
    for problem in problems {
        let _ = write!(text, "\n  {problem}");
    }
    text.push_str("\nstop every producer and consumer, then run `redstream migrate` again");
    text
}
