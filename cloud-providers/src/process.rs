//! Running scripts and helper programs on behalf of drivers and probes.
//!
//! Every command runs in a process group of its own (its pid is the group id), with
//! stdin from `/dev/null` and its output captured through pipes, bounded to the last
//! few KiB. The timeout covers the command's main process: when it expires the whole
//! group gets SIGTERM, then, after [`KILL_GRACE`], SIGKILL, and the call returns
//! [`ProviderError::Timeout`].
//!
//! A command that exits in time is *not* killed, and neither is anything it left
//! running in the background: an `exec` resource's start script typically runs
//! `myapp &` and exits 0, and `myapp` must survive. Such a background process inherits
//! the script's stdout and stderr, so the pipes never reach end-of-file while it runs;
//! [`execute`] therefore waits for the pipes at most [`PIPE_GRACE`] after the main
//! process exited, returns what it has, and leaves a small task draining (and
//! discarding) the rest so the background process never gets `SIGPIPE` while the
//! agent runs. Scripts should still redirect their daemons' output
//! (`myapp >>/var/log/myapp.log 2>&1 &`), or the caller can use [`OutputMode::Discard`].
//!
//! Commands do not inherit the agent's environment (which may hold credentials): they
//! get [`SCRIPT_PATH`] as `PATH`, `HOME=/`, `LANG=C.UTF-8`, the variables the agent
//! names with [`set_env_passthrough`] (`[agent] script_env`) and the command's own
//! (`BATON_*`).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::ProviderError;

/// How much of stderr (and, by default, stdout) is kept: the last this many bytes.
pub const OUTPUT_TAIL: usize = 4096;
/// After SIGTERM on timeout, how long the group gets before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// After the main process exited, how long to wait for its output pipes to close.
pub const PIPE_GRACE: Duration = Duration::from_millis(200);

/// `PATH` of every command (unless `[agent] script_env` passes the agent's through).
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static PASSTHROUGH: OnceLock<Vec<String>> = OnceLock::new();

/// Names of the agent's environment variables that commands get too (`[agent]
/// script_env`). Set once, at start; returns `false` if it was set already.
pub fn set_env_passthrough(names: Vec<String>) -> bool {
    PASSTHROUGH.set(names).is_ok()
}

/// The environment every command starts from (before its own variables).
pub fn base_env() -> Vec<(String, std::ffi::OsString)> {
    base_env_with(PASSTHROUGH.get().map_or(&[][..], Vec::as_slice))
}

fn base_env_with(passthrough: &[String]) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = vec![
        ("PATH".into(), SCRIPT_PATH.into()),
        ("HOME".into(), "/".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for name in passthrough {
        if let Some(v) = std::env::var_os(name) {
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), v));
        }
    }
    env
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A shell command line, run as `/bin/sh -c LINE`.
    Shell(String),
    /// A program (looked up in `PATH`) and its arguments, no shell involved.
    Argv { program: String, args: Vec<String> },
}

/// What to do with the command's stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Capture both through pipes (the last [`OUTPUT_TAIL`] bytes of stderr, and of
    /// stdout up to [`CommandSpec::stdout_limit`]).
    #[default]
    Capture,
    /// Send both to `/dev/null`: nothing is captured, nothing can ever block.
    Discard,
}

/// One command to run, with everything [`execute`] needs.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// User-visible name used in errors, e.g. "start command of exec resource `web`".
    pub what: String,
    pub program: Program,
    /// Variables added to the minimal environment ([`base_env`]).
    pub env: Vec<(String, String)>,
    /// Working directory (default: the agent's).
    pub dir: Option<PathBuf>,
    /// Deadline for the main process.
    pub timeout: Duration,
    pub output: OutputMode,
    /// How much of stdout to keep (the last this many bytes).
    pub stdout_limit: usize,
    /// Added to the error when the program is not installed, e.g. "install iproute2".
    pub missing_hint: Option<String>,
}

impl CommandSpec {
    /// A shell command line (`/bin/sh -c LINE`).
    pub fn shell(what: impl Into<String>, line: impl Into<String>, timeout: Duration) -> Self {
        Self::new(what.into(), Program::Shell(line.into()), timeout)
    }

    /// A program and its arguments, without a shell.
    pub fn argv<I, S>(
        what: impl Into<String>,
        program: impl Into<String>,
        args: I,
        timeout: Duration,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let program = Program::Argv {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        };
        Self::new(what.into(), program, timeout)
    }

    fn new(what: String, program: Program, timeout: Duration) -> Self {
        CommandSpec {
            what,
            program,
            env: Vec::new(),
            dir: None,
            timeout,
            output: OutputMode::Capture,
            stdout_limit: OUTPUT_TAIL,
            missing_hint: None,
        }
    }

    /// Add environment variables.
    pub fn with_env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Set (or clear) the working directory.
    pub fn with_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.dir = dir;
        self
    }

    pub fn with_output(mut self, output: OutputMode) -> Self {
        self.output = output;
        self
    }

    /// Keep up to this many bytes of stdout (the default is [`OUTPUT_TAIL`]; commands
    /// whose output is parsed, like `ip -j addr`, need more).
    pub fn with_stdout_limit(mut self, limit: usize) -> Self {
        self.stdout_limit = limit;
        self
    }

    /// What to tell the user when the program is not installed.
    pub fn with_missing_hint(mut self, hint: impl Into<String>) -> Self {
        self.missing_hint = Some(hint.into());
        self
    }
}

/// What a command that ran to completion left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status; 128 + N when killed by signal N.
    pub status: i32,
    /// The captured stdout (its last [`CommandSpec::stdout_limit`] bytes).
    pub stdout: String,
    /// The captured stderr (its last [`OUTPUT_TAIL`] bytes).
    pub stderr: String,
    /// True when something the command left running still held its output open when
    /// the call returned (output written after that is discarded).
    pub output_detached: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Text explaining a failure: stderr, or stdout when stderr is empty.
    pub fn failure_text(&self) -> String {
        let err = self.stderr.trim();
        if !err.is_empty() {
            return err.to_string();
        }
        let out = self.stdout.trim();
        if !out.is_empty() {
            return out.to_string();
        }
        "(no output)".to_string()
    }

    /// The last non-empty line of stderr (or of stdout when stderr is empty).
    pub fn last_line(&self) -> Option<String> {
        last_line(&self.stderr).or_else(|| last_line(&self.stdout))
    }
}

fn last_line(s: &str) -> Option<String> {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Run a command; a non-zero exit is an error ([`ProviderError::CommandFailed`], whose
/// `stderr` is the captured stderr, or stdout when stderr was empty).
pub async fn run_command(spec: &CommandSpec) -> Result<Output, ProviderError> {
    let out = execute(spec).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(ProviderError::CommandFailed {
            what: spec.what.clone(),
            status: out.status,
            stderr: out.failure_text(),
        })
    }
}

/// Run a command and return its output whatever its exit status. Errors only when it
/// cannot be started ([`ProviderError::Spawn`]) or does not finish in time
/// ([`ProviderError::Timeout`], after killing its process group).
pub async fn execute(spec: &CommandSpec) -> Result<Output, ProviderError> {
    if let Some(dir) = &spec.dir {
        let is_dir = tokio::fs::metadata(dir)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !is_dir {
            return Err(ProviderError::Spawn {
                what: spec.what.clone(),
                reason: format!(
                    "working directory {} does not exist or is not a directory",
                    dir.display()
                ),
            });
        }
    }

    let mut cmd = match &spec.program {
        Program::Shell(line) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        Program::Argv { program, args } => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    // Not the agent's environment: a fixed minimal one, then the command's own.
    cmd.env_clear();
    cmd.envs(base_env());
    cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = &spec.dir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null());
    match spec.output {
        OutputMode::Capture => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        OutputMode::Discard => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    cmd.process_group(0);
    cmd.kill_on_drop(false);

    let mut child = cmd.spawn().map_err(|e| spawn_error(spec, &e))?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| ProviderError::Spawn {
            what: spec.what.clone(),
            reason: "the process has no pid".into(),
        })?;
    // From here on, if this future is dropped (the caller gave up), the group dies.
    let mut guard = GroupGuard { pgid: Some(pgid) };

    let stdout_buf = Arc::new(Mutex::new(Tail::new(spec.stdout_limit)));
    let stderr_buf = Arc::new(Mutex::new(Tail::new(OUTPUT_TAIL)));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(drain(out, stdout_buf.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(drain(err, stderr_buf.clone())));
    }

    let status = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            terminate_group(pgid, &mut child).await;
            guard.disarm();
            return Err(ProviderError::Other(format!(
                "waiting for {} failed: {e}",
                spec.what
            )));
        }
        Err(_) => {
            terminate_group(pgid, &mut child).await;
            guard.disarm();
            tracing::warn!(what = %spec.what, timeout_ms = duration_ms(spec.timeout),
                "command timed out; its process group was killed");
            return Err(ProviderError::Timeout(duration_ms(spec.timeout)));
        }
    };
    // The main process exited by itself: whatever it left behind is not ours to kill.
    guard.disarm();

    let readers_done = tokio::time::timeout(PIPE_GRACE, async {
        for r in &mut readers {
            let _ = r.await;
        }
    })
    .await
    .is_ok();
    // If not done, dropping the handles detaches the reader tasks: they keep draining
    // until the background holders of the pipes exit.
    drop(readers);
    if !readers_done {
        tracing::debug!(what = %spec.what,
            "a background process still holds the command's output open; not waiting for it");
    }

    let status = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    };
    Ok(Output {
        status,
        stdout: snapshot(&stdout_buf),
        stderr: snapshot(&stderr_buf),
        output_detached: !readers_done,
    })
}

/// Milliseconds of a duration, saturating.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Find an executable in `PATH`, like `command -v`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

fn spawn_error(spec: &CommandSpec, e: &std::io::Error) -> ProviderError {
    let reason = match (&spec.program, e.kind()) {
        (Program::Argv { program, .. }, std::io::ErrorKind::NotFound) => {
            let mut r = format!("`{program}` was not found in PATH");
            if let Some(hint) = &spec.missing_hint {
                r.push_str(": ");
                r.push_str(hint);
            }
            r
        }
        (Program::Shell(_), _) => format!("/bin/sh: {e}"),
        (Program::Argv { program, .. }, _) => format!("{program}: {e}"),
    };
    ProviderError::Spawn {
        what: spec.what.clone(),
        reason,
    }
}

/// SIGTERM the group, give it [`KILL_GRACE`], then SIGKILL it; reap the main process.
async fn terminate_group(pgid: Pid, child: &mut Child) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = crate::clock::now() + KILL_GRACE;
    loop {
        let leader_gone = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
        // Signal 0: is any process of the group left?
        if leader_gone && killpg(pgid, None).is_err() {
            return;
        }
        if crate::clock::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
}

/// Kills the process group when dropped while armed (the caller's future was dropped).
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// The last `cap` bytes written to it.
#[derive(Debug)]
struct Tail {
    cap: usize,
    buf: Vec<u8>,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            cap,
            buf: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Trim in batches so a chatty command does not make this quadratic.
        if self.buf.len() > self.cap.saturating_mul(2).max(8192) {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }

    fn text(&self) -> String {
        let start = self.buf.len().saturating_sub(self.cap);
        String::from_utf8_lossy(&self.buf[start..]).into_owned()
    }
}

fn lock_tail(t: &Mutex<Tail>) -> std::sync::MutexGuard<'_, Tail> {
    // A poisoned lock only means a reader panicked mid-push; the bytes are still fine.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn snapshot(t: &Mutex<Tail>) -> String {
    lock_tail(t).text()
}

async fn drain<R: AsyncRead + Unpin>(mut r: R, into: Arc<Mutex<Tail>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => lock_tail(&into).push(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        for _ in 0..5000 {
            t.push(b"abc");
        }
        t.push(b"xyz");
        assert_eq!(t.text(), "cxyz");
        assert!(t.buf.len() <= 8192 + 3);
    }

    #[test]
    fn last_line_skips_blank() {
        let o = Output {
            status: 1,
            stdout: "out\n".into(),
            stderr: "one\ntwo\n\n".into(),
            output_detached: false,
        };
        assert_eq!(o.last_line().as_deref(), Some("two"));
        assert_eq!(o.failure_text(), "one\ntwo");
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn commands_see_only_the_minimal_environment() {
        // A variable of the agent's own environment (cargo sets this one for tests).
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let spec = CommandSpec::shell("env dump", "env", Duration::from_secs(10))
            .with_env([("BATON_GROUP", "g1")]);
        let out = run_command(&spec).await.unwrap();
        let mut names: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            // The shell itself may add these.
            .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["BATON_GROUP", "HOME", "LANG", "PATH"],
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains(&format!("PATH={SCRIPT_PATH}\n")));
        assert!(!out.stdout.contains("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn passthrough_adds_named_variables_of_the_agent() {
        let agent_dir = std::env::var_os("CARGO_MANIFEST_DIR");
        assert!(agent_dir.is_some());
        let env = base_env_with(&["CARGO_MANIFEST_DIR".into(), "NO_SUCH_VAR_BATON".into()]);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "LANG", "CARGO_MANIFEST_DIR"]);
        assert_eq!(Some(env[3].1.clone()), agent_dir);
        // Passing PATH through replaces the fixed one.
        let env = base_env_with(&["PATH".into()]);
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert_eq!(Some(env[2].1.clone()), std::env::var_os("PATH"));
    }

    #[test]
    fn finds_sh() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-program-baton").is_none());
    }
}
