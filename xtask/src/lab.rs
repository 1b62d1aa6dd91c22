//! `cargo xtask lab`: the network-namespace lab.
