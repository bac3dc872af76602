// A port of Pillow's ImagingResample (src/libImaging/Resample.c) for 8-bit RGB and the
// BILINEAR filter. Every step that influences the result is kept: coefficient bounds and
// normalisation in double, conversion to 22-bit fixed point with Pillow's rounding,
// horizontal pass first with 8-bit rounding of the intermediate image, then the vertical pass.

#include <cmath>

#include "vtedge/error.hpp"
#include "vtedge/image.hpp"

namespace vtedge {
namespace {

// 32 bits minus 8 for the result and 2 for overflow headroom, as in Pillow.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

// Filter taps of one output pixel: first input index and fixed-point weights.
struct Taps {
    int ksize = 0;            // stride of `weights` per output pixel
    std::vector<int> first;   // first input index used by each output pixel
    std::vector<int> count;   // number of input pixels used
    std::vector<int32_t> weights;
};

// Pillow's precompute_coeffs() followed by normalize_coeffs_8bpc(), for box (0, in_size).
Taps precompute_taps(int in_size, int out_size) {
    const double support_base = 1.0;  // BILINEAR
    const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = support_base * filterscale;
    Taps taps;
    taps.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    taps.first.resize(out_size);
    taps.count.resize(out_size);
    taps.weights.assign(static_cast<std::size_t>(out_size) * taps.ksize, 0);

    std::vector<double> k(taps.ksize);
    const double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = (xx + 0.5) * scale;
        // Pillow rounds with a truncating cast; the clamp makes the sign irrelevant.
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            const double w = bilinear_filter((x + xmin - center + 0.5) * inv_filterscale);
            k[x] = w;
            ww += w;
        }
        int32_t* out = &taps.weights[static_cast<std::size_t>(xx) * taps.ksize];
        for (int x = 0; x < xmax; ++x) {
            const double v = ww != 0.0 ? k[x] / ww : k[x];
            out[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                           : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
        }
        taps.first[xx] = xmin;
        taps.count[xx] = xmax;
    }
    return taps;
}

// Pillow's clip8: drop the fraction bits, clamp to 0..255.
inline uint8_t clip8(int32_t v) {
    const int32_t shifted = v >> kPrecisionBits;
    return static_cast<uint8_t>(shifted < 0 ? 0 : (shifted > 255 ? 255 : shifted));
}

// Horizontal pass over rows [row0, row0 + rows) of `in`.
RgbImage resample_horizontal(const RgbImage& in, int width, int row0, int rows) {
    const Taps taps = precompute_taps(in.width, width);
    RgbImage out;
    out.width = width;
    out.height = rows;
    out.pixels.resize(static_cast<std::size_t>(width) * rows * 3);
    for (int y = 0; y < rows; ++y) {
        const uint8_t* line = in.at(0, y + row0);
        uint8_t* dst = &out.pixels[static_cast<std::size_t>(y) * width * 3];
        for (int xx = 0; xx < width; ++xx) {
            const int32_t* k = &taps.weights[static_cast<std::size_t>(xx) * taps.ksize];
            const uint8_t* src = line + static_cast<std::size_t>(taps.first[xx]) * 3;
            int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < taps.count[xx]; ++x) {
                s0 += src[3 * x + 0] * k[x];
                s1 += src[3 * x + 1] * k[x];
                s2 += src[3 * x + 2] * k[x];
            }
            dst[3 * xx + 0] = clip8(s0);
            dst[3 * xx + 1] = clip8(s1);
            dst[3 * xx + 2] = clip8(s2);
        }
    }
    return out;
}

// Vertical pass; `taps` index rows of `in` after subtracting `row0`.
RgbImage resample_vertical(const RgbImage& in, const Taps& taps, int height, int row0) {
    RgbImage out;
    out.width = in.width;
    out.height = height;
    out.pixels.resize(static_cast<std::size_t>(in.width) * height * 3);
    const std::size_t stride = static_cast<std::size_t>(in.width) * 3;
    for (int yy = 0; yy < height; ++yy) {
        const int32_t* k = &taps.weights[static_cast<std::size_t>(yy) * taps.ksize];
        const uint8_t* column0 = &in.pixels[(taps.first[yy] - row0) * stride];
        uint8_t* dst = &out.pixels[static_cast<std::size_t>(yy) * stride];
        for (std::size_t i = 0; i < stride; ++i) {
            int32_t s = 1 << (kPrecisionBits - 1);
            for (int y = 0; y < taps.count[yy]; ++y) s += column0[y * stride + i] * k[y];
            dst[i] = clip8(s);
        }
    }
    return out;
}

}  // namespace

RgbImage resize_bilinear(const RgbImage& image, int width, int height) {
    if (width <= 0 || height <= 0 || image.width <= 0 || image.height <= 0) {
        throw ImageError("resize: invalid size " + std::to_string(width) + "x" +
                         std::to_string(height));
    }
    const bool need_horizontal = width != image.width;
    const bool need_vertical = height != image.height;
    const Taps vertical = precompute_taps(image.height, height);
    // Like Pillow, the horizontal pass only covers the rows the vertical pass reads.
    const int first_row = vertical.first.front();
    const int last_row = vertical.first.back() + vertical.count.back();

    if (!need_horizontal && !need_vertical) return image;
    if (!need_vertical) return resample_horizontal(image, width, 0, image.height);
    if (!need_horizontal) return resample_vertical(image, vertical, height, 0);
    const RgbImage temp = resample_horizontal(image, width, first_row, last_row - first_row);
    return resample_vertical(temp, vertical, height, first_row);
}

RgbImage crop(const RgbImage& image, int left, int top, int width, int height) {
    if (left < 0 || top < 0 || width <= 0 || height <= 0 || left + width > image.width ||
        top + height > image.height) {
        throw ImageError("crop: rectangle outside the image");
    }
    RgbImage out;
    out.width = width;
    out.height = height;
    out.pixels.resize(static_cast<std::size_t>(width) * height * 3);
    for (int y = 0; y < height; ++y) {
        const uint8_t* src = image.at(left, top + y);
        std::copy(src, src + static_cast<std::size_t>(width) * 3,
                  &out.pixels[static_cast<std::size_t>(y) * width * 3]);
    }
    return out;
}

}  // namespace vtedge
