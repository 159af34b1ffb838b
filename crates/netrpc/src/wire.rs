//! gob's primitive encodings: unsigned and signed integers, floats and byte strings, read from
//! one message and appended to an output buffer.

use crate::error::Malformed;

/// The most bytes an encoded unsigned integer carries after its count byte: gob integers are
/// at most 64 bits.
pub(crate) const MAX_UINT_BYTES: usize = 8;

/// The bytes of one gob message, read from the front.
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        let (&first, rest) = self.bytes.split_first().ok_or(Malformed::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    /// An unsigned integer: one byte below 128, else a negated byte count and that many
    /// big-endian bytes. Go accepts non-minimal encodings, and so do we.
    pub(crate) fn uint(&mut self) -> Result<u64, Malformed> {
        let first = self.byte()?;
        let Some(count) = uint_byte_count(first)? else {
            return Ok(u64::from(first));
        };
        if self.bytes.len() < count {
            return Err(Malformed::Truncated);
        }
        let (digits, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(big_endian(digits))
    }

    /// A signed integer, whose low bit says whether the rest is complemented.
    pub(crate) fn int(&mut self) -> Result<i64, Malformed> {
        Ok(int_from_uint(self.uint()?))
    }

    /// A float64, sent as its bits byte-reversed so that the exponent goes first.
    pub(crate) fn float(&mut self) -> Result<f64, Malformed> {
        Ok(f64::from_bits(self.uint()?.swap_bytes()))
    }

    /// A count of bytes and the bytes. The count is checked against what the message holds,
    /// so it never makes anyone allocate more than was received.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let length = self.uint()?;
        let remaining = self.bytes.len();
        let Some(length) = usize::try_from(length).ok().filter(|&n| n <= remaining) else {
            return Err(Malformed::LengthPastEnd { length, remaining });
        };
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }
}

/// How many bytes follow the first byte of an unsigned integer: `None` when the first byte is
/// the value itself.
pub(crate) fn uint_byte_count(first: u8) -> Result<Option<usize>, Malformed> {
    if first < 0x80 {
        return Ok(None);
    }
    let count = usize::from(first.wrapping_neg());
    if count > MAX_UINT_BYTES {
        return Err(Malformed::IntegerTooLong);
    }
    Ok(Some(count))
}

/// The value of up to eight big-endian bytes.
pub(crate) fn big_endian(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0u64, |value, &digit| (value << 8) | u64::from(digit))
}

pub(crate) fn int_from_uint(u: u64) -> i64 {
    // The shifted value fits in 63 bits, so the cast keeps it.
    let magnitude = (u >> 1) as i64;
    if u & 1 == 1 {
        !magnitude
    } else {
        magnitude
    }
}

pub(crate) fn put_uint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
        return;
    }
    let digits = value.to_be_bytes();
    let skip = digits.iter().take_while(|&&digit| digit == 0).count();
    let count = digits.len() - skip;
    // The count byte is the negated count, as a two's complement byte.
    out.push((count as u8).wrapping_neg());
    out.extend_from_slice(&digits[skip..]);
}

pub(crate) fn put_int(out: &mut Vec<u8>, value: i64) {
    let u = if value < 0 {
        ((!value as u64) << 1) | 1
    } else {
        (value as u64) << 1
    };
    put_uint(out, u);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded_uint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, value);
        out
    }

    fn encoded_int(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_int(&mut out, value);
        out
    }

    #[test]
    fn integers_encode_as_gob_documents_them() {
        // The examples of encoding/gob's package documentation.
        assert_eq!(encoded_uint(0), [0x00]);
        assert_eq!(encoded_uint(7), [0x07]);
        assert_eq!(encoded_uint(256), [0xFE, 0x01, 0x00]);
        assert_eq!(encoded_int(-129), [0xFE, 0x01, 0x01]);
        let mut float = Vec::new();
        put_uint(&mut float, 17.0f64.to_bits().swap_bytes());
        assert_eq!(float, [0xFE, 0x31, 0x40]);
    }

    #[test]
    fn integers_round_trip_at_their_edges() {
        for value in [0, 1, 127, 128, 255, 256, u64::from(u32::MAX), u64::MAX] {
            let bytes = encoded_uint(value);
            assert_eq!(Cursor::new(&bytes).uint(), Ok(value), "{value}");
        }
        for value in [0, 1, -1, 63, 64, -64, -65, i64::MAX, i64::MIN] {
            let bytes = encoded_int(value);
            assert_eq!(Cursor::new(&bytes).int(), Ok(value), "{value}");
        }
        for value in [0.0, -0.0, 1.5, -17.25, f64::MAX, f64::MIN_POSITIVE] {
            let mut bytes = Vec::new();
            put_uint(&mut bytes, f64::to_bits(value).swap_bytes());
            assert_eq!(Cursor::new(&bytes).float(), Ok(value), "{value}");
        }
    }

    #[test]
    fn an_integer_longer_than_eight_bytes_is_refused() {
        let bytes = [0xF7, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(Cursor::new(&bytes).uint(), Err(Malformed::IntegerTooLong));
    }

    #[test]
    fn a_length_past_the_message_is_refused_before_anything_is_taken() {
        let mut bytes = Vec::new();
        put_uint(&mut bytes, u64::MAX);
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            Cursor::new(&bytes).bytes(),
            Err(Malformed::LengthPastEnd {
                length: u64::MAX,
                remaining: 3
            })
        );
    }

    #[test]
    fn a_truncated_integer_is_refused() {
        assert_eq!(Cursor::new(&[0xFE, 0x01]).uint(), Err(Malformed::Truncated));
        assert_eq!(Cursor::new(&[]).uint(), Err(Malformed::Truncated));
    }
}
