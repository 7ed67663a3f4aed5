//! Command and subcommand names as the framer reads them: lowercased into a
//! fixed buffer, so that naming and classifying a request allocate nothing.

/// Longest command or subcommand name that is classified; longer names are
/// unknown (and so writes).
pub const NAME_CAP: usize = 32;

/// A command or subcommand name, lowercased into a fixed buffer so that
/// classifying a request allocates nothing.
#[derive(Clone, Copy)]
pub struct Name {
    len: u8,
    buf: [u8; NAME_CAP],
}

impl Name {
    /// No name (e.g. a request without a subcommand).
    pub const EMPTY: Name = Name {
        len: 0,
        buf: [0; NAME_CAP],
    };

    /// Lowercases `raw`; a name longer than [`NAME_CAP`] keeps no bytes and
    /// matches nothing in the table.
    #[inline]
    pub fn new(raw: &[u8]) -> Name {
        let mut name = Name::EMPTY;
        if raw.len() > NAME_CAP {
            name.len = u8::MAX;
            return name;
        }
        for (dst, src) in name.buf.iter_mut().zip(raw) {
            *dst = src.to_ascii_lowercase();
        }
        name.len = raw.len() as u8;
        name
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        if self.len as usize > NAME_CAP {
            b""
        } else {
            &self.buf[..self.len as usize]
        }
    }

    /// A name of 1 to 8 bytes as one integer: its bytes in little-endian
    /// order, zero-padded (as [`crate::command`] keys its short names);
    /// `None` for a longer name or one ending in a zero byte, which the
    /// padding could not tell from a shorter one.
    #[inline]
    pub fn short_key(&self) -> Option<u64> {
        let len = usize::from(self.len);
        if len == 0 || len > 8 || self.buf[len - 1] == 0 {
            return None;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.buf[..8]);
        Some(u64::from_le_bytes(word))
    }

    #[inline]
    pub fn is(&self, lowercase: &[u8]) -> bool {
        self.as_bytes() == lowercase
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name for messages (lossy for non-UTF-8 input).
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.display())
    }
}
