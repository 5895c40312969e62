//! Text helpers shared across the crate: Python's `strip`, text made safe for a terminal, and
//! text made safe for HTML.

/// Python's `str.strip()`: Unicode whitespace plus the ASCII separators 0x1c..=0x1f, which
/// Python also treats as whitespace.
pub fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// `text` made safe to print on a terminal: control characters (ESC, BEL, CR, backspace, the
/// C1 range) and the bidirectional overrides that reorder a line become visible `\u{..}`
/// escapes, so a miner's string (a template's `raise_exception` message, a rejection reason)
/// cannot retitle the terminal, clear it, or overwrite what was printed. Newlines and tabs stay.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Escapes text for HTML element content and attribute values: miner-controlled strings
/// (hotkeys, repository names, rejection reasons) never become markup.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (dbc9bd9): a miner's text (a template's error, a rejection reason) reached
    /// the terminal raw, so ESC sequences could retitle, clear or overwrite it.
    #[test]
    fn terminal_escapes_become_visible() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\rall checks passed\u{202e}\u{9b}x\nline\tend";
        let shown = printable(hostile);
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
        );
        assert!(shown.contains("\\u{1b}]0;pwned\\u{7}"), "{shown}");
        assert!(shown.contains("\\u{202e}") && shown.contains("\nline\tend"));
        assert!(matches!(
            printable("plain text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn strip_is_pythons() {
        assert_eq!(python_strip("  a b \n\t"), "a b");
        assert_eq!(python_strip("\u{1c}\u{1f}x\u{a0}\u{3000}"), "x");
        assert_eq!(python_strip("\u{200b}x"), "\u{200b}x");
    }

    #[test]
    fn miner_text_never_becomes_markup() {
        let hostile = "</td><script>alert(1)</script>\"'&\u{1b}[2J";
        let escaped = escape_html(hostile);
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('"'));
        assert!(!escaped.contains('\u{1b}'));
        assert_eq!(escape_html("a&b"), "a&amp;b");
    }
}
