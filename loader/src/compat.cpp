#include "vtedge/compat.hpp"

#include <algorithm>
#include <cctype>

#include "vtedge/error.hpp"

namespace vtedge {
namespace {

bool all_digits(const std::string& s) {
    if (s.empty()) return false;
    for (char c : s) {
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    }
    return true;
}

// Compute capabilities compare as numbers ("8.7" == "8.7", "08.7" == "8.7").
std::optional<std::pair<int, int>> parse_cc(const std::string& cc) {
    const auto dot = cc.find('.');
    if (dot == std::string::npos) return std::nullopt;
    const std::string major = cc.substr(0, dot);
    const std::string minor = cc.substr(dot + 1);
    if (!all_digits(major) || !all_digits(minor) || major.size() > 3 || minor.size() > 3) {
        return std::nullopt;
    }
    return std::make_pair(std::stoi(major), std::stoi(minor));
}

}  // namespace

std::optional<std::string> tensorrt_release(const std::string& version) {
    std::string release;
    std::size_t pos = 0;
    for (int part = 0; part < 3; ++part) {
        const std::size_t end = version.find('.', pos);
        const std::string field = version.substr(pos, end == std::string::npos ? end : end - pos);
        if (!all_digits(field) || field.size() > 6) return std::nullopt;
        release += (part ? "." : "") + std::to_string(std::stol(field));
        if (part < 2) {
            if (end == std::string::npos) return std::nullopt;
            pos = end + 1;
        }
    }
    return release;
}

CompatResult check_engine(const EngineEntry& engine, const SystemInfo& system,
                          const std::string& rebuild_command) {
    const auto built_release = tensorrt_release(engine.tensorrt_version);
    const auto have_release = tensorrt_release(system.tensorrt_version);
    const auto built_cc = parse_cc(engine.compute_capability);
    const auto have_cc = parse_cc(system.compute_capability);

    const bool same_release = built_release && have_release && *built_release == *have_release;
    const bool same_cc = built_cc && have_cc && *built_cc == *have_cc;
    if (same_release && same_cc) return {true, ""};

    const std::string message =
        "engine " + engine.path + " was built for TensorRT " + engine.tensorrt_version +
        " on compute capability " + engine.compute_capability + "; this system has TensorRT " +
        system.tensorrt_version + " on " + system.compute_capability +
        ": rebuild it on this device with: " + rebuild_command;
    return {false, message};
}

const EngineEntry& select_engine(const Manifest& manifest, const std::string& precision,
                                 const SystemInfo& system) {
    std::string reasons;
    for (const auto& engine : manifest.engines) {
        if (engine.precision != precision) continue;
        const CompatResult r = check_engine(engine, system, manifest.rebuild_command);
        if (r.ok) return engine;
        reasons += (reasons.empty() ? "" : "; ") + r.message;
    }
    if (reasons.empty()) {
        throw CompatibilityError("bundle has no " + precision + " engine; build one on this device with: " +
                    manifest.rebuild_command);
    }
    throw CompatibilityError(reasons);
}

CompatResult check_build_plan(const BuildPlan& plan, const SystemInfo& system) {
    if (!plan_version_matches(plan.tensorrt_version, system.tensorrt_version)) {
        return {false, "build_plan.json is for TensorRT " + plan.tensorrt_version +
                           ", this system has " + system.tensorrt_version};
    }
    const std::string& cc = plan.compute_capability;
    if (!cc.empty() && cc != "auto" && parse_cc(cc) != parse_cc(system.compute_capability)) {
        return {false, "build_plan.json is for compute capability " + cc + ", this GPU is " +
                           system.compute_capability};
    }
    return {true, ""};
}

std::string engine_file_name(const BuildPlan& plan, const std::string& model,
                             const SystemInfo& system) {
    std::string sm = system.compute_capability;
    sm.erase(std::remove(sm.begin(), sm.end(), '.'), sm.end());
    const std::string release = tensorrt_release(system.tensorrt_version).value_or(system.tensorrt_version);
    std::string name = model + "." + plan.precision + ".b" + std::to_string(plan.profile.min) + "-" +
                       std::to_string(plan.profile.opt) + "-" + std::to_string(plan.profile.max) +
                       ".trt" + release + ".sm" + sm;
    if (plan.dla_core) name += ".dla" + std::to_string(*plan.dla_core);
    return name + ".engine";
}

}  // namespace vtedge
