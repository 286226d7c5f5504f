//! Text as narration: whitespace collapsed, control characters dropped, bounded in length.

/// Longest narration one scene gets from a document (the spec allows 5,000 characters).
pub(crate) const MAX_NARRATION_CHARS: usize = 4_000;

/// `text` as one line of narration, cut at a word boundary when longer than the limit.
pub(crate) fn narration(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if word.is_empty() {
            continue;
        }
        if out.chars().count() + word.chars().count() + 1 > MAX_NARRATION_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narration_is_one_clean_bounded_line() {
        assert_eq!(narration("  Hello,\n\tworld \u{7} again  "), "Hello, world again");
        assert_eq!(narration("\u{c}\n "), "");
        let long = "word ".repeat(2_000);
        let n = narration(&long);
        assert!(n.chars().count() <= MAX_NARRATION_CHARS && n.ends_with("word"), "{}", n.len());
    }
}
