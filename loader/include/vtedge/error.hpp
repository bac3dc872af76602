// Exception types thrown by the loader. Every message is one line that names the file,
// key or path at fault, so an application can print it as is.
#pragma once

#include <stdexcept>
#include <string>

namespace vtedge {

// Base of every error raised by the loader.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// manifest.json is unreadable, malformed or violates the bundle format.
class ManifestError : public Error {
public:
    using Error::Error;
};

// A bundle file is missing, altered, or lies outside the bundle folder.
class IntegrityError : public Error {
public:
    using Error::Error;
};

// An image cannot be decoded or preprocessed.
class ImageError : public Error {
public:
    using Error::Error;
};

// No engine in the bundle runs on this system (TensorRT release or GPU differ).
class CompatibilityError : public Error {
public:
    using Error::Error;
};

// The TensorRT engine runtime failed (deserialization, binding, CUDA).
class RuntimeError : public Error {
public:
    using Error::Error;
};

// Data given to an engine does not fit it: a batch outside the engine's optimisation
// profile, or an input buffer whose size differs from the engine's input binding.
class InputError : public Error {
public:
    using Error::Error;
};

}  // namespace vtedge
