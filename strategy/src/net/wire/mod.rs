//! The wire formats the raw paths read from outside, as pure functions over bytes (no
//! socket, no ring): which frames are market data ([`md_frame`]), the AF_PACKET socket's
//! classic BPF program with an interpreter of it ([`cbpf`]), and the `xdp-tx` tap that
//! reads smoltcp's segments and the exchange's ([`tap`]). Built with the `wire` feature
//! alone, so the fuzz targets can reach them without the AF_XDP dependencies.

pub mod cbpf;
pub mod md_frame;
pub mod tap;
