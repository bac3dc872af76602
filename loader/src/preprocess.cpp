#include "vtedge/preprocess.hpp"

#include <string>

#include "vtedge/error.hpp"

namespace vtedge {

Size resized_size(int width, int height, int resize) {
    if (width <= 0 || height <= 0) throw ImageError("image has no pixels");
    // 64-bit products: a 60000-pixel side times resize does not fit in 32 bits.
    if (width <= height) {
        return {resize, static_cast<int>(static_cast<int64_t>(height) * resize / width)};
    }
    return {static_cast<int>(static_cast<int64_t>(width) * resize / height), resize};
}

RgbImage resize_and_crop(const RgbImage& image, const Preprocessing& spec) {
    // An RgbImage filled in by an application: its buffer must hold what its size says.
    if (image.width > 0 && image.height > 0 &&
        image.pixels.size() != static_cast<std::size_t>(image.width) * image.height * 3) {
        throw ImageError("RGB image of " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + " pixels needs " +
                         std::to_string(static_cast<std::size_t>(image.width) * image.height * 3) +
                         " bytes, has " + std::to_string(image.pixels.size()));
    }
    const Size size = resized_size(image.width, image.height, spec.resize);
    const RgbImage resized = resize_bilinear(image, size.width, size.height);
    const int left = (size.width - spec.crop) / 2;
    const int top = (size.height - spec.crop) / 2;
    return crop(resized, left, top, spec.crop, spec.crop);
}

void normalize_into(const RgbImage& image, const Preprocessing& spec, float* out) {
    const std::size_t plane = static_cast<std::size_t>(image.width) * image.height;
    const bool bgr = spec.color == "BGR";
    for (int c = 0; c < 3; ++c) {
        const int source = bgr ? 2 - c : c;
        const float mean = spec.mean[c];
        const float std = spec.std[c];
        float* dst = out + plane * c;
        // Same float32 operations, in the same order, as the Python reference.
        for (std::size_t i = 0; i < plane; ++i) {
            const float value = static_cast<float>(image.pixels[3 * i + source]) / spec.scale;
            dst[i] = (value - mean) / std;
        }
    }
}

std::vector<float> preprocess_image(const std::filesystem::path& path, const Preprocessing& spec) {
    return preprocess_rgb(decode_image(path), spec);
}

std::vector<float> preprocess_rgb(const RgbImage& image, const Preprocessing& spec) {
    const RgbImage cropped = resize_and_crop(image, spec);
    std::vector<float> chw(static_cast<std::size_t>(3) * spec.crop * spec.crop);
    normalize_into(cropped, spec, chw.data());
    return chw;
}

namespace {

// One NCHW batch of `count` images; `image(i)` returns the i-th decoded image.
template <typename Decode>
Tensor batch_of(std::size_t count, const Preprocessing& spec, Decode image) {
    Tensor t;
    const std::size_t per_image = static_cast<std::size_t>(3) * spec.crop * spec.crop;
    t.shape = {static_cast<int64_t>(count), 3, spec.crop, spec.crop};
    t.data.resize(per_image * count);
    for (std::size_t i = 0; i < count; ++i) {
        const RgbImage cropped = resize_and_crop(image(i), spec);
        normalize_into(cropped, spec, t.data.data() + per_image * i);
    }
    return t;
}

}  // namespace

Tensor preprocess_batch(const std::vector<std::filesystem::path>& paths, const Preprocessing& spec) {
    return batch_of(paths.size(), spec, [&](std::size_t i) { return decode_image(paths[i]); });
}

Tensor preprocess_batch(const std::vector<RgbImage>& images, const Preprocessing& spec) {
    return batch_of(images.size(), spec, [&](std::size_t i) -> const RgbImage& { return images[i]; });
}

}  // namespace vtedge
