#pragma once

namespace vtedge {

// True when the library was built with the TensorRT engine runtime (trt_runtime.hpp).
bool has_tensorrt_runtime();

}  // namespace vtedge
