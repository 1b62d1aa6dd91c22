//! The lab's data files, read and written in one place.
//!
//! * [`reader`]: the market-data file (gzip Tardis `incremental_book_L2`), streamed line by
//!   line, malformed lines counted; re-exported at the crate root.
//! * [`mdgen`]: the deterministic synthetic market-data file the lab replays, with its
//!   planted triggers.
//! * [`orders`]: the order rows the exchange and the strategy write as CSV and the lab reads
//!   back: one type, one writer, one reader.

pub mod mdgen;
pub mod orders;
pub mod percentiles;
pub mod reader;

pub use reader::*;
