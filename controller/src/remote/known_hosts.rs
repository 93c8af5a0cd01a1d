//! The check that an Environment's known_hosts pins its own host and nothing broader, made
//! before any `ssh` runs with it: `StrictHostKeyChecking yes` protects only as far as the file
//! is narrow, and a CA line or a wildcard would let another host stand in for this one.
//!
//! Lines follow sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT": `[marker] hosts key-type key [comment]`,
//! where `hosts` is a comma-separated list of names (`addr` for port 22, else `[addr]:port`) or
//! one hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))` as written by
//! `ssh-keygen -H`. Messages name line numbers, never key material.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::error::RemoteError;

/// Bytes of the salt and of the digest in a hashed host name (HMAC-SHA1).
const HASH_BYTES: usize = 20;

/// Refuse a known_hosts that has a `@cert-authority` line, a wildcard or negated host pattern,
/// a line without a well-formed key, or no line pinning `address` on `port`. `@revoked` lines
/// are allowed (they only narrow trust); lines for other hosts are allowed (ssh ignores them).
pub fn check_pins(known_hosts: &str, address: &str, port: u16) -> Result<(), RemoteError> {
    let problems = problems(known_hosts, address, port);
    if problems.is_empty() {
        return Ok(());
    }
    let name = host_name(address, port);
    let hint = keyscan_hint(address, port);
    let detail = problems.iter().map(|p| p.message(&name, &hint)).collect::<Vec<_>>().join("; ");
    let host = if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") };
    Err(RemoteError::HostKeyNotPinned { host, detail })
}

/// The name ssh looks up in known_hosts, lowercased as ssh does before looking it up.
fn host_name(address: &str, port: u16) -> String {
    let address = address.to_ascii_lowercase();
    if port == 22 { address } else { format!("[{address}]:{port}") }
}

fn keyscan_hint(address: &str, port: u16) -> String {
    if port == 22 { format!("ssh-keyscan {address}") } else { format!("ssh-keyscan -p {port} {address}") }
}

/// What is wrong, by 1-based line number. Carries no text from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    /// No host key line at all (only blanks and comments).
    Empty,
    Malformed {
        line: usize,
        what: LineDefect,
    },
    UnknownMarker {
        line: usize,
    },
    CertAuthority {
        line: usize,
    },
    WildcardPattern {
        line: usize,
        negated: bool,
    },
    /// No line pins the host; `near_miss` is a line naming the address with another port.
    NoEntryForHost {
        near_miss: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineDefect {
    NoKey,
    NoHostNames,
    KeyNotBase64,
    KeyTypeMismatch,
    BadHashedName,
}

impl Problem {
    fn message(&self, name: &str, hint: &str) -> String {
        match *self {
            Problem::Empty => {
                format!("it has no host key lines: add one for {name} ({hint}, then check the fingerprint out of band)")
            }
            Problem::Malformed { line, what } => match what {
                LineDefect::NoKey => format!(
                    "known_hosts line {line} has no key type and key after the host names: \
                     each line reads `host key-type key`, e.g. `{name} ssh-ed25519 AAAA…` ({hint})"
                ),
                LineDefect::NoHostNames => format!(
                    "known_hosts line {line} starts with a key type, not host names (a public key file?): \
                     put {name} and a space in front of it"
                ),
                LineDefect::KeyNotBase64 => {
                    format!("known_hosts line {line} has a key that is not valid base64: copy the whole line again")
                }
                LineDefect::KeyTypeMismatch => format!(
                    "known_hosts line {line} has a key that does not match its key type (truncated, damaged or \
                     fields swapped?): copy the whole line again ({hint})"
                ),
                LineDefect::BadHashedName => format!(
                    "known_hosts line {line} has a hashed host name that is not `|1|salt|hash` with a 20-byte \
                     salt and hash: hash the file again with ssh-keygen -H, or write the plain name {name}"
                ),
            },
            Problem::UnknownMarker { line } => format!(
                "known_hosts line {line} starts with a marker other than @revoked, which ssh ignores: \
                 remove the marker"
            ),
            Problem::CertAuthority { line } => format!(
                "known_hosts line {line} is a @cert-authority line, which trusts every host signed by that CA: \
                 pin the host's own key instead ({hint})"
            ),
            Problem::WildcardPattern { line, negated: false } => format!(
                "known_hosts line {line} has a wildcard host pattern (`*` or `?`), which trusts its key for more \
                 than one host: name the host exactly, as {name}"
            ),
            Problem::WildcardPattern { line, negated: true } => format!(
                "known_hosts line {line} has a negated host pattern (`!…`), which makes the line's trust depend on \
                 which hosts are excluded: name the host exactly, as {name}"
            ),
            Problem::NoEntryForHost { near_miss } => {
                let near = match near_miss {
                    Some(l) => format!(
                        " (line {l} names this address in another form: ssh looks up exactly {name}, with brackets \
                         and port only when the port is not 22)"
                    ),
                    None => String::new(),
                };
                format!(
                    "no line pins {name}{near}: add a line `{name} key-type key` \
                     ({hint}, then check the fingerprint out of band)"
                )
            }
        }
    }
}

fn problems(known_hosts: &str, address: &str, port: u16) -> Vec<Problem> {
    let name = host_name(address, port);
    let address = address.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut key_lines = 0;
    let mut pinned = false;
    let mut near_miss = None;
    for (index, raw) in known_hosts.lines().enumerate() {
        let line = index + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        key_lines += 1;
        let mut fields = text.split_whitespace();
        let mut hosts = fields.next().unwrap_or_default();
        let mut marker = None;
        if let Some(m) = hosts.strip_prefix('@') {
            marker = Some(m);
            hosts = fields.next().unwrap_or_default();
        }
        let (key_type, key) = (fields.next(), fields.next());
        match marker {
            Some("cert-authority") => found.push(Problem::CertAuthority { line }),
            Some("revoked") | None => {}
            Some(_) => found.push(Problem::UnknownMarker { line }),
        }
        if let Some(what) = defect(hosts, key_type, key) {
            found.push(Problem::Malformed { line, what });
            continue;
        }
        if marker.is_some() {
            // @revoked only narrows trust; a @cert-authority or unknown line is already refused.
            continue;
        }
        if let Some(hashed) = hosts.strip_prefix("|1|") {
            pinned |= hashed_matches(hashed, &name);
            continue;
        }
        let patterns: Vec<String> = hosts.split(',').filter(|p| !p.is_empty()).map(str::to_ascii_lowercase).collect();
        if patterns.iter().any(|p| p.starts_with('!')) {
            found.push(Problem::WildcardPattern { line, negated: true });
        } else if patterns.iter().any(|p| p.contains(['*', '?'])) {
            found.push(Problem::WildcardPattern { line, negated: false });
        }
        if patterns.contains(&name) {
            pinned = true;
        } else if near_miss.is_none() && patterns.iter().any(|p| address_of(p) == address) {
            near_miss = Some(line);
        }
    }
    if key_lines == 0 {
        return vec![Problem::Empty];
    }
    if !pinned {
        found.push(Problem::NoEntryForHost { near_miss });
    }
    found
}

/// The address part of a plain host name (`addr` or `[addr]:port`).
fn address_of(pattern: &str) -> &str {
    pattern.strip_prefix('[').and_then(|p| p.rsplit_once("]:")).map_or(pattern, |(addr, _)| addr)
}

fn defect(hosts: &str, key_type: Option<&str>, key: Option<&str>) -> Option<LineDefect> {
    let looks_like_key_type = |s: &str| ["ssh-", "ecdsa-", "sk-"].iter().any(|p| s.starts_with(p));
    if looks_like_key_type(hosts) && key_type.is_some_and(|t| t.starts_with("AAAA")) {
        return Some(LineDefect::NoHostNames);
    }
    let (Some(key_type), Some(key)) = (key_type, key) else {
        return Some(LineDefect::NoKey);
    };
    if hosts.starts_with('|') && hashed_parts(hosts.strip_prefix("|1|").unwrap_or("")).is_none() {
        return Some(LineDefect::BadHashedName);
    }
    let Ok(blob) = STANDARD.decode(key) else {
        return Some(LineDefect::KeyNotBase64);
    };
    // The key blob starts with its own type name (RFC 4253 6.6); ssh refuses a mismatch.
    let embedded = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4usize.checked_add(n)?));
    if embedded != Some(key_type.as_bytes()) {
        return Some(LineDefect::KeyTypeMismatch);
    }
    None
}

/// Salt and digest of the part after `|1|`, when both are 20 bytes of valid base64.
fn hashed_parts(hashed: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (salt, digest) = hashed.split_once('|')?;
    let (salt, digest) = (STANDARD.decode(salt).ok()?, STANDARD.decode(digest).ok()?);
    (salt.len() == HASH_BYTES && digest.len() == HASH_BYTES).then_some((salt, digest))
}

fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, digest)) = hashed_parts(hashed) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ed25519 public key (test only, its private half discarded).
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPdgHUvowtYMPFglFFi9+smzaspPp/7bQe4GPN8ZW/Ds";
    const KEY_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPdgHUvowtYMPFglFFi9+smzaspPp/7bQe4GPN8ZW/Ds";

    /// Written by OpenSSH 9.2p1 `ssh-keygen -H -f kh` from the plain lines `10.0.0.5 KEY`,
    /// `[10.0.0.5]:2222 KEY` and `[Web.Example.ORG]:2222 KEY` (ssh-keygen hashes the lowercased name).
    const OPENSSH_HASHED: [&str; 3] = [
        "|1|hSz7X9Isiuhs3fH+zpznzUGvh/k=|1A0AXjkgM/hyGAgRpqnDhLAmmmY=",
        "|1|W1uk8FaD6pEF5N8ETGs1RMCiGxQ=|OO8I3U6belrhS2efH+iYc8mz/44=",
        "|1|c2BUar58SjhNffHM+oOWWOD5QgM=|rKF/lgeQRBg1JtaNpRWzFPN7FG4=",
    ];

    /// A hashed name computed here with the same crates, for a salt of our choosing.
    fn hashed(name: &str) -> String {
        let salt = [7u8; HASH_BYTES];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(name.as_bytes());
        format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn line(hosts: &str) -> String {
        format!("{hosts} {KEY}\n")
    }

    #[test]
    fn accepted() {
        let cases: Vec<(String, &str, u16)> = vec![
            (line("10.0.0.5"), "10.0.0.5", 22),
            (line("[10.0.0.5]:2222"), "10.0.0.5", 2222),
            (line("web.example.org,10.0.0.5,[10.0.0.5]:2222"), "10.0.0.5", 2222),
            (line("web.example.org,10.0.0.5"), "WEB.example.org", 22),
            (line("[Web.Example.Org]:2200"), "web.example.org", 2200),
            (line("::1"), "::1", 22),
            (line("[::1]:2222"), "::1", 2222),
            (format!("{} {KEY} comment with spaces\n", hashed("[10.0.0.5]:2222")), "10.0.0.5", 2222),
            (line(&hashed("10.0.0.5")), "10.0.0.5", 22),
            (line(OPENSSH_HASHED[0]), "10.0.0.5", 22),
            (line(OPENSSH_HASHED[1]), "10.0.0.5", 2222),
            (line(OPENSSH_HASHED[2]), "Web.Example.ORG", 2222),
            // comments, blanks, CRLF, tabs, other hosts and @revoked lines are fine
            (
                format!("# pinned 2024-01-01\n\n  \t\r\n[10.0.0.6]:2222 {KEY}\r\n[10.0.0.5]:2222\t{KEY}\r\n"),
                "10.0.0.5",
                2222,
            ),
            (format!("@revoked * {KEY}\n{}", line("[10.0.0.5]:2222")), "10.0.0.5", 2222),
            (format!("{}{}", line(OPENSSH_HASHED[0]), line("[10.0.0.5]:2222")), "10.0.0.5", 2222),
        ];
        for (known_hosts, address, port) in cases {
            assert!(
                check_pins(&known_hosts, address, port).is_ok(),
                "{known_hosts:?} for {address}:{port}: {:?}",
                check_pins(&known_hosts, address, port)
            );
        }
    }

    #[test]
    fn the_openssh_vector_is_what_we_compute() {
        // Same salt, same digest: proves the HMAC input (lowercased, `[addr]:port`) matches OpenSSH.
        let rest = |h: &'static str| h.strip_prefix("|1|").unwrap();
        for (hashed, name) in OPENSSH_HASHED.iter().zip(["10.0.0.5", "[10.0.0.5]:2222", "[web.example.org]:2222"]) {
            assert!(hashed_matches(rest(hashed), name), "{hashed} {name}");
        }
        assert!(!hashed_matches(rest(OPENSSH_HASHED[2]), "[Web.Example.ORG]:2222"));
        assert!(!hashed_matches(rest(OPENSSH_HASHED[0]), "[10.0.0.5]:22"));
        assert!(!hashed_matches(rest(OPENSSH_HASHED[1]), "10.0.0.5"));
    }

    #[test]
    fn refused() {
        use LineDefect::*;
        use Problem::*;
        let p2222 = line("[10.0.0.5]:2222");
        let cases: Vec<(String, u16, Vec<Problem>)> = vec![
            (String::new(), 2222, vec![Empty]),
            ("# only a comment\n\n".into(), 2222, vec![Empty]),
            (
                format!("@cert-authority * {KEY}\n"),
                2222,
                vec![CertAuthority { line: 1 }, NoEntryForHost { near_miss: None }],
            ),
            (format!("{p2222}@cert-authority [10.0.0.5]:2222 {KEY}\n"), 2222, vec![CertAuthority { line: 2 }]),
            (format!("{p2222}@cert-authority-x x {KEY}\n"), 2222, vec![UnknownMarker { line: 2 }]),
            (line("*"), 2222, vec![WildcardPattern { line: 1, negated: false }, NoEntryForHost { near_miss: None }]),
            (line("[10.0.0.5]:2222,10.0.0.*"), 2222, vec![WildcardPattern { line: 1, negated: false }]),
            (
                line("[10.0.0.?]:2222"),
                2222,
                vec![WildcardPattern { line: 1, negated: false }, NoEntryForHost { near_miss: None }],
            ),
            (line("[10.0.0.5]:2222,!10.0.0.6"), 2222, vec![WildcardPattern { line: 1, negated: true }]),
            // an entry for another port, or port 22 written with brackets, does not pin this one
            (line("10.0.0.5"), 2222, vec![NoEntryForHost { near_miss: Some(1) }]),
            (line("[10.0.0.5]:2223"), 2222, vec![NoEntryForHost { near_miss: Some(1) }]),
            (line("[10.0.0.5]:2222"), 22, vec![NoEntryForHost { near_miss: Some(1) }]),
            (line("[10.0.0.5]:22"), 22, vec![NoEntryForHost { near_miss: Some(1) }]),
            (line("10.0.0.6"), 22, vec![NoEntryForHost { near_miss: None }]),
            (line(OPENSSH_HASHED[0]), 2222, vec![NoEntryForHost { near_miss: None }]),
            (line(&hashed("10.0.0.5")), 2222, vec![NoEntryForHost { near_miss: None }]),
            (format!("@revoked [10.0.0.5]:2222 {KEY}\n"), 2222, vec![NoEntryForHost { near_miss: None }]),
            // lines without a usable key
            (
                "[10.0.0.5]:2222\n".into(),
                2222,
                vec![Malformed { line: 1, what: NoKey }, NoEntryForHost { near_miss: None }],
            ),
            (format!("{p2222}[10.0.0.5]:2222 ssh-ed25519\n"), 2222, vec![Malformed { line: 2, what: NoKey }]),
            (format!("{p2222}{KEY}\n"), 2222, vec![Malformed { line: 2, what: NoHostNames }]),
            (
                format!("{p2222}[10.0.0.5]:2222 ssh-ed25519 not*base64\n"),
                2222,
                vec![Malformed { line: 2, what: KeyNotBase64 }],
            ),
            (
                format!("{p2222}[10.0.0.5]:2222 ssh-rsa {KEY_B64}\n"),
                2222,
                vec![Malformed { line: 2, what: KeyTypeMismatch }],
            ),
            (
                format!("{p2222}[10.0.0.5]:2222 ssh-ed25519 {}\n", &KEY_B64[..8]),
                2222,
                vec![Malformed { line: 2, what: KeyTypeMismatch }],
            ),
            (
                format!("{p2222}[10.0.0.5]:2222 {KEY_B64} ssh-ed25519\n"),
                2222,
                vec![Malformed { line: 2, what: KeyNotBase64 }],
            ),
            (format!("{p2222}|1|c2FsdA==|aGFzaA== {KEY}\n"), 2222, vec![Malformed { line: 2, what: BadHashedName }]),
            (format!("{p2222}|2|x|y {KEY}\n"), 2222, vec![Malformed { line: 2, what: BadHashedName }]),
            (format!("{p2222}@revoked [10.0.0.6]:2222\n"), 2222, vec![Malformed { line: 2, what: NoKey }]),
        ];
        for (known_hosts, port, want) in cases {
            assert_eq!(problems(&known_hosts, "10.0.0.5", port), want, "{known_hosts:?} port {port}");
            let err = check_pins(&known_hosts, "10.0.0.5", port).unwrap_err();
            assert_eq!(err.reason(), "HostKeyNotPinned");
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn messages_name_the_line_and_the_fix_never_the_key() {
        let key_parts: Vec<&str> = KEY_B64.as_bytes().chunks(12).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let cases: Vec<(String, u16, &[&str])> = vec![
            (
                format!("{}@cert-authority * {KEY}\n", line("[10.0.0.5]:2222")),
                2222,
                &["known_hosts for 10.0.0.5:2222 refused: known_hosts line 2 is a @cert-authority line, which \
                     trusts every host signed by that CA: pin the host's own key instead (ssh-keyscan -p 2222 10.0.0.5)"],
            ),
            (
                line("*.example.org,[10.0.0.5]:2222"),
                2222,
                &["line 1 has a wildcard", "name the host exactly, as [10.0.0.5]:2222"],
            ),
            (line("!x,[10.0.0.5]:2222"), 2222, &["line 1 has a negated host pattern"]),
            (String::new(), 22, &["no host key lines: add one for 10.0.0.5 (ssh-keyscan 10.0.0.5,"]),
            (
                line("10.0.0.5"),
                2222,
                &[
                    "no line pins [10.0.0.5]:2222 (line 1 names this address in another form",
                    "ssh-keyscan -p 2222 10.0.0.5",
                ],
            ),
            (
                format!("{}10.0.0.5 ssh-rsa {KEY_B64}\n", line("10.0.0.5")),
                22,
                &["line 2 has a key that does not match"],
            ),
            (
                format!("{}{KEY_B64} ssh-ed25519 x\n", line("10.0.0.5")),
                22,
                &["line 2 has a key that is not valid base64"],
            ),
            (
                format!("{}[10.0.0.5]:22 ssh-ed25519 {KEY_B64}x\n", line("10.0.0.5")),
                22,
                &["line 2 has a key that is not valid base64"],
            ),
            (
                format!("{}{KEY}\n", line("10.0.0.5")),
                22,
                &["line 2 starts with a key type", "put 10.0.0.5 and a space"],
            ),
        ];
        for (known_hosts, port, wanted) in cases {
            let msg = check_pins(&known_hosts, "10.0.0.5", port).unwrap_err().to_string();
            for want in wanted {
                assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            }
            for part in &key_parts[1..] {
                assert!(!msg.contains(part), "{msg:?} shows key material {part:?}");
            }
        }
    }

    #[test]
    fn several_problems_are_reported_together() {
        let msg =
            check_pins(&format!("@cert-authority * {KEY}\n{}", line("*")), "10.0.0.5", 2222).unwrap_err().to_string();
        assert!(msg.contains("line 1 is a @cert-authority") && msg.contains("line 2 has a wildcard"), "{msg}");
        assert!(msg.contains("no line pins [10.0.0.5]:2222"), "{msg}");
    }
}
