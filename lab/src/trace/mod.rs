//! `lab --trace`: each order's way through both kernels, stamped at the kernel's network
//! tracepoints (the waterfall).
//!
//! [`Tracer::start`] loads the tracing programs (`strategy-ebpf`'s `trace` object, see
//! [`strategy_common::trace`]), gives them the run's two interfaces (namespace inode and
//! interface index) and the field offsets of this kernel (from its BTF, [`btf`]), lists the
//! oracle's trigger ids, and attaches them to `net_dev_start_xmit`, `netif_rx`,
//! `napi_gro_receive_entry`, `netif_receive_skb` and `tcp_probe`. [`Tracer::finish`] reads
//! the stamps and detaches (dropping the programs; the kernel also drops them when the lab
//! exits, however it exits: raw tracepoint links live as long as their file descriptors).
//! [`waterfall`] joins the stamps with the exchange's and the strategy's rows into one row
//! per order. A run without `--trace` loads nothing.

pub mod btf;
pub mod report;
pub mod waterfall;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap};
use aya::programs::RawTracePoint;
use aya::Ebpf;
use strategy_common::trace::{
    counter, md_point, seg_key_parts, seg_point, TraceConfig, MAX_TRIGGERS,
};

/// The kernel fields the programs read ([`TraceConfig`], in its order).
pub const FIELDS: [&str; 8] = [
    "sk_buff.data",
    "sk_buff.len",
    "sk_buff.data_len",
    "sk_buff.dev",
    "net_device.ifindex",
    "net_device.nd_net",
    "net.ns.inum",
    "sock.__sk_common.skc_net",
];

/// Segments are stamped within this long after a listed trigger's packet (us).
const WINDOW_US: u32 = 10_000;

/// The programs and the tracepoints they attach to.
const PROGRAMS: [(&str, &str); 5] = [
    ("trace_xmit", "net_dev_start_xmit"),
    ("trace_netif_rx", "netif_rx"),
    ("trace_gro", "napi_gro_receive_entry"),
    ("trace_receive", "netif_receive_skb"),
    ("trace_tcp", "tcp_probe"),
];

#[cfg(trace_obj)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trace.o"));
#[cfg(not(trace_obj))]
static OBJECT: &[u8] = &[];

/// Is the tracing object embedded in this binary?
pub fn has_object() -> bool {
    !OBJECT.is_empty()
}

/// One side of the link: the namespace and the interface inside it.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The namespace.
    pub netns: &'a netlab::Netns,
    /// Interface name inside it.
    pub iface: &'a str,
}

impl Side<'_> {
    /// (namespace inode, interface index).
    fn ids(&self) -> Result<(u32, u32)> {
        let path = format!("/run/netns/{}", self.netns.name());
        let ino = std::fs::metadata(&path)
            .with_context(|| format!("{path}: the namespace's inode"))?
            .ino();
        let out = self
            .netns
            .exec(&["cat", &format!("/sys/class/net/{}/ifindex", self.iface)])
            .with_context(|| format!("{} in {}: its index", self.iface, self.netns.name()))?;
        let ifindex = out
            .trim()
            .parse()
            .with_context(|| format!("interface index `{}`", out.trim()))?;
        Ok((u32::try_from(ino).context("namespace inode")?, ifindex))
    }
}

/// The stamps of one run, as the programs left them (`CLOCK_MONOTONIC` ns).
#[derive(Debug, Clone, Default)]
pub struct Stamps {
    /// Per trigger id: [`md_point::XMIT`], [`md_point::RX`].
    pub md: HashMap<u64, [Option<u64>; 2]>,
    /// Per segment point ([`strategy_common::trace::seg_point`]): stream offset of the
    /// segment's first byte -> (payload length, stamp). Offsets count from the session's
    /// handshake (none seen: no segment stamps).
    pub segs: [BTreeMap<u64, (u16, u64)>; seg_point::COUNT],
    /// The stream's first sequence number (the ack number of the exchange's SYN-ACK).
    pub isn: Option<u32>,
    /// Market-data stamps, segment stamps, stamps lost to a full map.
    pub counters: [u64; 3],
    /// `(CLOCK_MONOTONIC, CLOCK_REALTIME - CLOCK_MONOTONIC)` ns, read when the programs
    /// were attached and when they were read: places the kernel's software stamps
    /// (`CLOCK_REALTIME`) on the programs' clock, interpolated between the two.
    pub clock: [(u64, i64); 2],
    /// Each program's runs and the time they took (the kernel's BPF run-time statistics,
    /// on while the programs are attached): the tracing's own cost.
    pub cost: Vec<waterfall::ProgramCost>,
}

/// `(CLOCK_MONOTONIC, CLOCK_REALTIME - CLOCK_MONOTONIC)` now: the smallest-gap of a few
/// reads.
fn clock_pair() -> (u64, i64) {
    let mut best = (u64::MAX, 0u64, 0i64);
    for _ in 0..16 {
        let a = hostsys::clock::mono_ns();
        let r = hostsys::clock::real_ns();
        let b = hostsys::clock::mono_ns();
        if b - a < best.0 {
            let mid = a + (b - a) / 2;
            best = (b - a, mid, r as i64 - mid as i64);
        }
    }
    (best.1, best.2)
}

impl Stamps {
    /// A `CLOCK_REALTIME` stamp (the kernel's software timestamps) on `CLOCK_MONOTONIC`.
    pub fn real_to_mono(&self, real: u64) -> u64 {
        let [(m0, d0), (m1, d1)] = self.clock;
        // The offset at the stamp's (approximate) monotonic time, linear between the reads.
        let approx = (real as i64 - d0) as u64;
        let d = if m1 > m0 {
            let f = (approx.saturating_sub(m0)) as f64 / (m1 - m0) as f64;
            d0 + ((d1 - d0) as f64 * f.clamp(0.0, 1.0)) as i64
        } else {
            d0
        };
        (real as i64 - d) as u64
    }

    /// The stamp at `point` of the segment carrying stream offset `off`: the last segment
    /// starting at or before it (segments are contiguous; a retransmission keeps the first
    /// stamp of its sequence number).
    pub fn seg_at(&self, point: u64, off: u64) -> Option<u64> {
        let (&start, &(len, t)) = self.segs.get(point as usize)?.range(..=off).next_back()?;
        (off < start + u64::from(len)).then_some(t)
    }
}

/// [`Tracer::start`] for a namespace lab's run: the exchange's and the strategy's veth, the
/// default ports, the trigger ids of the oracle's orders.
pub fn start_for(lab: &netlab::VethLab, oracle: &[proto::order::OrderRepr]) -> Result<Tracer> {
    let ids: Vec<u64> = oracle.iter().map(|o| o.trigger_id).collect();
    Tracer::start(
        Side {
            netns: &lab.exchange,
            iface: netlab::VethLab::EXCHANGE_IF,
        },
        Side {
            netns: &lab.strategy,
            iface: netlab::VethLab::STRATEGY_IF,
        },
        (proto::DEFAULT_MD_PORT, proto::DEFAULT_OE_PORT),
        &ids,
    )
}

/// The loaded, attached programs.
pub struct Tracer {
    ebpf: Ebpf,
    slots: Vec<u64>,
    clock: (u64, i64),
    // Keeps the kernel's BPF run-time statistics on (None: the kernel refused; no cost
    // figures then).
    _stats: Option<std::os::fd::OwnedFd>,
}

impl Tracer {
    /// Loads and attaches the programs for one run (`ids`: the trigger ids to stamp).
    pub fn start(
        exchange: Side<'_>,
        strategy: Side<'_>,
        (md_port, order_port): (u16, u16),
        ids: &[u64],
    ) -> Result<Self> {
        if !has_object() {
            bail!("--trace: this lab was built without the tracing programs; run `cargo xtask build-ebpf`, then build again");
        }
        if ids.len() > MAX_TRIGGERS as usize {
            bail!(
                "--trace stamps at most {MAX_TRIGGERS} triggers per run ({} asked)",
                ids.len()
            );
        }
        let btf = btf::Btf::kernel().context("--trace needs the kernel's BTF")?;
        let mut off = [0u32; FIELDS.len()];
        for (o, f) in off.iter_mut().zip(FIELDS) {
            *o = btf.offset(f)?;
        }
        let skb_base = off[..4].iter().copied().min().unwrap_or(0);
        let dev_base = off[4].min(off[5]);
        // Each structure's fields must lie in one window the programs read at once.
        for (what, base, fields) in [
            ("sk_buff", skb_base, &off[..4]),
            ("net_device", dev_base, &off[4..6]),
        ] {
            if fields
                .iter()
                .any(|&f| f + 8 > base + strategy_common::trace::WINDOW)
            {
                bail!("--trace: this kernel's {what} fields are more than {} bytes apart ({fields:?}); the programs read one window per structure", strategy_common::trace::WINDOW);
            }
        }
        let (exchange_ns, exchange_ifindex) = exchange.ids()?;
        let (strategy_ns, strategy_ifindex) = strategy.ids()?;
        let cfg = TraceConfig {
            skb_data: off[0],
            skb_len: off[1],
            skb_data_len: off[2],
            skb_dev: off[3],
            dev_ifindex: off[4],
            dev_net: off[5],
            net_inum: off[6],
            sk_net: off[7],
            exchange_ns,
            exchange_ifindex,
            strategy_ns,
            strategy_ifindex,
            md_port,
            order_port,
            skb_base,
            dev_base,
            window_us: WINDOW_US,
        };
        let mut ebpf = Ebpf::load(OBJECT).context("loading the tracing programs")?;
        let mut config: Array<_, TraceConfig> =
            Array::try_from(ebpf.map_mut("TRACE_CONFIG").context("TRACE_CONFIG")?)?;
        config.set(0, cfg, 0)?;
        let mut wanted: BpfHashMap<_, u64, u32> =
            BpfHashMap::try_from(ebpf.map_mut("WANTED").context("WANTED")?)?;
        let mut slots = Vec::with_capacity(ids.len());
        for &id in ids {
            if !slots.contains(&id) {
                wanted.insert(id, slots.len() as u32, 0)?;
                slots.push(id);
            }
        }
        for (name, tp) in PROGRAMS {
            let p: &mut RawTracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name}"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
            p.attach(tp)
                .with_context(|| format!("attaching {name} to {tp}"))?;
        }
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
        Ok(Self {
            ebpf,
            slots,
            clock: clock_pair(),
            _stats: stats,
        })
    }

    /// Reads every stamp and detaches the programs.
    pub fn finish(self) -> Result<Stamps> {
        let mut s = Stamps {
            clock: [self.clock, clock_pair()],
            ..Stamps::default()
        };
        for (name, _) in PROGRAMS {
            if let Some(info) = self.ebpf.program(name).and_then(|p| p.info().ok()) {
                s.cost.push(waterfall::ProgramCost {
                    program: name.to_owned(),
                    runs: info.run_count(),
                    ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                });
            }
        }
        let counters: Array<_, u64> =
            Array::try_from(self.ebpf.map("TRACE_COUNTERS").context("TRACE_COUNTERS")?)?;
        for i in 0..counter::COUNT {
            s.counters[i as usize] = counters.get(&i, 0)?;
        }
        let isn: Array<_, u64> = Array::try_from(self.ebpf.map("ISN").context("ISN")?)?;
        let first = isn.get(&0, 0)?;
        s.isn = (first != 0).then_some(first as u32);
        let md: Array<_, u64> = Array::try_from(self.ebpf.map("MD_TIMES").context("MD_TIMES")?)?;
        for (slot, &id) in self.slots.iter().enumerate() {
            let at = |p: u32| -> Result<Option<u64>> {
                let v = md.get(&(slot as u32 * md_point::COUNT + p), 0)?;
                Ok((v != 0).then_some(v))
            };
            s.md.insert(id, [at(md_point::XMIT)?, at(md_point::RX)?]);
        }
        let segs: BpfHashMap<_, u64, u64> =
            BpfHashMap::try_from(self.ebpf.map("SEGS").context("SEGS")?)?;
        if let Some(isn) = s.isn {
            for kv in segs.iter() {
                let (key, t) = kv?;
                let (point, len, seq) = seg_key_parts(key);
                if let Some(m) = s.segs.get_mut(point as usize) {
                    // A retransmission at the same place keeps the first stamp.
                    let e = m
                        .entry(u64::from(seq.wrapping_sub(isn)))
                        .or_insert((len, t));
                    if t < e.1 {
                        *e = (len, t);
                    }
                }
            }
        }
        Ok(s)
    }
}
