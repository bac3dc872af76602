// Preprocessing against the Python reference tensors written by make_fixtures.py.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "bundle_util.hpp"
#include "check.hpp"
#include "vtedge/loader.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<float> read_floats(const fs::path& p) {
    const std::string bytes = testutil::read_text(p);
    std::vector<float> v(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
    return v;
}

vtedge::Preprocessing fixture_spec() {
    return vtedge::read_manifest(check::fixtures() / "bundle").preprocessing;
}

}  // namespace

TEST(resized_size_follows_the_spec) {
    const auto a = vtedge::resized_size(640, 427, 256);
    CHECK_EQ(a.width, 383);  // 640 * 256 / 427 = 383.7 -> 383
    CHECK_EQ(a.height, 256);
    const auto b = vtedge::resized_size(300, 400, 256);
    CHECK_EQ(b.width, 256);
    CHECK_EQ(b.height, 341);
    const auto c = vtedge::resized_size(500, 500, 256);
    CHECK_EQ(c.width, 256);
    CHECK_EQ(c.height, 256);
}

// Every generated image must give the Python tensor. Exact agreement of the 8-bit crop
// shows as differences of float rounding only (< 1e-6); a pixel off by one 8-bit level
// would show as 1 / 255 / std (about 0.0175).
TEST(images_match_python_reference) {
    const fs::path dir = check::fixtures() / "images";
    const json index = json::parse(testutil::read_text(dir / "index.json"));
    const vtedge::Preprocessing spec = fixture_spec();
    const float one_level = 1.0f / 255.0f / *std::min_element(spec.std.begin(), spec.std.end());
    std::printf("  %-22s %-6s %-26s %12s %10s\n", "image", "mode", "reference", "max |diff|",
                "elements>1e-6");
    for (const auto& item : index["images"]) {
        const std::string name = item["file"];
        const std::vector<float> expected = read_floats(dir / item["tensor"].get<std::string>());
        const std::vector<float> actual = vtedge::preprocess_image(dir / name, spec);
        CHECK_EQ(actual.size(), expected.size());
        if (actual.size() != expected.size()) continue;
        double max_diff = 0.0;
        std::size_t off = 0;
        for (std::size_t i = 0; i < actual.size(); ++i) {
            const double d = std::abs(static_cast<double>(actual[i]) - expected[i]);
            max_diff = std::max(max_diff, d);
            if (d > 1e-6) ++off;
        }
        std::printf("  %-22s %-6s %-26s %12.3g %10zu\n", name.c_str(),
                    item["mode"].get<std::string>().c_str(),
                    item["reference"].get<std::string>().c_str(), max_diff, off);
        // Tolerance: bit-exact crops (float rounding only). The bound one_level is what a
        // single 8-bit difference would cost; it is reported, not allowed.
        if (!(max_diff <= 1e-6)) {
            check::fail(__FILE__, __LINE__,
                        name + ": max |diff| " + std::to_string(max_diff) + " over " +
                            std::to_string(off) + " elements (one 8-bit level = " +
                            std::to_string(one_level) + ")");
        }
    }
}

TEST(batch_is_nchw) {
    const fs::path dir = check::fixtures() / "images";
    const vtedge::Preprocessing spec = fixture_spec();
    const vtedge::Tensor t =
        vtedge::preprocess_batch({dir / "rgb_large.jpg", dir / "gray.png"}, spec);
    CHECK(t.shape == std::vector<int64_t>({2, 3, spec.crop, spec.crop}));
    const auto second = vtedge::preprocess_image(dir / "gray.png", spec);
    CHECK(std::equal(second.begin(), second.end(), t.data.begin() + second.size()));
}

TEST(bgr_swaps_channels) {
    const fs::path img = check::fixtures() / "images" / "rgb_small.jpg";
    vtedge::Preprocessing rgb = fixture_spec();
    vtedge::Preprocessing bgr = rgb;
    bgr.color = "BGR";
    std::reverse(bgr.mean.begin(), bgr.mean.end());
    std::reverse(bgr.std.begin(), bgr.std.end());
    const auto a = vtedge::preprocess_image(img, rgb);
    const auto b = vtedge::preprocess_image(img, bgr);
    const std::size_t plane = a.size() / 3;
    CHECK(std::equal(a.begin(), a.begin() + plane, b.begin() + 2 * plane));
}

TEST(bad_images_are_refused) {
    testutil::ScratchDir dir("images");
    const vtedge::Preprocessing spec = fixture_spec();
    testutil::write_text(dir.path() / "text.jpg", "not an image at all");
    CHECK_THROWS(vtedge::preprocess_image(dir.path() / "text.jpg", spec), vtedge::ImageError,
                 "not a JPEG or PNG file");
    CHECK_THROWS(vtedge::preprocess_image(dir.path() / "absent.png", spec), vtedge::ImageError,
                 "cannot open image");
    // Truncated files: the reference (Pillow) refuses them, so must the loader.
    for (const char* name : {"rgb_large.jpg", "gray.png"}) {
        const std::string bytes = testutil::read_text(check::fixtures() / "images" / name);
        const fs::path cut = dir.path() / (std::string("cut-") + name);
        testutil::write_text(cut, bytes.substr(0, bytes.size() / 2));
        CHECK_THROWS(vtedge::preprocess_image(cut, spec), vtedge::ImageError, "cannot decode");
    }
}
