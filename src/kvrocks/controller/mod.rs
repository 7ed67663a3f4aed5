//! The kvrocks-controller HTTP API as leasegate uses it: the cluster topology
//! (`GET {url}/api/v1/namespaces/{ns}/clusters/{cluster}`), its JSON model,
//! what it says about this node ([`decide`]), and a keep-alive client that
//! follows the `307`s non-leaders answer (up to [`MAX_REDIRECTS`] hops).
//! The poller that renews the lease from it is [`crate::control::poll`];
//! verification asks it too ([`crate::guard::verify`]). A graceful failover
//! in cluster mode asks it to fail a shard over ([`request_shard_failover`]).

use bytes::Bytes;
use hyper::header::LOCATION;
use hyper::Uri;
use serde::Deserialize;

mod http;
mod shard_failover;

pub(super) use http::get;
pub use http::{fetch_answer, http_client, HttpClient};
pub use shard_failover::{request_shard_failover, ShardFailoverError};

/// Redirect hops followed per poll.
pub const MAX_REDIRECTS: usize = 3;
/// Largest controller answer read (a cluster with thousands of nodes fits).
pub(super) const MAX_ANSWER: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------
// The controller's JSON.

/// `{"data":{"cluster":{...}}}`.
#[derive(Debug, Deserialize)]
pub struct ClusterAnswer {
    pub data: ClusterData,
}

#[derive(Debug, Deserialize)]
pub struct ClusterData {
    pub cluster: Cluster,
}

#[derive(Debug, Deserialize)]
pub struct Cluster {
    pub version: u64,
    #[serde(default)]
    pub shards: Vec<Shard>,
}

#[derive(Debug, Deserialize)]
pub struct Shard {
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
    /// `"0-8191"`, or a single slot `"42"`.
    #[serde(default)]
    pub slot_ranges: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct ClusterNode {
    pub id: String,
    #[serde(default)]
    pub addr: String,
    pub role: String,
}

/// `{"error":{"message":"..."}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    message: String,
}

/// Parses a `200` answer.
pub fn parse_cluster(body: &[u8]) -> Result<Cluster, String> {
    serde_json::from_slice::<ClusterAnswer>(body)
        .map(|a| a.data.cluster)
        .map_err(|e| format!("unexpected answer from the controller: {e}"))
}

/// What the last answer read said about one node, kept with the answer's
/// bytes: an answer byte for byte the same says the same, so it is
/// compared instead of parsed.
///
/// Every verification round reads the whole cluster topology (the cluster
/// query, which carries the version the judgement needs), and parsing it
/// grows with the cluster: ~0.8 µs for one shard, ~94 µs for 128 (`cargo
/// bench --bench controller`), which at thousands of rounds a second is
/// most of a CPU.
/// The topology seldom changes, and an unchanged answer costs one compare.
/// Only the version and the node's role are kept; [`decide_role`] judges
/// them against the highest version seen *now*, so an old answer that
/// comes back after a newer one is still stale.
#[derive(Debug, Default)]
pub struct LastAnswer {
    read: Option<ReadAnswer>,
    parses: u64,
}

#[derive(Debug)]
struct ReadAnswer {
    body: Bytes,
    node: String,
    version: u64,
    role: Option<String>,
}

impl LastAnswer {
    /// The version of the topology in `body` and node `me`'s role in it
    /// (`None`: not listed); parsed only when `body` or `me` differs from
    /// the last answer read.
    pub fn read(&mut self, body: Bytes, me: &str) -> Result<(u64, Option<&str>), String> {
        let same = self
            .read
            .as_ref()
            .is_some_and(|r| r.body == body && r.node == me);
        if !same {
            self.parses += 1;
            let cluster = parse_cluster(&body)?;
            self.read = Some(ReadAnswer {
                version: cluster.version,
                role: cluster.role_of(me).map(str::to_string),
                node: me.to_string(),
                body,
            });
        }
        // Just set when it was not the same.
        let read = self
            .read
            .as_ref()
            .ok_or_else(|| "no answer was read".to_string())?;
        Ok((read.version, read.role.as_deref()))
    }

    /// How many answers were parsed (the others were the same as the last).
    pub fn parses(&self) -> u64 {
        self.parses
    }
}

/// Describes a non-`200` answer, using the controller's error message when it sent one.
pub fn describe_error(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorAnswer>(body) {
        Ok(e) => format!("controller answered {status}: {}", e.error.message),
        Err(_) => format!(
            "controller answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        ),
    }
}

// ---------------------------------------------------------------------------
// What the topology says about this node.

/// The poller's conclusion from one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Older than an answer already seen: ignored.
    Stale { version: u64, highest: u64 },
    /// This node is master of its shard.
    Renew { version: u64 },
    /// This node is not master: revoke, for this reason.
    Revoke { version: u64, reason: String },
}

/// Decides from `cluster` for node `me`, given the highest version seen so far.
pub fn decide(cluster: &Cluster, me: &str, highest: Option<u64>) -> Decision {
    decide_role(cluster.version, cluster.role_of(me), highest)
}

/// Decides from a topology of `version` that lists this node as `role`
/// (`None`: not listed), given the highest version seen so far.
pub fn decide_role(version: u64, role: Option<&str>, highest: Option<u64>) -> Decision {
    if let Some(highest) = highest {
        if version < highest {
            return Decision::Stale { version, highest };
        }
    }
    match role {
        Some(r) if r.eq_ignore_ascii_case("master") => Decision::Renew { version },
        Some(r) => Decision::Revoke {
            version,
            reason: format!("controller lists this node as {r}"),
        },
        None => Decision::Revoke {
            version,
            reason: "not in the cluster topology".to_string(),
        },
    }
}

/// Resolves a `Location` header against the URI that was asked.
pub fn resolve_location(base: &Uri, location: &str) -> Result<Uri, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location
            .parse()
            .map_err(|e| format!("bad redirect location '{location}': {e}"));
    }
    if !location.starts_with('/') {
        return Err(format!("bad redirect location '{location}'"));
    }
    let authority = base
        .authority()
        .ok_or_else(|| format!("cannot resolve '{location}' against {base}"))?;
    format!("http://{authority}{location}")
        .parse()
        .map_err(|e| format!("bad redirect location '{location}': {e}"))
}

/// Where a redirect answer (a non-leader's `307`) to `uri` points.
pub(super) fn redirected<B>(uri: &Uri, response: &hyper::Response<B>) -> Result<Uri, String> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| {
            format!(
                "controller answered {} without a Location",
                response.status()
            )
        })?;
    resolve_location(uri, location)
}

/// Percent-encodes a path segment (namespace and cluster names).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{url}/api/v1/namespaces/{ns}/clusters/{cluster}`.
pub fn cluster_url(url: &str, namespace: &str, cluster: &str) -> String {
    format!(
        "{}/api/v1/namespaces/{}/clusters/{}",
        url.trim_end_matches('/'),
        segment(namespace),
        segment(cluster)
    )
}

/// [`cluster_url`] at each of `urls` (the controllers of one group).
pub fn cluster_urls(urls: &[String], namespace: &str, cluster: &str) -> Vec<String> {
    urls.iter()
        .map(|url| cluster_url(url, namespace, cluster))
        .collect()
}

// ---------------------------------------------------------------------------
// A shard's failover (`POST .../shards/{i}/failover`).

/// `{url}/api/v1/namespaces/{ns}/clusters/{cluster}/shards/{shard}/failover`.
pub fn shard_failover_url(url: &str, namespace: &str, cluster: &str, shard: usize) -> String {
    format!(
        "{}/shards/{shard}/failover",
        cluster_url(url, namespace, cluster)
    )
}

/// Where a node sits in the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index of its shard.
    pub shard: usize,
    /// Its role there (`master` / `slave`).
    pub role: String,
    /// The address it is registered by (its leasegate's).
    pub addr: String,
}

impl Cluster {
    /// Node `id`'s role (`master` / `slave`), if it is in the topology.
    pub fn role_of(&self, id: &str) -> Option<&str> {
        self.shards
            .iter()
            .flat_map(|s| s.nodes.iter())
            .find(|n| n.id == id)
            .map(|n| n.role.as_str())
    }

    /// Where node `id` is, if it is in the topology.
    pub fn place(&self, id: &str) -> Option<Placement> {
        self.shards.iter().enumerate().find_map(|(shard, s)| {
            s.nodes.iter().find(|n| n.id == id).map(|n| Placement {
                shard,
                role: n.role.clone(),
                addr: n.addr.clone(),
            })
        })
    }

    /// The id of the one node listed at `addr` (`host:port` as this
    /// leasegate listens); `None` when none is, or more than one.
    pub fn id_at(&self, addr: &str) -> Option<&str> {
        let mut at = self
            .shards
            .iter()
            .flat_map(|s| s.nodes.iter())
            .filter(|n| n.addr == addr);
        let node = at.next()?;
        at.next().is_none().then_some(node.id.as_str())
    }

    /// The id of shard `shard`'s master.
    pub fn master_of_shard(&self, shard: usize) -> Option<&str> {
        self.shard_master(shard).map(|n| n.id.as_str())
    }

    /// Shard `shard`'s master node.
    pub fn shard_master(&self, shard: usize) -> Option<&ClusterNode> {
        self.shards
            .get(shard)?
            .nodes
            .iter()
            .find(|n| n.role.eq_ignore_ascii_case("master"))
    }

    /// The topology as `CLUSTERX SETNODES` carries it, the controller's
    /// own format: a line per node, `<id> <host> <port> master -
    /// <ranges...>` or `<id> <host> <port> slave <master id>`. Leasegate
    /// sends it only with the controller's own version, to bring its node
    /// to a topology the controller already decided (the controller pushes
    /// the same lines later; Kvrocks takes an equal version as a no-op).
    pub fn setnodes_text(&self) -> Result<String, String> {
        let mut lines = Vec::new();
        for (index, shard) in self.shards.iter().enumerate() {
            let master = self
                .shard_master(index)
                .ok_or_else(|| format!("shard {index} has no master"))?;
            for node in &shard.nodes {
                let (host, port) = node
                    .addr
                    .rsplit_once(':')
                    .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    .ok_or_else(|| format!("node {} has a bad address '{}'", node.id, node.addr))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if node.role.eq_ignore_ascii_case("master") {
                    let mut line = format!("{} {host} {port} master -", node.id);
                    for range in &shard.slot_ranges {
                        line.push(' ');
                        line.push_str(range);
                    }
                    lines.push(line);
                } else {
                    lines.push(format!("{} {host} {port} slave {}", node.id, master.id));
                }
            }
        }
        Ok(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn the_topology_is_written_as_setnodes_takes_it() {
        let cluster = parse_cluster(&topology(7, Some("slave"))).expect("valid");
        assert_eq!(
            cluster.setnodes_text().expect("complete"),
            format!(
                "cccccccccccccccccccccccccccccccccccccccc 127.0.0.3 6666 master - 8192-16383\n\
                 {OTHER} 127.0.0.2 6666 master - 0-8191\n\
                 {ME} 127.0.0.1 6666 slave {OTHER}"
            )
        );
        assert_eq!(
            cluster.shard_master(1).map(|n| n.addr.as_str()),
            Some("127.0.0.2:6666")
        );
        let headless = parse_cluster(
            br#"{"data":{"cluster":{"version":1,"shards":[{"nodes":[{"id":"x","addr":"h:1","role":"slave"}],"slot_ranges":[]}]}}}"#,
        )
        .expect("valid");
        assert!(
            headless.setnodes_text().is_err(),
            "a shard without a master"
        );
    }

    fn topology(version: u64, me_role: Option<&str>) -> Vec<u8> {
        let mut nodes = vec![format!(
            r#"{{"id":"{OTHER}","addr":"127.0.0.2:6666","role":"{}","password":"","created_at":1}}"#,
            if me_role == Some("master") {
                "slave"
            } else {
                "master"
            }
        )];
        if let Some(role) = me_role {
            nodes.push(format!(
                r#"{{"id":"{ME}","addr":"127.0.0.1:6666","role":"{role}","password":"","created_at":1}}"#
            ));
        }
        format!(
            r#"{{"data":{{"cluster":{{"version":{version},"name":"c1","shards":[
                {{"nodes":[{{"id":"cccccccccccccccccccccccccccccccccccccccc","addr":"127.0.0.3:6666","role":"master"}}],"slot_ranges":["8192-16383"],"target_shard_index":-1,"migrating_slot":null}},
                {{"nodes":[{}],"slot_ranges":["0-8191"],"target_shard_index":-1,"migrating_slot":null}}]}}}}}}"#,
            nodes.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn master_renews_slave_and_absent_revoke() {
        let c = parse_cluster(&topology(3, Some("master"))).expect("parsed");
        assert_eq!(c.version, 3);
        assert_eq!(decide(&c, ME, None), Decision::Renew { version: 3 });
        assert_eq!(decide(&c, ME, Some(3)), Decision::Renew { version: 3 });

        let c = parse_cluster(&topology(4, Some("slave"))).expect("parsed");
        assert_eq!(
            decide(&c, ME, Some(3)),
            Decision::Revoke {
                version: 4,
                reason: "controller lists this node as slave".into()
            }
        );
        let c = parse_cluster(&topology(5, None)).expect("parsed");
        assert_eq!(
            decide(&c, ME, Some(4)),
            Decision::Revoke {
                version: 5,
                reason: "not in the cluster topology".into()
            }
        );
    }

    #[test]
    fn older_versions_are_stale() {
        let c = parse_cluster(&topology(2, Some("master"))).expect("parsed");
        assert_eq!(
            decide(&c, ME, Some(3)),
            Decision::Stale {
                version: 2,
                highest: 3
            }
        );
        let c = parse_cluster(&topology(2, Some("slave"))).expect("parsed");
        assert!(matches!(decide(&c, ME, Some(3)), Decision::Stale { .. }));
    }

    #[test]
    fn errors_are_described() {
        let e = describe_error(404, br#"{"error":{"message":"cluster not found"}}"#);
        assert_eq!(e, "controller answered 404: cluster not found");
        let e = describe_error(502, b"Bad Gateway\n");
        assert_eq!(e, "controller answered 502: Bad Gateway");
        let e = parse_cluster(br#"{"error":{"message":"x"}}"#).unwrap_err();
        assert!(e.contains("missing field `data`"), "{e}");
        assert!(parse_cluster(b"not json").is_err());
    }

    #[test]
    fn urls_and_redirects() {
        assert_eq!(
            cluster_url("http://ctl:9379/", "ns 1", "c/1"),
            "http://ctl:9379/api/v1/namespaces/ns%201/clusters/c%2F1"
        );
        let base: Uri = "http://127.0.0.1:9379/api/v1/namespaces/a/clusters/b"
            .parse()
            .expect("uri");
        assert_eq!(
            resolve_location(&base, "http://127.0.0.2:9379/x")
                .expect("absolute")
                .to_string(),
            "http://127.0.0.2:9379/x"
        );
        assert_eq!(
            resolve_location(&base, "/api/v1/x")
                .expect("relative")
                .to_string(),
            "http://127.0.0.1:9379/api/v1/x"
        );
        assert!(resolve_location(&base, "x y").is_err());
    }

    /// An answer the same as the last, for the same node, is compared, not
    /// parsed; another node's reading of it, or a changed or broken answer,
    /// is parsed (and a broken one forgets nothing).
    #[test]
    fn only_a_changed_answer_is_parsed_again() {
        let mut last = LastAnswer::default();
        let v3 = Bytes::from(topology(3, Some("master")));
        assert_eq!(last.read(v3.clone(), ME), Ok((3, Some("master"))));
        assert_eq!(last.read(v3.clone(), ME), Ok((3, Some("master"))));
        assert_eq!(last.parses(), 1);
        assert_eq!(last.read(v3.clone(), OTHER), Ok((3, Some("slave"))));
        assert_eq!(last.parses(), 2);
        let v4 = Bytes::from(topology(4, Some("slave")));
        assert_eq!(last.read(v4.clone(), OTHER), Ok((4, Some("master"))));
        assert_eq!(last.read(v4.clone(), ME), Ok((4, Some("slave"))));
        assert_eq!(last.parses(), 4);
        assert!(last.read(Bytes::from_static(b"not json"), ME).is_err());
        assert_eq!(last.read(v4, ME), Ok((4, Some("slave"))));
        assert_eq!(last.parses(), 5, "the broken answer replaced nothing");
        let unlisted = Bytes::from(topology(5, None));
        assert_eq!(last.read(unlisted, ME), Ok((5, None)));
    }
}
