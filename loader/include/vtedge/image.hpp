// Image decoding and resampling that reproduce the Python reference bit for bit:
// pipeline.data.preprocess.load_rgb (Pillow decoding + conversion to RGB) and
// Image.resize(size, Image.BILINEAR).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace vtedge {

// 8-bit RGB, rows top to bottom, 3 bytes per pixel.
struct RgbImage {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> pixels;

    const uint8_t* at(int x, int y) const {
        return &pixels[(static_cast<std::size_t>(y) * width + x) * 3];
    }
};

// Decodes a JPEG or PNG file (detected from its first bytes) to 8-bit RGB: gray replicated,
// alpha dropped (not composited), palette looked up, every 16-bit sample reduced to its high
// byte, CMYK JPEG read with Adobe (inverted) polarity and converted with Pillow's cmyk2rgb.
// EXIF orientation is not applied. Throws ImageError.
RgbImage decode_image(const std::filesystem::path& path);

// Decoders for in-memory files; `name` appears in error messages.
RgbImage decode_jpeg(const std::vector<uint8_t>& data, const std::string& name);
RgbImage decode_png(const std::vector<uint8_t>& data, const std::string& name);

// Pillow's ImagingResample with the BILINEAR filter: separable triangle filter (support
// scaled by the downscale factor), 22-bit fixed-point coefficients, horizontal pass first,
// rounded to 8 bits between the passes.
RgbImage resize_bilinear(const RgbImage& image, int width, int height);

// Copies the width x height rectangle at (left, top).
RgbImage crop(const RgbImage& image, int left, int top, int width, int height);

}  // namespace vtedge
