//! Secret material (SSH keys, `.env` values) and the redaction applied to everything we report.

use std::fmt;
use std::sync::{Arc, RwLock};

/// Bytes that must never be printed: `Debug` and `Display` show `<redacted>`.
///
/// There is deliberately no `Serialize` and no accessor returning a `String`, so a secret cannot
/// slip into a status patch or an event by way of a derive.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret itself, for writing it to a 0600 file or a remote stdin.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<&str> for SecretBytes {
    fn from(v: &str) -> Self {
        Self(v.as_bytes().to_vec())
    }
}

impl From<String> for SecretBytes {
    fn from(v: String) -> Self {
        Self(v.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Values shorter than this are not redacted: replacing every "1" or "yes" in a log tail would
/// destroy the tail while protecting nothing worth protecting.
pub const MIN_REDACTED_LEN: usize = 6;

pub const REDACTED: &str = "<redacted>";

/// Known secret values of one host connection; every text we hand out (stderr tails, output
/// tails, health-check bodies) passes through [`Redactor::redact`] as a second line of defence.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<String>>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.values.read().map(|v| v.len()).unwrap_or(0);
        write!(f, "Redactor({n} values)")
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember a secret value (and its individual lines) so it is masked from now on.
    pub fn register(&self, secret: &[u8]) {
        let text = String::from_utf8_lossy(secret);
        let mut candidates: Vec<String> = vec![text.trim().to_owned()];
        candidates.extend(text.lines().map(|l| l.trim().to_owned()));
        let Ok(mut values) = self.values.write() else {
            return;
        };
        for c in candidates {
            if c.chars().count() >= MIN_REDACTED_LEN && !values.contains(&c) {
                values.push(c);
            }
        }
        // Longest first, so a value containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Replace every known value with those of `other` (an Environment's values, loaded anew on
    /// each reconcile, so a rotated secret is masked and a removed one forgotten).
    pub fn replace_with(&self, other: &Redactor) {
        if Arc::ptr_eq(&self.values, &other.values) {
            return;
        }
        let fresh = other.values.read().map(|v| v.clone()).unwrap_or_default();
        if let Ok(mut values) = self.values.write() {
            *values = fresh;
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let Ok(values) = self.values.read() else {
            return text.to_owned();
        };
        let mut out = text.to_owned();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_print() {
        let s = SecretBytes::from("-----BEGIN OPENSSH PRIVATE KEY-----\nabc");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: SecretBytes,
        }
        let h = Holder { key: s };
        assert!(!format!("{h:?}").contains("BEGIN"));
    }

    #[test]
    fn redactor_masks_registered_values_and_their_lines() {
        let r = Redactor::new();
        r.register(b"s3cr3t-password");
        r.register(b"line-one-secret\nline-two-secret");
        r.register(b"abc"); // too short: ignored
        let text = "auth failed for s3cr3t-password; got line-two-secret and abc";
        let red = r.redact(text);
        assert!(!red.contains("s3cr3t-password"));
        assert!(!red.contains("line-two-secret"));
        assert!(red.contains("abc"));
        assert_eq!(red.matches(REDACTED).count(), 2);
    }

    #[test]
    fn replace_with_forgets_old_values() {
        let conn = Redactor::new();
        conn.register(b"old-password");
        let env = Redactor::new();
        env.register(b"new-password");
        conn.replace_with(&env);
        assert_eq!(conn.redact("old-password new-password"), "old-password <redacted>");
    }

    #[test]
    fn redactor_prefers_longest_match() {
        let r = Redactor::new();
        r.register(b"secret");
        r.register(b"secret-and-more");
        assert_eq!(r.redact("x secret-and-more y"), "x <redacted> y");
    }
}
