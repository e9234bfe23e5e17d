//! Who may connect: peer credentials (`SO_PEERCRED`) checked against the owner group.

use nix::sys::socket::{getsockopt, sockopt};
use std::os::unix::net::UnixStream;

/// A connected peer, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Process id at connect time.
    pub pid: i32,
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid.
    pub gid: u32,
}

/// The admission rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The owner group's gid; `None` when the configured group does not exist.
    pub group: Option<u32>,
    /// The daemon's own uid (always admitted, like root).
    pub daemon_uid: u32,
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The owner group does not exist, so only root and the daemon's uid are admitted.
    #[error("uid {uid} refused: the owner group does not exist; only root and uid {daemon_uid} may connect")]
    NoGroup {
        /// The peer's uid.
        uid: u32,
        /// The daemon's uid.
        daemon_uid: u32,
    },
    /// The peer is not in the owner group.
    #[error("uid {uid} (gid {gid}) is not in group {group}")]
    NotInGroup {
        /// The peer's uid.
        uid: u32,
        /// The peer's primary gid.
        gid: u32,
        /// The owner group.
        group: u32,
    },
}

/// Whether the owner group must be checked beyond uid and primary gid (then the supplementary
/// groups are needed).
pub fn needs_supplementary(peer: &Peer, policy: &Policy) -> bool {
    peer.uid != 0 && peer.uid != policy.daemon_uid && policy.group.is_some_and(|g| g != peer.gid)
}

/// Admit or refuse `peer` whose supplementary groups are `supplementary`.
pub fn admit(peer: &Peer, supplementary: &[u32], policy: &Policy) -> Result<(), Refusal> {
    if peer.uid == 0 || peer.uid == policy.daemon_uid {
        return Ok(());
    }
    let Some(group) = policy.group else {
        return Err(Refusal::NoGroup {
            uid: peer.uid,
            daemon_uid: policy.daemon_uid,
        });
    };
    if peer.gid == group || supplementary.contains(&group) {
        Ok(())
    } else {
        Err(Refusal::NotInGroup {
            uid: peer.uid,
            gid: peer.gid,
            group,
        })
    }
}

/// The supplementary groups from the text of `/proc/<pid>/status` (its `Groups:` line).
pub fn parse_status_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

/// The kernel's credentials of the process at the other end of `stream`.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let c = getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(Peer {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Supplementary groups of process `pid`. (The process could exit and its pid be reused between
/// connect and this read; a reused pid belongs to a process that did not connect, so the result
/// can only wrongly refuse, never wrongly admit a process that lacks the groups, unless the new
/// process has them — then it could have connected itself.)
pub fn supplementary_groups(pid: i32) -> std::io::Result<Vec<u32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_groups(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no readable Groups: line"),
        )
    })
}

/// The policy for owner group `name` (looked up in the group database).
pub fn policy_for(name: &str) -> Policy {
    let group = match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        Ok(None) => {
            tracing::warn!(
                group = name,
                "owner group does not exist: only root and the daemon's uid may connect"
            );
            None
        }
        Err(e) => {
            tracing::warn!(group = name, error = %e, "cannot look up the owner group: only root and the daemon's uid may connect");
            None
        }
    };
    Policy {
        group,
        daemon_uid: nix::unistd::geteuid().as_raw(),
    }
}

/// Check a connected stream against `policy`.
pub fn check(stream: &UnixStream, policy: &Policy) -> Result<Peer, String> {
    let peer = peer_of(stream).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let groups = if needs_supplementary(&peer, policy) {
        supplementary_groups(peer.pid).map_err(|e| format!("groups of pid {}: {e}", peer.pid))?
    } else {
        Vec::new()
    };
    admit(&peer, &groups, policy).map_err(|r| r.to_string())?;
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        group: Some(900),
        daemon_uid: 999,
    };

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { pid: 1, uid, gid }
    }

    #[test]
    fn root_and_daemon_uid_always() {
        let no_group = Policy {
            group: None,
            ..POLICY
        };
        for p in [POLICY, no_group] {
            assert_eq!(admit(&peer(0, 0), &[], &p), Ok(()));
            assert_eq!(admit(&peer(999, 5), &[], &p), Ok(()));
            assert!(!needs_supplementary(&peer(0, 0), &p));
        }
    }

    #[test]
    fn group_member_by_primary_or_supplementary_gid() {
        assert_eq!(admit(&peer(1000, 900), &[], &POLICY), Ok(()));
        assert!(!needs_supplementary(&peer(1000, 900), &POLICY));
        assert!(needs_supplementary(&peer(1000, 1000), &POLICY));
        assert_eq!(admit(&peer(1000, 1000), &[4, 900, 27], &POLICY), Ok(()));
    }

    #[test]
    fn outsiders_refused() {
        assert_eq!(
            admit(&peer(1000, 1000), &[4, 27], &POLICY),
            Err(Refusal::NotInGroup {
                uid: 1000,
                gid: 1000,
                group: 900
            })
        );
        let no_group = Policy {
            group: None,
            ..POLICY
        };
        // Without the group even a "member" gid means nothing.
        assert!(matches!(
            admit(&peer(1000, 900), &[900], &no_group),
            Err(Refusal::NoGroup { uid: 1000, .. })
        ));
    }

    #[test]
    fn status_groups_parse() {
        let s = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 27 900 \nNgid:\t0\n";
        assert_eq!(parse_status_groups(s), Some(vec![4, 27, 900]));
        assert_eq!(parse_status_groups("Groups:\n"), Some(vec![]));
        assert_eq!(parse_status_groups("Name:\tx\n"), None);
        assert_eq!(parse_status_groups("Groups:\t4 x\n"), None);
    }

    #[test]
    fn own_process_groups_and_peer_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        let p = peer_of(&a).unwrap();
        assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(p.pid, i32::try_from(std::process::id()).unwrap());
        supplementary_groups(p.pid).unwrap();
        // Our own uid is the daemon's uid here: always admitted.
        check(&a, &policy_for("no-such-group-llmstreamd-test")).unwrap();
    }
}
