//! `lab --vm --interactive`: a guest shell on this terminal with the exchange on the host.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use netlab::Netns;

use super::{qemu, VmConfig, GUEST_CIDR, GUEST_PEERS, HOST_ADDR};
use crate::{Env, LabConfig, PathSpec};
use strategy::net::NetKind;

/// `lab --vm --interactive`: the namespace, tap and exchange stay up while a guest shell runs
/// on this terminal; all of it goes when the guest powers off.
pub(super) fn interactive(
    env: &Env,
    a: &LabConfig,
    v: &VmConfig,
    md_file: &Path,
    dir: &Path,
    (accel, kernel, initrd): (&str, &Path, &Path),
) -> Result<()> {
    let nic = v.nic.first().map_or("virtio", String::as_str);
    let path = a
        .paths
        .first()
        .cloned()
        .unwrap_or_else(|| PathSpec::bare(NetKind::Kernel));
    let ns = Netns::new("vmlab").context("namespace")?;
    qemu::host_tap(&ns, false)?;
    let log = dir.join("interactive.exchange.log");
    let serve = exchange::serve_cmd::ServeCmd::new(md_file, &format!("{HOST_ADDR}:9012"))
        .md_iface("tap0")
        .allow_peers(&GUEST_PEERS)
        .preload(true)
        .pace(&a.pace)
        .handshake_delay(Duration::from_secs(1))
        .quiet_orders(true)
        .results(&dir.join("interactive.orders.csv"));
    let mut ex = ns
        .command(env.bin("exchange"))
        .args(serve.args())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting the exchange")?;
    println!(
        "lab: namespace {} with tap0 {HOST_ADDR}/24; exchange on {HOST_ADDR}:9012 (log {})",
        ns.name(),
        log.display()
    );
    println!(
        "lab: results in {}; enter the host side with `ip netns exec {} bash`",
        dir.display(),
        ns.name()
    );
    let device = match nic {
        "e1000e" => "e1000e,netdev=n0,mac=52:54:00:12:34:56",
        "igb" => "igb,netdev=n0,mac=52:54:00:12:34:56",
        _ => "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
    };
    let append = format!(
        "{} labip={GUEST_CIDR} labex={HOST_ADDR}:9012 labnet={} labshell=1",
        qemu::GUEST_ARGS,
        path.kind().as_str()
    );
    let st = qemu::qemu(&ns, accel, v, kernel, initrd)
        .args([
            "-append",
            &append,
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            "-device",
            device,
        ])
        .status()
        .context("starting qemu-system-x86_64")?;
    let _ = ex.kill();
    let _ = ex.wait();
    drop(ns);
    println!("lab: guest exited ({st}); tap, exchange and namespace removed");
    Ok(())
}
