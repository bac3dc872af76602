// build_plan.json: how to build a TensorRT engine from the bundle's precision ONNX on the
// device. Parsed without TensorRT so that the plan can be checked anywhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "vtedge/manifest.hpp"

namespace vtedge {

// Written by pipeline/backends/tensorrt_plan.py (docs/build_plan.schema.json). In format
// version 2 every key is required; in version 1 (the first plans, and hand-written plans with
// only the essentials) the keys below the first block are optional.
struct BuildPlan {
    std::string onnx;                         // bundle-relative path of the ONNX to build
    std::string precision;                    // fp32, fp16, int8-trt
    BatchProfile profile;                     // optimisation profile of the batch dimension
    int64_t workspace_mib = 0;                // 0: TensorRT's default workspace limit
    std::optional<int> dla_core;              // DLA core, with GPU fallback; empty: GPU only
    bool strongly_typed = true;               // precision taken from the ONNX (Q/DQ, casts)
    std::optional<std::string> timing_cache;  // timing cache file (its name is reused)

    std::string model;                             // model name, for the engine file name
    std::string tensorrt_version;                  // "10.3", "11.x" or "10.3.0"; empty: any
    std::string compute_capability;                // "8.7" or "auto"; empty: any
    std::vector<int64_t> input_chw;                // empty: from the manifest
    std::optional<std::vector<std::string>> network_flags;  // NetworkDefinitionCreationFlag names
                                                            // ("EXPLICIT_BATCH", "STRONGLY_TYPED")
                                                            // to set; absent (version 1): derived
    std::optional<std::vector<std::string>> builder_flags;  // BuilderFlag names ("FP16", "INT8",
                                                            // "GPU_FALLBACK"); absent: derived
    bool gpu_fallback = true;                      // with dla_core: layers DLA cannot run
    std::string target;                            // "jetson-agx-orin"; the document's when absent
    std::string engine;                            // the pipeline's engine path (informational)
};

// Whether a TensorRT version found on the device ("10.3.0.30") is one a plan version
// ("10.3", "10.x", "10.3.0") means; an empty plan version matches any.
bool plan_version_matches(const std::string& plan_version, const std::string& found);

// Parses build_plan.json text. The pipeline writes one layout, the document
// {"format_version": 2, "target": ..., "plans": [plan, ...]} (one plan per precision and
// TensorRT version the target ships); version 1's are read too: that document with
// "format_version": 1, an array of plans, or one plan object. Throws ManifestError naming the
// key at fault.
std::vector<BuildPlan> parse_build_plans(const std::string& text,
                                         const std::string& source = "build_plan.json");

// The plan for `precision` (empty: any) whose tensorrt_version matches `tensorrt_version`,
// the TensorRT found at run time ("10.3.0.30"), with plan_version_matches. When several
// match ("10.x" and "10.3"), the most specific version wins (more non-wildcard parts), then
// the first listed. Throws CompatibilityError listing the available (precision, TensorRT)
// pairs when none matches, e.g. "build_plan.json: no plan for precision 'fp16' and TensorRT
// 9.0.0; available (precision, TensorRT): (fp32, 8.6), (fp16, 8.6), (fp16, 10.3)".
const BuildPlan& select_build_plan(const std::vector<BuildPlan>& plans,
                                   const std::string& precision,
                                   const std::string& tensorrt_version,
                                   const std::string& source = "build_plan.json");

// Reads <bundle>/build_plan.json and returns select_build_plan(plans, precision,
// tensorrt_version). ManifestError for an unreadable or malformed file.
BuildPlan read_build_plan(const std::filesystem::path& bundle_dir, const std::string& precision,
                          const std::string& tensorrt_version);

}  // namespace vtedge
