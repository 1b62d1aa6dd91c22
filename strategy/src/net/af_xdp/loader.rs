//! Loads the embedded XDP program with aya, configures it, attaches it, and detaches it on
//! drop (normal exit, error, signal-driven exit and panic unwinding all drop it).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use aya::maps::{Array, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use strategy_common::{Class, Counters, SteerConfig, CLASS_COUNT};

/// `--xdp-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeArg {
    /// Driver mode, falling back to SKB mode.
    Auto,
    /// Driver (native) mode only.
    Drv,
    /// Generic (SKB) mode.
    Skb,
}

impl std::str::FromStr for XdpModeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "drv" => Ok(Self::Drv),
            "skb" => Ok(Self::Skb),
            _ => Err(format!("unknown XDP mode `{s}` (auto, drv, skb)")),
        }
    }
}

/// The XDP attach mode that worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Driver (native) mode.
    Drv,
    /// Generic (SKB) mode.
    Skb,
}

impl AttachMode {
    /// `drv` or `skb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drv => "drv",
            Self::Skb => "skb",
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Load-time switches of the program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Log the odd frames with aya-log (`--xdp-diag`).
    pub diag: bool,
    /// Decide in the program and send with XDP_TX (`--net xdp-tx`).
    pub xdp_tx: bool,
    /// Market data only from this source (`--md-source`; `None`: any).
    pub md_source: Option<Ipv4Addr>,
}

/// Errors of the loader.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built without the object.
    #[error("this strategy was built without the XDP program: run `cargo xtask build-ebpf`, then rebuild")]
    NoObject,
    /// aya failed.
    #[error("{what}: {source}")]
    Aya {
        /// What.
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Attach failed in the requested mode.
    #[error("attaching XDP to {iface} in {mode} mode failed: {source} ({hint})")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode tried.
        mode: &'static str,
        /// Why.
        source: Box<aya::programs::ProgramError>,
        /// What to try next.
        hint: &'static str,
    },
}

fn aya_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> LoadError {
    move |e| LoadError::Aya {
        what,
        source: Box::new(e),
    }
}

#[cfg(xdp_obj)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.o"));
#[cfg(not(xdp_obj))]
static OBJECT: &[u8] = &[];

/// Is the XDP program embedded in this binary?
pub fn has_object() -> bool {
    !OBJECT.is_empty()
}

/// The loaded, attached program. Dropping it detaches the program from the interface.
pub struct Steering {
    // The logger holds the program's log ring: dropped before the program.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ebpf: Ebpf,
    /// Mode that attached.
    pub mode: AttachMode,
}

/// Per-class counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SteerCounters {
    /// Market data `[redirected, passed, aborted]`.
    pub market_data: [u64; 3],
    /// Order entry.
    pub order_entry: [u64; 3],
    /// ARP replies.
    pub arp: [u64; 3],
    /// Everything else.
    pub other: [u64; 3],
    /// Market data from another source than `--md-source` (passed to the kernel).
    pub foreign_md: [u64; 3],
}

impl Steering {
    /// Loads and verifies the program with its configuration, without attaching it
    /// (used by [`Steering::attach`], and by tests that run it on crafted frames).
    /// `opts.diag` switches on the program's aya-log diagnostics of odd frames (read them
    /// with an [`aya_log::EbpfLogger`] on the returned object); `opts.xdp_tx` its decision
    /// on market data (the `XTX` maps).
    pub fn load(
        local: Ipv4Addr,
        exchange: SocketAddrV4,
        group: SocketAddrV4,
        opts: Options,
    ) -> Result<Ebpf, LoadError> {
        if !has_object() {
            return Err(LoadError::NoObject);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(aya_err("loading the XDP object"))?;
        let cfg = SteerConfig {
            md_group: u32::from(*group.ip()).to_be(),
            local_addr: u32::from(local).to_be(),
            exchange_addr: u32::from(*exchange.ip()).to_be(),
            md_port: group.port().to_be(),
            exchange_port: exchange.port().to_be(),
            steer_arp: 1,
            diag: u32::from(opts.diag),
            xdp_tx: u32::from(opts.xdp_tx),
            md_source: opts.md_source.map_or(0, |a| u32::from(a).to_be()),
        };
        {
            let map = ebpf.map_mut("CONFIG").ok_or_else(|| LoadError::Aya {
                what: "map CONFIG",
                source: "missing".into(),
            })?;
            let mut config: Array<_, SteerConfig> =
                Array::try_from(map).map_err(aya_err("map CONFIG"))?;
            config.set(0, cfg, 0).map_err(aya_err("writing CONFIG"))?;
        }
        let prog = ebpf.program_mut("steer").ok_or_else(|| LoadError::Aya {
            what: "program steer",
            source: "missing".into(),
        })?;
        let prog: &mut Xdp = prog.try_into().map_err(aya_err("program steer"))?;
        prog.load().map_err(aya_err("verifier"))?;
        Ok(ebpf)
    }

    /// Loads and attaches the program to `iface`, steering the given flows; with `diag`, the
    /// program's log records go to the `log` crate (and so to tracing) at each
    /// [`Steering::flush_log`].
    pub fn attach(
        iface: &str,
        mode: XdpModeArg,
        (local, exchange, group): (Ipv4Addr, SocketAddrV4, SocketAddrV4),
        opts: Options,
    ) -> Result<Self, LoadError> {
        let mut ebpf = Self::load(local, exchange, group, opts)?;
        let logger = if opts.diag {
            Some(aya_log::EbpfLogger::init(&mut ebpf).map_err(aya_err("aya-log ring"))?)
        } else {
            None
        };
        let prog = ebpf.program_mut("steer").ok_or_else(|| LoadError::Aya {
            what: "program steer",
            source: "missing".into(),
        })?;
        let prog: &mut Xdp = prog.try_into().map_err(aya_err("program steer"))?;
        let attempts: &[(XdpMode, AttachMode)] = match mode {
            XdpModeArg::Auto => &[
                (XdpMode::Driver, AttachMode::Drv),
                (XdpMode::Skb, AttachMode::Skb),
            ],
            XdpModeArg::Drv => &[(XdpMode::Driver, AttachMode::Drv)],
            XdpModeArg::Skb => &[(XdpMode::Skb, AttachMode::Skb)],
        };
        let mut last = None;
        for &(m, name) in attempts {
            match prog.attach(iface, m) {
                Ok(_) => {
                    return Ok(Self {
                        logger,
                        ebpf,
                        mode: name,
                    })
                }
                Err(e) => {
                    tracing::warn!(iface, mode = name.as_str(), "XDP attach failed: {e}");
                    last = Some((name, e));
                }
            }
        }
        let (name, source) = last.ok_or(LoadError::NoObject)?;
        let hint = if name == AttachMode::Drv {
            "driver mode failed: try --xdp-mode skb"
        } else {
            "is another XDP program attached? `ip link show`"
        };
        Err(LoadError::Attach {
            iface: iface.to_owned(),
            mode: name.as_str(),
            source: Box::new(source),
            hint,
        })
    }

    /// Registers the AF_XDP socket for RX queue `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: &impl AsRawFd) -> Result<(), LoadError> {
        let map = self.ebpf.map_mut("XSKS").ok_or_else(|| LoadError::Aya {
            what: "map XSKS",
            source: "missing".into(),
        })?;
        let mut xsks = XskMap::try_from(map).map_err(aya_err("map XSKS"))?;
        xsks.set(queue, fd.as_raw_fd(), 0)
            .map_err(aya_err("XSKS[queue] = socket"))
    }

    /// Hands the program's pending log records to the logger (no syscall: the ring is
    /// mapped); nothing without `diag`.
    pub fn flush_log(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }

    /// Takes the `xdp-tx` map (the mapped `XTX` value: armed state, counters, mailbox).
    pub fn take_xtx(&mut self) -> Result<super::xtx_map::XtxMap, LoadError> {
        take_xtx(&mut self.ebpf)
    }

    /// Reads the program's counters.
    pub fn counters(&self) -> SteerCounters {
        counters_of(&self.ebpf)
    }
}

/// The bare XDP_PASS program attached to an interface; detached on drop.
pub struct PassProgram {
    _ebpf: Ebpf,
}

/// Attaches the object's `pass` program (XDP_PASS for every frame) to `iface` in driver
/// mode. On a veth, the peer of an interface whose program returns XDP_TX delivers the
/// bounced frames only when it runs an XDP program itself (docs/xdp-tx.md).
pub fn attach_pass(iface: &str) -> Result<PassProgram, LoadError> {
    if !has_object() {
        return Err(LoadError::NoObject);
    }
    let mut ebpf = Ebpf::load(OBJECT).map_err(aya_err("loading the XDP object"))?;
    let prog = ebpf.program_mut("pass").ok_or_else(|| LoadError::Aya {
        what: "program pass",
        source: "missing".into(),
    })?;
    let prog: &mut Xdp = prog.try_into().map_err(aya_err("program pass"))?;
    prog.load().map_err(aya_err("verifier"))?;
    prog.attach(iface, XdpMode::Driver)
        .map_err(|e| LoadError::Attach {
            iface: iface.to_owned(),
            mode: "drv",
            source: Box::new(e),
            hint: "an XDP_PASS program needs driver mode to receive XDP_TX frames from a veth peer",
        })?;
    Ok(PassProgram { _ebpf: ebpf })
}

/// Takes the `xdp-tx` map out of a loaded program.
pub fn take_xtx(ebpf: &mut Ebpf) -> Result<super::xtx_map::XtxMap, LoadError> {
    let missing = |what| LoadError::Aya {
        what,
        source: "missing".into(),
    };
    let array = match ebpf.take_map("XTX").ok_or_else(|| missing("map XTX"))? {
        aya::maps::Map::Array(m) => m,
        _ => return Err(missing("XTX as an array")),
    };
    super::xtx_map::XtxMap::new(array).map_err(aya_err("mapping XTX"))
}

/// Runs the loaded program once on `frame` with BPF_PROG_TEST_RUN; returns its action.
pub fn test_run(ebpf: &Ebpf, frame: &[u8]) -> std::io::Result<u32> {
    let mut out = [0u8; 2048];
    test_run_repeat(ebpf, frame, &mut out, 1).map(|r| r.retval)
}

/// Runs the loaded program `repeat` times on `frame`; the frame after the run goes to `out`.
pub fn test_run_repeat(
    ebpf: &Ebpf,
    frame: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> std::io::Result<hostsys::bpf::TestRun> {
    use std::os::fd::AsFd;
    let prog = ebpf
        .program("steer")
        .ok_or_else(|| std::io::Error::other("program steer missing"))?;
    let fd = prog
        .fd()
        .map_err(std::io::Error::other)?
        .as_fd()
        .as_raw_fd();
    hostsys::bpf::prog_test_run(fd, frame, out, repeat)
}

/// Reads the per-class counters of a loaded program, summed over CPUs.
pub fn counters_of(ebpf: &Ebpf) -> SteerCounters {
    let mut out = SteerCounters::default();
    let Some(map) = ebpf.map("COUNTERS") else {
        return out;
    };
    let Ok(arr) = PerCpuArray::<_, Counters>::try_from(map) else {
        return out;
    };
    for class in 0..CLASS_COUNT {
        let Ok(values) = arr.get(&class, 0) else {
            continue;
        };
        let mut sum = [0u64; 3];
        for v in values.iter() {
            sum[0] += v.redirected;
            sum[1] += v.passed;
            sum[2] += v.aborted;
        }
        match class {
            c if c == Class::MarketData as u32 => out.market_data = sum,
            c if c == Class::OrderEntry as u32 => out.order_entry = sum,
            c if c == Class::Arp as u32 => out.arp = sum,
            c if c == Class::ForeignMd as u32 => out.foreign_md = sum,
            _ => out.other = sum,
        }
    }
    out
}
