//! The API as users meet it: generated CRDs match `manifests/crds/`, the examples parse and
//! validate, and the classic etcd operator manifest works with only the apiVersion changed.

use std::path::Path;

use etcd_operator::api::{EtcdBackup, EtcdCluster, EtcdRestore, crd, validate};
use kube::ResourceExt;
use serde::Deserialize;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn manifests_crds_match_the_types() {
    for c in crd::all() {
        let path = repo().join("manifests/crds").join(crd::file_name(&c));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `etcd-operator crds --out-dir manifests/crds`",
                path.display()
            )
        });
        assert_eq!(
            on_disk,
            crd::to_yaml(&c),
            "{} differs from the types; run `cargo run -- crds --out-dir manifests/crds`",
            path.display()
        );
    }
}

#[test]
fn crds_have_status_subresource_shortnames_and_printer_columns() {
    let all = crd::all();
    let names: Vec<_> = all.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(names, ["EtcdCluster", "EtcdBackup", "EtcdRestore"]);
    for c in &all {
        assert_eq!(c.spec.group, "etcd.operator.dev");
        assert_eq!(c.spec.scope, "Namespaced");
        let v = &c.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
    let cluster = &all[0];
    assert_eq!(
        cluster.spec.names.short_names.as_deref(),
        Some(&["etcd".to_string()][..])
    );
    let cols: Vec<_> = cluster.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Size", "Ready", "Version", "Phase", "Age"]);
}

#[test]
fn crd_schema_bounds_size_and_checks_version_format() {
    let yaml = crd::to_yaml(&crd::all()[0]);
    let v: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    let spec = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["size"]["minimum"], 1.0);
    assert_eq!(spec["properties"]["size"]["maximum"], 9.0);
    assert!(spec["properties"]["version"]["pattern"].is_string());
    let required: Vec<_> = spec["required"].as_array().unwrap().iter().collect();
    assert_eq!(required, ["size", "version"]);
}

#[test]
fn classic_manifest_parses_with_only_the_api_version_changed() {
    let doc = "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: example}\nspec: {size: 3, version: 3.5.16}\n";
    let c: EtcdCluster = serde_norway::from_str(doc).unwrap();
    assert_eq!(c.spec.size, 3);
    assert_eq!(c.spec.version, "3.5.16");
    assert!(validate::cluster(&c.name_any(), &c.spec).is_valid());
}

/// Reads every YAML document of a file as (kind, value).
fn docs(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn examples_parse_and_validate() {
    let mut kinds = Vec::new();
    for name in ["cluster.yaml", "backup.yaml", "restore.yaml"] {
        for v in docs(&repo().join("example").join(name)) {
            let kind = v["kind"].as_str().unwrap().to_string();
            match kind.as_str() {
                "EtcdCluster" => {
                    let c: EtcdCluster = serde_json::from_value(v).unwrap();
                    let r = validate::cluster(&c.name_any(), &c.spec);
                    assert!(r.is_valid() && r.warnings.is_empty(), "{r:?}");
                    assert_eq!(c.spec.size, 3);
                }
                "EtcdBackup" => {
                    let b: EtcdBackup = serde_json::from_value(v).unwrap();
                    assert!(validate::backup(&b.name_any(), &b.spec).is_valid());
                    assert!(b.spec.schedule.is_some());
                }
                "EtcdRestore" => {
                    let r: EtcdRestore = serde_json::from_value(v).unwrap();
                    assert!(validate::restore(&r.name_any(), &r.spec).is_valid());
                }
                "Secret" => {}
                other => panic!("unexpected kind {other}"),
            }
            kinds.push(kind);
        }
    }
    assert_eq!(
        kinds,
        ["EtcdCluster", "Secret", "EtcdBackup", "EtcdRestore"]
    );
}
