//! A capture of the `tracing` warnings and errors a test binary logs, so tests can assert that a
//! condition was reported (a warning at connect, a dropped write) without printing or parsing
//! stderr.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};

/// Warnings and errors logged so far (by every test of this binary) that contain `needle`.
pub fn logged(needle: &str) -> Vec<String> {
    lines()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The captured lines. A test that panicked while holding the lock leaves them intact, so the
/// poison is ignored.
fn lines() -> std::sync::MutexGuard<'static, Vec<String>> {
    LOGS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Installs, once per test binary, a global `tracing` subscriber that keeps every warning and
/// error (as `LEVEL message field=value...`). With `REDSTREAM_TEST_LOG=debug` (or `info`,
/// `trace`) set, it also prints events of that level and above to stderr.
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let print = std::env::var("REDSTREAM_TEST_LOG")
            .ok()
            .and_then(|level| level.parse::<Level>().ok());
        let _ = tracing::subscriber::set_global_default(Capture { print });
    });
}

struct Capture {
    print: Option<Level>,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let threshold = self.print.map_or(Level::WARN, |p| p.max(Level::WARN));
        *metadata.level() <= threshold
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let level = *event.metadata().level();
        let mut line = Line(format!("{level} {}:", event.metadata().target()));
        event.record(&mut line);
        if self.print.is_some_and(|p| level <= p) {
            eprintln!("{}", line.0);
        }
        if level <= Level::WARN {
            lines().push(line.0);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
