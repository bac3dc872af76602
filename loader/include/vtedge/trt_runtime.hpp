// TensorRT engine runtime (compiled only when TensorRT is found; VTEDGE_WITH_TENSORRT).
// The header itself needs neither TensorRT nor CUDA.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "vtedge/build_plan.hpp"
#include "vtedge/compat.hpp"
#include "vtedge/manifest.hpp"

namespace vtedge {

// TensorRT version of the loaded library ("10.3.0") and the GPU's compute capability.
SystemInfo query_system(int device = 0);

// Name of the CUDA device, e.g. "Orin".
std::string device_name(int device = 0);

struct LatencyStats {
    int runs = 0;
    double p50_ms = 0.0;
    double p99_ms = 0.0;
    double mean_ms = 0.0;
    double min_ms = 0.0;
    double max_ms = 0.0;
};

class TrtEngine {
public:
    // Reads the engine file, checks its SHA-256 against `expected_sha256` on the bytes in
    // memory (so what is deserialized is what was verified), deserializes it and binds the
    // manifest's input and output tensors by name. An empty `expected_sha256` skips the
    // check; use it only for engines this process built itself.
    TrtEngine(const std::filesystem::path& engine_path, const std::string& expected_sha256,
              const TensorInfo& input, const TensorInfo& output, int device = 0);
    ~TrtEngine();
    TrtEngine(TrtEngine&&) noexcept;
    TrtEngine& operator=(TrtEngine&&) noexcept;
    TrtEngine(const TrtEngine&) = delete;
    TrtEngine& operator=(const TrtEngine&) = delete;

    // Runs one NCHW float32 batch (`batch` images of `per_image` floats) and returns the
    // logits, batch x classes.
    std::vector<float> infer(const float* input, int batch, std::size_t per_image);

    // Times `runs` executions of the last batch given to infer() with CUDA events, after
    // `warmup` untimed runs.
    LatencyStats benchmark(int warmup, int runs);

    // Number of output values per image after the last infer().
    std::size_t output_per_image() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// True when this build can create engines (TensorRT's ONNX parser was found).
bool engine_builder_available();

// Builds an engine from the plan's ONNX (a verified bundle file), and writes it atomically
// to `engine_path`. The timing cache, when the plan names one, is read from and written to
// `cache_dir`.
void build_engine(const std::filesystem::path& bundle_dir, const BuildPlan& plan,
                  const TensorInfo& input, int crop, const std::filesystem::path& engine_path,
                  const std::filesystem::path& cache_dir);

}  // namespace vtedge
