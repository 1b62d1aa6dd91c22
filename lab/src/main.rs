//! `lab`: one command runs an experiment and prints the network paths side by side.
//!
//! `cargo xtask lab ARGS` installs and builds what the lab needs (release binaries, the XDP
//! program), then runs `target/release/lab ARGS`; the flags are in [`cli`].
#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::LabArgs::parse();
    match cli::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
