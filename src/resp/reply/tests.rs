//! Unit tests of [`super`].

use super::*;

fn frame_all(buf: &[u8], step: usize) -> Vec<ReplyHead> {
    let mut f = ReplyFramer::new();
    let mut out = Vec::new();
    let mut head = 0;
    let mut avail = 0;
    while avail < buf.len() {
        avail = (avail + step).min(buf.len());
        while let Some(r) = f.next(&buf[head..avail]).expect("valid") {
            head += r.len;
            out.push(r);
        }
    }
    assert_eq!(head, buf.len());
    out
}

const REPLIES: &[&[u8]] = &[
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":42\r\n",
    b"$5\r\nhello\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n$0\r\n\r\n",
    b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
    b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nx\r\n",
    b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
    b"~2\r\n,1.5\r\n#t\r\n",
    b"=8\r\ntxt:abcd\r\n",
    b"(12345678901234567890\r\n",
];

#[test]
fn boundaries_agree_with_redis_protocol() {
    let stream: Vec<u8> = REPLIES.concat();
    for step in [1, 3, 64, 4096] {
        let heads = frame_all(&stream, step);
        assert_eq!(heads.len(), REPLIES.len(), "step {step}");
        for (h, r) in heads.iter().zip(REPLIES) {
            assert_eq!(h.len, r.len(), "{:?}", String::from_utf8_lossy(r));
            // RESP2 nulls are not RESP3, so each frame goes to the oracle of its protocol.
            let used = match redis_protocol::resp3::decode::complete::decode(r) {
                Ok(Some((_, used))) => used,
                _ => {
                    let (_, used) = redis_protocol::resp2::decode::decode(r)
                        .expect("oracle decodes")
                        .expect("oracle complete");
                    used
                }
            };
            assert_eq!(used, r.len());
        }
    }
    assert_eq!(frame_all(REPLIES[9], 2)[0].kind, b'>');
    assert_eq!(frame_all(REPLIES[10], 2)[0].kind, b'$', "attribute skipped");
}

/// RESP3 allows an attribute before any element, also inside an
/// aggregate, where it is not one of the aggregate's elements.
#[test]
fn nested_attributes_are_not_elements() {
    let replies: [&[u8]; 4] = [
        b">1\r\n|1\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n",
        b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n|1\r\n+k\r\n|1\r\n+a\r\n+b\r\n+v\r\n:2\r\n",
        b"%1\r\n+a\r\n|1\r\n+k\r\n*1\r\n|1\r\n+x\r\n+y\r\n:0\r\n$1\r\nx\r\n",
        b"*2\r\n|0\r\n:1\r\n:2\r\n",
    ];
    for r in replies {
        for step in [1, 5, 100] {
            let heads = frame_all(r, step);
            assert_eq!(heads.len(), 1, "{:?}", String::from_utf8_lossy(r));
            assert_eq!(heads[0].len, r.len());
        }
        let (_, used) = redis_protocol::resp3::decode::complete::decode(r)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, r.len(), "as redis-protocol frames it");
    }
}

/// With a depth bound, a reply nested deeper is an error (for replies
/// then decoded by `redis-protocol`, which recurses); at the bound, and
/// without one, it is framed.
#[test]
fn nesting_past_the_bound_is_an_error() {
    let nested = |depth: usize| [b"*1\r\n".repeat(depth), b":1\r\n".to_vec()].concat();
    let mut f = ReplyFramer::with_max_depth(32);
    assert_eq!(
        f.next(&nested(32)).expect("valid").map(|h| h.len),
        Some(32 * 4 + 4)
    );
    let mut f = ReplyFramer::with_max_depth(32);
    assert_eq!(
        f.next(&nested(33)),
        Err(ReplyError("aggregates nested too deep"))
    );
    let mut f = ReplyFramer::with_max_depth(32);
    assert!(f.next(&nested(300_000)).is_err());
    let mut f = ReplyFramer::new();
    let deep = nested(300_000);
    assert_eq!(
        f.next(&deep).expect("valid").map(|h| h.len),
        Some(deep.len())
    );
}

#[test]
fn garbage_is_an_error() {
    let mut f = ReplyFramer::new();
    assert!(f.next(b"?x\r\n").is_err());
    let mut f = ReplyFramer::new();
    assert!(f.next(b"$abc\r\n").is_err());
}

#[test]
fn pubsub_frames() {
    assert_eq!(
        pubsub_frame(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
        Some(PubSubFrame::Subscribed {
            count: 1,
            kind: PubSubKind::Channel
        })
    );
    assert_eq!(
        pubsub_frame(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
        Some(PubSubFrame::Message)
    );
    assert_eq!(
        pubsub_frame(b"*3\r\n$12\r\nsunsubscribe\r\n$2\r\nch\r\n:0\r\n"),
        Some(PubSubFrame::Unsubscribed {
            count: 0,
            kind: PubSubKind::Shard
        })
    );
    assert_eq!(pubsub_frame(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), None);
    assert_eq!(
        pubsub_push(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
        Some(PubSubFrame::Subscribed {
            count: 1,
            kind: PubSubKind::Channel
        })
    );
    assert_eq!(
        pubsub_push(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
        None
    );
    assert_eq!(
        pubsub_frame(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
        Some(PubSubFrame::Unsubscribed {
            count: 0,
            kind: PubSubKind::Channel
        })
    );
    assert_eq!(
        pubsub_push(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"),
        Some(PubSubFrame::Unsubscribed {
            count: 0,
            kind: PubSubKind::Channel
        })
    );
    assert_eq!(pubsub_push(b">3\r\n_\r\n$1\r\na\r\n:0\r\n"), None);
    assert_eq!(
        pubsub_frame(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n"),
        Some(PubSubFrame::Unsubscribed {
            count: 0,
            kind: PubSubKind::Pattern
        })
    );
    assert_eq!(
        pubsub_frame(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
        Some(PubSubFrame::Message)
    );
}

/// Pub/sub frames are flat: a deep or wide reply is none, and is found
/// out without recursion (a deep one overflowed `redis-protocol`'s
/// decoder and aborted the proxy).
#[test]
fn deep_and_wide_replies_are_no_pubsub_frames() {
    let deep = |head: &[u8]| {
        let mut v = head.to_vec();
        v.extend(b"*1\r\n".repeat(1_000_000));
        v.extend_from_slice(b":1\r\n");
        v
    };
    assert_eq!(pubsub_frame(&deep(b"")), None);
    assert_eq!(
        pubsub_frame(&deep(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n")),
        None
    );
    let mut wide = b"*1000000\r\n".to_vec();
    wide.extend(b":1\r\n".repeat(1_000_000));
    assert_eq!(pubsub_frame(&wide), None);
}

#[test]
fn long_line_in_pieces_is_linear() {
    // An 8 MiB error line (a script's error_reply can be that long) fed
    // 512 bytes at a time: 16k calls. Searching each call from the line's
    // start would scan ~64 GiB.
    let mut reply = b"-ERR ".to_vec();
    reply.resize(8 * 1024 * 1024, b'e');
    reply.extend_from_slice(b"\r\n");
    let heads = frame_all(&reply, 512);
    assert_eq!(
        heads,
        [ReplyHead {
            len: reply.len(),
            kind: b'-'
        }]
    );
}

#[test]
fn big_array_in_pieces_is_linear() {
    let mut reply = b"*200000\r\n".to_vec();
    for _ in 0..200_000 {
        reply.extend_from_slice(b"$3\r\nabc\r\n");
    }
    let heads = frame_all(&reply, 100);
    assert_eq!(heads.len(), 1);
}
