//! The Confluent wire format: magic byte `0`, a 4-byte big-endian schema ID, then the payload.
//! Protobuf payloads start with the "message indexes" that say which message of the schema's
//! file was written: a zigzag varint count, then that many zigzag varint indexes; a lone `0`
//! byte is the common case `[0]` (the file's first message).

/// The magic byte every wire-format record starts with.
pub(crate) const MAGIC: u8 = 0;

/// The longest message-index path accepted; real schemas nest a few levels at most.
const MAX_MESSAGE_DEPTH: usize = 64;

/// Whether `bytes` could be a wire-format record (magic byte and a full header).
pub(crate) fn looks_framed(bytes: &[u8]) -> bool {
    bytes.len() >= 5 && bytes[0] == MAGIC
}

/// Splits a framed record into its schema ID and payload, or says what is wrong.
pub(crate) fn split(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [] => Err("empty".to_owned()),
        [first, ..] if *first != MAGIC => Err(format!(
            "first byte is {first:#04x}, expected the magic byte 0x00"
        )),
        [_, a, b, c, d, payload @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => Err(format!(
            "{} bytes, shorter than the 5-byte header (magic byte and schema ID)",
            bytes.len()
        )),
    }
}

/// Reads the Protobuf message indexes at the start of `payload`; returns them and the rest.
pub(crate) fn message_indexes(payload: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    let (count, mut rest) = zigzag_varint(payload)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|n| *n <= MAX_MESSAGE_DEPTH)
        .ok_or_else(|| {
            format!("message index count {count} is not between 0 and {MAX_MESSAGE_DEPTH}")
        })?;
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, next) = zigzag_varint(rest)?;
        let index =
            usize::try_from(index).map_err(|_| format!("message index {index} is negative"))?;
        indexes.push(index);
        rest = next;
    }
    Ok((indexes, rest))
}

/// One zigzag-encoded varint (at most 10 bytes) and the bytes after it.
fn zigzag_varint(bytes: &[u8]) -> Result<(i64, &[u8]), String> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Ok((decoded, &bytes[i + 1..]));
        }
    }
    Err("truncated or overlong varint in the message indexes".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_header_and_payload() {
        assert_eq!(split(&[0, 0, 0, 1, 2, 9, 9]), Ok((258, &[9u8, 9][..])));
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
        assert!(split(&[]).is_err());
        assert!(split(&[0, 1, 2]).unwrap_err().contains("shorter"));
        assert!(split(b"{\"a\":1}").unwrap_err().contains("0x7b"));
        assert!(looks_framed(&[0, 0, 0, 0, 1]));
        assert!(!looks_framed(&[0, 0, 0, 1]));
        assert!(!looks_framed(b"{\"id\":1}"));
    }

    #[test]
    fn reads_message_indexes() {
        // The common shortcut: a single 0 byte means the first message.
        assert_eq!(message_indexes(&[0, 8, 1]), Ok((vec![0], &[8u8, 1][..])));
        // [1, 2] zigzag-encoded: count 2 → 4, 1 → 2, 2 → 4.
        assert_eq!(message_indexes(&[4, 2, 4, 7]), Ok((vec![1, 2], &[7u8][..])));
        assert!(message_indexes(&[]).is_err());
        assert!(message_indexes(&[0x80]).is_err());
        // A negative count (zigzag 1 → -1).
        assert!(message_indexes(&[1]).is_err());
        // A count far above any real nesting.
        assert!(message_indexes(&[0xfe, 0x0f]).is_err());
        assert!(message_indexes(&[0xff; 12]).is_err());
    }
}
