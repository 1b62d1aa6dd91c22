//! The VM lab end to end under TCG (root, release binaries, the XDP program, QEMU and a
//! guest kernel: `cargo xtask setup --vm`). Ignored by a plain `cargo test`; `cargo xtask
//! test` runs it with `--ignored` unless `--no-vm`.

mod common;

use anyhow::{Context, Result};
use common::test_lab;
use lab::{Env, LabConfig};
use strategy::net::af_xdp::loader::AttachMode;

#[test]
#[ignore = "needs root, QEMU and the release binaries: cargo xtask test runs it"]
fn guests_on_virtio_and_igb_equal_the_oracle() -> Result<()> {
    if let Some(why) = common::cannot_run() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    vm_smoke(&Env::workspace())
}

/// The VM tests: one TCG guest per NIC (virtio-net, igb) and path (kernel with its wire
/// stamps, xdp, xdp-tx) on a small file; the lab fails unless the exchange's orders equal
/// the replay oracle, and this fails unless the XDP paths ran the program in driver (native)
/// mode on both NICs and the guest's order rows came back.
/// Then `xdp` on virtio-net with two tuning variants (GRO off, read back; two queue pairs,
/// a socket per queue), and `xdp-tx` in a guest of two vCPUs with a queue pair each (a
/// socket per queue, the program still deciding and sending: the market data keeps to one
/// queue). Last, `xdp+busypoll` with AF_XDP zero copy and busy polling on both NICs, in the
/// newer kernel `cargo xtask setup --vm` fetched. Bounded by timeouts.
fn vm_smoke(env: &Env) -> Result<()> {
    let dir = env.results_root().join("vm-test");
    let md = dir.join("md-small.csv.gz");
    let cfg = mdfile::mdgen::GenConfig {
        target_bytes: 20_000,
        depth: 40,
        trigger_every: 60,
        ..mdfile::mdgen::GenConfig::default()
    };
    std::fs::create_dir_all(&dir)?;
    mdfile::mdgen::generate(&md, &cfg)?;
    let args = LabConfig {
        timeout: 120,
        ..test_lab(
            &["kernel+wire", "xdp", "xdp-tx"],
            Some(md),
            dir,
            "rate:1000",
        )
    };
    let vm = lab::vm::VmConfig {
        accel: "tcg".into(),
        nic: vec!["virtio".into(), "igb".into()],
        ..lab::vm::VmConfig::default()
    };
    let t0 = std::time::Instant::now();
    let started = std::time::SystemTime::now();
    let (dir, results) = lab::vm::run(env, &args, &vm)?;
    lab::report::report(&dir, &results, &[])?;
    lab::check(&dir, &results)?;
    for r in results.iter().filter(|r| r.key.path.needs_ebpf()) {
        let mode = r.xdp_backend().map(|b| b.xdp_mode);
        anyhow::ensure!(
            mode == Some(AttachMode::Drv),
            "{}: the XDP program ran in {mode:?} mode, not native (drv)",
            r.path
        );
    }
    // The strategy's order rows come back from the guest: its stages, and on `kernel+wire`
    // its own wire to wire on the guest kernel's clock; neither emulated NIC stamps every
    // received packet in hardware (virtio-net: software only; igb, an 82576: PTP packets
    // only), and the report says so.
    for r in &results {
        let st = r.stages.as_ref().context("the guest's stages")?;
        let wire = r.strategy.as_ref().and_then(|s| s.wire.as_ref());
        if r.key.path.has(strategy::spec::Variant::Wire) {
            anyhow::ensure!(
                st.wire_kernel_us.is_some_and(|us| us > 0.0) && st.wire_nic_us.is_none(),
                "{}: {st:?}",
                r.path
            );
            anyhow::ensure!(
                wire.is_some_and(|w| w.nic_phc.is_none() && w.nic_off.is_some()),
                "{}: {wire:?}",
                r.path
            );
        } else {
            anyhow::ensure!(st.wire_kernel_us.is_none() && wire.is_none(), "{}", r.path);
        }
    }
    for r in results.iter().filter(|r| r.key.path.sends_with_xdp_tx()) {
        let fired = r.xdp_tx().map_or(0, |x| x.prog.fired);
        anyhow::ensure!(fired > 0, "xdp-tx in a guest: the program sent no order");
    }
    // Tuning variants, applied in the guest and read back: GRO off, and two queue pairs
    // (AF_XDP then binds a socket per queue and the flows the tap spreads over them all
    // arrive: the lab's oracle check covers it). Their baseline, virtio/xdp, ran above: not
    // booted again.
    let tuned = LabConfig {
        paths: vec!["xdp".parse()?],
        results_dir: Some(dir.join("tuned")),
        ..args.clone()
    };
    let vm = lab::vm::VmConfig {
        nic: vec!["virtio".into()],
        tunes: vec!["nogro".into(), "mq=ethtool -L $IF combined 2".into()],
        tune_baseline: false,
        // The guests' features were probed in the first experiment (the report's probe
        // section); the later ones are about the data path and skip it (3-5 s a probe).
        probe: false,
        ..vm
    };
    // The first guest of each NIC probed its features (and only the first); told not to,
    // none does (below). Only files this run wrote: an earlier run's stay in the folder.
    let probes = |d: &std::path::Path| -> Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".probe.txt") && e.metadata()?.modified()? >= started {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    };
    let first = probes(&dir)?;
    anyhow::ensure!(
        first
            == [
                "igb-kernel+wire-1.probe.txt",
                "virtio-kernel+wire-1.probe.txt"
            ],
        "the first guest of each NIC probes: {first:?}"
    );
    for p in &first {
        let text = std::fs::read_to_string(dir.join(p))?;
        anyhow::ensure!(text.contains("io_uring"), "{p}: {text}");
    }
    let (tdir, tres) = lab::vm::run(env, &tuned, &vm)?;
    lab::check(&tdir, &tres)?;
    let later = probes(&tdir)?;
    anyhow::ensure!(later.is_empty(), "probe: false, yet: {later:?}");
    let run = |name: &str| tres.iter().find(|r| r.path == name).context("no tuned run");
    let back = run("virtio/xdp/nogro")?
        .tune_readback
        .clone()
        .unwrap_or_default();
    anyhow::ensure!(
        back.contains("generic-receive-offload: off"),
        "the guest did not read GRO back as off: {back:?}"
    );
    let queues = run("virtio/xdp/mq")?
        .ring()
        .map(|r| r.rx_queues.clone())
        .unwrap_or_default();
    anyhow::ensure!(
        queues.len() == 2,
        "two queue pairs: an AF_XDP socket on each, counted: {queues:?}"
    );
    // `xdp-tx` on several queues: two vCPUs, a queue pair each (never more pairs than
    // vCPUs for `xdp-tx`, lab::vm), a socket on each, the orders equal to the oracle (the
    // lab's check) and the program still sending.
    let two = LabConfig {
        paths: vec!["xdp-tx".parse()?],
        results_dir: Some(dir.join("two-queues")),
        ..args.clone()
    };
    let vm2 = lab::vm::VmConfig {
        accel: "tcg".into(),
        nic: vec!["virtio".into()],
        smp: 2,
        probe: false,
        ..lab::vm::VmConfig::default()
    };
    let (qdir, qres) = lab::vm::run(env, &two, &vm2)?;
    lab::check(&qdir, &qres)?;
    let r = qres.first().context("the two-queue run")?;
    let queues = r.ring().map(|r| r.rx_queues.clone()).unwrap_or_default();
    let x = r.xdp_tx().context("xdp-tx's report")?;
    anyhow::ensure!(
        queues.len() == 2 && x.prog.fired > 0 && x.prog.md_spread == 0,
        "xdp-tx on two queue pairs: a socket on each, the program deciding while the market data keeps to one: {queues:?} {x:?}"
    );
    // AF_XDP zero copy: the newer Debian kernel `cargo xtask setup --vm` unpacks under
    // target/ (virtio-net binds zero copy from Linux 6.14 on; the lab's virtio-net is a
    // modern device behind the DMA API, which its zero copy needs), on both NICs, with the
    // sockets' busy polling (`xdp+busypoll`: a zero-copy socket has a NAPI instance for the
    // loop's `recv` to poll).
    let zc = LabConfig {
        paths: vec!["xdp+busypoll".parse()?],
        results_dir: Some(dir.join("zero-copy")),
        ..args.clone()
    };
    let vmz = lab::vm::VmConfig {
        accel: "tcg".into(),
        nic: vec!["virtio".into(), "igb".into()],
        guest_kernel: lab::vm::KernelChoice::Fetched,
        probe: false,
        ..lab::vm::VmConfig::default()
    };
    let (zdir, zres) = lab::vm::run(env, &zc, &vmz)
        .context("the zero-copy guests (their kernel: `cargo xtask setup --vm`)")?;
    lab::check(&zdir, &zres)?;
    anyhow::ensure!(zres.len() == 2, "two zero-copy runs: {}", zres.len());
    for r in &zres {
        // Busy polling engaged: zero-copy sockets have a NAPI instance, and the loop's
        // `recv` on an empty ring polled it.
        let bp = r
            .ring()
            .and_then(|ring| ring.xsk_busy_poll)
            .context("busy polling reported")?;
        anyhow::ensure!(
            bp.napi_id != 0 && bp.polls > 0,
            "{}: busy polling of a zero-copy socket: {bp:?}",
            r.path
        );
        let b = r.xdp_backend().context("the AF_XDP report")?;
        anyhow::ensure!(
            b.xsk_bind == strategy::net::af_xdp::BindMode::ZeroCopy
                && b.xdp_mode == AttachMode::Drv,
            "{}: AF_XDP bound {:?} with XDP in {:?} mode, not zero copy in driver mode",
            r.path,
            b.xsk_bind,
            b.xdp_mode
        );
    }
    // Each folder's manifest keeps its guests' own machine (from the first guest's
    // console): the stock guest kernel in the first experiment, the fetched one here.
    let guest = |d: &std::path::Path| -> Result<hostsys::machine::Machine> {
        lab::manifest::Manifest::read(d)?
            .context("manifest.json")?
            .strategy_machine
            .context("the guest's machine in manifest.json")
    };
    let (stock, fetched) = (guest(&dir)?, guest(&zdir)?);
    anyhow::ensure!(
        stock.kernel.is_some()
            && fetched.kernel.is_some()
            && stock.kernel != fetched.kernel
            && stock.hypervisor.is_some(),
        "the guests' machines: {stock:?} and {fetched:?}"
    );
    println!("VM tests passed in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
