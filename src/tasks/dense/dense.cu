// Depth and surface normals on the device: the twin of src/tasks/dense.rs (resize to the frame,
// normalise, colour into the RGBA frame). NVRTC runs with --fmad=false, so every multiply and add
// rounds as on the CPU, in the same order.

struct LinearTap { int lo, hi; float w_lo, w_hi; };

// Bilinear resize of `channels` planar maps (in_h x in_w) to out_h x out_w, taps from the CPU.
extern "C" __global__ void resize_planar(const float* maps, int channels, int in_h, int in_w,
                                         const LinearTap* columns, const LinearTap* rows,
                                         int out_w, int out_h, float* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int channel = blockIdx.z;
    if (x >= out_w || y >= out_h || channel >= channels) return;
    LinearTap c = columns[x], r = rows[y];
    const float* map = maps + (long long)channel * in_h * in_w;
    const float* upper = map + (long long)r.lo * in_w;
    const float* lower = map + (long long)r.hi * in_w;
    float top = upper[c.lo] * c.w_lo + upper[c.hi] * c.w_hi;
    float bottom = lower[c.lo] * c.w_lo + lower[c.hi] * c.w_hi;
    out[((long long)channel * out_h + y) * out_w + x] = top * r.w_lo + bottom * r.w_hi;
}

// Min and max of `values` over the pixels whose class is > 0 (all when `classes` is null), NaN
// left out (fminf/fmaxf ignore a NaN operand, as Rust's f32::min/max). Each block writes its
// partial (min, max) pair to ranges[2 * block], NaN for an empty one; run again with one block
// over the 2 x blocks partial values (classes null) for the total, NaN, NaN when empty.
extern "C" __global__ void value_range(const float* values, const unsigned char* classes, long long count,
                                       float* ranges) {
    extern __shared__ float shared[];
    float* lows = shared;
    float* highs = shared + blockDim.x;
    const float inf = __int_as_float(0x7f800000);
    float lo = inf, hi = -inf;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x) {
        if (classes != 0 && classes[i] == 0) continue;
        lo = fminf(lo, values[i]);
        hi = fmaxf(hi, values[i]);
    }
    lows[threadIdx.x] = lo;
    highs[threadIdx.x] = hi;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            lows[threadIdx.x] = fminf(lows[threadIdx.x], lows[threadIdx.x + half]);
            highs[threadIdx.x] = fmaxf(highs[threadIdx.x], highs[threadIdx.x + half]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        bool empty = !(lows[0] <= highs[0]);
        const float nan = __int_as_float(0x7fc00000);
        ranges[2 * blockIdx.x] = empty ? nan : lows[0];
        ranges[2 * blockIdx.x + 1] = empty ? nan : highs[0];
    }
}

// (d - min) / (max - min) over the foreground, 0 elsewhere; `range` = (min, max) from value_range.
// An empty range gives 0 everywhere, a flat one too.
extern "C" __global__ void normalise_depth(const float* depth, const unsigned char* classes, long long count,
                                           const float* range, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float lo = range[0], hi = range[1];
    if (!(lo <= hi)) { out[i] = 0.0f; return; }
    float span = hi - lo;
    float inv_span = span > 0.0f ? 1.0f / span : 0.0f;
    float scaled = (depth[i] - lo) * inv_span;
    out[i] = (classes == 0 || classes[i] > 0) ? scaled : 0.0f;
}

// Rust's `as u8` of a float: truncation, NaN to 0, saturating at 0 and 255.
__device__ __forceinline__ unsigned char saturate_u8(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 255.0f) return 255;
    return (unsigned char)(int)v;
}

// Inferno colours of normalised depth into the RGBA frame, nearest brightest:
// level = trunc((1 - n) * 255). Background pixels (class 0) stay when a class map is given.
extern "C" __global__ void draw_depth(unsigned char* frame, int width, int height, int stride,
                                      const float* normalised, const unsigned char* classes,
                                      const unsigned char* colormap) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    long long at = (long long)y * width + x;
    if (classes != 0 && classes[at] == 0) return;
    int level = saturate_u8((1.0f - normalised[at]) * 255.0f);
    unsigned char* pixel = frame + (long long)y * stride + 4 * x;
    for (int ch = 0; ch < 3; ++ch) pixel[ch] = colormap[3 * level + ch];
}

// Each normal of a 3 x H x W map divided by its length + 1e-5, in place.
extern "C" __global__ void normalise_normals(float* normals, long long plane) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    float x = normals[i], y = normals[plane + i], z = normals[2 * plane + i];
    float inv = 1.0f / (sqrtf(x * x + y * y + z * z) + 1e-5f);
    normals[i] = x * inv;
    normals[plane + i] = y * inv;
    normals[2 * plane + i] = z * inv;
}

// Unit normals as colours, round((n + 1) / 2 * 255) for x -> R, y -> G, z -> B. Background pixels
// (class 0) stay when a class map is given.
extern "C" __global__ void draw_normals(unsigned char* frame, int width, int height, int stride,
                                        const float* normals, const unsigned char* classes) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    long long plane = (long long)width * height, at = (long long)y * width + x;
    if (classes != 0 && classes[at] == 0) return;
    unsigned char* pixel = frame + (long long)y * stride + 4 * x;
    for (int ch = 0; ch < 3; ++ch) pixel[ch] = saturate_u8((normals[ch * plane + at] + 1.0f) * 0.5f * 255.0f + 0.5f);
}
