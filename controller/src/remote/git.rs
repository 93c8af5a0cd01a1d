//! The git work tree on the host: clone, fetch, resolve a revision to a commit, dirty report,
//! detached checkout, reading a file of a revision.

use super::command::RemoteCommand;
use super::error::RemoteError;
use super::exec::Exec;
use super::validate;

/// Files the deploy itself writes into the work tree; never reported as dirt.
pub const DEPLOY_OWNED_FILES: &[&str] = &[".env"];
/// Prefix of the temporary file used while replacing `.env` atomically.
pub const ENV_TEMP_PREFIX: &str = ".env.slipway-";

/// What to deploy: exactly one of branch, tag or commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionRef {
    Branch(String),
    Tag(String),
    Commit(String),
}

impl RevisionRef {
    pub fn validate(&self) -> Result<(), RemoteError> {
        match self {
            RevisionRef::Branch(b) => validate::git_ref_name("branch", b),
            RevisionRef::Tag(t) => validate::git_ref_name("tag", t),
            RevisionRef::Commit(c) => validate::commit_id(c),
        }
    }

    /// The expression handed to `git rev-parse --verify`: branches are taken from what was
    /// just fetched from origin, never from a local branch that may lag behind.
    pub fn rev_expression(&self) -> String {
        match self {
            RevisionRef::Branch(b) => format!("refs/remotes/origin/{b}^{{commit}}"),
            RevisionRef::Tag(t) => format!("refs/tags/{t}^{{commit}}"),
            RevisionRef::Commit(c) => format!("{c}^{{commit}}"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RevisionRef::Branch(b) => format!("branch {b}"),
            RevisionRef::Tag(t) => format!("tag {t}"),
            RevisionRef::Commit(c) => format!("commit {c}"),
        }
    }
}

/// One entry of `git status --porcelain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyEntry {
    /// The two-letter XY status (`??` untracked, ` M` modified, ...).
    pub status: String,
    pub path: String,
}

impl std::fmt::Display for DirtyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.path)
    }
}

/// Parse `git status --porcelain=v1 -z`, dropping files the deploy itself owns.
pub fn parse_porcelain_z(out: &[u8]) -> Vec<DirtyEntry> {
    let mut entries = Vec::new();
    let mut fields = out.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(f) = fields.next() {
        if f.len() < 4 {
            continue;
        }
        let status = String::from_utf8_lossy(&f[..2]).into_owned();
        let path = String::from_utf8_lossy(&f[3..]).into_owned();
        // Renames and copies carry the original path as the next field.
        if status.starts_with('R') || status.starts_with('C') {
            fields.next();
        }
        let owned = DEPLOY_OWNED_FILES.contains(&path.as_str()) || path.starts_with(ENV_TEMP_PREFIX);
        if !owned {
            entries.push(DirtyEntry { status, path });
        }
    }
    entries
}

fn is_full_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// How long a look-up of a declared revision may take.
pub const LS_REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The full commit id `rev` stands for at the repository now, asked with `git ls-remote` from
/// the host (which holds the credentials for it): at `origin` when given (no work tree needed),
/// else at the `origin` remote of the work tree at `path`. A commit is returned as given.
pub async fn ls_remote<E: Exec>(
    conn: &E,
    path: &str,
    origin: Option<&str>,
    rev: &RevisionRef,
) -> Result<String, RemoteError> {
    rev.validate()?;
    let wanted = match rev {
        RevisionRef::Commit(c) => return Ok(c.clone()),
        RevisionRef::Branch(b) => vec![format!("refs/heads/{b}")],
        // an annotated tag's own object first, then the commit it peels to
        RevisionRef::Tag(t) => vec![format!("refs/tags/{t}"), format!("refs/tags/{t}^{{}}")],
    };
    // Asked from a reconcile: never a prompt (a passphrase, an unknown host key), and bounded.
    let git =
        || RemoteCommand::new("git").env("GIT_TERMINAL_PROMPT", "0").env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    let cmd = match origin {
        Some(url) => {
            validate::git_url(url)?;
            git().args(["ls-remote", "--"]).arg(url)
        }
        None => {
            validate::host_path("work tree path", path)?;
            git().arg("-C").arg(path).args(["ls-remote", "--", "origin"])
        }
    };
    let cmd = cmd.args(wanted.iter().cloned()).label("git ls-remote").timeout(LS_REMOTE_TIMEOUT);
    let out = conn.run(&cmd).await?;
    pick_ls_remote(&out.stdout(), &wanted).ok_or_else(|| RemoteError::RevisionNotFound {
        revision: rev.describe(),
        detail: "not found at origin (git ls-remote)".into(),
    })
}

/// The id of the last of `wanted` that `git ls-remote` printed (exact names only: its patterns
/// also match longer names ending the same way).
fn pick_ls_remote(stdout: &str, wanted: &[String]) -> Option<String> {
    let lines: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.split_once('\t')).collect();
    wanted
        .iter()
        .rev()
        .find_map(|w| lines.iter().find(|(_, name)| name.trim() == w).map(|(id, _)| id.trim().to_owned()))
        .filter(|id| is_full_commit_id(id))
}

/// A git work tree at an absolute path on a host.
pub struct Repo<'a, E: Exec> {
    conn: &'a E,
    path: String,
}

impl<'a, E: Exec> Repo<'a, E> {
    pub fn new(conn: &'a E, path: impl Into<String>) -> Result<Self, RemoteError> {
        let path = path.into();
        validate::host_path("work tree path", &path)?;
        Ok(Self { conn, path })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn git(&self, label: &str) -> RemoteCommand {
        RemoteCommand::new("git")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["-c", "advice.detachedHead=false", "-C"])
            .arg(self.path.clone())
            .label(format!("git {label}"))
    }

    /// Is there a git work tree at the path? Only `test`'s own "no" (exit 1) means absent.
    pub async fn exists(&self) -> Result<bool, RemoteError> {
        let cmd = RemoteCommand::new("test").arg("-d").arg(format!("{}/.git", self.path)).label("test -d .git");
        let out = self.conn.output(&cmd).await?;
        match out.exit_code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.into_checked("test -d .git").expect_err("exit status is neither 0 nor 1")),
        }
    }

    /// Clone `origin` into the path unless a work tree is already there; true if it cloned.
    pub async fn ensure_cloned(&self, origin: &str) -> Result<bool, RemoteError> {
        validate::git_url(origin)?;
        if self.exists().await? {
            return Ok(false);
        }
        let cmd = RemoteCommand::new("git")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["clone", "--quiet", "--"])
            .arg(origin)
            .arg(self.path.clone())
            .label("git clone")
            .timeout(self.conn.command_timeout() * 5);
        self.conn.run(&cmd).await?;
        Ok(true)
    }

    /// `fetch --tags --force --prune origin`: tags moved at origin win, deleted branches go.
    pub async fn fetch(&self) -> Result<(), RemoteError> {
        let cmd = self
            .git("fetch")
            .args(["fetch", "--quiet", "--tags", "--force", "--prune", "origin"])
            .timeout(self.conn.command_timeout() * 5);
        self.conn.run(&cmd).await.map(|_| ())
    }

    /// The full commit id a branch, tag or commit stands for (after [`Repo::fetch`]).
    pub async fn resolve(&self, rev: &RevisionRef) -> Result<String, RemoteError> {
        rev.validate()?;
        let cmd = self
            .git("rev-parse")
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(rev.rev_expression());
        let out = self.conn.output(&cmd).await?;
        if out.exit_code() == Some(1) {
            return Err(RemoteError::RevisionNotFound {
                revision: rev.describe(),
                detail: format!("not found in {} after fetching origin", self.path),
            });
        }
        let out = out.into_checked("git rev-parse")?;
        let id = out.stdout().trim().to_owned();
        if !is_full_commit_id(&id) {
            return Err(RemoteError::UnexpectedOutput {
                program: "git rev-parse".into(),
                detail: format!("expected a commit id, got {:?}", crate::remote::error::truncate(&id, 80)),
            });
        }
        Ok(id)
    }

    /// The checked-out commit, `None` in a repository without commits. Only git's own "no
    /// such revision" (exit 1 of `rev-parse --verify --quiet`) means none; anything else (no
    /// repository, a broken one) is an error.
    pub async fn head(&self) -> Result<Option<String>, RemoteError> {
        let cmd = self.git("rev-parse").args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
        let out = self.conn.output(&cmd).await?;
        if out.exit_code() == Some(1) {
            return Ok(None);
        }
        let out = out.into_checked("git rev-parse HEAD")?;
        let id = out.stdout().trim().to_owned();
        if !is_full_commit_id(&id) {
            return Err(RemoteError::UnexpectedOutput {
                program: "git rev-parse HEAD".into(),
                detail: format!("expected a commit id, got {:?}", crate::remote::error::truncate(&id, 80)),
            });
        }
        Ok(Some(id))
    }

    /// Local modifications and untracked files, ignoring the rendered `.env`.
    pub async fn dirty(&self) -> Result<Vec<DirtyEntry>, RemoteError> {
        let cmd = self.git("status").args(["status", "--porcelain=v1", "-z", "--untracked-files=all"]);
        let out = self.conn.run(&cmd).await?;
        Ok(parse_porcelain_z(out.stdout_bytes()))
    }

    /// Detached checkout of a full commit id (refuses to overwrite local changes).
    pub async fn checkout(&self, commit: &str) -> Result<(), RemoteError> {
        validate::commit_id(commit)?;
        let cmd = self.git("checkout").args(["checkout", "--quiet", "--detach"]).arg(commit).arg("--");
        self.conn.run(&cmd).await.map(|_| ())
    }

    /// Detached checkout of a full commit id that discards local changes to tracked files (and
    /// untracked files in the way), even when HEAD is that commit already: a drift heal.
    pub async fn checkout_discarding(&self, commit: &str) -> Result<(), RemoteError> {
        validate::commit_id(commit)?;
        let cmd = self.git("checkout").args(["checkout", "--quiet", "--force", "--detach"]).arg(commit).arg("--");
        self.conn.run(&cmd).await.map(|_| ())
    }

    /// Is `path` tracked at `commit` (as any kind of entry)? Its content is never read.
    pub async fn tracks(&self, commit: &str, path: &str) -> Result<bool, RemoteError> {
        validate::commit_id(commit)?;
        validate::relative_path("file in revision", path)?;
        let listing = self
            .git("ls-tree")
            .args(["ls-tree", "-z", "--full-tree", "--name-only", "--end-of-options"])
            .arg(commit)
            .arg("--")
            .arg(path);
        let out = self.conn.run(&listing).await?;
        Ok(!out.stdout().trim_end_matches('\0').is_empty())
    }

    /// Paths added between two commits (`git diff --diff-filter=A`), as git prints them.
    pub async fn added_files(&self, from: &str, to: &str) -> Result<Vec<String>, RemoteError> {
        validate::commit_id(from)?;
        validate::commit_id(to)?;
        let diff = self
            .git("diff")
            .args(["diff", "--no-renames", "--name-only", "-z", "--diff-filter=A", "--end-of-options"])
            .arg(from)
            .arg(to)
            .arg("--");
        let out = self.conn.run(&diff).await?;
        Ok(out.stdout().split('\0').filter(|p| !p.is_empty()).map(str::to_owned).collect())
    }

    /// A file's content at a commit, `None` when the revision has no such file.
    pub async fn show_file(&self, commit: &str, path: &str) -> Result<Option<String>, RemoteError> {
        validate::commit_id(commit)?;
        validate::relative_path("file in revision", path)?;
        // `ls-tree` answers "absent" with an empty listing and fails only for a bad commit or
        // repository, so absence is never confused with an error.
        let listing = self
            .git("ls-tree")
            .args(["ls-tree", "-z", "--full-tree", "--end-of-options"])
            .arg(commit)
            .arg("--")
            .arg(path);
        let out = self.conn.run(&listing).await?;
        let entry = out.stdout();
        if entry.trim_end_matches('\0').is_empty() {
            return Ok(None);
        }
        // "<mode> <type> <object>\t<path>"
        if entry.split_whitespace().nth(1) != Some("blob") {
            return Err(RemoteError::UnexpectedOutput {
                program: "git ls-tree".into(),
                detail: format!("{path} at {commit} is not a regular file"),
            });
        }
        let object = format!("{commit}:{path}");
        let show = self.git("cat-file").args(["cat-file", "blob", "--end-of-options"]).arg(object);
        Ok(Some(self.conn.run(&show).await?.stdout()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ls_remote_output_is_read_by_exact_name_peeled_tags_first() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let out = format!("{a}\trefs/heads/other/main\n{b}\trefs/tags/v1\n{c}\trefs/tags/v1^{{}}\n");
        let tag = ["refs/tags/v1".to_owned(), "refs/tags/v1^{}".to_owned()];
        assert_eq!(super::pick_ls_remote(&out, &tag), Some(c.clone()));
        assert_eq!(super::pick_ls_remote(&format!("{b}\trefs/tags/v1\n"), &tag), Some(b.clone()));
        assert_eq!(super::pick_ls_remote(&out, &["refs/heads/main".to_owned()]), None, "a longer name is not it");
        assert_eq!(super::pick_ls_remote("", &tag), None);
    }

    use super::*;

    #[test]
    fn rev_expressions() {
        assert_eq!(RevisionRef::Branch("main".into()).rev_expression(), "refs/remotes/origin/main^{commit}");
        assert_eq!(RevisionRef::Tag("v1.0.0".into()).rev_expression(), "refs/tags/v1.0.0^{commit}");
        assert_eq!(RevisionRef::Commit("4f1c9a".into()).rev_expression(), "4f1c9a^{commit}");
    }

    #[test]
    fn hostile_revisions_are_refused() {
        for h in ["\"; touch /tmp/pwned #", "$(id)", "`id`", "a\nb", "-x", "../x"] {
            assert!(RevisionRef::Branch(h.into()).validate().is_err(), "{h:?}");
            assert!(RevisionRef::Tag(h.into()).validate().is_err(), "{h:?}");
            assert!(RevisionRef::Commit(h.into()).validate().is_err(), "{h:?}");
        }
    }

    #[test]
    fn porcelain_parsing_ignores_env() {
        let raw = b" M app/main.py\0?? .env\0?? notes.txt\0R  new.txt\0old.txt\0?? .env.slipway-123\0 D gone\0";
        let e = parse_porcelain_z(raw);
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(shown, [" M app/main.py", "?? notes.txt", "R  new.txt", " D gone"]);
        assert!(parse_porcelain_z(b"").is_empty());
    }

    #[test]
    fn full_commit_ids() {
        assert!(is_full_commit_id(&"a".repeat(40)));
        assert!(!is_full_commit_id("abc"));
        assert!(!is_full_commit_id(&"z".repeat(40)));
    }
}
