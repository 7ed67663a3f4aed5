//! What Redis Sentinel says about a master, and what it means for this
//! node's lease.
//!
//! Sentinel knows nothing of leases, but it knows who the master is and
//! how long it has gone without hearing from it. A failover needs the
//! master *objectively down*: at least `quorum` Sentinels must each find it
//! *subjectively down*, which a Sentinel does only once its oldest
//! unanswered ping to it is older than `down-after-milliseconds`. So when a
//! Sentinel answers `SENTINEL MASTER <name>` naming this node, not down,
//! with its last ping sent `p` ms ago and its last valid reply `l` ms ago,
//! that Sentinel cannot find this node down before `down_after − max(p, l)`
//! ms from now. With `N` Sentinels, of which `C` confirm, the `N − C` others
//! may be down on this node already, so a failover needs `quorum − (N − C)`
//! of the confirming ones: the lease runs, from when the question was
//! sent, until the earliest moment that many of them could be down
//! ([`judge`]).
//!
//! A planned `SENTINEL FAILOVER` needs no one down: that is why leasegate
//! answers the promotion's `REPLICAOF NO ONE` by fencing the old master
//! first (see `control::sentinel`), and why a Sentinel naming another
//! master at a config epoch at least as new as the ones naming this node
//! revokes the lease at once.

use redis_protocol::resp2::types::OwnedFrame;

/// One Sentinel's view of the master it monitors under a name, from
/// `SENTINEL MASTER <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterView {
    /// `ip:port` of the master as this Sentinel knows it.
    pub addr: String,
    /// `flags`, split: `master`, `s_down`, `o_down`, `disconnected`,
    /// `failover_in_progress`, ...
    pub flags: Vec<String>,
    /// ms since the oldest ping still unanswered was sent (0: none pending).
    pub last_ping_sent_ms: u64,
    /// ms since the master last gave a valid reply.
    pub last_ok_ping_reply_ms: u64,
    pub down_after_ms: u64,
    pub config_epoch: u64,
    pub quorum: usize,
    /// Other Sentinels this one knows monitor the same master.
    pub other_sentinels: usize,
    /// `failover-state` of the failover this Sentinel leads (`wait_start`,
    /// `select_slave`, `send_slaveof_noone`, `wait_promotion`, ...);
    /// present only while one is in progress.
    pub failover_state: Option<String>,
}

impl MasterView {
    /// Whether this Sentinel considers the master unhealthy or being
    /// replaced: then it confirms nothing.
    pub fn troubled(&self) -> Option<&str> {
        self.flags.iter().map(String::as_str).find(|f| {
            matches!(
                *f,
                "s_down" | "o_down" | "failover_in_progress" | "disconnected"
            )
        })
    }

    /// Whether this Sentinel is leading a failover of the master it names
    /// (it names the old one until the failover ends).
    pub fn in_failover(&self) -> bool {
        self.flags.iter().any(|f| f == "failover_in_progress")
    }

    /// Whether this Sentinel's failover has sent (or is about to send) the
    /// promotion to the chosen replica: past choosing one. A failover in
    /// progress without a state is taken to be past it.
    pub fn promoting(&self) -> bool {
        self.in_failover()
            && !matches!(
                self.failover_state.as_deref(),
                Some("wait_start" | "select_slave")
            )
    }

    /// How long from its answer this Sentinel cannot find the master
    /// subjectively down.
    pub fn undisputed_ms(&self) -> u64 {
        self.down_after_ms
            .saturating_sub(self.last_ping_sent_ms.max(self.last_ok_ping_reply_ms))
    }
}

/// Reads `SENTINEL MASTER <name>`'s reply: a flat array of field names and
/// values (RESP2), or a map (RESP3 decoded as RESP2 never has one).
pub fn parse_master(frame: &OwnedFrame) -> Result<MasterView, String> {
    let OwnedFrame::Array(items) = frame else {
        return Err(format!(
            "SENTINEL MASTER answered {frame:?}, not a field list"
        ));
    };
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        OwnedFrame::SimpleString(s) => Some(String::from_utf8_lossy(s).into_owned()),
        OwnedFrame::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    let fields: Vec<(String, String)> = items
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((text(k)?, text(v)?)),
            _ => None,
        })
        .collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("SENTINEL MASTER has no '{name}'"))
    };
    let number = |name: &str| -> Result<u64, String> {
        let v = get(name)?;
        v.parse()
            .map_err(|_| format!("SENTINEL MASTER '{name}' is '{v}', not a number"))
    };
    Ok(MasterView {
        addr: format!("{}:{}", get("ip")?, get("port")?),
        flags: get("flags")?.split(',').map(str::to_string).collect(),
        last_ping_sent_ms: number("last-ping-sent")?,
        last_ok_ping_reply_ms: number("last-ok-ping-reply")?,
        down_after_ms: number("down-after-milliseconds")?,
        config_epoch: number("config-epoch")?,
        quorum: number("quorum")? as usize,
        other_sentinels: number("num-other-sentinels")? as usize,
        failover_state: get("failover-state").ok().map(str::to_string),
    })
}

/// What the Sentinels' answers to one poll mean for this node's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// No failover can begin for `valid_ms` from when the poll was sent.
    Renew {
        valid_ms: u64,
        confirmed: usize,
        sentinels: usize,
    },
    /// A Sentinel names another master, at a config epoch at least as new
    /// as any naming this node.
    Revoke { master: String, epoch: u64 },
    /// A Sentinel failing this node over has sent the promotion (it names
    /// this node, flagged `failover_in_progress`,
    /// [`MasterView::promoting`]): nothing is renewed, and this node's writes
    /// are held until the Sentinels name the new master or the failover
    /// ends without one.
    Hold { why: String },
    /// Not enough Sentinels vouch for this node (unreachable, or seeing it
    /// down or being replaced): the lease is not renewed and runs out.
    Withhold { why: String },
}

/// Judges one poll: `answers` from every configured Sentinel (an error for
/// those that did not answer), `me` this leasegate's address as the
/// Sentinels know it, `configured` how many Sentinels the config lists.
pub fn judge(answers: &[Result<MasterView, String>], me: &str, configured: usize) -> Judgement {
    let views: Vec<&MasterView> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let Some(quorum) = views.iter().map(|v| v.quorum).min() else {
        let why = answers
            .iter()
            .find_map(|a| a.as_ref().err().cloned())
            .unwrap_or_else(|| "no Sentinel configured".into());
        return Judgement::Withhold {
            why: format!("no Sentinel answered: {why}"),
        };
    };
    // Every Sentinel any of them knows counts, answering or not.
    let sentinels = views
        .iter()
        .map(|v| v.other_sentinels + 1)
        .max()
        .unwrap_or(0)
        .max(configured);
    let naming_me = views.iter().filter(|v| same_addr(&v.addr, me));
    let my_epoch = naming_me.clone().map(|v| v.config_epoch).max();
    // A Sentinel leading a failover names the old master, at the new
    // epoch, until its failover ends (every replica reconfigured: seconds):
    // that names nobody. The other Sentinels name the new master as soon
    // as they hear of it, and the old master's leasegate is revoked by
    // them (and paused before the promotion passed: `control::sentinel`).
    if let Some(other) = views
        .iter()
        .filter(|v| !same_addr(&v.addr, me))
        .filter(|v| !v.in_failover())
        .filter(|v| my_epoch.is_none_or(|mine| v.config_epoch >= mine))
        .max_by_key(|v| v.config_epoch)
    {
        return Judgement::Revoke {
            master: other.addr.clone(),
            epoch: other.config_epoch,
        };
    }
    // The Sentinel failing this node over: its view names this node until
    // its failover ends, and the others do until they hear of the new
    // master. Once it has sent the promotion, that may have passed (the
    // fence could not reach this leasegate: frozen, cut off), so no renewal
    // may extend what this node has, and its writes wait. (Before, it only
    // vouches for nothing, as a troubled view.)
    if let Some(v) = naming_me.clone().find(|v| v.promoting()) {
        return Judgement::Hold {
            why: format!(
                "a Sentinel is failing this node over (config epoch {})",
                v.config_epoch
            ),
        };
    }
    let mut undisputed: Vec<u64> = naming_me
        .filter(|v| v.troubled().is_none())
        .map(|v| v.undisputed_ms())
        .filter(|ms| *ms > 0)
        .collect();
    let confirmed = undisputed.len();
    // The confirming Sentinels a failover still needs down.
    let needed = (quorum + confirmed).saturating_sub(sentinels);
    if needed == 0 || confirmed == 0 {
        let trouble = views.iter().find_map(|v| {
            v.troubled()
                .map(|t| format!("a Sentinel flags this node {t}"))
        });
        return Judgement::Withhold {
            why: format!(
                "{confirmed} of {sentinels} Sentinels vouch for this node; a failover needs {quorum} to find it down{}",
                trouble.map(|t| format!(" ({t})")).unwrap_or_default()
            ),
        };
    }
    undisputed.sort_unstable();
    // A quorum larger than the Sentinels known (a misconfiguration, warned
    // of at start-up) needs more than vouch: the lease lasts no longer than
    // the last one vouches. (Indexed past the end, the poll task panicked
    // and writes stayed fenced: an audit.)
    let last = needed.min(confirmed) - 1;
    Judgement::Renew {
        valid_ms: undisputed[last],
        confirmed,
        sentinels,
    }
}

/// Sentinel's ping period to a master: once a second, or every
/// `down-after-milliseconds` when that is shorter.
const SENTINEL_PING_PERIOD_MS: u64 = 1_000;

/// What is wrong with a deployment, judged from the Sentinels' first
/// answers: `configured` Sentinels listed, polled every `poll_ms`, with
/// `margin_ms` taken off each lease. Each entry is a warning for the log.
pub fn check_deployment(
    views: &[&MasterView],
    configured: usize,
    poll_ms: u64,
    margin_ms: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let known = views
        .iter()
        .map(|v| v.other_sentinels + 1)
        .max()
        .unwrap_or(0);
    if known > configured {
        out.push(format!(
            "the Sentinels know {known} Sentinels but sentinel.addrs lists {configured}: the unlisted ones count as not vouching, list them all"
        ));
    }
    if let Some(v) = views.iter().min_by_key(|v| v.down_after_ms) {
        let needed = SENTINEL_PING_PERIOD_MS
            .min(v.down_after_ms)
            .saturating_add(poll_ms)
            .saturating_add(margin_ms);
        if v.down_after_ms <= needed {
            out.push(format!(
                "down-after-milliseconds is {} ms: a Sentinel vouches for at most that long after its last ping (sent every {} ms), less the poll interval ({poll_ms} ms) and margin ({margin_ms} ms): the lease will lapse between pings; use 2000 ms or more",
                v.down_after_ms,
                SENTINEL_PING_PERIOD_MS.min(v.down_after_ms)
            ));
        }
    }
    if let Some(q) = views.iter().map(|v| v.quorum).min() {
        if q > configured {
            out.push(format!(
                "the quorum ({q}) is larger than the Sentinels listed ({configured})"
            ));
        }
    }
    out
}

/// `ip:port` equality, the IP compared as an address where it is one
/// (`127.0.0.1` and `127.000.000.001` are not told apart by Sentinel, but
/// `::1` and `0:0:0:0:0:0:0:1` are the same).
pub fn same_addr(a: &str, b: &str) -> bool {
    let split = |s: &str| {
        s.rsplit_once(':')
            .map(|(h, p)| (h.trim_matches(['[', ']']).to_string(), p.to_string()))
    };
    match (split(a), split(b)) {
        (Some((ha, pa)), Some((hb, pb))) => {
            pa == pb
                && match (
                    ha.parse::<std::net::IpAddr>(),
                    hb.parse::<std::net::IpAddr>(),
                ) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => ha.eq_ignore_ascii_case(&hb),
                }
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "10.0.0.1:7000";

    fn view(addr: &str, flags: &str, ping: u64, ok: u64, epoch: u64) -> MasterView {
        MasterView {
            addr: addr.into(),
            flags: flags.split(',').map(str::to_string).collect(),
            last_ping_sent_ms: ping,
            last_ok_ping_reply_ms: ok,
            down_after_ms: 5_000,
            config_epoch: epoch,
            quorum: 2,
            other_sentinels: 2,
            failover_state: None,
        }
    }

    fn ok(v: MasterView) -> Result<MasterView, String> {
        Ok(v)
    }

    #[test]
    fn the_reply_of_a_real_sentinel_is_read() {
        let pairs = [
            ("name", "m"),
            ("ip", "127.0.0.1"),
            ("port", "27001"),
            ("runid", "3aa3"),
            ("flags", "master"),
            ("last-ping-sent", "0"),
            ("last-ok-ping-reply", "435"),
            ("last-ping-reply", "435"),
            ("down-after-milliseconds", "3000"),
            ("config-epoch", "4"),
            ("num-slaves", "1"),
            ("num-other-sentinels", "2"),
            ("quorum", "2"),
        ];
        let frame = OwnedFrame::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| {
                    [
                        OwnedFrame::BulkString(k.as_bytes().to_vec()),
                        OwnedFrame::BulkString(v.as_bytes().to_vec()),
                    ]
                })
                .collect(),
        );
        let v = parse_master(&frame).expect("parsed");
        assert_eq!(v.addr, "127.0.0.1:27001");
        assert_eq!(v.undisputed_ms(), 3000 - 435);
        assert_eq!((v.config_epoch, v.quorum, v.other_sentinels), (4, 2, 2));
        assert!(v.troubled().is_none());
        let missing = OwnedFrame::Array(vec![]);
        assert!(parse_master(&missing)
            .expect_err("empty")
            .contains("no 'ip'"));
    }

    /// Three Sentinels, quorum 2: with all three vouching, a failover needs
    /// two of them down, so the lease runs to the second earliest.
    #[test]
    fn the_lease_runs_until_a_quorum_could_find_the_node_down() {
        let answers = [
            ok(view(ME, "master", 0, 900, 1)),
            ok(view(ME, "master", 300, 100, 1)),
            ok(view(ME, "master", 0, 50, 1)),
        ];
        assert_eq!(
            judge(&answers, ME, 3),
            Judgement::Renew {
                valid_ms: 4_700,
                confirmed: 3,
                sentinels: 3
            }
        );
        // One unreachable: it may find the node down already, so the first
        // of the other two to do so completes the quorum.
        let answers = [
            Err("timed out".into()),
            ok(view(ME, "master", 300, 100, 1)),
            ok(view(ME, "master", 0, 50, 1)),
        ];
        assert_eq!(
            judge(&answers, ME, 3),
            Judgement::Renew {
                valid_ms: 4_700,
                confirmed: 2,
                sentinels: 3
            }
        );
    }

    /// One Sentinel, quorum 2 (Sentinel takes it; no failover can then
    /// find the node down): the lease lasts as long as the one vouches.
    /// (It indexed past the end and the poll task panicked: an audit.)
    #[test]
    fn a_quorum_larger_than_the_sentinels_renews_as_far_as_they_vouch() {
        let mut alone = view(ME, "master", 0, 900, 1);
        alone.other_sentinels = 0;
        assert_eq!(
            judge(&[ok(alone)], ME, 1),
            Judgement::Renew {
                valid_ms: 4_100,
                confirmed: 1,
                sentinels: 1
            }
        );
        let mut troubled = view(ME, "master,s_down", 0, 900, 1);
        troubled.other_sentinels = 0;
        assert!(matches!(
            judge(&[ok(troubled)], ME, 1),
            Judgement::Withhold { .. }
        ));
    }

    #[test]
    fn too_few_vouching_sentinels_withhold_the_lease() {
        // Two of three unreachable: the one left cannot stop a quorum of two.
        let answers = [
            Err("refused".into()),
            Err("refused".into()),
            ok(view(ME, "master", 0, 50, 1)),
        ];
        let Judgement::Withhold { why } = judge(&answers, ME, 3) else {
            panic!("renewed on one Sentinel of three");
        };
        assert!(why.contains("1 of 3 Sentinels vouch"), "{why}");
        // Sentinels that see the node down vouch for nothing (one replacing
        // it holds its writes: `a_sentinel_failing_this_node_over_...`).
        for flag in ["master,s_down", "master,disconnected"] {
            let answers = [
                ok(view(ME, flag, 0, 50, 1)),
                ok(view(ME, flag, 0, 50, 1)),
                ok(view(ME, "master", 0, 50, 1)),
            ];
            assert!(
                matches!(judge(&answers, ME, 3), Judgement::Withhold { .. }),
                "{flag}"
            );
        }
        // A node silent for longer than down-after-milliseconds.
        let answers = [
            ok(view(ME, "master", 5_200, 5_200, 1)),
            ok(view(ME, "master", 5_200, 5_200, 1)),
            ok(view(ME, "master", 0, 50, 1)),
        ];
        assert!(matches!(judge(&answers, ME, 3), Judgement::Withhold { .. }));
    }

    /// The Sentinel leading a failover names the old master at the new
    /// epoch until every replica is reconfigured (seconds): the new master
    /// is renewed once a quorum names it, and the old master is revoked.
    #[test]
    fn the_leaders_view_during_its_failover_withholds_nothing() {
        const OLD: &str = "10.0.0.9:7000";
        let answers = [
            ok(view(OLD, "master,failover_in_progress", 0, 50, 8)),
            ok(view(ME, "master", 0, 50, 8)),
            ok(view(ME, "master", 0, 50, 8)),
        ];
        assert!(
            matches!(judge(&answers, ME, 3), Judgement::Renew { .. }),
            "{:?}",
            judge(&answers, ME, 3)
        );
        assert!(matches!(
            judge(&answers, OLD, 3),
            Judgement::Revoke { epoch: 8, .. }
        ));
    }

    /// A Sentinel failing this node over still names it: no renewal (the
    /// promotion may have passed while this leasegate could not be
    /// fenced), and its writes are held.
    #[test]
    fn a_sentinel_failing_this_node_over_holds_its_writes() {
        let leader = |state: Option<&str>| {
            let mut v = view(ME, "master,failover_in_progress", 0, 50, 1);
            v.failover_state = state.map(str::to_string);
            v
        };
        for state in [None, Some("send_slaveof_noone"), Some("wait_promotion")] {
            let answers = [
                ok(leader(state)),
                ok(view(ME, "master", 0, 50, 1)),
                ok(view(ME, "master", 0, 50, 1)),
            ];
            assert!(
                matches!(judge(&answers, ME, 3), Judgement::Hold { .. }),
                "{state:?}: {:?}",
                judge(&answers, ME, 3)
            );
        }
        // Still choosing a replica: nothing promoted yet, the others vouch.
        let answers = [
            ok(leader(Some("select_slave"))),
            ok(view(ME, "master", 0, 50, 1)),
            ok(view(ME, "master", 0, 50, 1)),
        ];
        assert!(matches!(judge(&answers, ME, 3), Judgement::Renew { .. }));
    }

    /// Sentinels that know more Sentinels than the config lists count them:
    /// the unlisted ones may be the quorum.
    #[test]
    fn sentinels_the_config_does_not_list_still_count() {
        let mut v = view(ME, "master", 0, 50, 1);
        v.other_sentinels = 4;
        let answers = [ok(v.clone()), ok(v.clone()), ok(v)];
        assert!(matches!(judge(&answers, ME, 3), Judgement::Withhold { .. }));
    }

    #[test]
    fn a_sentinel_naming_another_master_at_a_newer_epoch_revokes() {
        let answers = [
            ok(view(ME, "master", 0, 50, 1)),
            ok(view("10.0.0.2:7000", "master", 0, 50, 2)),
            ok(view(ME, "master", 0, 50, 1)),
        ];
        assert_eq!(
            judge(&answers, ME, 3),
            Judgement::Revoke {
                master: "10.0.0.2:7000".into(),
                epoch: 2
            }
        );
        // An older epoch naming another node is a Sentinel that has not
        // heard of a failover back to this node: it does not revoke.
        let answers = [
            ok(view(ME, "master", 0, 50, 3)),
            ok(view("10.0.0.2:7000", "master", 0, 50, 2)),
            ok(view(ME, "master", 0, 50, 3)),
        ];
        assert!(matches!(judge(&answers, ME, 3), Judgement::Renew { .. }));
    }

    #[test]
    fn a_deployment_the_lease_cannot_cover_is_reported() {
        let v = view(ME, "master", 0, 50, 1);
        assert!(
            check_deployment(&[&v], 3, 100, 100).is_empty(),
            "5 s down-after, 3 Sentinels"
        );
        let mut short = v.clone();
        short.down_after_ms = 1_000;
        let w = check_deployment(&[&short], 3, 100, 100);
        assert!(
            w.len() == 1 && w[0].contains("lapse between pings"),
            "{w:?}"
        );
        let w = check_deployment(&[&v], 2, 100, 100);
        assert!(w.len() == 1 && w[0].contains("know 3 Sentinels"), "{w:?}");
    }

    #[test]
    fn addresses_compare_as_addresses() {
        assert!(same_addr("127.0.0.1:7000", "127.0.0.1:7000"));
        assert!(same_addr("[::1]:7000", "0:0:0:0:0:0:0:1:7000"));
        assert!(!same_addr("127.0.0.1:7000", "127.0.0.1:7001"));
        assert!(same_addr("Node-A:7000", "node-a:7000"));
    }
}
