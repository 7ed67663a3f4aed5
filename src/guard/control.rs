//! Control: who may renew, revoke or pause, and the control commands' syntax.
//!
//! Only the controller may move the lease. On the RESP port that means a
//! connection that authenticated with `control.password` (checked here, never
//! forwarded) or that comes from a `control.allow_from` address; anyone else
//! gets `-NOPERM` and nothing changes.

use std::net::IpAddr;

use crate::guard::lease::Grant;

/// One `control.allow_from` entry: an address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrMatch {
    net: IpAddr,
    prefix: u8,
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
    pub fn new(password: Option<&str>, allow_from: &[String]) -> ControlPolicy {
        ControlPolicy {
            password: password.map(|p| p.as_bytes().to_vec()),
            // Validated with the config; an entry that fails here is skipped.
            allow_from: allow_from
                .iter()
                .filter_map(|a| AddrMatch::parse(a).ok())
                .collect(),
        }
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
