//! Text from outside, made safe for where it goes: PostgreSQL's `text`, which cannot hold a NUL, and
//! a terminal, which obeys the control characters it prints. Both write the character as `\u{…}`.

use std::{borrow::Cow, fmt::Write as _};

/// `s` with each NUL written as `\u{0}`. PostgreSQL's `text` cannot hold a NUL (nor can its JSON
/// functions turn a `\u0000` into text), so what came from outside and is kept as text (a parsed
/// webhook field, a receiver's or a provider's answer) goes through this first, on both stores
/// alike. The raw webhook body needs none: JSON has no bare NUL, only the six-character escape.
pub fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\\u{0}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` as a terminal or a log line may show it: control characters (C0 with newlines and tabs,
/// DEL, C1) and the bidirectional controls written as `\u{1b}`, so stored text cannot move the
/// cursor, erase lines, retitle the window or reorder what is printed around it.
pub fn escaped(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Unicode's `Cc` category, and the marks, embeddings, overrides and isolates of the
/// bidirectional algorithm (UAX #9), which reorder the text that follows them.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nul_is_written_out_for_a_store() {
        assert_eq!(without_nul("ok\0\0 done"), "ok\\u{0}\\u{0} done");
        assert_eq!(without_nul("line\nnext\x1b[2K"), "line\nnext\x1b[2K");
        assert!(matches!(without_nul("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn every_control_and_bidi_character_is_written_out_for_a_terminal() {
        assert_eq!(escaped("\x1b[1A\x1b[2Kfake"), "\\u{1b}[1A\\u{1b}[2Kfake");
        assert_eq!(escaped("\x1b]0;title\x07"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(escaped("a\nb\tc\rd\0e\x7f"), "a\\u{a}b\\u{9}c\\u{d}d\\u{0}e\\u{7f}");
        assert_eq!(escaped("csi\u{9b}2K"), "csi\\u{9b}2K", "C1 controls too");
        assert_eq!(escaped("abc\u{202e}fed\u{2066}\u{2069}\u{200f}"), "abc\\u{202e}fed\\u{2066}\\u{2069}\\u{200f}");
        assert_eq!(escaped("Café, ünïcode – “quotes” \\u{1b}"), "Café, ünïcode – “quotes” \\u{1b}");
        assert!(matches!(escaped("plain"), Cow::Borrowed("plain")));
    }
}
