// libFuzzer target: the config loader. The first byte picks the document
// (each service's config, or the policy file); the rest is its YAML text.
// A bad document must be a ConfigError naming what is wrong (or, for the
// policy file, compile issues), never a crash or another exception.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "common/config/yaml_proto.hpp"
#include "common/policy/catalog.hpp"
#include "edge/router.hpp"
#include "postern/config/v1/config.pb.h"

namespace {

namespace cv1 = postern::config::v1;
namespace policy = postern::policy;

void load(std::string_view text, std::string_view name, google::protobuf::Message& out) {
  postern::config::Positions positions;
  postern::config::load_yaml_string(text, name, out, &positions);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t which = data[0] % 5;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (which) {
      case 0: {
        cv1::EdgeConfig c;
        load(text, "edge.yaml", c);
        // The edge's own APIs are checked when its router is built.
        try {
          postern::edge::Router r(c.apis(), c.default_alias());
        } catch (const std::invalid_argument&) {
        }
        break;
      }
      case 1: {
        cv1::BrokerConfig c;
        load(text, "broker.yaml", c);
        break;
      }
      case 2: {
        cv1::ConnectorConfig c;
        load(text, "connector.yaml", c);
        break;
      }
      case 3: {
        cv1::PolicyServiceConfig c;
        load(text, "policy-service.yaml", c);
        break;
      }
      default: {
        policy::v1::Snapshot s;
        s.set_version(1);
        load(text, "policy.yaml", *s.mutable_config());
        std::vector<policy::Issue> issues;
        auto catalog = policy::Catalog::compile(std::move(s), issues);
        // Exactly one of: a catalog, or at least one issue.
        if (!catalog == issues.empty()) __builtin_trap();
        if (catalog) {
          for (const auto& api : catalog->apis()) (void)catalog->route(api.base_path + "/x?y=1");
        }
        break;
      }
    }
  } catch (const postern::config::ConfigError& e) {
    if (e.errors().empty()) __builtin_trap();  // an error names what is wrong
  }
  return 0;
}
