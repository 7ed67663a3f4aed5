//! Client load for failover and split-brain tests: writer threads that SET
//! unique keys through a port until stopped, recording every acknowledged
//! key (and when) and every error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Client, Reply};

/// What the writers saw, once stopped.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Acknowledged keys, with the instant of their acknowledgement.
    pub acked: Vec<(Instant, String)>,
    /// `key: reply` for every request that was not acknowledged.
    pub errors: Vec<String>,
}

impl Outcome {
    pub fn acked_keys(&self) -> impl Iterator<Item = &String> {
        self.acked.iter().map(|(_, k)| k)
    }

    /// The longest time between two acknowledgements (over all writers):
    /// with one writer, the longest write plus its pace.
    pub fn longest_gap(&self) -> Duration {
        let mut at: Vec<Instant> = self.acked.iter().map(|(t, _)| *t).collect();
        at.sort();
        at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// Writes the counts and the longest gap to the test's log.
    #[allow(dead_code)]
    pub fn log_summary(&self) {
        eprintln!(
            "{} writes acknowledged, {} errors, longest gap between acknowledgements {:?}",
            self.acked.len(),
            self.errors.len(),
            self.longest_gap()
        );
    }

    /// The promise of a graceful failover: no client saw an error, more than
    /// `min_acked` writes were acknowledged, and every one of them is on the
    /// node `master` (a direct client to it) — nothing was lost.
    pub fn assert_none_failed_or_lost(&self, master: &mut Client, min_acked: usize) {
        assert!(
            self.errors.is_empty(),
            "{} client errors, e.g. {:?}",
            self.errors.len(),
            &self.errors[..self.errors.len().min(5)]
        );
        self.assert_none_lost(master, min_acked);
    }

    /// Nothing acknowledged was lost: more than `min_acked` writes were
    /// acknowledged, and every one of them is on the node `master` (errors
    /// allowed: a fault may cost them, never an acknowledged write).
    pub fn assert_none_lost(&self, master: &mut Client, min_acked: usize) {
        assert!(
            self.acked.len() > min_acked,
            "only {} writes",
            self.acked.len()
        );
        let missing: Vec<String> = self
            .missing_on(master)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_none("acknowledged writes are not on the master", &missing);
    }

    /// The acknowledged writes that are not on the node `master`, each with
    /// when it was acknowledged (for tests that allow some: those
    /// acknowledged in a window asynchronous replication may lose).
    pub fn missing_on(&self, master: &mut Client) -> Vec<(Instant, String)> {
        self.acked
            .iter()
            .filter(|(_, k)| master.cmd(&["EXISTS", k.as_str()]) != Reply::Int(1))
            .cloned()
            .collect()
    }
}

/// Asserts that `keys` is empty; if not, says how many `what` (e.g.
/// "acknowledged writes are not on the master"), with the first few.
pub fn assert_none(what: &str, keys: &[String]) {
    assert!(
        keys.is_empty(),
        "{} {what}, e.g. {:?}",
        keys.len(),
        &keys[..keys.len().min(5)]
    );
}

/// Writer threads on one port.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Outcome>>,
    /// Writes acknowledged so far (plain writers only).
    acked: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writers {
    /// `n` writers on `port`, keys `<tag><w>-<i>`, `pace` between requests.
    pub fn start(port: u16, n: usize, tag: &'static str, pace: Duration) -> Writers {
        Writers::start_authenticated(port, n, tag, pace, None)
    }

    /// [`Writers::start`] with each connection opening with `AUTH password`.
    pub fn start_authenticated(
        port: u16,
        n: usize,
        tag: &'static str,
        pace: Duration,
        password: Option<&str>,
    ) -> Writers {
        let auth = password.map(|pw| vec!["AUTH", pw]).unwrap_or_default();
        Writers::start_logged_in(port, n, tag, pace, &auth)
    }

    /// [`Writers::start`] with each connection opening with `auth` (`AUTH`
    /// and its arguments, such as an ACL user's; empty: none).
    pub fn start_logged_in(
        port: u16,
        n: usize,
        tag: &'static str,
        pace: Duration,
        auth: &[&str],
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let auth: Vec<String> = auth.iter().map(|a| a.to_string()).collect();
        let threads = (0..n)
            .map(|w| {
                let stop = Arc::clone(&stop);
                let acked = Arc::clone(&acked);
                let auth = auth.clone();
                std::thread::spawn(move || {
                    write_until(port, &format!("{tag}{w}"), pace, &auth, (&stop, &acked))
                })
            })
            .collect();
        Writers {
            stop,
            threads,
            acked,
        }
    }

    /// `n` fire-and-forget writers on `port`: each sends `batch` SETs under
    /// `CLIENT REPLY OFF`, then `CLIENT REPLY ON` and `ECHO <batch>`, whose
    /// answers (and nothing else) say that the node processed every SET
    /// before them: those count as acknowledged. Any other reply, such as
    /// a SET's `+OK` that should have been dropped, is an error.
    pub fn start_reply_off(port: u16, n: usize, tag: &'static str, batch: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|w| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    write_muted_until(port, &format!("{tag}{w}"), batch, &stop)
                })
            })
            .collect();
        Writers {
            stop,
            threads,
            acked: Arc::default(),
        }
    }

    /// Waits until `more` writes beyond those acknowledged now are
    /// acknowledged (at most [`super::PATIENCE`]): a test that needs writes
    /// to flow through a fault waits for them rather than for a time a
    /// loaded host may not fill.
    pub fn await_more(&self, more: usize) {
        let target = self.acked.load(Ordering::SeqCst) + more;
        let start = Instant::now();
        while self.acked.load(Ordering::SeqCst) < target && start.elapsed() < super::PATIENCE {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the writers and gathers what they saw.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Outcome::default();
        for t in self.threads {
            let o = t.join().expect("writer thread");
            all.acked.extend(o.acked);
            all.errors.extend(o.errors);
        }
        all
    }
}

fn write_until(
    port: u16,
    prefix: &str,
    pace: Duration,
    auth: &[String],
    (stop, acked): (&AtomicBool, &std::sync::atomic::AtomicUsize),
) -> Outcome {
    // A connection, authenticated when asked; `Err` when the port refuses
    // or answers with an error (a node that is down).
    let connect = || -> Result<Client, String> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = Client::from_stream(stream);
        if !auth.is_empty() {
            let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
            c.try_send(&auth)?;
            match c.read_within(super::PATIENCE)? {
                Some(r) if r == Reply::ok() => {}
                other => return Err(format!("AUTH: {other:?}")),
            }
        }
        Ok(c)
    };
    let mut c = connect().expect("the writers' first connection");
    let mut out = Outcome::default();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("{prefix}-{i}");
        let reply = c
            .try_send(&["SET", &key, "v"])
            .and_then(|()| c.read_within(super::PATIENCE));
        match reply {
            Ok(Some(Reply::Status(s))) if s == "OK" => {
                out.acked.push((Instant::now(), key));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(other) => out.errors.push(format!("{key}: {other:?}")),
            // A closed connection is an error the client sees; it
            // reconnects, as clients do.
            Err(e) => {
                out.errors.push(format!("{key}: connection lost: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                match connect() {
                    Ok(again) => c = again,
                    Err(e) => out.errors.push(format!("{key}: reconnecting: {e}")),
                }
            }
        }
        i += 1;
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    out
}

fn write_muted_until(port: u16, prefix: &str, batch: usize, stop: &AtomicBool) -> Outcome {
    let mut c = Client::connect(port);
    let mut out = Outcome::default();
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let keys: Vec<String> = (0..batch)
            .map(|i| format!("{prefix}-{round}-{i}"))
            .collect();
        let mut pipeline = super::encode(&[b"CLIENT", b"REPLY", b"OFF"]);
        for k in &keys {
            pipeline.extend(super::encode(&[b"SET", k.as_bytes(), b"v"]));
        }
        let marker = format!("{prefix}-{round}");
        pipeline.extend(super::encode(&[b"CLIENT", b"REPLY", b"ON"]));
        pipeline.extend(super::encode(&[b"ECHO", marker.as_bytes()]));
        c.send_raw(&pipeline);
        let on = c.read_within(super::PATIENCE);
        let echo = c.read_within(super::PATIENCE);
        match (on, echo) {
            (Ok(Some(on)), Ok(Some(echo))) if on == Reply::ok() && echo == Reply::bulk(&marker) => {
                let now = Instant::now();
                out.acked.extend(keys.into_iter().map(|k| (now, k)));
            }
            (on, echo) => {
                // The connection's replies are out of step from here on.
                out.errors.push(format!("{marker}: {on:?} then {echo:?}"));
                return out;
            }
        }
        round += 1;
    }
    out
}
