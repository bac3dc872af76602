// TensorRT engine runtime (compiled only when TensorRT is found; VTEDGE_WITH_TENSORRT).
// The header itself needs neither TensorRT nor CUDA.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "vtedge/backend.hpp"
#include "vtedge/build_plan.hpp"
#include "vtedge/compat.hpp"
#include "vtedge/latency.hpp"
#include "vtedge/manifest.hpp"

namespace vtedge {

// TensorRT version of the loaded library ("10.3.0") and the GPU's compute capability.
SystemInfo query_system(int device = 0);

// Name of the CUDA device, e.g. "Orin".
std::string device_name(int device = 0);

class TrtEngine : public InferenceBackend {
public:
    // Reads the engine file, checks its SHA-256 against `expected_sha256` on the bytes in
    // memory (so what is deserialized is what was verified), deserializes it and binds the
    // manifest's input and output tensors by name; their shapes must agree with the
    // manifest's wherever both are known. An empty `expected_sha256` skips the hash check;
    // use it only for engines this process built itself.
    TrtEngine(const std::filesystem::path& engine_path, const std::string& expected_sha256,
              const TensorInfo& input, const TensorInfo& output, int device = 0);
    ~TrtEngine() override;  // synchronizes the stream, frees GPU and pinned memory, stream, events
    TrtEngine(TrtEngine&&) noexcept;
    TrtEngine& operator=(TrtEngine&&) noexcept;
    TrtEngine(const TrtEngine&) = delete;
    TrtEngine& operator=(const TrtEngine&) = delete;

    // The input binding: shape with -1 for the batch, data type ("float32"), and the batch
    // range of optimisation profile 0.
    std::vector<int64_t> input_shape() const override;
    std::string input_dtype() const override;
    BatchProfile batch_profile() const override;

    // Runs one batch of `bytes` bytes and returns the logits, batch x classes. Throws
    // InputError when `batch` is outside the optimisation profile or `bytes` is not the size
    // of the input binding for that batch (check_batch, check_input_size), before anything is
    // copied to the GPU.
    std::vector<float> run(const void* input, std::size_t bytes, int batch) override;

    // run() for `batch` float32 images of `per_image` floats each.
    std::vector<float> infer(const float* input, int batch, std::size_t per_image);

    // CUDA-event latency (copy in, execute, copy out, as the pipeline's TensorRT runner) of
    // each of `runs` executions of the last batch given to run(), after `warmup` untimed ones.
    std::vector<double> time_last_batch(int warmup, int runs) override;

    // latency_stats() of time_last_batch(warmup, runs).
    LatencyStats benchmark(int warmup, int runs);

    // Number of output values per image after the last run().
    std::size_t output_per_image() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    Impl& impl() const;
};

// True when this build can create engines (TensorRT's ONNX parser was found).
bool engine_builder_available();

// What build_engine() did besides writing the engine.
struct BuildResult {
    bool timing_cache_used = false;     // a timing cache was attached to the build
    bool timing_cache_written = false;  // and written back to the cache folder
    // Problems that did not stop the build, one line each: a timing cache that TensorRT
    // could not read or attach (the build goes on without it, or with a fresh one), or that
    // could not be written back.
    std::vector<std::string> warnings;
};

// Builds an engine from the plan's ONNX (a verified bundle file), and writes it atomically
// to `engine_path`. The timing cache, when the plan names one, is read from and written to
// `cache_dir`; a timing cache that cannot be used is a warning in the result, never an error.
// Throws RuntimeError when the build itself fails or the ONNX parser was not compiled in.
BuildResult build_engine(const std::filesystem::path& bundle_dir, const BuildPlan& plan,
                         const TensorInfo& input, int crop, const std::filesystem::path& engine_path,
                         const std::filesystem::path& cache_dir);

}  // namespace vtedge
