//! Least privilege: after its privileged set-up a program becomes an unprivileged user and
//! keeps only the capabilities it still needs (`--user NAME`).
//!
//! The order of the calls matters (capabilities(7)): the bounding set is cut while
//! CAP_SETPCAP is still held; PR_SET_KEEPCAPS keeps the permitted set across the change of
//! user ids; then the permitted and effective sets are cut to what is kept, and the
//! inheritable and ambient sets emptied, so nothing the program runs later inherits them.
//! `setresuid`/`setresgid` go through glibc, which applies them to every thread; the
//! capability sets are per thread, so call this from the thread that keeps working, before
//! it starts any other.

use std::collections::HashSet;

use caps::CapSet;
pub use caps::Capability;

/// Why dropping failed (the program stops: running on as root would be a surprise).
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// No such user.
    #[error("--user {0}: no such user")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("--user {user}: looking it up: {source}")]
    Lookup {
        /// The user.
        user: String,
        /// Why.
        source: nix::Error,
    },
    /// A system call failed.
    #[error("dropping to --user {user}: {what}: {why}")]
    Call {
        /// The user.
        user: String,
        /// Which step.
        what: &'static str,
        /// Why.
        why: String,
    },
}

/// What [`drop_to_user`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Dropped {
    /// The user now running.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// The capabilities kept (permitted and effective), e.g. `CAP_NET_RAW`.
    pub kept: Vec<String>,
}

/// Becomes `user` (its uid, its primary group, no supplementary groups) keeping only `keep`.
pub fn drop_to_user(user: &str, keep: &[Capability]) -> Result<Dropped, PrivilegeError> {
    let call = |what: &'static str| {
        let user = user.to_owned();
        move |e: &dyn std::fmt::Display| PrivilegeError::Call {
            user,
            what,
            why: e.to_string(),
        }
    };
    let u = nix::unistd::User::from_name(user)
        .map_err(|source| PrivilegeError::Lookup {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::UnknownUser(user.to_owned()))?;
    let keep: HashSet<Capability> = keep.iter().copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| call("bounding set")(&e))?;
        }
    }
    caps::securebits::set_keepcaps(true).map_err(|e| call("PR_SET_KEEPCAPS")(&e))?;
    nix::unistd::setgroups(&[]).map_err(|e| call("setgroups")(&e))?;
    nix::unistd::setresgid(u.gid, u.gid, u.gid).map_err(|e| call("setresgid")(&e))?;
    nix::unistd::setresuid(u.uid, u.uid, u.uid).map_err(|e| call("setresuid")(&e))?;
    caps::securebits::set_keepcaps(false).map_err(|e| call("PR_SET_KEEPCAPS")(&e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| call("permitted set")(&e))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| call("effective set")(&e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| call("inheritable set")(&e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| call("ambient set")(&e))?;
    // There is no way back: root cannot be regained.
    if nix::unistd::setresuid(0.into(), 0.into(), 0.into()).is_ok() {
        return Err(call("check")(&"uid 0 could be set again"));
    }
    let mut kept: Vec<String> = keep.iter().map(ToString::to_string).collect();
    kept.sort();
    Ok(Dropped {
        user: user.to_owned(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        kept,
    })
}

/// The capabilities in this thread's effective set, e.g. `CAP_NET_RAW` (sorted).
pub fn effective() -> Vec<String> {
    let mut v: Vec<String> = caps::read(None, CapSet::Effective)
        .map(|s| s.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Parses a capability name as `setcap` and `capsh` write it (`cap_net_raw`, `CAP_NET_RAW`).
pub fn parse_cap(name: &str) -> Option<Capability> {
    name.to_ascii_uppercase().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert_eq!(parse_cap("cap_net_raw"), Some(Capability::CAP_NET_RAW));
        assert_eq!(parse_cap("CAP_BPF"), Some(Capability::CAP_BPF));
        assert_eq!(parse_cap("net_raw"), None);
    }

    #[test]
    fn an_unknown_user_is_a_clear_error_and_changes_nothing() {
        let before = effective();
        let e = drop_to_user("no-such-user-nic-lab", &[]).expect_err("unknown");
        assert!(e.to_string().contains("no such user"), "{e}");
        assert_eq!(effective(), before);
    }
}
