//! The order-entry message: 21 bytes, little-endian, packed.
//!
//! ```text
//! offset size field
//!  0     4    qty         u32, whole units of `amount`
//!  4     8    price       i64, fixed point, 8 decimals
//! 12     1    side        u8, 0 = buy, 1 = sell
//! 13     8    trigger_id  u64, local_timestamp of the triggering line
//! ```
//!
//! TCP is a stream: the exchange slices its receive buffer into [`ORDER_LEN`] chunks and
//! views each with [`Packet::new_checked`].
//!
//! **Heartbeat (an opt-in deviation from the one-message spec).** For the warming
//! experiments the strategy can send [`HEARTBEAT`]: a 21-byte message with side byte
//! [`HEARTBEAT_SIDE`] (255), quantity 0, price 0 and trigger id 0, which exercises the very
//! path an order takes. An exchange started with `--heartbeats` counts and discards it
//! ([`is_heartbeat`]); without the flag it is an invalid message like any other. It is never
//! an order: `OrderRepr::parse` rejects it (side 255).

use core::fmt;

/// Length of one order message.
pub const ORDER_LEN: usize = 21;

/// Side byte of a heartbeat.
pub const HEARTBEAT_SIDE: u8 = 255;

/// The heartbeat message: qty 0, price 0, side 255, trigger id 0.
pub const HEARTBEAT: [u8; ORDER_LEN] = {
    let mut b = [0u8; ORDER_LEN];
    b[field::SIDE] = HEARTBEAT_SIDE;
    b
};

/// Is this message exactly the heartbeat?
pub fn is_heartbeat(msg: &[u8]) -> bool {
    msg.get(..ORDER_LEN) == Some(&HEARTBEAT[..])
}

mod field {
    use core::ops::Range;
    pub const QTY: Range<usize> = 0..4;
    pub const PRICE: Range<usize> = 4..12;
    pub const SIDE: usize = 12;
    pub const TRIGGER_ID: Range<usize> = 13..21;
}

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// 0
    Buy,
    /// 1
    Sell,
}

impl Side {
    /// Wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Buy => 0,
            Self::Sell => 1,
        }
    }
    /// From the wire value.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Buy),
            1 => Some(Self::Sell),
            _ => None,
        }
    }
    /// `buy` / `sell`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// Why a message is not a valid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer than [`ORDER_LEN`] bytes.
    Truncated,
    /// Side byte not 0 or 1 (the byte is kept for the log).
    InvalidSide(u8),
    /// Quantity 0.
    ZeroQty,
    /// Price 0 or negative.
    NonPositivePrice(i64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "order shorter than {ORDER_LEN} bytes"),
            Self::InvalidSide(s) => write!(f, "invalid side byte {s}"),
            Self::ZeroQty => f.write_str("quantity is zero"),
            Self::NonPositivePrice(p) => write!(f, "price {p} is not positive"),
        }
    }
}

/// A zero-copy view of an order message.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length (the accessors may then panic).
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds at least [`ORDER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < ORDER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(Self { buffer })
        }
    }

    /// The inner buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buffer.as_ref()[at..at + N]);
        out
    }

    /// Raw quantity.
    pub fn qty(&self) -> u32 {
        u32::from_le_bytes(self.array(field::QTY.start))
    }
    /// Raw price.
    pub fn price(&self) -> i64 {
        i64::from_le_bytes(self.array(field::PRICE.start))
    }
    /// Raw side byte.
    pub fn side_byte(&self) -> u8 {
        self.buffer.as_ref()[field::SIDE]
    }
    /// Raw trigger id.
    pub fn trigger_id(&self) -> u64 {
        u64::from_le_bytes(self.array(field::TRIGGER_ID.start))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the quantity.
    pub fn set_qty(&mut self, v: u32) {
        self.buffer.as_mut()[field::QTY].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets the price.
    pub fn set_price(&mut self, v: i64) {
        self.buffer.as_mut()[field::PRICE].copy_from_slice(&v.to_le_bytes());
    }
    /// Sets the side byte.
    pub fn set_side_byte(&mut self, v: u8) {
        self.buffer.as_mut()[field::SIDE] = v;
    }
    /// Sets the trigger id.
    pub fn set_trigger_id(&mut self, v: u64) {
        self.buffer.as_mut()[field::TRIGGER_ID].copy_from_slice(&v.to_le_bytes());
    }
}

/// A validated order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderRepr {
    /// Quantity, > 0.
    pub qty: u32,
    /// Price, fixed point 8 decimals, > 0.
    pub price: i64,
    /// Buy or sell.
    pub side: Side,
    /// `local_timestamp` of the triggering market-data line.
    pub trigger_id: u64,
}

impl OrderRepr {
    /// Validates a message: side 0 or 1, qty > 0, price > 0.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        let side =
            Side::from_u8(packet.side_byte()).ok_or(Error::InvalidSide(packet.side_byte()))?;
        let qty = packet.qty();
        if qty == 0 {
            return Err(Error::ZeroQty);
        }
        let price = packet.price();
        if price <= 0 {
            return Err(Error::NonPositivePrice(price));
        }
        Ok(Self {
            qty,
            price,
            side,
            trigger_id: packet.trigger_id(),
        })
    }

    /// Decodes and validates the first [`ORDER_LEN`] bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Self::parse(&Packet::new_checked(bytes)?)
    }

    /// Writes the message into the packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_qty(self.qty);
        packet.set_price(self.price);
        packet.set_side_byte(self.side.to_u8());
        packet.set_trigger_id(self.trigger_id);
    }

    /// Writes the message into the first [`ORDER_LEN`] bytes of `buf`; returns the length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut p = Packet::new_checked(&mut buf[..])?;
        self.emit(&mut p);
        Ok(ORDER_LEN)
    }

    /// The message as an array.
    pub fn to_bytes(&self) -> [u8; ORDER_LEN] {
        let mut buf = [0u8; ORDER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut buf));
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // qty 7, price 6593.5, sell, trigger 1585699200355000
    static BYTES: [u8; ORDER_LEN] = [
        0x07, 0x00, 0x00, 0x00, // qty
        0x80, 0x91, 0x52, 0x84, 0x99, 0x00, 0x00, 0x00, // price 659_350_000_000
        0x01, // side
        0xb8, 0xca, 0x8e, 0x5d, 0x2f, 0xa2, 0x05, 0x00, // trigger id
    ];

    static REPR: OrderRepr = OrderRepr {
        qty: 7,
        price: 659_350_000_000,
        side: Side::Sell,
        trigger_id: 1_585_699_200_355_000,
    };

    #[test]
    fn heartbeat_is_recognised_and_never_an_order() {
        assert!(is_heartbeat(&HEARTBEAT));
        assert_eq!(HEARTBEAT[12], HEARTBEAT_SIDE);
        assert_eq!(
            OrderRepr::decode(&HEARTBEAT),
            Err(Error::InvalidSide(HEARTBEAT_SIDE))
        );
        assert!(!is_heartbeat(&BYTES));
        assert!(!is_heartbeat(&HEARTBEAT[..20]));
        let mut almost = HEARTBEAT;
        almost[0] = 1; // side 255 with a quantity: not the heartbeat, an invalid message
        assert!(!is_heartbeat(&almost));
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&BYTES[..]).expect("long enough");
        assert_eq!(p.qty(), 7);
        assert_eq!(p.price(), 659_350_000_000);
        assert_eq!(p.side_byte(), 1);
        assert_eq!(p.trigger_id(), 1_585_699_200_355_000);
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; ORDER_LEN];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_qty(7);
        p.set_price(659_350_000_000);
        p.set_side_byte(1);
        p.set_trigger_id(1_585_699_200_355_000);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn parse_and_emit() {
        assert_eq!(OrderRepr::decode(&BYTES), Ok(REPR));
        assert_eq!(REPR.to_bytes(), BYTES);
        let mut long = [0u8; 40];
        assert_eq!(REPR.encode(&mut long), Ok(ORDER_LEN));
        assert_eq!(&long[..ORDER_LEN], &BYTES);
        assert_eq!(REPR.encode(&mut long[..20]), Err(Error::Truncated));
    }

    #[test]
    fn truncated() {
        for n in 0..ORDER_LEN {
            assert_eq!(OrderRepr::decode(&BYTES[..n]), Err(Error::Truncated));
        }
    }

    #[test]
    fn invalid_values() {
        for side in 2..=255u8 {
            let mut b = BYTES;
            b[12] = side;
            assert_eq!(OrderRepr::decode(&b), Err(Error::InvalidSide(side)));
        }
        let mut b = BYTES;
        b[0..4].fill(0);
        assert_eq!(OrderRepr::decode(&b), Err(Error::ZeroQty));
        let mut b = BYTES;
        b[4..12].fill(0);
        assert_eq!(OrderRepr::decode(&b), Err(Error::NonPositivePrice(0)));
        let mut b = BYTES;
        b[4..12].copy_from_slice(&(-5i64).to_le_bytes());
        assert_eq!(OrderRepr::decode(&b), Err(Error::NonPositivePrice(-5)));
        let mut b = BYTES;
        b[12] = 0;
        assert_eq!(OrderRepr::decode(&b).map(|o| o.side), Ok(Side::Buy));
    }

    proptest::proptest! {
        #[test]
        fn round_trip(qty in 1u32.., price in 1i64.., sell: bool, trigger_id: u64) {
            let repr = OrderRepr { qty, price, side: if sell { Side::Sell } else { Side::Buy }, trigger_id };
            proptest::prop_assert_eq!(OrderRepr::decode(&repr.to_bytes()), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = OrderRepr::decode(&bytes);
        }
    }
}
