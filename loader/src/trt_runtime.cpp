// TensorRT engine runtime and optional on-device engine build.
//
// Compiles against TensorRT 8.6, 10.x and 11.x headers:
//   - 10+ binds I/O by tensor name (setInputShape / setTensorAddress / enqueueV3);
//   - 8.x uses binding indices and enqueueV2 (the name-based API there is incomplete);
//   - 11 has only strongly typed networks, so precision comes from the ONNX itself;
//     8.x needs the FP16/INT8 builder flags even for Q/DQ graphs.

#include "vtedge/trt_runtime.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>

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
#include "vtedge/tensor_check.hpp"

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
    // Forgets the last error, so that the next message is about the next call.
    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        last_error_.clear();
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

// GPU memory that grows on demand and is freed with its owner.
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
    void release() {
        if (ptr_) cudaFree(ptr_);
        ptr_ = nullptr;
        bytes_ = 0;
    }

private:
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
};

// Page-locked host memory (asynchronous copies, as the pipeline's runner stages them).
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    ~PinnedBuffer() { release(); }

    void* reserve(std::size_t bytes) {
        if (bytes > bytes_) {
            release();
            cuda_check(cudaMallocHost(&ptr_, bytes), "cudaMallocHost");
            bytes_ = bytes;
        }
        return ptr_;
    }
    void* get() const { return ptr_; }
    void release() {
        if (ptr_) cudaFreeHost(ptr_);
        ptr_ = nullptr;
        bytes_ = 0;
    }

private:
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
};

std::vector<char> read_bytes(const fs::path& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw RuntimeError(std::string("cannot open ") + what + " " + path.string());
    std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) throw RuntimeError(std::string("cannot read ") + what + " " + path.string());
    return bytes;
}

nvinfer1::Dims to_dims(const std::vector<int64_t>& shape) {
    nvinfer1::Dims dims{};
    if (shape.size() > static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS)) {
        throw RuntimeError("shape " + format_dims(shape) + " has too many dimensions for TensorRT");
    }
    dims.nbDims = static_cast<int32_t>(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i) dims.d[i] = static_cast<int32_t>(shape[i]);
    return dims;
}

// The shape with the batch (dimension 0) and every other dynamic dimension set to `batch`:
// the optimisation profile of an engine build.
nvinfer1::Dims make_dims(const std::vector<int64_t>& shape, int64_t batch) {
    std::vector<int64_t> resolved = shape;
    for (std::size_t i = 0; i < resolved.size(); ++i) {
        if (i == 0 || resolved[i] < 0) resolved[i] = batch;
    }
    return to_dims(resolved);
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& dims) {
    std::vector<int64_t> v;
    for (int32_t i = 0; i < dims.nbDims; ++i) v.push_back(dims.d[i]);
    return v;
}

std::size_t volume(const nvinfer1::Dims& dims) {
    std::size_t n = 1;
    for (int i = 0; i < dims.nbDims; ++i) {
        if (dims.d[i] < 0) throw RuntimeError("engine output has an unresolved dynamic dimension");
        n *= static_cast<std::size_t>(dims.d[i]);
    }
    return n;
}

// The data type names of tensor_check.hpp.
std::string dtype_name(nvinfer1::DataType type) {
    switch (type) {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kBOOL: return "bool";
    case nvinfer1::DataType::kUINT8: return "uint8";
    default: return "TensorRT data type " + std::to_string(static_cast<int>(type));
    }
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
    fs::path path;
    int device = 0;
    std::string input_name;
    std::string output_name;
    std::vector<int64_t> manifest_input_shape;
    std::vector<int64_t> engine_input_shape;  // the engine's, -1 where dynamic
    std::string input_dtype;
    BatchProfile profile;
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
    PinnedBuffer host_input;
    PinnedBuffer host_output;
    std::vector<int64_t> input_dims;  // the input binding's shape for `batch`
    std::size_t input_bytes = 0;      // of the last batch, staged in host_input
    std::size_t output_count = 0;
    int batch = 0;

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    // Everything is released here, in order, on the engine's device: the work queued on the
    // stream finishes, then the buffers it used, the stream and events, the context, the
    // engine and the runtime go. The caller's current device is left as it was.
    ~Impl() {
        int current = -1;
        const bool switched = runtime && cudaGetDevice(&current) == cudaSuccess &&
                              current != device && cudaSetDevice(device) == cudaSuccess;
        if (stream) cudaStreamSynchronize(stream);
        input_buffer.release();
        output_buffer.release();
        host_input.release();
        host_output.release();
        if (start) cudaEventDestroy(start);
        if (stop) cudaEventDestroy(stop);
        if (stream) cudaStreamDestroy(stream);
        context.reset();
        engine.reset();
        runtime.reset();
        if (switched) cudaSetDevice(current);
    }

    void bind_names();
    void read_input_binding();
    std::vector<int64_t> input_shape_for(int n) const;
    void set_batch(int n);
    void enqueue();
    void copy_run_copy();
};

// The engine's input shape, data type and batch range; its shapes against the manifest's.
void TrtEngine::Impl::read_input_binding() {
    engine_input_shape = to_vector(engine->getTensorShape(input_name.c_str()));
    if (engine_input_shape.empty()) {
        throw RuntimeError("engine " + path.string() + ": input '" + input_name + "' has no batch dimension");
    }
    check_binding_shape(engine_input_shape, manifest_input_shape, "input '" + input_name + "'");
    if (engine_input_shape[0] >= 0) {  // built for one fixed batch
        profile = {engine_input_shape[0], engine_input_shape[0], engine_input_shape[0]};
        return;
    }
    using nvinfer1::OptProfileSelector;
    const nvinfer1::Dims low = engine->getProfileShape(input_name.c_str(), 0, OptProfileSelector::kMIN);
    const nvinfer1::Dims opt = engine->getProfileShape(input_name.c_str(), 0, OptProfileSelector::kOPT);
    const nvinfer1::Dims high = engine->getProfileShape(input_name.c_str(), 0, OptProfileSelector::kMAX);
    if (low.nbDims < 1 || opt.nbDims < 1 || high.nbDims < 1 || low.d[0] < 1 || high.d[0] < low.d[0]) {
        throw RuntimeError("engine " + path.string() + ": no usable optimisation profile for input '" +
                           input_name + "'");
    }
    profile = {low.d[0], opt.d[0], high.d[0]};
}

// The input shape for batch `n`: the engine's, with the batch and any other dynamic dimension
// the manifest fixes filled in.
std::vector<int64_t> TrtEngine::Impl::input_shape_for(int n) const {
    std::vector<int64_t> dims = engine_input_shape;
    dims[0] = n;
    for (std::size_t i = 1; i < dims.size(); ++i) {
        if (dims[i] >= 0) continue;
        if (i >= manifest_input_shape.size() || manifest_input_shape[i] < 0) {
            throw RuntimeError("engine input '" + input_name + "' has shape " +
                               format_dims(engine_input_shape) + ": dimension " + std::to_string(i) +
                               " is dynamic and the manifest does not fix it");
        }
        dims[i] = manifest_input_shape[i];
    }
    return dims;
}

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
        const nvinfer1::DataType type = engine->getTensorDataType(name.c_str());
        if (type != nvinfer1::DataType::kFLOAT) {
            throw RuntimeError("engine tensor '" + name + "' is " + dtype_name(type) +
                               ", not float32");
        }
    }
    if (!have_input || !have_output || engine->getNbIOTensors() != 2) {
        throw RuntimeError("engine tensors are " + names + "; expected input '" + input_name +
                           "' and output '" + output_name + "'");
    }
    input_dtype = dtype_name(engine->getTensorDataType(input_name.c_str()));
}

void TrtEngine::Impl::set_batch(int n) {
    batch = 0;  // until the new shape is fully set
    const std::vector<int64_t> shape = input_shape_for(n);
    if (!context->setInputShape(input_name.c_str(), to_dims(shape))) {
        throw RuntimeError("the engine rejects input shape " + format_dims(shape) + ": " +
                           logger().last_error());
    }
    input_dims = to_vector(context->getTensorShape(input_name.c_str()));
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
        const nvinfer1::DataType type = engine->getBindingDataType(i);
        if (type != nvinfer1::DataType::kFLOAT) {
            throw RuntimeError("engine tensor '" + std::string(engine->getBindingName(i)) + "' is " +
                               dtype_name(type) + ", not float32");
        }
    }
    if (input_index < 0 || output_index < 0 || !engine->bindingIsInput(input_index) ||
        engine->bindingIsInput(output_index) || engine->getNbBindings() != 2) {
        throw RuntimeError("engine tensors are " + names + "; expected input '" + input_name +
                           "' and output '" + output_name + "'");
    }
    bindings.assign(static_cast<std::size_t>(engine->getNbBindings()), nullptr);
    input_dtype = dtype_name(engine->getBindingDataType(input_index));
}

void TrtEngine::Impl::set_batch(int n) {
    batch = 0;  // until the new shape is fully set
    const std::vector<int64_t> shape = input_shape_for(n);
    if (!context->setBindingDimensions(input_index, to_dims(shape))) {
        throw RuntimeError("the engine rejects input shape " + format_dims(shape) + ": " +
                           logger().last_error());
    }
    input_dims = to_vector(context->getBindingDimensions(input_index));
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

// Copy in, execute, copy out, all queued on the stream: what one run costs, and what the
// pipeline's TensorRT runner times.
void TrtEngine::Impl::copy_run_copy() {
    cuda_check(cudaMemcpyAsync(input_buffer.get(), host_input.get(), input_bytes,
                               cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
    enqueue();
    cuda_check(cudaMemcpyAsync(host_output.get(), output_buffer.get(), output_count * sizeof(float),
                               cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
}

TrtEngine::TrtEngine(const fs::path& engine_path, const std::string& expected_sha256,
                     const TensorInfo& input, const TensorInfo& output, int device)
    : impl_(std::make_unique<Impl>()) {
    const std::vector<char> bytes = read_bytes(engine_path, "engine");
    if (!expected_sha256.empty()) {
        const std::string actual = sha256_bytes(bytes.data(), bytes.size());
        if (actual != expected_sha256) {
            throw IntegrityError("engine " + engine_path.string() +
                                 " changed after verification (SHA-256 " + actual + ")");
        }
    }
    Impl& s = *impl_;
    s.path = engine_path;
    s.device = device;
    s.input_name = input.name;
    s.output_name = output.name;
    s.manifest_input_shape = input.shape;
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    s.runtime.reset(nvinfer1::createInferRuntime(logger()));
    if (!s.runtime) throw RuntimeError("cannot create the TensorRT runtime");
    s.engine.reset(s.runtime->deserializeCudaEngine(bytes.data(), bytes.size()));
    if (!s.engine) {
        throw RuntimeError("cannot deserialize engine " + engine_path.string() + ": " +
                           logger().last_error());
    }
    s.bind_names();
    s.read_input_binding();
    check_binding_shape(to_vector(s.engine->getTensorShape(output.name.c_str())), output.shape,
                        "output '" + output.name + "'");
    s.context.reset(s.engine->createExecutionContext());
    if (!s.context) throw RuntimeError("cannot create an execution context: " + logger().last_error());
    cuda_check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_check(cudaEventCreate(&s.start), "cudaEventCreate");
    cuda_check(cudaEventCreate(&s.stop), "cudaEventCreate");
}

TrtEngine::~TrtEngine() = default;
TrtEngine::TrtEngine(TrtEngine&&) noexcept = default;
TrtEngine& TrtEngine::operator=(TrtEngine&&) noexcept = default;

TrtEngine::Impl& TrtEngine::impl() const {
    if (!impl_) throw RuntimeError("use of a moved-from TrtEngine");
    return *impl_;
}

std::vector<int64_t> TrtEngine::input_shape() const {
    std::vector<int64_t> shape = impl().engine_input_shape;
    shape[0] = -1;
    return shape;
}

std::string TrtEngine::input_dtype() const { return impl().input_dtype; }

BatchProfile TrtEngine::batch_profile() const { return impl().profile; }

std::vector<float> TrtEngine::run(const void* input, std::size_t bytes, int batch) {
    Impl& s = impl();
    check_batch(batch, s.profile);
    if (!input) throw InputError("input '" + s.input_name + "': no data (null pointer)");
    cuda_check(cudaSetDevice(s.device), "cudaSetDevice");
    if (batch != s.batch) s.set_batch(batch);
    // Nothing is copied before the size is known to be the binding's: a shorter buffer would
    // be read past its end, a longer one silently truncated.
    s.input_bytes = 0;
    const std::size_t in_bytes =
        check_input_size(s.input_dims, s.input_dtype, bytes, "input '" + s.input_name + "'");
    const std::size_t out_bytes = s.output_count * sizeof(float);
    s.input_buffer.reserve(in_bytes);
    s.output_buffer.reserve(out_bytes);
    s.host_input.reserve(in_bytes);
    s.host_output.reserve(out_bytes);
    std::memcpy(s.host_input.get(), input, in_bytes);
    s.input_bytes = in_bytes;
    s.copy_run_copy();
    cuda_check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
    std::vector<float> logits(s.output_count);
    std::memcpy(logits.data(), s.host_output.get(), out_bytes);
    return logits;
}

std::vector<float> TrtEngine::infer(const float* input, int batch, std::size_t per_image) {
    const std::size_t images = batch > 0 ? static_cast<std::size_t>(batch) : 0;
    return run(input, per_image * images * sizeof(float), batch);
}

std::size_t TrtEngine::output_per_image() const {
    const Impl& s = impl();
    return s.batch > 0 ? s.output_count / static_cast<std::size_t>(s.batch) : 0;
}

std::vector<double> TrtEngine::time_last_batch(int warmup, int runs) {
    Impl& s = impl();
    if (s.batch == 0 || s.input_bytes == 0) throw RuntimeError("benchmark: run a batch first");
    cuda_check(cudaSetDevice(s.device), "cudaSetDevice");
    for (int i = 0; i < warmup; ++i) s.copy_run_copy();
    cuda_check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
    std::vector<double> times;
    for (int i = 0; i < std::max(runs, 1); ++i) {
        cuda_check(cudaEventRecord(s.start, s.stream), "cudaEventRecord");
        s.copy_run_copy();
        cuda_check(cudaEventRecord(s.stop, s.stream), "cudaEventRecord");
        cuda_check(cudaEventSynchronize(s.stop), "cudaEventSynchronize");
        float ms = 0.0f;
        cuda_check(cudaEventElapsedTime(&ms, s.start, s.stop), "cudaEventElapsedTime");
        times.push_back(ms);
    }
    return times;
}

LatencyStats TrtEngine::benchmark(int warmup, int runs) {
    return latency_stats(time_last_batch(warmup, runs), impl().batch);
}

// ---------------------------------------------------------------------------------------
// Engine build

bool engine_builder_available() { return VTEDGE_WITH_ONNX_PARSER != 0; }

#if VTEDGE_WITH_ONNX_PARSER

namespace {

// Writes to a temporary file in the same folder, syncs it, then renames: a reader never
// sees a partial engine, even if the process dies during the write.
void write_atomically(const fs::path& path, const void* data, std::size_t size) {
    const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) throw RuntimeError("cannot create " + path.parent_path().string() + ": " + ec.message());
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw RuntimeError("cannot write " + tmp.string());
    const bool ok = std::fwrite(data, 1, size, f) == size && std::fflush(f) == 0 &&
                    ::fsync(::fileno(f)) == 0;
    const bool closed = std::fclose(f) == 0;
    if (ok && closed) fs::rename(tmp, path, ec);
    if (!ok || !closed || ec) {
        fs::remove(tmp, ec);
        throw RuntimeError("cannot write " + path.string());
    }
}

// One NetworkDefinitionCreationFlag by its name in the plan; a flag this TensorRT lacks
// (EXPLICIT_BATCH is gone in 11, STRONGLY_TYPED came in 9) is refused in one line.
uint32_t network_flag_bit(const std::string& name) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#if NV_TENSORRT_MAJOR < 11
    if (name == "EXPLICIT_BATCH") {
        return 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
    }
#endif
#if NV_TENSORRT_MAJOR >= 9
    if (name == "STRONGLY_TYPED") {
        return 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
    }
#endif
#pragma GCC diagnostic pop
    throw RuntimeError("build plan asks for network flag " + name + ", which TensorRT " +
                       std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) +
                       " does not have: make the bundle's plans for this TensorRT release");
}

// The plan's network_flags (every format-2 plan names them: the release rules are stated once,
// in pipeline/backends/tensorrt_plan.py); a format-1 plan without them gets what those rules
// give for the TensorRT compiled against.
uint32_t network_flags(const BuildPlan& plan) {
    if (plan.network_flags) {
        uint32_t bits = 0;
        for (const std::string& name : *plan.network_flags) bits |= network_flag_bit(name);
        return bits;
    }
#if NV_TENSORRT_MAJOR >= 11
    return 0;  // every network is strongly typed
#elif NV_TENSORRT_MAJOR >= 10
    return plan.strongly_typed ? network_flag_bit("STRONGLY_TYPED") : 0U;
#else
    return network_flag_bit("EXPLICIT_BATCH");
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
    if (!profile) throw RuntimeError("cannot create an optimisation profile: " + logger().last_error());
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


// The plan's timing cache, attached to `config`: the one saved in `path` when TensorRT
// accepts it, else a new one (which replaces the file after the build), else none. A timing
// cache only speeds builds up, so every problem here is a warning in `result`, never fatal.
std::unique_ptr<nvinfer1::ITimingCache> attach_timing_cache(nvinfer1::IBuilderConfig& config,
                                                            const fs::path& path,
                                                            BuildResult& result) {
    std::vector<char> blob;
    std::error_code ec;
    if (fs::exists(path, ec)) {
        try {
            blob = read_bytes(path, "timing cache");
        } catch (const RuntimeError& e) {
            result.warnings.push_back(std::string(e.what()) + "; starting a new timing cache");
        }
    }
    std::unique_ptr<nvinfer1::ITimingCache> cache;
    if (!blob.empty()) {
        logger().clear();
        cache.reset(config.createTimingCache(blob.data(), blob.size()));
        if (!cache) {
            result.warnings.push_back("timing cache " + path.string() + " cannot be read by this TensorRT (" +
                                      logger().last_error() + "); starting a new one");
        } else if (!config.setTimingCache(*cache, false)) {
            result.warnings.push_back("timing cache " + path.string() +
                                      " does not match this device or TensorRT (" +
                                      logger().last_error() + "); starting a new one");
            cache.reset();
        } else {
            return cache;
        }
    }
    logger().clear();
    cache.reset(config.createTimingCache(nullptr, 0));
    if (!cache) {
        result.warnings.push_back("cannot create a timing cache (" + logger().last_error() +
                                  "); building without one");
        return nullptr;
    }
    if (!config.setTimingCache(*cache, false)) {
        result.warnings.push_back("TensorRT refused a new timing cache (" + logger().last_error() +
                                  "); building without one");
        return nullptr;
    }
    return cache;
}

// Writes the timing cache the build used (and extended) back to `path`.
void save_timing_cache(const nvinfer1::IBuilderConfig& config, const fs::path& path,
                       BuildResult& result) {
    const nvinfer1::ITimingCache* used = config.getTimingCache();
    if (!used) {
        result.warnings.push_back("TensorRT returned no timing cache after the build; " +
                                  path.string() + " not updated");
        return;
    }
    std::unique_ptr<nvinfer1::IHostMemory> blob(used->serialize());
    if (!blob || blob->size() == 0) {
        result.warnings.push_back("cannot serialize the timing cache (" + logger().last_error() +
                                  "); " + path.string() + " not updated");
        return;
    }
    try {
        write_atomically(path, blob->data(), blob->size());
        result.timing_cache_written = true;
    } catch (const RuntimeError& e) {
        result.warnings.push_back(std::string(e.what()) + "; timing cache not updated");
    }
}

}  // namespace

BuildResult build_engine(const fs::path& bundle_dir, const BuildPlan& plan, const TensorInfo& input,
                         int crop, const fs::path& engine_path, const fs::path& cache_dir) {
    const fs::path onnx = resolve_bundle_path(bundle_dir, plan.onnx);
    logger().clear();
    std::unique_ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger()));
    if (!builder) throw RuntimeError("cannot create the TensorRT builder: " + logger().last_error());
    std::unique_ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(network_flags(plan)));
    if (!network) throw RuntimeError("cannot create a TensorRT network: " + logger().last_error());
    std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger()));
    if (!parser) throw RuntimeError("cannot create the TensorRT ONNX parser: " + logger().last_error());
    if (!parser->parseFromFile(onnx.c_str(),
                               static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
        std::string errors;
        for (int i = 0; i < parser->getNbErrors(); ++i) {
            errors += (errors.empty() ? "" : "; ") + std::string(parser->getError(i)->desc());
        }
        throw RuntimeError("cannot parse " + plan.onnx + ": " + (errors.empty() ? logger().last_error() : errors));
    }

    std::unique_ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    if (!config) throw RuntimeError("cannot create a TensorRT builder config: " + logger().last_error());
    if (plan.workspace_mib > 0) {
        config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE,
                                   static_cast<std::size_t>(plan.workspace_mib) << 20);
    }
    set_builder_flags(*config, plan);
    set_profile(*builder, *config, plan, input, crop);
    set_dla(*builder, *config, plan);

    BuildResult result;
    // Must outlive the build (TensorRT keeps a reference to it).
    std::unique_ptr<nvinfer1::ITimingCache> timing;
    fs::path timing_path;
    if (plan.timing_cache) {
        timing_path = cache_dir / fs::path(*plan.timing_cache).filename();
        timing = attach_timing_cache(*config, timing_path, result);
        result.timing_cache_used = timing != nullptr;
    }

    logger().clear();
    std::unique_ptr<nvinfer1::IHostMemory> serialized(builder->buildSerializedNetwork(*network, *config));
    if (!serialized || serialized->size() == 0) {
        throw RuntimeError("engine build failed for " + plan.onnx + ": " + logger().last_error());
    }
    write_atomically(engine_path, serialized->data(), serialized->size());
    if (timing) save_timing_cache(*config, timing_path, result);
    return result;
}

#else

BuildResult build_engine(const fs::path&, const BuildPlan&, const TensorInfo&, int, const fs::path&,
                         const fs::path&) {
    throw RuntimeError("engine build is not available: TensorRT's ONNX parser (nvonnxparser) "
                       "was not found at build time");
}

#endif

}  // namespace vtedge
