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
