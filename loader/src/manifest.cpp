#include "vtedge/manifest.hpp"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "vtedge/error.hpp"

namespace vtedge {
namespace {

using nlohmann::json;

// Walks the manifest JSON and remembers where it is, so every error names the full key
// ("preprocessing.mean", "engines[0].path").
class Node {
public:
    Node(const json& value, std::string path, const std::string& source)
        : value_(value), path_(std::move(path)), source_(source) {}

    const json& value() const { return value_; }
    const std::string& path() const { return path_; }

    [[noreturn]] void fail(const std::string& what) const {
        throw ManifestError(source_ + ": " + what);
    }
    [[noreturn]] void fail_type(const std::string& expected) const {
        fail("key '" + path_ + "' must be " + expected);
    }

    Node at(const std::string& key) const {
        if (!value_.is_object()) fail_type("an object");
        auto it = value_.find(key);
        if (it == value_.end()) fail("missing key '" + child_path(key) + "'");
        return Node(*it, child_path(key), source_);
    }
    Node at(std::size_t index) const {
        return Node(value_.at(index), path_ + "[" + std::to_string(index) + "]", source_);
    }

    const json& object() const {
        if (!value_.is_object()) fail_type("an object");
        return value_;
    }
    const json& array() const {
        if (!value_.is_array()) fail_type("an array");
        return value_;
    }
    std::string str() const {
        if (!value_.is_string()) fail_type("a string");
        return value_.get<std::string>();
    }
    std::optional<std::string> str_or_null() const {
        if (value_.is_null()) return std::nullopt;
        if (!value_.is_string()) fail_type("a string or null");
        return value_.get<std::string>();
    }
    int64_t integer() const {
        if (!value_.is_number_integer()) fail_type("an integer");
        return value_.get<int64_t>();
    }
    double number() const {
        if (!value_.is_number()) fail_type("a number");
        return value_.get<double>();
    }
    std::vector<std::string> strings() const {
        if (!is_array_of([](const json& v) { return v.is_string(); })) {
            fail_type("an array of strings");
        }
        return value_.get<std::vector<std::string>>();
    }
    std::vector<int64_t> integers() const {
        if (!is_array_of([](const json& v) { return v.is_number_integer(); })) {
            fail_type("an array of integers");
        }
        return value_.get<std::vector<int64_t>>();
    }
    std::array<float, 3> three_numbers() const {
        if (!is_array_of([](const json& v) { return v.is_number(); }) || value_.size() != 3) {
            fail_type("an array of 3 numbers");
        }
        return {value_[0].get<float>(), value_[1].get<float>(), value_[2].get<float>()};
    }

private:
    std::string child_path(const std::string& key) const {
        return path_.empty() ? key : path_ + "." + key;
    }
    template <typename Pred>
    bool is_array_of(Pred pred) const {
        if (!value_.is_array()) return false;
        for (const auto& v : value_) {
            if (!pred(v)) return false;
        }
        return true;
    }

    const json& value_;
    std::string path_;
    const std::string& source_;
};

int to_int(const Node& node, int64_t min_value) {
    const int64_t v = node.integer();
    if (v < min_value || v > INT32_MAX) {
        node.fail("key '" + node.path() + "' must be an integer >= " + std::to_string(min_value));
    }
    return static_cast<int>(v);
}

Target read_target(const Node& n) {
    Target t;
    t.name = n.at("name").str();
    t.backend = n.at("backend").str();
    t.compute_capability = n.at("compute_capability").str_or_null();
    for (int64_t major : n.at("tensorrt_majors").integers()) {
        t.tensorrt_majors.push_back(static_cast<int>(major));
    }
    return t;
}

ModelInfo read_model(const Node& n) {
    ModelInfo m;
    m.name = n.at("name").str();
    m.arch = n.at("arch").str();
    m.num_classes = to_int(n.at("num_classes"), 1);
    m.spec_json = n.at("spec").object().dump();
    return m;
}

TensorInfo read_tensor(const Node& n, bool with_layout) {
    TensorInfo t;
    t.name = n.at("name").str();
    t.dtype = n.at("dtype").str();
    if (with_layout) t.layout = n.at("layout").str();
    t.shape = n.at("shape").integers();
    if (t.dtype != "float32") {
        n.fail("key '" + n.path() + ".dtype' is '" + t.dtype + "'; this loader supports 'float32'");
    }
    return t;
}

void require_one_of(const Node& n, const std::string& value,
                    const std::vector<std::string>& allowed) {
    for (const auto& a : allowed) {
        if (value == a) return;
    }
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "'" : ", '") + a + "'";
    n.fail("key '" + n.path() + "' is '" + value + "'; this loader supports " + list);
}

Preprocessing read_preprocessing(const Node& n) {
    Preprocessing p;
    p.color = n.at("color").str();
    require_one_of(n.at("color"), p.color, {"RGB", "BGR"});
    p.resize = to_int(n.at("resize"), 1);
    p.interpolation = n.at("interpolation").str();
    require_one_of(n.at("interpolation"), p.interpolation, {"bilinear"});
    p.crop = to_int(n.at("crop"), 1);
    if (p.crop > p.resize) {
        n.fail("key 'preprocessing.crop' (" + std::to_string(p.crop) +
               ") must not exceed 'preprocessing.resize' (" + std::to_string(p.resize) + ")");
    }
    p.mean = n.at("mean").three_numbers();
    p.std = n.at("std").three_numbers();
    for (float s : p.std) {
        if (!(s > 0.0f)) n.fail("key 'preprocessing.std' must hold positive numbers");
    }
    p.scale = static_cast<float>(n.at("scale").number());
    if (!(p.scale > 0.0f)) n.fail("key 'preprocessing.scale' must be a positive number");
    return p;
}

BatchProfile read_profile(const Node& n) {
    BatchProfile p;
    p.min = n.at("min").integer();
    p.opt = n.at("opt").integer();
    p.max = n.at("max").integer();
    if (!(1 <= p.min && p.min <= p.opt && p.opt <= p.max)) {
        n.fail("key '" + n.path() + "' must satisfy 1 <= min <= opt <= max");
    }
    return p;
}

bool is_sha256_hex(const std::string& s) {
    if (s.size() != 64) return false;
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

std::string read_sha256(const Node& n) {
    std::string s = n.str();
    if (!is_sha256_hex(s)) n.fail_type("a SHA-256 hex string (64 lowercase hex characters)");
    return s;
}

std::vector<EngineEntry> read_engines(const Node& n) {
    std::vector<EngineEntry> engines;
    for (std::size_t i = 0; i < n.array().size(); ++i) {
        const Node e = n.at(i);
        EngineEntry entry;
        entry.path = e.at("path").str();
        entry.precision = e.at("precision").str();
        entry.tensorrt_version = e.at("tensorrt_version").str();
        entry.compute_capability = e.at("compute_capability").str();
        entry.device_name = e.at("device_name").str();
        entry.profile = read_profile(e.at("profile"));
        entry.sha256 = read_sha256(e.at("sha256"));
        engines.push_back(std::move(entry));
    }
    return engines;
}

// Keys of "files" and "precisions" are free text, so they are quoted in error paths.
Node member(const Node& parent, const std::string& key, const std::string& source) {
    return Node(parent.value().at(key), parent.path() + "['" + key + "']", source);
}

std::map<std::string, FileEntry> read_files(const Node& n, const std::string& source) {
    std::map<std::string, FileEntry> files;
    for (const auto& item : n.object().items()) {
        const Node f = member(n, item.key(), source);
        FileEntry entry;
        entry.sha256 = read_sha256(f.at("sha256"));
        const int64_t bytes = f.at("bytes").integer();
        if (bytes < 0) f.fail("key '" + f.path() + ".bytes' must be >= 0");
        entry.bytes = static_cast<uint64_t>(bytes);
        files.emplace(item.key(), std::move(entry));
    }
    return files;
}

std::map<std::string, PrecisionFiles> read_precisions(const Node& n, const std::string& source) {
    std::map<std::string, PrecisionFiles> precisions;
    for (const auto& item : n.object().items()) {
        const Node p = member(n, item.key(), source);
        PrecisionFiles entry;
        entry.onnx = p.at("onnx").str();
        entry.optimized = p.at("optimized").str_or_null();
        precisions.emplace(item.key(), std::move(entry));
    }
    return precisions;
}

std::map<std::string, std::string> read_versions(const Node& n, const std::string& source) {
    std::map<std::string, std::string> versions;
    for (const auto& item : n.object().items()) {
        versions.emplace(item.key(), member(n, item.key(), source).str());
    }
    return versions;
}

HostInfo read_host(const Node& n) {
    HostInfo h;
    h.platform = n.at("platform").str();
    h.machine = n.at("machine").str();
    h.cpu = n.at("cpu").str();
    h.cpu_count = to_int(n.at("cpu_count"), 0);
    h.python = n.at("python").str();
    return h;
}

void check_consistency(const Manifest& m, const Node& root) {
    if (static_cast<int>(m.labels.size()) != m.model.num_classes) {
        root.fail("key 'labels' has " + std::to_string(m.labels.size()) +
                  " entries but 'model.num_classes' is " + std::to_string(m.model.num_classes));
    }
}

}  // namespace

Manifest parse_manifest(const std::string& text, const std::string& source) {
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::parse_error& e) {
        throw ManifestError(source + ": invalid JSON: " + e.what());
    }
    const Node root(doc, "", source);
    if (!doc.is_object()) root.fail("the top level must be a JSON object");

    Manifest m;
    const int64_t version = root.at("format_version").integer();
    if (version < kOldestManifestFormatVersion || version > kManifestFormatVersion) {
        root.fail("unsupported format_version " + std::to_string(version) + " (this loader reads " +
                  std::to_string(kOldestManifestFormatVersion) + " to " + std::to_string(kManifestFormatVersion) + ")");
    }
    m.format_version = static_cast<int>(version);
    m.name = root.at("name").str();
    m.created_utc = root.at("created_utc").str();
    m.target = read_target(root.at("target"));
    m.model = read_model(root.at("model"));
    m.input = read_tensor(root.at("input"), true);
    m.output = read_tensor(root.at("output"), false);
    m.preprocessing = read_preprocessing(root.at("preprocessing"));
    m.labels = root.at("labels").strings();
    m.precisions = read_precisions(root.at("precisions"), source);
    m.engines = read_engines(root.at("engines"));
    m.files = read_files(root.at("files"), source);
    m.versions = read_versions(root.at("versions"), source);
    m.host = read_host(root.at("host"));
    m.rebuild_command = root.at("rebuild_command").str();
    m.pending = root.at("pending").strings();
    check_consistency(m, root);
    return m;
}

Manifest read_manifest(const std::filesystem::path& bundle_dir) {
    const auto path = bundle_dir / "manifest.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw ManifestError("manifest.json: cannot open " + path.string());
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse_manifest(text.str(), "manifest.json");
}

}  // namespace vtedge
