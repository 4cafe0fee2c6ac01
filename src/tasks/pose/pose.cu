// DARK-UDP decode of pose heatmaps (items x K x H x W) on the device: the twin of
// src/tasks/pose_decode.rs, so the heatmaps never leave the GPU, only K peaks per item.
// The CPU code blurs only where the maximum can lie; here the whole map is blurred (cheap on a
// GPU), which gives the exact blurred maximum. NVRTC runs with --fmad=false, so each
// `acc += w * v` rounds as on the CPU, and the taps are summed in the same order.

#define RADIUS 5
#define TAPS 11

struct Kernel { float w[TAPS]; };

// Horizontal pass, zero padding. One thread per pixel of every map.
extern "C" __global__ void blur_rows(const float* maps, int width, int height, long long count, Kernel k, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    int x = (int)(i % width);
    const float* row = maps + (i - x);
    float acc = 0.0f;
    for (int t = 0; t < TAPS; ++t) {
        int sx = x + t - RADIUS;
        float v = (sx >= 0 && sx < width) ? row[sx] : 0.0f;
        acc += k.w[t] * v;
    }
    out[i] = acc;
}

// Vertical pass, zero padding.
extern "C" __global__ void blur_columns(const float* rows, int width, int height, long long count, Kernel k, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    long long plane = (long long)width * height;
    int y = (int)((i % plane) / width);
    float acc = 0.0f;
    for (int t = 0; t < TAPS; ++t) {
        int sy = y + t - RADIUS;
        float v = (sy >= 0 && sy < height) ? rows[i + (long long)(sy - y) * width] : 0.0f;
        acc += k.w[t] * v;
    }
    out[i] = acc;
}

struct Peak { float x, y, score; };

// NaN never wins: only a strictly greater value replaces the running maximum.
__device__ __forceinline__ bool better(float value, int index, float best, int best_index) {
    return value > best || (value == best && index < best_index);
}

// One block per map: the first (row-major) argmax of the original, the maximum of the blurred
// map, then mmpose's Newton step on the log of the rescaled 3x3 neighbourhood.
extern "C" __global__ void refine_peaks(const float* maps, const float* blurred, int width, int height, Peak* peaks) {
    extern __shared__ float shared[];
    float* best_values = shared;
    int* best_indices = (int*)(shared + blockDim.x);
    float* blurred_max = (float*)(best_indices + blockDim.x);
    long long plane = (long long)width * height;
    const float* map = maps + blockIdx.x * plane;
    const float* blur = blurred + blockIdx.x * plane;
    const float neg_inf = -__int_as_float(0x7f800000);
    float best = neg_inf, best_blur = neg_inf;
    int best_index = 0x7fffffff;
    for (int i = threadIdx.x; i < plane; i += blockDim.x) {
        if (better(map[i], i, best, best_index)) { best = map[i]; best_index = i; }
        if (blur[i] > best_blur) best_blur = blur[i];
    }
    best_values[threadIdx.x] = best;
    best_indices[threadIdx.x] = best_index;
    blurred_max[threadIdx.x] = best_blur;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            int other = threadIdx.x + half;
            if (better(best_values[other], best_indices[other], best_values[threadIdx.x], best_indices[threadIdx.x])) {
                best_values[threadIdx.x] = best_values[other];
                best_indices[threadIdx.x] = best_indices[other];
            }
            if (blurred_max[other] > blurred_max[threadIdx.x]) blurred_max[threadIdx.x] = blurred_max[other];
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    float score = best_values[0];
    Peak peak = {-1.0f, -1.0f, score};
    if (!(score > 0.0f) || best_indices[0] == 0x7fffffff) { peaks[blockIdx.x] = peak; return; }
    int px = best_indices[0] % width, py = best_indices[0] / width;
    double dx = 0.0, dy = 0.0;
    float top = blurred_max[0];
    if (top > 0.0f) {
        float scale = score / top;
        float lg[3][3];
        for (int j = 0; j < 3; ++j) {
            for (int i = 0; i < 3; ++i) {
                // Replicate padding: offsets past the edge read the edge pixel.
                int sx = min(max(px + i - 1, 0), width - 1);
                int sy = min(max(py + j - 1, 0), height - 1);
                float v = blur[(long long)sy * width + sx] * scale;
                // Not fminf/fmaxf, which turn NaN into a bound: NaN stays NaN (as the CPU's
                // f32::clamp and NumPy's clip), and the non-finite step below is dropped.
                float clipped = v < 1e-3f ? 1e-3f : (v > 50.0f ? 50.0f : v);
                lg[j][i] = logf(clipped);
            }
        }
        float centre = lg[1][1], x_plus = lg[1][2], x_minus = lg[1][0], y_plus = lg[2][1], y_minus = lg[0][1];
        float gx = 0.5f * (x_plus - x_minus);
        float gy = 0.5f * (y_plus - y_minus);
        float hxx = x_plus - 2.0f * centre + x_minus;
        float hyy = y_plus - 2.0f * centre + y_minus;
        float hxy = 0.5f * (lg[2][2] - x_plus - y_plus + centre + centre - x_minus - y_minus + lg[0][0]);
        const double eps = 1.1920928955078125e-07;
        double a = (double)hxx + eps, b = (double)hxy, d = (double)hyy + eps;
        double det = a * d - b * b;
        if (det != 0.0) {
            double ox = (d * gx - b * gy) / det, oy = (a * gy - b * gx) / det;
            if (isfinite(ox) && isfinite(oy)) { dx = ox; dy = oy; }
        }
    }
    peak.x = (float)((double)px - dx);
    peak.y = (float)((double)py - dy);
    peaks[blockIdx.x] = peak;
}
