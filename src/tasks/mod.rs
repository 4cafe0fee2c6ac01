//! The Sapiens tasks: what each model must look like, and how its output becomes a result.

pub mod dense;
pub mod detect;
pub mod flip;
pub mod keypoint_sets;
pub mod pose;
pub mod seg;
pub mod track;

use crate::engine::{DeclaredShape, ModelInfo};
use crate::error::{Error, Result};

/// Model input: RGB, NCHW, 1024 high x 768 wide (docs/SAPIENS.md).
pub const INPUT_WIDTH: usize = 768;
pub const INPUT_HEIGHT: usize = 1024;
pub const INPUT_LEN: usize = 3 * INPUT_WIDTH * INPUT_HEIGHT;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    Pose,
    Seg,
    Depth,
    Normal,
}

/// The per-item output a task's model must produce: channels (any of), height, width.
struct OutputContract {
    channels: &'static [usize],
    height: usize,
    width: usize,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Pose => "pose",
            Task::Seg => "seg",
            Task::Depth => "depth",
            Task::Normal => "normal",
        }
    }

    fn output_contract(self) -> OutputContract {
        match self {
            Task::Pose => OutputContract {
                channels: &[17, 133, 308],
                height: 256,
                width: 192,
            },
            Task::Seg => OutputContract {
                channels: &[28],
                height: 512,
                width: 384,
            },
            Task::Depth => OutputContract {
                channels: &[1],
                height: 1024,
                width: 768,
            },
            Task::Normal => OutputContract {
                channels: &[3],
                height: 512,
                width: 384,
            },
        }
    }
}

/// A model's output layout once checked against its task: channels x height x width per item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLayout {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl OutputLayout {
    pub fn item_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Checks a loaded model against what its task needs; the error names both shapes.
pub fn validate_model(task: Task, info: &ModelInfo) -> Result<OutputLayout> {
    let fail = Error::model(&info.path);
    let expected_input = format!("(N, 3, {INPUT_HEIGHT}, {INPUT_WIDTH})");
    let input_ok = info.input_shape.len() == 4
        && info.input_shape[1..] == [Some(3), Some(INPUT_HEIGHT), Some(INPUT_WIDTH)];
    if !input_ok {
        return Err(fail(format!(
            "does not fit the {} task: input '{}' expected {expected_input}, found {}",
            task.name(),
            info.input_name,
            format_shape(&info.input_shape)
        )));
    }
    let contract = task.output_contract();
    let dims = &info.output_shape;
    let output_ok = dims.len() == 4
        && dims[1].is_some_and(|c| contract.channels.contains(&c))
        && dims[2] == Some(contract.height)
        && dims[3] == Some(contract.width);
    if !output_ok {
        let channels = contract
            .channels
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("|");
        return Err(fail(format!(
            "does not fit the {} task: output '{}' expected (N, {channels}, {}, {}), found {}",
            task.name(),
            info.output_name,
            contract.height,
            contract.width,
            format_shape(dims)
        )));
    }
    Ok(OutputLayout {
        channels: dims[1].unwrap_or_default(),
        height: contract.height,
        width: contract.width,
    })
}

fn format_shape(shape: &DeclaredShape) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "N".to_owned(), |d| d.to_string()))
        .collect();
    format!("({})", dims.join(", "))
}
