//! The Helm chart and the plain manifests install the same objects; the chart's Pod runs on the
//! sandbox's node.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use slipway_e2e::cluster::repo_root;
use slipway_e2e::container::{controller_image, processes_under};
use slipway_e2e::deploy::{App, DeployTest, EnvironmentManifest};
use slipway_e2e::node::SandboxNode;
use slipway_e2e::{read_env_file, require_sandbox};

type Objects = BTreeMap<(String, String, String), serde_yaml::Value>;

fn objects(yaml: &str) -> Objects {
    let mut out = Objects::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let field = |path: &[&str]| {
            path.iter().try_fold(&value, |v, k| v.get(k)).and_then(|v| v.as_str()).unwrap_or("").to_string()
        };
        let key = (field(&["kind"]), field(&["metadata", "namespace"]), field(&["metadata", "name"]));
        assert!(out.insert(key.clone(), value).is_none(), "{key:?} rendered twice");
    }
    out
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).current_dir(repo_root()).output().expect("tool runs");
    assert!(out.status.success(), "{program} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn helm_template_renders_the_same_objects_as_the_manifests() {
    let sandbox = require_sandbox!();
    let env = read_env_file(&sandbox.join("env")).unwrap();
    let (helm, kubectl) = (&env["SLIPWAY_HELM"], &env["SLIPWAY_KUBECTL"]);

    let lint = run(helm, &["lint", "charts/slipway"]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let chart = objects(&run(helm, &["template", "slipway", "charts/slipway", "--include-crds"]));
    let plain = objects(&run(kubectl, &["kustomize", "manifests"]));
    let names = |o: &Objects| o.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&chart), names(&plain), "the chart and manifests/ install different objects");
    for (key, value) in &plain {
        let mut differences = Vec::new();
        diff(&chart[key], value, String::new(), &mut differences);
        assert!(differences.is_empty(), "{key:?} differs between the chart and manifests/ at {differences:?}");
    }
    assert!(
        plain.keys().any(|(kind, _, name)| kind == "CustomResourceDefinition" && name == "deployrequests.slipway.dev")
    );
}

/// Paths where two YAML values differ; numbers compare by value (kustomize writes 65535.0 as 65535).
fn diff(a: &serde_yaml::Value, b: &serde_yaml::Value, path: String, out: &mut Vec<String>) {
    use serde_yaml::Value;
    match (a, b) {
        (Value::Mapping(x), Value::Mapping(y)) => {
            for key in x.keys().chain(y.keys()) {
                let name = key.as_str().unwrap_or("?");
                let missing = Value::Null;
                diff(x.get(key).unwrap_or(&missing), y.get(key).unwrap_or(&missing), format!("{path}.{name}"), out);
            }
        }
        (Value::Sequence(x), Value::Sequence(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(path),
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn chart_values_render_what_they_say() {
    let sandbox = require_sandbox!();
    let env = read_env_file(&sandbox.join("env")).unwrap();
    let helm = &env["SLIPWAY_HELM"];
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        "replicas: 2\nwatchLabelSelector: \"slipway.dev/shard in (a,b)\"\nextraArgs: [\"--leader-election-lease-duration=30\"]\n\
         httpUrlAllow: [\"https://shop.example.com/\", \"http://127.0.0.1:18080/health\"]\n\
         logLevel: debug\nlogFormat: human\nmetrics: {port: 9090, serviceMonitor: {enabled: true, labels: {release: prom}}}\n\
         podDisruptionBudget: {enabled: true}\nhostNetwork: true\npodAnnotations: {prometheus.io/scrape: \"true\"}\n\
         nodeSelector: {kubernetes.io/os: linux}\ntolerations: [{key: dedicated, operator: Exists}]\n\
         affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}\n\
         resources: {limits: {memory: 128Mi}}\nextraEnv: [{name: HTTPS_PROXY, value: \"http://proxy:3128\"}]\n",
    )
    .unwrap();
    let file = values.path().to_str().unwrap();
    let lint = run(helm, &["lint", "charts/slipway", "--values", file]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let chart = objects(&run(helm, &["template", "slipway", "charts/slipway", "--values", file]));
    let get = |kind: &str, name: &str| {
        chart
            .get(&(kind.to_owned(), "slipway-system".to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let deployment = get("Deployment", "slipway-controller");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let args: Vec<&str> =
        spec["containers"][0]["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args,
        [
            "--log-format=human",
            "--http-addr=0.0.0.0:9090",
            "--leader-elect",
            "--watch-label-selector=slipway.dev/shard in (a,b)",
            "--http-url-allow=https://shop.example.com/",
            "--http-url-allow=http://127.0.0.1:18080/health",
            "--leader-election-lease-duration=30"
        ]
    );
    assert_eq!(spec["containers"][0]["ports"][0]["containerPort"].as_u64(), Some(9090));
    assert_eq!(spec["containers"][0]["resources"]["limits"]["memory"].as_str(), Some("128Mi"));
    let env = spec["containers"][0]["env"].as_sequence().unwrap();
    let proxy = env.iter().find(|e| e["name"].as_str() == Some("HTTPS_PROXY")).expect("extraEnv is rendered");
    assert_eq!(proxy["value"].as_str(), Some("http://proxy:3128"));
    assert!(
        env.iter().any(|e| e["name"].as_str() == Some("POD_NAMESPACE")),
        "extraEnv replaced the chart's env: {env:?}"
    );
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"].as_str(), Some("linux"));
    assert_eq!(spec["tolerations"][0]["key"].as_str(), Some("dedicated"));
    assert!(spec["affinity"]["podAntiAffinity"].is_mapping());
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
        Some("true")
    );
    let monitor = get("ServiceMonitor", "slipway-controller");
    assert_eq!(monitor["metadata"]["labels"]["release"].as_str(), Some("prom"));
    assert_eq!(get("Service", "slipway-controller-metrics")["spec"]["ports"][0]["port"].as_u64(), Some(9090));
    assert_eq!(get("PodDisruptionBudget", "slipway-controller")["spec"]["maxUnavailable"].as_u64(), Some(1));
    // The leader election's RBAC is there with or without these values.
    get("Role", "slipway-leader-election");
    get("RoleBinding", "slipway-leader-election");
}

/// `helm install` on the sandbox's node (kubelet + containerd): the chart's Pod runs the locally
/// built image under the chart's own securityContext, probes and RBAC, turns Ready, and an
/// Environment turns Ready through it (SSH as uid 65532); PID 1 (tini) reaps the SSH masters that
/// exit.
#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_chart_runs_the_controller_pod_on_the_sandbox_node() {
    let sandbox = require_sandbox!();
    let env = read_env_file(&sandbox.join("env")).unwrap();
    let image = controller_image();
    let (repository, tag) = image.rsplit_once(':').expect("the image reference has a tag");
    let started = Instant::now();
    let node = SandboxNode::start(&sandbox).unwrap();
    println!("node {} Ready {:?} after node.sh start", node.name, started.elapsed());
    node.import_image(&image).unwrap();

    let mut t = DeployTest::without_controller(&sandbox, "chart").unwrap();
    let site = t.site(1, "chart").unwrap();
    // The Pod shares the node's network (the API server and the SSH hosts listen on the loopback)
    // and reaches the API server there: the `kubernetes` Service's address needs a kube-proxy.
    let api_port = env["SLIPWAY_APISERVER"].rsplit_once(':').unwrap().1.to_owned();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        format!(
            "image: {{repository: {repository}, tag: {tag}, pullPolicy: Never}}\nhostNetwork: true\n\
             watchNamespace: {ns}\nmetrics: {{port: {metrics_port}}}\nlogLevel: info,kube=warn,slipway_controller=debug\n\
             extraEnv:\n  - {{name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}}\n  - {{name: KUBERNETES_SERVICE_PORT, value: \"{api_port}\"}}\n",
            ns = t.cluster.namespace
        ),
    )
    .unwrap();
    let release = Release { cluster: &t.cluster };
    let kubeconfig = env["SLIPWAY_KUBECONFIG"].as_str();
    // The sandbox has Slipway installed from manifests/: the release takes those objects over, as
    // when moving from `kubectl apply -k` to the chart, except the Deployment (at 0 replicas), which
    // it makes anew (a patch would merge the two ports lists).
    t.cluster
        .kubectl_ok(&["delete", "deployment", "slipway-controller", "-n", "slipway-system", "--ignore-not-found"])
        .unwrap();
    let installed = Instant::now();
    run(
        &env["SLIPWAY_HELM"],
        &[
            "install",
            "slipway",
            "charts/slipway",
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            "slipway-system",
            "--take-ownership",
            "--values",
            values.path().to_str().unwrap(),
        ],
    );

    // The Pod turns Ready on the node: its readiness probe (/readyz) answers.
    let logs = || node.pod_logs("slipway-system", "slipway-controller-");
    let pod = loop {
        let pods = release.pods();
        if let Some(pod) = pods.iter().find(|p| condition(p, "Ready") == "True") {
            break pod.clone();
        }
        assert!(
            installed.elapsed() < Duration::from_secs(120),
            "no Ready Pod 120 s after helm install: {pods:#?}\n{}\n{}",
            release.describe(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let status = &pod["status"]["containerStatuses"][0];
    let running_at = status["state"]["running"]["startedAt"].as_str().unwrap_or_default();
    let ready_at = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_default();
    println!(
        "controller Pod Ready {:?} after helm install (container started {running_at}, Pod Ready {ready_at})",
        installed.elapsed()
    );
    assert_eq!(pod["spec"]["nodeName"].as_str(), Some(node.name.as_str()));
    assert_eq!(status["restartCount"].as_u64(), Some(0), "{}", logs());
    assert!(status["image"].as_str().unwrap_or_default().ends_with(&image), "{status:#?}");
    // The chart's securityContext is what the Pod runs with.
    let spec = &pod["spec"];
    assert_eq!(spec["securityContext"]["runAsUser"].as_u64(), Some(65532));
    assert_eq!(spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(spec["serviceAccountName"].as_str(), Some("slipway"));

    // SSH works as uid 65532: an Environment turns Ready through the Pod.
    t.create_environment(&EnvironmentManifest::new("staging", App::Ticker, &site)).unwrap();
    let ready = t.cluster.wait("env/staging", "condition=Ready", Duration::from_secs(90));
    assert!(ready.is_ok(), "{ready:?}\n{}", logs());

    // In the container: tini is PID 1, the controller its child, everything runs as uid 65532,
    // and the SSH master that checked the host was re-parented to PID 1.
    let init = node.container_init_pid(status["containerID"].as_str().unwrap()).unwrap();
    let processes = processes_under(init).unwrap();
    assert_eq!(processes[0].comm, "tini", "PID 1 of the controller container: {processes:?}");
    for p in &processes {
        if let Some(uid) = uid_of(p.pid) {
            assert_eq!(uid, "65532", "{p:?} runs as uid {uid}");
        }
    }
    let masters: Vec<_> = processes.iter().filter(|p| p.comm == "ssh" && p.state != 'Z').cloned().collect();
    assert!(masters.iter().any(|m| m.ppid == init), "no SSH master was re-parented to PID 1: {processes:?}");

    // The masters exit (as an idle one does after ControlPersist): nothing stays a zombie.
    for m in &masters {
        let _ = Command::new("kill").args(["-TERM", &m.pid.to_string()]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_under(init).unwrap().iter().any(|p| masters.iter().any(|m| m.pid == p.pid && p.state != 'Z'))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let zombies: Vec<_> = processes_under(init).unwrap().into_iter().filter(|p| p.state == 'Z').collect();
    assert!(zombies.is_empty(), "zombie processes in the controller's Pod: {zombies:?}");

    // The controller carries on: the Pod stays Ready, never restarted.
    let pod = release.pods().into_iter().find(|p| p["metadata"]["name"] == pod["metadata"]["name"]).unwrap();
    assert_eq!(condition(&pod, "Ready"), "True", "{}", logs());
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"].as_u64(), Some(0), "{}", logs());
    drop(release);
    drop(t);
    drop(node);
}

/// The release's controller in the shared sandbox; scaled back to 0 replicas (the sandbox's
/// install, the other tests' ServiceAccount, stay) and its Pods gone when dropped.
struct Release<'a> {
    cluster: &'a slipway_e2e::cluster::TestCluster,
}

impl Release<'_> {
    fn pods(&self) -> Vec<serde_json::Value> {
        let out = self
            .cluster
            .kubectl_ok(&["get", "pods", "-n", "slipway-system", "-l", "app.kubernetes.io/name=slipway", "-o", "json"])
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        self.cluster
            .kubectl_ok(&["describe", "pods", "-n", "slipway-system", "-l", "app.kubernetes.io/name=slipway"])
            .unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "scale",
            "deployment",
            "slipway-controller",
            "-n",
            "slipway-system",
            "--replicas=0",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.pods().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn condition(object: &serde_json::Value, type_: &str) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn uid_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:").map(|u| u.split_whitespace().next().unwrap_or("").to_owned()))
    })
}
