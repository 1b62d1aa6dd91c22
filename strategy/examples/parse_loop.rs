//! Parses one line many times (for profiling the parser with callgrind or perf).
fn main() {
    let line = b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750";
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut sum = 0u64;
    let t = std::time::Instant::now();
    for _ in 0..n {
        if let Ok(l) = strategy::parse::parse_packet(std::hint::black_box(line), 0) {
            sum = sum.wrapping_add(l.amount);
        }
    }
    println!(
        "{sum} {:.1} ns/line",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
