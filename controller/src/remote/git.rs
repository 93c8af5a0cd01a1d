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

/// What [`Repo::observe`] found.
#[derive(Debug)]
pub struct Observed {
    pub head: Option<String>,
    pub dirty: Vec<DirtyEntry>,
    /// `stat`'s answer for the files asked about, whatever its exit code.
    pub stat: Option<super::exec::CommandOutput>,
}

/// HEAD, `stat` of the files (`$3...`, in the work tree `$1`, with `stat`'s format `$2`), then
/// `git status`: after each of the first two a NUL, its exit code and a NUL on stdout, and a NUL
/// on stderr. `git status` comes last, so a list cut at the output cap still splits (and is read
/// as the command on its own would be). Nothing here is built from input: the path, format and
/// files are arguments.
const OBSERVE_SCRIPT: &str = r#"d=$1 f=$2
shift 2
git -c advice.detachedHead=false -C "$d" rev-parse --verify --quiet 'HEAD^{commit}'
r=$?; printf '\000%s\000' "$r"; printf '\000' >&2
r=0
[ "$#" -eq 0 ] || (cd -- "$d" && exec stat -L -c "$f" -- "$@") || r=$?
printf '\000%s\000' "$r"; printf '\000' >&2
exec git -c advice.detachedHead=false -C "$d" status --porcelain=v1 -z --untracked-files=all"#;

/// [`OBSERVE_SCRIPT`]'s output as the three programs' own (HEAD, stat, status); `None` when it
/// does not split so.
fn split_observed(out: &super::exec::CommandOutput) -> Option<[super::exec::CommandOutput; 3]> {
    let code = |b: &[u8]| std::str::from_utf8(b).ok().filter(|t| !t.is_empty() && t.len() <= 3)?.parse::<i32>().ok();
    // Neither HEAD's nor stat's answer holds a NUL: the first four are the markers.
    let stdout = out.stdout_bytes();
    let mut nuls = stdout.iter().enumerate().filter(|(_, b)| **b == 0).map(|(i, _)| i);
    let (open1, close1, open2, close2) = (nuls.next()?, nuls.next()?, nuls.next()?, nuls.next()?);
    let (rc1, rc2) = (code(&stdout[open1 + 1..close1])?, code(&stdout[open2 + 1..close2])?);
    let stderr = out.stderr_bytes();
    let mut errs = stderr.split(|b| *b == 0);
    let (e1, e2, e3) = (errs.next()?, errs.next()?, errs.next()?);
    if errs.next().is_some() {
        return None;
    }
    Some([
        out.part(Some(rc1), stdout[..open1].to_vec(), e1.to_vec()),
        out.part(Some(rc2), stdout[close1 + 1..open2].to_vec(), e2.to_vec()),
        out.part(out.exit_code(), stdout[close2 + 1..].to_vec(), e3.to_vec()),
    ])
}

/// The commit `rev-parse --verify --quiet HEAD^{commit}` answered (`None`: no commits yet).
fn head_of(out: super::exec::CommandOutput) -> Result<Option<String>, RemoteError> {
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
        head_of(self.conn.output(&cmd).await?)
    }

    /// Local modifications and untracked files, ignoring the rendered `.env`.
    pub async fn dirty(&self) -> Result<Vec<DirtyEntry>, RemoteError> {
        let cmd = self.git("status").args(["status", "--porcelain=v1", "-z", "--untracked-files=all"]);
        let out = self.conn.run(&cmd).await?;
        Ok(parse_porcelain_z(out.stdout_bytes()))
    }

    /// [`Self::head`], [`Self::dirty`] and `stat -L -c stat_format -- files` in the work tree,
    /// in one session (a monitor round's look at the checkout); each answers and fails as on
    /// its own. `stat`'s output is `None` when `files` is empty. Output that does not split
    /// into the three (cut at the output cap) is read again, one command at a time.
    pub async fn observe(&self, stat_format: &str, files: &[String]) -> Result<Observed, RemoteError> {
        let cmd = RemoteCommand::new("sh")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["-c", OBSERVE_SCRIPT, "slipway-observe"])
            .arg(self.path.clone())
            .arg(stat_format)
            .args(files.iter().cloned())
            .label("git rev-parse HEAD, git status, stat");
        let out = self.conn.output(&cmd).await?;
        let Some([head, stat, status]) = split_observed(&out) else {
            tracing::debug!(path = %self.path, "the checkout's look did not split in three; one command at a time");
            let head = self.head().await?;
            let dirty = self.dirty().await?;
            // As when it came with the rest: a `stat` that could not be read is looked at again.
            let stat = RemoteCommand::new("stat")
                .args(["-L", "-c", stat_format, "--"])
                .args(files.iter().cloned())
                .current_dir(self.path.clone())
                .label("stat");
            let stat = if files.is_empty() { None } else { self.conn.output(&stat).await.ok() };
            return Ok(Observed { head, dirty, stat });
        };
        // In the order the commands ran alone: HEAD's failure is the one reported.
        let head = head_of(head)?;
        let dirty = parse_porcelain_z(status.into_checked("git status")?.stdout_bytes());
        Ok(Observed { head, dirty, stat: (!files.is_empty()).then_some(stat) })
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

/// The one-session look at a checkout, run by the local `sh` on real work trees, as the hosts run it.
#[cfg(test)]
mod observe_tests {
    use super::*;
    use crate::remote::{CommandOutput, Redactor};

    const FORMAT: &str = crate::environment::config_cache::STAT_FORMAT;

    fn look(dir: &std::path::Path, files: &[&str]) -> CommandOutput {
        let out = std::process::Command::new("sh")
            .args(["-c", OBSERVE_SCRIPT, "slipway-observe", dir.to_str().unwrap(), FORMAT])
            .args(files)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap();
        CommandOutput::new(out.status.code(), out.stdout, out.stderr, Redactor::default(), Default::default())
    }

    fn git(dir: &std::path::Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-C", dir.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&ok.stderr));
    }

    /// Each part as the program run on its own answers it (the parts' parsers are the same).
    fn parts(out: &CommandOutput) -> (Result<Option<String>, RemoteError>, Vec<DirtyEntry>, CommandOutput) {
        let [head, stat, status] = split_observed(out).expect("splits in three");
        let dirty = status.into_checked("git status").map(|s| parse_porcelain_z(s.stdout_bytes())).unwrap_or_default();
        (head_of(head), dirty, stat)
    }

    #[test]
    fn one_look_splits_into_what_head_status_and_stat_answer_on_their_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "-q"]);
        std::fs::write(dir.join("docker-compose.yml"), "services: {}\n").unwrap();

        // no commit yet: HEAD is none, the compose file untracked, `.env` missing (stat exit 1)
        let (head, dirty, stat) = parts(&look(dir, &[".env", "docker-compose.yml"]));
        assert_eq!(head.unwrap(), None);
        assert_eq!(dirty.iter().map(|e| e.to_string()).collect::<Vec<_>>(), ["?? docker-compose.yml"]);
        assert_eq!(stat.exit_code(), Some(1));
        assert_eq!((stat.stdout().lines().count(), stat.stderr().lines().count()), (1, 1), "{stat:?}");
        assert!(stat.stdout().ends_with("\tdocker-compose.yml\n"), "{}", stat.stdout());

        // committed and clean, `.env` present: the commit, nothing dirty, one line per file
        std::fs::write(dir.join(".env"), "A=1\n").unwrap();
        std::fs::write(dir.join(".gitignore"), ".env\n").unwrap();
        git(dir, &["add", "docker-compose.yml", ".gitignore"]);
        git(dir, &["commit", "-q", "-m", "one"]);
        let (head, dirty, stat) = parts(&look(dir, &[".env", "docker-compose.yml"]));
        let id = head.unwrap().unwrap();
        assert!(is_full_commit_id(&id), "{id}");
        assert!(dirty.is_empty(), "{dirty:?}");
        assert_eq!((stat.exit_code(), stat.stdout().lines().count()), (Some(0), 2));

        // names with a newline, a tab and NUL-like text survive; no files asked: no stat
        std::fs::write(dir.join("odd\nname\t\\000"), "x").unwrap();
        std::fs::write(dir.join("docker-compose.yml"), "services: {a: {image: x}}\n").unwrap();
        let out = look(dir, &[]);
        let (head, dirty, stat) = parts(&out);
        assert_eq!(head.unwrap(), Some(id));
        let mut listed: Vec<String> = dirty.iter().map(|e| e.to_string()).collect();
        listed.sort();
        assert_eq!(listed, [" M docker-compose.yml", "?? odd\nname\t\\000"]);
        assert_eq!((stat.exit_code(), stat.stdout_bytes(), stat.stderr_bytes()), (Some(0), &b""[..], &b""[..]));

        // no work tree there: HEAD fails with git's own message, as `git -C` alone does
        let gone = dir.join("gone");
        let (head, _, _) = parts(&look(&gone, &[".env"]));
        let message = head.unwrap_err().to_string();
        assert!(message.contains("git rev-parse HEAD") && message.contains("gone"), "{message}");
    }

    #[test]
    fn output_that_does_not_split_in_three_is_refused() {
        let out = |stdout: &[u8], stderr: &[u8]| {
            CommandOutput::new(Some(0), stdout.to_vec(), stderr.to_vec(), Redactor::default(), Default::default())
        };
        let good = out(b"abc\n\x000\x00stat line\n\x000\x00 M a\x00?? b\x00", b"\x00\x00");
        let [head, stat, status] = split_observed(&good).unwrap();
        assert_eq!(
            (head.stdout(), stat.stdout(), status.stdout()),
            ("abc\n".into(), "stat line\n".into(), " M a\0?? b\0".into())
        );
        // a status list cut at the cap still splits: it is read as it would be alone
        assert!(split_observed(&out(b"abc\n\x000\x00\x000\x00 M a\x00?? b", b"\x00\x00")).is_some());
        for (stdout, stderr, why) in [
            (&b"abc\n"[..], &b"\x00\x00"[..], "no markers"),
            (b"abc\n\x000\x00stat line\n", b"\x00\x00", "the second marker missing"),
            (b"abc\n\x00x\x00\x000\x00", b"\x00\x00", "not an exit code"),
            (b"abc\n\x000\x00\x000\x00", b"\x00", "stderr's second marker missing"),
            (b"abc\n\x000\x00\x000\x00", b"\x00\x00\x00", "one marker too many on stderr"),
        ] {
            assert!(split_observed(&out(stdout, stderr)).is_none(), "{why}");
        }
    }
}
