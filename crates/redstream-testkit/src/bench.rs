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

/// The median of `values` (of an even count, the upper of the two middle ones); NaN when there
/// are none. What each side's rate line prints, beside the ratio of [`Ratios`].
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
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

/// The reads of client input the server has done so far (`total_reads_processed` of
/// `INFO stats`): over a side's commands, how many commands each read brought in. A client
/// that sends its concurrent commands in fewer, larger writes costs the server fewer reads
/// (and system calls) per command. Zero when the reply does not have the figure.
///
/// # Errors
///
/// The error of `INFO`.
pub async fn server_reads(conn: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<u64> {
    let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await?;
    Ok(info
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| *name == "total_reads_processed")
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0))
}

/// How one side's rates compare with the other's over rounds run side by side (alternating
/// which goes first): the rounds' ratios `ours[i] / theirs[i]`, summed up.
///
/// The median and the range say what a round looks like and how noisy the machine was. The
/// geometric mean and its 95% confidence interval (Student's t on the ratios' logarithms)
/// say whether a difference is more than noise: an interval that holds 1.0 means these rounds
/// cannot tell the two sides apart, whatever the median says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Rounds compared.
    pub rounds: usize,
    /// The median ratio.
    pub median: f64,
    /// The lowest ratio.
    pub low: f64,
    /// The highest ratio.
    pub high: f64,
    /// The geometric mean of the ratios.
    pub mean: f64,
    /// The 95% confidence interval of [`mean`](Self::mean); `None` for fewer than two rounds.
    pub interval: Option<(f64, f64)>,
}

impl Ratios {
    /// The ratios of `ours` to `theirs`, round by round; `None` unless both have the same
    /// number of rounds, at least one, and every rate is finite and above zero.
    #[must_use]
    pub fn of(ours: &[f64], theirs: &[f64]) -> Option<Self> {
        let usable = |rate: &f64| rate.is_finite() && *rate > 0.0;
        if ours.is_empty() || ours.len() != theirs.len() || !ours.iter().chain(theirs).all(usable) {
            return None;
        }
        let mut ratios: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        let rounds = ratios.len();
        let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
        let n = rounds as f64;
        let log_mean = logs.iter().sum::<f64>() / n;
        let interval = (rounds >= 2).then(|| {
            let variance = logs.iter().map(|l| (l - log_mean).powi(2)).sum::<f64>() / (n - 1.0);
            let t = students_t_975(n - 1.0);
            let half = t * (variance / n).sqrt();
            ((log_mean - half).exp(), (log_mean + half).exp())
        });
        Some(Self {
            rounds,
            median: ratios[rounds / 2],
            low: ratios[0],
            high: ratios[rounds - 1],
            mean: log_mean.exp(),
            interval,
        })
    }
}

/// The 97.5th percentile of Student's t with `freedom` degrees of freedom: the half-width, in
/// standard errors, of a two-sided 95% interval.
fn students_t_975(freedom: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    // Only fails for freedom <= 0, which `Ratios::of` never asks for; the normal quantile is
    // the limit of many rounds.
    StudentsT::new(0.0, 1.0, freedom).map_or(1.959_964, |t| t.inverse_cdf(0.975))
}

/// `0.99x (0.86x .. 1.21x), mean 1.01x, 95% CI 0.95x .. 1.07x`: the median, the range, and the
/// geometric mean with its interval.
impl std::fmt::Display for Ratios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2}x ({:.2}x .. {:.2}x), mean {:.2}x",
            self.median, self.low, self.high, self.mean
        )?;
        match self.interval {
            Some((low, high)) => write!(f, ", 95% CI {low:.2}x .. {high:.2}x"),
            None => Ok(()),
        }
    }
}

/// CPU time of this process, every thread, user and system, and its context switches, from
/// `getrusage(RUSAGE_SELF)`: what the client side of a benchmark costs, whatever the server
/// sharing the machine's cores did meanwhile. Zero where `getrusage` is not available.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCpu {
    /// User CPU time.
    pub user: std::time::Duration,
    /// System CPU time.
    pub system: std::time::Duration,
    /// Voluntary and involuntary context switches.
    pub switches: u64,
}

impl ProcessCpu {
    /// The figures so far.
    #[must_use]
    pub fn now() -> Self {
        #[cfg(unix)]
        {
            use nix::sys::resource::{UsageWho, getrusage};
            let time = |t: nix::sys::time::TimeVal| {
                std::time::Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                    + std::time::Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
            };
            if let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) {
                let switches =
                    usage.voluntary_context_switches() + usage.involuntary_context_switches();
                return Self {
                    user: time(usage.user_time()),
                    system: time(usage.system_time()),
                    switches: u64::try_from(switches).unwrap_or(0),
                };
            }
        }
        Self::default()
    }

    /// What was spent from `start` to `self`.
    #[must_use]
    pub fn since(self, start: Self) -> Self {
        Self {
            user: self.user.saturating_sub(start.user),
            system: self.system.saturating_sub(start.system),
            switches: self.switches.saturating_sub(start.switches),
        }
    }

    /// User and system time together.
    #[must_use]
    pub fn total(self) -> std::time::Duration {
        self.user + self.system
    }
}

impl std::ops::AddAssign for ProcessCpu {
    fn add_assign(&mut self, other: Self) {
        self.user += other.user;
        self.system += other.system;
        self.switches += other.switches;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn process_cpu_counts_this_process_work() {
        let start = ProcessCpu::now();
        // Work until getrusage shows some (its figures move in steps of a clock tick or
        // less); a few billion steps would be seconds of CPU, far past any step.
        let mut x = 0_u64;
        let mut spent = ProcessCpu::default();
        for i in 0..4_000_000_000_u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            if i % 1_000_000 == 0 {
                spent = ProcessCpu::now().since(start);
                if spent.user > std::time::Duration::ZERO {
                    break;
                }
            }
        }
        assert!(spent.user > std::time::Duration::ZERO, "{spent:?} ({x})");
        assert_eq!(spent.total(), spent.user + spent.system);
        let mut twice = spent;
        twice += spent;
        assert_eq!(twice.total(), spent.total() * 2);
        assert_eq!(
            start.since(ProcessCpu::now()),
            ProcessCpu::default(),
            "saturates at zero"
        );
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_upper_of_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&[5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_t_quantiles_are_the_tables() {
        for (freedom, table) in [(1.0, 12.706), (4.0, 2.776), (20.0, 2.086), (120.0, 1.980)] {
            let t = students_t_975(freedom);
            assert!((t - table).abs() < 0.001, "{freedom}: {t} against {table}");
        }
    }

    #[test]
    fn ratios_sum_up_the_rounds() {
        let ours = [110.0, 90.0, 100.0, 121.0];
        let theirs = [100.0, 100.0, 100.0, 100.0];
        let r = Ratios::of(&ours, &theirs).unwrap();
        assert_eq!(r.rounds, 4);
        assert!((r.low - 0.9).abs() < 1e-12 && (r.high - 1.21).abs() < 1e-12);
        assert!((r.median - 1.1).abs() < 1e-12, "{r:?}");
        let mean = (1.1_f64 * 0.9 * 1.0 * 1.21).powf(0.25);
        assert!((r.mean - mean).abs() < 1e-12, "{r:?}");
        let (low, high) = r.interval.unwrap();
        assert!(
            low < 1.0 && 1.0 < high,
            "four noisy rounds tell nothing: {r:?}"
        );
        // Symmetric around the mean on a log scale.
        assert!(((high / r.mean) - (r.mean / low)).abs() < 1e-12, "{r:?}");
        assert_eq!(
            r.to_string(),
            format!(
                "1.10x (0.90x .. 1.21x), mean {:.2}x, 95% CI {low:.2}x .. {high:.2}x",
                r.mean
            )
        );
    }

    #[test]
    fn steady_rounds_give_a_narrow_interval() {
        let ours = [102.0, 103.0, 102.5, 102.0, 103.0, 102.5];
        let theirs = [100.0; 6];
        let (low, high) = Ratios::of(&ours, &theirs).unwrap().interval.unwrap();
        assert!(1.0 < low && high < 1.04, "{low} .. {high}");
    }

    #[test]
    fn one_round_has_no_interval() {
        let r = Ratios::of(&[95.0], &[100.0]).unwrap();
        assert_eq!(r.interval, None);
        assert_eq!(r.to_string(), "0.95x (0.95x .. 0.95x), mean 0.95x");
    }

    #[test]
    fn unusable_rates_are_refused() {
        assert_eq!(Ratios::of(&[], &[]), None);
        assert_eq!(Ratios::of(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(Ratios::of(&[1.0], &[0.0]), None);
        assert_eq!(Ratios::of(&[f64::NAN], &[1.0]), None);
        assert_eq!(Ratios::of(&[1.0], &[f64::INFINITY]), None);
    }
}
