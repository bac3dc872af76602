// Integrity: hashes, byte counts, missing files and paths that leave the bundle folder.
#include <fstream>

#include <nlohmann/json.hpp>

#include "bundle_util.hpp"
#include "check.hpp"
#include "vtedge/loader.hpp"

using nlohmann::json;
namespace fs = std::filesystem;
using testutil::ScratchDir;

namespace {

// Lists `relative` in the manifest with the true hash and size of `target`.
void list_file(const fs::path& bundle, const std::string& relative, const fs::path& target) {
    json m = testutil::load_manifest(bundle);
    m["files"][relative] = {{"sha256", vtedge::sha256_file(target)},
                            {"bytes", fs::file_size(target)}};
    testutil::save_manifest(bundle, m);
}

void verify(const fs::path& bundle) { vtedge::open_bundle(bundle); }

// The pipeline-made bundle (when the pipeline imports) and the synthesized one.
std::vector<std::string> bundles() { return testutil::fixture_bundles(check::fixtures()); }

// Some file of the bundle, e.g. "models/model.fp16.onnx" for the pipeline-made one.
std::string first_file(const fs::path& bundle) {
    return testutil::load_manifest(bundle)["files"].begin().key();
}

}  // namespace

TEST(sha256_known_values) {
    ScratchDir dir("sha");
    testutil::write_text(dir.path() / "abc", "abc");
    testutil::write_text(dir.path() / "empty", "");
    CHECK_EQ(vtedge::sha256_file(dir.path() / "abc"),
             std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    CHECK_EQ(vtedge::sha256_file(dir.path() / "empty"),
             std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    CHECK_EQ(vtedge::sha256_bytes("abc", 3), vtedge::sha256_file(dir.path() / "abc"));
}

TEST(tampered_file_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("tamper-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        const std::string rel = first_file(bundle);
        std::fstream f(bundle / rel, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(0);
        const char c = static_cast<char>(f.get());
        f.seekp(0);
        f.put(static_cast<char>(c ^ 0x01));  // one byte changed, size unchanged
        f.close();
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError,
                     "bundle file '" + rel + "' fails its SHA-256 check");
    }
}

TEST(size_change_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("size-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        const std::string rel = first_file(bundle);
        std::ofstream(bundle / rel, std::ios::app | std::ios::binary) << 'x';
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError, "bundle file '" + rel + "' has ");
    }
}

TEST(missing_file_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("missing-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        const std::string rel = first_file(bundle);
        fs::remove(bundle / rel);
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError, "bundle file '" + rel + "' is missing");
    }
}

TEST(dotdot_path_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("dotdot-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        testutil::write_text(dir.path() / "x", "outside");
        list_file(bundle, "../x", dir.path() / "x");
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError, "bundle path '../x' contains '..'");

        const fs::path bundle2 = dir.path() / "b2";
        fs::copy(check::fixtures() / name, bundle2, fs::copy_options::recursive);
        list_file(bundle2, "models/../../x", dir.path() / "x");
        CHECK_THROWS(verify(bundle2), vtedge::IntegrityError, "'models/../../x' contains '..'");
    }
}

TEST(absolute_path_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("absolute-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        const fs::path outside = dir.path() / "outside.bin";
        testutil::write_text(outside, "outside");
        list_file(bundle, outside.string(), outside);
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError,
                     "bundle path '" + outside.string() + "' is absolute");
    }
}

TEST(symlink_leaving_the_bundle_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("symlink-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        const fs::path outside = dir.path() / "outside.bin";
        testutil::write_text(outside, "outside");
        fs::create_directories(bundle / "models");
        fs::create_symlink("../../outside.bin", bundle / "models" / "link.onnx");
        list_file(bundle, "models/link.onnx", outside);
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError,
                     "bundle path 'models/link.onnx' resolves outside the bundle folder");
    }
}

TEST(symlinked_folder_leaving_the_bundle_is_refused) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("symdir-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        fs::create_directories(dir.path() / "elsewhere");
        testutil::write_text(dir.path() / "elsewhere" / "w.bin", "weights");
        fs::create_directory_symlink(dir.path() / "elsewhere", bundle / "ext");
        list_file(bundle, "ext/w.bin", dir.path() / "elsewhere" / "w.bin");
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError,
                     "bundle path 'ext/w.bin' resolves outside the bundle folder");
    }
}

TEST(symlink_inside_the_bundle_is_accepted) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("symin-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        const std::string rel = first_file(bundle);
        fs::create_symlink(fs::path(rel).filename(), (bundle / rel).parent_path() / "alias.bin");
        const std::string alias = (fs::path(rel).parent_path() / "alias.bin").generic_string();
        list_file(bundle, alias, bundle / rel);
        verify(bundle);
        // A bundle folder reached through a symlink is fine too.
        fs::create_directory_symlink(bundle, dir.path() / "via-link");
        const vtedge::Bundle b = vtedge::open_bundle(dir.path() / "via-link");
        CHECK(b.verified.files_verified == b.manifest.files.size());
    }
}

TEST(references_must_be_listed_files) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("unlisted-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        json m = testutil::load_manifest(bundle);
        const std::string precision = m["precisions"].begin().key();
        m["precisions"][precision]["onnx"] = "models/not-there.onnx";
        testutil::save_manifest(bundle, m);
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError,
                     "refers to 'models/not-there.onnx', which is not listed in 'files'");
    }
}

TEST(engine_hash_must_match_files_entry) {
    for (const std::string& name : bundles()) {
        std::cout << "  bundle: " << name << "\n";
        ScratchDir dir(std::string("enginehash-") + name);
        const fs::path bundle = testutil::copy_bundle(check::fixtures(), dir.path(), name);
        json m = testutil::load_manifest(bundle);
        if (m["engines"].empty()) continue;  // a bundle without engines has nothing to check
        m["engines"][0]["sha256"] = std::string(64, '0');
        testutil::save_manifest(bundle, m);
        CHECK_THROWS(verify(bundle), vtedge::IntegrityError,
                     "has a different sha256 in 'engines' and in 'files'");
    }
}

// The rule's cases, shared with the Python tests (bundle_path_cases.txt beside this file).
TEST(bundle_path_rule_matches_the_shared_cases) {
    std::ifstream cases(VTEDGE_PATH_CASES);
    CHECK(cases.good());
    std::string line;
    int checked = 0;
    while (std::getline(cases, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto open = line.find('"');
        const auto close = line.find('"', open + 1);
        const std::string verdict = line.substr(0, line.find('\t'));
        const std::string path = line.substr(open + 1, close - open - 1);
        const std::string problem = vtedge::bundle_path_problem(path);
        if (verdict == "accept") {
            CHECK_EQ(problem, std::string());
        } else {
            const std::string reason = line.substr(line.find('\t', close) + 1);
            CHECK(problem.find(reason) != std::string::npos);
        }
        ++checked;
    }
    CHECK(checked >= 10);
}

TEST(resolve_rejects_empty_path) {
    CHECK_THROWS(vtedge::resolve_bundle_path(check::fixtures() / "bundle", ""),
                 vtedge::IntegrityError, "is empty");
}
