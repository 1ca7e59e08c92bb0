//! `redstream nodes`: each master of a Redis Cluster (or the one server) with its memory, load,
//! keys and the streams it holds, and a totals row. The figures come from the transport's
//! `nodes` (`INFO`, `DBSIZE`, `SCAN` and `XLEN` on each node), which the dashboard's Nodes panel
//! shows too.

use clap::Args;
use redstream_transport::NodeStats;
use serde::Serialize;

use super::output;
use crate::{CliResult, GlobalArgs, connect, select};

/// Width the table is held to.
const TABLE_WIDTH: u16 = 80;

/// Options of `redstream nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Also count these streams: a glob (`events.*`) or a stream name (`orders.events`);
    /// repeat it, or give a comma-separated list.
    #[arg(long = "streams", value_name = "PATTERN", value_delimiter = ',', value_parser = select::parse_pattern)]
    pub patterns: Vec<String>,
}

/// One node (or the totals) in `nodes --json`.
#[derive(Debug, Serialize)]
pub(crate) struct NodeRow<'a> {
    /// `host:port`, or `total`.
    pub(crate) address: &'a str,
    /// `master` (or `slave`), as `INFO` says; `null` in the totals.
    pub(crate) role: Option<&'a str>,
    /// `redis` or `valkey`; `null` in the totals.
    pub(crate) server: Option<&'a str>,
    pub(crate) version: Option<&'a str>,
    pub(crate) used_memory: Option<u64>,
    pub(crate) used_memory_human: Option<String>,
    /// 0: no limit.
    pub(crate) maxmemory: Option<u64>,
    pub(crate) ops_per_sec: Option<u64>,
    pub(crate) connected_clients: Option<u64>,
    pub(crate) keys: u64,
    pub(crate) stream_count: usize,
    pub(crate) stream_entries: u64,
    /// The streams' names (not in the totals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) streams: Option<&'a [String]>,
}

impl<'a> NodeRow<'a> {
    pub(crate) fn new(node: &'a NodeStats) -> Self {
        let info = &node.info;
        Self {
            address: &node.address,
            role: info.role.as_deref(),
            server: info.server.as_deref(),
            version: info.version.as_deref(),
            used_memory: info.used_memory,
            used_memory_human: info.used_memory.map(output::bytes),
            maxmemory: info.maxmemory,
            ops_per_sec: info.ops_per_sec,
            connected_clients: info.connected_clients,
            keys: node.keys,
            stream_count: node.streams.len(),
            stream_entries: node.stream_entries,
            streams: Some(&node.streams),
        }
    }
}

/// One node (or the totals) as the dashboard shows it: [`NodeRow`] without the stream names
/// (a snapshot stays small however many streams there are).
#[derive(Debug, Serialize)]
pub(crate) struct NodeSummary {
    pub(crate) address: String,
    pub(crate) role: Option<String>,
    pub(crate) server: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) used_memory: Option<u64>,
    pub(crate) maxmemory: Option<u64>,
    pub(crate) ops_per_sec: Option<u64>,
    pub(crate) connected_clients: Option<u64>,
    pub(crate) keys: u64,
    pub(crate) stream_count: usize,
    pub(crate) stream_entries: u64,
}

impl NodeSummary {
    pub(crate) fn of(node: &NodeStats) -> Self {
        let info = &node.info;
        Self {
            address: node.address.clone(),
            role: info.role.clone(),
            server: info.server.clone(),
            version: info.version.clone(),
            used_memory: info.used_memory,
            maxmemory: info.maxmemory,
            ops_per_sec: info.ops_per_sec,
            connected_clients: info.connected_clients,
            keys: node.keys,
            stream_count: node.streams.len(),
            stream_entries: node.stream_entries,
        }
    }
}

/// The totals of `nodes`: `maxmemory` is the sum only when every node has a limit (a node
/// without one leaves the whole without one: 0).
pub(crate) fn totals(nodes: &[NodeStats]) -> NodeStats {
    let mut total = NodeStats::total(nodes);
    if nodes.iter().any(|n| n.info.maxmemory == Some(0)) {
        total.info.maxmemory = Some(0);
    }
    total
}

/// `redstream nodes [--streams <pattern>]...`.
pub async fn run(global: &GlobalArgs, args: NodesArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let nodes = select::nodes(&transport, &args.patterns).await?;
    let total = totals(&nodes);
    if global.json {
        #[derive(Serialize)]
        struct Nodes<'a> {
            topology: &'static str,
            prefix: &'a str,
            patterns: &'a [String],
            nodes: Vec<NodeRow<'a>>,
            totals: NodeRow<'a>,
        }
        let mut totals = NodeRow::new(&total);
        totals.streams = None;
        return output::json(&Nodes {
            topology: transport.topology().as_str(),
            prefix: &global.prefix,
            patterns: &args.patterns,
            nodes: nodes.iter().map(NodeRow::new).collect(),
            totals,
        });
    }
    let mut table = output::table(&[
        "NODE", "MEMORY", "OPS/S", "CLIENTS", "KEYS", "STREAMS", "ENTRIES",
    ]);
    // A line between rows: a node's cell spans several lines.
    table.load_style(comfy_table::presets::UTF8_FULL);
    table.set_width(TABLE_WIDTH);
    for node in nodes.iter().chain(std::iter::once(&total)) {
        let info = &node.info;
        // The address, then what the node is, on lines of their own so that the table fits.
        let mut name = node.address.clone();
        if let Some(role) = &info.role {
            name.push('\n');
            name.push_str(role);
        }
        if info.server.is_some() || info.version.is_some() {
            name.push('\n');
            let parts = [info.server.as_deref(), info.version.as_deref()];
            name.push_str(&parts.map(|p| p.unwrap_or("?")).join(" "));
        }
        let memory = format!(
            "{}\n{}",
            output::or_dash(info.used_memory.map(output::bytes)),
            match info.maxmemory {
                Some(0) => "no limit".to_owned(),
                Some(max) => format!("of {}", output::bytes(max)),
                None => "limit ?".to_owned(),
            }
        );
        table.add_row(vec![
            name,
            memory,
            output::or_dash(info.ops_per_sec),
            output::or_dash(info.connected_clients),
            node.keys.to_string(),
            node.streams.len().to_string(),
            node.stream_entries.to_string(),
        ]);
    }
    output::print_table(&table)
}
