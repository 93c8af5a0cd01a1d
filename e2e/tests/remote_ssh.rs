//! Remote layer against a real sshd: pinned host keys, authentication, reachability, timeouts,
//! master reuse and the private directory.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_controller::remote::{
    ConnectOptions, ConnectionPool, HostConnection, RemoteCommand, RemoteError, Repo, SecretBytes, detect_flavor,
    missing_env_keys,
};
use slipway_e2e::hosts::{self, TestHost};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Asserts that `marker` does not exist on the host, through a trusted connection.
async fn assert_absent(host: &TestHost, marker: &str) {
    let conn = host.connect().await.unwrap();
    let out = conn.output(&RemoteCommand::new("test").arg("-e").arg(marker)).await.unwrap();
    assert_eq!(out.exit_code(), Some(1), "{marker} exists on the host");
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn connects_and_keeps_its_private_directory_private() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let dir = conn.private_dir().to_owned();
    assert_eq!(mode(&dir), 0o700);
    for f in ["known_hosts", "ssh_config"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert!(!dir.join("id").exists(), "the private key stays on disk after the master authenticated");
    let who = conn.run(&RemoteCommand::new("id").arg("-un")).await.unwrap();
    assert_eq!(who.stdout().trim(), host.user);
    // Many commands, sequential and concurrent, over the one master.
    for i in 0..10 {
        let out = conn.run(&RemoteCommand::new("echo").arg(i.to_string())).await.unwrap();
        assert_eq!(out.stdout().trim(), i.to_string());
    }
    let conn = Arc::new(conn);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = conn.clone();
        tasks.push(tokio::spawn(async move {
            c.run(&RemoteCommand::new("printf").arg("%s").arg(format!("p{i}"))).await.map(|o| o.stdout())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), format!("p{i}"));
    }
    conn.check().await.unwrap();
    let conn = Arc::into_inner(conn).unwrap();
    conn.close().await.unwrap();
    assert!(!dir.exists(), "private dir left behind after close");

    let conn = host.connect().await.unwrap();
    let dir = conn.private_dir().to_owned();
    drop(conn);
    assert!(!dir.exists(), "private dir left behind after drop");
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn changed_host_key_is_refused_before_any_command_runs() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let marker = format!("/tmp/{}", hosts::unique_name("slipway-marker"));
    let (_, other_public) = hosts::generate_keypair().unwrap();
    let mut target = host.target().unwrap();
    target.known_hosts = hosts::known_hosts_line(&host.addr, host.port, &other_public);

    let started = Instant::now();
    let err = match HostConnection::connect(&target, hosts::test_options()).await {
        Ok(conn) => {
            // Must be unreachable code; if not, the marker proves the breach.
            let _ = conn.run(&RemoteCommand::new("touch").arg(&marker)).await;
            panic!("connected to a host whose key is not the pinned one");
        }
        Err(e) => e,
    };
    assert!(matches!(err, RemoteError::HostKeyMismatch { .. }), "{err}");
    assert_eq!(err.reason(), "HostKeyMismatch");
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains("different") && msg.contains("SHA256:"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_absent(&host, &marker).await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn unknown_host_key_is_refused() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    for known_hosts in [
        String::new(),
        // a key pinned for another address only
        hosts::known_hosts_line("127.0.0.254", 22, &hosts::generate_keypair().unwrap().1),
    ] {
        let mut target = host.target().unwrap();
        target.known_hosts = known_hosts;
        let err = HostConnection::connect(&target, hosts::test_options()).await.unwrap_err();
        // Refused before ssh runs: the known_hosts pins nothing for this host.
        assert!(matches!(err, RemoteError::HostKeyNotPinned { .. }), "{err}");
        assert!(err.to_string().contains(&host.addr), "{err}");
    }
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn wrong_private_key_fails_authentication_without_leaking_the_key() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let (private, _) = hosts::generate_keypair().unwrap();
    let mut target = host.target().unwrap();
    target.private_key = SecretBytes::from(private.clone());
    let err = HostConnection::connect(&target, hosts::test_options()).await.unwrap_err();
    assert!(matches!(err, RemoteError::AuthenticationFailed { .. }), "{err}");
    assert_eq!(err.metric_label(), "authentication_failed");
    let shown = format!("{err} {err:?} {target:?}");
    for line in private.lines().filter(|l| l.len() > 20) {
        assert!(!shown.contains(line), "key material in {shown}");
    }
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    // A key that is not a key at all is an authentication failure too, and not echoed.
    target.private_key = SecretBytes::from("not-a-key-TOPSECRET-0123456789");
    let err = HostConnection::connect(&target, hosts::test_options()).await.unwrap_err();
    assert!(matches!(err, RemoteError::AuthenticationFailed { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("TOPSECRET"));
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn closed_or_silent_port_is_unreachable_within_the_connect_timeout() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let options = ConnectOptions { connect_timeout: Duration::from_secs(2), ..hosts::test_options() };

    // Closed: nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut target = host.target().unwrap();
    target.address = "127.0.0.1".into();
    target.port = port;
    target.known_hosts = host.known_hosts_for("127.0.0.1", port).unwrap();
    let started = Instant::now();
    let err = HostConnection::connect(&target, options.clone()).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // Silent: the port accepts TCP but no SSH server ever speaks (a hung host).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target.port = silent.local_addr().unwrap().port();
    target.known_hosts = host.known_hosts_for("127.0.0.1", target.port).unwrap();
    let started = Instant::now();
    let err = HostConnection::connect(&target, options.clone()).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RemoteError::Unreachable { .. }), "{err}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < options.connect_timeout + Duration::from_secs(3), "{took:?}");
    drop(silent);
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn commands_report_exit_codes_stderr_tails_and_timeouts() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();

    let failing = RemoteCommand::new("sh")
        .arg("-c")
        .arg("for i in $(seq 1 50); do echo line$i >&2; done; exit 3")
        .label("noisy failure");
    let err = conn.run(&failing).await.unwrap_err();
    match &err {
        RemoteError::CommandFailed { program, exit_code, stderr_tail } => {
            assert_eq!(program, "noisy failure");
            assert_eq!(*exit_code, Some(3));
            assert!(stderr_tail.ends_with("line50"), "{stderr_tail}");
            assert!(!stderr_tail.contains("line10\n"), "{stderr_tail}");
        }
        other => panic!("{other}"),
    }
    let out = conn.output(&failing).await.unwrap();
    assert_eq!(out.exit_code(), Some(3));

    let err = conn.run(&RemoteCommand::new("slipway-no-such-program")).await.unwrap_err();
    assert!(matches!(err, RemoteError::CommandFailed { exit_code: Some(127), .. }), "{err}");

    let started = Instant::now();
    let err = conn.run(&RemoteCommand::new("sleep").arg("30").timeout(Duration::from_secs(1))).await.unwrap_err();
    assert!(matches!(err, RemoteError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The master survives a timed-out command.
    conn.check().await.unwrap();
    conn.run(&RemoteCommand::new("true")).await.unwrap();

    // stdin reaches the program verbatim (binary-safe).
    let input: Vec<u8> = (0u8..=255).collect();
    let out =
        conn.run(&RemoteCommand::new("od").args(["-An", "-v", "-tx1"]).stdin(SecretBytes::from(input))).await.unwrap();
    let bytes: Vec<String> = out.stdout().split_whitespace().map(str::to_owned).collect();
    assert_eq!(bytes.len(), 256);
    assert_eq!(bytes[255], "ff");
}

/// The ssh processes whose command line names `dir` (a master's private directory).
fn ssh_processes_naming(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ssh ") && c.contains(&needle))
        .count()
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn pool_shares_one_master_per_target_with_a_handle_per_environment() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let pool = ConnectionPool::new(hosts::test_options());
    let target = host.target().unwrap();
    let a = pool.get("ns/staging", &target).await.unwrap();
    let b = pool.get("ns/staging", &target).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    // Two reconciles of another Environment on the same target, at once: one handle, and the
    // master is the first one's.
    let (c, c2) = tokio::join!(pool.get("ns/production", &target), pool.get("ns/production", &target));
    let (c, c2) = (c.unwrap(), c2.unwrap());
    assert!(Arc::ptr_eq(&c, &c2), "one Environment got two handles");
    assert!(!Arc::ptr_eq(&a, &c), "two Environments got one handle (one redactor)");
    assert!(a.same_master(&c));
    assert_eq!((pool.len(), pool.masters()), (2, 1));
    let dir = a.private_dir().to_path_buf();
    assert_eq!(ssh_processes_naming(&dir), 1, "one ssh master process for two Environments");

    // Each Environment's output is masked with its own secret values, whoever registered last.
    a.redactor().register(b"alpha-secret-value");
    c.redactor().register(b"bravo-secret-value");
    let fail = RemoteCommand::new("sh").args(["-c", "echo alpha-secret-value bravo-secret-value >&2; exit 3"]);
    let (out_a, out_c) = tokio::join!(a.output(&fail), c.output(&fail));
    let (tail_a, tail_c) = (out_a.unwrap().stderr_tail(), out_c.unwrap().stderr_tail());
    assert!(!tail_a.contains("alpha-secret-value") && tail_a.contains("bravo-secret-value"), "{tail_a}");
    assert!(!tail_c.contains("bravo-secret-value") && tail_c.contains("alpha-secret-value"), "{tail_c}");

    // Health-check forwards are each handle's own: one closing its forwards leaves the other's.
    let fa = a.forward_to_tcp(&target.address, target.port).await.unwrap();
    let fc = c.forward_to_tcp(&target.address, target.port).await.unwrap();
    assert_ne!(fa, fc);
    a.close_tcp_forwards().await;
    assert!(!fa.exists());
    let banner = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = std::os::unix::net::UnixStream::connect(&fc).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(&banner, b"SSH-2.0-", "the other Environment's forward was cut");

    // A changed target gets its own master; the old one stays for the Environment still on it.
    let mut changed = target.clone();
    changed.known_hosts.push('\n');
    let d = pool.get("ns/staging", &changed).await.unwrap();
    assert!(!d.same_master(&c));
    assert_eq!((pool.len(), pool.masters()), (2, 2));
    assert!(c.check().await.is_ok());
    // Evicting the last Environment on a master closes it: no ssh process, no private directory.
    drop((a, b, c, c2));
    pool.evict("ns/production").await;
    assert_eq!((pool.len(), pool.masters()), (1, 1));
    assert!(!dir.exists(), "{} outlived the evicted master", dir.display());
    for _ in 0..50 {
        if ssh_processes_naming(&dir) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ssh_processes_naming(&dir), 0, "the ssh master outlived its last Environment");
    pool.close_all().await;
    assert_eq!((pool.len(), pool.masters()), (0, 0));
    // A connect that fails leaves nothing behind (no slot holding the key, no master counted).
    let refused = slipway_controller::remote::HostTarget { port: 1, ..target.clone() };
    assert!(pool.get("ns/refused", &refused).await.is_err());
    assert_eq!((pool.len(), pool.masters()), (0, 0), "a failed connect left a master slot");
}

/// SIGKILLs the ssh processes (the master) whose command line names `dir`; how many.
fn kill_master(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("ssh ") && cmdline.contains(&needle) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            killed += 1;
        }
    }
    killed
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_master_killed_mid_command_is_unreachable_never_a_result_or_absent() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = hosts::TestProject::new(&conn, "lost").await.unwrap();
    let origin = hosts::shop_origin(&host).unwrap();
    let repo = Repo::new(&conn, project.dir.clone()).unwrap();
    repo.ensure_cloned(&origin).await.unwrap();
    let head = repo.head().await.unwrap().expect("a fresh clone has a HEAD");

    // A command in flight when the master dies (stopping sshd's listener would leave the
    // established session up and prove nothing).
    let slow = RemoteCommand::new("sh").args(["-c", "sleep 5; echo finished"]).label("slow");
    let dir = conn.private_dir().to_path_buf();
    let (result, killed) = tokio::join!(conn.output(&slow), async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        kill_master(&dir)
    });
    assert!(killed > 0, "no ssh master found for {}", dir.display());
    let err = result.unwrap_err();
    assert!(matches!(err, RemoteError::Unreachable { .. }), "expected Unreachable, got {err:?}");
    assert!(err.is_transient());

    // Every probe now says it cannot tell, never "absent": no checkout, no HEAD, no
    // .env.example (which would skip the required-keys check), compose v1.
    let probes: Vec<(&str, Result<String, RemoteError>)> = vec![
        ("exists", repo.exists().await.map(|b| b.to_string())),
        ("head", repo.head().await.map(|h| format!("{h:?}"))),
        ("env.example", missing_env_keys(&repo, &head, [].iter()).await.map(|m| format!("{m:?}"))),
        ("compose flavor", detect_flavor(&conn).await.map(|f| format!("{f:?}"))),
        ("docker", conn.project_containers(&project.name).await.map(|c| format!("{} containers", c.len()))),
    ];
    for (what, r) in probes {
        assert!(matches!(r, Err(RemoteError::Unreachable { .. })), "{what} after the master died: {r:?}");
    }
    drop(conn);
    let fresh = host.connect().await.unwrap();
    project.cleanup(&fresh).await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_master_runs_at_most_max_sessions_commands_at_once() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let options = ConnectOptions { max_sessions: 2, ..hosts::test_options() };
    let conn = Arc::new(HostConnection::connect(&host.target().unwrap(), options).await.unwrap());
    // Each command holds one of two slots (a directory that only one command at a time can
    // create) for a while; a third command running beside two others would find both taken.
    let tag = format!("/tmp/slipway-sessions-{}", std::process::id());
    let script =
        "for s in 1 2; do if mkdir \"$1.$s\" 2>/dev/null; then sleep 0.4; rmdir \"$1.$s\"; exit 0; fi; done; exit 7";
    let runs = (0..6).map(|_| {
        let (conn, tag) = (conn.clone(), tag.clone());
        async move { conn.output(&RemoteCommand::new("sh").args(["-c", script, "sh", &tag])).await.unwrap().exit_code() }
    });
    let codes = futures::future::join_all(runs).await;
    assert_eq!(codes, vec![Some(0); 6], "a command ran while max_sessions others did");
}
