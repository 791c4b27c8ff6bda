//! Byte sizes as people write them in policies: `512Mi`, `4Gi`, `1048576`.

/// Parses a byte size: a plain number of bytes, or a number with one of the
/// binary suffixes `Ki`, `Mi`, `Gi`, `Ti` (or the decimal `K`, `M`, `G`, `T`).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    value.checked_mul(factor)
}

/// Formats a byte count with the largest binary suffix that divides it.
pub fn format_size(bytes: u64) -> String {
    for (suffix, factor) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{suffix}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_size("512Mi"), Some(512 << 20));
        assert_eq!(parse_size("4Gi"), Some(4 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("2M"), Some(2_000_000));
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for bad in ["4Gb", "", "Mi", "1.5Gi", "-1", "99999999999999Ti"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_round_sizes() {
        assert_eq!(format_size(512 << 20), "512Mi");
        assert_eq!(format_size(1000), "1000");
    }
}
