//! RESP: where requests and replies begin and end ([`request`], with inline
//! commands split as Redis splits them in `inline.rs`; [`reply`]),
//! command names ([`name`]), the one encoder for what leasegate says
//! itself ([`encode`]), and the login of its own connections ([`login`]).
//!
//! Only boundaries and the few fields the proxy acts on are read; payloads
//! are forwarded as the peer sent them.

pub mod encode;
mod inline;
pub mod login;
pub mod name;
pub mod reply;
pub mod request;

/// The hot-path parse of a RESP length: 1 to 18 ASCII digits from `at`,
/// then `\r`. Returns the value and the offset of the `\r`; anything else
/// (a sign, another byte, too many digits, the end of `buf`) is `None`,
/// and the caller takes its careful path, which accepts these the same.
/// Hand-written: it runs for every request and most replies (callgrind).
#[inline]
pub(crate) fn plain_length(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut n: usize = 0;
    let mut i = at;
    while let Some(&b) = buf.get(i) {
        if b.is_ascii_digit() && i - at < 18 {
            n = n * 10 + usize::from(b - b'0');
            i += 1;
            continue;
        }
        return (b == b'\r' && i > at).then_some((n, i));
    }
    None
}

/// [`plain_length`] with its commonest answers, a length of one or two
/// digits, taken without its loop (measured hot path: three or more per
/// request, one per bulk reply).
#[inline(always)]
pub(crate) fn short_length(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let (Some(&b0), Some(&b1)) = (buf.get(at), buf.get(at + 1)) else {
        return None;
    };
    let (d0, d1) = (b0.wrapping_sub(b'0'), b1.wrapping_sub(b'0'));
    if d0 <= 9 {
        if b1 == b'\r' {
            return Some((usize::from(d0), at + 1));
        }
        if d1 <= 9 && buf.get(at + 2) == Some(&b'\r') {
            return Some((usize::from(d0) * 10 + usize::from(d1), at + 2));
        }
    }
    plain_length(buf, at)
}
