//! Micro-benchmark of reading a controller answer: what a verification round
//! (and a lease poll) costs leasegate's CPU beyond the HTTP exchange, by
//! cluster size. Every round reads the whole cluster topology (the cluster
//! query, which carries the version the judgement needs): parsed, the cost grows with the shards;
//! an answer the same as the lane's last one (`LastAnswer`, what a round
//! usually gets) is compared instead.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use bytes::Bytes;
use leasegate::kvrocks::controller::{decide, decide_role, parse_cluster, LastAnswer};

/// A kvrocks-controller answer for `shards` shards of a master and two
/// replicas each, this node (`me`) the master of the last shard.
fn answer(shards: usize, me: &str) -> Vec<u8> {
    let shards: Vec<String> = (0..shards)
        .map(|s| {
            let nodes: Vec<String> = (0..3)
                .map(|n| {
                    let id = if s + 1 == shards.max(1) && n == 0 {
                        me.to_string()
                    } else {
                        format!("{s:020}{n:020}")
                    };
                    let role = if n == 0 { "master" } else { "slave" };
                    format!(
                        r#"{{"id":"{id}","addr":"10.0.{}.{}:6666","role":"{role}","password":"","created_at":1700000000}}"#,
                        s % 250,
                        n + 1
                    )
                })
                .collect();
            format!(
                r#"{{"nodes":[{}],"slot_ranges":["{}-{}"],"target_shard_index":-1,"migrating_slot":null}}"#,
                nodes.join(","),
                s * 100,
                s * 100 + 99
            )
        })
        .collect();
    format!(
        r#"{{"data":{{"cluster":{{"version":7,"name":"bench","shards":[{}]}}}}}}"#,
        shards.join(",")
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    const ME: &str = "0123456789012345678901234567890123456789";
    let mut group = c.benchmark_group("controller answer: parse and decide");
    for shards in [1usize, 16, 128] {
        let body = answer(shards, ME);
        group.bench_with_input(BenchmarkId::from_parameter(shards), &body, |b, body| {
            b.iter(|| {
                let cluster = parse_cluster(black_box(body)).expect("parsed");
                decide(&cluster, ME, Some(7))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("controller answer: the same as the last");
    for shards in [1usize, 16, 128] {
        let mut last = LastAnswer::default();
        last.read(Bytes::from(answer(shards, ME)), ME)
            .expect("parsed");
        // Another copy of the same bytes, as the next round receives them.
        let body = Bytes::from(answer(shards, ME));
        group.bench_with_input(BenchmarkId::from_parameter(shards), &body, |b, body| {
            b.iter(|| {
                let (version, role) = last.read(black_box(body.clone()), ME).expect("read");
                decide_role(version, role, Some(7))
            })
        });
        assert_eq!(last.parses(), 1, "compared, not parsed");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
