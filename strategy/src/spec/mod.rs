//! A network path and its variants, typed: what the lab, the VM lab and the tests name a
//! run by (`uring+defer+inline+warm`), parsed once at the edge and matched on after.
//!
//! A [`PathSpec`] is a [`NetKind`] plus an ordered list of [`Part`]s: set-up variants of
//! that kind ([`Variant`], each with the `strategy run` flags it stands for) and at most
//! one warming mode ([`Warm`]). `FromStr` and `Display` round-trip exactly (the parts keep
//! the order they were written in, so a results folder's names read back as typed). What a
//! spec needs from its surroundings is asked of it, never read off its name: the eBPF
//! object ([`PathSpec::needs_ebpf`]), huge pages ([`PathSpec::uses_hugepages`]), an
//! exchange that accepts heartbeats ([`PathSpec::sends_heartbeats`]), its own address on
//! the link ([`PathSpec::needs_own_ip`]), and its flags ([`PathSpec::strategy_args`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::net::NetKind;

mod part;

pub use part::{Part, Variant, Warm};

/// A network path with its variants, e.g. `uring+defer+inline+warm`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathSpec {
    kind: NetKind,
    parts: Vec<Part>,
}

/// Why a path spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not a path kind.
    #[error("unknown path `{0}` (kernel, uring, xdp, packet, xdp-tx)")]
    Kind(String),
    /// Not a variant of any kind.
    #[error("`{spec}`: unknown variant `+{part}` ({})", known_variants())]
    Unknown {
        /// The whole spec.
        spec: String,
        /// The part.
        part: String,
    },
    /// A variant of another kind.
    #[error(
        "`{spec}`: `+{part}` is not a variant of {kind} ({})",
        known_variants()
    )]
    NotThisKind {
        /// The whole spec.
        spec: String,
        /// The part.
        part: &'static str,
        /// The kind.
        kind: &'static str,
    },
    /// A part written twice, or two warming modes.
    #[error("`{0}`: a part twice or two warming modes (one of +warm, +warmcode, +warmtx, +hb)")]
    Twice(String),
    /// `+wire` with a variant that reads the same queues (`+mmsg`, `+zc`).
    #[error("`{0}`: +wire reads one datagram per recvmsg and the order socket's error queue: not with +mmsg or +zc")]
    Clash(String),
}

/// The variants by kind, for error messages and `--help`.
pub fn known_variants() -> String {
    let mut out = Vec::new();
    for kind in NetKind::ALL {
        let vs: Vec<&str> = Variant::ALL
            .into_iter()
            .filter(|v| v.applies_to(kind))
            .map(Variant::name)
            .collect();
        if !vs.is_empty() {
            out.push(format!("{}+{}", kind.as_str(), vs.join("|")));
        }
    }
    out.push("on every path one of +warm|warmcode|warmtx|hb".to_owned());
    out.join(", ")
}

impl PathSpec {
    /// A bare path of this kind.
    pub fn bare(kind: NetKind) -> Self {
        Self {
            kind,
            parts: Vec::new(),
        }
    }

    /// This spec with one more part (checked as `FromStr` checks it).
    pub fn with(mut self, part: Part) -> Result<Self, SpecError> {
        self.parts.push(part);
        self.check()?;
        Ok(self)
    }

    /// The kind of path (`strategy run --net`).
    pub fn kind(&self) -> NetKind {
        self.kind
    }

    /// The parts, in the order written.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The set-up variants, in order.
    pub fn variants(&self) -> impl Iterator<Item = Variant> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Variant(v) => Some(*v),
            Part::Warm(_) => None,
        })
    }

    /// The warming mode, if any.
    pub fn warm(&self) -> Option<Warm> {
        self.parts.iter().find_map(|p| match p {
            Part::Warm(w) => Some(*w),
            Part::Variant(_) => None,
        })
    }

    /// The same spec without its warming mode (the cold run a warmed one compares with).
    pub fn without_warm(&self) -> Self {
        Self {
            kind: self.kind,
            parts: self
                .parts
                .iter()
                .copied()
                .filter(|p| matches!(p, Part::Variant(_)))
                .collect(),
        }
    }

    /// Has this variant.
    pub fn has(&self, v: Variant) -> bool {
        self.parts.contains(&Part::Variant(v))
    }

    /// The path's floor: answers marked packets at once (the exchange must mark them).
    pub fn reflects(&self) -> bool {
        self.has(Variant::Reflect)
    }

    /// The floor of this spec (the same spec with `+reflect`), if the path has one.
    pub fn floor(&self) -> Option<Self> {
        if self.reflects() {
            return None;
        }
        self.clone().with(Part::Variant(Variant::Reflect)).ok()
    }

    /// Needs the XDP program (the eBPF object built by `cargo xtask build-ebpf`).
    pub fn needs_ebpf(&self) -> bool {
        matches!(self.kind, NetKind::Xdp | NetKind::XdpTx)
    }

    /// Puts the UMEM on huge pages (the lab reserves them).
    pub fn uses_hugepages(&self) -> bool {
        self.has(Variant::Huge)
    }

    /// Sends heartbeats on the order connection (the exchange must accept them).
    pub fn sends_heartbeats(&self) -> bool {
        matches!(self.warm(), Some(Warm::All | Warm::Heartbeat))
    }

    /// Runs smoltcp on an address of its own on the link (AF_PACKET: the kernel owns the
    /// interface's address and would reset the order flow): `strategy run --packet-ip`.
    pub fn needs_own_ip(&self) -> bool {
        self.kind == NetKind::Packet
    }

    /// Makes its decision in the XDP program; the exchange's side then needs an XDP
    /// program for a veth to deliver its XDP_TX frames.
    pub fn sends_with_xdp_tx(&self) -> bool {
        self.kind == NetKind::XdpTx
    }

    /// The `strategy run` flags of this spec: `--net KIND`, then [`PathSpec::part_args`].
    pub fn strategy_args(&self, warm_every: Duration) -> Vec<String> {
        let mut out = vec!["--net".to_owned(), self.kind.as_str().to_owned()];
        out.extend(self.part_args(warm_every));
        out
    }

    /// The flags of the parts alone: each variant's flags in order, and the warming mode at
    /// `warm_every` (the VM lab passes the kind apart).
    pub fn part_args(&self, warm_every: Duration) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.parts {
            match *p {
                Part::Variant(v) => out.extend(v.flags(self.kind).iter().map(|f| (*f).to_owned())),
                Part::Warm(w) => out.extend([
                    "--warm-every".to_owned(),
                    format!("{}ns", warm_every.as_nanos()),
                    "--warm".to_owned(),
                    w.flag_value().to_owned(),
                ]),
            }
        }
        out
    }

    fn check(&self) -> Result<(), SpecError> {
        for (i, p) in self.parts.iter().enumerate() {
            if let Part::Variant(v) = p {
                if !v.applies_to(self.kind) {
                    return Err(SpecError::NotThisKind {
                        spec: self.to_string(),
                        part: v.name(),
                        kind: self.kind.as_str(),
                    });
                }
            }
            if self.parts[..i].contains(p) {
                return Err(SpecError::Twice(self.to_string()));
            }
        }
        if self
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Warm(_)))
            .count()
            > 1
        {
            return Err(SpecError::Twice(self.to_string()));
        }
        if self.has(Variant::Wire) && (self.has(Variant::Mmsg) || self.has(Variant::ZeroCopy)) {
            return Err(SpecError::Clash(self.to_string()));
        }
        Ok(())
    }
}

impl FromStr for PathSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let mut it = s.split('+');
        let head = it.next().unwrap_or_default();
        let kind: NetKind = head.parse().map_err(|_| SpecError::Kind(head.to_owned()))?;
        let parts = it
            .map(|name| {
                Variant::ALL
                    .into_iter()
                    .find(|v| v.name() == name)
                    .map(Part::Variant)
                    .or_else(|| {
                        Warm::ALL
                            .into_iter()
                            .find(|w| w.name() == name)
                            .map(Part::Warm)
                    })
                    .ok_or_else(|| SpecError::Unknown {
                        spec: s.to_owned(),
                        part: name.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = Self { kind, parts };
        spec.check()?;
        Ok(spec)
    }
}

impl fmt::Display for PathSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        for p in &self.parts {
            write!(f, "+{}", p.name())?;
        }
        Ok(())
    }
}

impl From<NetKind> for PathSpec {
    fn from(kind: NetKind) -> Self {
        Self::bare(kind)
    }
}

impl serde::Serialize for PathSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PathSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a comma-separated list of specs (`kernel,uring+defer+inline,xdp-tx`).
pub fn parse_list(s: &str) -> Result<Vec<PathSpec>, SpecError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(s: &str) -> PathSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn names_parse_to_kinds_and_parts() {
        let s = spec("uring+defer+inline+warm");
        assert_eq!(s.kind(), NetKind::Uring);
        assert_eq!(
            s.variants().collect::<Vec<_>>(),
            [Variant::Defer, Variant::Inline]
        );
        assert_eq!(s.warm(), Some(Warm::All));
        assert_eq!(spec("xdp-tx").kind(), NetKind::XdpTx);
        assert_eq!(spec("xdp-tx+warm").warm(), Some(Warm::All));
    }

    #[test]
    fn needs_are_asked_of_the_spec() {
        assert!(
            spec("xdp-tx").needs_ebpf(),
            "xdp-tx alone needs the program"
        );
        assert!(spec("xdp+huge").needs_ebpf() && spec("xdp+huge").uses_hugepages());
        assert!(!spec("kernel").needs_ebpf() && !spec("packet").needs_ebpf());
        assert!(spec("uring+hb").sends_heartbeats() && spec("kernel+warm").sends_heartbeats());
        assert!(!spec("kernel+warmcode").sends_heartbeats() && !spec("kernel").sends_heartbeats());
        assert!(spec("packet+warm").needs_own_ip() && !spec("xdp").needs_own_ip());
        assert!(spec("xdp-tx").sends_with_xdp_tx() && !spec("xdp").sends_with_xdp_tx());
        assert_eq!(
            spec("uring+defer+warm+inline").without_warm(),
            spec("uring+defer+inline")
        );
    }

    #[test]
    fn flags_follow_the_parts() {
        let us100 = Duration::from_micros(100);
        assert_eq!(
            spec("kernel+zc").strategy_args(us100),
            ["--net", "kernel", "--msg-zerocopy"]
        );
        assert_eq!(
            spec("uring+zc").strategy_args(us100),
            ["--net", "uring", "--send-zc"]
        );
        assert_eq!(spec("xdp").strategy_args(us100), ["--net", "xdp"]);
        assert_eq!(
            spec("uring+defer+hb").strategy_args(us100),
            [
                "--net",
                "uring",
                "--uring-defer",
                "--warm-every",
                "100000ns",
                "--warm",
                "heartbeat"
            ]
        );
        assert_eq!(
            spec("xdp+huge").strategy_args(us100),
            ["--net", "xdp", "--hugepages"]
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        assert!(matches!(
            "dpdk".parse::<PathSpec>(),
            Err(SpecError::Kind(_))
        ));
        assert!(matches!(
            "kernel+warp".parse::<PathSpec>(),
            Err(SpecError::Unknown { .. })
        ));
        for s in [
            "xdp+zc",
            "kernel+huge",
            "xdp+tos",
            "kernel+defer",
            "packet+inline",
            // Preferred busy polling starves AF_XDP's transmit (net::af_xdp::open).
            "xdp+preferbp",
            "xdp-tx+preferbp",
            "packet+busypoll",
        ] {
            assert!(
                matches!(s.parse::<PathSpec>(), Err(SpecError::NotThisKind { .. })),
                "{s}"
            );
        }
        for s in ["uring+warm+hb", "uring+defer+defer", "kernel+zc+zc"] {
            assert!(
                matches!(s.parse::<PathSpec>(), Err(SpecError::Twice(_))),
                "{s}"
            );
        }
        for s in ["kernel+wire+mmsg", "kernel+zc+wire"] {
            assert!(
                matches!(s.parse::<PathSpec>(), Err(SpecError::Clash(_))),
                "{s}"
            );
        }
        assert!("kernel+".parse::<PathSpec>().is_err());
        assert!("".parse::<PathSpec>().is_err());
        let e = "xdp+zc".parse::<PathSpec>().err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("kernel+") && e.contains("uring+")),
            "{e:?}"
        );
    }

    #[test]
    fn af_xdp_busy_polling_is_the_socket_option_alone() {
        let us = Duration::from_micros(100);
        for s in ["xdp+busypoll", "xdp-tx+busypoll"] {
            assert_eq!(spec(s).part_args(us), ["--busy-poll", "50"], "{s}");
        }
    }

    #[test]
    fn lists_parse() {
        let l = parse_list("kernel, uring+defer+inline,xdp-tx").expect("list");
        assert_eq!(l.len(), 3);
        assert_eq!(l[2].kind(), NetKind::XdpTx);
        assert!(parse_list("kernel,nope").is_err());
    }

    #[test]
    fn json_is_the_name() {
        let s = spec("uring+defer+warm");
        let j = serde_json::to_string(&s).expect("ser");
        assert_eq!(j, "\"uring+defer+warm\"");
        assert_eq!(serde_json::from_str::<PathSpec>(&j).expect("de"), s);
        assert!(serde_json::from_str::<PathSpec>("\"xdp+zc\"").is_err());
    }

    fn any_spec() -> impl Strategy<Value = PathSpec> {
        (
            prop::sample::select(NetKind::ALL.to_vec()),
            prop::collection::vec(prop::sample::select(Variant::ALL.to_vec()), 0..4),
            prop::option::of(prop::sample::select(Warm::ALL.to_vec())),
            0usize..4,
        )
            .prop_filter_map("a valid spec", |(kind, vs, warm, at)| {
                let mut parts: Vec<Part> = vs.into_iter().map(Part::Variant).collect();
                if let Some(w) = warm {
                    parts.insert(at.min(parts.len()), Part::Warm(w));
                }
                let s = PathSpec { kind, parts };
                s.check().ok().map(|()| s)
            })
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(s in any_spec()) {
            let text = s.to_string();
            let back: PathSpec = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.to_string(), text);
        }
    }
}
