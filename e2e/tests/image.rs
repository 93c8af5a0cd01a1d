//! The controller image runs the way the chart runs it: as uid 65532 with a read-only root
//! filesystem, `/tmp` and `$HOME` on tmpfs, no capabilities. OpenSSH needs a passwd entry for the
//! uid, and the `ssh -f` masters the controller starts are re-parented to PID 1 when they detach:
//! PID 1 (tini) must reap them when they exit, or they pile up as zombies.

use std::time::{Duration, Instant};

use slipway_e2e::container::{ContainerProcess, ControllerContainer, controller_image, docker};
use slipway_e2e::deploy::{App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest};
use slipway_e2e::require_sandbox;

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_image_deploys_as_uid_65532_on_a_read_only_root_and_reaps_exited_ssh_masters() {
    let sandbox = require_sandbox!();
    let image = controller_image();
    let mut t = DeployTest::without_controller(&sandbox, "image").unwrap();
    let site = t.site(1, "image").unwrap();
    let started = Instant::now();
    let controller = ControllerContainer::start(&t.cluster, &image, None, &[]).unwrap();
    println!("controller container ready {:?} after docker run", started.elapsed());

    // SSH works as uid 65532: the Environment turns Ready and a deploy succeeds through it.
    t.create_environment(&EnvironmentManifest::new("staging", App::Ticker, &site)).unwrap();
    let ready = t.cluster.wait("env/staging", "condition=Ready", Duration::from_secs(90));
    assert!(ready.is_ok(), "{ready:?}\n{}", controller.log());
    t.deploy(&DeployRequestManifest::tag("first", "staging", "ticker-v1")).unwrap();
    let done = t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert!(done.ran("Rebuilding"), "{done:#?}");

    // PID 1 is tini, the controller its child, and every process runs as the chart's uid.
    let processes = controller.processes().unwrap();
    let init = processes.iter().find(|p| p.pid == controller.init_pid().unwrap()).unwrap();
    assert_eq!(init.comm, "tini", "PID 1 of the container: {processes:?}");
    let masters: Vec<_> = processes.iter().filter(|p| p.comm == "ssh" && p.state != 'Z').cloned().collect();
    assert!(!masters.is_empty(), "no SSH master runs in the container: {processes:?}");
    for p in &processes {
        let uid = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:").map(|u| u.split_whitespace().next().unwrap_or("").to_owned()))
        });
        if let Some(uid) = uid {
            assert_eq!(uid, "65532", "{p:?} runs as uid {uid}");
        }
    }
    // A detached master's parent is PID 1: it is PID 1 that must reap it.
    assert!(masters.iter().any(|m| m.ppid == init.pid), "no SSH master was re-parented to PID 1: {processes:?}");

    // The masters exit (as an idle one does after ControlPersist, or when its host goes away):
    // PID 1 reaps them.
    let zombies = zombies_after_masters_exit(&controller, &masters);
    assert!(zombies.is_empty(), "zombie processes in the controller container: {zombies:?}");

    // The controller carries on (a new master for the next check) and stops cleanly on SIGTERM,
    // which tini passes on.
    t.deploy(&DeployRequestManifest::tag("second", "staging", "ticker-v2")).unwrap();
    t.expect_outcome("second", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(controller.stop(Duration::from_secs(20)).unwrap(), 0, "{}", controller.log());
}

/// Ends the SSH masters `masters` (SIGTERM) and returns the container's zombies 2 s after they
/// exited.
fn zombies_after_masters_exit(controller: &ControllerContainer, masters: &[ContainerProcess]) -> Vec<ContainerProcess> {
    for m in masters {
        let _ = std::process::Command::new("kill").args(["-TERM", &m.pid.to_string()]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = controller.processes().unwrap();
    while masters.iter().any(|m| left.iter().any(|p| p.pid == m.pid && p.state != 'Z')) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = controller.processes().unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    controller.processes().unwrap().into_iter().filter(|p| p.state == 'Z').collect()
}

fn ssh_masters(controller: &ControllerContainer) -> Vec<ContainerProcess> {
    controller.processes().unwrap().into_iter().filter(|p| p.comm == "ssh" && p.state != 'Z').collect()
}

/// The checks above can fail: without tini as PID 1 an exited master stays a zombie, and without
/// the passwd entry SSH does not work at all.
#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn without_tini_or_the_passwd_entry_the_image_checks_fail() {
    let sandbox = require_sandbox!();
    let image = controller_image();

    // The controller as PID 1 (no init): it does not reap the masters it did not start itself.
    let mut t = DeployTest::without_controller(&sandbox, "image-noinit").unwrap();
    let site = t.site(1, "image-noinit").unwrap();
    let controller =
        ControllerContainer::start(&t.cluster, &image, Some("/usr/local/bin/slipway-controller"), &[]).unwrap();
    t.create_environment(&EnvironmentManifest::new("staging", App::Ticker, &site)).unwrap();
    t.cluster.wait("env/staging", "condition=Ready", Duration::from_secs(90)).unwrap();
    let masters = ssh_masters(&controller);
    assert!(!masters.is_empty(), "no SSH master runs in the container: {:?}", controller.processes());
    let zombies = zombies_after_masters_exit(&controller, &masters);
    assert!(
        zombies.iter().any(|z| z.comm == "ssh" && z.ppid == controller.init_pid().unwrap()),
        "no zombie ssh under a controller that is PID 1: {zombies:?}"
    );
    drop(controller);

    // An image without the passwd entry for uid 65532.
    let broken = format!("{image}-nopasswd");
    let builder = format!("swt-nopasswd-{}", std::process::id());
    let _ = docker(&["rm", "--force", &builder]);
    docker(&[
        "run",
        "--name",
        &builder,
        "--user",
        "0",
        "--entrypoint",
        "/bin/sed",
        &image,
        "-i",
        "/^slipway:/d",
        "/etc/passwd",
        "/etc/group",
    ])
    .unwrap();
    docker(&[
        "commit",
        "--change",
        "USER 65532:65532",
        "--change",
        r#"ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/slipway-controller"]"#,
        "--change",
        "CMD []",
        &builder,
        &broken,
    ])
    .unwrap();
    let _ = docker(&["rm", "--force", &builder]);
    let t2 = DeployTest::without_controller(&sandbox, "image-nopasswd").unwrap();
    let controller = ControllerContainer::start(&t2.cluster, &broken, None, &[]).unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Ticker, &site);
    env.ssh_secret = "nopasswd-ssh".into();
    t2.create_environment(&env).unwrap();
    let ready = t2.cluster.wait("env/staging", "condition=Ready", Duration::from_secs(40));
    let message = t2.cluster.condition("env/staging", "Ready", "message").unwrap_or_default();
    println!("without the passwd entry: Ready says {message:?}");
    assert!(ready.is_err(), "the Environment turned Ready without a passwd entry for uid 65532");
    assert!(message.contains("uid 65532 has no entry in /etc/passwd"), "{message}");
    assert!(controller.log().contains("SSH will not work"), "{}", controller.log());
    drop(controller);
    let _ = docker(&["image", "rm", &broken]);
    drop(t);
}
