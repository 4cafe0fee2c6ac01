//! Depth, normals, class maps and masks end to end through the binary: files of the frame's size
//! in the documented encodings, consistent with the published JSON.

mod common;

use common::cli::{
    assert_clean_failure, assert_success, model, probe, read_results, sapiens, write_png,
};

#[test]
fn dense_outputs_have_frame_size_and_documented_encodings() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("frame.png"), 320, 240, 4);
    let run = sapiens(
        dir.path(),
        &[
            "run",
            "--input",
            "frame.png",
            "--seg-model",
            model("seg").to_str().unwrap(),
            "--depth-model",
            model("depth").to_str().unwrap(),
            "--normal-model",
            model("normal").to_str().unwrap(),
            "--pose-model",
            model("pose17").to_str().unwrap(),
            "--flip-test",
            "--dense-dir",
            "dense",
            "--mask-classes",
            "Torso,upper_clothing,Background",
            "--results",
            "r.jsonl",
            "--output",
            "out.mp4",
        ],
    );
    assert_success(&run);
    assert_eq!(probe(&dir.path().join("out.mp4"))["frames"], 1);
    let line = &read_results(&dir.path().join("r.jsonl"))[0];
    let file = |v: &serde_json::Value| dir.path().join(v.as_str().expect("a file name"));

    let seg = &line["segmentation"];
    let class_map = image::open(file(&seg["class_map_file"])).unwrap();
    assert_eq!((class_map.width(), class_map.height()), (320, 240));
    let class_map = class_map.into_luma8();
    let mut counts = vec![0u64; 28];
    for &class in class_map.as_raw() {
        counts[class as usize] += 1;
    }
    let published: Vec<u64> = seg["class_pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(counts, published, "class map file and JSON agree");

    let mask = image::open(file(&seg["mask_file"])).unwrap().into_luma8();
    assert_eq!(mask.dimensions(), (320, 240));
    // Background (0), Torso (21) and Upper_Clothing (22).
    for (&m, &class) in mask.as_raw().iter().zip(class_map.as_raw()) {
        assert_eq!(m, if [0, 21, 22].contains(&class) { 255 } else { 0 });
    }

    let depth = &line["depth"];
    assert_eq!(depth["foreground_only"], true);
    let (scale, offset) = (
        depth["scale"].as_f64().unwrap(),
        depth["offset"].as_f64().unwrap(),
    );
    let depth_png = image::open(file(&depth["file"])).unwrap();
    assert!(
        matches!(depth_png, image::DynamicImage::ImageLuma16(_)),
        "depth is 16-bit grey"
    );
    let depth_png = depth_png.into_luma16();
    assert_eq!(depth_png.dimensions(), (320, 240));
    let foreground: Vec<f64> = depth_png
        .as_raw()
        .iter()
        .zip(class_map.as_raw())
        .filter(|&(_, &class)| class > 0)
        .map(|(&v, _)| offset + f64::from(v) * scale)
        .collect();
    if !foreground.is_empty() {
        let min = foreground.iter().copied().fold(f64::INFINITY, f64::min);
        let max = foreground.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tolerance = scale.abs() + 1e-6;
        assert!(
            (min - depth["min"].as_f64().unwrap()).abs() <= tolerance,
            "{min} vs {}",
            depth["min"]
        );
        assert!(
            (max - depth["max"].as_f64().unwrap()).abs() <= tolerance,
            "{max} vs {}",
            depth["max"]
        );
    }

    let normals = image::open(file(&line["normals"]["file"]))
        .unwrap()
        .into_rgb8();
    assert_eq!(normals.dimensions(), (320, 240));
    for pixel in normals.pixels() {
        let n: Vec<f64> = pixel
            .0
            .iter()
            .map(|&v| f64::from(v) / 255.0 * 2.0 - 1.0)
            .collect();
        let length = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
        assert!(
            (length - 1.0).abs() < 0.02,
            "normal {n:?} has length {length}"
        );
    }
    assert_eq!(
        line["persons"][0]["keypoints"].as_array().unwrap().len(),
        17
    );
}

#[test]
fn mask_classes_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("frame.png"), 64, 48, 0);
    let seg = model("seg");
    // (flags after the segmentation run's, what its one error line names)
    let cases: [(&[&str], &[&str]); 2] = [
        (
            &["--dense-dir", "d", "--mask-classes", "Torso,Hat"],
            &["Hat"],
        ),
        (
            &["--mask-classes", "Torso"],
            &["--mask-classes", "--dense-dir"],
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec![
            "run",
            "--input",
            "frame.png",
            "--seg-model",
            seg.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        assert_clean_failure(&sapiens(dir.path(), &args), expected);
    }
}
