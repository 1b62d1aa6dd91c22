//! The TCP order path over smoltcp's loopback device, in process, no root: the strategy's
//! engine fires orders on generated market data, each is encoded straight into a smoltcp
//! TCP socket with the same function the AF_XDP path uses, and the "exchange" end reframes
//! the stream with the exchange's own `OrderStream` and decodes it with `proto`. What
//! arrives must equal what the engine fired, in order; then a close is seen as EOF.
#![cfg(feature = "xdp")]

use exchange::order_entry::OrderStream;
use mdfile::mdgen::{self, GenConfig};
use mdfile::{MdReader, Record};
use proto::order::OrderRepr;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use strategy::engine::{Engine, EngineConfig};
use strategy::net::af_xdp::send_order;

fn socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s
}

#[test]
fn orders_cross_smoltcp_tcp_intact_and_close_is_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("md.csv.gz");
    mdgen::generate(
        &md,
        &GenConfig {
            target_bytes: 60_000,
            depth: 80,
            trigger_every: 50,
            ..GenConfig::default()
        },
    )
    .expect("gen");

    let mut dev = Loopback::new(Medium::Ethernet);
    let mut iface = Interface::new(
        Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into()),
        &mut dev,
        Instant::ZERO,
    );
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
    });
    let mut sockets = SocketSet::new(vec![]);
    let server = sockets.add(socket());
    let client = sockets.add(socket());
    sockets
        .get_mut::<tcp::Socket>(server)
        .listen(9012)
        .expect("listen");
    sockets
        .get_mut::<tcp::Socket>(client)
        .connect(
            iface.context(),
            (Ipv4Address::new(127, 0, 0, 1), 9012),
            50000,
        )
        .expect("connect");
    let mut t = Instant::ZERO;
    for _ in 0..100 {
        iface.poll(t, &mut dev, &mut sockets);
        t += smoltcp::time::Duration::from_millis(1);
    }
    assert_eq!(
        sockets.get::<tcp::Socket>(client).state(),
        tcp::State::Established
    );

    let mut engine = Engine::new(EngineConfig::default());
    let mut reader = MdReader::open(&md).expect("open");
    let (mut fired, mut received) = (Vec::<OrderRepr>::new(), Vec::<OrderRepr>::new());
    let mut stream = OrderStream::new();
    let drain =
        |sockets: &mut SocketSet<'_>, stream: &mut OrderStream, received: &mut Vec<OrderRepr>| {
            let s = sockets.get_mut::<tcp::Socket>(server);
            while s.can_recv() {
                let n = s.recv_slice(stream.spare()).expect("recv");
                stream.commit(n);
                while let Some(m) = stream.pop() {
                    received.push(OrderRepr::decode(&m).expect("valid order"));
                }
            }
        };
    while let Some(rec) = reader.next_record().expect("read") {
        if let Record::Line { .. } = rec {
            if let Some(o) = engine.on_packet(reader.line(), 0) {
                assert!(
                    send_order(sockets.get_mut::<tcp::Socket>(client), &o),
                    "room in the send buffer"
                );
                fired.push(o);
                // Several orders per poll now and then: the exchange must reframe merged reads.
                if !fired.len().is_multiple_of(3) {
                    iface.poll(t, &mut dev, &mut sockets);
                    drain(&mut sockets, &mut stream, &mut received);
                }
            }
        }
    }
    for _ in 0..50 {
        iface.poll(t, &mut dev, &mut sockets);
        drain(&mut sockets, &mut stream, &mut received);
        t += smoltcp::time::Duration::from_millis(1);
    }
    assert!(fired.len() > 10, "the file fires orders ({})", fired.len());
    assert_eq!(received, fired);
    assert_eq!(stream.pending(), 0);

    // Strategy disconnects: the exchange end sees the peer's FIN (EOF).
    sockets.get_mut::<tcp::Socket>(client).close();
    for _ in 0..50 {
        iface.poll(t, &mut dev, &mut sockets);
        t += smoltcp::time::Duration::from_millis(1);
    }
    let s = sockets.get::<tcp::Socket>(server);
    assert!(
        !s.may_recv(),
        "EOF seen by the exchange side (state {})",
        s.state()
    );
}
