// Frame -> planar RGB model input, normalised, f32 or f16: the device twin of src/preprocess.rs.
// The tap tables (source indices and fixed-point weights) come from the CPU code, and the
// arithmetic below is the CPU's, so the values before normalisation are the CPU's bit for bit.

// Pixel layouts; the numbers are `SourceLayout::code` in preprocess.rs.
#define LAYOUT_RGB 0
#define LAYOUT_BGR 1
#define LAYOUT_RGBX 2
#define LAYOUT_BGRX 3
#define LAYOUT_NV12 4
#define LAYOUT_I420 5

// Arithmetic: cv::resize INTER_LINEAR, or cv::warpAffine INTER_LINEAR.
#define ARITHMETIC_RESIZE 0
#define ARITHMETIC_WARP 1

// YUV -> RGB in 20-bit fixed point (`YuvToRgb` in preprocess.rs, same field order): the
// stream's matrix and range; for BT.601 limited range OpenCV's own coefficients.
struct YuvToRgb {
    int luma_offset, luma, v_to_r, u_to_g, v_to_g, u_to_b;
};

// Where the pixels of a frame are (`FrameLayout` in preprocess.rs, same field order).
struct FrameLayout {
    int layout;
    int stride;          // bytes per row of the packed image or of the Y plane
    long long chroma0;   // byte offset of the UV plane (NV12) or the U plane (I420)
    long long chroma1;   // byte offset of the V plane (I420)
    int chroma_stride;   // bytes per row of the chroma plane(s)
    YuvToRgb yuv;
};

__device__ __forceinline__ int clamp_u8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// YUV 4:2:0 -> RGB as OpenCV's cvtColor(COLOR_YUV2RGB_NV12 / _I420) computes it, each 2x2
// block sharing its chroma sample.
__device__ __forceinline__ void yuv_to_rgb(const YuvToRgb& m, int y, int u, int v, int rgb[3]) {
    const int shift = 20, half = 1 << (shift - 1);
    int yy = max(0, y - m.luma_offset) * m.luma;
    u -= 128;
    v -= 128;
    rgb[0] = clamp_u8((yy + half + m.v_to_r * v) >> shift);
    rgb[1] = clamp_u8((yy + half + m.v_to_g * v + m.u_to_g * u) >> shift);
    rgb[2] = clamp_u8((yy + half + m.u_to_b * u) >> shift);
}

__device__ __forceinline__ void load_rgb(const unsigned char* data, const FrameLayout& f, int x, int y, int rgb[3]) {
    const unsigned char* row = data + (long long)y * f.stride;
    switch (f.layout) {
    case LAYOUT_RGB: rgb[0] = row[3 * x]; rgb[1] = row[3 * x + 1]; rgb[2] = row[3 * x + 2]; return;
    case LAYOUT_BGR: rgb[0] = row[3 * x + 2]; rgb[1] = row[3 * x + 1]; rgb[2] = row[3 * x]; return;
    case LAYOUT_RGBX: rgb[0] = row[4 * x]; rgb[1] = row[4 * x + 1]; rgb[2] = row[4 * x + 2]; return;
    case LAYOUT_BGRX: rgb[0] = row[4 * x + 2]; rgb[1] = row[4 * x + 1]; rgb[2] = row[4 * x]; return;
    case LAYOUT_NV12: {
        const unsigned char* uv = data + f.chroma0 + (long long)(y / 2) * f.chroma_stride + (x / 2) * 2;
        yuv_to_rgb(f.yuv, row[x], uv[0], uv[1], rgb);
        return;
    }
    default: {
        long long at = (long long)(y / 2) * f.chroma_stride + x / 2;
        yuv_to_rgb(f.yuv, row[x], data[f.chroma0 + at], data[f.chroma1 + at], rgb);
        return;
    }
    }
}

// (x - mean) / std per channel, RGB order (`Normalization` in preprocess.rs).
struct Normalisation { float mean[3]; float std_dev[3]; };

// One output position of a separable pass: two source indices and their fixed-point weights
// (`Tap` in preprocess.rs, widened to int).
struct Tap { int i0, i1, w0, w1; };

__device__ __forceinline__ int horizontal(int arithmetic, int p0, int p1, const Tap& t) {
    int sum = p0 * t.w0 + p1 * t.w1;
    // The resize keeps 16 bits: OpenCV pre-shifts by 4 before its 16-bit vertical multiply.
    return arithmetic == ARITHMETIC_RESIZE ? (short)(sum >> 4) : (short)sum;
}

__device__ __forceinline__ float vertical(int arithmetic, int h0, int h1, const Tap& t) {
    if (arithmetic == ARITHMETIC_RESIZE) {
        int v = (((h0 * t.w0) >> 16) + ((h1 * t.w1) >> 16) + 2) >> 2;
        return (float)clamp_u8(v);
    }
    return (float)((h0 * t.w0 + h1 * t.w1 + 512) >> 10);
}

__device__ __forceinline__ unsigned short to_half(float x) {
#ifndef SAPIENS_HOST_EMULATION
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
#else
    // The host build (src/testkit/kernels/emulator.rs) has no PTX; _Float16 rounds to nearest even too.
    return __builtin_bit_cast(unsigned short, (_Float16)x);
#endif
}

__device__ __forceinline__ void store(float* out, long long at, float v) { out[at] = v; }
__device__ __forceinline__ void store(unsigned short* out, long long at, float v) { out[at] = to_half(v); }

// The bilinear sample of one output position in R, G, B, normalised.
__device__ __forceinline__ void bilinear_rgb(const unsigned char* data, const FrameLayout& f, const Tap& c, const Tap& r, int arithmetic,
                                             const Normalisation& norm, float value[3]) {
    int p00[3], p01[3], p10[3], p11[3];
    load_rgb(data, f, c.i0, r.i0, p00);
    load_rgb(data, f, c.i1, r.i0, p01);
    load_rgb(data, f, c.i0, r.i1, p10);
    load_rgb(data, f, c.i1, r.i1, p11);
    for (int ch = 0; ch < 3; ++ch) {
        int h0 = horizontal(arithmetic, p00[ch], p01[ch], c);
        int h1 = horizontal(arithmetic, p10[ch], p11[ch], c);
        // A true division, as the CPU path (IEEE-rounded: NVRTC's default --prec-div=true).
        value[ch] = (vertical(arithmetic, h0, h1, r) - norm.mean[ch]) / norm.std_dev[ch];
    }
}

// Grid: x over output columns, y over output rows, z over batch items. Item z uses taps
// columns[z * out_w ..] and rows[z * out_h ..] and writes slot z of `out` (3 x out_h x out_w).
template <typename Out>
__device__ void bilinear_planar(const unsigned char* data, FrameLayout f, const Tap* columns, const Tap* rows, int arithmetic,
                                int out_w, int out_h, Normalisation norm, Out* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int item = blockIdx.z;
    if (x >= out_w || y >= out_h) return;
    float value[3];
    bilinear_rgb(data, f, columns[(long long)item * out_w + x], rows[(long long)item * out_h + y], arithmetic, norm, value);
    long long plane = (long long)out_w * out_h;
    long long base = (long long)item * 3 * plane + (long long)y * out_w + x;
    for (int ch = 0; ch < 3; ++ch) store(out, base + ch * plane, value[ch]);
}

extern "C" __global__ void preprocess_f32(const unsigned char* data, FrameLayout f, const Tap* columns, const Tap* rows, int arithmetic,
                                          int out_w, int out_h, Normalisation norm, float* out) {
    bilinear_planar(data, f, columns, rows, arithmetic, out_w, out_h, norm, out);
}

extern "C" __global__ void preprocess_f16(const unsigned char* data, FrameLayout f, const Tap* columns, const Tap* rows, int arithmetic,
                                          int out_w, int out_h, Normalisation norm, unsigned short* out) {
    bilinear_planar(data, f, columns, rows, arithmetic, out_w, out_h, norm, out);
}

// Any layout -> packed RGBA (alpha 255), one thread per pixel: the frame the overlay is drawn
// on when the decoder's frame is not RGBA.
extern "C" __global__ void frame_to_rgba(const unsigned char* data, FrameLayout f, int width, int height, unsigned char* rgba) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    int rgb[3];
    load_rgb(data, f, x, y, rgb);
    unsigned char* out = rgba + ((long long)y * width + x) * 4;
    out[0] = (unsigned char)rgb[0];
    out[1] = (unsigned char)rgb[1];
    out[2] = (unsigned char)rgb[2];
    out[3] = 255;
}

// Where a detector's input holds the resized frame (`Placement` in preprocess.rs, same field
// order): its rectangle, the normalised padding around it per R, G, B channel, and whether the
// planes go blue first (mmdet's BGR).
struct Placement {
    int left, top, resized_w, resized_h;
    int blue_first;
    float pad[3];
};

// Any layout -> a person detector's letterboxed input (f32, 3 x out_h x out_w), one thread per
// input pixel: inside the placement the frame resized with the taps of a stretch plan (cv::resize
// INTER_LINEAR, `columns` over resized_w, `rows` over resized_h), outside it the padding.
extern "C" __global__ void letterbox_f32(const unsigned char* data, FrameLayout f, const Tap* columns, const Tap* rows, Placement place,
                                         int out_w, int out_h, Normalisation norm, float* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    int rx = x - place.left, ry = y - place.top;
    float value[3] = {place.pad[0], place.pad[1], place.pad[2]};
    if (rx >= 0 && ry >= 0 && rx < place.resized_w && ry < place.resized_h)
        bilinear_rgb(data, f, columns[rx], rows[ry], ARITHMETIC_RESIZE, norm, value);
    long long plane = (long long)out_w * out_h;
    long long at = (long long)y * out_w + x;
    for (int ch = 0; ch < 3; ++ch) out[(place.blue_first ? 2 - ch : ch) * plane + at] = value[ch];
}
