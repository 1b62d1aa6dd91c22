//! Command-line pieces shared by `strategy replay` and `strategy run`.

use crate::engine::EngineConfig;
use crate::trigger::{Threshold, TriggerConfig};

/// Trigger, risk and book flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// Levels from the top of a side where an increase counts.
    #[arg(long, default_value_t = 5)]
    pub levels: usize,
    /// Size-increase threshold in amount units (fires when the increase is MORE than this).
    #[arg(long, default_value_t = 50_000_000, conflicts_with = "notional")]
    pub threshold: u64,
    /// Notional threshold instead: price x increase > this many dollars (e.g. 1000000).
    #[arg(long)]
    pub notional: Option<u64>,
    /// Decimal places of `amount` (scaled into integer units; 0 for Deribit USD amounts).
    #[arg(long, default_value_t = 0)]
    pub amount_decimals: u8,
    /// Order quantity.
    #[arg(long, default_value_t = 1)]
    pub qty: u32,
    /// Cap the quantity at the size shown at the price the order hits.
    #[arg(long)]
    pub cap_by_size: bool,
    /// Risk: max orders per session.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_orders: u64,
    /// Risk: max orders per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_per_sec: u32,
    /// Risk: max quantity per order.
    #[arg(long, default_value_t = u32::MAX)]
    pub max_qty: u32,
    /// Levels per side the book holds (fixed; more are dropped and counted).
    #[arg(long, default_value_t = 4096)]
    pub book_capacity: usize,
}

impl TriggerArgs {
    /// The engine settings these flags describe.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            book_capacity: self.book_capacity.max(1),
            trigger: TriggerConfig {
                levels: self.levels,
                threshold: self
                    .notional
                    .map_or(Threshold::Size(self.threshold), |dollars| {
                        Threshold::Notional { dollars }
                    }),
                amount_decimals: self.amount_decimals,
                qty: self.qty.max(1),
                cap_by_size: self.cap_by_size,
                max_orders: self.max_orders,
                max_per_sec: self.max_per_sec,
                max_qty: self.max_qty,
            },
        }
    }
}
