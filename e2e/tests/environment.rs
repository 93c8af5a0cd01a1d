//! An Environment's status says whether its host answers with the pinned host key, as
//! `kubectl get env` shows it.

use std::time::Duration;

use slipway_e2e::cluster::TestCluster;
use slipway_e2e::hosts::{TestHost, generate_keypair, known_hosts_line};
use slipway_e2e::require_sandbox;

fn environment(name: &str, host: &TestHost, secret: &str) -> String {
    format!(
        "apiVersion: slipway.dev/v1alpha1\nkind: Environment\nmetadata: {{name: {name}}}\nspec:\n  tier: staging\n  \
         host: {{address: \"{addr}\", port: {port}, user: {user}, path: /home/{user}/{name}}}\n  \
         sshKeySecretRef: {{name: {secret}, key: id_ed25519}}\n  knownHostsSecretRef: {{name: {secret}, key: known_hosts}}\n",
        addr = host.addr,
        port = host.port,
        user = host.user,
    )
}

fn ssh_secret(cluster: &TestCluster, name: &str, key_path: &str, known_hosts_path: &str) {
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-file=id_ed25519={key_path}"),
            &format!("--from-file=known_hosts={known_hosts_path}"),
        ])
        .unwrap();
    cluster.kubectl_ok(&["label", "secret", name, "slipway.dev/secret=true"]).unwrap();
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn environment_is_ready_only_when_its_host_answers_with_the_pinned_key() {
    let sandbox = require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let mut cluster = TestCluster::new(&sandbox, "env-hostkey").unwrap();
    cluster.start_controller().unwrap();
    let key = host.key_path.display().to_string();

    ssh_secret(&cluster, "pinned", &key, &host.known_hosts_path.display().to_string());
    cluster.apply(&environment("good", &host, "pinned")).unwrap();
    cluster.wait("env/good", "condition=Ready", Duration::from_secs(60)).unwrap();
    assert_eq!(cluster.condition("env/good", "Reachable", "status").unwrap(), "True");
    let table = cluster.kubectl_ok(&["get", "env", "good"]).unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["good", host.addr.as_str()], "{table}");
    assert_eq!(row[row.len() - 2], "True", "READY column: {table}");

    // A different key pinned for the same address: the controller refuses the host.
    let (_, other_public) = generate_keypair().unwrap();
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), known_hosts_line(&host.addr, host.port, &other_public)).unwrap();
    ssh_secret(&cluster, "wrong-pin", &key, &wrong.path().display().to_string());
    cluster.apply(&environment("changed", &host, "wrong-pin")).unwrap();
    cluster.wait_ready_reason("env/changed", "HostKeyMismatch", Duration::from_secs(60)).unwrap();
    let message = cluster.condition("env/changed", "Ready", "message").unwrap();
    assert!(message.contains("update the known_hosts Secret"), "{message}");
    assert_eq!(cluster.condition("env/changed", "Stalled", "status").unwrap(), "True");

    // The private key never reaches status or events.
    let private_key = std::fs::read_to_string(&host.key_path).unwrap();
    let secret_line = private_key.lines().nth(1).unwrap();
    for object in ["env/good", "env/changed"] {
        let yaml = cluster.kubectl_ok(&["get", object, "-o", "yaml"]).unwrap();
        assert!(!yaml.contains(secret_line), "{object} status contains key material");
    }
    let events = cluster.kubectl_ok(&["get", "events", "-o", "yaml"]).unwrap();
    assert!(!events.contains(secret_line), "events contain key material");
    assert!(!cluster.controller_log().contains(secret_line), "the controller logged key material");

    // The controller kept one master open for `good`, in a private directory with no key file;
    // on SIGTERM it closes the master and removes the directory.
    let tmp = cluster.controller_tmp().unwrap();
    let dirs: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "expected one SSH master directory in {}: {dirs:?}", tmp.display());
    assert!(!dirs[0].join("id").exists(), "the private key stays on disk while the master is up");
    assert!(masters_using(&tmp) > 0, "no ssh master runs with its control socket in {}", tmp.display());
    assert!(cluster.stop_controller(Duration::from_secs(10)).is_some_and(|s| s.success()));
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "SSH directories left in {}", tmp.display());
    assert_eq!(masters_using(&tmp), 0, "an ssh master outlived the controller");
}

/// ssh processes whose command line names a path below `dir`.
fn masters_using(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("ssh ") && c.contains(&needle))
        .count()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn environment_with_a_stopped_host_is_unreachable_but_not_stalled() {
    let sandbox = require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let mut cluster = TestCluster::new(&sandbox, "env-down").unwrap();
    cluster.start_controller().unwrap();
    // A loopback address with no sshd behind it, its key pinned (else it is refused before
    // any connection as HostKeyNotPinned).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let known_hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(known_hosts.path(), host.known_hosts_for("127.0.0.1", closed).unwrap()).unwrap();
    ssh_secret(&cluster, "pinned", &host.key_path.display().to_string(), &known_hosts.path().display().to_string());
    let down = TestHost { addr: "127.0.0.1".into(), port: closed, ..host.clone() };
    cluster.apply(&environment("down", &down, "pinned")).unwrap();
    cluster.wait_ready_reason("env/down", "Unreachable", Duration::from_secs(60)).unwrap();
    assert_eq!(cluster.condition("env/down", "Reconciling", "status").unwrap(), "True");
    assert_eq!(cluster.condition("env/down", "Stalled", "status").unwrap(), "False");
}

fn environment_with_env_secret(name: &str, host: &TestHost, ssh: &str, env_secret: &str) -> String {
    format!("{}  envSecretRef: {{name: {env_secret}}}\n", environment(name, host, ssh))
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn secrets_are_used_only_when_opted_in_and_a_403_says_which_rolebinding_to_add() {
    let sandbox = require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let mut cluster = TestCluster::new(&sandbox, "env-optin").unwrap();
    cluster.start_controller().unwrap();
    let ns = cluster.namespace.clone();
    ssh_secret(&cluster, "ssh", &host.key_path.display().to_string(), &host.known_hosts_path.display().to_string());
    // Another app's credentials, not meant for Slipway: no opt-in label.
    let value = "TOPSECRET-other-app-password-4711";
    cluster.secret("other-app", &[("PASSWORD", value)]).unwrap();

    cluster.apply(&environment_with_env_secret("borrower", &host, "ssh", "other-app")).unwrap();
    cluster.wait_ready_reason("env/borrower", "SecretNotOptedIn", Duration::from_secs(60)).unwrap();
    let message = cluster.condition("env/borrower", "Ready", "message").unwrap();
    let fix = format!("kubectl -n {ns} label secret other-app slipway.dev/secret=true");
    assert!(message.contains(&fix), "{message}");
    assert_eq!(cluster.condition("env/borrower", "Stalled", "status").unwrap(), "True");
    // Not a byte of it left the cluster: the host was not even contacted.
    let tmp = cluster.controller_tmp().unwrap();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "an SSH connection was made for {}", tmp.display());
    assert_eq!(masters_using(&tmp), 0);
    let everything = format!(
        "{}{}{}",
        cluster.kubectl_ok(&["get", "env", "borrower", "-o", "yaml"]).unwrap(),
        cluster.kubectl_ok(&["get", "events", "-o", "yaml"]).unwrap(),
        cluster.controller_log()
    );
    assert!(!everything.contains(value), "the unlabelled Secret's value was written out");

    // An unlabelled SSH key Secret is refused the same way.
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "ssh-unlabelled",
            &format!("--from-file=id_ed25519={}", host.key_path.display()),
            &format!("--from-file=known_hosts={}", host.known_hosts_path.display()),
        ])
        .unwrap();
    cluster.apply(&environment("keyless", &host, "ssh-unlabelled")).unwrap();
    cluster.wait_ready_reason("env/keyless", "SecretNotOptedIn", Duration::from_secs(60)).unwrap();

    // Running the command the message gives fixes it (the Environment looks again by itself).
    cluster.kubectl_ok(&["label", "secret", "other-app", "slipway.dev/secret=true"]).unwrap();
    cluster.wait("env/borrower", "condition=Ready", Duration::from_secs(90)).unwrap();

    // Without the RoleBinding, reading the Secret is forbidden: the message says what to bind.
    cluster.kubectl_ok(&["delete", "rolebinding", "slipway-secret-reader"]).unwrap();
    cluster.apply(&environment("locked", &host, "ssh")).unwrap();
    cluster.wait_ready_reason("env/locked", "SecretForbidden", Duration::from_secs(60)).unwrap();
    let message = cluster.condition("env/locked", "Ready", "message").unwrap();
    assert!(message.contains("rolebinding") && message.contains("slipway-secret-reader"), "{message}");
    assert_eq!(cluster.condition("env/locked", "Stalled", "status").unwrap(), "True");
}
