//! A session's buffers as hex strings in the hand-over's JSON: a held 2 KB
//! request is 4 KB of text, where serde's default (an array of numbers)
//! made it ~7 KB, and generating and parsing 50 such sessions cost
//! milliseconds of CPU while their clients waited. A predecessor that sent
//! arrays (before this) is still understood. The moved TLS keys go the
//! same way.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    let done = s.serialize_str(&text);
    // What went may be a TLS session's keys.
    zeroize::Zeroize::zeroize(&mut text);
    done
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(Bytes)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

struct Bytes;

impl<'de> Visitor<'de> for Bytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a lowercase hex string, or an array of bytes")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Vec<u8>, E> {
        let text = text.as_bytes();
        if text.len() % 2 != 0 {
            return Err(E::custom("odd-length hex"));
        }
        text.chunks_exact(2)
            .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| E::custom("not a hex digit"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct B(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn bytes_go_as_hex_and_come_back_from_hex_or_an_array() {
        let all: Vec<u8> = (0..=255).collect();
        let json = serde_json::to_string(&B(all.clone())).expect("encodes");
        assert_eq!(json.len(), 2 + 512);
        assert_eq!(serde_json::from_str::<B>(&json).expect("decodes"), B(all));
        assert_eq!(
            serde_json::from_str::<B>("[1,2,255]").expect("array"),
            B(vec![1, 2, 255])
        );
        assert!(serde_json::from_str::<B>("\"abc\"").is_err());
        assert!(serde_json::from_str::<B>("\"zz\"").is_err());
    }
}
