// kernels/kn_quant.h — reference (scalar) dequantisation and quantisation of GGML block types.
// These are the definitions the fast kernels and the tests are checked against.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn_types.h"

// Dequantise n values (n a multiple of the block size) of `type` at src into dst. 0 ok, -1 unsupported.
int kn_dequant_row(int type, const void *src, float *dst, int64_t n);
// Quantise n fp32 values into `type` blocks (simple min/max or RMSE-fitted scales). 0 ok, -1 unsupported.
int kn_quantize_row(int type, const float *src, void *dst, int64_t n);
// Whether the kernels support computing on `type`.
int kn_type_supported(int type);
