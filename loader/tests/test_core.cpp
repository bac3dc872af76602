// Top-k, softmax, engine compatibility messages and build_plan.json parsing.
#include <cmath>

#include "check.hpp"
#include "vtedge/loader.hpp"

namespace {

vtedge::EngineEntry engine(const std::string& trt, const std::string& cc,
                           const std::string& precision = "fp16") {
    vtedge::EngineEntry e;
    e.path = "engines/x.engine";
    e.precision = precision;
    e.tensorrt_version = trt;
    e.compute_capability = cc;
    return e;
}

const std::string kRebuild = "python -m pipeline build --target jetson-agx-orin --bundle engines/b";

}  // namespace

TEST(top_k_orders_by_score) {
    const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.0f, 2.5f};
    const auto top = vtedge::top_k(logits, {"a", "b", "c", "d", "e"}, 3);
    CHECK_EQ(top.size(), 3u);
    CHECK_EQ(top[0].index, 1);
    CHECK_EQ(top[0].label, std::string("b"));
    CHECK_EQ(top[1].index, 4);
    CHECK_EQ(top[2].index, 3);
    CHECK(top[0].score > top[1].score && top[1].score > top[2].score);
}

TEST(top_k_ties_keep_lower_index_first) {
    const std::vector<float> logits = {1.0f, 2.0f, 2.0f, 0.5f, 2.0f};
    const auto top = vtedge::top_k(logits, {}, 5);
    CHECK_EQ(top[0].index, 1);
    CHECK_EQ(top[1].index, 2);
    CHECK_EQ(top[2].index, 4);
    CHECK_EQ(top[3].index, 0);
    CHECK_EQ(top[4].index, 3);
    CHECK_EQ(top[0].label, std::string("class 1"));
    CHECK_EQ(top[0].score, top[1].score);
}

TEST(top_k_edge_cases) {
    CHECK(vtedge::top_k({}, {}, 5).empty());
    CHECK_EQ(vtedge::top_k({1.0f, 2.0f}, {"a", "b"}, 5).size(), 2u);
    CHECK(vtedge::top_k({1.0f}, {"a"}, 0).empty());
    const auto with_nan = vtedge::top_k({NAN, 1.0f, 0.0f}, {}, 3);
    CHECK_EQ(with_nan[0].index, 1);
    CHECK_EQ(with_nan[2].index, 0);
}

TEST(softmax_is_stable_and_normalised) {
    const auto p = vtedge::softmax({1000.0f, 1000.0f, 0.0f});
    CHECK(std::abs(p[0] - 0.5f) < 1e-6f);
    CHECK(std::abs(p[1] - 0.5f) < 1e-6f);
    CHECK(p[2] >= 0.0f && p[2] < 1e-30f);
    const auto q = vtedge::softmax({0.3f, -2.0f, 1.7f, 0.0f});
    double sum = 0;
    for (float v : q) sum += v;
    CHECK(std::abs(sum - 1.0) < 1e-6);
}

TEST(tensorrt_release_parsing) {
    CHECK(vtedge::tensorrt_release("10.3.0") == std::optional<std::string>("10.3.0"));
    CHECK(vtedge::tensorrt_release("10.3.0.26") == std::optional<std::string>("10.3.0"));
    CHECK(vtedge::tensorrt_release("8.6.1.6") == std::optional<std::string>("8.6.1"));
    CHECK(!vtedge::tensorrt_release("10.3").has_value());
    CHECK(!vtedge::tensorrt_release("ten").has_value());
    CHECK(!vtedge::tensorrt_release("").has_value());
}

TEST(compatible_engine_passes) {
    CHECK(vtedge::check_engine(engine("10.3.0", "8.7"), {"10.3.0", "8.7"}, kRebuild).ok);
    CHECK(vtedge::check_engine(engine("10.3.0", "8.7"), {"10.3.0.26", "8.7"}, kRebuild).ok);
}

TEST(incompatible_engine_says_what_to_rebuild) {
    const auto r = vtedge::check_engine(engine("10.3.0", "8.7"), {"10.7.0", "8.9"}, kRebuild);
    CHECK(!r.ok);
    CHECK_EQ(r.message,
             "engine engines/x.engine was built for TensorRT 10.3.0 on compute capability 8.7; "
             "this system has TensorRT 10.7.0 on 8.9: rebuild it on this device with: " + kRebuild);
    std::cout << "  message: " << r.message << "\n";
    // The patch release matters, and so does the GPU alone.
    CHECK(!vtedge::check_engine(engine("10.3.0", "8.7"), {"10.3.1", "8.7"}, kRebuild).ok);
    CHECK(!vtedge::check_engine(engine("10.3.0", "8.7"), {"10.3.0", "8.6"}, kRebuild).ok);
    CHECK(!vtedge::check_engine(engine("8.6.1", "8.7"), {"10.3.0", "8.7"}, kRebuild).ok);
    CHECK(!vtedge::check_engine(engine("garbage", "8.7"), {"10.3.0", "8.7"}, kRebuild).ok);
}

TEST(select_engine_picks_the_matching_one) {
    vtedge::Manifest m;
    m.rebuild_command = kRebuild;
    m.engines = {engine("10.3.0", "8.7"), engine("10.7.0", "8.9"), engine("10.7.0", "8.9", "int8-trt")};
    m.engines[1].path = "engines/y.engine";
    CHECK_EQ(vtedge::select_engine(m, "fp16", {"10.7.0", "8.9"}).path, std::string("engines/y.engine"));
    CHECK_THROWS(vtedge::select_engine(m, "fp16", {"10.4.0", "8.9"}), vtedge::CompatibilityError,
                 "engine engines/x.engine was built for TensorRT 10.3.0 on compute capability 8.7; "
                 "this system has TensorRT 10.4.0 on 8.9: rebuild it on this device with: ");
    CHECK_THROWS(vtedge::select_engine(m, "fp32", {"10.7.0", "8.9"}), vtedge::CompatibilityError,
                 "bundle has no fp32 engine; build one on this device with: " + kRebuild);
}

TEST(build_plan_layouts) {
    const std::string one =
        R"({"onnx": "models/m.onnx", "precision": "fp16", "profile": {"min": 1, "opt": 2, "max": 4},
            "workspace_mib": 512, "dla_core": null, "strongly_typed": true, "timing_cache": "t.cache"})";
    auto plans = vtedge::parse_build_plans(one);
    CHECK_EQ(plans.size(), 1u);
    CHECK_EQ(plans[0].onnx, std::string("models/m.onnx"));
    CHECK_EQ(plans[0].profile.opt, 2);
    CHECK_EQ(plans[0].workspace_mib, 512);
    CHECK(!plans[0].dla_core.has_value());
    CHECK(plans[0].strongly_typed);
    CHECK(plans[0].timing_cache == std::optional<std::string>("t.cache"));

    plans = vtedge::parse_build_plans("{\"plans\": [" + one + "," + one + "]}");
    CHECK_EQ(plans.size(), 2u);
    plans = vtedge::parse_build_plans("[" + one + "]");
    CHECK_EQ(plans.size(), 1u);

    const std::string shapes =
        R"({"onnx": "m.onnx", "precision": "int8-trt", "profile": {"min": [1,3,224,224],
            "opt": [8,3,224,224], "max": [16,3,224,224]}, "workspace_mib": 0, "dla_core": 1,
            "strongly_typed": false, "timing_cache": null})";
    plans = vtedge::parse_build_plans(shapes);
    CHECK_EQ(plans[0].profile.max, 16);
    CHECK(plans[0].dla_core == std::optional<int>(1));
    CHECK(!plans[0].strongly_typed);
}

TEST(build_plan_errors) {
    CHECK_THROWS(vtedge::parse_build_plans("{"), vtedge::ManifestError, "build_plan.json: invalid JSON");
    CHECK_THROWS(vtedge::parse_build_plans(R"({"onnx": "m.onnx"})"), vtedge::ManifestError,
                 "build_plan.json: missing key 'precision'");
    CHECK_THROWS(vtedge::parse_build_plans(
                     R"({"plans": [{"onnx": "m", "precision": "fp16", "profile": {"min": 4, "opt": 2, "max": 1},
                         "workspace_mib": 0, "dla_core": null, "strongly_typed": true, "timing_cache": null}]})"),
                 vtedge::ManifestError, "key 'plans[0].profile' must satisfy 1 <= min <= opt <= max");
    CHECK_THROWS(vtedge::parse_build_plans(
                     R"({"onnx": "m", "precision": "fp16", "profile": {"min": 1, "opt": 1, "max": 1},
                         "workspace_mib": 0, "dla_core": "0", "strongly_typed": true, "timing_cache": null})"),
                 vtedge::ManifestError, "key 'dla_core' must be an integer >= 0 or null");
}

TEST(pipeline_build_plan_is_read) {
    // The layout pipeline/backends/tensorrt_plan.py writes (BuildPlan.to_dict()).
    const std::string text = R"({
      "target": "jetson-agx-orin", "model": "vt_demo", "precision": "int8-trt",
      "onnx": "models/model.int8-trt.onnx",
      "engine": "engines/vt_demo.int8-trt.b1-8-32.trt10.3.sm87.dla0.engine",
      "input_chw": [3, 224, 224], "profile": {"min": 1, "opt": 8, "max": 32},
      "workspace_mib": 2048, "tensorrt_version": "10.3", "strongly_typed": false,
      "network_flags": [], "builder_flags": ["INT8", "FP16", "GPU_FALLBACK"], "dla_core": 0,
      "gpu_fallback": true, "timing_cache": "engines/timing.trt10.3.sm87.cache",
      "compute_capability": "8.7", "input_name": "images", "output_name": "logits",
      "format_version": 1})";
    const vtedge::BuildPlan plan = vtedge::parse_build_plans(text).at(0);
    CHECK_EQ(plan.model, std::string("vt_demo"));
    CHECK(plan.input_chw == std::vector<int64_t>({3, 224, 224}));
    CHECK(plan.builder_flags == std::optional<std::vector<std::string>>({{"INT8", "FP16", "GPU_FALLBACK"}}));
    CHECK(plan.dla_core == std::optional<int>(0));
    CHECK(!plan.strongly_typed);
    CHECK(vtedge::check_build_plan(plan, {"10.3.0.30", "8.7"}).ok);
    CHECK_EQ(vtedge::check_build_plan(plan, {"10.4.0", "8.7"}).message,
             std::string("build_plan.json is for TensorRT 10.3, this system has 10.4.0"));
    CHECK_EQ(vtedge::check_build_plan(plan, {"10.3.0", "8.9"}).message,
             std::string("build_plan.json is for compute capability 8.7, this GPU is 8.9"));
    CHECK_EQ(vtedge::engine_file_name(plan, plan.model, {"10.3.0.30", "8.7"}),
             std::string("vt_demo.int8-trt.b1-8-32.trt10.3.0.sm87.dla0.engine"));
    CHECK_THROWS(vtedge::parse_build_plans(R"({"onnx": "m", "precision": "fp16", "profile": {"min": 1, "opt": 1, "max": 1},
                     "workspace_mib": 0, "dla_core": null, "strongly_typed": true, "timing_cache": null,
                     "format_version": 2})"),
                 vtedge::ManifestError, "build_plan.json: unsupported format_version 2");
}

TEST(plan_version_matching) {
    CHECK(vtedge::plan_version_matches("10.3", "10.3.0.30"));
    CHECK(vtedge::plan_version_matches("11.x", "11.4.1"));
    CHECK(vtedge::plan_version_matches("10.3.0", "10.3.0"));
    CHECK(vtedge::plan_version_matches("", "8.6.1"));
    CHECK(!vtedge::plan_version_matches("10.3", "10.30.0"));
    CHECK(!vtedge::plan_version_matches("10.3.0", "10.3"));
    CHECK(!vtedge::plan_version_matches("8.6", "10.3.0"));
}
