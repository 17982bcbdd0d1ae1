#pragma once
// The project's version (CMakeLists.txt project()), for --version, the
// connector's Hello and postern_build_info.

#include <string_view>

namespace postern {

std::string_view version();

}  // namespace postern
