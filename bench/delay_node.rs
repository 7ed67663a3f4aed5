//! The closed loop alone, for `bench/verify.sh`: a RESP server that answers
//! every command with `+OK` after a fixed delay and does nothing else.
//!
//! `verify.sh` compares verified writes against the closed-loop bound
//! `clients × depth / round trip`, which assumes a loop that costs nothing
//! but the wait. On a real host the loop itself costs something: the load
//! generator's turn, the loopback hops, waking a process that slept. Run in
//! front of the same `redis-benchmark` with the fake controller's delay, this
//! server measures that cost, so the report can show what share of the bound
//! *any* system that waits one round trip per write reaches on this host.
//!
//! It is built like the fake controller (one thread per connection, blocking
//! I/O, `thread::sleep` for the delay) and holds each read's batch of
//! commands once, as a confirmation round covers a pipelined batch:
//!
//! - `PING`: `+PONG` at once (the benchmark's readiness check);
//! - `DELAYSTATS`: at once, a bulk string `<batches> <held_ns>`: how many
//!   batches were held and their total held time (the delay plus the
//!   sleep's lateness), from which the mean round trip of the bound is taken;
//! - anything else: held, then `+OK` for each command of the batch.
//!
//! ```text
//! cargo build --release --example delay_node
//! target/release/examples/delay_node --port 7480 --delay-ms 1
//! ```
//!
//! It runs until killed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

#[derive(Parser, Debug)]
#[command(about = "RESP server answering +OK after a fixed delay (leasegate benchmarks)")]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Delay before each batch's answers, ms (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    delay_ms: f64,
}

/// Batches held and their total held time, over all connections.
#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    held_ns: AtomicU64,
}

/// What one command asks for.
enum Command {
    Ping,
    Stats,
    Held,
}

fn main() {
    let args = Args::parse();
    let delay = Duration::from_secs_f64(args.delay_ms.max(0.0) / 1000.0);
    let listener = TcpListener::bind(("127.0.0.1", args.port)).unwrap_or_else(|e| {
        eprintln!("delay node: cannot listen on 127.0.0.1:{}: {e}", args.port);
        std::process::exit(1);
    });
    eprintln!(
        "delay node on 127.0.0.1:{}, delay {} ms",
        args.port, args.delay_ms
    );
    let stats = Arc::new(Stats::default());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let stats = Arc::clone(&stats);
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, delay, &stats) {
                eprintln!("delay node: connection ended: {e}");
            }
        });
    }
}

/// Serves one connection until it closes.
fn serve(mut conn: TcpStream, delay: Duration, stats: &Stats) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(1024);
    loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut held = false;
        while let Some((frame, len)) = decode(&buf[used..])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
        {
            used += len;
            match command(&frame) {
                Command::Ping => out.extend_from_slice(b"+PONG\r\n"),
                Command::Stats => {
                    let text = format!(
                        "{} {}",
                        stats.batches.load(Ordering::Relaxed),
                        stats.held_ns.load(Ordering::Relaxed)
                    );
                    out.extend_from_slice(format!("${}\r\n{text}\r\n", text.len()).as_bytes());
                }
                Command::Held => {
                    held = true;
                    out.extend_from_slice(b"+OK\r\n");
                }
            }
        }
        buf.drain(..used);
        if held {
            // The whole batch's answers, in order, after one delay.
            let start = Instant::now();
            std::thread::sleep(delay);
            let took = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.held_ns.fetch_add(took, Ordering::Relaxed);
        }
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
        }
    }
}

/// What a request frame asks for, by its first word.
fn command(frame: &OwnedFrame) -> Command {
    let name = match frame {
        OwnedFrame::Array(parts) => match parts.first() {
            Some(OwnedFrame::BulkString(name)) => name.as_slice(),
            _ => b"".as_slice(),
        },
        _ => b"".as_slice(),
    };
    if name.eq_ignore_ascii_case(b"PING") {
        Command::Ping
    } else if name.eq_ignore_ascii_case(b"DELAYSTATS") {
        Command::Stats
    } else {
        Command::Held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A delay node on a free port with `delay`, and a client connected to it.
    fn start(delay: Duration) -> (TcpStream, Arc<Stats>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Stats::default());
        let served = Arc::clone(&stats);
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let _ = serve(conn, delay, &served);
        });
        (TcpStream::connect(addr).expect("connect"), stats)
    }

    fn read_lines(conn: &TcpStream, n: usize) -> Vec<String> {
        let mut reader = std::io::BufReader::new(conn);
        (0..n)
            .map(|_| {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                line.trim_end().to_string()
            })
            .collect()
    }

    #[test]
    fn a_pipelined_batch_is_held_once_and_answered_in_order() {
        let delay = Duration::from_millis(50);
        let (mut conn, stats) = start(delay);
        let batch = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nw\r\n";
        let start = Instant::now();
        conn.write_all(batch).expect("write");
        assert_eq!(read_lines(&conn, 3), ["+PONG", "+OK", "+OK"]);
        assert!(start.elapsed() >= delay, "answered before the delay");
        assert_eq!(stats.batches.load(Ordering::Relaxed), 1);
        assert!(stats.held_ns.load(Ordering::Relaxed) >= delay.as_nanos() as u64);
    }

    #[test]
    fn ping_and_stats_are_answered_without_the_delay() {
        // A delay no test would wait for: answers that came were not held.
        let (mut conn, _) = start(Duration::from_secs(3600));
        conn.write_all(b"*1\r\n$4\r\nPING\r\n*1\r\n$10\r\nDELAYSTATS\r\n")
            .expect("write");
        assert_eq!(read_lines(&conn, 3), ["+PONG", "$3", "0 0"]);
    }

    #[test]
    fn a_command_split_across_reads_is_answered_once_whole() {
        let (mut conn, stats) = start(Duration::ZERO);
        conn.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk")
            .expect("write");
        conn.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(20));
        conn.write_all(b"\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n")
            .expect("write");
        assert_eq!(read_lines(&conn, 2), ["+OK", "+PONG"]);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 1);
    }
}
