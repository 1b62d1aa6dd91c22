//! The strategy: market data in, orders out, as fast as the chosen network path allows.
//!
//! A market-data packet goes: a network path ([`net`]: kernel sockets, io_uring) receives
//! it -> [`parse`] turns the bytes into fields -> [`book`] applies the level update and
//! returns its rank -> [`trigger`] decides -> the order is encoded with
//! [`proto::order::OrderRepr`] straight into the path's send buffer. [`engine`] chains the
//! middle three (the allocation-free hot path, shared by every path and by [`replay`], the
//! offline oracle). [`runtime`] is the never-blocking Init -> Connecting -> Running state
//! machine around a path; [`latency`] records the strategy's own packet-to-order time;
//! [`privilege`] says what a path keeps after `--user` drops root.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]

pub mod book;
pub mod cli;
pub mod engine;
pub mod latency;
pub mod net;
pub mod parse;
pub mod privilege;
pub mod probe;
pub mod replay;
pub mod runtime;
pub mod spec;
pub mod trigger;
