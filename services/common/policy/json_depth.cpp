#include "common/policy/json_depth.hpp"

namespace postern::policy {

bool JsonDepthScanner::feed(std::string_view chunk) {
  if (exceeded_) return false;
  for (const char c : chunk) {
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string_ = true;
        break;
      case '{':
      case '[':
        ++depth_;
        if (depth_ > max_seen_) max_seen_ = depth_;
        if (depth_ > max_depth_) {
          exceeded_ = true;
          return false;
        }
        break;
      case '}':
      case ']':
        if (depth_ > 0) --depth_;
        break;
      default:
        break;
    }
  }
  return true;
}

}  // namespace postern::policy
