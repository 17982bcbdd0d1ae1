#include "policy/policy_file.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/config/yaml_proto.hpp"
#include "common/policy/codec.hpp"

namespace postern::policy_service {

namespace pv1 = policy::v1;

std::string config_digest(const pv1::PolicyConfig& config) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream sos(&bytes);
    google::protobuf::io::CodedOutputStream cos(&sos);
    // Maps serialize in hash order otherwise: equal content, equal digest.
    cos.SetSerializationDeterministic(true);
    config.SerializeToCodedStream(&cos);
  }
  return policy::sha256_hex(bytes);
}

Loaded load_policy_file(const std::string& path, std::uint64_t version, const std::string& source) {
  Loaded out;
  pv1::Snapshot snap;
  config::Positions positions;
  try {
    config::load_yaml_file(path, *snap.mutable_config(), &positions);
  } catch (const config::ConfigError& e) {
    out.errors = e.errors();
    return out;
  }
  std::vector<policy::Issue> issues;
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string(".") : path.substr(0, slash);
  policy::resolve_files(*snap.mutable_config(), dir, issues);
  snap.set_version(version);
  snap.set_source(source);
  snap.set_digest(config_digest(snap.config()));
  auto catalog = policy::Catalog::compile(std::move(snap), issues);
  for (const auto& i : issues) out.errors.push_back(config::field_error(path, i.path, i.message, &positions));
  if (out.errors.empty()) out.catalog = std::move(catalog);
  return out;
}

}  // namespace postern::policy_service
