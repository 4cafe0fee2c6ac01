//! The kernels' CUDA C run on the CPU and compared with the CPU stages, so their logic is tested
//! on machines without a GPU (tests/gpu.rs does the same on a device).
//!
//! The sources in [`SOURCES`] (the very strings NVRTC compiles) are built with the system C++
//! compiler under `emulator.h`, which emulates CUDA's execution model (thread and block
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

use super::{self as kernels, Canvas, KernelBackend, Precision, Scale};
use crate::cuda::{SOURCES, grid_2d};
use crate::frame::{FrameGeometry, YuvToRgb};
use crate::preprocess::cuda::{
    Arithmetic, BilinearArgs, DeviceNormalisation, DeviceTap, FrameLayout, InputElement,
    LetterboxArgs, Placement, RgbaArgs, crop_taps, device_taps,
};
use crate::preprocess::letterbox::LetterboxPlan;
use crate::preprocess::{Normalization, PoseCrop, StretchPlan};
use crate::render::cuda::BlendArgs;
use crate::tasks::dense::DepthRange;
use crate::tasks::dense::cuda as dense;
use crate::tasks::pose::cuda::{BlurTaps, DecodeArgs, DevicePeak};
use crate::tasks::pose::decode::HeatmapPeak;
use crate::tasks::seg::cuda::{
    DeviceLinearTap, SegShape, device_linear_taps, device_nearest_sources,
};

const SHIM: &str = include_str!("emulator.h");

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
    let mut cpp = String::from("#include \"emulator.h\"\n");
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
    write("emulator.h", SHIM)?;
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

/// `SapiensLaunch` in emulator.h.
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
            &HostLaunch::from(grid_2d(shape.out_w, shape.out_h, 1)),
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
            &HostLaunch::from(grid_2d(shape.in_w, shape.in_h, 1)),
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
            &HostLaunch::from(grid_2d(shape.out_w, shape.out_h, 1)),
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
    type Maxima =
        unsafe extern "C" fn(*const HostLaunch, *const f32, i32, i32, BlurTaps, *mut u64) -> Status;
    type Refine = unsafe extern "C" fn(
        *const HostLaunch,
        *const f32,
        *const u64,
        i32,
        i32,
        BlurTaps,
        *mut DevicePeak,
    ) -> Status;
    let args = DecodeArgs::new(heatmaps.len(), (maps, height, width)).unwrap();
    let mut partials = vec![0u64; args.partials];
    let maxima = emulator.launcher::<Maxima>("blur_maxima");
    // SAFETY: the grid covers the maps the heatmaps hold; two keys per block in `partials`.
    let status = unsafe {
        maxima(
            &HostLaunch::from(args.blur),
            heatmaps.as_ptr(),
            args.width,
            args.height,
            args.taps,
            partials.as_mut_ptr(),
        )
    };
    check(status, "blur_maxima");
    let mut peaks = vec![DevicePeak::default(); maps];
    let refine = emulator.launcher::<Refine>("refine_peaks");
    // SAFETY: one block per map, one peak per block.
    let status = unsafe {
        refine(
            &HostLaunch::from(args.refine),
            heatmaps.as_ptr(),
            partials.as_ptr(),
            args.width,
            args.height,
            args.taps,
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

fn linear(len: usize) -> HostLaunch {
    HostLaunch::from(LaunchConfig::for_num_elems(len as u32))
}

fn mirror_rows(
    emulator: &Emulator,
    maps: &[f32],
    (items, channels, h, w): (usize, usize, usize, usize),
) -> Vec<f32> {
    type Mirror = unsafe extern "C" fn(*const HostLaunch, *const f32, i64, i32, *mut f32) -> Status;
    let mut out = vec![0.0f32; maps.len()];
    let mirror = emulator.launcher::<Mirror>("mirror_rows");
    let rows = (items * channels * h) as i64;
    // SAFETY: both buffers hold `maps.len()` values, `rows` rows of `w`.
    check(
        unsafe {
            mirror(
                &linear(maps.len()),
                maps.as_ptr(),
                rows,
                w as i32,
                out.as_mut_ptr(),
            )
        },
        "mirror_rows",
    );
    out
}

fn merge_flipped(
    emulator: &Emulator,
    plain: &[f32],
    mirrored: &[f32],
    (items, channels, h, w): (usize, usize, usize, usize),
    flip_indices: &[usize],
) -> Vec<f32> {
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
    let indices: Vec<i32> = flip_indices.iter().map(|&k| k as i32).collect();
    let mut out = plain.to_vec();
    let merge = emulator.launcher::<Merge>("merge_flipped");
    // SAFETY: both buffers hold `items x channels x h x w` values; every flip index is below
    // `channels`.
    check(
        unsafe {
            merge(
                &linear(out.len()),
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
    out
}

/// The dense kernels as the wrappers in dense.rs launch them.
impl Emulator {
    fn resize_maps(
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
        let launch = self.launcher::<Resize>("resize_planar");
        // SAFETY: sizes as the wrapper checks them; taps clamped to the source maps.
        let status = unsafe {
            launch(
                &HostLaunch::from(grid_2d(out_w, out_h, c)),
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
        let launch = self.launcher::<Range>("value_range");
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

    fn normalise_depth_in(
        &self,
        depth: &[f32],
        classes: Option<&[u8]>,
        range: &[f32; 2],
    ) -> Vec<f32> {
        type Normalise = unsafe extern "C" fn(
            *const HostLaunch,
            *const f32,
            *const u8,
            i64,
            *const f32,
            *mut f32,
        ) -> Status;
        let mut out = vec![0.0f32; depth.len()];
        let launch = self.launcher::<Normalise>("normalise_depth");
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

    fn draw_depth_into(
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
        let launch = self.launcher::<Draw>("draw_depth");
        // SAFETY: frame of `h` rows of `stride` bytes, maps of w x h.
        let status = unsafe {
            launch(
                &HostLaunch::from(grid_2d(w, h, 1)),
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

    fn normalise_normals_in(&self, normals: &mut [f32]) {
        type Normalise = unsafe extern "C" fn(*const HostLaunch, *mut f32, i64) -> Status;
        let plane = normals.len() / 3;
        let launch = self.launcher::<Normalise>("normalise_normals");
        // SAFETY: three planes of `plane` values.
        let status = unsafe { launch(&linear(plane), normals.as_mut_ptr(), plane as i64) };
        check(status, "normalise_normals");
    }

    fn draw_normals_into(
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
        let launch = self.launcher::<Draw>("draw_normals");
        // SAFETY: frame of `h` rows of `stride` bytes, normals 3 x w x h.
        let status = unsafe {
            launch(
                &HostLaunch::from(grid_2d(w, h, 1)),
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

/// The preprocess kernel into `len` values of `precision`, widened to f32.
fn preprocess_widened(
    emulator: &Emulator,
    frame: &[u8],
    taps: (&[DeviceTap], &[DeviceTap]),
    args: &BilinearArgs,
    len: usize,
    precision: Precision,
) -> Vec<f32> {
    match precision {
        Precision::F32 => {
            let mut out = vec![0.0f32; len];
            preprocess(emulator, frame, taps, args, &mut out);
            out
        }
        Precision::F16 => {
            let mut out = vec![half::f16::ZERO; len];
            preprocess(emulator, frame, taps, args, &mut out);
            out.iter().map(|v| v.to_f32()).collect()
        }
    }
}

impl KernelBackend for Emulator {
    fn scale(&self) -> Scale {
        Scale::Small
    }

    /// The values before normalisation are the CPU's bit for bit, and both divide the same way.
    fn preprocess_tolerance(&self) -> f32 {
        0.0
    }

    fn stretch(
        &self,
        plan: &StretchPlan,
        frame: &[u8],
        geometry: &FrameGeometry,
        norm: &Normalization,
        precision: Precision,
    ) -> Vec<f32> {
        let (columns, rows) = plan.taps();
        let (columns, rows) = (device_taps(columns), device_taps(rows));
        let len = 3 * columns.len() * rows.len();
        let size = (columns.len(), rows.len());
        let args = BilinearArgs::new(
            geometry,
            frame.len(),
            Arithmetic::Resize,
            size,
            1,
            norm,
            len,
        )
        .unwrap();
        preprocess_widened(self, frame, (&columns, &rows), &args, len, precision)
    }

    fn warp_crops(
        &self,
        frame: &[u8],
        geometry: &FrameGeometry,
        crops: &[PoseCrop],
        size: (usize, usize),
        norm: &Normalization,
        precision: Precision,
    ) -> Vec<f32> {
        let (columns, rows) = crop_taps(geometry, crops, size).unwrap();
        let len = crops.len() * 3 * size.0 * size.1;
        let args = BilinearArgs::new(
            geometry,
            frame.len(),
            Arithmetic::Warp,
            size,
            crops.len(),
            norm,
            len,
        )
        .unwrap();
        preprocess_widened(self, frame, (&columns, &rows), &args, len, precision)
    }

    fn letterbox(&self, plan: &LetterboxPlan, frame: &[u8], geometry: &FrameGeometry) -> Vec<f32> {
        letterbox(self, frame, geometry, plan)
    }

    fn frame_to_rgba(&self, frame: &[u8], geometry: &FrameGeometry) -> Vec<u8> {
        frame_to_rgba(self, frame, geometry)
    }

    fn upsample_argmax(&self, logits: &[f32], shape: SegShape) -> Vec<u8> {
        let mut out = vec![0u8; shape.out_w * shape.out_h];
        upsample_argmax(self, logits, shape, &mut out);
        out
    }

    fn argmax_nearest(&self, logits: &[f32], shape: SegShape) -> Vec<u8> {
        let mut out = vec![0u8; shape.out_w * shape.out_h];
        argmax_nearest(self, logits, shape, &mut out);
        out
    }

    fn decode_dark_udp(&self, heatmaps: &[f32], maps: (usize, usize, usize)) -> Vec<HeatmapPeak> {
        pose_decode(self, heatmaps, maps)
    }

    fn blend_class_map(
        &self,
        frame: &[u8],
        canvas: Canvas,
        classes: &[u8],
        palette: &[[u8; 3]],
        alpha: f32,
    ) -> Vec<u8> {
        let mut frame = frame.to_vec();
        blend_class_map(self, &mut frame, canvas, classes, palette, alpha);
        frame
    }

    fn mirror_batch(&self, maps: &[f32], dims: (usize, usize, usize, usize)) -> Vec<f32> {
        mirror_rows(self, maps, dims)
    }

    fn merge_flipped(
        &self,
        plain: &[f32],
        mirrored: &[f32],
        dims: (usize, usize, usize, usize),
        flip_indices: &[usize],
    ) -> Vec<f32> {
        merge_flipped(self, plain, mirrored, dims, flip_indices)
    }

    fn resize_planar(
        &self,
        maps: &[f32],
        source: (usize, usize, usize),
        size: (usize, usize),
    ) -> Vec<f32> {
        self.resize_maps(maps, source, size)
    }

    fn depth_range(&self, depth: &[f32], foreground: Option<&[u8]>) -> Option<DepthRange> {
        let [min, max] = self.range(depth, foreground);
        (min <= max).then_some(DepthRange { min, max })
    }

    fn normalise_depth(&self, depth: &[f32], foreground: Option<&[u8]>) -> Vec<f32> {
        let range = self.range(depth, foreground);
        self.normalise_depth_in(depth, foreground, &range)
    }

    fn draw_depth(
        &self,
        frame: &[u8],
        canvas: Canvas,
        normalised: &[f32],
        foreground: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut frame = frame.to_vec();
        self.draw_depth_into(&mut frame, canvas, normalised, foreground);
        frame
    }

    fn normalise_normals(&self, normals: &[f32]) -> Vec<f32> {
        let mut normals = normals.to_vec();
        self.normalise_normals_in(&mut normals);
        normals
    }

    fn draw_normals(
        &self,
        frame: &[u8],
        canvas: Canvas,
        normals: &[f32],
        foreground: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut frame = frame.to_vec();
        self.draw_normals_into(&mut frame, canvas, normals, foreground);
        frame
    }
}

// The tests: every kernel against its CPU stage (the checks of testkit::kernels, which
// tests/gpu.rs runs on a device), and the C structs against their Rust twins.

/// Runs a kernel check on the emulator, or says why `test` skips.
fn on_the_emulator(test: &str, check: fn(&Emulator)) {
    if let Some(emulator) = emulator(test) {
        check(emulator);
    }
}

#[test]
fn stretch_equals_the_cpu_path_for_every_layout() {
    on_the_emulator(
        "stretch_equals_the_cpu_path_for_every_layout",
        kernels::stretch_equals_the_cpu_path,
    );
}

#[test]
fn rgba_conversion_equals_the_cpu_path_for_every_layout() {
    on_the_emulator(
        "rgba_conversion_equals_the_cpu_path_for_every_layout",
        kernels::rgba_conversion_equals_the_cpu_path,
    );
}

#[test]
fn detector_letterbox_equals_the_cpu_path_for_every_layout() {
    on_the_emulator(
        "detector_letterbox_equals_the_cpu_path_for_every_layout",
        kernels::detector_letterbox_equals_the_cpu_path,
    );
}

#[test]
fn batched_crops_equal_the_cpu_path() {
    on_the_emulator(
        "batched_crops_equal_the_cpu_path",
        kernels::batched_crops_equal_the_cpu_path,
    );
}

#[test]
fn segmentation_class_maps_equal_the_cpu_path() {
    on_the_emulator(
        "segmentation_class_maps_equal_the_cpu_path",
        kernels::segmentation_class_maps_equal_the_cpu_path,
    );
}

#[test]
fn pose_decode_equals_the_cpu_path() {
    on_the_emulator(
        "pose_decode_equals_the_cpu_path",
        kernels::pose_decode_equals_the_cpu_path,
    );
}

#[test]
fn class_overlay_equals_the_cpu_path() {
    on_the_emulator(
        "class_overlay_equals_the_cpu_path",
        kernels::class_overlay_equals_the_cpu_path,
    );
}

#[test]
fn flip_test_kernels_equal_the_cpu_path() {
    on_the_emulator(
        "flip_test_kernels_equal_the_cpu_path",
        kernels::flip_test_kernels_equal_the_cpu_path,
    );
}

#[test]
fn depth_kernels_equal_the_cpu_path() {
    on_the_emulator(
        "depth_kernels_equal_the_cpu_path",
        kernels::depth_kernels_equal_the_cpu_path,
    );
}

#[test]
fn normal_kernels_equal_the_cpu_path() {
    on_the_emulator(
        "normal_kernels_equal_the_cpu_path",
        kernels::normal_kernels_equal_the_cpu_path,
    );
}

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
            "blur_maxima",
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
