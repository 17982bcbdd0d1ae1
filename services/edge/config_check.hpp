#pragma once
// Every check the edge runs on its config before it starts; --check-config
// runs the same.

namespace postern::config {
class Checks;
namespace v1 {
class EdgeConfig;
}
}  // namespace postern::config

namespace postern::edge {

void check_config(const config::v1::EdgeConfig& cfg, config::Checks& c);

}  // namespace postern::edge
