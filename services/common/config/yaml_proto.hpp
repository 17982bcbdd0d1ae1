#pragma once
// YAML -> protobuf config loading.
//
// A YAML file maps onto a protobuf message one to one, driven by the
// message's descriptor (no per-message code):
//
//   id: edge-1                        # string
//   max_header_bytes: 65536           # uint32: range and sign checked
//   upstream_timeout: 30s             # google.protobuf.Duration: 250ms, 30s, 5m, 1h, 1.5s, 1h30m, 90
//   broker: {address: broker:7443}    # nested message: a YAML map
//   apis:                             # repeated: a YAML sequence
//     - name: orders
//   aliases:                          # map<string, X>: a YAML map
//     billing: {url: http://billing:8080}
//
// Keys are the proto field names exactly. Enums take the value name without
// the enum-type prefix (info, GREEN, API_KEY: the short form, which errors and
// listings print), or the full name (LOG_LEVEL_INFO), in any case. The
// ..._UNSPECIFIED zero values are the defaults and never offered. Integers are decimal, range- and sign-checked;
// booleans are YAML's (true/false, yes/no, on/off). A null value (`key:`,
// `key: ~`) leaves the field at its default; a null list element or map value
// is an error. Unknown and duplicate keys, two members of one oneof, and a
// second YAML document are errors. Every error in the document is collected
// and reported together.
//
// All functions are thread-safe (no shared state).

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/message.h>

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace postern::config {

/// Thrown when a config file cannot be loaded. what() holds every error, one
/// per line, each "FILE:LINE:COL: FIELD.PATH: message" (LINE and COL 1-based).
/// FIELD.PATH looks like `apis[1].timeout` or `aliases[billing].url`; it is
/// left out (with its ": ") for errors about the document as a whole, and
/// LINE:COL is left out where no position is known (e.g. an unreadable file).
class ConfigError : public std::runtime_error {
 public:
  /// `fields`: each error's field path ("" for the document as a whole);
  /// `parsed`: the YAML parsed (the errors are about fields and values),
  /// so the partial result can still be checked further.
  explicit ConfigError(std::vector<std::string> errors, std::vector<std::string> fields = {}, bool parsed = false);

  /// The individual errors, in document order.
  const std::vector<std::string>& errors() const { return errors_; }
  const std::vector<std::string>& fields() const { return fields_; }
  bool parsed() const { return parsed_; }

 private:
  std::vector<std::string> errors_;
  std::vector<std::string> fields_;
  bool parsed_ = false;
};

/// Where each field path (as in errors: `apis[1].routing`) was written in
/// the file: 1-based line and column. Lets checks that run after loading name
/// the line too.
using Positions = std::map<std::string, std::pair<int, int>>;

/// Parses YAML `text` onto `out`, which is cleared first. `name` is used as
/// FILE in errors. Throws ConfigError listing every error found; `out` then
/// holds a partial result (the fields that loaded) and should be used only
/// to look for more problems. Syntax errors are in plain words ("YAML
/// syntax: a list opened with '[' is not closed with ']'"). Fills
/// `positions` if given.
void load_yaml_string(std::string_view text, std::string_view name, google::protobuf::Message& out,
                      Positions* positions = nullptr);

/// Reads `path` and parses it as load_yaml_string does. A missing, unreadable
/// or oversized (> 16 MiB) file is a ConfigError "PATH: cannot read: <errno text>".
void load_yaml_file(const std::string& path, google::protobuf::Message& out, Positions* positions = nullptr);

/// `d` as milliseconds (truncated), or `dflt` when `d` is zero (unset).
std::chrono::milliseconds duration_or(const google::protobuf::Duration& d, std::chrono::milliseconds dflt);

/// One error in the loader's style, for validation code that runs after
/// loading: "FILE[:LINE:COL]: FIELD.PATH: message" (or "FILE: message" when
/// `field_path` is empty). LINE:COL is the field's (or its nearest named
/// parent's) position when `positions` knows it.
std::string field_error(std::string_view file, std::string_view field_path, std::string_view message,
                        const Positions* positions = nullptr);

/// The short name of an enum value, as users write it: ENFORCEMENT_GREEN ->
/// GREEN, IDENTIFIER_TYPE_API_KEY -> API_KEY.
std::string enum_short_name(const google::protobuf::EnumValueDescriptor* value);

/// `message` as JSON the way a user writes the config: proto field names,
/// short enum names, and no empty objects for unset blocks.
std::string to_json(const google::protobuf::Message& message);

}  // namespace postern::config
