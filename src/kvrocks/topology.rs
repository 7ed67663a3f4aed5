//! What the node and the cluster say about roles: the `CLUSTERX SETNODES`
//! nodes format, `INFO replication` and `ROLE` replies.

/// This node's replication state as the node reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replication {
    /// `master` or `slave`.
    pub role: Option<String>,
    /// Replication offset (Redis bytes, Kvrocks sequence numbers).
    pub offset: Option<u64>,
    /// On a replica: `up` or `down`.
    pub link_status: Option<String>,
    /// On a replica: the master it follows.
    pub master: Option<String>,
    /// Redis' `master_replid` (`INFO` only; Kvrocks has none): a replica
    /// that synced with its master shares it, one that has not (a master
    /// restarted empty since) does not.
    #[serde(skip)]
    pub replid: Option<String>,
}

impl Replication {
    /// Parses `INFO replication` text (`key:value` lines).
    pub fn parse_info(text: &str) -> Replication {
        let mut r = Replication::default();
        let (mut host, mut port) = (None, None);
        for line in text.lines() {
            let Some((key, value)) = line.trim_end_matches('\r').split_once(':') else {
                continue;
            };
            match key {
                "role" => r.role = Some(value.to_string()),
                "master_repl_offset" if r.offset.is_none() => r.offset = value.parse().ok(),
                "slave_repl_offset" => r.offset = value.parse().ok(),
                "sequence" if r.offset.is_none() => r.offset = value.parse().ok(),
                "master_link_status" => r.link_status = Some(value.to_string()),
                "master_replid" => r.replid = Some(value.to_string()),
                "master_host" => host = Some(value.to_string()),
                "master_port" => port = Some(value.to_string()),
                _ => {}
            }
        }
        if let (Some(h), Some(p)) = (host, port) {
            r.master = Some(format!("{h}:{p}"));
        }
        r
    }

    /// Parses a complete RESP reply to `INFO replication` (a bulk or verbatim string).
    pub fn parse_info_frame(frame: &[u8]) -> Replication {
        use redis_protocol::resp3::types::OwnedFrame as F;
        // Only a string is decoded: `redis-protocol` recurses into
        // aggregates, and a deeply nested one overflowed the stack.
        if !matches!(frame.first(), Some(b'$' | b'=')) {
            return Replication::parse_info("");
        }
        let text = match redis_protocol::resp3::decode::complete::decode(frame) {
            Ok(Some((F::BlobString { data, .. }, _))) => data,
            Ok(Some((F::VerbatimString { data, .. }, _))) => data,
            _ => match redis_protocol::resp2::decode::decode(frame) {
                Ok(Some((redis_protocol::resp2::types::OwnedFrame::BulkString(data), _))) => data,
                _ => Vec::new(),
            },
        };
        Replication::parse_info(&String::from_utf8_lossy(&text))
    }

    /// Parses a decoded `ROLE` reply: `[master, offset, [...]]` or
    /// `[slave, host, port, state, offset]`.
    pub fn from_role(reply: &redis_protocol::resp2::types::OwnedFrame) -> Replication {
        use redis_protocol::resp2::types::OwnedFrame as F;
        let F::Array(items) = reply else {
            return Replication::default();
        };
        let text = |i: usize| match items.get(i) {
            Some(F::BulkString(b)) | Some(F::SimpleString(b)) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            Some(F::Integer(n)) => Some(n.to_string()),
            _ => None,
        };
        let role = text(0);
        match role.as_deref() {
            Some("master") => Replication {
                role,
                offset: text(1).and_then(|o| o.parse().ok()),
                ..Replication::default()
            },
            Some("slave") | Some("replica") => Replication {
                role: Some("slave".into()),
                master: text(1).zip(text(2)).map(|(h, p)| format!("{h}:{p}")),
                link_status: text(3),
                offset: text(4).and_then(|o| o.parse().ok()),
                replid: None,
            },
            _ => Replication {
                role,
                ..Replication::default()
            },
        }
    }

    pub fn is_replica(&self) -> bool {
        matches!(self.role.as_deref(), Some("slave") | Some("replica"))
    }
}

/// The cluster hash slot of `key` (CRC16/XMODEM mod 16384, honouring `{hash tags}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let key = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in key {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Where this node's master is, when the `CLUSTERX SETNODES` nodes text lists
/// `me` as a replica: the `host:port` listed for its master (under
/// kvrocks-controller, that master's leasegate). `None` when `me` is not a
/// replica there, or its master is not listed.
pub fn master_of(nodes: &str, me: &str) -> Option<String> {
    let master_id = nodes.lines().find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let is_replica = f.get(3).is_some_and(|role| {
            role.split(',')
                .any(|r| r.eq_ignore_ascii_case("slave") || r.eq_ignore_ascii_case("replica"))
        });
        (f.first() == Some(&me) && is_replica).then(|| f.get(4).map(|m| m.to_string()))?
    })?;
    nodes.lines().find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        match f.as_slice() {
            [id, host, port, ..] if *id == master_id => Some(format!("{host}:{port}")),
            _ => None,
        }
    })
}

/// Whether the `CLUSTERX SETNODES` nodes text lists `me` as a master.
pub fn listed_as_master(nodes: &str, me: &str) -> bool {
    nodes.lines().any(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        f.first() == Some(&me)
            && f.get(3)
                .is_some_and(|role| role.split(',').any(|r| r.eq_ignore_ascii_case("master")))
    })
}

/// Whether the `CLUSTERX SETNODES` nodes text lists `me` as a slave/replica
/// (`slave,fail` included). Lines: `<id> <host> <port> <role> <master_id|-> [slots...]`.
pub fn listed_as_replica(nodes: &str, me: &str) -> bool {
    nodes.lines().any(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (Some(id), Some(_host), Some(_port), Some(role)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        id == me
            && role
                .split(',')
                .any(|r| r.eq_ignore_ascii_case("slave") || r.eq_ignore_ascii_case("replica"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn master_of_a_replica() {
        let shard = format!(
            "{OTHER} 10.0.0.2 6380 master - 0-16383\n{ME} 10.0.0.1 6380 slave,fail {OTHER}"
        );
        assert_eq!(master_of(&shard, ME).as_deref(), Some("10.0.0.2:6380"));
        assert_eq!(master_of(&shard, OTHER), None, "a master has none");
        assert!(listed_as_master(&shard, OTHER) && !listed_as_master(&shard, ME));
        let orphan = format!("{ME} 10.0.0.1 6380 slave {OTHER}");
        assert_eq!(master_of(&orphan, ME), None, "its master is not listed");
    }

    #[test]
    fn setnodes_roles() {
        let as_master =
            format!("{ME} 127.0.0.1 6666 master - 0-16383\n{OTHER} 127.0.0.2 6666 slave {ME}");
        assert!(!listed_as_replica(&as_master, ME));
        assert!(listed_as_replica(&as_master, OTHER));
        let failed = format!(
            "{OTHER} 127.0.0.2 6666 master - 0-16383\n{ME} 127.0.0.1 6666 slave,fail {OTHER}"
        );
        assert!(listed_as_replica(&failed, ME));
        let replica = format!("{ME} 127.0.0.1 6666 Replica {OTHER}");
        assert!(listed_as_replica(&replica, ME));
        assert!(!listed_as_replica("", ME));
    }

    #[test]
    fn hash_slots_match_redis_cluster() {
        // Values from CLUSTER KEYSLOT on Redis.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{}x"), key_slot(b"{}x"));
    }

    #[test]
    fn info_replication() {
        let master =
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_repl_offset:12345\r\n";
        let r = Replication::parse_info(master);
        assert_eq!((r.role.as_deref(), r.offset), (Some("master"), Some(12345)));
        let slave = "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6666\r\nmaster_link_status:up\r\nslave_repl_offset:77\r\nmaster_repl_offset:99\r\n";
        let r = Replication::parse_info(slave);
        assert!(r.is_replica());
        assert_eq!(r.offset, Some(77));
        assert_eq!(r.master.as_deref(), Some("127.0.0.1:6666"));
        assert_eq!(r.link_status.as_deref(), Some("up"));
        let frame = format!("${}\r\n{}\r\n", master.len(), master);
        assert_eq!(
            Replication::parse_info_frame(frame.as_bytes()).offset,
            Some(12345)
        );
    }
}
