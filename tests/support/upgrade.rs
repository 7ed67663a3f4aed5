//! Upgrading a running leasegate in place (SIGUSR2), as tests do it: the
//! signal, the wait for the successor, and the successors' cleanup.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{signal, Proxy, PATIENCE};

/// The successors started during a test, killed at its end.
#[derive(Default)]
pub struct Successors(pub Vec<u32>);

impl Drop for Successors {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The running `leasegate run -c <config> --take-over` processes.
pub fn successors_of(config: &Path) -> Vec<u32> {
    let config = config.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.contains(&config) && args.iter().any(|a| a == "--take-over") && alive(pid) {
            found.push(pid);
        }
    }
    found
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// Upgrades the leasegate running as `pid` (SIGUSR2; `None`: the one the
/// test started) and waits until it exited and its successor serves; the
/// successor's pid.
pub fn upgrade(pid: Option<u32>, proxy: &mut Proxy, successors: &mut Successors) -> u32 {
    let before = successors_of(&proxy.config_path);
    let started = pid.is_none();
    let pid = pid.unwrap_or_else(|| proxy.pid());
    signal(pid, "USR2");
    let deadline = Instant::now() + PATIENCE;
    if started {
        assert!(proxy.wait_exit().success(), "the predecessor exits 0");
    } else {
        while alive(pid) {
            assert!(Instant::now() < deadline, "leasegate {pid} did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let new: Vec<u32> = successors_of(&proxy.config_path)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one successor: {new:?}");
    successors.0.push(new[0]);
    new[0]
}

/// Clients that waited for their node across an upgrade, once it is back:
/// `connected` is owed one write's `+OK`, `new` its `AUTH`'s and one
/// write's.
#[allow(dead_code)]
pub fn waited_and_served(connected: &mut super::Client, new: &mut super::Client) {
    use super::Reply;
    assert_eq!(
        connected.read(),
        Reply::ok(),
        "the connected client's write"
    );
    assert_eq!(new.read(), Reply::ok(), "the new client's AUTH");
    assert_eq!(new.read(), Reply::ok(), "the new client's write");
}
