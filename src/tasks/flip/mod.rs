//! Pose flip test (docs/SAPIENS.md, "Pose decode"): besides each crop, run its horizontal mirror,
//! then flip the mirror's heatmaps back, swap left and right channels and average with the plain
//! heatmaps. This is what the published COCO accuracy uses; it doubles the pose model's work.

pub mod cuda;

use rayon::prelude::*;

/// Rows per rayon task, so that small rows do not become one task each.
const ROWS_PER_TASK: usize = 64;

/// Mirrors each item of a planar NCHW batch along W into `out` (same layout), as the official
/// flip test's `torch.flip(inputs, [-1])`.
///
/// # Panics
/// If `input` or `out` does not hold `items` x `channels` x `height` x `width` values.
pub fn mirror_batch(
    input: &[f32],
    items: usize,
    channels: usize,
    height: usize,
    width: usize,
    out: &mut [f32],
) {
    let len = items * channels * height * width;
    assert_eq!(
        input.len(),
        len,
        "input does not hold {items} x {channels} x {height} x {width} values"
    );
    assert_eq!(
        out.len(),
        len,
        "output does not hold {items} x {channels} x {height} x {width} values"
    );
    if len == 0 {
        return;
    }
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(input.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(dst, src)| {
            for (dst_row, src_row) in dst.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
                for (d, &s) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                    *d = s;
                }
            }
        });
}

/// Flip-test merge, UDP variant (mmpose `flip_heatmaps` with `flip_mode='heatmap'`,
/// `shift_heatmap=False`, then `(plain + flipped) * 0.5`): output channel k of each item is the
/// average of plain channel k and mirrored channel `flip_indices[k]` flipped back along W.
/// `plain` is replaced by the merged heatmaps; both hold `items` x K x `height` x `width` values
/// with K = `flip_indices.len()`.
///
/// # Panics
/// If the slices do not match the sizes or a flip index is not below K.
pub fn merge_flipped_heatmaps(
    plain: &mut [f32],
    mirrored: &[f32],
    items: usize,
    flip_indices: &[usize],
    height: usize,
    width: usize,
) {
    let channels = flip_indices.len();
    let plane = height * width;
    let len = items * channels * plane;
    assert_eq!(
        plain.len(),
        len,
        "heatmaps do not hold {items} x {channels} x {height} x {width} values"
    );
    assert_eq!(
        mirrored.len(),
        len,
        "mirrored heatmaps do not hold {items} x {channels} x {height} x {width} values"
    );
    assert!(
        flip_indices.iter().all(|&k| k < channels),
        "flip indices must be below {channels}"
    );
    if len == 0 {
        return;
    }
    plain
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(map, dst)| {
            let (item, channel) = (map / channels, map % channels);
            let src = &mirrored[(item * channels + flip_indices[channel]) * plane..][..plane];
            for (dst_row, src_row) in dst.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
                for (d, &s) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                    *d = (*d + s) * 0.5;
                }
            }
        });
}
