//! Validation of names that reach remote commands: the second line of defence behind the CRD
//! schema. Quoting ([`super::command`]) already makes every value arrive verbatim; these checks
//! additionally refuse values that would be misread by the program receiving them (an option
//! injected through a leading `-`, a ref walking out with `..`, a newline splitting a log line).

use super::error::RemoteError;

fn refuse(what: &str, value: &str, reason: &str) -> RemoteError {
    RemoteError::invalid(format!("{what} {value:?}"), reason.to_owned())
}

fn common(what: &str, value: &str, max_len: usize) -> Result<(), RemoteError> {
    if value.is_empty() {
        return Err(refuse(what, value, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(refuse(what, value, &format!("must be at most {max_len} bytes long")));
    }
    if value.starts_with('-') {
        return Err(refuse(what, value, "must not start with '-' (it would be read as an option)"));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(what, value, "must not contain control characters or newlines"));
    }
    Ok(())
}

/// A branch or tag name, following `git check-ref-format` plus "no leading `-`".
pub fn git_ref_name(what: &str, value: &str) -> Result<(), RemoteError> {
    common(what, value, 255)?;
    // Stricter than git check-ref-format: shell-meaningful characters are legal in git refs
    // but have no business in a deployable branch or tag name.
    if let Some(c) =
        value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | '@')))
    {
        return Err(refuse(what, value, &format!("must not contain {c:?} (allowed: letters, digits and . _ - / + @)")));
    }
    if value.contains("..") {
        return Err(refuse(what, value, "must not contain '..'"));
    }
    if value.contains("@{") || value == "@" {
        return Err(refuse(what, value, "must not contain '@{' or be '@'"));
    }
    if value.contains("//") || value.starts_with('/') || value.ends_with('/') {
        return Err(refuse(what, value, "must not start or end with '/' or contain '//'"));
    }
    if value.ends_with('.') || value.ends_with(".lock") {
        return Err(refuse(what, value, "must not end with '.' or '.lock'"));
    }
    if value.split('/').any(|c| c.starts_with('.')) {
        return Err(refuse(what, value, "no path component may start with '.'"));
    }
    Ok(())
}

/// A commit id: 4 to 64 hexadecimal digits (SHA-1 or SHA-256, possibly abbreviated).
pub fn commit_id(value: &str) -> Result<(), RemoteError> {
    if !(4..=64).contains(&value.len()) || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refuse("commit", value, "must be 4 to 64 hexadecimal digits"));
    }
    Ok(())
}

/// An absolute path on the host (work tree, project directory).
pub fn absolute_path(what: &str, value: &str) -> Result<(), RemoteError> {
    common(what, value, 4096)?;
    if !value.starts_with('/') {
        return Err(refuse(what, value, "must be an absolute path"));
    }
    if value == "/" {
        return Err(refuse(what, value, "must not be the root directory"));
    }
    if value.split('/').any(|c| c == "..") {
        return Err(refuse(what, value, "must not contain '..' components"));
    }
    Ok(())
}

/// A path relative to the work tree (compose file, file inside a revision).
pub fn relative_path(what: &str, value: &str) -> Result<(), RemoteError> {
    common(what, value, 4096)?;
    if value.starts_with('/') {
        return Err(refuse(what, value, "must be relative to the work tree"));
    }
    if value.split('/').any(|c| c == "..") {
        return Err(refuse(what, value, "must not contain '..' components"));
    }
    Ok(())
}

/// A compose service name (compose spec: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
pub fn service_name(value: &str) -> Result<(), RemoteError> {
    common("service name", value, 255)?;
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(refuse("service name", value, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"));
    }
    Ok(())
}

/// A compose project name (compose v2 rule, also accepted by v1: `[a-z0-9][a-z0-9_-]*`).
pub fn project_name(value: &str) -> Result<(), RemoteError> {
    common("compose project name", value, 255)?;
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if !ok {
        return Err(refuse("compose project name", value, "must match [a-z0-9][a-z0-9_-]*"));
    }
    Ok(())
}

/// A Kubernetes object UID as a host job key component (`[a-z0-9-]{1,64}`, not starting with
/// `-`, so that no path built from it reads as an option).
pub fn object_uid(value: &str) -> Result<(), RemoteError> {
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(refuse("object UID", value, "must match [a-z0-9][a-z0-9-]{0,63}"));
    }
    Ok(())
}

/// A deploy step name as a host job key component (`[a-z][a-z0-9-]{0,40}`).
pub fn step_name(value: &str) -> Result<(), RemoteError> {
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && value.len() <= 41
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(refuse("step name", value, "must match [a-z][a-z0-9-]{0,40}"));
    }
    Ok(())
}

/// A Docker label `key=value` given on a command line: the key must be non-empty without `=`,
/// neither may contain control characters.
pub fn label(key: &str, value: &str) -> Result<(), RemoteError> {
    common("label key", key, 255)?;
    if key.contains('=') || key.chars().any(char::is_whitespace) {
        return Err(refuse("label key", key, "must not contain '=' or whitespace"));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse("label value", value, "must not contain control characters or newlines"));
    }
    Ok(())
}

/// An environment variable name for `.env` (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn env_key(value: &str) -> Result<(), RemoteError> {
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.len() <= 255;
    if !ok {
        return Err(refuse("environment key", value, "must match [A-Za-z_][A-Za-z0-9_]*"));
    }
    Ok(())
}

/// A host name or IP address handed to `ssh` as the destination.
pub fn host_address(value: &str) -> Result<(), RemoteError> {
    common("host address", value, 253)?;
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')) {
        return Err(refuse("host address", value, "must be a host name or an IP address"));
    }
    Ok(())
}

/// A login name on the host.
pub fn user_name(value: &str) -> Result<(), RemoteError> {
    common("user name", value, 64)?;
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(refuse("user name", value, "must match [A-Za-z0-9_][A-Za-z0-9_.-]*"));
    }
    Ok(())
}

/// A git remote URL (or local path) to clone from.
pub fn git_url(value: &str) -> Result<(), RemoteError> {
    common("git origin URL", value, 2048)?;
    // "<transport>::<address>" selects a remote helper; `ext::` runs arbitrary commands.
    let helper = value.split_once("::").is_some_and(|(transport, _)| {
        transport.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    });
    if helper {
        return Err(refuse("git origin URL", value, "remote helpers (<transport>::<address>) are not allowed"));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(refuse("git origin URL", value, "must not contain whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "\"; touch /tmp/pwned #",
        "$(id)",
        "`id`",
        "a\nb",
        "-rf",
        "--upload-pack=touch /tmp/pwned",
        "",
        "x\0y",
        "tab\there",
    ];

    #[test]
    fn hostile_values_are_refused_as_names() {
        for h in HOSTILE {
            assert!(git_ref_name("tag", h).is_err(), "ref {h:?}");
            assert!(service_name(h).is_err(), "service {h:?}");
            assert!(project_name(h).is_err(), "project {h:?}");
            assert!(env_key(h).is_err(), "env key {h:?}");
            assert!(host_address(h).is_err(), "host {h:?}");
            assert!(user_name(h).is_err(), "user {h:?}");
            assert!(commit_id(h).is_err(), "commit {h:?}");
            assert!(object_uid(h).is_err(), "uid {h:?}");
            assert!(step_name(h).is_err(), "step {h:?}");
            assert!(absolute_path("path", h).is_err(), "path {h:?}");
        }
    }

    #[test]
    fn git_refs() {
        for ok in ["main", "v1.0.0", "feature/x-y", "release_2024.01", "a+b"] {
            git_ref_name("branch", ok).unwrap();
        }
        for bad in [
            "../etc",
            "a..b",
            "a b",
            "x~1",
            "x^{commit}",
            "a:b",
            "/abs",
            "trail/",
            "a//b",
            "end.",
            "x.lock",
            ".hidden",
            "a/.b",
            "@",
            "a@{1}",
            "-b",
            "q?",
            "s*",
            "br[ack",
            "back\\slash",
        ] {
            assert!(git_ref_name("branch", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commits() {
        commit_id("4f1c").unwrap();
        commit_id(&"a".repeat(40)).unwrap();
        commit_id(&"b".repeat(64)).unwrap();
        assert!(commit_id("abc").is_err());
        assert!(commit_id(&"a".repeat(65)).is_err());
        assert!(commit_id("g123").is_err());
    }

    #[test]
    fn paths() {
        absolute_path("path", "/srv/shop").unwrap();
        absolute_path("path", "/srv/my shop; x").unwrap(); // quoting makes this safe
        for bad in ["srv", "/", "/srv/../etc", "/a\nb", "-x", ""] {
            assert!(absolute_path("path", bad).is_err(), "{bad:?}");
        }
        relative_path("file", "docker-compose.yml").unwrap();
        relative_path("file", "deploy/compose.prod.yml").unwrap();
        for bad in ["/etc/passwd", "../x.yml", "a/../../b", "-f", "a\rb"] {
            assert!(relative_path("file", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        service_name("backend").unwrap();
        service_name("db_1.x-y").unwrap();
        assert!(service_name("_x").is_err());
        assert!(service_name("a/b").is_err());
        project_name("shop").unwrap();
        project_name("shop-staging_2").unwrap();
        assert!(project_name("Shop").is_err());
        env_key("DATABASE_URL").unwrap();
        env_key("_X1").unwrap();
        assert!(env_key("1X").is_err());
        assert!(env_key("A-B").is_err());
        host_address("10.0.0.5").unwrap();
        host_address("::1").unwrap();
        host_address("host.example.org").unwrap();
        assert!(host_address("-oProxyCommand=x").is_err());
        assert!(host_address("a@b").is_err());
        user_name("deploy").unwrap();
        assert!(user_name("a b").is_err());
    }

    #[test]
    fn git_urls() {
        git_url("/srv/git/shop.git").unwrap();
        git_url("https://git.example.org/shop.git").unwrap();
        git_url("git@git.example.org:shop.git").unwrap();
        assert!(git_url("ext::sh -c touch% /tmp/pwned").is_err());
        assert!(git_url("-uhelp").is_err());
        assert!(git_url("a b").is_err());
        assert!(git_url("fd::3").is_err());
        git_url("ssh://[::1]:2222/srv/shop.git").unwrap();
    }
}
