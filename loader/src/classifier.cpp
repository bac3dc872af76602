#include "vtedge/classifier.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <utility>

#include "vtedge/error.hpp"
#include "vtedge/integrity.hpp"
#include "vtedge/tensor_check.hpp"
#ifdef VTEDGE_WITH_TENSORRT
#include "vtedge/trt_runtime.hpp"
#endif

namespace fs = std::filesystem;

namespace vtedge {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The build plan for `precision` (empty: any) and the TensorRT found here; when the bundle
// has none for this TensorRT, a CompatibilityError that lists the plans it has.
BuildPlan plan_for(const Bundle& b, const std::string& precision, const SystemInfo& sys) {
    if (b.manifest.files.count("build_plan.json") == 0) {
        throw CompatibilityError("no engine of this bundle runs on TensorRT " + sys.tensorrt_version +
                                 " on compute capability " + sys.compute_capability +
                                 ", and it has no build_plan.json to build one: rebuild the "
                                 "bundle with: " + b.manifest.rebuild_command);
    }
    try {
        return read_build_plan(b.dir, precision, sys.tensorrt_version);
    } catch (const CompatibilityError& e) {
        throw CompatibilityError(std::string(e.what()) + ": rebuild the bundle for it with: " +
                                 b.manifest.rebuild_command);
    }
}

std::string pick_precision(const Bundle& b, const SystemInfo& sys, const ClassifierOptions& o) {
    if (!o.precision.empty()) return o.precision;
    for (const auto& e : b.manifest.engines) {
        if (check_engine(e, sys, b.manifest.rebuild_command).ok) return e.precision;
    }
    if (!b.manifest.engines.empty()) return b.manifest.engines.front().precision;
    if (o.build_engine) return plan_for(b, "", sys).precision;
    throw CompatibilityError("bundle has no engines; build one on this device with: " +
                             b.manifest.rebuild_command +
                             " (or let the loader build it: vt_infer --build-engine, "
                             "ClassifierOptions::build_engine)");
}

#ifdef VTEDGE_WITH_TENSORRT
void say(const ClassifierOptions& o, const std::string& message) {
    if (o.on_message) o.on_message(message);
}
#endif

}  // namespace

fs::path default_engine_cache() {
    const auto set = [](const char* name) -> const char* {
        const char* v = std::getenv(name);
        return v && *v ? v : nullptr;
    };
    if (const char* dir = set("VTEDGE_CACHE_DIR")) return dir;
    if (const char* xdg = set("XDG_CACHE_HOME")) return fs::path(xdg) / "vtedge";
    if (const char* home = set("HOME")) return fs::path(home) / ".cache" / "vtedge";
    return fs::temp_directory_path() / "vtedge";
}

EngineChoice choose_engine(const Bundle& b, const SystemInfo& sys, const ClassifierOptions& o) {
    const Manifest& m = b.manifest;
    EngineChoice choice;
    choice.precision = pick_precision(b, sys, o);
    try {
        const EngineEntry& e = select_engine(m, choice.precision, sys);
        choice.path = resolve_bundle_path(b.dir, e.path);
        choice.sha256 = e.sha256;
        return choice;
    } catch (const CompatibilityError&) {
        if (!o.build_engine) throw;
    }
    BuildPlan plan = plan_for(b, choice.precision, sys);
    const CompatResult can_build = check_build_plan(plan, sys);
    if (!can_build.ok) {
        throw CompatibilityError(can_build.message + ": rebuild the bundle with: " + m.rebuild_command);
    }
    const auto onnx = m.files.find(plan.onnx);
    if (onnx == m.files.end()) {
        throw IntegrityError("build_plan.json: onnx '" + plan.onnx +
                             "' is not part of the verified bundle");
    }
    // One cache folder per bundle name and ONNX content, so a changed model never reuses an
    // engine built from the old one.
    const fs::path cache = (o.engine_cache.empty() ? default_engine_cache() : o.engine_cache) /
                           m.name / onnx->second.sha256.substr(0, 16);
    choice.built = true;
    choice.path = cache / engine_file_name(plan, plan.model.empty() ? m.name : plan.model, sys);
    choice.needs_build = !fs::exists(choice.path);
    choice.plan = std::move(plan);
    return choice;
}

std::vector<int64_t> preprocessed_input_shape(const Manifest& m) {
    return {-1, 3, m.preprocessing.crop, m.preprocessing.crop};
}

std::vector<std::vector<Prediction>> top_k_rows(const std::vector<float>& logits, int batch,
                                                const std::vector<std::string>& labels, int k) {
    if (batch <= 0) return {};
    if (logits.size() % static_cast<std::size_t>(batch) != 0) {
        throw RuntimeError("engine returned " + std::to_string(logits.size()) +
                           " logits for a batch of " + std::to_string(batch));
    }
    const std::size_t classes = logits.size() / static_cast<std::size_t>(batch);
    std::vector<std::vector<Prediction>> out;
    out.reserve(static_cast<std::size_t>(batch));
    for (std::size_t i = 0; i < static_cast<std::size_t>(batch); ++i) {
        const auto row = logits.begin() + static_cast<std::ptrdiff_t>(i * classes);
        out.push_back(top_k(std::vector<float>(row, row + static_cast<std::ptrdiff_t>(classes)), labels, k));
    }
    return out;
}

// ---------------------------------------------------------------------------------------

struct Classifier::Impl {
    Bundle bundle;
    ClassifierOptions options;
    SystemInfo system;
    EngineChoice choice;
    std::unique_ptr<InferenceBackend> backend;  // declared last: released first
    BatchProfile profile;
    std::vector<int64_t> input_shape;  // the engine's, batch -1
    Timing last;
    int last_batch = 0;

    void attach(std::unique_ptr<InferenceBackend> b) {
        if (!b) throw RuntimeError("Classifier: no inference backend");
        // The engine must take what preprocessing makes: [N, 3, crop, crop] float32.
        check_binding_shape(b->input_shape(), preprocessed_input_shape(bundle.manifest),
                            "input '" + bundle.manifest.input.name + "'");
        if (b->input_dtype() != "float32") {
            throw RuntimeError("engine input '" + bundle.manifest.input.name + "' is " +
                               b->input_dtype() + "; preprocessing produces float32");
        }
        profile = b->batch_profile();
        input_shape = preprocessed_input_shape(bundle.manifest);
        backend = std::move(b);
    }

    // Builds (when needed) and loads the engine chosen for this system.
    void load_engine() {
#ifdef VTEDGE_WITH_TENSORRT
        const Manifest& m = bundle.manifest;
        system = query_system(options.device);
        choice = choose_engine(bundle, system, options);
        if (choice.needs_build) {
            say(options, "building " + choice.precision + " engine from " + choice.plan->onnx +
                             " (once) ...");
            const BuildResult built = build_engine(bundle.dir, *choice.plan, m.input,
                                                   m.preprocessing.crop, choice.path,
                                                   choice.path.parent_path());
            for (const std::string& w : built.warnings) say(options, "warning: " + w);
            choice.needs_build = false;
        }
        attach(std::make_unique<TrtEngine>(choice.path, choice.sha256, m.input, m.output,
                                           options.device));
#else
        throw RuntimeError("the TensorRT engine runtime is not compiled in (configure with "
                           "TensorRT available to run engines)");
#endif
    }

    std::vector<float> run(const Tensor& t) {
        if (t.shape.size() != 4 || t.shape[0] < 1) {
            throw InputError("input batch must be NCHW with at least one image, got shape " +
                             format_dims(t.shape));
        }
        const int n = static_cast<int>(t.shape[0]);
        check_batch(n, profile);
        std::vector<int64_t> dims = input_shape;
        dims[0] = n;
        const std::size_t bytes = t.data.size() * sizeof(float);
        // The tensor's own shape, then its data, against the engine's binding.
        if (t.shape != dims) {
            throw InputError("input '" + bundle.manifest.input.name + "': expected shape " +
                             format_dims(dims) + ", got " + format_dims(t.shape));
        }
        check_input_size(dims, "float32", bytes, "input '" + bundle.manifest.input.name + "'");
        const auto start = Clock::now();
        std::vector<float> logits = backend->run(t.data.data(), bytes, n);
        last.infer_ms += ms_since(start);
        last_batch = n;
        return logits;
    }

    // The NCHW float32 tensor of images[first, first + count): preprocessing straight into
    // the engine's input layout.
    template <typename Images>
    Tensor input_tensor(const Images& images, std::size_t first, std::size_t count) const {
        const Preprocessing& spec = bundle.manifest.preprocessing;
        const std::size_t per_image = static_cast<std::size_t>(3) * spec.crop * spec.crop;
        Tensor t;
        t.shape = {static_cast<int64_t>(count), 3, spec.crop, spec.crop};
        t.data.resize(per_image * count);
        for (std::size_t i = 0; i < count; ++i) {
            normalize_into(resize_and_crop(decoded(images[first + i]), spec), spec,
                           t.data.data() + per_image * i);
        }
        return t;
    }

    static RgbImage decoded(const fs::path& path) { return decode_image(path); }
    static const RgbImage& decoded(const RgbImage& image) { return image; }

    // Top-k per image, in engine calls of at most the profile's maximum batch.
    template <typename Images>
    std::vector<std::vector<Prediction>> classify(const Images& images, int k) {
        last = Timing{};
        last.batch = static_cast<int>(images.size());
        std::vector<std::vector<Prediction>> out;
        out.reserve(images.size());
        const auto chunk = static_cast<std::size_t>(std::max<int64_t>(profile.max, 1));
        for (std::size_t first = 0; first < images.size(); first += chunk) {
            const std::size_t count = std::min(chunk, images.size() - first);
            const auto start = Clock::now();
            const Tensor t = input_tensor(images, first, count);
            last.preprocess_ms += ms_since(start);
            const std::vector<float> logits = run(t);
            for (auto& row : top_k_rows(logits, static_cast<int>(count), bundle.manifest.labels, k)) {
                out.push_back(std::move(row));
            }
        }
        return out;
    }
};

Classifier::Classifier(const fs::path& bundle_dir, ClassifierOptions options)
    : Classifier(open_bundle(bundle_dir), std::move(options)) {}

Classifier::Classifier(Bundle bundle, ClassifierOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->bundle = std::move(bundle);
    impl_->options = std::move(options);
    impl_->load_engine();
}

Classifier::Classifier(Bundle bundle, std::unique_ptr<InferenceBackend> backend,
                       ClassifierOptions options)
    : impl_(std::make_unique<Impl>()) {
    impl_->bundle = std::move(bundle);
    impl_->options = std::move(options);
    impl_->attach(std::move(backend));
}

Classifier::~Classifier() = default;
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

Classifier::Impl& Classifier::impl() {
    if (!impl_) throw RuntimeError("use of a moved-from Classifier");
    return *impl_;
}

const Classifier::Impl& Classifier::impl() const {
    if (!impl_) throw RuntimeError("use of a moved-from Classifier");
    return *impl_;
}

const Bundle& Classifier::bundle() const { return impl().bundle; }
const Manifest& Classifier::manifest() const { return impl().bundle.manifest; }
const SystemInfo& Classifier::system() const { return impl().system; }
const EngineChoice& Classifier::engine() const { return impl().choice; }
BatchProfile Classifier::batch_profile() const { return impl().profile; }
const Timing& Classifier::last_timing() const { return impl().last; }

std::vector<Prediction> Classifier::classify(const fs::path& image, int k) {
    return classify_batch(std::vector<fs::path>{image}, k).at(0);
}

std::vector<Prediction> Classifier::classify(const RgbImage& image, int k) {
    return classify_batch(std::vector<RgbImage>{image}, k).at(0);
}

std::vector<std::vector<Prediction>> Classifier::classify_batch(const std::vector<fs::path>& images,
                                                                int k) {
    return impl().classify(images, k);
}

std::vector<std::vector<Prediction>> Classifier::classify_batch(const std::vector<RgbImage>& images,
                                                                int k) {
    return impl().classify(images, k);
}

std::vector<float> Classifier::infer(const Tensor& batch) {
    Impl& s = impl();
    s.last = Timing{};
    s.last.batch = batch.shape.empty() ? 0 : static_cast<int>(batch.shape[0]);
    return s.run(batch);
}

std::vector<std::vector<Prediction>> Classifier::classify_batch(const Tensor& batch, int k) {
    const std::vector<float> logits = infer(batch);
    return top_k_rows(logits, static_cast<int>(batch.shape[0]), manifest().labels, k);
}

LatencyStats Classifier::benchmark(int warmup, int runs) {
    Impl& s = impl();
    if (s.last_batch == 0) throw RuntimeError("benchmark: classify or infer a batch first");
    return latency_stats(s.backend->time_last_batch(warmup, std::max(runs, 1)), s.last_batch);
}

}  // namespace vtedge
