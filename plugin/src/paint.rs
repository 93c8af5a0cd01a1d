//! Colours, only on a terminal and never with `NO_COLOR`; and tables aligned by visible width.

use std::io::IsTerminal;

/// How text is emphasised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Bad,
    Warn,
    Dim,
    Bold,
}

/// Paints text when colours are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    pub on: bool,
}

impl Paint {
    /// Colours for stdout when it is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    pub fn for_stdout() -> Paint {
        Paint::decide(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR"))
    }

    pub fn decide(terminal: bool, no_color: Option<std::ffi::OsString>) -> Paint {
        Paint { on: terminal && no_color.is_none_or(|v| v.is_empty()) }
    }

    pub fn tone(self, tone: Tone, text: &str) -> String {
        let code = match tone {
            Tone::Plain => return text.to_owned(),
            Tone::Good => "32",
            Tone::Bad => "31",
            Tone::Warn => "33",
            Tone::Dim => "2",
            Tone::Bold => "1",
        };
        if self.on && !text.is_empty() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }
}

/// One table cell: its text and how it is painted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn new(text: impl Into<String>, tone: Tone) -> Cell {
        Cell { text: text.into(), tone }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, tone: Tone::Plain }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell { text: text.to_owned(), tone: Tone::Plain }
    }
}

/// A kubectl-style table: upper-case headers, columns three spaces apart, padded by the visible
/// width (colour codes are added after padding), no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], paint: Paint) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(&cell.text));
            }
        }
    }
    let line = |cells: Vec<(String, Tone)>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (text, tone)) in cells.into_iter().enumerate() {
            let pad = if i == last { 0 } else { widths[i] - width(&text) + 3 };
            out.push_str(&paint.tone(tone, &text));
            out.push_str(&" ".repeat(pad));
        }
        out.trim_end().to_owned()
    };
    let mut out = line(headers.iter().map(|h| ((*h).to_owned(), Tone::Plain)).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(|c| (c.text.clone(), c.tone)).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(Paint::decide(true, None).on);
        assert!(Paint::decide(true, Some("".into())).on);
        assert!(!Paint::decide(true, Some("1".into())).on);
        assert!(!Paint::decide(false, None).on);
        assert_eq!(Paint { on: false }.tone(Tone::Bad, "Failed"), "Failed");
        assert_eq!(Paint { on: true }.tone(Tone::Bad, "Failed"), "\x1b[31mFailed\x1b[0m");
    }

    #[test]
    fn tables_align_by_visible_width() {
        let rows = vec![
            vec![Cell::from("staging"), Cell::new("True", Tone::Good), Cell::from("v1")],
            vec![Cell::from("prod"), Cell::new("False", Tone::Bad), Cell::from("")],
        ];
        let plain = table(&["ENVIRONMENT", "READY", "RELEASE"], &rows, Paint { on: false });
        assert_eq!(plain, "ENVIRONMENT   READY   RELEASE\nstaging       True    v1\nprod          False\n");
        let painted = table(&["ENVIRONMENT", "READY", "RELEASE"], &rows, Paint { on: true });
        assert_eq!(painted.lines().nth(1).unwrap(), "staging       \x1b[32mTrue\x1b[0m    v1");
    }
}

/// Text from the cluster made safe for a terminal: status messages and output tails come from
/// hosts and repositories, and a control sequence in them could rewrite what was printed
/// (`\r`, cursor moves), set the clipboard (OSC 52) or hide links (OSC 8). Kept: newlines, tabs
/// and the colour codes (SGR, `ESC [ digits ; m`) this plugin paints with; every other C0, DEL or
/// C1 character becomes U+FFFD.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            let rest: String = chars.clone().skip(1).take_while(|c| c.is_ascii_digit() || *c == ';').collect();
            if chars.clone().nth(1 + rest.len()) == Some('m') {
                out.push('\x1b');
                out.push('[');
                out.push_str(&rest);
                out.push('m');
                for _ in 0..rest.len() + 2 {
                    chars.next();
                }
                continue;
            }
        }
        let control = (c.is_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c);
        out.push(if control { '\u{fffd}' } else { c });
    }
    out
}

#[cfg(test)]
mod safety {
    use super::terminal_safe;

    #[test]
    fn only_colours_newlines_and_tabs_reach_the_terminal() {
        assert_eq!(terminal_safe("\x1b[31mFailed\x1b[0m\tok\n"), "\x1b[31mFailed\x1b[0m\tok\n");
        assert_eq!(terminal_safe("fail\r\x1b[1A\x1b[2K✓ Succeeded"), "fail\u{fffd}\u{fffd}[1A\u{fffd}[2K✓ Succeeded");
        assert_eq!(terminal_safe("\x1b]52;c;ZXZpbA==\x07"), "\u{fffd}]52;c;ZXZpbA==\u{fffd}");
        assert_eq!(terminal_safe("c1 \u{9b}31m"), "c1 \u{fffd}31m");
        assert_eq!(terminal_safe("Zurück ✓"), "Zurück ✓");
    }
}
