//! The CustomResourceDefinitions generated from the kinds, as objects and as YAML; what
//! `etcd-operator crds` prints and `manifests/crds/` holds.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{EtcdBackup, EtcdCluster, EtcdRestore};

/// Every CRD this operator serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![EtcdCluster::crd(), EtcdBackup::crd(), EtcdRestore::crd()]
}

/// A CRD as one YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    // Serializing a derived CRD cannot fail: it is plain data without maps keyed by non-strings.
    serde_norway::to_string(crd).expect("a CRD serializes to YAML")
}

/// The file name a CRD is kept under in `manifests/crds/`: `<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|c| format!("---\n{}", to_yaml(c)))
        .collect()
}
