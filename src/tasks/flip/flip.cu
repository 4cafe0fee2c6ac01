// The flip test on the device: the twin of src/tasks/flip.rs. Same float operations in the same
// order, so the merged heatmaps equal the CPU's bit for bit.

// Mirrors rows of `width` values left to right: out[r][x] = in[r][width - 1 - x].
extern "C" __global__ void mirror_rows(const float* in, long long rows, int width, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * width) return;
    int x = (int)(i % width);
    out[i] = in[i - x + (width - 1 - x)];
}

// plain[item][k] = (plain[item][k] + mirror(mirrored[item][flip[k]])) * 0.5 for every pixel.
extern "C" __global__ void merge_flipped(float* plain, const float* mirrored, int items, int channels,
                                         const int* flip, int height, int width) {
    long long plane = (long long)height * width;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)items * channels * plane) return;
    long long map = i / plane;
    int item = (int)(map / channels), channel = (int)(map % channels);
    long long at = i % plane;
    int x = (int)(at % width);
    long long source = ((long long)item * channels + flip[channel]) * plane + (at - x) + (width - 1 - x);
    plain[i] = (plain[i] + mirrored[source]) * 0.5f;
}
