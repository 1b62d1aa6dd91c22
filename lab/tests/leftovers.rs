//! A lab killed mid-run: its namespace (with a tap and a process inside, as a VM run has
//! QEMU there) is swept by the next start; a namespace whose creator still runs is left
//! alone. Needs root; skipped with a printed reason otherwise.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

fn namespaces() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace named after `creator` as the lab names its own, with a tap and a process.
fn leftover(creator: &Child, n: u32) -> (String, Child) {
    let name = format!("vmlab-{}-{n}", creator.id());
    ip(&["netns", "add", &name]);
    ip(&[
        "netns", "exec", &name, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap",
    ]);
    let inside = Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "600"])
        .spawn()
        .expect("spawn");
    (name, inside)
}

fn exited_within(c: &mut Child, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if c.try_wait().expect("try_wait").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_killed_runs_namespace_is_swept_and_a_live_ones_is_not() {
    if !netlab::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut dead = Command::new("sleep").arg("600").spawn().expect("spawn");
    let mut alive = Command::new("sleep").arg("600").spawn().expect("spawn");
    let (gone, mut inside_gone) = leftover(&dead, 0);
    let (kept, mut inside_kept) = leftover(&alive, 1);
    dead.kill().expect("kill");
    dead.wait().expect("wait");
    let swept = lab::leftovers::sweep();
    let list = namespaces();
    let kept_listed = list.contains(&kept);
    // Clean up the live one before asserting (the test must leave nothing either way).
    alive.kill().expect("kill");
    let _ = alive.wait();
    let _ = inside_kept.kill();
    let _ = inside_kept.wait();
    let _ = Command::new("ip").args(["netns", "del", &kept]).status();
    assert!(swept.contains(&gone), "swept {swept:?}, want {gone}");
    assert!(
        !swept.contains(&kept),
        "a live run's namespace was swept: {swept:?}"
    );
    assert!(!list.contains(&gone), "{gone} still listed: {list}");
    assert!(kept_listed, "{kept} was removed while its creator ran");
    assert!(
        exited_within(&mut inside_gone, Duration::from_secs(5)),
        "the process inside the swept namespace was killed"
    );
}
