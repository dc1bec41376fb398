//! Terraform's values (cty) as they cross the plugin protocol: MessagePack,
//! with unknown values as extension type 0, and numbers as integers, as
//! float64 when exact, or as decimal text otherwise (so that `0.85` in a
//! configuration comes back exactly as `0.85`).

use std::collections::BTreeMap;
use std::io::Read;

/// One value of an attribute, a nested object or a collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// Not known until apply.
    Unknown,
    Bool(bool),
    /// A number in decimal text, as Terraform keeps it (arbitrary precision).
    Number(String),
    String(String),
    /// A list or a set.
    List(Vec<Value>),
    /// An object or a map.
    Object(BTreeMap<String, Value>),
}

impl Value {
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(s.into())
    }

    pub fn number(n: impl std::fmt::Display) -> Self {
        Value::Number(n.to_string())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A number's value; numbers Terraform cannot send exactly as float64
    /// arrive as decimal text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) | Value::String(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// An attribute of an object; `Null` when absent or not an object.
    pub fn get(&self, name: &str) -> &Value {
        match self {
            Value::Object(attrs) => attrs.get(name).unwrap_or(&Value::Null),
            _ => &Value::Null,
        }
    }

    /// Numbers compare by value (`1` and `1.0` are equal), the rest
    /// structurally.
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => {
                a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
            }
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same(vb))
            }
            _ => self == other,
        }
    }
}

/// A JSON number from the admin API, in the shortest decimal text.
pub fn number_from_json(n: &serde_json::Number) -> Value {
    Value::Number(n.to_string())
}

/// Encodes a value as MessagePack.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, value);
    out
}

fn write(out: &mut Vec<u8>, value: &Value) {
    // Writing to a Vec cannot fail.
    match value {
        Value::Null => {
            let _ = rmp::encode::write_nil(out);
        }
        Value::Unknown => {
            // fixext1, type 0, one zero byte: cty's unknown value.
            let _ = rmp::encode::write_ext_meta(out, 1, 0);
            out.push(0);
        }
        Value::Bool(b) => {
            let _ = rmp::encode::write_bool(out, *b);
        }
        Value::Number(text) => {
            if let Ok(i) = text.parse::<i64>() {
                let _ = rmp::encode::write_sint(out, i);
            } else {
                let _ = rmp::encode::write_str(out, text);
            }
        }
        Value::String(s) => {
            let _ = rmp::encode::write_str(out, s);
        }
        Value::List(items) => {
            let _ = rmp::encode::write_array_len(out, items.len() as u32);
            for item in items {
                write(out, item);
            }
        }
        Value::Object(attrs) => {
            let _ = rmp::encode::write_map_len(out, attrs.len() as u32);
            for (k, v) in attrs {
                let _ = rmp::encode::write_str(out, k);
                write(out, v);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode a value from Terraform: {0}")]
pub struct DecodeError(String);

/// Decodes a MessagePack value.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut rd = bytes;
    let v = read(&mut rd, 0)?;
    if !rd.is_empty() {
        return Err(DecodeError(format!("{} bytes after the value", rd.len())));
    }
    Ok(v)
}

/// Values nest no deeper than this: more is not a schema of ours.
const MAX_DEPTH: usize = 32;

fn take<const N: usize>(rd: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let mut buf = [0u8; N];
    rd.read_exact(&mut buf)
        .map_err(|_| DecodeError("truncated".into()))?;
    Ok(buf)
}

fn take_vec(rd: &mut &[u8], len: usize) -> Result<Vec<u8>, DecodeError> {
    if rd.len() < len {
        return Err(DecodeError("truncated".into()));
    }
    let (head, tail) = rd.split_at(len);
    *rd = tail;
    Ok(head.to_vec())
}

fn text(bytes: Vec<u8>) -> Result<String, DecodeError> {
    String::from_utf8(bytes).map_err(|_| DecodeError("a string that is not UTF-8".into()))
}

fn read(rd: &mut &[u8], depth: usize) -> Result<Value, DecodeError> {
    use rmp::Marker as M;
    if depth > MAX_DEPTH {
        return Err(DecodeError("nested too deep".into()));
    }
    let marker = rmp::decode::read_marker(rd).map_err(|_| DecodeError("truncated".into()))?;
    let int = |i: i128| Ok(Value::Number(i.to_string()));
    match marker {
        M::Null => Ok(Value::Null),
        M::True => Ok(Value::Bool(true)),
        M::False => Ok(Value::Bool(false)),
        M::FixPos(n) => int(n.into()),
        M::FixNeg(n) => int(n.into()),
        M::U8 => int(u8::from_be_bytes(take(rd)?).into()),
        M::U16 => int(u16::from_be_bytes(take(rd)?).into()),
        M::U32 => int(u32::from_be_bytes(take(rd)?).into()),
        M::U64 => int(u64::from_be_bytes(take(rd)?).into()),
        M::I8 => int(i8::from_be_bytes(take(rd)?).into()),
        M::I16 => int(i16::from_be_bytes(take(rd)?).into()),
        M::I32 => int(i32::from_be_bytes(take(rd)?).into()),
        M::I64 => int(i64::from_be_bytes(take(rd)?).into()),
        M::F32 => Ok(Value::Number(f32::from_be_bytes(take(rd)?).to_string())),
        M::F64 => Ok(Value::Number(f64::from_be_bytes(take(rd)?).to_string())),
        M::FixStr(n) => Ok(Value::String(text(take_vec(rd, n.into())?)?)),
        M::Str8 | M::Bin8 => {
            let n = u8::from_be_bytes(take(rd)?);
            Ok(Value::String(text(take_vec(rd, n.into())?)?))
        }
        M::Str16 | M::Bin16 => {
            let n = u16::from_be_bytes(take(rd)?);
            Ok(Value::String(text(take_vec(rd, n.into())?)?))
        }
        M::Str32 | M::Bin32 => {
            let n = u32::from_be_bytes(take(rd)?);
            Ok(Value::String(text(take_vec(rd, n as usize)?)?))
        }
        M::FixArray(n) => read_list(rd, n.into(), depth),
        M::Array16 => {
            let n = u16::from_be_bytes(take(rd)?);
            read_list(rd, n.into(), depth)
        }
        M::Array32 => {
            let n = u32::from_be_bytes(take(rd)?);
            read_list(rd, n as usize, depth)
        }
        M::FixMap(n) => read_map(rd, n.into(), depth),
        M::Map16 => {
            let n = u16::from_be_bytes(take(rd)?);
            read_map(rd, n.into(), depth)
        }
        M::Map32 => {
            let n = u32::from_be_bytes(take(rd)?);
            read_map(rd, n as usize, depth)
        }
        // Extensions are unknown values: type 0 plain, type 12 with
        // refinements (not null, a prefix, bounds), which the provider
        // does not use.
        M::FixExt1 => read_ext(rd, 1),
        M::FixExt2 => read_ext(rd, 2),
        M::FixExt4 => read_ext(rd, 4),
        M::FixExt8 => read_ext(rd, 8),
        M::FixExt16 => read_ext(rd, 16),
        M::Ext8 => {
            let n = u8::from_be_bytes(take(rd)?);
            read_ext(rd, n.into())
        }
        M::Ext16 => {
            let n = u16::from_be_bytes(take(rd)?);
            read_ext(rd, n.into())
        }
        M::Ext32 => {
            let n = u32::from_be_bytes(take(rd)?);
            read_ext(rd, n as usize)
        }
        M::Reserved => Err(DecodeError("a reserved MessagePack marker".into())),
    }
}

fn read_list(rd: &mut &[u8], n: usize, depth: usize) -> Result<Value, DecodeError> {
    let mut items = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        items.push(read(rd, depth + 1)?);
    }
    Ok(Value::List(items))
}

fn read_map(rd: &mut &[u8], n: usize, depth: usize) -> Result<Value, DecodeError> {
    let mut attrs = BTreeMap::new();
    for _ in 0..n {
        let Value::String(key) = read(rd, depth + 1)? else {
            return Err(DecodeError("a map key that is not a string".into()));
        };
        attrs.insert(key, read(rd, depth + 1)?);
    }
    Ok(Value::Object(attrs))
}

fn read_ext(rd: &mut &[u8], len: usize) -> Result<Value, DecodeError> {
    let [_kind] = take::<1>(rd)?;
    take_vec(rd, len)?;
    Ok(Value::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(attrs: &[(&str, Value)]) -> Value {
        Value::Object(
            attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn values_survive_a_round_trip() {
        let v = object(&[
            ("name", Value::string("acme")),
            ("burst", Value::number(20)),
            ("negative", Value::number(-3)),
            ("on", Value::Bool(true)),
            (
                "pin",
                Value::List(vec![Value::string("a"), Value::string("b")]),
            ),
            ("nothing", Value::Null),
            ("later", Value::Unknown),
        ]);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        // Without a schema, a number sent as text reads back as text; its
        // value is the same.
        let back = decode(&encode(&Value::number("0.85"))).unwrap();
        assert_eq!(back, Value::string("0.85"));
        assert_eq!(back.as_f64(), Some(0.85));
    }

    #[test]
    fn fractions_travel_as_decimal_text_and_integers_as_integers() {
        assert_eq!(
            encode(&Value::number("0.85")),
            [0xa4, b'0', b'.', b'8', b'5']
        );
        assert_eq!(encode(&Value::number(5)), [0x05]);
        assert_eq!(encode(&Value::Unknown), [0xd4, 0x00, 0x00]);
    }

    #[test]
    fn floats_and_refined_unknowns_from_terraform_are_read() {
        // float64 1.5
        let mut f = vec![0xcb];
        f.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(decode(&f).unwrap(), Value::number("1.5"));
        // ext8 of type 12 carrying a refinement map (not null)
        assert_eq!(
            decode(&[0xc7, 0x03, 0x0c, 0x81, 0x01, 0xc3]).unwrap(),
            Value::Unknown
        );
        assert!(Value::number("1").same(&Value::number("1.0")));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bytes in [
            &[0xa4, b'a'][..],
            &[0x92, 0x01],
            &[0xc1],
            &[0x81, 0x01, 0x02],
            &[0xd5, 0x0c, 0x00],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
        assert!(decode(&[0x01, 0x02]).is_err());
    }
}
