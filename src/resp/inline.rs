//! Inline commands (`PING\r\n`, as typed in telnet): the line split into
//! arguments exactly as Redis splits it, quotes and escapes included, so
//! that the name the Gate judges is the name the node runs.

use super::request::{ProtocolError, Span};

// Inline commands are split exactly as Redis splits them (`processInlineBuffer`
// and `sdssplitargs`), so that the name the Gate judges is the name the node
// runs. A looser or stricter split is a hole in the deny list: with `\v`
// taken for part of a word, `\vFLUSHALL` was "\vflushall" to the Gate and
// FLUSHALL to the node.
//
// * The line is everything up to the first `\n`, less one `\r` before it.
// * Before an argument, any of the six bytes C's `isspace` accepts is skipped
//   (space, `\t`, `\n`, `\v`, `\f`, `\r`).
// * An unquoted argument ends only at a space, `\t`, `\n`, `\r` or NUL: `\v`
//   and `\f` inside or after a word belong to it (`FLUSHALL\v` is an unknown
//   command to the node, not FLUSHALL).
// * A quote opens a quoted part, also in the middle of a word (`a"b c"` is
//   `ab c`); the argument ends at its closing quote, which must be followed by
//   an `isspace` byte or the end of the line, else the quotes are unbalanced.
//   `"..."` decodes `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and `\<other>` (the
//   other byte); `'...'` decodes only `\'`.
// * Nothing after a NUL byte is read, as `sdssplitargs` reads a C string.
//   (Redis never runs such a line: it finds the newline with `strchr`, which
//   stops at the NUL, and waits for one.)

/// The `isspace` bytes of the C locale: skipped before each argument.
#[inline]
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The bytes that end an unquoted argument (NUL also ends the line).
#[inline]
fn ends_word(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0)
}

/// The arguments of an inline request (`request` up to and including its
/// `\n`): the `\n` and one `\r` before it are not part of the line.
#[inline]
pub(super) fn inline_line(request: &[u8]) -> &[u8] {
    let line = request.strip_suffix(b"\n").unwrap_or(request);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a line without quotes, without allocating; `None` when the line
/// has a quote, which only [`split_args`] decodes. The spans are offsets in
/// the line, which is also the start of the request.
pub(super) fn inline_plain(line: &[u8]) -> Option<(u64, Span, Span)> {
    let (mut argc, mut name, mut sub) = (0u64, Span::EMPTY, Span::EMPTY);
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_blank(b)) {
            i += 1;
        }
        let start = i;
        while let Some(&b) = line.get(i) {
            if ends_word(b) {
                break;
            }
            if b == b'"' || b == b'\'' {
                return None;
            }
            i += 1;
        }
        // After the blanks only the end of the line or a NUL ends a word
        // before it starts.
        if i == start {
            return Some((argc, name, sub));
        }
        match argc {
            0 => {
                name = Span {
                    at: start,
                    len: i - start,
                }
            }
            1 => {
                sub = Span {
                    at: start,
                    len: i - start,
                }
            }
            _ => {}
        }
        argc += 1;
    }
}

/// Splits an inline line (without its line end) into its decoded arguments,
/// as Redis's `sdssplitargs` does.
pub(super) fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_blank(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let (arg, next) = split_arg(line, i)?;
        args.push(arg);
        i = next;
    }
}

/// The argument starting at `line[i]` (not a blank) and the offset after it.
fn split_arg(line: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut arg = Vec::new();
    loop {
        match line.get(i) {
            None => return Ok((arg, i)),
            Some(&b) if ends_word(b) => return Ok((arg, i)),
            Some(&b'"') => {
                let end = double_quoted(line, i + 1, &mut arg)?;
                return Ok((arg, end));
            }
            Some(&b'\'') => {
                let end = single_quoted(line, i + 1, &mut arg)?;
                return Ok((arg, end));
            }
            Some(&b) => {
                arg.push(b);
                i += 1;
            }
        }
    }
}

/// Decodes a `"..."` part whose body starts at `line[i]` into `arg`; returns
/// the offset after the closing quote.
fn double_quoted(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        let rest = line.get(i..).unwrap_or_default();
        if let Some(byte) = hex_escape(rest) {
            arg.push(byte);
            i += 4;
            continue;
        }
        match rest {
            [b'\\', escaped, ..] => {
                arg.push(unescape(*escaped));
                i += 2;
            }
            [b'"', ..] => return closing_quote(line, i),
            [b, ..] => {
                arg.push(*b);
                i += 1;
            }
            [] => return Err(ProtocolError::UnbalancedQuotes),
        }
    }
}

/// Decodes a `'...'` part whose body starts at `line[i]` into `arg`; returns
/// the offset after the closing quote.
fn single_quoted(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match line.get(i..).unwrap_or_default() {
            [b'\\', b'\'', ..] => {
                arg.push(b'\'');
                i += 2;
            }
            [b'\'', ..] => return closing_quote(line, i),
            [b, ..] => {
                arg.push(*b);
                i += 1;
            }
            [] => return Err(ProtocolError::UnbalancedQuotes),
        }
    }
}

/// A closing quote at `line[i]` must be followed by a blank or the end of
/// the line; returns the offset after it.
fn closing_quote(line: &[u8], i: usize) -> Result<usize, ProtocolError> {
    match line.get(i + 1) {
        Some(&b) if !is_blank(b) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(i + 1),
    }
}

/// The byte a backslash escape inside `"..."` stands for.
fn unescape(b: u8) -> u8 {
    match b {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// `\xHH` with two hex digits at the head of `rest`: the byte it stands for.
fn hex_escape(rest: &[u8]) -> Option<u8> {
    match rest {
        [b'\\', b'x', hi, lo, ..] => Some(hex_digit(*hi)? * 16 + hex_digit(*lo)?),
        _ => None,
    }
}

/// The value of one hex digit (`0-9`, `a-f`, `A-F`; no sign, unlike
/// `from_str_radix`).
fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}
