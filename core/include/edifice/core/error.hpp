#pragma once
/// \file
/// The one exception type the library throws for user errors (bad shapes, bad options, corrupt
/// files). Messages say what is wrong and where; graph-building errors end with the line
/// "  the op was defined at FILE:LINE" (or "the layer was defined at" inside a named layer).

#include <fmt/format.h>

#include <source_location>
#include <stdexcept>
#include <string>

namespace edifice {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// Throws edifice::Error with a fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

/// "file:line" for a source location, as printed in error messages and graph dumps.
inline std::string format_location(const std::source_location& loc) {
  return fmt::format("{}:{}", loc.file_name(), loc.line());
}

}  // namespace edifice
