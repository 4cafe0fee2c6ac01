// Class-map overlay on an RGBA frame: the device twin of render::blend_class_map.
// out = (v * (256 - w) + colour * w + 128) >> 8 for classes 1 .. palette_len - 1; class 0
// (background) and classes beyond the palette stay untouched. Alpha stays.

extern "C" __global__ void blend_class_map(unsigned char* frame, int width, int height, int stride,
                                           const unsigned char* class_map, const unsigned char* palette,
                                           int palette_len, int weight) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    int k = class_map[(long long)y * width + x];
    if (k == 0 || k >= palette_len) return;
    unsigned char* pixel = frame + (long long)y * stride + 4 * x;
    for (int ch = 0; ch < 3; ++ch) {
        pixel[ch] = (unsigned char)((pixel[ch] * (256 - weight) + palette[3 * k + ch] * weight + 128) >> 8);
    }
}
