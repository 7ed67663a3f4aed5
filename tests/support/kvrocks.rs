//! The real Kvrocks server (`../shared/kvrocks/kvrocks`, or `$LEASEGATE_KVROCKS`)
//! on a free loopback port, for what only Kvrocks does: cluster mode,
//! `CLUSTERX SETNODEID/SETNODES`, its replication and INFO fields.
//!
//! No package ships Kvrocks, so the binary may be missing on a machine:
//! [`KvrocksServer::start`] then returns `None` and the test says so on
//! stderr, unless `LEASEGATE_REQUIRE_KVROCKS=1`, which makes it a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{free_port, wait_listening, Client, PATIENCE};

/// Where the Kvrocks binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LEASEGATE_KVROCKS").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kvrocks/kvrocks")),
        Some(PathBuf::from("/work/shared/kvrocks/kvrocks")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A Kvrocks server, stopped on drop.
pub struct KvrocksServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl KvrocksServer {
    /// Starts Kvrocks (`cluster`: with `cluster-enabled yes`, as
    /// kvrocks-controller runs it). `None` when the binary is not here.
    pub fn start(cluster: bool) -> Option<KvrocksServer> {
        KvrocksServer::start_with(cluster, &[])
    }

    /// Starts Kvrocks with extra `--<key> <value>` options (e.g.
    /// `["--requirepass", "pw"]`).
    pub fn start_with(cluster: bool, extra: &[&str]) -> Option<KvrocksServer> {
        let Some(bin) = binary() else {
            assert!(
                std::env::var("LEASEGATE_REQUIRE_KVROCKS").as_deref() != Ok("1"),
                "Kvrocks is required (LEASEGATE_REQUIRE_KVROCKS=1) but was not found; set LEASEGATE_KVROCKS"
            );
            eprintln!("SKIPPED: no Kvrocks binary (set LEASEGATE_KVROCKS to run this test)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        // A port chosen free may be taken before Kvrocks binds it (tests run
        // in parallel): retry on a fresh one, and count as ready only a
        // listening socket that is Kvrocks' own.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--dir", &dir.path().display().to_string()])
                .args(["--daemonize", "no"])
                .args(["--cluster-enabled", if cluster { "yes" } else { "no" }])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start kvrocks");
            if wait_listening(port, &mut child, "kvrocks").is_err() {
                continue;
            }
            let server = KvrocksServer {
                port,
                child,
                _dir: dir,
            };
            server.wait_ready();
            return Some(server);
        }
        panic!("kvrocks could not bind a free port in 5 tries");
    }

    /// Waits until Kvrocks answers (it listens before RocksDB is open; with
    /// a password it answers NOAUTH, which is an answer too).
    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let mut c = Client::connect(self.port);
            match c.cmd(&["PING"]) {
                super::Reply::Status(s) if s == "PONG" => return,
                super::Reply::Error(e) if e.starts_with("NOAUTH") => return,
                _ => {}
            }
            assert!(
                start.elapsed() < PATIENCE,
                "kvrocks did not answer on {} within {PATIENCE:?}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A direct client, bypassing the proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }
}

impl Drop for KvrocksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
