//! Control: who may renew, revoke or pause, the control commands' syntax,
//! and the proxy's answers to them.
//!
//! Only the controller may move the lease. On the RESP port that means a
//! connection that authenticated with `control.password` (checked here, never
//! forwarded) or that comes from a `control.allow_from` address; anyone else
//! gets `-NOPERM` and nothing changes. The answers — a heartbeat's lease
//! report, the controller's `CLIENT PAUSE`, a control `AUTH`/`HELLO` — are
//! the Gate's ([`Gate`]), written here beside the syntax they answer.

use std::net::IpAddr;

use bytes::Bytes;
use tracing::info;

use crate::command::Special;
use crate::guard::gate::{Admission, Answer, Gate, Verdict, Wait, OK};
use crate::guard::lease::{Grant, GrantError, GrantOutcome};
use crate::guard::pause::PauseMode;
use crate::guard::role::Source;
use crate::resp::encode::request as encode;
use crate::resp::request::{arguments, RequestHead};

/// What a heartbeat turns into on its way to the node: the lease report is
/// built from the node's replication state.
const INFO_REPLICATION: &[u8] = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n";
/// A control password anywhere but AUTH's password position.
pub const CONTROL_PASSWORD_MISPLACED: &[u8] =
    b"-ERR syntax error (the control password is accepted only as AUTH's password)\r\n";

/// One `control.allow_from` entry: an address or a CIDR block, parsed when
/// the config is loaded (an invalid entry is an error naming its line).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AddrMatch {
    net: IpAddr,
    prefix: u8,
}

impl TryFrom<String> for AddrMatch {
    type Error = String;
    fn try_from(text: String) -> Result<AddrMatch, String> {
        AddrMatch::parse(&text)
    }
}

/// Written back as `net/prefix` (a config reload compares settings this way).
impl serde::Serialize for AddrMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", self.net, self.prefix))
    }
}

impl AddrMatch {
    pub fn parse(text: &str) -> Result<AddrMatch, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{text}' has an invalid prefix length"))?,
        };
        Ok(AddrMatch { net, prefix })
    }

    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The control credentials from the config.
#[derive(Debug, Clone, Default)]
pub struct ControlPolicy {
    password: Option<Vec<u8>>,
    allow_from: Vec<AddrMatch>,
}

impl ControlPolicy {
    pub fn new(password: Option<&str>, allow_from: &[AddrMatch]) -> ControlPolicy {
        ControlPolicy {
            password: password.map(|p| p.as_bytes().to_vec()),
            allow_from: allow_from.to_vec(),
        }
    }

    /// Whether the controller is known by its connections (a control
    /// password or `control.allow_from`): every other connection is then
    /// an ordinary client's.
    pub fn identifies_controller(&self) -> bool {
        self.password.is_some() || !self.allow_from.is_empty()
    }

    /// Whether connections from `ip` are the controller's without a password.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.allow_from.iter().any(|m| m.matches(ip))
    }

    /// Whether `password` is the control password (constant time in its length).
    pub fn is_control_password(&self, password: &[u8]) -> bool {
        let Some(expected) = &self.password else {
            return false;
        };
        if expected.len() != password.len() {
            return false;
        }
        expected
            .iter()
            .zip(password)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// `-NOPERM` for control commands from ordinary clients.
pub const NOPERM: &[u8] =
    b"-NOPERM this connection is not authorized for leasegate control commands\r\n";

/// Parses `CLUSTERX HEARTBEAT ...` (`args` includes `CLUSTERX` and `HEARTBEAT`):
///
/// * `<master_node_id> <lease_ms> <election_version> [NONCE <n>]`, or
/// * `<election_version> <ttl_ms> [NONCE <n>]`.
///
/// Errors are complete reply texts without the leading `-`.
pub fn parse_heartbeat(args: &[Vec<u8>]) -> Result<Grant, String> {
    let rest = args.get(2..).unwrap_or_default();
    let (rest, nonce) = match rest.len() {
        4 | 5 if rest[rest.len() - 2].eq_ignore_ascii_case(b"nonce") => {
            let n = number(&rest[rest.len() - 1]).ok_or("ERR invalid nonce")?;
            (&rest[..rest.len() - 2], Some(n))
        }
        _ => (rest, None),
    };
    match rest {
        [master, lease_ms, version] => Ok(Grant {
            master_node_id: Some(String::from_utf8_lossy(master).into_owned()),
            ttl_ms: number(lease_ms).ok_or("ERR invalid lease_ms")?,
            epoch: number(version).ok_or("ERR invalid election_version")?,
            nonce,
            anchor: None,
        }),
        [version, ttl_ms] => Ok(Grant {
            master_node_id: None,
            ttl_ms: number(ttl_ms).ok_or("ERR invalid lease_ms")?,
            epoch: number(version).ok_or("ERR invalid election_version")?,
            nonce,
            anchor: None,
        }),
        _ => Err("ERR wrong number of arguments for 'clusterx|heartbeat' command".into()),
    }
}

fn number(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// How long `CLIENT PAUSE` waits, at most, for writes already forwarded
/// to be answered before it answers.
pub const DRAIN_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// The controller's commands, answered by the Gate.
impl Gate {
    /// `CLIENT PAUSE <timeout_ms> [WRITE|ALL]` / `CLIENT UNPAUSE` from the
    /// controller pause this proxy (not the node). Others' are forwarded.
    #[cold]
    pub(super) fn client_pause(&self, r: &Admission<'_>) -> Verdict {
        if r.command.special == Special::ClientUnpause {
            if self.pause.unpause_after_step_down(DRAIN_BOUND) {
                info!("CLIENT UNPAUSE from the controller: it takes effect once the node has answered the topology demoting it, on its way");
            } else {
                info!("CLIENT UNPAUSE from the controller");
            }
            return Verdict::Reply(Bytes::from_static(OK));
        }
        let args = arguments(r.bytes, r.head.inline);
        let Some(timeout) = args
            .get(2)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<u64>().ok())
        else {
            return Verdict::Reply(Bytes::from_static(
                b"-ERR timeout is not an integer or out of range\r\n",
            ));
        };
        let mode = match args.get(3) {
            None => PauseMode::All,
            Some(m) => match PauseMode::parse(m) {
                Some(mode) => mode,
                None => return Verdict::Reply(Bytes::from_static(b"-ERR syntax error\r\n")),
            },
        };
        if args.len() > 4 {
            return Verdict::Reply(Bytes::from_static(b"-ERR syntax error\r\n"));
        }
        let timeout = std::time::Duration::from_millis(timeout);
        // A pause of writes that prepares a promotion may begin later, so
        // that the promotion follows it at once (`guard::pause_timing`).
        // Not while a pause holds the writes already: the new master's
        // promotion fence pauses this node again within the controller's
        // own pause, and waiting a period there delayed the promotion it
        // guards by one (PR #389 flow: promotion median 161 ms, not 10).
        let now = std::time::Instant::now();
        let timed = match (mode, self.pause_timing.get()) {
            (PauseMode::Write, Some(timing)) if !self.pause.is_paused() => {
                timing.begin_at(now).filter(|at| *at > now)
            }
            _ => None,
        };
        if let Some(at) = timed {
            info!(
                timeout_ms = timeout.as_millis() as u64,
                begins_in_ms = (at - now).as_secs_f64() * 1000.0,
                "CLIENT PAUSE from the controller: begins when the replica's promotion can follow at once"
            );
            return Verdict::Hold(Wait::TimedPause(Box::new(crate::guard::gate::TimedPause {
                at,
                timeout,
                mode,
                begun: Default::default(),
            })));
        }
        info!(
            timeout_ms = timeout.as_millis() as u64,
            ?mode,
            "CLIENT PAUSE from the controller"
        );
        self.pause.pause(timeout, mode);
        // The controller reads the master's offset next: writes already
        // forwarded must be answered first, or one could be acknowledged
        // after that read and miss the replica (as leasegate's own
        // failover waits for them before wait_sync).
        if self.role.writes_in_flight() > 0 {
            return Verdict::Hold(Wait::Drain {
                until: now + timeout.min(DRAIN_BOUND),
                answer: true,
            });
        }
        Verdict::Reply(Bytes::from_static(OK))
    }

    /// Waits until the writes already forwarded are answered (`true`), or
    /// `until` (`false`). Once the pause holds writes, one look at zero is
    /// enough: a write counted after it is counted before the Gate looks at
    /// the pause, and is held (the count rises for that moment, which a
    /// second look would take for a write in flight).
    pub(super) async fn drained(&self, until: std::time::Instant) -> bool {
        loop {
            if self.role.writes_in_flight() <= 0 {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_micros(100)).await;
        }
    }

    /// The answer to the controller's `CLIENT PAUSE` once the writes
    /// forwarded before it were waited for: `+OK`, or, if some were still
    /// unanswered (`drained` false), an error, and the pause ends (the
    /// controller's offsets would not mean anything).
    pub(super) fn pause_answer(&self, drained: bool) -> Bytes {
        if !drained {
            self.pause.unpause();
            return Bytes::from_static(
                b"-ERR writes already forwarded were not answered in time; the pause was ended\r\n",
            );
        }
        Bytes::from_static(OK)
    }

    /// Commands leasegate answers itself.
    #[cold]
    pub(super) fn intercept(&self, r: &Admission<'_>) -> Verdict {
        if !r.control {
            self.metrics.control_refused.inc();
            return Verdict::Reply(Bytes::from_static(NOPERM));
        }
        if r.command.special == Special::Probe {
            return Verdict::Reply(crate::resp::encode::bulk(
                self.role.node.report_text().as_bytes(),
            ));
        }
        // Otherwise: CLUSTERX HEARTBEAT. Its log lines name the sender: a
        // heartbeat sent by hand that named another node fenced a master
        // for good, and its revocation did not say where it came from
        // (walkthrough 23).
        let _sender = tracing::info_span!(
            "heartbeat",
            peer = %r.peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
        )
        .entered();
        let received = self.lease.now();
        let args = arguments(r.bytes, r.head.inline);
        let grant = match parse_heartbeat(&args) {
            Ok(g) => g,
            Err(e) => return self.heartbeat_refused("syntax", &e),
        };
        match self.role.grant(&grant, received, Source::Heartbeat) {
            Ok(outcome) => {
                self.metrics.heartbeats.inc();
                Verdict::Rewrite {
                    request: Bytes::from_static(INFO_REPLICATION),
                    answer: Answer::Heartbeat {
                        renewed: outcome == GrantOutcome::Renewed,
                    },
                }
            }
            Err(e @ GrantError::EpochMismatch { .. }) => {
                self.heartbeat_refused("epoch", &format!("ERR {e}"))
            }
            Err(e @ GrantError::InvalidTtl) => self.heartbeat_refused("ttl", &format!("ERR {e}")),
            Err(e @ GrantError::UnknownNodeId) => {
                self.heartbeat_refused("node_id", &format!("ERR {e}"))
            }
            Err(e @ GrantError::HandedOver) => {
                self.heartbeat_refused("upgrade", &format!("TRYAGAIN {e}"))
            }
            Err(e @ GrantError::SentinelOnly) => {
                self.heartbeat_refused("sentinel", &format!("ERR {e}"))
            }
        }
    }

    fn heartbeat_refused(&self, reason: &'static str, text: &str) -> Verdict {
        self.metrics
            .heartbeats_refused
            .get_or_create(&crate::guard::gate::Reason { reason })
            .inc();
        Verdict::Reply(crate::resp::encode::error(text))
    }

    /// The heartbeat reply: an INFO-format bulk string built from the node's
    /// `INFO replication` reply (`node_reply`, a complete RESP frame) and the lease.
    pub fn heartbeat_reply(&self, node_reply: &[u8], renewed: bool) -> Bytes {
        let info = crate::kvrocks::topology::Replication::parse_info_frame(node_reply);
        let lease = self.lease.snapshot();
        let nonce = self.lease.issue_nonce();
        let remaining = if lease.remaining_ms == u64::MAX {
            0
        } else {
            lease.remaining_ms
        };
        let body = format!(
            "# Lease\r\nrole:{}\r\nsequence:{}\r\nlease_epoch:{}\r\nlease_remaining_ms:{}\r\nlease_nonce:{}\r\nlease_renewed:{}\r\nlease_owner:{}\r\nlease_mode:{}\r\ncluster_failover_state:{}\r\n",
            info.role.as_deref().unwrap_or("unknown"),
            info.offset.unwrap_or(0),
            lease.epoch,
            remaining,
            nonce,
            u8::from(renewed),
            lease.owner.as_deref().unwrap_or(""),
            serde_json::to_value(lease.mode).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            self.role.failover.state().as_str(),
        );
        crate::resp::encode::bulk(body.as_bytes())
    }

    /// Whether an AUTH or HELLO request carries the control password. If so,
    /// the connection becomes the controller's and the returned verdict says
    /// what reaches the node instead (the control password never does).
    #[cold]
    pub fn authenticate(
        &self,
        special: Special,
        head: &RequestHead,
        bytes: &[u8],
    ) -> Option<(Verdict, bool)> {
        let auth = match special {
            Special::Auth => true,
            Special::Hello => false,
            _ => return None,
        };
        let args = arguments(bytes, head.inline);
        let settings = self.settings.load();
        let password_at = if auth {
            // AUTH password | AUTH username password
            matches!(args.len(), 2 | 3).then(|| args.len() - 1)
        } else {
            hello_password_at(&args)
        };
        let Some(at) = password_at.filter(|&i| settings.control.is_control_password(&args[i]))
        else {
            // Never forwarded, wherever it appears: a misplaced control
            // password would otherwise reach the node (and its logs).
            return args
                .iter()
                .skip(1)
                .any(|a| settings.control.is_control_password(a))
                .then(|| {
                    (
                        Verdict::Reply(Bytes::from_static(CONTROL_PASSWORD_MISPLACED)),
                        false,
                    )
                });
        };
        // The usual Kvrocks deployment has one password: the controller
        // authenticates with the node's `requirepass`, which is then also
        // `control.password`. Such an AUTH/HELLO is the node's as much as
        // the controller's: it goes to the node unchanged (the node checks
        // it, and the session remembers it for a hand-over's replay, as
        // any client's), and the connection is the controller's besides.
        // Not a bare `AUTH <password>` where the node's login names an ACL
        // user: the node would check it as the `default` user's (off, as
        // a rule, where users are named); it gets the node's login below.
        let node_login = settings.backend_login.as_ref();
        if node_login.is_some_and(|login| {
            login.password.as_bytes() == args[at].as_slice()
                && (login.user.is_none() || !auth || args.len() == 3)
        }) {
            return Some((Verdict::Forward, true));
        }
        if auth {
            let verdict = match node_login {
                // The node's answer stands: a wrong `backend.password`
                // must not be answered `+OK` (the next command would get
                // `NOAUTH`, far from its cause).
                Some(login) => Verdict::Rewrite {
                    request: login.auth_request(),
                    answer: Answer::Node,
                },
                None => Verdict::Reply(Bytes::from_static(OK)),
            };
            return Some((verdict, true));
        }
        // HELLO: drop `AUTH <user> <password>`, or put the node's password there.
        let auth_at = at - 2;
        let mut rewritten: Vec<&[u8]> = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            if i == auth_at {
                if let Some(login) = node_login {
                    rewritten.extend_from_slice(&[
                        b"AUTH",
                        login.hello_user().as_bytes(),
                        login.password.as_bytes(),
                    ]);
                }
            } else if !(auth_at..=at).contains(&i) {
                rewritten.push(a);
            }
        }
        Some((
            Verdict::Rewrite {
                request: encode(&rewritten),
                answer: Answer::Hello,
            },
            true,
        ))
    }
}

/// The position of the password in `HELLO [protover [AUTH username password]
/// [SETNAME clientname]]`, parsed by that grammar as Redis does (options in
/// any order, each taking its arguments), never by searching for the word:
/// in `HELLO 3 SETNAME auth ...`, `auth` is a client name.
fn hello_password_at(args: &[Vec<u8>]) -> Option<usize> {
    let mut i = 2;
    let mut found = None;
    while i < args.len() {
        let more = args.len() - i - 1;
        if args[i].eq_ignore_ascii_case(b"auth") && more >= 2 {
            found = Some(i + 2);
            i += 3;
        } else if args[i].eq_ignore_ascii_case(b"setname") && more >= 1 {
            i += 2;
        } else {
            return None; // a syntax error the node will report
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<Vec<u8>> {
        text.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn cidr_matching() {
        let m = AddrMatch::parse("10.1.0.0/16").expect("valid");
        assert!(m.matches("10.1.200.3".parse().expect("ip")));
        assert!(!m.matches("10.2.0.1".parse().expect("ip")));
        assert!(
            m.matches("::ffff:10.1.0.9".parse().expect("ip")),
            "v4-mapped v6"
        );
        let one = AddrMatch::parse("127.0.0.1").expect("valid");
        assert!(!one.matches("127.0.0.2".parse().expect("ip")));
        assert!(AddrMatch::parse("::1")
            .expect("v6")
            .matches("::1".parse().expect("ip")));
        assert!(AddrMatch::parse("10.0.0.0/33").is_err());
        assert!(AddrMatch::parse("nope").is_err());
    }

    #[test]
    fn password_check() {
        let p = ControlPolicy::new(Some("s3cret"), &[]);
        assert!(p.is_control_password(b"s3cret"));
        assert!(!p.is_control_password(b"s3cres"));
        assert!(!p.is_control_password(b"s3cre"));
        assert!(!ControlPolicy::default().is_control_password(b""));
    }

    #[test]
    fn heartbeat_forms() {
        let id = "a".repeat(40);
        let g = parse_heartbeat(&args(&format!("CLUSTERX HEARTBEAT {id} 3000 7"))).expect("valid");
        assert_eq!(
            (g.master_node_id.as_deref(), g.ttl_ms, g.epoch, g.nonce),
            (Some(id.as_str()), 3000, 7, None)
        );
        let g = parse_heartbeat(&args(&format!("clusterx heartbeat {id} 3000 7 NONCE 42")))
            .expect("valid");
        assert_eq!(g.nonce, Some(42));
        let g = parse_heartbeat(&args("CLUSTERX HEARTBEAT 9 2000")).expect("valid");
        assert_eq!((g.master_node_id, g.ttl_ms, g.epoch), (None, 2000, 9));
        let g = parse_heartbeat(&args("CLUSTERX HEARTBEAT 9 2000 nonce 5")).expect("valid");
        assert_eq!(g.nonce, Some(5));
        assert_eq!(
            parse_heartbeat(&args("CLUSTERX HEARTBEAT 9 x")).unwrap_err(),
            "ERR invalid lease_ms"
        );
        assert!(parse_heartbeat(&args("CLUSTERX HEARTBEAT"))
            .unwrap_err()
            .contains("wrong number"));
    }
}
