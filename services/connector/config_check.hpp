#pragma once
// Every check the connector runs on its config before it starts;
// --check-config runs the same.

namespace postern::config {
class Checks;
namespace v1 {
class ConnectorConfig;
}
}  // namespace postern::config

namespace postern::connector {

void check_config(const config::v1::ConnectorConfig& cfg, config::Checks& c);

}  // namespace postern::connector
