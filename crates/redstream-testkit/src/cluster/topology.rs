//! What a node says about the cluster (`CLUSTER NODES`), and the checks the kit waits on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::slot::SLOTS;

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeLine {
    pub(crate) id: String,
    pub(crate) port: Option<u16>,
    pub(crate) flags: Vec<String>,
    /// The master's id, for a replica.
    pub(crate) master: Option<String>,
    pub(crate) connected: bool,
    /// Inclusive slot ranges; importing and migrating markers (`[slot->-id]`) left out.
    pub(crate) slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub(crate) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub(crate) fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    /// Flags that say the node is not a healthy member yet, or no longer.
    fn trouble(&self) -> Option<&str> {
        ["fail", "fail?", "handshake", "noaddr"]
            .into_iter()
            .find(|flag| self.has_flag(flag))
    }
}

/// A whole `CLUSTER NODES` reply.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub(crate) nodes: Vec<NodeLine>,
}

impl Topology {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let nodes = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(parse_line)
            .collect::<Result<_, _>>()?;
        Ok(Self { nodes })
    }

    pub(crate) fn node(&self, id: &str) -> Option<&NodeLine> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The id of the master that serves `slot`.
    pub(crate) fn owner(&self, slot: u16) -> Option<&str> {
        self.nodes
            .iter()
            .find(|node| {
                node.is_master()
                    && node
                        .slots
                        .iter()
                        .any(|&(first, last)| (first..=last).contains(&slot))
            })
            .map(|node| node.id.as_str())
    }

    /// The replicas of `master_id`, by id.
    pub(crate) fn replicas_of(&self, master_id: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|node| !node.is_master() && node.master.as_deref() == Some(master_id))
            .map(|node| node.id.as_str())
            .collect()
    }

    /// A description of the cluster that every healthy node gives alike, for the nodes in
    /// `running` (by id); `Err` says why this view is not healthy: a running node missing,
    /// failing, still in handshake or disconnected, a slot served by no running master, or
    /// a replica of a node that is not a running master.
    pub(crate) fn healthy_summary(&self, running: &[&str]) -> Result<String, String> {
        let mut summary = String::new();
        for id in running {
            let node = self
                .node(id)
                .ok_or_else(|| format!("node {} is not known", short(id)))?;
            if let Some(flag) = node.trouble() {
                return Err(format!("node {} is flagged {flag}", short(id)));
            }
            if !node.connected && !node.has_flag("myself") {
                return Err(format!("the link to node {} is down", short(id)));
            }
            if node.is_master() {
                let _ = write!(summary, "{} master", short(id));
                for (first, last) in &node.slots {
                    let _ = write!(summary, " {first}-{last}");
                }
            } else {
                let master = node.master.as_deref().unwrap_or("-");
                if !running.contains(&master) {
                    return Err(format!(
                        "node {} replicates {}, which is not running",
                        short(id),
                        short(master)
                    ));
                }
                let _ = write!(summary, "{} replica of {}", short(id), short(master));
            }
            summary.push('\n');
        }
        let mut covered: BTreeMap<u16, u16> = BTreeMap::new();
        for node in self.nodes.iter().filter(|node| node.is_master()) {
            if !node.slots.is_empty() && !running.contains(&node.id.as_str()) {
                return Err(format!(
                    "slots {:?} are served by node {}, which is not running",
                    node.slots,
                    short(&node.id)
                ));
            }
            for &(first, last) in &node.slots {
                covered.insert(first, last);
            }
        }
        let mut next = 0_u32;
        for (&first, &last) in &covered {
            if u32::from(first) < next {
                return Err(format!("slot {first} is claimed by two masters"));
            }
            if u32::from(first) != next {
                return Err(format!("slots {next}-{} are served by nobody", first - 1));
            }
            next = u32::from(last) + 1;
        }
        if next != u32::from(SLOTS) {
            return Err(format!("slots {next}-{} are served by nobody", SLOTS - 1));
        }
        Ok(summary)
    }
}

/// The first 8 characters of a node id, as in error messages.
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn parse_line(line: &str) -> Result<NodeLine, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(format!("unexpected CLUSTER NODES line {line:?}"));
    }
    // `127.0.0.1:30001@40001,hostname`; a node without an address shows `:0@0`.
    let address = fields[1].split(',').next().unwrap_or_default();
    let port = address
        .split('@')
        .next()
        .and_then(|host_port| host_port.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .filter(|&port| port != 0);
    let mut slots = Vec::new();
    for field in &fields[8..] {
        if field.starts_with('[') {
            continue;
        }
        let range = match field.split_once('-') {
            Some((first, last)) => (first.parse(), last.parse()),
            None => (field.parse(), field.parse()),
        };
        match range {
            (Ok(first), Ok(last)) => slots.push((first, last)),
            _ => return Err(format!("unexpected slot {field:?} in {line:?}")),
        }
    }
    Ok(NodeLine {
        id: fields[0].to_owned(),
        port,
        flags: fields[2].split(',').map(str::to_owned).collect(),
        master: Some(fields[3]).filter(|&m| m != "-").map(str::to_owned),
        connected: fields[7] == "connected",
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [10923->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";

    fn ids(topology: &Topology) -> Vec<&str> {
        topology.nodes.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn parses_the_documented_example() {
        let topology = Topology::parse(NODES).unwrap();
        let replica = &topology.nodes[0];
        assert_eq!(replica.port, Some(30004));
        assert!(!replica.is_master());
        assert_eq!(
            replica.master.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        let third = &topology.nodes[2];
        assert_eq!(third.slots, [(10923, 16383)]);
        assert_eq!(
            topology.owner(0),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(
            topology.owner(5461),
            Some("67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1")
        );
        assert_eq!(
            topology.owner(16383),
            Some("292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f")
        );
        assert_eq!(
            topology.replicas_of("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"),
            ["07c37dfeb235213a872192d90877d0cd55635b91"]
        );
        let all = ids(&topology);
        let summary = topology.healthy_summary(&all).unwrap();
        assert!(
            summary.contains("07c37dfe replica of e7d1eecc\n"),
            "{summary}"
        );
        assert!(
            summary.contains("67ed2db8 master 5461-10922\n"),
            "{summary}"
        );
    }

    #[test]
    fn unhealthy_views_say_why() {
        let topology = Topology::parse(NODES).unwrap();
        let all = ids(&topology);
        // The master of the replica is not running.
        let without_first_master: Vec<&str> = all[..3].to_vec();
        let err = topology.healthy_summary(&without_first_master).unwrap_err();
        assert!(err.contains("not running"), "{err}");

        let failing = NODES.replace("31002 master", "31002 master,fail?");
        let err = Topology::parse(&failing)
            .unwrap()
            .healthy_summary(&all)
            .unwrap_err();
        assert!(err.contains("flagged fail?"), "{err}");

        let gap = NODES.replace("5461-10922", "5461-10000");
        let err = Topology::parse(&gap)
            .unwrap()
            .healthy_summary(&all)
            .unwrap_err();
        assert_eq!(err, "slots 10001-10922 are served by nobody");

        let err = topology.healthy_summary(&["nobody-knows-me"]).unwrap_err();
        assert!(err.contains("not known"), "{err}");
    }

    #[test]
    fn a_node_without_address_has_no_port() {
        let topology = Topology::parse("abc :0@0 master,noaddr - 1 1 0 disconnected\n").unwrap();
        assert_eq!(topology.nodes[0].port, None);
        assert!(!topology.nodes[0].connected);
    }
}
