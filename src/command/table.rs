//! Built-in command table: the fencing class of every command leasegate knows.
//!
//! It covers every command of Redis 7.0 (taken from the `COMMAND` reply of
//! redis-server 7.0.15: the `write` flag maps to [`Class::Write`], `readonly` to
//! [`Class::Read`]), the Redis 7.2 additions (`WAITAOF`, `CLIENT NO-TOUCH`,
//! `CLIENT SETINFO`, `CLUSTER MYSHARDID`), the Redis 7.4/8.0 hash-field
//! expiration commands, and the Kvrocks-only commands (sorted int `SI*`, `BF.*`,
//! `JSON.*`, `FT.*`, `TDIGEST.*`, `TS.*`, `CMS.*`, `CAS`/`CAD`, `MOVEX`,
//! `HRANGEBYLEX`, `MPUBLISH`, replication and maintenance commands), classified
//! from the flags of their `MakeCmdAttr` registrations in the Kvrocks source
//! (`write` -> Write, `read-only` -> Read). On top of the flags these rules apply:
//! `EVAL`, `EVALSHA`, `FCALL`, `SCRIPT` and `FUNCTION` are writes (their `_RO`
//! forms and the inspecting subcommands are reads); `EXEC` is listed as a read
//! because the caller decides from the queued commands; connection, transaction
//! and pub/sub commands are reads; node administration that the controller must
//! still be able to run on a fenced node (`CONFIG`, `REPLICAOF`/`SLAVEOF`,
//! `FAILOVER`, `SHUTDOWN`, `DEBUG`, `ACL`, `CLIENT`, `CLUSTER`, `CLUSTERX`,
//! `MODULE`, persistence and replication-stream commands, `SLOWLOG`, `LATENCY`,
//! `MONITOR` and the Kvrocks maintenance commands) is [`Class::Admin`], with the
//! read-only subcommands refined to [`Class::Read`] in [`SUBCOMMANDS`]; `CLUSTERX
//! HEARTBEAT` is [`Class::Intercept`]. Commands missing here are treated as
//! writes by the caller. Both tables are sorted (by name, then subcommand) and
//! hold lowercase names only.
use super::Class;

/// Every known command, lowercase, with its class.
pub(super) static COMMANDS: &[(&str, Class)] = &[
    ("_db_name", Class::Admin),    // kvrocks
    ("_fetch_file", Class::Admin), // kvrocks
    ("_fetch_meta", Class::Admin), // kvrocks
    ("acl", Class::Admin),
    ("append", Class::Write),
    ("applybatch", Class::Write), // kvrocks
    ("asking", Class::Read),
    ("auth", Class::Read),
    ("bf.add", Class::Write),     // kvrocks
    ("bf.card", Class::Read),     // kvrocks
    ("bf.exists", Class::Read),   // kvrocks
    ("bf.info", Class::Read),     // kvrocks
    ("bf.insert", Class::Write),  // kvrocks
    ("bf.madd", Class::Write),    // kvrocks
    ("bf.mexists", Class::Read),  // kvrocks
    ("bf.reserve", Class::Write), // kvrocks
    ("bgrewriteaof", Class::Admin),
    ("bgsave", Class::Admin),
    ("bitcount", Class::Read),
    ("bitfield", Class::Write),
    ("bitfield_ro", Class::Read),
    ("bitop", Class::Write),
    ("bitpos", Class::Read),
    ("blmove", Class::Write),
    ("blmpop", Class::Write),
    ("blpop", Class::Write),
    ("brpop", Class::Write),
    ("brpoplpush", Class::Write),
    ("bzmpop", Class::Write),
    ("bzpopmax", Class::Write),
    ("bzpopmin", Class::Write),
    ("cad", Class::Write), // kvrocks
    ("cas", Class::Write), // kvrocks
    ("client", Class::Admin),
    ("cluster", Class::Admin),
    ("clusterx", Class::Admin),       // kvrocks
    ("cms.incrby", Class::Write),     // kvrocks
    ("cms.info", Class::Read),        // kvrocks
    ("cms.initbydim", Class::Write),  // kvrocks
    ("cms.initbyprob", Class::Write), // kvrocks
    ("cms.merge", Class::Write),      // kvrocks
    ("cms.query", Class::Read),       // kvrocks
    ("command", Class::Read),
    ("compact", Class::Admin), // kvrocks
    ("config", Class::Admin),
    ("copy", Class::Write),
    ("dbsize", Class::Read),
    ("debug", Class::Admin),
    ("decr", Class::Write),
    ("decrby", Class::Write),
    ("del", Class::Write),
    ("discard", Class::Read),
    ("disk", Class::Read), // kvrocks
    ("dump", Class::Read),
    ("echo", Class::Read),
    ("eval", Class::Write),
    ("eval_ro", Class::Read),
    ("evalsha", Class::Write),
    ("evalsha_ro", Class::Read),
    ("exec", Class::Read),
    ("exists", Class::Read),
    ("expire", Class::Write),
    ("expireat", Class::Write),
    ("expiretime", Class::Read),
    ("failover", Class::Admin),
    ("fcall", Class::Write),
    ("fcall_ro", Class::Read),
    ("flushall", Class::Write),
    ("flushbackup", Class::Admin), // kvrocks
    ("flushdb", Class::Write),
    ("flushmemtable", Class::Admin), // kvrocks
    ("ft._list", Class::Read),       // kvrocks
    ("ft.create", Class::Write),     // kvrocks
    ("ft.dropindex", Class::Write),  // kvrocks
    ("ft.explain", Class::Read),     // kvrocks
    ("ft.explainsql", Class::Read),  // kvrocks
    ("ft.info", Class::Read),        // kvrocks
    ("ft.search", Class::Read),      // kvrocks
    ("ft.searchsql", Class::Read),   // kvrocks
    ("ft.tagvals", Class::Read),     // kvrocks
    ("function", Class::Write),
    ("geoadd", Class::Write),
    ("geodist", Class::Read),
    ("geohash", Class::Read),
    ("geopos", Class::Read),
    ("georadius", Class::Write),
    ("georadius_ro", Class::Read),
    ("georadiusbymember", Class::Write),
    ("georadiusbymember_ro", Class::Read),
    ("geosearch", Class::Read),
    ("geosearchstore", Class::Write),
    ("get", Class::Read),
    ("getbit", Class::Read),
    ("getdel", Class::Write),
    ("getex", Class::Write),
    ("getrange", Class::Read),
    ("getset", Class::Write),
    ("hdel", Class::Write),
    ("hello", Class::Read),
    ("hexists", Class::Read),
    ("hexpire", Class::Write),    // redis 7.4, kvrocks
    ("hexpireat", Class::Write),  // redis 7.4, kvrocks
    ("hexpiretime", Class::Read), // redis 7.4, kvrocks
    ("hget", Class::Read),
    ("hgetall", Class::Read),
    ("hgetdel", Class::Write), // redis 8.0
    ("hgetex", Class::Write),  // redis 8.0
    ("hincrby", Class::Write),
    ("hincrbyfloat", Class::Write),
    ("hkeys", Class::Read),
    ("hlen", Class::Read),
    ("hmget", Class::Read),
    ("hmset", Class::Write),
    ("hpersist", Class::Write),    // redis 7.4, kvrocks
    ("hpexpire", Class::Write),    // redis 7.4, kvrocks
    ("hpexpireat", Class::Write),  // redis 7.4, kvrocks
    ("hpexpiretime", Class::Read), // redis 7.4, kvrocks
    ("hpttl", Class::Read),        // redis 7.4, kvrocks
    ("hrandfield", Class::Read),
    ("hrangebylex", Class::Read), // kvrocks
    ("hscan", Class::Read),
    ("hset", Class::Write),
    ("hsetex", Class::Write),     // redis 8.0, kvrocks
    ("hsetexpire", Class::Write), // kvrocks
    ("hsetnx", Class::Write),
    ("hstrlen", Class::Read),
    ("httl", Class::Read), // redis 7.4, kvrocks
    ("hvals", Class::Read),
    ("incr", Class::Write),
    ("incrby", Class::Write),
    ("incrbyfloat", Class::Write),
    ("info", Class::Read),
    ("json.arrappend", Class::Write), // kvrocks
    ("json.arrindex", Class::Read),   // kvrocks
    ("json.arrinsert", Class::Write), // kvrocks
    ("json.arrlen", Class::Read),     // kvrocks
    ("json.arrpop", Class::Write),    // kvrocks
    ("json.arrtrim", Class::Write),   // kvrocks
    ("json.clear", Class::Write),     // kvrocks
    ("json.debug", Class::Read),      // kvrocks
    ("json.del", Class::Write),       // kvrocks
    ("json.forget", Class::Write),    // kvrocks
    ("json.get", Class::Read),        // kvrocks
    ("json.info", Class::Read),       // kvrocks
    ("json.merge", Class::Write),     // kvrocks
    ("json.mget", Class::Read),       // kvrocks
    ("json.mset", Class::Write),      // kvrocks
    ("json.numincrby", Class::Write), // kvrocks
    ("json.nummultby", Class::Write), // kvrocks
    ("json.objkeys", Class::Read),    // kvrocks
    ("json.objlen", Class::Read),     // kvrocks
    ("json.resp", Class::Read),       // kvrocks
    ("json.set", Class::Write),       // kvrocks
    ("json.strappend", Class::Write), // kvrocks
    ("json.strlen", Class::Read),     // kvrocks
    ("json.toggle", Class::Write),    // kvrocks
    ("json.type", Class::Read),       // kvrocks
    ("keys", Class::Read),
    ("lastsave", Class::Read),
    ("latency", Class::Admin),
    ("lcs", Class::Read),
    ("lindex", Class::Read),
    ("linsert", Class::Write),
    ("llen", Class::Read),
    ("lmove", Class::Write),
    ("lmpop", Class::Write),
    ("lolwut", Class::Read),
    ("lpop", Class::Write),
    ("lpos", Class::Read),
    ("lpush", Class::Write),
    ("lpushx", Class::Write),
    ("lrange", Class::Read),
    ("lrem", Class::Write),
    ("lset", Class::Write),
    ("ltrim", Class::Write),
    ("memory", Class::Read),
    ("mget", Class::Read),
    ("migrate", Class::Write),
    ("module", Class::Admin),
    ("monitor", Class::Admin),
    ("move", Class::Write),
    ("movex", Class::Write),   // kvrocks
    ("mpublish", Class::Read), // kvrocks
    ("mset", Class::Write),
    ("msetnx", Class::Write),
    ("multi", Class::Read),
    ("namespace", Class::Admin), // kvrocks
    ("object", Class::Read),
    ("perflog", Class::Admin), // kvrocks
    ("persist", Class::Write),
    ("pexpire", Class::Write),
    ("pexpireat", Class::Write),
    ("pexpiretime", Class::Read),
    ("pfadd", Class::Write),
    ("pfcount", Class::Read),
    ("pfdebug", Class::Write),
    ("pfmerge", Class::Write),
    ("pfselftest", Class::Admin),
    ("ping", Class::Read),
    ("pollupdates", Class::Admin), // kvrocks
    ("psetex", Class::Write),
    ("psubscribe", Class::Read),
    ("psync", Class::Admin),
    ("pttl", Class::Read),
    ("publish", Class::Read),
    ("pubsub", Class::Read),
    ("punsubscribe", Class::Read),
    ("quit", Class::Read),
    ("randomkey", Class::Read),
    ("rdb", Class::Write), // kvrocks
    ("readonly", Class::Read),
    ("readwrite", Class::Read),
    ("rename", Class::Write),
    ("renamenx", Class::Write),
    ("replconf", Class::Admin),
    ("replicaof", Class::Admin),
    ("reset", Class::Read),
    ("restore", Class::Write),
    ("restore-asking", Class::Write),
    ("role", Class::Read),
    ("rpop", Class::Write),
    ("rpoplpush", Class::Write),
    ("rpush", Class::Write),
    ("rpushx", Class::Write),
    ("sadd", Class::Write),
    ("save", Class::Admin),
    ("scan", Class::Read),
    ("scard", Class::Read),
    ("script", Class::Write),
    ("sdiff", Class::Read),
    ("sdiffstore", Class::Write),
    ("select", Class::Read),
    ("set", Class::Write),
    ("setbit", Class::Write),
    ("setex", Class::Write),
    ("setnx", Class::Write),
    ("setrange", Class::Write),
    ("shutdown", Class::Admin),
    ("siadd", Class::Write),   // kvrocks
    ("sicard", Class::Read),   // kvrocks
    ("siexists", Class::Read), // kvrocks
    ("sinter", Class::Read),
    ("sintercard", Class::Read),
    ("sinterstore", Class::Write),
    ("sirange", Class::Read),           // kvrocks
    ("sirangebyvalue", Class::Read),    // kvrocks
    ("sirem", Class::Write),            // kvrocks
    ("sirevrange", Class::Read),        // kvrocks
    ("sirevrangebyvalue", Class::Read), // kvrocks
    ("sismember", Class::Read),
    ("slaveof", Class::Admin),
    ("slowlog", Class::Admin),
    ("smembers", Class::Read),
    ("smismember", Class::Read),
    ("smove", Class::Write),
    ("sort", Class::Write),
    ("sort_ro", Class::Read),
    ("spop", Class::Write),
    ("spublish", Class::Read),
    ("srandmember", Class::Read),
    ("srem", Class::Write),
    ("sscan", Class::Read),
    ("ssubscribe", Class::Read),
    ("stats", Class::Admin), // kvrocks
    ("strlen", Class::Read),
    ("subscribe", Class::Read),
    ("substr", Class::Read),
    ("sunion", Class::Read),
    ("sunionstore", Class::Write),
    ("sunsubscribe", Class::Read),
    ("swapdb", Class::Write),
    ("sync", Class::Admin),
    ("tdigest.add", Class::Write),         // kvrocks
    ("tdigest.byrank", Class::Read),       // kvrocks
    ("tdigest.byrevrank", Class::Read),    // kvrocks
    ("tdigest.cdf", Class::Read),          // kvrocks
    ("tdigest.create", Class::Write),      // kvrocks
    ("tdigest.info", Class::Read),         // kvrocks
    ("tdigest.max", Class::Read),          // kvrocks
    ("tdigest.merge", Class::Write),       // kvrocks
    ("tdigest.min", Class::Read),          // kvrocks
    ("tdigest.quantile", Class::Read),     // kvrocks
    ("tdigest.rank", Class::Read),         // kvrocks
    ("tdigest.reset", Class::Write),       // kvrocks
    ("tdigest.revrank", Class::Read),      // kvrocks
    ("tdigest.trimmed_mean", Class::Read), // kvrocks
    ("time", Class::Read),
    ("touch", Class::Read),
    ("ts.add", Class::Write),        // kvrocks
    ("ts.alter", Class::Write),      // kvrocks
    ("ts.create", Class::Write),     // kvrocks
    ("ts.createrule", Class::Write), // kvrocks
    ("ts.decrby", Class::Write),     // kvrocks
    ("ts.del", Class::Write),        // kvrocks
    ("ts.deleterule", Class::Write), // kvrocks
    ("ts.get", Class::Read),         // kvrocks
    ("ts.incrby", Class::Write),     // kvrocks
    ("ts.info", Class::Read),        // kvrocks
    ("ts.madd", Class::Write),       // kvrocks
    ("ts.mget", Class::Read),        // kvrocks
    ("ts.mrange", Class::Read),      // kvrocks
    ("ts.mrevrange", Class::Read),   // kvrocks
    ("ts.queryindex", Class::Read),  // kvrocks
    ("ts.range", Class::Read),       // kvrocks
    ("ts.revrange", Class::Read),    // kvrocks
    ("ttl", Class::Read),
    ("type", Class::Read),
    ("unlink", Class::Write),
    ("unsubscribe", Class::Read),
    ("unwatch", Class::Read),
    ("wait", Class::Read),
    ("waitaof", Class::Read), // redis 7.2
    ("watch", Class::Read),
    ("xack", Class::Write),
    ("xadd", Class::Write),
    ("xautoclaim", Class::Write),
    ("xclaim", Class::Write),
    ("xdel", Class::Write),
    ("xgroup", Class::Write),
    ("xinfo", Class::Read),
    ("xlen", Class::Read),
    ("xpending", Class::Read),
    ("xrange", Class::Read),
    ("xread", Class::Read),
    ("xreadgroup", Class::Write),
    ("xrevrange", Class::Read),
    ("xsetid", Class::Write),
    ("xtrim", Class::Write),
    ("zadd", Class::Write),
    ("zcard", Class::Read),
    ("zcount", Class::Read),
    ("zdiff", Class::Read),
    ("zdiffstore", Class::Write),
    ("zincrby", Class::Write),
    ("zinter", Class::Read),
    ("zintercard", Class::Read),
    ("zinterstore", Class::Write),
    ("zlexcount", Class::Read),
    ("zmpop", Class::Write),
    ("zmscore", Class::Read),
    ("zpopmax", Class::Write),
    ("zpopmin", Class::Write),
    ("zrandmember", Class::Read),
    ("zrange", Class::Read),
    ("zrangebylex", Class::Read),
    ("zrangebyscore", Class::Read),
    ("zrangestore", Class::Write),
    ("zrank", Class::Read),
    ("zrem", Class::Write),
    ("zremrangebylex", Class::Write),
    ("zremrangebyrank", Class::Write),
    ("zremrangebyscore", Class::Write),
    ("zrevrange", Class::Read),
    ("zrevrangebylex", Class::Read),
    ("zrevrangebyscore", Class::Read),
    ("zrevrank", Class::Read),
    ("zscan", Class::Read),
    ("zscore", Class::Read),
    ("zunion", Class::Read),
    ("zunionstore", Class::Write),
];

/// Refinements for commands whose class depends on the first argument (subcommand), lowercase.
/// Looked up only when the command itself has an entry here; a subcommand not listed keeps the command's class.
pub(super) static SUBCOMMANDS: &[(&str, &str, Class)] = &[
    ("acl", "cat", Class::Read),
    ("acl", "dryrun", Class::Read),
    ("acl", "genpass", Class::Read),
    ("acl", "getuser", Class::Read),
    ("acl", "help", Class::Read),
    ("acl", "list", Class::Read),
    ("acl", "log", Class::Read),
    ("acl", "users", Class::Read),
    ("acl", "whoami", Class::Read),
    ("client", "caching", Class::Read),
    ("client", "getname", Class::Read),
    ("client", "getredir", Class::Read),
    ("client", "help", Class::Read),
    ("client", "id", Class::Read),
    ("client", "info", Class::Read),
    ("client", "list", Class::Read),
    ("client", "no-evict", Class::Read),
    ("client", "no-touch", Class::Read), // redis 7.2
    ("client", "reply", Class::Admin),   // OFF|SKIP are refused by the Gate
    ("client", "setinfo", Class::Read),  // redis 7.2
    ("client", "setname", Class::Read),
    ("client", "tracking", Class::Read),
    ("client", "trackinginfo", Class::Read),
    ("cluster", "count-failure-reports", Class::Read),
    ("cluster", "countkeysinslot", Class::Read),
    ("cluster", "getkeysinslot", Class::Read),
    ("cluster", "help", Class::Read),
    ("cluster", "info", Class::Read),
    ("cluster", "keyslot", Class::Read),
    ("cluster", "links", Class::Read),
    ("cluster", "myid", Class::Read),
    ("cluster", "myshardid", Class::Read), // redis 7.2
    ("cluster", "nodes", Class::Read),
    ("cluster", "replicas", Class::Read),
    ("cluster", "shards", Class::Read),
    ("cluster", "slaves", Class::Read),
    ("cluster", "slots", Class::Read),
    ("clusterx", "heartbeat", Class::Intercept), // leasegate
    ("clusterx", "myid", Class::Read),           // kvrocks
    ("clusterx", "probe", Class::Intercept),     // leasegate
    ("clusterx", "version", Class::Read),        // kvrocks
    ("config", "get", Class::Read),
    ("config", "help", Class::Read),
    ("function", "dump", Class::Read),
    ("function", "help", Class::Read),
    ("function", "kill", Class::Read),
    ("function", "list", Class::Read),
    ("function", "listfunc", Class::Read), // kvrocks
    ("function", "listlib", Class::Read),  // kvrocks
    ("function", "stats", Class::Read),
    ("module", "help", Class::Read),
    ("module", "list", Class::Read),
    ("namespace", "get", Class::Read), // kvrocks
    ("script", "exists", Class::Read),
    ("script", "help", Class::Read),
    ("script", "kill", Class::Read),
    ("xgroup", "help", Class::Read),
];

#[cfg(test)]
mod tests {
    use super::{Class, COMMANDS, SUBCOMMANDS};

    fn class_of(name: &str) -> Option<Class> {
        COMMANDS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    fn sub_class_of(name: &str, sub: &str) -> Option<Class> {
        SUBCOMMANDS
            .iter()
            .find(|(n, s, _)| *n == name && *s == sub)
            .map(|(_, _, c)| *c)
    }

    #[test]
    fn commands_sorted_unique_lowercase() {
        for (name, _) in COMMANDS {
            assert!(!name.is_empty());
            assert_eq!(*name, name.to_ascii_lowercase(), "not lowercase: {name}");
        }
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "unsorted or duplicate: {} / {}",
                pair[0].0,
                pair[1].0
            );
        }
    }

    #[test]
    fn subcommands_sorted_unique_lowercase_and_known() {
        for (name, sub, _) in SUBCOMMANDS {
            assert_eq!(*name, name.to_ascii_lowercase(), "not lowercase: {name}");
            assert_eq!(
                *sub,
                sub.to_ascii_lowercase(),
                "not lowercase: {name} {sub}"
            );
            assert!(
                class_of(name).is_some(),
                "subcommand of unknown command: {name} {sub}"
            );
        }
        for pair in SUBCOMMANDS.windows(2) {
            let (a, b) = ((pair[0].0, pair[0].1), (pair[1].0, pair[1].1));
            assert!(a < b, "unsorted or duplicate: {a:?} / {b:?}");
        }
    }

    #[test]
    fn spot_checks() {
        use Class::*;
        for (name, class) in [
            ("get", Read),
            ("set", Write),
            ("del", Write),
            ("flushall", Write),
            ("swapdb", Write),
            ("restore", Write),
            ("migrate", Write),
            ("eval", Write),
            ("eval_ro", Read),
            ("fcall", Write),
            ("fcall_ro", Read),
            ("exec", Read),
            ("multi", Read),
            ("ping", Read),
            ("publish", Read),
            ("info", Read),
            ("wait", Read),
            ("waitaof", Read),
            ("memory", Read),
            ("config", Admin),
            ("replicaof", Admin),
            ("slaveof", Admin),
            ("shutdown", Admin),
            ("clusterx", Admin),
            ("script", Write),
            ("function", Write),
            ("zdiffstore", Write),
            ("siadd", Write),
            ("sirange", Read),
            ("bf.add", Write),
            ("bf.exists", Read),
            ("json.set", Write),
            ("json.get", Read),
            ("tdigest.add", Write),
            ("tdigest.quantile", Read),
            ("ft.search", Read),
            ("ft.create", Write),
            ("cas", Write),
            ("cad", Write),
            ("compact", Admin),
            ("namespace", Admin),
            ("_fetch_file", Admin),
        ] {
            assert_eq!(class_of(name), Some(class), "{name}");
        }
        for (name, sub, class) in [
            ("config", "get", Read),
            ("clusterx", "heartbeat", Intercept),
            ("clusterx", "probe", Intercept),
            ("clusterx", "version", Read),
            ("client", "setinfo", Read),
            ("client", "no-touch", Read),
            ("acl", "whoami", Read),
            ("script", "exists", Read),
            ("function", "list", Read),
        ] {
            assert_eq!(sub_class_of(name, sub), Some(class), "{name} {sub}");
        }
        // Not refined: keep the command's class.
        for (name, sub) in [
            ("config", "set"),
            ("client", "pause"),
            ("client", "kill"),
            ("clusterx", "setnodes"),
            ("script", "load"),
            ("function", "load"),
        ] {
            assert_eq!(sub_class_of(name, sub), None, "{name} {sub}");
        }
    }
}
