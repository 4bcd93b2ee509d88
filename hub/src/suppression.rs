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

/// As serialised: the count, or the string `<5`.
impl utoipa::PartialSchema for Cell {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(<u64 as utoipa::PartialSchema>::schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([Cell::Suppressed.text()])),
            )
            .description(Some(format!(
                "A count as authorities see it: the number, or `<{THRESHOLD}` where a count from \
                 1 to {} is suppressed (or hidden so that no sum recovers one)",
                THRESHOLD - 1
            )))
            .into()
    }
}

impl utoipa::ToSchema for Cell {}

/// Cells (row, column) whose values add up: `parts` sum to `total`.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub parts: Vec<(usize, usize)>,
    pub total: (usize, usize),
}

/// Suppresses `values` (rows of counts) under `constraints`.
///
/// A worklist: every sum is checked once, and again only when one of its cells was hidden
/// since (a network of 2,000 sites has some 2,500 sums over 100,000 cell references; passes
/// over all of them until nothing changes cost a dashboard tens of milliseconds per period).
pub fn suppress(values: &[Vec<u64>], constraints: &[Constraint]) -> Vec<Vec<Cell>> {
    let valid = |(r, c): &(usize, usize)| *r < values.len() && *c < values[*r].len();
    let mut hidden: Vec<Vec<bool>> = values
        .iter()
        .map(|row| row.iter().map(|v| (1..THRESHOLD).contains(v)).collect())
        .collect();
    // Which sums each cell is in.
    let mut sums_of: Vec<Vec<Vec<usize>>> = values
        .iter()
        .map(|row| vec![Vec::new(); row.len()])
        .collect();
    for (index, constraint) in constraints.iter().enumerate() {
        for (r, c) in constraint
            .parts
            .iter()
            .chain(std::iter::once(&constraint.total))
            .filter(|cell| valid(cell))
        {
            sums_of[*r][*c].push(index);
        }
    }
    let mut queue: std::collections::VecDeque<usize> = (0..constraints.len()).collect();
    let mut queued = vec![true; constraints.len()];
    while let Some(index) = queue.pop_front() {
        queued[index] = false;
        let Some(cell) = complement(values, &hidden, &constraints[index]) else {
            continue;
        };
        hidden[cell.0][cell.1] = true;
        // This sum may need another cell, and every sum holding the new one is to be checked.
        for other in std::iter::once(index).chain(sums_of[cell.0][cell.1].iter().copied()) {
            if !queued[other] {
                queued[other] = true;
                queue.push_back(other);
            }
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

/// The cell to hide so that `constraint` no longer pins a hidden cell down, if it does: exactly
/// one hidden cell in the sum; or, with the total shown, hidden parts whose sum leaves one of
/// them no room above the threshold (hidden cells are never zero, so each is at least 1: two
/// hidden parts summing to 2 are both 1). The partner is the smallest non-zero visible cell,
/// or the total when no part is left.
fn complement(
    values: &[Vec<u64>],
    hidden: &[Vec<bool>],
    constraint: &Constraint,
) -> Option<(usize, usize)> {
    let valid = |(r, c): &(usize, usize)| *r < values.len() && *c < values[*r].len();
    let (t_row, t_column) = constraint.total;
    let total_shown = valid(&constraint.total) && !hidden[t_row][t_column];
    let mut hidden_count = usize::from(valid(&constraint.total) && hidden[t_row][t_column]);
    let mut hidden_parts = 0u64;
    let mut hidden_sum = 0u64;
    let mut partner: Option<((usize, usize), u64)> = None;
    let mut consider = |cell: (usize, usize)| {
        let value = values[cell.0][cell.1];
        if value > 0 && partner.is_none_or(|(_, smallest)| value < smallest) {
            partner = Some((cell, value));
        }
    };
    for cell in constraint.parts.iter().filter(|cell| valid(cell)) {
        if hidden[cell.0][cell.1] {
            hidden_count += 1;
            hidden_parts += 1;
            hidden_sum = hidden_sum.saturating_add(values[cell.0][cell.1]);
        } else {
            consider(*cell);
        }
    }
    if total_shown {
        consider(constraint.total);
    }
    let cramped = total_shown && hidden_parts >= 2 && hidden_sum + 1 < THRESHOLD + hidden_parts;
    if hidden_count != 1 && !cramped {
        return None;
    }
    match partner {
        Some((cell, _)) => Some(cell),
        None if cramped => Some(constraint.total),
        None => None,
    }
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
