//! AMF0 (Adobe's Action Message Format 0), as RTMP commands and metadata
//! carry it: a bounded decoder for what peers send and an encoder for what
//! we answer.
//!
//! The decoder never trusts a length or a count: strings are checked against
//! the bytes left before they are copied, arrays are not reserved from their
//! declared count, and containers nest at most [`MAX_DEPTH`] deep (recursion
//! is bounded by it). Its input is one message, already capped in size by
//! the chunk reader.

/// Deepest nesting of objects and arrays accepted. Real commands nest two
/// levels (a command object holding a status object); metadata three.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf0 {
    Number(f64),
    Boolean(bool),
    /// Strings, long strings and XML documents (invalid UTF-8 replaced).
    String(String),
    /// Objects, ECMA arrays and typed objects: properties in order.
    Object(Vec<(String, Amf0)>),
    Null,
    Undefined,
    StrictArray(Vec<Amf0>),
    /// Milliseconds since the epoch (the time-zone field is ignored, as the
    /// spec says it should be).
    Date(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    #[error("AMF0 {what} cut short at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("AMF0 values nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unknown AMF0 type marker {marker:#04x} at byte {at}")]
    UnknownMarker { marker: u8, at: usize },
    #[error("AMF0 type marker {marker:#04x} (reference or AMF3) is not supported")]
    Unsupported { marker: u8 },
}

impl Amf0 {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// An object's (or ECMA array's) property.
    pub fn get(&self, key: &str) -> Option<&Amf0> {
        match self {
            Amf0::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// An object from `(key, value)` pairs, for what we send.
    pub fn object<const N: usize>(props: [(&str, Amf0); N]) -> Amf0 {
        Amf0::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    pub fn string(s: &str) -> Amf0 {
        Amf0::String(s.to_owned())
    }

    /// Appends the encoding to `out`. Strings over 65,535 bytes become long
    /// strings.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Amf0::Number(n) => {
                out.push(0x00);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf0::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
            Amf0::String(s) => match u16::try_from(s.len()) {
                Ok(len) => {
                    out.push(0x02);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Err(_) => {
                    out.push(0x0c);
                    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&s.as_bytes()[..len as usize]);
                }
            },
            Amf0::Object(props) => {
                out.push(0x03);
                for (k, v) in props {
                    // Keys are ours and short.
                    let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
                    out.extend_from_slice(&(k.len() as u16).to_be_bytes());
                    out.extend_from_slice(k);
                    v.encode(out);
                }
                out.extend_from_slice(&[0, 0, 0x09]);
            }
            Amf0::Null => out.push(0x05),
            Amf0::Undefined => out.push(0x06),
            Amf0::StrictArray(items) => {
                out.push(0x0a);
                let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                for v in items.iter().take(n as usize) {
                    v.encode(out);
                }
            }
            Amf0::Date(ms) => {
                out.push(0x0b);
                out.extend_from_slice(&ms.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
}

/// Decodes every value in `bytes` (a command or data message's payload).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Amf0>, Amf0Error> {
    let mut d = Decoder { bytes, pos: 0 };
    let mut values = Vec::new();
    while d.pos < bytes.len() {
        values.push(d.value(0)?);
    }
    Ok(values)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Amf0Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Amf0Error::Truncated { what, at: self.pos })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Amf0Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Amf0Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Amf0Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, Amf0Error> {
        let b = self.take(8, what)?;
        Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn utf8(&mut self, len: usize, what: &'static str) -> Result<String, Amf0Error> {
        // `take` checks `len` against what is there before anything is
        // allocated.
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Amf0, Amf0Error> {
        let at = self.pos;
        let marker = self.u8("type marker")?;
        Ok(match marker {
            0x00 => Amf0::Number(self.f64("number")?),
            0x01 => Amf0::Boolean(self.u8("boolean")? != 0),
            0x02 => {
                let len = self.u16("string length")?;
                Amf0::String(self.utf8(len.into(), "string")?)
            }
            0x03 => Amf0::Object(self.properties(depth)?),
            0x05 => Amf0::Null,
            0x06 => Amf0::Undefined,
            0x08 => {
                // The count is a hint that encoders get wrong; the end
                // marker decides.
                self.u32("ECMA array count")?;
                Amf0::Object(self.properties(depth)?)
            }
            0x0a => {
                let count = self.u32("strict array count")?;
                let inner = Self::nested(depth)?;
                let mut items = Vec::new();
                for _ in 0..count {
                    // Each item takes at least one byte: a count larger
                    // than the input fails here, after at most its length
                    // in items.
                    items.push(self.value(inner)?);
                }
                Amf0::StrictArray(items)
            }
            0x0b => {
                let ms = self.f64("date")?;
                self.u16("date time zone")?;
                Amf0::Date(ms)
            }
            0x0c | 0x0f => {
                let len = self.u32("long string length")?;
                let len = usize::try_from(len).map_err(|_| Amf0Error::Truncated {
                    what: "long string",
                    at: self.pos,
                })?;
                Amf0::String(self.utf8(len, "long string")?)
            }
            0x0d => Amf0::Undefined,
            0x10 => {
                let len = self.u16("class name length")?;
                self.take(len.into(), "class name")?;
                Amf0::Object(self.properties(depth)?)
            }
            0x07 | 0x11 => return Err(Amf0Error::Unsupported { marker }),
            _ => return Err(Amf0Error::UnknownMarker { marker, at }),
        })
    }

    fn nested(depth: usize) -> Result<usize, Amf0Error> {
        let inner = depth + 1;
        if inner > MAX_DEPTH {
            return Err(Amf0Error::TooDeep);
        }
        Ok(inner)
    }

    /// Properties up to the object-end marker (an empty key, then 0x09).
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0)>, Amf0Error> {
        let inner = Self::nested(depth)?;
        let mut props = Vec::new();
        loop {
            let len = self.u16("property name length")?;
            if len == 0 && self.bytes.get(self.pos) == Some(&0x09) {
                self.pos += 1;
                return Ok(props);
            }
            let key = self.utf8(len.into(), "property name")?;
            let value = self.value(inner)?;
            props.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(values: &[Amf0]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            v.encode(&mut out);
        }
        out
    }

    #[test]
    fn round_trip() {
        let values = vec![
            Amf0::string("connect"),
            Amf0::Number(1.0),
            Amf0::object([
                ("app", Amf0::string("live")),
                ("flashVer", Amf0::string("FMLE/3.0")),
                ("audio", Amf0::Boolean(true)),
                (
                    "nested",
                    Amf0::object([("list", Amf0::StrictArray(vec![Amf0::Null]))]),
                ),
            ]),
            Amf0::Null,
            Amf0::Undefined,
            Amf0::Date(1.5e12),
            Amf0::String("x".repeat(70_000)),
        ];
        assert_eq!(decode_all(&encode(&values)).unwrap(), values);
        assert_eq!(values[2].get("app").and_then(Amf0::as_str), Some("live"));
    }

    #[test]
    fn ecma_array_and_typed_object_read_as_objects() {
        // ffmpeg's onMetaData: an ECMA array whose count says 2.
        let mut b = vec![0x08, 0, 0, 0, 2];
        b.extend_from_slice(&[0, 5]);
        b.extend_from_slice(b"width");
        Amf0::Number(1280.0).encode(&mut b);
        b.extend_from_slice(&[0, 0, 9]);
        b.extend_from_slice(&[0x10, 0, 1, b'C', 0, 0, 9]);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0].get("width").and_then(Amf0::as_number), Some(1280.0));
        assert_eq!(v[1], Amf0::Object(vec![]));
    }

    /// The attack from the hardening issue: objects nested 5,000 deep
    /// (`03 00 01 61` repeated) in 35 KB.
    #[test]
    fn deep_nesting_is_refused_without_deep_recursion() {
        let mut b = vec![0x02, 0, 7];
        b.extend_from_slice(b"connect");
        Amf0::Number(1.0).encode(&mut b);
        for _ in 0..5000 {
            b.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        assert_eq!(decode_all(&b), Err(Amf0Error::TooDeep));
        // The same through strict arrays.
        let mut b = Vec::new();
        for _ in 0..5000 {
            b.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        assert_eq!(decode_all(&b), Err(Amf0Error::TooDeep));
        // MAX_DEPTH levels are fine.
        let mut v = Amf0::Null;
        for _ in 0..MAX_DEPTH {
            v = Amf0::object([("a", v)]);
        }
        assert!(decode_all(&encode(&[v])).is_ok());
    }

    #[test]
    fn each_error() {
        assert_eq!(
            decode_all(&[0x02, 0x00, 0x07, b'p', b'u']),
            Err(Amf0Error::Truncated {
                what: "string",
                at: 3
            })
        );
        assert!(matches!(
            decode_all(&[0x00, 1, 2]),
            Err(Amf0Error::Truncated { what: "number", .. })
        ));
        // A long string claiming 4 GB.
        assert!(matches!(
            decode_all(&[0x0c, 0xff, 0xff, 0xff, 0xff, b'a']),
            Err(Amf0Error::Truncated {
                what: "long string",
                ..
            })
        ));
        // A strict array claiming 4 billion items.
        assert!(matches!(
            decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x05, 0x05]),
            Err(Amf0Error::Truncated {
                what: "type marker",
                ..
            })
        ));
        // An object without its end.
        assert!(matches!(
            decode_all(&[0x03, 0, 1, b'a', 0x05]),
            Err(Amf0Error::Truncated { .. })
        ));
        assert_eq!(
            decode_all(&[0x05, 0x42]),
            Err(Amf0Error::UnknownMarker {
                marker: 0x42,
                at: 1
            })
        );
        assert_eq!(
            decode_all(&[0x07, 0, 0]),
            Err(Amf0Error::Unsupported { marker: 0x07 })
        );
        assert_eq!(
            decode_all(&[0x11, 0]),
            Err(Amf0Error::Unsupported { marker: 0x11 })
        );
    }
}
