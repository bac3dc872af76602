// One call to open a bundle: read the manifest, then verify every file it lists.
#pragma once

#include <filesystem>

#include "vtedge/integrity.hpp"
#include "vtedge/manifest.hpp"

namespace vtedge {

struct Bundle {
    std::filesystem::path dir;
    Manifest manifest;
    VerifyResult verified;
};

// read_manifest() + verify_bundle(); throws ManifestError or IntegrityError.
Bundle open_bundle(const std::filesystem::path& dir);

}  // namespace vtedge
