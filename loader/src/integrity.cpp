#include "vtedge/integrity.hpp"

#include <array>
#include <cctype>
#include <fstream>
#include <memory>
#include <vector>

#include <openssl/evp.h>

#include "vtedge/error.hpp"

namespace fs = std::filesystem;

namespace vtedge {
namespace {

using DigestContext = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

DigestContext new_sha256_context() {
    DigestContext ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
        throw IntegrityError("SHA-256: cannot initialise OpenSSL digest");
    }
    return ctx;
}

std::string finish_hex(EVP_MD_CTX* ctx) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(ctx, digest.data(), &length) != 1) {
        throw IntegrityError("SHA-256: digest failed");
    }
    static const char* hex = "0123456789abcdef";
    std::string out;
    out.reserve(length * 2);
    for (unsigned int i = 0; i < length; ++i) {
        out.push_back(hex[digest[i] >> 4]);
        out.push_back(hex[digest[i] & 0xF]);
    }
    return out;
}

// True when `path` equals `root` or lies below it; both must be canonical.
bool is_within(const fs::path& root, const fs::path& path) {
    auto r = root.begin();
    auto p = path.begin();
    for (; r != root.end(); ++r, ++p) {
        if (p == path.end() || *r != *p) return false;
    }
    return true;
}

void require_listed(const Manifest& m, const std::string& key, const std::string& path) {
    if (m.files.find(path) == m.files.end()) {
        throw IntegrityError("manifest.json: '" + key + "' refers to '" + path +
                             "', which is not listed in 'files'");
    }
}

void require_references_listed(const Manifest& m) {
    for (const auto& [name, p] : m.precisions) {
        require_listed(m, "precisions." + name + ".onnx", p.onnx);
        if (p.optimized) require_listed(m, "precisions." + name + ".optimized", *p.optimized);
    }
    for (std::size_t i = 0; i < m.engines.size(); ++i) {
        const auto& e = m.engines[i];
        const std::string key = "engines[" + std::to_string(i) + "].path";
        require_listed(m, key, e.path);
        if (m.files.at(e.path).sha256 != e.sha256) {
            throw IntegrityError("manifest.json: engine '" + e.path +
                                 "' has a different sha256 in 'engines' and in 'files'");
        }
    }
}

// Cheap checks first (path, existence, size) so a broken bundle fails before any hashing.
fs::path check_file_shape(const fs::path& bundle_dir, const std::string& relative,
                          const FileEntry& entry) {
    const fs::path path = resolve_bundle_path(bundle_dir, relative);
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
        throw IntegrityError("bundle file '" + relative + "' is missing");
    }
    if (!fs::is_regular_file(status)) {
        throw IntegrityError("bundle file '" + relative + "' is not a regular file");
    }
    const uint64_t bytes = fs::file_size(path);
    if (bytes != entry.bytes) {
        throw IntegrityError("bundle file '" + relative + "' has " + std::to_string(bytes) +
                             " bytes; the manifest says " + std::to_string(entry.bytes));
    }
    return path;
}

void check_file_hash(const fs::path& path, const std::string& relative, const FileEntry& entry) {
    const std::string actual = sha256_file(path);
    if (actual != entry.sha256) {
        throw IntegrityError("bundle file '" + relative + "' fails its SHA-256 check (expected " +
                             entry.sha256 + ", got " + actual + ")");
    }
}

}  // namespace

std::string sha256_bytes(const void* data, std::size_t size) {
    DigestContext ctx = new_sha256_context();
    if (EVP_DigestUpdate(ctx.get(), data, size) != 1) {
        throw IntegrityError("SHA-256: digest update failed");
    }
    return finish_hex(ctx.get());
}

std::string sha256_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IntegrityError("cannot open " + path.string());
    DigestContext ctx = new_sha256_context();
    std::array<char, 1 << 16> block{};
    while (in) {
        in.read(block.data(), static_cast<std::streamsize>(block.size()));
        const std::streamsize got = in.gcount();
        if (got > 0 && EVP_DigestUpdate(ctx.get(), block.data(), static_cast<size_t>(got)) != 1) {
            throw IntegrityError("SHA-256: digest update failed for " + path.string());
        }
    }
    if (in.bad()) throw IntegrityError("read error on " + path.string());
    return finish_hex(ctx.get());
}

std::string bundle_path_problem(const std::string& relative) {
    if (relative.find_first_not_of(" \t\r\n\f\v") == std::string::npos) return "is empty";
    if (relative.find('\\') != std::string::npos) {
        return "contains a backslash (bundle paths use '/')";
    }
    const fs::path rel(relative);
    const bool drive = relative.size() >= 2 && relative[1] == ':' &&
                       std::isalpha(static_cast<unsigned char>(relative[0])) != 0;
    if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory() || drive) {
        return "is absolute (bundle paths are relative to the bundle folder)";
    }
    for (const auto& part : rel) {
        if (part == "..") return "contains '..'";
    }
    return "";
}

fs::path resolve_bundle_path(const fs::path& bundle_dir, const std::string& relative) {
    const std::string problem = bundle_path_problem(relative);
    if (!problem.empty()) {
        throw IntegrityError("bundle path '" + relative + "' " + problem);
    }
    const fs::path rel(relative);
    // Symlinks are resolved on both sides, so a link that leaves the folder is caught while a
    // bundle folder reached through a link still works.
    const fs::path root = fs::weakly_canonical(fs::absolute(bundle_dir));
    const fs::path resolved = fs::weakly_canonical(root / rel);
    if (!is_within(root, resolved)) {
        throw IntegrityError("bundle path '" + relative + "' resolves outside the bundle folder (to " +
                             resolved.string() + ")");
    }
    return resolved;
}

VerifyResult verify_bundle(const fs::path& bundle_dir, const Manifest& manifest) {
    require_references_listed(manifest);
    std::vector<fs::path> resolved;
    for (const auto& [relative, entry] : manifest.files) {
        resolved.push_back(check_file_shape(bundle_dir, relative, entry));
    }
    VerifyResult result;
    std::size_t i = 0;
    for (const auto& [relative, entry] : manifest.files) {
        check_file_hash(resolved[i++], relative, entry);
        ++result.files_verified;
        result.bytes_verified += entry.bytes;
    }
    return result;
}

}  // namespace vtedge
