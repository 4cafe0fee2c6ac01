//! The host side of the inference stage: model inputs in host buffers through the engines, in
//! batches, with the flip test's mirrored crops; `--dump`'s tensors.

use crate::error::{Error, Result};
use crate::pipeline::links::Pool;
use crate::pipeline::models::TaskModel;
use crate::sink::Dumper;
use crate::tasks::keypoint_sets;
use crate::tasks::{INPUT_HEIGHT, INPUT_LEN, INPUT_WIDTH, OutputLayout, Task, flip};

/// Pose for every person; with the flip test, also on the mirrored crops, merged back (docs/SAPIENS.md).
pub(super) fn run_pose(
    model: &mut TaskModel,
    input: &[f32],
    persons: usize,
    flip_test: bool,
    input_pool: &Pool,
    output_pool: &Pool,
    heatmaps: &mut Vec<f32>,
) -> Result<()> {
    run_batched(model, input, persons, heatmaps)?;
    if !flip_test || persons == 0 {
        return Ok(());
    }
    let flip_indices = &keypoint_sets::keypoint_set(model.layout.channels)
        .expect("validated pose models have a known keypoint set")
        .flip_indices;
    let mut mirrored_input = input_pool.get(persons * INPUT_LEN);
    flip::mirror_batch(
        input,
        persons,
        3,
        INPUT_HEIGHT,
        INPUT_WIDTH,
        &mut mirrored_input,
    );
    let mut mirrored = output_pool.get(0);
    run_batched(model, &mirrored_input, persons, &mut mirrored)?;
    let layout = model.layout;
    flip::merge_flipped_heatmaps(
        heatmaps,
        &mirrored,
        persons,
        flip_indices,
        layout.height,
        layout.width,
    );
    input_pool.put(mirrored_input);
    output_pool.put(mirrored);
    Ok(())
}

/// Runs `items` inputs through the model at most `max_batch` at a time, appending the outputs.
pub(super) fn run_batched(
    model: &mut TaskModel,
    input: &[f32],
    items: usize,
    output: &mut Vec<f32>,
) -> Result<()> {
    output.clear();
    for (chunk_index, chunk) in input[..items * INPUT_LEN]
        .chunks(model.max_batch * INPUT_LEN)
        .enumerate()
    {
        let batch = chunk.len() / INPUT_LEN;
        model.metrics.batch_size(model.task.name(), batch);
        let before = output.len();
        model.engine.run(chunk, batch, output)?;
        let expected = batch * model.layout.item_len();
        if output.len() - before != expected {
            return Err(Error::Inference {
                model: model.engine.info().id.clone(),
                message: format!(
                    "batch {chunk_index}: output has {} values, expected {expected}",
                    output.len() - before
                ),
            });
        }
    }
    Ok(())
}

pub(super) fn dump_tensors(
    dumper: &Dumper,
    index: u64,
    task: Task,
    layout: OutputLayout,
    input: &[f32],
    output: &[f32],
) -> Result<()> {
    let items = output.len() / layout.item_len();
    dumper.tensor(
        index,
        task,
        "input",
        &[items, 3, INPUT_HEIGHT, INPUT_WIDTH],
        &input[..items * INPUT_LEN],
    )?;
    dumper.tensor(
        index,
        task,
        "output",
        &[items, layout.channels, layout.height, layout.width],
        output,
    )
}
