// Typed view of a bundle's manifest.json (docs/bundle-format.md, format_version 1).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace vtedge {

// The manifest formats this loader reads: 1 up to 3 (2 gives each graph its own ONNX Runtime
// `session`, 3 lets a session be OpenVINO's: a key the loader does not read, so all read the same).
inline constexpr int kOldestManifestFormatVersion = 1;
inline constexpr int kManifestFormatVersion = 3;

struct Target {
    std::string name;                               // "cpu", "jetson-agx-orin", ...
    std::string backend;                            // "onnxruntime" or "tensorrt"
    std::optional<std::string> compute_capability;  // "8.7"; empty for cpu
    std::vector<int> tensorrt_majors;               // TensorRT majors the target ships
};

struct ModelInfo {
    std::string name;
    std::string arch;
    int num_classes = 0;
    std::string spec_json;  // the architecture spec, kept as compact JSON text
};

struct TensorInfo {
    std::string name;
    std::string dtype;
    std::string layout;           // input only ("NCHW"); empty for the output
    std::vector<int64_t> shape;   // -1 = dynamic dimension
};

struct Preprocessing {
    std::string color;          // "RGB" (or "BGR"): channel order of the tensor
    int resize = 0;             // shorter side after resizing
    std::string interpolation;  // "bilinear" (PIL Image.BILINEAR)
    int crop = 0;               // centre crop size
    std::array<float, 3> mean{};
    std::array<float, 3> std{};
    float scale = 255.0f;       // pixel = (value / scale - mean) / std
};

struct PrecisionFiles {
    std::string onnx;                      // relative path of the precision's ONNX
    std::optional<std::string> optimized;  // ONNX Runtime optimized model, if any
};

struct BatchProfile {
    int64_t min = 1;
    int64_t opt = 1;
    int64_t max = 1;
};

struct EngineEntry {
    std::string path;
    std::string precision;
    std::string tensorrt_version;    // "10.3.0"
    std::string compute_capability;  // "8.7"
    std::string device_name;
    BatchProfile profile;
    std::string sha256;
};

struct FileEntry {
    std::string sha256;  // 64 lowercase hex characters
    uint64_t bytes = 0;
};

struct HostInfo {
    std::string platform;
    std::string machine;
    std::string cpu;
    int cpu_count = 0;
    std::string python;
};

struct Manifest {
    int format_version = 0;
    std::string name;
    std::string created_utc;
    Target target;
    ModelInfo model;
    TensorInfo input;
    TensorInfo output;
    Preprocessing preprocessing;
    std::vector<std::string> labels;
    std::map<std::string, PrecisionFiles> precisions;
    std::vector<EngineEntry> engines;
    std::map<std::string, FileEntry> files;
    std::map<std::string, std::string> versions;
    HostInfo host;
    std::string rebuild_command;
    std::vector<std::string> pending;
};

// Reads and validates <bundle_dir>/manifest.json. Throws ManifestError with a message such as
// "manifest.json: missing key 'preprocessing.mean'". Does not touch the other bundle files;
// call verify_bundle() before using any of them.
Manifest read_manifest(const std::filesystem::path& bundle_dir);

// Parses manifest text; `source` names it in error messages.
Manifest parse_manifest(const std::string& text, const std::string& source = "manifest.json");

}  // namespace vtedge
