// The manifest's preprocessing: decode -> 8-bit RGB -> resize shorter side (PIL BILINEAR)
// -> centre crop -> (value / scale - mean) / std -> float32 CHW / NCHW.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "vtedge/image.hpp"
#include "vtedge/manifest.hpp"

namespace vtedge {

struct Size {
    int width = 0;
    int height = 0;
};

// Shorter side becomes `resize`, the longer floor(long * resize / short) in integers.
Size resized_size(int width, int height, int resize);

// Resize and centre crop: the 8-bit crop that the tensor is computed from.
RgbImage resize_and_crop(const RgbImage& image, const Preprocessing& spec);

// Normalises an 8-bit crop into `out` (3 * crop * crop floats, CHW, channels in spec.color).
void normalize_into(const RgbImage& crop, const Preprocessing& spec, float* out);

// One image file -> CHW float32 (3 x crop x crop).
std::vector<float> preprocess_image(const std::filesystem::path& path, const Preprocessing& spec);

// One decoded 8-bit RGB image -> CHW float32 (3 x crop x crop).
std::vector<float> preprocess_rgb(const RgbImage& image, const Preprocessing& spec);

struct Tensor {
    std::vector<int64_t> shape;  // NCHW
    std::vector<float> data;
};

// Several image files -> one NCHW batch.
Tensor preprocess_batch(const std::vector<std::filesystem::path>& paths, const Preprocessing& spec);

// Several decoded 8-bit RGB images -> one NCHW batch.
Tensor preprocess_batch(const std::vector<RgbImage>& images, const Preprocessing& spec);

}  // namespace vtedge
