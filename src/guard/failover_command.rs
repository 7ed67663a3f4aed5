//! Redis 6.2's `FAILOVER [TO host port] [TIMEOUT ms] [FORCE]` and
//! `FAILOVER ABORT`, answered by leasegate for the controller or admin (a
//! control connection), for Kvrocks (which has no `FAILOVER`) and Redis
//! alike.
//!
//! The Gate parses the command, answers it (`+OK`, or Redis's own error
//! texts) and hands the request to the control plane
//! (`control::failover_command`), which carries it out with the guarantees
//! of `leasegate failover`: writes held here (not failed) while the target
//! catches up, the target promoted, this node made its replica, and the held
//! writes handed to it. Progress shows as `master_failover_state` in
//! `INFO leasegate` (`no-failover`, `waiting-for-sync`,
//! `failover-in-progress`), with Redis's names.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// What was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverAsk {
    /// `TO host port`: the replica to promote (its leasegate's address);
    /// `None`: the first one the node lists.
    pub to: Option<String>,
    /// `TIMEOUT ms`: how long to wait for the target to catch up.
    pub timeout: Option<Duration>,
    /// `FORCE`: promote after the timeout even if the target lags.
    pub force: bool,
}

/// Where a `FAILOVER` stands (Redis's `master_failover_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FailoverCommandState {
    NoFailover = 0,
    WaitingForSync = 1,
    FailoverInProgress = 2,
}

impl FailoverCommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverCommandState::NoFailover => "no-failover",
            FailoverCommandState::WaitingForSync => "waiting-for-sync",
            FailoverCommandState::FailoverInProgress => "failover-in-progress",
        }
    }

    fn from_u8(v: u8) -> FailoverCommandState {
        match v {
            1 => FailoverCommandState::WaitingForSync,
            2 => FailoverCommandState::FailoverInProgress,
            _ => FailoverCommandState::NoFailover,
        }
    }
}

/// The one `FAILOVER` of a leasegate.
#[derive(Debug, Default)]
pub struct FailoverCommand {
    state: AtomicU8,
    ask: Mutex<Option<FailoverAsk>>,
    requested: Notify,
    abort: AtomicBool,
}

impl FailoverCommand {
    pub fn state(&self) -> FailoverCommandState {
        FailoverCommandState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, state: FailoverCommandState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Starts a failover, unless one is under way (Redis's error text).
    pub fn start(&self, ask: FailoverAsk) -> Result<(), &'static str> {
        let mut slot = self.ask.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() || self.state() != FailoverCommandState::NoFailover {
            return Err("-ERR FAILOVER already in progress.\r\n");
        }
        self.abort.store(false, Ordering::Release);
        self.set_state(FailoverCommandState::WaitingForSync);
        *slot = Some(ask);
        self.requested.notify_one();
        Ok(())
    }

    /// `FAILOVER ABORT`: only while waiting for the target to catch up.
    pub fn abort(&self) -> Result<(), &'static str> {
        match self.state() {
            FailoverCommandState::NoFailover => Err("-ERR No failover in progress.\r\n"),
            FailoverCommandState::WaitingForSync => {
                self.abort.store(true, Ordering::Release);
                Ok(())
            }
            FailoverCommandState::FailoverInProgress => {
                Err("-ERR Failover is past the point where it can be aborted.\r\n")
            }
        }
    }

    /// Whether the failover under way was aborted.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// The next failover to carry out (the control plane waits here).
    pub async fn next(&self) -> FailoverAsk {
        loop {
            let notified = self.requested.notified();
            if let Some(ask) = self.ask.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return ask;
            }
            notified.await;
        }
    }
}

/// Parses `FAILOVER`'s arguments (after the name): `Ok(None)` for `ABORT`.
pub fn parse(args: &[&[u8]]) -> Result<Option<FailoverAsk>, &'static str> {
    const SYNTAX: &str = "-ERR syntax error\r\n";
    let text = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
    let mut ask = FailoverAsk {
        to: None,
        timeout: None,
        force: false,
    };
    let mut abort = false;
    let mut i = 0;
    while i < args.len() {
        let word = args[i].to_ascii_lowercase();
        match word.as_slice() {
            b"to" if i + 2 < args.len() && ask.to.is_none() => {
                let port = text(args[i + 2]);
                port.parse::<u16>()
                    .map_err(|_| "-ERR value is out of range\r\n")?;
                ask.to = Some(format!("{}:{port}", text(args[i + 1])));
                i += 3;
            }
            b"timeout" if i + 1 < args.len() && ask.timeout.is_none() => {
                let ms: u64 = text(args[i + 1])
                    .parse()
                    .map_err(|_| "-ERR value is not an integer or out of range\r\n")?;
                if ms == 0 {
                    return Err("-ERR FAILOVER timeout must be greater than 0\r\n");
                }
                ask.timeout = Some(Duration::from_millis(ms));
                i += 2;
            }
            b"force" if !ask.force => {
                ask.force = true;
                i += 1;
            }
            b"abort" if !abort => {
                abort = true;
                i += 1;
            }
            _ => return Err(SYNTAX),
        }
    }
    if abort {
        if ask.to.is_some() || ask.timeout.is_some() || ask.force {
            return Err("-ERR FAILOVER abort cannot be used with other options.\r\n");
        }
        return Ok(None);
    }
    if ask.force && (ask.to.is_none() || ask.timeout.is_none()) {
        return Err(
            "-ERR FAILOVER with force option requires both a timeout and target HOST and IP.\r\n",
        );
    }
    Ok(Some(ask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<u8>> {
        s.split_whitespace()
            .map(|w| w.as_bytes().to_vec())
            .collect()
    }

    fn p(s: &str) -> Result<Option<FailoverAsk>, &'static str> {
        let w = words(s);
        let refs: Vec<&[u8]> = w.iter().map(Vec::as_slice).collect();
        parse(&refs)
    }

    #[test]
    fn the_arguments_read_as_redis_reads_them() {
        assert_eq!(
            p("TO 10.0.0.2 7000 TIMEOUT 500 FORCE"),
            Ok(Some(FailoverAsk {
                to: Some("10.0.0.2:7000".into()),
                timeout: Some(Duration::from_millis(500)),
                force: true
            }))
        );
        assert_eq!(
            p(""),
            Ok(Some(FailoverAsk {
                to: None,
                timeout: None,
                force: false
            }))
        );
        assert_eq!(p("abort"), Ok(None));
        assert!(p("FORCE")
            .expect_err("force alone")
            .contains("requires both"));
        assert!(p("ABORT TIMEOUT 5")
            .expect_err("abort")
            .contains("abort cannot"));
        assert_eq!(p("TO host"), Err("-ERR syntax error\r\n"));
        assert_eq!(
            p("TIMEOUT x"),
            Err("-ERR value is not an integer or out of range\r\n")
        );
        assert_eq!(p("bogus"), Err("-ERR syntax error\r\n"));
    }

    #[test]
    fn one_failover_at_a_time_and_abort_only_while_waiting() {
        let f = FailoverCommand::default();
        assert_eq!(f.abort(), Err("-ERR No failover in progress.\r\n"));
        let ask = FailoverAsk {
            to: None,
            timeout: None,
            force: false,
        };
        f.start(ask.clone()).expect("starts");
        assert!(f.start(ask.clone()).is_err(), "already in progress");
        assert_eq!(f.state().as_str(), "waiting-for-sync");
        f.abort().expect("abort while waiting");
        assert!(f.aborted());
        f.set_state(FailoverCommandState::FailoverInProgress);
        assert!(f.abort().is_err());
    }
}
