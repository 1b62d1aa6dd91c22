//! docs/usage.md is the programs' own `--help`, generated: this test fails when it is
//! stale. `cargo xtask usage` rewrites it (this test with `NICLAB_BLESS_USAGE=1`).

use std::path::PathBuf;
use std::process::Command;

/// Every command a user runs, as `(binary, arguments before --help)`.
const COMMANDS: &[(&str, &[&str])] = &[
    ("lab", &[]),
    ("lab", &["compare"]),
    ("lab", &["analyze"]),
    ("lab", &["replot"]),
    ("lab", &["bench"]),
    ("lab", &["gen-md"]),
    ("exchange", &["serve"]),
    ("exchange", &["gen"]),
    ("strategy", &["run"]),
    ("strategy", &["replay"]),
    ("strategy", &["probe"]),
    ("strategy", &["xdp-pass"]),
];

const HEAD: &str = "# Usage: every flag, from the programs' own `--help`

Generated, do not edit: `cargo xtask usage` rewrites this file from the binaries, and the
test command fails when it is stale (`lab/tests/usage_doc.rs`). `cargo xtask lab ARGS` builds
the binaries and runs `lab ARGS`; `cargo xtask bench-exchange` is `lab bench`, `cargo xtask
gen-md` is `lab gen-md`. What the paths are and how to run them without root:
[paths.md](paths.md).
";

fn generated() -> String {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_lab"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut out = HEAD.to_owned();
    for (bin, args) in COMMANDS {
        let path = dir.join(bin);
        let o = Command::new(&path)
            .args(*args)
            .arg("--help")
            .env_remove("COLUMNS")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build the workspace's binaries first: cargo build --workspace)",
                    path.display()
                )
            });
        assert!(o.status.success(), "{bin} {args:?} --help failed");
        let name = std::iter::once(*bin)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let help = String::from_utf8_lossy(&o.stdout);
        out.push_str(&format!(
            "\n## `{name}`\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
    }
    out
}

#[test]
fn usage_doc_is_the_programs_help() {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/usage.md");
    let want = generated();
    if std::env::var_os("NICLAB_BLESS_USAGE").is_some() {
        std::fs::write(&doc, &want).expect("write docs/usage.md");
        return;
    }
    let have = std::fs::read_to_string(&doc).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map_or(have.lines().count().min(want.lines().count()), |i| i);
        panic!(
            "docs/usage.md is stale from line {} (`{}` vs `{}`): run `cargo xtask usage`",
            first + 1,
            have.lines().nth(first).unwrap_or(""),
            want.lines().nth(first).unwrap_or("")
        );
    }
}
