//! Validation of values that reach remote commands: the second line of defence behind the CRD
//! schema. Quoting ([`super::command`]) already makes every value arrive verbatim; these checks
//! additionally refuse values that would be misread by the program receiving them (an option
//! injected through a leading `-`, a ref walking out with `..`, a newline splitting a log line).
//!
//! Values that come from a spec are checked against the same [`Shape`]s the CRD schema is built
//! from (`slipway_crds::patterns`), so the remote layer accepts exactly what the API server
//! accepts. The lenient checks ([`absolute_path`], [`relative_path`], [`env_key`]) are for values
//! Slipway makes itself or reads from the host.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use slipway_crds::patterns::{self, ARGUMENT, ARGV_MAX_ITEMS, PROGRAM, Shape};

use super::error::{RemoteError, truncate};

fn refuse(what: &str, value: &str, reason: &str) -> RemoteError {
    RemoteError::invalid(format!("{what} {:?}", truncate(value, 80)), reason.to_owned())
}

/// Every shape's pattern, compiled once.
static COMPILED: LazyLock<HashMap<&'static str, Regex>> = LazyLock::new(|| {
    patterns::ALL
        .iter()
        .map(|s| (s.pattern, Regex::new(s.pattern).unwrap_or_else(|e| panic!("pattern of {}: {e}", s.name))))
        .collect()
});

fn matches(shape: &Shape, value: &str) -> bool {
    match COMPILED.get(shape.pattern) {
        Some(re) => re.is_match(value),
        None => Regex::new(shape.pattern).is_ok_and(|re| re.is_match(value)),
    }
}

/// Checks `value` against `shape` exactly as the CRD schema does: length in characters, pattern,
/// forbidden substrings and suffixes. `what` names the value in the error, which says what to fix.
pub fn field(shape: &Shape, what: &str, value: &str) -> Result<(), RemoteError> {
    let len = value.chars().count();
    if len < shape.min_len {
        let reason = if len == 0 {
            "must not be empty".to_owned()
        } else {
            format!("must be at least {} characters long", shape.min_len)
        };
        return Err(refuse(what, value, &reason));
    }
    if len > shape.max_len {
        return Err(refuse(what, value, &format!("must be at most {} characters long", shape.max_len)));
    }
    if !matches(shape, value) {
        let found = if value.chars().any(char::is_control) {
            " (it contains a control character or newline)"
        } else if value.starts_with('-') {
            " (it starts with '-', which a program would read as an option)"
        } else {
            ""
        };
        return Err(refuse(what, value, &format!("must be {}{found}", shape.must_be)));
    }
    if let Some(f) = shape.forbidden {
        let bad = f.substrings.iter().any(|s| value.contains(s)) || f.suffixes.iter().any(|s| value.ends_with(s));
        if bad {
            return Err(refuse(what, value, f.message));
        }
    }
    Ok(())
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

/// A branch or tag name ([`patterns::REF_NAME`]).
pub fn git_ref_name(what: &str, value: &str) -> Result<(), RemoteError> {
    field(&patterns::REF_NAME, what, value)
}

/// A commit id: 7 to 64 hexadecimal digits ([`patterns::COMMIT`]).
pub fn commit_id(value: &str) -> Result<(), RemoteError> {
    field(&patterns::COMMIT, "commit", value)
}

/// The application's directory on the host, `host.path` ([`patterns::HOST_PATH`]).
pub fn host_path(what: &str, value: &str) -> Result<(), RemoteError> {
    field(&patterns::HOST_PATH, what, value)
}

/// A compose file relative to the work tree ([`patterns::COMPOSE_FILE`]).
pub fn compose_file(value: &str) -> Result<(), RemoteError> {
    field(&patterns::COMPOSE_FILE, "compose file", value)
}

/// An absolute path Slipway makes itself (a command's working directory, a socket on the host):
/// quoted when used, so only what a program could misread is refused.
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

/// A path relative to the work tree that Slipway names itself (a file inside a revision).
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

/// A compose service name ([`patterns::SERVICE_NAME`]).
pub fn service_name(value: &str) -> Result<(), RemoteError> {
    field(&patterns::SERVICE_NAME, "service name", value)
}

/// A compose project name ([`patterns::PROJECT_NAME`]).
pub fn project_name(value: &str) -> Result<(), RemoteError> {
    field(&patterns::PROJECT_NAME, "compose project name", value)
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

/// A database migration revision handed to the downgrade command (`[A-Za-z0-9_]{1,64}`, as
/// [`crate::deploy::plan::parse_migration_revision`] reads them): never an option.
pub fn migration_revision(value: &str) -> Result<(), RemoteError> {
    let ok = !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(refuse("migration revision", value, "must match [A-Za-z0-9_]{1,64}"));
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

/// A host name or IP address handed to `ssh` as the destination ([`patterns::HOST_ADDRESS`]).
pub fn host_address(value: &str) -> Result<(), RemoteError> {
    field(&patterns::HOST_ADDRESS, "host address", value)
}

/// A login name on the host ([`patterns::HOST_USER`]).
pub fn user_name(value: &str) -> Result<(), RemoteError> {
    field(&patterns::HOST_USER, "user name", value)
}

/// A git URL to clone from ([`patterns::REPOSITORY_URL`]): no `<transport>::` remote helper
/// (`ext::` runs commands), no option-like host or user, no whitespace or shell characters.
pub fn git_url(value: &str) -> Result<(), RemoteError> {
    // The pattern refuses these too; this only says why in plainer words.
    let helper = value.split_once("::").is_some_and(|(transport, _)| {
        !transport.is_empty() && transport.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    });
    let checked = field(&patterns::REPOSITORY_URL, "git origin URL", value);
    if checked.is_err() && helper {
        return Err(refuse("git origin URL", value, "remote helpers (<transport>::<address>) are not allowed"));
    }
    checked
}

/// The name of a health check ([`patterns::CHECK_NAME`]).
pub fn check_name(value: &str) -> Result<(), RemoteError> {
    field(&patterns::CHECK_NAME, "health check name", value)
}

/// The request path of an HTTP health check ([`patterns::HTTP_PATH`]).
pub fn http_path(value: &str) -> Result<(), RemoteError> {
    field(&patterns::HTTP_PATH, "HTTP check path", value)
}

/// A command to run (migrations, exec checks): 1 to [`ARGV_MAX_ITEMS`] elements without NUL
/// characters, the first a [`PROGRAM`] (not empty, not starting with `-`).
pub fn argv(what: &str, argv: &[String]) -> Result<(), RemoteError> {
    let Some(program) = argv.first() else {
        return Err(RemoteError::invalid(what.to_owned(), "must not be empty: name the program to run"));
    };
    if argv.len() > ARGV_MAX_ITEMS {
        return Err(RemoteError::invalid(
            what.to_owned(),
            format!("has {} elements; it must have at most {ARGV_MAX_ITEMS}", argv.len()),
        ));
    }
    field(&PROGRAM, &format!("{what} program"), program)?;
    for a in argv {
        field(&ARGUMENT, &format!("{what} argument"), a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Spec fields are tested against crds/tests/validation-corpus.yaml in
    // controller/tests/validation_corpus.rs; these cover the lenient checks and the messages.

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
            assert!(host_path("path", h).is_err(), "host path {h:?}");
            assert!(compose_file(h).is_err(), "compose file {h:?}");
            assert!(git_url(h).is_err(), "url {h:?}");
        }
    }

    #[test]
    fn errors_say_what_to_fix() {
        let msg = |r: Result<(), RemoteError>| r.unwrap_err().to_string();
        assert_eq!(msg(commit_id("abc")), "refused commit \"abc\": must be at least 7 characters long");
        assert!(msg(git_ref_name("tag", "v1..2")).contains("must not contain '..'"));
        assert!(msg(git_ref_name("branch", "-rf")).contains("starts with '-'"));
        assert!(msg(git_ref_name("branch", "a\nb")).contains("control character"));
        assert!(msg(host_path("work tree path", "/")).contains("absolute path below /"));
        assert!(msg(git_url("ext::sh -c touch% /tmp/pwned")).contains("remote helpers"));
        assert!(msg(argv("upgrade", &[])).contains("name the program"));
        assert!(msg(argv("upgrade", &["-x".into()])).contains("upgrade program"));
        assert!(msg(argv("upgrade", &["a".into(), "b\0".into()])).contains("NUL"));
        let long = "a".repeat(300);
        let m = msg(git_ref_name("tag", &long));
        assert!(m.contains("at most 200 characters") && m.len() < 200, "{m}");
    }

    #[test]
    fn lenient_paths_for_what_slipway_names_itself() {
        absolute_path("path", "/srv/shop").unwrap();
        absolute_path("path", "/srv/my shop; x").unwrap(); // quoting makes this safe
        for bad in ["srv", "/", "/srv/../etc", "/a\nb", "-x", ""] {
            assert!(absolute_path("path", bad).is_err(), "{bad:?}");
        }
        relative_path("file", ".env.example").unwrap();
        relative_path("file", "deploy/compose.prod.yml").unwrap();
        for bad in ["/etc/passwd", "../x.yml", "a/../../b", "-f", "a\rb"] {
            assert!(relative_path("file", bad).is_err(), "{bad:?}");
        }
        env_key("DATABASE_URL").unwrap();
        env_key("_X1").unwrap();
        assert!(env_key("1X").is_err());
        assert!(env_key("A-B").is_err());
    }

    #[test]
    fn every_pattern_compiles() {
        for s in patterns::ALL {
            assert!(COMPILED.contains_key(s.pattern), "{}", s.name);
        }
    }
}
