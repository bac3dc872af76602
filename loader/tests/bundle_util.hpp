// Helpers for tests that need a modified copy of the fixture bundle.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

namespace testutil {

namespace fs = std::filesystem;

// A scratch folder, removed when the object goes away.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& tag) {
        path_ = fs::temp_directory_path() /
                ("vtedge-test-" + tag + "-" + std::to_string(::getpid()));
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~ScratchDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

inline std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

inline void write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
}

// bundle_facts.json of make_fixtures.py: {"bundle": {...}, "synthetic": {...}}.
inline nlohmann::json facts(const fs::path& fixtures) {
    return nlohmann::json::parse(read_text(fixtures / "bundle_facts.json"));
}

// The fixture bundles every bundle-level test runs on: "bundle" (the pipeline-made one when
// the pipeline imports) and "synthetic" (hand-made, controlled manifest); just "bundle" when
// that is itself the synthesized one.
inline std::vector<std::string> fixture_bundles(const fs::path& fixtures) {
    if (facts(fixtures)["bundle"]["source"] == "synthesized") return {"bundle"};
    return {"bundle", "synthetic"};
}

// Copies the fixture bundle `name` to `dest/bundle` and returns that path.
inline fs::path copy_bundle(const fs::path& fixtures, const fs::path& dest,
                            const std::string& name = "bundle") {
    const fs::path bundle = dest / "bundle";
    fs::copy(fixtures / name, bundle, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    return bundle;
}

inline nlohmann::json load_manifest(const fs::path& bundle) {
    return nlohmann::json::parse(read_text(bundle / "manifest.json"));
}

inline void save_manifest(const fs::path& bundle, const nlohmann::json& m) {
    write_text(bundle / "manifest.json", m.dump(2));
}

}  // namespace testutil
