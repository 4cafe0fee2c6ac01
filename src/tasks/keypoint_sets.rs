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

/// The body-part classes a segmentation model with `classes` outputs predicts: the first
/// family's 28, or Sapiens2's 29 (`Eyeglass` at index 2, the later classes one further on).
pub fn class_set(classes: usize) -> Option<&'static ClassSet> {
    static PARTS28: OnceLock<ClassSet> = OnceLock::new();
    static PARTS29: OnceLock<ClassSet> = OnceLock::new();
    match classes {
        28 => Some(PARTS28.get_or_init(|| parse(CLASS_SETS[0].1))),
        29 => Some(PARTS29.get_or_init(|| parse(CLASS_SETS[1].1))),
        _ => None,
    }
}

/// The class sets' JSON files by name, as the browser view asks for them.
pub const CLASS_SETS: [(&str, &str); 2] = [
    (
        "goliath_parts28",
        include_str!("../../assets/seg_goliath_parts28.json"),
    ),
    (
        "goliath_parts29",
        include_str!("../../assets/seg_goliath_parts29.json"),
    ),
];

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
        for (classes, (name, _)) in [28, 29].into_iter().zip(CLASS_SETS) {
            let parts = class_set(classes).unwrap();
            assert_eq!(parts.name, name);
            assert_eq!(parts.classes.len(), classes);
            assert_eq!(parts.palette.len(), classes);
            assert!(parts.flip_pairs.iter().flatten().all(|&c| c < classes));
        }
        assert!(class_set(27).is_none());
    }

    /// The Sapiens2 set as the repository lists it (`DOME_CLASSES_29` in
    /// sapiens/dense/src/datasets/seg/seg_utils.py, the same order as docs/SEG.md), transcribed.
    const SAPIENS2_CLASSES: [(&str, [u8; 3]); 29] = [
        ("Background", [50, 50, 50]),
        ("Apparel", [255, 218, 0]),
        ("Eyeglass", [14, 204, 182]),
        ("Face_Neck", [128, 200, 255]),
        ("Hair", [255, 0, 109]),
        ("Left_Foot", [189, 0, 204]),
        ("Left_Hand", [255, 0, 218]),
        ("Left_Lower_Arm", [0, 160, 204]),
        ("Left_Lower_Leg", [0, 255, 145]),
        ("Left_Shoe", [204, 0, 131]),
        ("Left_Sock", [182, 0, 255]),
        ("Left_Upper_Arm", [255, 109, 0]),
        ("Left_Upper_Leg", [0, 255, 255]),
        ("Lower_Clothing", [72, 0, 255]),
        ("Right_Foot", [204, 131, 0]),
        ("Right_Hand", [255, 0, 0]),
        ("Right_Lower_Arm", [72, 255, 0]),
        ("Right_Lower_Leg", [189, 204, 0]),
        ("Right_Shoe", [182, 255, 0]),
        ("Right_Sock", [102, 0, 204]),
        ("Right_Upper_Arm", [32, 72, 204]),
        ("Right_Upper_Leg", [0, 145, 255]),
        ("Torso", [14, 204, 0]),
        ("Upper_Clothing", [0, 128, 72]),
        ("Lower_Lip", [235, 205, 119]),
        ("Upper_Lip", [115, 227, 112]),
        ("Lower_Teeth", [157, 113, 143]),
        ("Upper_Teeth", [132, 93, 50]),
        ("Tongue", [82, 21, 114]),
    ];

    #[test]
    fn sapiens2_classes_match_the_repository_list() {
        let parts = class_set(29).unwrap();
        for (i, (name, colour)) in SAPIENS2_CLASSES.iter().enumerate() {
            assert_eq!(
                (parts.classes[i].as_str(), parts.palette[i]),
                (*name, *colour),
                "class {i}"
            );
        }
        // The seg configs' left/right pairs (for flip training).
        let pairs: Vec<[usize; 2]> = (5..=12).map(|left| [left, left + 9]).collect();
        assert_eq!(parts.flip_pairs, pairs);
    }

    /// Sapiens2's set is the first family's with `Eyeglass` put in at index 2.
    #[test]
    fn sapiens2_classes_are_the_first_family_s_with_eyeglass() {
        let (first, second) = (class_set(28).unwrap(), class_set(29).unwrap());
        let mut names = first.classes.clone();
        names.insert(2, "Eyeglass".into());
        assert_eq!(second.classes, names);
        let mut palette = first.palette.clone();
        palette.insert(2, second.palette[2]);
        assert_eq!(second.palette, palette);
        let shifted: Vec<[usize; 2]> = first
            .flip_pairs
            .iter()
            .map(|pair| pair.map(|c| if c >= 2 { c + 1 } else { c }))
            .collect();
        assert_eq!(second.flip_pairs, shifted);
    }
}
