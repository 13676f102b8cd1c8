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
use super::tls::{TlsMode, TlsSpec};

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

/// etcd flags `extraArgs` may not set because they silently break durability or safety,
/// each with the reason the user is told. A name matches an entry exactly or, for entries
/// ending in `-`, by prefix (`listen-`, `advertise-`, `unsafe-`, ...).
pub const REFUSED_FLAGS: &[(&str, &str)] = &[
    (
        "force-new-cluster",
        "it drops every other member and makes this one a cluster of its own, forking the data",
    ),
    (
        "unsafe-",
        "it trades durability for speed (e.g. unsafe-no-fsync acknowledges writes before they reach the disk)",
    ),
    (
        "strict-reconfig-check",
        "turning it off lets a membership change go through without quorum",
    ),
    (
        "config-file",
        "a config file replaces every flag the operator sets",
    ),
    (
        "listen-",
        "the operator owns the listeners; another one would serve clients it does not know of",
    ),
    (
        "advertise-",
        "the operator owns the advertised URLs; another one would send clients elsewhere",
    ),
    (
        "initial-cluster",
        "the operator owns the initial cluster; another value would join or form a different cluster",
    ),
    (
        "discovery",
        "the operator forms the cluster itself; discovery would form a different one",
    ),
    (
        "log-outputs",
        "the operator keeps member logs; another output writes wherever the value points",
    ),
    (
        "log-output",
        "the operator keeps member logs; another output writes wherever the value points",
    ),
    (
        "proxy",
        "a proxy member is not a voter, so quorum would count a member that is none",
    ),
];

/// Flags the spec has a typed field for; `extraArgs` setting them too would pass two values.
pub const TYPED_FLAGS: &[(&str, &str)] = &[
    ("quota-backend-bytes", "quotaBackendBytes"),
    ("auto-compaction-mode", "autoCompactionMode"),
    ("auto-compaction-retention", "autoCompactionRetention"),
    ("snapshot-count", "snapshotCount"),
    ("heartbeat-interval", "heartbeatIntervalMs"),
    ("election-timeout", "electionTimeoutMs"),
];

/// Longest `extraArgs` flag name and value, in bytes: etcd's longest flag is under 50.
pub const MAX_FLAG_NAME: usize = 64;
/// Longest `extraArgs` value, in bytes: an argument, not a file.
pub const MAX_FLAG_VALUE: usize = 1024;
/// Longest backup prefix, in bytes: S3 keys end at 1024 and the rest of a key needs room.
pub const MAX_PREFIX: usize = 512;
/// Longest S3 key, in bytes (S3's limit).
pub const MAX_KEY: usize = 1024;

/// Why `extraArgs` may not set `name` (without leading dashes), if it may not.
pub fn refused_flag(name: &str) -> Option<&'static str> {
    if RESERVED_FLAGS.contains(&name) {
        return Some("is set by the operator and cannot be overridden");
    }
    REFUSED_FLAGS
        .iter()
        .find(|(flag, _)| {
            if flag.ends_with('-') {
                name.starts_with(flag)
            } else {
                name == *flag || name.starts_with(&format!("{flag}-"))
            }
        })
        .map(|(_, why)| *why)
}

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
            format!(
                "{:?} must be lowercase letters, digits and '-', starting with a letter",
                truncated(name)
            ),
        );
    } else if name.len() > max {
        report.error(
            field,
            format!("{:?} is longer than {max} characters", truncated(name)),
        );
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
            format!(
                "{:?} is not a version like 3.5.16: {e}",
                truncated(&spec.version)
            ),
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
        Ok(v) if !v.build.is_empty() => r.error(
            &f("version"),
            format!(
                "{} has build metadata; use a released version like 3.5.16",
                spec.version
            ),
        ),
        Ok(_) => {}
    }
    if let Some(repo) = &spec.repository {
        check_repository(r, &f("repository"), repo);
    }
    if let Some(pod) = &spec.pod {
        for (key, value) in &pod.labels {
            check_label(r, &f(&format!("pod.labels.{key}")), key, Some(value));
        }
        for (key, value) in &pod.node_selector {
            check_label(r, &f(&format!("pod.nodeSelector.{key}")), key, Some(value));
        }
        for key in pod.annotations.keys() {
            check_label(r, &f(&format!("pod.annotations.{key}")), key, None);
        }
        if let Some(class) = &pod.priority_class_name {
            check_subdomain(r, &f("pod.priorityClassName"), class);
        }
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
            (None, Some(p)) => {
                match parse_bytes(&p.size) {
                    Err(err) => r.error(&f("storage.pvc.size"), err.to_string()),
                    Ok(0) => r.error(&f("storage.pvc.size"), "must be larger than zero"),
                    Ok(_) => {}
                }
                if let Some(class) = &p.storage_class_name {
                    check_subdomain(r, &f("storage.pvc.storageClassName"), class);
                }
            }
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
        // In i64: 5 x an i32 heartbeat overflows (a panic in a debug build, a wrap in release).
        let heartbeat = i64::from(o.heartbeat_interval_ms.unwrap_or(100));
        let election = i64::from(o.election_timeout_ms.unwrap_or(1000));
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
        if let Some(retention) = &o.auto_compaction_retention {
            check_compaction_retention(r, &f("etcd.autoCompactionRetention"), retention, o);
        }
        for (flag, value) in &o.extra_args {
            let field = f(&format!("etcd.extraArgs.{flag}"));
            let name = flag.trim_start_matches('-');
            if name.is_empty()
                || name.len() > MAX_FLAG_NAME
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                r.error(
                    &field,
                    "is not an etcd flag name (lowercase letters, digits and '-')",
                );
                continue;
            }
            if let Some(why) = refused_flag(name) {
                if RESERVED_FLAGS.contains(&name) {
                    r.error(&field, why);
                } else {
                    r.error(&field, format!("is refused: {why}"));
                }
            } else if let Some((_, typed)) = TYPED_FLAGS.iter().find(|(t, _)| *t == name) {
                r.error(&field, format!("set it through {at}.etcd.{typed} instead"));
            }
            if value.len() > MAX_FLAG_VALUE {
                r.error(
                    &field,
                    format!("the value is longer than {MAX_FLAG_VALUE} bytes"),
                );
            } else if value.chars().any(char::is_control) {
                r.error(
                    &field,
                    "the value has control characters (newline, NUL, ...)",
                );
            }
        }
    }
    if let Some(defrag) = spec.maintenance.as_ref().and_then(|m| m.defrag.as_ref()) {
        if let Err(e) = croner::parser::CronParser::new().parse(&defrag.schedule) {
            r.error(
                &f("maintenance.defrag.schedule"),
                format!(
                    "{:?} is not a cron expression: {e}",
                    truncated(&defrag.schedule)
                ),
            );
        }
        if let Some(b) = &defrag.min_fragmented_bytes
            && let Err(err) = parse_bytes(b)
        {
            r.error(&f("maintenance.defrag.minFragmentedBytes"), err.to_string());
        }
        if let Some(ratio) = defrag.min_fragmented_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            r.error(
                &f("maintenance.defrag.minFragmentedRatio"),
                "must be between 0 and 1",
            );
        }
    }
    if let Some(value) = spec.tls.as_ref().and_then(|t| t.rotate.as_deref())
        && (value.is_empty() || value.len() > 63 || value.chars().any(char::is_control))
    {
        r.error(
            &f("tls.rotate"),
            "must be 1 to 63 characters without control characters (any value; change it to rotate again)",
        );
    }
    if let Some(recovery) = &spec.recovery {
        recovery_into(r, &f("recovery"), recovery);
    }
    if let Some(tls) = &spec.tls
        && let Some(secrets) = &tls.secrets
    {
        for (role, name) in secrets.named() {
            check_subdomain(r, &f(&format!("tls.secrets.{role}")), name);
        }
        if tls.mode == TlsMode::Disabled {
            r.error(
                &f("tls.secrets"),
                "names certificates while spec.tls.mode is Disabled: remove one of them",
            );
        }
        if tls.rotate.is_some() {
            r.error(
                &f("tls.rotate"),
                "reissues certificates the operator makes; with spec.tls.secrets, rotate by updating the Secrets (members serve them on their next connection)",
            );
        }
    }
    if let Some(tls) = &spec.tls {
        let source = if tls.secrets.is_some() {
            Some("spec.tls.secrets")
        } else if tls.cert_manager.is_some() {
            Some("spec.tls.certManager")
        } else {
            None
        };
        if let Some(cm) = &tls.cert_manager {
            if tls.secrets.is_some() {
                r.error(
                    &f("tls.certManager"),
                    "and spec.tls.secrets both name where certificates come from: keep one",
                );
            }
            if tls.mode == TlsMode::Disabled {
                r.error(
                    &f("tls.certManager"),
                    "asks for certificates while spec.tls.mode is Disabled: remove one of them",
                );
            }
            if tls.rotate.is_some() && tls.secrets.is_none() {
                r.error(
                    &f("tls.rotate"),
                    "reissues certificates the operator makes; cert-manager renews its own (members serve them on their next connection)",
                );
            }
            check_subdomain(r, &f("tls.certManager.issuerRef.name"), &cm.issuer_ref.name);
            if let Some(kind) = cm.issuer_ref.kind.as_deref()
                && cm.issuer_ref.group.is_none()
                && !matches!(kind, "Issuer" | "ClusterIssuer")
            {
                r.error(
                    &f("tls.certManager.issuerRef.kind"),
                    format!("{kind:?} is not a cert-manager.io issuer kind (Issuer or ClusterIssuer); set group for an external issuer"),
                );
            }
        }
        if let (Some(source), Some(_)) = (source, tls.rotate_ca.as_deref()) {
            r.error(
                &f("tls.rotateCA"),
                format!("replaces the CA the operator makes; with {source} the CA is yours: change it in the Secrets (members move to it in three phases)"),
            );
        }
    }
    if let Some(value) = spec.tls.as_ref().and_then(|t| t.rotate_ca.as_deref())
        && (value.is_empty() || value.len() > 63 || value.chars().any(char::is_control))
    {
        r.error(
            &f("tls.rotateCA"),
            "must be 1 to 63 characters without control characters (any value; change it to rotate again)",
        );
    }
    if TlsSpec::mode_of(spec.tls.as_ref()) == TlsMode::Disabled {
        r.warn(
            &f("tls.mode"),
            "TLS is disabled: anyone who reaches a member's ports reads and writes every key; remove spec.tls to serve TLS",
        );
    }
}

/// Below this `spec.recovery.after` is warned about: a member restarting (a node reboot, a
/// slow disk) may take longer than that to come back, and a recovery is not undone.
pub const SHORT_RECOVERY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn recovery_into(r: &mut Report, at: &str, spec: &super::recovery::RecoverySpec) {
    let f = |s: &str| format!("{at}.{s}");
    if spec.from_backup.is_none() && spec.from_survivor != Some(true) {
        r.error(
            at,
            "set fromSurvivor: true, fromBackup.backupName, or both (or remove spec.recovery to only be told when quorum is lost)",
        );
    }
    if let Some(b) = &spec.from_backup {
        check_name(r, &f("fromBackup.backupName"), &b.backup_name, 63);
    }
    if let Some(after) = &spec.after {
        match parse_duration(after) {
            Err(e) => r.error(
                &f("after"),
                format!("{e}; a duration such as 90s, 10m or 1h"),
            ),
            Ok(d) if d < SHORT_RECOVERY_AFTER => r.warn(
                &f("after"),
                format!(
                    "{after} is short: a member that only restarts may take longer to come back, and a recovery is not undone"
                ),
            ),
            Ok(_) => {}
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
    check_connection(&mut r, "spec.destination.s3", &s3.connection);
    if let Some(prefix) = &s3.prefix {
        check_prefix(&mut r, "spec.destination.s3.prefix", prefix);
    }
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
            format!("{:?} is not a cron expression: {e}", truncated(schedule)),
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
            check_connection(&mut r, "spec.source.s3", &o.connection);
            if o.key.is_empty() {
                r.error("spec.source.s3.key", "must not be empty");
            } else if o.key.len() > MAX_KEY {
                r.error(
                    "spec.source.s3.key",
                    format!("is longer than {MAX_KEY} bytes (S3's limit)"),
                );
            } else if o.key.chars().any(char::is_control) {
                r.error("spec.source.s3.key", "has control characters");
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
    let chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    let ip_like = bucket.parse::<std::net::Ipv4Addr>().is_ok();
    if !(3..=63).contains(&bucket.len()) || !chars || !ends || bucket.contains("..") || ip_like {
        r.error(
            field,
            format!(
                "{:?} is not a bucket name (3-63 lowercase letters, digits, '-', '.', starting and ending with a letter or digit)",
                truncated(bucket)
            ),
        );
    }
}

/// The endpoint, region and credentials Secret of an S3 connection under `at`.
fn check_connection(r: &mut Report, at: &str, c: &crate::api::s3::S3Connection) {
    if let Some(e) = &c.endpoint {
        let field = format!("{at}.endpoint");
        match e.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                    r.error(
                        &field,
                        "must not carry credentials; name a credentialsSecret instead",
                    );
                }
            }
            _ => r.error(&field, format!("{:?} is not an http(s) URL", truncated(e))),
        }
    }
    if let Some(region) = &c.region {
        let ok = (1..=64).contains(&region.len())
            && region
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            r.error(
                &format!("{at}.region"),
                format!(
                    "{:?} is not a region (1-64 letters, digits, '-', '_')",
                    truncated(region)
                ),
            );
        }
    }
    if let Some(secret) = &c.credentials_secret {
        check_subdomain(r, &format!("{at}.credentialsSecret"), secret);
    }
}

/// A backup prefix: part of every object key, so no control characters, no `.`/`..` or
/// empty segments (which S3-compatible servers and tools treat differently), bounded size.
fn check_prefix(r: &mut Report, field: &str, prefix: &str) {
    let inner = prefix.trim_matches('/');
    if prefix.len() > MAX_PREFIX {
        r.error(field, format!("is longer than {MAX_PREFIX} bytes"));
    } else if prefix.chars().any(char::is_control) {
        r.error(field, "has control characters");
    } else if !inner.is_empty()
        && inner
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        r.error(
            field,
            format!("{:?} has an empty, '.' or '..' segment", truncated(prefix)),
        );
    }
}

/// A Kubernetes object name that may contain dots (DNS-1123 subdomain: Secrets,
/// StorageClasses, PriorityClasses).
pub fn check_subdomain(r: &mut Report, field: &str, name: &str) {
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if name.is_empty() || name.len() > 253 || !labels_ok {
        r.error(
            field,
            format!(
                "{:?} is not an object name (at most 253 lowercase letters, digits, '-' and '.')",
                truncated(name)
            ),
        );
    }
}

/// A label or annotation key (`[prefix/]name`) and, for labels, its value.
fn check_label(r: &mut Report, field: &str, key: &str, value: Option<&str>) {
    let name_ok = |s: &str| {
        (1..=63).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut prefix_report = Report::default();
    if let Some(p) = prefix {
        check_subdomain(&mut prefix_report, field, p);
    }
    if !name_ok(name) || !prefix_report.is_valid() {
        r.error(
            field,
            format!(
                "{:?} is not a label key ([prefix/]name, name at most 63 letters, digits, '-', '_', '.')",
                truncated(key)
            ),
        );
    }
    if let Some(v) = value
        && !v.is_empty()
        && !name_ok(v)
    {
        r.error(
            field,
            format!(
                "{:?} is not a label value (at most 63 letters, digits, '-', '_', '.')",
                truncated(v)
            ),
        );
    }
}

/// An image repository without tag or digest: `[host[:port]/]path`, lowercase.
fn check_repository(r: &mut Report, field: &str, repo: &str) {
    let mut parts = repo.split('/').peekable();
    let mut ok = repo.len() <= 255 && !repo.is_empty();
    let mut first = true;
    while let Some(part) = parts.next() {
        let is_host = first && parts.peek().is_some() && part.contains(['.', ':']);
        let (body, port) = match part.split_once(':') {
            Some((b, p)) if is_host => (b, Some(p)),
            _ => (part, None),
        };
        ok &= !body.is_empty()
            && body.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && body.starts_with(|c: char| c.is_ascii_alphanumeric())
            && body.ends_with(|c: char| c.is_ascii_alphanumeric())
            && port.is_none_or(|p| p.parse::<u16>().is_ok());
        first = false;
    }
    if !ok {
        r.error(
            field,
            format!(
                "{:?} is not an image repository like gcr.io/etcd-development/etcd (no tag or digest: the operator adds :v<version>)",
                truncated(repo)
            ),
        );
    }
}

/// `autoCompactionRetention`: hours as an integer, a Go duration (`1h30m`) for periodic
/// compaction, a revision count for revision compaction.
fn check_compaction_retention(
    r: &mut Report,
    field: &str,
    value: &str,
    o: &crate::api::cluster::EtcdOptions,
) {
    use crate::api::cluster::AutoCompactionMode;
    let integer =
        !value.is_empty() && value.len() <= 18 && value.chars().all(|c| c.is_ascii_digit());
    let revision = o.auto_compaction_mode == Some(AutoCompactionMode::Revision);
    if integer {
        return;
    }
    if revision {
        r.error(
            field,
            format!("{:?} is not a revision count", truncated(value)),
        );
    } else if !is_go_duration(value) {
        r.error(
            field,
            format!(
                "{:?} is not a whole number of hours or a duration like 30m or 1h30m",
                truncated(value)
            ),
        );
    }
}

/// A Go `time.ParseDuration` string of non-negative parts: `1h30m`, `90s`, `1.5h`.
fn is_go_duration(s: &str) -> bool {
    if s.is_empty() || s.len() > 32 {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num.parse::<f64>().is_err() {
            return false;
        }
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .filter(|u| tail.starts_with(**u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &tail[unit.len()..];
    }
    true
}

/// At most 80 characters of `s`, for messages about huge values.
fn truncated(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup::{BackupDestination, Retention, S3Destination};
    use crate::api::cluster::{EtcdOptions, StorageSpec};
    use crate::api::restore::{RestoreSource, RestoreTarget, S3Object};
    use crate::api::s3::S3Connection;
    use crate::api::tls::{TlsMode, TlsSecrets, TlsSpec};

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
    fn a_rotation_value_is_short_printable_text() {
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        for (value, valid) in [("2026-12-05", true), ("", false), ("a\nb", false)] {
            spec.tls = Some(TlsSpec {
                rotate: Some(value.into()),
                ..Default::default()
            });
            assert_eq!(cluster("a", &spec).is_valid(), valid, "{value:?}");
        }
        spec.tls = Some(TlsSpec {
            rotate: Some("x".repeat(64)),
            ..Default::default()
        });
        assert_eq!(fields(&cluster("a", &spec)), vec!["spec.tls.rotate"]);
    }

    #[test]
    fn provided_secrets_need_object_names_tls_on_and_no_rotate() {
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        let secrets = TlsSecrets {
            server: "db-server".into(),
            peer: "db-peer".into(),
            client: "db-client".into(),
            ca: None,
        };
        spec.tls = Some(TlsSpec {
            secrets: Some(secrets.clone()),
            ..Default::default()
        });
        assert!(cluster("a", &spec).is_valid());
        spec.tls = Some(TlsSpec {
            secrets: Some(TlsSecrets {
                server: "../x".into(),
                ca: Some(String::new()),
                ..secrets.clone()
            }),
            ..Default::default()
        });
        assert_eq!(
            fields(&cluster("a", &spec)),
            vec!["spec.tls.secrets.server", "spec.tls.secrets.ca"]
        );
        spec.tls = Some(TlsSpec {
            mode: TlsMode::Disabled,
            rotate: Some("now".into()),
            rotate_ca: None,
            secrets: Some(secrets),
            cert_manager: None,
        });
        assert_eq!(
            fields(&cluster("a", &spec)),
            vec!["spec.tls.secrets", "spec.tls.rotate"]
        );
    }

    #[test]
    fn cert_manager_is_one_source_needs_an_issuer_and_tls_on() {
        use crate::api::tls::{CertManagerTls, IssuerRef};
        let cm = |name: &str, kind: Option<&str>| CertManagerTls {
            issuer_ref: IssuerRef {
                name: name.into(),
                kind: kind.map(str::to_string),
                group: None,
            },
        };
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        spec.tls = Some(TlsSpec {
            cert_manager: Some(cm("ca-issuer", Some("ClusterIssuer"))),
            ..Default::default()
        });
        assert!(cluster("a", &spec).is_valid());
        spec.tls = Some(TlsSpec {
            mode: TlsMode::Disabled,
            rotate: Some("now".into()),
            rotate_ca: Some("c1".into()),
            secrets: Some(TlsSecrets {
                server: "s".into(),
                peer: "p".into(),
                client: "c".into(),
                ca: None,
            }),
            cert_manager: Some(cm("", Some("Vault"))),
        });
        let report = cluster("a", &spec);
        let found = fields(&report);
        for field in [
            "spec.tls.certManager",
            "spec.tls.certManager.issuerRef.name",
            "spec.tls.certManager.issuerRef.kind",
            "spec.tls.rotateCA",
        ] {
            assert!(found.contains(&field), "{field} in {found:?}");
        }
    }

    #[test]
    fn disabled_tls_is_valid_with_a_warning() {
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        assert!(cluster("a", &spec).warnings.is_empty());
        spec.tls = Some(TlsSpec {
            mode: TlsMode::Disabled,
            ..Default::default()
        });
        let r = cluster("a", &spec);
        assert!(r.is_valid());
        assert!(
            r.warnings_message().contains("TLS is disabled"),
            "{}",
            r.warnings_message()
        );
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
                    sign_payload: None,
                },
            },
            schedule: Some("0 */6 * * *".into()),
            retention: Some(Retention {
                keep_last: Some(10),
                max_age: Some("7d".into()),
            }),
            verify: None,
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

    /// Validates a table document as its kind's driver does.
    fn validate_doc(kind: crate::testing::hostile::Kind, doc: &serde_json::Value) -> Report {
        use crate::testing::hostile::Kind;
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = doc["spec"].clone();
        match kind {
            Kind::Cluster => cluster(&name, &serde_json::from_value(spec).unwrap()),
            Kind::Backup => backup(&name, &serde_json::from_value(spec).unwrap()),
            Kind::Restore => restore(&name, &serde_json::from_value(spec).unwrap()),
        }
    }

    #[test]
    fn every_hostile_value_is_refused_naming_its_field() {
        let cases = crate::testing::hostile::spec_cases();
        assert!(cases.len() > 150, "{} cases", cases.len());
        for case in cases {
            let doc = case.document("hostile", "http://127.0.0.1:3900");
            let r = validate_doc(case.kind, &doc);
            let shown = format!("{:.120}", case.value.to_string());
            assert!(
                r.errors.iter().any(|p| p.field == case.field),
                "{:?} {} = {shown}: expected an error at {}, got {:?}",
                case.kind,
                case.at,
                case.field,
                r.errors
            );
            // Messages stay readable however huge the value.
            assert!(
                r.errors_message().len() < 2_000,
                "{} = {shown}: message of {} bytes",
                case.at,
                r.errors_message().len()
            );
        }
    }

    #[test]
    fn odd_but_fine_values_are_accepted() {
        for case in crate::testing::hostile::accepted_cases() {
            let doc = case.document("fine", "http://127.0.0.1:3900");
            let r = validate_doc(case.kind, &doc);
            assert!(r.is_valid(), "{} = {}: {:?}", case.at, case.value, r.errors);
        }
    }

    #[test]
    fn an_invalid_cluster_spec_blocks_every_step_of_a_live_cluster() {
        use crate::plan::fixtures::{observed, policy};
        use crate::plan::{BlockReason, Step};
        use crate::testing::hostile::Kind;
        for case in crate::testing::hostile::spec_cases()
            .into_iter()
            .filter(|c| c.kind == Kind::Cluster && c.at != "/metadata/name")
        {
            let doc = case.document("example", "http://127.0.0.1:3900");
            let spec: EtcdClusterSpec = serde_json::from_value(doc["spec"].clone()).unwrap();
            let step = crate::plan::next_step(&spec, &observed(3), &policy());
            assert!(
                matches!(
                    &step,
                    Step::Blocked {
                        reason: BlockReason::InvalidSpec { message }
                    } if message.contains(case.field)
                ),
                "{} = {:.80}: {step}",
                case.at,
                case.value.to_string()
            );
        }
    }

    #[test]
    fn refused_flags_say_why() {
        assert!(refused_flag("force-new-cluster").unwrap().contains("fork"));
        assert!(
            refused_flag("unsafe-no-fsync")
                .unwrap()
                .contains("durability")
        );
        assert!(refused_flag("log-outputs").is_some());
        assert!(refused_flag("max-txn-ops").is_none());
        assert!(refused_flag("log-level").is_none());
        // Not every initial-* flag is about membership.
        assert!(refused_flag("initial-election-tick-advance").is_none());
        assert!(refused_flag("initial-cluster-state").is_some());
        let mut spec = EtcdClusterSpec::new(3, "3.5.16");
        spec.etcd = Some(EtcdOptions {
            extra_args: [("unsafe-no-fsync".to_string(), "true".to_string())].into(),
            ..Default::default()
        });
        let r = cluster("a", &spec);
        assert!(
            r.errors_message()
                .contains("spec.etcd.extraArgs.unsafe-no-fsync: is refused: it trades durability"),
            "{}",
            r.errors_message()
        );
    }

    #[test]
    fn recovery_needs_a_mode_a_backup_name_and_a_duration() {
        use crate::api::recovery::{RecoveryFromBackup, RecoverySpec};
        let with = |r: RecoverySpec| {
            let mut spec = EtcdClusterSpec::new(3, "3.5.16");
            spec.recovery = Some(r);
            cluster("a", &spec)
        };
        let none = with(RecoverySpec::default());
        assert_eq!(fields(&none), ["spec.recovery"]);
        assert!(none.errors_message().contains("fromSurvivor: true"));
        let off = with(RecoverySpec {
            from_survivor: Some(false),
            ..RecoverySpec::default()
        });
        assert_eq!(fields(&off), ["spec.recovery"]);
        let bad = with(RecoverySpec {
            from_backup: Some(RecoveryFromBackup {
                backup_name: "Not/A/Name".into(),
            }),
            after: Some("soon".into()),
            ..RecoverySpec::default()
        });
        assert_eq!(
            fields(&bad),
            ["spec.recovery.fromBackup.backupName", "spec.recovery.after"]
        );
        assert!(bad.errors_message().contains("90s, 10m or 1h"));
        let short = with(RecoverySpec {
            from_survivor: Some(true),
            after: Some("5s".into()),
            ..RecoverySpec::default()
        });
        assert!(short.is_valid());
        assert_eq!(short.warnings[0].field, "spec.recovery.after");
        let fine = with(RecoverySpec {
            from_survivor: Some(true),
            from_backup: Some(RecoveryFromBackup {
                backup_name: "nightly".into(),
            }),
            after: Some("10m".into()),
        });
        assert!(fine.is_valid() && fine.warnings.is_empty(), "{fine:?}");
    }
}
