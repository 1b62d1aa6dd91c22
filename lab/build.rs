//! Embeds the tracing programs (`lab --trace`) when `cargo xtask build-ebpf` has built them.
//!
//! The object is looked up at `$TRACE_EBPF_OBJ` or
//! `<workspace>/target/ebpf/bpfel-unknown-none/release/trace-ebpf`. When it is there, it is
//! copied to OUT_DIR and `cfg(trace_obj)` is set; otherwise the lab builds without it and
//! `--trace` says to run `cargo xtask build-ebpf`.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(trace_obj)");
    println!("cargo::rerun-if-env-changed=TRACE_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/trace-ebpf");
    let obj = std::env::var_os("TRACE_EBPF_OBJ").map_or(default, PathBuf::from);
    println!("cargo::rerun-if-changed={}", obj.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("trace.o");
    if obj.exists() && std::fs::copy(&obj, &out).is_ok() {
        println!("cargo::rustc-cfg=trace_obj");
    } else {
        let _ = std::fs::write(&out, b"");
    }
}
