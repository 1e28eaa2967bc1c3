//! A measured child process: spawned, waited for with `wait4`, and its
//! wall time, peak resident memory and CPU time read from the rusage the
//! kernel keeps for it, so nothing of this process (a generator, an
//! emulator client) is counted. Every benchmark measures through here.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

/// What `wait4` reports of a finished child process.
pub struct ChildUsage {
    /// From spawn to exit.
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
}

/// Spawns the command, waits for it with `wait4` (so the peak RSS and CPU
/// time are the child's own) and fails unless it exited with status 0. The
/// child is returned so a piped stdout can still be read; output that must
/// be read must fit in the pipe, as nothing reads it while waiting.
pub fn spawn_and_wait(command: &mut Command, what: &str) -> anyhow::Result<(std::process::Child, ChildUsage)> {
    let started = Instant::now();
    let child = command.spawn().with_context(|| format!("starting the {what} process"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if waited != pid {
        bail!("waiting for the {what} process failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the {what} process failed (wait status {status})");
    }
    let seconds_of = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    // ru_maxrss is in kilobytes on Linux.
    let usage = ChildUsage {
        seconds,
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
        cpu_seconds: seconds_of(usage.ru_utime) + seconds_of(usage.ru_stime),
    };
    Ok((child, usage))
}
