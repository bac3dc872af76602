#include "vtedge/build_plan.hpp"

#include <algorithm>
#include <optional>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "vtedge/error.hpp"

namespace vtedge {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
    throw ManifestError(source + ": " + what);
}

const json& require(const json& obj, const std::string& key, const std::string& path,
                    const std::string& source) {
    auto it = obj.find(key);
    if (it == obj.end()) fail(source, "missing key '" + path + key + "'");
    return *it;
}

// Batch bounds may be given as integers or as full shapes (their first dimension).
int64_t batch_of(const json& v, const std::string& key, const std::string& source) {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    fail(source, "key '" + key + "' must be an integer or a shape");
}

std::string optional_string(const json& p, const std::string& key, const std::string& prefix,
                            const std::string& source) {
    auto it = p.find(key);
    if (it == p.end() || it->is_null()) return "";
    if (!it->is_string()) fail(source, "key '" + prefix + key + "' must be a string");
    return it->get<std::string>();
}

// The plan format versions this loader reads. 2: every key below is required, and
// network_flags and builder_flags are what the builder sets. 1: the first plans and the
// hand-written layouts (an array of plans, one plan), whose keys below are optional.
constexpr int kPlanFormatVersion = 2;

int plan_version(const json& obj, int otherwise, const std::string& prefix, const std::string& source) {
    auto it = obj.find("format_version");
    if (it == obj.end()) return otherwise;
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > kPlanFormatVersion) {
        fail(source, "unsupported " + prefix + "format_version " + it->dump() + " (this loader reads 1 and 2)");
    }
    return static_cast<int>(it->get<int64_t>());
}

// The key's value; nullptr when it is absent and may be (format version 1).
const json* plan_key(const json& p, const std::string& key, bool required, const std::string& prefix,
                     const std::string& source) {
    auto it = p.find(key);
    if (it != p.end()) return &*it;
    if (required) fail(source, "missing key '" + prefix + key + "'");
    return nullptr;
}

std::optional<std::vector<std::string>> string_list(const json* v, const std::string& key,
                                                    const std::string& source) {
    if (v == nullptr) return std::nullopt;
    const bool ok = v->is_array() && std::all_of(v->begin(), v->end(), [](const json& x) { return x.is_string(); });
    if (!ok) fail(source, "key '" + key + "' must be an array of strings");
    return v->get<std::vector<std::string>>();
}

void read_plan_keys(const json& p, const std::string& prefix, const std::string& source, int version,
                    BuildPlan* plan) {
    const bool required = version >= 2;
    auto text = [&](const std::string& key) {
        const json* v = plan_key(p, key, required, prefix, source);
        if (v == nullptr || (v->is_null() && !required)) return std::string();
        if (!v->is_string()) fail(source, "key '" + prefix + key + "' must be a string");
        return v->get<std::string>();
    };
    plan->model = text("model");
    plan->target = text("target");
    plan->engine = text("engine");
    plan->tensorrt_version = text("tensorrt_version");
    plan->compute_capability = text("compute_capability");
    if (const json* it = plan_key(p, "input_chw", required, prefix, source)) {
        const bool ok = it->is_array() && it->size() == 3 &&
                        std::all_of(it->begin(), it->end(), [](const json& v) {
                            return v.is_number_integer() && v.get<int64_t>() > 0;
                        });
        if (!ok) fail(source, "key '" + prefix + "input_chw' must be 3 positive integers");
        plan->input_chw = it->get<std::vector<int64_t>>();
    }
    plan->network_flags = string_list(plan_key(p, "network_flags", required, prefix, source),
                                      prefix + "network_flags", source);
    plan->builder_flags = string_list(plan_key(p, "builder_flags", required, prefix, source),
                                      prefix + "builder_flags", source);
    if (const json* it = plan_key(p, "gpu_fallback", required, prefix, source)) {
        if (!it->is_boolean()) fail(source, "key '" + prefix + "gpu_fallback' must be a boolean");
        plan->gpu_fallback = it->get<bool>();
    }
}

// `document_version`: the version of the document holding the plan (0: a plan or an array of
// plans outside a document, whose own format_version, 1 when absent, decides).
BuildPlan parse_plan(const json& p, const std::string& path, const std::string& source, int document_version) {
    if (!p.is_object()) fail(source, "key '" + path + "' must be an object");
    const std::string prefix = path.empty() ? "" : path + ".";
    const int version = plan_version(p, document_version > 0 ? document_version : 1, prefix, source);
    if (document_version > 0 && version != document_version) {
        fail(source, "key '" + prefix + "format_version' is " + std::to_string(version) + ", the document's is " +
                         std::to_string(document_version));
    }
    if (version >= 2) {  // format 2: every key, including the ones this loader only checks
        for (const char* key : {"format_version", "input_name", "output_name"}) {
            const json* v = plan_key(p, key, true, prefix, source);
            if (std::string(key) != "format_version" && !v->is_string()) {
                fail(source, "key '" + prefix + key + "' must be a string");
            }
        }
    }
    auto str = [&](const std::string& key) {
        const json& v = require(p, key, prefix, source);
        if (!v.is_string()) fail(source, "key '" + prefix + key + "' must be a string");
        return v.get<std::string>();
    };
    BuildPlan plan;
    plan.onnx = str("onnx");
    plan.precision = str("precision");

    const json& profile = require(p, "profile", prefix, source);
    if (!profile.is_object()) fail(source, "key '" + prefix + "profile' must be an object");
    plan.profile.min = batch_of(require(profile, "min", prefix + "profile.", source), prefix + "profile.min", source);
    plan.profile.opt = batch_of(require(profile, "opt", prefix + "profile.", source), prefix + "profile.opt", source);
    plan.profile.max = batch_of(require(profile, "max", prefix + "profile.", source), prefix + "profile.max", source);
    if (!(1 <= plan.profile.min && plan.profile.min <= plan.profile.opt &&
          plan.profile.opt <= plan.profile.max)) {
        fail(source, "key '" + prefix + "profile' must satisfy 1 <= min <= opt <= max");
    }

    const json& workspace = require(p, "workspace_mib", prefix, source);
    if (!workspace.is_number_integer() || workspace.get<int64_t>() < 0) {
        fail(source, "key '" + prefix + "workspace_mib' must be an integer >= 0");
    }
    plan.workspace_mib = workspace.get<int64_t>();

    const json& dla = require(p, "dla_core", prefix, source);
    if (dla.is_number_integer() && dla.get<int64_t>() >= 0) {
        plan.dla_core = static_cast<int>(dla.get<int64_t>());
    } else if (!dla.is_null()) {
        fail(source, "key '" + prefix + "dla_core' must be an integer >= 0 or null");
    }

    const json& typed = require(p, "strongly_typed", prefix, source);
    if (!typed.is_boolean()) fail(source, "key '" + prefix + "strongly_typed' must be a boolean");
    plan.strongly_typed = typed.get<bool>();

    const json& cache = require(p, "timing_cache", prefix, source);
    if (cache.is_string()) {
        plan.timing_cache = cache.get<std::string>();
    } else if (!cache.is_null()) {
        fail(source, "key '" + prefix + "timing_cache' must be a string or null");
    }
    read_plan_keys(p, prefix, source, version, &plan);
    return plan;
}

}  // namespace

bool plan_version_matches(const std::string& plan_version, const std::string& found) {
    if (plan_version.empty()) return true;
    auto split = [](const std::string& v) {
        std::vector<std::string> parts;
        std::size_t pos = 0;
        while (true) {
            const std::size_t dot = v.find('.', pos);
            parts.push_back(v.substr(pos, dot == std::string::npos ? dot : dot - pos));
            if (dot == std::string::npos) return parts;
            pos = dot + 1;
        }
    };
    const auto want = split(plan_version);
    const auto have = split(found);
    if (have.size() < want.size()) return false;
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (want[i] != "x" && want[i] != have[i]) return false;
    }
    return true;
}

std::vector<BuildPlan> parse_build_plans(const std::string& text, const std::string& source) {
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::parse_error& e) {
        throw ManifestError(source + ": invalid JSON: " + e.what());
    }
    std::vector<BuildPlan> plans;
    if (doc.is_object() && doc.contains("plans")) {
        // The pipeline's document: {"format_version": 2, "target": ..., "plans": [...]}.
        const int version = plan_version(doc, 1, "", source);
        if (version >= 2) require(doc, "target", "", source);
        const std::string target = optional_string(doc, "target", "", source);
        const json& list = doc["plans"];
        if (!list.is_array()) fail(source, "key 'plans' must be an array");
        for (std::size_t i = 0; i < list.size(); ++i) {
            plans.push_back(parse_plan(list[i], "plans[" + std::to_string(i) + "]", source, version));
            if (plans.back().target.empty()) plans.back().target = target;
        }
    } else if (doc.is_array()) {  // format version 1's layouts: an array of plans, or one plan
        for (std::size_t i = 0; i < doc.size(); ++i) {
            plans.push_back(parse_plan(doc[i], "[" + std::to_string(i) + "]", source, 0));
        }
    } else {
        plans.push_back(parse_plan(doc, "", source, 0));
    }
    if (plans.empty()) fail(source, "holds no build plan");
    return plans;
}

const BuildPlan& select_build_plan(const std::vector<BuildPlan>& plans,
                                   const std::string& precision,
                                   const std::string& tensorrt_version,
                                   const std::string& source) {
    // How specific a plan version is: "10.3" (2) beats "10.x" (1) beats "" (0, any).
    auto specificity = [](const std::string& v) {
        if (v.empty()) return 0;
        int n = 0;
        std::size_t pos = 0;
        while (true) {
            const std::size_t dot = v.find('.', pos);
            if (v.compare(pos, dot == std::string::npos ? std::string::npos : dot - pos, "x") != 0) ++n;
            if (dot == std::string::npos) return n;
            pos = dot + 1;
        }
    };
    const BuildPlan* best = nullptr;
    std::string available;
    for (const auto& plan : plans) {
        available += (available.empty() ? "" : ", ") + std::string("(") + plan.precision + ", " +
                     (plan.tensorrt_version.empty() ? "any" : plan.tensorrt_version) + ")";
        if (!precision.empty() && plan.precision != precision) continue;
        if (!plan_version_matches(plan.tensorrt_version, tensorrt_version)) continue;
        if (!best || specificity(plan.tensorrt_version) > specificity(best->tensorrt_version)) {
            best = &plan;
        }
    }
    if (best) return *best;
    const std::string found = tensorrt_version.empty() ? "(unknown)" : tensorrt_version;
    throw CompatibilityError(source + ": no plan for " +
                        (precision.empty() ? std::string() : "precision '" + precision + "' and ") +
                        "TensorRT " + found + "; available (precision, TensorRT): " + available);
}

BuildPlan read_build_plan(const std::filesystem::path& bundle_dir, const std::string& precision,
                          const std::string& tensorrt_version) {
    const auto path = bundle_dir / "build_plan.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ManifestError("build_plan.json: cannot open " + path.string());
    std::ostringstream text;
    text << in.rdbuf();
    const std::vector<BuildPlan> plans = parse_build_plans(text.str());
    return select_build_plan(plans, precision, tensorrt_version);
}

}  // namespace vtedge
