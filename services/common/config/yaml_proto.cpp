#include "common/config/yaml_proto.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <boost/json.hpp>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

namespace postern::config {
namespace {

namespace pb = google::protobuf;
using pb::FieldDescriptor;

// Config files are small; anything near this is a mistake (or an attack on a
// process that reloads config), not a config.
constexpr std::size_t kMaxFileBytes = 16 * 1024 * 1024;
constexpr std::size_t kMaxQuotedChars = 64;
constexpr std::string_view kDurationType = "google.protobuf.Duration";
constexpr std::string_view kDurationExpected = "a duration like 250ms, 30s or 5m";
constexpr std::int64_t kNanosPerSecond = 1'000'000'000;

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) {
    if (!out.empty()) out += '\n';
    out += line;
  }
  return out;
}

std::string quoted(std::string_view text) {
  std::string out = "'";
  if (text.size() > kMaxQuotedChars) {
    out.append(text.substr(0, kMaxQuotedChars));
    out += "...";
  } else {
    out.append(text);
  }
  out += '\'';
  return out;
}

/// What a YAML node is, for "got ..." in messages.
std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return quoted(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string join_path(const std::string& path, std::string_view name) {
  if (path.empty()) return std::string(name);
  std::string out = path;
  out += '.';
  out.append(name);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

/// "LogLevel" -> "LOG_LEVEL_", "HTTPMethod" -> "HTTP_METHOD_": the prefix
/// protobuf style puts on enum value names.
std::string enum_value_prefix(std::string_view type_name) {
  std::string out;
  for (std::size_t i = 0; i < type_name.size(); ++i) {
    const auto c = static_cast<unsigned char>(type_name[i]);
    if (std::isupper(c) && i > 0) {
      const auto prev = static_cast<unsigned char>(type_name[i - 1]);
      const bool next_lower = i + 1 < type_name.size() && std::islower(static_cast<unsigned char>(type_name[i + 1]));
      if (std::islower(prev) || std::isdigit(prev) || (std::isupper(prev) && next_lower)) out += '_';
    }
    out += static_cast<char>(std::toupper(c));
  }
  out += '_';
  return out;
}

template <class T>
bool parse_integer(std::string_view text, T& out, std::string& why) {
  std::string_view digits = text;
  if (!digits.empty() && digits.front() == '+') {
    digits.remove_prefix(1);
    if (!digits.empty() && (digits.front() == '-' || digits.front() == '+')) digits = {};
  }
  const char* what = std::is_unsigned_v<T> ? "an unsigned integer" : "an integer";
  if (std::is_unsigned_v<T> && !digits.empty() && digits.front() == '-') {
    why = std::string("expected ") + what + ", got " + quoted(text);
    return false;
  }
  T value{};
  const char* end = digits.data() + digits.size();
  const auto [ptr, ec] = std::from_chars(digits.data(), end, value);
  if (!digits.empty() && ptr == end && ec == std::errc::result_out_of_range) {
    why = std::string("expected ") + what + " in " + std::to_string(std::numeric_limits<T>::min()) + ".." +
          std::to_string(std::numeric_limits<T>::max()) + ", got " + quoted(text);
    return false;
  }
  if (digits.empty() || ec != std::errc{} || ptr != end) {
    why = std::string("expected ") + what + ", got " + quoted(text);
    return false;
  }
  out = value;
  return true;
}

bool parse_double(std::string_view text, double& out, std::string& why) {
  std::string_view body = text;
  bool negative = false;
  if (!body.empty() && (body.front() == '+' || body.front() == '-')) {
    negative = body.front() == '-';
    body.remove_prefix(1);
  }
  // YAML spells the special values .inf, -.inf and .nan (in three cases each).
  if (body == ".inf" || body == ".Inf" || body == ".INF") {
    out = negative ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    return true;
  }
  if (text == ".nan" || text == ".NaN" || text == ".NAN") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  double value = 0;
  const char* end = body.data() + body.size();
  const auto [ptr, ec] = std::from_chars(body.data(), end, value, std::chars_format::general);
  const bool signed_twice = !body.empty() && (body.front() == '+' || body.front() == '-');
  if (!body.empty() && !signed_twice && ptr == end && ec == std::errc::result_out_of_range) {
    why = "expected a number within the range of a double, got " + quoted(text);
    return false;
  }
  if (body.empty() || signed_twice || ec != std::errc{} || ptr != end) {
    why = "expected a number, got " + quoted(text);
    return false;
  }
  out = negative ? -value : value;
  return true;
}

/// Parses "250ms", "30s", "5m", "1h", "1.5s", "1h30m" (units ns, us, ms, s,
/// m, h, each term optionally fractional) or a plain number of seconds.
/// Returns an empty string on success, or the error message.
std::string parse_duration(std::string_view text, std::int64_t& out_ns) {
  const std::string bad = std::string("expected ") + std::string(kDurationExpected) + ", got " + quoted(text);
  const std::string too_large = "duration " + quoted(text) + " is too large";
  if (text.empty()) return bad;

  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  auto is_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };

  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t term_start = i;
    // number: digits [. digits] | . digits
    std::int64_t whole = 0;
    std::size_t whole_digits = 0;
    bool overflow = false;
    while (i < text.size() && is_digit(text[i])) {
      if (__builtin_mul_overflow(whole, 10, &whole) || __builtin_add_overflow(whole, text[i] - '0', &whole)) {
        overflow = true;
      }
      ++whole_digits;
      ++i;
    }
    std::string_view fraction;
    if (i < text.size() && text[i] == '.') {
      const std::size_t start = ++i;
      while (i < text.size() && is_digit(text[i])) ++i;
      fraction = text.substr(start, i - start);
    }
    if (whole_digits == 0 && fraction.empty()) return bad;

    const std::size_t unit_start = i;
    while (i < text.size() && is_alpha(text[i])) ++i;
    const std::string_view unit = text.substr(unit_start, i - unit_start);
    std::int64_t unit_ns = 0;
    if (unit.empty()) {
      // A bare number is seconds, and only on its own ("1h30" is a typo).
      if (term_start != 0 || unit_start != text.size()) return bad;
      unit_ns = kNanosPerSecond;
    } else if (unit == "ns") {
      unit_ns = 1;
    } else if (unit == "us") {
      unit_ns = 1'000;
    } else if (unit == "ms") {
      unit_ns = 1'000'000;
    } else if (unit == "s") {
      unit_ns = kNanosPerSecond;
    } else if (unit == "m") {
      unit_ns = 60 * kNanosPerSecond;
    } else if (unit == "h") {
      unit_ns = 3600 * kNanosPerSecond;
    } else {
      return bad;
    }
    if (overflow) return too_large;

    std::int64_t term = 0;
    if (__builtin_mul_overflow(whole, unit_ns, &term)) return too_large;
    // Each fractional digit adds digit * unit / 10^k; digits past 18 are far
    // below a nanosecond for every unit.
    std::int64_t scale = 1;
    for (std::size_t k = 0; k < fraction.size() && k < 18; ++k) {
      scale *= 10;
      if (__builtin_add_overflow(term, (fraction[k] - '0') * unit_ns / scale, &term)) return too_large;
    }
    if (__builtin_add_overflow(total, term, &total)) return too_large;
  }
  out_ns = total;
  return {};
}

void set_duration(pb::Message& msg, std::int64_t ns) {
  // Through reflection, so it also works for a Duration from a dynamic pool.
  const pb::Descriptor* desc = msg.GetDescriptor();
  const pb::Reflection* refl = msg.GetReflection();
  refl->SetInt64(&msg, desc->FindFieldByName("seconds"), ns / kNanosPerSecond);
  refl->SetInt32(&msg, desc->FindFieldByName("nanos"), static_cast<std::int32_t>(ns % kNanosPerSecond));
}

bool is_duration(const FieldDescriptor* field) {
  return field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && field->message_type()->full_name() == kDurationType;
}

/// What a field wants, for "expected ..." in messages.
std::string expected(const FieldDescriptor* field) {
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "a boolean (true or false)";
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
      return "an integer";
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
      return "an unsigned integer";
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
      return "a number";
    case FieldDescriptor::CPPTYPE_ENUM:
      return "a value of enum " + field->enum_type()->name();
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return is_duration(field) ? std::string(kDurationExpected) : "a map";
  }
  return "a value";
}

/// The zero value protobuf style names ..._UNSPECIFIED: the field's
/// default, never a choice to offer.
bool is_unspecified(const pb::EnumValueDescriptor* v) {
  const std::string_view name = v->name();
  return v->number() == 0 && name.ends_with("UNSPECIFIED");
}

const pb::EnumValueDescriptor* find_enum_value(const pb::EnumDescriptor* type, std::string_view text) {
  for (int i = 0; i < type->value_count(); ++i) {
    if (type->value(i)->name() == text) return type->value(i);
  }
  for (int i = 0; i < type->value_count(); ++i) {
    if (iequals(type->value(i)->name(), text)) return type->value(i);
  }
  const std::string prefix = enum_value_prefix(type->name());
  for (int i = 0; i < type->value_count(); ++i) {
    std::string_view name = type->value(i)->name();
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix &&
        iequals(name.substr(prefix.size()), text)) {
      return type->value(i);
    }
  }
  return nullptr;
}

/// Walks one YAML document against a message descriptor, collecting errors.
class Loader {
 public:
  Loader(std::string_view file, Positions* positions) : file_(file), positions_(positions) {}

  void load_document(const YAML::Node& root, pb::Message& out) {
    if (root.IsNull()) return;  // empty document: all defaults
    if (!root.IsMap()) {
      error(root.Mark(), "", "expected a map of field names at the top level, got " + describe(root));
      return;
    }
    load_message(root, out, "");
  }

  void error(const YAML::Mark& mark, std::string_view path, std::string_view message) {
    std::string line(file_);
    if (!mark.is_null()) {
      line += ':' + std::to_string(mark.line + 1) + ':' + std::to_string(mark.column + 1);
    }
    line += ": ";
    if (!path.empty()) {
      line.append(path);
      line += ": ";
    }
    line.append(message);
    errors_.push_back(std::move(line));
    fields_.emplace_back(path);
  }

  std::vector<std::string>& errors() { return errors_; }
  std::vector<std::string>& fields() { return fields_; }

 private:
  void load_message(const YAML::Node& node, pb::Message& msg, const std::string& path) {
    const pb::Descriptor* desc = msg.GetDescriptor();
    std::set<const FieldDescriptor*> seen;
    std::map<const pb::OneofDescriptor*, const FieldDescriptor*> oneofs_set;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;  // a copy: `it->` yields a temporary
      const YAML::Node value = it->second;
      if (!key.IsScalar()) {
        error(key.Mark(), path, "expected a field name, got " + describe(key));
        continue;
      }
      const std::string& name = key.Scalar();
      const std::string field_path = join_path(path, name);
      const FieldDescriptor* field = desc->FindFieldByName(name);
      if (field == nullptr) {
        error(key.Mark(), field_path, "unknown field " + quoted(name) + " (known: " + known_fields(desc) + ")");
        continue;
      }
      if (!seen.insert(field).second) {
        error(key.Mark(), field_path, "duplicate field " + quoted(name));
        continue;
      }
      note(key.Mark(), field_path);
      if (value.IsNull()) continue;  // null leaves the default
      if (const pb::OneofDescriptor* oneof = field->real_containing_oneof()) {
        auto [pos, inserted] = oneofs_set.emplace(oneof, field);
        if (!inserted) {
          error(key.Mark(), field_path,
                "field " + quoted(name) + " conflicts with " + quoted(pos->second->name()) + " (only one of oneof " +
                    quoted(oneof->name()) + " may be set)");
          continue;
        }
      }
      load_field(value, msg, field, field_path);
    }
  }

  static std::string known_fields(const pb::Descriptor* desc) {
    std::string out;
    for (int i = 0; i < desc->field_count(); ++i) {
      if (i > 0) out += ", ";
      out += desc->field(i)->name();
    }
    return out.empty() ? "none" : out;
  }

  void load_field(const YAML::Node& value, pb::Message& msg, const FieldDescriptor* field, const std::string& path) {
    if (field->is_map()) {
      load_map(value, msg, field, path);
    } else if (field->is_repeated()) {
      if (!value.IsSequence()) {
        error(value.Mark(), path, "expected a sequence, got " + describe(value));
        return;
      }
      for (std::size_t i = 0; i < value.size(); ++i) {
        const YAML::Node element = value[i];
        const std::string element_path = path + '[' + std::to_string(i) + ']';
        note(element.Mark(), element_path);
        if (element.IsNull()) {
          error(element.Mark(), element_path, "expected " + expected(field) + ", got null");
          continue;
        }
        load_value(element, msg, field, element_path);
      }
    } else {
      load_value(value, msg, field, path);
    }
  }

  void load_map(const YAML::Node& value, pb::Message& msg, const FieldDescriptor* field, const std::string& path) {
    if (!value.IsMap()) {
      error(value.Mark(), path, "expected a map, got " + describe(value));
      return;
    }
    const pb::Reflection* refl = msg.GetReflection();
    const FieldDescriptor* key_field = field->message_type()->map_key();
    const FieldDescriptor* value_field = field->message_type()->map_value();
    std::set<std::string> keys;
    for (auto it = value.begin(); it != value.end(); ++it) {
      const YAML::Node key = it->first;  // a copy: `it->` yields a temporary
      const YAML::Node item = it->second;
      if (!key.IsScalar()) {
        error(key.Mark(), path, "expected a map key, got " + describe(key));
        continue;
      }
      const std::string item_path = path + '[' + key.Scalar() + ']';
      note(key.Mark(), item_path);
      if (!keys.insert(key.Scalar()).second) {
        error(key.Mark(), item_path, "duplicate key " + quoted(key.Scalar()));
        continue;
      }
      if (item.IsNull()) {
        error(item.Mark(), item_path, "expected " + expected(value_field) + ", got null");
        continue;
      }
      pb::Message* entry = refl->AddMessage(&msg, field);
      if (!load_value(key, *entry, key_field, item_path) || !load_value(item, *entry, value_field, item_path)) {
        refl->RemoveLast(&msg, field);
      }
    }
  }

  /// Sets a singular field, or appends to a repeated one. Returns false if
  /// nothing was stored (the error is recorded).
  bool load_value(const YAML::Node& node, pb::Message& msg, const FieldDescriptor* field, const std::string& path) {
    const pb::Reflection* refl = msg.GetReflection();
    const bool repeated = field->is_repeated();

    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (is_duration(field)) {
        if (!node.IsScalar()) return fail(node, path, "expected " + expected(field) + ", got " + describe(node));
        std::int64_t ns = 0;
        if (std::string why = parse_duration(node.Scalar(), ns); !why.empty()) return fail(node, path, why);
        set_duration(repeated ? *refl->AddMessage(&msg, field) : *refl->MutableMessage(&msg, field), ns);
        return true;
      }
      if (!node.IsMap()) return fail(node, path, "expected a map, got " + describe(node));
      load_message(node, repeated ? *refl->AddMessage(&msg, field) : *refl->MutableMessage(&msg, field), path);
      return true;
    }

    if (!node.IsScalar()) return fail(node, path, "expected " + expected(field) + ", got " + describe(node));
    const std::string& text = node.Scalar();
    std::string why;
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        repeated ? refl->AddString(&msg, field, text) : refl->SetString(&msg, field, text);
        return true;
      case FieldDescriptor::CPPTYPE_BOOL: {
        bool v = false;
        if (!YAML::convert<bool>::decode(node, v)) {
          return fail(node, path, "expected " + expected(field) + ", got " + quoted(text));
        }
        repeated ? refl->AddBool(&msg, field, v) : refl->SetBool(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_INT32: {
        std::int32_t v = 0;
        if (!parse_integer(text, v, why)) return fail(node, path, why);
        repeated ? refl->AddInt32(&msg, field, v) : refl->SetInt32(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_INT64: {
        std::int64_t v = 0;
        if (!parse_integer(text, v, why)) return fail(node, path, why);
        repeated ? refl->AddInt64(&msg, field, v) : refl->SetInt64(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_UINT32: {
        std::uint32_t v = 0;
        if (!parse_integer(text, v, why)) return fail(node, path, why);
        repeated ? refl->AddUInt32(&msg, field, v) : refl->SetUInt32(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_UINT64: {
        std::uint64_t v = 0;
        if (!parse_integer(text, v, why)) return fail(node, path, why);
        repeated ? refl->AddUInt64(&msg, field, v) : refl->SetUInt64(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_DOUBLE: {
        double v = 0;
        if (!parse_double(text, v, why)) return fail(node, path, why);
        repeated ? refl->AddDouble(&msg, field, v) : refl->SetDouble(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_FLOAT: {
        double v = 0;
        if (!parse_double(text, v, why)) return fail(node, path, why);
        if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max()) {
          return fail(node, path, "expected a number within the range of a float, got " + quoted(text));
        }
        const auto f = static_cast<float>(v);
        repeated ? refl->AddFloat(&msg, field, f) : refl->SetFloat(&msg, field, f);
        return true;
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        const pb::EnumValueDescriptor* v = find_enum_value(field->enum_type(), text);
        if (v == nullptr) {
          std::string known;
          for (int i = 0; i < field->enum_type()->value_count(); ++i) {
            const auto* value = field->enum_type()->value(i);
            if (is_unspecified(value)) continue;
            if (!known.empty()) known += ", ";
            known += enum_short_name(value);
          }
          return fail(node, path,
                      "unknown value " + quoted(text) + " for enum " + field->enum_type()->name() + " (known: " +
                          known + ")");
        }
        repeated ? refl->AddEnum(&msg, field, v) : refl->SetEnum(&msg, field, v);
        return true;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;  // handled above
    }
    return fail(node, path, "unsupported field type");
  }

  bool fail(const YAML::Node& node, const std::string& path, const std::string& message) {
    error(node.Mark(), path, message);
    return false;
  }

  void note(const YAML::Mark& mark, const std::string& path) {
    if (positions_ && !mark.is_null()) (*positions_)[path] = {mark.line + 1, mark.column + 1};
  }

  std::string_view file_;
  Positions* positions_;
  std::vector<std::string> errors_;
  std::vector<std::string> fields_;  // the path of each error ("" for the document)
};

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

// Counts the documents of a YAML stream and where the second one starts.
struct DocumentCounter final : YAML::EventHandler {
  int count = 0;
  YAML::Mark second;
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++count == 2) second = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

}  // namespace

ConfigError::ConfigError(std::vector<std::string> errors, std::vector<std::string> fields, bool parsed)
    : std::runtime_error(join_lines(errors)), errors_(std::move(errors)), fields_(std::move(fields)), parsed_(parsed) {}

namespace {

// yaml-cpp's syntax errors in plain words (what to look at), its own text
// where there is no better one.
std::string plain_yaml_error(const std::string& msg) {
  static const std::pair<const char*, const char*> kPlain[] = {
      {"illegal block entry", "a list item ('- ') where none can start: check this line's indentation against the lines above"},
      {"illegal map value", "a 'key: value' where none can be: a second ': ' on one line (quote the value), or wrong indentation"},
      {"illegal map key", "a key where none can be: check the indentation"},
      {"end of sequence flow not found", "a list opened with '[' is not closed with ']'"},
      {"end of map flow not found", "a map opened with '{' is not closed with '}'"},
      {"end of sequence not found", "a list is not closed: check the indentation of its items"},
      {"end of map not found", "a map is not closed: check the indentation of its keys"},
      {"illegal flow end", "a ']' or '}' that closes nothing"},
      {"illegal EOF in scalar", "the file ends inside a quoted string: a closing quote is missing"},
      {"unknown token", "a character YAML does not expect here (a tab in the indentation, or an unquoted '@' or '`')"},
      {"illegal character in scalar", "a character YAML does not allow here: quote the value"},
  };
  for (const auto& [from, to] : kPlain) {
    if (msg == from) return std::string("YAML syntax: ") + to;
  }
  if (msg.find("tab") != std::string::npos) return "YAML syntax: a tab in the indentation (YAML indents with spaces)";
  return "YAML syntax: " + msg;
}

}  // namespace

void load_yaml_string(std::string_view text, std::string_view name, google::protobuf::Message& out,
                      Positions* positions) {
  out.Clear();
  if (positions) positions->clear();
  Loader loader(name, positions);
  try {
    // Documents are counted by the event parser, at most two: yaml-cpp
    // 0.7's LoadAll never returns on some broken input (",*" yields
    // documents without end; the fuzzer found it).
    std::istringstream in{std::string(text)};
    YAML::Parser parser(in);
    DocumentCounter counter;
    while (counter.count < 2 && parser.HandleNextDocument(counter)) {
    }
    if (counter.count > 1) loader.error(counter.second, "", "expected one YAML document, found more than one");
    if (counter.count > 0) loader.load_document(YAML::Load(std::string(text)), out);
  } catch (const YAML::Exception& e) {
    // Syntax errors (and yaml-cpp's nesting-depth guard) stop the parse.
    loader.error(e.mark, "", plain_yaml_error(e.msg));
    throw ConfigError(std::move(loader.errors()), std::move(loader.fields()), /*parsed=*/false);
  }
  if (!loader.errors().empty()) throw ConfigError(std::move(loader.errors()), std::move(loader.fields()), true);
}

void load_yaml_file(const std::string& path, google::protobuf::Message& out, Positions* positions) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw ConfigError({path + ": cannot read: " + errno_text(errno)});
  std::string text;
  char buffer[16 * 1024];
  for (;;) {
    const std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get());
    text.append(buffer, n);
    if (text.size() > kMaxFileBytes) {
      throw ConfigError({path + ": cannot read: file is larger than " + std::to_string(kMaxFileBytes >> 20) + " MiB"});
    }
    if (n < sizeof buffer) {
      if (std::ferror(file.get())) throw ConfigError({path + ": cannot read: " + errno_text(errno)});
      break;
    }
  }
  load_yaml_string(text, path, out, positions);
}

std::chrono::milliseconds duration_or(const google::protobuf::Duration& d, std::chrono::milliseconds dflt) {
  if (d.seconds() == 0 && d.nanos() == 0) return dflt;
  // Not via nanoseconds: a Duration's range (10,000 years) overflows int64 ns.
  return std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1'000'000);
}

std::string field_error(std::string_view file, std::string_view field_path, std::string_view message,
                        const Positions* positions) {
  std::string out(file);
  if (positions) {
    // The field itself, or the nearest enclosing one the file named.
    std::string path(field_path);
    for (;;) {
      if (auto it = positions->find(path); it != positions->end()) {
        out += ':' + std::to_string(it->second.first) + ':' + std::to_string(it->second.second);
        break;
      }
      const auto cut = path.find_last_of(".[");
      if (cut == std::string::npos || cut == 0) break;
      path.resize(cut);
    }
  }
  out += ": ";
  if (!field_path.empty()) {
    out.append(field_path);
    out += ": ";
  }
  out.append(message);
  return out;
}

std::string enum_short_name(const google::protobuf::EnumValueDescriptor* value) {
  const std::string prefix = enum_value_prefix(value->type()->name());
  const std::string& name = value->name();
  if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0) return name.substr(prefix.size());
  return name;
}

namespace {

// Every enum value reachable from `d`, full name -> short name.
void collect_enum_names(const pb::Descriptor* d, std::map<std::string, std::string>& names,
                        std::set<const pb::Descriptor*>& seen) {
  if (!seen.insert(d).second) return;
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (const auto* e = f->enum_type()) {
      for (int k = 0; k < e->value_count(); ++k) names[e->value(k)->name()] = enum_short_name(e->value(k));
    }
    if (const auto* m = f->message_type()) collect_enum_names(m, names, seen);
  }
}

// Short enum names; empty objects (an unset block printed as {}) left out.
void tidy(boost::json::value& v, const std::map<std::string, std::string>& names) {
  if (auto* s = v.if_string()) {
    if (auto it = names.find(std::string(s->c_str(), s->size())); it != names.end()) *s = it->second;
  } else if (auto* a = v.if_array()) {
    for (auto& e : *a) tidy(e, names);
  } else if (auto* o = v.if_object()) {
    for (auto it = o->begin(); it != o->end();) {
      tidy(it->value(), names);
      if (it->value().is_object() && it->value().get_object().empty()) {
        it = o->erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace

std::string to_json(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, o);
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) return text;
  std::map<std::string, std::string> names;
  std::set<const pb::Descriptor*> seen;
  collect_enum_names(message.GetDescriptor(), names, seen);
  tidy(v, names);
  return boost::json::serialize(v);
}

}  // namespace postern::config
