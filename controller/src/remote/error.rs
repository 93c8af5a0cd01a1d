//! The remote layer's one error type, classified so a status condition can say what happened and
//! what to do about it.

use std::time::Duration;

/// Lines of stderr kept in [`RemoteError::CommandFailed`].
pub const STDERR_TAIL_LINES: usize = 20;
/// Bytes of stderr kept in [`RemoteError::CommandFailed`].
pub const STDERR_TAIL_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No SSH session could be opened (refused, timed out, name not resolved, connection lost).
    #[error("host {host} is unreachable over SSH: {detail}")]
    Unreachable { host: String, detail: String },

    /// The host answered but did not accept our key.
    #[error(
        "SSH authentication as {user} on {host} failed ({detail}); \
         check that the public half of the key in the SSH key Secret is in that user's authorized_keys"
    )]
    AuthenticationFailed { host: String, user: String, detail: String },

    /// The host's key is not the pinned one (changed) or no key is pinned for it (unknown).
    #[error(
        "host key of {host} does not match the pinned known_hosts: {detail}; \
         verify the host's fingerprint out of band and update the known_hosts Secret"
    )]
    HostKeyMismatch { host: String, detail: String },

    /// The known_hosts Secret trusts more than this host's own key (a CA, a wildcard), has a
    /// line without a usable key, or pins nothing for this host; refused before ssh runs.
    #[error("known_hosts for {host} refused: {detail}")]
    HostKeyNotPinned { host: String, detail: String },

    /// A remote program ran and exited unsuccessfully (or was killed).
    #[error("`{program}` {}: {stderr_tail}", exit_text(*exit_code))]
    CommandFailed {
        program: String,
        exit_code: Option<i32>,
        /// Last lines of stderr, already redacted.
        stderr_tail: String,
    },

    /// A branch, tag or commit does not exist in the work tree after fetching origin.
    #[error("{revision} {detail}; push it to origin or correct the DeployRequest")]
    RevisionNotFound { revision: String, detail: String },

    /// A connection attempt, a command or a check took longer than allowed.
    #[error("{operation} timed out after {}s", after.as_secs_f32())]
    Timeout { operation: String, after: Duration },

    /// Input refused before anything ran (second line of defence behind the CRD schema).
    #[error("refused {what}: {reason}")]
    InvalidInput { what: String, reason: String },

    /// The Docker API, reached through the forwarded socket, answered with an error.
    #[error("Docker API {operation} failed: {detail}")]
    Docker { operation: String, detail: String },

    /// A remote program succeeded but printed something we cannot interpret.
    #[error("could not understand the output of `{program}`: {detail}")]
    UnexpectedOutput { program: String, detail: String },

    /// The SSH multiplexing session misbehaved after it was established.
    #[error("SSH session to {host} failed: {detail}")]
    Session { host: String, detail: String },

    /// `compose config` refused the project, or printed something Slipway cannot accept (such
    /// as a healthcheck duration that is not a duration).
    #[error("compose project {project} is invalid: {detail}; fix the compose file in the revision")]
    ComposeInvalid { project: String, detail: String },

    /// Another host job holds the project's lock: steps of one project never overlap.
    #[error("compose project {project} on {host} is busy: {holder} holds its lock; waiting for it to finish")]
    HostBusy { host: String, project: String, holder: String },

    /// Something on the controller's own machine failed (temp dir, local ssh client missing).
    #[error("local setup for SSH failed: {detail}")]
    Local { detail: String },
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited with status {c}"),
        None => "was terminated without an exit status".to_owned(),
    }
}

impl RemoteError {
    /// CamelCase reason for status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            RemoteError::Unreachable { .. } => "Unreachable",
            RemoteError::AuthenticationFailed { .. } => "AuthenticationFailed",
            RemoteError::HostKeyMismatch { .. } => "HostKeyMismatch",
            RemoteError::HostKeyNotPinned { .. } => "HostKeyNotPinned",
            RemoteError::CommandFailed { .. } => "CommandFailed",
            RemoteError::RevisionNotFound { .. } => "RevisionNotFound",
            RemoteError::Timeout { .. } => "Timeout",
            RemoteError::InvalidInput { .. } => "InvalidInput",
            RemoteError::Docker { .. } => "DockerApiFailed",
            RemoteError::UnexpectedOutput { .. } => "UnexpectedOutput",
            RemoteError::Session { .. } => "SshSessionFailed",
            RemoteError::Local { .. } => "LocalSetupFailed",
            RemoteError::ComposeInvalid { .. } => "ComposeInvalid",
            RemoteError::HostBusy { .. } => "HostBusy",
        }
    }

    /// Low-cardinality label for error counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RemoteError::Unreachable { .. } => "unreachable",
            RemoteError::AuthenticationFailed { .. } => "authentication_failed",
            RemoteError::HostKeyMismatch { .. } => "host_key_mismatch",
            RemoteError::HostKeyNotPinned { .. } => "host_key_not_pinned",
            RemoteError::CommandFailed { .. } => "command_failed",
            RemoteError::RevisionNotFound { .. } => "revision_not_found",
            RemoteError::Timeout { .. } => "timeout",
            RemoteError::InvalidInput { .. } => "invalid_input",
            RemoteError::Docker { .. } => "docker_api",
            RemoteError::UnexpectedOutput { .. } => "unexpected_output",
            RemoteError::Session { .. } => "ssh_session",
            RemoteError::Local { .. } => "local_setup",
            RemoteError::ComposeInvalid { .. } => "compose_invalid",
            RemoteError::HostBusy { .. } => "host_busy",
        }
    }

    /// True when retrying later may succeed without anyone changing a spec or a Secret;
    /// false means "Stalled until a human acts".
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable { .. }
                | RemoteError::Timeout { .. }
                | RemoteError::Docker { .. }
                | RemoteError::Session { .. }
                | RemoteError::HostBusy { .. }
        )
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        RemoteError::InvalidInput { what: what.into(), reason: reason.into() }
    }
}

/// Turn the log of a failed `ssh` (exit 255) into an error class.
///
/// Host-key problems are checked first: they are the ones that must never be retried blindly.
pub fn classify_ssh_failure(host: &str, user: &str, log: &str) -> RemoteError {
    let lines: Vec<&str> =
        log.lines().map(|l| l.trim().trim_start_matches("ssh: ").trim()).filter(|l| !l.is_empty()).collect();
    let find = |needle: &str| lines.iter().find(|l| l.contains(needle)).copied();

    if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || find("has changed and you have requested strict checking").is_some()
    {
        let mut detail = "the host presented a different key than the pinned one".to_owned();
        if let Some(i) = lines.iter().position(|l| l.starts_with("The fingerprint for the")) {
            let key_type = lines[i].split_whitespace().nth(4).unwrap_or("host");
            if let Some(fp) = lines.get(i + 1) {
                detail = format!(
                    "the host presented a different {key_type} key ({}) than the pinned one",
                    fp.trim_end_matches('.')
                );
            }
        }
        return RemoteError::HostKeyMismatch { host: host.to_owned(), detail };
    }
    if let Some(l) = find("host key is known for") {
        // "No ED25519 host key is known for [h]:p and you have requested strict checking."
        let key_type = l.split_whitespace().nth(1).unwrap_or("host");
        return RemoteError::HostKeyMismatch {
            host: host.to_owned(),
            detail: format!("no key is pinned for this host (it offered {key_type})"),
        };
    }
    if find("Host key verification failed").is_some() || find("HOST KEY").is_some() || find("host key for").is_some() {
        return RemoteError::HostKeyMismatch {
            host: host.to_owned(),
            detail: "host key verification failed".to_owned(),
        };
    }

    for needle in [
        "Permission denied (",
        "Too many authentication failures",
        "Authentication failed",
        "invalid format",
        "no mutual signature algorithm",
    ] {
        if let Some(l) = find(needle) {
            return RemoteError::AuthenticationFailed {
                host: host.to_owned(),
                user: user.to_owned(),
                detail: l.to_owned(),
            };
        }
    }

    for needle in [
        "Connection refused",
        "timed out",
        "No route to host",
        "Network is unreachable",
        "Could not resolve hostname",
        "Name or service not known",
        "Connection closed by",
        "Connection reset",
        "kex_exchange_identification",
        "Broken pipe",
    ] {
        if let Some(l) = find(needle) {
            return RemoteError::Unreachable { host: host.to_owned(), detail: l.to_owned() };
        }
    }

    RemoteError::Unreachable {
        host: host.to_owned(),
        detail: lines.last().map(|l| (*l).to_owned()).unwrap_or_else(|| "ssh failed without a message".to_owned()),
    }
}

/// The last `max_lines` lines of `text`, at most `max_bytes` long (cut at a char boundary).
pub fn tail(text: &str, max_lines: usize, max_bytes: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let joined = lines[lines.len().saturating_sub(max_lines)..].join("\n");
    if joined.len() <= max_bytes {
        return joined;
    }
    let mut cut = joined.len() - max_bytes;
    while !joined.is_char_boundary(cut) {
        cut += 1;
    }
    joined[cut..].to_owned()
}

/// `text` cut to at most `max_chars` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max_chars).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGED: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
It is also possible that a host key has just been changed.\n\
The fingerprint for the ED25519 key sent by the remote host is\n\
SHA256:SYwFo3wdDJUSTUC1GuPYLhokc4mwCCwbcTEKO157LC0.\n\
Please contact your system administrator.\n\
Add correct host key in /tmp/kh_changed to get rid of this message.\n\
Offending ED25519 key in /tmp/kh_changed:1\n\
  remove with:\n\
  ssh-keygen -f \"/tmp/kh_changed\" -R \"[127.0.0.1]:2299\"\n\
Host key for [127.0.0.1]:2299 has changed and you have requested strict checking.\n\
Host key verification failed.\n";

    #[test]
    fn classification_table() {
        let cases: &[(&str, &str)] = &[
            (CHANGED, "HostKeyMismatch"),
            (
                "No ED25519 host key is known for [127.0.0.1]:2299 and you have requested strict checking.\r\nHost key verification failed.\r\n",
                "HostKeyMismatch",
            ),
            ("Host key verification failed.\n", "HostKeyMismatch"),
            ("slipway@127.0.0.1: Permission denied (publickey).\n", "AuthenticationFailed"),
            (
                "Load key \"/tmp/x/id\": invalid format\nslipway@h: Permission denied (publickey).",
                "AuthenticationFailed",
            ),
            ("Received disconnect from 127.0.0.1 port 22:2: Too many authentication failures", "AuthenticationFailed"),
            ("ssh: connect to host 127.0.0.1 port 1: Connection refused\n", "Unreachable"),
            (
                "Connection timed out during banner exchange\nConnection to 127.0.0.1 port 2298 timed out\n",
                "Unreachable",
            ),
            ("ssh: Could not resolve hostname nope.invalid: Name or service not known\n", "Unreachable"),
            ("kex_exchange_identification: read: Connection reset by peer\n", "Unreachable"),
            ("something nobody expected\n", "Unreachable"),
            ("", "Unreachable"),
        ];
        for (log, want) in cases {
            let e = classify_ssh_failure("127.0.0.1:2299", "slipway", log);
            assert_eq!(e.reason(), *want, "log: {log:?} -> {e}");
        }
    }

    #[test]
    fn changed_key_detail_quotes_fingerprint_not_paths() {
        let e = classify_ssh_failure("h:22", "u", CHANGED);
        let msg = e.to_string();
        assert!(msg.contains("SHA256:SYwFo3wdDJUSTUC1GuPYLhokc4mwCCwbcTEKO157LC0"), "{msg}");
        assert!(msg.contains("ED25519"), "{msg}");
        assert!(!msg.contains("/tmp/kh_changed"), "{msg}");
        assert!(!e.is_transient());
    }

    #[test]
    fn reasons_and_labels_are_distinct() {
        let errs = [
            RemoteError::Unreachable { host: "h".into(), detail: "d".into() },
            RemoteError::AuthenticationFailed { host: "h".into(), user: "u".into(), detail: "d".into() },
            RemoteError::HostKeyMismatch { host: "h".into(), detail: "d".into() },
            RemoteError::HostKeyNotPinned { host: "h".into(), detail: "d".into() },
            RemoteError::CommandFailed {
                program: "git fetch".into(),
                exit_code: Some(128),
                stderr_tail: "fatal".into(),
            },
            RemoteError::Timeout { operation: "x".into(), after: Duration::from_secs(1) },
            RemoteError::invalid("ref", "r"),
            RemoteError::RevisionNotFound { revision: "tag v9".into(), detail: "d".into() },
            RemoteError::Docker { operation: "o".into(), detail: "d".into() },
            RemoteError::UnexpectedOutput { program: "p".into(), detail: "d".into() },
            RemoteError::Session { host: "h".into(), detail: "d".into() },
            RemoteError::Local { detail: "d".into() },
            RemoteError::ComposeInvalid { project: "p".into(), detail: "d".into() },
            RemoteError::HostBusy { host: "h".into(), project: "p".into(), holder: "h".into() },
        ];
        let mut reasons: Vec<_> = errs.iter().map(|e| e.reason()).collect();
        let mut labels: Vec<_> = errs.iter().map(|e| e.metric_label()).collect();
        reasons.sort();
        reasons.dedup();
        labels.sort();
        labels.dedup();
        assert_eq!(reasons.len(), errs.len());
        assert_eq!(labels.len(), errs.len());
        for r in reasons {
            assert!(r.chars().next().unwrap().is_ascii_uppercase());
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
        }
        assert_eq!(errs[4].to_string(), "`git fetch` exited with status 128: fatal");
    }

    #[test]
    fn tail_keeps_last_lines_and_bytes() {
        let text = (1..=30).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let t = tail(&text, 3, 1000);
        assert_eq!(t, "line 28\nline 29\nline 30");
        assert_eq!(tail("a\nb\n", 5, 1000), "a\nb");
        assert_eq!(tail("abcdef", 5, 3), "def");
        assert_eq!(tail("ééé", 5, 3), "é");
        assert_eq!(tail("", 5, 3), "");
        assert_eq!(tail("one", 1, 100), "one");
    }

    #[test]
    fn truncate_marks_cut() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
