//! A small, strict JSON reader with exact numbers: a number stays its text (never a
//! float), strings are borrowed when they hold no escape, objects keep their members in
//! document order with Python's dict semantics for a repeated key (the later value, at
//! the first position). Anything it does not read (bad JSON, lone surrogates, very deep
//! nesting) is an error; the caller then lets Python judge the message.

use std::borrow::Cow;
use std::collections::HashMap;

// Below msgspec's own limit (Python's recursion limit, ~1000 levels less the stack in
// use): deeper documents are left to Python, which refuses them or reads them.
const MAX_DEPTH: usize = 800;

#[derive(Debug, Clone)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// A number's text and whether it is an integer (no fraction, no exponent).
    Num(&'a str, bool),
    Str(Cow<'a, str>),
    Arr(Vec<Json<'a>>),
    Obj(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(text) => Some(text),
            _ => None,
        }
    }

    /// A JSON integer as i64 (None for anything else, or out of range).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Json::Num(text, true) => text.parse::<i64>().ok(),
            _ => None,
        }
    }
}

pub fn parse(data: &[u8]) -> Result<Json<'_>, String> {
    // Checked once: a string's bytes then lie between two quotes, which in UTF-8 are
    // never inside a character, so each is valid UTF-8 without a check of its own.
    let data = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let mut reader = Reader {
        data: data.as_bytes(),
        text: data,
        at: 0,
    };
    reader.space();
    let value = reader.value(0)?;
    reader.space();
    if reader.at != data.len() {
        return Err(format!("trailing characters at {}", reader.at));
    }
    Ok(value)
}

struct Reader<'a> {
    data: &'a [u8],
    text: &'a str, // the same bytes, known to be UTF-8
    at: usize,
}

impl<'a> Reader<'a> {
    fn space(&mut self) {
        while self.at < self.data.len()
            && matches!(self.data[self.at], b' ' | b'\t' | b'\n' | b'\r')
        {
            self.at += 1;
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{} at {}", what, self.at))
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, String> {
        if depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        match self.data.get(self.at) {
            None => self.fail("unexpected end"),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b'-') | Some(b'0'..=b'9') => self.number(),
            Some(_) => self.fail("unexpected character"),
        }
    }

    fn literal(&mut self, text: &[u8], value: Json<'a>) -> Result<Json<'a>, String> {
        if self.data[self.at..].starts_with(text) {
            self.at += text.len();
            Ok(value)
        } else {
            self.fail("invalid literal")
        }
    }

    fn number(&mut self) -> Result<Json<'a>, String> {
        let start = self.at;
        let data = self.data;
        let mut at = self.at;
        if data[at] == b'-' {
            at += 1;
        }
        let digits = |at: &mut usize| {
            let begin = *at;
            while *at < data.len() && data[*at].is_ascii_digit() {
                *at += 1;
            }
            *at - begin
        };
        let first = at;
        let count = digits(&mut at);
        if count == 0 || (count > 1 && data[first] == b'0') {
            self.at = at;
            return self.fail("invalid number");
        }
        let mut integer = true;
        if at < data.len() && data[at] == b'.' {
            at += 1;
            integer = false;
            if digits(&mut at) == 0 {
                self.at = at;
                return self.fail("invalid number");
            }
        }
        if at < data.len() && (data[at] == b'e' || data[at] == b'E') {
            at += 1;
            integer = false;
            if at < data.len() && (data[at] == b'+' || data[at] == b'-') {
                at += 1;
            }
            if digits(&mut at) == 0 {
                self.at = at;
                return self.fail("invalid number");
            }
        }
        self.at = at;
        // only ASCII was read
        Ok(Json::Num(&self.text[start..at], integer))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        if self.at + 4 > self.data.len() {
            return self.fail("short escape");
        }
        let text =
            std::str::from_utf8(&self.data[self.at..self.at + 4]).map_err(|e| e.to_string())?;
        let value = u32::from_str_radix(text, 16).map_err(|e| e.to_string())?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.fail("bad escape");
        }
        self.at += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.at += 1; // the opening quote
        let start = self.at;
        let data = self.data;
        // fast path: no escape
        while self.at < data.len() {
            let byte = data[self.at];
            if byte == b'"' {
                let text = &self.text[start..self.at]; // between ASCII bytes: whole characters
                self.at += 1;
                return Ok(Cow::Borrowed(text));
            }
            if byte == b'\\' {
                break;
            }
            if byte < 0x20 {
                return self.fail("control character in string");
            }
            self.at += 1;
        }
        let mut out: Vec<u8> = data[start..self.at].to_vec();
        loop {
            let Some(&byte) = data.get(self.at) else {
                return self.fail("unterminated string");
            };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = data.get(self.at) else {
                        return self.fail("unterminated escape");
                    };
                    self.at += 1;
                    match escape {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                if !(data.get(self.at) == Some(&b'\\')
                                    && data.get(self.at + 1) == Some(&b'u'))
                                {
                                    return self.fail("lone surrogate");
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return self.fail("lone surrogate");
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            } else if (0xDC00..0xE000).contains(&code) {
                                return self.fail("lone surrogate");
                            }
                            let ch = char::from_u32(code).ok_or("bad code point")?;
                            let mut buffer = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
                        }
                        _ => return self.fail("bad escape"),
                    }
                }
                byte if byte < 0x20 => return self.fail("control character in string"),
                byte => out.push(byte),
            }
        }
        String::from_utf8(out)
            .map(Cow::Owned)
            .map_err(|e| e.to_string())
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, String> {
        self.at += 1;
        let mut items = Vec::with_capacity(if depth == 1 { 128 } else { 4 });
        self.space();
        if self.data.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            self.space();
            items.push(self.value(depth + 1)?);
            self.space();
            match self.data.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return self.fail("expected ',' or ']'"),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json<'a>, String> {
        self.at += 1;
        // a measurement (the document, or an envelope's item) has about ten members
        let capacity = if depth == 0 || depth == 2 { 10 } else { 2 };
        let mut members: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(capacity);
        let mut index: Option<HashMap<Cow<'a, str>, usize>> = None;
        // a bit per (length, first byte) of the keys so far: a key whose bit is clear is
        // new without comparing it to each one
        let mut seen: u64 = 0;
        self.space();
        if self.data.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.space();
            if self.data.get(self.at) != Some(&b'"') {
                return self.fail("expected a key");
            }
            let key = self.string()?;
            self.space();
            if self.data.get(self.at) != Some(&b':') {
                return self.fail("expected ':'");
            }
            self.at += 1;
            self.space();
            let value = self.value(depth + 1)?;
            // a repeated key keeps its first position and takes the later value
            let bit = 1u64 << ((key.len() * 31 + key.bytes().next().map_or(0, usize::from)) % 64);
            let existing = match &index {
                Some(map) => map.get(&key).copied(),
                None if seen & bit == 0 => None,
                None => members.iter().position(|(k, _)| *k == key),
            };
            seen |= bit;
            match existing {
                Some(at) => members[at].1 = value,
                None => {
                    if let Some(map) = index.as_mut() {
                        map.insert(key.clone(), members.len());
                    }
                    members.push((key, value));
                    if index.is_none() && members.len() > 16 {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
            self.space();
            match self.data.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return self.fail("expected ',' or '}'"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_text_and_repeated_keys_keep_their_first_place() {
        let doc = parse(br#"{"a": 1.50, "b": [1e400, -0], "a": "x\u00e9\ud83d\ude00"}"#).unwrap();
        let Json::Obj(members) = &doc else { panic!() };
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].0, "a");
        assert_eq!(members[0].1.as_str(), Some("xé😀"));
        let Json::Arr(items) = &members[1].1 else {
            panic!()
        };
        assert!(matches!(items[0], Json::Num("1e400", false)));
        assert!(matches!(items[1], Json::Num("-0", true)));
        // keys alike in length and first byte, and keys past the index's threshold
        let many: Vec<String> = (0..20).map(|i| format!("\"k{i:02}\":{i}")).collect();
        let text = format!(
            r#"{{"ab":1,"ac":2,"ab":3,{},"k07":"again"}}"#,
            many.join(",")
        );
        let doc = parse(text.as_bytes()).unwrap();
        let Json::Obj(members) = &doc else { panic!() };
        assert_eq!(members.len(), 22);
        assert_eq!((members[0].0.as_ref(), members[1].0.as_ref()), ("ab", "ac"));
        assert!(matches!(members[0].1, Json::Num("3", true)));
        assert_eq!(doc.get("k07").and_then(Json::as_str), Some("again"));
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for text in [
            &b"01"[..],
            b"{\"a\":NaN}",
            b"[1,]",
            b"\"\\ud800\"",
            b"{} x",
            b"\"\xff\"",
        ] {
            assert!(parse(text).is_err(), "{:?}", text);
        }
    }
}
