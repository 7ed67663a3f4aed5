//! Promotion timing against a scripted Kvrocks replica whose replication
//! tick the test controls: its replication client connects through the
//! master's leasegate to a real Kvrocks master (`REPLCONF listening-port`,
//! `PSYNC`, the WAL stream), and its `SLAVEOF NO ONE` is answered only at
//! its own tick, `arm + shift + k·100 ms`, as Kvrocks' replication thread
//! stops only on its 100 ms timer. With no shift (an honest replica) the
//! failover meets the tick and pokes the stream with a `ping` frame; with
//! the loop's phase moved since its connection (a stalled loop re-anchors
//! its timer) the promotion misses, and the failover still completes.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::kvrocks::{info_field, KvrocksServer, A_ID, B_ID};
use support::scripted::{bulk, serve_commands};
use support::{heartbeat, post_failover, Proxy, PATIENCE};

const TOKEN: &str = "tk";
const PERIOD: Duration = Duration::from_millis(100);

#[derive(Default)]
struct PeerState {
    /// `SLAVEOF NO ONE` arrived (the stop flag) at this moment.
    stop_requested: Option<Instant>,
    /// The tick that acted on it.
    promoted_at: Option<Instant>,
    /// Moments `ping` frames arrived on the replication stream.
    pings: Vec<Instant>,
}

/// The scripted replica: its command port and what happened.
struct TickPeer {
    port: u16,
    state: Arc<(Mutex<PeerState>, Condvar)>,
}

impl TickPeer {
    /// Starts the replica: it replicates from `master_proxy` (the master's
    /// leasegate port), at the sequence after `latest`, and ticks `shift`
    /// after its connection's arm time; its loop wakes for its timer
    /// (`wakes_itself`, as libevent's) or only for data.
    fn start(master_proxy: u16, latest: u64, shift: Duration, wakes_itself: bool) -> TickPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state: Arc<(Mutex<PeerState>, Condvar)> = Arc::default();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(conn, &state, master_proxy));
            }
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            replicate(master_proxy, port, latest, shift, wakes_itself, &shared)
        });
        TickPeer { port, state }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.0.lock().expect("state")
    }
}

/// `CLOCK_MONOTONIC_COARSE`, the clock libevent runs Kvrocks' timer on.
fn coarse() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write to.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) },
        0
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The replication thread, as Kvrocks' runs it under libevent: connects,
/// arms a persistent 100 ms timer at the coarse clock's reading (moved by
/// `shift`), and sleeps until the timer is due by that clock or data
/// arrives. At each wake the timer fires if the coarse clock has reached
/// it; once `SLAVEOF NO ONE` set the stop flag, that tick ends the thread.
/// A loop that does not wake itself sleeps until data comes: the case the
/// failover's pokes exist for, made deterministic.
fn replicate(
    master_proxy: u16,
    my_port: u16,
    latest: u64,
    shift: Duration,
    wakes_itself: bool,
    state: &(Mutex<PeerState>, Condvar),
) {
    let mut link = TcpStream::connect(("127.0.0.1", master_proxy)).expect("connect to the master");
    let mut next_tick = coarse() + shift + PERIOD;
    // One step at a time, as Kvrocks' state machine sends them (pipelined,
    // Kvrocks drops the first answer when PSYNC takes the connection over).
    let replconf = format!(
        "*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n${}\r\n{my_port}\r\n",
        my_port.to_string().len()
    );
    link.write_all(replconf.as_bytes()).expect("REPLCONF");
    let mut ok = [0u8; 5];
    link.read_exact(&mut ok).expect("REPLCONF answered");
    assert_eq!(&ok, b"+OK\r\n");
    let seq = (latest + 1).to_string();
    let psync = format!("*2\r\n$5\r\nPSYNC\r\n${}\r\n{seq}\r\n", seq.len());
    link.write_all(psync.as_bytes()).expect("PSYNC");
    let mut stream = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let now = coarse();
        if now >= next_tick {
            next_tick += PERIOD;
            let mut s = state.0.lock().expect("state");
            if s.stop_requested.is_some() {
                s.promoted_at = Some(Instant::now());
                state.1.notify_all();
                return;
            }
            continue;
        }
        // libevent's epoll wait: the time to the timer by the coarse
        // clock, in whole milliseconds rounded up (poll(2), a high
        // resolution timer, as epoll_wait(2)).
        let wait_ms = if wakes_itself {
            (next_tick - now).as_micros().div_ceil(1000).max(1)
        } else {
            60_000
        };
        let mut pollfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&link),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pollfd, 1, wait_ms as libc::c_int) };
        if ready > 0 {
            let Ok(n) = link.read(&mut chunk) else { return };
            if n == 0 {
                return;
            }
            stream.extend_from_slice(&chunk[..n]);
            let arrived = Instant::now();
            while let Some(at) = find(&stream, b"$4\r\nping\r\n") {
                state.0.lock().expect("state").pings.push(arrived);
                stream.drain(..at + 10);
            }
            // Keep only a tail (a frame may be split between reads).
            if stream.len() > 64 {
                stream.drain(..stream.len() - 16);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The command port: what a failover, a leasegate and its probe ask.
fn serve(conn: TcpStream, state: &(Mutex<PeerState>, Condvar), master_proxy: u16) {
    serve_commands(conn, |args| {
        let args: Vec<String> = args.iter().map(|a| a.to_ascii_lowercase()).collect();
        answer(&args, state, master_proxy)
    });
}

fn answer(args: &[String], state: &(Mutex<PeerState>, Condvar), master_proxy: u16) -> Vec<u8> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let promoted = state.0.lock().expect("state").promoted_at.is_some();
    match words.as_slice() {
        ["slaveof", "no", "one"] => {
            let mut s = state.0.lock().expect("state");
            s.stop_requested.get_or_insert_with(Instant::now);
            // As Kvrocks: the stop waits for the replication thread's tick.
            while s.promoted_at.is_none() {
                s = state.1.wait(s).expect("state");
            }
            b"+OK\r\n".to_vec()
        }
        ["info", "server", ..] => bulk("# Server\r\nkvrocks_version:scripted\r\n"),
        ["info", ..] if promoted => bulk("# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:1099511627776\r\n"),
        ["info", ..] => bulk(&format!(
            "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:{master_proxy}\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:1099511627776\r\n"
        )),
        ["role", ..] if promoted => {
            let mut out = b"*3\r\n".to_vec();
            out.extend(bulk("master"));
            out.extend(b":1099511627776\r\n*0\r\n");
            out
        }
        ["role", ..] => {
            let mut out = b"*5\r\n".to_vec();
            for part in [
                "slave",
                "127.0.0.1",
                &master_proxy.to_string(),
                "connected",
                "1099511627776",
            ] {
                out.extend(bulk(part));
            }
            out
        }
        ["ping", ..] => b"+PONG\r\n".to_vec(),
        ["command", ..] => b"-ERR unknown command `COMMAND`\r\n".to_vec(),
        _ => b"+OK\r\n".to_vec(),
    }
}

/// A real Kvrocks master behind its leasegate, the scripted replica
/// (ticking `shift` after its arm time) behind its own, A holding the
/// lease; the failover A→B's report and the replica.
fn failover_to_a_tick_peer(shift: Duration, wakes_itself: bool) -> Option<(Value, TickPeer)> {
    let master = KvrocksServer::start(false)?;
    let pa = Proxy::for_failover(&master.addr(), A_ID, TOKEN);
    let latest: u64 = info_field(&mut master.client(), "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let peer = TickPeer::start(pa.port, latest, shift, wakes_itself);
    let pb = Proxy::for_failover(&peer.addr(), B_ID, TOKEN);
    for p in [&pa, &pb] {
        assert!(!heartbeat(&mut p.client(), A_ID, 600_000, 1).is_error());
    }
    // The link is up at A's leasegate once Kvrocks answered the PSYNC.
    std::thread::sleep(Duration::from_millis(300));
    let options = r#""sync_timeout_ms":3000,"pause_timeout_ms":5000"#;
    let (status, report) = post_failover(&pa, &pb, TOKEN, options);
    assert_eq!(status, 200, "{report}");
    let report: Value = serde_json::from_str(&report).expect("a JSON report");
    assert_eq!(report["result"], "success", "{report}");
    // The old master follows the new one (through its leasegate).
    assert_eq!(
        info_field(&mut master.client(), "role").as_deref(),
        Some("slave")
    );
    drop((pa, pb, master));
    Some((report, peer))
}

/// An honest replica whose loop sleeps until data comes: the failover
/// learns its tick from its link, sends the promotion before it and pokes
/// the stream from it on; a `ping` frame wakes the loop once the tick is
/// due, and the promotion meets that tick. (Without the pokes this replica
/// would not stop until the master's own heartbeat, seconds later.)
#[test]
fn the_failover_meets_the_tick_it_learned_from_the_link() {
    let Some((report, peer)) = failover_to_a_tick_peer(Duration::ZERO, false) else {
        return;
    };
    assert_eq!(report["timing"]["outcome"], "held", "{report}");
    let note = report["timing"]["note"].as_str().unwrap_or("");
    assert!(
        note.contains("psync link (kernel time)") && note.contains("this host"),
        "learned from the link's kernel time and this host's clock: {note}"
    );
    let s = peer.state();
    let (Some(stop), Some(fired)) = (s.stop_requested, s.promoted_at) else {
        panic!("the replica was not promoted: {report}");
    };
    assert!(
        s.pings.iter().any(|&p| p >= stop && p <= fired),
        "a ping frame from the failover woke the replica: {report}"
    );
}

/// A replica whose loop re-anchored its timer 70 ms after its connection:
/// the phase learned from the link is wrong, the promotion waits for the
/// replica's real tick and the report says `missed`, and the failover
/// completes all the same.
#[test]
fn a_tick_that_moved_is_missed_and_the_failover_completes() {
    let Some((report, _peer)) = failover_to_a_tick_peer(Duration::from_millis(70), true) else {
        return;
    };
    assert_eq!(report["timing"]["outcome"], "missed", "{report}");
    let promotion = report["promotion_ms"].as_f64().expect("promotion_ms");
    assert!(
        promotion >= 50.0 && promotion < PATIENCE.as_secs_f64() * 1000.0,
        "{report}"
    );
}

/// kvrocks-controller PR #389's failover, run by the controller: its
/// `CLIENT PAUSE ... WRITE` at the master's leasegate begins (and is
/// answered) a lead before the replica's tick, learned from the replica's
/// link, rather than at once; the promotion the controller then sends (here
/// `SLAVEOF NO ONE`, standing in for its topology push) meets that tick,
/// woken by the leasegate's pokes; the replica's link closing at the tick
/// is counted `held`. Asked at a random moment of the period: untimed,
/// the promotion would come 0–100 ms after the answer.
#[test]
fn the_controllers_client_pause_begins_a_lead_before_the_replicas_tick() {
    let Some(master) = KvrocksServer::start(false) else {
        return;
    };
    let pa = Proxy::for_failover(&master.addr(), A_ID, TOKEN);
    let latest: u64 = info_field(&mut master.client(), "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let peer = TickPeer::start(pa.port, latest, Duration::ZERO, false);
    assert!(!heartbeat(&mut pa.client(), A_ID, 600_000, 1).is_error());
    // The link is up, and the probe has seen a Kvrocks node.
    std::thread::sleep(Duration::from_millis(300));
    let mut controller = pa.client();
    let phase = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000_000)
        .unwrap_or(0);
    std::thread::sleep(Duration::from_nanos(u64::from(phase)));
    let asked = Instant::now();
    assert_eq!(
        controller.cmd(&["CLIENT", "PAUSE", "5000", "WRITE"]),
        support::Reply::ok()
    );
    let answered = Instant::now();
    // The new master's promotion fence pauses this node again, within the
    // controller's pause: that one begins at once (timed, it waited for
    // the next tick, a period, and the promotion it guards came a period
    // late).
    let mut fence = pa.client();
    assert_eq!(
        fence.cmd(&["CLIENT", "PAUSE", "8000", "WRITE"]),
        support::Reply::ok()
    );
    let again = answered.elapsed();
    assert!(
        again <= Duration::from_millis(50),
        "a pause within a pause was answered after {again:?}"
    );
    let mut replica = support::Client::connect(peer.port);
    assert_eq!(replica.cmd(&["SLAVEOF", "NO", "ONE"]), support::Reply::ok());
    let promoted = peer.state().promoted_at.expect("promoted");
    let waited = answered - asked;
    let stall = promoted - answered;
    // The first lead is 20 ms; the tick's window and the pokes' step add
    // a few. Generous bounds: an untimed pause misses them 60 % of the time.
    assert!(
        stall <= Duration::from_millis(40),
        "the promotion came {stall:?} after the pause's answer (asked {waited:?} before)"
    );
    assert!(waited <= Duration::from_millis(150), "{waited:?}");
    assert!(
        !peer.state().pings.is_empty(),
        "the replica's link was poked"
    );
    let start = Instant::now();
    let held = "leasegate_controller_pause_timing_total{outcome=\"held\"} ";
    while support::metric(pa.admin_port(), held) < 1 {
        assert!(start.elapsed() < PATIENCE, "the promotion was not seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(controller.cmd(&["CLIENT", "UNPAUSE"]), support::Reply::ok());
    drop((pa, master));
}
