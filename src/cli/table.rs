//! Tables for people: a header, columns as wide as their widest cell, a cell longer than its
//! column's cap cut with an ellipsis, so that one long name never shifts the columns after it.

/// How a column lines up its cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// One column: its header, alignment and the widest it may grow (the last column is never cut).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The header.
    pub header: &'static str,
    /// How cells line up.
    pub align: Align,
    /// The widest a cell may be before it is cut.
    pub max: usize,
}

impl Column {
    /// A text column cut at `max` characters.
    pub const fn left(header: &'static str, max: usize) -> Self {
        Column {
            header,
            align: Align::Left,
            max,
        }
    }

    /// A number column.
    pub const fn right(header: &'static str) -> Self {
        Column {
            header,
            align: Align::Right,
            max: 24,
        }
    }
}

/// A table being filled.
#[derive(Debug)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns and no rows.
    pub fn new(columns: &[Column]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header and the rows, two spaces between columns, no trailing spaces.
    pub fn render(&self) -> String {
        let last = self.columns.len().saturating_sub(1);
        let cells: Vec<Vec<String>> = std::iter::once(
            self.columns
                .iter()
                .map(|c| c.header.to_string())
                .collect::<Vec<_>>(),
        )
        .chain(self.rows.iter().cloned())
        .map(|row| {
            row.into_iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i == last {
                        cell
                    } else {
                        cut(&cell, self.columns[i].max)
                    }
                })
                .collect()
        })
        .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|row| row[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &cells {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.columns[i].align {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                    Align::Left if i == last => line.push_str(cell),
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.pop();
        out
    }
}

/// `text` cut to `max` characters, the last one an ellipsis when something was cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Work in hours for people: `10h`, `7.5h`, `0.25h` (the JSON keeps minutes or seconds).
pub fn hours(seconds: f64) -> String {
    let h = seconds / 3600.0;
    let text = format!("{h:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}h")
}

/// A value the engine wrote as hours with two decimals (`24.00h`) in the shorter form of
/// [`hours`] (`24h`); any other text as it is.
pub fn tidy_hours(value: &str) -> String {
    match value.strip_suffix('h').map(str::parse::<f64>) {
        Some(Ok(h)) => hours(h * 3600.0),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_and_the_columns_stay_put() {
        let mut t = Table::new(&[
            Column::left("NAME", 12),
            Column::right("WORK"),
            Column::left("NOTE", 10),
        ]);
        t.row(vec!["Survey".into(), "10h".into(), "ok".into()]);
        t.row(vec![
            "Survey the north abutment".into(),
            "7.5h".into(),
            "a note longer than ten".into(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME          WORK  NOTE");
        assert_eq!(lines[1], "Survey         10h  ok");
        assert_eq!(lines[2], "Survey the …  7.5h  a note longer than ten");
    }

    #[test]
    fn hours_drop_trailing_zeros() {
        assert_eq!(hours(36000.0), "10h");
        assert_eq!(hours(27000.0), "7.5h");
        assert_eq!(hours(900.0), "0.25h");
        assert_eq!(hours(0.0), "0h");
        assert_eq!(tidy_hours("24.00h"), "24h");
        assert_eq!(tidy_hours("14.40h"), "14.4h");
        assert_eq!(tidy_hours("High"), "High");
        assert_eq!(tidy_hours("-"), "-");
    }
}
