//! Small `/proc` helpers: is a pid alive, is a process with this name running.

use std::path::Path;

/// The state letter of a process (`R`, `S`, `Z`, ...) from `/proc/PID/stat`, or `None`
/// when there is no such process.
pub fn pid_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S ...": comm may contain spaces and parentheses, so look after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True when the process exists and is neither a zombie nor dead.
pub fn pid_alive(pid: u32) -> bool {
    matches!(pid_state(pid), Some(s) if s != 'Z' && s != 'X' && s != 'x')
}

/// Read a pid file: `Ok(None)` when it does not exist, `Err` when it cannot be read or
/// does not start with a positive number.
pub fn read_pid_file(path: &Path) -> Result<Option<u32>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read pid file {}: {e}", path.display())),
    };
    match text.split_whitespace().next().map(str::parse::<u32>) {
        Some(Ok(pid)) if pid > 0 => Ok(Some(pid)),
        _ => Err(format!(
            "pid file {} does not hold a process id (found {:?})",
            path.display(),
            text.chars().take(40).collect::<String>()
        )),
    }
}

/// The pids of live processes whose name (`/proc/PID/comm`) or the basename of whose
/// `argv[0]` equals `name`. `comm` is truncated to 15 bytes by the kernel, so longer
/// names are matched through `argv[0]`.
pub fn find_by_name(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        let comm_matches = std::fs::read_to_string(base.join("comm"))
            .map(|c| c.trim_end_matches('\n') == name)
            .unwrap_or(false);
        let argv0_matches = || {
            std::fs::read(base.join("cmdline"))
                .ok()
                .and_then(|c| {
                    let arg0 = c.split(|b| *b == 0).next()?.to_vec();
                    let arg0 = String::from_utf8(arg0).ok()?;
                    let basename = arg0.rsplit('/').next()?.to_string();
                    Some(basename == name)
                })
                .unwrap_or(false)
        };
        if (comm_matches || argv0_matches()) && pid_alive(pid) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        assert_eq!(read_pid_file(&p), Ok(None));
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pid_file(&p), Ok(Some(1234)));
        std::fs::write(&p, "garbage").unwrap();
        assert!(read_pid_file(&p).is_err());
        std::fs::write(&p, "0").unwrap();
        assert!(read_pid_file(&p).is_err());
    }
}
