//! Remote commands as argv, and the one place that renders argv into the string `sshd` hands to
//! the user's POSIX shell.
//!
//! SSH transports a single command string which the remote login shell parses. Every element
//! (program, arguments, working directory, environment values) is therefore single-quoted here,
//! so the remote shell reconstructs exactly the argv we built; nothing is ever interpolated into
//! a command string. The remote login shell must be POSIX (`sh`, `bash`, `dash`, `zsh`).

use std::borrow::Cow;
use std::time::Duration;

use super::error::RemoteError;
use super::secret::SecretBytes;
use super::validate;

/// Characters that need no quoting in a POSIX shell word (none of them is special anywhere in
/// a word, so the quoted and unquoted forms parse identically).
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ',' | ':' | '@' | '%' | '+')
}

/// Quote one argument for a POSIX shell: plain words stay as they are, anything else is wrapped
/// in single quotes, with each embedded `'` written as `'\''`.
///
/// Inside single quotes a POSIX shell gives no character a special meaning (not `$`, `` ` ``,
/// `\`, `!` in a non-interactive shell, nor newline), so this is complete for every string
/// without NUL. NUL cannot be passed in an argv at all and is refused by [`RemoteCommand::render`].
pub fn quote(arg: &str) -> Cow<'_, str> {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return Cow::Borrowed(arg);
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// A program and its arguments to run on the host, with optional working directory, extra
/// (non-secret) environment, stdin (treated as secret) and timeout.
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    stdin: Option<SecretBytes>,
    timeout: Option<Duration>,
    label: Option<String>,
}

impl RemoteCommand {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
            timeout: None,
            label: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Run in this directory on the host (`cd -- DIR && ...`).
    pub fn current_dir(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Set a NON-secret environment variable for the program (it is part of the command line,
    /// visible in the host's process list). Secrets go through [`RemoteCommand::stdin`].
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Bytes fed to the program's stdin; treated as secret (never logged, never in errors).
    pub fn stdin(mut self, input: SecretBytes) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Override the connection's default per-command timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Short name used in errors and logs, e.g. `git fetch`; defaults to the program.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn arguments(&self) -> &[String] {
        &self.args
    }

    pub fn working_dir(&self) -> Option<&str> {
        self.cwd.as_deref()
    }

    /// The extra (non-secret) environment, in the order set.
    pub fn environment(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn stdin_bytes(&self) -> Option<&SecretBytes> {
        self.stdin.as_ref()
    }

    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }

    pub fn display_label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.program.clone())
    }

    /// The command string for the remote shell. The only function that builds one.
    pub fn render(&self) -> Result<String, RemoteError> {
        let label = self.display_label();
        let no_nul = |what: &str, s: &str| {
            if s.contains('\0') {
                Err(RemoteError::invalid(format!("{what} of `{label}`"), "must not contain NUL bytes"))
            } else {
                Ok(())
            }
        };
        if self.program.is_empty() {
            return Err(RemoteError::invalid("program", "must not be empty"));
        }
        no_nul("program", &self.program)?;
        for a in &self.args {
            no_nul("argument", a)?;
        }
        let mut out = String::new();
        if let Some(dir) = &self.cwd {
            validate::absolute_path("working directory", dir)?;
            out.push_str("cd -- ");
            out.push_str(&quote(dir));
            out.push_str(" && ");
        }
        for (k, v) in &self.env {
            validate::env_key(k)?;
            no_nul("environment value", v)?;
            out.push_str(k);
            out.push('=');
            out.push_str(&quote(v));
            out.push(' ');
        }
        // The program is always quoted so that a name containing '=' can never become an
        // assignment and a reserved word can never become syntax.
        let program = quote(&self.program);
        if matches!(program, Cow::Borrowed(_)) {
            out.push('\'');
            out.push_str(&self.program);
            out.push('\'');
        } else {
            out.push_str(&program);
        }
        for a in &self.args {
            out.push(' ');
            out.push_str(&quote(a));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quote_table() {
        let cases: &[(&str, &str)] = &[
            ("simple", "simple"),
            ("/srv/shop", "/srv/shop"),
            ("v1.2.3", "v1.2.3"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", "'it'\\''s'"),
            ("$(id)", "'$(id)'"),
            ("`id`", "'`id`'"),
            ("\"; touch /tmp/pwned #", "'\"; touch /tmp/pwned #'"),
            ("a\nb", "'a\nb'"),
            ("*", "'*'"),
            ("~", "'~'"),
            ("a=b", "'a=b'"),
            ("-rf", "-rf"),
            ("!x", "'!x'"),
            ("\\", "'\\'"),
            ("''", "''\\'''\\'''"),
        ];
        for (input, want) in cases {
            assert_eq!(quote(input), *want, "input {input:?}");
        }
    }

    /// The real proof: a local POSIX shell turns each quoted word back into the original.
    #[test]
    fn quoted_words_round_trip_through_sh() {
        let samples = [
            "plain",
            "with space",
            "it's",
            "$(id)",
            "`id`",
            "\"; touch /tmp/slipway-quote-test-pwned #",
            "line1\nline2",
            "tab\there",
            "-rf",
            "--upload-pack=evil",
            "$HOME ${PATH} $1 $@ $*",
            "a\\b\\\\c",
            "'",
            "''",
            "!!",
            "*?[a]",
            "~root",
            "é ü 中文",
            "\u{7f}\u{1b}[31m",
            "",
        ];
        for s in samples {
            let cmd = RemoteCommand::new("printf").arg("%s\\0").arg(s);
            let rendered = cmd.render().unwrap();
            let out = Command::new("sh").arg("-c").arg(&rendered).output().unwrap();
            assert!(out.status.success(), "{rendered}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{s}\0"), "rendered: {rendered}");
        }
        assert!(!std::path::Path::new("/tmp/slipway-quote-test-pwned").exists());
    }

    #[test]
    fn render_with_cwd_and_env() {
        let cmd = RemoteCommand::new("git")
            .args(["status", "--porcelain"])
            .current_dir("/srv/my shop")
            .env("GIT_TERMINAL_PROMPT", "0");
        assert_eq!(cmd.render().unwrap(), "cd -- '/srv/my shop' && GIT_TERMINAL_PROMPT=0 'git' status --porcelain");
        assert_eq!(cmd.display_label(), "git");
        assert_eq!(cmd.clone().label("git status").display_label(), "git status");
    }

    #[test]
    fn render_refuses_nul_and_bad_cwd_and_env_keys() {
        assert!(RemoteCommand::new("echo").arg("a\0b").render().is_err());
        assert!(RemoteCommand::new("").render().is_err());
        assert!(RemoteCommand::new("ls").current_dir("relative").render().is_err());
        assert!(RemoteCommand::new("ls").current_dir("/a\nb").render().is_err());
        assert!(RemoteCommand::new("ls").env("A;B", "x").render().is_err());
    }

    #[test]
    fn program_named_like_an_assignment_stays_a_program() {
        let r = RemoteCommand::new("A=b").render().unwrap();
        assert_eq!(r, "'A=b'");
        let r = RemoteCommand::new("if").render().unwrap();
        assert_eq!(r, "'if'");
    }

    #[test]
    fn stdin_is_not_in_debug_or_rendering() {
        let cmd = RemoteCommand::new("cat").stdin(SecretBytes::from("TOP-SECRET-VALUE"));
        assert!(!format!("{cmd:?}").contains("TOP-SECRET-VALUE"));
        assert!(!cmd.render().unwrap().contains("TOP-SECRET-VALUE"));
    }
}
