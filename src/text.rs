//! Text helpers shared by the data and evaluation edges.

/// Python's `str.strip()`: Unicode whitespace plus the ASCII separators 0x1c..=0x1f, which
/// Python also treats as whitespace.
pub fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_is_pythons() {
        assert_eq!(python_strip("  a b \n\t"), "a b");
        assert_eq!(python_strip("\u{1c}\u{1f}x\u{a0}\u{3000}"), "x");
        assert_eq!(python_strip("\u{200b}x"), "\u{200b}x");
    }
}
