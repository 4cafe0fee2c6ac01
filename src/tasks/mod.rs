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

/// The model generation: Sapiens2 changes the seg classes, the dense output sizes, the
/// normal and pointmap input geometry, and replaces relative depth with a metric point map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Family {
    #[default]
    Sapiens,
    Sapiens2,
}

/// Metadata key the exporter and the model generator write a Sapiens2 model's family under.
pub const METADATA_FAMILY: &str = "sapiens_stream.family";

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Sapiens => "sapiens",
            Family::Sapiens2 => "sapiens2",
        }
    }

    /// The family a model's metadata declares, if any.
    fn declared(info: &ModelInfo) -> Option<Family> {
        match info.metadata.get(METADATA_FAMILY)?.as_str() {
            "sapiens2" => Some(Family::Sapiens2),
            "sapiens" => Some(Family::Sapiens),
            _ => None,
        }
    }
}

/// One per-item output a task's model may produce: channels (any of), height, width.
struct OutputContract {
    family: Family,
    channels: &'static [usize],
    height: usize,
    width: usize,
}

impl OutputContract {
    fn fits(&self, dims: &DeclaredShape) -> bool {
        dims.len() == 4
            && dims[1].is_some_and(|c| self.channels.contains(&c))
            && dims[2] == Some(self.height)
            && dims[3] == Some(self.width)
    }

    fn describe(&self) -> String {
        let channels: Vec<String> = self.channels.iter().map(|c| c.to_string()).collect();
        format!(
            "(N, {}, {}, {})",
            channels.join("|"),
            self.height,
            self.width
        )
    }
}

/// Sapiens2 pointmap models put the scale behind the point map as a fourth plane.
pub const POINTMAP_CHANNELS: usize = 4;

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Pose => "pose",
            Task::Seg => "seg",
            Task::Depth => "depth",
            Task::Normal => "normal",
        }
    }

    /// What each family's model for the task outputs; Sapiens2 pose has the first family's
    /// shape (its family comes from the metadata).
    fn output_contracts(self) -> &'static [OutputContract] {
        match self {
            Task::Pose => &POSE_OUTPUTS,
            Task::Seg => &SEG_OUTPUTS,
            Task::Depth => &DEPTH_OUTPUTS,
            Task::Normal => &NORMAL_OUTPUTS,
        }
    }
}

const fn contract(
    family: Family,
    channels: &'static [usize],
    height: usize,
    width: usize,
) -> OutputContract {
    OutputContract {
        family,
        channels,
        height,
        width,
    }
}

const POSE_OUTPUTS: [OutputContract; 1] = [contract(Family::Sapiens, &[17, 133, 308], 256, 192)];
const SEG_OUTPUTS: [OutputContract; 2] = [
    contract(Family::Sapiens, &[28], 512, 384),
    contract(Family::Sapiens2, &[29], INPUT_HEIGHT, INPUT_WIDTH),
];
const DEPTH_OUTPUTS: [OutputContract; 2] = [
    contract(Family::Sapiens, &[1], INPUT_HEIGHT, INPUT_WIDTH),
    contract(
        Family::Sapiens2,
        &[POINTMAP_CHANNELS],
        INPUT_HEIGHT,
        INPUT_WIDTH,
    ),
];
const NORMAL_OUTPUTS: [OutputContract; 2] = [
    contract(Family::Sapiens, &[3], 512, 384),
    contract(Family::Sapiens2, &[3], INPUT_HEIGHT, INPUT_WIDTH),
];

/// A model's output layout once checked against its task: channels x height x width per item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLayout {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub family: Family,
}

impl OutputLayout {
    pub fn item_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// A Sapiens2 pointmap: x, y, z planes and the scale plane (metric = map / scale).
    pub fn is_pointmap(&self) -> bool {
        self.family == Family::Sapiens2 && self.channels == POINTMAP_CHANNELS
    }

    /// The model takes the frame resized keeping its aspect and centred with zero padding
    /// (Sapiens2 normal and pointmap), not stretched.
    pub fn takes_padded_input(&self) -> bool {
        self.family == Family::Sapiens2 && matches!(self.channels, 3 | POINTMAP_CHANNELS)
    }
}

/// Checks a loaded model against what its task needs; the error names both shapes. The family
/// comes from the output shape where the families differ, else from the metadata; metadata
/// that contradicts the shape is an error.
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
    let dims = &info.output_shape;
    let contracts = task.output_contracts();
    let Some(contract) = contracts.iter().find(|c| c.fits(dims)) else {
        let expected: Vec<String> = contracts
            .iter()
            .map(|c| format!("{} ({})", c.describe(), c.family.name()))
            .collect();
        return Err(fail(format!(
            "does not fit the {} task: output '{}' expected {}, found {}",
            task.name(),
            info.output_name,
            expected.join(" or "),
            format_shape(dims)
        )));
    };
    let channels = dims[1].unwrap_or_default();
    let declared = Family::declared(info);
    let family = match (contracts.len(), declared) {
        // Pose: both families output the same shape; Sapiens2 predicts the 308 set only.
        (1, Some(Family::Sapiens2)) if channels != 308 => {
            return Err(fail(format!(
                "says it is a Sapiens2 model, but Sapiens2 pose predicts 308 keypoints, not {channels}"
            )));
        }
        (1, declared) => declared.unwrap_or(contract.family),
        (_, Some(declared)) if declared != contract.family => {
            return Err(fail(format!(
                "says it is a {} model, but its output {} is a {} {} model's",
                declared.name(),
                format_shape(dims),
                contract.family.name(),
                task.name()
            )));
        }
        _ => contract.family,
    };
    Ok(OutputLayout {
        channels,
        height: contract.height,
        width: contract.width,
        family,
    })
}

fn format_shape(shape: &DeclaredShape) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "N".to_owned(), |d| d.to_string()))
        .collect();
    format!("({})", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(output: [usize; 3], family: Option<&str>) -> ModelInfo {
        ModelInfo {
            path: "model.onnx".into(),
            id: String::new(),
            input_name: "input".into(),
            input_shape: vec![None, Some(3), Some(INPUT_HEIGHT), Some(INPUT_WIDTH)],
            output_name: "output".into(),
            output_shape: vec![None, Some(output[0]), Some(output[1]), Some(output[2])],
            metadata: family
                .map(|f| (METADATA_FAMILY.to_owned(), f.to_owned()))
                .into_iter()
                .collect(),
            provider: String::new(),
        }
    }

    #[test]
    fn the_family_comes_from_the_shape_where_they_differ() {
        let family = |task, output, declared| {
            validate_model(task, &info(output, declared)).map(|l| l.family)
        };
        assert_eq!(
            family(Task::Seg, [28, 512, 384], None).unwrap(),
            Family::Sapiens
        );
        assert_eq!(
            family(Task::Seg, [29, 1024, 768], None).unwrap(),
            Family::Sapiens2
        );
        assert_eq!(
            family(Task::Normal, [3, 1024, 768], None).unwrap(),
            Family::Sapiens2
        );
        assert_eq!(
            family(Task::Depth, [1, 1024, 768], None).unwrap(),
            Family::Sapiens
        );
        let pointmap = validate_model(Task::Depth, &info([4, 1024, 768], None)).unwrap();
        assert!(pointmap.is_pointmap() && pointmap.takes_padded_input());
        // Pose: the same shape in both families, so the metadata says.
        assert_eq!(
            family(Task::Pose, [308, 256, 192], None).unwrap(),
            Family::Sapiens
        );
        assert_eq!(
            family(Task::Pose, [308, 256, 192], Some("sapiens2")).unwrap(),
            Family::Sapiens2
        );
    }

    #[test]
    fn metadata_that_contradicts_the_shape_is_refused() {
        let error = |task, output, declared| {
            validate_model(task, &info(output, Some(declared)))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(Task::Seg, [28, 512, 384], "sapiens2"),
            "model model.onnx: says it is a sapiens2 model, but its output (N, 28, 512, 384) is a sapiens seg model's"
        );
        assert!(
            error(Task::Pose, [17, 256, 192], "sapiens2")
                .contains("Sapiens2 pose predicts 308 keypoints, not 17")
        );
        let wrong = error(Task::Seg, [29, 512, 384], "sapiens2");
        assert!(
            wrong.contains("expected (N, 28, 512, 384) (sapiens) or (N, 29, 1024, 768) (sapiens2)"),
            "{wrong}"
        );
    }
}
