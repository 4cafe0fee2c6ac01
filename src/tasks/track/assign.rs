//! Gated linear assignment, as ByteTrack's `lapjv` with a cost limit: the pairs of tracks and
//! detections whose similarity reaches a minimum, chosen to maximise the total margin above
//! it. Only pairs above the minimum compete, so the problem splits into the connected groups of
//! such pairs (people far apart never meet), each solved exactly by the Hungarian method.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// Similarities are compared in millionths (the solver works on integers).
const SCALE: f64 = 1e6;

/// The assigned `(row, column)` pairs of a `rows x columns` similarity matrix (row-major).
pub(super) fn assign(
    similarity: &[f32],
    rows: usize,
    columns: usize,
    min: f32,
) -> Vec<(usize, usize)> {
    debug_assert_eq!(similarity.len(), rows * columns);
    let candidate = |r: usize, c: usize| similarity[r * columns + c] >= min;
    // Union-find over rows (0..rows) and columns (rows..rows + columns).
    let mut parent: Vec<usize> = (0..rows + columns).collect();
    for r in 0..rows {
        for c in 0..columns {
            if candidate(r, c) {
                let (a, b) = (root(&mut parent, r), root(&mut parent, rows + c));
                parent[a] = b;
            }
        }
    }
    let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    let mut group_of = vec![usize::MAX; rows + columns];
    for node in 0..rows + columns {
        let top = root(&mut parent, node);
        if group_of[top] == usize::MAX {
            group_of[top] = groups.len();
            groups.push((Vec::new(), Vec::new()));
        }
        let (group_rows, group_columns) = &mut groups[group_of[top]];
        if node < rows {
            group_rows.push(node);
        } else {
            group_columns.push(node - rows);
        }
    }
    let mut pairs = Vec::new();
    for (group_rows, group_columns) in groups {
        match (group_rows.as_slice(), group_columns.as_slice()) {
            ([], _) | (_, []) => {}
            (&[r], &[c]) => pairs.push((r, c)),
            _ => {
                let margin = |r: usize, c: usize| {
                    let s = similarity[r * columns + c];
                    // A candidate always weighs more than leaving both unassigned.
                    (s >= min).then(|| (f64::from(s - min) * SCALE).round() as i64 + 1)
                };
                pairs.extend(solve_group(&group_rows, &group_columns, margin));
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

fn root(parent: &mut [usize], mut node: usize) -> usize {
    while parent[node] != node {
        parent[node] = parent[parent[node]];
        node = parent[node];
    }
    node
}

/// The best assignment within one group, on a square matrix padded with zero weights.
fn solve_group(
    rows: &[usize],
    columns: &[usize],
    margin: impl Fn(usize, usize) -> Option<i64>,
) -> Vec<(usize, usize)> {
    let side = rows.len().max(columns.len());
    let weights = Matrix::from_fn(side, side, |(i, j)| match (rows.get(i), columns.get(j)) {
        (Some(&r), Some(&c)) => margin(r, c).unwrap_or(0),
        _ => 0,
    });
    let (_, assignment) = kuhn_munkres(&weights);
    assignment
        .into_iter()
        .enumerate()
        .filter_map(|(i, j)| {
            let (&r, &c) = (rows.get(i)?, columns.get(j)?);
            margin(r, c).map(|_| (r, c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assignment of at most `rows.min(columns)` pairs, for small matrices.
    fn brute_force(similarity: &[f32], rows: usize, columns: usize, min: f32) -> f64 {
        fn best(
            s: &[f32],
            columns: usize,
            min: f32,
            row: usize,
            rows: usize,
            used: &mut Vec<bool>,
        ) -> f64 {
            if row == rows {
                return 0.0;
            }
            let mut top = best(s, columns, min, row + 1, rows, used);
            for c in 0..columns {
                let value = s[row * columns + c];
                if !used[c] && value >= min {
                    used[c] = true;
                    let total = f64::from(value - min) + best(s, columns, min, row + 1, rows, used);
                    used[c] = false;
                    top = top.max(total);
                }
            }
            top
        }
        best(similarity, columns, min, 0, rows, &mut vec![false; columns])
    }

    #[test]
    fn assignments_are_optimal_and_gated() {
        let mut state = 0x9E37_79B9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 1000) as f32 / 1000.0
        };
        for trial in 0..300 {
            let (rows, columns) = (1 + trial % 5, 1 + trial / 5 % 6);
            // Sparse: most pairs below the minimum, as for people apart.
            let similarity: Vec<f32> = (0..rows * columns)
                .map(|_| if next() < 0.6 { 0.0 } else { next() })
                .collect();
            let pairs = assign(&similarity, rows, columns, 0.3);
            let total: f64 = pairs
                .iter()
                .map(|&(r, c)| f64::from(similarity[r * columns + c] - 0.3))
                .sum();
            assert!(
                pairs
                    .iter()
                    .all(|&(r, c)| similarity[r * columns + c] >= 0.3)
            );
            let mut seen_rows: Vec<_> = pairs.iter().map(|p| p.0).collect();
            let mut seen_columns: Vec<_> = pairs.iter().map(|p| p.1).collect();
            seen_rows.dedup();
            seen_columns.sort_unstable();
            seen_columns.dedup();
            assert_eq!(
                (seen_rows.len(), seen_columns.len()),
                (pairs.len(), pairs.len())
            );
            let best = brute_force(&similarity, rows, columns, 0.3);
            assert!(
                (total - best).abs() < 1e-4,
                "{similarity:?}: {total} < {best}"
            );
        }
    }
}
