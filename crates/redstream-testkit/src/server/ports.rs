//! The ports the kit's servers listen on.

use std::fs;
use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// The port of the shared development server, which a test server must never take.
const SHARED_REDIS_PORT: u16 = 6379;

/// The highest port whose default cluster bus port (port + 10000) exists.
const MAX_PORT_WITH_DEFAULT_BUS: u16 = 55535;

/// The lowest port the kit gives its servers, when the kernel's ephemeral range starts far
/// enough above it.
const LOWEST_SERVER_PORT: u16 = 16_384;

/// Fewer ports than this below the ephemeral range, and the kit takes ports from the kernel.
const MIN_SERVER_PORTS: u16 = 1_024;

/// A port that was free a moment ago. Someone may take it before redis-server binds it, which
/// the caller handles by trying again.
///
/// Taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from
/// [`LOWEST_SERVER_PORT`] up, so that no client anywhere on the machine is ever given a
/// server's port as its own end of a connection: such a client's connection, lingering in
/// `TIME_WAIT` after it closed, kept a killed server's port from being held (see
/// `process::hold_port`). The ports are walked in turn from a place that differs from process
/// to process, so one process never gives a port twice until it has given them all: a client
/// of a server that is gone never reaches a later one of the same tests.
///
/// Each port is tried by binding it without `SO_REUSEADDR` (which std's `TcpListener` sets),
/// which fails while a connection of an earlier server lingers in `TIME_WAIT` on it: a killed
/// server's port could not be held on such a port. Where the ephemeral range leaves fewer
/// than [`MIN_SERVER_PORTS`] below it, or none of them is free, the kernel picks from its
/// range (ports above 55535 passed over: a cluster node without a bus port of its own listens
/// on its port plus 10000).
pub(super) fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if let Some((low, len)) = server_ports() {
        let start = std::process::id().wrapping_mul(2_654_435_761) % u32::from(len);
        for _ in 0..len {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let offset = u16::try_from(start.wrapping_add(n) % u32::from(len)).unwrap_or(0);
            let port = low + offset;
            if port != SHARED_REDIS_PORT && bind_unshared(port).is_ok() {
                return Ok(port);
            }
        }
    }
    loop {
        let port = bind_unshared(0)
            .and_then(|socket| socket.local_addr())
            .map_err(|err| Error::io("finding a free port", err))?
            .as_socket()
            .map_or(0, |addr| addr.port());
        if port != 0 && port != SHARED_REDIS_PORT && port <= MAX_PORT_WITH_DEFAULT_BUS {
            return Ok(port);
        }
    }
}

/// The first port the kit gives its servers and how many there are: those from
/// [`LOWEST_SERVER_PORT`] up to the kernel's ephemeral range; `None` when they are too few or
/// the range cannot be read.
fn server_ports() -> Option<(u16, u16)> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = range.split_whitespace().next()?.parse().ok()?;
    let len = ephemeral_low.checked_sub(LOWEST_SERVER_PORT)?;
    (len >= MIN_SERVER_PORTS).then_some((LOWEST_SERVER_PORT, len))
}

/// A loopback socket bound to `port` (0: one the kernel picks) without `SO_REUSEADDR`.
pub(super) fn bind_unshared(port: u16) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine whose ephemeral range leaves room below it (Linux's default starts at
    /// 32768), servers' ports come from below the range, and one process never gives a port
    /// twice in a row of calls.
    #[test]
    fn servers_ports_are_below_the_ephemeral_range_and_not_given_twice() {
        let Some((low, len)) = server_ports() else {
            let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
            panic!("no room below the ephemeral range ({range:?}): this test needs it");
        };
        let mut given = std::collections::HashSet::new();
        for _ in 0..200 {
            let port = free_port().unwrap();
            assert!(
                (low..low + len).contains(&port),
                "{port} not in {low}..{}",
                low + len
            );
            assert_ne!(port, SHARED_REDIS_PORT);
            assert!(given.insert(port), "{port} given twice");
        }
    }
}
