// DARK-UDP decode of pose heatmaps (items x K x H x W) on the device: the twin of
// src/tasks/pose/decode.rs, so the heatmaps never leave the GPU, only K peaks per item.
// The CPU code blurs only where the maximum can lie; here every map is blurred whole, which
// gives the exact blurred maximum, but in shared memory, tile by tile, and never written out:
// the decode reads the heatmaps once and the 3x3 neighbourhood of each peak is blurred again
// where it is needed. NVRTC runs with --fmad=false, so each `acc += w * v` rounds as on the
// CPU, and the taps are summed in the same order (rows first, then columns).
#define RADIUS 5
#define TAPS 11
// A tile of TILE x TILE blurred values per block of 32 x 8 threads; STRIP values per thread in
// each pass (columns in the row pass, rows in the column pass), read as one run of registers.
#define TILE 32
#define STRIP 4
#define HALO (TILE + 2 * RADIUS)
// Floats per staged row: the HALO needed, padded so that each thread's 16 start on a float4
// (the last thread's reach column 43). `BLUR_*` in cuda.rs mirrors these sizes.
#define STAGED_STRIDE 44

struct Kernel { float w[TAPS]; };

// Floats as unsigned keys that order as the floats do (-0 taken as +0, which compares equal).
__device__ __forceinline__ unsigned int ordered(float value) {
    unsigned int bits = (unsigned int)__float_as_int(value == 0.0f ? 0.0f : value);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float unordered(unsigned int key) {
    return __int_as_float((int)((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key));
}

// A candidate peak as one key: the value, then the earlier index first. 0: no candidate.
__device__ __forceinline__ unsigned long long peak_key(float value, int index) {
    return ((unsigned long long)ordered(value) << 32) | (0xffffffffu - (unsigned int)index);
}

__device__ __forceinline__ unsigned long long larger(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// 16 staged floats from a float4-aligned address.
__device__ __forceinline__ void load16(const float* at, float v[16]) {
#ifdef SAPIENS_HOST_EMULATION
    for (int i = 0; i < 16; ++i) v[i] = at[i];
#else
    for (int i = 0; i < 4; ++i) {
        float4 q = reinterpret_cast<const float4*>(at)[i];
        v[4 * i] = q.x; v[4 * i + 1] = q.y; v[4 * i + 2] = q.z; v[4 * i + 3] = q.w;
    }
#endif
}

// Tiles per map: TILE x TILE blurred values each, partial at the right and bottom edges.
__device__ __forceinline__ int tiles_per_map(int width, int height) {
    return ((width + TILE - 1) / TILE) * ((height + TILE - 1) / TILE);
}

// The largest of every thread's `keys` (a power of two of them) into keys[0].
__device__ void reduce_largest(unsigned long long* keys, int tid, int threads) {
    for (int half = threads / 2; half > 0; half /= 2) {
        __syncthreads();
        if (tid < half) keys[tid] = larger(keys[tid], keys[tid + half]);
    }
    __syncthreads();
}

// One tile of one map per block (a 1-D grid, map-major, so no grid dimension limits the maps):
// the first argmax of the original (NaN never wins) and the largest blurred value, as two keys
// per tile in `partials`, for refine_peaks to combine. Zero padding, as the CPU's blur.
extern "C" __global__ void blur_maxima(const float* maps, int width, int height, Kernel k, unsigned long long* partials) {
    // Dynamic shared memory starts 16-byte aligned (no static shared array precedes it), as the
    // float4 loads need.
    extern __shared__ float shared[];
    float* staged = shared;                     // HALO x STAGED_STRIDE: the map around the tile
    float* rows = staged + HALO * STAGED_STRIDE; // HALO x TILE: the row pass
    unsigned long long* keys = (unsigned long long*)(rows + HALO * TILE);
    int threads = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
    int across = (width + TILE - 1) / TILE, tiles = tiles_per_map(width, height);
    long long tile = blockIdx.x;
    int tile_in_map = (int)(tile % tiles);
    const float* map = maps + tile / tiles * width * height;
    int x0 = tile_in_map % across * TILE, y0 = tile_in_map / across * TILE;

    unsigned long long peak = 0;
    for (int i = tid; i < HALO * STAGED_STRIDE; i += threads) {
        int r = i / STAGED_STRIDE, c = i % STAGED_STRIDE;
        int x = x0 + c - RADIUS, y = y0 + r - RADIUS;
        bool inside = x >= 0 && x < width && y >= 0 && y < height;
        float v = inside ? map[y * width + x] : 0.0f;
        staged[i] = v;
        bool own = c >= RADIUS && c < RADIUS + TILE && r >= RADIUS && r < RADIUS + TILE;
        if (inside && own && !isnan(v)) peak = larger(peak, peak_key(v, y * width + x));
    }
    __syncthreads();
    for (int task = tid; task < HALO * (TILE / STRIP); task += threads) {
        int r = task / (TILE / STRIP), c = task % (TILE / STRIP) * STRIP;
        float v[16];
        load16(staged + r * STAGED_STRIDE + c, v);
        for (int o = 0; o < STRIP; ++o) {
            float acc = 0.0f;
            for (int t = 0; t < TAPS; ++t) acc += k.w[t] * v[o + t];
            rows[r * TILE + c + o] = acc;
        }
    }
    __syncthreads();
    unsigned long long top = 0;
    int x = x0 + threadIdx.x;
    for (int strip = threadIdx.y; strip < TILE / STRIP; strip += blockDim.y) {
        float v[STRIP + 2 * RADIUS];
        for (int i = 0; i < STRIP + 2 * RADIUS; ++i) v[i] = rows[(strip * STRIP + i) * TILE + threadIdx.x];
        for (int o = 0; o < STRIP; ++o) {
            float acc = 0.0f;
            for (int t = 0; t < TAPS; ++t) acc += k.w[t] * v[o + t];
            if (x < width && y0 + strip * STRIP + o < height && !isnan(acc)) top = larger(top, ordered(acc));
        }
    }
    keys[tid] = peak;
    reduce_largest(keys, tid, threads);
    if (tid == 0) partials[2 * tile] = keys[0];
    keys[tid] = top;
    reduce_largest(keys, tid, threads);
    if (tid == 0) partials[2 * tile + 1] = keys[0];
}

// The blurred value at (x, y), rows first then columns, in the order blur_maxima sums them.
__device__ float blurred_at(const float* map, int width, int height, const Kernel& k, int x, int y) {
    float acc = 0.0f;
    for (int t = 0; t < TAPS; ++t) {
        int sy = y + t - RADIUS;
        float row = 0.0f;
        if (sy >= 0 && sy < height) {
            for (int u = 0; u < TAPS; ++u) {
                int sx = x + u - RADIUS;
                row += k.w[u] * ((sx >= 0 && sx < width) ? map[sy * width + sx] : 0.0f);
            }
        }
        acc += k.w[t] * row;
    }
    return acc;
}

struct Peak { float x, y, score; };

// One block per map (a power of two of threads, at least 9): the tiles' keys combined, then
// mmpose's Newton step on the log of the rescaled 3x3 blurred neighbourhood of the peak.
extern "C" __global__ void refine_peaks(const float* maps, const unsigned long long* partials, int width, int height, Kernel k,
                                        Peak* peaks) {
    extern __shared__ float shared[];
    unsigned long long* keys = (unsigned long long*)shared;
    float* lg = (float*)(keys + 2 * blockDim.x); // the 3x3 neighbourhood, row-major
    int tid = threadIdx.x;
    const float* map = maps + (long long)blockIdx.x * width * height;
    int tiles = tiles_per_map(width, height);
    const unsigned long long* mine = partials + 2LL * blockIdx.x * tiles;
    unsigned long long peak = 0, top = 0;
    for (int t = tid; t < tiles; t += blockDim.x) {
        peak = larger(peak, mine[2 * t]);
        top = larger(top, mine[2 * t + 1]);
    }
    keys[tid] = peak;
    keys[blockDim.x + tid] = top;
    reduce_largest(keys, tid, blockDim.x);
    reduce_largest(keys + blockDim.x, tid, blockDim.x);
    peak = keys[0];
    // No value but NaN: no peak, scored -inf (the running maximum's start).
    int index = peak == 0 ? -1 : (int)(0xffffffffu - (unsigned int)(peak & 0xffffffffu));
    float score = index < 0 ? -__int_as_float(0x7f800000) : map[index];
    float blurred_top = keys[blockDim.x] == 0 ? -__int_as_float(0x7f800000) : unordered((unsigned int)keys[blockDim.x]);
    bool refined = index >= 0 && score > 0.0f && blurred_top > 0.0f;
    int px = index < 0 ? 0 : index % width, py = index < 0 ? 0 : index / width;
    if (refined && tid < 9) {
        // Replicate padding: offsets past the edge read the edge pixel.
        int sx = min(max(px + tid % 3 - 1, 0), width - 1);
        int sy = min(max(py + tid / 3 - 1, 0), height - 1);
        float v = blurred_at(map, width, height, k, sx, sy) * (score / blurred_top);
        // Not fminf/fmaxf, which turn NaN into a bound: NaN stays NaN (as the CPU's
        // f32::clamp and NumPy's clip), and the non-finite step below is dropped.
        float clipped = v < 1e-3f ? 1e-3f : (v > 50.0f ? 50.0f : v);
        lg[tid] = logf(clipped);
    }
    __syncthreads();
    if (tid != 0) return;
    Peak result = {-1.0f, -1.0f, score};
    if (!(index >= 0 && score > 0.0f)) { peaks[blockIdx.x] = result; return; }
    double dx = 0.0, dy = 0.0;
    if (refined) {
        float centre = lg[4], x_plus = lg[5], x_minus = lg[3], y_plus = lg[7], y_minus = lg[1];
        float gx = 0.5f * (x_plus - x_minus);
        float gy = 0.5f * (y_plus - y_minus);
        float hxx = x_plus - 2.0f * centre + x_minus;
        float hyy = y_plus - 2.0f * centre + y_minus;
        float hxy = 0.5f * (lg[8] - x_plus - y_plus + centre + centre - x_minus - y_minus + lg[0]);
        const double eps = 1.1920928955078125e-07;
        double a = (double)hxx + eps, b = (double)hxy, d = (double)hyy + eps;
        double det = a * d - b * b;
        if (det != 0.0) {
            double ox = (d * gx - b * gy) / det, oy = (a * gy - b * gx) / det;
            if (isfinite(ox) && isfinite(oy)) { dx = ox; dy = oy; }
        }
    }
    result.x = (float)((double)px - dx);
    result.y = (float)((double)py - dy);
    peaks[blockIdx.x] = result;
}
