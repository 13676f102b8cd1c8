//! Recovery from lost quorum on the local runtime, end to end (issue 14): the operator loop on
//! real etcd processes, backups in a real Garage on loopback. Two of three members are
//! killed with their data deleted; with `spec.recovery` the cluster is recovered in place
//! (from a backup, or from the survivor) and the old data is kept; without it nothing
//! changes and the conditions say what to set; a cluster that lost only a minority, or
//! whose members come back within `after`, is never recovered. Each test prints how long
//! the cluster took from the loss of quorum to serving again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use etcd_operator::api::EtcdClusterStatus;
use etcd_operator::api::backup::EtcdBackupStatus;
use etcd_operator::api::cluster::ClusterPhase;
use etcd_operator::api::condition::{self, types};
use etcd_operator::api::recovery::{RecoveryMode, RecoveryOutcome, RecoveryTrigger};
use etcd_operator::backup::StaticCredentials;
use etcd_operator::testing::garage::{BUCKET, TestGarage};
use etcd_operator::testing::operator::*;
use etcd_operator::testing::wait_for;
use nix::sys::signal::{Signal, kill};

fn secret_yaml(name: &str, credentials: &StaticCredentials) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  accessKeyId: {}\n  secretAccessKey: {}\n",
        credentials.access_key_id,
        credentials.secret_access_key()
    )
}

/// A one-shot EtcdBackup of `cluster` into the test bucket.
fn backup_yaml(name: &str, cluster: &str, garage: &TestGarage) -> String {
    format!(
        "apiVersion: etcd.operator.dev/v1alpha1\nkind: EtcdBackup\nmetadata:\n  name: {name}\nspec:\n  clusterName: {cluster}\n  destination:\n    s3:\n      bucket: {BUCKET}\n      prefix: p\n      endpoint: {}\n      region: garage\n      forcePathStyle: true\n      credentialsSecret: s3\n",
        garage.endpoint()
    )
}

/// An EtcdCluster document with `annotations` (`key: value` lines, indented four spaces).
fn annotated(yaml: &str, annotations: &str) -> String {
    yaml.replacen(
        "metadata:\n",
        &format!("metadata:\n  annotations:\n{annotations}"),
        1,
    )
}

fn docs(parts: &[&str]) -> String {
    parts.join("---\n")
}

fn member_dir(s: &Scenario, cluster: &str, member: &str) -> PathBuf {
    s.state_dir()
        .join("clusters/default")
        .join(cluster)
        .join(member)
}

/// Deletes the data of every member but `keep` (data first: killed first, the operator
/// would restart it on its data before it is gone), then kills them.
fn lose_all_but(s: &Scenario, cluster: &str, st: &EtcdClusterStatus, keep: &str) -> Vec<String> {
    let mut lost = Vec::new();
    for m in st.members.iter().filter(|m| m.name != keep) {
        let pid = member_pid(&s.state_dir(), cluster, &m.name);
        std::fs::remove_dir_all(member_dir(s, cluster, &m.name).join("data")).unwrap();
        kill(pid, Signal::SIGKILL).unwrap();
        lost.push(m.name.clone());
    }
    lost
}

fn recovery_condition(st: &EtcdClusterStatus) -> Option<(String, String, String)> {
    condition::find(&st.conditions, types::RECOVERY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn available(st: &EtcdClusterStatus) -> bool {
    condition::is_true(&st.conditions, types::AVAILABLE)
}

fn last_outcome(st: &EtcdClusterStatus) -> Option<RecoveryOutcome> {
    st.recovery
        .as_ref()
        .and_then(|r| r.last_run.as_ref())
        .and_then(|r| r.outcome)
}

/// The member directories a recovery kept, by member name.
fn kept_dirs(s: &Scenario, cluster: &str) -> Vec<PathBuf> {
    let root = s.state_dir().join("kept/default").join(cluster);
    let mut out = Vec::new();
    for tag in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for m in std::fs::read_dir(tag.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(m.path());
        }
    }
    out.sort();
    out
}

fn has_wal(dir: &Path) -> bool {
    dir.join("data/member/wal").is_dir()
}

/// The command line of the member's live process.
fn cmdline(s: &Scenario, cluster: &str, member: &str) -> String {
    let pid = member_pid(&s.state_dir(), cluster, member);
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

async fn running_with_garage(
    cluster: &str,
    recovery: &str,
) -> (Scenario, TestGarage, String, EtcdClusterStatus) {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let garage = TestGarage::start().await.unwrap();
    s.write(&docs(&[
        &cluster_yaml(cluster, 3, &v, recovery),
        &secret_yaml("s3", &garage.credentials()),
    ]));
    s.start();
    let st = s.wait_running(cluster, 3, &v).await;
    (s, garage, v, st)
}

/// Waits until the operator has made `passes` more reconcile passes: what "nothing
/// changes" is asserted after, instead of a fixed sleep.
async fn wait_passes(s: &Scenario, passes: u64) {
    let from = s.metrics.reconciles.get();
    wait_for(LONG, &format!("{passes} more reconcile passes"), || async {
        let now = s.metrics.reconciles.get();
        if now >= from + passes {
            Ok(())
        } else {
            Err(now - from)
        }
    })
    .await
    .unwrap();
}

fn is_backed_up(s: &EtcdBackupStatus) -> bool {
    condition::is_true(&s.conditions, types::READY) && s.last_backup.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn from_backup_recovers_in_place_and_keeps_the_old_data() {
    let recovery = "  recovery:\n    fromBackup:\n      backupName: nightly\n    after: 5s\n";
    let (s, garage, v, st) = running_with_garage("inplace", recovery).await;
    put_keys(&st, "before", 200).await;
    s.write(&docs(&[
        &cluster_yaml("inplace", 3, &v, recovery),
        &secret_yaml("s3", &garage.credentials()),
        &backup_yaml("nightly", "inplace", &garage),
    ]));
    let backup = s
        .wait_backup("nightly", "backup ready", is_backed_up)
        .await
        .last_backup
        .unwrap();
    // Written after the backup: a restore of it cannot have them.
    put_keys(&st, "after", 20).await;
    let old_id = st.cluster_id.clone().unwrap();
    let survivor = st.members[0].name.clone();
    let lost = lose_all_but(&s, "inplace", &st, &survivor);
    let lost_at = Instant::now();

    let st = s
        .wait_status("inplace", "recovered from the backup", |st| {
            last_outcome(st) == Some(RecoveryOutcome::Succeeded) && available(st)
        })
        .await;
    let took = lost_at.elapsed();
    let rec = st.recovery.clone().unwrap();
    let run = rec.last_run.clone().unwrap();
    eprintln!(
        "fromBackup: quorum lost -> serving in {:.1}s (after: 5s)",
        took.as_secs_f64()
    );
    assert_eq!(run.mode, RecoveryMode::FromBackup);
    assert_eq!(run.trigger, RecoveryTrigger::Spec);
    let restored = run.backup.clone().unwrap();
    assert_eq!(restored.key, backup.key);
    assert_eq!(restored.sha256, backup.sha256);
    assert_eq!(restored.revision, backup.revision);
    assert_eq!(run.revision, Some(backup.revision));
    assert_eq!(rec.recoveries, 1);
    // In place: same name, a new cluster id, new member names.
    assert_ne!(st.cluster_id.as_deref(), Some(old_id.as_str()));
    assert_eq!(run.previous_cluster_id.as_deref(), Some(old_id.as_str()));
    assert_eq!(run.cluster_id, st.cluster_id);
    let (status, reason, message) = recovery_condition(&st).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Recovered"));
    for want in [
        format!("revision {} from EtcdBackup nightly", backup.revision),
        backup.key.clone(),
        "before quorum was lost".to_owned(),
    ] {
        assert!(message.contains(&want), "{want:?} not in {message}");
    }
    let st = s.wait_running("inplace", 3, &v).await;
    let names: Vec<&str> = st.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["inplace-3", "inplace-4", "inplace-5"]);
    // Every key up to the backup's revision; none written after it.
    assert_keys(&st, "before", 200).await;
    assert_keys(&st, "after", 0).await;
    // The old members' directories are kept, the survivor's with its data.
    let kept = kept_dirs(&s, "inplace");
    assert_eq!(kept.len(), 3, "{kept:?}");
    let survivor_kept = kept.iter().find(|d| d.ends_with(&survivor)).unwrap();
    assert!(has_wal(survivor_kept), "{}", survivor_kept.display());
    for name in &lost {
        assert!(kept.iter().any(|d| d.ends_with(name)), "{name}: {kept:?}");
        assert!(!member_dir(&s, "inplace", name).exists());
    }
    assert_eq!(run.kept.len(), 3);
    // The downloaded snapshot and the seed are gone.
    assert!(
        !s.state_dir()
            .join("recovery/default/inplace/snapshot.db")
            .exists()
    );
    assert!(!s.state_dir().join("seeds/default/inplace.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_spec_recovery_nothing_changes_until_the_annotation_asks() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let plain = cluster_yaml("alone", 3, &v, "");
    s.write(&plain);
    s.start();
    let st = s.wait_running("alone", 3, &v).await;
    put_keys(&st, "k", 50).await;
    let survivor = st.members[0].name.clone();
    let pid = member_pid(&s.state_dir(), "alone", &survivor);
    let lost = lose_all_but(&s, "alone", &st, &survivor);
    let st = s
        .wait_status("alone", "the condition says what to set", |st| {
            recovery_condition(st).is_some_and(|(_, reason, _)| reason == "NotConfigured")
        })
        .await;
    let (_, _, message) = recovery_condition(&st).unwrap();
    for want in [
        "spec.recovery.fromSurvivor: true".to_owned(),
        format!("({survivor}, raft index"),
        "spec.recovery.fromBackup.backupName".to_owned(),
        "etcd.operator.dev/recover=fromSurvivor".to_owned(),
    ] {
        assert!(message.contains(&want), "{want:?} not in {message}");
    }
    let degraded = condition::find(&st.conditions, types::DEGRADED).unwrap();
    assert_eq!(degraded.reason, "QuorumLost");
    assert!(
        degraded.message.contains("spec.recovery.fromSurvivor"),
        "{}",
        degraded.message
    );
    // Passes go by (one every resync, 0.5 s): nothing changes.
    wait_passes(&s, 16).await;
    let later = s.status("alone").unwrap().status.unwrap();
    assert_eq!(later.cluster_id, st.cluster_id);
    assert!(later.recovery.as_ref().unwrap().run.is_none());
    assert_eq!(last_outcome(&later), None);
    assert_eq!(member_pid(&s.state_dir(), "alone", &survivor), pid);
    assert!(has_wal(&member_dir(&s, "alone", &survivor)));
    assert!(kept_dirs(&s, "alone").is_empty());

    // The one-shot trigger runs the same recovery, once, without waiting.
    let asked = Instant::now();
    s.write(&annotated(
        &plain,
        "    etcd.operator.dev/recover: fromSurvivor\n",
    ));
    let st = s
        .wait_status("alone", "recovered once by the annotation", |st| {
            last_outcome(st) == Some(RecoveryOutcome::Succeeded)
                && st.members.len() == 3
                && st.members.iter().all(|m| m.healthy && !m.is_learner)
        })
        .await;
    eprintln!(
        "fromSurvivor (annotation): asked -> back to 3 members in {:.1}s",
        asked.elapsed().as_secs_f64()
    );
    let rec = st.recovery.clone().unwrap();
    let run = rec.last_run.clone().unwrap();
    assert_eq!(run.trigger, RecoveryTrigger::Annotation);
    assert_eq!(run.survivor.as_deref(), Some(survivor.as_str()));
    assert_eq!(rec.handled_trigger.as_deref(), Some("fromSurvivor"));
    assert_keys(&st, "k", 50).await;
    for name in &lost {
        assert!(!st.members.iter().any(|m| &m.name == name));
    }
    // Handled: it does not run again while it stays.
    wait_passes(&s, 6).await;
    let again = s.status("alone").unwrap().status.unwrap();
    assert_eq!(again.recovery.unwrap().recoveries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn from_survivor_keeps_the_writes_after_the_last_backup_and_grows_back_to_three() {
    // Both allowed: the survivor is tried first, as it loses less than the backup.
    let recovery = "  recovery:\n    fromSurvivor: true\n    fromBackup:\n      backupName: nightly\n    after: 5s\n";
    let (s, garage, v, st) = running_with_garage("survive", recovery).await;
    put_keys(&st, "before", 100).await;
    s.write(&docs(&[
        &cluster_yaml("survive", 3, &v, recovery),
        &secret_yaml("s3", &garage.credentials()),
        &backup_yaml("nightly", "survive", &garage),
    ]));
    s.wait_backup("nightly", "backup ready", is_backed_up).await;
    put_keys(&st, "after", 100).await;
    let old_id = st.cluster_id.clone().unwrap();
    let survivor = st.members[1].name.clone();
    let lost = lose_all_but(&s, "survive", &st, &survivor);
    let lost_at = Instant::now();
    let serving = s
        .wait_status("survive", "the survivor serves alone", |st| {
            st.recovery
                .as_ref()
                .and_then(|r| r.run.as_ref().or(r.last_run.as_ref()))
                .is_some_and(|r| r.serving_at.is_some())
        })
        .await;
    let to_serving = lost_at.elapsed();
    let st = s
        .wait_status("survive", "back to three members", |st| {
            last_outcome(st) == Some(RecoveryOutcome::Succeeded)
                && st.phase == ClusterPhase::Running
                && st.members.len() == 3
                && st.members.iter().all(|m| m.healthy && !m.is_learner)
        })
        .await;
    eprintln!(
        "fromSurvivor: quorum lost -> serving in {:.1}s, back to 3 members in {:.1}s (after: 5s)",
        to_serving.as_secs_f64(),
        lost_at.elapsed().as_secs_f64()
    );
    let _ = serving;
    let run = st.recovery.clone().unwrap().last_run.unwrap();
    assert_eq!(run.mode, RecoveryMode::FromSurvivor);
    assert_eq!(run.survivor.as_deref(), Some(survivor.as_str()));
    assert!(run.survivor_raft_index.is_some() && run.revision.is_some());
    // Same cluster, every write the survivor had, before and after the backup.
    assert_eq!(st.cluster_id.as_deref(), Some(old_id.as_str()));
    assert_keys(&st, "before", 100).await;
    assert_keys(&st, "after", 100).await;
    assert!(st.members.iter().any(|m| m.name == survivor));
    for name in &lost {
        assert!(!st.members.iter().any(|m| &m.name == name));
    }
    // --force-new-cluster was one-off: the survivor runs without it, and it is recorded
    // nowhere.
    let args = cmdline(&s, "survive", &survivor);
    assert!(args.contains("--data-dir="), "{args}");
    assert!(!args.contains("force-new-cluster"), "{args}");
    let record =
        std::fs::read_to_string(member_dir(&s, "survive", &survivor).join("member.json")).unwrap();
    assert!(!record.contains("force-new-cluster"));
    // The lost members' directories (their data was deleted) are kept, not removed.
    let kept = kept_dirs(&s, "survive");
    assert_eq!(kept.len(), 2, "{kept:?}");
    let info = members_via_etcd(&st).await;
    assert_eq!(info.voters().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_loss_or_members_back_within_after_is_never_recovered() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let recovery = "  recovery:\n    fromSurvivor: true\n    after: 90s\n";
    s.write(&cluster_yaml("steady", 3, &v, recovery));
    s.start();
    let st = s.wait_running("steady", 3, &v).await;
    put_keys(&st, "k", 30).await;
    let never_recovered = |st: &EtcdClusterStatus| {
        st.recovery
            .as_ref()
            .is_none_or(|r| r.run.is_none() && r.last_run.is_none() && r.recoveries == 0)
    };

    // A minority lost (one member and its data): replaced as usual.
    let victim = st.members[2].name.clone();
    let lost = lose_all_but(
        &s,
        "steady",
        &EtcdClusterStatus {
            members: vec![st.members[2].clone()],
            ..st.clone()
        },
        "",
    );
    assert_eq!(lost, std::slice::from_ref(&victim));
    let st = s
        .wait_status("steady", "the lost member replaced", |st| {
            st.phase == ClusterPhase::Running
                && st.members.len() == 3
                && st.members.iter().all(|m| m.healthy && !m.is_learner)
                && !st.members.iter().any(|m| m.name == victim)
        })
        .await;
    assert!(never_recovered(&st), "{:?}", st.recovery);

    // Two members hang (quorum lost) and come back within `after`.
    let hung: Vec<String> = st.members[1..].iter().map(|m| m.name.clone()).collect();
    let pids: Vec<_> = hung
        .iter()
        .map(|m| member_pid(&s.state_dir(), "steady", m))
        .collect();
    for pid in &pids {
        kill(*pid, Signal::SIGSTOP).unwrap();
    }
    let waiting = s
        .wait_status("steady", "recovery waits for `after`", |st| {
            recovery_condition(st).is_some_and(|(_, reason, _)| reason == "Waiting")
        })
        .await;
    let (_, _, message) = recovery_condition(&waiting).unwrap();
    assert!(message.contains("1m30s"), "{message}");
    // Hung for a few more passes (each waits out the hung members' 2 s observation
    // timeouts), well within `after`.
    wait_passes(&s, 3).await;
    for pid in &pids {
        kill(*pid, Signal::SIGCONT).unwrap();
    }
    let st = s
        .wait_status("steady", "quorum back by itself", |st| {
            st.phase == ClusterPhase::Running
                && st.members.iter().all(|m| m.healthy)
                && st
                    .recovery
                    .as_ref()
                    .is_none_or(|r| r.quorum_lost_since.is_none())
        })
        .await;
    assert!(never_recovered(&st), "{:?}", st.recovery);

    // Two members killed (their data kept) come back at once: restarted, not recovered.
    let killed: Vec<String> = st.members[..2].iter().map(|m| m.name.clone()).collect();
    for m in &killed {
        kill(member_pid(&s.state_dir(), "steady", m), Signal::SIGKILL).unwrap();
    }
    let st = wait_for(LONG, "killed members restarted", || async {
        let st = s.status("steady").and_then(|c| c.status);
        match st {
            Some(st)
                if st.phase == ClusterPhase::Running
                    && st.members.iter().all(|m| m.healthy)
                    && killed
                        .iter()
                        .all(|m| member_pid_opt(&s.state_dir(), "steady", m).is_some()) =>
            {
                Ok(st)
            }
            other => Err(format!("{:?}", other.map(|s| s.phase))),
        }
    })
    .await
    .unwrap();
    assert!(never_recovered(&st), "{:?}", st.recovery);
    assert!(kept_dirs(&s, "steady").is_empty());
    assert_keys(&st, "k", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_that_cannot_fetch_its_backup_changes_nothing_and_says_why() {
    let v = latest(5);
    let mut s = Scenario::new(fast_policy());
    let recovery = "  recovery:\n    fromBackup:\n      backupName: missing\n    after: 2s\n";
    s.write(&cluster_yaml("nobackup", 3, &v, recovery));
    s.start();
    let st = s.wait_running("nobackup", 3, &v).await;
    put_keys(&st, "k", 10).await;
    let survivor = st.members[0].name.clone();
    let pid = member_pid(&s.state_dir(), "nobackup", &survivor);
    lose_all_but(&s, "nobackup", &st, &survivor);
    let failed = s
        .wait_status("nobackup", "the recovery failed, saying why", |st| {
            last_outcome(st) == Some(RecoveryOutcome::Failed)
        })
        .await;
    let rec = failed.recovery.clone().unwrap();
    let run = rec.last_run.clone().unwrap();
    assert_eq!(run.reason.as_deref(), Some("BackupNotFound"));
    assert!(
        run.message.as_deref().is_some_and(|m| m.contains("EtcdBackup missing")
            && m.ends_with("nothing was changed")),
        "{run:?}"
    );
    assert!(run.kept.is_empty());
    let (_, reason, message) = recovery_condition(&failed).unwrap();
    assert!(
        ["RecoveryFailed", "BackingOff"].contains(&reason.as_str()),
        "{reason}: {message}"
    );
    // Everything as it was: the survivor runs on its data, same process, same cluster.
    assert_eq!(member_pid(&s.state_dir(), "nobackup", &survivor), pid);
    assert!(has_wal(&member_dir(&s, "nobackup", &survivor)));
    assert!(kept_dirs(&s, "nobackup").is_empty());
    assert_eq!(failed.cluster_id, st.cluster_id);
    // It is tried again after a back-off, and fails the same way.
    let again = s
        .wait_status("nobackup", "a second attempt", |st| {
            st.recovery.as_ref().is_some_and(|r| r.failures >= 2)
        })
        .await;
    assert_eq!(again.recovery.unwrap().recoveries, 0);
    assert_eq!(member_pid(&s.state_dir(), "nobackup", &survivor), pid);
}
