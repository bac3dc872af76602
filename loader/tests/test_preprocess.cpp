// Preprocessing against the Python reference tensors written by make_fixtures.py.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

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

// The hand-made bundle's preprocessing (resize 256, crop 224: up- and downscaling).
vtedge::Preprocessing fixture_spec() {
    return vtedge::read_manifest(check::fixtures() / "synthetic").preprocessing;
}

// The spec make_fixtures.py computed reference tensors with, read like a manifest.
vtedge::Preprocessing spec_from(const json& pp) {
    json m = testutil::load_manifest(check::fixtures() / "synthetic");
    m["preprocessing"] = pp;
    return vtedge::parse_manifest(m.dump()).preprocessing;
}

// A .npy array of uint8 (descr '|u1', C order), as numpy.save writes it.
struct NpyU8 {
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
};

NpyU8 read_npy_u8(const fs::path& p) {
    const std::string bytes = testutil::read_text(p);
    if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
        throw std::runtime_error(p.string() + ": not a .npy file");
    }
    const int major = static_cast<unsigned char>(bytes[6]);
    const std::size_t len_bytes = major == 1 ? 2 : 4;
    std::size_t header_len = 0;
    for (std::size_t i = 0; i < len_bytes; ++i) {
        header_len |= static_cast<std::size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    }
    const std::size_t start = 8 + len_bytes;
    const std::string header = bytes.substr(start, header_len);
    if (header.find("'descr': '|u1'") == std::string::npos ||
        header.find("'fortran_order': False") == std::string::npos) {
        throw std::runtime_error(p.string() + ": expected a C-order uint8 array: " + header);
    }
    NpyU8 out;
    const std::size_t open = header.find("'shape': (");
    const std::size_t close = header.find(')', open);
    if (open == std::string::npos || close == std::string::npos) {
        throw std::runtime_error(p.string() + ": no shape in " + header);
    }
    std::istringstream dims(header.substr(open + 10, close - open - 10));
    std::size_t count = 1;
    for (std::string d; std::getline(dims, d, ',');) {
        if (d.find_first_not_of(' ') == std::string::npos) continue;
        out.shape.push_back(std::stoll(d));
        count *= static_cast<std::size_t>(out.shape.back());
    }
    if (bytes.size() - start - header_len != count) {
        throw std::runtime_error(p.string() + ": data size does not match the shape");
    }
    out.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(start + header_len), bytes.end());
    return out;
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
    for (const auto& kv : index["specs"].items()) {
        const std::string key = kv.key();
        const vtedge::Preprocessing spec = spec_from(kv.value());
        const float one_level = 1.0f / 255.0f / *std::min_element(spec.std.begin(), spec.std.end());
        std::printf("  spec '%s': resize %d, crop %d\n", key.c_str(), spec.resize, spec.crop);
        std::printf("  %-22s %-6s %-26s %12s %10s\n", "image", "mode", "reference", "max |diff|",
                    "elements>1e-6");
        for (const auto& item : index["images"]) {
            const std::string name = item["file"];
            const json& ref = item["tensors"][key];
            const std::vector<float> expected = read_floats(dir / ref["file"].get<std::string>());
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
                        ref["reference"].get<std::string>().c_str(), max_diff, off);
            // Tolerance: bit-exact crops (float rounding only). The bound one_level is what a
            // single 8-bit difference would cost; it is reported, not allowed.
            if (!(max_diff <= 1e-6)) {
                check::fail(__FILE__, __LINE__,
                            key + "/" + name + ": max |diff| " + std::to_string(max_diff) +
                                " over " + std::to_string(off) + " elements (one 8-bit level = " +
                                std::to_string(one_level) + ")");
            }
        }
    }
}

// The pipeline-made bundle's evaluation images (JPEGs of the tiny project's data/val, in the
// order of reference/eval_set.json) against its reference/eval_crops.npy: the 8-bit crops
// must be identical, and the float tensors equal to the crops normalised in float32 in the
// manifest's order ((value / scale - mean) / std), for single images and for the batch.
TEST(evaluation_images_match_bundled_crops) {
    const json f = testutil::facts(check::fixtures())["bundle"];
    if (f["eval_root"].is_null()) {
        std::cout << "  skipped: the fixture bundle (" << f["source"].get<std::string>()
                  << ") comes without evaluation images\n";
        return;
    }
    const fs::path bundle = check::fixtures() / "bundle";
    const fs::path root = f["eval_root"].get<std::string>();
    const vtedge::Preprocessing spec = vtedge::read_manifest(bundle).preprocessing;
    const json samples =
        json::parse(testutil::read_text(bundle / "reference" / "eval_set.json"))["samples"];
    const NpyU8 crops = read_npy_u8(bundle / "reference" / "eval_crops.npy");
    const int64_t n = static_cast<int64_t>(samples.size());
    const int64_t crop = spec.crop;
    CHECK(n > 0);
    CHECK(crops.shape == std::vector<int64_t>({n, 3, crop, crop}));
    if (n == 0 || crops.shape != std::vector<int64_t>({n, 3, crop, crop})) return;
    CHECK_EQ(spec.color, std::string("RGB"));  // the crops are RGB; the tensor follows color
    const std::size_t plane = static_cast<std::size_t>(crop * crop);
    const std::size_t per_image = 3 * plane;

    // The reference tensor: the bundled crops normalised in float32, step by step.
    std::vector<float> expected(crops.data.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const std::size_t c = (i / plane) % 3;
        float v = static_cast<float>(crops.data[i]);
        v /= spec.scale;
        v -= spec.mean[c];
        v /= spec.std[c];
        expected[i] = v;
    }

    std::vector<fs::path> paths;
    std::size_t crop_mismatches = 0;
    double max_diff = 0.0;
    for (int64_t k = 0; k < n; ++k) {
        const json& sample = samples[static_cast<std::size_t>(k)];
        const fs::path path = root / sample["path"].get<std::string>();
        paths.push_back(path);
        CHECK_EQ(vtedge::sha256_file(path), sample["sha256"].get<std::string>());
        const uint8_t* want = crops.data.data() + static_cast<std::size_t>(k) * per_image;

        const vtedge::RgbImage img = vtedge::resize_and_crop(vtedge::decode_image(path), spec);
        CHECK(img.width == crop && img.height == crop);
        std::size_t bad = 0;
        for (int y = 0; y < img.height; ++y) {
            for (int x = 0; x < img.width; ++x) {
                for (int c = 0; c < 3; ++c) {
                    bad += img.at(x, y)[c] != want[c * plane + static_cast<std::size_t>(y * crop + x)];
                }
            }
        }
        crop_mismatches += bad;

        const std::vector<float> tensor = vtedge::preprocess_image(path, spec);
        CHECK_EQ(tensor.size(), per_image);
        double image_diff = 0.0;
        for (std::size_t i = 0; i < std::min(tensor.size(), per_image); ++i) {
            image_diff = std::max(image_diff, std::abs(static_cast<double>(tensor[i]) -
                                                       expected[k * per_image + i]));
        }
        max_diff = std::max(max_diff, image_diff);
        if (bad != 0 || !(image_diff <= 1e-6)) {
            check::fail(__FILE__, __LINE__,
                        sample["path"].get<std::string>() + ": " + std::to_string(bad) +
                            " crop bytes differ, max |diff| " + std::to_string(image_diff));
        }
    }

    const vtedge::Tensor batch = vtedge::preprocess_batch(paths, spec);
    CHECK(batch.shape == std::vector<int64_t>({n, 3, crop, crop}));
    double batch_diff = 0.0;
    for (std::size_t i = 0; i < std::min(batch.data.size(), expected.size()); ++i) {
        batch_diff = std::max(batch_diff, std::abs(static_cast<double>(batch.data[i]) - expected[i]));
    }
    std::printf("  %lld evaluation images (%s): %zu of %zu crop bytes differ; max |diff| of the "
                "float tensors %.3g (per image), %.3g (batch)\n",
                static_cast<long long>(n), root.string().c_str(), crop_mismatches,
                crops.data.size(), max_diff, batch_diff);
    CHECK_EQ(crop_mismatches, 0u);
    CHECK(max_diff <= 1e-6);
    CHECK(batch_diff <= 1e-6);
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
