//! Reading `CLUSTER NODES`: the masters that serve slots.

use super::endpoint::NodeAddress;

/// The masters in a `CLUSTER NODES` reply that serve at least one slot and are not marked
/// failed, sorted by address.
///
/// Each line is `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch>
/// <link> <slot> <slot>...`; see <https://redis.io/docs/latest/commands/cluster-nodes/>.
pub(crate) fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeAddress>, String> {
    let mut masters = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(format!(
                "a line of CLUSTER NODES has too few fields: {line:?}"
            ));
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        let serves_slots = fields.len() > 8;
        let usable = flags.contains(&"master")
            && !flags
                .iter()
                .any(|flag| matches!(*flag, "fail" | "fail?" | "noaddr" | "handshake"));
        if !(usable && serves_slots) {
            continue;
        }
        let address = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("CLUSTER NODES gives the address {address:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!(
                "CLUSTER NODES gives a master without an IP ({address:?}); set \
                 cluster-announce-ip on the nodes"
            ));
        }
        masters.push(NodeAddress::new(host, port));
    }
    masters.sort();
    Ok(masters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_serving_slots() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 0 1426238316232 5 connected 0-10
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master - 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";
        let masters: Vec<String> = parse_cluster_nodes(text)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            masters,
            ["127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"]
        );
    }
}
