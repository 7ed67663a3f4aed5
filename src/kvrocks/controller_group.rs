//! A topology that a kvrocks-controller raft group stands behind.
//!
//! Every kvrocks-controller serves the cluster topology from its own copy of
//! the store, a raft follower too, and one cut off from the other
//! controllers (a partition, a majority stopped) goes on serving its last
//! copy for ever: a master polling it would renew its lease while the
//! others promoted its replica (seen with 1.2.0, three controllers, two of
//! them stopped: the third answered the topology, `200`, for as long as it
//! was asked). So every read of the topology (each poll, each verification
//! round, each failover's topology read) also asks the same controller for
//! its raft leader (`GET /api/v1/raft/peers`), at once, and:
//!
//! * **one controller** (`controller.url` a single address, perhaps one in
//!   front of the whole group): an answer from a controller that knows no
//!   leader gives no topology. A follower drops its leader within its
//!   election timeout of losing it (`raft.election_seconds`, up to twice
//!   that: raft randomizes it), which bounds how stale an answer can be. A
//!   *leader* cut off from the rest stays leader in 1.2.0 (it has no
//!   check-quorum) and cannot be told apart this way.
//! * **every controller of the group** (`controller.url` a list): all are
//!   asked at once, and a topology is taken only once a majority of them
//!   has answered naming one raft leader; of the topologies answered by
//!   then, the newest among those naming the majority's leader. The
//!   majority is one of the raft group (the most peers any member names),
//!   not of the list. A leader cut off from the rest, with any master cut
//!   off beside it, is one voice of three: it renews nothing. A request
//!   the read no longer waits for finishes in the background, bounded,
//!   so its connection is reused ([`finish_detached`]).
//!
//! A controller without a raft store of its own (`404`, or `raft engine is
//! not enabled`: etcd, whose reads go to its quorum) is taken at its
//! topology's word; in a list, such members agree with each other once
//! all have answered and none names a raft leader (so give etcd-backed
//! controllers one address: a list waits for its slowest member). Any
//! other failure to name a leader fails that controller's answer: one that
//! cannot say whether it has a leader vouches for nothing.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;

use super::controller::{describe_error, fetch_answer, get, parse_cluster, Cluster, HttpClient};

/// The cluster topology at `urls` (the cluster's URL at one controller, or
/// at every controller of one raft group: [`super::controller::cluster_urls`]),
/// parsed, as the group stands behind it (see the module's doc), within
/// `timeout`.
pub async fn fetch_led(
    client: &HttpClient,
    urls: &[String],
    timeout: Duration,
) -> Result<Cluster, String> {
    parse_cluster(&fetch_led_noting(client, urls, timeout, &mut |_, _| {}).await?)
}

/// [`fetch_led`], the body of the chosen `200` answer unparsed.
pub async fn fetch_led_answer(
    client: &HttpClient,
    urls: &[String],
    timeout: Duration,
) -> Result<Bytes, String> {
    fetch_led_noting(client, urls, timeout, &mut |_, _| {}).await
}

/// [`fetch_led_answer`], telling `note` what each controller (its base
/// address) answered, as it is known: the poller counts them, so that a
/// controller that fails while the others answer is seen before a second
/// one does.
pub async fn fetch_led_noting(
    client: &HttpClient,
    urls: &[String],
    timeout: Duration,
    note: &mut (dyn FnMut(&str, Heard) + Send),
) -> Result<Bytes, String> {
    match urls {
        [] => Err("no controller address is configured".into()),
        [url] => match tokio::time::timeout(timeout, member_answer(client, url)).await {
            Ok(answer) => {
                note(member(url), Heard::of(&answer));
                let answer = answer?;
                match answer.leader {
                    Leader::Unknown => Err(format!(
                        "the controller knows no raft leader ({} answers leader 0): it may be cut off from the other controllers, and its topology out of date",
                        raft_peers_url_beside(url)
                    )),
                    Leader::Known(_) | Leader::NoRaft => Ok(answer.topology),
                }
            }
            Err(_) => {
                note(member(url), Heard::Late);
                Err(format!(
                    "the controller at {} gave no answer within {} ms",
                    member(url),
                    timeout.as_millis()
                ))
            }
        },
        _ => majority_answer(client, urls, timeout, note).await,
    }
}

/// What one controller answered a read, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A topology, naming a raft leader (or from a controller without raft).
    Led,
    /// A topology from a controller that knows no raft leader.
    NoLeader,
    /// An error, or an answer that could not be read.
    Failed,
    /// Nothing yet when the read was decided (a majority had answered, or
    /// the time was up).
    Late,
}

impl Heard {
    fn of(answer: &Result<MemberAnswer, String>) -> Heard {
        match answer {
            Ok(a) if a.leader == Leader::Unknown => Heard::NoLeader,
            Ok(_) => Heard::Led,
            Err(_) => Heard::Failed,
        }
    }

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Heard::Led => "led",
            Heard::NoLeader => "no_leader",
            Heard::Failed => "error",
            Heard::Late => "late",
        }
    }
}

/// Asks every member at once; answers once a majority names one leader,
/// once none can, or at `timeout` (saying what each had answered).
async fn majority_answer(
    client: &HttpClient,
    urls: &[String],
    timeout: Duration,
    note: &mut (dyn FnMut(&str, Heard) + Send),
) -> Result<Bytes, String> {
    // A handful of futures of one type, polled in turn: a majority decides
    // before the slowest answer (a stopped controller's never comes).
    let mut pending: Vec<_> = urls
        .iter()
        .map(|url| {
            let (client, url) = (client.clone(), url.clone());
            Some(Box::pin(async move { member_answer(&client, &url).await }))
        })
        .collect();
    let mut tally = Tally::new(urls.len());
    let until = tokio::time::Instant::now() + timeout;
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    std::future::poll_fn(|cx| {
        for (url, slot) in urls.iter().zip(pending.iter_mut()) {
            let Some(answer) = slot.as_mut() else {
                continue;
            };
            if let Poll::Ready(answer) = answer.as_mut().poll(cx) {
                *slot = None;
                note(member(url), tally.add(url, answer));
            }
        }
        let late = |note: &mut (dyn FnMut(&str, Heard) + Send)| {
            urls.iter()
                .zip(&pending)
                .filter(|(_, slot)| slot.is_some())
                .map(|(url, _)| {
                    note(member(url), Heard::Late);
                    format!("{}: no answer", member(url))
                })
                .collect::<Vec<_>>()
        };
        if let Some(verdict) = tally.verdict() {
            late(note);
            for (url, slot) in urls.iter().zip(pending.iter_mut()) {
                if let Some(answer) = slot.take() {
                    finish_detached(url, answer, until);
                }
            }
            return Poll::Ready(verdict);
        }
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let unanswered = late(note);
        tally.said.extend(unanswered);
        Poll::Ready(Err(format!(
            "no majority of the {} controllers named one raft leader within {} ms: {}",
            urls.len(),
            timeout.as_millis(),
            tally.said.join("; ")
        )))
    })
    .await
}

/// Lets a request the read no longer waits for finish (until `until`),
/// so that its connection goes back to the pool: dropped, each closed its
/// connection, and with verification on every write the slowest of three
/// controllers, late about one round in three, had a new connection a
/// round (thousands a second, each left in `TIME_WAIT`). At most
/// [`DETACHED_PER_CONTROLLER`] at a time per controller: one that does
/// not answer (frozen) holds that many, and the rest are dropped.
fn finish_detached<F>(url: &str, answer: std::pin::Pin<Box<F>>, until: tokio::time::Instant)
where
    F: Future + Send + 'static,
{
    static DETACHED: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());
    let key = member(url).to_string();
    {
        let mut detached = DETACHED.lock().unwrap_or_else(|p| p.into_inner());
        match detached.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) if *n >= DETACHED_PER_CONTROLLER => return,
            Some((_, n)) => *n += 1,
            None => detached.push((key.clone(), 1)),
        }
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout_at(until, answer).await;
        let mut detached = DETACHED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = detached.iter_mut().find(|(k, _)| *k == key) {
            *n = n.saturating_sub(1);
        }
    });
}

/// Requests a controller may have finishing after their reads were
/// decided.
const DETACHED_PER_CONTROLLER: usize = 8;

/// A controller as the logs name it: its base address.
fn member(url: &str) -> &str {
    url.split("/api/v1/").next().unwrap_or(url)
}

/// One controller's answer: its topology, and the raft leader it knows.
struct MemberAnswer {
    topology: Bytes,
    leader: Leader,
    /// How many controllers its raft group has, as it names them (0:
    /// not said).
    peers: usize,
}

/// The raft leader a controller names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    /// Raft id `n`.
    Known(u64),
    /// It knows none (`leader: 0`): it may be cut off from the others.
    Unknown,
    /// It has no raft store of its own (etcd): its reads are its store's.
    NoRaft,
}

/// The topology and raft leader of the controller at `url` (a cluster's
/// URL), both asked at once.
async fn member_answer(client: &HttpClient, url: &str) -> Result<MemberAnswer, String> {
    let peers_url = raft_peers_url_beside(url);
    let (topology, leader) =
        tokio::join!(fetch_answer(client, url), raft_leader(client, &peers_url));
    let (leader, peers) = leader?;
    Ok(MemberAnswer {
        topology: topology?,
        leader,
        peers,
    })
}

/// What the members of a group answered so far, and whether a majority
/// stands behind an answer yet.
struct Tally {
    /// Controllers listed.
    members: usize,
    answered: usize,
    /// The raft group's size: the most peers any member named, or the
    /// list's length if that is more. A majority is one of the group,
    /// not of the list: with 3 of 5 listed, two that still hear a leader
    /// cut off from the other three are no majority.
    group: usize,
    /// Each topology answered: the leader its member named, its version,
    /// its body.
    read: Vec<(Leader, u64, Bytes)>,
    /// What each member said, for the error when no majority forms.
    said: Vec<String>,
    /// Members whose read failed (no topology, or no raft leader to ask).
    failed: usize,
}

impl Tally {
    fn new(members: usize) -> Self {
        Self {
            members,
            answered: 0,
            group: members,
            read: Vec::new(),
            said: Vec::new(),
            failed: 0,
        }
    }

    /// Counts the answer of the controller at `url`; what it was.
    fn add(&mut self, url: &str, answer: Result<MemberAnswer, String>) -> Heard {
        self.answered += 1;
        let member = member(url);
        let answer = answer.and_then(|a| {
            let version = parse_cluster(&a.topology)?.version;
            Ok((a, version))
        });
        let (answer, version) = match answer {
            Ok(read) => read,
            Err(e) => {
                self.said.push(format!("{member}: {e}"));
                self.failed += 1;
                return Heard::Failed;
            }
        };
        self.group = self.group.max(answer.peers);
        let (leader, heard) = match answer.leader {
            Leader::Known(id) => (format!("leader {id}"), Heard::Led),
            Leader::Unknown => ("no raft leader".into(), Heard::NoLeader),
            Leader::NoRaft => ("no raft store".into(), Heard::Led),
        };
        self.said
            .push(format!("{member}: {leader}, topology version {version}"));
        if answer.leader != Leader::Unknown {
            self.read.push((answer.leader, version, answer.topology));
        }
        heard
    }

    /// The answer once a majority named one leader (the newest topology
    /// among theirs); an error once no leader can gather a majority any
    /// more; `None` while one still can.
    fn verdict(&self) -> Option<Result<Bytes, String>> {
        // Members without raft agree with each other only once all have
        // answered and none names a raft leader (a path that answers 404
        // is no vote against one that does, however soon it answers).
        let any_led = self
            .read
            .iter()
            .any(|(l, _, _)| matches!(l, Leader::Known(_)));
        let voters = || {
            self.read
                .iter()
                .filter(move |(l, _, _)| !(any_led && *l == Leader::NoRaft))
        };
        let majority = self.group / 2 + 1;
        let mut most = 0;
        for (leader, _, _) in voters() {
            let behind: Vec<_> = voters().filter(|(l, _, _)| l == leader).collect();
            most = most.max(behind.len());
            let settled = *leader != Leader::NoRaft || self.answered == self.members;
            if behind.len() >= majority && settled {
                let newest = behind.into_iter().max_by_key(|(_, version, _)| *version);
                return newest.map(|(_, _, body)| Ok(body.clone()));
            }
        }
        if most + (self.members - self.answered) >= majority && self.answered < self.members {
            return None;
        }
        let listed = if self.group > self.members {
            format!(
                "; controller.url lists {} of them: list every controller of the group",
                self.members
            )
        } else {
            String::new()
        };
        // Every read failed: not a question of raft leaders (a wrong
        // namespace, port or path reads the same everywhere).
        let headline = if self.failed == self.answered {
            format!(
                "no controller answered with the topology ({majority} of {} needed{listed})",
                self.group
            )
        } else {
            format!(
                "no majority of the {} controllers names one raft leader ({majority} needed{listed})",
                self.group
            )
        };
        Some(Err(format!("{headline}: {}", self.said.join("; "))))
    }
}

/// The raft leader a controller knows, where it has a raft store of its
/// own (no such path, or it says its raft engine is not enabled: no
/// raft). Any other error fails the question.
async fn raft_leader(client: &HttpClient, peers_url: &str) -> Result<(Leader, usize), String> {
    let (status, body) = get(client, peers_url).await?;
    if status == StatusCode::NOT_FOUND
        || (status != StatusCode::OK
            && String::from_utf8_lossy(&body).contains("raft engine is not enabled"))
    {
        return Ok((Leader::NoRaft, 0));
    }
    if status != StatusCode::OK {
        return Err(format!(
            "the controller cannot name its raft leader: {}",
            describe_error(status.as_u16(), &body)
        ));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the controller's raft peers are not JSON: {e}"))?;
    let peers = answer
        .pointer("/data/peers")
        .and_then(serde_json::Value::as_object)
        .map_or(0, serde_json::Map::len);
    match answer
        .pointer("/data/leader")
        .and_then(serde_json::Value::as_u64)
    {
        Some(0) => Ok((Leader::Unknown, peers)),
        Some(id) => Ok((Leader::Known(id), peers)),
        None => Err(format!(
            "the controller's raft peers name no leader field: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// The controller's raft leader and peers, `{base}/api/v1/raft/peers`, for
/// a cluster's `url` (`{base}/api/v1/namespaces/...`).
fn raft_peers_url_beside(url: &str) -> String {
    format!("{}/api/v1/raft/peers", member(url).trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(leader: Leader, version: u64) -> Result<MemberAnswer, String> {
        said_of_group(leader, version, 3)
    }

    fn said_of_group(leader: Leader, version: u64, peers: usize) -> Result<MemberAnswer, String> {
        Ok(MemberAnswer {
            topology: Bytes::from(format!(
                r#"{{"data":{{"cluster":{{"version":{version},"shards":[]}}}}}}"#
            )),
            leader,
            peers,
        })
    }

    fn version_of(verdict: Option<Result<Bytes, String>>) -> u64 {
        let body = verdict.expect("decided").expect("a topology");
        parse_cluster(&body).expect("parses").version
    }

    #[test]
    fn a_majority_naming_one_leader_decides_before_the_slowest_answers() {
        let mut tally = Tally::new(3);
        tally.add("a", said(Leader::Known(2), 7));
        assert!(tally.verdict().is_none(), "one of three is no majority");
        tally.add("b", said(Leader::Known(2), 8));
        assert_eq!(version_of(tally.verdict()), 8, "the freshest of the two");
    }

    /// A wrong namespace, port or path fails every read alike: the error
    /// says no controller answered, not that raft has no leader.
    #[test]
    fn every_read_failed_is_no_question_of_leaders() {
        let mut tally = Tally::new(3);
        for m in ["a", "b", "c"] {
            tally.add(
                m,
                Err("controller answered 500: cluster: key not found".into()),
            );
        }
        let error = tally.verdict().expect("decided").expect_err("no topology");
        assert!(
            error.starts_with("no controller answered with the topology (2 of 3 needed)"),
            "{error}"
        );
        let mut tally = Tally::new(3);
        tally.add("a", said(Leader::Unknown, 3));
        tally.add("b", Err("down".into()));
        tally.add("c", Err("down".into()));
        let error = tally.verdict().expect("decided").expect_err("no leader");
        assert!(
            error.starts_with("no majority of the 3 controllers names one raft leader"),
            "{error}"
        );
    }

    #[test]
    fn a_leader_cut_off_from_the_rest_is_one_voice() {
        let mut tally = Tally::new(3);
        tally.add("old-leader", said(Leader::Known(1), 9));
        tally.add("b", Err("cannot reach the controller".into()));
        assert!(tally.verdict().is_none(), "the third may still agree");
        tally.add("c", Err("cannot reach the controller".into()));
        let error = tally.verdict().expect("decided").expect_err("no majority");
        assert!(
            error.contains("no majority of the 3 controllers")
                && error.contains("old-leader: leader 1"),
            "{error}"
        );
    }

    #[test]
    fn members_naming_different_leaders_or_none_make_no_majority() {
        let mut tally = Tally::new(3);
        tally.add("a", said(Leader::Known(1), 5));
        tally.add("b", said(Leader::Known(2), 6));
        assert!(tally.verdict().is_none());
        tally.add("c", said(Leader::Unknown, 6));
        assert!(tally.verdict().expect("decided").is_err());
    }

    #[test]
    fn the_newest_topology_of_the_majority_is_taken() {
        let mut tally = Tally::new(3);
        tally.add("b", said(Leader::Unknown, 13));
        tally.add("a", said(Leader::Known(1), 11));
        tally.add("c", said(Leader::Known(1), 12));
        assert_eq!(
            version_of(tally.verdict()),
            12,
            "the newest of those naming the leader, not the leaderless one's"
        );
    }

    #[test]
    fn a_majority_is_one_of_the_raft_group_not_of_the_list() {
        // Three of a group of five listed: two that still hear the old
        // leader are no majority of five.
        let mut tally = Tally::new(3);
        tally.add("a", said_of_group(Leader::Known(1), 7, 5));
        tally.add("b", said_of_group(Leader::Known(1), 7, 5));
        assert!(
            tally.verdict().is_none(),
            "two of five: the third may agree"
        );
        tally.add("c", Err("cannot reach the controller".into()));
        let error = tally.verdict().expect("decided").expect_err("no majority");
        assert!(
            error.contains("of the 5 controllers") && error.contains("lists 3 of them"),
            "{error}"
        );
    }

    #[test]
    fn a_member_without_raft_is_no_vote_beside_one_naming_a_leader() {
        let mut tally = Tally::new(3);
        tally.add("a", said_of_group(Leader::NoRaft, 9, 0));
        tally.add("b", said_of_group(Leader::NoRaft, 9, 0));
        assert!(
            tally.verdict().is_none(),
            "not before the third has answered"
        );
        tally.add("c", said(Leader::Known(2), 8));
        assert!(
            tally.verdict().expect("decided").is_err(),
            "two 404s are no majority beside a raft member"
        );
    }

    #[test]
    fn controllers_without_raft_agree_with_each_other() {
        let mut tally = Tally::new(2);
        tally.add("a", said_of_group(Leader::NoRaft, 3, 0));
        tally.add("b", said_of_group(Leader::NoRaft, 4, 0));
        assert_eq!(version_of(tally.verdict()), 4);
    }

    #[test]
    fn an_answer_that_does_not_parse_is_no_vote() {
        let mut tally = Tally::new(1);
        tally.add(
            "a",
            Ok(MemberAnswer {
                topology: Bytes::from_static(b"<html>"),
                leader: Leader::Known(1),
                peers: 1,
            }),
        );
        assert!(tally.verdict().expect("decided").is_err());
    }

    #[test]
    fn the_raft_peers_url_sits_beside_the_cluster_url() {
        assert_eq!(
            raft_peers_url_beside("http://c:9379/api/v1/namespaces/n/clusters/c"),
            "http://c:9379/api/v1/raft/peers"
        );
    }
}
