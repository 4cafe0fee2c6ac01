//! Keypoint sets and segmentation classes, from the reference JSON files shipped in `assets/`.

use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct KeypointSet {
    pub name: String,
    pub names: Vec<String>,
    pub flip_indices: Vec<usize>,
    #[serde(rename = "keypoint_colors_rgb")]
    pub keypoint_colors: Vec<[u8; 3]>,
    pub skeleton: Vec<[usize; 2]>,
    #[serde(rename = "skeleton_colors_rgb")]
    pub link_colors: Vec<[u8; 3]>,
}

#[derive(Debug, Deserialize)]
pub struct ClassSet {
    pub name: String,
    pub classes: Vec<String>,
    #[serde(rename = "palette_rgb")]
    pub palette: Vec<[u8; 3]>,
    pub flip_pairs: Vec<[usize; 2]>,
}

fn parse<T: for<'de> Deserialize<'de>>(json: &str) -> T {
    serde_json::from_str(json).expect("the shipped assets are valid JSON of the expected layout")
}

/// The keypoint set a pose model with `channels` heatmaps predicts, if any.
pub fn keypoint_set(channels: usize) -> Option<&'static KeypointSet> {
    static COCO17: OnceLock<KeypointSet> = OnceLock::new();
    static WHOLEBODY133: OnceLock<KeypointSet> = OnceLock::new();
    static GOLIATH308: OnceLock<KeypointSet> = OnceLock::new();
    match channels {
        17 => {
            Some(COCO17.get_or_init(|| parse(include_str!("../../assets/keypoints_coco17.json"))))
        }
        133 => Some(WHOLEBODY133.get_or_init(|| {
            parse(include_str!(
                "../../assets/keypoints_coco_wholebody133.json"
            ))
        })),
        308 => Some(
            GOLIATH308
                .get_or_init(|| parse(include_str!("../../assets/keypoints_goliath308.json"))),
        ),
        _ => None,
    }
}

/// The 28 Goliath body-part classes of the Sapiens segmentation models.
pub fn body_parts() -> &'static ClassSet {
    static PARTS: OnceLock<ClassSet> = OnceLock::new();
    PARTS.get_or_init(|| parse(include_str!("../../assets/seg_goliath_parts28.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_consistent() {
        for channels in [17, 133, 308] {
            let set = keypoint_set(channels).unwrap();
            assert_eq!(set.names.len(), channels);
            assert_eq!(set.flip_indices.len(), channels);
            assert_eq!(set.keypoint_colors.len(), channels);
            assert_eq!(set.skeleton.len(), set.link_colors.len());
            assert!(set.skeleton.iter().flatten().all(|&k| k < channels));
        }
        assert!(keypoint_set(18).is_none());
        let parts = body_parts();
        assert_eq!(parts.classes.len(), 28);
        assert_eq!(parts.palette.len(), 28);
    }
}
