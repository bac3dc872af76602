// Checks between the data given to an engine and the engine's bindings. Pure functions (no
// TensorRT), used by TrtEngine before anything is copied to the GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vtedge/manifest.hpp"

namespace vtedge {

// Bits per element of a tensor data type, by the manifest's / numpy's name ("float32" 32,
// "float16" 16, "bfloat16" 16, "int8" 8, "uint8" 8, "bool" 8, "fp8" 8, "int32" 32,
// "int64" 64, "int4" 4, "fp4" 4). Throws InputError for a name it does not know.
int dtype_bits(const std::string& dtype);

// "[8,3,224,224]"; -1 (dynamic) prints as -1.
std::string format_dims(const std::vector<int64_t>& dims);

// Bytes of a tensor of fully known `dims` and `dtype` (sub-byte types rounded up to whole
// bytes). Throws InputError when a dimension is negative (unresolved) or the size overflows.
std::size_t tensor_bytes(const std::vector<int64_t>& dims, const std::string& dtype);

// Checks that `given_bytes` is the size of the input binding `name` with `expected_dims`
// (batch resolved) and `dtype`, and returns that size. Throws InputError naming both sizes,
// e.g. "input 'images': expected 1204224 bytes ([2,3,224,224] float32), got 602112 bytes".
std::size_t check_input_size(const std::vector<int64_t>& expected_dims, const std::string& dtype,
                             std::size_t given_bytes, const std::string& name = "input");

// Checks that `batch` lies in the engine's optimisation profile [min, max]. Throws
// InputError, e.g. "batch 64 is outside the engine's optimisation profile (min 1, max 32)".
void check_batch(int64_t batch, const BatchProfile& profile);

// Checks an engine binding's shape against the shape it must have (the manifest's, or the
// one preprocessing produces): same rank, and equal dimensions wherever both are known
// (>= 0). Throws RuntimeError naming the tensor and both shapes, e.g. "engine input 'images'
// has shape [-1,3,112,112]; the bundle expects [-1,3,224,224]".
void check_binding_shape(const std::vector<int64_t>& engine_dims,
                         const std::vector<int64_t>& expected_dims, const std::string& what);

}  // namespace vtedge
