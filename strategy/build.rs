//! Embeds the XDP program when `cargo xtask build-ebpf` has built it.
//!
//! The object is looked up at `$STRATEGY_EBPF_OBJ` or
//! `<workspace>/target/ebpf/bpfel-unknown-none/release/strategy-ebpf`. When it is there, it is
//! copied to OUT_DIR and `cfg(xdp_obj)` is set; otherwise the strategy builds without it and
//! `--net xdp` says to run `cargo xtask build-ebpf`. So building and testing the user-space
//! crates never needs the eBPF toolchain.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(xdp_obj)");
    println!("cargo::rerun-if-env-changed=STRATEGY_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/strategy-ebpf");
    let obj = std::env::var_os("STRATEGY_EBPF_OBJ").map_or(default, PathBuf::from);
    println!("cargo::rerun-if-changed={}", obj.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("steer.o");
    if obj.exists() && std::fs::copy(&obj, &out).is_ok() {
        println!("cargo::rustc-cfg=xdp_obj");
    } else {
        let _ = std::fs::write(&out, b"");
    }
}
