//! parse + book update + trigger check per line, over the generated file's update lines.
#![expect(
    missing_docs,
    reason = "criterion_main! generates an undocumented main"
)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mdfile::mdgen::{self, GenConfig};
use mdfile::{MdReader, Record};
use strategy::book::Book;
use strategy::engine::{Engine, EngineConfig};
use strategy::trigger::Trigger;

fn pipeline(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("strategy-bench-{}", std::process::id()));
    let path = dir.join("md.csv.gz");
    mdgen::generate(&path, &GenConfig::default()).expect("generate");
    let (mut snapshot, mut updates) = (Vec::new(), Vec::new());
    let mut r = MdReader::open(&path).expect("open");
    while let Some(rec) = r.next_record().expect("read") {
        if let Record::Line { is_snapshot, .. } = rec {
            if is_snapshot && updates.is_empty() {
                snapshot.push(r.line().to_vec());
            } else {
                updates.push(r.line().to_vec());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(updates.len() as u64));
    g.bench_function("parse+book+trigger per update line (whole file)", |b| {
        b.iter_batched_ref(
            || {
                let mut e = Engine::new(EngineConfig::default());
                for p in &snapshot {
                    e.on_packet(p, 0);
                }
                e
            },
            |e| {
                let mut orders = 0u32;
                for (i, p) in updates.iter().enumerate() {
                    orders += u32::from(e.on_packet(std::hint::black_box(p), i as u64).is_some());
                }
                orders
            },
            criterion::BatchSize::LargeInput,
        );
    });
    g.bench_function("book+trigger per update line (pre-parsed)", |b| {
        let lines: Vec<_> = updates
            .iter()
            .filter_map(|p| strategy::parse::parse_packet(p, 0).ok())
            .collect();
        let snap: Vec<_> = snapshot
            .iter()
            .filter_map(|p| strategy::parse::parse_packet(p, 0).ok())
            .collect();
        let cfg = EngineConfig::default();
        b.iter_batched_ref(
            || {
                let mut book = Book::new(cfg.book_capacity);
                for l in &snap {
                    book.update(l.side, l.price, l.amount, l.is_snapshot);
                }
                (book, Trigger::new(cfg.trigger))
            },
            |(book, trigger)| {
                let mut orders = 0u32;
                for (i, l) in lines.iter().enumerate() {
                    let l = std::hint::black_box(l);
                    let applied = book.update(l.side, l.price, l.amount, l.is_snapshot);
                    orders += u32::from(trigger.check(book, l, applied, i as u64).is_some());
                }
                orders
            },
            criterion::BatchSize::LargeInput,
        );
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse 1000 hot lines", |b| {
        let hot: Vec<&Vec<u8>> = updates.iter().take(1000).collect();
        b.iter(|| {
            let mut sum = 0u64;
            for p in &hot {
                if let Ok(l) = strategy::parse::parse_packet(std::hint::black_box(p), 0) {
                    sum = sum.wrapping_add(l.amount);
                }
            }
            sum
        });
    });
    g.throughput(Throughput::Elements(updates.len() as u64));
    g.bench_function("baseline: count commas per update line", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for p in &updates {
                sum += std::hint::black_box(p)
                    .iter()
                    .filter(|&&c| c == b',')
                    .count();
            }
            sum
        });
    });
    g.bench_function("parse only per update line", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for p in &updates {
                if let Ok(l) = strategy::parse::parse_packet(std::hint::black_box(p), 0) {
                    sum = sum.wrapping_add(l.amount);
                }
            }
            sum
        });
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
