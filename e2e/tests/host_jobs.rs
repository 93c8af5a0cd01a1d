//! Host jobs against a real sshd and Docker engine: a job outlives the controller's SSH master
//! and is found again by its key; a job past its deadline leaves no process and no container
//! behind; one key runs once; a second job of a project gets `HostBusy`. Plus what a job start
//! costs next to a plain command.

use std::path::Path;
use std::time::{Duration, Instant};

use slipway_controller::remote::{
    Compose, ComposeFlavor, HostConnection, JobKey, JobSpec, JobState, Jobs, RemoteCommand, RemoteError, detect_flavor,
    job_label,
};
use slipway_e2e::hosts::{self, TestHost, TestProject};

/// A UID-like key component unique to this run.
fn uid(tag: &str) -> String {
    hosts::unique_name(tag)
}

fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "job".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// The test project's work directory, created (the jobs' working directory).
async fn work_dir(conn: &HostConnection, project: &TestProject) -> String {
    conn.run(&RemoteCommand::new("mkdir").arg("-p").arg(project.dir.clone())).await.unwrap();
    project.dir.clone()
}

async fn finished(jobs: &Jobs<'_, HostConnection>, key: &JobKey, limit: Duration) -> JobState {
    let deadline = Instant::now() + limit;
    loop {
        let st = jobs.poll(key).await.unwrap();
        if st.is_finished() {
            return st;
        }
        assert!(Instant::now() < deadline, "{key} still {st:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pid_of(st: &JobState) -> u32 {
    match st {
        JobState::Running { pid: Some(p), .. } => *p,
        other => panic!("expected a running job, got {other:?}"),
    }
}

/// Processes on the host (pid, pgid, stat, args), zombies left out: the sandbox's PID 1 does not
/// reap orphans, so a killed process can linger as `<defunct>` without running.
async fn live_processes(conn: &HostConnection) -> Vec<(u32, u32, String)> {
    let out = conn.run(&RemoteCommand::new("ps").args(["-eo", "pid=,pgid=,stat=,args="])).await.unwrap().stdout();
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next()?.parse().ok()?;
            let pgid = f.next()?.parse().ok()?;
            let stat = f.next()?;
            if stat.starts_with('Z') {
                return None;
            }
            Some((pid, pgid, f.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

async fn labelled_containers(conn: &HostConnection, label: &str) -> Vec<String> {
    let out = conn
        .run(&RemoteCommand::new("docker").args(["ps", "-aq", "--filter"]).arg(format!("label={label}")))
        .await
        .unwrap()
        .stdout();
    out.split_whitespace().map(str::to_owned).collect()
}

async fn require_base_image(conn: &HostConnection) {
    let out =
        conn.output(&RemoteCommand::new("docker").args(["image", "inspect", "slipway-base:bookworm"])).await.unwrap();
    assert!(out.success(), "image slipway-base:bookworm is missing on the host: run e2e/scripts/images.sh");
}

/// SIGKILL the ssh master (and any mux client) of `conn`, found by its control socket inside the
/// connection's private directory: the controller dies without closing anything.
fn kill_master(conn: &HostConnection) {
    let dir = conn.private_dir().display().to_string();
    let out = std::process::Command::new("pgrep").args(["-f", &dir]).output().unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
    assert!(!pids.is_empty(), "no ssh master found for {dir}");
    for pid in pids {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    }
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_job_survives_a_controller_kill_and_is_attached_again_by_its_key() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let admin = host.connect().await.unwrap();
    let project = TestProject::new(&admin, "jobs-survive").await.unwrap();
    project
        .run_then_clean_up(&admin, async {
            let cwd = work_dir(&admin, &project).await;
            let key = JobKey::new(project.name.clone(), uid("u"), "migrate").unwrap();
            let spec = JobSpec::new(cwd, sh("echo before; sleep 4; echo after; exit 7", &[]));

            let a = host.connect().await.unwrap();
            let pid = pid_of(&Jobs::new(&a).start(&key, &spec).await.unwrap());
            kill_master(&a);
            let lost = a.run(&RemoteCommand::new("true")).await.unwrap_err();
            assert_eq!(lost.reason(), "Unreachable", "{lost}");
            drop(a);

            // A new controller knows only the key.
            let b = host.connect().await.unwrap();
            let jobs = Jobs::new(&b);
            let st = jobs.poll(&key).await.unwrap();
            assert_eq!(pid_of(&st), pid, "attached to another job than the one started");
            let st = finished(&jobs, &key, Duration::from_secs(30)).await;
            assert_eq!(st, JobState::Exited { code: 7, tail: "before\nafter\n".into() });
            // Starting it again does not run it again.
            assert_eq!(jobs.start(&key, &spec).await.unwrap(), st);
        })
        .await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_job_past_its_deadline_leaves_no_process_and_no_container_behind() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    require_base_image(&conn).await;
    let project = TestProject::new(&conn, "jobs-deadline").await.unwrap();
    project
        .run_then_clean_up(&conn, async {
            let cwd = work_dir(&conn, &project).await;
            let jobs = Jobs::new(&conn);
            let key = JobKey::new(project.name.clone(), uid("u"), "migrate").unwrap();
            let (lk, lv) = job_label(&key);
            let label = format!("{lk}={lv}");
            // A marker no other process on the host carries.
            let marker = format!("{}", 100_000 + std::process::id() % 800_000);
            let script = r#"sleep "$2" & docker run --rm --label "$1" slipway-base:bookworm sleep 300"#;
            let st = jobs.start(&key, &JobSpec::new(cwd, sh(script, &[&label, &marker]))).await.unwrap();
            let leader = pid_of(&st);

            let deadline = Instant::now() + Duration::from_secs(60);
            while labelled_containers(&conn, &label).await.is_empty() {
                assert!(Instant::now() < deadline, "the job's container never appeared");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let ours = |procs: &[(u32, u32, String)]| -> Vec<String> {
                procs
                    .iter()
                    .filter(|(pid, pgid, args)| *pid == leader || *pgid == leader || args.contains(&marker))
                    .map(|(pid, _, args)| format!("{pid} {args}"))
                    .collect()
            };
            let before = ours(&live_processes(&conn).await);
            assert!(before.iter().any(|p| p.contains("docker run")), "{before:?}");
            assert!(before.iter().any(|p| p.contains(&format!("sleep {marker}"))), "{before:?}");

            let t = Instant::now();
            let st = jobs.terminate(&key, Duration::from_secs(2)).await.unwrap();
            let took = t.elapsed();
            assert!(matches!(st, JobState::Terminated { .. }), "{st:?}");
            assert!(!st.succeeded());
            let left = ours(&live_processes(&conn).await);
            assert!(left.is_empty(), "processes of the job survived terminate: {left:?}");
            let containers = labelled_containers(&conn, &label).await;
            assert!(containers.is_empty(), "labelled containers survived terminate: {containers:?}");
            assert!(matches!(jobs.poll(&key).await.unwrap(), JobState::Terminated { .. }));
            println!("terminate (TERM, 2 s grace, KILL, container removal) took {took:?}");
        })
        .await;
}

/// The compose flavor `hosts.sh` set host `index` up with (`SLIPWAY_HOST_COMPOSE`; v1 when absent).
fn host_compose(sandbox: &Path, index: u32) -> Option<String> {
    let env = slipway_e2e::read_env_file(&sandbox.join(format!("hosts/host{index}/env"))).ok()?;
    Some(env.get("SLIPWAY_HOST_COMPOSE").cloned().unwrap_or_else(|| "v1".to_owned()))
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_compose_run_job_labels_its_container_and_terminate_removes_it() {
    let sandbox = slipway_e2e::require_sandbox!();
    compose_run_job_scenario(&sandbox, 1, ComposeFlavor::V1).await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_compose_run_job_on_the_compose_v2_host() {
    let sandbox = slipway_e2e::require_sandbox!();
    let index = (1..=200)
        .take_while(|i| host_compose(&sandbox, *i).is_some())
        .find(|i| host_compose(&sandbox, *i).as_deref() == Some("v2"))
        .expect("no compose v2 host in the sandbox (see hosts.sh and compose-v2.sh)");
    compose_run_job_scenario(&sandbox, index, ComposeFlavor::V2).await;
}

/// `compose run --label` as a host job on host `index` (compose CLI `flavor`): exit code and
/// output come back; a long one's container carries the job label and terminate removes it.
async fn compose_run_job_scenario(sandbox: &Path, index: u32, flavor: ComposeFlavor) {
    let host = TestHost::load(sandbox, index).unwrap();
    let conn = host.connect().await.unwrap();
    assert_eq!(detect_flavor(&conn).await.unwrap(), flavor, "compose CLI on {}", host.name);
    require_base_image(&conn).await;
    let project = TestProject::new(&conn, "jobs-compose").await.unwrap();
    project
        .run_then_clean_up(&conn, async {
            work_dir(&conn, &project).await;
            let compose_file = "services:\n  tool:\n    image: slipway-base:bookworm\n    command: [\"true\"]\n";
            let write = RemoteCommand::new("sh")
                .args(["-c", r#"printf '%s' "$2" > "$1/docker-compose.yml""#, "write"])
                .arg(project.dir.clone())
                .arg(compose_file);
            conn.run(&write).await.unwrap();
            let compose = Compose::with_flavor(&conn, project.compose(), flavor);
            let jobs = Jobs::new(&conn);

            // Exit code and output of a one-off container run as a job.
            let key = JobKey::new(project.name.clone(), uid("u"), "migrate").unwrap();
            let argv = sh("echo migrated to 42; exit 3", &[]);
            let run = compose.run_command("tool", &argv, &[job_label(&key)]).unwrap();
            jobs.start(&key, &JobSpec::from_command(&run).unwrap()).await.unwrap();
            let st = finished(&jobs, &key, Duration::from_secs(120)).await;
            let JobState::Exited { code, tail } = &st else { panic!("{st:?}") };
            assert_eq!(*code, 3, "{tail}");
            assert!(tail.contains("migrated to 42"), "{tail}");

            // A long one: its container carries the job's label, and terminate removes it.
            let key = JobKey::new(project.name.clone(), uid("u"), "upgrade").unwrap();
            let (lk, lv) = job_label(&key);
            let label = format!("{lk}={lv}");
            let run = compose.run_command("tool", &["sleep".into(), "300".into()], &[job_label(&key)]).unwrap();
            jobs.start(&key, &JobSpec::from_command(&run).unwrap()).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while labelled_containers(&conn, &label).await.is_empty() {
                assert!(Instant::now() < deadline, "no container labelled {label} ({flavor:?})");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let project_label = format!("com.docker.compose.project={}", project.name);
            assert!(!labelled_containers(&conn, &project_label).await.is_empty());
            assert!(matches!(jobs.terminate(&key, Duration::from_secs(1)).await.unwrap(), JobState::Terminated { .. }));
            assert!(labelled_containers(&conn, &label).await.is_empty(), "the compose run container survived");
        })
        .await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn two_starts_with_one_key_run_once() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "jobs-once").await.unwrap();
    project
        .run_then_clean_up(&conn, async {
            let cwd = work_dir(&conn, &project).await;
            let other = host.connect().await.unwrap();
            let key = JobKey::new(project.name.clone(), uid("u"), "build").unwrap();
            let count = format!("{cwd}/count");
            let spec = JobSpec::new(cwd, sh(r#"echo run >> "$1"; sleep 1"#, &[&count]));
            // Two controllers at once, then once more after it finished.
            let (ja, jb) = (Jobs::new(&conn), Jobs::new(&other));
            let (a, b) = tokio::join!(ja.start(&key, &spec), jb.start(&key, &spec));
            for r in [a, b] {
                match r {
                    Ok(st) => assert!(st.is_running() || st.is_finished(), "{st:?}"),
                    // the other start held the lock and had not created the run yet
                    Err(RemoteError::HostBusy { holder, .. }) => assert!(holder.contains(&key.holder()), "{holder}"),
                    Err(e) => panic!("{e}"),
                }
            }
            let jobs = Jobs::new(&conn);
            let st = finished(&jobs, &key, Duration::from_secs(30)).await;
            assert!(st.succeeded(), "{st:?}");
            assert_eq!(jobs.start(&key, &spec).await.unwrap(), st);
            let runs = conn.run(&RemoteCommand::new("cat").arg(count)).await.unwrap().stdout();
            assert_eq!(runs, "run\n");
        })
        .await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_second_job_of_the_project_gets_host_busy_while_the_first_holds_the_lock() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "jobs-busy").await.unwrap();
    project
        .run_then_clean_up(&conn, async {
            let cwd = work_dir(&conn, &project).await;
            let jobs = Jobs::new(&conn);
            let first = JobKey::new(project.name.clone(), uid("u"), "build").unwrap();
            let second = JobKey::new(project.name.clone(), uid("v"), "migrate").unwrap();
            jobs.start(&first, &JobSpec::new(cwd.clone(), ["sleep", "60"])).await.unwrap();
            // Whoever starts it: here a second connection, as a second controller would.
            let other = host.connect().await.unwrap();
            let err = Jobs::new(&other).start(&second, &JobSpec::new(cwd.clone(), ["true"])).await.unwrap_err();
            let RemoteError::HostBusy { project: p, holder, .. } = &err else { panic!("{err}") };
            assert_eq!(p, &project.name);
            assert_eq!(holder, &format!("job {}", first.holder()));
            assert!(err.is_transient());
            assert_eq!(jobs.poll(&second).await.unwrap(), JobState::NotFound);
            jobs.terminate(&first, Duration::from_secs(1)).await.unwrap();
            jobs.start(&second, &JobSpec::new(cwd, ["true"])).await.unwrap();
            assert!(finished(&jobs, &second, Duration::from_secs(30)).await.succeeded());
        })
        .await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_wait_returns_as_the_job_ends_and_gives_up_after_its_time() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "jobs-wait").await.unwrap();
    project
        .run_then_clean_up(&conn, async {
            let cwd = work_dir(&conn, &project).await;
            let jobs = Jobs::new(&conn);
            // Nothing started: the wait answers at once.
            let none = JobKey::new(project.name.clone(), uid("n"), "build").unwrap();
            let started = Instant::now();
            assert_eq!(jobs.wait(&none, Duration::from_secs(5)).await.unwrap(), JobState::NotFound);
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

            // A job that ends while waited on is reported as it ends, with its exit status.
            let short = JobKey::new(project.name.clone(), uid("s"), "build").unwrap();
            let spec = JobSpec::new(cwd.clone(), sh("sleep 2; echo done; exit 3", &[]));
            let started = Instant::now();
            assert!(jobs.start(&short, &spec).await.unwrap().is_running());
            let st = jobs.wait(&short, Duration::from_secs(10)).await.unwrap();
            let took = started.elapsed();
            assert_eq!(st, JobState::Exited { code: 3, tail: "done\n".into() });
            assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(6), "reported after {took:?}");
            // A finished job: at once.
            let started = Instant::now();
            assert_eq!(jobs.wait(&short, Duration::from_secs(10)).await.unwrap(), st);
            assert!(started.elapsed() < Duration::from_secs(2));

            // A job that outlasts the wait: still running when the wait gives up.
            let long = JobKey::new(project.name.clone(), uid("l"), "migrate").unwrap();
            jobs.start(&long, &JobSpec::new(cwd, ["sleep", "60"])).await.unwrap();
            let started = Instant::now();
            let st = jobs.wait(&long, Duration::from_millis(1200)).await.unwrap();
            let took = started.elapsed();
            assert!(st.is_running(), "{st:?}");
            assert!(took >= Duration::from_millis(1100) && took < Duration::from_secs(5), "gave up after {took:?}");
            // The wait left the job alone: terminating it still finds it running.
            jobs.terminate(&long, Duration::from_secs(1)).await.unwrap();
            assert!(matches!(jobs.poll(&long).await.unwrap(), JobState::Terminated { .. }));
        })
        .await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn job_start_and_first_poll_cost_versus_a_plain_command() {
    const RUNS: usize = 10;
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "jobs-bench").await.unwrap();
    let line = project
        .run_then_clean_up(&conn, async {
            let cwd = work_dir(&conn, &project).await;
            let jobs = Jobs::new(&conn);
            conn.run(&RemoteCommand::new("true")).await.unwrap();
            let mut plain = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                let t = Instant::now();
                conn.run(&RemoteCommand::new("true")).await.unwrap();
                plain.push(t.elapsed());
            }
            let mut job = Vec::with_capacity(RUNS);
            let mut polls = Vec::with_capacity(RUNS);
            for i in 0..RUNS {
                let key = JobKey::new(project.name.clone(), uid("b"), format!("s{i}")).unwrap();
                let t = Instant::now();
                jobs.start(&key, &JobSpec::new(cwd.clone(), ["true"])).await.unwrap();
                let p = Instant::now();
                jobs.poll(&key).await.unwrap();
                polls.push(p.elapsed());
                job.push(t.elapsed());
                // the next start must not find this one holding the lock
                finished(&jobs, &key, Duration::from_secs(10)).await;
            }
            let removed = jobs.prune(&project.name, 2).await.unwrap();
            assert_eq!(removed.len(), RUNS - 2);
            let (m_plain, m_job, m_poll) =
                (slipway_e2e::median(plain), slipway_e2e::median(job), slipway_e2e::median(polls));
            format!(
                "host_jobs benchmark ({RUNS} runs each on {}): plain `true` over the master median {:.2} ms, \
                 job start + first poll median {:.2} ms (poll alone {:.2} ms), ratio {:.1}x",
                host.name,
                m_plain.as_secs_f64() * 1e3,
                m_job.as_secs_f64() * 1e3,
                m_poll.as_secs_f64() * 1e3,
                m_job.as_secs_f64() / m_plain.as_secs_f64()
            )
        })
        .await;
    println!("{line}");
    let log = sandbox.join("logs/benchmarks.txt");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}
