//! The deployment files, checked here where there is no Docker engine or
//! cluster: hadolint on the Dockerfile, the Compose file against the
//! Compose specification's schema, every Kubernetes manifest against the
//! Kubernetes API's schemas (strict: unknown fields fail), each overlay as
//! `kubectl kustomize` renders it (validated the same way), yamllint, and
//! what no schema knows (tests/python/deploy_checks.py): kustomize
//! overlays that patch what their base has, a termination grace that
//! covers streamd's drain and shutdown deadlines for the configuration
//! the ConfigMap holds, and ports that match the engines it configures.
//! Each validator is first shown a broken file, so a validator that
//! accepts anything fails the test.
//!
//! The tools come from PyPI into the tests' virtualenv (the README's test
//! command installs them: tests/python/requirements.txt).

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_streamd");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool of the tests' virtualenv; a clear failure if it is missing.
fn tool(name: &str) -> PathBuf {
    let p = repo().join("tests/python/.venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run the README's test command (bash scripts/test.sh), \
         which installs tests/python/requirements.txt",
        p.display()
    );
    p
}

/// Runs `program` with `args` in the repository; (success, stdout + stderr).
fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every file under `dir` (recursively) whose extension is `ext`.
fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out
}

fn manifests() -> Vec<String> {
    let mut out: Vec<String> = files_under(&repo().join("k8s"), "yaml")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    out.sort();
    assert!(out.len() >= 8, "{out:?}");
    out
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = tool("hadolint");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian\nRUN cd /tmp && apt-get install -y curl\n",
    )
    .unwrap();
    let (ok, out) = run(&hadolint, &[bad.to_str().unwrap()]);
    assert!(!ok, "hadolint accepted a bad Dockerfile: {out}");
    let (ok, out) = run(&hadolint, &["Dockerfile"]);
    assert!(ok, "{out}");
}

#[test]
fn the_compose_file_matches_the_compose_spec() {
    let check = tool("check-jsonschema");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("compose.yml");
    std::fs::write(
        &bad,
        "services:\n  a:\n    image: x\n    ports: 5\n    restart: sometimes\n",
    )
    .unwrap();
    let (ok, out) = run(
        &check,
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!ok, "the schema accepted a bad Compose file: {out}");
    let (ok, out) = run(
        &check,
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = run(&tool("yamllint"), &["-s", "docker-compose.yml"]);
    assert!(ok, "{out}");
}

#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let validate = tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("sts.yaml");
    let sts = std::fs::read_to_string(repo().join("k8s/base/statefulset.yaml")).unwrap();
    std::fs::write(
        &bad,
        sts.replace("terminationGracePeriodSeconds", "terminationGraceSeconds"),
    )
    .unwrap();
    let (ok, out) = run(&validate, &["--strict", bad.to_str().unwrap()]);
    assert!(!ok, "a misspelled field passed: {out}");
    let files = manifests();
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run(&validate, &args);
    assert!(ok, "{out}");
    for f in &files {
        assert!(
            out.contains(&format!("{f} passed")),
            "{f} not validated: {out}"
        );
    }
    let (ok, out) = run(&tool("yamllint"), &["-s", "k8s"]);
    assert!(ok, "{out}");
}

/// `kubectl` from PATH, with the Kustomize it embeds (v4 or later: the
/// overlays use `patches`); a clear failure if it is missing or older.
fn kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kubectl is missing: the overlays are rendered with `kubectl kustomize` \
                 (no cluster needed); install kubectl 1.21 or later"
            )
        });
    let (ok, out) = run(&found, &["version", "--client"]);
    assert!(ok, "{out}");
    let major = out
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    assert!(
        major.is_some_and(|m| m >= 4),
        "{} embeds no Kustomize v4 or later:\n{out}",
        found.display()
    );
    found
}

/// Each overlay as Kustomize renders it: it renders, every object passes
/// the Kubernetes schemas strictly, and the merge is what the overlay
/// means (tests/python/rendered_checks.py: the base's and the overlay's
/// resources once each, in the namespace; the StatefulSet's variables of
/// both; the image; every Secret and ConfigMap read is there). A patch of
/// a resource the base lacks is first shown to fail, so a renderer that
/// accepts anything fails the test.
#[test]
fn the_overlays_render_with_kustomize_and_validate() {
    let kubectl = kubectl();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("k8s");
    let (ok, out) = run(Path::new("cp"), &["-r", "k8s", copy.to_str().unwrap()]);
    assert!(ok, "{out}");
    let patch = copy.join("overlays/dev/statefulset.yaml");
    let text = std::fs::read_to_string(&patch).unwrap();
    std::fs::write(
        &patch,
        text.replacen("name: streamd\n", "name: streamd-typo\n", 1),
    )
    .unwrap();
    let (ok, out) = run(
        &kubectl,
        &["kustomize", copy.join("overlays/dev").to_str().unwrap()],
    );
    assert!(
        !ok && out.contains("streamd-typo"),
        "a patch of nothing rendered, or failed for another reason: {out}"
    );

    let validate = tool("kubernetes-validate");
    let python = tool("python");
    let overlays: Vec<String> = std::fs::read_dir(repo().join("k8s/overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(overlays.len() >= 3, "{overlays:?}");
    for overlay in &overlays {
        let out = Command::new(&kubectl)
            .args(["kustomize", &format!("k8s/overlays/{overlay}")])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&rendered, &out.stdout).unwrap();
        let objects = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("kind: "))
            .count();
        assert!(objects >= 8, "{overlay}: {objects} objects");
        let (ok, out) = run(&validate, &["--strict", rendered.to_str().unwrap()]);
        assert!(ok, "{overlay}: {out}");
        assert_eq!(
            out.matches(" passed").count(),
            objects,
            "{overlay}: not every object validated: {out}"
        );
        let (ok, out) = run(
            &python,
            &[
                "tests/python/rendered_checks.py",
                repo().to_str().unwrap(),
                overlay,
                rendered.to_str().unwrap(),
            ],
        );
        eprintln!("{out}");
        assert!(ok && !out.contains("FAIL"), "{out}");
    }
}

/// The configuration the ConfigMap and the image ship is one streamd
/// accepts, and the manifests agree with it (deploy_checks.py).
#[test]
fn the_manifests_agree_with_the_configuration_they_ship() {
    let python = tool("python");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("configmap.toml");
    let (ok, out) = run(
        &python,
        &[
            "-c",
            "import sys, yaml; d = yaml.safe_load(open('k8s/base/configmap.yaml')); \
             open(sys.argv[1], 'w').write(d['data']['streamd.toml'])",
            toml.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let data = dir.path().join("data");
    let location = format!("file://{}", dir.path().join("recordings").display());
    for config in [toml.clone(), repo().join("config/container.toml")] {
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&config)
            .env("STREAMD_DATABASE__DATA_DIR", &data)
            .env("STREAMD_RECORD__LOCATION", &location)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", config.display());
    }
    let out = Command::new(BIN)
        .args(["--config", toml.to_str().unwrap(), "config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let effective = dir.path().join("effective.toml");
    std::fs::write(&effective, &out.stdout).unwrap();
    let envs = dir.path().join("envs.json");
    let (ok, out) = run(
        &python,
        &[
            "tests/python/deploy_checks.py",
            repo().to_str().unwrap(),
            effective.to_str().unwrap(),
            envs.to_str().unwrap(),
        ],
    );
    eprintln!("{out}");
    assert!(ok, "{out}");
    assert!(!out.contains("FAIL"), "{out}");

    // Every STREAMD_ variable the overlays and Compose set is a key with a
    // value streamd takes, over the configuration that deployment uses.
    let envs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&envs).unwrap()).unwrap();
    for (deployment, vars) in envs.as_object().unwrap() {
        let config = if deployment == "compose" {
            repo().join("config/container.toml")
        } else {
            toml.clone()
        };
        let mut cmd = Command::new(BIN);
        cmd.arg("check-config")
            .arg(&config)
            .env_remove("RUST_BACKTRACE");
        for (k, v) in vars.as_object().unwrap() {
            cmd.env(k, v.as_str().unwrap());
        }
        // Where this machine can write (the pod's /data is not here).
        cmd.env("STREAMD_DATABASE__DATA_DIR", &data);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{deployment}'s variables {vars}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(envs.as_object().unwrap().len() >= 3, "{envs}");
}

/// Every metric the Grafana dashboard queries is one streamd exports (a
/// name in its source), and the dashboard is JSON Grafana can import.
#[test]
fn the_dashboard_queries_metrics_streamd_exports() {
    let text = std::fs::read_to_string(repo().join("docs/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["title"], "streamd");
    let source: String = files_under(&repo().join("src"), "rs")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let exported = |name: &str| {
        source.match_indices(name).any(|(i, _)| {
            let after = source[i + name.len()..].chars().next().unwrap_or(' ');
            let before = source[..i].chars().next_back().unwrap_or(' ');
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
            !word(after) && !word(before)
        })
    };
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{}", panels.len());
    let mut queried = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("streamd_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported(&name),
                    "panel {:?} queries {name}, which streamd does not export",
                    panel["title"]
                );
                queried += 1;
                rest = &rest[i + name.len()..];
            }
        }
    }
    assert!(queried >= 20, "{queried}");
}
