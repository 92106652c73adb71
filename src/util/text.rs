//! Text taken from a hostile message, made safe for one log line or a
//! header: every control character escaped as Rust's `{:?}` does (`\n`,
//! `\u{1b}`), and the whole cut to a bound, the cut marked.

/// Longest refusal sentence kept, in bytes (the cut marker included): it
/// goes to a log line and a dead-letter header.
pub(crate) const MAX_MESSAGE_BYTES: usize = 512;

/// Longest piece of message text (a field name) quoted in a sentence, in
/// bytes of its escaped form, the cut marker included.
pub(crate) const MAX_QUOTED_BYTES: usize = 200;

/// `text` made safe for one log line: every control character (and other
/// unprintable one) escaped as `{:?}` does (`\n`, `\u{1b}`), backslashes
/// and quotes left as they are, and the whole cut at a character boundary to
/// at most `max` bytes (`max` at least 40), ending in `…[N more bytes]` when
/// cut (N counts the original's bytes left out). Its own output comes back
/// unchanged.
pub(crate) fn quote(text: &str, max: usize) -> String {
    let (whole, covered) = escape_prefix(text, max);
    if covered == text.len() {
        return whole;
    }
    let room = max.saturating_sub(cut_marker(text.len()).len());
    let (mut kept, covered) = escape_prefix(text, room);
    kept.push_str(&cut_marker(text.len() - covered));
    kept
}

/// The escaped form of the longest prefix of `text` that takes at most `max`
/// bytes escaped, and how many bytes of `text` that prefix is.
fn escape_prefix(text: &str, max: usize) -> (String, usize) {
    let mut out = String::with_capacity(text.len().min(max));
    for (at, c) in text.char_indices() {
        let escape = c.escape_debug();
        let plain = escape.len() == 1 || matches!(c, '\\' | '"' | '\'');
        let len = if plain { c.len_utf8() } else { escape.len() };
        if out.len() + len > max {
            return (out, at);
        }
        match plain {
            true => out.push(c),
            false => out.extend(escape),
        }
    }
    (out, text.len())
}

fn cut_marker(left_out: usize) -> String {
    format!("…[{left_out} more bytes]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_kept() {
        assert_eq!(quote("plain café \"quoted\" a\\b", 100), "plain café \"quoted\" a\\b");
        assert_eq!(quote("a\nb\r\tc\u{1b}[31m\u{0}", 100), r"a\nb\r\tc\u{1b}[31m\0");
        assert_eq!(quote("line\u{2028}sep \u{202e}rtl", 100), r"line\u{2028}sep \u{202e}rtl");
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary_and_the_cut_marked() {
        let text = "é".repeat(1000);
        let cut = quote(&text, 200);
        assert!(cut.len() <= 200 && cut.len() > 150, "{} bytes", cut.len());
        let kept = cut.split('…').next().unwrap_or_default().len();
        assert_eq!(cut, format!("{}…[{} more bytes]", "é".repeat(kept / 2), 2000 - kept));
        assert_eq!(quote(&"x".repeat(200), 200), "x".repeat(200), "text of exactly max bytes is kept");
        let over = quote(&"x".repeat(201), 200);
        assert!(over.len() <= 200 && over.ends_with(" more bytes]"), "{over}");
        assert_eq!(quote(&"\n".repeat(10), 20), r"\n".repeat(10), "an escape counts its own bytes");
    }
}
