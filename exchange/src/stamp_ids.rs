//! `--stamp-ids FILE`: the trigger ids whose first packet gets a kernel TX stamp.
//!
//! One id (a `local_timestamp`, decimal) at the start of each line, before an optional
//! comma and anything after it, so a `.planted.csv` sidecar or a list the lab writes from
//! the oracle both read as they are; a first line that does not start with a digit is a
//! header; blank lines are skipped. Anything else is an error naming the line: the file is
//! the operator's, and a typo must not silently leave orders without a kernel clock.

use std::collections::HashSet;

/// A line that is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--stamp-ids line {line}: `{text}` does not start with a trigger id (decimal)")]
pub struct StampIdsError {
    /// 1-based line number.
    pub line: usize,
    /// The line, cut to 80 bytes.
    pub text: String,
}

/// The ids in `text`.
pub fn parse(text: &[u8]) -> Result<HashSet<u64>, StampIdsError> {
    let mut ids = HashSet::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let field = line.split(|&b| b == b',').next().unwrap_or_default();
        let parsed = std::str::from_utf8(field)
            .ok()
            .and_then(|f| f.trim().parse::<u64>().ok());
        match parsed {
            Some(id) => {
                ids.insert(id);
            }
            None if i == 0 && !line.first().is_some_and(u8::is_ascii_digit) => {}
            None => {
                return Err(StampIdsError {
                    line: i + 1,
                    text: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
                })
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_sidecars_and_plain_lists_read_and_typos_are_named() {
        let planted = b"trigger_id,book_side,order_side,price\n1585699200089658,ask,sell,6593.5\r\n\n1585699200167023,bid,buy,6597.5\n";
        let ids = parse(planted).expect("a planted sidecar");
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&1_585_699_200_089_658) && ids.contains(&1_585_699_200_167_023));
        assert_eq!(parse(b"7\n8\n 9 \n").expect("a list").len(), 3);
        assert_eq!(parse(b"").expect("empty").len(), 0);
        let e = parse(b"1\n2x\n3\n").expect_err("a typo");
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("`2x`"), "{e}");
        assert_eq!(
            parse(b"1\nheader\n")
                .expect_err("a header after line 1")
                .line,
            2
        );
        assert_eq!(parse(b"1\n-1\n").expect_err("negative").line, 2);
    }
}
