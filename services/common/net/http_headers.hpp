#pragma once
// Header rules every hop shares.

#include <chrono>
#include <string>
#include <string_view>

namespace postern::net {

/// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);

/// `s` without optional whitespace (SP, HTAB) at either end (RFC 9110 5.6.3).
std::string_view trim_ows(std::string_view s);

/// True for headers that describe one connection, not the message
/// (RFC 9110 7.6.1), plus the framing headers each hop recomputes.
bool is_hop_by_hop(std::string_view name);

/// True if `name` is listed in a Connection header value ("close, x-foo").
bool listed_in_connection(std::string_view connection_value, std::string_view name);

/// True for an RFC 9110 token (a field name, a method): one or more of
/// ALPHA DIGIT and !#$%&'*+-.^_`|~.
bool is_token(std::string_view s);

/// True if `value` may be written as a field value: no CR, LF or NUL (the
/// bytes that would end the field, or the head, early). Other octets,
/// obs-text included, are the sender's business.
bool is_safe_field_value(std::string_view value);

/// `s` with every byte but RFC 3986's unreserved ones as %XX.
std::string percent_encode(std::string_view s);

/// `t` as an HTTP date (RFC 9110 5.6.7 IMF-fixdate: "Sun, 06 Nov 1994
/// 08:49:37 GMT"), for the Date field of responses a hop makes itself.
std::string http_date(std::chrono::system_clock::time_point t = std::chrono::system_clock::now());

}  // namespace postern::net
