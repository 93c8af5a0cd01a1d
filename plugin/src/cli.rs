//! The command line, as `kubectl slipway --help` shows it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Slipway from kubectl: what runs where, deploys and rollbacks followed step by step.
///
/// Every action creates or annotates an object (DeployRequest, Rollback) through the API server,
/// as the user your kubeconfig authenticates.
#[derive(Parser, Debug)]
#[command(name = "kubectl-slipway", bin_name = "kubectl slipway", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster and namespace, chosen as kubectl chooses them.
#[derive(Args, Debug, Clone, Default)]
pub struct Target {
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Each Environment's running release, health, drift, lock holder, queue and last deploy.
    Status {
        /// One Environment, shown in detail (default: every Environment of the namespace).
        environment: Option<String>,
        #[arg(short = 'o', long, value_name = "FORMAT")]
        output: Option<Format>,
    },
    /// An Environment's release history, newest first (`*` marks the running release).
    History {
        environment: String,
        #[arg(short = 'o', long, value_name = "FORMAT")]
        output: Option<Format>,
    },
    /// Create a DeployRequest and follow it to its end; the exit code says how it ended.
    Deploy(DeployArgs),
    /// Approve a DeployRequest, as yourself (you need the `approve` verb: ClusterRole slipway-approver).
    Approve {
        /// The DeployRequest (`NAME` or `dr/NAME`).
        deploy_request: String,
    },
    /// Create a Rollback and follow it to its end; the exit code says how it ended.
    Rollback(RollbackArgs),
    /// The steps of a DeployRequest or Rollback, with their timings and output tails.
    Logs {
        /// `dr/NAME`, `rollback/NAME`, or a DeployRequest's bare `NAME`.
        object: String,
        #[arg(short = 'o', long, value_name = "FORMAT")]
        output: Option<Format>,
    },
    /// The environment variables the running release requires (its `.env.example`), each marked
    /// present or missing in the Environment's env Secret. Names only, never values.
    Env {
        environment: String,
        #[arg(short = 'o', long, value_name = "FORMAT")]
        output: Option<Format>,
    },
}

/// Machine-readable output instead of the table.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("revision").required(true).args(["tag", "branch", "commit"])))]
pub struct DeployArgs {
    /// The Environment to deploy to.
    pub environment: String,
    /// Deploy this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Deploy the tip of this branch (resolved to a commit at preflight).
    #[arg(long)]
    pub branch: Option<String>,
    /// Deploy this commit (7 to 64 hexadecimal characters).
    #[arg(long)]
    pub commit: Option<String>,
    /// The issue this deploy resolves, such as `#45` (required where the Environment says requireIssue).
    #[arg(long)]
    pub issue: Option<String>,
    /// Emergency override (`mode: Direct`): allowed only where the Environment says allowDirect;
    /// recorded as untracked.
    #[arg(long)]
    pub direct: bool,
    /// Deploy even when the Environment already runs this commit with the same .env.
    #[arg(long)]
    pub force: bool,
    /// Deploy a commit the Environment quarantined after it failed there.
    #[arg(long)]
    pub override_quarantine: bool,
    /// Name of the DeployRequest (default: generated from the Environment and the revision).
    #[arg(long)]
    pub name: Option<String>,
    /// Approval is the approver's own act, never the requester's: see `kubectl slipway approve`.
    #[arg(long, hide = true, value_name = "USER")]
    pub approved_by: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The Environment to roll back.
    pub environment: String,
    /// Return to the release made from this tag (default: the previous release).
    #[arg(long, conflicts_with = "to_release")]
    pub to_tag: Option<String>,
    /// Return to the release with this commit (default: the previous release).
    #[arg(long)]
    pub to_release: Option<String>,
    /// Why, for the record (one line; shown in events and the Environment's history).
    #[arg(long)]
    pub reason: String,
    /// Leave the database as it is (`migrations: Skip`) instead of downgrading it first.
    #[arg(long)]
    pub skip_migrations: bool,
    /// Name of the Rollback (default: generated from the Environment).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct Wait {
    /// Create it and return at once, without following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop following after this long (`90s`, `10m`, `1h`); the request carries on. Default: until it ends.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// `90s`, `10m`, `1h`, `1h30m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write it like 90s, 10m, 1h or 1h30m");
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_timeouts() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "m", "10x", "1.5m", "10m5", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deploy_needs_exactly_one_revision() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["kubectl-slipway"], args].concat());
        assert!(parse(&["deploy", "staging"]).is_err());
        assert!(parse(&["deploy", "staging", "--tag", "v1", "--branch", "main"]).is_err());
        let cli = parse(&["deploy", "staging", "--tag", "v1", "-n", "shop", "--issue", "#4"]).unwrap();
        assert_eq!(cli.target.namespace.as_deref(), Some("shop"));
        let Command::Deploy(d) = cli.command else { panic!("not a deploy") };
        assert_eq!((d.tag.as_deref(), d.issue.as_deref(), d.wait.no_wait), (Some("v1"), Some("#4"), false));
    }

    #[test]
    fn rollback_needs_a_reason_and_at_most_one_target() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["kubectl-slipway"], args].concat());
        assert!(parse(&["rollback", "staging"]).is_err());
        assert!(parse(&["rollback", "staging", "--reason", "x", "--to-tag", "v1", "--to-release", "abcdef1"]).is_err());
        assert!(parse(&["--context", "prod", "rollback", "staging", "--reason", "5xx", "--no-wait"]).is_ok());
    }
}
