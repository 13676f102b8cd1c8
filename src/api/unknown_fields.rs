//! The fields of a document its kind does not have, found by walking the document along the
//! kind's own CRD schema (the one `manifests/crds/` holds), as the Kubernetes API server's
//! strict field validation does. The local runtime has no API server, so without this a
//! misspelt field (`endpiont:`, `sise:`) would be silently dropped and its default used.
//! What the local loader does with the answer is its own business.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::crd;

/// The `openAPIV3Schema` of every kind this operator serves, by kind.
fn schemas() -> &'static HashMap<String, Value> {
    static SCHEMAS: OnceLock<HashMap<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        crd::all()
            .into_iter()
            .filter_map(|c| {
                let kind = c.spec.names.kind.clone();
                let version = c.spec.versions.into_iter().next()?;
                let schema = version.schema?.open_api_v3_schema?;
                Some((kind, serde_json::to_value(schema).ok()?))
            })
            .collect()
    })
}

/// The JSON paths (`spec.etcd.extraArgz`) of the fields under `spec` of a `kind` document
/// that its schema does not name. Empty for kinds without a schema here.
pub fn unknown_fields(kind: &str, document: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let (Some(schema), Some(spec)) = (schemas().get(kind), document.get("spec"))
        && let Some(spec_schema) = schema.pointer("/properties/spec")
    {
        walk(spec_schema, spec, "spec", &mut found);
    }
    found
}

fn walk(schema: &Value, value: &Value, at: &str, found: &mut Vec<String>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let path = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(s, child, &path, found),
                    // Only an object schema with named properties can have unknown fields
                    // (one without, e.g. a free-form map, takes any key).
                    (None, None) if properties.is_some() => found.push(path),
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter().enumerate() {
                    walk(s, child, &format!("{at}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn misspelt_fields_are_named_at_every_depth() {
        let doc = json!({
            "spec": {
                "size": 3, "version": "3.5.16", "sise": 5,
                "etcd": {"extraArgs": {"max-txn-ops": "256"}, "quotaBackendByte": 1},
                "pod": {"tolerations": [{"key": "k", "operatr": "Exists"}]}
            }
        });
        assert_eq!(
            unknown_fields("EtcdCluster", &doc),
            vec![
                "spec.etcd.quotaBackendByte",
                "spec.pod.tolerations[0].operatr",
                "spec.sise",
            ]
        );
    }

    #[test]
    fn flattened_connection_fields_are_known_and_typos_are_not() {
        let doc = json!({"spec": {
            "clusterName": "a",
            "destination": {"s3": {"bucket": "b", "endpoint": "http://x", "endpiont": "http://y"}}
        }});
        assert_eq!(
            unknown_fields("EtcdBackup", &doc),
            vec!["spec.destination.s3.endpiont"]
        );
    }

    #[test]
    fn free_form_maps_take_any_key() {
        let doc = json!({"spec": {"size": 3, "version": "3.5.16",
            "pod": {"labels": {"anything": "x"}},
            "resources": {"limits": {"memory": "1Gi"}}}});
        assert!(unknown_fields("EtcdCluster", &doc).is_empty());
    }
}
