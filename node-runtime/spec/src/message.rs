//! How a value shows in an error message: one line, control characters
//! escaped, long values cut with their length (so that a 1 MB field cannot
//! make a 1 MB error, nor a newline a second line).

/// The longest a quoted value gets, in characters, before it is cut.
pub const VALUE_CHARS: usize = 120;
/// The longest a whole error message gets, in characters.
pub const MESSAGE_CHARS: usize = 1000;

/// `value` quoted for a message: control characters and quotes escaped as
/// Rust's `{:?}` does, cut once the escaped text reaches [`VALUE_CHARS`]
/// bytes (a value of control characters grows sixfold when escaped), with
/// its length in bytes.
pub fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        let escaped: String = c.escape_debug().collect();
        if out.len() - 1 + escaped.len() > VALUE_CHARS {
            return format!("{out}\"... ({} bytes)", value.len());
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// A whole message made one line (control characters escaped) and at most
/// [`MESSAGE_CHARS`] long: the last guard before a message leaves rauhad.
pub fn one_line(message: &str) -> String {
    within(message, MESSAGE_CHARS)
}

/// [`one_line`], at most `max` characters long (before the note of the cut).
pub fn within(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max + 40));
    for (i, c) in message.chars().enumerate() {
        if i == max {
            out.push_str(&format!("... (cut; {} bytes in all)", message.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_cut_with_its_length() {
        let v = "x".repeat(1 << 20);
        let q = quote(&v);
        assert!(q.len() < 160, "{q}");
        assert!(q.ends_with("... (1048576 bytes)"), "{q}");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let controls = "\u{1}".repeat(100);
        let q = quote(&controls);
        assert!(q.len() < 150 && q.ends_with("... (100 bytes)"), "{q}");
        assert_eq!(quote("\"x\""), "\"\\\"x\\\"\"");
    }

    #[test]
    fn a_message_is_one_line_and_bounded() {
        assert_eq!(one_line("bad\nmount\tdest"), "bad\\nmount\\tdest");
        let long = format!("cwd: {}", "y".repeat(1 << 20));
        let m = one_line(&long);
        assert!(m.chars().count() < MESSAGE_CHARS + 40, "{}", m.len());
        assert!(m.ends_with("bytes in all)"), "{m}");
        assert_eq!(one_line("fine"), "fine");
    }
}
