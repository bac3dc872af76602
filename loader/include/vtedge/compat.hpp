// Engine compatibility: a TensorRT engine runs only with the TensorRT release
// (major.minor.patch) and the GPU compute capability it was built for.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "vtedge/build_plan.hpp"
#include "vtedge/manifest.hpp"

namespace vtedge {

// What the running system offers.
struct SystemInfo {
    std::string tensorrt_version;    // "10.3.0" (a longer "10.3.0.30" is fine)
    std::string compute_capability;  // "8.7"
};

struct CompatResult {
    bool ok = false;
    std::string message;  // why not, and what to rebuild; empty when ok
};

// "10.3.0.30" -> "10.3.0"; std::nullopt when the string has no numeric major.minor.patch.
std::optional<std::string> tensorrt_release(const std::string& version);

// Checks one engine entry against the running system. The message names the engine, both
// configurations and the manifest's rebuild command, e.g.
// "engine engines/x.engine was built for TensorRT 10.3.0 on compute capability 8.7; this
//  system has TensorRT 10.7.0 on 8.9: rebuild it on this device with: <rebuild_command>".
CompatResult check_engine(const EngineEntry& engine, const SystemInfo& system,
                          const std::string& rebuild_command);

// Picks the engine of `precision` that runs on `system`. Throws CompatibilityError listing why each
// candidate was rejected (or that the bundle has no engine of that precision).
const EngineEntry& select_engine(const Manifest& manifest, const std::string& precision,
                                 const SystemInfo& system);

// Whether this system can build `plan`: its tensorrt_version ("10.3", "10.x") must match the
// found version and its compute_capability ("auto" or empty: any) the GPU.
CompatResult check_build_plan(const BuildPlan& plan, const SystemInfo& system);

// Engine file name for a plan built on `system`, the same scheme as the pipeline's
// engine_file_name(): "<model>.<precision>.b<min>-<opt>-<max>.trt<version>.sm<cc>[.dla<n>].engine".
std::string engine_file_name(const BuildPlan& plan, const std::string& model,
                             const SystemInfo& system);

}  // namespace vtedge
