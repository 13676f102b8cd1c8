//! Named crash points: places between an etcd change and the runtime change that follows
//! it, and between a runtime change and the status write that records it, where a test can
//! kill the operator on purpose (issue 13). Each name says which change was just made.
//!
//! With the cargo feature `failpoints` (test builds only: the dev-dependency turns it on;
//! the release binary never has it) the binary reads `FAILPOINTS` at start, in the `fail`
//! crate's syntax: `FAILPOINTS=add-learner-after-etcd-add=return` kills the process with
//! SIGKILL at that point, as `kill -9` would: no destructor, no flush, no status write.
//! Without the feature [`crash_point`] compiles to nothing.

/// Every crash point, in the order a step passes them.
pub const ALL: &[&str] = &[
    BOOTSTRAP_AFTER_RESERVE,
    BOOTSTRAP_AFTER_FIRST_START,
    BOOTSTRAP_AFTER_START,
    LOCAL_AFTER_LAUNCH_RECORD,
    LOCAL_AFTER_SPAWN,
    LOCAL_AFTER_TOMBSTONE,
    ADD_LEARNER_AFTER_RESERVE,
    ADD_LEARNER_AFTER_ETCD_ADD,
    ADD_LEARNER_AFTER_START,
    START_MEMBER_AFTER_START,
    PROMOTE_AFTER_ETCD_PROMOTE,
    REMOVE_AFTER_ETCD_REMOVE,
    REMOVE_AFTER_DELETE,
    DELETE_RUNTIME_MEMBER_AFTER_DELETE,
    RESTART_AFTER_RESTART,
    MOVE_LEADER_AFTER_ETCD_MOVE,
    UPGRADE_AFTER_RESTART,
    MOVE_TRANSPORT_AFTER_RECORD,
];

/// Bootstrap: every member's address reserved, no process started.
pub const BOOTSTRAP_AFTER_RESERVE: &str = "bootstrap-after-reserve";
/// Bootstrap: the first member started, the others not (k of n).
pub const BOOTSTRAP_AFTER_FIRST_START: &str = "bootstrap-after-first-start";
/// Bootstrap: every member started, status not written.
pub const BOOTSTRAP_AFTER_START: &str = "bootstrap-after-start";
/// Local runtime: a member's launch flags on disk, its process not spawned.
pub const LOCAL_AFTER_LAUNCH_RECORD: &str = "local-after-launch-record";
/// Local runtime: a member process spawned, its pid not yet on disk.
pub const LOCAL_AFTER_SPAWN: &str = "local-after-spawn";
/// Local runtime: a deleted member's directory renamed aside, its files not yet removed.
pub const LOCAL_AFTER_TOMBSTONE: &str = "local-after-tombstone";
/// AddLearner: address reserved, etcd not told.
pub const ADD_LEARNER_AFTER_RESERVE: &str = "add-learner-after-reserve";
/// AddLearner: etcd lists the learner, its process not started.
pub const ADD_LEARNER_AFTER_ETCD_ADD: &str = "add-learner-after-etcd-add";
/// AddLearner: the learner's process started, status not written.
pub const ADD_LEARNER_AFTER_START: &str = "add-learner-after-start";
/// StartMember: the added member's process started, status not written.
pub const START_MEMBER_AFTER_START: &str = "start-member-after-start";
/// PromoteLearner: etcd promoted it, status not written.
pub const PROMOTE_AFTER_ETCD_PROMOTE: &str = "promote-learner-after-etcd-promote";
/// RemoveMember: etcd removed it, its process and data still there.
pub const REMOVE_AFTER_ETCD_REMOVE: &str = "remove-member-after-etcd-remove";
/// RemoveMember: process and data deleted, status not written.
pub const REMOVE_AFTER_DELETE: &str = "remove-member-after-delete";
/// DeleteRuntimeMember: the leftover deleted, status not written.
pub const DELETE_RUNTIME_MEMBER_AFTER_DELETE: &str = "delete-runtime-member-after-delete";
/// RestartMember: the process restarted, status not written.
pub const RESTART_AFTER_RESTART: &str = "restart-member-after-restart";
/// MoveLeader: etcd moved the leader, status not written.
pub const MOVE_LEADER_AFTER_ETCD_MOVE: &str = "move-leader-after-etcd-move";
/// UpgradeMember: restarted at the new version, status not written.
pub const UPGRADE_AFTER_RESTART: &str = "upgrade-member-after-restart";
/// Moving a member's listeners between plaintext and TLS: it is stopped and the runtime
/// recorded its address with the new scheme; etcd still dials it at the old one.
pub const MOVE_TRANSPORT_AFTER_RECORD: &str = "move-transport-after-record";

/// Kills this process with SIGKILL when crash point `name` is configured to `return` (the
/// `fail` crate's other actions, e.g. `panic` or `sleep(ms)`, behave as that crate says).
#[inline]
pub fn crash_point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("etcd-operator: crash point {name} reached; killing this process");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Reads `FAILPOINTS` (feature `failpoints` only) for the rest of the process's life.
pub fn setup_from_env() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
