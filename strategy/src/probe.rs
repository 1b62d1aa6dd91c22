//! `strategy probe`: what this machine offers each network path, printed as a table (or
//! JSON): io_uring set-up flags, features and opcodes; per interface, its driver, whether the
//! XDP program attaches in driver and in generic mode, queues, busy-poll settings; the
//! kernel's busy-poll sysctls, huge pages, and the machine (`hostsys::machine`: CPU,
//! hypervisor, kernel, clock source, CPUs and their isolation).
//!
//! Attaching XDP changes the interface for a moment: the program is attached and detached
//! at once, and only on the interfaces named with `--iface`.

use std::fs;
use std::path::Path;

/// One section of the probe: a title and `(what, value)` rows.
pub type Section = (String, Vec<(String, String)>);

fn read_trim(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "-".to_owned())
}

fn machine() -> Section {
    let mut rows: Vec<(String, String)> = hostsys::machine::Machine::read()
        .rows()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    for key in ["HugePages_Total", "HugePages_Free", "Hugepagesize"] {
        let v = meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map_or("-".into(), |(_, v)| v.trim().to_owned());
        rows.push((key.into(), v));
    }
    for key in ["busy_poll", "busy_read"] {
        rows.push((
            format!("net.core.{key} (us)"),
            read_trim(format!("/proc/sys/net/core/{key}")),
        ));
    }
    ("machine".into(), rows)
}

fn interface(name: &str, try_xdp: bool) -> Section {
    let base = Path::new("/sys/class/net").join(name);
    let mut rows = Vec::new();
    let driver = fs::read_link(base.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| {
            // Virtual devices (veth, tap) have no device link: their kind is in uevent.
            read_trim(base.join("uevent"))
                .lines()
                .find_map(|l| l.strip_prefix("DEVTYPE=").map(str::to_owned))
                .unwrap_or_else(|| "virtual (no device)".into())
        });
    rows.push(("driver".into(), driver));
    let queues = |kind: &str| {
        fs::read_dir(base.join("queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(kind))
                    .count()
                    .to_string()
            })
            .unwrap_or_else(|_| "-".into())
    };
    rows.push(("RX queues".into(), queues("rx-")));
    rows.push(("TX queues".into(), queues("tx-")));
    rows.push(("MTU".into(), read_trim(base.join("mtu"))));
    for key in ["napi_defer_hard_irqs", "gro_flush_timeout", "threaded"] {
        rows.push((key.into(), read_trim(base.join(key))));
    }
    // What `kernel+wire` and the exchange's NIC clock can use (`ethtool -T`).
    let stamps = match hostsys::hwtstamp::ts_info(name).map(|i| i.hardware()) {
        Ok(Ok(phc)) => format!("yes (PTP clock /dev/ptp{phc})"),
        Ok(Err(why)) => format!("no: {why}"),
        Err(e) => format!("unknown: ETHTOOL_GET_TS_INFO: {e}"),
    };
    rows.push(("hardware timestamps".into(), stamps));
    if try_xdp {
        xdp_rows(name, &mut rows);
    }
    (format!("interface {name}"), rows)
}

#[cfg(feature = "xdp")]
fn xdp_rows(name: &str, rows: &mut Vec<(String, String)>) {
    use crate::net::af_xdp::loader::{has_object, Steering, XdpModeArg};
    use std::net::{Ipv4Addr, SocketAddrV4};
    if !has_object() {
        rows.push((
            "XDP".into(),
            "not probed: built without the XDP program (cargo xtask build-ebpf)".into(),
        ));
        return;
    }
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    for (mode, label) in [
        (XdpModeArg::Drv, "XDP driver mode"),
        (XdpModeArg::Skb, "XDP generic (SKB) mode"),
    ] {
        // Attached and, on drop, detached at once.
        let v = match Steering::attach(
            name,
            mode,
            (Ipv4Addr::UNSPECIFIED, any, any),
            Default::default(),
        ) {
            Ok(s) => {
                drop(s);
                "yes".to_owned()
            }
            Err(e) => format!("no ({e})"),
        };
        rows.push((label.into(), v));
    }
    let zc = match crate::net::af_xdp::zero_copy_bind(name) {
        Ok(()) => "yes".to_owned(),
        Err(e) => format!("no ({e})"),
    };
    rows.push(("AF_XDP zero-copy bind (queue 0)".into(), zc));
}

#[cfg(not(feature = "xdp"))]
fn xdp_rows(_: &str, rows: &mut Vec<(String, String)>) {
    rows.push(("XDP".into(), "built without the xdp feature".into()));
}

/// Every section: the machine, io_uring, and each interface (`attach` names the ones on
/// which XDP attachment is tried).
pub fn probe(attach: &[String]) -> Vec<Section> {
    let mut out = vec![machine(), ("io_uring".into(), crate::net::uring::probe())];
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for n in names {
        let try_xdp = attach.contains(&n);
        out.push(interface(&n, try_xdp));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_covers_the_machine_uring_and_loopback() {
        let p = probe(&[]);
        let titles: Vec<&str> = p.iter().map(|(t, _)| t.as_str()).collect();
        assert!(
            titles.contains(&"machine") && titles.contains(&"io_uring"),
            "{titles:?}"
        );
        assert!(titles.contains(&"interface lo"), "{titles:?}");
        let machine = &p[0].1;
        assert!(machine
            .iter()
            .any(|(k, v)| k == "CPUs online" && v.parse::<usize>().is_ok()));
        assert!(machine.iter().any(|(k, _)| k == "hypervisor"));
        let uring = &p[1].1;
        assert!(uring
            .iter()
            .any(|(k, _)| k == "SINGLE_ISSUER + DEFER_TASKRUN"));
        // Loopback has no NIC clock, and the probe says why.
        let lo = &p.iter().find(|(t, _)| t == "interface lo").expect("lo").1;
        assert!(
            lo.iter()
                .any(|(k, v)| k == "hardware timestamps" && v.starts_with("no: ")),
            "{lo:?}"
        );
    }
}
