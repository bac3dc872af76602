// What the Classifier runs a batch on. TrtEngine (trt_runtime.hpp) is the real one; anything
// else with the same contract (a test double, another runtime) can be passed to Classifier.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vtedge/manifest.hpp"

namespace vtedge {

class InferenceBackend {
public:
    virtual ~InferenceBackend() = default;

    // The engine's input binding: its shape with -1 for the batch (e.g. [-1,3,224,224]), its
    // data type by name ("float32") and the batch range of its optimisation profile.
    virtual std::vector<int64_t> input_shape() const = 0;
    virtual std::string input_dtype() const = 0;
    virtual BatchProfile batch_profile() const = 0;

    // Runs `batch` inputs laid out as input_shape() (batch resolved) and input_dtype(),
    // `bytes` long, and returns the float32 logits, batch x classes. Implementations check
    // `bytes` and `batch` themselves (check_input_size, check_batch) and throw InputError.
    virtual std::vector<float> run(const void* input, std::size_t bytes, int batch) = 0;

    // Latency in milliseconds of each of `runs` executions of the last batch given to run(),
    // after `warmup` untimed ones (as the pipeline's Runner.time_batch).
    virtual std::vector<double> time_last_batch(int warmup, int runs) = 0;

protected:
    InferenceBackend() = default;
    InferenceBackend(const InferenceBackend&) = default;
    InferenceBackend(InferenceBackend&&) = default;
    InferenceBackend& operator=(const InferenceBackend&) = default;
    InferenceBackend& operator=(InferenceBackend&&) = default;
};

}  // namespace vtedge
