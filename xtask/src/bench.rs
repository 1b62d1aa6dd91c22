//! `cargo xtask bench-exchange`: the publisher's maximum rate and pacing error.
