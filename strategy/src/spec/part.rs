//! The parts a path spec is made of: the set-up variants of each path kind, each with the
//! `strategy run` flags it stands for, and the warming modes.

use crate::net::NetKind;

/// A set-up variant of one path kind (`kernel+zc`, `uring+defer`, `xdp+huge`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// `kernel+busypoll`: SO_BUSY_POLL 50 us on the market-data socket; `xdp+busypoll`,
    /// `xdp-tx+busypoll`: on the AF_XDP sockets (a NAPI poll per empty turn, zero copy only).
    BusyPoll,
    /// `kernel+preferbp`: SO_BUSY_POLL 50 us with SO_PREFER_BUSY_POLL (budget 8).
    PreferBusyPoll,
    /// `kernel+zc`: MSG_ZEROCOPY; `uring+zc`: SEND_ZC.
    ZeroCopy,
    /// `kernel|uring+tos`: IP_TOS 0x10 (low delay) on the order connection.
    Tos,
    /// `kernel|uring+prio`: SO_PRIORITY 6 on the order connection.
    Prio,
    /// `uring+sqpoll`: SQPOLL, 100 ms idle.
    Sqpoll,
    /// `uring+defer`: SINGLE_ISSUER + DEFER_TASKRUN.
    Defer,
    /// `uring+coop`: COOP_TASKRUN + TASKRUN_FLAG.
    Coop,
    /// `uring+napi`: NAPI busy polling registered on the ring, 50 us.
    Napi,
    /// `uring+provideops`: PROVIDE_BUFFERS instead of the provided-buffer ring.
    ProvideOps,
    /// `uring+zcfixed`: SEND_ZC from the order slots registered as a fixed buffer.
    ZcFixed,
    /// `uring+regring`: enters through the registered ring fd.
    RegRing,
    /// `uring+inline`: one MSG_DONTWAIT RECV per turn instead of a multishot receive.
    Inline,
    /// `uring+syssend`: orders with send(2), market data through the ring.
    SysSend,
    /// `xdp+huge`: the UMEM on huge pages.
    Huge,
    /// `kernel+mmsg`: market data read with recvmmsg, up to 32 datagrams per call.
    Mmsg,
    /// `kernel+wire`: the strategy's own wire-to-wire time on the kernel's (and NIC's) clock.
    Wire,
    /// `+reflect` (every path but `xdp-tx`): the path's floor: the exchange marks the
    /// trigger packets and the strategy answers them at once, no parse, no book.
    Reflect,
    /// `packet+v3`: the receive ring is TPACKET_V3 (blocks of 4 KiB handed over full or
    /// after 1 ms).
    V3,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Self; 19] = [
        Self::BusyPoll,
        Self::PreferBusyPoll,
        Self::ZeroCopy,
        Self::Tos,
        Self::Prio,
        Self::Sqpoll,
        Self::Defer,
        Self::Coop,
        Self::Napi,
        Self::ProvideOps,
        Self::ZcFixed,
        Self::RegRing,
        Self::Inline,
        Self::SysSend,
        Self::Huge,
        Self::Mmsg,
        Self::Wire,
        Self::Reflect,
        Self::V3,
    ];

    /// The name after the `+`.
    pub fn name(self) -> &'static str {
        match self {
            Self::BusyPoll => "busypoll",
            Self::PreferBusyPoll => "preferbp",
            Self::ZeroCopy => "zc",
            Self::Tos => "tos",
            Self::Prio => "prio",
            Self::Sqpoll => "sqpoll",
            Self::Defer => "defer",
            Self::Coop => "coop",
            Self::Napi => "napi",
            Self::ProvideOps => "provideops",
            Self::ZcFixed => "zcfixed",
            Self::RegRing => "regring",
            Self::Inline => "inline",
            Self::SysSend => "syssend",
            Self::Huge => "huge",
            Self::Mmsg => "mmsg",
            Self::Wire => "wire",
            Self::Reflect => "reflect",
            Self::V3 => "v3",
        }
    }

    /// Does this variant exist on that kind of path?
    pub fn applies_to(self, kind: NetKind) -> bool {
        match self {
            // AF_XDP: the sockets' NAPI busy polling (zero-copy sockets; net::af_xdp). Not
            // preferred busy polling there: the kernel then skips the AF_XDP transmit's
            // wake-up, and virtio-net and igb do not transmit from the busy-polled NAPI.
            Self::BusyPoll => matches!(kind, NetKind::Kernel | NetKind::Xdp | NetKind::XdpTx),
            Self::PreferBusyPoll | Self::Mmsg | Self::Wire => kind == NetKind::Kernel,
            Self::ZeroCopy | Self::Tos | Self::Prio => {
                matches!(kind, NetKind::Kernel | NetKind::Uring)
            }
            Self::Sqpoll
            | Self::Defer
            | Self::Coop
            | Self::Napi
            | Self::ProvideOps
            | Self::ZcFixed
            | Self::RegRing
            | Self::Inline
            | Self::SysSend => kind == NetKind::Uring,
            Self::Huge => kind == NetKind::Xdp,
            // xdp-tx decides in the XDP program: its floor would be the program's.
            Self::Reflect => kind != NetKind::XdpTx,
            Self::V3 => kind == NetKind::Packet,
        }
    }

    /// The `strategy run` flags this variant adds on `kind`.
    pub fn flags(self, kind: NetKind) -> &'static [&'static str] {
        match self {
            Self::BusyPoll => &["--busy-poll", "50"],
            Self::PreferBusyPoll => &["--busy-poll", "50", "--prefer-busy-poll", "8"],
            Self::ZeroCopy if kind == NetKind::Kernel => &["--msg-zerocopy"],
            Self::ZeroCopy => &["--send-zc"],
            Self::Tos => &["--ip-tos", "16"],
            Self::Prio => &["--so-priority", "6"],
            Self::Sqpoll => &["--sqpoll", "100"],
            Self::Defer => &["--uring-defer"],
            Self::Coop => &["--uring-coop"],
            Self::Napi => &["--uring-napi", "50"],
            Self::ProvideOps => &["--uring-provide-ops"],
            Self::ZcFixed => &["--send-zc", "--uring-fixed-bufs"],
            Self::RegRing => &["--uring-reg-ring"],
            Self::Inline => &["--uring-inline-recv"],
            Self::SysSend => &["--uring-send-syscall"],
            Self::Huge => &["--hugepages"],
            Self::V3 => &["--packet-ring", "v3"],
            Self::Mmsg => &["--md-recvmmsg"],
            Self::Wire => &["--wire-stamps"],
            Self::Reflect => &["--reflect"],
        }
    }
}

/// A warming mode (`strategy run --warm`; see [`crate::net::warm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Warm {
    /// `+warm`: everything the path has.
    All,
    /// `+warmcode`: decision and encoding on a synthetic trigger.
    Code,
    /// `+warmtx`: the transmit side without sending.
    Tx,
    /// `+hb`: heartbeats through the order path (the exchange then accepts them).
    Heartbeat,
}

impl Warm {
    /// Every mode.
    pub const ALL: [Self; 4] = [Self::All, Self::Code, Self::Tx, Self::Heartbeat];

    /// The name after the `+`.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "warm",
            Self::Code => "warmcode",
            Self::Tx => "warmtx",
            Self::Heartbeat => "hb",
        }
    }

    /// The value of `strategy run --warm`.
    pub fn flag_value(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Code => "code",
            Self::Tx => "tx",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// One `+part` of a path spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// A set-up variant.
    Variant(Variant),
    /// A warming mode.
    Warm(Warm),
}

impl Part {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Variant(v) => v.name(),
            Self::Warm(w) => w.name(),
        }
    }
}
