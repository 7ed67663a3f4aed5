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
        assert!(
            self.acked.len() > min_acked,
            "only {} writes",
            self.acked.len()
        );
        let missing: Vec<&String> = self
            .acked_keys()
            .filter(|k| master.cmd(&["EXISTS", k.as_str()]) != Reply::Int(1))
            .collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged writes are not on the master, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

/// Writer threads on one port.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Outcome>>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|w| {
                let stop = Arc::clone(&stop);
                let password = password.map(str::to_string);
                std::thread::spawn(move || {
                    write_until(port, &format!("{tag}{w}"), pace, password.as_deref(), &stop)
                })
            })
            .collect();
        Writers { stop, threads }
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
    password: Option<&str>,
    stop: &AtomicBool,
) -> Outcome {
    // A connection, authenticated when asked; `Err` when the port refuses
    // or answers with an error (a node that is down).
    let connect = || -> Result<Client, String> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = Client::from_stream(stream);
        if let Some(pw) = password {
            c.try_send(&["AUTH", pw])?;
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
            Ok(Some(Reply::Status(s))) if s == "OK" => out.acked.push((Instant::now(), key)),
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
