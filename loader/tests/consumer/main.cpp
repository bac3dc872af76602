// Opens a bundle with the installed loader, as an application would.
//   consumer <bundle> <image>
#include <cstdio>
#include <exception>

#include <vtedge/classifier.hpp>
#include <vtedge/loader.hpp>

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    try {
        const vtedge::Bundle bundle = vtedge::open_bundle(argv[1]);
        const vtedge::Tensor x = vtedge::preprocess_batch({argv[2]}, bundle.manifest.preprocessing);
        const vtedge::LatencyStats s = vtedge::latency_stats({1.0, 2.0, 3.0});
        std::printf("consumer OK: %zu files verified, input %lldx%lldx%lldx%lld, p50 %.1f ms, "
                    "TensorRT runtime %s\n",
                    bundle.verified.files_verified, static_cast<long long>(x.shape[0]),
                    static_cast<long long>(x.shape[1]), static_cast<long long>(x.shape[2]),
                    static_cast<long long>(x.shape[3]), s.p50_ms,
                    vtedge::has_tensorrt_runtime() ? "yes" : "no");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "consumer: %s\n", e.what());
        return 1;
    }
}
