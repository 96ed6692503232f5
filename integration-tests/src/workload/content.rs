//! The self-describing content the workers write: every aligned 16-byte record names its
//! file, version and offset, so that wrong bytes in a report say where they came from;
//! byte-for-byte comparison with both sides described.

use anyhow::{bail, Result};

/// A record of the content: magic, file id, version, offset.
const RECORD: u64 = 16;
const MAGIC: [u8; 2] = [0x5a, 0xa5];

/// The bytes of version `version` of file `file` at absolute `offset`: every aligned
/// 16-byte record holds magic, file id, version and its own offset, so that wrong data in
/// a mismatch names where it came from.
pub fn content(file: u32, version: u32, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut o = offset;
    while out.len() < len {
        let rec = record(file, version, o / RECORD * RECORD);
        let start = (o % RECORD) as usize;
        let n = (RECORD as usize - start).min(len - out.len());
        out.extend_from_slice(&rec[start..start + n]);
        o += n as u64;
    }
    out
}

fn record(file: u32, version: u32, at: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[0..2].copy_from_slice(&MAGIC);
    r[2..4].copy_from_slice(&(file as u16).to_le_bytes());
    r[4..8].copy_from_slice(&version.to_le_bytes());
    r[8..16].copy_from_slice(&at.to_le_bytes());
    r
}

/// Describes the bytes around `offset` of `data` (the aligned record there), for reports.
pub fn describe(data: &[u8], offset: usize) -> String {
    describe_at(data, offset, 0)
}

/// `describe` for `data` that starts at absolute file offset `base`.
pub fn describe_at(data: &[u8], offset: usize, base: u64) -> String {
    let rec = RECORD as usize;
    let abs = base + offset as u64;
    let abs_at = abs / RECORD * RECORD;
    let r = abs_at
        .checked_sub(base)
        .and_then(|at| data.get(at as usize..at as usize + rec));
    let Some(r) = r else {
        return match data.get(offset) {
            Some(b) => format!("byte {b:#04x} in a record cut by the read"),
            None => "end of file".to_string(),
        };
    };
    let at = (abs_at - base) as usize;
    if r.iter().all(|b| *b == 0) {
        return "zeros (a hole)".to_string();
    }
    let whole = r[0..2] == MAGIC && r[8..16] == abs_at.to_le_bytes();
    if !whole {
        // Cut or misplaced data: name the nearest record that starts elsewhere.
        let from = at.saturating_sub(rec);
        let near = data.get(from..(at + 2 * rec).min(data.len()));
        let found = near.and_then(|w| {
            (0..w.len().saturating_sub(rec))
                .find(|i| from + i != at && w[*i..*i + 2] == MAGIC)
                .map(|i| from + i)
        });
        return match found {
            Some(p) => format!(
                "not a record: {r:02x?}; the {} at offset {}",
                describe_record(&data[p..p + rec]),
                base + p as u64
            ),
            None => format!("not a record: {r:02x?}"),
        };
    }
    describe_record(r)
}

fn describe_record(r: &[u8]) -> String {
    let file = u16::from_le_bytes([r[2], r[3]]);
    let version = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
    let mut o = [0u8; 8];
    o.copy_from_slice(&r[8..16]);
    let written_at = u64::from_le_bytes(o);
    format!("record of file {file:#x} version {version} written for offset {written_at}")
}

/// Byte-for-byte comparison; the first difference with both sides described.
pub fn compare_bytes(want: &[u8], got: &[u8]) -> Result<()> {
    compare_bytes_at(want, got, 0)
}

/// `compare_bytes` of ranges that start at absolute file offset `base`.
pub fn compare_bytes_at(want: &[u8], got: &[u8], base: u64) -> Result<()> {
    let Some(i) = crate::pattern::first_difference(want, got) else {
        return Ok(());
    };
    let (w, g) = (
        want.get(i).map(|b| format!("{b:#04x}")),
        got.get(i).map(|b| format!("{b:#04x}")),
    );
    bail!(
        "first difference at offset {} (length {} expected, {} read): expected {} [{}], \
         actual {} [{}]",
        base + i as u64,
        want.len(),
        got.len(),
        w.unwrap_or_else(|| "EOF".into()),
        describe_at(want, i, base),
        g.unwrap_or_else(|| "EOF".into()),
        describe_at(got, i, base)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_records_name_their_origin() {
        let c = content(0x1002, 7, 5, 100);
        let whole = content(0x1002, 7, 0, 105);
        assert_eq!(c, whole[5..]);
        assert_eq!(
            describe(&whole, 20),
            "record of file 0x1002 version 7 written for offset 16"
        );
        assert_eq!(describe(&[0u8; 32], 3), "zeros (a hole)");
        let mut cut = whole[..19].to_vec();
        cut.resize(48, 0);
        assert!(
            describe(&cut, 20).starts_with("not a record"),
            "{}",
            describe(&cut, 20)
        );
        let mut moved = whole[40..100].to_vec();
        moved[30] ^= 0xff;
        let e = format!(
            "{:#}",
            compare_bytes_at(&whole[40..100], &moved, 40).expect_err("differs")
        );
        assert!(
            e.contains("at offset 70") && e.contains("version 7 written for offset 64"),
            "{e}"
        );
        let mut shifted = vec![0u8];
        shifted.extend(content(0x1000, 6, 540_912, 40));
        assert_eq!(
            describe(&shifted, 0),
            "not a record: [00, 5a, a5, 00, 10, 06, 00, 00, 00, f0, 40, 08, 00, 00, 00, 00]; \
             the record of file 0x1000 version 6 written for offset 540912 at offset 1"
        );
        assert!(compare_bytes(&whole, &whole).is_ok());
        let mut bad = whole.clone();
        bad[40] ^= 0xff;
        let e = format!("{:#}", compare_bytes(&whole, &bad).expect_err("differs"));
        assert!(e.contains("offset 40"), "{e}");
    }
}
