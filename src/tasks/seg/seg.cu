// Segmentation logits (C x H x W) -> one class per frame pixel: the device twin of
// src/tasks/seg.rs. Taps come from the CPU code; NVRTC runs with --fmad=false, so each
// `a * w0 + b * w1` rounds as on the CPU. Ties go to the lowest class, NaN never wins.

struct LinearTap { int lo, hi; float w_lo, w_hi; };

// Bilinear upsample of every class, then argmax. One thread per output pixel.
extern "C" __global__ void upsample_argmax(const float* logits, int classes, int in_h, int in_w,
                                           const LinearTap* columns, const LinearTap* rows,
                                           int out_w, int out_h, unsigned char* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    LinearTap c = columns[x], r = rows[y];
    long long plane = (long long)in_h * in_w;
    float best = -__int_as_float(0x7f800000);
    int best_class = 0;
    for (int k = 0; k < classes; ++k) {
        const float* map = logits + k * plane;
        const float* upper = map + (long long)r.lo * in_w;
        const float* lower = map + (long long)r.hi * in_w;
        float top = upper[c.lo] * c.w_lo + upper[c.hi] * c.w_hi;
        float bottom = lower[c.lo] * c.w_lo + lower[c.hi] * c.w_hi;
        float value = top * r.w_lo + bottom * r.w_hi;
        if (value > best) { best = value; best_class = k; }
    }
    out[(long long)y * out_w + x] = (unsigned char)best_class;
}

// Argmax at the logits' resolution, written to `low` (H x W).
extern "C" __global__ void argmax_classes(const float* logits, int classes, int in_h, int in_w, unsigned char* low) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= in_w || y >= in_h) return;
    long long plane = (long long)in_h * in_w, at = (long long)y * in_w + x;
    float best = -__int_as_float(0x7f800000);
    int best_class = 0;
    for (int k = 0; k < classes; ++k) {
        float value = logits[k * plane + at];
        if (value > best) { best = value; best_class = k; }
    }
    low[at] = (unsigned char)best_class;
}

// Nearest upsample of the low-resolution class map with OpenCV's source indices.
extern "C" __global__ void nearest_upsample(const unsigned char* low, int in_w, const int* src_columns,
                                            const int* src_rows, int out_w, int out_h, unsigned char* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    out[(long long)y * out_w + x] = low[(long long)src_rows[y] * in_w + src_columns[x]];
}
