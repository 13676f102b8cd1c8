//! Bad input tried as a hostile user would (issue 13, part 4): for every field of the three
//! kinds that reaches a process argument, an object name, a path or S3, values that are
//! empty, huge, unicode, path separators, flags inside values, negative or overflowing
//! numbers (`spec.maintenance` and the backup's `compression` included). Two tables:
//! - [`spec_cases`]: documents that load (they match the schema) and that validation must
//!   refuse with a `SpecValid=False` condition naming [`SpecCase::field`];
//! - [`load_cases`]: documents the API server itself would refuse (unknown fields, names
//!   that are no object names, numbers beyond the schema's types), which the local loader
//!   refuses with an error naming [`LoadCase::names`].
//!
//! The validation unit test and the local runtime's end-to-end test read the same tables.

use serde_json::{Value, json};

/// Which kind a case is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Backup,
    Restore,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cluster => "EtcdCluster",
            Kind::Backup => "EtcdBackup",
            Kind::Restore => "EtcdRestore",
        }
    }

    /// A valid document of this kind named `name`, its S3 endpoint `endpoint`.
    pub fn base(self, name: &str, endpoint: &str) -> Value {
        let spec = match self {
            Kind::Cluster => json!({"size": 3, "version": "3.5.16"}),
            Kind::Backup => json!({
                "clusterName": "example",
                "destination": {"s3": {
                    "bucket": "etcd-backups", "prefix": "prod", "endpoint": endpoint,
                    "region": "garage", "forcePathStyle": true, "credentialsSecret": "s3"
                }},
                "retention": {"keepLast": 3}
            }),
            Kind::Restore => json!({
                "source": {"s3": {
                    "bucket": "etcd-backups", "key": "prod/example.db", "endpoint": endpoint,
                    "region": "garage", "forcePathStyle": true, "credentialsSecret": "s3"
                }},
                "cluster": {"name": "restored", "spec": {"size": 1, "version": "3.5.16"}}
            }),
        };
        json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": self.name(),
            "metadata": {"name": name},
            "spec": spec,
        })
    }
}

/// One document validation must refuse.
#[derive(Debug, Clone)]
pub struct SpecCase {
    pub kind: Kind,
    /// JSON pointer of the value set (`/spec/etcd/extraArgs/force-new-cluster`); a
    /// `/metadata/name` case replaces the document's name.
    pub at: &'static str,
    pub value: Value,
    /// The field the condition must name.
    pub field: &'static str,
}

impl SpecCase {
    /// The base document named `name` with this case's value set.
    pub fn document(&self, name: &str, endpoint: &str) -> Value {
        let mut doc = self.kind.base(name, endpoint);
        set(&mut doc, self.at, self.value.clone());
        doc
    }

    /// The document's name: `name` unless the case sets the name.
    pub fn name_in(&self, doc: &Value) -> String {
        doc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

/// Sets the value at JSON pointer `at`, creating objects on the way.
pub fn set(doc: &mut Value, at: &str, value: Value) {
    let mut cur = doc;
    let parts: Vec<String> = at
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = cur.as_object_mut().expect("an object");
        if i + 1 == parts.len() {
            map.insert(part.clone(), value);
            return;
        }
        cur = map.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

fn huge(n: usize) -> String {
    "x".repeat(n)
}

fn case(kind: Kind, at: &'static str, value: Value, field: &'static str) -> SpecCase {
    SpecCase {
        kind,
        at,
        value,
        field,
    }
}

/// Every spec field that reaches an argument, a name, a path or S3, with the values that
/// must be refused.
pub fn spec_cases() -> Vec<SpecCase> {
    use Kind::*;
    let mut c = Vec::new();
    // EtcdCluster: the name becomes member names, paths and Service names.
    for v in [
        "a.b",
        "1abc",
        "abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdefgh",
    ] {
        c.push(case(Cluster, "/metadata/name", json!(v), "metadata.name"));
    }
    for v in [
        json!(0),
        json!(-1),
        json!(10),
        json!(i32::MAX),
        json!(i32::MIN),
    ] {
        c.push(case(Cluster, "/spec/size", v, "spec.size"));
    }
    // The version picks the binary (<bin dir>/<version>/etcd) and the image tag.
    for v in [
        "",
        "3.5",
        "v3.5.16",
        "3.5.16 --force-new-cluster",
        "3.5.16+evil",
        "../../../bin/sh",
        "3.7.0",
        "3.5.٣",
        &huge(10_000),
    ] {
        c.push(case(Cluster, "/spec/version", json!(v), "spec.version"));
    }
    for v in [
        "",
        "Etcd",
        "gcr.io/etcd:v3",
        "repo@sha256:abc",
        "a b",
        "../x",
        "/etcd",
        "ëtcd",
        &huge(300),
    ] {
        c.push(case(
            Cluster,
            "/spec/repository",
            json!(v),
            "spec.repository",
        ));
    }
    c.push(case(Cluster, "/spec/storage", json!({}), "spec.storage"));
    c.push(case(
        Cluster,
        "/spec/storage",
        json!({"emptyDir": {}, "pvc": {"size": "1Gi"}}),
        "spec.storage",
    ));
    for v in ["-1Gi", "8GiB", "1e999", "eight", "99999999999Ei", ""] {
        c.push(case(
            Cluster,
            "/spec/storage",
            json!({"emptyDir": {"sizeLimit": v}}),
            "spec.storage.emptyDir.sizeLimit",
        ));
        c.push(case(
            Cluster,
            "/spec/storage",
            json!({"pvc": {"size": v}}),
            "spec.storage.pvc.size",
        ));
    }
    c.push(case(
        Cluster,
        "/spec/storage",
        json!({"pvc": {"size": "0"}}),
        "spec.storage.pvc.size",
    ));
    for v in ["", "../x", "Fast", "fast ssd", &huge(254)] {
        c.push(case(
            Cluster,
            "/spec/storage",
            json!({"pvc": {"size": "1Gi", "storageClassName": v}}),
            "spec.storage.pvc.storageClassName",
        ));
    }
    c.push(case(
        Cluster,
        "/spec/pod/labels",
        json!({"a b": "x"}),
        "spec.pod.labels.a b",
    ));
    c.push(case(
        Cluster,
        "/spec/pod/labels",
        json!({"app": huge(64)}),
        "spec.pod.labels.app",
    ));
    c.push(case(
        Cluster,
        "/spec/pod/nodeSelector",
        json!({"zöne": "a"}),
        "spec.pod.nodeSelector.zöne",
    ));
    c.push(case(
        Cluster,
        "/spec/pod/annotations",
        json!({"../x": "y"}),
        "spec.pod.annotations.../x",
    ));
    c.push(case(
        Cluster,
        "/spec/pod/priorityClassName",
        json!("High"),
        "spec.pod.priorityClassName",
    ));
    for v in [json!(-1), json!(i64::MIN)] {
        c.push(case(
            Cluster,
            "/spec/etcd/quotaBackendBytes",
            v,
            "spec.etcd.quotaBackendBytes",
        ));
    }
    for v in [json!(0), json!(-5), json!(i64::MIN)] {
        c.push(case(
            Cluster,
            "/spec/etcd/snapshotCount",
            v,
            "spec.etcd.snapshotCount",
        ));
    }
    for v in [json!(0), json!(-1), json!(i32::MAX)] {
        c.push(case(
            Cluster,
            "/spec/etcd/heartbeatIntervalMs",
            v,
            "spec.etcd.heartbeatIntervalMs",
        ));
    }
    for v in [json!(-1), json!(i32::MAX), json!(200)] {
        c.push(case(
            Cluster,
            "/spec/etcd/electionTimeoutMs",
            v,
            "spec.etcd.electionTimeoutMs",
        ));
    }
    for v in ["1h --force-new-cluster", "", "-1", "1 h", &huge(100)] {
        c.push(case(
            Cluster,
            "/spec/etcd/autoCompactionRetention",
            json!(v),
            "spec.etcd.autoCompactionRetention",
        ));
    }
    c.push(case(
        Cluster,
        "/spec/etcd",
        json!({"autoCompactionMode": "revision", "autoCompactionRetention": "1h"}),
        "spec.etcd.autoCompactionRetention",
    ));
    // extraArgs: flags that break durability or safety, flags the operator owns, flags the
    // spec has a field for, and malformed names and values.
    for (flag, field) in [
        ("force-new-cluster", "spec.etcd.extraArgs.force-new-cluster"),
        (
            "--force-new-cluster",
            "spec.etcd.extraArgs.--force-new-cluster",
        ),
        ("unsafe-no-fsync", "spec.etcd.extraArgs.unsafe-no-fsync"),
        (
            "strict-reconfig-check",
            "spec.etcd.extraArgs.strict-reconfig-check",
        ),
        ("config-file", "spec.etcd.extraArgs.config-file"),
        (
            "listen-client-urls",
            "spec.etcd.extraArgs.listen-client-urls",
        ),
        (
            "listen-client-http-urls",
            "spec.etcd.extraArgs.listen-client-http-urls",
        ),
        (
            "listen-metrics-urls",
            "spec.etcd.extraArgs.listen-metrics-urls",
        ),
        ("listen-peer-urls", "spec.etcd.extraArgs.listen-peer-urls"),
        (
            "advertise-client-urls",
            "spec.etcd.extraArgs.advertise-client-urls",
        ),
        (
            "initial-advertise-peer-urls",
            "spec.etcd.extraArgs.initial-advertise-peer-urls",
        ),
        ("initial-cluster", "spec.etcd.extraArgs.initial-cluster"),
        (
            "initial-cluster-state",
            "spec.etcd.extraArgs.initial-cluster-state",
        ),
        (
            "initial-cluster-token",
            "spec.etcd.extraArgs.initial-cluster-token",
        ),
        ("data-dir", "spec.etcd.extraArgs.data-dir"),
        ("wal-dir", "spec.etcd.extraArgs.wal-dir"),
        ("name", "spec.etcd.extraArgs.name"),
        ("log-outputs", "spec.etcd.extraArgs.log-outputs"),
        ("log-output", "spec.etcd.extraArgs.log-output"),
        ("discovery-token", "spec.etcd.extraArgs.discovery-token"),
        ("proxy", "spec.etcd.extraArgs.proxy"),
        (
            "quota-backend-bytes",
            "spec.etcd.extraArgs.quota-backend-bytes",
        ),
        ("election-timeout", "spec.etcd.extraArgs.election-timeout"),
        ("Max-Txn-Ops", "spec.etcd.extraArgs.Max-Txn-Ops"),
        ("max txn ops", "spec.etcd.extraArgs.max txn ops"),
        ("", "spec.etcd.extraArgs."),
        ("--", "spec.etcd.extraArgs.--"),
        ("max-tẋn-ops", "spec.etcd.extraArgs.max-tẋn-ops"),
        (
            "max-txn-ops=1 --force-new-cluster",
            "spec.etcd.extraArgs.max-txn-ops=1 --force-new-cluster",
        ),
    ] {
        let mut args = serde_json::Map::new();
        args.insert(flag.to_string(), json!("true"));
        c.push(case(
            Cluster,
            "/spec/etcd/extraArgs",
            Value::Object(args),
            field,
        ));
    }
    for v in ["256\n--force-new-cluster", "256\0", &huge(2000)] {
        c.push(case(
            Cluster,
            "/spec/etcd/extraArgs",
            json!({ "max-txn-ops": v }),
            "spec.etcd.extraArgs.max-txn-ops",
        ));
    }

    for v in ["", "a\nb", &huge(64)] {
        c.push(case(
            Cluster,
            "/spec/tls",
            json!({ "rotate": v }),
            "spec.tls.rotate",
        ));
    }
    // spec.maintenance: the schedule reaches the cron parser, the thresholds the decision
    // which member to defragment.
    for v in [
        "",
        "every day",
        "61 * * * *",
        "0 3 * * * --force-new-cluster",
        "* * * * * * * *",
        "@sometimes",
        "0 3 * * *\n0 4 * * *",
        "٣ * * * *",
        &huge(5000),
    ] {
        c.push(case(
            Cluster,
            "/spec/maintenance/defrag/schedule",
            json!(v),
            "spec.maintenance.defrag.schedule",
        ));
    }
    for v in [
        "",
        "-1Gi",
        "64MiB",
        "1e999",
        "sixty",
        "99999999999Ei",
        "64 Mi",
        "../x",
        &huge(300),
    ] {
        c.push(case(
            Cluster,
            "/spec/maintenance/defrag",
            json!({"schedule": "0 3 * * *", "minFragmentedBytes": v}),
            "spec.maintenance.defrag.minFragmentedBytes",
        ));
    }
    for v in [
        json!(-0.1),
        json!(1.5),
        json!(-1),
        json!(1e300),
        json!(f64::MAX),
    ] {
        c.push(case(
            Cluster,
            "/spec/maintenance/defrag",
            json!({"schedule": "0 3 * * *", "minFragmentedRatio": v}),
            "spec.maintenance.defrag.minFragmentedRatio",
        ));
    }

    // EtcdBackup: the names become S3 keys, the S3 fields reach the SDK.
    for v in ["", "../x", "A", &huge(100), "clüster"] {
        c.push(case(
            Backup,
            "/spec/clusterName",
            json!(v),
            "spec.clusterName",
        ));
    }
    for v in [
        "",
        "ab",
        &huge(64),
        "Bucket",
        "-bucket",
        "bucket-",
        "a..b",
        "192.168.1.1",
        "b/c",
        "bü",
        "b\n",
    ] {
        c.push(case(
            Backup,
            "/spec/destination/s3/bucket",
            json!(v),
            "spec.destination.s3.bucket",
        ));
    }
    for v in [
        "../x",
        "a/../../b",
        "a//b",
        "./a",
        "a\nb",
        "a\0b",
        &huge(600),
    ] {
        c.push(case(
            Backup,
            "/spec/destination/s3/prefix",
            json!(v),
            "spec.destination.s3.prefix",
        ));
    }
    for v in [
        "",
        "ftp://x",
        "http://",
        "http://user:secret@127.0.0.1:3900",
        "javascript:alert(1)",
        "http://h ost",
        "127.0.0.1:3900",
    ] {
        c.push(case(
            Backup,
            "/spec/destination/s3/endpoint",
            json!(v),
            "spec.destination.s3.endpoint",
        ));
    }
    for v in ["", "us east", "rég", "r\n", &huge(65)] {
        c.push(case(
            Backup,
            "/spec/destination/s3/region",
            json!(v),
            "spec.destination.s3.region",
        ));
    }
    for v in ["", "../s", "S3", &huge(254)] {
        c.push(case(
            Backup,
            "/spec/destination/s3/credentialsSecret",
            json!(v),
            "spec.destination.s3.credentialsSecret",
        ));
    }
    for v in [json!(0), json!(-1), json!(4), json!(5121), json!(i32::MAX)] {
        c.push(case(
            Backup,
            "/spec/destination/s3/partSizeMiB",
            v,
            "spec.destination.s3.partSizeMiB",
        ));
    }
    for v in [
        "",
        "every day",
        "61 * * * *",
        "* * * * * * * *",
        &huge(5000),
    ] {
        c.push(case(Backup, "/spec/schedule", json!(v), "spec.schedule"));
    }
    c.push(case(Backup, "/spec/retention", json!({}), "spec.retention"));
    for v in [json!(0), json!(-1), json!(i32::MIN)] {
        c.push(case(
            Backup,
            "/spec/retention/keepLast",
            v,
            "spec.retention.keepLast",
        ));
    }
    for v in ["", "7 days", "-1d", "99999999999999999999d", "1d1h", "7"] {
        c.push(case(
            Backup,
            "/spec/retention/maxAge",
            json!(v),
            "spec.retention.maxAge",
        ));
    }

    // EtcdRestore: the source reaches S3, the target becomes a cluster.
    c.push(case(Restore, "/spec/source", json!({}), "spec.source"));
    c.push(case(
        Restore,
        "/spec/source/backupName",
        json!("nightly"),
        "spec.source",
    ));
    for v in ["", "B", "a..b"] {
        c.push(case(
            Restore,
            "/spec/source/s3/bucket",
            json!(v),
            "spec.source.s3.bucket",
        ));
    }
    for v in ["", "k\n", "k\0", &huge(1025)] {
        c.push(case(
            Restore,
            "/spec/source/s3/key",
            json!(v),
            "spec.source.s3.key",
        ));
    }
    c.push(case(
        Restore,
        "/spec/source/s3/endpoint",
        json!("file:///etc/passwd"),
        "spec.source.s3.endpoint",
    ));
    c.push(case(
        Restore,
        "/spec/source/s3/region",
        json!("a b"),
        "spec.source.s3.region",
    ));
    c.push(case(
        Restore,
        "/spec/source/s3/credentialsSecret",
        json!("../s"),
        "spec.source.s3.credentialsSecret",
    ));
    for v in ["", "ABC", &"g".repeat(64), &"a".repeat(65), &"A".repeat(64)] {
        c.push(case(
            Restore,
            "/spec/source/sha256",
            json!(v),
            "spec.source.sha256",
        ));
    }
    for v in ["", "../x", "Restored", &huge(51)] {
        c.push(case(
            Restore,
            "/spec/cluster/name",
            json!(v),
            "spec.cluster.name",
        ));
    }
    c.push(case(
        Restore,
        "/spec/cluster/spec/size",
        json!(0),
        "spec.cluster.spec.size",
    ));
    c.push(case(
        Restore,
        "/spec/cluster/spec/version",
        json!("3.5.16+x"),
        "spec.cluster.spec.version",
    ));
    c.push(case(
        Restore,
        "/spec/cluster/spec/etcd/extraArgs",
        json!({"force-new-cluster": "true"}),
        "spec.cluster.spec.etcd.extraArgs.force-new-cluster",
    ));
    c.push(case(
        Restore,
        "/spec/cluster/spec/maintenance/defrag/schedule",
        json!("every day"),
        "spec.cluster.spec.maintenance.defrag.schedule",
    ));
    c.push(case(
        Restore,
        "/spec/cluster/spec/maintenance/defrag",
        json!({"schedule": "@daily", "minFragmentedRatio": 2}),
        "spec.cluster.spec.maintenance.defrag.minFragmentedRatio",
    ));
    c
}

/// Values that look odd but are fine, so the checks above do not refuse too much.
pub fn accepted_cases() -> Vec<SpecCase> {
    use Kind::*;
    let ok = |kind, at, value| case(kind, at, value, "");
    vec![
        ok(
            Cluster,
            "/spec/repository",
            json!("quay.io:443/coreos/etcd"),
        ),
        ok(
            Cluster,
            "/spec/repository",
            json!("registry.local/team_a/etcd-v3"),
        ),
        ok(
            Cluster,
            "/spec/etcd/extraArgs",
            json!({"max-txn-ops": "256", "--log-level": "warn"}),
        ),
        ok(
            Cluster,
            "/spec/etcd/autoCompactionRetention",
            json!("1h30m"),
        ),
        ok(Cluster, "/spec/etcd/autoCompactionRetention", json!("5")),
        ok(Cluster, "/spec/etcd/autoCompactionRetention", json!("1.5h")),
        ok(
            Cluster,
            "/spec/pod/labels",
            json!({"app.kubernetes.io/name": "etcd"}),
        ),
        ok(
            Cluster,
            "/spec/storage",
            json!({"pvc": {"size": "1Gi", "storageClassName": "fast.ssd"}}),
        ),
        ok(Backup, "/spec/destination/s3/prefix", json!("präfix/été")),
        ok(
            Backup,
            "/spec/destination/s3/prefix",
            json!("/leading/and/trailing/"),
        ),
        ok(
            Backup,
            "/spec/destination/s3/endpoint",
            json!("https://s3.eu-west-1.amazonaws.com"),
        ),
        ok(Backup, "/spec/destination/s3/region", json!("eu-west-1")),
        ok(Backup, "/spec/destination/s3/bucket", json!("my.bucket-1")),
        ok(Restore, "/spec/source/s3/key", json!("prod/ünïcode key.db")),
        ok(Cluster, "/spec/maintenance", json!({})),
        ok(
            Cluster,
            "/spec/maintenance/defrag/schedule",
            json!("@daily"),
        ),
        ok(
            Cluster,
            "/spec/maintenance/defrag",
            json!({"schedule": "0 0 3 * * Sun", "minFragmentedBytes": "0", "minFragmentedRatio": 0}),
        ),
        ok(
            Cluster,
            "/spec/maintenance/defrag",
            json!({"schedule": "*/15 * * * *", "minFragmentedBytes": "1Ei", "minFragmentedRatio": 1}),
        ),
        ok(Backup, "/spec/destination/s3/compression", json!("zstd")),
    ]
}

/// One document the loader must refuse before anything acts on it.
#[derive(Debug, Clone)]
pub struct LoadCase {
    pub what: &'static str,
    pub document: Value,
    /// What the error message must contain (the field or name).
    pub names: &'static str,
}

/// Documents the API server would refuse, which the local loader refuses with an error.
pub fn load_cases(endpoint: &str) -> Vec<LoadCase> {
    use Kind::*;
    let with = |kind: Kind, at: &str, value: Value| {
        let mut doc = kind.base("hostile", endpoint);
        set(&mut doc, at, value);
        doc
    };
    let l = |what, document, names| LoadCase {
        what,
        document,
        names,
    };
    vec![
        l(
            "unknown spec field",
            with(Cluster, "/spec/sise", json!(5)),
            "spec.sise",
        ),
        l(
            "misspelt option",
            with(Cluster, "/spec/etcd/quotaBackendByte", json!(1)),
            "spec.etcd.quotaBackendByte",
        ),
        l(
            "misspelt endpoint",
            with(Backup, "/spec/destination/s3/endpiont", json!("http://x")),
            "spec.destination.s3.endpiont",
        ),
        l(
            "unknown restore field",
            with(Restore, "/spec/cluster/spec/paused2", json!(true)),
            "spec.cluster.spec.paused2",
        ),
        l(
            "path in name",
            with(Cluster, "/metadata/name", json!("../../escape")),
            "metadata.name",
        ),
        l(
            "slash in name",
            with(Backup, "/metadata/name", json!("a/b")),
            "metadata.name",
        ),
        l(
            "empty name",
            with(Restore, "/metadata/name", json!("")),
            "metadata.name",
        ),
        l(
            "unicode name",
            with(Cluster, "/metadata/name", json!("ètcd")),
            "metadata.name",
        ),
        l(
            "upper-case name",
            with(Cluster, "/metadata/name", json!("Etcd")),
            "metadata.name",
        ),
        l(
            "huge name",
            with(Cluster, "/metadata/name", json!(huge(300))),
            "metadata.name",
        ),
        l(
            "path in namespace",
            with(Cluster, "/metadata/namespace", json!("../..")),
            "metadata.namespace",
        ),
        l(
            "size beyond i32",
            with(Cluster, "/spec/size", json!(2_147_483_648_i64)),
            "spec.size",
        ),
        l(
            "quota beyond i64",
            with(Cluster, "/spec/etcd/quotaBackendBytes", json!(u64::MAX)),
            "spec.etcd.quotaBackendBytes",
        ),
        l(
            "part size beyond i32",
            with(
                Backup,
                "/spec/destination/s3/partSizeMiB",
                json!(1_u64 << 40),
            ),
            "spec.destination.s3.partSizeMiB",
        ),
        l(
            "size as text",
            with(Cluster, "/spec/size", json!("three")),
            "spec.size",
        ),
        l(
            "defrag without a schedule",
            with(
                Cluster,
                "/spec/maintenance/defrag",
                json!({"minFragmentedRatio": 0.5}),
            ),
            "spec.maintenance.defrag",
        ),
        l(
            "misspelt maintenance field",
            with(Cluster, "/spec/maintenance/defragment", json!({})),
            "spec.maintenance.defragment",
        ),
        l(
            "ratio as text",
            with(
                Cluster,
                "/spec/maintenance/defrag",
                json!({"schedule": "@daily", "minFragmentedRatio": "half"}),
            ),
            "spec.maintenance.defrag.minFragmentedRatio",
        ),
        l(
            "bytes as a number",
            with(
                Cluster,
                "/spec/maintenance/defrag",
                json!({"schedule": "@daily", "minFragmentedBytes": 64}),
            ),
            "spec.maintenance.defrag.minFragmentedBytes",
        ),
        l(
            "unknown retention policy",
            with(
                Cluster,
                "/spec/storage",
                json!({"pvc": {"size": "1Gi", "retentionPolicy": {"whenDeleted": "Keep"}}}),
            ),
            "spec.storage.pvc.retentionPolicy.whenDeleted",
        ),
        l(
            "unknown compaction mode",
            with(Cluster, "/spec/etcd/autoCompactionMode", json!("weekly")),
            "spec.etcd.autoCompactionMode",
        ),
        l(
            "unknown compression",
            with(Backup, "/spec/destination/s3/compression", json!("gzip")),
            "spec.destination.s3.compression",
        ),
        l(
            "compression with a flag",
            with(
                Backup,
                "/spec/destination/s3/compression",
                json!("zstd --rm"),
            ),
            "spec.destination.s3.compression",
        ),
        l(
            "compression in capitals",
            with(Backup, "/spec/destination/s3/compression", json!("ZSTD")),
            "spec.destination.s3.compression",
        ),
        l(
            "extraArgs value not text",
            with(
                Cluster,
                "/spec/etcd/extraArgs",
                json!({"max-txn-ops": {"a": 1}}),
            ),
            "spec.etcd.extraArgs",
        ),
    ]
}
