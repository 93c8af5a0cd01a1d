//! `bench-report SANDBOX [OUT.json]`: prints the table of the figures the benchmarks recorded
//! under `SANDBOX/logs/bench/` and writes them all as one JSON document (default
//! `SANDBOX/logs/bench.json`). Used by `e2e/bench.sh`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let sandbox = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: bench-report SANDBOX [OUT.json]"))?);
    let out = args.next().map(PathBuf::from).unwrap_or_else(|| sandbox.join("logs/bench.json"));
    let figures = slipway_e2e::bench::load_figures(&sandbox)?;
    print!("{}", slipway_e2e::bench::table(&figures));
    std::fs::write(&out, serde_json::to_vec_pretty(&serde_json::json!({ "figures": figures }))?)?;
    println!("figures as JSON: {}", out.display());
    Ok(())
}
