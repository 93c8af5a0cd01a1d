//! Benchmarks P1, P3, P4, P5 and P6 of issue 10: Slipway's own cost next to the work it drives,
//! and how it grows with the objects stored. Each test records its figures as JSON under
//! `$SLIPWAY_SANDBOX/logs/bench/` (see `slipway_e2e::bench`); `e2e/bench.sh` runs them at full
//! size with a release controller and prints the table. Sizes come from `SLIPWAY_BENCH_*`
//! variables and are tiny by default: `e2e/run-tests.sh` runs this file as the benchmarks' smoke
//! test, which asserts only what is functional (every deploy succeeded, every figure computed),
//! never a timing.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use slipway_crds::DeployRequest;
use slipway_e2e::bench::{self, Figure};
use slipway_e2e::deploy::{App, DeployRequestManifest, DeployTest, EnvironmentManifest, Gates, Site};
use slipway_e2e::hosts::TestHost;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

/// A DeployRequest's outcome once it finished: Ready True (Succeeded, UpToDate) or Stalled True.
fn finished(dr: &DeployRequest) -> Option<(bool, String)> {
    let conditions = dr.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if let Some(ready) = find("Ready").filter(|c| c.status == "True") {
        return Some((true, ready.reason.clone()));
    }
    find("Stalled").filter(|c| c.status == "True").map(|c| (false, format!("{}: {}", c.reason, c.message)))
}

/// How long the bench waits for one deploy: fifty at once on this machine's one Docker engine
/// took longer than the tests' `DEPLOY_TIMEOUT` (300 s) (P3 at N=50, with 600 s health deadlines).
const BENCH_DEPLOY_WAIT: Duration = Duration::from_secs(1200);

/// Creates the DeployRequest and waits (with a watch) until it finished; returns how long it took
/// from the create call. A request that did not end Ready is an error.
async fn deploy_and_wait(api: &Api<DeployRequest>, manifest: &DeployRequestManifest) -> anyhow::Result<Duration> {
    let dr: DeployRequest = serde_json::from_value(manifest.to_json())?;
    let started = Instant::now();
    api.create(&PostParams::default(), &dr).await.with_context(|| format!("creating {}", manifest.name))?;
    let cond = |o: Option<&DeployRequest>| o.and_then(finished).is_some();
    let done = tokio::time::timeout(
        BENCH_DEPLOY_WAIT,
        kube::runtime::wait::await_condition(api.clone(), &manifest.name, cond),
    )
    .await
    .with_context(|| format!("{} not finished within {BENCH_DEPLOY_WAIT:?}", manifest.name))??;
    let elapsed = started.elapsed();
    match done.as_ref().and_then(finished) {
        Some((true, _)) => Ok(elapsed),
        Some((false, why)) => bail!("{} did not succeed: {why}", manifest.name),
        None => bail!("{} was deleted", manifest.name),
    }
}

/// A request of the admin user (the admission policy admits `requested-by` only from them).
fn request(name: &str, env: &str, tag: &str, user: &str) -> DeployRequestManifest {
    DeployRequestManifest::tag(name, env, tag).requested_by(user)
}

/// The plain ssh deploy (`e2e/scripts/plain-deploy.sh`) of `tag` on `site`: how long it took.
fn plain_deploy(site: &Site, env: &EnvironmentManifest, tag: &str, check: &str) -> anyhow::Result<Duration> {
    let env_file = tempfile::NamedTempFile::new()?;
    let text: String = env.env_values.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(env_file.path(), text)?;
    let host = &site.host;
    let flavor = slipway_e2e::read_env_file(&host.sandbox.join(format!("hosts/{}/env", host.name)))?
        .get("SLIPWAY_HOST_COMPOSE")
        .cloned()
        .unwrap_or_default();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/plain-deploy.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .env("ADDR", &host.addr)
        .env("PORT", host.port.to_string())
        .env("USER", &host.user)
        .env("KEY", &host.key_path)
        .env("KNOWN_HOSTS", &host.known_hosts_path)
        .env("DIR", &site.project.dir)
        .env("PROJECT", &site.project.name)
        .env("ORIGIN", &site.origin)
        .env("TAG", tag)
        .env("COMPOSE", if flavor == "v2" { "docker compose" } else { "docker-compose" })
        .env("ENV_FILE", env_file.path())
        .env("CHECK", check)
        .env("INTERVAL", env.health_interval_seconds.unwrap_or(3).to_string())
        .env("TIMEOUT", env.health_timeout_seconds.to_string())
        .output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("plain-deploy.sh {tag} on {} failed: {}", site.project.name, String::from_utf8_lossy(&out.stderr));
    }
    Ok(elapsed)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// P1: one deploy through Slipway (create to Ready, watched) next to the plain ssh script doing
/// the same on the same host, the same release change, alternating; medians compared.
#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn p1_deploy_versus_plain_ssh_script() {
    let sandbox = slipway_e2e::require_sandbox!();
    let runs = bench::size("SLIPWAY_BENCH_P1_RUNS", 1);
    let mut test = DeployTest::start(&sandbox, "bench-p1").unwrap();
    let controlled = test.site(1, "p1c").unwrap();
    let plain = test.site(1, "p1s").unwrap();
    let env = EnvironmentManifest {
        gates: Gates::default(),
        health_interval_seconds: Some(1),
        ..EnvironmentManifest::new("p1", App::Ticker, &controlled)
    };
    test.create_environment(&env).unwrap();
    let rt = runtime();
    let api: Api<DeployRequest> = Api::namespaced(
        rt.block_on(bench::admin_client(&test.cluster.admin_kubeconfig)).unwrap(),
        &test.cluster.namespace,
    );
    let user = test.cluster.user().unwrap();
    let check = "ticker cat /ticker/VERSION";

    // Warm-up, not measured: the first clone and the first build of each side.
    rt.block_on(deploy_and_wait(&api, &request("p1-warm", "p1", "ticker-v1", &user))).unwrap();
    plain_deploy(&plain, &env, "ticker-v1", check).unwrap();

    let tags = ["ticker-v2", "ticker-v3", "ticker-v1"];
    let (mut slipway, mut script) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let tag = tags[i % tags.len()];
        let mut through_slipway = || {
            let d = rt.block_on(deploy_and_wait(&api, &request(&format!("p1-{i}"), "p1", tag, &user))).unwrap();
            slipway.push(d);
        };
        if i % 2 == 0 {
            through_slipway();
            script.push(plain_deploy(&plain, &env, tag, check).unwrap());
        } else {
            script.push(plain_deploy(&plain, &env, tag, check).unwrap());
            through_slipway();
        }
    }
    assert_eq!(plain.head().unwrap(), controlled.head().unwrap(), "both sides end on the same release");
    let (m_slipway, m_script) = (slipway_e2e::median(slipway.clone()), slipway_e2e::median(script.clone()));
    let ratio = m_slipway.as_secs_f64() / m_script.as_secs_f64();
    bench::record(
        &sandbox,
        &Figure {
            id: "P1".into(),
            figure: "deploy wall time, apply to Ready / plain ssh script (medians)".into(),
            measured: format!("{ratio:.2} ({} / {}, {runs} runs each)", secs(m_slipway), secs(m_script)),
            value: Some(ratio),
            target: "<= 1.05".into(),
            pass: Some(ratio <= 1.05),
            details: json!({
                "runs": runs,
                "app": "ticker (build + up, one service)",
                "host": plain.host.name,
                "slipway_s": slipway.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "script_s": script.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            }),
        },
    )
    .unwrap();
}

/// P3: N Environments on N hosts deployed at once through Slipway, next to N plain ssh scripts
/// at once; with the controller's CPU time, and how far apart the deploys ended. Each side's
/// window runs with only its own N containers up (the other side's are stopped), and the two
/// sides alternate over `SLIPWAY_BENCH_P3_REPEATS` rounds; the median of the rounds' ratios is
/// the figure.
#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn p3_parallel_deploys_versus_plain_ssh_scripts() {
    let sandbox = slipway_e2e::require_sandbox!();
    let hosts: u32 = slipway_e2e::read_env_file(&sandbox.join("hosts/env")).unwrap()["SLIPWAY_HOSTS"].parse().unwrap();
    let repeats = bench::size("SLIPWAY_BENCH_P3_REPEATS", 2).max(1);
    for n in bench::sizes("SLIPWAY_BENCH_P3_N", &[2]) {
        parallel_deploys(&sandbox, n, hosts, repeats);
    }
}

/// How long a side's containers may take to be healthy again once started.
const RESUME_WAIT: Duration = Duration::from_secs(600);

/// Stops (`running` false) or starts the containers of every site's project, all at once; a
/// start returns once every container is healthy again and a few seconds passed. Each idle
/// container runs a healthcheck: when it ran every 1 s and both sides' containers were up, a
/// window at N=50 ran 100 of them on 2 cores, and the scripts' first `up`s were not healthy after
/// 600 s (the fixture now checks every 5 s).
fn set_running(sites: &[&Site], running: bool) {
    std::thread::scope(|s| {
        let handles: Vec<_> = sites
            .iter()
            .map(|site| {
                s.spawn(move || -> anyhow::Result<()> {
                    let project = format!("label=com.docker.compose.project={}", site.project.name);
                    let argv = [
                        "docker",
                        "ps",
                        "-aq",
                        "--filter",
                        &project,
                        "--filter",
                        "label=com.docker.compose.oneoff=False",
                    ];
                    let out = site.run(&argv)?;
                    let ids: Vec<&str> = out.split_whitespace().collect();
                    if ids.is_empty() {
                        bail!("{} has no containers to {}", site.project.name, if running { "start" } else { "stop" });
                    }
                    let mut argv = if running { vec!["docker", "start"] } else { vec!["docker", "stop", "-t", "2"] };
                    argv.extend(ids);
                    site.run(&argv)?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic").unwrap();
        }
    });
    if !running {
        return;
    }
    let started = Instant::now();
    loop {
        // a failed look (an ssh hiccup under load) counts as still waiting
        let waiting: Vec<String> = sites
            .iter()
            .filter(|site| {
                site.health_by_service()
                    .map_or(true, |health| health.is_empty() || health.values().any(|h| h != "healthy"))
            })
            .map(|site| site.project.name.clone())
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(started.elapsed() < RESUME_WAIT, "not healthy {RESUME_WAIT:?} after a start: {waiting:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(5));
}

/// One side's measured window: the wall time of all N deploys, each deploy's own time, the
/// controller's CPU time over the window, and how long the controller took to be idle before it.
struct Window {
    wall: Duration,
    each: Vec<Duration>,
    cpu: Duration,
    /// The whole machine's busy CPU over the wall (all cores), and the Docker engine's share.
    machine: Duration,
    engine: Duration,
    /// When the window started and its last deploy ended (seconds since the epoch).
    span: (f64, f64),
    settled: Duration,
}

/// The Docker engine's long-lived processes, whose CPU each P3 window reports (`comm` is cut at
/// 15 characters: each container's `containerd-shim-runc-v2` shows as `containerd-shim`; a
/// healthcheck's `runc`, which exits, is not counted).
const ENGINE: &[&str] = &["dockerd", "containerd", "containerd-shim"];

fn epoch_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What a P3 window measures, from its start.
struct Meter {
    started: Instant,
    from: f64,
    cpu: Duration,
    busy: Duration,
    engine: Duration,
}

impl Meter {
    fn start(pid: u32) -> Meter {
        Meter {
            started: Instant::now(),
            from: epoch_now(),
            cpu: bench::cpu_time(pid).unwrap(),
            busy: bench::machine_busy().unwrap(),
            engine: bench::cpu_of_named(ENGINE),
        }
    }

    /// The window up to now, its deploys having taken `each`; the controller's CPU (of `pid`) is
    /// read after `then` (Slipway's side counts it until the controller is idle again).
    fn window(self, pid: u32, each: Vec<Duration>, settled: Duration, then: impl FnOnce()) -> Window {
        let (wall, machine) = (self.started.elapsed(), bench::machine_busy().unwrap().saturating_sub(self.busy));
        let (engine, span) = (bench::cpu_of_named(ENGINE).saturating_sub(self.engine), (self.from, epoch_now()));
        then();
        Window { wall, each, cpu: bench::cpu_time(pid).unwrap() - self.cpu, machine, engine, span, settled }
    }
}

/// How long a window waits for the controller to be idle (see [`settle`]).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The most intervals (start, end) that overlap at one instant.
fn peak_overlap(intervals: &[(i128, i128)]) -> usize {
    let mut edges: Vec<(i128, i32)> = intervals.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    // an end before a start at the same instant: touching is not overlapping
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn parallel_deploys(sandbox: &Path, n: usize, hosts: u32, repeats: usize) {
    let mut test = DeployTest::start(sandbox, &format!("bench-p3-{n}")).unwrap();
    let pid = test.cluster.controller_pid().unwrap();
    let mut pairs = Vec::new();
    for i in 0..n {
        let index = (i as u32 % hosts) + 1;
        let controlled = test.site(index, "p3c").unwrap();
        let plain = test.site(index, "p3s").unwrap();
        let mut env = EnvironmentManifest {
            gates: Gates::default(),
            health_interval_seconds: Some(1),
            // The monitor would judge the stopped stacks during the scripts' windows (a round,
            // a status write and events each): a cost on their side that no user of either has.
            // Its round right after each deploy still runs, in (or after) Slipway's window.
            monitor_interval_seconds: Some(3600),
            ..EnvironmentManifest::new(&format!("p3-{i}"), App::Idle, &controlled)
        };
        // Fifty `up`s at once on one Docker engine: docker-compose v1 gives up on an API call
        // after 60 s by default, and at N=50 the scripts' did. The limit, read from `.env` by
        // both sides alike, only decides whether a slow call fails, not how long it takes.
        env.env_values.push(("COMPOSE_HTTP_TIMEOUT".into(), "600".into()));
        // Likewise the health deadline of both sides: at N=50 the scripts' containers were not
        // all healthy within 120 s of their `up` (the controller's were).
        env.health_timeout_seconds = 600;
        test.create_environment(&env).unwrap();
        pairs.push((env, controlled, plain));
    }
    let controlled_sites: Vec<&Site> = pairs.iter().map(|(_, c, _)| c).collect();
    let plain_sites: Vec<&Site> = pairs.iter().map(|(_, _, p)| p).collect();
    let rt = runtime();
    let api: Api<DeployRequest> = Api::namespaced(
        rt.block_on(bench::admin_client(&test.cluster.admin_kubeconfig)).unwrap(),
        &test.cluster.namespace,
    );
    let user = test.cluster.user().unwrap();
    let check = "idle true";

    // Each window starts once the controller is idle (the monitor's round after the last
    // deploys, the Environments' reconciles), so neither side pays for what came before.
    // Slipway's CPU is counted until the controller is idle again: the monitor's round right
    // after each deploy (set off by the deploy's last status write) is part of its cost, and
    // judges the stack before it is stopped.
    let all_through_slipway = |round: &str, tag: &str| -> Window {
        let settled = settle(pid, SETTLE_LIMIT);
        let meter = Meter::start(pid);
        let each = rt
            .block_on(futures::future::try_join_all(pairs.iter().map(|(env, _, _)| {
                let r = request(&format!("{}-{round}", env.name), &env.name, tag, &user);
                let api = api.clone();
                async move { deploy_and_wait(&api, &r).await }
            })))
            .unwrap();
        meter.window(pid, each, settled, || {
            settle(pid, SETTLE_LIMIT);
        })
    };
    let all_plain = |tag: &str| -> Window {
        let settled = settle(pid, SETTLE_LIMIT);
        let meter = Meter::start(pid);
        let each = std::thread::scope(|s| {
            let handles: Vec<_> =
                pairs.iter().map(|(env, _, plain)| s.spawn(move || plain_deploy(plain, env, tag, check))).collect();
            handles.into_iter().map(|h| h.join().expect("no panic").unwrap()).collect()
        });
        meter.window(pid, each, settled, || {})
    };
    // How many of a round's deploys were in their Rebuilding step at once, by the steps'
    // recorded times (from the step's start to the reconcile that saw its `up` end, so a span
    // includes that lag): fewer than N only where the controller holds one deploy back for
    // another's, not where the engine runs the `up`s one after another.
    let rebuilding_at_once = |round: &str| -> usize {
        let names: Vec<String> =
            pairs.iter().map(|(env, _, _)| format!("deployrequest/{}-{round}", env.name)).collect();
        let objects = test.get_json(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let spans: Vec<(i128, i128)> = objects
            .iter()
            .map(|o| {
                let dr = slipway_e2e::deploy::Observed::<slipway_e2e::deploy::DeployStatus>::from_object(o).unwrap();
                let step = dr.status.require_step("Rebuilding").unwrap();
                (step.started().unwrap(), step.finished().unwrap())
            })
            .collect();
        assert_eq!(spans.len(), n, "every request of round {round} read back");
        peak_overlap(&spans)
    };
    // Warm-up, not measured: first clones and first `up`s, one side at a time.
    all_through_slipway("warm", "idle-v1");
    set_running(&controlled_sites, false);
    all_plain("idle-v1");
    set_running(&plain_sites, false);

    // Each round moves both sides to the other release, each in a window of its own with only
    // its own containers up; which side goes first alternates.
    let (mut slipway, mut script, mut at_once) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..repeats {
        let tag = if round % 2 == 0 { "idle-v2" } else { "idle-v1" };
        let mut through_slipway = || {
            set_running(&controlled_sites, true);
            let name = format!("run{round}");
            slipway.push(all_through_slipway(&name, tag));
            at_once.push(rebuilding_at_once(&name));
            set_running(&controlled_sites, false);
        };
        let mut through_scripts = || {
            set_running(&plain_sites, true);
            script.push(all_plain(tag));
            set_running(&plain_sites, false);
        };
        if round % 2 == 0 {
            through_slipway();
            through_scripts();
        } else {
            through_scripts();
            through_slipway();
        }
    }
    for (env, controlled, plain) in &pairs {
        assert_eq!(
            plain.head().unwrap(),
            controlled.head().unwrap(),
            "{}: both sides end on the same release",
            env.name
        );
    }

    let ratios: Vec<f64> =
        slipway.iter().zip(&script).map(|(s, p)| s.wall.as_secs_f64() / p.wall.as_secs_f64()).collect();
    let ratio = median_f64(ratios.clone());
    let walls = |w: &[Window]| w.iter().map(|w| secs(w.wall)).collect::<Vec<_>>().join(", ");
    let cpus = |w: &[Window]| w.iter().map(|w| secs(w.cpu)).collect::<Vec<_>>().join(", ");
    let machines = |w: &[Window]| {
        w.iter().map(|w| format!("{} ({} engine)", secs(w.machine), secs(w.engine))).collect::<Vec<_>>().join(", ")
    };
    let pooled = |w: &[Window]| {
        let all: Vec<Duration> = w.iter().flat_map(|w| w.each.iter().copied()).collect();
        let (min, max) = (all.iter().min().copied().unwrap_or_default(), all.iter().max().copied().unwrap_or_default());
        format!("{}/{}/{}", secs(min), secs(slipway_e2e::median(all)), secs(max))
    };
    let seconds = |w: &[Window], f: fn(&Window) -> Duration| w.iter().map(|w| f(w).as_secs_f64()).collect::<Vec<_>>();
    bench::record(
        sandbox,
        &Figure {
            id: format!("P3 N={n}"),
            figure: format!("{n} Environments deployed at once / {n} plain ssh scripts at once (wall)"),
            measured: format!(
                "{ratio:.2} (median of {repeats} rounds: {}; walls {} / {}); controller CPU {} in Slipway's windows, \
                 {} in the scripts'; machine CPU over each wall {} / {}; {} of {n} rebuilding at once; \
                 each deploy min/median/max {} vs {}",
                ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
                walls(&slipway),
                walls(&script),
                cpus(&slipway),
                cpus(&script),
                machines(&slipway),
                machines(&script),
                at_once.iter().map(usize::to_string).collect::<Vec<_>>().join(", "),
                pooled(&slipway),
                pooled(&script),
            ),
            value: Some(ratio),
            target: "<= 1.05".into(),
            pass: Some(ratio <= 1.05),
            details: json!({
                "n": n,
                "hosts": hosts.min(n as u32),
                "rounds": repeats,
                "first": (0..repeats).map(|r| if r % 2 == 0 { "slipway" } else { "scripts" }).collect::<Vec<_>>(),
                "app": "idle (prebuilt image, up only); the other side's containers stopped during a window",
                "ratios": ratios,
                "rebuilding_at_once": at_once,
                "controller_cpu_s": seconds(&slipway, |w| w.cpu),
                "controller_cpu_in_scripts_windows_s": seconds(&script, |w| w.cpu),
                // the whole machine's busy CPU (all cores) from a window's start to its last deploy
                "slipway_machine_cpu_s": seconds(&slipway, |w| w.machine),
                "script_machine_cpu_s": seconds(&script, |w| w.machine),
                "slipway_engine_cpu_s": seconds(&slipway, |w| w.engine),
                "script_engine_cpu_s": seconds(&script, |w| w.engine),
                "slipway_windows_epoch_s": slipway.iter().map(|w| [w.span.0, w.span.1]).collect::<Vec<_>>(),
                "script_windows_epoch_s": script.iter().map(|w| [w.span.0, w.span.1]).collect::<Vec<_>>(),
                // how long each window waited for an idle controller (SETTLE_LIMIT: it started anyway)
                "slipway_settle_s": seconds(&slipway, |w| w.settled),
                "script_settle_s": seconds(&script, |w| w.settled),
                "slipway_wall_s": seconds(&slipway, |w| w.wall),
                "script_wall_s": seconds(&script, |w| w.wall),
                "slipway_s": slipway.iter().map(|w| w.each.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "script_s": script.iter().map(|w| w.each.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()).collect::<Vec<_>>(),
            }),
        },
    )
    .unwrap();
}

/// A finished request naming `env`, as stored by the seeding: created, then given a terminal
/// status through the status subresource (so the controller never deploys it).
async fn seed_finished(api: &Api<DeployRequest>, names: Vec<(String, String)>, user: &str) -> anyhow::Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    futures::stream::iter(names)
        .map(|(name, env)| {
            let now = now.clone();
            async move {
                let dr: DeployRequest = serde_json::from_value(request(&name, &env, "ticker-v1", user).to_json())?;
                api.create(&PostParams::default(), &dr).await.with_context(|| format!("creating {name}"))?;
                let condition = |t: &str, status: &str| {
                    json!({"type": t, "status": status, "reason": "Succeeded", "message": "seeded by the benchmark",
                           "lastTransitionTime": now, "observedGeneration": 1})
                };
                let status = json!({"status": {
                    "phase": "Succeeded",
                    "observedGeneration": 1,
                    "conditions": [condition("Ready", "True"), condition("Reconciling", "False"), condition("Stalled", "False")],
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .with_context(|| format!("status of {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// Every Environment of the namespace. Retried: with a thousand objects syncing, the API server
/// may close a kept-alive connection just as a request goes out on it.
fn list_all(
    rt: &tokio::runtime::Runtime,
    api: &Api<kube::api::DynamicObject>,
) -> kube::api::ObjectList<kube::api::DynamicObject> {
    let mut tries = 0;
    loop {
        match rt.block_on(api.list(&Default::default())) {
            Ok(list) => return list,
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("listing Environments (try {tries}): {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("listing Environments: {e}"),
        }
    }
}

/// Waits until the controller's CPU time grows by less than 2 % of a core over 2 s (it has
/// synced what it found), at most `limit`; returns how long that took.
fn settle(pid: u32, limit: Duration) -> Duration {
    let started = Instant::now();
    let window = Duration::from_secs(2);
    while started.elapsed() < limit {
        let before = bench::cpu_time(pid).unwrap_or_default();
        std::thread::sleep(window);
        let used = bench::cpu_time(pid).unwrap_or_default().saturating_sub(before);
        if used.as_secs_f64() < 0.02 * window.as_secs_f64() {
            break;
        }
    }
    started.elapsed()
}

/// P4, then P5 and P6 on the same namespace: apply-to-first-status with thousands of finished
/// requests stored; then RSS and idle CPU with many more requests and Environments.
#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn p4_p5_p6_scale() {
    let sandbox = slipway_e2e::require_sandbox!();
    let stored = bench::size("SLIPWAY_BENCH_P4_STORED", 20);
    let requests = bench::size("SLIPWAY_BENCH_P4_REQUESTS", 5);
    let total_requests = bench::size("SLIPWAY_BENCH_P5_REQUESTS", 40);
    let environments = bench::size("SLIPWAY_BENCH_P5_ENVIRONMENTS", 4);
    let p5_hosts = bench::size("SLIPWAY_BENCH_P5_HOSTS", 2) as u32;
    let p6_window = Duration::from_secs(bench::size("SLIPWAY_BENCH_P6_WINDOW_S", 3) as u64);
    let monitor_interval = bench::size("SLIPWAY_BENCH_P6_MONITOR_INTERVAL_S", 10);
    let perf_out = std::env::var_os("SLIPWAY_BENCH_PERF_OUT");
    if perf_out.is_some() {
        let perf = std::process::Command::new("perf").arg("--version").output();
        assert!(perf.is_ok_and(|o| o.status.success()), "SLIPWAY_BENCH_PERF_OUT is set but `perf` does not run");
    }

    let mut test = DeployTest::without_controller(&sandbox, "bench-scale").unwrap();
    let site = test.site(1, "p4").unwrap();
    // Requests wait for an approval that never comes: the first status write is the controller's
    // answer (Stalled, ApprovalRequired) without a deploy or an SSH command.
    let env = EnvironmentManifest {
        gates: Gates { require_approval: true, ..Gates::default() },
        ..EnvironmentManifest::new("p4", App::Ticker, &site)
    };
    test.create_environment(&env).unwrap();
    let rt = runtime();
    let client = rt.block_on(bench::admin_client(&test.cluster.admin_kubeconfig)).unwrap();
    let ns = test.cluster.namespace.clone();
    let api: Api<DeployRequest> = Api::namespaced(client.clone(), &ns);
    let user = test.cluster.user().unwrap();

    let seeding = Instant::now();
    rt.block_on(seed_finished(&api, (0..stored).map(|i| (format!("done-{i}"), "p4".to_owned())).collect(), &user))
        .unwrap();
    let seeded_in = seeding.elapsed();
    test.cluster.start_controller().unwrap();
    let pid = test.cluster.controller_pid().unwrap();
    let synced_in = settle(pid, Duration::from_secs(300));

    // P4: one request at a time, each timed from its create call to the first status the watch shows.
    let latencies = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        let config = watcher::Config::default().labels("bench.slipway.dev/p4=measured");
        let stream = watcher(api.clone(), config);
        let watching = tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let objects = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                for o in objects {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    if o.status.is_some() && seen.insert(name.clone()) {
                        let _ = tx.send((name, Instant::now()));
                    }
                }
            }
        });
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::new();
        for i in 0..requests {
            let name = format!("p4-{i}");
            let mut manifest = request(&name, "p4", "ticker-v2", &user).to_json();
            manifest["metadata"]["labels"] = json!({"bench.slipway.dev/p4": "measured"});
            let dr: DeployRequest = serde_json::from_value(manifest).unwrap();
            let started = Instant::now();
            api.create(&PostParams::default(), &dr).await.unwrap();
            let at = loop {
                if let Some(at) = seen.get(&name) {
                    break *at;
                }
                let (n, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no status on {name} within 60 s"))
                    .expect("the watch runs");
                seen.insert(n, at);
            };
            latencies.push(at.saturating_duration_since(started));
        }
        watching.abort();
        latencies
    });
    assert_eq!(latencies.len(), requests);
    let (p50, p99) = (bench::quantile(&latencies, 0.5), bench::quantile(&latencies, 0.99));
    bench::record(
        &sandbox,
        &Figure {
            id: "P4".into(),
            figure: format!("create of a DeployRequest to its first status write, {stored} finished stored"),
            measured: format!(
                "p50 {}, p99 {}, max {} ({requests} requests)",
                ms(p50),
                ms(p99),
                ms(bench::quantile(&latencies, 1.0))
            ),
            value: Some(bench::millis(p99)),
            target: "p99 < 200 ms".into(),
            pass: Some(p99 < Duration::from_millis(200)),
            details: json!({
                "stored_finished": stored,
                "requests": requests,
                "first_status": "Stalled ApprovalRequired (policy.requireApproval; no deploy, no SSH)",
                "seeded_in_s": seeded_in.as_secs_f64(),
                "controller_synced_in_s": synced_in.as_secs_f64(),
                "latencies_ms": latencies.iter().map(|d| bench::millis(*d)).collect::<Vec<_>>(),
            }),
        },
    )
    .unwrap();

    // P5: Environments spread over a few hosts, all with one key; more finished requests, spread over them.
    let hosts: Vec<TestHost> = (1..=p5_hosts).map(|i| TestHost::load(&sandbox, i).unwrap()).collect();
    // P6 checks what runs: one ticker release per host, deployed through Slipway. Each fleet
    // Environment names the project of its host's release and is seeded with that release as
    // `status.current`, so its monitor round does what it would for a stack of its own (compose
    // config, containers, images, the declared check, drift) against a real running stack.
    let bases: Vec<(Site, serde_json::Value)> = if monitor_interval > 0 {
        let sites: Vec<Site> = (1..=p5_hosts).map(|h| test.site(h, &format!("base{h}")).unwrap()).collect();
        for (h, site) in sites.iter().enumerate() {
            test.create_environment(&EnvironmentManifest::new(&format!("base-{h}"), App::Ticker, site)).unwrap();
        }
        rt.block_on(futures::future::try_join_all(sites.iter().enumerate().map(|(h, _)| {
            let manifest = request(&format!("base-{h}-v1"), &format!("base-{h}"), "ticker-v1", &user);
            let api = api.clone();
            async move { deploy_and_wait(&api, &manifest).await }
        })))
        .unwrap();
        let envs_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "slipway.dev",
                "v1alpha1",
                "Environment",
            )),
        );
        sites
            .into_iter()
            .enumerate()
            .map(|(h, site)| {
                // The release is recorded on the Environment as the request ends; wait for it.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let base = rt.block_on(envs_api.get(&format!("base-{h}"))).unwrap();
                    let current = base.data["status"]["current"].clone();
                    if current["ref"] == "ticker-v1" {
                        break (site, current);
                    }
                    assert!(Instant::now() < deadline, "base-{h} recorded no release: {current}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let known_hosts = sandbox.join("hosts/known_hosts");
    test.cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "fleet-ssh",
            &format!("--from-file=id_ed25519={}", hosts[0].key_path.display()),
            &format!("--from-file=known_hosts={}", known_hosts.display()),
        ])
        .unwrap();
    test.cluster.secret("fleet-env", &[("TICKER_NAME", "fleet")]).unwrap();
    test.cluster.kubectl_ok(&["label", "secret", "fleet-ssh", "fleet-env", "slipway.dev/secret=true"]).unwrap();
    let home = site.project.dir.rsplit_once("/slipway-e2e/").map(|(h, _)| h.to_owned()).unwrap();
    let environment = |i: usize| {
        let host = &hosts[i % hosts.len()];
        let (path, project) = match bases.get(i % hosts.len()) {
            Some((site, _)) => (site.project.dir.clone(), site.project.name.clone()),
            None => (format!("{home}/slipway-e2e/swt-fleet-{i}"), format!("swt-fleet-{i}")),
        };
        let mut health = json!({"checks": [{"name": "ticker", "exec": {"service": "ticker", "command": ["true"]}}]});
        if monitor_interval > 0 {
            health["monitorIntervalSeconds"] = json!(monitor_interval);
        }
        json!({
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": format!("fleet-{i}")},
            "spec": {
                "tier": "staging",
                "host": {"address": host.addr, "port": host.port, "user": host.user,
                         "path": path},
                "sshKeySecretRef": {"name": "fleet-ssh", "key": "id_ed25519"},
                "knownHostsSecretRef": {"name": "fleet-ssh", "key": "known_hosts"},
                "compose": {"files": ["docker-compose.yml"], "projectName": project},
                "envSecretRef": {"name": "fleet-env"},
                "health": health,
            },
        })
    };
    // Seeded with the controller stopped (a request created while it runs would be queued and
    // deployed before its terminal status lands), then a fresh controller syncs everything.
    test.cluster.stop_controller(Duration::from_secs(10));
    let envs_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("slipway.dev", "v1alpha1", "Environment")),
    );
    let seeding = Instant::now();
    rt.block_on(
        futures::stream::iter(0..environments)
            .map(|i| {
                let envs_api = envs_api.clone();
                let object: kube::api::DynamicObject = serde_json::from_value(environment(i)).unwrap();
                async move { envs_api.create(&PostParams::default(), &object).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>(),
    )
    .unwrap();
    if !bases.is_empty() {
        rt.block_on(
            futures::stream::iter(0..environments)
                .map(|i| {
                    let envs_api = envs_api.clone();
                    let current = bases[i % bases.len()].1.clone();
                    async move {
                        let patch = Patch::Merge(json!({"status": {"current": current}}));
                        envs_api.patch_status(&format!("fleet-{i}"), &PatchParams::default(), &patch).await
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let more = total_requests.saturating_sub(stored + requests);
    rt.block_on(seed_finished(
        &api,
        (0..more).map(|i| (format!("fleet-done-{i}"), format!("fleet-{}", i % environments.max(1)))).collect(),
        &user,
    ))
    .unwrap();
    let seeded_in = seeding.elapsed();
    let all_envs = environments + 1 + bases.len();
    test.cluster.start_controller().unwrap();
    let pid = test.cluster.controller_pid().unwrap();
    // Every Environment checked once (Ready or not), then quiet.
    let deadline = Instant::now() + Duration::from_secs(600);
    let checked = loop {
        let list = list_all(&rt, &envs_api);
        let checked = list
            .items
            .iter()
            .filter(|e| {
                e.data["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Reachable"))
            })
            .count();
        if checked >= all_envs || Instant::now() > deadline {
            break checked;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let ready = list_all(&rt, &envs_api)
        .items
        .iter()
        .filter(|e| {
            e.data["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Reachable" && c["status"] == "True"))
        })
        .count();
    settle(pid, Duration::from_secs(120));
    let rss = bench::rss_kib(pid).unwrap();
    let (rss_anon, rss_file) = bench::rss_parts_kib(pid).unwrap();
    let tmp = test.cluster.controller_tmp().unwrap();
    let ssh = bench::ssh_processes_under(&tmp);
    let masters = bench::masters(&ssh);
    let ssh_rss: u64 = ssh.iter().filter_map(|p| bench::rss_kib(*p).ok()).sum();
    let tcp_connections_now = bench::tcp_connections(pid).unwrap();
    let stored_now = stored + requests + more;
    let mib = |kib: u64| kib as f64 / 1024.0;
    bench::record(
        &sandbox,
        &Figure {
            id: "P5".into(),
            figure: format!("controller RSS, {stored_now} DeployRequests + {} Environments synced", all_envs),
            measured: format!(
                "{:.1} MiB ({:.1} heap, {:.1} binary; {} TCP connections); {} ssh masters ({} ssh processes, {:.1} MiB) for {} Environments on {} hosts",
                mib(rss),
                mib(rss_anon),
                mib(rss_file),
                tcp_connections_now,
                masters.len(),
                ssh.len(),
                mib(ssh_rss),
                all_envs,
                hosts.len()
            ),
            value: Some(mib(rss)),
            target: "< 64 MiB controller".into(),
            pass: Some(mib(rss) < 64.0),
            details: json!({
                "deploy_requests": stored_now,
                "environments": all_envs,
                "hosts": hosts.len(),
                "environments_reachable": ready,
                "environments_checked": checked,
                "ssh_masters": masters.len(),
                "ssh_processes": ssh.len(),
                "ssh_rss_mib": mib(ssh_rss),
                "controller_rss_mib": mib(rss),
                "controller_rss_anon_mib": mib(rss_anon),
                "controller_rss_file_mib": mib(rss_file),
                "controller_tcp_connections": tcp_connections_now,
                "seeded_in_s": seeded_in.as_secs_f64(),
            }),
        },
    )
    .unwrap();

    // P6: CPU of the controller and its ssh processes over a window, with every Environment checked
    // at its interval (the monitor's health.monitorIntervalSeconds where it exists).
    let ssh_cpu = |pids: &[u32]| pids.iter().filter_map(|p| bench::cpu_time(*p).ok()).sum::<Duration>();
    // ... and of what the hosts (this machine's sshd, as the deploy user) ran for it
    let users: std::collections::BTreeSet<&str> = hosts.iter().map(|h| h.user.as_str()).collect();
    let host_cpu = || users.iter().map(|u| bench::host_sessions_cpu(u)).sum::<Duration>();
    let (cpu0, ssh0, host0) = (bench::cpu_time(pid).unwrap(), ssh_cpu(&ssh), host_cpu());
    // SLIPWAY_BENCH_PERF_OUT: `perf record` of the controller over the window (for a profile,
    // not for the figure: sampling costs a little CPU of its own).
    match &perf_out {
        Some(out) => {
            let status = std::process::Command::new("perf")
                .args(["record", "-q", "-F", "99", "--call-graph", "dwarf", "-p", &pid.to_string(), "-o"])
                .arg(out)
                .args(["--", "sleep", &p6_window.as_secs().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "perf record failed: {status}");
        }
        None => std::thread::sleep(p6_window),
    }
    let (cpu1, ssh1, host1) = (bench::cpu_time(pid).unwrap(), ssh_cpu(&bench::ssh_processes_under(&tmp)), host_cpu());
    let host_share = host1.saturating_sub(host0).as_secs_f64() / p6_window.as_secs_f64() * 100.0;
    let share = (cpu1 - cpu0).as_secs_f64() / p6_window.as_secs_f64() * 100.0;
    // The monitor judged the fleet (Healthy True or False), or the figure measured nothing.
    let healthy: Vec<String> = list_all(&rt, &envs_api)
        .items
        .iter()
        .filter(|e| e.metadata.name.as_deref().is_some_and(|n| n.starts_with("fleet-")))
        .filter_map(|e| {
            e.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Healthy" && c["status"] != "Unknown")
                .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let healthy_true = healthy.iter().filter(|s| *s == "True").count();
    // The monitor ran (the smoke size must judge the whole fleet; at full size the hosts, all on
    // this machine, may not keep up with one round per Environment per interval: the figure says
    // how many were judged).
    if monitor_interval > 0 {
        assert!(!healthy.is_empty(), "the monitor judged no fleet Environment");
        if environments <= 10 {
            assert_eq!(healthy.len(), environments, "fleet Environments the monitor judged");
        }
    }
    let ssh_share = ssh1.saturating_sub(ssh0).as_secs_f64() / p6_window.as_secs_f64() * 100.0;
    let mut how = if monitor_interval > 0 {
        format!("health.monitorIntervalSeconds {monitor_interval}")
    } else {
        "no monitor: reachability rechecks only".to_owned()
    };
    if perf_out.is_some() {
        how.push_str("; under perf record (sampling adds CPU)");
    }
    bench::record(
        &sandbox,
        &Figure {
            id: "P6".into(),
            figure: format!("controller CPU, {} Environments checked at their interval ({how})", all_envs),
            measured: format!(
                "{share:.1} % of a core (ssh processes {ssh_share:.1} %; the hosts' commands {host_share:.1} %) over {} s; {} of {environments} fleet Environments judged",
                p6_window.as_secs(),
                healthy.len()
            ),
            value: Some(share),
            target: "< 5 % of one core".into(),
            pass: (monitor_interval > 0).then_some(share < 5.0),
            details: json!({
                "environments": all_envs,
                "window_s": p6_window.as_secs(),
                "monitor_interval_s": monitor_interval,
                "controller_cpu_percent": share,
                "fleet_judged": healthy.len(),
                "fleet_healthy": healthy_true,
                "ssh_cpu_percent": ssh_share,
                "host_commands_cpu_percent": host_share,
            }),
        },
    )
    .unwrap();
}

#[test]
fn overlaps_and_medians_count_what_they_say() {
    assert_eq!(peak_overlap(&[]), 0);
    assert_eq!(peak_overlap(&[(0, 10), (10, 20), (20, 30)]), 1, "back to back is one at a time");
    assert_eq!(peak_overlap(&[(0, 10), (5, 20), (6, 7), (30, 40)]), 3);
    assert_eq!(median_f64(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median_f64(vec![4.0, 1.0]), 2.5);
}
