//! The benchmarks' vocabulary (`e2e/tests/bench.rs`, `e2e/bench.sh`): sizes from the
//! environment (tiny by default, so the smoke run in `e2e/run-tests.sh` stays quick), figures
//! recorded as one JSON file each under `$SLIPWAY_SANDBOX/logs/bench/`, and what the kernel says
//! about a process (`/proc/<pid>/status` and `/proc/<pid>/stat`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One row of the table `e2e/bench.sh` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// `P1` .. `P6`, with the size where one figure is measured at several (`P3 N=20`).
    pub id: String,
    pub figure: String,
    /// What was measured, as printed.
    pub measured: String,
    /// The number compared with the target.
    pub value: Option<f64>,
    pub target: String,
    /// `None`: no target applies (or it cannot be judged from this run).
    pub pass: Option<bool>,
    /// Everything else worth keeping: samples, sizes, counts.
    pub details: Value,
}

/// A size from the environment variable `var`, or `smoke` (the size the test command uses).
pub fn size(var: &str, smoke: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(smoke)
}

/// A list of sizes (`20,50`) from `var`, or `smoke`.
pub fn sizes(var: &str, smoke: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        _ => smoke.to_vec(),
    }
}

/// Where figures go: `$SLIPWAY_SANDBOX/logs/bench/`.
pub fn figures_dir(sandbox: &Path) -> PathBuf {
    sandbox.join("logs/bench")
}

/// Writes `figure` to `<figures_dir>/<id>.json` and prints it.
pub fn record(sandbox: &Path, figure: &Figure) -> anyhow::Result<()> {
    let dir = figures_dir(sandbox);
    std::fs::create_dir_all(&dir)?;
    let file: String = figure.id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let path = dir.join(format!("{file}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(figure)?)?;
    println!("[bench] {} {}: {} (target {})", figure.id, figure.figure, figure.measured, figure.target);
    Ok(())
}

/// Every figure recorded so far, sorted by id.
pub fn load_figures(sandbox: &Path) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let dir = figures_dir(sandbox);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(figures) };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read(&path)?;
            figures.push(serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    figures.sort_by_key(|f: &Figure| natural_key(&f.id));
    Ok(figures)
}

/// `P3 N=20` before `P3 N=100`: digits compare as numbers.
fn natural_key(id: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in id.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((std::mem::take(&mut text), digits.parse().unwrap_or(0)));
                digits.clear();
            }
            text.push(c);
        }
    }
    out.push((text, digits.parse().unwrap_or(0)));
    out
}

/// The table as `e2e/bench.sh` prints it.
pub fn table(figures: &[Figure]) -> String {
    let rows: Vec<[String; 5]> = figures
        .iter()
        .map(|f| {
            let verdict = match f.pass {
                Some(true) => "pass",
                Some(false) => "MISS",
                None => "-",
            };
            [f.id.clone(), f.figure.clone(), f.measured.clone(), f.target.clone(), verdict.to_owned()]
        })
        .collect();
    let header = ["id", "figure", "measured", "target", "result"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 5]| {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(&header);
    out.push_str(&format!("|{}|\n", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// The `q` quantile (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 1e2
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS without a value")?.parse()?)
}

/// The two parts of `pid`'s resident set in KiB: anonymous memory (the heap, stacks) and pages
/// of mapped files (the binary and its libraries), `RssAnon` and `RssFile` of `/proc/<pid>/status`.
pub fn rss_parts_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
        Ok(line.split_whitespace().nth(1).with_context(|| format!("{name} without a value"))?.parse()?)
    };
    Ok((field("RssAnon:")?, field("RssFile:")?))
}

/// Established TCP connections `pid` holds (its sockets found in its network namespace's
/// `tcp` and `tcp6` tables in state 01). The controller's own are to the API server (and to
/// notification receivers and `http.url` checks, none in the benchmarks); its SSH traffic goes
/// through the ssh processes.
pub fn tcp_connections(pid: u32) -> anyhow::Result<usize> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    let mut established = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[3] == "01" && inodes.contains(fields[9]) {
                established += 1;
            }
        }
    }
    Ok(established)
}

/// CPU time `pid` used so far (user + system, `/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from the `)` that ends it.
    let rest = &text[text.rfind(')').context("no ) in stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// CPU time of what the test hosts ran for `user` over SSH so far: each `sshd: USER...` session
/// process's own time and that of the children it reaped (the commands its sessions ran:
/// `compose config`, `git`, `stat`; the Docker engine's share is not in it). A session still
/// running counts once it ends.
pub fn host_sessions_cpu(user: &str) -> Duration {
    // OpenSSH 9.8 and later name the session process `sshd-session`
    let titles = [format!("sshd: {user}"), format!("sshd-session: {user}")];
    let ticks: u64 = processes(|comm| comm.starts_with("sshd"))
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                titles.iter().any(|t| c.starts_with(t.as_str()))
            })
        })
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &text[text.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime, stime, cutime, cstime
            fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum::<Option<u64>>()
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// CPU time the whole machine spent busy so far, over all cores (`/proc/stat`'s `cpu` line:
/// user, nice, system, irq, softirq and steal; idle and iowait are not busy). What two windows
/// of the same work ask of the machine (the engine, sshd, the commands) compares by it.
pub fn machine_busy() -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    anyhow::ensure!(fields.len() >= 8, "short cpu line in /proc/stat: {line}");
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    Ok(Duration::from_secs_f64(busy as f64 / clock_ticks() as f64))
}

/// CPU time used so far by the running processes named (`comm`) one of `names`, e.g. the
/// Docker engine's `dockerd` and `containerd` (long-lived: what exited is not counted).
pub fn cpu_of_named(names: &[&str]) -> Duration {
    processes(|comm| names.contains(&comm)).into_iter().filter_map(|pid| cpu_time(pid).ok()).sum()
}

/// The running processes whose name (`comm`, at most 15 characters) `wanted` accepts, by pid.
fn processes(wanted: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| wanted(c.trim())))
        .collect();
    pids.sort_unstable();
    pids
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The `ssh` client processes whose command line names a path under `dir` (the controller's
/// TMPDIR holds its masters' control sockets and key directories): its SSH masters, which
/// `ssh -f` detaches from the controller, and any session still running through them.
pub fn ssh_processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    processes(|comm| comm == "ssh")
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle.as_str()))
        })
        .collect()
}

/// The SSH masters among `pids` (`ssh -M` / `ControlMaster=yes`, as the controller starts them).
pub fn masters(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0).any(|a| a == b"-M" || a == b"ControlMaster=yes" || a == b"ControlMaster yes")
            })
        })
        .collect()
}

/// A kube client as the admin kubeconfig of the sandbox (`SLIPWAY_KUBECONFIG`).
pub async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default()).await?;
    // Seeding thousands of objects: the client's own rate limits are not what is measured.
    Ok(kube::Client::try_from(config)?)
}
