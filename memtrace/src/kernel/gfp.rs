//! Naming GFP allocation flags as this kernel names them. Flag bits and the composite masks
//! (`GFP_KERNEL`, `GFP_HIGHUSER_MOVABLE`, …) move between kernel versions, so both come from the
//! kernel's own `show_gfp_flags` table, which the `print fmt` of the vmscan begin events spells
//! out as C constant expressions. Where that file cannot be read, flags print as hex: a name
//! from another kernel's table could be wrong.

use std::{fs, path::Path};

/// Names for GFP flag values.
#[derive(Clone, Debug, Default)]
pub struct GfpNames {
    /// `(mask, name)` in the kernel's order: composites first, as `show_gfp_flags` lists them.
    masks: Vec<(u64, String)>,
}

impl GfpNames {
    /// From a vmscan tracepoint's format file; hex only if it cannot be read or parsed.
    pub fn from_format_file(events: &Path) -> Self {
        let format = events.join("vmscan/mm_vmscan_direct_reclaim_begin/format");
        fs::read_to_string(format)
            .map(|text| Self::from_format(&text))
            .unwrap_or_default()
    }

    /// From the text of a format file whose `print fmt` has a `__print_flags` table.
    pub fn from_format(format: &str) -> Self {
        Self {
            masks: flag_table(format),
        }
    }

    /// `GFP_HIGHUSER_MOVABLE|__GFP_COMP`-style text, the way the kernel's `__print_flags`
    /// builds it (first match in table order, its bits then cleared); unknown bits as hex;
    /// `none` for 0.
    pub fn name(&self, flags: u64) -> String {
        if flags == 0 {
            return "none".to_owned();
        }
        let mut left = flags;
        let mut parts = Vec::new();
        for (mask, name) in &self.masks {
            if *mask != 0 && left & mask == *mask {
                parts.push(name.clone());
                left &= !mask;
            }
        }
        if left != 0 {
            parts.push(format!("{left:#x}"));
        }
        parts.join("|")
    }
}

/// Every `{( unsigned long)EXPR, "NAME"}` entry of the format's `__print_flags` table, with
/// EXPR evaluated. Entries that do not evaluate (the `{ 0, ((void *)0) }` terminator, or a
/// construct this evaluator does not know) are left out, so they print as hex.
fn flag_table(format: &str) -> Vec<(u64, String)> {
    let Some((_, table)) = format
        .split_once("__print_flags(")
        .and_then(|(_, call)| call.split_once('{'))
    else {
        return Vec::new();
    };
    let mut masks = Vec::new();
    for entry in table.split("}, {") {
        let Some((expr, rest)) = entry.rsplit_once(", \"") else {
            continue;
        };
        let Some(name) = rest.split('"').next() else {
            continue;
        };
        if let Some(mask) = eval(expr) {
            masks.push((mask, name.to_owned()));
        }
    }
    masks
}

/// Evaluates a flag expression as the kernel's headers expand it: integer literals (with `U`/
/// `L` suffixes), casts such as `( gfp_t)` or `(unsigned long)` (which change nothing here),
/// `~`, `<<`, `&` and `|`, with C's precedence.
fn eval(expr: &str) -> Option<u64> {
    let tokens = tokenize(expr)?;
    let mut parser = Parser { tokens, at: 0 };
    let value = parser.or()?;
    (parser.at == parser.tokens.len()).then_some(value)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Token {
    Number(u64),
    /// A word of a type name in a cast.
    Word,
    Open,
    Close,
    Or,
    And,
    Not,
    Shl,
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            ' ' => continue,
            '(' => Token::Open,
            ')' => Token::Close,
            '|' => Token::Or,
            '&' => Token::And,
            '~' => Token::Not,
            '<' if chars.next_if_eq(&'<').is_some() => Token::Shl,
            '0'..='9' => {
                let mut digits = String::from(c);
                while let Some(d) = chars.next_if(char::is_ascii_alphanumeric) {
                    digits.push(d);
                }
                Token::Number(literal(&digits)?)
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                while chars
                    .next_if(|&d| d.is_ascii_alphanumeric() || d == '_')
                    .is_some()
                {}
                Token::Word
            }
            _ => return None,
        };
        tokens.push(token);
    }
    Some(tokens)
}

/// `1UL`, `10`, `0x400u`: a C integer literal.
fn literal(text: &str) -> Option<u64> {
    let digits = text.trim_end_matches(['u', 'U', 'l', 'L']);
    match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => digits.parse().ok(),
    }
}

/// Recursive descent, lowest precedence first: `|`, `&`, `<<`, unary `~`, then atoms.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next_is(&mut self, token: Token) -> bool {
        let matched = self.tokens.get(self.at) == Some(&token);
        self.at += usize::from(matched);
        matched
    }

    fn or(&mut self) -> Option<u64> {
        let mut value = self.and()?;
        while self.next_is(Token::Or) {
            value |= self.and()?;
        }
        Some(value)
    }

    fn and(&mut self) -> Option<u64> {
        let mut value = self.shift()?;
        while self.next_is(Token::And) {
            value &= self.shift()?;
        }
        Some(value)
    }

    fn shift(&mut self) -> Option<u64> {
        let mut value = self.unary()?;
        while self.next_is(Token::Shl) {
            value = value.checked_shl(u32::try_from(self.unary()?).ok()?)?;
        }
        Some(value)
    }

    fn unary(&mut self) -> Option<u64> {
        if self.next_is(Token::Not) {
            return self.unary().map(|v| !v);
        }
        if self.next_is(Token::Open) {
            if self.next_is(Token::Word) {
                // A cast: `(unsigned long)`, `( gfp_t)`.
                while self.next_is(Token::Word) {}
                return if self.next_is(Token::Close) {
                    self.unary()
                } else {
                    None
                };
            }
            let value = self.or()?;
            return self.next_is(Token::Close).then_some(value);
        }
        match self.tokens.get(self.at) {
            Some(&Token::Number(n)) => {
                self.at += 1;
                Some(n)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::Kernel;

    use super::*;
    use crate::kernel::offsets::captured;

    const FMT: &str = r#"print fmt: "order=%d gfp_flags=%s", REC->order, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)(( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))), "__GFP_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (6))), "__GFP_IO"}, {( unsigned long)(( gfp_t)((((1UL))) << (7))), "__GFP_FS"}, {( unsigned long)(( gfp_t)((((1UL))) << (10))), "__GFP_DIRECT_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (11))), "__GFP_KSWAPD_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (18))), "__GFP_COMP"}, { 0, ((void *)0) } ) : "none""#;

    #[test]
    fn evaluates_the_kernels_expressions() {
        assert_eq!(eval("((((1UL))) << (10))|((((1UL))) << (11))"), Some(0xc00));
        assert_eq!(eval("(( gfp_t)0x400u) & ~(( gfp_t)0x400u)"), Some(0));
        assert_eq!(eval("1 | 2 & 3"), Some(3), "& binds tighter than |");
        assert_eq!(eval("1 << 2 | 1"), Some(5));
        assert_eq!(eval("(unsigned long)(( gfp_t)0x20u)"), Some(0x20));
        assert_eq!(eval("((void *)0)"), None);
        assert_eq!(eval("(gfp_t)"), None);
        assert_eq!(eval("(1 << 70)"), None);
        assert_eq!(eval("(1"), None);
    }

    #[test]
    fn reads_the_table_in_the_kernels_order() {
        let names = GfpNames::from_format(FMT);
        assert_eq!(
            names.masks[..3],
            [
                (0xcc0, "GFP_KERNEL".to_owned()),
                (0xc00, "__GFP_RECLAIM".to_owned()),
                (0x40, "__GFP_IO".to_owned()),
            ]
        );
        assert_eq!(names.masks.len(), 7, "the terminator is no entry");
        assert_eq!(names.name(0xcc0 | 1 << 18), "GFP_KERNEL|__GFP_COMP");
        assert_eq!(
            names.name(0x400 | 1 << 40),
            "__GFP_DIRECT_RECLAIM|0x10000000000"
        );
        assert_eq!(names.name(0), "none");
    }

    #[test]
    fn an_unreadable_table_prints_hex() {
        assert_eq!(GfpNames::default().name(0xcc0), "0xcc0");
        assert_eq!(
            GfpNames::from_format("print fmt: \"x\"").name(0xcc0),
            "0xcc0"
        );
    }

    /// Every tested kernel's table evaluates whole, and names what `GFP_KERNEL` and
    /// `GFP_HIGHUSER_MOVABLE` are on that kernel (bit positions differ: `__GFP_HARDWALL` is
    /// bit 20 on 6.18, and 5.10's `__GFP_ZERO` sits elsewhere).
    #[test]
    fn every_tested_kernels_table() {
        for &kernel in &Kernel::TESTED {
            let capture = captured::formats(kernel);
            let format = captured::format_of(capture, "vmscan/mm_vmscan_direct_reclaim_begin");
            let entries = format.matches("\"}").count();
            let names = GfpNames::from_format(format);
            assert_eq!(
                names.masks.len(),
                entries,
                "{kernel:?}: every entry evaluates"
            );
            let mask = |name: &str| {
                names
                    .masks
                    .iter()
                    .find(|(_, n)| n == name)
                    .map(|&(m, _)| m)
                    .unwrap_or_else(|| panic!("{kernel:?} has no {name}"))
            };
            let reclaim = mask("__GFP_DIRECT_RECLAIM") | mask("__GFP_KSWAPD_RECLAIM");
            let kernel_flags = reclaim | mask("__GFP_IO") | mask("__GFP_FS");
            assert_eq!(mask("GFP_KERNEL"), kernel_flags, "{kernel:?}");
            assert_eq!(names.name(kernel_flags), "GFP_KERNEL", "{kernel:?}");
            let movable = kernel_flags
                | mask("__GFP_HARDWALL")
                | mask("__GFP_HIGHMEM")
                | mask("__GFP_MOVABLE");
            assert_eq!(names.name(movable), "GFP_HIGHUSER_MOVABLE", "{kernel:?}");
        }
        let on_6_18 = captured::formats(Kernel(6, 18));
        let names = GfpNames::from_format(captured::format_of(
            on_6_18,
            "vmscan/mm_vmscan_direct_reclaim_begin",
        ));
        assert_eq!(names.name(0x10_0cca), "GFP_HIGHUSER_MOVABLE");
        assert_eq!(names.name(0x14_0cca), "GFP_HIGHUSER_MOVABLE|__GFP_COMP");
    }
}
