//! Writes the CRD YAML to `charts/slipway/crds/` and `manifests/crds/` (or checks it with `--check`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = slipway_crds::crds_yaml();
    let targets = [root.join("charts/slipway/crds/slipway.dev.yaml"), root.join("manifests/crds/slipway.dev.yaml")];
    let mut drift = false;
    for path in &targets {
        if check {
            if std::fs::read_to_string(path).ok().as_deref() != Some(yaml.as_str()) {
                eprintln!("{} differs from the Rust types: run `cargo run -p slipway-crds --bin crdgen`", shown(path));
                drift = true;
            }
        } else {
            std::fs::create_dir_all(path.parent().expect("target has a parent")).expect("create CRD dir");
            std::fs::write(path, &yaml).expect("write CRD YAML");
            eprintln!("wrote {}", shown(path));
        }
    }
    if drift { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn shown(path: &Path) -> String {
    path.display().to_string().replace("/crds/../", "/")
}
