// TensorRT engine runtime and optional on-device engine build.
//
// Compiles against TensorRT 8.6, 10.x and 11.x headers:
//   - 10+ binds I/O by tensor name (setInputShape / setTensorAddress / enqueueV3);
//   - 8.x uses binding indices and enqueueV2 (the name-based API there is incomplete);
//   - 11 has only strongly typed networks, so precision comes from the ONNX itself;
//     8.x needs the FP16/INT8 builder flags even for Q/DQ graphs.

#include "vtedge/trt_runtime.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <numeric>

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#if !defined(VTEDGE_WITH_ONNX_PARSER)
#if __has_include(<NvOnnxParser.h>)
#define VTEDGE_WITH_ONNX_PARSER 1
#else
#define VTEDGE_WITH_ONNX_PARSER 0
#endif
#endif
#if VTEDGE_WITH_ONNX_PARSER
#include <NvOnnxParser.h>
#endif

#include <unistd.h>

#include "vtedge/error.hpp"
#include "vtedge/integrity.hpp"

namespace fs = std::filesystem;

namespace vtedge {
namespace {

// TensorRT reports details through the logger; the last error is kept for the exception
// message and nothing is printed, so a failure stays one line.
class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (static_cast<int>(severity) > static_cast<int>(Severity::kERROR)) return;
        std::lock_guard<std::mutex> lock(mutex_);
        last_error_ = msg ? msg : "";
    }
    std::string last_error() {
        std::lock_guard<std::mutex> lock(mutex_);
        return last_error_.empty() ? "no details from TensorRT" : last_error_;
    }

private:
    std::mutex mutex_;
    std::string last_error_;
};

// TensorRT objects keep a reference to the logger, so it lives for the whole process.
Logger& logger() {
    static Logger instance;
    return instance;
}

void cuda_check(cudaError_t rc, const char* what) {
    if (rc != cudaSuccess) {
        throw RuntimeError(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(rc));
    }
}

class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { release(); }

    void* reserve(std::size_t bytes) {
        if (bytes > bytes_) {
            release();
            cuda_check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
            bytes_ = bytes;
        }
        return ptr_;
    }
    void* get() const { return ptr_; }

private:
    void release() {
        if (ptr_) cudaFree(ptr_);
        ptr_ = nullptr;
        bytes_ = 0;
    }
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
};

std::vector<char> read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw RuntimeError("cannot open engine " + path.string());
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

nvinfer1::Dims make_dims(const std::vector<int64_t>& shape, int64_t batch) {
    nvinfer1::Dims dims{};
    dims.nbDims = static_cast<int32_t>(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i) {
        const int64_t v = (i == 0 || shape[i] < 0) ? batch : shape[i];
        dims.d[i] = static_cast<int32_t>(v);
    }
    return dims;
}

std::size_t volume(const nvinfer1::Dims& dims) {
    std::size_t n = 1;
    for (int i = 0; i < dims.nbDims; ++i) {
        if (dims.d[i] < 0) throw RuntimeError("engine output has an unresolved dynamic dimension");
        n *= static_cast<std::size_t>(dims.d[i]);
    }
    return n;
}

double percentile(const std::vector<double>& sorted, double q) {
    const std::size_t rank = static_cast<std::size_t>(std::ceil(q * sorted.size()));
    return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

}  // namespace

// ---------------------------------------------------------------------------------------
// System information

SystemInfo query_system(int device) {
    SystemInfo info;
#if NV_TENSORRT_MAJOR >= 10
    info.tensorrt_version = std::to_string(getInferLibMajorVersion()) + "." +
                            std::to_string(getInferLibMinorVersion()) + "." +
                            std::to_string(getInferLibPatchVersion());
#else
    // 8.x encodes the version as major * 1000 + minor * 100 + patch.
    const int32_t v = getInferLibVersion();
    info.tensorrt_version = std::to_string(v / 1000) + "." + std::to_string((v / 100) % 10) +
                            "." + std::to_string(v % 100);
#endif
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    info.compute_capability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    return info;
}

std::string device_name(int device) {
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return prop.name;
}

// ---------------------------------------------------------------------------------------
// Engine

struct TrtEngine::Impl {
    int device = 0;
    std::string input_name;
    std::string output_name;
    std::vector<int64_t> input_shape;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
#if NV_TENSORRT_MAJOR < 10
    int input_index = -1;
    int output_index = -1;
    std::vector<void*> bindings;
#endif
    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
    DeviceBuffer input_buffer;
    DeviceBuffer output_buffer;
    std::size_t output_count = 0;
    int batch = 0;

    ~Impl() {
        if (start) cudaEventDestroy(start);
        if (stop) cudaEventDestroy(stop);
        if (stream) cudaStreamDestroy(stream);
    }

    void bind_names();
    void set_batch(int n);
    void enqueue();
};

#if NV_TENSORRT_MAJOR >= 10

void TrtEngine::Impl::bind_names() {
    std::string names;
    bool have_input = false;
    bool have_output = false;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i) {
        const std::string name = engine->getIOTensorName(i);
        names += (names.empty() ? "'" : ", '") + name + "'";
        const bool is_input = engine->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
        if (name == input_name && is_input) have_input = true;
        if (name == output_name && !is_input) have_output = true;
        if (engine->getTensorDataType(name.c_str()) != nvinfer1::DataType::kFLOAT) {
            throw RuntimeError("engine tensor '" + name + "' is not float32");
        }
    }
    if (!have_input || !have_output || engine->getNbIOTensors() != 2) {
        throw RuntimeError("engine tensors are " + names + "; expected input '" + input_name +
                           "' and output '" + output_name + "'");
    }
}

void TrtEngine::Impl::set_batch(int n) {
    if (!context->setInputShape(input_name.c_str(), make_dims(input_shape, n))) {
        throw RuntimeError("batch " + std::to_string(n) +
                           " is outside the engine's optimisation profile: " + logger().last_error());
    }
    output_count = volume(context->getTensorShape(output_name.c_str()));
    batch = n;
}

void TrtEngine::Impl::enqueue() {
    if (!context->setTensorAddress(input_name.c_str(), input_buffer.get()) ||
        !context->setTensorAddress(output_name.c_str(), output_buffer.get()) ||
        !context->enqueueV3(stream)) {
        throw RuntimeError("TensorRT enqueue failed: " + logger().last_error());
    }
}

#else  // TensorRT 8.x: binding indices

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

void TrtEngine::Impl::bind_names() {
    input_index = engine->getBindingIndex(input_name.c_str());
    output_index = engine->getBindingIndex(output_name.c_str());
    std::string names;
    for (int32_t i = 0; i < engine->getNbBindings(); ++i) {
        names += (names.empty() ? "'" : ", '") + std::string(engine->getBindingName(i)) + "'";
        if (engine->getBindingDataType(i) != nvinfer1::DataType::kFLOAT) {
            throw RuntimeError("engine tensor '" + std::string(engine->getBindingName(i)) +
                               "' is not float32");
        }
    }
    if (input_index < 0 || output_index < 0 || !engine->bindingIsInput(input_index) ||
        engine->bindingIsInput(output_index) || engine->getNbBindings() != 2) {
        throw RuntimeError("engine tensors are " + names + "; expected input '" + input_name +
                           "' and output '" + output_name + "'");
    }
    bindings.assign(static_cast<std::size_t>(engine->getNbBindings()), nullptr);
}

void TrtEngine::Impl::set_batch(int n) {
    if (!context->setBindingDimensions(input_index, make_dims(input_shape, n))) {
        throw RuntimeError("batch " + std::to_string(n) +
                           " is outside the engine's optimisation profile: " + logger().last_error());
    }
    output_count = volume(context->getBindingDimensions(output_index));
    batch = n;
}

void TrtEngine::Impl::enqueue() {
    bindings[static_cast<std::size_t>(input_index)] = input_buffer.get();
    bindings[static_cast<std::size_t>(output_index)] = output_buffer.get();
    if (!context->enqueueV2(bindings.data(), stream, nullptr)) {
        throw RuntimeError("TensorRT enqueue failed: " + logger().last_error());
    }
}

#pragma GCC diagnostic pop

#endif

TrtEngine::TrtEngine(const fs::path& engine_path, const std::string& expected_sha256,
                     const TensorInfo& input, const TensorInfo& output, int device)
    : impl_(std::make_unique<Impl>()) {
    const std::vector<char> bytes = read_bytes(engine_path);
    if (!expected_sha256.empty()) {
        const std::string actual = sha256_bytes(bytes.data(), bytes.size());
        if (actual != expected_sha256) {
            throw IntegrityError("engine " + engine_path.string() +
                                 " changed after verification (SHA-256 " + actual + ")");
        }
    }
    Impl& s = *impl_;
    s.device = device;
    s.input_name = input.name;
    s.output_name = output.name;
    s.input_shape = input.shape;
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    s.runtime.reset(nvinfer1::createInferRuntime(logger()));
    if (!s.runtime) throw RuntimeError("cannot create the TensorRT runtime");
    s.engine.reset(s.runtime->deserializeCudaEngine(bytes.data(), bytes.size()));
    if (!s.engine) {
        throw RuntimeError("cannot deserialize engine " + engine_path.string() + ": " +
                           logger().last_error());
    }
    s.context.reset(s.engine->createExecutionContext());
    if (!s.context) throw RuntimeError("cannot create an execution context: " + logger().last_error());
    s.bind_names();
    cuda_check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_check(cudaEventCreate(&s.start), "cudaEventCreate");
    cuda_check(cudaEventCreate(&s.stop), "cudaEventCreate");
}

TrtEngine::~TrtEngine() = default;
TrtEngine::TrtEngine(TrtEngine&&) noexcept = default;
TrtEngine& TrtEngine::operator=(TrtEngine&&) noexcept = default;

std::vector<float> TrtEngine::infer(const float* input, int batch, std::size_t per_image) {
    Impl& s = *impl_;
    cuda_check(cudaSetDevice(s.device), "cudaSetDevice");
    if (batch != s.batch) s.set_batch(batch);
    const std::size_t in_bytes = per_image * static_cast<std::size_t>(batch) * sizeof(float);
    const std::size_t out_bytes = s.output_count * sizeof(float);
    s.input_buffer.reserve(in_bytes);
    s.output_buffer.reserve(out_bytes);
    std::vector<float> logits(s.output_count);
    cuda_check(cudaMemcpyAsync(s.input_buffer.get(), input, in_bytes, cudaMemcpyHostToDevice,
                               s.stream), "cudaMemcpyAsync");
    s.enqueue();
    cuda_check(cudaMemcpyAsync(logits.data(), s.output_buffer.get(), out_bytes,
                               cudaMemcpyDeviceToHost, s.stream), "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
    return logits;
}

std::size_t TrtEngine::output_per_image() const {
    return impl_->batch > 0 ? impl_->output_count / static_cast<std::size_t>(impl_->batch) : 0;
}

LatencyStats TrtEngine::benchmark(int warmup, int runs) {
    Impl& s = *impl_;
    if (s.batch == 0) throw RuntimeError("benchmark: call infer() first");
    for (int i = 0; i < warmup; ++i) s.enqueue();
    cuda_check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
    std::vector<double> times;
    for (int i = 0; i < std::max(runs, 1); ++i) {
        cuda_check(cudaEventRecord(s.start, s.stream), "cudaEventRecord");
        s.enqueue();
        cuda_check(cudaEventRecord(s.stop, s.stream), "cudaEventRecord");
        cuda_check(cudaEventSynchronize(s.stop), "cudaEventSynchronize");
        float ms = 0.0f;
        cuda_check(cudaEventElapsedTime(&ms, s.start, s.stop), "cudaEventElapsedTime");
        times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    LatencyStats stats;
    stats.runs = static_cast<int>(times.size());
    stats.p50_ms = percentile(times, 0.50);
    stats.p99_ms = percentile(times, 0.99);
    stats.mean_ms = std::accumulate(times.begin(), times.end(), 0.0) / times.size();
    stats.min_ms = times.front();
    stats.max_ms = times.back();
    return stats;
}

// ---------------------------------------------------------------------------------------
// Engine build

bool engine_builder_available() { return VTEDGE_WITH_ONNX_PARSER != 0; }

#if VTEDGE_WITH_ONNX_PARSER

namespace {

// Writes to a temporary file in the same folder, syncs it, then renames: a reader never
// sees a partial engine, even if the process dies during the write.
void write_atomically(const fs::path& path, const void* data, std::size_t size) {
    fs::create_directories(path.parent_path());
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw RuntimeError("cannot write " + tmp.string());
    const bool ok = std::fwrite(data, 1, size, f) == size && std::fflush(f) == 0 &&
                    ::fsync(::fileno(f)) == 0;
    std::fclose(f);
    if (!ok) {
        fs::remove(tmp);
        throw RuntimeError("cannot write " + tmp.string());
    }
    fs::rename(tmp, path);
}

uint32_t network_flags(const BuildPlan& plan) {
#if NV_TENSORRT_MAJOR >= 11
    (void)plan;
    return 0;  // every network is strongly typed
#elif NV_TENSORRT_MAJOR >= 10
    return plan.strongly_typed
               ? 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED)
               : 0U;
#else
    (void)plan;
    return 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#endif
}

// The plan's builder_flags when it has them (pipeline plans do), else derived the same way:
// before TensorRT 11 a network that is not strongly typed only uses FP16 / INT8 kernels when
// the builder flags allow them; Q/DQ graphs need kINT8, with kFP16 for the layers around.
std::vector<std::string> builder_flag_names(const BuildPlan& plan) {
    if (plan.builder_flags) return *plan.builder_flags;
    std::vector<std::string> names;
    const bool typed = NV_TENSORRT_MAJOR >= 11 || (NV_TENSORRT_MAJOR >= 10 && plan.strongly_typed);
    const bool int8 = plan.precision.rfind("int8", 0) == 0;
    if (!typed && (int8 || plan.precision == "fp16")) names.push_back("FP16");
    if (!typed && int8) names.push_back("INT8");
    if (plan.dla_core && plan.gpu_fallback) names.push_back("GPU_FALLBACK");
    return names;
}

void set_builder_flags(nvinfer1::IBuilderConfig& config, const BuildPlan& plan) {
    for (const std::string& name : builder_flag_names(plan)) {
        if (name == "GPU_FALLBACK") {
            config.setFlag(nvinfer1::BuilderFlag::kGPU_FALLBACK);  // layers DLA cannot run
            continue;
        }
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        if (name == "FP16") {
            config.setFlag(nvinfer1::BuilderFlag::kFP16);
            continue;
        }
        if (name == "INT8") {
            config.setFlag(nvinfer1::BuilderFlag::kINT8);
            continue;
        }
#pragma GCC diagnostic pop
#endif
        throw RuntimeError("build plan asks for builder flag " + name +
                           ", which this TensorRT version does not have");
    }
}

void set_profile(nvinfer1::IBuilder& builder, nvinfer1::IBuilderConfig& config,
                 const BuildPlan& plan, const TensorInfo& input, int crop) {
    std::vector<int64_t> shape = input.shape;
    if (plan.input_chw.size() == 3) {
        shape = {-1, plan.input_chw[0], plan.input_chw[1], plan.input_chw[2]};
    } else if (shape.size() == 4) {  // NCHW with possibly dynamic spatial dims: use the crop
        shape[2] = shape[2] < 0 ? crop : shape[2];
        shape[3] = shape[3] < 0 ? crop : shape[3];
    }
    nvinfer1::IOptimizationProfile* profile = builder.createOptimizationProfile();
    const char* name = input.name.c_str();
    using nvinfer1::OptProfileSelector;
    if (!profile->setDimensions(name, OptProfileSelector::kMIN, make_dims(shape, plan.profile.min)) ||
        !profile->setDimensions(name, OptProfileSelector::kOPT, make_dims(shape, plan.profile.opt)) ||
        !profile->setDimensions(name, OptProfileSelector::kMAX, make_dims(shape, plan.profile.max)) ||
        config.addOptimizationProfile(profile) < 0) {
        throw RuntimeError("invalid optimisation profile for input '" + input.name +
                           "': " + logger().last_error());
    }
}

void set_dla(nvinfer1::IBuilder& builder, nvinfer1::IBuilderConfig& config, const BuildPlan& plan) {
    if (!plan.dla_core) return;
    if (*plan.dla_core >= builder.getNbDLACores()) {
        throw RuntimeError("build plan asks for DLA core " + std::to_string(*plan.dla_core) +
                           " but this device has " + std::to_string(builder.getNbDLACores()));
    }
    config.setDefaultDeviceType(nvinfer1::DeviceType::kDLA);
    config.setDLACore(*plan.dla_core);
}

}  // namespace

void build_engine(const fs::path& bundle_dir, const BuildPlan& plan, const TensorInfo& input,
                  int crop, const fs::path& engine_path, const fs::path& cache_dir) {
    const fs::path onnx = resolve_bundle_path(bundle_dir, plan.onnx);
    std::unique_ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger()));
    if (!builder) throw RuntimeError("cannot create the TensorRT builder");
    std::unique_ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(network_flags(plan)));
    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger()));
    if (!parser->parseFromFile(onnx.c_str(),
                               static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
        std::string errors;
        for (int i = 0; i < parser->getNbErrors(); ++i) {
            errors += (errors.empty() ? "" : "; ") + std::string(parser->getError(i)->desc());
        }
        throw RuntimeError("cannot parse " + plan.onnx + ": " + errors);
    }

    std::unique_ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    if (plan.workspace_mib > 0) {
        config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE,
                                   static_cast<std::size_t>(plan.workspace_mib) << 20);
    }
    set_builder_flags(*config, plan);
    set_profile(*builder, *config, plan, input, crop);
    set_dla(*builder, *config, plan);

    // The timing cache only speeds up later builds; a stale one is ignored by TensorRT.
    std::unique_ptr<nvinfer1::ITimingCache> timing;
    fs::path timing_path;
    if (plan.timing_cache) {
        timing_path = cache_dir / fs::path(*plan.timing_cache).filename();
        std::vector<char> blob;
        if (fs::exists(timing_path)) blob = read_bytes(timing_path);
        timing.reset(config->createTimingCache(blob.data(), blob.size()));
        if (timing) config->setTimingCache(*timing, false);
    }

    std::unique_ptr<nvinfer1::IHostMemory> serialized(builder->buildSerializedNetwork(*network, *config));
    if (!serialized || serialized->size() == 0) {
        throw RuntimeError("engine build failed for " + plan.onnx + ": " + logger().last_error());
    }
    write_atomically(engine_path, serialized->data(), serialized->size());
    if (timing) {
        std::unique_ptr<nvinfer1::IHostMemory> blob(config->getTimingCache()->serialize());
        if (blob) write_atomically(timing_path, blob->data(), blob->size());
    }
}

#else

void build_engine(const fs::path&, const BuildPlan&, const TensorInfo&, int, const fs::path&,
                  const fs::path&) {
    throw RuntimeError("engine build is not available: TensorRT's ONNX parser (nvonnxparser) "
                       "was not found at build time");
}

#endif

}  // namespace vtedge
