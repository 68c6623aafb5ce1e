//! What `deploy/` ships is valid: every minder configuration there (each `.toml` and `.conf`
//! file, in any directory) passes `minderd --check-config` without a warning, and the examples
//! describe what their comments say.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{bin, code, stderr, stdout};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every `.toml` and `.conf` file under `dir`, sorted.
fn configs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(configs(&path));
        } else if path.extension().is_some_and(|e| e == "toml" || e == "conf") && !is_fleet(&path) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// minder-fleet's configurations are named fleet.toml; the rest are minderd's.
fn is_fleet(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "fleet.toml")
}

/// Every fleet.toml under `dir`, sorted.
fn fleet_configs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(fleet_configs(&path));
        } else if is_fleet(&path) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// `minderd --check-config [extra] -c FILE`, with no MINDER_* overrides from the environment
/// the tests run in.
fn check_config(file: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin("minderd"));
    cmd.arg("--check-config").args(extra).arg("-c").arg(file);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MINDER_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("minderd runs")
}

fn resolved(file: &Path) -> Value {
    let out = check_config(file, &["--json"]);
    assert_eq!(code(&out), 0, "{}: {}", file.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The full names of the processes a configuration yields, sorted.
fn process_names(config: &Value) -> Vec<String> {
    let mut names: Vec<String> = config["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["processes"].as_array().expect("processes").iter())
        .map(|p| {
            let (group, name) = (p["group"].as_str().expect("group"), p["name"].as_str().expect("name"));
            if group == name {
                name.to_string()
            } else {
                format!("{group}:{name}")
            }
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_configuration_under_deploy_is_valid() {
    let dir = deploy_dir();
    let found = configs(&dir);
    let relative: Vec<String> =
        found.iter().map(|p| p.strip_prefix(&dir).expect("under deploy/").display().to_string()).collect();
    // The walk must find at least these, so that a broken walk cannot pass by checking nothing.
    for want in [
        "minder.toml",
        "docker/minder.toml",
        "examples/consumers.toml",
        "examples/webapp.conf",
        "examples/webapp.toml",
        "kubernetes/minder.toml",
        "systemd/minder.toml",
    ] {
        assert!(relative.iter().any(|r| r == want), "deploy/{want} not found among {relative:?}");
    }
    let mut failures = Vec::new();
    for (path, rel) in found.iter().zip(&relative) {
        let out = check_config(path, &[]);
        let text = stdout(&out);
        let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("# warning:")).collect();
        if code(&out) != 0 {
            failures.push(format!("deploy/{rel}: exit {}\n{}", code(&out), stderr(&out)));
        } else if !warnings.is_empty() {
            failures.push(format!("deploy/{rel}: warnings\n{}", warnings.join("\n")));
        }
    }
    assert!(failures.is_empty(), "minderd --check-config:\n{}", failures.join("\n"));
}

#[test]
fn every_fleet_configuration_under_deploy_is_valid() {
    let dir = deploy_dir();
    let found = fleet_configs(&dir);
    let relative: Vec<String> =
        found.iter().map(|p| p.strip_prefix(&dir).expect("under deploy/").display().to_string()).collect();
    assert_eq!(relative, ["fleet/fleet.toml", "kubernetes/fleet/fleet.toml"]);
    for path in &found {
        let out = Command::new(bin("minder-fleet"))
            .arg("--config-file")
            .arg(path)
            .arg("--check-config")
            .output()
            .expect("minder-fleet runs");
        assert_eq!(code(&out), 0, "{}: {}", path.display(), stderr(&out));
        let text = stdout(&out);
        assert!(text.lines().any(|l| l.starts_with("node ") || l.starts_with("discover ")), "{text}");
    }
    // The cluster's fleet finds the DaemonSet's pods through the headless Service.
    let k8s = stdout(
        &Command::new(bin("minder-fleet"))
            .arg("--config-file")
            .arg(dir.join("kubernetes/fleet/fleet.toml"))
            .arg("--check-config")
            .output()
            .expect("minder-fleet runs"),
    );
    assert!(k8s.contains("discover k8s dns=minder-nodes port=9090"), "{k8s}");
    let service = std::fs::read_to_string(dir.join("kubernetes/nodes-service.yaml")).expect("the Service");
    assert!(service.contains("name: minder-nodes") && service.contains("clusterIP: None"), "{service}");
}

#[test]
fn the_web_app_is_the_same_in_toml_and_in_supervisord_format() {
    let examples = deploy_dir().join("examples");
    let toml = resolved(&examples.join("webapp.toml"));
    let ini = resolved(&examples.join("webapp.conf"));
    assert_eq!(
        process_names(&toml),
        ["webapp:web", "webapp:worker_00", "webapp:worker_01", "webapp:worker_02", "webapp:worker_03"]
    );
    // Every group and process with every option resolved: commands, signals, log rotation,
    // environment (the daemon's merged in), priorities.
    assert_eq!(toml["groups"], ini["groups"], "webapp.toml and webapp.conf differ");
}

#[test]
fn the_consumers_are_named_as_their_comments_say() {
    let config = resolved(&deploy_dir().join("examples/consumers.toml"));
    assert_eq!(
        process_names(&config),
        [
            "consumers:emails-a0",
            "consumers:emails-a1",
            "consumers:orders-1",
            "consumers:orders-2",
            "consumers:orders-3"
        ]
    );
}
