//! The command line of `exchange serve`, built in one place: the lab, the VM lab and the
//! tests start the exchange through [`ServeCmd`] instead of each assembling its own flags.
//!
//! Durations are written in the programs' one syntax (humantime, with a unit).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The line `exchange serve` logs once it accepts connections: a caller starts its client
/// when the log has it, instead of after a fixed pause.
pub const LISTENING: &str = "state INIT: listening";

/// `exchange serve` with its flags.
#[derive(Debug, Clone)]
pub struct ServeCmd {
    md_file: PathBuf,
    oe_listen: String,
    md_iface: Option<String>,
    md_tx: Option<crate::md_publisher::MdTx>,
    stamp_ids: Option<PathBuf>,
    mark_ids: Option<PathBuf>,
    allow_peers: Vec<std::net::Ipv4Addr>,
    pace: Option<String>,
    sessions: Option<u64>,
    results: Option<PathBuf>,
    summary: Option<PathBuf>,
    grace: Option<Duration>,
    expect_orders: Option<u64>,
    handshake_delay: Option<Duration>,
    warm_rx_every: Option<Duration>,
    spin: bool,
    quiet_orders: bool,
    heartbeats: bool,
    preload: bool,
    extra: Vec<String>,
}

impl ServeCmd {
    /// Serving `md_file` on the order-entry address `oe_listen`.
    pub fn new(md_file: &Path, oe_listen: &str) -> Self {
        Self {
            md_file: md_file.to_owned(),
            oe_listen: oe_listen.to_owned(),
            md_iface: None,
            md_tx: None,
            stamp_ids: None,
            mark_ids: None,
            allow_peers: Vec::new(),
            pace: None,
            sessions: None,
            results: None,
            summary: None,
            grace: None,
            expect_orders: None,
            handshake_delay: None,
            warm_rx_every: None,
            spin: false,
            quiet_orders: false,
            heartbeats: false,
            preload: false,
            extra: Vec::new(),
        }
    }

    /// `--md-iface`.
    pub fn md_iface(mut self, iface: &str) -> Self {
        self.md_iface = Some(iface.to_owned());
        self
    }

    /// `--md-tx` (the market-data sender).
    pub fn md_tx(mut self, tx: crate::md_publisher::MdTx) -> Self {
        self.md_tx = Some(tx);
        self
    }

    /// `--stamp-ids` (stamp only these trigger ids' first packets).
    pub fn stamp_ids(mut self, file: Option<&Path>) -> Self {
        self.stamp_ids = file.map(Path::to_owned);
        self
    }

    /// `--mark-ids` (the floor's runs: mark these trigger ids' first packets).
    pub fn mark_ids(mut self, file: Option<&Path>) -> Self {
        self.mark_ids = file.map(Path::to_owned);
        self
    }

    /// `--allow-peer` (only these addresses get a session).
    pub fn allow_peers(mut self, peers: &[std::net::Ipv4Addr]) -> Self {
        self.allow_peers = peers.to_vec();
        self
    }

    /// `--pace`.
    pub fn pace(mut self, pace: &str) -> Self {
        self.pace = Some(pace.to_owned());
        self
    }

    /// `--sessions`.
    pub fn sessions(mut self, n: u64) -> Self {
        self.sessions = Some(n);
        self
    }

    /// `--results` (the order rows).
    pub fn results(mut self, csv: &Path) -> Self {
        self.results = Some(csv.to_owned());
        self
    }

    /// `--summary` (one JSON line per session).
    pub fn summary(mut self, jsonl: &Path) -> Self {
        self.summary = Some(jsonl.to_owned());
        self
    }

    /// `--grace`.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = Some(d);
        self
    }

    /// `--expect-orders` (the grace ends once this many orders are in).
    pub fn expect_orders(mut self, n: u64) -> Self {
        self.expect_orders = Some(n);
        self
    }

    /// `--handshake-delay`.
    pub fn handshake_delay(mut self, d: Duration) -> Self {
        self.handshake_delay = Some(d);
        self
    }

    /// `--warm-rx-every` (None: off).
    pub fn warm_rx_every(mut self, d: Option<Duration>) -> Self {
        self.warm_rx_every = d;
        self
    }

    /// `--spin`.
    pub fn spin(mut self, on: bool) -> Self {
        self.spin = on;
        self
    }

    /// `--quiet-orders`.
    pub fn quiet_orders(mut self, on: bool) -> Self {
        self.quiet_orders = on;
        self
    }

    /// `--heartbeats`.
    pub fn heartbeats(mut self, on: bool) -> Self {
        self.heartbeats = on;
        self
    }

    /// `--preload` (the file inflated into memory once, at start).
    pub fn preload(mut self, on: bool) -> Self {
        self.preload = on;
        self
    }

    /// Further flags, as given (a user's `--exchange-flags`, a test's own).
    pub fn extra<S: AsRef<str>>(mut self, flags: impl IntoIterator<Item = S>) -> Self {
        self.extra
            .extend(flags.into_iter().map(|f| f.as_ref().to_owned()));
        self
    }

    /// The arguments after the binary's name: `serve` and the flags.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["serve".into()];
        let mut flag = |name: &str, value: OsString| {
            a.push(name.into());
            a.push(value);
        };
        flag("--md-file", self.md_file.clone().into());
        flag("--oe-listen", self.oe_listen.clone().into());
        // One argument even when humantime writes two units ("1ms 500us").
        let dur = |d: Duration| OsString::from(humantime::format_duration(d).to_string());
        if let Some(i) = &self.md_iface {
            flag("--md-iface", i.into());
        }
        if let Some(t) = self.md_tx {
            flag("--md-tx", t.to_string().into());
        }
        if let Some(f) = &self.stamp_ids {
            flag("--stamp-ids", f.clone().into());
        }
        if let Some(f) = &self.mark_ids {
            flag("--mark-ids", f.clone().into());
        }
        if !self.allow_peers.is_empty() {
            let list: Vec<String> = self.allow_peers.iter().map(ToString::to_string).collect();
            flag("--allow-peer", list.join(",").into());
        }
        if let Some(p) = &self.pace {
            flag("--pace", p.into());
        }
        if let Some(n) = self.sessions {
            flag("--sessions", n.to_string().into());
        }
        if let Some(r) = &self.results {
            flag("--results", r.clone().into());
        }
        if let Some(s) = &self.summary {
            flag("--summary", s.clone().into());
        }
        if let Some(d) = self.grace {
            flag("--grace", dur(d));
        }
        if let Some(n) = self.expect_orders {
            flag("--expect-orders", n.to_string().into());
        }
        if let Some(d) = self.handshake_delay {
            flag("--handshake-delay", dur(d));
        }
        if let Some(d) = self.warm_rx_every {
            flag("--warm-rx-every", dur(d));
        }
        for (on, name) in [
            (self.spin, "--spin"),
            (self.quiet_orders, "--quiet-orders"),
            (self.heartbeats, "--heartbeats"),
            (self.preload, "--preload"),
        ] {
            if on {
                a.push(name.into());
            }
        }
        a.extend(self.extra.iter().map(OsString::from));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_durations_in_the_one_syntax() {
        let a = ServeCmd::new(Path::new("md.csv.gz"), "10.77.0.1:9012")
            .md_iface("vx0")
            .pace("rate:5000")
            .sessions(1)
            .grace(Duration::from_millis(300))
            .expect_orders(7)
            .warm_rx_every(Some(Duration::from_micros(1500)))
            .quiet_orders(true)
            .extra(["--no-tx-timestamps"])
            .args();
        let a: Vec<&str> = a.iter().filter_map(|s| s.to_str()).collect();
        assert_eq!(
            a,
            [
                "serve",
                "--md-file",
                "md.csv.gz",
                "--oe-listen",
                "10.77.0.1:9012",
                "--md-iface",
                "vx0",
                "--pace",
                "rate:5000",
                "--sessions",
                "1",
                "--grace",
                "300ms",
                "--expect-orders",
                "7",
                "--warm-rx-every",
                "1ms 500us",
                "--quiet-orders",
                "--no-tx-timestamps"
            ]
        );
        assert_eq!(
            humantime::parse_duration("1ms 500us").ok(),
            Some(Duration::from_micros(1500)),
            "what it writes reads back"
        );
    }
}
