//! A local cluster's TLS material: `<state>/tls/<namespace>/<cluster>/`, one PEM file per
//! bundle entry (mode 0600, directory 0700), valid for 127.0.0.1 and localhost.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::certs::bundle::{self, Entries, Wanted};
use crate::certs::ca_rotation;
use crate::etcd::TlsConfig;
use crate::runtime::{CertificateSource, ClusterCertificates, ClusterRef, Error};

use super::record;

/// Every name a local member is reached by.
const NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// The name members are dialled at: what a provided server or peer certificate must carry.
pub const DIALLED: &str = "127.0.0.1";

/// The files of every entry of the bundle that exists under `dir`.
fn read_entries(dir: &Path) -> Result<Entries, Error> {
    let mut entries = BTreeMap::new();
    for name in bundle::ALL {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(pem) => {
                entries.insert(name.to_string(), pem);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::CertificateFile { path, source }),
        }
    }
    Ok(entries)
}

/// Makes the cluster's material on disk what `source` says (see
/// [`crate::runtime::MemberRuntime::ensure_certificates`]) and returns it. `member_stamps`:
/// the trust stamp each started member was last started with, when
/// [`CertificateSource::waits_for_members`] (`None`: they count as current).
pub fn ensure(
    state_dir: &Path,
    cluster: &ClusterRef,
    now: jiff::Timestamp,
    source: CertificateSource<'_>,
    member_stamps: Option<&[Option<String>]>,
) -> Result<ClusterCertificates, Error> {
    let dir = record::tls_dir(state_dir, cluster)?;
    fs::create_dir_all(&dir).map_err(|source| Error::CreateDir {
        path: dir.clone(),
        source,
    })?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
        Error::CertificateFile {
            path: dir.clone(),
            source,
        }
    })?;
    let existing = read_entries(&dir)?;
    let installed = ca_rotation::trust_stamp(&existing);
    let members_current = member_stamps.is_none_or(|stamps| stamps.iter().all(|s| *s == installed));
    let provided = matches!(source, CertificateSource::Provided { .. });
    let mut provided_phase = None;
    let (entries, issued) = match source {
        CertificateSource::Issue { asked } => {
            let wanted = Wanted {
                cluster: cluster.name.clone(),
                names: NAMES.iter().map(|n| n.to_string()).collect(),
                leaf_lifetime: crate::certs::LEAF_LIFETIME,
                ca_lifetime: crate::certs::CA_LIFETIME,
            };
            let (entries, issued) =
                bundle::complete(&existing, &wanted, now, asked, members_current).map_err(
                    |source| Error::Certificates {
                        cluster: cluster.clone(),
                        source,
                    },
                )?;
            (entries, issued)
        }
        CertificateSource::Provided {
            entries,
            may_change_ca,
        } => {
            // Another CA than members trust is moved to in phases (see
            // `ca_rotation::provided_install`); before any member ran, at once.
            let install = if may_change_ca {
                entries.clone()
            } else {
                let (install, phase) =
                    ca_rotation::provided_install(&existing, entries, members_current);
                provided_phase = phase;
                install
            };
            // The operator's CA key (if it made one before) stays where it was: an entry
            // the provided set has not is left alone, never deleted.
            let mut merged = existing.clone();
            merged.extend(install);
            let issued = ca_rotation::installed_phase(provided_phase, &existing, &merged);
            (merged, issued)
        }
        CertificateSource::Installed => (existing.clone(), Vec::new()),
    };
    // Each file is replaced atomically, but a certificate and its key are two files: a
    // reader between the two renames (microseconds) sees a new key beside the old
    // certificate and fails that one handshake (the TLS benchmark's reconnecting writer hit it in
    // one of three runs of five rotations; etcd and clients retry). Kubernetes swaps a
    // Secret volume's files at once; locally a directory swap would close this window.
    for name in bundle::ALL.iter().rev() {
        if existing.get(*name) == entries.get(*name) {
            continue;
        }
        let path = dir.join(name);
        match entries.get(*name) {
            // Written atomically, 0600 (a new temporary file's mode).
            Some(pem) => record::write_file(&path, pem.as_bytes())?,
            // Only a CA rotation's next CA goes away (it became the signing CA).
            None => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::CertificateFile { path, source }),
            },
        }
    }
    let dir_text = dir.display().to_string();
    let mut installed = ClusterCertificates::of(&entries, issued, dir_text, members_current)
        .ok_or_else(|| Error::NoCertificates {
            cluster: cluster.clone(),
        })?;
    if provided {
        installed.ca_phase = provided_phase;
    }
    Ok(installed)
}

/// The directory of a cluster's material, as members' flags name it.
pub fn dir(state_dir: &Path, cluster: &ClusterRef) -> Result<PathBuf, Error> {
    record::tls_dir(state_dir, cluster)
}

/// The operator's client identity for `cluster` as it is on disk, without issuing anything;
/// `None` when the cluster has no certificates.
pub fn operator_tls(state_dir: &Path, cluster: &ClusterRef) -> Result<Option<TlsConfig>, Error> {
    let entries = read_entries(&record::tls_dir(state_dir, cluster)?)?;
    Ok(ClusterCertificates::of(&entries, Vec::new(), String::new(), true).map(|c| c.operator))
}

/// What members read now (every entry on disk).
pub fn installed(state_dir: &Path, cluster: &ClusterRef) -> Result<Entries, Error> {
    read_entries(&record::tls_dir(state_dir, cluster)?)
}

/// The trust stamp a member started now runs with; `None` without a CA on disk.
pub fn trust_stamp(state_dir: &Path, cluster: &ClusterRef) -> Result<Option<String>, Error> {
    Ok(ca_rotation::trust_stamp(&read_entries(&record::tls_dir(
        state_dir, cluster,
    )?)?))
}
