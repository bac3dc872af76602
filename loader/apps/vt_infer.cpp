// vt_infer: verify a bundle, preprocess images as its manifest says and, with the TensorRT
// runtime compiled in, run the engine and print the top-5 classes and the latency.
//
// Exit codes: 0 success; 1 error (bad bundle, image, engine); 2 usage; 3 engine runtime not
// compiled in; 4 no engine usable on this system (the message says how to rebuild it).

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <iostream>
#include <string>
#include <vector>

#include "vtedge/loader.hpp"
#ifdef VTEDGE_WITH_TENSORRT
#include "vtedge/trt_runtime.hpp"
#endif

namespace fs = std::filesystem;

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoRuntime = 3;
constexpr int kExitIncompatible = 4;

struct Options {
    fs::path bundle;
    std::vector<fs::path> images;
    std::string precision;  // empty: the first engine that runs here
    int runs = 50;
    bool build_engine = false;
    bool verify_only = false;
    fs::path engine_cache;
};

const char* kUsage =
    "usage: vt_infer <bundle> <image...> [--precision P] [--runs N] [--build-engine] "
    "[--engine-cache DIR] [--verify-only]";

// Thrown for command-line mistakes; reported with exit code 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

int parse_int(const std::string& flag, const std::string& value) {
    try {
        std::size_t used = 0;
        const int v = std::stoi(value, &used);
        if (used == value.size() && v > 0) return v;
    } catch (const std::exception&) {
    }
    throw UsageError(flag + " needs a positive integer, got '" + value + "'");
}

Options parse_args(int argc, char** argv) {
    Options o;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw UsageError(arg + " needs a value");
            return argv[++i];
        };
        if (arg == "--precision") o.precision = value();
        else if (arg == "--runs") o.runs = parse_int(arg, value());
        else if (arg == "--build-engine") o.build_engine = true;
        else if (arg == "--verify-only") o.verify_only = true;
        else if (arg == "--engine-cache") o.engine_cache = value();
        else if (arg == "-h" || arg == "--help") throw UsageError("");
        else if (arg.size() > 1 && arg[0] == '-') throw UsageError("unknown option " + arg);
        else positional.push_back(arg);
    }
    if (positional.empty()) throw UsageError("missing <bundle>");
    o.bundle = positional.front();
    o.images.assign(positional.begin() + 1, positional.end());
    if (o.images.empty() && !o.verify_only) throw UsageError("missing <image...>");
    return o;
}

#ifdef VTEDGE_WITH_TENSORRT

// Engines built here are cached outside the bundle, which stays as verified.
fs::path default_engine_cache() {
    if (const char* dir = std::getenv("VTEDGE_CACHE_DIR")) return dir;
    if (const char* xdg = std::getenv("XDG_CACHE_HOME")) return fs::path(xdg) / "vtedge";
    if (const char* home = std::getenv("HOME")) return fs::path(home) / ".cache" / "vtedge";
    return fs::temp_directory_path() / "vtedge";
}

// The build plan for `precision` (empty: any) and the TensorRT found here; when the bundle
// has none for this TensorRT, a CompatibilityError (exit 4) that lists the plans it has.
vtedge::BuildPlan plan_for(const vtedge::Bundle& b, const std::string& precision,
                           const vtedge::SystemInfo& sys) {
    if (b.manifest.files.count("build_plan.json") == 0) {
        throw vtedge::Error("--build-engine: build_plan.json is not part of the verified bundle");
    }
    try {
        return vtedge::read_build_plan(b.dir, precision, sys.tensorrt_version);
    } catch (const vtedge::CompatibilityError& e) {
        throw vtedge::CompatibilityError(std::string(e.what()) +
                                         ": rebuild the bundle for it with: " +
                                         b.manifest.rebuild_command);
    }
}

std::string pick_precision(const vtedge::Bundle& b, const vtedge::SystemInfo& sys,
                           const Options& o) {
    if (!o.precision.empty()) return o.precision;
    for (const auto& e : b.manifest.engines) {
        if (vtedge::check_engine(e, sys, b.manifest.rebuild_command).ok) return e.precision;
    }
    if (!b.manifest.engines.empty()) return b.manifest.engines.front().precision;
    if (o.build_engine) return plan_for(b, "", sys).precision;
    throw vtedge::CompatibilityError("bundle has no engines; build one on this device with: " +
                        b.manifest.rebuild_command + " (or run vt_infer with --build-engine)");
}

// A bundle engine when one matches this system; otherwise, with --build-engine, one built
// from build_plan.json into the cache (reused on later runs).
vtedge::TrtEngine load_engine(const vtedge::Bundle& b, const vtedge::SystemInfo& sys,
                              const std::string& precision, const Options& o) {
    const auto& m = b.manifest;
    try {
        const vtedge::EngineEntry& e = vtedge::select_engine(m, precision, sys);
        return vtedge::TrtEngine(vtedge::resolve_bundle_path(b.dir, e.path), e.sha256, m.input,
                                 m.output);
    } catch (const vtedge::CompatibilityError&) {
        if (!o.build_engine) throw;
    }
    const vtedge::BuildPlan plan = plan_for(b, precision, sys);
    const vtedge::CompatResult can_build = vtedge::check_build_plan(plan, sys);
    if (!can_build.ok) {
        throw vtedge::CompatibilityError(can_build.message + ": rebuild the bundle with: " +
                                         m.rebuild_command);
    }
    if (m.files.count(plan.onnx) == 0) {
        throw vtedge::IntegrityError("build_plan.json: onnx '" + plan.onnx +
                                     "' is not part of the verified bundle");
    }
    // One cache folder per bundle name and ONNX content, so a changed model never reuses
    // an engine built from the old one.
    const fs::path cache = (o.engine_cache.empty() ? default_engine_cache() : o.engine_cache) /
                           m.name / m.files.at(plan.onnx).sha256.substr(0, 16);
    const fs::path engine_path =
        cache / vtedge::engine_file_name(plan, plan.model.empty() ? m.name : plan.model, sys);
    if (!fs::exists(engine_path)) {
        std::cout << "building " << precision << " engine from " << plan.onnx << " (once) ...\n";
        vtedge::build_engine(b.dir, plan, m.input, m.preprocessing.crop, engine_path, cache);
    }
    return vtedge::TrtEngine(engine_path, "", m.input, m.output);
}

void print_predictions(const Options& o, const std::vector<float>& logits, std::size_t classes,
                       const std::vector<std::string>& labels) {
    for (std::size_t i = 0; i < o.images.size(); ++i) {
        const std::vector<float> row(logits.begin() + i * classes, logits.begin() + (i + 1) * classes);
        std::cout << o.images[i].string() << "\n";
        for (const auto& p : vtedge::top_k(row, labels, 5)) {
            std::printf("  %5.2f%%  %4d  %s\n", 100.0 * p.score, p.index, p.label.c_str());
        }
    }
}

int run_engine(const vtedge::Bundle& b, const vtedge::Tensor& batch, const Options& o) {
    const vtedge::SystemInfo sys = vtedge::query_system();
    const std::string precision = pick_precision(b, sys, o);
    vtedge::TrtEngine engine = load_engine(b, sys, precision, o);
    const int n = static_cast<int>(o.images.size());
    const std::size_t per_image = batch.data.size() / static_cast<std::size_t>(n);
    const std::vector<float> logits = engine.infer(batch.data.data(), n, per_image);
    print_predictions(o, logits, engine.output_per_image(), b.manifest.labels);
    const vtedge::LatencyStats s = engine.benchmark(10, o.runs);
    std::printf("latency (%s, batch %d, TensorRT %s, sm %s, %d runs): p50 %.3f ms  p99 %.3f ms  "
                "mean %.3f ms\n",
                precision.c_str(), n, sys.tensorrt_version.c_str(),
                sys.compute_capability.c_str(), s.runs, s.p50_ms, s.p99_ms, s.mean_ms);
    return 0;
}

#endif

int run(const Options& o) {
    const vtedge::Bundle bundle = vtedge::open_bundle(o.bundle);
    std::cout << "bundle OK: " << bundle.verified.files_verified << " files verified\n";
    if (o.verify_only) return 0;
    const vtedge::Tensor batch = vtedge::preprocess_batch(o.images, bundle.manifest.preprocessing);
    std::cout << "preprocessed " << o.images.size() << " image(s) to " << batch.shape[0] << "x"
              << batch.shape[1] << "x" << batch.shape[2] << "x" << batch.shape[3] << " float32\n";
#ifdef VTEDGE_WITH_TENSORRT
    return run_engine(bundle, batch, o);
#else
    std::cerr << "vt_infer: the TensorRT engine runtime is not compiled in (configure with "
                 "TensorRT available to run engines)\n";
    return kExitNoRuntime;
#endif
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    try {
        options = parse_args(argc, argv);
    } catch (const UsageError& e) {
        if (!*e.what()) {  // --help
            std::cout << kUsage << "\n";
            return 0;
        }
        std::cerr << "vt_infer: " << e.what() << " (" << kUsage << ")\n";
        return kExitUsage;
    }
    try {
        return run(options);
    } catch (const vtedge::CompatibilityError& e) {
        std::cerr << "vt_infer: " << e.what() << "\n";
        return kExitIncompatible;
    } catch (const std::exception& e) {
        std::cerr << "vt_infer: " << e.what() << "\n";
        return kExitError;
    }
}
