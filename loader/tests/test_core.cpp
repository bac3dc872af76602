// Top-k, softmax, engine compatibility messages and build_plan.json parsing.
#include <cmath>

#include "bundle_util.hpp"
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
                     "format_version": 3})"),
                 vtedge::ManifestError, "build_plan.json: unsupported format_version 3");
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

namespace {

// A plan object as pipeline/backends/tensorrt_plan.py writes it (the Jetson AGX Orin target).
std::string orin_plan(const std::string& precision, const std::string& trt, int version = 2) {
    const bool typed = trt != "8.6";
    const std::string flags = typed ? "[]" : precision == "fp16" ? R"(["FP16"])"
                              : precision == "int8-trt" ? R"(["INT8", "FP16"])" : "[]";
    const std::string network = !typed ? R"(["EXPLICIT_BATCH"])"
                                : trt.rfind("10", 0) == 0 ? R"(["STRONGLY_TYPED"])" : "[]";
    return R"({"target": "jetson-agx-orin", "model": "vt_demo", "precision": ")" + precision +
           R"(", "onnx": "models/model.)" + precision + R"(.onnx", "engine": "engines/vt_demo.)" +
           precision + ".b1-8-32.trt" + trt + R"(.sm87.engine", "input_chw": [3, 112, 112],
           "profile": {"min": 1, "opt": 8, "max": 32}, "workspace_mib": 4096,
           "tensorrt_version": ")" + trt + R"(", "strongly_typed": )" + (typed ? "true" : "false") +
           R"(, "network_flags": )" + network + R"(, "builder_flags": )" + flags +
           R"(, "dla_core": null, "gpu_fallback": false, "timing_cache": "engines/timing.trt)" + trt +
           R"(.sm87.cache", "compute_capability": "8.7", "input_name": "images",
           "output_name": "logits", "format_version": )" + std::to_string(version) + "}";
}

// build_plan.json as the pipeline writes it: one plan per (precision, TensorRT version).
std::string orin_document(const std::vector<std::string>& versions, int version = 2) {
    std::string plans;
    for (const auto& trt : versions) {
        for (const char* precision : {"fp32", "fp16", "int8-trt"}) {
            plans += (plans.empty() ? "" : ",\n") + orin_plan(precision, trt, version);
        }
    }
    return R"({"format_version": )" + std::to_string(version) +
           R"(, "target": "jetson-agx-orin", "plans": [)" + plans + "]}";
}

}  // namespace

TEST(build_plan_document_per_tensorrt_version) {
    const auto plans = vtedge::parse_build_plans(orin_document({"8.6", "10.3", "11.4"}));
    CHECK_EQ(plans.size(), 9u);

    const vtedge::BuildPlan& p10 = vtedge::select_build_plan(plans, "int8-trt", "10.3.0.30");
    CHECK_EQ(p10.tensorrt_version, std::string("10.3"));
    CHECK_EQ(p10.precision, std::string("int8-trt"));
    CHECK_EQ(p10.onnx, std::string("models/model.int8-trt.onnx"));
    CHECK_EQ(p10.engine, std::string("engines/vt_demo.int8-trt.b1-8-32.trt10.3.sm87.engine"));
    CHECK_EQ(p10.target, std::string("jetson-agx-orin"));
    CHECK(p10.strongly_typed);
    CHECK(p10.builder_flags == std::optional<std::vector<std::string>>(std::vector<std::string>{}));
    CHECK(p10.input_chw == std::vector<int64_t>({3, 112, 112}));
    CHECK_EQ(p10.profile.max, 32);
    CHECK_EQ(p10.workspace_mib, 4096);
    CHECK(p10.timing_cache == std::optional<std::string>("engines/timing.trt10.3.sm87.cache"));
    CHECK(vtedge::check_build_plan(p10, {"10.3.0.30", "8.7"}).ok);

    const vtedge::BuildPlan& p8 = vtedge::select_build_plan(plans, "fp16", "8.6.2.3");
    CHECK_EQ(p8.tensorrt_version, std::string("8.6"));
    CHECK(!p8.strongly_typed);
    CHECK(p8.builder_flags == std::optional<std::vector<std::string>>({{"FP16"}}));

    CHECK_EQ(vtedge::select_build_plan(plans, "fp32", "11.4.0").tensorrt_version, std::string("11.4"));
    // No precision asked: the first plan for this TensorRT.
    const vtedge::BuildPlan& any = vtedge::select_build_plan(plans, "", "10.3.0");
    CHECK_EQ(any.precision, std::string("fp32"));
    CHECK_EQ(any.tensorrt_version, std::string("10.3"));
}

TEST(build_plan_format_2_names_its_network_flags_and_requires_every_key) {
    const auto plans = vtedge::parse_build_plans(orin_document({"8.6", "10.3", "11.4"}));
    using Names = std::optional<std::vector<std::string>>;
    CHECK(vtedge::select_build_plan(plans, "fp16", "8.6.2").network_flags == Names({{"EXPLICIT_BATCH"}}));
    CHECK(vtedge::select_build_plan(plans, "fp16", "10.3.0").network_flags == Names({{"STRONGLY_TYPED"}}));
    CHECK(vtedge::select_build_plan(plans, "fp16", "11.4.0").network_flags == Names(std::vector<std::string>{}));
    // Version 1 documents are still read, their flags as written.
    CHECK_EQ(vtedge::parse_build_plans(orin_document({"10.3"}, 1)).size(), 3u);
    // A format-2 plan lacking a key is refused, naming it.
    std::string lacking = orin_document({"10.3"});
    const std::string key = R"("network_flags": ["STRONGLY_TYPED"], )";
    lacking.erase(lacking.find(key), key.size());
    CHECK_THROWS(vtedge::parse_build_plans(lacking), vtedge::ManifestError,
                 "build_plan.json: missing key 'plans[0].network_flags'");
    // A plan of another format than its document's is refused, naming both.
    std::string mixed = orin_document({"10.3"});
    mixed.replace(mixed.find(R"("format_version": 2})"), 20, R"("format_version": 1})");
    CHECK_THROWS(vtedge::parse_build_plans(mixed), vtedge::ManifestError,
                 "key 'plans[0].format_version' is 1, the document's is 2");
}

TEST(build_plan_no_match_lists_what_there_is) {
    const auto plans = vtedge::parse_build_plans(orin_document({"8.6", "10.3", "11.4"}));
    const std::string available =
        "available (precision, TensorRT): (fp32, 8.6), (fp16, 8.6), (int8-trt, 8.6), "
        "(fp32, 10.3), (fp16, 10.3), (int8-trt, 10.3), (fp32, 11.4), (fp16, 11.4), (int8-trt, 11.4)";
    CHECK_THROWS(vtedge::select_build_plan(plans, "fp16", "10.4.0"), vtedge::CompatibilityError,
                 "build_plan.json: no plan for precision 'fp16' and TensorRT 10.4.0; " + available);
    CHECK_THROWS(vtedge::select_build_plan(plans, "int8", "10.3.0"), vtedge::CompatibilityError,
                 "no plan for precision 'int8' and TensorRT 10.3.0; " + available);
    CHECK_THROWS(vtedge::select_build_plan(plans, "", "9.0.0"), vtedge::CompatibilityError,
                 "build_plan.json: no plan for TensorRT 9.0.0; " + available);
    CHECK_THROWS(vtedge::select_build_plan(plans, "fp16", ""), vtedge::CompatibilityError,
                 "no plan for precision 'fp16' and TensorRT (unknown)");
    // "10.3" is not "10.30".
    CHECK_THROWS(vtedge::select_build_plan(plans, "fp16", "10.30.1"), vtedge::CompatibilityError,
                 "TensorRT 10.30.1; ");
}

TEST(build_plan_wildcards_and_specificity) {
    // Desktop targets: "10.x" / "11.x"; an exact version beats a wildcard whatever the order.
    const auto plans = vtedge::parse_build_plans(orin_document({"10.x", "11.x", "10.3"}));
    CHECK_EQ(vtedge::select_build_plan(plans, "fp16", "10.3.0.30").tensorrt_version, std::string("10.3"));
    CHECK_EQ(vtedge::select_build_plan(plans, "fp16", "10.7.0").tensorrt_version, std::string("10.x"));
    CHECK_EQ(vtedge::select_build_plan(plans, "int8-trt", "11.1.0").tensorrt_version, std::string("11.x"));
    CHECK_THROWS(vtedge::select_build_plan(plans, "fp16", "12.0.0"), vtedge::CompatibilityError,
                 "(fp32, 10.x), (fp16, 10.x)");
    // A plan without tensorrt_version matches any, but a versioned match wins.
    const auto mixed = vtedge::parse_build_plans(
        R"([{"onnx": "a.onnx", "precision": "fp16", "profile": {"min": 1, "opt": 1, "max": 1},
             "workspace_mib": 0, "dla_core": null, "strongly_typed": true, "timing_cache": null},
            {"onnx": "b.onnx", "precision": "fp16", "profile": {"min": 1, "opt": 1, "max": 1},
             "workspace_mib": 0, "dla_core": null, "strongly_typed": true, "timing_cache": null,
             "tensorrt_version": "10.x"}])");
    CHECK_EQ(vtedge::select_build_plan(mixed, "fp16", "10.3.0").onnx, std::string("b.onnx"));
    CHECK_EQ(vtedge::select_build_plan(mixed, "fp16", "8.6.1").onnx, std::string("a.onnx"));
}

TEST(build_plan_document_errors) {
    std::string doc = orin_document({"10.3"});
    CHECK_THROWS(vtedge::parse_build_plans(R"({"format_version": 3, "target": "x", "plans": [)" +
                                           orin_plan("fp16", "10.3") + "]}"),
                 vtedge::ManifestError, "build_plan.json: unsupported format_version 3 (this loader reads 1 and 2)");
    CHECK_THROWS(vtedge::parse_build_plans(R"({"format_version": 1, "target": 5, "plans": []})"),
                 vtedge::ManifestError, "build_plan.json: key 'target' must be a string");
    CHECK_THROWS(vtedge::parse_build_plans(R"({"format_version": 1, "target": "x", "plans": []})"),
                 vtedge::ManifestError, "build_plan.json: holds no build plan");
    CHECK_THROWS(vtedge::parse_build_plans(R"({"format_version": 1, "plans": {}})"),
                 vtedge::ManifestError, "build_plan.json: key 'plans' must be an array");
    doc.replace(doc.find(R"("tensorrt_version": "10.3")"), 26, R"("tensorrt_version": 10.3)");
    CHECK_THROWS(vtedge::parse_build_plans(doc), vtedge::ManifestError,
                 "key 'plans[0].tensorrt_version' must be a string");
}

// The synthesized bundle's build_plan.json (8.6 / 10.3 / 11.x plans, and a 10.x DLA plan).
TEST(fixture_build_plan_is_selected_by_tensorrt_version) {
    const auto dir = check::fixtures() / "synthetic";
    CHECK_EQ(vtedge::read_build_plan(dir, "fp16", "8.6.1.6").tensorrt_version, std::string("8.6"));
    const vtedge::BuildPlan p103 = vtedge::read_build_plan(dir, "int8-trt", "10.3.0.30");
    CHECK_EQ(p103.tensorrt_version, std::string("10.3"));
    CHECK(!p103.dla_core.has_value());
    const vtedge::BuildPlan p107 = vtedge::read_build_plan(dir, "int8-trt", "10.7.0");
    CHECK_EQ(p107.tensorrt_version, std::string("10.x"));
    CHECK(p107.dla_core == std::optional<int>(0));
    CHECK(p107.gpu_fallback);
    CHECK_EQ(vtedge::read_build_plan(dir, "fp32", "11.1.0").tensorrt_version, std::string("11.x"));
    CHECK_THROWS(vtedge::read_build_plan(dir, "fp16", "10.7.0"), vtedge::CompatibilityError,
                 "build_plan.json: no plan for precision 'fp16' and TensorRT 10.7.0; available "
                 "(precision, TensorRT): (fp32, 8.6), (fp16, 8.6), (int8-trt, 8.6), (fp32, 10.3)");
    CHECK_THROWS(vtedge::read_build_plan(dir / "missing", "fp16", "10.3.0"), vtedge::ManifestError,
                 "build_plan.json: cannot open");
}

// The build_plan.json the pipeline itself wrote for the tiny project's Jetson target
// (`pipeline build --target jetson`, made by the fixture step when the pipeline imports).
TEST(pipeline_written_build_plan_is_read) {
    const auto dir = check::fixtures() / "pipeline-plan";
    if (!std::filesystem::exists(dir / "build_plan.json")) {
        std::cout << "  skipped: no pipeline-made build_plan.json (the pipeline is not importable)\n";
        return;
    }
    const auto doc = nlohmann::json::parse(testutil::read_text(dir / "build_plan.json"));
    const auto plans = vtedge::parse_build_plans(testutil::read_text(dir / "build_plan.json"));
    CHECK_EQ(plans.size(), doc["plans"].size());
    std::string available;
    for (std::size_t i = 0; i < plans.size(); ++i) {
        const auto& raw = doc["plans"][i];
        CHECK_EQ(plans[i].precision, raw["precision"].get<std::string>());
        CHECK_EQ(plans[i].tensorrt_version, raw["tensorrt_version"].get<std::string>());
        CHECK_EQ(plans[i].onnx, raw["onnx"].get<std::string>());
        CHECK_EQ(plans[i].engine, raw["engine"].get<std::string>());
        CHECK_EQ(plans[i].strongly_typed, raw["strongly_typed"].get<bool>());
        CHECK(plans[i].builder_flags ==
              std::optional<std::vector<std::string>>(raw["builder_flags"].get<std::vector<std::string>>()));
        CHECK_EQ(plans[i].target, doc["target"].get<std::string>());
        available += (available.empty() ? "" : ", ") + std::string("(") + plans[i].precision + ", " +
                     plans[i].tensorrt_version + ")";
    }
    // Each version the tiny project's target ships (8.6, 10.3, 11.4) selects its own plan.
    for (const auto& found : {std::string("8.6.1.6"), std::string("10.3.0.30"), std::string("11.4.0")}) {
        const vtedge::BuildPlan p = vtedge::read_build_plan(dir, "int8-trt", found);
        CHECK(vtedge::plan_version_matches(p.tensorrt_version, found));
        CHECK(vtedge::check_build_plan(p, {found, "8.7"}).ok);
        std::cout << "  TensorRT " << found << ": " << p.engine << "\n";
    }
    CHECK_THROWS(vtedge::read_build_plan(dir, "int8-trt", "10.4.0"), vtedge::CompatibilityError,
                 "no plan for precision 'int8-trt' and TensorRT 10.4.0; available (precision, "
                 "TensorRT): " + available);
}
