// Manifest reading: the fixture bundle, and one refusal per kind of malformed manifest.
#include <nlohmann/json.hpp>

#include "bundle_util.hpp"
#include "check.hpp"
#include "vtedge/loader.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json facts() { return testutil::facts(check::fixtures()); }

std::vector<std::string> bundles() { return testutil::fixture_bundles(check::fixtures()); }

json fixture_manifest(const std::string& name) {
    return testutil::load_manifest(check::fixtures() / name);
}

vtedge::Manifest parse(const json& j) { return vtedge::parse_manifest(j.dump()); }

}  // namespace

TEST(fixture_bundles_are_read_and_verified) {
    for (const std::string& name : bundles()) {
        const json f = facts()[name];
        std::cout << "  " << name << ": " << f["source"].get<std::string>() << " bundle '"
                  << f["name"].get<std::string>() << "'\n";
        const vtedge::Bundle b = vtedge::open_bundle(check::fixtures() / name);
        const vtedge::Manifest& m = b.manifest;
        CHECK_EQ(m.format_version, f["format_version"].get<int>());
        CHECK_EQ(m.name, f["name"].get<std::string>());
        CHECK_EQ(m.model.num_classes, f["num_classes"].get<int>());
        CHECK(m.labels == f["labels"].get<std::vector<std::string>>());
        CHECK_EQ(m.files.size(), f["files"].get<std::size_t>());
        CHECK_EQ(b.verified.files_verified, m.files.size());
        CHECK_EQ(m.engines.size(), f["engines"].get<std::size_t>());
        CHECK_EQ(m.rebuild_command, f["rebuild_command"].get<std::string>());
        CHECK_EQ(m.target.name, f["target"].get<std::string>());
        CHECK(m.input.shape == f["input_shape"].get<std::vector<int64_t>>());

        const json& pp = f["preprocessing"];
        CHECK_EQ(m.preprocessing.resize, pp["resize"].get<int>());
        CHECK_EQ(m.preprocessing.crop, pp["crop"].get<int>());
        CHECK_EQ(m.preprocessing.color, pp["color"].get<std::string>());
        CHECK_EQ(m.preprocessing.interpolation, pp["interpolation"].get<std::string>());
        CHECK_EQ(m.preprocessing.scale, pp["scale"].get<float>());
        for (int c = 0; c < 3; ++c) {
            CHECK_EQ(m.preprocessing.mean[c], pp["mean"][c].get<float>());
            CHECK_EQ(m.preprocessing.std[c], pp["std"][c].get<float>());
        }
        std::vector<std::string> precisions, optimized;
        for (const auto& kv : m.precisions) {
            precisions.push_back(kv.first);
            if (kv.second.optimized) optimized.push_back(kv.first);
        }
        CHECK(precisions == f["precisions"].get<std::vector<std::string>>());
        CHECK(optimized == f["optimized"].get<std::vector<std::string>>());
    }
}

TEST(synthesized_bundle_details) {
    const vtedge::Manifest m = vtedge::read_manifest(check::fixtures() / "synthetic");
    CHECK_EQ(m.labels.front(), std::string("tench"));
    CHECK_EQ(m.input.name, std::string("images"));
    CHECK(m.input.shape == std::vector<int64_t>({-1, 3, 224, 224}));
    CHECK_EQ(m.output.name, std::string("logits"));
    CHECK(m.target.compute_capability.has_value() && *m.target.compute_capability == "8.7");
    CHECK(m.target.tensorrt_majors == std::vector<int>({10}));
    CHECK(!m.precisions.at("fp32").optimized.has_value());
    CHECK_EQ(m.engines.at(0).tensorrt_version, std::string("10.3.0"));
    CHECK_EQ(m.engines.at(0).profile.max, 8);
    CHECK_EQ(m.host.cpu_count, 8);
    CHECK_EQ(m.versions.at("onnx"), std::string("1.16.0"));
    CHECK(m.pending == std::vector<std::string>({"engine:int8-trt"}));
    CHECK(json::parse(m.model.spec_json)["embed_dim"] == 192);
}

// What the pipeline writes for its cpu target (tests/tiny_project.py): checked against the
// manifest as Python's json reads it, plus the facts of the cpu target.
TEST(pipeline_bundle_details) {
    const json f = facts()["bundle"];
    if (f["source"] != "pipeline") {
        std::cout << "  skipped: the fixture bundle is " << f["source"].get<std::string>()
                  << ", not made by the pipeline\n";
        return;
    }
    const fs::path dir = check::fixtures() / "bundle";
    const json raw = testutil::load_manifest(dir);
    const vtedge::Manifest m = vtedge::read_manifest(dir);
    CHECK_EQ(m.target.backend, std::string("onnxruntime"));
    CHECK(!m.target.compute_capability.has_value());
    CHECK(m.target.tensorrt_majors.empty());
    CHECK(m.engines.empty());
    CHECK_EQ(m.input.name, raw["input"]["name"].get<std::string>());
    CHECK_EQ(m.output.name, raw["output"]["name"].get<std::string>());
    CHECK(m.output.shape == raw["output"]["shape"].get<std::vector<int64_t>>());
    CHECK_EQ(m.model.name, raw["model"]["name"].get<std::string>());
    CHECK_EQ(m.model.arch, raw["model"]["arch"].get<std::string>());
    CHECK(json::parse(m.model.spec_json) == raw["model"]["spec"]);
    CHECK_EQ(m.created_utc, raw["created_utc"].get<std::string>());
    CHECK(m.pending == raw["pending"].get<std::vector<std::string>>());
    CHECK_EQ(m.versions.size(), raw["versions"].size());
    CHECK_EQ(m.host.cpu_count, raw["host"]["cpu_count"].get<int>());
    for (const auto& kv : m.precisions) {
        CHECK_EQ(kv.second.onnx, raw["precisions"][kv.first]["onnx"].get<std::string>());
    }
    for (const char* rel : {"reference/eval_set.json", "reference/eval_crops.npy",
                            "reference/fp32_logits.npy", "report/report.json"}) {
        CHECK(m.files.count(rel) == 1);
    }
}

TEST(malformed_json_reports_the_parse_error) {
    testutil::ScratchDir dir("badjson");
    testutil::write_text(dir.path() / "manifest.json", "{\"format_version\": 1,, }");
    CHECK_THROWS(vtedge::read_manifest(dir.path()), vtedge::ManifestError,
                 "manifest.json: invalid JSON: ");
    CHECK_THROWS(vtedge::read_manifest(dir.path()), vtedge::ManifestError, "parse error");
}

TEST(missing_manifest) {
    testutil::ScratchDir dir("nomanifest");
    CHECK_THROWS(vtedge::read_manifest(dir.path()), vtedge::ManifestError,
                 "manifest.json: cannot open");
}

TEST(missing_keys_are_named_with_their_path) {
    for (const std::string& name : bundles()) {
        json m = fixture_manifest(name);
        m["preprocessing"].erase("mean");
        CHECK_THROWS(parse(m), vtedge::ManifestError, "manifest.json: missing key 'preprocessing.mean'");

        m = fixture_manifest(name);
        m.erase("labels");
        CHECK_THROWS(parse(m), vtedge::ManifestError, "manifest.json: missing key 'labels'");

        m = fixture_manifest(name);
        if (m["engines"].empty()) m["engines"].push_back(json::object());
        m["engines"][0].erase("path");
        CHECK_THROWS(parse(m), vtedge::ManifestError, "manifest.json: missing key 'engines[0].path'");

        m = fixture_manifest(name);
        m["files"].begin().value().erase("sha256");
        CHECK_THROWS(parse(m), vtedge::ManifestError, ".sha256'");
    }
}

TEST(wrong_types_are_refused) {
    for (const std::string& name : bundles()) {
        json m = fixture_manifest(name);
        m["labels"] = "tench";
        CHECK_THROWS(parse(m), vtedge::ManifestError,
                     "manifest.json: key 'labels' must be an array of strings");
        m["labels"] = json::array({1, 2});
        CHECK_THROWS(parse(m), vtedge::ManifestError,
                     "manifest.json: key 'labels' must be an array of strings");

        m = fixture_manifest(name);
        m["format_version"] = "1";
        CHECK_THROWS(parse(m), vtedge::ManifestError, "key 'format_version' must be an integer");

        m = fixture_manifest(name);
        m["preprocessing"]["std"] = json::array({0.2, 0.2});
        CHECK_THROWS(parse(m), vtedge::ManifestError,
                     "key 'preprocessing.std' must be an array of 3 numbers");

        m = fixture_manifest(name);
        m["target"]["compute_capability"] = 8.7;
        CHECK_THROWS(parse(m), vtedge::ManifestError,
                     "key 'target.compute_capability' must be a string or null");

        m = fixture_manifest(name);
        m["files"].begin().value()["sha256"] = "abc";
        CHECK_THROWS(parse(m), vtedge::ManifestError, "must be a SHA-256 hex string");

        m = fixture_manifest(name);
        m["model"]["num_classes"] = 1.5;
        CHECK_THROWS(parse(m), vtedge::ManifestError, "key 'model.num_classes' must be an integer");

        CHECK_THROWS(vtedge::parse_manifest("[1, 2]"), vtedge::ManifestError,
                     "the top level must be a JSON object");
    }
}

TEST(unknown_format_version_is_refused) {
    for (const std::string& name : bundles()) {
        json m = fixture_manifest(name);
        m["format_version"] = 4;
        CHECK_THROWS(parse(m), vtedge::ManifestError,
                     "manifest.json: unsupported format_version 4 (this loader reads 1 to 3)");
        m["format_version"] = 0;
        CHECK_THROWS(parse(m), vtedge::ManifestError, "manifest.json: unsupported format_version 0");
    }
}

TEST(inconsistent_values_are_refused) {
    for (const std::string& name : bundles()) {
        json m = fixture_manifest(name);
        m["labels"].erase(m["labels"].size() - 1);
        CHECK_THROWS(parse(m), vtedge::ManifestError, "but 'model.num_classes' is");

        m = fixture_manifest(name);
        m["preprocessing"]["interpolation"] = "bicubic";
        CHECK_THROWS(parse(m), vtedge::ManifestError,
                     "key 'preprocessing.interpolation' is 'bicubic'; this loader supports 'bilinear'");

        m = fixture_manifest(name);
        m["preprocessing"]["crop"] = 300;
        CHECK_THROWS(parse(m), vtedge::ManifestError, "must not exceed 'preprocessing.resize'");

        m = fixture_manifest(name);
        m["preprocessing"]["std"] = json::array({0.2, 0.0, 0.2});
        CHECK_THROWS(parse(m), vtedge::ManifestError, "must hold positive numbers");
    }
}
