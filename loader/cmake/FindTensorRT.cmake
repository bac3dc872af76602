# FindTensorRT
# ------------
# Finds NVIDIA TensorRT: NvInfer.h and libnvinfer, and (component OnnxParser) NvOnnxParser.h
# and libnvonnxparser.
#
#   find_package(TensorRT [version] [REQUIRED] [COMPONENTS OnnxParser | OPTIONAL_COMPONENTS OnnxParser])
#
# Imported targets:
#   TensorRT::nvinfer       libnvinfer, with its include directory
#   TensorRT::nvonnxparser  libnvonnxparser (links TensorRT::nvinfer), when found
#
# Result variables:
#   TensorRT_FOUND, TensorRT_OnnxParser_FOUND
#   TensorRT_VERSION ("10.3.0", from NvInferVersion.h), TensorRT_VERSION_MAJOR / _MINOR / _PATCH
#   TensorRT_INCLUDE_DIRS, TensorRT_LIBRARIES
#
# Hints: TensorRT_ROOT or TENSORRT_ROOT (CMake or environment variable: a tarball install).
# JetPack's /usr/include/<arch>-linux-gnu and /usr/lib/<arch>-linux-gnu, and /usr/local/tensorrt,
# are searched too. Cache variables: TensorRT_INCLUDE_DIR, TensorRT_LIBRARY,
# TensorRT_ONNXPARSER_INCLUDE_DIR, TensorRT_ONNXPARSER_LIBRARY.
#
# Installed next to vtedgeConfig.cmake, so that a consumer of an installed loader finds
# TensorRT on its own machine (find_dependency) instead of the paths of the build machine.

set(_TensorRT_hints)
foreach(_root IN ITEMS "${TensorRT_ROOT}" "$ENV{TensorRT_ROOT}" "${TENSORRT_ROOT}" "$ENV{TENSORRT_ROOT}")
  if(_root)
    list(APPEND _TensorRT_hints "${_root}")
  endif()
endforeach()
list(APPEND _TensorRT_hints /usr/local/tensorrt)

find_path(TensorRT_INCLUDE_DIR NvInfer.h
  HINTS ${_TensorRT_hints}
  PATH_SUFFIXES include include/${CMAKE_LIBRARY_ARCHITECTURE}
  DOC "Folder of NvInfer.h")
find_library(TensorRT_LIBRARY NAMES nvinfer nvinfer_10 nvinfer_11
  HINTS ${_TensorRT_hints}
  PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE}
  DOC "libnvinfer")

if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
  file(STRINGS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _TensorRT_version_lines
    REGEX "^#define[ \t]+(NV_TENSORRT_(MAJOR|MINOR|PATCH)|TRT_(MAJOR|MINOR|PATCH)_ENTERPRISE)[ \t]+[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    # TensorRT 8 / 10: "#define NV_TENSORRT_MAJOR 10"; 11: "#define TRT_MAJOR_ENTERPRISE 11"
    # with NV_TENSORRT_MAJOR defined as that macro.
    set(TensorRT_VERSION_${_part} "")
    foreach(_line IN LISTS _TensorRT_version_lines)
      if(_line MATCHES "^#define[ \t]+(NV_TENSORRT_${_part}|TRT_${_part}_ENTERPRISE)[ \t]+([0-9]+)")
        set(TensorRT_VERSION_${_part} "${CMAKE_MATCH_2}")
      endif()
    endforeach()
  endforeach()
  if(NOT TensorRT_VERSION_MAJOR STREQUAL "" AND NOT TensorRT_VERSION_MINOR STREQUAL ""
     AND NOT TensorRT_VERSION_PATCH STREQUAL "")
    set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}.${TensorRT_VERSION_PATCH}")
  endif()
  unset(_TensorRT_version_lines)
endif()

# The ONNX parser ships with TensorRT; its header sits next to NvInfer.h.
find_path(TensorRT_ONNXPARSER_INCLUDE_DIR NvOnnxParser.h
  HINTS ${TensorRT_INCLUDE_DIR} ${_TensorRT_hints}
  PATH_SUFFIXES include include/${CMAKE_LIBRARY_ARCHITECTURE}
  DOC "Folder of NvOnnxParser.h")
find_library(TensorRT_ONNXPARSER_LIBRARY NAMES nvonnxparser nvonnxparser_10 nvonnxparser_11
  HINTS ${_TensorRT_hints}
  PATH_SUFFIXES lib lib64 lib/${CMAKE_LIBRARY_ARCHITECTURE}
  DOC "libnvonnxparser")
if(TensorRT_INCLUDE_DIR AND TensorRT_LIBRARY AND TensorRT_ONNXPARSER_INCLUDE_DIR
   AND TensorRT_ONNXPARSER_LIBRARY)
  set(TensorRT_OnnxParser_FOUND TRUE)
else()
  set(TensorRT_OnnxParser_FOUND FALSE)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
  REQUIRED_VARS TensorRT_LIBRARY TensorRT_INCLUDE_DIR
  VERSION_VAR TensorRT_VERSION
  HANDLE_COMPONENTS)

if(TensorRT_FOUND)
  set(TensorRT_INCLUDE_DIRS "${TensorRT_INCLUDE_DIR}")
  set(TensorRT_LIBRARIES TensorRT::nvinfer)
  if(NOT TARGET TensorRT::nvinfer)
    add_library(TensorRT::nvinfer UNKNOWN IMPORTED)
    set_target_properties(TensorRT::nvinfer PROPERTIES
      IMPORTED_LOCATION "${TensorRT_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
  endif()
  if(TensorRT_OnnxParser_FOUND)
    list(APPEND TensorRT_LIBRARIES TensorRT::nvonnxparser)
    if(NOT TARGET TensorRT::nvonnxparser)
      add_library(TensorRT::nvonnxparser UNKNOWN IMPORTED)
      set_target_properties(TensorRT::nvonnxparser PROPERTIES
        IMPORTED_LOCATION "${TensorRT_ONNXPARSER_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_ONNXPARSER_INCLUDE_DIR}"
        INTERFACE_LINK_LIBRARIES TensorRT::nvinfer)
    endif()
  endif()
endif()

mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_LIBRARY TensorRT_ONNXPARSER_INCLUDE_DIR
  TensorRT_ONNXPARSER_LIBRARY)
unset(_TensorRT_hints)
