#pragma once
// Every check the broker runs on its config before it starts; --check-config
// runs the same.

#include <cstdint>

namespace postern::config {
class Checks;
namespace v1 {
class BrokerConfig;
}
}  // namespace postern::config

namespace postern::broker {

/// The smallest response_window a broker accepts: a piece must fit.
inline constexpr std::uint64_t kMinResponseWindow = 64 << 10;

void check_config(const config::v1::BrokerConfig& cfg, config::Checks& c);

}  // namespace postern::broker
