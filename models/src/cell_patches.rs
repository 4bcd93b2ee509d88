//! Patches of touching cells: how the artefact detector tells a pen stroke from scattered
//! look-alikes.
//!
//! A pen stroke or a coverslip's edge is one continuous thing on the glass, so the cells the
//! detector calls it touch one another; the clean cells it gets wrong (dense eosin, a fleck of
//! tissue-marking dye, dark tissue against glass) lie here and there. Counting every cell of a
//! kind in a window adds the scattered ones up; the largest patch of touching cells does not.
//! HistoQC cleans its pen masks the same way, removing small objects before it judges a slide.
//! Cells touch along an edge or at a corner (8-connected), so that a stroke drawn on the
//! diagonal stays one patch.

/// The patches (each a list of its cells, column and row) of cells labelled `kind` inside
/// `area` (first column, first row, columns, rows) of a grid `columns` wide, labelled row by
/// row. Cells outside the area do not join patches.
pub(crate) fn patches(
    labels: &[Option<usize>],
    columns: u32,
    area: [u32; 4],
    kind: usize,
) -> Vec<Vec<(u32, u32)>> {
    let [x0, y0, width, height] = area;
    let at = |x: u32, y: u32| (y * columns + x) as usize;
    let is_kind = |x: u32, y: u32| labels.get(at(x, y)).copied().flatten() == Some(kind);
    let mut seen = vec![false; (width * height) as usize];
    let local = |x: u32, y: u32| ((y - y0) * width + (x - x0)) as usize;
    let mut found = Vec::new();
    for y in y0..y0 + height {
        for x in x0..x0 + width {
            if seen[local(x, y)] || !is_kind(x, y) {
                continue;
            }
            seen[local(x, y)] = true;
            let mut patch = Vec::new();
            let mut stack = vec![(x, y)];
            while let Some((cx, cy)) = stack.pop() {
                patch.push((cx, cy));
                for ny in cy.saturating_sub(1).max(y0)..=(cy + 1).min(y0 + height - 1) {
                    for nx in cx.saturating_sub(1).max(x0)..=(cx + 1).min(x0 + width - 1) {
                        if !seen[local(nx, ny)] && is_kind(nx, ny) {
                            seen[local(nx, ny)] = true;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
            found.push(patch);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> (Vec<Option<usize>>, u32) {
        let labels = rows
            .iter()
            .flat_map(|row| {
                row.chars().map(|c| match c {
                    'p' => Some(0),
                    'e' => Some(1),
                    _ => None,
                })
            })
            .collect();
        (labels, rows[0].len() as u32)
    }

    fn sizes(mut patches: Vec<Vec<(u32, u32)>>) -> Vec<usize> {
        patches.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patches.iter().map(Vec::len).collect()
    }

    #[test]
    fn a_diagonal_stroke_is_one_patch_and_scattered_cells_are_many() {
        let (labels, columns) = grid(&[
            "p.....p.", ".p......", "..p...p.", "...p....", "....pe..", "p.....e.",
        ]);
        let found = patches(&labels, columns, [0, 0, columns, 6], 0);
        assert_eq!(sizes(found), vec![5, 1, 1, 1]);
        // Another kind's cells neither join nor bridge.
        let edge = patches(&labels, columns, [0, 0, columns, 6], 1);
        assert_eq!(sizes(edge), vec![2]);
    }

    #[test]
    fn cells_outside_the_area_do_not_join() {
        let (labels, columns) = grid(&["pppp", "pppp", "pppp"]);
        // The middle two columns of the last two rows.
        let found = patches(&labels, columns, [1, 1, 2, 2], 0);
        assert_eq!(sizes(found.clone()), vec![4]);
        assert!(found[0]
            .iter()
            .all(|&(x, y)| (1..3).contains(&x) && (1..3).contains(&y)));
        // An empty area has no patches.
        assert!(patches(&labels, columns, [0, 0, 0, 0], 0).is_empty());
    }
}
