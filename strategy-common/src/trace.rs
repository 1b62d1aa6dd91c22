//! Types shared by the tracing programs (`strategy-ebpf`'s `trace` object) and their loader
//! (`lab --trace`).
//!
//! The programs sit on the kernel's network tracepoints (raw tracepoints: the arguments are
//! the tracepoints' own `sk_buff` and `sock` pointers) and stamp, with `bpf_ktime_get_ns`
//! (`CLOCK_MONOTONIC`, the clock of the exchange's and the strategy's user stamps), each
//! trigger's market-data packet and each order's TCP segment at every point this kernel
//! exposes. Market data is keyed by the trigger id read from the packet's line (its
//! `local_timestamp`, the id the order carries); orders by TCP sequence number, because the
//! kernel's own TCP keeps the payload in page fragments a tracepoint cannot read; the
//! exchange's row gives each order's offset in the stream, which ties the two.
//!
//! Kernel structures are read at offsets the loader takes from the running kernel's BTF
//! ([`TraceConfig`]), so one object runs on any kernel with BTF.

/// Where a market-data stamp was taken (index into a trigger's pair of slots).
pub mod md_point {
    /// The exchange's veth transmit (`net_dev_start_xmit`).
    pub const XMIT: u32 = 0;
    /// The strategy's veth receive, first of `netif_rx`, `napi_gro_receive_entry`,
    /// `netif_receive_skb` (absent when an XDP program takes the packet first).
    pub const RX: u32 = 1;
    /// Points per trigger.
    pub const COUNT: u32 = 2;
}

/// Where an order's segment was stamped (the top 16 bits of its key, [`seg_key`]).
pub mod seg_point {
    /// The strategy's veth transmit (`net_dev_start_xmit`: the kernel's own TCP only; the
    /// bypass paths hand frames to the driver directly).
    pub const XMIT: u64 = 0;
    /// The exchange's veth receive (the first of the receive tracepoints).
    pub const RX: u64 = 1;
    /// The exchange's TCP receive (`tcp_probe`, at the start of `tcp_rcv_established`).
    pub const TCP: u64 = 2;
    /// The exchange's `netif_receive_skb` (after GRO when the veth runs NAPI; the same
    /// moment as [`RX`] on the backlog path).
    pub const RECEIVE: u64 = 3;
    /// Points.
    pub const COUNT: usize = 4;
}

/// Index of each counter in the programs' counter array.
pub mod counter {
    /// Market-data stamps taken.
    pub const MD: u32 = 0;
    /// Segment stamps taken.
    pub const SEG: u32 = 1;
    /// Stamps lost (a map full).
    pub const LOST: u32 = 2;
    /// Counters.
    pub const COUNT: u32 = 3;
}

/// Bytes of a kernel structure the programs read at once (a probe read costs about as much
/// for 8 bytes as for 256 in a VM: one read per structure, not one per field).
pub const WINDOW: u32 = 256;

/// Trigger ids the programs stamp (map capacity).
pub const MAX_TRIGGERS: u32 = 16_384;
/// Segment stamps the programs keep (map capacity).
pub const MAX_SEGMENTS: u32 = 65_536;

/// The key of a segment stamp: the point, the segment's payload length (bytes, at most
/// 65535), its sequence number.
pub const fn seg_key(point: u64, len: u16, seq: u32) -> u64 {
    (point << 48) | ((len as u64) << 32) | seq as u64
}

/// The parts of a [`seg_key`]: (point, payload length, sequence number).
pub const fn seg_key_parts(key: u64) -> (u64, u16, u32) {
    (key >> 48, (key >> 32) as u16, key as u32)
}

/// What the programs need: the byte offsets of the kernel fields they read (from BTF), and
/// the two interfaces they watch, each named by its network namespace's inode number and
/// its index there (an interface index alone repeats across namespaces).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// `sk_buff.data`.
    pub skb_data: u32,
    /// `sk_buff.len`.
    pub skb_len: u32,
    /// `sk_buff.data_len` (bytes in fragments; `len - data_len` is the linear part).
    pub skb_data_len: u32,
    /// `sk_buff.dev`.
    pub skb_dev: u32,
    /// `net_device.ifindex`.
    pub dev_ifindex: u32,
    /// `net_device.nd_net` (its `net` pointer).
    pub dev_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    /// `sock.__sk_common.skc_net` (its `net` pointer).
    pub sk_net: u32,
    /// The exchange's namespace inode.
    pub exchange_ns: u32,
    /// The exchange's interface index.
    pub exchange_ifindex: u32,
    /// The strategy's namespace inode.
    pub strategy_ns: u32,
    /// The strategy's interface index.
    pub strategy_ifindex: u32,
    /// Market-data UDP port (host order).
    pub md_port: u16,
    /// Order-entry TCP port (host order).
    pub order_port: u16,
    /// Where the programs' one read of an `sk_buff` starts (the lowest of the offsets
    /// above; every `sk_buff` field they need lies within [`WINDOW`] bytes of it).
    pub skb_base: u32,
    /// Likewise for the `net_device` fields.
    pub dev_base: u32,
    /// Segments are stamped only this long after a listed trigger's packet was (us): an
    /// order follows its trigger within it, and the heartbeats of a warm path between
    /// orders (10,000 a second) do not fill the map.
    pub window_us: u32,
}

const _: () = assert!(
    core::mem::size_of::<TraceConfig>() == 64,
    "no implicit padding"
);

// SAFETY: plain #[repr(C)] integers, no implicit padding (asserted above); any bit pattern
// is valid, as aya::Pod requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for TraceConfig {}
