# cmake/FindTensorRT.cmake against fake TensorRT installs (headers with the version macros of
# TensorRT 8.6 / 10.3 and 11.x, empty library files): version, imported targets, the
# OnnxParser component. Needs no TensorRT.
#   cmake -DSOURCE_DIR=<loader> -DWORK_DIR=<scratch> -P find_tensorrt_test.cmake
cmake_minimum_required(VERSION 3.18)
foreach(var SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "find_tensorrt_test.cmake: -D${var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")

# A fake install: include/NvInfer.h, include/NvInferVersion.h with `version_text`, lib/libnvinfer.so,
# and with `parser` the ONNX parser's header and library.
function(fake_install dir version_text parser)
  file(WRITE "${dir}/include/NvInfer.h" "// fake\n")
  file(WRITE "${dir}/include/NvInferVersion.h" "${version_text}")
  file(WRITE "${dir}/lib/libnvinfer.so" "")
  if(parser)
    file(WRITE "${dir}/include/NvOnnxParser.h" "// fake\n")
    file(WRITE "${dir}/lib/libnvonnxparser.so" "")
  endif()
endfunction()

fake_install("${WORK_DIR}/trt86" [=[
#define NV_TENSORRT_MAJOR 8 //!< TensorRT major version.
#define NV_TENSORRT_MINOR 6 //!< TensorRT minor version.
#define NV_TENSORRT_PATCH 1 //!< TensorRT patch version.
#define NV_TENSORRT_BUILD 6 //!< TensorRT build number.
#define NV_TENSORRT_SONAME_MAJOR 8 //!< Shared object library major version number.
]=] OFF)
fake_install("${WORK_DIR}/trt103" [=[
#define NV_TENSORRT_MAJOR 10 //!< TensorRT major version.
#define NV_TENSORRT_MINOR 3 //!< TensorRT minor version.
#define NV_TENSORRT_PATCH 0 //!< TensorRT patch version.
#define NV_TENSORRT_BUILD 26 //!< TensorRT build number.
#define NV_TENSORRT_LWS_MAJOR 0 //!< TensorRT LWS major version.
]=] ON)
fake_install("${WORK_DIR}/trt11" [=[
#define TRT_MAJOR_ENTERPRISE 11
#define TRT_MINOR_ENTERPRISE 1
#define TRT_PATCH_ENTERPRISE 0
#define TRT_BUILD_ENTERPRISE 106
#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE //!< TensorRT major version.
#define NV_TENSORRT_MINOR TRT_MINOR_ENTERPRISE //!< TensorRT minor version.
#define NV_TENSORRT_PATCH TRT_PATCH_ENTERPRISE //!< TensorRT patch version.
#define NV_TENSORRT_LWS_MAJOR 0 //!< TensorRT LWS major version.
]=] ON)

set(failures 0)
foreach(case "trt86;8.6.1;OFF;OFF" "trt103;10.3.0;ON;OFF" "trt11;11.1.0;ON;OFF" "trt86;;OFF;ON")
  list(GET case 0 root)
  list(GET case 1 version)
  list(GET case 2 parser)
  list(GET case 3 require_parser)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/find_tensorrt" -B "${WORK_DIR}/build-${root}-${require_parser}"
            "-DTensorRT_ROOT=${WORK_DIR}/${root}" "-DEXPECT_VERSION=${version}"
            "-DEXPECT_PARSER=${parser}" "-DREQUIRE_PARSER=${require_parser}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REGEX MATCH "find_tensorrt: [^\n]*" line "${out}")
  if(rc EQUAL 0)
    message(STATUS "${root}: ${line}")
  else()
    message(STATUS "${root}: FAILED\n${out}\n${err}")
    math(EXPR failures "${failures} + 1")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} FindTensorRT case(s) failed")
endif()
