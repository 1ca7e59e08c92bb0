//! [`RedisCluster::move_slot`]: resharding one slot the way `redis-cli --cluster reshard` does,
//! while clients keep using it.

use super::topology::short;
use super::{ClusterNode, RedisCluster};
use crate::error::{Error, Result};
use crate::wait::wait_until;

/// How many keys one `MIGRATE` moves.
const KEYS_PER_MIGRATE: usize = 100;
/// `MIGRATE`'s own timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 5_000;

/// What [`RedisCluster::move_slot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotMove {
    /// The slot that moved.
    pub slot: u16,
    /// The node id of the master that served it.
    pub from: String,
    /// The node id of the master that serves it now.
    pub to: String,
    /// How many keys `MIGRATE` moved.
    pub keys: usize,
}

impl RedisCluster {
    /// Moves `slot` to the master `to` while clients keep using it, as a resharding does:
    /// `CLUSTER SETSLOT <slot> IMPORTING` on `to`, `MIGRATING` on the current master, the keys
    /// moved with `MIGRATE` in batches until none is left, then `CLUSTER SETSLOT <slot> NODE`
    /// on `to`, the old master and every other master; returns once every running node says
    /// `to` serves the slot and the cluster has settled.
    ///
    /// While the keys move, the old master answers `ASK` for keys it no longer has (and for
    /// new keys), which cluster clients follow; once the slot has moved it answers `MOVED`.
    /// Moving a slot to the master that already serves it does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when `to` is not a master, [`Error::Redis`] when a node refuses a
    /// step (the slot is then left half-moved), [`Error::Timeout`] when the nodes do not
    /// agree.
    pub async fn move_slot(&self, slot: u16, to: &ClusterNode) -> Result<SlotMove> {
        let view = self.view().await?;
        let from_id = view
            .owner(slot)
            .ok_or_else(|| Error::Unsupported(format!("no master serves slot {slot}")))?;
        let from = self.node_by_id(from_id).ok_or_else(|| {
            Error::Unsupported(format!(
                "slot {slot} is served by an unknown node {from_id}"
            ))
        })?;
        if !view.node(&to.id).is_some_and(|line| line.is_master()) {
            return Err(Error::Unsupported(format!(
                "cannot move slot {slot} to {to}: it is not a master"
            )));
        }
        let mut report = SlotMove {
            slot,
            from: from.id.clone(),
            to: to.id.clone(),
            keys: 0,
        };
        if from.id == to.id {
            return Ok(report);
        }
        let setslot = |state: &str, id: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
            cmd
        };
        let () = to.server.admin(&setslot("IMPORTING", &from.id)).await?;
        let () = from.server.admin(&setslot("MIGRATING", &to.id)).await?;
        loop {
            let keys: Vec<Vec<u8>> = from
                .server
                .admin(
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(KEYS_PER_MIGRATE),
                )
                .await?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg(to.server.host())
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS);
            if let Some(password) = &self.password {
                migrate.arg("AUTH").arg(password);
            }
            migrate.arg("KEYS").arg(&keys);
            // `OK`, or `NOKEY` when the keys were deleted meanwhile.
            let _: redis::Value = from.server.admin(&migrate).await?;
            report.keys += keys.len();
        }
        // The new owner first, so that it stops asking for ASKING before the old one starts
        // sending clients to it with MOVED.
        let () = to.server.admin(&setslot("NODE", &to.id)).await?;
        let () = from.server.admin(&setslot("NODE", &to.id)).await?;
        for line in view.nodes.iter().filter(|line| line.is_master()) {
            if line.id == from.id || line.id == to.id {
                continue;
            }
            if let Some(node) = self.node_by_id(&line.id).filter(|n| n.server.is_running()) {
                // Gossip would tell them too; this only makes it sooner.
                let told: Result<()> = node.server.admin(&setslot("NODE", &to.id)).await;
                if let Err(err) = told {
                    tracing::debug!(%err, node = short(&node.id), "SETSLOT NODE on another master");
                }
            }
        }
        let what = format!("every node to see slot {slot} served by {to}");
        wait_until(what, self.timeout, || async {
            for node in self.nodes.iter().filter(|node| node.server.is_running()) {
                let view = self.view_of(node).await?;
                let owner = view.owner(slot).unwrap_or("nobody");
                if owner != to.id {
                    return Err(format!("{node} sees it served by {}", short(owner)));
                }
            }
            self.check_stable().await
        })
        .await?;
        Ok(report)
    }
}
