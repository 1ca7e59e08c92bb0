//! The driver of the `instructions` benches: a bench binary that runs itself under
//! `valgrind --tool=callgrind`, one case per child, and compares the figures it gets with those
//! recorded in the crate's `benches/instructions.baseline`.
//!
//! Instruction counts do not move with the load of the machine, so they are the figure to
//! compare across commits where throughput moves by 10-30% from run to run. Each bench keeps its
//! cases, its child workloads and its table; this module holds what they share:
//!
//! - [`Run::from_args`] tells the driver (`cargo bench ... -- [--check] [--record]`) from a
//!   child (`<bench binary> --case <name> <args>...`);
//! - [`Callgrind::count`] runs one case in a child under callgrind and returns the instructions
//!   it executed, keeping the profile in [`KEEP_DIR_VAR`] when that is set;
//! - [`Callgrind::count_cache`] does the same with callgrind's cache simulation on, for a fixed
//!   cache, and also returns the first-level data cache misses;
//! - [`per_unit`] turns a short and a long run into the cost of one unit (event, operation,
//!   key), with the process's start, the runtime and the connection cancelled out;
//! - [`Baseline`] reads and writes `benches/instructions.baseline` (`<case> <figure>` per line,
//!   `#` comments): `--record` rewrites it and `--check` fails when a figure grew by more than
//!   [`TOLERANCE`].
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! use redstream_testkit::callgrind::{Baseline, Callgrind, Run, per_unit};
//!
//! fn main() -> ExitCode {
//!     let flags = match Run::from_args() {
//!         Run::Child { case, args } => {
//!             // ... run `case` with `args` (the bench's own workload), then exit ...
//!             let _ = (case, args);
//!             return ExitCode::SUCCESS;
//!         }
//!         Run::Driver(flags) => flags,
//!     };
//!     let callgrind = Callgrind::new();
//!     let short = callgrind.count("get-200", "get", &["200"]);
//!     let long = callgrind.count("get-1200", "get", &["1200"]);
//!     let ours = [("get", per_unit(short, long, 1_000))];
//!     Baseline::new(
//!         env!("CARGO_MANIFEST_DIR"),
//!         "# Instructions per operation, recorded by `-- --record`.\n",
//!     )
//!     .apply(&ours, flags)
//! }
//! ```
//!
//! Everything here panics with a message saying what failed (valgrind missing, a child that
//! crashed, an unwritable baseline): a benchmark stops loudly.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The environment variable naming a directory where each run's profile is kept
/// (`<dir>/<profile>.out`), for `callgrind_annotate --inclusive=yes`. Without it the profiles
/// go to a temporary directory and are deleted.
pub const KEEP_DIR_VAR: &str = "REDSTREAM_CALLGRIND_DIR";

/// The growth over the recorded figure that `--check` refuses: 10%.
pub const TOLERANCE: f64 = 0.10;

/// The argument that starts a child's case: `<bench binary> --case <name> <args>...`.
const CASE_FLAG: &str = "--case";

/// The baseline file, relative to the crate's manifest directory.
const BASELINE_FILE: &str = "benches/instructions.baseline";

/// What the driver was asked to do with the recorded figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--check`: compare the figures with the recorded ones and fail on growth.
    pub check: bool,
    /// `--record`: rewrite the baseline file with the figures.
    pub record: bool,
}

/// What this run of the bench binary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// A child started by [`Callgrind::count`]: run `case` with `args`, under callgrind.
    Child {
        /// The case's name, the argument after `--case`.
        case: String,
        /// The case's arguments, those after its name.
        args: Vec<String>,
    },
    /// The driver, started by `cargo bench`: count every case and print the table.
    Driver(Flags),
}

impl Run {
    /// Reads this process's command line.
    ///
    /// # Panics
    ///
    /// When `--case` is not followed by a case name.
    #[must_use]
    pub fn from_args() -> Self {
        Self::parse(std::env::args().skip(1))
    }

    /// Reads a command line (without the program's name).
    fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let args: Vec<String> = args.into_iter().collect();
        if let Some(at) = args.iter().position(|arg| arg == CASE_FLAG) {
            let mut rest = args.into_iter().skip(at + 1);
            let case = rest
                .next()
                .unwrap_or_else(|| panic!("{CASE_FLAG} needs a case name"));
            return Self::Child {
                case,
                args: rest.collect(),
            };
        }
        Self::Driver(Flags {
            check: args.iter().any(|arg| arg == "--check"),
            record: args.iter().any(|arg| arg == "--record"),
        })
    }
}

/// Runs cases of this bench binary under callgrind, with a scratch directory for the profiles
/// that are not kept (deleted on drop).
#[derive(Debug)]
pub struct Callgrind {
    scratch: tempfile::TempDir,
}

impl Callgrind {
    /// A runner with a fresh scratch directory.
    ///
    /// # Panics
    ///
    /// When the temporary directory cannot be created.
    #[must_use]
    pub fn new() -> Self {
        let scratch = tempfile::Builder::new()
            .prefix("redstream-callgrind")
            .tempdir()
            .unwrap_or_else(|err| panic!("cannot create a directory for callgrind: {err}"));
        Self { scratch }
    }

    /// The instructions callgrind counted for one run of `<this binary> --case <case> <args>...`.
    ///
    /// The profile is written to `<`[`KEEP_DIR_VAR`]`>/<profile>.out` when that variable is
    /// set (so `profile` should name the case and its size: `consume-1200`), and to the scratch
    /// directory otherwise. The total is the `Collected :` line callgrind writes to stderr.
    ///
    /// # Panics
    ///
    /// When valgrind cannot be started, the child fails (its stderr is in the message), or
    /// callgrind reports no total.
    #[must_use]
    pub fn count(&self, profile: &str, case: &str, args: &[impl AsRef<OsStr>]) -> u64 {
        let stderr = self.run(profile, case, args, &[]);
        collected(&stderr)
            .and_then(|totals| totals.first().copied())
            .unwrap_or_else(|| panic!("no 'Collected' line from callgrind:\n{stderr}"))
    }

    /// [`count`](Self::count) with callgrind's cache simulation on, for a fixed cache (a
    /// 32 KiB, 8-way first-level data cache and an 8 MiB, 16-way last level, 64-byte lines:
    /// the same figures on any machine): the instructions and the first-level data cache
    /// misses, reads and writes, of the run. The misses show what instruction counts cannot:
    /// how much memory a workload touches, such as futures spread over many cache lines.
    ///
    /// # Panics
    ///
    /// As for [`count`](Self::count), or when callgrind's totals lack an event.
    #[must_use]
    pub fn count_cache(&self, profile: &str, case: &str, args: &[impl AsRef<OsStr>]) -> CacheCount {
        let stderr = self.run(
            profile,
            case,
            args,
            &[
                "--cache-sim=yes",
                "--I1=32768,8,64",
                "--D1=32768,8,64",
                "--LL=8388608,16,64",
            ],
        );
        cache_count(&stderr)
            .unwrap_or_else(|| panic!("no cache totals in callgrind's report:\n{stderr}"))
    }

    /// Runs one case under callgrind with `options`; its stderr.
    fn run(
        &self,
        profile: &str,
        case: &str,
        args: &[impl AsRef<OsStr>],
        options: &[&str],
    ) -> String {
        let out = match std::env::var_os(KEEP_DIR_VAR) {
            Some(dir) => Path::new(&dir).join(format!("{profile}.out")),
            None => self.scratch.path().join("callgrind.out"),
        };
        let exe = std::env::current_exe().unwrap_or_else(|err| {
            panic!("cannot find the bench binary to run under valgrind: {err}")
        });
        let output = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg("--dump-instr=no")
            .arg("--compress-strings=no")
            .args(options)
            .arg(exe)
            .arg(CASE_FLAG)
            .arg(case)
            .args(args)
            .output()
            .unwrap_or_else(|err| {
                panic!("valgrind could not be started (apt-get install valgrind): {err}")
            });
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "{case} under callgrind failed:\n{stderr}"
        );
        stderr
    }
}

/// What [`Callgrind::count_cache`] counted in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCount {
    /// Instructions executed.
    pub instructions: u64,
    /// First-level data cache misses, reads and writes.
    pub d1_misses: u64,
}

impl Default for Callgrind {
    fn default() -> Self {
        Self::new()
    }
}

/// The totals of callgrind's `==pid== Collected : <n>...` line, one per event.
fn collected(stderr: &str) -> Option<Vec<u64>> {
    stderr.lines().find_map(|line| {
        let (_, totals) = line.split_once("Collected :")?;
        totals.split_whitespace().map(|n| n.parse().ok()).collect()
    })
}

/// The instructions and first-level data misses of a run with the cache simulation on: the
/// `Collected :` totals, named by the `Events :` line (`Ir Dr Dw I1mr D1mr D1mw ...`).
fn cache_count(stderr: &str) -> Option<CacheCount> {
    let events: Vec<&str> = stderr.lines().find_map(|line| {
        let (_, names) = line.split_once("Events    :")?;
        Some(names.split_whitespace().collect())
    })?;
    let totals = collected(stderr)?;
    let event = |name: &str| {
        let at = events.iter().position(|e| *e == name)?;
        totals.get(at).copied()
    };
    Some(CacheCount {
        instructions: event("Ir")?,
        d1_misses: event("D1mr")? + event("D1mw")?,
    })
}

/// The cost of one unit: the difference of a long run's and a short run's totals over the
/// `units` (events, operations, keys) the long run did more. Whatever both runs do once (the
/// process's start, the runtime, the connection) cancels out.
#[must_use]
pub fn per_unit(short: u64, long: u64, units: u64) -> f64 {
    (long as f64 - short as f64) / units as f64
}

/// One figure next to the recorded one.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The case's name, as in the baseline file.
    pub case: String,
    /// This run's figure.
    pub figure: f64,
    /// The recorded figure, if the baseline file has one for `case`.
    pub recorded: Option<f64>,
}

impl Comparison {
    /// The growth over the recorded figure (`0.05` for 5% more), if there is one.
    #[must_use]
    pub fn growth(&self) -> Option<f64> {
        self.recorded.map(|before| self.figure / before - 1.0)
    }

    /// Whether `--check` fails on this figure: it grew by more than [`TOLERANCE`], or has no
    /// recorded figure.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.growth().is_none_or(|growth| growth > TOLERANCE)
    }

    /// The report line, with the case's name padded to `width`:
    /// `check get            16390 against recorded 16384: +0.0% ok` (or `FAIL`); `None` when
    /// there is no recorded figure.
    #[must_use]
    pub fn line(&self, width: usize) -> Option<String> {
        let (before, growth) = (self.recorded?, self.growth()?);
        let verdict = if self.failed() { "FAIL" } else { "ok" };
        Some(format!(
            "check {:<width$} {:.0} against recorded {before:.0}: {:+.1}% {verdict}",
            self.case,
            self.figure,
            growth * 100.0
        ))
    }
}

/// A crate's `benches/instructions.baseline`: `<case> <figure>` per line (the case's name may
/// contain spaces), `#` comments.
#[derive(Debug, Clone)]
pub struct Baseline {
    path: PathBuf,
    header: String,
    width: usize,
}

impl Baseline {
    /// The baseline of the crate at `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`).
    /// `header` is the comment block `--record` writes first: `#` lines, each ending with `\n`.
    #[must_use]
    pub fn new(manifest_dir: impl AsRef<Path>, header: impl Into<String>) -> Self {
        Self {
            path: manifest_dir.as_ref().join(BASELINE_FILE),
            header: header.into(),
            width: 14,
        }
    }

    /// Pads the case's name in `--check`'s lines to `width` characters (14 by default).
    #[must_use]
    pub fn with_name_width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    /// The baseline file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded figures, in the file's order; none when the file does not exist. Lines
    /// whose figure is not a number are skipped.
    ///
    /// # Panics
    ///
    /// When the file exists but cannot be read.
    #[must_use]
    pub fn read(&self) -> Vec<(String, f64)> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => String::new(),
            Err(err) => panic!("cannot read {}: {err}", self.path.display()),
        };
        parse(&text)
    }

    /// Rewrites the file with the header and `ours` (figures rounded to whole instructions),
    /// and prints `recorded in <path>`.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    #[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
    pub fn record(&self, ours: &[(&str, f64)]) {
        let mut text = self.header.clone();
        for (case, figure) in ours {
            text.push_str(&format!("{case} {figure:.0}\n"));
        }
        std::fs::write(&self.path, text)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", self.path.display()));
        println!("recorded in {}", self.path.display());
    }

    /// Each of `ours` next to its recorded figure, in the order of `ours`.
    #[must_use]
    pub fn compare(&self, ours: &[(&str, f64)]) -> Vec<Comparison> {
        let recorded = self.read();
        ours.iter()
            .map(|&(case, figure)| Comparison {
                case: case.to_owned(),
                figure,
                recorded: recorded
                    .iter()
                    .find(|(name, _)| name == case)
                    .map(|&(_, before)| before),
            })
            .collect()
    }

    /// Prints a `check` line per figure (see [`Comparison::line`]; `check <case>: no recorded
    /// figure in <path>` for a case the file lacks) and returns whether all passed.
    #[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
    #[must_use]
    pub fn check(&self, ours: &[(&str, f64)]) -> bool {
        let mut passed = true;
        for comparison in self.compare(ours) {
            match comparison.line(self.width) {
                Some(line) => println!("{line}"),
                None => println!(
                    "check {}: no recorded figure in {}",
                    comparison.case,
                    self.path.display()
                ),
            }
            passed &= !comparison.failed();
        }
        passed
    }

    /// What the driver's flags ask: [`record`](Self::record) with `--record`, then
    /// [`check`](Self::check) with `--check`, failing when a figure did not pass.
    #[must_use]
    pub fn apply(&self, ours: &[(&str, f64)], flags: Flags) -> ExitCode {
        if flags.record {
            self.record(ours);
        }
        if flags.check && !self.check(ours) {
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    }
}

/// The figures of a baseline file's text.
fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (case, figure) = line.rsplit_once(' ')?;
            Some((case.trim().to_owned(), figure.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn tells_a_child_from_the_driver() {
        assert_eq!(
            Run::parse(args("--case consume 1200 redis://x i3")),
            Run::Child {
                case: "consume".into(),
                args: args("1200 redis://x i3"),
            }
        );
        assert_eq!(
            Run::parse(args("--bench --check")),
            Run::Driver(Flags {
                check: true,
                record: false
            })
        );
        assert_eq!(Run::parse(args("--bench")), Run::Driver(Flags::default()));
    }

    #[test]
    fn reads_the_collected_total() {
        let stderr =
            "==12== Events    : Ir\n==12== Collected : 1234567\n==12== I   refs: 1,234,567\n";
        assert_eq!(collected(stderr), Some(vec![1_234_567]));
        assert_eq!(collected("==12== error\n"), None);
    }

    #[test]
    fn reads_the_cache_totals_by_their_names() {
        let stderr = "==9== Events    : Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n\
                      ==9== Collected : 7889053 2145313 1694232 204463 33499 21304 5468 4674 6318\n\
                      ==9== D1  misses:       54,803  (   33,499 rd +    21,304 wr)\n";
        assert_eq!(
            cache_count(stderr),
            Some(CacheCount {
                instructions: 7_889_053,
                d1_misses: 33_499 + 21_304,
            })
        );
        // Without the simulation there are no miss counts to read.
        let plain = "==12== Events    : Ir\n==12== Collected : 1234567\n";
        assert_eq!(cache_count(plain), None);
        // A total that is not a number is no total.
        assert_eq!(collected("==12== Collected : 12 x\n"), None);
    }

    #[test]
    fn the_difference_per_unit() {
        assert!((per_unit(1_000, 6_000, 1_000) - 5.0).abs() < f64::EPSILON);
    }

    #[test]
    fn parses_names_with_spaces_and_skips_comments() {
        let text = "# comment\n\nbatch 100, exactly-once on 11468\nget 16384\nbad x\n";
        assert_eq!(
            parse(text),
            vec![
                ("batch 100, exactly-once on".to_owned(), 11_468.0),
                ("get".to_owned(), 16_384.0),
            ]
        );
    }

    #[test]
    fn records_then_compares() {
        let dir = tempfile::tempdir().unwrap();
        let baseline = Baseline::new(dir.path(), "# header\n");
        std::fs::create_dir(dir.path().join("benches")).unwrap();
        assert!(baseline.read().is_empty());
        baseline.record(&[("get", 100.4), ("put many", 200.0)]);
        assert_eq!(
            std::fs::read_to_string(baseline.path()).unwrap(),
            "# header\nget 100\nput many 200\n"
        );
        let compared = baseline.compare(&[("get", 109.0), ("put many", 221.0), ("new", 1.0)]);
        assert!(!compared[0].failed(), "{compared:?}");
        assert_eq!(
            compared[0].line(6).unwrap(),
            "check get    109 against recorded 100: +9.0% ok"
        );
        assert!(compared[1].failed());
        assert!(compared[1].line(0).unwrap().ends_with("+10.5% FAIL"));
        assert_eq!(compared[2].recorded, None);
        assert!(compared[2].failed());
        assert_eq!(compared[2].line(14), None);
        assert!(baseline.check(&[("get", 90.0)]));
        assert!(!baseline.check(&[("new", 1.0)]));
    }
}
