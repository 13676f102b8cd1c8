//! Every problem with a spec, found at once. Both runtimes call these before acting: an
//! invalid spec changes nothing and is reported in a `SpecValid=False` condition.
//!
//! The CRD schema rejects most of these on Kubernetes already; they are checked again here
//! because the local runtime has no API server, and because some checks (semver, supported
//! versions, reserved flags, cron syntax) cannot be expressed in the schema.

use std::fmt;

use semver::Version;

use super::backup::EtcdBackupSpec;
use super::cluster::EtcdClusterSpec;
use super::quantity::{parse_bytes, parse_duration};
use super::restore::EtcdRestoreSpec;

/// Lowest and highest etcd minor versions (of major 3) this operator manages.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u64> = 4..=6;

/// Longest cluster name: pods are `<name>-<n>` and a Service `<name>-client` must stay a
/// DNS label of at most 63 characters.
pub const MAX_CLUSTER_NAME: usize = 50;

/// etcd flags the operator sets itself; `extraArgs` may not override them.
pub const RESERVED_FLAGS: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "listen-client-urls",
    "advertise-client-urls",
    "listen-peer-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
    "discovery",
    "discovery-srv",
];

/// One thing wrong (or unwise) with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the field, e.g. `spec.size`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything validation found: errors block every step, warnings are only reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    /// True when nothing blocks acting on the spec.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// Every error joined into one line for a condition message.
    pub fn errors_message(&self) -> String {
        join(&self.errors)
    }

    /// Every warning joined into one line for a condition message.
    pub fn warnings_message(&self) -> String {
        join(&self.warnings)
    }
}

fn join(ps: &[Problem]) -> String {
    ps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses an etcd version as the spec writes it (`3.5.16`, no leading `v`).
pub fn parse_version(v: &str) -> Result<Version, semver::Error> {
    Version::parse(v)
}

/// Checks a resource name that becomes part of Pod and Service names (a DNS-1035 label).
pub fn check_name(report: &mut Report, field: &str, name: &str, max: usize) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ends = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || !ok_chars || !starts || !ends {
        report.error(
            field,
            format!("{name:?} must be lowercase letters, digits and '-', starting with a letter"),
        );
    } else if name.len() > max {
        report.error(field, format!("{name:?} is longer than {max} characters"));
    }
}

/// Every problem with an EtcdCluster named `name`.
pub fn cluster(name: &str, spec: &EtcdClusterSpec) -> Report {
    let mut r = Report::default();
    check_name(&mut r, "metadata.name", name, MAX_CLUSTER_NAME);
    cluster_spec_into(&mut r, "spec", spec);
    r
}

fn cluster_spec_into(r: &mut Report, at: &str, spec: &EtcdClusterSpec) {
    let f = |s: &str| format!("{at}.{s}");
    if !(1..=9).contains(&spec.size) {
        r.error(&f("size"), format!("{} is not between 1 and 9", spec.size));
    } else if spec.size % 2 == 0 {
        let tolerated = (spec.size - 1) / 2;
        r.warn(
            &f("size"),
            format!(
                "an even size ({}) tolerates no more failures than {} ({tolerated}) and needs a larger quorum",
                spec.size,
                spec.size - 1
            ),
        );
    }
    match parse_version(&spec.version) {
        Err(e) => r.error(
            &f("version"),
            format!("{:?} is not a version like 3.5.16: {e}", spec.version),
        ),
        Ok(v) if v.major != 3 || !SUPPORTED_MINORS.contains(&v.minor) => r.error(
            &f("version"),
            format!(
                "{} is not supported: versions 3.{}.x to 3.{}.x are",
                spec.version,
                SUPPORTED_MINORS.start(),
                SUPPORTED_MINORS.end()
            ),
        ),
        Ok(v) if !v.pre.is_empty() => r.error(
            &f("version"),
            format!("{} is a pre-release; use a released version", spec.version),
        ),
        Ok(_) => {}
    }
    if let Some(storage) = &spec.storage {
        match (&storage.empty_dir, &storage.pvc) {
            (Some(_), Some(_)) | (None, None) => {
                r.error(&f("storage"), "set exactly one of emptyDir or pvc")
            }
            (Some(e), None) => {
                if let Some(limit) = &e.size_limit
                    && let Err(err) = parse_bytes(limit)
                {
                    r.error(&f("storage.emptyDir.sizeLimit"), err.to_string());
                }
            }
            (None, Some(p)) => match parse_bytes(&p.size) {
                Err(err) => r.error(&f("storage.pvc.size"), err.to_string()),
                Ok(0) => r.error(&f("storage.pvc.size"), "must be larger than zero"),
                Ok(_) => {}
            },
        }
    }
    if let Some(o) = &spec.etcd {
        if let Some(q) = o.quota_backend_bytes
            && q < 0
        {
            r.error(&f("etcd.quotaBackendBytes"), "must not be negative");
        }
        if let Some(s) = o.snapshot_count
            && s < 1
        {
            r.error(&f("etcd.snapshotCount"), "must be at least 1");
        }
        if let Some(h) = o.heartbeat_interval_ms
            && !(10..=10_000).contains(&h)
        {
            r.error(
                &f("etcd.heartbeatIntervalMs"),
                "must be between 10 and 10000",
            );
        }
        if let Some(e) = o.election_timeout_ms
            && !(50..=50_000).contains(&e)
        {
            r.error(&f("etcd.electionTimeoutMs"), "must be between 50 and 50000");
        }
        let heartbeat = o.heartbeat_interval_ms.unwrap_or(100);
        let election = o.election_timeout_ms.unwrap_or(1000);
        if election < 5 * heartbeat {
            r.error(
                &f("etcd.electionTimeoutMs"),
                format!(
                    "{election} must be at least 5 times heartbeatIntervalMs ({heartbeat}), as etcd requires"
                ),
            );
        }
        if o.auto_compaction_retention.is_some() && o.auto_compaction_mode.is_none() {
            r.warn(
                &f("etcd.autoCompactionRetention"),
                "without autoCompactionMode etcd reads it as periodic",
            );
        }
        for flag in o.extra_args.keys() {
            let name = flag.trim_start_matches('-');
            if RESERVED_FLAGS.contains(&name) {
                r.error(
                    &f(&format!("etcd.extraArgs.{flag}")),
                    "is set by the operator and cannot be overridden",
                );
            } else if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                r.error(
                    &f(&format!("etcd.extraArgs.{flag}")),
                    "is not an etcd flag name",
                );
            }
        }
    }
    if let Some(tls) = &spec.tls {
        for (side, src) in [("client", &tls.client), ("peer", &tls.peer)] {
            if let Some(src) = src
                && src.operator_issued.is_some() == src.secret_name.is_some()
            {
                r.error(
                    &f(&format!("tls.{side}")),
                    "set exactly one of operatorIssued or secretName",
                );
            }
        }
        if tls.client.is_some() || tls.peer.is_some() {
            // Refusing is safer than silently serving plaintext to someone who asked for TLS.
            r.error(
                &f("tls"),
                "TLS is not implemented by this operator version yet; remove spec.tls to run without it",
            );
        }
    }
}

/// Every problem with an EtcdBackup.
pub fn backup(name: &str, spec: &EtcdBackupSpec) -> Report {
    let mut r = Report::default();
    check_name(&mut r, "metadata.name", name, 63);
    check_name(
        &mut r,
        "spec.clusterName",
        &spec.cluster_name,
        MAX_CLUSTER_NAME,
    );
    let s3 = &spec.destination.s3;
    check_bucket(&mut r, "spec.destination.s3.bucket", &s3.bucket);
    check_endpoint(
        &mut r,
        "spec.destination.s3.endpoint",
        s3.connection.endpoint.as_deref(),
    );
    if let Some(p) = s3.part_size_mib
        && !(5..=5120).contains(&p)
    {
        r.error(
            "spec.destination.s3.partSizeMiB",
            "must be between 5 and 5120 (S3's part size limits)",
        );
    }
    if let Some(schedule) = &spec.schedule
        && let Err(e) = croner::parser::CronParser::new().parse(schedule)
    {
        r.error(
            "spec.schedule",
            format!("{schedule:?} is not a cron expression: {e}"),
        );
    }
    if let Some(ret) = &spec.retention {
        if ret.keep_last.is_none() && ret.max_age.is_none() {
            r.error("spec.retention", "set keepLast, maxAge or both");
        }
        if let Some(k) = ret.keep_last
            && k < 1
        {
            r.error("spec.retention.keepLast", "must be at least 1");
        }
        if let Some(age) = &ret.max_age
            && let Err(e) = parse_duration(age)
        {
            r.error("spec.retention.maxAge", e.to_string());
        }
    }
    r
}

/// Every problem with an EtcdRestore.
pub fn restore(name: &str, spec: &EtcdRestoreSpec) -> Report {
    let mut r = Report::default();
    check_name(&mut r, "metadata.name", name, 63);
    let src = &spec.source;
    match (&src.s3, &src.backup_name) {
        (Some(_), Some(_)) | (None, None) => {
            r.error("spec.source", "set exactly one of s3 or backupName")
        }
        (Some(o), None) => {
            check_bucket(&mut r, "spec.source.s3.bucket", &o.bucket);
            check_endpoint(
                &mut r,
                "spec.source.s3.endpoint",
                o.connection.endpoint.as_deref(),
            );
            if o.key.is_empty() {
                r.error("spec.source.s3.key", "must not be empty");
            }
        }
        (None, Some(b)) => check_name(&mut r, "spec.source.backupName", b, 63),
    }
    if let Some(sha) = &src.sha256
        && (sha.len() != 64
            || !sha
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    {
        r.error("spec.source.sha256", "must be 64 lowercase hex digits");
    }
    check_name(
        &mut r,
        "spec.cluster.name",
        &spec.cluster.name,
        MAX_CLUSTER_NAME,
    );
    cluster_spec_into(&mut r, "spec.cluster.spec", &spec.cluster.spec);
    r
}

fn check_bucket(r: &mut Report, field: &str, bucket: &str) {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        r.error(
            field,
            format!("{bucket:?} is not a bucket name (3-63 lowercase letters, digits, '-', '.')"),
        );
    }
}

fn check_endpoint(r: &mut Report, field: &str, endpoint: Option<&str>) {
    if let Some(e) = endpoint {
        match e.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => r.error(field, format!("{e:?} is not an http(s) URL")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup::{BackupDestination, Retention, S3Destination};
    use crate::api::cluster::{EtcdOptions, StorageSpec, TlsSource, TlsSpec};
    use crate::api::restore::{RestoreSource, RestoreTarget, S3Object};
    use crate::api::s3::S3Connection;

    fn fields(r: &Report) -> Vec<&str> {
        r.errors.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn classic_spec_is_valid() {
        let r = cluster("example", &EtcdClusterSpec::new(3, "3.5.16"));
        assert!(r.is_valid(), "{r:?}");
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn even_size_is_a_warning_not_an_error() {
        let r = cluster("example", &EtcdClusterSpec::new(4, "3.5.16"));
        assert!(r.is_valid());
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].message.contains("even size"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut spec = EtcdClusterSpec::new(12, "three");
        spec.storage = Some(StorageSpec::default());
        spec.etcd = Some(EtcdOptions {
            heartbeat_interval_ms: Some(500),
            election_timeout_ms: Some(1000),
            extra_args: [("data-dir".to_string(), "/x".to_string())].into(),
            ..Default::default()
        });
        let r = cluster("Bad_Name", &spec);
        assert_eq!(
            fields(&r),
            vec![
                "metadata.name",
                "spec.size",
                "spec.version",
                "spec.storage",
                "spec.etcd.electionTimeoutMs",
                "spec.etcd.extraArgs.data-dir",
            ]
        );
    }

    #[test]
    fn unsupported_versions_are_errors() {
        for v in ["2.3.8", "3.3.27", "3.7.0", "4.0.0", "3.5.0-rc.1", "v3.5.16"] {
            let r = cluster("a", &EtcdClusterSpec::new(3, v));
            assert_eq!(fields(&r), vec!["spec.version"], "{v}");
        }
    }

    #[test]
    fn tls_is_refused_until_implemented() {
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        spec.tls = Some(TlsSpec {
            client: Some(TlsSource {
                operator_issued: Some(true),
                secret_name: None,
            }),
            peer: None,
        });
        assert_eq!(fields(&cluster("a", &spec)), vec!["spec.tls"]);
    }

    fn backup_spec() -> EtcdBackupSpec {
        EtcdBackupSpec {
            cluster_name: "example".into(),
            destination: BackupDestination {
                s3: S3Destination {
                    bucket: "etcd-backups".into(),
                    prefix: Some("prod".into()),
                    connection: S3Connection {
                        endpoint: Some("http://127.0.0.1:3900".into()),
                        ..Default::default()
                    },
                    part_size_mib: None,
                    compression: None,
                },
            },
            schedule: Some("0 */6 * * *".into()),
            retention: Some(Retention {
                keep_last: Some(10),
                max_age: Some("7d".into()),
            }),
        }
    }

    #[test]
    fn backup_checks_schedule_retention_bucket_and_endpoint() {
        assert!(backup("nightly", &backup_spec()).is_valid());
        let mut b = backup_spec();
        b.schedule = Some("every day".into());
        b.retention = Some(Retention {
            keep_last: Some(0),
            max_age: Some("7 days".into()),
        });
        b.destination.s3.bucket = "B".into();
        b.destination.s3.connection.endpoint = Some("ftp://x".into());
        assert_eq!(
            fields(&backup("nightly", &b)),
            vec![
                "spec.destination.s3.bucket",
                "spec.destination.s3.endpoint",
                "spec.schedule",
                "spec.retention.keepLast",
                "spec.retention.maxAge",
            ]
        );
    }

    #[test]
    fn restore_needs_exactly_one_source_and_a_valid_cluster() {
        let ok = EtcdRestoreSpec {
            source: RestoreSource {
                backup_name: Some("nightly".into()),
                ..Default::default()
            },
            cluster: RestoreTarget {
                name: "restored".into(),
                spec: EtcdClusterSpec::new(3, "3.5.16"),
            },
        };
        assert!(restore("r", &ok).is_valid());
        let mut both = ok.clone();
        both.source.s3 = Some(S3Object {
            bucket: "etcd-backups".into(),
            key: "k".into(),
            connection: S3Connection::default(),
        });
        both.source.sha256 = Some("ABC".into());
        both.cluster.spec.size = 0;
        assert_eq!(
            fields(&restore("r", &both)),
            vec![
                "spec.source",
                "spec.source.sha256",
                "spec.cluster.spec.size"
            ]
        );
    }
}
