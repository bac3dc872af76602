// The Classifier facade without TensorRT: bundle open + verify, engine choice by TensorRT
// version and compute capability, preprocessing into the engine's input buffer (through a
// test backend that records what it is given), top-k with labels, input size and batch
// checks, latency statistics against numpy, ownership (RAII, move).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <nlohmann/json.hpp>

#include "bundle_util.hpp"
#include "check.hpp"
#include "vtedge/classifier.hpp"
#include "vtedge/loader.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// What a FakeBackend saw; shared with the test so it outlives the backend.
struct FakeLog {
    std::vector<int> batches;        // batch of each run()
    std::vector<float> inputs;       // every input float given to run(), in order
    bool destroyed = false;
};

// A backend with the TrtEngine contract: checks batch and size like TrtEngine::run, and
// returns as logits of each image its first `classes` input values (so the expected top-k
// follows from the reference tensor).
class FakeBackend : public vtedge::InferenceBackend {
public:
    FakeBackend(std::vector<int64_t> shape, vtedge::BatchProfile profile, int classes,
                std::shared_ptr<FakeLog> log, std::string dtype = "float32")
        : shape_(std::move(shape)), profile_(profile), classes_(classes), log_(std::move(log)),
          dtype_(std::move(dtype)) {}
    ~FakeBackend() override { log_->destroyed = true; }

    std::vector<int64_t> input_shape() const override { return shape_; }
    std::string input_dtype() const override { return dtype_; }
    vtedge::BatchProfile batch_profile() const override { return profile_; }

    std::vector<float> run(const void* input, std::size_t bytes, int batch) override {
        vtedge::check_batch(batch, profile_);
        std::vector<int64_t> dims = shape_;
        dims[0] = batch;
        vtedge::check_input_size(dims, dtype_, bytes, "input 'images'");
        const auto* f = static_cast<const float*>(input);
        const std::size_t per_image = bytes / sizeof(float) / static_cast<std::size_t>(batch);
        log_->batches.push_back(batch);
        log_->inputs.insert(log_->inputs.end(), f, f + bytes / sizeof(float));
        std::vector<float> logits;
        for (int i = 0; i < batch; ++i) {
            const float* image = f + per_image * static_cast<std::size_t>(i);
            logits.insert(logits.end(), image, image + classes_);
        }
        ++runs_;
        return logits;
    }

    std::vector<double> time_last_batch(int warmup, int runs) override {
        if (runs_ == 0) throw vtedge::RuntimeError("benchmark: run a batch first");
        (void)warmup;
        std::vector<double> t;
        for (int i = 0; i < runs; ++i) t.push_back(1.0 + 0.25 * ((i * 7) % 5));
        return t;
    }

private:
    std::vector<int64_t> shape_;
    vtedge::BatchProfile profile_;
    int classes_;
    std::shared_ptr<FakeLog> log_;
    std::string dtype_;
    int runs_ = 0;
};

std::vector<float> read_floats(const fs::path& p) {
    const std::string bytes = testutil::read_text(p);
    std::vector<float> v(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
    return v;
}

// The fixture images and, for the fixture bundle's preprocessing, their Python tensors.
struct Reference {
    std::vector<fs::path> images;
    std::vector<std::vector<float>> tensors;
};

Reference reference_for_bundle() {
    const fs::path dir = check::fixtures() / "images";
    const json index = json::parse(testutil::read_text(dir / "index.json"));
    // make_fixtures.py writes a "bundle" spec only when it differs from the synthetic one.
    const std::string key = index["specs"].contains("bundle") ? "bundle" : "synthetic";
    Reference r;
    for (const auto& item : index["images"]) {
        r.images.push_back(dir / item["file"].get<std::string>());
        r.tensors.push_back(read_floats(dir / item["tensors"][key]["file"].get<std::string>()));
    }
    return r;
}

std::unique_ptr<FakeBackend> fake_for(const vtedge::Manifest& m, std::shared_ptr<FakeLog> log,
                                      vtedge::BatchProfile profile = {1, 4, 8}) {
    return std::make_unique<FakeBackend>(vtedge::preprocessed_input_shape(m), profile,
                                         static_cast<int>(m.labels.size()), std::move(log));
}

double max_abs_diff(const float* a, const float* b, std::size_t n) {
    double d = 0.0;
    for (std::size_t i = 0; i < n; ++i) d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
    return d;
}

// Top-k the fake backend's logits must give: the reference tensor's first values.
std::vector<vtedge::Prediction> expected_top(const std::vector<float>& tensor,
                                             const vtedge::Manifest& m, int k) {
    return vtedge::top_k(std::vector<float>(tensor.begin(), tensor.begin() + static_cast<std::ptrdiff_t>(m.labels.size())),
                         m.labels, k);
}

bool same_predictions(const std::vector<vtedge::Prediction>& a, const std::vector<vtedge::Prediction>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i].index != b[i].index || a[i].label != b[i].label ||
            std::abs(a[i].score - b[i].score) > 1e-6f) {
            return false;
        }
    }
    return true;
}

void set_env(const char* name, const char* value) {
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
}

}  // namespace

// --- input size, batch and shape checks (what TrtEngine::run does before copying) -------

TEST(input_size_check) {
    CHECK_EQ(vtedge::dtype_bits("float32"), 32);
    CHECK_EQ(vtedge::dtype_bits("float16"), 16);
    CHECK_EQ(vtedge::dtype_bits("int8"), 8);
    CHECK_EQ(vtedge::dtype_bits("int64"), 64);
    CHECK_THROWS(vtedge::dtype_bits("complex64"), vtedge::InputError, "unknown tensor data type 'complex64'");
    CHECK_EQ(vtedge::tensor_bytes({2, 3, 224, 224}, "float32"), 2u * 3 * 224 * 224 * 4);
    CHECK_EQ(vtedge::tensor_bytes({2, 3, 224, 224}, "float16"), 2u * 3 * 224 * 224 * 2);
    CHECK_EQ(vtedge::tensor_bytes({3}, "int4"), 2u);  // sub-byte types round up
    CHECK_EQ(vtedge::tensor_bytes({}, "float32"), 4u);  // a scalar
    CHECK_THROWS(vtedge::tensor_bytes({-1, 3, 224, 224}, "float32"), vtedge::InputError,
                 "tensor shape [-1,3,224,224] has an unresolved dimension");
    CHECK_THROWS(vtedge::tensor_bytes({1 << 30, 1 << 30, 1 << 30}, "float32"), vtedge::InputError,
                 "is too large");

    CHECK_EQ(vtedge::check_input_size({1, 3, 224, 224}, "float32", 602112), 602112u);
    CHECK_THROWS(vtedge::check_input_size({2, 3, 224, 224}, "float32", 602112, "input 'images'"),
                 vtedge::InputError,
                 "input 'images': expected 1204224 bytes ([2,3,224,224] float32), got 602112 bytes");
    CHECK_THROWS(vtedge::check_input_size({1, 3, 64, 64}, "float32", 49153), vtedge::InputError,
                 "input: expected 49152 bytes ([1,3,64,64] float32), got 49153 bytes");
    CHECK_THROWS(vtedge::check_input_size({1, 3, 64, 64}, "float32", 0), vtedge::InputError,
                 "got 0 bytes");
}

TEST(batch_check) {
    const vtedge::BatchProfile p{1, 8, 32};
    vtedge::check_batch(1, p);
    vtedge::check_batch(32, p);
    CHECK_THROWS(vtedge::check_batch(33, p), vtedge::InputError,
                 "batch 33 is outside the engine's optimisation profile (min 1, max 32)");
    CHECK_THROWS(vtedge::check_batch(2, {4, 4, 8}), vtedge::InputError,
                 "batch 2 is outside the engine's optimisation profile (min 4, max 8)");
    CHECK_THROWS(vtedge::check_batch(0, p), vtedge::InputError, "batch 0 must be at least 1");
    CHECK_THROWS(vtedge::check_batch(-3, p), vtedge::InputError, "batch -3 must be at least 1");
}

TEST(binding_shape_check) {
    vtedge::check_binding_shape({-1, 3, 224, 224}, {-1, 3, 224, 224}, "input 'images'");
    vtedge::check_binding_shape({8, 3, 224, 224}, {-1, 3, 224, 224}, "input 'images'");
    vtedge::check_binding_shape({-1, 3, -1, -1}, {-1, 3, 224, 224}, "input 'images'");
    CHECK_THROWS(vtedge::check_binding_shape({-1, 3, 112, 112}, {-1, 3, 224, 224}, "input 'images'"),
                 vtedge::RuntimeError,
                 "engine input 'images' has shape [-1,3,112,112]; the bundle expects [-1,3,224,224]");
    CHECK_THROWS(vtedge::check_binding_shape({-1, 10}, {-1, 3, 10}, "output 'logits'"),
                 vtedge::RuntimeError, "engine output 'logits' has shape [-1,10]");
}

// --- latency statistics: numpy's definitions --------------------------------------------

TEST(latency_percentiles_match_numpy_hardcoded) {
    // Computed with numpy 2.4 (np.percentile's default method "linear", np.mean):
    //   a = np.array([2.5, 1.0, 4.0, 3.0, 2.0, 10.0, 1.5, 2.25, 3.5, 1.75])
    //   [repr(float(np.percentile(a, q))) for q in (50, 90, 99, 0, 100, 25, 33.3)], np.mean(a)
    const std::vector<double> a = {2.5, 1.0, 4.0, 3.0, 2.0, 10.0, 1.5, 2.25, 3.5, 1.75};
    CHECK_EQ(vtedge::percentile(a, 50), 2.375);
    CHECK_EQ(vtedge::percentile(a, 90), 4.599999999999998);  // numpy's _lerp, not 4.6
    CHECK_EQ(vtedge::percentile(a, 99), 9.46);
    CHECK_EQ(vtedge::percentile(a, 0), 1.0);
    CHECK_EQ(vtedge::percentile(a, 100), 10.0);
    CHECK_EQ(vtedge::percentile(a, 25), 1.8125);
    CHECK_EQ(vtedge::percentile(a, 33.3), 1.99925);
    const vtedge::LatencyStats s = vtedge::latency_stats(a, 4);
    CHECK_EQ(s.runs, 10);
    CHECK_EQ(s.batch, 4);
    CHECK_EQ(s.p50_ms, 2.375);
    CHECK_EQ(s.p90_ms, 4.599999999999998);
    CHECK_EQ(s.p99_ms, 9.46);
    CHECK_EQ(s.mean_ms, 3.15);
    CHECK_EQ(s.min_ms, 1.0);
    CHECK_EQ(s.max_ms, 10.0);
    CHECK_EQ(s.throughput_ips, 4 * 1000.0 / 3.15);
    //   b = np.array([0.8, 1.2]): percentile 50, 90, 99 -> 1.0, 1.16, 1.196; mean 1.0
    const std::vector<double> b = {0.8, 1.2};
    CHECK_EQ(vtedge::percentile(b, 50), 1.0);
    CHECK_EQ(vtedge::percentile(b, 90), 1.16);
    CHECK_EQ(vtedge::percentile(b, 99), 1.196);
    CHECK_EQ(vtedge::mean(b), 1.0);
    // One sample: every percentile is that sample.
    CHECK_EQ(vtedge::percentile({4.0}, 99), 4.0);
    CHECK(std::isnan(vtedge::percentile({1.0, NAN, 2.0}, 50)));
    CHECK_THROWS(vtedge::percentile({}, 50), vtedge::Error, "percentile of no samples");
    CHECK_THROWS(vtedge::percentile({1.0}, 101), vtedge::Error, "is outside [0, 100]");
    CHECK_THROWS(vtedge::latency_stats({}), vtedge::Error, "latency statistics of no samples");
}

// latency.json: samples of 1 to 4099 values and their statistics, computed by
// make_fixtures.py with numpy as pipeline/stages/validate.py does. Bit-exact.
TEST(latency_stats_match_numpy_fixture) {
    const json doc = json::parse(testutil::read_text(check::fixtures() / "latency.json"));
    std::cout << "  numpy " << doc["numpy"].get<std::string>() << ", " << doc["cases"].size() << " sample sets\n";
    for (const auto& c : doc["cases"]) {
        const std::vector<double> samples = c["samples"].get<std::vector<double>>();
        const vtedge::LatencyStats s = vtedge::latency_stats(samples);
        CHECK_EQ(s.runs, static_cast<int>(samples.size()));
        CHECK_EQ(s.p50_ms, c["p50_ms"].get<double>());
        CHECK_EQ(s.p90_ms, c["p90_ms"].get<double>());
        CHECK_EQ(s.p99_ms, c["p99_ms"].get<double>());
        CHECK_EQ(s.mean_ms, c["mean_ms"].get<double>());
        for (const auto& q : c["percentiles"].items()) {
            CHECK_EQ(vtedge::percentile(samples, std::stod(q.key())), q.value().get<double>());
        }
    }
}

// --- engine choice ------------------------------------------------------------------------

TEST(engine_choice_by_tensorrt_version_and_gpu) {
    const vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "synthetic");
    testutil::ScratchDir cache("choice");
    vtedge::ClassifierOptions o;
    o.engine_cache = cache.path();

    // The bundle's fp16 engine was built for TensorRT 10.3.0 on 8.7.
    vtedge::EngineChoice c = vtedge::choose_engine(b, {"10.3.0.30", "8.7"}, o);
    CHECK_EQ(c.precision, std::string("fp16"));
    CHECK(!c.built);
    CHECK_EQ(c.path, vtedge::resolve_bundle_path(b.dir, "engines/model.fp16.engine"));
    CHECK_EQ(c.sha256, b.manifest.engines.at(0).sha256);

    // Another TensorRT, without --build-engine: what to rebuild.
    CHECK_THROWS(vtedge::choose_engine(b, {"10.7.0", "8.7"}, o), vtedge::CompatibilityError,
                 "engine engines/model.fp16.engine was built for TensorRT 10.3.0 on compute "
                 "capability 8.7; this system has TensorRT 10.7.0 on 8.7: rebuild it on this "
                 "device with: python -m pipeline build");

    // With build_engine: the plan for the precision and this TensorRT, into the cache.
    o.build_engine = true;
    o.precision = "int8-trt";
    c = vtedge::choose_engine(b, {"10.3.0.30", "8.7"}, o);
    CHECK(c.built);
    CHECK(c.needs_build);
    CHECK(c.sha256.empty());
    CHECK(c.plan.has_value() && c.plan->tensorrt_version == "10.3" && c.plan->precision == "int8-trt");
    const std::string onnx_sha = b.manifest.files.at("models/model.int8-trt.onnx").sha256;
    CHECK_EQ(c.path, fs::path(cache.path() / "fixture" / onnx_sha.substr(0, 16) /
                              "vit-tiny.int8-trt.b1-4-8.trt10.3.0.sm87.engine"));
    // Once built (here: a file of that name), it is reused.
    fs::create_directories(c.path.parent_path());
    testutil::write_text(c.path, "engine");
    CHECK(!vtedge::choose_engine(b, {"10.3.0.30", "8.7"}, o).needs_build);

    // 8.6 on the same GPU: the 8.6 plan; the fp16 bundle engine still wins on 10.3.
    o.precision = "fp16";
    const vtedge::EngineChoice on86 = vtedge::choose_engine(b, {"8.6.2", "8.7"}, o);
    CHECK(on86.built && on86.plan->tensorrt_version == "8.6");
    CHECK(!vtedge::choose_engine(b, {"10.3.0", "8.7"}, o).built);
    // The 10.x DLA plan is for 8.7 only; no fp16 plan for 10.7.
    o.precision = "int8-trt";
    CHECK_THROWS(vtedge::choose_engine(b, {"10.7.0", "8.9"}, o), vtedge::CompatibilityError,
                 "build_plan.json is for compute capability 8.7, this GPU is 8.9: rebuild the bundle with: ");
    o.precision = "fp16";
    CHECK_THROWS(vtedge::choose_engine(b, {"10.7.0", "8.7"}, o), vtedge::CompatibilityError,
                 "no plan for precision 'fp16' and TensorRT 10.7.0");
    // Without a precision: the first engine that runs here, else the first engine's.
    o.precision.clear();
    const vtedge::EngineChoice any = vtedge::choose_engine(b, {"10.3.0", "8.7"}, o);
    CHECK_EQ(any.precision, std::string("fp16"));
}

TEST(engine_choice_without_engines_or_plan) {
    // The fixture bundle (the pipeline's cpu bundle when it imports): no engines.
    const vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "bundle");
    if (!b.manifest.engines.empty()) {
        std::cout << "  skipped: the fixture bundle has engines\n";
        return;
    }
    CHECK_THROWS(vtedge::choose_engine(b, {"10.3.0", "8.7"}), vtedge::CompatibilityError,
                 "bundle has no engines; build one on this device with: ");
    vtedge::ClassifierOptions o;
    o.build_engine = true;
    if (b.manifest.files.count("build_plan.json") == 0) {
        CHECK_THROWS(vtedge::choose_engine(b, {"10.3.0", "8.7"}, o), vtedge::CompatibilityError,
                     "and it has no build_plan.json to build one: rebuild the bundle with: ");
    }
}

TEST(plan_onnx_must_be_a_verified_file) {
    testutil::ScratchDir tmp("choice-onnx");
    const fs::path dir = testutil::copy_bundle(check::fixtures(), tmp.path(), "synthetic");
    vtedge::Bundle b = vtedge::open_bundle(dir);
    b.manifest.files.erase("models/model.fp32.onnx");  // as if the manifest did not list it
    vtedge::ClassifierOptions o;
    o.build_engine = true;
    o.precision = "fp32";
    o.engine_cache = tmp.path() / "cache";
    CHECK_THROWS(vtedge::choose_engine(b, {"11.1.0", "8.7"}, o), vtedge::IntegrityError,
                 "build_plan.json: onnx 'models/model.fp32.onnx' is not part of the verified bundle");
}

TEST(default_engine_cache_follows_the_environment) {
    const char* keep[] = {std::getenv("VTEDGE_CACHE_DIR"), std::getenv("XDG_CACHE_HOME"), std::getenv("HOME")};
    const std::string saved[] = {keep[0] ? keep[0] : "", keep[1] ? keep[1] : "", keep[2] ? keep[2] : ""};
    set_env("VTEDGE_CACHE_DIR", "/c/vt");
    set_env("XDG_CACHE_HOME", "/c/xdg");
    set_env("HOME", "/home/u");
    CHECK_EQ(vtedge::default_engine_cache(), fs::path("/c/vt"));
    set_env("VTEDGE_CACHE_DIR", nullptr);
    CHECK_EQ(vtedge::default_engine_cache(), fs::path("/c/xdg/vtedge"));
    set_env("XDG_CACHE_HOME", "");
    CHECK_EQ(vtedge::default_engine_cache(), fs::path("/home/u/.cache/vtedge"));
    set_env("HOME", nullptr);
    CHECK_EQ(vtedge::default_engine_cache(), fs::temp_directory_path() / "vtedge");
    set_env("VTEDGE_CACHE_DIR", keep[0] ? saved[0].c_str() : nullptr);
    set_env("XDG_CACHE_HOME", keep[1] ? saved[1].c_str() : nullptr);
    set_env("HOME", keep[2] ? saved[2].c_str() : nullptr);
}

// --- the facade up to the engine ------------------------------------------------------------

TEST(classifier_verifies_before_anything_else) {
    testutil::ScratchDir tmp("clf-verify");
    const fs::path dir = testutil::copy_bundle(check::fixtures(), tmp.path());
    const json m = testutil::load_manifest(dir);
    const std::string rel = m["files"].begin().key();
    std::string data = testutil::read_text(dir / rel);
    data[0] = static_cast<char>(data[0] ^ 1);
    testutil::write_text(dir / rel, data);
    CHECK_THROWS(vtedge::Classifier{dir}, vtedge::IntegrityError, "fails its SHA-256 check");
    CHECK_THROWS(vtedge::Classifier(check::fixtures() / "no-such-bundle"), vtedge::ManifestError,
                 "manifest.json");
    if (!vtedge::has_tensorrt_runtime()) {
        // A good bundle gets as far as the engine, which this build cannot load.
        CHECK_THROWS(vtedge::Classifier(check::fixtures() / "synthetic"), vtedge::RuntimeError,
                     "the TensorRT engine runtime is not compiled in");
    }
}

// Preprocessing into the engine's input buffer: what the backend receives is, image for
// image, the Python reference tensor; the logits come back as top-k with the bundle's labels.
TEST(classifier_fills_the_input_tensor_like_python) {
    const Reference ref = reference_for_bundle();
    vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "bundle");
    const vtedge::Manifest m = b.manifest;
    const std::size_t per_image = static_cast<std::size_t>(3) * m.preprocessing.crop * m.preprocessing.crop;
    auto log = std::make_shared<FakeLog>();
    vtedge::Classifier clf(std::move(b), fake_for(m, log, {1, 4, 4}));
    CHECK_EQ(clf.manifest().name, m.name);
    CHECK_EQ(clf.batch_profile().max, 4);

    // One at a time, from files.
    for (std::size_t i = 0; i < ref.images.size(); ++i) {
        const auto top = clf.classify(ref.images[i], 3);
        CHECK_EQ(top.size(), 3u);
        CHECK(same_predictions(top, expected_top(ref.tensors[i], m, 3)));
        CHECK_EQ(log->batches.back(), 1);
        const float* got = log->inputs.data() + log->inputs.size() - per_image;
        CHECK_EQ(ref.tensors[i].size(), per_image);
        const double d = max_abs_diff(got, ref.tensors[i].data(), per_image);
        if (!(d <= 1e-6)) {
            check::fail(__FILE__, __LINE__, ref.images[i].filename().string() + ": input differs by " + std::to_string(d));
        }
    }
    CHECK_EQ(clf.last_timing().batch, 1);
    CHECK(clf.last_timing().preprocess_ms > 0.0);

    // All at once: batches of at most the profile's maximum (4), same input, same results.
    log->batches.clear();
    log->inputs.clear();
    const auto all = clf.classify_batch(ref.images, 5);
    CHECK_EQ(all.size(), ref.images.size());
    std::vector<int> expected_batches;
    for (std::size_t left = ref.images.size(); left > 0; left -= std::min<std::size_t>(left, 4)) {
        expected_batches.push_back(static_cast<int>(std::min<std::size_t>(left, 4)));
    }
    CHECK(log->batches == expected_batches);
    CHECK_EQ(log->inputs.size(), per_image * ref.images.size());
    for (std::size_t i = 0; i < ref.images.size() && i < all.size(); ++i) {
        CHECK(same_predictions(all[i], expected_top(ref.tensors[i], m, 5)));
        CHECK(max_abs_diff(log->inputs.data() + per_image * i, ref.tensors[i].data(), per_image) <= 1e-6);
    }
    CHECK_EQ(clf.last_timing().batch, static_cast<int>(ref.images.size()));
    std::cout << "  " << ref.images.size() << " images in engine batches of ";
    for (int n : log->batches) std::cout << n << " ";
    std::cout << "\n";
    // Labels: the manifest's names.
    CHECK_EQ(all[0][0].label, m.labels.at(static_cast<std::size_t>(all[0][0].index)));
    CHECK(clf.classify_batch(std::vector<fs::path>{}).empty());
}

TEST(classifier_takes_decoded_rgb) {
    const Reference ref = reference_for_bundle();
    vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "bundle");
    const vtedge::Manifest m = b.manifest;
    auto log = std::make_shared<FakeLog>();
    vtedge::Classifier clf(std::move(b), fake_for(m, log));
    std::vector<vtedge::RgbImage> decoded;
    for (std::size_t i = 0; i < 3 && i < ref.images.size(); ++i) {
        decoded.push_back(vtedge::decode_image(ref.images[i]));
        CHECK(same_predictions(clf.classify(decoded.back(), 5), clf.classify(ref.images[i], 5)));
    }
    const auto rows = clf.classify_batch(decoded, 2);
    CHECK_EQ(rows.size(), decoded.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        CHECK(same_predictions(rows[i], expected_top(ref.tensors[i], m, 2)));
    }
    // The batch helpers agree with each other.
    const vtedge::Tensor from_rgb = vtedge::preprocess_batch(decoded, m.preprocessing);
    const vtedge::Tensor from_files = vtedge::preprocess_batch(
        std::vector<fs::path>(ref.images.begin(), ref.images.begin() + static_cast<std::ptrdiff_t>(decoded.size())),
        m.preprocessing);
    CHECK(from_rgb.shape == from_files.shape);
    CHECK(from_rgb.data == from_files.data);
    CHECK(vtedge::preprocess_rgb(decoded[0], m.preprocessing) ==
          vtedge::preprocess_image(ref.images[0], m.preprocessing));

    vtedge::RgbImage broken = decoded[0];
    broken.pixels.resize(broken.pixels.size() - 1);
    CHECK_THROWS(clf.classify(broken), vtedge::ImageError, "bytes, has ");
    CHECK_THROWS(clf.classify(check::fixtures() / "images" / "absent.jpg"), vtedge::ImageError,
                 "cannot open image");
}

TEST(classifier_checks_input_size_and_batch) {
    vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "bundle");
    const vtedge::Manifest m = b.manifest;
    const int crop = m.preprocessing.crop;
    const std::string name = "input '" + m.input.name + "'";
    auto log = std::make_shared<FakeLog>();
    vtedge::Classifier clf(std::move(b), fake_for(m, log, {1, 2, 2}));
    CHECK_THROWS(clf.benchmark(1, 5), vtedge::RuntimeError, "classify or infer a batch first");

    vtedge::Tensor t;
    t.shape = {2, 3, crop, crop};
    t.data.assign(static_cast<std::size_t>(2) * 3 * crop * crop, 0.5f);
    CHECK_EQ(clf.infer(t).size(), 2 * m.labels.size());
    CHECK_EQ(clf.classify_batch(t, 1).size(), 2u);

    vtedge::Tensor short_data = t;
    short_data.data.pop_back();
    const std::size_t full = t.data.size() * sizeof(float);
    CHECK_THROWS(clf.infer(short_data), vtedge::InputError,
                 name + ": expected " + std::to_string(full) + " bytes ([2,3," + std::to_string(crop) +
                     "," + std::to_string(crop) + "] float32), got " + std::to_string(full - 4) + " bytes");
    vtedge::Tensor wrong_shape = t;
    wrong_shape.shape = {2, 3, crop + 1, crop};
    CHECK_THROWS(clf.infer(wrong_shape), vtedge::InputError, name + ": expected shape [2,3,");
    vtedge::Tensor too_many = t;
    too_many.shape[0] = 3;
    too_many.data.resize(too_many.data.size() * 3 / 2, 0.5f);
    CHECK_THROWS(clf.infer(too_many), vtedge::InputError,
                 "batch 3 is outside the engine's optimisation profile (min 1, max 2)");
    CHECK_THROWS(clf.infer(vtedge::Tensor{}), vtedge::InputError, "must be NCHW with at least one image");
    CHECK_EQ(log->batches.size(), 2u);  // nothing bad reached the backend

    // Latency of the last good batch, with the pipeline's statistics.
    const vtedge::LatencyStats s = clf.benchmark(2, 20);
    std::vector<double> samples;
    for (int i = 0; i < 20; ++i) samples.push_back(1.0 + 0.25 * ((i * 7) % 5));
    const vtedge::LatencyStats expected = vtedge::latency_stats(samples, 2);
    CHECK_EQ(s.runs, 20);
    CHECK_EQ(s.batch, 2);
    CHECK_EQ(s.p50_ms, expected.p50_ms);
    CHECK_EQ(s.p99_ms, expected.p99_ms);
    CHECK_EQ(s.throughput_ips, expected.throughput_ips);
}

TEST(classifier_refuses_an_engine_that_does_not_fit) {
    const vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "bundle");
    const vtedge::Manifest& m = b.manifest;
    const int crop = m.preprocessing.crop;
    auto log = std::make_shared<FakeLog>();
    CHECK_THROWS(vtedge::Classifier(b, std::make_unique<FakeBackend>(std::vector<int64_t>{-1, 3, crop / 2, crop / 2},
                                                                     vtedge::BatchProfile{1, 1, 1}, 10, log)),
                 vtedge::RuntimeError,
                 "engine input '" + m.input.name + "' has shape [-1,3," + std::to_string(crop / 2));
    CHECK(log->destroyed);  // the refused backend was released
    CHECK_THROWS(vtedge::Classifier(b, std::make_unique<FakeBackend>(vtedge::preprocessed_input_shape(m),
                                                                     vtedge::BatchProfile{1, 1, 1}, 10,
                                                                     std::make_shared<FakeLog>(), "float16")),
                 vtedge::RuntimeError, "is float16; preprocessing produces float32");
    CHECK_THROWS(vtedge::Classifier(b, std::unique_ptr<vtedge::InferenceBackend>{}), vtedge::RuntimeError,
                 "no inference backend");
}

TEST(classifier_owns_its_engine) {
    const Reference ref = reference_for_bundle();
    auto log = std::make_shared<FakeLog>();
    {
        vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / "bundle");
        const vtedge::Manifest m = b.manifest;
        vtedge::Classifier first(std::move(b), fake_for(m, log));
        const auto before = first.classify(ref.images[0]);
        vtedge::Classifier second(std::move(first));  // the engine moves, nothing is freed
        CHECK(!log->destroyed);
        CHECK(same_predictions(second.classify(ref.images[0]), before));
        CHECK_THROWS(first.classify(ref.images[0]), vtedge::RuntimeError, "use of a moved-from Classifier");
        vtedge::Classifier third = std::move(second);
        CHECK(same_predictions(third.classify(ref.images[0]), before));
        CHECK(!log->destroyed);
    }
    CHECK(log->destroyed);  // freed with its last owner
}

TEST(top_k_rows_split_a_batch) {
    const std::vector<float> logits = {0.1f, 0.9f, 0.5f, /* image 2 */ 2.0f, -1.0f, 1.0f};
    const auto rows = vtedge::top_k_rows(logits, 2, {"a", "b", "c"}, 2);
    CHECK_EQ(rows.size(), 2u);
    CHECK_EQ(rows[0][0].label, std::string("b"));
    CHECK_EQ(rows[0][1].label, std::string("c"));
    CHECK_EQ(rows[1][0].label, std::string("a"));
    CHECK_EQ(rows[1][1].label, std::string("c"));
    CHECK_THROWS(vtedge::top_k_rows(logits, 4, {}, 1), vtedge::RuntimeError,
                 "engine returned 6 logits for a batch of 4");
    CHECK(vtedge::top_k_rows({}, 0, {}, 1).empty());
}
