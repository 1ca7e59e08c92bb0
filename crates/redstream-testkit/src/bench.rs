//! The settings every side-by-side benchmark of the workspace reads from its environment, read
//! in one place so that they mean the same in each crate's `cargo bench`.

use std::sync::LazyLock;

/// Rounds per figure: `REDSTREAM_BENCH_ROUNDS` when it is a positive number, else `default`.
/// More rounds narrow a median on a noisy machine.
#[must_use]
pub fn rounds(default: usize) -> usize {
    std::env::var("REDSTREAM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// Whether the benchmark's part `name` runs: every part, unless `REDSTREAM_BENCH_ONLY` (a
/// comma-separated list of parts) names some.
#[must_use]
pub fn part(name: &str) -> bool {
    static ONLY: LazyLock<Option<Vec<String>>> = LazyLock::new(|| {
        std::env::var("REDSTREAM_BENCH_ONLY")
            .ok()
            .map(|only| only.split(',').map(|p| p.trim().to_owned()).collect())
    });
    ONLY.as_ref()
        .is_none_or(|only| only.iter().any(|p| p == name))
}

/// The server process's CPU time so far, user and system (`used_cpu_user` plus `used_cpu_sys`
/// of `INFO cpu`): what a side of a benchmark asked of the server, reading requests and
/// writing replies included, which a throughput figure alone cannot tell from the client's
/// own cost when both share the machine's cores. Zero for a figure the reply does not have.
///
/// # Errors
///
/// The error of `INFO`.
pub async fn server_cpu(
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<std::time::Duration> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let seconds: f64 = info
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| *name == "used_cpu_user" || *name == "used_cpu_sys")
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum();
    Ok(std::time::Duration::from_secs_f64(seconds.max(0.0)))
}
