//! Packaging stays in step with itself: the chart's CRDs are the generated ones, the chart
//! passes `helm lint --strict` and renders exactly the objects in `manifests/` (default values,
//! and `watchNamespace` against the namespaced flavour), the RBAC stays least privilege, the
//! Deployment stays hardened, and `kubectl apply -R -f manifests/` creates the namespace before
//! what lives in it.
//!
//! The chart is rendered and linted by the real Helm v4 engine: PyPI's `helm-python-sdk`
//! (Helm's Go SDK as a shared library, no helm binary), which `scripts/install-test-deps`
//! installs into a venv, driven by `packaging/helm_engine.py`. Without that venv these tests
//! fail and say how to install it. Objects are compared as parsed YAML, not as text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

const NAMESPACE: &str = "etcd-operator";
const RELEASE: &str = "etcd-operator";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/etcd-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files in `dir` (not recursive) whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn yaml_docs(text: &str, origin: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `Kind namespace/name`, the identity two renderings are matched by.
fn key(object: &Value) -> String {
    let meta = &object["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("");
    format!(
        "{} {ns}/{}",
        object["kind"].as_str().unwrap(),
        meta["name"].as_str().unwrap()
    )
}

type Objects = BTreeMap<String, Value>;

fn by_key(objects: impl IntoIterator<Item = Value>) -> Objects {
    let mut map = Objects::new();
    for object in objects {
        let k = key(&object);
        assert!(
            map.insert(k.clone(), object).is_none(),
            "{k} is defined twice"
        );
    }
    map
}

/// Every document `kubectl apply -R -f manifests/` applies, in the order it applies them:
/// kubectl walks the tree in lexical order (Go's filepath.Walk) and reads only .json, .yaml
/// and .yml files.
fn kubectl_apply_order(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut docs = Vec::new();
    for path in entries {
        if path.is_dir() {
            docs.extend(kubectl_apply_order(&path));
        } else if ["json", "yaml", "yml"]
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext))
        {
            let text = read(&path);
            let origin = path.display().to_string();
            docs.extend(
                yaml_docs(&text, &origin)
                    .into_iter()
                    .map(|d| (path.clone(), d)),
            );
        }
    }
    docs
}

/// The objects of `manifests/` the chart also renders: all but the CRDs (the chart's crds/)
/// and the Namespace (`helm install --create-namespace`).
fn manifests() -> Objects {
    by_key(
        kubectl_apply_order(&repo().join("manifests"))
            .into_iter()
            .map(|(_, doc)| doc)
            .filter(|d| {
                !matches!(
                    d["kind"].as_str(),
                    Some("CustomResourceDefinition" | "Namespace")
                )
            }),
    )
}

/// `manifests/namespaced/rbac.yaml.in` with its placeholder filled in.
fn namespaced_rbac(watch: &str) -> Objects {
    let path = repo().join("manifests/namespaced/rbac.yaml.in");
    let text = read(&path).replace("WATCH_NAMESPACE", watch);
    by_key(yaml_docs(&text, &path.display().to_string()))
}

/// Overrides which Python runs the Helm engine.
const HELM_PYTHON_ENV: &str = "HELM_PYTHON";

/// The Python of the venv holding `helm-python-sdk`: `$HELM_PYTHON`, else
/// `$ETCD_OPERATOR_CACHE/helm-venv/bin/python` (default cache `~/.cache/etcd-operator`), where
/// `scripts/install-test-deps` creates it. Panics, naming the fix, when it is missing.
fn helm_python() -> PathBuf {
    let path = match std::env::var_os(HELM_PYTHON_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let cache = match std::env::var_os("ETCD_OPERATOR_CACHE") {
                Some(c) if !c.is_empty() => PathBuf::from(c),
                _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/etcd-operator"),
            };
            cache.join("helm-venv/bin/python")
        }
    };
    assert!(
        path.is_file(),
        "no Helm engine: {} is missing (set {HELM_PYTHON_ENV} or run scripts/install-test-deps)",
        path.display()
    );
    path
}

/// Runs one `packaging/helm_engine.py` request: its JSON answer, or Helm's error message.
/// Panics when the engine itself cannot run.
fn helm(request: &Value) -> Result<Value, String> {
    let python = helm_python();
    let script = repo().join("tests/packaging/helm_engine.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(request.to_string())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{}: unreadable answer: {e}", script.display()))),
        Some(1) => Err(stderr),
        _ => panic!(
            "{} {} failed ({}): {stderr}",
            python.display(),
            script.display(),
            output.status
        ),
    }
}

/// `helm template <release> <chart> -n etcd-operator` with `overrides` on top of values.yaml:
/// the rendered objects of every template (CRDs excluded, as helm template does without
/// --include-crds), or Helm's error.
fn try_render(chart: &Path, release: &str, overrides: Value) -> Result<Objects, String> {
    let manifests = helm(&json!({
        "command": "render",
        "chart": chart,
        "release": release,
        "namespace": NAMESPACE,
        "values": overrides,
    }))?;
    let mut objects = Vec::new();
    for (template, manifest) in manifests.as_object().expect("{template: manifest}") {
        objects.extend(yaml_docs(manifest.as_str().unwrap(), template));
    }
    Ok(by_key(objects))
}

/// [`try_render`] of charts/etcd-operator, which must render.
fn render(release: &str, overrides: Value) -> Objects {
    for path in files(&chart().join("templates"), "") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".yaml") || name.ends_with(".tpl"),
            "{name}: templates/ holds only .yaml manifests and .tpl helpers"
        );
    }
    try_render(&chart(), release, overrides).unwrap_or_else(|e| panic!("{e}"))
}

/// `helm lint --strict <chart> -n etcd-operator` with `values` on top of values.yaml: the
/// findings, `{"messages": [{"severity", "path", "error"}], "errors": [...]}`.
fn lint(chart: &Path, values: Value) -> Value {
    helm(&json!({
        "command": "lint",
        "chart": chart,
        "namespace": NAMESPACE,
        "values": values,
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Helm's lint severities: 1 info, 2 warning, 3 error.
const LINT_INFO: u64 = 1;

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Asserts both sets hold the same objects, naming the first that differs.
fn assert_same(rendered: &Objects, expected: &Objects, what: &str) {
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: the chart renders other objects than expected"
    );
    for (k, object) in rendered {
        let mut differences = Vec::new();
        diff(object, &expected[k], String::new(), &mut differences);
        assert!(
            differences.is_empty(),
            "{what}: {k} differs (chart vs manifests):\n{}",
            differences.join("\n")
        );
    }
}

/// The paths where `chart` and `manifest` differ, each with both values.
fn diff(chart: &Value, manifest: &Value, path: String, out: &mut Vec<String>) {
    match (chart, manifest) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let null = Value::Null;
                let (x, y) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                diff(x, y, format!("{path}.{k}"), out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("  {path}: chart {a} vs manifests {b}")),
        _ => {}
    }
}

/// Bindings name roles and service accounts that exist, and the pods run as one that exists.
fn assert_references_resolve(objects: &Objects) {
    for object in objects.values() {
        let kind = object["kind"].as_str().unwrap();
        if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
            let role = &object["roleRef"];
            let ns = if role["kind"] == "Role" {
                object["metadata"]["namespace"].as_str().unwrap()
            } else {
                ""
            };
            let role_key = format!(
                "{} {ns}/{}",
                role["kind"].as_str().unwrap(),
                role["name"].as_str().unwrap()
            );
            assert!(
                objects.contains_key(&role_key),
                "{} binds missing {role_key}",
                key(object)
            );
            for subject in object["subjects"].as_array().unwrap() {
                let sa = format!(
                    "ServiceAccount {}/{}",
                    subject["namespace"].as_str().unwrap(),
                    subject["name"].as_str().unwrap()
                );
                assert!(
                    objects.contains_key(&sa),
                    "{} binds missing {sa}",
                    key(object)
                );
            }
        }
        if kind == "Deployment" {
            let sa = format!(
                "ServiceAccount {}/{}",
                object["metadata"]["namespace"].as_str().unwrap(),
                object["spec"]["template"]["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap()
            );
            assert!(
                objects.contains_key(&sa),
                "the Deployment runs as missing {sa}"
            );
        }
    }
}

fn deployment(objects: &Objects) -> &Value {
    let mut deployments = objects.values().filter(|o| o["kind"] == "Deployment");
    let d = deployments.next().expect("a Deployment");
    assert!(deployments.next().is_none(), "one Deployment");
    d
}

fn args(objects: &Objects) -> Vec<&str> {
    deployment(objects)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn chart_crds_are_byte_identical_to_manifests_crds() {
    let names = |dir: &Path| -> Vec<String> {
        files(dir, ".yaml")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let generated = repo().join("manifests/crds");
    let copied = chart().join("crds");
    assert_eq!(
        names(&copied),
        names(&generated),
        "charts/etcd-operator/crds/ has other files"
    );
    assert_eq!(names(&generated).len(), 3, "one CRD per kind");
    for name in names(&generated) {
        assert!(
            std::fs::read(copied.join(&name)).unwrap()
                == std::fs::read(generated.join(&name)).unwrap(),
            "charts/etcd-operator/crds/{name} differs; run `cp manifests/crds/*.yaml charts/etcd-operator/crds/`"
        );
    }
}

#[test]
fn chart_passes_helm_lint_strict_with_only_info_findings() {
    for values in [
        json!({}),
        json!({"watchNamespace": "team-a"}),
        json!({"leaderElection": {"enabled": false}}),
        json!({"metrics": {"serviceMonitor": {"enabled": true}}}),
        json!({"metrics": {"enabled": false}}),
    ] {
        let report = lint(&chart(), values.clone());
        assert_eq!(report["errors"], json!([]), "values {values}: {report}");
        let messages = report["messages"].as_array().expect("lint messages");
        for message in messages {
            // "icon is recommended": the project has no icon to point at.
            assert!(
                message["severity"].as_u64() == Some(LINT_INFO),
                "values {values}: helm lint: {message}"
            );
        }
    }
}

#[test]
fn a_broken_template_fails_helm_render_and_lint() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("etcd-operator");
    copy_dir(&chart(), &broken);
    // Go's text/template parser rejects an `if` without a pipeline; a renderer that only
    // looked like Helm might not.
    std::fs::write(
        broken.join("templates/broken.yaml"),
        "{{/* Deliberately broken. */}}\n{{ if }}kind: ConfigMap{{ end }}\n",
    )
    .unwrap();

    let error = try_render(&broken, RELEASE, json!({})).expect_err("render must fail");
    assert!(
        error.contains("templates/broken.yaml") && error.contains("missing value for if"),
        "{error}"
    );
    let report = lint(&broken, json!({}));
    assert!(
        report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["severity"].as_u64() > Some(LINT_INFO)
                && m["error"]
                    .as_str()
                    .unwrap()
                    .contains("missing value for if")),
        "{report}"
    );
    // The intact copy renders, so the failure is the broken template's.
    std::fs::remove_file(broken.join("templates/broken.yaml")).unwrap();
    assert_eq!(
        try_render(&broken, RELEASE, json!({})).unwrap(),
        render(RELEASE, json!({}))
    );
}

#[test]
fn chart_with_default_values_renders_the_manifests() {
    let rendered = render(RELEASE, json!({}));
    assert_same(&rendered, &manifests(), "default values");
    assert_references_resolve(&rendered);
}

#[test]
fn chart_with_watch_namespace_renders_the_namespaced_flavour() {
    let rendered = render(RELEASE, json!({"watchNamespace": "team-a"}));

    let mut expected = manifests();
    expected.retain(|_, o| {
        !matches!(
            o["kind"].as_str(),
            Some("ClusterRole" | "ClusterRoleBinding")
        )
    });
    expected.extend(namespaced_rbac("team-a"));
    let d = expected
        .get_mut(&format!("Deployment {NAMESPACE}/etcd-operator"))
        .unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array_mut()
        .unwrap()
        .push(json!("--namespace=team-a"));

    assert_same(&rendered, &expected, "watchNamespace: team-a");
    assert_references_resolve(&rendered);
}

#[test]
fn namespaced_role_grants_exactly_the_cluster_role_rules() {
    let cluster = &manifests()["ClusterRole /etcd-operator"]["rules"];
    let namespaced = &namespaced_rbac("team-a")["Role team-a/etcd-operator"]["rules"];
    assert_eq!(namespaced, cluster);
}

#[test]
fn chart_without_leader_election_drops_the_lease_role_and_flag() {
    let rendered = render(RELEASE, json!({"leaderElection": {"enabled": false}}));
    assert!(!args(&rendered).contains(&"--leader-elect"));
    assert!(
        !rendered.keys().any(|k| k.contains("leader-election")),
        "{:?}",
        rendered.keys()
    );
    assert!(args(&render(RELEASE, json!({}))).contains(&"--leader-elect"));
}

#[test]
fn member_and_backup_values_become_operator_flags() {
    let default_objects = render(RELEASE, json!({}));
    let defaults = args(&default_objects);
    assert!(
        !defaults.iter().any(|a| a.starts_with("--unhealthy-grace")
            || a.starts_with("--replace-grace")
            || a.starts_with("--backup-memory-budget-mib")
            || *a == "--allow-ambient-credentials"),
        "the defaults are the operator's own: {defaults:?}"
    );
    let rendered = render(
        RELEASE,
        json!({
            "members": {"unhealthyGrace": "90s", "replaceGrace": "30m", "upgradeHealthDeadline": "5m"},
            "backups": {"memoryBudgetMiB": 64, "allowAmbientCredentials": true},
        }),
    );
    let set = args(&rendered);
    for flag in [
        "--unhealthy-grace=90s",
        "--replace-grace=30m",
        "--upgrade-health-deadline=5m",
        "--backup-memory-budget-mib=64",
        "--allow-ambient-credentials",
    ] {
        assert!(set.contains(&flag), "{flag} missing from {set:?}");
    }
}

#[test]
fn other_release_names_prefix_every_object_and_keep_references() {
    let rendered = render("prod", json!({}));
    for (k, object) in &rendered {
        let name = object["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("prod-etcd-operator"), "{k}");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"], "prod",
            "{k}"
        );
    }
    assert_references_resolve(&rendered);
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    assert!(
        !render(RELEASE, json!({}))
            .keys()
            .any(|k| k.starts_with("ServiceMonitor"))
    );
    let rendered = render(
        RELEASE,
        json!({"metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}}}),
    );
    let monitor = &rendered[&format!("ServiceMonitor {NAMESPACE}/etcd-operator")];
    let service = &rendered[&format!("Service {NAMESPACE}/etcd-operator-metrics")];
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][label], value,
            "the Service lacks {label}"
        );
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], endpoint["port"]);

    let without_service = render(
        RELEASE,
        json!({"metrics": {"enabled": false, "serviceMonitor": {"enabled": true}}}),
    );
    assert!(
        !without_service
            .keys()
            .any(|k| k.starts_with("ServiceMonitor") || k.starts_with("Service "))
    );
}

#[test]
fn rbac_is_least_privilege() {
    let mut roles: Vec<(String, Value)> = manifests()
        .into_iter()
        .filter(|(_, o)| matches!(o["kind"].as_str(), Some("ClusterRole" | "Role")))
        .collect();
    roles.extend(
        namespaced_rbac("team-a")
            .into_iter()
            .filter(|(_, o)| o["kind"] == "Role"),
    );
    assert_eq!(
        roles.len(),
        3,
        "ClusterRole, leader-election Role, namespaced Role"
    );
    let allowed = [
        "etcdclusters",
        "etcdbackups",
        "etcdrestores",
        "etcdclusters/status",
        "etcdbackups/status",
        "etcdrestores/status",
        "etcdclusters/finalizers",
        "etcdbackups/finalizers",
        "etcdrestores/finalizers",
        "pods",
        "persistentvolumeclaims",
        "services",
        "poddisruptionbudgets",
        "secrets",
        "certificates",
        "events",
        "leases",
    ];
    for (k, role) in roles {
        for rule in role["rules"].as_array().unwrap() {
            let strings = |field: &str| -> Vec<&str> {
                rule[field].as_array().map_or(Vec::new(), |a| {
                    a.iter().map(|s| s.as_str().unwrap()).collect()
                })
            };
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(!strings(field).contains(&"*"), "{k}: wildcard in {field}");
            }
            for verb in strings("verbs") {
                assert!(
                    !["bind", "escalate", "impersonate", "deletecollection"].contains(&verb),
                    "{k}: {verb}"
                );
            }
            for resource in strings("resources") {
                assert!(allowed.contains(&resource), "{k}: {resource} is not needed");
                if resource == "secrets" {
                    // Read by name (S3 credentials), created and patched by name (each
                    // cluster's certificates); never listed, watched or deleted.
                    assert_eq!(
                        strings("verbs"),
                        ["get", "create", "patch"],
                        "{k}: secrets are only read and applied by name"
                    );
                }
                if resource.ends_with("/finalizers") {
                    assert_eq!(strings("verbs"), ["update"], "{k}: {resource}");
                }
            }
        }
    }
}

#[test]
fn deployment_is_hardened_probed_and_knows_its_namespace() {
    let objects = manifests();
    let pod = &deployment(&objects)["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment(&objects)["spec"]["replicas"], 1);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "{bound}.{resource}"
            );
        }
    }
    assert_eq!(
        container["ports"][0],
        json!({"name": "metrics", "containerPort": 8080, "protocol": "TCP"})
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        args(&objects),
        [
            "run",
            "--log-format=json",
            "--metrics-addr=0.0.0.0:8080",
            "--leader-elect"
        ]
    );
    let pod_namespace = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE")
        .expect("POD_NAMESPACE");
    assert_eq!(
        pod_namespace["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // Restored members' init containers run the operator's own image, read from its own
    // Pod: no OPERATOR_IMAGE to go stale after `kubectl set image`.
    let env = container["env"].as_array().unwrap();
    let pod_name = env
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        env.iter().all(|e| e["name"] != "OPERATOR_IMAGE"),
        "OPERATOR_IMAGE goes stale after kubectl set image"
    );
    assert_eq!(container["name"], "operator");
}

#[test]
fn kubectl_apply_recursive_creates_the_namespace_before_its_objects() {
    let docs = kubectl_apply_order(&repo().join("manifests"));
    let namespace_at = docs
        .iter()
        .position(|(_, d)| d["kind"] == "Namespace" && d["metadata"]["name"] == NAMESPACE)
        .expect("manifests/ creates the namespace");
    for (i, (path, doc)) in docs.iter().enumerate() {
        let ns = doc["metadata"]["namespace"].as_str();
        assert!(
            ns.is_none() || ns == Some(NAMESPACE),
            "{}: {} would need its namespace",
            path.display(),
            key(doc)
        );
        if ns.is_some() {
            assert!(
                i > namespace_at,
                "{}: applied before namespace.yaml",
                path.display()
            );
        }
        assert!(
            !doc.to_string().contains("WATCH_NAMESPACE"),
            "{}: a placeholder got applied",
            path.display()
        );
    }
}

#[test]
fn every_hand_written_yaml_file_starts_with_a_comment() {
    let mut checked = 0;
    let mut stack = vec![repo().join("manifests"), chart()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // Generated CRDs, and their copies, are compared byte for byte instead.
                if !path.ends_with("crds") {
                    stack.push(path);
                }
                continue;
            }
            let name = path.to_string_lossy();
            let first = read(&path).lines().next().unwrap_or_default().to_string();
            if name.contains("/templates/") {
                assert!(
                    first.starts_with("{{/*"),
                    "{name}: start with a template comment"
                );
            } else if name.ends_with(".yaml") || name.ends_with(".yaml.in") {
                assert!(first.starts_with('#'), "{name}: start with a comment");
            } else {
                continue;
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "checked only {checked} files");
}

#[test]
fn chart_and_dockerfile_match_the_crate() {
    let chart_yaml: Value = serde_norway::from_str(&read(&chart().join("Chart.yaml"))).unwrap();
    assert_eq!(chart_yaml["apiVersion"], "v2");
    assert_eq!(chart_yaml["name"], "etcd-operator");
    assert_eq!(
        chart_yaml["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion"
    );

    let dockerfile = read(&repo().join("Dockerfile"));
    assert!(dockerfile.contains("--locked --bin etcd-operator"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/etcd-operator\"]"));
    let builder = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("a rust builder stage");
    let version = |v: &str| -> Vec<u32> {
        v.split(['.', '-'])
            .take(2)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let cargo = toml_rust_version(&read(&repo().join("Cargo.toml")));
    assert!(
        version(builder) >= version(&cargo),
        "the Dockerfile builds with rust {builder}, older than rust-version {cargo}"
    );
}

/// `rust-version` from Cargo.toml (no TOML parser among the dependencies).
fn toml_rust_version(cargo_toml: &str) -> String {
    let line = cargo_toml
        .lines()
        .find(|l| l.starts_with("rust-version"))
        .expect("Cargo.toml sets rust-version");
    line.split('"').nth(1).unwrap().to_string()
}
