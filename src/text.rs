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

/// `text` with every URL's secrets redacted: the user information (`scheme://user:pass@host`,
/// whatever the password holds, `/` and `@` included: everything up to the last `@` of the
/// URL goes) and the values of query parameters named like secrets (`?token=...`). The rest
/// is kept, so an operator still sees which server is meant.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    // The URL ends at the first whitespace (a message may go on after it).
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (url, tail) = rest.split_at(end);
    let url = match url.rfind('@') {
        Some(at) => format!("<redacted>@{}", &url[at + 1..]),
        None => url.to_owned(),
    };
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if secret_name(name) => format!("{name}=<redacted>"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url,
    };
    format!("{scheme}://{url}{}", redact_url(tail))
}

/// Whether a name says its value is a secret (a token, a password, a key, a signature).
pub fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "pass",
        "secret",
        "key",
        "auth",
        "credential",
        "sig",
    ]
    .iter()
    .any(|word| name.contains(word))
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

    #[test]
    fn url_secrets_are_redacted_whatever_they_hold() {
        for (url, shown) in [
            (
                "nats://user:p/ss@queue:4222",
                "nats://<redacted>@queue:4222",
            ),
            (
                "wss://u:p@node.example:443/ws",
                "wss://<redacted>@node.example:443/ws",
            ),
            (
                "nats://runner:p@ss/w@rd@queue:4222",
                "nats://<redacted>@queue:4222",
            ),
            ("nats://TOKEN@queue:4222", "nats://<redacted>@queue:4222"),
            (
                "wss://node/ws?token=abc&net=finney",
                "wss://node/ws?token=<redacted>&net=finney",
            ),
            ("ws://127.0.0.1:9944", "ws://127.0.0.1:9944"),
            ("plain text", "plain text"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let message = "cannot connect to wss://a:b@host: refused; then nats://c:d@q:1 too";
        let redacted = redact_url(message);
        assert!(
            !redacted.contains("a:b") && !redacted.contains("c:d"),
            "{redacted}"
        );
        assert!(redacted.ends_with("too"), "{redacted}");
    }
}
