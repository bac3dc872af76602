// JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB, matching Pillow.
//
// Both libraries report errors by longjmp. The functions that call setjmp own no objects
// with destructors; buffers belong to the caller, so a jump skips only C frames.

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "vtedge/error.hpp"
#include "vtedge/image.hpp"

namespace vtedge {
namespace {

// ---------------------------------------------------------------------------------------
// JPEG

// Pillow refuses images above twice Image.MAX_IMAGE_PIXELS as decompression bombs.
constexpr uint64_t kMaxPixels = 2ull * 89478485ull;

bool too_large(uint64_t width, uint64_t height) { return width * height > kMaxPixels; }

struct JpegErrorManager {
    jpeg_error_mgr base;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

extern "C" void jpeg_error_exit(j_common_ptr cinfo) {
    auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

// libjpeg pads a truncated file with gray and only warns; Pillow (and so the reference)
// refuses it, so that warning is fatal here. Other warnings are ignored, as in Pillow.
extern "C" void jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        (*cinfo->err->error_exit)(cinfo);
    }
}

struct JpegRaw {
    int width = 0;
    int height = 0;
    int components = 0;  // 1 gray, 3 RGB, 4 CMYK (as libjpeg outputs it)
};

// Returns false and fills `message` on error. `out` is resized here; it is owned by the caller.
bool jpeg_decode_raw(const uint8_t* data, std::size_t size, JpegRaw* raw,
                     std::vector<uint8_t>* out, char* message) {
    jpeg_decompress_struct cinfo;
    JpegErrorManager err;
    cinfo.err = jpeg_std_error(&err.base);
    err.base.error_exit = jpeg_error_exit;
    err.base.emit_message = jpeg_emit_message;
    err.message[0] = '\0';
    if (setjmp(err.jump)) {
        std::strncpy(message, err.message, JMSG_LENGTH_MAX);
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&cinfo, TRUE);
    if (too_large(cinfo.image_width, cinfo.image_height)) {
        std::snprintf(message, JMSG_LENGTH_MAX, "image too large (decompression bomb limit)");
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    // Pillow keeps libjpeg's defaults (ISLOW DCT, fancy upsampling) and only picks the
    // output colour space: gray, RGB, or CMYK for 4-component (CMYK/YCCK) files.
    switch (cinfo.num_components) {
        case 1: cinfo.out_color_space = JCS_GRAYSCALE; break;
        case 3: cinfo.out_color_space = JCS_RGB; break;
        case 4: cinfo.out_color_space = JCS_CMYK; break;
        default: break;  // libjpeg reports the unsupported layout below
    }
    jpeg_start_decompress(&cinfo);
    raw->width = static_cast<int>(cinfo.output_width);
    raw->height = static_cast<int>(cinfo.output_height);
    raw->components = cinfo.output_components;
    const std::size_t stride = static_cast<std::size_t>(raw->width) * raw->components;
    out->resize(stride * raw->height);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out->data() + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return true;
}

// Pillow's MULDIV255: a * b / 255 rounded, in integers.
inline int muldiv255(int a, int b) {
    const int tmp = a * b + 128;
    return ((tmp >> 8) + tmp) >> 8;
}

inline uint8_t clip8(int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// Pillow reads CMYK JPEGs as "CMYK;I" (inverted, the Adobe convention) and converts with
// cmyk2rgb: R = 255 - K' - C * (255 - K') / 255, with K' the un-inverted K.
void cmyk_to_rgb(const uint8_t* in, uint8_t* out, std::size_t pixels) {
    for (std::size_t i = 0; i < pixels; ++i, in += 4, out += 3) {
        const int c = 255 - in[0], m = 255 - in[1], y = 255 - in[2], k = 255 - in[3];
        const int nk = 255 - k;
        out[0] = clip8(nk - muldiv255(c, nk));
        out[1] = clip8(nk - muldiv255(m, nk));
        out[2] = clip8(nk - muldiv255(y, nk));
    }
}

// ---------------------------------------------------------------------------------------
// PNG

struct PngReadState {
    const uint8_t* data;
    std::size_t size;
    std::size_t offset;
    char message[256];
};

extern "C" void png_read_from_memory(png_structp png, png_bytep out, png_size_t length) {
    auto* state = static_cast<PngReadState*>(png_get_io_ptr(png));
    if (length > state->size - state->offset) {
        png_error(png, "unexpected end of file");
    }
    std::memcpy(out, state->data + state->offset, length);
    state->offset += length;
}

extern "C" void png_error_handler(png_structp png, png_const_charp message) {
    auto* state = static_cast<PngReadState*>(png_get_error_ptr(png));
    std::snprintf(state->message, sizeof(state->message), "%s", message);
    png_longjmp(png, 1);
}

extern "C" void png_warning_handler(png_structp, png_const_charp) {}

struct PngRaw {
    int width = 0;
    int height = 0;
    int channels = 0;  // after the transforms below: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
};

bool png_decode_raw(PngReadState* state, PngRaw* raw, std::vector<uint8_t>* out,
                    std::vector<uint8_t*>* rows) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state, png_error_handler,
                                             png_warning_handler);
    if (!png) {
        std::snprintf(state->message, sizeof(state->message), "cannot create PNG reader");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
    }
    png_set_read_fn(png, state, png_read_from_memory);
    png_read_info(png, info);
    const int color_type = png_get_color_type(png, info);
    const int depth = png_get_bit_depth(png, info);
    if (too_large(png_get_image_width(png, info), png_get_image_height(png, info))) {
        png_error(png, "image too large (decompression bomb limit)");
    }
    // As pipeline.data.preprocess.load_rgb: palette -> RGB lookup; 1/2/4-bit gray scaled to
    // 0..255; every 16-bit sample keeps its high byte (value >> 8), gray included. A tRNS
    // chunk changes no colour: alpha is dropped, never composited.
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);  // libpng 1.6: keeps the high byte
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    raw->width = static_cast<int>(png_get_image_width(png, info));
    raw->height = static_cast<int>(png_get_image_height(png, info));
    raw->channels = png_get_channels(png, info);
    if (png_get_bit_depth(png, info) != 8) png_error(png, "unexpected bit depth after conversion");
    const std::size_t stride = png_get_rowbytes(png, info);
    out->resize(stride * raw->height);
    rows->resize(raw->height);
    for (int y = 0; y < raw->height; ++y) (*rows)[y] = out->data() + stride * y;
    png_read_image(png, rows->data());
    png_read_end(png, nullptr);
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
}

// Alpha is dropped and gray replicated; a palette image with a tRNS chunk comes out of
// libpng with an alpha channel, which is dropped the same way.
void png_to_rgb(const PngRaw& raw, const std::vector<uint8_t>& in, RgbImage* image) {
    const std::size_t pixels = static_cast<std::size_t>(raw.width) * raw.height;
    image->pixels.resize(pixels * 3);
    uint8_t* out = image->pixels.data();
    const int ch = raw.channels;
    for (std::size_t i = 0; i < pixels; ++i) {
        const uint8_t* p = &in[i * ch];
        if (ch <= 2) {
            out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = p[0];
        } else {
            out[3 * i] = p[0];
            out[3 * i + 1] = p[1];
            out[3 * i + 2] = p[2];
        }
    }
}

std::vector<uint8_t> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ImageError(path.string() + ": cannot open image");
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

RgbImage decode_jpeg(const std::vector<uint8_t>& data, const std::string& name) {
    JpegRaw raw;
    std::vector<uint8_t> buffer;
    char message[JMSG_LENGTH_MAX] = {0};
    if (!jpeg_decode_raw(data.data(), data.size(), &raw, &buffer, message)) {
        throw ImageError(name + ": cannot decode JPEG: " + message);
    }
    RgbImage image;
    image.width = raw.width;
    image.height = raw.height;
    const std::size_t pixels = static_cast<std::size_t>(raw.width) * raw.height;
    image.pixels.resize(pixels * 3);
    if (raw.components == 3) {
        image.pixels = std::move(buffer);
    } else if (raw.components == 1) {
        for (std::size_t i = 0; i < pixels; ++i) {
            image.pixels[3 * i] = image.pixels[3 * i + 1] = image.pixels[3 * i + 2] = buffer[i];
        }
    } else if (raw.components == 4) {
        cmyk_to_rgb(buffer.data(), image.pixels.data(), pixels);
    } else {
        throw ImageError(name + ": unsupported JPEG with " + std::to_string(raw.components) +
                         " components");
    }
    return image;
}

RgbImage decode_png(const std::vector<uint8_t>& data, const std::string& name) {
    PngReadState state{data.data(), data.size(), 0, {0}};
    PngRaw raw;
    std::vector<uint8_t> buffer;
    std::vector<uint8_t*> rows;
    if (!png_decode_raw(&state, &raw, &buffer, &rows)) {
        throw ImageError(name + ": cannot decode PNG: " + state.message);
    }
    RgbImage image;
    image.width = raw.width;
    image.height = raw.height;
    png_to_rgb(raw, buffer, &image);
    return image;
}

RgbImage decode_image(const std::filesystem::path& path) {
    const std::vector<uint8_t> data = read_file(path);
    static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (data.size() >= 8 && std::memcmp(data.data(), kPng, 8) == 0) {
        return decode_png(data, path.string());
    }
    if (data.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
        return decode_jpeg(data, path.string());
    }
    throw ImageError(path.string() + ": not a JPEG or PNG file");
}

}  // namespace vtedge
