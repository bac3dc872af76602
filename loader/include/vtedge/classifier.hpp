// The loader as an application calls it: open a bundle (verified before anything in it is
// deserialized), get the engine that runs on this TensorRT and GPU (a bundle engine, or one
// built once from build_plan.json into a cache), classify images, measure latency.
//
//   vtedge::Classifier clf("engines/vt_demo", {/*precision*/ "fp16"});
//   for (const vtedge::Prediction& p : clf.classify("cat.jpg", 5))
//       std::printf("%.3f %s\n", p.score, p.label.c_str());
//
// Everything up to the engine (bundle verification, engine choice, preprocessing into the
// input tensor, input size checks, top-k, latency statistics) works without TensorRT; only
// the constructors that load an engine need it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vtedge/backend.hpp"
#include "vtedge/build_plan.hpp"
#include "vtedge/bundle.hpp"
#include "vtedge/compat.hpp"
#include "vtedge/image.hpp"
#include "vtedge/latency.hpp"
#include "vtedge/preprocess.hpp"
#include "vtedge/topk.hpp"

namespace vtedge {

struct ClassifierOptions {
    // Precision to run ("fp16", "int8-trt", ...). Empty: the first bundle engine that runs on
    // this system; without bundle engines and with build_engine, the first plan for this
    // TensorRT.
    std::string precision;
    // When no bundle engine runs here: build one from build_plan.json and the precision's
    // ONNX (needs TensorRT's ONNX parser), once, into engine_cache.
    bool build_engine = false;
    // Where built engines (and their timing caches) are kept; empty: default_engine_cache().
    std::filesystem::path engine_cache;
    // CUDA device.
    int device = 0;
    // Progress and warnings ("building fp16 engine from ... (once) ...", "warning: ...");
    // nothing is printed when empty.
    std::function<void(const std::string&)> on_message;
};

// $VTEDGE_CACHE_DIR, else $XDG_CACHE_HOME/vtedge, else $HOME/.cache/vtedge, else
// <temporary directory>/vtedge.
std::filesystem::path default_engine_cache();

// The engine a Classifier runs.
struct EngineChoice {
    std::string precision;
    bool built = false;               // false: a bundle engine; true: built from build_plan.json
    std::filesystem::path path;       // the engine file (inside the bundle, or in the cache)
    std::string sha256;               // bundle engine: the verified hash, checked again on the
                                      // bytes that are deserialized; built: empty
    std::optional<BuildPlan> plan;    // built: the plan it is (or was) built from
    bool needs_build = false;         // built, and not in the cache yet
};

// Chooses the engine for `system` (the TensorRT version and compute capability found at run
// time, query_system()):
//  - precision: options.precision; else the first bundle engine that runs on `system`; else
//    the first bundle engine's (so the error says why it does not run); else, with
//    build_engine, the first plan for this TensorRT;
//  - a bundle engine of that precision built for this TensorRT release and GPU;
//  - else, with build_engine, the build_plan.json plan for that precision and this TensorRT,
//    whose ONNX must be a verified bundle file; the engine goes to
//    <engine_cache>/<bundle name>/<first 16 hex digits of the ONNX's SHA-256>/<engine_file_name>
//    (needs_build when that file does not exist yet).
// Throws CompatibilityError when nothing runs here (the message lists why and the bundle's
// rebuild command) and IntegrityError when the plan's ONNX is not part of the verified bundle.
EngineChoice choose_engine(const Bundle& bundle, const SystemInfo& system,
                           const ClassifierOptions& options = {});

// The input shape the manifest's preprocessing produces: [-1, 3, crop, crop].
std::vector<int64_t> preprocessed_input_shape(const Manifest& manifest);

// Per-image top-k of a batch of logits (batch x classes, row-major) with the manifest's labels.
std::vector<std::vector<Prediction>> top_k_rows(const std::vector<float>& logits, int batch,
                                                const std::vector<std::string>& labels, int k);

// What the last classify / infer call took, host wall clock.
struct Timing {
    int batch = 0;
    double preprocess_ms = 0.0;  // decoding, resizing, normalising (0 for a given Tensor)
    double infer_ms = 0.0;       // engine calls: copy in, run, copy out
};

// Owns the verified bundle and the engine (GPU memory, CUDA stream and events are freed when
// it goes away). Movable, not copyable; one thread at a time.
class Classifier {
public:
    // Opens and verifies `bundle_dir` (open_bundle: manifest, then every file's size and
    // SHA-256), chooses the engine (choose_engine, for query_system(options.device)),
    // builds it when options.build_engine says so and it is not cached, and loads it. Needs the
    // TensorRT runtime (has_tensorrt_runtime()); without it, throws RuntimeError after the
    // bundle was verified. Other errors: ManifestError, IntegrityError, CompatibilityError,
    // RuntimeError, as their names say.
    explicit Classifier(const std::filesystem::path& bundle_dir, ClassifierOptions options = {});
    // The same on a bundle opened (and so verified) with open_bundle().
    explicit Classifier(Bundle bundle, ClassifierOptions options = {});
    // Runs on `backend` instead of a TensorRT engine (another runtime; tests). Checks that
    // its input binding is what the manifest's preprocessing produces.
    Classifier(Bundle bundle, std::unique_ptr<InferenceBackend> backend,
               ClassifierOptions options = {});

    ~Classifier();
    Classifier(Classifier&&) noexcept;
    Classifier& operator=(Classifier&&) noexcept;
    Classifier(const Classifier&) = delete;
    Classifier& operator=(const Classifier&) = delete;

    const Bundle& bundle() const;
    const Manifest& manifest() const;
    // The TensorRT version and GPU found, and the engine chosen; empty with a caller's backend.
    const SystemInfo& system() const;
    const EngineChoice& engine() const;
    // The engine's batch range.
    BatchProfile batch_profile() const;

    // Top-k classes of one image (a JPEG / PNG file, or decoded 8-bit RGB), best first.
    std::vector<Prediction> classify(const std::filesystem::path& image, int k = 5);
    std::vector<Prediction> classify(const RgbImage& image, int k = 5);

    // Top-k classes of each image. Batches larger than the engine's profile maximum run in
    // several engine calls; an empty list gives an empty result.
    std::vector<std::vector<Prediction>> classify_batch(const std::vector<std::filesystem::path>& images,
                                                        int k = 5);
    std::vector<std::vector<Prediction>> classify_batch(const std::vector<RgbImage>& images, int k = 5);

    // Logits (batch x classes) of a preprocessed NCHW float32 batch (preprocess_batch with the
    // manifest's preprocessing). Throws InputError when its shape or size does not match the
    // engine's input binding, or its batch is outside the engine's optimisation profile.
    std::vector<float> infer(const Tensor& batch);
    // The same, with top-k per image.
    std::vector<std::vector<Prediction>> classify_batch(const Tensor& batch, int k = 5);

    const Timing& last_timing() const;

    // Latency of `runs` executions of the last engine call's batch after `warmup` untimed
    // ones (TensorRT: CUDA events around copy in, run, copy out), with the pipeline's
    // statistics (latency_stats). Throws RuntimeError before any engine call.
    LatencyStats benchmark(int warmup, int runs);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    Impl& impl();
    const Impl& impl() const;
};

}  // namespace vtedge
