//! What the namespace tests share: the two binaries, a child killed on drop, waiting for
//! an exit with the log in the failure, the oracle and the orders of a results CSV, a
//! small generated market-data file, the strategy's session reports. Include with
//! `#[path = "common/procs.rs"] mod procs;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdfile::mdgen::{self, GenConfig};
use netlab::Netns;
use strategy::engine::EngineConfig;
use strategy::net::NetKind;
use strategy::spec::PathSpec;

/// `(trigger_id, side, price, qty)`.
pub type Order = (u64, String, i64, u32);

/// One test at a time: the namespace tests each run two busy processes (a busy-polling
/// strategy, the exchange) on a 2-CPU machine, and cargo runs a file's tests in parallel
/// threads; none may measure another's load. Each test binary that includes this module
/// has its own lock; the guard is held for the whole test.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the one-test-at-a-time lock ([`SERIAL`]); a test that failed holding it does not
/// poison the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A binary of the workspace next to this test's strategy binary.
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strategy")).with_file_name(name)
}

/// Skips (with the reason printed) without root; fails when the exchange is not built.
pub fn skip() -> bool {
    if !netlab::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return true;
    }
    assert!(
        bin("exchange").exists(),
        "the exchange binary is missing next to the strategy's: run `cargo build --workspace` (same profile) first"
    );
    false
}

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout discarded and stderr into `log`.
pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn");
    Proc(child)
}

/// The exchange in `ns` serving `md` on the lab's addresses, with `extra` flags.
pub fn exchange(ns: &Netns, md: &Path, csv: &Path, log: &Path, extra: &[&str]) -> Proc {
    let serve = exchange::serve_cmd::ServeCmd::new(md, "10.77.0.1:9012")
        .md_iface("vx0")
        .quiet_orders(true)
        .results(csv)
        .extra(extra);
    let mut c = ns.command(bin("exchange"));
    c.args(serve.args());
    spawn(c, log)
}

/// A path name of a test, typed.
pub fn spec(net: &str) -> PathSpec {
    net.parse()
        .unwrap_or_else(|e| panic!("the test's own path name: {e}"))
}

/// The kind of a test's path name.
pub fn kind(net: &str) -> NetKind {
    spec(net).kind()
}

/// `strategy run` on the lab's addresses and `net` with its variants' flags (AF_PACKET
/// gets its own address).
pub fn run_args(net: &str) -> Vec<String> {
    let spec = spec(net);
    let mut a: Vec<String> = ["run", "--exchange", "10.77.0.1:9012", "--iface", "vs0"]
        .map(str::to_owned)
        .to_vec();
    a.extend(spec.strategy_args(Duration::from_micros(100)));
    if spec.needs_own_ip() {
        a.extend(["--packet-ip", "10.77.0.3"].map(str::to_owned));
    }
    a
}

/// The strategy in `ns` on `net` ([`run_args`]), with `extra` flags.
pub fn strategy(ns: &Netns, net: &str, log: &Path, extra: &[&str]) -> Proc {
    let mut c = ns.command(env!("CARGO_BIN_EXE_strategy"));
    c.args(run_args(net)).args(extra);
    spawn(c, log)
}

/// `ip link show vs0` in `ns` when an XDP program is still attached to it.
pub fn xdp_left(ns: &Netns) -> Option<String> {
    let link = ns
        .exec(&["ip", "link", "show", "dev", "vs0"])
        .expect("ip link");
    link.contains("xdp").then_some(link)
}

/// Waits for a successful exit within `limit`; fails with the log otherwise.
pub fn wait(p: &mut Proc, limit: Duration, what: &str, log: &Path) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = p.0.try_wait().expect("try_wait") {
            assert!(st.success(), "{what} failed: {st}\n{}", tail(log));
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{what} did not finish in {limit:?}\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exchange's log line when a session's market data starts.
pub const TRANSMITTING: &str = "HANDSHAKE -> TRANSMIT";

/// Waits (10 s at most) until the exchange logging to `log` listens.
pub fn wait_listening(log: &Path) {
    wait_for_log(log, exchange::serve_cmd::LISTENING, Duration::from_secs(10));
}

/// Waits until `log` holds `needle` (a line a program logged); fails with the log after
/// `limit`. For a test step that must come after an event, not after a fixed delay (the
/// programs' start-up time differs between machines).
pub fn wait_for_log(log: &Path, needle: &str, limit: Duration) {
    let t0 = Instant::now();
    while !std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle)) {
        assert!(
            t0.elapsed() < limit,
            "`{needle}` not logged in {limit:?}\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last 4 KiB of a log.
pub fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let from = s.len().saturating_sub(4096);
    s.get(from..).unwrap_or(&s).to_owned()
}

/// The orders of a results CSV (columns session, trigger_id, side, price, qty), optionally
/// of one session.
pub fn read_orders(csv: &Path, session: Option<&str>) -> Vec<Order> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| session.is_none_or(|s| f[0] == s))
        .map(|f| order(&f))
        .collect()
}

/// The orders of a results CSV grouped by session number, in session order.
pub fn orders_by_session(csv: &Path) -> std::collections::BTreeMap<u64, Vec<Order>> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    let mut m = std::collections::BTreeMap::<u64, Vec<Order>>::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        m.entry(f[0].parse().expect("session"))
            .or_default()
            .push(order(&f));
    }
    m
}

fn order(f: &[&str]) -> Order {
    let price = proto::decimal::parse_fixed(f[3].as_bytes(), 8).expect("price");
    (
        f[1].parse().expect("id"),
        f[2].to_owned(),
        price,
        f[4].parse().expect("qty"),
    )
}

/// The offline replay's orders.
pub fn oracle(md: &Path) -> Vec<Order> {
    let r = strategy::replay::replay(md, EngineConfig::default()).expect("replay");
    r.orders
        .iter()
        .map(|o| (o.trigger_id, o.side.as_str().to_owned(), o.price, o.qty))
        .collect()
}

/// A generated file of about `size` compressed bytes with `depth` snapshot levels.
pub fn md_file(dir: &Path, name: &str, size: u64, depth: usize, trigger_every: u64) -> PathBuf {
    let p = dir.join(name);
    let cfg = GenConfig {
        target_bytes: size,
        depth,
        trigger_every,
        malformed: 1,
        ..GenConfig::default()
    };
    mdgen::generate(&p, &cfg).expect("generate");
    p
}

/// The strategy's session reports (`--results`), typed.
pub fn reports(results: &Path) -> Vec<strategy::runtime::SessionReport> {
    std::fs::read_to_string(results)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a session report"))
        .collect()
}

/// The exchange side's bare XDP_PASS program (`strategy xdp-pass`): a veth delivers the
/// XDP_TX frames of its peer only to an XDP program. Interrupted (detached) on drop.
pub struct XdpPass(Child);

impl XdpPass {
    /// Attaches it to `vx0` in `ns` (returns once it says it is attached).
    pub fn attach(ns: &Netns) -> Self {
        use std::io::BufRead;
        let mut child = ns
            .command(env!("CARGO_BIN_EXE_strategy"))
            .args(["xdp-pass", "--iface", "vx0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn xdp-pass");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read");
        assert!(line.contains("attached"), "xdp-pass: {line:?}");
        Self(child)
    }

    /// Attached only for a path that sends with XDP_TX.
    pub fn for_path(ns: &Netns, net: &str) -> Option<Self> {
        spec(net).sends_with_xdp_tx().then(|| Self::attach(ns))
    }
}

impl Drop for XdpPass {
    fn drop(&mut self) {
        let _ = hostsys::signal::interrupt(self.0.id());
        let _ = self.0.wait();
    }
}
