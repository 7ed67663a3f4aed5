//! Micro-benchmark of the per-request decision: `Gate::admit` for a write
//! with a valid lease (the hot path every write takes in block-write mode),
//! next to the same write with the lease disabled and a read.

use std::sync::Arc;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use leasegate::command::CommandTable;
use leasegate::command::CommandsConfig;
use leasegate::guard::control::ControlPolicy;
use leasegate::guard::gate::{Admission, Gate, GateParts, Policy, Verdict};
use leasegate::guard::lease::{BootClock, Grant, Initial, Lease, LeaseMode, LeaseTuning};
use leasegate::guard::pause::Pause;
use leasegate::resp::request::{Limits, RequestFramer};

const ME: &str = "0123456789012345678901234567890123456789";

fn gate(mode: LeaseMode) -> Gate {
    let lease = Arc::new(Lease::new(
        Arc::new(BootClock),
        mode,
        Initial::Expired,
        LeaseTuning {
            clock_drift: 0.01,
            safety_margin_ms: 100,
        },
        Some(ME.into()),
    ));
    let grant = Grant {
        master_node_id: Some(ME.into()),
        ttl_ms: 3_600_000,
        epoch: 1,
        nonce: None,
        anchor: None,
    };
    lease.grant(&grant, lease.now()).expect("grant");
    Gate::new(
        Policy {
            commands: CommandTable::build(&CommandsConfig::default(), &[]),
        },
        Arc::new(leasegate::guard::role::Role::new(
            lease,
            leasegate::guard::pause::OnDemote::Forward,
        )),
        GateParts {
            control: ControlPolicy::default(),
            reject_prefix: "READONLY".into(),
            backend_login: None,
            verifier: None,
            pause: Arc::new(Pause::new(100_000, 1 << 26)),
            fence_reads: false,
        },
    )
}

fn bench(c: &mut Criterion) {
    let set = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    let get = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    let limits = Limits {
        max_bulk_len: 1 << 29,
        max_multibulk_len: 1 << 20,
        max_inline_len: 1 << 16,
        max_request_len: 1 << 30,
    };
    for (label, mode, bytes) in [
        (
            "admit write, block-write, valid lease",
            LeaseMode::BlockWrite,
            &set[..],
        ),
        ("admit write, lease disabled", LeaseMode::Disabled, &set[..]),
        ("admit read, block-write", LeaseMode::BlockWrite, &get[..]),
    ] {
        let gate = gate(mode);
        let head = RequestFramer::new(limits)
            .next(bytes)
            .expect("valid")
            .expect("complete");
        let policy = gate.policy();
        c.bench_function(label, |b| {
            b.iter(|| {
                let words = head.words(bytes);
                let command = policy.commands.classify(&words.name, &words.sub);
                let verdict = gate.admit(&Admission {
                    class: command.class,
                    command,
                    head: black_box(&head),
                    bytes: black_box(bytes),
                    control: false,
                    verified: false,
                    covered: false,
                    handed_over: false,
                    buffered: 0,
                    peer: None,
                });
                assert!(matches!(verdict, Verdict::Forward));
                verdict
            })
        });
    }
    let gate = gate(LeaseMode::BlockWrite);
    let head = RequestFramer::new(limits)
        .next(set)
        .expect("valid")
        .expect("complete");
    let policy = gate.policy();
    let words = head.words(set);
    let command = policy.commands.classify(&words.name, &words.sub);
    c.bench_function("Gate::admit only (write, valid lease)", |b| {
        b.iter(|| {
            gate.admit(black_box(&Admission {
                class: command.class,
                command,
                head: &head,
                bytes: set,
                control: false,
                verified: false,
                covered: false,
                handed_over: false,
                buffered: 0,
                peer: None,
            }))
        })
    });
    c.bench_function("frame + classify + admit (SET)", |b| {
        let mut framer = RequestFramer::new(limits);
        b.iter(|| {
            let head = framer
                .next(black_box(set))
                .expect("valid")
                .expect("complete");
            let words = head.words(set);
            let command = policy.commands.classify(&words.name, &words.sub);
            gate.admit(&Admission {
                class: command.class,
                command,
                head: &head,
                bytes: set,
                control: false,
                verified: false,
                covered: false,
                handed_over: false,
                buffered: 0,
                peer: None,
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
