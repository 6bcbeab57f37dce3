//! The forms a secret value takes when something re-encodes it: what redaction replaces
//! in text, and what the egress proxy and the artifact check look for in bytes.
//!
//! A reflecting party can always invent an encoding not listed here (a cipher, a
//! reversed string, one byte per response). These are the common ones, matched at any
//! offset: the value itself; base64 in the standard and URL alphabets with the value at
//! any of the three alignments inside a longer encoded string; hex in either case;
//! percent-encoding, whole or partial; JSON escapes, whole or partial; and any of these
//! broken across lines or by spaces.

use base64::Engine as _;
use zeroize::Zeroizing;

/// Shortest value matched: shorter ones would match ordinary text.
pub(crate) const MIN_LEN: usize = 4;

/// Shortest value matched inside a longer base64 string: the interior of a value's
/// encoding at an offset loses up to two bytes at each end, and shorter interiors would
/// match ordinary base64.
const MIN_INTERIOR_LEN: usize = 8;

/// The forms of a set of secret values.
pub(crate) struct SecretForms {
    /// Replaced in place in text: exact spellings.
    spellings: Vec<Zeroizing<String>>,
    /// Replaced in place whatever their ASCII case (the values themselves).
    values: Vec<Zeroizing<String>>,
    /// Looked for in every decoded view of bytes (case-sensitive).
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// Looked for in the lower-cased views (hex, and the value itself, in any case).
    lower_needles: Vec<Zeroizing<Vec<u8>>>,
}

impl SecretForms {
    pub(crate) fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut spellings: Vec<Zeroizing<String>> = Vec::new();
        let mut folded: Vec<Zeroizing<String>> = Vec::new();
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut lower_needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for raw in values {
            if raw.len() < MIN_LEN {
                continue;
            }
            let bytes = raw.as_bytes();
            spellings.push(Zeroizing::new(raw.to_owned()));
            folded.push(Zeroizing::new(raw.to_ascii_lowercase()));
            needles.push(Zeroizing::new(bytes.to_vec()));
            for engine in [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                spellings.push(Zeroizing::new(engine.encode(bytes)));
            }
            for interior in base64_interiors(bytes) {
                needles.push(Zeroizing::new(interior.as_bytes().to_vec()));
                spellings.push(interior);
            }
            // Case folded (a header name comes back lower-cased; an echo may shout).
            lower_needles.push(Zeroizing::new(bytes.to_ascii_lowercase()));
            let lower_hex = Zeroizing::new(hex::encode(bytes));
            spellings.push(Zeroizing::new(lower_hex.to_uppercase()));
            lower_needles.push(Zeroizing::new(lower_hex.as_bytes().to_vec()));
            spellings.push(lower_hex);
            for upper in [true, false] {
                spellings.push(Zeroizing::new(every_byte(bytes, |b| hex_escape("%", b, upper, 2))));
                spellings.push(Zeroizing::new(every_byte(bytes, |b| hex_escape("\\u", b, upper, 4))));
                spellings.push(Zeroizing::new(every_byte(bytes, |b| hex_escape("\\x", b, upper, 2))));
            }
        }
        // Longest first, so a form is never half-replaced by a shorter one.
        spellings.sort_by_key(|n| std::cmp::Reverse(n.len()));
        spellings.dedup_by(|a, b| **a == **b);
        // Every exact spelling is looked for too (the short values' whole base64 forms).
        needles.extend(spellings.iter().map(|s| Zeroizing::new(s.as_bytes().to_vec())));
        needles.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        needles.dedup_by(|a, b| **a == **b);
        folded.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Self { spellings, values: folded, needles, lower_needles }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.spellings.is_empty()
    }

    /// The text with every exact spelling replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for spelling in &self.spellings {
            if out.contains(spelling.as_str()) {
                out = out.replace(spelling.as_str(), "***");
            }
        }
        // The values in any ASCII case: lower-casing ASCII keeps every byte offset.
        for value in &self.values {
            loop {
                let lower = out.to_ascii_lowercase();
                let Some(at) = lower.find(value.as_str()) else { break };
                out.replace_range(at..at + value.len(), "***");
            }
        }
        out
    }

    /// Whether the bytes hold a secret in any of its forms, decoded however the forms
    /// mix: percent-escapes inside JSON escapes, hex with spaces, base64 across lines.
    pub(crate) fn found_in(&self, bytes: &[u8]) -> bool {
        if self.needles.is_empty() || bytes.is_empty() {
            return false;
        }
        let json = json_unescape(bytes);
        let percent = percent_decode(bytes);
        let views: [&[u8]; 6] =
            [bytes, &json, &percent, &percent_decode(&json), &json_unescape(&percent), &percent_decode(&percent)];
        let (dump_hex, dump_text) = dump_columns(bytes);
        views.iter().any(|view| {
            self.found_in_view(view)
                || self.found_in_view(&without_separators(view))
                || self.found_in_view(&without_nuls(view))
                || self.lower_needles.iter().any(|n| memchr::memmem::find(&hex_digits_only(view), n).is_some())
        }) || self.found_in_view(&dump_text)
            || self.lower_needles.iter().any(|n| memchr::memmem::find(&dump_hex, n).is_some())
    }

    fn found_in_view(&self, view: &[u8]) -> bool {
        if self.needles.iter().any(|n| memchr::memmem::find(view, n).is_some()) {
            return true;
        }
        let lower = view.to_ascii_lowercase();
        self.lower_needles.iter().any(|n| memchr::memmem::find(&lower, n).is_some())
    }
}

/// The stable interior of the value's base64 encoding when the value starts at each of
/// the three byte alignments of a longer encoded string, in both alphabets.
fn base64_interiors(bytes: &[u8]) -> Vec<Zeroizing<String>> {
    let mut out = Vec::new();
    if bytes.len() < MIN_INTERIOR_LEN {
        return out;
    }
    for skip in 0..3 {
        let rest = &bytes[skip..];
        let whole = rest.len() / 3 * 3;
        for engine in
            [&base64::engine::general_purpose::STANDARD_NO_PAD, &base64::engine::general_purpose::URL_SAFE_NO_PAD]
        {
            out.push(Zeroizing::new(engine.encode(&rest[..whole])));
        }
    }
    out
}

fn every_byte(bytes: &[u8], form: impl Fn(u8) -> String) -> String {
    bytes.iter().map(|b| form(*b)).collect()
}

fn hex_escape(prefix: &str, byte: u8, upper: bool, width: usize) -> String {
    if upper { format!("{prefix}{byte:0width$X}") } else { format!("{prefix}{byte:0width$x}") }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// `%XX` decoded wherever it appears (and `+` left alone).
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// JSON's (and JavaScript's) escapes decoded wherever they appear: `\uXXXX` and
/// `\u{XX}` for ASCII, `\xXX`, the one-character escapes, and HTML's numeric character
/// references.
fn json_unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex_at = |from: usize, n: usize| -> Option<u32> {
                let digits = bytes.get(from..from + n)?;
                digits.iter().try_fold(0u32, |acc, d| Some(acc << 4 | u32::from(hex_value(*d)?)))
            };
            match bytes[i + 1] {
                b'u' if bytes.get(i + 2) == Some(&b'{') => {
                    let end = bytes[i + 3..].iter().position(|b| *b == b'}').map(|p| i + 3 + p);
                    if let Some(end) = end.filter(|e| *e - (i + 3) <= 6)
                        && let Some(code) = hex_at(i + 3, end - (i + 3)).and_then(|c| u8::try_from(c).ok())
                    {
                        out.push(code);
                        i = end + 1;
                        continue;
                    }
                }
                b'u' => {
                    if let Some(code) = hex_at(i + 2, 4).and_then(|c| u8::try_from(c).ok()) {
                        out.push(code);
                        i += 6;
                        continue;
                    }
                }
                b'x' => {
                    if let Some(code) = hex_at(i + 2, 2).and_then(|c| u8::try_from(c).ok()) {
                        out.push(code);
                        i += 4;
                        continue;
                    }
                }
                c @ (b'"' | b'\\' | b'/') => {
                    out.push(c);
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        // HTML and XML numeric character references: `&#114;`, `&#x72;`.
        if bytes[i] == b'&' && bytes.get(i + 1) == Some(&b'#') {
            let hex = matches!(bytes.get(i + 2), Some(b'x' | b'X'));
            let start = if hex { i + 3 } else { i + 2 };
            let end = bytes[start..].iter().take(8).position(|b| *b == b';').map(|p| start + p);
            if let Some(end) = end.filter(|e| *e > start) {
                let digits = std::str::from_utf8(&bytes[start..end]).unwrap_or("");
                let code = if hex { u32::from_str_radix(digits, 16) } else { digits.parse::<u32>() };
                if let Some(code) = code.ok().and_then(|c| u8::try_from(c).ok()) {
                    out.push(code);
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The bytes without NULs: UTF-16 and UTF-32 text of ASCII characters, either order.
/// The columns of a hex dump (`hexdump -C`, `xxd`, `od -A x -t x1z`), each joined across
/// lines: the hex bytes (lower-cased digits) and the text column. A dump line is an
/// offset (at least 4 hex digits, then `:` or a space), up to 16 bytes in hex groups of
/// an even number of digits, then the text, between bars or not. The offsets and the
/// text would otherwise cut the hex apart, and the line ends cut the text.
fn dump_columns(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut hex, mut text) = (Vec::new(), Vec::new());
    let trim_start = |b: &[u8]| -> usize { b.iter().take_while(|c| **c == b' ' || **c == b'\t').count() };
    for line in bytes.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let offset = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let rest = &line[offset..];
        let rest = rest.strip_prefix(b":").unwrap_or(rest);
        if offset < 4 || !rest.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let (mut rest, mut count) = (rest, 0);
        loop {
            let group = &rest[trim_start(rest)..];
            let digits = group.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let whole = group.get(digits).is_none_or(|b| *b == b' ' || *b == b'\t');
            if digits == 0 || digits % 2 != 0 || !whole || count + digits / 2 > 16 {
                break;
            }
            hex.extend(group[..digits].iter().map(u8::to_ascii_lowercase));
            count += digits / 2;
            rest = &group[digits..];
        }
        let column = &rest[trim_start(rest)..];
        let column = column.strip_prefix(b"|").unwrap_or(column);
        let column = column.strip_suffix(b"|").unwrap_or(column);
        text.extend_from_slice(column);
    }
    (hex, text)
}

fn without_nuls(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|b| *b != 0).collect()
}

/// Only the hex digits, lower-cased, after `0x` and `\x` prefixes are cut: hex written
/// with any separators (`62-69`, `0x62, 0x69`, `62:69`).
fn hex_digits_only(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b'0' | b'\\') && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
            i += 2;
            continue;
        }
        if bytes[i].is_ascii_hexdigit() {
            out.push(bytes[i].to_ascii_lowercase());
        }
        i += 1;
    }
    out
}

/// The bytes without whitespace, `:` and backslash-n sequences: base64 broken into
/// lines, hex grouped by spaces or colons.
fn without_separators(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b':' => i += 1,
            b'\\' if matches!(bytes.get(i + 1), Some(b'n' | b'r' | b't')) => i += 2,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-token-0042";

    fn forms() -> SecretForms {
        SecretForms::new([SECRET])
    }

    #[test]
    fn base64_at_every_offset_and_in_both_alphabets_is_found() {
        let f = forms();
        for prefix in ["", "a", "ab", "abc", "Authorization: Bearer "] {
            let whole = format!("{prefix}{SECRET}~~?>");
            for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
                let encoded = engine.encode(whole.as_bytes());
                assert!(f.found_in(encoded.as_bytes()), "{prefix:?} {encoded}");
                let wrapped: String =
                    encoded.as_bytes().chunks(5).map(|c| String::from_utf8_lossy(c).to_string() + "\r\n").collect();
                assert!(f.found_in(wrapped.as_bytes()), "wrapped {wrapped}");
                let redacted = f.redact(&encoded);
                assert!(!f.found_in(redacted.as_bytes()), "{redacted}");
            }
        }
    }

    #[test]
    fn hex_percent_and_json_escapes_whole_or_partial_are_found() {
        let f = forms();
        let hex = hex::encode(SECRET);
        let samples = [
            hex.clone(),
            hex.to_uppercase(),
            hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_string()).collect::<Vec<_>>().join(" "),
            SECRET.bytes().map(|b| format!("%{b:02X}")).collect(),
            SECRET.replace('-', "%2d").replace('t', "%74"),
            SECRET.bytes().map(|b| format!("\\u{b:04x}")).collect(),
            format!("{{\"h\":\"{}\"}}", SECRET.replace('h', "\\u0068")),
            // A percent-escape inside a JSON escape: `\u0025` is `%`.
            SECRET.replace('-', "\\u00252d"),
        ];
        for sample in samples {
            assert!(f.found_in(sample.as_bytes()), "{sample}");
        }
        assert!(!f.found_in(b"hunter2 token 0042, nothing here"));
        assert!(!f.found_in(b""));
    }

    /// `hexdump -C` and `xxd` of text holding the secret: offsets and the text column
    /// cut the hex apart, line ends cut the text.
    fn dumps(text: &[u8]) -> [String; 2] {
        let (mut canonical, mut xxd) = (String::new(), String::new());
        for (i, line) in text.chunks(16).enumerate() {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            let shown: String = line.iter().map(|b| if b.is_ascii_graphic() { char::from(*b) } else { '.' }).collect();
            let (left, right) = hex.split_at(hex.len().min(8));
            canonical.push_str(&format!(
                "{:08x}  {:<23}  {:<23}  |{shown}|\n",
                i * 16,
                left.join(" "),
                right.join(" ")
            ));
            let pairs: Vec<String> = hex.chunks(2).map(|p| p.concat()).collect();
            xxd.push_str(&format!("{:08x}: {:<39}  {shown}\n", i * 16, pairs.join(" ")));
        }
        [canonical, xxd]
    }

    #[test]
    fn hex_dumps_are_read_column_by_column() {
        let f = forms();
        let request = format!("GET /v1/user HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {SECRET}\r\n\r\n");
        for dump in dumps(request.as_bytes()) {
            assert!(f.found_in(dump.as_bytes()), "{dump}");
        }
        for dump in dumps(b"GET /v1/user HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer nothing-to-see\r\n") {
            assert!(!f.found_in(dump.as_bytes()), "{dump}");
        }
    }

    #[test]
    fn redaction_replaces_the_exact_spellings() {
        let f = forms();
        let text = format!(
            "a {SECRET} b {} c {} d {}",
            hex::encode(SECRET),
            base64::engine::general_purpose::STANDARD.encode(SECRET),
            SECRET.bytes().map(|b| format!("%{b:02x}")).collect::<String>()
        );
        assert_eq!(f.redact(&text), "a *** b *** c *** d ***");
    }

    #[test]
    fn short_values_are_left_alone() {
        let f = SecretForms::new(["abc"]);
        assert!(f.is_empty());
        assert!(!f.found_in(b"abc"));
    }
}
