//! The kernels' CUDA C run on the CPU and compared with the CPU stages, so their logic is tested
//! on machines without a GPU (tests/gpu.rs does the same on a device).
//!
//! The sources in [`SOURCES`] (the very strings NVRTC compiles) are built with the system C++
//! compiler under `host_emulation.h`, which emulates CUDA's execution model (thread and block
//! indices, `__syncthreads` on real threads, dynamic shared memory). A harness generated from
//! the kernels' signatures exports one `extern "C"` launcher per kernel; the tests here call
//! them with the argument structs and launch shapes the device wrappers build, so a layout
//! mismatch between a Rust struct and its C twin shows too. No compiler (`CXX`, else `c++`):
//! the tests print why and pass.

use std::ffi::{CStr, c_char};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::OnceLock;

use cudarc::driver::LaunchConfig;
use libloading::{Library, Symbol};

use super::SOURCES;
use crate::frame::{FrameGeometry, HostFrame, SourceLayout, YuvToRgb, yuv420_to_rgb};
use crate::frame::{ImageView, PixelFormat};
use crate::preprocess::cuda::{
    Arithmetic, BilinearArgs, DeviceNormalisation, DeviceTap, FrameLayout, InputElement,
    LetterboxArgs, Placement, RgbaArgs, crop_taps, device_taps,
};
use crate::preprocess::{Normalization, PoseCrop, StretchPlan, warp_crop};
use crate::render::cuda::BlendArgs;
use crate::tasks::dense::cuda as dense;
use crate::tasks::detect::{DetectorLayout, LetterboxInput, LetterboxPlan};
use crate::tasks::pose::cuda::{BlurTaps, DecodeArgs, DevicePeak};
use crate::tasks::pose::decode::{HeatmapPeak, decode_dark_udp};
use crate::tasks::seg::cuda::{
    DeviceLinearTap, SegShape, device_linear_taps, device_nearest_sources,
};
use crate::testkit::kernel_inputs::{
    Noise, edge_case_heatmaps, random_logits, test_bytes, tied_logits_with_nans,
};

const SHIM: &str = include_str!("host_emulation.h");

/// A kernel as its source declares it.
struct KernelSource<'a> {
    name: &'a str,
    /// The parameter list, verbatim.
    params: &'a str,
    /// Calls `__syncthreads`: its block's threads must run at once.
    threaded: bool,
    /// Uses the source's dynamic shared memory.
    shared: bool,
}

/// The `text[open..]` up to the bracket that closes the one at `open`.
fn enclosed(text: &str, open: usize, (left, right): (char, char)) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        if c == left {
            depth += 1;
        } else if c == right {
            depth -= 1;
            if depth == 0 {
                return &text[open + 1..open + i];
            }
        }
    }
    panic!("unbalanced {left}{right} in a kernel source")
}

/// Every `__global__` kernel of a source.
fn kernels(source: &str) -> Vec<KernelSource<'_>> {
    const MARK: &str = "__global__ void ";
    source
        .match_indices(MARK)
        .map(|(at, _)| {
            let start = at + MARK.len();
            let paren = start
                + source[start..]
                    .find('(')
                    .expect("kernel without parameters");
            let params = enclosed(source, paren, ('(', ')'));
            let brace = paren + source[paren..].find('{').expect("kernel without a body");
            let body = enclosed(source, brace, ('{', '}'));
            KernelSource {
                name: source[start..paren].trim(),
                params,
                threaded: body.contains("__syncthreads"),
                shared: body.contains("__shared__"),
            }
        })
        .collect()
}

/// The `(type, name)` of the source's `extern __shared__` array, if any.
fn shared_array(source: &str) -> Option<(&str, &str)> {
    const MARK: &str = "extern __shared__ ";
    let start = source.find(MARK)? + MARK.len();
    let declaration = source[start..]
        .split(';')
        .next()?
        .trim()
        .strip_suffix("[]")?;
    let (ty, name) = declaration.rsplit_once(char::is_whitespace)?;
    Some((ty.trim(), name))
}

/// The names of the structs a source defines.
fn struct_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("struct "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

/// The C++ translation unit for one kernel source: the source itself, then a launcher per
/// kernel (`sapiens_launch_<kernel>`) and a layout probe per struct
/// (`sapiens_layout_<module>_<struct>`: two sources may each define a struct of one name).
fn harness(module: &str, source: &str) -> String {
    let mut cpp = String::from("#include \"host_emulation.h\"\n");
    let shared = shared_array(source);
    if let Some((ty, name)) = shared {
        // `static`: the kernel's block-scope `extern` declaration then names this buffer.
        writeln!(
            cpp,
            "alignas(16) static {ty} {name}[SAPIENS_SHARED_CAPACITY / sizeof({ty})];"
        )
        .unwrap();
    }
    writeln!(cpp, "#include \"{module}.cu\"").unwrap();
    for kernel in kernels(source) {
        let args: Vec<&str> = kernel
            .params
            .split(',')
            .map(|p| {
                let p = p.trim_end();
                let name_at = p.trim_end_matches(|c: char| c.is_alphanumeric() || c == '_');
                &p[name_at.len()..]
            })
            .collect();
        let buffer = match shared {
            Some((_, name)) if kernel.shared => {
                format!("reinterpret_cast<unsigned char*>({name}), sizeof({name})")
            }
            _ => "nullptr, 0".to_string(),
        };
        writeln!(
            cpp,
            "extern \"C\" const char* sapiens_launch_{name}(const SapiensLaunch* launch, {params}) {{\n    \
             return sapiens_host::launch(launch, {threaded}, {buffer}, [&] {{ {name}({args}); }});\n}}",
            name = kernel.name,
            params = kernel.params,
            threaded = kernel.threaded,
            args = args.join(", "),
        )
        .unwrap();
    }
    for name in struct_names(source) {
        writeln!(
            cpp,
            "extern \"C\" void sapiens_layout_{module}_{name}(size_t* size, size_t* align) {{ *size = sizeof({name}); *align = alignof({name}); }}"
        )
        .unwrap();
    }
    cpp
}

/// The kernels built for the host.
struct Emulator {
    library: Library,
}

/// Builds the kernels once per test run: `Ok(None)` without a compiler, `Err` when the build
/// fails (a source the host compiler rejects is a failure, not a skip).
fn build() -> Result<Option<Emulator>, String> {
    let compiler = compiler();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    write("host_emulation.h", SHIM)?;
    let mut units = Vec::new();
    for (module, source) in SOURCES {
        write(&format!("{module}.cu"), source)?;
        let unit = format!("{module}.cpp");
        write(&unit, &harness(module, source))?;
        units.push(dir.path().join(unit));
    }
    let library = dir.path().join("libkernels.so");
    // -ffp-contract=off: NVRTC runs with --fmad=false, so no multiply-add may fuse here either.
    let output = Command::new(&compiler)
        .args(["-std=c++20", "-pthread", "-O1", "-ffp-contract=off"])
        .args(["-fPIC", "-shared", "-DSAPIENS_HOST_EMULATION", "-o"])
        .arg(&library)
        .args(&units)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("running {compiler}: {e}")),
    };
    if !output.status.success() {
        return Err(format!(
            "{compiler} failed on the kernel sources:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // SAFETY: our own library; its initialisers only set up the C++ runtime.
    let library = unsafe { Library::new(&library) }.map_err(|e| e.to_string())?;
    // The folder goes when `dir` drops; the loaded library stays mapped.
    Ok(Some(Emulator { library }))
}

/// `CXX`, else `c++`.
fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".to_string())
}

/// The emulator, or `None` after printing why `test` skips.
fn emulator(test: &str) -> Option<&'static Emulator> {
    static EMULATOR: OnceLock<Result<Option<Emulator>, String>> = OnceLock::new();
    match EMULATOR.get_or_init(build) {
        Ok(Some(emulator)) => Some(emulator),
        Ok(None) => {
            eprintln!("SKIPPED {test}: no C++ compiler ({} not found)", compiler());
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// `SapiensLaunch` in host_emulation.h.
#[repr(C)]
struct HostLaunch {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
}

impl From<LaunchConfig> for HostLaunch {
    fn from(config: LaunchConfig) -> Self {
        let (gx, gy, gz) = config.grid_dim;
        let (bx, by, bz) = config.block_dim;
        HostLaunch {
            grid: [gx, gy, gz],
            block: [bx, by, bz],
            shared_bytes: config.shared_mem_bytes,
        }
    }
}

/// What a launcher returns: null, or why the launch failed.
type Status = *const c_char;

impl Emulator {
    /// The launcher of `kernel`, typed `F` by the caller after the kernel's signature.
    fn launcher<F>(&self, kernel: &str) -> Symbol<'_, F> {
        // SAFETY: every launcher is a `const char* (const SapiensLaunch*, <kernel params>)`; the
        // callers' types spell those parameters with the device wrappers' argument types.
        unsafe {
            self.library
                .get(format!("sapiens_launch_{kernel}").as_bytes())
        }
        .unwrap_or_else(|e| panic!("no launcher for {kernel}: {e}"))
    }

    /// `sizeof` and `alignof` of a struct of a kernel source.
    fn layout(&self, module: &str, name: &str) -> (usize, usize) {
        type Probe = unsafe extern "C" fn(*mut usize, *mut usize);
        // SAFETY: the probes have this signature (see `harness`).
        let probe: Symbol<Probe> = unsafe {
            self.library
                .get(format!("sapiens_layout_{module}_{name}").as_bytes())
        }
        .unwrap_or_else(|e| panic!("no layout probe for {module}::{name}: {e}"));
        let (mut size, mut align) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { probe(&mut size, &mut align) };
        (size, align)
    }
}

/// Panics with the launcher's reason when the launch failed.
fn check(status: Status, kernel: &str) {
    if !status.is_null() {
        // SAFETY: a failing launcher returns a NUL-terminated message that outlives the call.
        let reason = unsafe { CStr::from_ptr(status) }.to_string_lossy();
        panic!("launching {kernel}: {reason}");
    }
}

// One function per kernel, as the device wrappers launch it: same arguments, same launch shape.

fn preprocess<T: InputElement>(
    emulator: &Emulator,
    frame: &[u8],
    (columns, rows): (&[DeviceTap], &[DeviceTap]),
    args: &BilinearArgs,
    out: &mut [T],
) {
    type Launcher<T> = unsafe extern "C" fn(
        *const HostLaunch,
        *const u8,
        FrameLayout,
        *const DeviceTap,
        *const DeviceTap,
        i32,
        i32,
        i32,
        DeviceNormalisation,
        *mut T,
    ) -> Status;
    let launch = emulator.launcher::<Launcher<T>>(T::KERNEL);
    // SAFETY: `BilinearArgs::new` checked the buffers against the launch, and the taps are the
    // CPU code's, clamped inside the frame.
    let status = unsafe {
        launch(
            &HostLaunch::from(args.config),
            frame.as_ptr(),
            args.layout,
            columns.as_ptr(),
            rows.as_ptr(),
            args.arithmetic,
            args.width,
            args.height,
            args.norm,
            out.as_mut_ptr(),
        )
    };
    check(status, T::KERNEL);
}

fn frame_to_rgba(emulator: &Emulator, frame: &[u8], geometry: &FrameGeometry) -> Vec<u8> {
    type Launcher = unsafe extern "C" fn(
        *const HostLaunch,
        *const u8,
        FrameLayout,
        i32,
        i32,
        *mut u8,
    ) -> Status;
    let mut rgba = vec![0u8; 4 * geometry.width * geometry.height];
    let args = RgbaArgs::new(geometry, frame.len(), rgba.len()).unwrap();
    let launch = emulator.launcher::<Launcher>("frame_to_rgba");
    // SAFETY: `RgbaArgs::new` checked both buffers against the geometry.
    let status = unsafe {
        launch(
            &HostLaunch::from(args.config),
            frame.as_ptr(),
            args.layout,
            args.width,
            args.height,
            rgba.as_mut_ptr(),
        )
    };
    check(status, "frame_to_rgba");
    rgba
}

fn letterbox(
    emulator: &Emulator,
    frame: &[u8],
    geometry: &FrameGeometry,
    plan: &LetterboxPlan,
) -> Vec<f32> {
    type Launcher = unsafe extern "C" fn(
        *const HostLaunch,
        *const u8,
        FrameLayout,
        *const DeviceTap,
        *const DeviceTap,
        Placement,
        i32,
        i32,
        DeviceNormalisation,
        *mut f32,
    ) -> Status;
    let mut out = vec![f32::NAN; 3 * plan.input_w * plan.input_h];
    let (columns, rows) = plan.stretch.taps();
    let (columns, rows) = (device_taps(columns), device_taps(rows));
    let input = (plan.input_w, plan.input_h);
    let placement = Placement::of(plan);
    let args = LetterboxArgs::new(
        geometry,
        frame.len(),
        placement,
        input,
        &plan.norm,
        out.len(),
    )
    .unwrap();
    let launch = emulator.launcher::<Launcher>("letterbox_f32");
    // SAFETY: `LetterboxArgs::new` checked the buffers; the taps are the plan's, clamped inside
    // the frame, one per column and row of the placement.
    let status = unsafe {
        launch(
            &HostLaunch::from(args.config),
            frame.as_ptr(),
            args.layout,
            columns.as_ptr(),
            rows.as_ptr(),
            args.placement,
            args.width,
            args.height,
            args.norm,
            out.as_mut_ptr(),
        )
    };
    check(status, "letterbox_f32");
    out
}

fn upsample_argmax(emulator: &Emulator, logits: &[f32], shape: SegShape, out: &mut [u8]) {
    type Launcher = unsafe extern "C" fn(
        *const HostLaunch,
        *const f32,
        i32,
        i32,
        i32,
        *const DeviceLinearTap,
        *const DeviceLinearTap,
        i32,
        i32,
        *mut u8,
    ) -> Status;
    let [classes, in_h, in_w, out_w, out_h] = shape.check(logits.len(), out.len()).unwrap();
    let columns = device_linear_taps(shape.in_w, shape.out_w);
    let rows = device_linear_taps(shape.in_h, shape.out_h);
    let launch = emulator.launcher::<Launcher>("upsample_argmax");
    // SAFETY: sizes checked; taps clamped to the logit maps.
    let status = unsafe {
        launch(
            &HostLaunch::from(super::grid_2d(shape.out_w, shape.out_h, 1)),
            logits.as_ptr(),
            classes,
            in_h,
            in_w,
            columns.as_ptr(),
            rows.as_ptr(),
            out_w,
            out_h,
            out.as_mut_ptr(),
        )
    };
    check(status, "upsample_argmax");
}

fn argmax_nearest(emulator: &Emulator, logits: &[f32], shape: SegShape, out: &mut [u8]) {
    type Argmax =
        unsafe extern "C" fn(*const HostLaunch, *const f32, i32, i32, i32, *mut u8) -> Status;
    type Nearest = unsafe extern "C" fn(
        *const HostLaunch,
        *const u8,
        i32,
        *const i32,
        *const i32,
        i32,
        i32,
        *mut u8,
    ) -> Status;
    let [classes, in_h, in_w, out_w, out_h] = shape.check(logits.len(), out.len()).unwrap();
    let mut low = vec![0u8; shape.in_h * shape.in_w];
    let src_columns = device_nearest_sources(shape.in_w, shape.out_w);
    let src_rows = device_nearest_sources(shape.in_h, shape.out_h);
    let argmax = emulator.launcher::<Argmax>("argmax_classes");
    // SAFETY: sizes checked.
    let status = unsafe {
        argmax(
            &HostLaunch::from(super::grid_2d(shape.in_w, shape.in_h, 1)),
            logits.as_ptr(),
            classes,
            in_h,
            in_w,
            low.as_mut_ptr(),
        )
    };
    check(status, "argmax_classes");
    let nearest = emulator.launcher::<Nearest>("nearest_upsample");
    // SAFETY: sizes checked; source indices clamped to the low-resolution map.
    let status = unsafe {
        nearest(
            &HostLaunch::from(super::grid_2d(shape.out_w, shape.out_h, 1)),
            low.as_ptr(),
            in_w,
            src_columns.as_ptr(),
            src_rows.as_ptr(),
            out_w,
            out_h,
            out.as_mut_ptr(),
        )
    };
    check(status, "nearest_upsample");
}

fn pose_decode(
    emulator: &Emulator,
    heatmaps: &[f32],
    (maps, height, width): (usize, usize, usize),
) -> Vec<HeatmapPeak> {
    type Blur = unsafe extern "C" fn(
        *const HostLaunch,
        *const f32,
        i32,
        i32,
        i64,
        BlurTaps,
        *mut f32,
    ) -> Status;
    type Refine = unsafe extern "C" fn(
        *const HostLaunch,
        *const f32,
        *const f32,
        i32,
        i32,
        *mut DevicePeak,
    ) -> Status;
    let args = DecodeArgs::new(heatmaps.len(), (maps, height, width)).unwrap();
    let (mut rows, mut blurred) = (vec![0.0f32; heatmaps.len()], vec![0.0f32; heatmaps.len()]);
    for (kernel, input, output) in [
        ("blur_rows", heatmaps.as_ptr(), rows.as_mut_ptr()),
        ("blur_columns", rows.as_ptr(), blurred.as_mut_ptr()),
    ] {
        let blur = emulator.launcher::<Blur>(kernel);
        // SAFETY: every index is below `count`, which both buffers hold.
        let status = unsafe {
            blur(
                &HostLaunch::from(args.blur),
                input,
                args.width,
                args.height,
                args.count,
                args.taps,
                output,
            )
        };
        check(status, kernel);
    }
    let mut peaks = vec![DevicePeak::default(); maps];
    let refine = emulator.launcher::<Refine>("refine_peaks");
    // SAFETY: one block per map, one peak per block.
    let status = unsafe {
        refine(
            &HostLaunch::from(args.refine),
            heatmaps.as_ptr(),
            blurred.as_ptr(),
            args.width,
            args.height,
            peaks.as_mut_ptr(),
        )
    };
    check(status, "refine_peaks");
    peaks.iter().map(HeatmapPeak::from).collect()
}

fn blend_class_map(
    emulator: &Emulator,
    frame: &mut [u8],
    (width, height, stride): (usize, usize, usize),
    class_map: &[u8],
    palette: &[[u8; 3]],
    alpha: f32,
) {
    type Launcher = unsafe extern "C" fn(
        *const HostLaunch,
        *mut u8,
        i32,
        i32,
        i32,
        *const u8,
        *const u8,
        i32,
        i32,
    ) -> Status;
    let Some(args) = BlendArgs::new(
        frame.len(),
        (width, height, stride),
        class_map.len(),
        palette,
        alpha,
    )
    .unwrap() else {
        return;
    };
    let [w, h, s] = args.sizes;
    let launch = emulator.launcher::<Launcher>("blend_class_map");
    // SAFETY: sizes checked by `BlendArgs::new`.
    let status = unsafe {
        launch(
            &HostLaunch::from(args.config),
            frame.as_mut_ptr(),
            w,
            h,
            s,
            class_map.as_ptr(),
            args.palette.as_ptr(),
            args.palette_len,
            args.weight,
        )
    };
    check(status, "blend_class_map");
}

// The tests: the inputs and comparisons of tests/gpu.rs, at small sizes.

#[test]
fn every_kernel_and_struct_has_its_rust_twin() {
    let Some(emulator) = emulator("every_kernel_and_struct_has_its_rust_twin") else {
        return;
    };
    let kernels: Vec<&str> = SOURCES
        .iter()
        .flat_map(|(_, source)| kernels(source))
        .map(|k| k.name)
        .collect();
    // The kernels the wrappers (and the functions above) launch, no more, no fewer.
    assert_eq!(
        kernels,
        [
            "preprocess_f32",
            "preprocess_f16",
            "frame_to_rgba",
            "letterbox_f32",
            "mirror_rows",
            "merge_flipped",
            "upsample_argmax",
            "argmax_classes",
            "nearest_upsample",
            "blur_rows",
            "blur_columns",
            "refine_peaks",
            "blend_class_map",
            "resize_planar",
            "value_range",
            "normalise_depth",
            "draw_depth",
            "normalise_normals",
            "draw_normals",
        ]
    );
    let layout = |size, align| (size, align);
    let linear_tap = layout(size_of::<DeviceLinearTap>(), align_of::<DeviceLinearTap>());
    let twins = [
        (
            "preprocess",
            "FrameLayout",
            layout(size_of::<FrameLayout>(), align_of::<FrameLayout>()),
        ),
        (
            "preprocess",
            "YuvToRgb",
            layout(size_of::<YuvToRgb>(), align_of::<YuvToRgb>()),
        ),
        (
            "preprocess",
            "Normalisation",
            layout(
                size_of::<DeviceNormalisation>(),
                align_of::<DeviceNormalisation>(),
            ),
        ),
        (
            "preprocess",
            "Tap",
            layout(size_of::<DeviceTap>(), align_of::<DeviceTap>()),
        ),
        (
            "preprocess",
            "Placement",
            layout(size_of::<Placement>(), align_of::<Placement>()),
        ),
        ("seg", "LinearTap", linear_tap),
        (
            "pose",
            "Kernel",
            layout(size_of::<BlurTaps>(), align_of::<BlurTaps>()),
        ),
        (
            "pose",
            "Peak",
            layout(size_of::<DevicePeak>(), align_of::<DevicePeak>()),
        ),
        ("dense", "LinearTap", linear_tap),
    ];
    let mut structs: Vec<(&str, &str)> = SOURCES
        .iter()
        .flat_map(|(module, source)| struct_names(source).into_iter().map(move |s| (*module, s)))
        .collect();
    let mut named: Vec<(&str, &str)> = twins.iter().map(|(m, name, _)| (*m, *name)).collect();
    structs.sort_unstable();
    named.sort_unstable();
    assert_eq!(
        structs, named,
        "every struct of the sources needs a Rust twin"
    );
    for (module, name, rust) in twins {
        assert_eq!(
            emulator.layout(module, name),
            rust,
            "{module}::{name}: (size, align) in C vs Rust"
        );
    }
}

/// The CPU path's input for a frame of any layout: YUV converted first (to packed RGB), then the
/// CPU stage; the pixels, their format and the stride of their rows.
fn cpu_rgb(frame: &[u8], geometry: &FrameGeometry) -> (Vec<u8>, PixelFormat, usize) {
    let packed = |format| (frame.to_vec(), format, geometry.stride);
    match geometry.layout {
        SourceLayout::Nv12 | SourceLayout::I420 => (
            yuv420_to_rgb(frame, geometry),
            PixelFormat::Rgb,
            geometry.width * 3,
        ),
        SourceLayout::Rgb => packed(PixelFormat::Rgb),
        SourceLayout::Bgr => packed(PixelFormat::Bgr),
        SourceLayout::Rgbx => packed(PixelFormat::Rgba),
        SourceLayout::Bgrx => packed(PixelFormat::Bgra),
    }
}

/// `geometry` with padded rows and gaps between the planes, as decoders leave frames: the kernel
/// must follow the strides and plane offsets.
fn padded(geometry: FrameGeometry) -> FrameGeometry {
    let stride = geometry.stride + 16;
    let luma = stride * geometry.height + 64;
    match geometry.layout {
        SourceLayout::Nv12 => FrameGeometry {
            stride,
            chroma: [luma, 0],
            chroma_stride: stride,
            ..geometry
        },
        SourceLayout::I420 => {
            let chroma_stride = geometry.chroma_stride + 8;
            FrameGeometry {
                stride,
                chroma: [luma, luma + chroma_stride * geometry.height / 2 + 32],
                chroma_stride,
                ..geometry
            }
        }
        _ => FrameGeometry { stride, ..geometry },
    }
}

const LAYOUTS: [SourceLayout; 6] = [
    SourceLayout::Rgb,
    SourceLayout::Bgr,
    SourceLayout::Rgbx,
    SourceLayout::Bgrx,
    SourceLayout::Nv12,
    SourceLayout::I420,
];

fn geometry(layout: SourceLayout, width: usize, height: usize) -> FrameGeometry {
    match layout {
        SourceLayout::Nv12 | SourceLayout::I420 => FrameGeometry::yuv420(width, height, layout),
        _ => FrameGeometry::packed(width, height, layout),
    }
}

/// Every layout at `width x height`, padded as decoders leave frames, in BT.601 limited and
/// BT.709 full-range colours.
fn padded_geometries(width: usize, height: usize) -> impl Iterator<Item = FrameGeometry> {
    LAYOUTS.into_iter().flat_map(move |layout| {
        let geometry = padded(geometry(layout, width, height));
        [geometry, bt709_full_range(geometry)]
    })
}

/// `geometry` with BT.709 full-range colours (only YUV layouts read them).
fn bt709_full_range(geometry: FrameGeometry) -> FrameGeometry {
    FrameGeometry {
        yuv: YuvToRgb::from_weights(0.2126, 0.0722, true),
        ..geometry
    }
}

/// The values before normalisation are the CPU's bit for bit, and both divide the same way: the
/// outputs are equal, f16 being the f32 value rounded to nearest.
fn assert_same<T: Copy + PartialEq + std::fmt::Debug>(
    got: &[T],
    cpu: &[f32],
    to_element: fn(f32) -> T,
    what: &str,
) {
    assert_eq!(got.len(), cpu.len());
    let differing = got.iter().zip(cpu).position(|(&g, &c)| g != to_element(c));
    if let Some(i) = differing {
        panic!(
            "{what}: value {i} is {:?}, the CPU path's {:?}",
            got[i],
            to_element(cpu[i])
        );
    }
}

/// The preprocess kernel's f32 and f16 outputs against the CPU path's f32 values.
fn assert_preprocess_in_both_precisions(
    emulator: &Emulator,
    frame: &[u8],
    taps: (&[DeviceTap], &[DeviceTap]),
    args: &BilinearArgs,
    expected: &[f32],
    what: &str,
) {
    let mut out = vec![0.0f32; expected.len()];
    preprocess(emulator, frame, taps, args, &mut out);
    assert_same(&out, expected, |v| v, &format!("f32 {what}"));
    let mut out = vec![half::f16::ZERO; expected.len()];
    preprocess(emulator, frame, taps, args, &mut out);
    assert_same(&out, expected, half::f16::from_f32, &format!("f16 {what}"));
}

#[test]
fn stretch_equals_the_cpu_path_for_every_layout() {
    let Some(emulator) = emulator("stretch_equals_the_cpu_path_for_every_layout") else {
        return;
    };
    // Narrower (64 -> 40) and taller (48 -> 56): both directions of the resize.
    let (width, height, out_w, out_h) = (64, 48, 40, 56);
    let plan = StretchPlan::new(width, height, out_w, out_h);
    let (columns, rows) = plan.taps();
    let (columns, rows) = (device_taps(columns), device_taps(rows));
    let geometries = LAYOUTS.iter().flat_map(|&layout| {
        let geometry = geometry(layout, width, height);
        [
            geometry,
            padded(geometry),
            bt709_full_range(padded(geometry)),
        ]
    });
    for (geometry, norm) in geometries.flat_map(|geometry| {
        [Normalization::IDENTITY, Normalization::SAPIENS].map(|norm| (geometry, norm))
    }) {
        let frame = test_bytes(geometry.len(), 3);
        let (rgb, format, stride) = cpu_rgb(&frame, &geometry);
        let mut expected = vec![0.0; 3 * out_w * out_h];
        let view = ImageView {
            data: &rgb,
            width,
            height,
            stride,
            format,
        };
        plan.run(&view, &mut expected, &norm);
        let args = BilinearArgs::new(
            &geometry,
            frame.len(),
            Arithmetic::Resize,
            (columns.len(), rows.len()),
            1,
            &norm,
            expected.len(),
        )
        .unwrap();
        let what = format!("{geometry:?}, {norm:?}");
        assert_preprocess_in_both_precisions(
            emulator,
            &frame,
            (&columns, &rows),
            &args,
            &expected,
            &what,
        );
    }
}

#[test]
fn rgba_conversion_equals_the_cpu_path_for_every_layout() {
    let Some(emulator) = emulator("rgba_conversion_equals_the_cpu_path_for_every_layout") else {
        return;
    };
    // Odd sizes: the last chroma column and row cover one pixel.
    for (width, height) in [(64, 48), (33, 17)] {
        for geometry in padded_geometries(width, height) {
            let frame = test_bytes(geometry.len(), 5);
            let rgb = HostFrame {
                data: &frame,
                geometry,
            }
            .to_rgb();
            let expected: Vec<u8> = rgb
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            let rgba = frame_to_rgba(emulator, &frame, &geometry);
            assert!(
                rgba == expected,
                "{geometry:?}: RGBA differs from the CPU's"
            );
        }
    }
}

#[test]
fn detector_letterbox_equals_the_cpu_path_for_every_layout() {
    let Some(emulator) = emulator("detector_letterbox_equals_the_cpu_path_for_every_layout") else {
        return;
    };
    // Wide (padding above and below), tall (left and right), and odd sizes that round.
    let frames = [(64, 36), (30, 50), (33, 17)];
    let (input_w, input_h) = (40, 32);
    for (detector, (width, height)) in [DetectorLayout::RtmDet, DetectorLayout::Yolo]
        .into_iter()
        .flat_map(|d| frames.map(|f| (d, f)))
    {
        for geometry in padded_geometries(width, height) {
            let frame = test_bytes(geometry.len(), 7);
            let (rgb, format, stride) = cpu_rgb(&frame, &geometry);
            let view = ImageView {
                data: &rgb,
                width,
                height,
                stride,
                format,
            };
            let mut cpu = LetterboxInput::new(detector, input_w, input_h);
            cpu.prepare(&view);
            let plan = LetterboxPlan::new(detector, (width, height), (input_w, input_h));
            let out = letterbox(emulator, &frame, &geometry, &plan);
            let what = format!("{detector:?} letterbox of {geometry:?}");
            assert_same(&out, cpu.tensor(), |v| v, &what);
        }
    }
}

#[test]
fn batched_crops_equal_the_cpu_path() {
    let Some(emulator) = emulator("batched_crops_equal_the_cpu_path") else {
        return;
    };
    let (width, height, out_w, out_h) = (64, 48, 24, 32);
    // Inside, past the left and bottom edges, past the right and top edges.
    let crops = [
        PoseCrop::from_box(10.0, 5.0, 30.0, 45.0, out_w, out_h),
        PoseCrop::from_box(-4.0, 30.0, 12.0, 52.0, out_w, out_h),
        PoseCrop::from_box(50.0, -3.0, 70.0, 20.0, out_w, out_h),
    ];
    for layout in LAYOUTS {
        let geometry = geometry(layout, width, height);
        let frame = test_bytes(geometry.len(), 9);
        let (rgb, format, _) = cpu_rgb(&frame, &geometry);
        let (columns, rows) = crop_taps(&geometry, &crops, (out_w, out_h)).unwrap();
        for norm in [Normalization::IDENTITY, Normalization::SAPIENS] {
            let slot = 3 * out_w * out_h;
            let mut expected = vec![0.0; crops.len() * slot];
            for (crop, out) in crops.iter().zip(expected.chunks_mut(slot)) {
                warp_crop(
                    &ImageView::packed(&rgb, width, height, format),
                    crop,
                    out,
                    out_w,
                    out_h,
                    &norm,
                );
            }
            let args = BilinearArgs::new(
                &geometry,
                frame.len(),
                Arithmetic::Warp,
                (out_w, out_h),
                crops.len(),
                &norm,
                expected.len(),
            )
            .unwrap();
            let what = format!("{layout:?} crops, {norm:?}");
            assert_preprocess_in_both_precisions(
                emulator,
                &frame,
                (&columns, &rows),
                &args,
                &expected,
                &what,
            );
        }
    }
}

#[test]
fn segmentation_class_maps_equal_the_cpu_path() {
    let Some(emulator) = emulator("segmentation_class_maps_equal_the_cpu_path") else {
        return;
    };
    let shape = SegShape {
        classes: 28,
        in_h: 16,
        in_w: 12,
        out_w: 50,
        out_h: 37,
    };
    let random = random_logits(shape.classes, shape.in_h, shape.in_w);
    let tied = tied_logits_with_nans(shape.classes, shape.in_h, shape.in_w);
    for (logits, what) in [(random, "random"), (tied, "ties and NaNs")] {
        let mut expected = vec![0u8; shape.out_w * shape.out_h];
        let mut out = vec![0u8; expected.len()];
        crate::tasks::seg::upsample_argmax(
            &logits,
            shape.classes,
            shape.in_h,
            shape.in_w,
            shape.out_w,
            shape.out_h,
            &mut expected,
        );
        upsample_argmax(emulator, &logits, shape, &mut out);
        assert_eq!(out, expected, "bilinear + argmax, {what}");
        crate::tasks::seg::argmax_nearest(
            &logits,
            shape.classes,
            shape.in_h,
            shape.in_w,
            shape.out_w,
            shape.out_h,
            &mut expected,
        );
        argmax_nearest(emulator, &logits, shape, &mut out);
        assert_eq!(out, expected, "argmax + nearest, {what}");
    }
}

#[test]
fn pose_decode_equals_the_cpu_path() {
    let Some(emulator) = emulator("pose_decode_equals_the_cpu_path") else {
        return;
    };
    let (maps, h, w) = (12, 64, 48);
    let data = edge_case_heatmaps(maps, h, w);
    let mut expected = Vec::new();
    decode_dark_udp(&data, maps, h, w, &mut expected);
    let got = pose_decode(emulator, &data, (maps, h, w));
    assert_eq!(got.len(), expected.len());
    for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.score, e.score, "map {k}: score");
        // The log differs by an ulp between the C library's logf and Rust's ln.
        assert!(
            (g.x - e.x).abs() < 1e-3 && (g.y - e.y).abs() < 1e-3,
            "map {k}: {g:?} vs {e:?}"
        );
    }
}

#[test]
fn class_overlay_equals_the_cpu_path() {
    let Some(emulator) = emulator("class_overlay_equals_the_cpu_path") else {
        return;
    };
    let (width, height, stride) = (101, 37, 101 * 4 + 12);
    let classes: Vec<u8> = test_bytes(width * height, 43)
        .iter()
        .map(|b| b % 30)
        .collect();
    let palette: Vec<[u8; 3]> = (0..28u8).map(|i| [i * 9, 255 - i * 7, i * 3]).collect();
    for alpha in [0.5, 0.3, 1.0] {
        let mut frame = test_bytes(height * stride, 41);
        let mut expected = frame.clone();
        blend_class_map(
            emulator,
            &mut frame,
            (width, height, stride),
            &classes,
            &palette,
            alpha,
        );
        crate::render::blend_class_map(
            &mut expected,
            width,
            height,
            stride,
            &classes,
            &palette,
            alpha,
        );
        assert_eq!(frame, expected, "alpha {alpha}");
    }
}

fn linear(len: usize) -> HostLaunch {
    HostLaunch::from(LaunchConfig::for_num_elems(len as u32))
}

#[test]
fn flip_test_kernels_equal_the_cpu_path() {
    let Some(emulator) = emulator("flip_test_kernels_equal_the_cpu_path") else {
        return;
    };
    type Mirror = unsafe extern "C" fn(*const HostLaunch, *const f32, i64, i32, *mut f32) -> Status;
    type Merge = unsafe extern "C" fn(
        *const HostLaunch,
        *mut f32,
        *const f32,
        i32,
        i32,
        *const i32,
        i32,
        i32,
    ) -> Status;
    let (items, channels, h, w) = (2, 17, 12, 9);
    let len = items * channels * h * w;
    let mut noise = Noise(51);
    let plain: Vec<f32> = (0..len).map(|_| noise.unit() * 2.0 - 0.5).collect();
    let mirrored: Vec<f32> = (0..len).map(|_| noise.unit()).collect();
    let mut expected = vec![0.0; len];
    crate::tasks::flip::mirror_batch(&plain, items, channels, h, w, &mut expected);
    let mut out = vec![0.0f32; len];
    let mirror = emulator.launcher::<Mirror>("mirror_rows");
    let rows = (items * channels * h) as i64;
    // SAFETY: both buffers hold `len` values.
    check(
        unsafe {
            mirror(
                &linear(len),
                plain.as_ptr(),
                rows,
                w as i32,
                out.as_mut_ptr(),
            )
        },
        "mirror_rows",
    );
    assert_eq!(out, expected, "mirror");

    let flip_indices = &crate::tasks::keypoint_sets::keypoint_set(channels)
        .unwrap()
        .flip_indices;
    let mut merged = plain.clone();
    crate::tasks::flip::merge_flipped_heatmaps(&mut merged, &mirrored, items, flip_indices, h, w);
    let indices: Vec<i32> = flip_indices.iter().map(|&k| k as i32).collect();
    let mut out = plain.clone();
    let merge = emulator.launcher::<Merge>("merge_flipped");
    // SAFETY: both buffers hold `len` values; every flip index is below `channels`.
    check(
        unsafe {
            merge(
                &linear(len),
                out.as_mut_ptr(),
                mirrored.as_ptr(),
                items as i32,
                channels as i32,
                indices.as_ptr(),
                h as i32,
                w as i32,
            )
        },
        "merge_flipped",
    );
    assert_eq!(out, merged, "merge");
}

/// The dense kernels as the wrappers in dense.rs launch them.
struct Dense<'a>(&'a Emulator);

impl Dense<'_> {
    fn resize(
        &self,
        maps: &[f32],
        (c, in_h, in_w): (usize, usize, usize),
        (out_w, out_h): (usize, usize),
    ) -> Vec<f32> {
        type Resize = unsafe extern "C" fn(
            *const HostLaunch,
            *const f32,
            i32,
            i32,
            i32,
            *const DeviceLinearTap,
            *const DeviceLinearTap,
            i32,
            i32,
            *mut f32,
        ) -> Status;
        let (columns, rows) = (
            device_linear_taps(in_w, out_w),
            device_linear_taps(in_h, out_h),
        );
        let mut out = vec![0.0f32; c * out_w * out_h];
        let launch = self.0.launcher::<Resize>("resize_planar");
        // SAFETY: sizes as the wrapper checks them; taps clamped to the source maps.
        let status = unsafe {
            launch(
                &HostLaunch::from(super::grid_2d(out_w, out_h, c)),
                maps.as_ptr(),
                c as i32,
                in_h as i32,
                in_w as i32,
                columns.as_ptr(),
                rows.as_ptr(),
                out_w as i32,
                out_h as i32,
                out.as_mut_ptr(),
            )
        };
        check(status, "resize_planar");
        out
    }

    /// Both passes of the range reduction; (min, max), NaN when empty.
    fn range(&self, values: &[f32], classes: Option<&[u8]>) -> [f32; 2] {
        type Range =
            unsafe extern "C" fn(*const HostLaunch, *const f32, *const u8, i64, *mut f32) -> Status;
        let launch = self.0.launcher::<Range>("value_range");
        let config = |blocks| LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (dense::RANGE_THREADS, 1, 1),
            shared_mem_bytes: 2 * 4 * dense::RANGE_THREADS,
        };
        let mut partials = vec![0.0f32; 2 * dense::RANGE_BLOCKS as usize];
        let classes = classes.map_or(std::ptr::null(), <[u8]>::as_ptr);
        // SAFETY: `values` (and `classes`) hold `count` values, `partials` 2 per block.
        let status = unsafe {
            launch(
                &HostLaunch::from(config(dense::RANGE_BLOCKS)),
                values.as_ptr(),
                classes,
                values.len() as i64,
                partials.as_mut_ptr(),
            )
        };
        check(status, "value_range");
        let mut range = [0.0f32; 2];
        // SAFETY: one block over the partials.
        let status = unsafe {
            launch(
                &HostLaunch::from(config(1)),
                partials.as_ptr(),
                std::ptr::null(),
                partials.len() as i64,
                range.as_mut_ptr(),
            )
        };
        check(status, "value_range");
        range
    }

    fn normalise_depth(&self, depth: &[f32], classes: Option<&[u8]>, range: &[f32; 2]) -> Vec<f32> {
        type Normalise = unsafe extern "C" fn(
            *const HostLaunch,
            *const f32,
            *const u8,
            i64,
            *const f32,
            *mut f32,
        ) -> Status;
        let mut out = vec![0.0f32; depth.len()];
        let launch = self.0.launcher::<Normalise>("normalise_depth");
        // SAFETY: every buffer holds `count` values, `range` two.
        let status = unsafe {
            launch(
                &linear(depth.len()),
                depth.as_ptr(),
                classes.map_or(std::ptr::null(), <[u8]>::as_ptr),
                depth.len() as i64,
                range.as_ptr(),
                out.as_mut_ptr(),
            )
        };
        check(status, "normalise_depth");
        out
    }

    fn draw_depth(
        &self,
        frame: &mut [u8],
        (w, h, stride): (usize, usize, usize),
        normalised: &[f32],
        classes: Option<&[u8]>,
    ) {
        type Draw = unsafe extern "C" fn(
            *const HostLaunch,
            *mut u8,
            i32,
            i32,
            i32,
            *const f32,
            *const u8,
            *const u8,
        ) -> Status;
        let colormap: Vec<u8> = crate::tasks::dense::inferno()
            .iter()
            .flatten()
            .copied()
            .collect();
        let launch = self.0.launcher::<Draw>("draw_depth");
        // SAFETY: frame of `h` rows of `stride` bytes, maps of w x h.
        let status = unsafe {
            launch(
                &HostLaunch::from(super::grid_2d(w, h, 1)),
                frame.as_mut_ptr(),
                w as i32,
                h as i32,
                stride as i32,
                normalised.as_ptr(),
                classes.map_or(std::ptr::null(), <[u8]>::as_ptr),
                colormap.as_ptr(),
            )
        };
        check(status, "draw_depth");
    }

    fn normalise_normals(&self, normals: &mut [f32]) {
        type Normalise = unsafe extern "C" fn(*const HostLaunch, *mut f32, i64) -> Status;
        let plane = normals.len() / 3;
        let launch = self.0.launcher::<Normalise>("normalise_normals");
        // SAFETY: three planes of `plane` values.
        let status = unsafe { launch(&linear(plane), normals.as_mut_ptr(), plane as i64) };
        check(status, "normalise_normals");
    }

    fn draw_normals(
        &self,
        frame: &mut [u8],
        (w, h, stride): (usize, usize, usize),
        normals: &[f32],
        classes: Option<&[u8]>,
    ) {
        type Draw = unsafe extern "C" fn(
            *const HostLaunch,
            *mut u8,
            i32,
            i32,
            i32,
            *const f32,
            *const u8,
        ) -> Status;
        let launch = self.0.launcher::<Draw>("draw_normals");
        // SAFETY: frame of `h` rows of `stride` bytes, normals 3 x w x h.
        let status = unsafe {
            launch(
                &HostLaunch::from(super::grid_2d(w, h, 1)),
                frame.as_mut_ptr(),
                w as i32,
                h as i32,
                stride as i32,
                normals.as_ptr(),
                classes.map_or(std::ptr::null(), <[u8]>::as_ptr),
            )
        };
        check(status, "draw_normals");
    }
}

/// Equal values, NaN equal to NaN.
fn assert_same_floats(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            g == e || (g.is_nan() && e.is_nan()),
            "{what} at {i}: {g} vs {e}"
        );
    }
}

#[test]
fn depth_kernels_equal_the_cpu_path() {
    let Some(emulator) = emulator("depth_kernels_equal_the_cpu_path") else {
        return;
    };
    let dense = Dense(emulator);
    let (in_h, in_w, out_w, out_h) = (16, 12, 41, 29);
    let mut noise = Noise(61);
    let mut raw: Vec<f32> = (0..in_h * in_w).map(|_| 1.0 + noise.unit() * 3.0).collect();
    raw[in_w + 1] = f32::NAN;
    let pixels = out_w * out_h;
    let classes: Vec<u8> = (0..pixels)
        .map(|i| {
            if i % out_w < out_w / 3 {
                0
            } else {
                (i % 27) as u8 + 1
            }
        })
        .collect();
    let mut resized = vec![0.0; pixels];
    crate::tasks::dense::resize_planar(&raw, 1, in_h, in_w, out_w, out_h, &mut resized);
    let got = dense.resize(&raw, (1, in_h, in_w), (out_w, out_h));
    assert_same_floats(&got, &resized, "resize");
    let stride = out_w * 4 + 8;
    let mut frame = test_bytes(out_h * stride, 71);
    let mut device_frame = frame.clone();
    let background = vec![0u8; pixels];
    for foreground in [Some(&classes[..]), None, Some(&background[..])] {
        let mut normalised = vec![0.0; pixels];
        let expected = crate::tasks::dense::normalise_depth(&resized, foreground, &mut normalised);
        let range = dense.range(&resized, foreground);
        let got = (range[0] <= range[1]).then_some(crate::tasks::dense::DepthRange {
            min: range[0],
            max: range[1],
        });
        assert_eq!(got, expected, "range");
        let device_normalised = dense.normalise_depth(&resized, foreground, &range);
        assert_same_floats(&device_normalised, &normalised, "normalised");
        crate::tasks::dense::draw_depth(&mut frame, out_w, out_h, stride, &normalised, foreground);
        dense.draw_depth(
            &mut device_frame,
            (out_w, out_h, stride),
            &device_normalised,
            foreground,
        );
        assert_eq!(device_frame, frame, "depth colours");
    }
}

#[test]
fn normal_kernels_equal_the_cpu_path() {
    let Some(emulator) = emulator("normal_kernels_equal_the_cpu_path") else {
        return;
    };
    let dense = Dense(emulator);
    let (in_h, in_w, out_w, out_h) = (8, 6, 23, 17);
    let mut noise = Noise(81);
    let raw: Vec<f32> = (0..3 * in_h * in_w)
        .map(|_| noise.unit() * 2.0 - 1.0)
        .collect();
    let pixels = out_w * out_h;
    let mut normals = vec![0.0; 3 * pixels];
    crate::tasks::dense::resize_planar(&raw, 3, in_h, in_w, out_w, out_h, &mut normals);
    crate::tasks::dense::normalise_normals(&mut normals);
    let mut device_normals = dense.resize(&raw, (3, in_h, in_w), (out_w, out_h));
    dense.normalise_normals(&mut device_normals);
    assert_same_floats(&device_normals, &normals, "unit normals");
    let classes: Vec<u8> = (0..pixels).map(|i| (i % 5) as u8).collect();
    let stride = out_w * 4;
    let mut frame = test_bytes(out_h * stride, 83);
    let mut device_frame = frame.clone();
    for foreground in [Some(&classes[..]), None] {
        crate::tasks::dense::draw_normals(&mut frame, out_w, out_h, stride, &normals, foreground);
        dense.draw_normals(
            &mut device_frame,
            (out_w, out_h, stride),
            &device_normals,
            foreground,
        );
        assert_eq!(device_frame, frame, "normal colours");
    }
}
