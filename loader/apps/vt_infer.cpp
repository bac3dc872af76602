// vt_infer: verify a bundle, preprocess images as its manifest says and, with the TensorRT
// runtime compiled in, run the engine and print the top-5 classes and the latency. A thin
// user of vtedge::Classifier (vtedge/classifier.hpp).
//
// Exit codes: 0 success; 1 error (bad bundle, image, engine); 2 usage; 3 engine runtime not
// compiled in; 4 no engine usable on this system (the message says how to rebuild it).

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "vtedge/classifier.hpp"
#include "vtedge/loader.hpp"

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

void print_predictions(const Options& o, const std::vector<std::vector<vtedge::Prediction>>& top) {
    for (std::size_t i = 0; i < o.images.size(); ++i) {
        std::cout << o.images[i].string() << "\n";
        for (const auto& p : top[i]) {
            std::printf("  %5.2f%%  %4d  %s\n", 100.0 * p.score, p.index, p.label.c_str());
        }
    }
}

// The engine for this system (a bundle engine, or one built once from build_plan.json with
// --build-engine), the top-5 classes of each image and the latency of --runs executions.
int run_engine(vtedge::Bundle bundle, const vtedge::Tensor& batch, const Options& o) {
    vtedge::ClassifierOptions options;
    options.precision = o.precision;
    options.build_engine = o.build_engine;
    options.engine_cache = o.engine_cache;
    options.on_message = [](const std::string& message) { std::cout << message << std::endl; };
    vtedge::Classifier classifier(std::move(bundle), options);
    print_predictions(o, classifier.classify_batch(batch, 5));
    const vtedge::LatencyStats s = classifier.benchmark(10, o.runs);
    const vtedge::SystemInfo& sys = classifier.system();
    std::printf("latency (%s, batch %d, TensorRT %s, sm %s, %d runs): p50 %.3f ms  p99 %.3f ms  "
                "mean %.3f ms\n",
                classifier.engine().precision.c_str(), s.batch, sys.tensorrt_version.c_str(),
                sys.compute_capability.c_str(), s.runs, s.p50_ms, s.p99_ms, s.mean_ms);
    return 0;
}

int run(const Options& o) {
    vtedge::Bundle bundle = vtedge::open_bundle(o.bundle);
    std::cout << "bundle OK: " << bundle.verified.files_verified << " files verified\n";
    if (o.verify_only) return 0;
    const vtedge::Tensor batch = vtedge::preprocess_batch(o.images, bundle.manifest.preprocessing);
    std::cout << "preprocessed " << o.images.size() << " image(s) to " << batch.shape[0] << "x"
              << batch.shape[1] << "x" << batch.shape[2] << "x" << batch.shape[3] << " float32\n";
    if (!vtedge::has_tensorrt_runtime()) {
        std::cerr << "vt_infer: the TensorRT engine runtime is not compiled in (configure with "
                     "TensorRT available to run engines)\n";
        return kExitNoRuntime;
    }
    return run_engine(std::move(bundle), batch, o);
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
