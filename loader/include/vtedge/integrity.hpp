// Bundle integrity: safe path resolution and SHA-256 verification of every listed file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

#include "vtedge/manifest.hpp"

namespace vtedge {

// Hex SHA-256 of a file, streamed in blocks (engines and ONNX files can be large).
std::string sha256_file(const std::filesystem::path& path);

// Hex SHA-256 of a memory buffer.
std::string sha256_bytes(const void* data, std::size_t size);

// Why `relative` cannot name a file inside a bundle folder ("" when it can): empty, a backslash,
// absolute (or a drive), or a ".." part. The same rule as pipeline/bundle/paths.py, tested with
// the same cases (loader/tests/bundle_path_cases.txt).
std::string bundle_path_problem(const std::string& relative);

// Resolves a manifest path inside the bundle. Throws IntegrityError naming the path when it
// breaks the rule above or resolves (through symlinks) outside the bundle.
std::filesystem::path resolve_bundle_path(const std::filesystem::path& bundle_dir,
                                          const std::string& relative);

struct VerifyResult {
    std::size_t files_verified = 0;
    uint64_t bytes_verified = 0;
};

// Checks every entry of manifest.files (path safety, existence, byte count, SHA-256) and that
// every path the manifest refers to (precisions, engines) is listed there. Throws
// IntegrityError on the first problem. Nothing in the bundle should be deserialized before
// this returns.
VerifyResult verify_bundle(const std::filesystem::path& bundle_dir, const Manifest& manifest);

}  // namespace vtedge
