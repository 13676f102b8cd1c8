//! Whether a local cluster is what its spec asks for, judged from the real state rather than
//! from its status file (which a killed operator may have left stale): the member
//! directories under the state dir, the etcd processes in `/proc`, and etcd's own member
//! list and endpoint status. The crash-point tests and the randomized fault run wait on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::etcd::{EtcdAdmin, Timeouts};

/// A cluster found converged.
#[derive(Debug, Clone)]
pub struct Converged {
    /// The application client certificate of a TLS cluster ([`local_client_tls`]).
    pub client_tls: Option<crate::etcd::TlsConfig>,
    /// Member names, sorted.
    pub members: Vec<String>,
    pub client_urls: Vec<String>,
}

/// The `--data-dir=` of every live etcd process whose data dir is under `state`, with the
/// pids of the processes using it.
pub fn etcd_processes_under(state: &Path) -> BTreeMap<String, Vec<u32>> {
    let needle = format!("--data-dir={}/", state.display());
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        for arg in cmdline.split(|b| *b == 0) {
            let arg = String::from_utf8_lossy(arg);
            if let Some(dir) = arg.strip_prefix("--data-dir=")
                && arg.starts_with(&needle)
            {
                found
                    .entry(dir.to_string())
                    .or_insert_with(Vec::new)
                    .push(pid);
            }
        }
    }
    found
}

/// The member directories of local cluster `name` (namespace `default`) with their client
/// URL from `member.json`.
pub fn member_dirs(state: &Path, name: &str) -> BTreeMap<String, Option<String>> {
    let dir = state.join("clusters/default").join(name);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let member = entry.file_name().to_string_lossy().to_string();
        let url = std::fs::read(entry.path().join("member.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["address"]["client_url"].as_str().map(String::from));
        out.insert(member, url);
    }
    out
}

/// The application client certificate the operator issued for local cluster `name` under
/// `state` (`<state>/tls/default/<name>/client.crt`, `client.key`, `ca.crt`); `None` when
/// it has none (a plaintext cluster).
pub fn local_client_tls(state: &Path, name: &str) -> Option<crate::etcd::TlsConfig> {
    client_tls_in(&state.join("tls/default").join(name))
}

/// The client certificate, key and CA in `dir`, as the operator lays them out.
pub fn client_tls_in(dir: &Path) -> Option<crate::etcd::TlsConfig> {
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    Some(crate::etcd::TlsConfig::new(
        read("ca.crt")?,
        read("client.crt")?,
        read("client.key")?,
    ))
}

/// Connect options that present `tls` (plaintext when `None`), with short timeouts.
pub fn connect_options(tls: Option<&crate::etcd::TlsConfig>) -> etcd_client::ConnectOptions {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    match tls {
        Some(tls) => options.with_tls(tls.to_options().expect("issued PEM is well formed")),
        None => options,
    }
}

/// `Ok` when local cluster `name` under `state` has exactly `size` members at `version`:
/// one directory and one live etcd process per member and no other, each the process its
/// pid file names (the one the runtime stops and watches), etcd lists exactly
/// those members (named, all voters, no learner, no duplicate), and every member answers
/// with the same leader. `Err` says what differs.
pub async fn check(
    state: &Path,
    name: &str,
    size: usize,
    version: &str,
) -> Result<Converged, String> {
    let dirs = member_dirs(state, name);
    if dirs.len() != size {
        return Err(format!("{} member dirs: {:?}", dirs.len(), dirs.keys()));
    }
    let processes = etcd_processes_under(state);
    let cluster_dir = state.join("clusters/default").join(name);
    for member in dirs.keys() {
        let data = format!("{}/{member}/data", cluster_dir.display());
        let pids = processes.get(&data).cloned().unwrap_or_default();
        if pids.len() != 1 {
            return Err(format!("{member}: processes {pids:?}"));
        }
        let pid_file = std::fs::read_to_string(cluster_dir.join(member).join("etcd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if pid_file != Some(pids[0]) {
            return Err(format!(
                "{member}: process {} runs, the pid file names {pid_file:?}",
                pids[0]
            ));
        }
    }
    let ours: usize = processes.values().map(Vec::len).sum();
    if ours != size {
        return Err(format!(
            "{ours} etcd processes under the state dir: {processes:?}"
        ));
    }
    let urls: Vec<String> = dirs.values().flatten().cloned().collect();
    if urls.len() != size {
        return Err(format!("member records without a client URL: {dirs:?}"));
    }
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(3),
        ..Timeouts::default()
    };
    let client_tls = local_client_tls(state, name);
    let tls = crate::etcd::TlsConfig::for_endpoints(&urls, client_tls.as_ref());
    let admin = EtcdAdmin::connect_with(urls.clone(), tls, timeouts)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let info = admin
        .member_list()
        .await
        .map_err(|e| format!("member list: {e}"))?;
    let listed: BTreeSet<&str> = info.members.iter().map(|m| m.name.as_str()).collect();
    let want: BTreeSet<&str> = dirs.keys().map(String::as_str).collect();
    if info.members.len() != size || listed != want || info.learners().count() > 0 {
        return Err(format!(
            "etcd lists {:?} (learners {}), dirs {want:?}",
            info.members
                .iter()
                .map(|m| (m.name.clone(), m.id))
                .collect::<Vec<_>>(),
            info.learners().count()
        ));
    }
    let mut leaders = BTreeSet::new();
    for url in &urls {
        let st = admin
            .status(url)
            .await
            .map_err(|e| format!("status {url}: {e}"))?;
        if st.version.to_string() != version {
            return Err(format!("{url} runs {}", st.version));
        }
        if !st.has_leader() {
            return Err(format!("{url} knows no leader"));
        }
        leaders.insert(st.leader);
    }
    if leaders.len() != 1 {
        return Err(format!("members disagree on the leader: {leaders:?}"));
    }
    Ok(Converged {
        client_tls,
        members: dirs.keys().cloned().collect(),
        client_urls: urls,
    })
}

/// Waits up to `within` for [`check`] to pass.
pub async fn wait(
    state: &Path,
    name: &str,
    size: usize,
    version: &str,
    within: Duration,
) -> Result<Converged, String> {
    crate::testing::wait_for(
        within,
        &format!("{name}: {size} members at {version}"),
        || check(state, name, size, version),
    )
    .await
    .map_err(|e| e.to_string())
}
