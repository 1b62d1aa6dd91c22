//! A run's identity, typed: the NIC (VM lab), the gap the file was made for, the path
//! spec, the tuning variant and the repetition.
//!
//! A [`RunKey`] names every file of a run (`<tag>.exchange.csv`, `<tag>.strategy.jsonl`...)
//! through [`RunKey::tag`], and a tag reads back with [`RunKey::from_tag`] by parsing each
//! piece as what it is (a duration with its unit, a NIC, a [`PathSpec`]), never by guessing
//! from its first character. [`RunKey::label`] is what the tables group by: the path and
//! its tuning variant, with the NIC in the VM lab (`virtio/xdp/nogro`).

use std::fmt;
use std::time::Duration;

use strategy::spec::PathSpec;

/// The NICs the VM lab emulates.
pub const NICS: [&str; 3] = ["virtio", "e1000e", "igb"];

/// One run of one path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunKey {
    /// The emulated NIC (VM lab only).
    pub nic: Option<String>,
    /// The feed's rate around the triggers, packets/s (`--load`).
    #[serde(default)]
    pub load: Option<u32>,
    /// The gap between orders the file was made for (`--order-gap`).
    pub gap: Option<Duration>,
    /// The path and its variants.
    pub path: PathSpec,
    /// The tuning variant of the link (`--veth-tune` / `--guest-tune`).
    pub tune: Option<String>,
    /// Repetition, from 1.
    pub run: u32,
}

/// A tag that is not a run's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a run tag ([nic-][gap-]path[-tune]-run)")]
pub struct NotATag(pub String);

impl RunKey {
    /// A namespace run of `path`.
    pub fn new(path: PathSpec, run: u32) -> Self {
        Self {
            nic: None,
            load: None,
            gap: None,
            path,
            tune: None,
            run,
        }
    }

    /// The prefix of the run's files: `[nic-][loadpps-][gap-]path[-tune]-run`.
    pub fn tag(&self) -> String {
        format!("{}-{}", self.series(), self.run)
    }

    /// The tag without the repetition: every run of one path at one gap shares it.
    pub fn series(&self) -> String {
        let mut s = String::new();
        if let Some(n) = &self.nic {
            s.push_str(n);
            s.push('-');
        }
        if let Some(l) = self.load {
            s.push_str(&crate::load::rate_label(l));
            s.push_str("pps-");
        }
        if let Some(g) = self.gap {
            s.push_str(&crate::data::gap_label(g));
            s.push('-');
        }
        s.push_str(&self.path.to_string());
        if let Some(t) = &self.tune {
            s.push('-');
            s.push_str(t);
        }
        s
    }

    /// What the tables group runs by: `[nic/]path[/tune]`.
    pub fn label(&self) -> String {
        let mut s = String::new();
        if let Some(n) = &self.nic {
            s.push_str(n);
            s.push('/');
        }
        s.push_str(&self.path.to_string());
        if let Some(t) = &self.tune {
            s.push('/');
            s.push_str(t);
        }
        s
    }

    /// Reads a tag back (see [`RunKey::tag`]).
    pub fn from_tag(tag: &str) -> Result<Self, NotATag> {
        let bad = || NotATag(tag.to_owned());
        let (series, run) = tag.rsplit_once('-').ok_or_else(bad)?;
        let run: u32 = run.parse().map_err(|_| bad())?;
        let mut key = Self::from_series(series).ok_or_else(bad)?;
        key.run = run;
        Ok(key)
    }

    /// Reads a series (a tag without its repetition) back; `run` is 0.
    pub fn from_series(series: &str) -> Option<Self> {
        let mut rest: Vec<&str> = series.split('-').collect();
        let nic = match rest.first() {
            Some(n) if NICS.contains(n) => {
                let n = (*n).to_owned();
                rest.remove(0);
                Some(n)
            }
            _ => None,
        };
        let load = match rest
            .first()
            .and_then(|l| l.strip_suffix("pps"))
            .map(crate::load::parse_rate)
        {
            Some(Ok(l)) => {
                rest.remove(0);
                Some(l)
            }
            _ => None,
        };
        let gap = match rest.first().map(|g| humantime::parse_duration(g)) {
            Some(Ok(g)) => {
                rest.remove(0);
                Some(g)
            }
            _ => None,
        };
        // The longest run of pieces that is a path spec (`xdp-tx` holds a `-`); the rest
        // is the tuning variant.
        (1..=rest.len()).rev().find_map(|n| {
            let path: PathSpec = rest[..n].join("-").parse().ok()?;
            let tune = (n < rest.len()).then(|| rest[n..].join("-"));
            Some(Self {
                nic: nic.clone(),
                load,
                gap,
                path,
                tune,
                run: 0,
            })
        })
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} run {}", self.label(), self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PathSpec {
        s.parse().expect("spec")
    }

    #[test]
    fn tags_round_trip() {
        let keys = [
            RunKey::new(spec("kernel"), 1),
            RunKey {
                gap: Some(Duration::from_millis(1)),
                ..RunKey::new(spec("xdp-tx+warm"), 3)
            },
            RunKey {
                gap: Some(Duration::from_millis(100)),
                tune: Some("nogro".into()),
                ..RunKey::new(spec("uring+defer+inline"), 2)
            },
            RunKey {
                nic: Some("virtio".into()),
                tune: Some("coalesce0".into()),
                ..RunKey::new(spec("xdp"), 1)
            },
            RunKey {
                nic: Some("igb".into()),
                ..RunKey::new(spec("xdp-tx"), 12)
            },
            RunKey {
                load: Some(300_000),
                gap: Some(Duration::from_millis(1)),
                ..RunKey::new(spec("packet+warm"), 2)
            },
            RunKey {
                load: Some(0),
                ..RunKey::new(spec("kernel"), 1)
            },
        ];
        for k in keys {
            let tag = k.tag();
            assert_eq!(RunKey::from_tag(&tag).as_ref(), Ok(&k), "{tag}");
        }
    }

    #[test]
    fn tags_read_as_written() {
        let k = RunKey::from_tag("1ms-xdp-tx-1").expect("tag");
        assert_eq!(k.gap, Some(Duration::from_millis(1)));
        assert_eq!(k.path, spec("xdp-tx"));
        assert_eq!((k.tune, k.run), (None, 1));
        let k = RunKey::from_tag("xdp-nogro-2").expect("tag");
        assert_eq!(
            (k.path, k.tune.as_deref(), k.run),
            (spec("xdp"), Some("nogro"), 2)
        );
        assert_eq!(
            RunKey::from_tag("virtio-kernel-1").map(|k| k.label()),
            Ok("virtio/kernel".into())
        );
        for bad in ["kernel", "dpdk-1", "1ms-1", "kernel-x", ""] {
            assert!(RunKey::from_tag(bad).is_err(), "{bad}");
        }
    }
}
