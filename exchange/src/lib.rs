//! The exchange simulator.
//!
//! A market-data line travels: gzip file -> [`mdfile::MdReader`] (streaming, header check,
//! malformed lines counted) -> [`formatter::PacketFormatter`] (line -> packet bytes) ->
//! [`md_publisher::MdPublisher`] (non-blocking UDP multicast or AF_PACKET frame send, paced
//! by [`pacing`], kernel TX timestamps asked per message, for the ids of [`stamp_ids`] or
//! every id's first packet, read from the error queue). An order travels: TCP stream ->
//! [`order_entry::OrderStream`] (21-byte framing over split/merged reads) ->
//! [`proto::order::OrderRepr`] -> [`results`] (tick-to-trade against the send time of the
//! first packet that carried the trigger id, per clock source).
//!
//! [`server`] is the one event loop (mio) with the INIT -> HANDSHAKE -> TRANSMIT -> INIT
//! state machine; the synthetic Tardis-style file the lab replays is written by [`mdfile::mdgen`].
#![deny(unsafe_code)]

pub mod formatter;
pub mod md_publisher;
pub use mdfile;
pub mod order_entry;
pub mod pacing;
pub mod results;
pub mod serve_cmd;
pub mod server;
pub mod stamp_ids;
