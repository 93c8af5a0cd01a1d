//! The monitor's copy of each Environment's parsed `compose config`: running the compose CLI on
//! the host costs a few hundred ms of host CPU, every round of every Environment, for a model that
//! changes only when a deploy or a person changes the files compose reads. A round reuses the copy
//! while its [`Key`] (read on the host before deciding) is unchanged, and runs `compose config`
//! again on any difference, on any error, and at least every [`MAX_REUSES`] + 1 rounds.
//!
//! What the key covers: the spec (generation, project name, directory, files), the recorded
//! release, the compose flavor, the checkout's HEAD and its modified and untracked files (what the
//! round reads for drift anyway), and `stat` of `.env`, of each compose file and of each modified
//! or untracked file (a second edit of a file already modified leaves the list as it was). So an
//! `env_file:`, `include:` or `extends:` file that git tracks, or sees as untracked, is covered.
//! Not covered: such a file that git ignores or that lies outside the checkout, and the SSH
//! session's environment; they are seen at the next fresh run (within [`MAX_REUSES`] + 1 rounds,
//! counting a deploy's own rounds, whose copy the monitor's rounds go on with; after a failed
//! deploy; after a controller restart). An `env_file:` only sets container variables, which
//! the parsed model does not keep: what a stale copy could miss there is compose refusing a
//! missing file.
//!
//! A deploy's verification and bake rounds judge against the same copy (read once while the
//! containers start, then reused while the key holds): within one deploy, the gaps above are
//! the same.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use slipway_crds::Release;

use crate::remote::{
    CommandOutput, ComposeConfig, ComposeFlavor, ComposeProject, DirtyEntry, RemoteCommand, RemoteError,
};

/// A copy is reused at most this many rounds in a row; the next round runs `compose config`.
pub const MAX_REUSES: u32 = 9;
/// At most this many files are fingerprinted; a checkout with more changed files runs
/// `compose config` every round.
pub const MAX_FILES: usize = 256;
/// Inode, size, mtime (s), mtime and ctime (ns, as text), name: an atomic replacement (new inode)
/// or an edit within the same second both change it. The name comes last (it may hold tabs).
pub const STAT_FORMAT: &str = "%i\t%s\t%Y\t%y\t%z\t%n";

/// The deploy-owned file compose reads for interpolation, relative to the checkout.
const ENV_FILE: &str = ".env";

/// Everything `compose config` depends on, as the monitor reads it before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub generation: Option<i64>,
    pub release: Option<Release>,
    pub project: ComposeProject,
    pub flavor: ComposeFlavor,
    pub head: Option<String>,
    pub dirty: Vec<DirtyEntry>,
    /// Digest of the `stat` of [`fingerprinted`] files.
    pub files: String,
}

/// Where a round's compose model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `compose config` ran on the host.
    Host,
    /// The copy of an earlier round, its key unchanged.
    Cache,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Host => "host",
            Source::Cache => "cache",
        }
    }
}

/// The files whose `stat` goes into the key (relative to the checkout, `git status` paths being
/// relative to its root): `.env`, the compose files, each modified or untracked file. `None`
/// when there are more than [`MAX_FILES`].
pub fn fingerprinted(project: &ComposeProject, dirty: &[DirtyEntry]) -> Option<Vec<String>> {
    let paths: BTreeSet<String> = std::iter::once(ENV_FILE.to_owned())
        .chain(project.files.iter().cloned())
        .chain(dirty.iter().map(|e| e.path.clone()))
        .collect();
    (paths.len() <= MAX_FILES).then(|| paths.into_iter().collect())
}

/// `stat -L -c FORMAT -- paths...` in the checkout.
pub fn stat_command(dir: &str, paths: &[String]) -> RemoteCommand {
    RemoteCommand::new("stat")
        .args(["-L", "-c", STAT_FORMAT, "--"])
        .args(paths.iter().cloned())
        .current_dir(dir.to_owned())
        .label("stat (compose inputs)")
}

/// The digest of `stat`'s answer for `paths` files. A missing file has no line but one on
/// stderr: stable, and distinct from any present file. Anything but one answer per file (stat
/// refused the format, a file name spanning lines) is an error: the round then runs compose.
pub fn fingerprint(out: &CommandOutput, paths: usize) -> Result<String, RemoteError> {
    let stdout = out.stdout();
    let stderr = out.stderr();
    let present: Vec<&str> = stdout.lines().collect();
    let missing = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    let well_formed = present.iter().all(|l| {
        let fields: Vec<&str> = l.splitn(6, '\t').collect();
        fields.len() == 6 && fields[..3].iter().all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    });
    let exit_fits = match out.exit_code() {
        Some(0) => missing == 0,
        Some(1) => missing > 0,
        _ => false,
    };
    if !well_formed || !exit_fits || present.len() + missing != paths {
        return Err(RemoteError::UnexpectedOutput {
            program: "stat".into(),
            detail: format!(
                "expected one answer per file for {paths} files, got {} lines, {missing} errors, exit {:?}: {}",
                present.len(),
                out.exit_code(),
                out.stderr_tail()
            ),
        });
    }
    let mut digest = Sha256::new();
    digest.update(stdout.as_bytes());
    digest.update([0]);
    digest.update(stderr.as_bytes());
    Ok(digest.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

struct Entry {
    key: Key,
    config: ComposeConfig,
    reuses: u32,
    /// When it was last read or reused.
    seen: SystemTime,
}

/// Per Environment (`crate::object_key`): the last compose model the monitor read and its key.
#[derive(Default)]
pub struct ConfigCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// When a deploy's verification last set out to read each Environment's model: a checkout
    /// whose key cannot be read stores no copy, and must not be read again every round for it.
    noted: Mutex<HashMap<String, SystemTime>>,
    /// Tests: a pause between a claim's check and its note, so that claims at once overlap there.
    #[cfg(test)]
    claim_pause: std::time::Duration,
}

/// Whether an entry reused `reuses` times under `stored` may serve a round whose key is `key`.
pub fn reusable(stored: &Key, reuses: u32, key: &Key) -> bool {
    stored == key && reuses < MAX_REUSES
}

/// Whether `env`'s copy was read or reused, or a read of it noted, at `since` or later.
fn seen(entries: &HashMap<String, Entry>, noted: &HashMap<String, SystemTime>, env: &str, since: SystemTime) -> bool {
    entries.get(env).is_some_and(|e| e.seen >= since) || noted.get(env).is_some_and(|t| *t >= since)
}

impl ConfigCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The model stored for `env` under exactly `key`, counted as one more reuse; otherwise
    /// `None` and the entry goes.
    pub fn reuse(&self, env: &str, key: &Key) -> Option<ComposeConfig> {
        let mut entries = self.entries();
        match entries.get_mut(env) {
            Some(e) if reusable(&e.key, e.reuses, key) => {
                e.reuses += 1;
                e.seen = SystemTime::now();
                Some(e.config.clone())
            }
            Some(_) => {
                entries.remove(env);
                None
            }
            None => None,
        }
    }

    /// Keeps `config`, just read from the host, under `key` (read before it).
    pub fn store(&self, env: &str, key: Key, config: ComposeConfig) {
        self.entries().insert(env.to_owned(), Entry { key, config, reuses: 0, seen: SystemTime::now() });
    }

    /// Notes that a round sets out to read the model of `env` now, whether or not a copy results.
    #[cfg(test)]
    fn note_read(&self, env: &str) {
        self.noted().insert(env.to_owned(), SystemTime::now());
    }

    /// Whether the copy of `env` was read or reused, or a read of it noted, at `since` or later.
    #[cfg(test)]
    fn seen_since(&self, env: &str, since: SystemTime) -> bool {
        seen(&self.entries(), &self.noted(), env, since)
    }

    /// Whether a round of a step that began at `began` (`None`: unknown) should read the model
    /// of `env` ahead, once per step: not if it was read, reused or noted since; when it should,
    /// the read is noted here, before it runs.
    pub fn claim_read(&self, env: &str, began: Option<SystemTime>) -> bool {
        // both locks at once (always entries, then noted), so of two rounds at once only one reads
        let entries = self.entries();
        let mut noted = self.noted();
        if began.is_some_and(|t| seen(&entries, &noted, env, t)) {
            return false;
        }
        #[cfg(test)]
        std::thread::sleep(self.claim_pause);
        noted.insert(env.to_owned(), SystemTime::now());
        true
    }

    fn noted(&self) -> std::sync::MutexGuard<'_, HashMap<String, SystemTime>> {
        self.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A deploy ends with `current` its Environment's release: the copy its own verification or
    /// bake rounds read (under no release) is kept for the monitor's rounds of that release,
    /// which would otherwise run `compose config` again right after the deploy. Its key's other
    /// parts stand, and the monitor reads them again before reusing it. Any other copy (the
    /// monitor's, from before the deploy) goes. A second call for the same release keeps the copy
    /// handed over.
    pub fn hand_over(&self, env: &str, current: &Release) {
        let mut entries = self.entries();
        match entries.get_mut(env) {
            Some(e) if e.key.release.as_ref().is_none_or(|r| r == current) => {
                e.key.release = Some(current.clone());
            }
            Some(_) => {
                entries.remove(env);
            }
            None => {}
        }
    }

    /// Forgets the copy of `env`: a deploy or rollback ended without a new current release (or
    /// handed its lock on), the monitor's key missed, or the Environment went.
    /// The note of a read stays (a read that found no copy forgets it, and must stay noted);
    /// it counts only against a later step's start, and [`Self::retain`] drops it with the
    /// Environment.
    pub fn forget(&self, env: &str) {
        self.entries().remove(env);
    }

    /// Keeps the copies of the Environments `alive` says exist.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        self.entries().retain(|k, _| alive(k));
        self.noted().retain(|k, _| alive(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> CommandOutput {
        CommandOutput::new(code, stdout.to_vec(), stderr.to_vec(), Default::default(), Default::default())
    }

    fn key() -> Key {
        Key {
            generation: Some(2),
            release: Some(Release { commit: "a".repeat(40), ..Default::default() }),
            project: ComposeProject::new("/srv/shop", "shop", vec!["docker-compose.yml".into()]),
            flavor: ComposeFlavor::V2,
            head: Some("a".repeat(40)),
            dirty: vec![],
            files: "f0".into(),
        }
    }

    fn config(service: &str) -> ComposeConfig {
        let doc = serde_json::json!({"services": {service: {"image": "x"}}});
        crate::remote::compose::parse_compose_config(&doc).unwrap()
    }

    #[test]
    fn a_copy_is_seen_when_it_is_read_or_reused() {
        let cache = ConfigCache::default();
        let before = SystemTime::now();
        assert!(!cache.seen_since("Environment/ns/a", before), "nothing stored");
        cache.store("Environment/ns/a", key(), config("web"));
        assert!(cache.seen_since("Environment/ns/a", before));
        let later = SystemTime::now() + std::time::Duration::from_millis(1);
        assert!(!cache.seen_since("Environment/ns/a", later), "stored before");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(cache.reuse("Environment/ns/a", &key()).is_some());
        assert!(cache.seen_since("Environment/ns/a", later), "reused since");
        let mut other = key();
        other.head = Some("b".repeat(40));
        let after = SystemTime::now();
        assert_eq!(cache.reuse("Environment/ns/a", &other), None);
        assert!(!cache.seen_since("Environment/ns/a", after), "a missed key drops the copy");
        // a read set out on, its key unreadable: no copy, but seen
        cache.note_read("Environment/ns/a");
        cache.forget("Environment/ns/a");
        assert!(cache.seen_since("Environment/ns/a", after), "the read forgot no copy, but was noted");
        assert!(!cache.seen_since("Environment/ns/b", after), "only that Environment");
        cache.retain(|k| k != "Environment/ns/a");
        assert!(!cache.seen_since("Environment/ns/a", after), "a gone Environment's note goes");
    }

    #[test]
    fn a_deploy_hands_its_copy_to_the_monitor_of_the_release_it_recorded() {
        let env = "Environment/ns/a";
        let deployed =
            Release { commit: "b".repeat(40), deployed_by: Some("DeployRequest/ns/v2/u".into()), ..Default::default() };
        let mut read_by_deploy = key();
        read_by_deploy.release = None;
        let mut monitors = key();
        monitors.release = Some(deployed.clone());

        let cache = ConfigCache::default();
        cache.store(env, read_by_deploy.clone(), config("web"));
        cache.hand_over(env, &deployed);
        assert!(
            cache.reuse(env, &monitors).is_some(),
            "the monitor's round of the new release reuses the deploy's copy"
        );
        cache.hand_over(env, &deployed);
        assert!(cache.reuse(env, &monitors).is_some(), "handed over twice (a lock released again) it stays");
        let mut edited = monitors.clone();
        edited.files = "f1".into();
        assert_eq!(cache.reuse(env, &edited), None, "the rest of the key still has to hold");

        // the monitor's copy from before the deploy (the old release) is not the new one's
        cache.store(env, key(), config("web"));
        cache.hand_over(env, &deployed);
        assert_eq!(cache.reuse(env, &monitors), None);
        assert_eq!(cache.reuse(env, &key()), None, "it went");
    }

    #[test]
    fn a_step_reads_ahead_once() {
        let cache = ConfigCache::default();
        let env = "Environment/ns/a";
        let step = SystemTime::now() - std::time::Duration::from_secs(3);
        assert!(cache.claim_read(env, Some(step)), "the step's first waiting round reads");
        assert!(!cache.claim_read(env, Some(step)), "its later rounds do not, though no copy was kept");
        assert!(cache.claim_read("Environment/ns/b", Some(step)), "another Environment's step reads");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let next = SystemTime::now();
        assert!(cache.claim_read(env, Some(next)), "a step that began after the read reads again");
        assert!(!cache.claim_read(env, Some(next)));
        assert!(cache.claim_read(env, None), "a step of unknown start reads");
        // a copy reused by the step (the monitor's, or a previous round's) counts as read
        std::thread::sleep(std::time::Duration::from_millis(2));
        let third = SystemTime::now();
        cache.store(env, key(), config("web"));
        assert!(!cache.claim_read(env, Some(third)), "stored since the step began");
    }

    #[test]
    fn of_rounds_claiming_at_once_exactly_one_reads() {
        // every claim pauses between its check and its note: a check and a note under separate
        // locks lets the racing claims all pass the check in that pause, and several win
        for _ in 0..20 {
            let cache = std::sync::Arc::new(ConfigCache {
                claim_pause: std::time::Duration::from_millis(2),
                ..ConfigCache::default()
            });
            let step = SystemTime::now() - std::time::Duration::from_secs(3);
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let claims: Vec<_> = (0..8)
                .map(|_| {
                    let (cache, start) = (cache.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        cache.claim_read("Environment/ns/a", Some(step))
                    })
                })
                .collect();
            let won = claims.into_iter().map(|c| c.join().unwrap()).filter(|w| *w).count();
            assert_eq!(won, 1, "{won} of 8 rounds at once read ahead");
        }
    }

    #[test]
    fn a_copy_serves_only_its_own_key_and_only_so_many_times() {
        let cache = ConfigCache::default();
        assert_eq!(cache.reuse("Environment/ns/a", &key()), None, "nothing stored");
        cache.store("Environment/ns/a", key(), config("web"));
        for _ in 0..MAX_REUSES {
            assert_eq!(cache.reuse("Environment/ns/a", &key()), Some(config("web")));
        }
        assert_eq!(cache.reuse("Environment/ns/a", &key()), None, "fresh after {MAX_REUSES} reuses");
        assert_eq!(cache.reuse("Environment/ns/a", &key()), None, "the entry went");

        let changes: [fn(&mut Key); 7] = [
            |k| k.generation = Some(3),
            |k| k.release.as_mut().unwrap().deployed_at = Some("2026-11-30T08:00:00Z".into()),
            |k| k.project.files.push("override.yml".into()),
            |k| k.flavor = ComposeFlavor::V1,
            |k| k.head = Some("b".repeat(40)),
            |k| k.dirty.push(DirtyEntry { status: " M".into(), path: "docker-compose.yml".into() }),
            |k| k.files = "f1".into(),
        ];
        for (i, change) in changes.iter().enumerate() {
            cache.store("Environment/ns/a", key(), config("web"));
            let mut other = key();
            change(&mut other);
            assert_eq!(cache.reuse("Environment/ns/a", &other), None, "change {i}");
            assert_eq!(cache.reuse("Environment/ns/a", &key()), None, "change {i}: the stale entry went");
        }
        cache.store("Environment/ns/a", key(), config("web"));
        cache.store("Environment/ns/b", key(), config("db"));
        cache.forget("Environment/ns/a");
        assert_eq!(cache.reuse("Environment/ns/a", &key()), None);
        cache.retain(|k| k != "Environment/ns/b");
        assert_eq!(cache.reuse("Environment/ns/b", &key()), None);
    }

    #[test]
    fn the_fingerprinted_files_are_env_compose_files_and_changed_files() {
        let project = ComposeProject::new("/srv/shop", "shop", vec!["docker-compose.yml".into(), "prod.yml".into()]);
        let dirty = [
            DirtyEntry { status: " M".into(), path: "docker-compose.yml".into() },
            DirtyEntry { status: "??".into(), path: "config/app.env".into() },
        ];
        assert_eq!(
            fingerprinted(&project, &dirty).unwrap(),
            [".env", "config/app.env", "docker-compose.yml", "prod.yml"]
        );
        let many: Vec<DirtyEntry> =
            (0..MAX_FILES).map(|i| DirtyEntry { status: "??".into(), path: format!("f{i}") }).collect();
        assert_eq!(fingerprinted(&project, &many), None);
        let cmd = stat_command("/srv/shop", &[".env".into(), "-odd name".into()]);
        assert_eq!(cmd.program(), "stat");
        assert_eq!(cmd.arguments(), ["-L", "-c", STAT_FORMAT, "--", ".env", "-odd name"]);
        assert_eq!(cmd.working_dir(), Some("/srv/shop"));
    }

    /// `stat` as the hosts run it, on real files: every kind of change moves the digest, a
    /// missing file gives a stable one.
    #[test]
    fn the_fingerprint_moves_with_every_change_and_is_stable_otherwise() {
        let dir = std::env::temp_dir().join(format!("slipway-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = vec![".env".to_owned(), "docker-compose.yml".to_owned()];
        // rendered as the SSH transport sends it
        let run = || {
            let script = stat_command(dir.to_str().unwrap(), &paths).render().unwrap();
            let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
            fingerprint(&output(out.status.code(), &out.stdout, &out.stderr), paths.len())
        };
        std::fs::write(dir.join("docker-compose.yml"), "services: {}\n").unwrap();
        let missing = run().unwrap();
        assert_eq!(run().unwrap(), missing, "a missing .env is stable");
        std::fs::write(dir.join(".env"), "A=1\n").unwrap();
        let written = run().unwrap();
        assert_ne!(written, missing);
        assert_eq!(run().unwrap(), written, "nothing changed");
        std::fs::write(dir.join(".env"), "A=2\n").unwrap();
        let same_size = run().unwrap();
        assert_ne!(same_size, written, "an edit of the same size within the same second");
        std::fs::write(dir.join(".env.new"), "A=2\n").unwrap();
        std::fs::rename(dir.join(".env.new"), dir.join(".env")).unwrap();
        assert_ne!(run().unwrap(), same_size, "an atomic replacement with the same content");
        std::fs::remove_dir_all(&dir).unwrap();
        // an answer that is not one per file is refused
        assert!(fingerprint(&output(Some(0), b"1\t2\t3\tx\ty\t.env\n", b""), 2).is_err(), "one line short");
        assert!(fingerprint(&output(Some(0), b"%i\t%s\n%i\t%s\n", b""), 2).is_err(), "format not understood");
        assert!(fingerprint(&output(Some(127), b"", b"sh: stat: not found\n"), 1).is_err());
        assert!(fingerprint(&output(Some(1), b"1\t2\t3\tx\ty\t.env\n", b""), 1).is_err(), "failed, saying nothing");
    }
}
