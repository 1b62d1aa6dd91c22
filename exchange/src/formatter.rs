//! Line -> packet: the one replaceable step between the file and the wire.
//!
//! The default, [`AsciiLine`], sends exactly the line's text (no newline), which is what the
//! strategy's default parser ([`proto::md::parse_line`]) reads. To put your own binary format
//! on the wire, implement [`PacketFormatter`] (and the matching parse function in the
//! strategy), add it to [`by_name`], and select it with `exchange serve --formatter NAME`.

/// Formats one market-data line into a packet buffer.
pub trait PacketFormatter {
    /// Writes the packet for `line` (no line ending) into `out`, returning its length, or
    /// `None` when it does not fit (the line is then counted as malformed and skipped).
    fn format(
        &mut self,
        line: &[u8],
        parsed: &proto::md::MdLine<'_>,
        out: &mut [u8],
    ) -> Option<usize>;
}

/// The default: the line's ASCII text, byte for byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsciiLine;

impl PacketFormatter for AsciiLine {
    fn format(
        &mut self,
        line: &[u8],
        _parsed: &proto::md::MdLine<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        let dst = out.get_mut(..line.len())?;
        dst.copy_from_slice(line);
        Some(line.len())
    }
}

/// Names accepted by `--formatter`.
pub const NAMES: &[&str] = &["ascii"];

/// The formatter called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn PacketFormatter>> {
    match name {
        "ascii" => Some(Box::new(AsciiLine)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_copies_the_line() {
        let line = b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,20750";
        let parsed = proto::md::parse_line(line, 0).expect("valid");
        let mut out = [0u8; 128];
        let n = AsciiLine.format(line, &parsed, &mut out).expect("fits");
        assert_eq!(&out[..n], line);
        assert_eq!(AsciiLine.format(line, &parsed, &mut out[..10]), None);
    }
}
