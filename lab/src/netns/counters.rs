//! The kernel's counters around a run: read from both namespaces before and after it,
//! their differences written beside the run's files, and the ones a clean run leaves at
//! zero warned about.

use std::collections::BTreeMap;
use std::fs;

use anyhow::Result;
use netlab::VethLab;

use super::RunCtx;

/// Kernel counters by name (`Udp.RcvbufErrors`, `ethtool.xdp_tx`, `link.rx_dropped`...).
pub type Counters = BTreeMap<String, i64>;

pub(super) fn both_counters(lab: &VethLab) -> (Counters, Counters) {
    (
        counters(&lab.exchange, VethLab::EXCHANGE_IF),
        counters(&lab.strategy, VethLab::STRATEGY_IF),
    )
}

/// Writes `<tag>.counters.json` and warns about counters a clean run leaves at zero.
pub(super) fn write_counter_deltas(
    ctx: &RunCtx<'_>,
    tag: &str,
    (before, after): (&(Counters, Counters), &(Counters, Counters)),
    heartbeats: bool,
) -> Result<()> {
    let deltas = CounterDeltas {
        exchange: delta(&before.0, &after.0),
        strategy: delta(&before.1, &after.1),
    };
    fs::write(
        ctx.file(tag, "counters.json"),
        serde_json::to_string_pretty(&deltas)?,
    )?;
    let suspicious = [
        ("strategy", "Udp.InErrors"),
        ("strategy", "Udp.RcvbufErrors"),
        ("strategy", "link.rx_dropped"),
        ("exchange", "link.rx_dropped"),
        ("exchange", "Udp.SndbufErrors"),
        ("exchange", "Tcp.RetransSegs"),
        ("strategy", "Tcp.RetransSegs"),
        ("exchange", "Tcp.InErrs"),
        ("strategy", "Tcp.OutRsts"),
        ("exchange", "Tcp.OutRsts"),
    ];
    for (side, key) in suspicious {
        let of_side = if side == "exchange" {
            &deltas.exchange
        } else {
            &deltas.strategy
        };
        if let Some(v) = of_side.get(key).copied().filter(|v| *v > 0) {
            if heartbeats && (side, key, v) == ("exchange", "Tcp.OutRsts", 1) {
                // The exchange closes at the end of the file; a heartbeat the strategy sent
                // before it saw the close is answered with a reset.
                println!("  {tag}: exchange Tcp.OutRsts +1: a heartbeat that arrived after the exchange closed (expected with +warm/+hb)");
                continue;
            }
            println!("  {tag}: WARNING {side} {key} +{v} during the run (not explained by the lab; see {tag}.counters.json)");
        }
    }
    Ok(())
}

/// Kernel counters of one namespace: /proc/net/snmp (Ip, Udp, Tcp), /proc/net/netstat
/// (TcpExt), the driver's `ethtool -S` statistics and the interface's link statistics.
pub fn counters(ns: &netlab::Netns, ifname: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let Ok(text) = ns.exec(&["cat", file]) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut n = names.split_whitespace();
            let mut v = values.split_whitespace();
            let Some(proto) = n.next().map(|p| p.trim_end_matches(':').to_owned()) else {
                continue;
            };
            v.next();
            if !["Ip", "Udp", "Tcp", "TcpExt"].contains(&proto.as_str()) {
                continue;
            }
            for (name, value) in n.zip(v) {
                if let Ok(x) = value.parse::<i64>() {
                    out.insert(format!("{proto}.{name}"), x);
                }
            }
        }
    }
    if let Ok(text) = ns.exec(&["ethtool", "-S", ifname]) {
        for line in text.lines().skip(1) {
            if let Some((k, v)) = line.trim().split_once(':') {
                if let Ok(x) = v.trim().parse::<i64>() {
                    out.insert(format!("ethtool.{}", k.trim()), x);
                }
            }
        }
    }
    if let Ok(j) = ns.exec(&["ip", "-s", "-j", "link", "show", "dev", ifname]) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&j) {
            let st = &v[0]["stats64"];
            for (dir, key) in [
                ("rx", "dropped"),
                ("rx", "errors"),
                ("tx", "dropped"),
                ("tx", "errors"),
                ("rx", "packets"),
                ("tx", "packets"),
            ] {
                if let Some(x) = st[dir][key].as_i64() {
                    out.insert(format!("link.{dir}_{key}"), x);
                }
            }
        }
    }
    out
}

/// The kernel counters that moved during a run, per side (`<tag>.counters.json`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CounterDeltas {
    /// The exchange's namespace.
    pub exchange: Counters,
    /// The strategy's namespace.
    pub strategy: Counters,
}

/// Non-zero differences.
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(k, d)| *d != 0 && !k.ends_with("CurrEstab"))
        .collect()
}
