//! The `.env` file on the host: rendered from the env Secret, written atomically with mode 0600,
//! values only ever on stdin; and the `.env.example` check (key names only).

use std::collections::{BTreeMap, BTreeSet};

use super::command::RemoteCommand;
use super::compose::ComposeFlavor;
use super::error::RemoteError;
use super::exec::Exec;
use super::git::{ENV_TEMP_PREFIX, Repo};
use super::secret::SecretBytes;
use super::validate;

/// Fixed script for the atomic write; the paths arrive as positional parameters and the content
/// on stdin, so nothing variable is ever part of the script text.
/// `$1` temp file, `$2` target, `$3` the byte count sent: a write cut short (connection lost,
/// stdin closed early) never replaces `.env`, and the temp file is removed whatever happens.
const WRITE_SCRIPT: &str = r#"umask 077
trap 'rm -f -- "$1"' EXIT
trap 'exit 129' HUP INT TERM
rm -f -- "$1" && cat > "$1" || exit 1
[ "$(wc -c < "$1")" -eq "$3" ] || { echo "short write: .env not replaced" >&2; exit 1; }
chmod 600 -- "$1" && mv -f -- "$1" "$2""#;

/// Characters a value may contain unquoted in both dotenv dialects.
fn is_plain_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '@' | '%' | '+' | ',' | '=')
}

/// Render `KEY=value` lines that compose v1 (python-dotenv) and v2 (compose-go) both read back
/// as exactly `value`.
///
/// Plain values are written bare; others in single quotes, which both dialects take literally
/// provided the value has no `'`, no `\` and (for v1, which expands `${X}` even in single
/// quotes) no `${`. Values outside that subset, and multi-line values, are refused: the error
/// names the key, never the value.
pub fn render_env_file(
    values: &BTreeMap<String, SecretBytes>,
    flavor: ComposeFlavor,
) -> Result<SecretBytes, RemoteError> {
    let mut out = String::new();
    for (key, value) in values {
        validate::env_key(key)?;
        let refuse = |why: &str| {
            RemoteError::invalid(
                format!("value of environment key {key}"),
                format!("{why}; .env files cannot carry it portably (value not shown)"),
            )
        };
        let value = std::str::from_utf8(value.expose()).map_err(|_| refuse("is not UTF-8"))?;
        if value.chars().any(|c| c == '\n' || c == '\r' || c == '\0') {
            return Err(refuse("spans several lines or contains NUL"));
        }
        out.push_str(key);
        out.push('=');
        if value.chars().all(is_plain_value_char) {
            out.push_str(value);
        } else {
            if value.contains('\'') || value.contains('\\') {
                return Err(refuse("contains a single quote or a backslash"));
            }
            if value.chars().any(char::is_control) {
                return Err(refuse("contains control characters"));
            }
            if flavor == ComposeFlavor::V1 && value.contains("${") {
                return Err(refuse("contains '${', which docker-compose v1 would interpolate"));
            }
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        }
        out.push('\n');
    }
    Ok(SecretBytes::from(out))
}

/// Key names declared by a `.env.example` (comments, blank lines and `export` prefixes allowed).
pub fn parse_env_example(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let key = line.split('=').next().unwrap_or("").trim();
        if validate::env_key(key).is_ok() && seen.insert(key.to_owned()) {
            keys.push(key.to_owned());
        }
    }
    keys
}

/// Keys of `example` missing from `provided`, in the example's order.
pub fn missing_keys<'a>(example: &[String], provided: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let provided: BTreeSet<&String> = provided.into_iter().collect();
    example.iter().filter(|k| !provided.contains(k)).cloned().collect()
}

/// Keys listed in the revision's `.env.example` but absent from `provided`;
/// `None` when the revision has no `.env.example`.
pub async fn missing_env_keys<'a, E: Exec>(
    repo: &Repo<'_, E>,
    commit: &str,
    provided: impl IntoIterator<Item = &'a String>,
) -> Result<Option<Vec<String>>, RemoteError> {
    let Some(example) = repo.show_file(commit, ".env.example").await? else {
        return Ok(None);
    };
    Ok(Some(missing_keys(&parse_env_example(&example), provided)))
}

/// Replace `<dir>/.env` atomically (temp file in the same directory, mode 0600, then `mv`).
/// Values travel on stdin only and are registered with the host's redactor. `flavor` decides
/// the quoting rules (use V1, the stricter, when unknown).
pub async fn write_env_file<E: Exec>(
    host: &E,
    dir: &str,
    values: &BTreeMap<String, SecretBytes>,
    flavor: ComposeFlavor,
) -> Result<(), RemoteError> {
    validate::host_path("work tree path", dir)?;
    let content = render_env_file(values, flavor)?;
    for v in values.values() {
        host.redactor().register(v.expose());
    }
    let dir = dir.trim_end_matches('/');
    let nonce =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = format!("{dir}/{ENV_TEMP_PREFIX}{}-{nonce}", std::process::id());
    let len = content.len().to_string();
    let cmd = RemoteCommand::new("sh")
        .arg("-c")
        .arg(WRITE_SCRIPT)
        .arg("slipway-write-env")
        .arg(tmp)
        .arg(format!("{dir}/.env"))
        .arg(len)
        .stdin(content)
        .label("write .env");
    host.run(&cmd).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretBytes> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), SecretBytes::from(*v))).collect()
    }

    #[test]
    fn renders_plain_and_quoted_values() {
        let m = map(&[
            ("A", "plain-value_1.2"),
            ("B", "with space and $dollar #hash \"dq\""),
            ("C", ""),
            ("URL", "postgresql://shop:pw@db:5432/shop?sslmode=disable"),
        ]);
        let out = render_env_file(&m, ComposeFlavor::V2).unwrap();
        let text = String::from_utf8(out.expose().to_vec()).unwrap();
        assert_eq!(
            text,
            "A=plain-value_1.2\nB='with space and $dollar #hash \"dq\"'\nC=\nURL='postgresql://shop:pw@db:5432/shop?sslmode=disable'\n"
        );
    }

    #[test]
    fn refuses_unportable_values_without_quoting_them() {
        let secret = "pa'ss-TOPSECRET";
        for (value, flavor) in [
            (secret, ComposeFlavor::V2),
            ("back\\slash-TOPSECRET", ComposeFlavor::V2),
            ("line1\nTOPSECRET", ComposeFlavor::V2),
            ("${HOME}-TOPSECRET", ComposeFlavor::V1),
        ] {
            let err = render_env_file(&map(&[("KEY", value)]), flavor).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("KEY"), "{msg}");
            assert!(!msg.contains("TOPSECRET"), "{msg}");
            assert_eq!(err.reason(), "InvalidInput");
        }
        // v2 takes single-quoted `${` literally.
        render_env_file(&map(&[("KEY", "${HOME}")]), ComposeFlavor::V2).unwrap();
        assert!(render_env_file(&map(&[("BAD-KEY", "x")]), ComposeFlavor::V2).is_err());
    }

    #[test]
    fn parses_example_keys() {
        let text = "# comment\n\nSECRET_KEY=\nexport DATABASE_URL=postgres://x\n  DEBUG = 0\nSECRET_KEY=dup\nnot a key line\n1BAD=x\n";
        assert_eq!(parse_env_example(text), ["SECRET_KEY", "DATABASE_URL", "DEBUG"]);
    }

    #[test]
    fn missing_keys_in_example_order() {
        let example = vec!["SECRET_KEY".to_owned(), "DATABASE_URL".to_owned(), "DEBUG".to_owned()];
        let provided = ["DEBUG".to_owned(), "EXTRA".to_owned()];
        assert_eq!(missing_keys(&example, provided.iter()), ["SECRET_KEY", "DATABASE_URL"]);
        assert!(missing_keys(&example, example.iter()).is_empty());
    }

    /// The write script through a real `sh`, as `write_env_file` calls it: the content from stdin
    /// verbatim, mode 0600, the old `.env` replaced, no temp file left, paths taken literally.
    #[test]
    fn write_script_replaces_env_privately_and_leaves_no_temp_file() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("my shop\"; touch pwned #");
        std::fs::create_dir(&dir).unwrap();
        let env = dir.join(".env");
        std::fs::write(&env, "OLD=1\n").unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).unwrap();
        let content = "A=1\nB='$(touch pwned) ${HOME}'\n";
        let write = |sent: &str, announced: usize| {
            let mut sh = std::process::Command::new("sh")
                .args(["-c", WRITE_SCRIPT, "slipway-write-env"])
                .arg(dir.join(format!("{ENV_TEMP_PREFIX}1-2")))
                .arg(&env)
                .arg(announced.to_string())
                .current_dir(&dir)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            sh.stdin.take().unwrap().write_all(sent.as_bytes()).unwrap();
            sh.wait().unwrap().success()
        };
        // Cut short (the connection dropped mid-write): .env stays as it was, no temp file left.
        assert!(!write(&content[..5], content.len()));
        assert_eq!(std::fs::read_to_string(&env).unwrap(), "OLD=1\n");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [".env"], "a short write left files next to .env");
        assert!(write(content, content.len()));
        assert_eq!(std::fs::read_to_string(&env).unwrap(), content);
        assert_eq!(format!("{:o}", std::fs::metadata(&env).unwrap().permissions().mode() & 0o777), "600");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [".env"], "files left next to .env (a temp file, or `pwned`)");
    }
}
