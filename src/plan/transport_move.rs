//! Moving a running cluster between plaintext and TLS, as the spec asks, in two rolls of
//! the kind upgrades make ([`super::rolling`]: one member at a time, every member healthy,
//! the leader last after moving leadership):
//!
//! Towards TLS (members made before TLS, or with `spec.tls.mode: Disabled`, and the spec now
//! asks for TLS):
//! 1. [`TransportStage::DialTls`]: each member is restarted still listening plaintext but
//!    holding the cluster's peer certificate and trusting its CA, so it can dial members
//!    that listen with TLS. Nothing changes for anyone dialling it.
//! 2. [`TransportStage::ListenTls`], once every member dials TLS: each member is stopped,
//!    its peer URL moved to `https://` in etcd (`member update`, by the quorum of the
//!    others), and started with TLS listeners requiring client certificates on both ports.
//!    Its client URL changes scheme at the same restart.
//!
//! Towards plaintext (`spec.tls.mode: Disabled` on a TLS cluster, also to undo a move to
//! TLS half-way), the same backwards:
//! 1. [`TransportStage::ListenPlain`]: each member that listens with TLS is moved to
//!    plaintext listeners the same way, keeping the peer certificate to dial the members
//!    still on TLS.
//! 2. [`TransportStage::DropCertificates`], once none listens with TLS: each is restarted
//!    without certificates.
//!
//! The first stage of every member comes before the second of any: a member that cannot
//! dial TLS never has a peer that listens with it. A cluster with a member to move on an
//! emptyDir is not moved (its restart would lose its data).
//!
//! A crash inside a listener move leaves a member whose recorded address and etcd's peer
//! URL differ in scheme; [`repair_peer_url`] tells etcd the runtime's one, before anything
//! else that needs the whole cluster.

use super::Ctx;
use super::observed::ObservedMember;
use super::rolling;
use super::step::{Step, TransportStage};

/// The next step moving the cluster to the transport the spec asks for; `None` when every
/// member is there (or a move cannot be made).
pub(super) fn next(ctx: &Ctx) -> Option<Step> {
    let o = ctx.observed;
    if o.transport_move_blocked(ctx.tls_wanted) {
        return None;
    }
    let installed = o.trust_stamp.as_deref();
    let roll = |stage: TransportStage| {
        rolling::next(
            ctx,
            |m: &ObservedMember| m.transport_pending(ctx.tls_wanted, installed) == Some(stage),
            |m: &ObservedMember, id| Step::MoveTransport {
                name: m.name.clone(),
                id,
                stage,
            },
        )
    };
    if ctx.tls_wanted {
        roll(TransportStage::DialTls).or_else(|| roll(TransportStage::ListenTls))
    } else {
        roll(TransportStage::ListenPlain).or_else(|| roll(TransportStage::DropCertificates))
    }
}

/// `member update` for a member etcd dials at the runtime's address but with the other
/// scheme; `None` when every member's peer URL is the runtime's.
pub(super) fn repair_peer_url(ctx: &Ctx) -> Option<Step> {
    ctx.observed.members.iter().find_map(|m| {
        let runtime = m.runtime.as_ref()?;
        let etcd = m.etcd.as_ref()?;
        let [url] = etcd.peer_urls.as_slice() else {
            return None;
        };
        (url != &runtime.peer_url && without_scheme(url) == without_scheme(&runtime.peer_url)).then(
            || Step::UpdatePeerUrl {
                name: m.name.clone(),
                id: etcd.id,
                peer_url: runtime.peer_url.clone(),
            },
        )
    })
}

fn without_scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use crate::api::tls::{TlsMode, TlsSpec};
    use crate::plan::fixtures::*;
    use crate::plan::invariants::broken_rules;
    use crate::plan::{Observed, Step, TransportStage, WaitReason, next_step};

    /// `n` plaintext voters led by member 0, with certificates installed (stamp "s");
    /// `dialing` already hold them.
    fn plain(n: u32, dialing: &[u32]) -> Observed {
        let mut o = observed(n);
        o.trust_stamp = Some("s".into());
        for ordinal in dialing {
            o.at(*ordinal).runtime.as_mut().unwrap().trust_stamp = Some("s".into());
        }
        o
    }

    /// Member `ordinal` listens with TLS (and etcd dials it so).
    fn moved(mut o: Observed, ordinal: u32) -> Observed {
        let m = o.at(ordinal);
        let r = m.runtime.as_mut().unwrap();
        r.peer_url = r.peer_url.replace("http://", "https://");
        r.client_url = r.client_url.replace("http://", "https://");
        r.trust_stamp = Some("s".into());
        m.etcd.as_mut().unwrap().peer_urls = vec![r.peer_url.clone()];
        o
    }

    fn plan_with(o: &Observed, mode: Option<TlsMode>) -> Step {
        let mut s = spec(3, VERSION);
        s.tls = mode.map(|mode| TlsSpec {
            mode,
            ..Default::default()
        });
        let step = next_step(&s, o, &policy());
        assert_eq!(broken_rules(&step, &s, o), [], "{step}");
        step
    }

    fn plan(o: &Observed) -> Step {
        plan_with(o, None)
    }

    fn step(ordinal: u32, stage: TransportStage) -> Step {
        Step::MoveTransport {
            name: name(ordinal),
            id: id(ordinal),
            stage,
        }
    }

    #[test]
    fn every_member_dials_tls_before_the_first_listens_with_it() {
        use TransportStage::{DialTls, ListenTls as Listen};
        assert_eq!(plan(&plain(3, &[])), step(1, DialTls));
        assert_eq!(plan(&plain(3, &[1])), step(2, DialTls));
        // Only the leader is left: leadership moves to a follower that dials TLS first.
        assert!(matches!(plan(&plain(3, &[1, 2])), Step::MoveLeader { to, .. } if to == name(1)));
        assert_eq!(plan(&plain(3, &[1, 2]).with_leader(1)), step(0, DialTls));
        // Then the listeners, followers first, the leader last.
        assert_eq!(plan(&plain(3, &[0, 1, 2])), step(1, Listen));
        let o = moved(plain(3, &[0, 1, 2]), 1);
        assert_eq!(plan(&o), step(2, Listen));
        let o = moved(o, 2);
        assert!(matches!(plan(&o), Step::MoveLeader { to, .. } if to == name(1)));
        assert_eq!(plan(&o.clone().with_leader(1)), step(0, Listen));
        assert_eq!(plan(&moved(o, 0)), Step::Done);
    }

    #[test]
    fn nothing_moves_without_a_wish_certificates_or_health() {
        assert_eq!(
            plan_with(&plain(3, &[]), Some(TlsMode::Disabled)),
            Step::Done
        );
        let mut o = plain(3, &[]);
        o.trust_stamp = None;
        assert_eq!(plan(&o), Step::Done);
        let step = plan(&plain(3, &[0, 1, 2]).with_unhealthy(2));
        assert!(!matches!(step, Step::MoveTransport { .. }), "{step}");
        let step = plan(&plain(3, &[0, 1, 2]).with_learner(3, LEADER_RAFT_INDEX));
        assert!(!matches!(step, Step::MoveTransport { .. }), "{step}");
        let step = plan(&plain(3, &[]).without_leader());
        assert!(
            matches!(
                step,
                Step::Wait {
                    reason: WaitReason::NoLeader
                }
            ),
            "{step}"
        );
        // A plaintext member on an emptyDir would come back empty: no move starts.
        let mut o = plain(3, &[]);
        o.at(2).runtime.as_mut().unwrap().restart_keeps_data = false;
        assert_eq!(plan(&o), Step::Done);
    }

    #[test]
    fn leaving_tls_moves_every_listener_before_any_member_drops_its_certificates() {
        use TransportStage::{DropCertificates, ListenPlain};
        let disabled = Some(TlsMode::Disabled);
        let tls = (0..3).fold(plain(3, &[]), moved);
        assert_eq!(plan_with(&tls, disabled), step(1, ListenPlain));
        // Member 1 listens plaintext, still holding its certificate (stamp "s").
        let back = |mut o: Observed, ordinal: u32| {
            let m = o.at(ordinal);
            let r = m.runtime.as_mut().unwrap();
            r.peer_url = r.peer_url.replace("https://", "http://");
            r.client_url = r.client_url.replace("https://", "http://");
            m.etcd.as_mut().unwrap().peer_urls = vec![r.peer_url.clone()];
            o
        };
        let o = back(tls, 1);
        assert_eq!(plan_with(&o, disabled), step(2, ListenPlain));
        let o = back(o, 2);
        assert!(matches!(plan_with(&o, disabled), Step::MoveLeader { to, .. } if to == name(1)));
        let o = back(o.with_leader(1), 0);
        // None listens with TLS: certificates go, followers first. Once none listens with
        // TLS the operator no longer installs certificates (no stamp): still done.
        assert_eq!(plan_with(&o, disabled), step(0, DropCertificates));
        let mut o = o;
        o.trust_stamp = None;
        assert_eq!(plan_with(&o, disabled), step(0, DropCertificates));
        for ordinal in 0..3 {
            o.at(ordinal).runtime.as_mut().unwrap().trust_stamp = None;
        }
        assert_eq!(plan_with(&o, disabled), Step::Done);
    }

    #[test]
    fn a_move_to_tls_undone_half_way_goes_back_the_same_way() {
        use TransportStage::ListenPlain;
        // Member 1 already listens with TLS, 0 and 2 dial TLS: the spec says Disabled again.
        let o = moved(plain(3, &[0, 2]), 1);
        assert_eq!(plan_with(&o, Some(TlsMode::Disabled)), step(1, ListenPlain));
        // And forward again.
        assert_eq!(plan(&o), step(2, TransportStage::ListenTls));
    }

    #[test]
    fn a_move_cut_between_record_and_member_update_is_finished_first() {
        // The runtime recorded member 2's https address; etcd still dials it over http.
        let mut o = moved(plain(3, &[0, 1, 2]), 2);
        o.at(2).etcd.as_mut().unwrap().peer_urls = vec![
            o.at(2)
                .runtime
                .as_ref()
                .unwrap()
                .peer_url
                .replace("https://", "http://"),
        ];
        let want = o.at(2).runtime.as_ref().unwrap().peer_url.clone();
        assert_eq!(
            plan(&o),
            Step::UpdatePeerUrl {
                name: name(2),
                id: id(2),
                peer_url: want,
            }
        );
        // Another host is not a scheme change: never "repaired".
        let mut o = plain(3, &[0, 1, 2]);
        o.at(2).etcd.as_mut().unwrap().peer_urls = vec!["http://10.0.0.9:2380".into()];
        assert!(!matches!(plan(&o), Step::UpdatePeerUrl { .. }));
    }
}
