//! Reads the YAML the local runtime is given: files (several documents each) and
//! directories of them, into typed resources. What the API server would refuse is an error
//! here too, naming the document, so nothing of it is acted on: kinds it does not manage (a
//! typo in `kind:`), fields its kind does not have (a typo in a field name, which would
//! otherwise be dropped for its default), and names that are not Kubernetes object names
//! (they become status file names: `../x` would be written outside the state dir).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use thiserror::Error;

use crate::api::unknown_fields::unknown_fields;
use crate::api::validate::{self, Report};
use crate::api::{API_VERSION, EtcdBackup, EtcdCluster, EtcdRestore};

/// Namespace given to documents that name none, as `kubectl apply` would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why the given YAML could not be read.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not valid YAML")]
    Yaml {
        path: PathBuf,
        index: usize,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path}: document {index} ({kind}) does not match its schema at {field}")]
    Schema {
        path: PathBuf,
        index: usize,
        kind: String,
        /// Where in the document, e.g. `spec.size`.
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: document {index} ({kind}) has fields its kind does not: {}", fields.join(", "))]
    UnknownFields {
        path: PathBuf,
        index: usize,
        kind: String,
        fields: Vec<String>,
    },
    #[error("{path}: document {index} ({kind}): {message}")]
    InvalidMetadata {
        path: PathBuf,
        index: usize,
        kind: String,
        message: String,
    },
    #[error(
        "{path}: document {index} has kind {kind:?} with apiVersion {api_version:?}; expected EtcdCluster, EtcdBackup or EtcdRestore ({API_VERSION}) or v1 Secret"
    )]
    UnknownKind {
        path: PathBuf,
        index: usize,
        kind: String,
        api_version: String,
    },
}

/// Every resource read from the given paths, in file order.
#[derive(Debug, Default, Clone)]
pub struct Documents {
    pub clusters: Vec<EtcdCluster>,
    pub backups: Vec<EtcdBackup>,
    pub restores: Vec<EtcdRestore>,
    pub secrets: Vec<Secret>,
}

/// The files a path stands for: itself, or the `*.yaml`/`*.yml` files of a directory
/// (sorted, not recursive).
pub fn files_of(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every document of every path.
pub fn load(paths: &[PathBuf]) -> Result<Documents, Error> {
    let mut docs = Documents::default();
    for p in paths {
        for f in files_of(p)? {
            let text = std::fs::read_to_string(&f).map_err(|source| Error::Read {
                path: f.clone(),
                source,
            })?;
            parse_into(&mut docs, &f, &text)?;
        }
    }
    Ok(docs)
}

/// Parses one file's text (several documents) into `docs`.
pub fn parse_into(docs: &mut Documents, path: &Path, text: &str) -> Result<(), Error> {
    for (index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(de).map_err(|source| Error::Yaml {
            path: path.to_path_buf(),
            index,
            source,
        })?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
        let schema_err = |e: serde_path_to_error::Error<serde_json::Error>| Error::Schema {
            path: path.to_path_buf(),
            index,
            kind: kind.clone(),
            field: e.path().to_string(),
            source: e.into_inner(),
        };
        if api_version == API_VERSION
            && matches!(kind.as_str(), "EtcdCluster" | "EtcdBackup" | "EtcdRestore")
        {
            check_document(path, index, &kind, &value)?;
        }
        match (kind.as_str(), api_version.as_str()) {
            ("EtcdCluster", API_VERSION) => {
                let mut c: EtcdCluster =
                    serde_path_to_error::deserialize(value).map_err(schema_err)?;
                default_namespace(&mut c.metadata);
                docs.clusters.push(c);
            }
            ("EtcdBackup", API_VERSION) => {
                let mut b: EtcdBackup =
                    serde_path_to_error::deserialize(value).map_err(schema_err)?;
                default_namespace(&mut b.metadata);
                docs.backups.push(b);
            }
            ("EtcdRestore", API_VERSION) => {
                let mut r: EtcdRestore =
                    serde_path_to_error::deserialize(value).map_err(schema_err)?;
                default_namespace(&mut r.metadata);
                docs.restores.push(r);
            }
            ("Secret", "v1") => {
                let mut s: Secret = serde_path_to_error::deserialize(value).map_err(schema_err)?;
                default_namespace(&mut s.metadata);
                docs.secrets.push(s);
            }
            _ => {
                return Err(Error::UnknownKind {
                    path: path.to_path_buf(),
                    index,
                    kind,
                    api_version,
                });
            }
        }
    }
    Ok(())
}

/// What the API server refuses before any controller sees an object: fields the kind does
/// not have, a missing or malformed name or namespace.
fn check_document(
    path: &Path,
    index: usize,
    kind: &str,
    value: &serde_json::Value,
) -> Result<(), Error> {
    let fields = unknown_fields(kind, value);
    if !fields.is_empty() {
        return Err(Error::UnknownFields {
            path: path.to_path_buf(),
            index,
            kind: kind.to_string(),
            fields,
        });
    }
    let mut report = Report::default();
    match value.pointer("/metadata/name").and_then(|n| n.as_str()) {
        Some(name) => validate::check_subdomain(&mut report, "metadata.name", name),
        None => validate::check_subdomain(&mut report, "metadata.name", ""),
    }
    if let Some(ns) = value.pointer("/metadata/namespace") {
        let ns = ns.as_str().unwrap_or_default();
        validate::check_subdomain(&mut report, "metadata.namespace", ns);
        if ns.contains('.') || ns.len() > 63 {
            report.errors.push(validate::Problem {
                field: "metadata.namespace".into(),
                message: format!(
                    "{ns:?} is not a namespace (at most 63 lowercase letters, digits and '-')"
                ),
            });
        }
    }
    if report.is_valid() {
        Ok(())
    } else {
        Err(Error::InvalidMetadata {
            path: path.to_path_buf(),
            index,
            kind: kind.to_string(),
            message: report.errors_message(),
        })
    }
}

fn default_namespace(meta: &mut kube::api::ObjectMeta) {
    if meta.namespace.is_none() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_kinds_from_one_file_and_defaults_namespace() {
        let text = "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.5.16}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: x}\nstringData: {accessKeyId: k}\n---\n";
        let mut d = Documents::default();
        parse_into(&mut d, Path::new("f.yaml"), text).unwrap();
        assert_eq!(d.clusters.len(), 1);
        assert_eq!(d.clusters[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(d.secrets[0].metadata.namespace.as_deref(), Some("x"));
    }

    #[test]
    fn unknown_kind_is_an_error_naming_the_document() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let mut d = Documents::default();
        let e = parse_into(&mut d, Path::new("f.yaml"), text).unwrap_err();
        assert!(matches!(e, Error::UnknownKind { index: 0, .. }), "{e}");
    }

    #[test]
    fn misspelt_field_is_an_error_naming_it() {
        let text = "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: 3, version: 3.5.16, pasued: true}\n";
        let mut d = Documents::default();
        let e = parse_into(&mut d, Path::new("f.yaml"), text).unwrap_err();
        assert!(e.to_string().contains("spec.pasued"), "{e}");
        assert!(d.clusters.is_empty());
    }

    #[test]
    fn names_that_are_no_object_names_are_errors() {
        for meta in [
            "{name: ../../escape}",
            "{name: a/b}",
            "{name: ''}",
            "{}",
            "{name: a, namespace: ../x}",
            "{name: a, namespace: a.b}",
        ] {
            let text = format!(
                "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {meta}\nspec: {{size: 3, version: 3.5.16}}\n"
            );
            let mut d = Documents::default();
            let e = parse_into(&mut d, Path::new("f.yaml"), &text).unwrap_err();
            assert!(matches!(e, Error::InvalidMetadata { .. }), "{meta}: {e}");
        }
    }

    #[test]
    fn documents_the_api_server_would_refuse_are_errors_naming_the_field() {
        for case in crate::testing::hostile::load_cases("http://127.0.0.1:3900") {
            let text = serde_norway::to_string(&case.document).unwrap();
            let mut d = Documents::default();
            let e = parse_into(&mut d, Path::new("f.yaml"), &text).expect_err(case.what);
            assert!(
                format!("{e} {}", crate::error_chain::error_chain(&e)).contains(case.names),
                "{}: {e}",
                case.what
            );
            assert!(d.clusters.is_empty() && d.backups.is_empty() && d.restores.is_empty());
        }
    }

    #[test]
    fn schema_mismatch_is_an_error() {
        let text = "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: a}\nspec: {size: three, version: 3.5.16}\n";
        let mut d = Documents::default();
        let e = parse_into(&mut d, Path::new("f.yaml"), text).unwrap_err();
        assert!(matches!(e, Error::Schema { .. }), "{e}");
    }
}
