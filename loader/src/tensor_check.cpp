#include "vtedge/tensor_check.hpp"

#include <limits>

#include "vtedge/error.hpp"

namespace vtedge {

int dtype_bits(const std::string& dtype) {
    if (dtype == "float32" || dtype == "int32") return 32;
    if (dtype == "float16" || dtype == "bfloat16") return 16;
    if (dtype == "int8" || dtype == "uint8" || dtype == "bool" || dtype == "fp8") return 8;
    if (dtype == "int64") return 64;
    if (dtype == "int4" || dtype == "fp4") return 4;
    throw InputError("unknown tensor data type '" + dtype + "'");
}

std::string format_dims(const std::vector<int64_t>& dims) {
    std::string s = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) {
        s += (i ? "," : "") + std::to_string(dims[i]);
    }
    return s + "]";
}

std::size_t tensor_bytes(const std::vector<int64_t>& dims, const std::string& dtype) {
    const auto bits = static_cast<std::size_t>(dtype_bits(dtype));
    std::size_t count = 1;
    for (int64_t d : dims) {
        if (d < 0) {
            throw InputError("tensor shape " + format_dims(dims) + " has an unresolved dimension");
        }
        const auto u = static_cast<std::size_t>(d);
        if (u != 0 && count > std::numeric_limits<std::size_t>::max() / bits / u) {
            throw InputError("tensor shape " + format_dims(dims) + " is too large");
        }
        count *= u;
    }
    return (count * bits + 7) / 8;
}

std::size_t check_input_size(const std::vector<int64_t>& expected_dims, const std::string& dtype,
                             std::size_t given_bytes, const std::string& name) {
    const std::size_t expected = tensor_bytes(expected_dims, dtype);
    if (given_bytes != expected) {
        throw InputError(name + ": expected " + std::to_string(expected) + " bytes (" +
                         format_dims(expected_dims) + " " + dtype + "), got " +
                         std::to_string(given_bytes) + " bytes");
    }
    return expected;
}

void check_batch(int64_t batch, const BatchProfile& profile) {
    if (batch < 1) throw InputError("batch " + std::to_string(batch) + " must be at least 1");
    if (batch < profile.min || batch > profile.max) {
        throw InputError("batch " + std::to_string(batch) +
                         " is outside the engine's optimisation profile (min " +
                         std::to_string(profile.min) + ", max " + std::to_string(profile.max) + ")");
    }
}

void check_binding_shape(const std::vector<int64_t>& engine_dims,
                         const std::vector<int64_t>& expected_dims, const std::string& what) {
    bool ok = engine_dims.size() == expected_dims.size();
    for (std::size_t i = 0; ok && i < engine_dims.size(); ++i) {
        if (engine_dims[i] >= 0 && expected_dims[i] >= 0 && engine_dims[i] != expected_dims[i]) {
            ok = false;
        }
    }
    if (!ok) {
        throw RuntimeError("engine " + what + " has shape " + format_dims(engine_dims) +
                           "; the bundle expects " + format_dims(expected_dims));
    }
}

}  // namespace vtedge
