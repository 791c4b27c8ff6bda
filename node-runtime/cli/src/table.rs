//! Aligned plain-text tables for people: columns padded to their widest
//! cell and separated by two spaces, the last column left ragged, and cell
//! formatters for ids, sizes and optional numbers.

use std::io::{self, Write};

/// Rows of cells under an optional header row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first line names the columns.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A table without a header line, for `key  value` listings.
    pub fn plain() -> Table {
        Table {
            header: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as lines of text, each ending in a newline.
    pub fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.header)
            .filter(|h| !h.is_empty())
            .chain(&self.rows)
            .collect();
        let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    .filter_map(|l| l.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (cell, width) in line.iter().zip(&widths) {
                text.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(self.render().as_bytes())
    }
}

/// The first 8 characters of an id: enough to tell ids apart in a table.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(end, _)| &id[..end])
}

/// A byte count for a table: exact with a binary suffix when round
/// (`512Mi`), else to one decimal (`117.7Mi`); `-` for zero.
pub fn size_cell(bytes: u64) -> String {
    if bytes == 0 {
        return "-".to_string();
    }
    let exact = rauha_spec::size::format_size(bytes);
    if bytes < 1024 || !exact.chars().all(|c| c.is_ascii_digit()) {
        return exact;
    }
    let mut value = bytes as f64;
    let mut suffix = "";
    for next in ["Ki", "Mi", "Gi", "Ti"] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        suffix = next;
    }
    format!("{value:.1}{suffix}")
}

/// A count for a table, `-` for zero (no limit or nothing to report).
pub fn count_cell(n: u64) -> String {
    if n == 0 {
        "-".to_string()
    } else {
        n.to_string()
    }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_ragged() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(["1", "web", "running"]);
        t.row(["22", "a-longer-name", "x"]);
        assert_eq!(
            t.render(),
            "ID  NAME           STATE\n\
             1   web            running\n\
             22  a-longer-name  x\n"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(["ääää", "x"]);
        t.row(["b", "y"]);
        assert_eq!(t.render(), "A     B\nääää  x\nb     y\n");
    }

    #[test]
    fn a_plain_table_has_no_header_and_empty_cells_leave_no_trailing_space() {
        let mut t = Table::plain();
        t.row(["status", "failed"]);
        t.row(["error", ""]);
        assert_eq!(t.render(), "status  failed\nerror\n");
        assert_eq!(Table::new(&[]).render(), "");
    }

    #[test]
    fn ids_are_shortened_to_eight_characters() {
        assert_eq!(short_id("0123456789abcdef"), "01234567");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn sizes_are_exact_when_round_and_rounded_otherwise() {
        assert_eq!(size_cell(0), "-");
        assert_eq!(size_cell(1000), "1000");
        assert_eq!(size_cell(512 << 20), "512Mi");
        assert_eq!(size_cell((1 << 20) + (1 << 19) + 1), "1.5Mi");
        assert_eq!(count_cell(0), "-");
        assert_eq!(count_cell(7), "7");
    }
}
