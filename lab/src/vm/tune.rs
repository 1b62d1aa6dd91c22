//! NIC and kernel tuning in the guest, as experiment variants (`lab --vm --guest-tune`).
//!
//! Each variant is a shell script the guest's /init sources after the NIC is up and before
//! the strategy starts (`$IF` is the NIC), then runs its read-back: the setting as the guest
//! kernel reports it afterwards, printed between `lab-tune-begin` / `lab-tune-end` on the
//! serial console and kept with the run's results (`guest_tune` in `runs.json` and
//! `<tag>.tune.txt`), so a variant that the driver refused shows it. Every variant runs in
//! the same experiment as the untuned baseline. A free-form variant is `NAME=COMMANDS`.

use anyhow::{bail, Result};

/// A tuning variant: its name, the commands, the read-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tune {
    /// Name shown beside the NIC and path.
    pub name: String,
    /// Shell commands (busybox sh; `ethtool` is in the image).
    pub apply: String,
    /// Shell commands printing the resulting setting.
    pub readback: String,
}

/// The named variants.
const NAMED: &[(&str, &str, &str, &str)] = &[
    (
        "coalesce0",
        "interrupt coalescing off: an interrupt per frame (ethtool -C rx-usecs 0 tx-usecs 0)",
        "ethtool -C $IF rx-usecs 0 tx-usecs 0",
        "ethtool -c $IF | grep -E '^(rx|tx)-usecs:'",
    ),
    (
        "nogro",
        "GRO off (ethtool -K gro off): no coalescing of received segments",
        "ethtool -K $IF gro off",
        "ethtool -k $IF | grep -E '^generic-receive-offload:'",
    ),
    (
        "nolro",
        "LRO off (ethtool -K lro off): the NIC merges no segments (where the driver offers it)",
        "ethtool -K $IF lro off",
        "ethtool -k $IF | grep -E '^large-receive-offload:'",
    ),
    (
        "irq0",
        "the NIC's interrupts on CPU 0 (IRQ affinity; the strategy is pinned elsewhere when the guest has more vCPUs)",
        "for i in $(grep -E \"$IF|virtio|igb|e1000e\" /proc/interrupts | cut -d: -f1); do echo 1 > /proc/irq/$i/smp_affinity 2>/dev/null; done",
        "for i in $(grep -E \"$IF|virtio|igb|e1000e\" /proc/interrupts | cut -d: -f1); do echo irq$i=$(cat /proc/irq/$i/smp_affinity_list); done",
    ),
    (
        "busypoll",
        "socket busy polling for every socket (net.core.busy_poll / busy_read = 50 us)",
        "echo 50 > /proc/sys/net/core/busy_poll; echo 50 > /proc/sys/net/core/busy_read",
        "echo busy_poll=$(cat /proc/sys/net/core/busy_poll) busy_read=$(cat /proc/sys/net/core/busy_read)",
    ),
    (
        "napidefer",
        "interrupts deferred while polling (napi_defer_hard_irqs 2, gro_flush_timeout 200 us)",
        "echo 2 > /sys/class/net/$IF/napi_defer_hard_irqs; echo 200000 > /sys/class/net/$IF/gro_flush_timeout",
        "echo napi_defer_hard_irqs=$(cat /sys/class/net/$IF/napi_defer_hard_irqs) gro_flush_timeout=$(cat /sys/class/net/$IF/gro_flush_timeout)",
    ),
    (
        "threaded",
        "threaded NAPI (a kernel thread per NAPI instance instead of softirq)",
        "echo 1 > /sys/class/net/$IF/threaded",
        "echo threaded=$(cat /sys/class/net/$IF/threaded)",
    ),
];

/// The named variants with what they do (for `--help` and docs).
pub fn describe() -> Vec<(&'static str, &'static str)> {
    NAMED.iter().map(|(n, d, _, _)| (*n, *d)).collect()
}

/// Parses `--guest-tune` values: a named variant, or `NAME=COMMANDS` (read back with
/// nothing but the commands' own output).
pub fn parse(specs: &[String]) -> Result<Vec<Tune>> {
    let mut out = Vec::new();
    for s in specs {
        if let Some((name, cmds)) = s.split_once('=') {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                bail!("--guest-tune {s}: the name before `=` must be letters, digits, - or _");
            }
            out.push(Tune {
                name: name.to_owned(),
                apply: cmds.to_owned(),
                readback: String::new(),
            });
            continue;
        }
        match NAMED.iter().find(|(n, ..)| *n == s) {
            Some((n, _, apply, readback)) => out.push(Tune {
                name: (*n).to_owned(),
                apply: (*apply).to_owned(),
                readback: (*readback).to_owned(),
            }),
            None => bail!(
                "--guest-tune {s}: unknown variant (named: {}; or NAME=COMMANDS)",
                NAMED
                    .iter()
                    .map(|(n, ..)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

impl Tune {
    /// Whether the variant sets the NIC's queue count.
    pub fn sets_queues(&self) -> bool {
        self.apply.contains("ethtool -L")
    }

    /// The script the guest sources (`/tune/<name>.sh`).
    pub fn script(&self) -> String {
        format!(
            "# {name}\n{apply}\necho lab-tune-begin\necho tune={name}\n{readback}\necho lab-tune-end\n",
            name = self.name,
            apply = self.apply,
            readback = self.readback
        )
    }
}

/// Refuses a variant that sets the queue count (`ethtool -L`) on `xdp-tx`: with XDP in
/// virtio-net's shared-queue mode and more active queue pairs than vCPUs, the guest (Linux
/// 6.1) panicked on the first XDP_TX (measured; as we read the driver, it picks an XDP TX
/// queue past the last one). `xdp-tx` gets a queue pair per vCPU instead (`--smp`).
pub fn check_paths(tunes: &[Tune], paths: &[crate::PathSpec]) -> Result<()> {
    if let (Some(t), Some(p)) = (
        tunes.iter().find(|t| t.sets_queues()),
        paths
            .iter()
            .find(|p| p.kind() == strategy::net::NetKind::XdpTx),
    ) {
        bail!("--guest-tune {}: it sets the queue count (ethtool -L), which is refused for `{p}`: a guest with more queue pairs than vCPUs panicked on the first XDP_TX (Linux 6.1's virtio-net); give the guest vCPUs instead (--smp 2: a queue pair each)", t.name);
    }
    Ok(())
}

/// The read-back lines of a serial log (between the markers), if any.
pub fn readback(serial_log: &str) -> Option<String> {
    let start = serial_log.find("lab-tune-begin")?;
    let rest = &serial_log[start + "lab-tune-begin".len()..];
    let end = rest.find("lab-tune-end")?;
    Some(rest[..end].trim().replace('\r', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_free_form_variants() {
        let t = parse(&["nogro".into(), "mine=echo hi".into()]).expect("parses");
        assert_eq!(t[0].name, "nogro");
        assert!(t[0].apply.contains("gro off"));
        assert_eq!(t[1].name, "mine");
        assert!(t[1].script().contains("echo hi\necho lab-tune-begin"));
        assert!(parse(&["nope".into()]).is_err());
        assert!(parse(&["bad name=x".into()]).is_err());
    }

    #[test]
    fn a_queue_count_is_refused_for_xdp_tx_only() {
        let t = parse(&["mq=ethtool -L $IF combined 2".into(), "nogro".into()]).expect("parses");
        let paths = |names: &[&str]| -> Vec<crate::PathSpec> {
            names.iter().map(|n| n.parse().expect("a path")).collect()
        };
        assert!(t[0].sets_queues() && !t[1].sets_queues());
        assert!(check_paths(&t, &paths(&["kernel", "xdp"])).is_ok());
        let e = check_paths(&t, &paths(&["xdp", "xdp-tx"])).expect_err("refused");
        assert!(e.to_string().contains("--smp 2"), "{e}");
        assert!(check_paths(&t[1..], &paths(&["xdp-tx"])).is_ok());
    }

    #[test]
    fn readback_between_markers() {
        let log = "boot\r\nlab-tune-begin\r\ntune=nogro\r\ngeneric-receive-offload: off\r\nlab-tune-end\r\nmore";
        assert_eq!(
            readback(log).as_deref(),
            Some("tune=nogro\ngeneric-receive-offload: off")
        );
        assert_eq!(readback("nothing"), None);
    }
}
