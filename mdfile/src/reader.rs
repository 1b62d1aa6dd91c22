//! Streaming reader of a gzip Tardis `incremental_book_L2` file, shared by the exchange
//! (which publishes each line), the strategy's offline replay and the lab.
//!
//! The file is decompressed as it is read (flate2), one line at a time into a reused
//! buffer; the header is checked on open; each line is validated with the same parser the
//! strategy uses. A malformed line is returned as [`Record::Malformed`] with its line
//! number (the caller counts, logs and skips it); a corrupt gzip stream or an I/O error is
//! a [`ReadError`].
//!
//! [`inflate_all`] and [`Source::Memory`] are the other way, for a replay that must not
//! decompress while it publishes (`exchange serve --preload`): the whole file inflated once
//! into memory, each session reading its lines from there.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;
use proto::md::{self, ParseError};

/// Errors that stop reading the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened.
    // The reason is the error's source, not part of its message: a chain printer (anyhow's
    // `{:#}`) would print it twice.
    #[error("cannot open market-data file {path}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Decompression or read failed (not gzip, truncated, corrupt).
    #[error("reading {path} at line {line} (is it a valid gzip file?)")]
    Io {
        /// The path.
        path: PathBuf,
        /// Line number reached.
        line: u64,
        /// Why.
        source: io::Error,
    },
    /// The first line is not the `incremental_book_L2` header.
    #[error(
        "{path}: first line is not the incremental_book_L2 header `{}`",
        String::from_utf8_lossy(md::HEADER)
    )]
    BadHeader {
        /// The path.
        path: PathBuf,
    },
}

/// One line of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A valid line; its bytes are [`MdReader::line`].
    Line {
        /// 1-based line number in the file (the header is line 1).
        line_no: u64,
        /// `is_snapshot` field.
        is_snapshot: bool,
        /// `local_timestamp` field (the trigger id).
        local_timestamp: u64,
    },
    /// A line that does not parse; skipped.
    Malformed {
        /// 1-based line number.
        line_no: u64,
        /// Why.
        error: ParseError,
    },
}

/// Reads a file line by line.
pub struct MdReader<R> {
    path: PathBuf,
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
    amount_decimals: u8,
}

impl MdReader<BufReader<MultiGzDecoder<File>>> {
    /// Opens a gzip file and checks its header.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(
            path,
            BufReader::with_capacity(1 << 16, MultiGzDecoder::new(file)),
        )
    }
}

/// Where a reader's uncompressed bytes come from: the gzip file, decompressed as it is
/// read, or the whole file inflated once before ([`inflate_all`]).
#[derive(Debug)]
pub enum Source {
    /// Streamed from the gzip file (boxed: the decoder's state is large).
    Gz(Box<BufReader<MultiGzDecoder<File>>>),
    /// From memory (shared by every reader of the same file).
    Memory(Cursor<Arc<[u8]>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Gz(r) => r.read(buf),
            Self::Memory(r) => r.read(buf),
        }
    }
}

impl BufRead for Source {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Self::Gz(r) => r.fill_buf(),
            Self::Memory(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Self::Gz(r) => r.consume(n),
            Self::Memory(r) => r.consume(n),
        }
    }
}

/// The whole gzip file, decompressed (its header is checked by the readers made of it).
pub fn inflate_all(path: &Path) -> Result<Arc<[u8]>, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    MultiGzDecoder::new(file)
        .read_to_end(&mut out)
        .map_err(|source| ReadError::Io {
            path: path.to_owned(),
            line: 0,
            source,
        })?;
    Ok(out.into())
}

impl MdReader<Source> {
    /// Reads `path`: from `preloaded` (its contents, [`inflate_all`]) when given, else
    /// streamed from the file; the header is checked either way.
    pub fn open_source(path: &Path, preloaded: Option<&Arc<[u8]>>) -> Result<Self, ReadError> {
        match preloaded {
            Some(bytes) => Self::new(path, Source::Memory(Cursor::new(bytes.clone()))),
            None => {
                let r = MdReader::open(path)?;
                Ok(MdReader {
                    path: r.path,
                    inner: Source::Gz(Box::new(r.inner)),
                    buf: r.buf,
                    line_no: r.line_no,
                    amount_decimals: r.amount_decimals,
                })
            }
        }
    }
}

impl<R: BufRead> MdReader<R> {
    /// Wraps an uncompressed line source (tests) and checks its header.
    pub fn new(path: &Path, inner: R) -> Result<Self, ReadError> {
        let mut r = Self {
            path: path.to_owned(),
            inner,
            buf: Vec::with_capacity(256),
            line_no: 0,
            amount_decimals: 0,
        };
        if !r.read_raw()? || !md::is_header(&r.buf) {
            return Err(ReadError::BadHeader {
                path: path.to_owned(),
            });
        }
        Ok(r)
    }

    /// Sets the decimals of `amount` used for validation (default 0).
    pub fn with_amount_decimals(mut self, d: u8) -> Self {
        self.amount_decimals = d;
        self
    }

    /// Reads the next line into [`MdReader::line`] without parsing it (for a caller that
    /// parses it itself, once); `false` at the end of the file.
    pub fn next_raw(&mut self) -> Result<bool, ReadError> {
        self.read_raw()
    }

    fn read_raw(&mut self) -> Result<bool, ReadError> {
        self.buf.clear();
        let n = self
            .inner
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| ReadError::Io {
                path: self.path.clone(),
                line: self.line_no + 1,
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        let len = md::trim_eol(&self.buf).len();
        self.buf.truncate(len);
        Ok(true)
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        if !self.read_raw()? {
            return Ok(None);
        }
        let line_no = self.line_no;
        Ok(Some(
            match md::parse_line(&self.buf, self.amount_decimals) {
                Ok(l) => Record::Line {
                    line_no,
                    is_snapshot: l.is_snapshot,
                    local_timestamp: l.local_timestamp,
                },
                Err(error) => Record::Malformed { line_no, error },
            },
        ))
    }

    /// The current line's bytes, without its line ending.
    pub fn line(&self) -> &[u8] {
        &self.buf
    }

    /// Decimals of `amount` used for validation.
    pub fn amount_decimals(&self) -> u8 {
        self.amount_decimals
    }

    /// Current line number.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const GOOD: &str = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n\
        deribit,BTC-PERPETUAL,1,10,true,bid,6593,100\n\
        deribit,BTC-PERPETUAL,1,10,true,ask,6593.5,nope\n\
        \n\
        deribit,BTC-PERPETUAL,2,11,false,ask,6593.5,20750";

    #[test]
    fn a_preloaded_file_reads_as_the_streamed_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&p).expect("create"),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, GOOD.as_bytes()).expect("write");
        gz.finish().expect("finish");
        let bytes = inflate_all(&p).expect("inflate");
        assert_eq!(&bytes[..], GOOD.as_bytes());
        let records = |mut r: MdReader<Source>| {
            let mut out = Vec::new();
            while let Some(rec) = r.next_record().expect("read") {
                out.push((rec, r.line().to_vec()));
            }
            out
        };
        let streamed = records(MdReader::open_source(&p, None).expect("open"));
        let preloaded = records(MdReader::open_source(&p, Some(&bytes)).expect("open"));
        assert_eq!(streamed.len(), 4, "{streamed:?}");
        assert_eq!(streamed, preloaded);
        assert!(matches!(
            inflate_all(&dir.path().join("missing.gz")),
            Err(ReadError::Open { .. })
        ));
        std::fs::write(dir.path().join("bad.gz"), b"not gzip").expect("write");
        assert!(matches!(
            inflate_all(&dir.path().join("bad.gz")),
            Err(ReadError::Io { .. })
        ));
    }

    #[test]
    fn a_missing_file_says_why_once() {
        let Err(e) = MdReader::open(Path::new("/nonexistent/md.csv.gz")) else {
            panic!("opened a missing file");
        };
        let msg = e.to_string();
        let why = std::error::Error::source(&e).map(ToString::to_string);
        assert!(msg.contains("/nonexistent/md.csv.gz"), "{msg}");
        assert!(
            why.as_deref().is_some_and(|w| !msg.contains(w)),
            "the reason is the source, not repeated in the message: {msg} / {why:?}"
        );
    }

    #[test]
    fn reads_and_reports_malformed_with_line_numbers() {
        let mut r = MdReader::new(Path::new("t"), Cursor::new(GOOD)).expect("header");
        assert_eq!(
            r.next_record().expect("io"),
            Some(Record::Line {
                line_no: 2,
                is_snapshot: true,
                local_timestamp: 10
            })
        );
        assert!(matches!(
            r.next_record().expect("io"),
            Some(Record::Malformed { line_no: 3, .. })
        ));
        assert!(matches!(
            r.next_record().expect("io"),
            Some(Record::Malformed { line_no: 4, .. })
        ));
        assert_eq!(
            r.next_record().expect("io"),
            Some(Record::Line {
                line_no: 5,
                is_snapshot: false,
                local_timestamp: 11
            })
        );
        assert_eq!(
            r.line(),
            b"deribit,BTC-PERPETUAL,2,11,false,ask,6593.5,20750"
        );
        assert_eq!(r.next_record().expect("io"), None);
    }

    #[test]
    fn rejects_a_wrong_header() {
        let e = MdReader::new(Path::new("t"), Cursor::new("a,b\n1,2\n"));
        assert!(matches!(e, Err(ReadError::BadHeader { .. })));
        let e = MdReader::new(Path::new("t"), Cursor::new(""));
        assert!(matches!(e, Err(ReadError::BadHeader { .. })));
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.csv.gz");
        std::fs::write(&p, b"\x1f\x8b\x08\x00garbage-not-deflate").expect("write");
        assert!(matches!(
            MdReader::open(&p),
            Err(ReadError::Io { .. } | ReadError::BadHeader { .. })
        ));
        assert!(matches!(
            MdReader::open(&dir.path().join("missing.gz")),
            Err(ReadError::Open { .. })
        ));
    }
}
