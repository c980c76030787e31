// tests/gpu/gpu_info.c — prints the CUDA device's name, multiprocessors and peak memory bandwidth (from the memory
// clock and bus width) as one JSON object, for tests/tools/bench_gpu.sh.
#include <stdio.h>
#include <stdlib.h>

#ifdef KN_HAVE_CUDA
#include <cuda_runtime_api.h>

int main(int argc, char **argv) {
    int dev = argc > 1 ? atoi(argv[1]) : 0;
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
        fprintf(stderr, "gpu_info: no CUDA device %d\n", dev);
        return 1;
    }
    int clock_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
    double peak = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0); // double data rate
    printf("{\"name\": \"%s\", \"sm\": %d, \"mem_clock_khz\": %d, \"bus_bits\": %d, \"peak_bw\": %.0f, "
           "\"mem_total\": %zu}\n",
           prop.name, prop.multiProcessorCount, clock_khz, bus_bits, peak, prop.totalGlobalMem);
    return 0;
}
#else
int main(void) {
    fprintf(stderr, "gpu_info: built without CUDA\n");
    return 1;
}
#endif
