//! Benchmark: one trivial command over the reused SSH master versus a fresh `ssh` per command,
//! in the same run. Prints the medians and their ratio; e2e/run-tests.sh shows them at the end of its run.

use std::time::Instant;

use slipway_controller::remote::RemoteCommand;
use slipway_e2e::hosts::TestHost;

const RUNS: usize = 30;

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn ssh_master_reuse_versus_fresh_connection_per_command() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let cmd = RemoteCommand::new("true");
    // warm-up
    conn.run(&cmd).await.unwrap();

    let mut reused = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        conn.run(&cmd).await.unwrap();
        reused.push(t.elapsed());
    }

    let args = host.one_shot_ssh_args();
    let mut fresh = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = tokio::process::Command::new("ssh").args(&args).arg("true").output().await.unwrap();
        fresh.push(t.elapsed());
        assert!(out.status.success(), "fresh ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    let (m_reused, m_fresh) = (slipway_e2e::median(reused), slipway_e2e::median(fresh));
    let ratio = m_fresh.as_secs_f64() / m_reused.as_secs_f64();
    let line = format!(
        "ssh_mux benchmark ({RUNS} runs each, `true` on {}): reused master median {:.2} ms, fresh ssh median {:.2} ms, ratio {:.1}x",
        host.name,
        m_reused.as_secs_f64() * 1e3,
        m_fresh.as_secs_f64() * 1e3,
        ratio
    );
    println!("{line}");
    // Figures, not a pass/fail: e2e/run-tests.sh prints this file at the end of the run.
    let log = sandbox.join("logs/benchmarks.txt");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    // ... and as P2 of e2e/bench.sh's table.
    slipway_e2e::bench::record(
        &sandbox,
        &slipway_e2e::bench::Figure {
            id: "P2".into(),
            figure: "one command over a fresh ssh / over the reused master (medians)".into(),
            measured: format!(
                "{ratio:.1}x cheaper ({:.1} ms / {:.1} ms, {RUNS} runs each)",
                m_fresh.as_secs_f64() * 1e3,
                m_reused.as_secs_f64() * 1e3
            ),
            value: Some(ratio),
            target: ">= 10x cheaper".into(),
            pass: Some(ratio >= 10.0),
            details: serde_json::json!({"runs": RUNS, "host": host.name,
                "reused_ms": m_reused.as_secs_f64() * 1e3, "fresh_ms": m_fresh.as_secs_f64() * 1e3}),
        },
    )
    .unwrap();
}
