//! The local `redis-server` process behind a [`RedisServer`](super::RedisServer): spawning it,
//! waiting until it serves, and the signals that break it (`SIGKILL`, `SIGSTOP`, `SIGCONT`).

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{PROBE_TIMEOUT, READY_LINE, log_tail, read_log};

/// What a sentinel writes to its log once it listens.
const SENTINEL_LINE: &str = "Sentinel ID is";
use crate::error::{Error, Result};

/// The local `redis-server` process and what is known about its state.
pub(super) struct Process {
    pub(super) binary: PathBuf,
    /// Arguments after the configuration file (`--sentinel`).
    args: Vec<&'static str>,
    state: Mutex<ProcState>,
}

#[derive(Default)]
struct ProcState {
    /// `None` once the process is killed, or found dead and reaped.
    child: Option<Child>,
    /// Whether we stopped it with `SIGSTOP`.
    paused: bool,
    /// After a kill: the port, bound by a socket that does not listen, until the next start.
    /// Connections to it are refused as to a dead server, and no other test's server can be
    /// given the port meanwhile (a client of the killed server would reach that one).
    held_port: Option<socket2::Socket>,
}

/// Binds `port` on the loopback address without listening on it; `None` if it cannot be
/// bound, and then the port is not held (the kill still stands).
///
/// Without `SO_REUSEADDR`: a server binds its port with it, and Linux lets two sockets share
/// a port only when both ask to. So no server can bind the held port, but the hold fails while
/// a connection lingers in `TIME_WAIT` there: the killed server's side of one (it closed
/// connections that were open when it was killed), or, where the kit's ports come from the
/// kernel's ephemeral range (see `free_port`), another process's client that had the port as
/// its own end before the server took it.
fn hold_port(port: u16) -> Option<socket2::Socket> {
    super::ports::bind_unshared(port).ok()
}

impl Process {
    pub(super) fn new(binary: PathBuf, args: Vec<&'static str>) -> Self {
        Self {
            binary,
            args,
            state: Mutex::new(ProcState::default()),
        }
    }

    /// Whether we stopped it with `SIGSTOP` (and have not resumed it).
    pub(super) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns the server and waits until it is ready; on failure nothing is left running.
    pub(super) async fn start(
        &self,
        conf_path: &Path,
        log_path: &Path,
        port: u16,
        tls: bool,
        timeout: Duration,
    ) -> Result<()> {
        let log_offset = self.spawn(conf_path, log_path)?;
        let ready = self
            .wait_ready(port, tls, log_path, log_offset, timeout)
            .await;
        match ready {
            Ok(()) => {
                tracing::debug!(port, pid = self.pid(), "test redis-server ready");
                Ok(())
            }
            Err(err) => {
                self.kill()?;
                Err(err)
            }
        }
    }

    /// Spawns `redis-server <conf>` with its output appended to the log, and returns where in
    /// the log this run's output starts.
    fn spawn(&self, conf_path: &Path, log_path: &Path) -> Result<u64> {
        let mut state = self.lock();
        debug_assert!(state.child.is_none(), "spawning over a live redis-server");
        // The server binds the port itself.
        state.held_port = None;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|err| Error::io(format!("opening {}", log_path.display()), err))?;
        let log_offset = log
            .metadata()
            .map_err(|err| Error::io(format!("reading {}", log_path.display()), err))?
            .len();
        let stderr = log
            .try_clone()
            .map_err(|err| Error::io("duplicating the log file handle", err))?;
        let child = Command::new(&self.binary)
            .arg(conf_path)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        state.child = Some(child);
        state.paused = false;
        Ok(log_offset)
    }

    /// Polls until the server answers. There is no event to await, so this is a loop with a
    /// short, growing delay; it ends early when the process exits.
    async fn wait_ready(
        &self,
        port: u16,
        tls: bool,
        log_path: &Path,
        log_offset: u64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            if let Some(status) = self.reap_if_exited()? {
                return Err(Error::NotReady {
                    reason: format!("redis-server exited ({status}) before it was ready"),
                    log_tail: log_tail(log_path, log_offset),
                });
            }
            // Ready when this run's log says so: a server (or a sentinel) that answers on the
            // port may be another test's, which took the port between `free_port` and this
            // bind (this process then exits with "Address already in use", and is started
            // again on another port). A TLS port cannot be probed without a TLS client, so TLS
            // servers are judged by their log alone; the others must answer too.
            let ready = read_log(log_path, log_offset).is_ok_and(|log| self.says_ready(&log))
                && (tls || answers_ping(port));
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    reason: format!("no answer on port {port} within {timeout:?}"),
                    log_tail: log_tail(log_path, log_offset),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Whether this run's log says the server is ready: its ready line, written once its
    /// listeners are up and its data is loaded, or for a sentinel (which Redis 7.0 does not
    /// give that line) its id, written once it listens.
    fn says_ready(&self, log: &str) -> bool {
        log.contains(READY_LINE)
            || (self.args.contains(&"--sentinel") && log.contains(SENTINEL_LINE))
    }

    /// Returns the exit status if the process has exited by itself, reaping it.
    fn reap_if_exited(&self) -> Result<Option<ExitStatus>> {
        let mut state = self.lock();
        let Some(child) = state.child.as_mut() else {
            return Err(Error::NotRunning {
                operation: "wait for readiness",
            });
        };
        let status = child
            .try_wait()
            .map_err(|err| Error::io("checking on redis-server", err))?;
        if status.is_some() {
            state.child = None;
            state.paused = false;
        }
        Ok(status)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        let mut state = self.lock();
        let child = state.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            // Exited (now reaped) or unknowable: either way, not a live process of ours.
            Ok(Some(_)) | Err(_) => {
                state.child = None;
                state.paused = false;
                None
            }
        }
    }

    pub(super) fn kill(&self) -> Result<()> {
        let mut state = self.lock();
        state.paused = false;
        let Some(mut child) = state.child.take() else {
            return Ok(());
        };
        // SIGKILL also ends a stopped (paused) process. An error here means the process has
        // already exited, which `wait` below handles.
        if let Err(err) = child.kill() {
            tracing::debug!(%err, "SIGKILL failed; the process has probably exited already");
        }
        child
            .wait()
            .map_err(|err| Error::io("reaping the killed redis-server", err))?;
        Ok(())
    }

    /// Holds `port` (see [`ProcState::held_port`]) while the process is dead.
    pub(super) fn hold_port(&self, port: u16) {
        let mut state = self.lock();
        if state.child.is_none() && state.held_port.is_none() {
            state.held_port = hold_port(port);
        }
    }

    #[cfg(unix)]
    pub(super) fn pause(&self) -> Result<()> {
        use nix::sys::signal::Signal;
        use nix::sys::wait::{WaitPidFlag, WaitStatus};

        let mut state = self.lock();
        if state.paused {
            return Ok(());
        }
        let pid = live_pid(&mut state, "pause")?;
        nix::sys::signal::kill(pid, Signal::SIGSTOP)
            .map_err(|errno| Error::io("sending SIGSTOP to redis-server", errno.into()))?;
        // Wait for the kernel to report the stop, so the server is frozen when we return.
        wait_for(&mut state, pid, WaitPidFlag::WUNTRACED, "pause", |status| {
            matches!(status, WaitStatus::Stopped(..))
        })?;
        state.paused = true;
        Ok(())
    }

    #[cfg(unix)]
    pub(super) fn resume(&self) -> Result<()> {
        use nix::sys::signal::Signal;
        use nix::sys::wait::{WaitPidFlag, WaitStatus};

        let mut state = self.lock();
        if !state.paused {
            return Ok(());
        }
        let pid = live_pid(&mut state, "resume")?;
        nix::sys::signal::kill(pid, Signal::SIGCONT)
            .map_err(|errno| Error::io("sending SIGCONT to redis-server", errno.into()))?;
        wait_for(
            &mut state,
            pid,
            WaitPidFlag::WCONTINUED,
            "resume",
            |status| matches!(status, WaitStatus::Continued(..)),
        )?;
        state.paused = false;
        Ok(())
    }

    #[cfg(not(unix))]
    pub(super) fn pause(&self) -> Result<()> {
        Err(Error::Unsupported(
            "pause needs SIGSTOP, which only Unix has".to_owned(),
        ))
    }

    #[cfg(not(unix))]
    pub(super) fn resume(&self) -> Result<()> {
        Err(Error::Unsupported(
            "resume needs SIGCONT, which only Unix has".to_owned(),
        ))
    }
}

/// The pid of the live child, or [`Error::NotRunning`].
#[cfg(unix)]
fn live_pid(state: &mut ProcState, operation: &'static str) -> Result<nix::unistd::Pid> {
    let Some(child) = state.child.as_mut() else {
        return Err(Error::NotRunning { operation });
    };
    if !matches!(child.try_wait(), Ok(None)) {
        state.child = None;
        state.paused = false;
        return Err(Error::NotRunning { operation });
    }
    let pid = i32::try_from(child.id())
        .map_err(|_| Error::Unsupported(format!("pid {} does not fit a pid_t", child.id())))?;
    Ok(nix::unistd::Pid::from_raw(pid))
}

/// Waits (`waitpid` with `flag`) until the child reports the state `wanted` accepts. If it
/// reports its death instead, it is now reaped, so the `Child` handle is forgotten.
#[cfg(unix)]
fn wait_for(
    state: &mut ProcState,
    pid: nix::unistd::Pid,
    flag: nix::sys::wait::WaitPidFlag,
    operation: &'static str,
    wanted: impl Fn(&nix::sys::wait::WaitStatus) -> bool,
) -> Result<()> {
    use nix::errno::Errno;
    use nix::sys::wait::WaitStatus;

    loop {
        match nix::sys::wait::waitpid(pid, Some(flag)) {
            Ok(status) if wanted(&status) => return Ok(()),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                state.child = None;
                state.paused = false;
                return Err(Error::NotRunning { operation });
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(Error::io(
                    format!("waiting for redis-server to {operation}"),
                    errno.into(),
                ));
            }
        }
    }
}

/// Sends a raw `PING` and reports whether the server answered. Any reply but `-LOADING` counts:
/// `-NOAUTH` from a password-protected server proves it is serving commands just as well.
///
/// Deliberately blocking, with short socket timeouts: a local connect and reply take well under
/// a millisecond, and tokio timers would fire early in tests that run with a paused clock.
fn answers_ping(port: u16) -> bool {
    let exchange = || -> std::io::Result<Vec<u8>> {
        let addr = (Ipv4Addr::LOCALHOST, port).into();
        let mut stream = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = Vec::new();
        let mut buf = [0_u8; 256];
        while !reply.contains(&b'\n') && reply.len() < 4096 {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok(reply)
    };
    match exchange() {
        Ok(reply) => match reply.first() {
            Some(b'+') => true,
            Some(b'-') => !reply.starts_with(b"-LOADING"),
            _ => false,
        },
        Err(_) => false,
    }
}
