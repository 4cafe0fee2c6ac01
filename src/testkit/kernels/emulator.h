// CUDA's execution model on the host, so the kernel sources in this directory compile as C++20
// and run on the CPU (src/testkit/kernels/emulator.rs builds them with the system compiler and
// compares them with the CPU stages). Only what the kernels use is here.
//
// A launch runs the grid's blocks one after another. A block whose kernel synchronises
// (`__syncthreads`) runs its threads as real threads meeting at a barrier; the others run their
// threads in turn on the caller's thread. Dynamic shared memory is one buffer per kernel source,
// filled with garbage before each block (reads before writes show) and guarded past the launch's
// size (writes past it are reported).
#pragma once

#include <barrier>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// `extern __shared__ T name[];` refers to the buffer the harness defines for the source.
#define __shared__

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

// The launch as the Rust side gives it (`HostLaunch` in emulator.rs).
struct SapiensLaunch {
    unsigned int grid[3];
    unsigned int block[3];
    unsigned int shared_bytes;
};

// The most dynamic shared memory a block gets without opting in, as on every CUDA device.
#define SAPIENS_SHARED_CAPACITY 49152

namespace sapiens_host {

// The barrier of the running block, or null where its threads run in turn.
inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local std::string failure;

inline void sync_threads() {
    if (block_barrier == nullptr) {
        std::fputs("host emulation: __syncthreads in a kernel launched without threads\n", stderr);
        std::abort();
    }
    block_barrier->arrive_and_wait();
}

// The shared buffer is one per source and `failure` is per calling thread: one launch at a time.
inline std::mutex launch_lock;

constexpr unsigned char GARBAGE = 0xff; // NaN as floats, -1 as ints
constexpr unsigned char CANARY = 0xa5;

// Runs `kernel` over the grid; null on success, else why the launch failed (as CUDA would
// refuse it, or as the kernel misbehaved).
template <typename Kernel>
const char* launch(const SapiensLaunch* l, bool threaded, unsigned char* shared, size_t capacity, Kernel kernel) {
    std::lock_guard<std::mutex> guard(launch_lock);
    try {
        const dim3 grid{l->grid[0], l->grid[1], l->grid[2]}, block{l->block[0], l->block[1], l->block[2]};
        unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
        if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) return "empty grid or block";
        if (threads > 1024 || block.z > 64) return "more than 1024 threads (or 64 in z) per block";
        if (grid.y > 65535 || grid.z > 65535) return "grid y or z above 65535";
        if (l->shared_bytes > SAPIENS_SHARED_CAPACITY) return "more dynamic shared memory than a block gets";
        size_t shared_bytes = shared == nullptr ? 0 : l->shared_bytes;
        for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
        for (unsigned int bx = 0; bx < grid.x; ++bx) {
            if (shared != nullptr) {
                std::memset(shared, GARBAGE, shared_bytes);
                std::memset(shared + shared_bytes, CANARY, capacity - shared_bytes);
            }
            const uint3 block_index{bx, by, bz};
            auto enter = [&](unsigned int x, unsigned int y, unsigned int z) {
                gridDim = grid;
                blockDim = block;
                blockIdx = block_index;
                threadIdx = uint3{x, y, z};
            };
            if (threaded) {
                std::barrier<> barrier((std::ptrdiff_t)threads);
                std::vector<std::jthread> running;
                running.reserve(threads);
                for (unsigned int z = 0; z < block.z; ++z)
                for (unsigned int y = 0; y < block.y; ++y)
                for (unsigned int x = 0; x < block.x; ++x) {
                    running.emplace_back([&, x, y, z] {
                        enter(x, y, z);
                        block_barrier = &barrier;
                        kernel();
                        // An exited thread no longer holds the others up, as on the device.
                        barrier.arrive_and_drop();
                    });
                }
                running.clear(); // joins
            } else {
                for (unsigned int z = 0; z < block.z; ++z)
                for (unsigned int y = 0; y < block.y; ++y)
                for (unsigned int x = 0; x < block.x; ++x) {
                    enter(x, y, z);
                    kernel();
                }
            }
            for (size_t i = shared_bytes; i < capacity; ++i) {
                if (shared[i] != CANARY) return "the kernel wrote past the dynamic shared memory of its launch";
            }
        }
        return nullptr;
    } catch (const std::exception& e) {
        failure = e.what();
        return failure.c_str();
    }
}

} // namespace sapiens_host

inline void __syncthreads() { sapiens_host::sync_threads(); }

inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }

// CUDA's overloads; the float ones are fminf/fmaxf.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

using std::isfinite;
using std::isnan;
