//! Small-cell suppression for what health authorities see.
//!
//! A count between 1 and [`THRESHOLD`]` - 1` could point at a patient in a small county ("the one
//! malignant referral from Xiuwu this week"), so it is shown as `<5` — in the page, the API and
//! the exports alike. Suppressing a cell is not enough when it can be recovered by subtraction:
//! from a column's total and the other sites' cells, or from a row's screened slides and its
//! other triage classes. So every such sum (a [`Constraint`]) with exactly one hidden cell gets a
//! second one hidden — the smallest non-zero visible cell of that sum (complementary
//! suppression) — and so does a sum whose hidden cells, with its total shown, add up to so
//! little that each must be small (two hidden cells summing to 2 are both 1), until no sum is
//! left that pins a hidden cell down. Zeros stay visible: a zero reveals nobody, and
//! hiding it would say there is something. Rates whose numerator or denominator is hidden are
//! hidden too (the page and API do that with [`Cell::value`]).

use serde::{Serialize, Serializer};

/// Counts below this (and above zero) are never shown.
pub const THRESHOLD: u64 = 5;

/// A count as authorities see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Shown(u64),
    Suppressed,
}

impl Cell {
    /// The count, if shown.
    pub fn value(self) -> Option<u64> {
        match self {
            Cell::Shown(value) => Some(value),
            Cell::Suppressed => None,
        }
    }

    /// As text: the number, or `<5`.
    pub fn text(self) -> String {
        match self {
            Cell::Shown(value) => value.to_string(),
            Cell::Suppressed => format!("<{THRESHOLD}"),
        }
    }
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Shown(value) => serializer.serialize_u64(*value),
            Cell::Suppressed => serializer.serialize_str(&self.text()),
        }
    }
}

/// Cells (row, column) whose values add up: `parts` sum to `total`.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub parts: Vec<(usize, usize)>,
    pub total: (usize, usize),
}

/// Suppresses `values` (rows of counts) under `constraints`.
pub fn suppress(values: &[Vec<u64>], constraints: &[Constraint]) -> Vec<Vec<Cell>> {
    let mut hidden: Vec<Vec<bool>> = values
        .iter()
        .map(|row| row.iter().map(|v| (1..THRESHOLD).contains(v)).collect())
        .collect();
    loop {
        let mut changed = false;
        for constraint in constraints {
            let cells: Vec<(usize, usize)> = constraint
                .parts
                .iter()
                .copied()
                .chain(std::iter::once(constraint.total))
                .filter(|(r, c)| *r < values.len() && *c < values[*r].len())
                .collect();
            let (t_row, t_column) = constraint.total;
            let total_shown =
                t_row < values.len() && t_column < values[t_row].len() && !hidden[t_row][t_column];
            let hidden_parts: Vec<u64> = constraint
                .parts
                .iter()
                .filter(|(r, c)| *r < values.len() && *c < values[*r].len() && hidden[*r][*c])
                .map(|(r, c)| values[*r][*c])
                .collect();
            let hidden_count = cells.iter().filter(|(r, c)| hidden[*r][*c]).count();
            // Recoverable: exactly one hidden cell in the sum; or, with the total shown, hidden
            // parts whose sum leaves one of them no room above the threshold (hidden cells are
            // never zero, so each is at least 1: two hidden parts summing to 2 are both 1).
            let hidden_sum: u64 = hidden_parts.iter().sum();
            let k = hidden_parts.len() as u64;
            let cramped = total_shown && k >= 2 && hidden_sum + 1 < THRESHOLD + k;
            if hidden_count != 1 && !cramped {
                continue;
            }
            let partner = cells
                .iter()
                .filter(|(r, c)| !hidden[*r][*c] && values[*r][*c] > 0)
                .min_by_key(|(r, c)| values[*r][*c]);
            if let Some((r, c)) = partner {
                hidden[*r][*c] = true;
                changed = true;
            } else if cramped && total_shown {
                hidden[t_row][t_column] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    values
        .iter()
        .zip(hidden)
        .map(|(row, hidden)| {
            row.iter()
                .zip(hidden)
                .map(|(value, hide)| {
                    if hide {
                        Cell::Suppressed
                    } else {
                        Cell::Shown(*value)
                    }
                })
                .collect()
        })
        .collect()
}

/// A rate of two cells, hidden when either is (or the denominator is zero).
pub fn rate(numerator: Cell, denominator: Cell) -> Option<f64> {
    match (numerator.value(), denominator.value()) {
        (Some(n), Some(d)) if d > 0 => Some(n as f64 / d as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three sites and a total row, one column.
    fn column(values: [u64; 3]) -> (Vec<Vec<u64>>, Vec<Constraint>) {
        let mut rows: Vec<Vec<u64>> = values.iter().map(|v| vec![*v]).collect();
        rows.push(vec![values.iter().sum()]);
        let constraint = Constraint {
            parts: vec![(0, 0), (1, 0), (2, 0)],
            total: (3, 0),
        };
        (rows, vec![constraint])
    }

    #[test]
    fn small_counts_are_hidden_and_zeros_and_large_counts_shown() {
        let (rows, constraints) = column([0, 12, 30]);
        let cells = suppress(&rows, &constraints);
        assert_eq!(cells[0][0], Cell::Shown(0));
        assert_eq!(cells[3][0], Cell::Shown(42));
        let (rows, constraints) = column([3, 12, 30]);
        let cells = suppress(&rows, &constraints);
        assert_eq!(cells[0][0], Cell::Suppressed);
        assert_eq!(serde_json::to_string(&cells[0][0]).unwrap(), "\"<5\"");
    }

    #[test]
    fn a_hidden_cell_cannot_be_recovered_from_the_total() {
        // 3 = 45 - 12 - 30 if only the 3 were hidden: the 12 is hidden too.
        let (rows, constraints) = column([3, 12, 30]);
        let cells = suppress(&rows, &constraints);
        assert_eq!(cells[1][0], Cell::Suppressed);
        assert_eq!(cells[2][0], Cell::Shown(30));
        assert_eq!(cells[3][0], Cell::Shown(45));
        // Only one site has any: the total would say it, so the total goes.
        let (rows, constraints) = column([2, 0, 0]);
        let cells = suppress(&rows, &constraints);
        assert_eq!(cells[3][0], Cell::Suppressed);
        assert_eq!(cells[1][0], Cell::Shown(0));
    }

    #[test]
    fn hidden_cells_whose_sum_pins_them_down_get_company() {
        // 1 + 1 hidden, 30 and the total 32 shown: 2 left for two cells, both must be 1.
        let (rows, constraints) = column([1, 1, 30]);
        let cells = suppress(&rows, &constraints);
        assert_eq!(cells[0][0], Cell::Suppressed);
        assert_eq!(cells[1][0], Cell::Suppressed);
        assert!(
            cells[2][0] == Cell::Suppressed || cells[3][0] == Cell::Suppressed,
            "{cells:?}"
        );
    }

    #[test]
    fn suppression_follows_sums_across_rows_and_columns() {
        // One row: screened 20 = 3 suspicious + 17 likely benign + 0 re-scan.
        let rows = vec![vec![20, 3, 17, 0]];
        let constraint = Constraint {
            parts: vec![(0, 1), (0, 2), (0, 3)],
            total: (0, 0),
        };
        let cells = suppress(&rows, &[constraint]);
        assert_eq!(cells[0][1], Cell::Suppressed);
        assert!(
            cells[0][0] == Cell::Suppressed || cells[0][2] == Cell::Suppressed,
            "{cells:?}"
        );
        assert_eq!(rate(cells[0][1], cells[0][0]), None);
    }
}
