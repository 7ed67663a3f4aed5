//! A network lab of Linux network namespaces for partition tests.
//!
//! Each [`Host`] is a namespace of its own (`ip netns add`), joined to the
//! test's namespace (the controller's side) by a veth pair on a /30 of
//! `10.<base>.<n>.0`; two hosts can also be joined directly
//! ([`Lab::link`], for replication). Programs run in a host with
//! `ip netns exec`, and a test thread can enter a host ([`Host::enter`]) so
//! its sockets are the host's (its clients). Faults are real: a link down
//! ([`Host::cut`]), one direction dropped ([`Host::drop_inbound`]), and
//! bytes held back for a while by a relay ([`DelayRelay`]; `tc netem` is
//! not available on every kernel, this is).
//!
//! Only addresses inside the lab's namespaces and on the veth ends in the
//! test's namespace are used; nothing is routed or forwarded. It needs
//! root: [`Lab::new`] returns `None` (the test says SKIPPED) where
//! namespaces cannot be made, unless `LEASEGATE_REQUIRE_NETNS=1`.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{Client, Reply, PATIENCE};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` (or `tc`) with `args`; panics with its stderr on failure.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small number (below 50,000) for names and subnets: unique in this
/// process, and not used by anything left on the machine (a test process
/// killed before its clean-up leaves its namespaces and links behind).
fn next() -> u32 {
    static CLAIMED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    let base = (std::process::id() % 1000) * 50 + NEXT.fetch_add(1, Ordering::SeqCst) % 50;
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    for k in 0..50_000 {
        let tag = (base + k) % 50_000;
        let exists = |path: String| std::path::Path::new(&path).exists();
        let taken = claimed.contains(&tag)
            || exists(format!("/var/run/netns/lg{tag}a"))
            || exists(format!("/var/run/netns/lg{tag}b"))
            || exists(format!("/sys/class/net/lg{tag}r0"));
        if !taken {
            claimed.push(tag);
            return tag;
        }
    }
    panic!("no free network lab name");
}

/// The lab; everything it made is removed on drop (processes first).
pub struct Lab {
    tag: u32,
    hosts: Vec<String>,
    links: Vec<String>,
    children: Vec<Child>,
    subnets: u32,
    /// Routes added in the test's namespace ([`Lab::unreachable_when_cut`]).
    routes: Vec<String>,
    /// The programs' temporary directories (`TMPDIR`, one each): what
    /// they leave there (a leasegate's upgrade socket) goes with the lab.
    tmp: tempfile::TempDir,
}

/// One namespace joined to the test's namespace.
#[derive(Clone)]
pub struct Host {
    pub ns: String,
    /// The host's address on its link to the test's namespace.
    pub ip: String,
    /// The test side's address on that link.
    pub peer_ip: String,
    /// The veth end in the test's namespace (where netem goes).
    dev: String,
}

impl Lab {
    /// `None` (and a SKIPPED line) where namespaces cannot be made here.
    pub fn new() -> Option<Lab> {
        let tag = next();
        let probe = format!("lgp{tag}");
        let ok = Command::new("ip")
            .args(["netns", "add", &probe])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // Namespaces alone are not enough: veth pairs must work too.
        let ok = ok
            && Command::new("ip")
                .args([
                    "-n", &probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        let _ = Command::new("ip")
            .args(["netns", "del", &probe])
            .stderr(Stdio::null())
            .status();
        if ok {
            return Some(Lab {
                tag,
                hosts: Vec::new(),
                links: Vec::new(),
                children: Vec::new(),
                subnets: 0,
                routes: Vec::new(),
                tmp: tempfile::tempdir().expect("the lab's temporary directory"),
            });
        }
        assert!(
            std::env::var("LEASEGATE_REQUIRE_NETNS").as_deref() != Ok("1"),
            "network namespaces are required (LEASEGATE_REQUIRE_NETNS=1) but `ip netns add` failed (root and iproute2 needed)"
        );
        eprintln!("SKIPPED: cannot create network namespaces here (needs root and iproute2)");
        None
    }

    /// The next /30: `(a, b)` addresses.
    fn subnet(&mut self) -> (String, String) {
        let n = self.subnets;
        self.subnets += 1;
        // 10.(100..249).(0..249).(4n): unique per lab (tags are below
        // 50,000; every octet stays below 256), 64 links each.
        let (hi, lo) = (100 + (self.tag / 250) % 150, self.tag % 250);
        (
            format!("10.{hi}.{lo}.{}", 4 * n + 1),
            format!("10.{hi}.{lo}.{}", 4 * n + 2),
        )
    }

    /// A new host named `name` (for messages), linked to the test's namespace.
    pub fn host(&mut self, name: &str) -> Host {
        let ns = format!("lg{}{name}", self.tag);
        run("ip", &["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let (peer_ip, ip) = self.subnet();
        let i = self.links.len();
        let (dev, inner) = (format!("lg{}r{i}", self.tag), format!("lg{}h{i}", self.tag));
        run(
            "ip",
            &["link", "add", &dev, "type", "veth", "peer", "name", &inner],
        );
        self.links.push(dev.clone());
        run("ip", &["link", "set", &inner, "netns", &ns]);
        run(
            "ip",
            &["addr", "add", &format!("{peer_ip}/30"), "dev", &dev],
        );
        run("ip", &["link", "set", &dev, "up"]);
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/30"), "dev", &inner],
        );
        run("ip", &["-n", &ns, "link", "set", &inner, "up"]);
        Host {
            ns,
            ip,
            peer_ip,
            dev,
        }
    }

    /// Makes a cut of `host`'s link ([`Host::cut`]) silent on the test's
    /// side: an `unreachable` route for the link's /30 below the link's own
    /// route (a connection to the host then fails with "no route to host").
    /// Without it, once the link is down, the test's namespace sends what it
    /// addresses to the host (a controller's probes) along its default
    /// route, off the machine, where whatever answers is not the host.
    /// Removed when the lab drops.
    pub fn unreachable_when_cut(&mut self, host: &Host) {
        let ip: std::net::Ipv4Addr = host.ip.parse().expect("an IPv4 address");
        let net = std::net::Ipv4Addr::from(u32::from(ip) & !3);
        let route = format!("{net}/30");
        run(
            "ip",
            &["route", "add", "unreachable", &route, "metric", "4000"],
        );
        self.routes.push(route);
    }

    /// Joins two hosts directly; returns (`a`'s address, `b`'s address) on
    /// that link.
    pub fn link(&mut self, a: &Host, b: &Host) -> (String, String) {
        let link = self.direct_link(a, b);
        (link.ip_a, link.ip_b)
    }

    /// [`Self::link`], and each host also reaches the other's address on
    /// its link to the test's namespace ([`Host::ip`]) over this link (a
    /// host route; nothing is forwarded): programs that know the hosts only
    /// by those addresses (a topology a controller pushes) reach each other
    /// directly. The link can be cut ([`Link::cut`]).
    pub fn routed_link(&mut self, a: &Host, b: &Host) -> Link {
        let link = self.direct_link(a, b);
        for (from, to, via) in [(a, b, &link.ip_b), (b, a, &link.ip_a)] {
            run(
                "ip",
                &[
                    "-n",
                    &from.ns,
                    "route",
                    "add",
                    &format!("{}/32", to.ip),
                    "via",
                    via,
                ],
            );
        }
        link
    }

    fn direct_link(&mut self, a: &Host, b: &Host) -> Link {
        let (ip_a, ip_b) = self.subnet();
        let i = self.links.len();
        let (dev_a, dev_b) = (format!("lg{}a{i}", self.tag), format!("lg{}b{i}", self.tag));
        run(
            "ip",
            &[
                "link", "add", &dev_a, "type", "veth", "peer", "name", &dev_b,
            ],
        );
        for (dev, host, ip) in [(&dev_a, a, &ip_a), (&dev_b, b, &ip_b)] {
            run("ip", &["link", "set", dev, "netns", &host.ns]);
            run(
                "ip",
                &[
                    "-n",
                    &host.ns,
                    "addr",
                    "add",
                    &format!("{ip}/30"),
                    "dev",
                    dev,
                ],
            );
            run("ip", &["-n", &host.ns, "link", "set", dev, "up"]);
        }
        // Deleting one end (in `a`) deletes the pair, and a namespace's
        // deletion deletes its ends: nothing to add to `links`.
        Link {
            ip_a,
            ip_b,
            ns_a: a.ns.clone(),
            dev_a,
            ns_b: b.ns.clone(),
            dev_b,
        }
    }

    /// Starts `program args` inside `host`; killed when the lab drops.
    pub fn spawn(&mut self, host: &Host, program: &str, args: &[&str]) -> u32 {
        self.spawn_logged(host, program, args, None)
    }

    /// [`Self::spawn`], the program's stderr appended to the file `log`
    /// when given (discarded otherwise).
    pub fn spawn_logged(
        &mut self,
        host: &Host,
        program: &str,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> u32 {
        let stderr = match log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
            None => Stdio::null(),
        };
        // One each: two leasegates on the same port in two hosts would
        // otherwise share their default upgrade socket's path.
        let tmp = self.tmp.path().join(self.children.len().to_string());
        std::fs::create_dir_all(&tmp).expect("a program's temporary directory");
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns, program])
            .args(args)
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} in {}: {e}", host.ns));
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for route in &self.routes {
            let _ = Command::new("ip")
                .args(["route", "del", "unreachable", route, "metric", "4000"])
                .stderr(Stdio::null())
                .status();
        }
        for dev in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", dev])
                .stderr(Stdio::null())
                .status();
        }
        for ns in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A direct link between two hosts ([`Lab::routed_link`]).
pub struct Link {
    /// The first host's address on the link.
    pub ip_a: String,
    /// The second host's address on the link.
    pub ip_b: String,
    ns_a: String,
    dev_a: String,
    ns_b: String,
    dev_b: String,
}

impl Link {
    /// Takes the link down at both ends: nothing passes either way.
    pub fn cut(&self) {
        run(
            "ip",
            &["-n", &self.ns_a, "link", "set", &self.dev_a, "down"],
        );
        run(
            "ip",
            &["-n", &self.ns_b, "link", "set", &self.dev_b, "down"],
        );
    }
}

impl Host {
    /// Takes the link to the test's namespace down (both directions).
    pub fn cut(&self) {
        run("ip", &["link", "set", &self.dev, "down"]);
    }

    /// Brings the link to the test's namespace up again.
    pub fn heal(&self) {
        run("ip", &["link", "set", &self.dev, "up"]);
    }

    /// Drops (or, with `false`, delivers again) everything the test's side
    /// sends to this host, while what the host sends still arrives: a
    /// one-way partition. Done with a permanent neighbour entry that sends
    /// the host's frames to a MAC address nobody has (no `tc netem` or
    /// firewall needed, which some kernels lack).
    pub fn drop_inbound(&self, on: bool) {
        if on {
            run(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &self.ip,
                    "lladdr",
                    "02:00:00:00:00:01",
                    "dev",
                    &self.dev,
                    "nud",
                    "permanent",
                ],
            );
        } else {
            let _ = Command::new("ip")
                .args(["neigh", "del", &self.ip, "dev", &self.dev])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Moves the calling thread into this host's namespace: its sockets
    /// from now on are the host's. Use a thread of its own.
    pub fn enter(&self) {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.ns))
            .unwrap_or_else(|e| panic!("open netns {}: {e}", self.ns));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns {}: {}",
            self.ns,
            std::io::Error::last_os_error()
        );
    }
}

/// Waits until `addr` accepts a connection from the calling thread's
/// namespace.
pub fn wait_accepting(addr: &str) {
    let addr: std::net::SocketAddr = addr.parse().expect("host:port");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < super::PATIENCE,
            "{addr} never accepted a connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP relay in the test's namespace that delivers what its clients send
/// to `target` only `delay` after receiving it (the answers come back at
/// once): delayed packets, even for connections the client has given up on.
pub struct DelayRelay {
    pub addr: String,
}

impl DelayRelay {
    pub fn start(target: &str, delay: Duration) -> DelayRelay {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address").to_string();
        let target = target.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let (mut client_r, mut server_w) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let (mut server_r, mut client_w) = (server, client);
                let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = client_r.read(&mut buf) {
                        if n == 0
                            || tx
                                .send((std::time::Instant::now(), buf[..n].to_vec()))
                                .is_err()
                        {
                            break;
                        }
                    }
                });
                std::thread::spawn(move || {
                    for (at, bytes) in rx {
                        std::thread::sleep(
                            (at + delay).saturating_duration_since(std::time::Instant::now()),
                        );
                        if server_w.write_all(&bytes).is_err() {
                            break;
                        }
                    }
                    // Everything received was delivered; then close.
                    std::thread::sleep(delay);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = server_r.read(&mut buf) {
                        if n == 0 || client_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        DelayRelay { addr }
    }
}

/// A client of `addr` (reachable from the calling thread's namespace),
/// authenticated with `password`.
pub fn client_auth_at(addr: &str, password: &str) -> Client {
    let stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut c = Client::from_stream(stream);
    assert_eq!(c.cmd(&["AUTH", password]), Reply::ok(), "AUTH at {addr}");
    c
}

/// Waits until Kvrocks at `addr` answers (it listens before RocksDB is
/// open; `NOAUTH` is an answer).
pub fn wait_kvrocks(addr: &str) {
    wait_accepting(addr);
    let start = Instant::now();
    loop {
        if let Ok(stream) = std::net::TcpStream::connect(addr) {
            let mut c = Client::from_stream(stream);
            let reply = c
                .try_send(&["PING"])
                .ok()
                .and_then(|()| c.read_within(Duration::from_secs(1)).ok().flatten());
            match reply {
                Some(Reply::Status(s)) if s == "PONG" => return,
                Some(Reply::Error(e)) if e.starts_with("NOAUTH") => return,
                _ => {}
            }
        }
        assert!(
            start.elapsed() < PATIENCE * 3,
            "Kvrocks at {addr} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
