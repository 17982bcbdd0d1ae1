#include "common/policy/ws_policies.hpp"

// Boost.JSON, header-only: its implementation is compiled in this file alone.
#include <boost/json/src.hpp>

#include <prometheus/counter.h>

#include "common/config/yaml_proto.hpp"
#include "common/net/http_headers.hpp"
#include "common/observability/log.hpp"
#include "common/policy/invocation.hpp"

namespace postern::policy {

namespace json = boost::json;
using namespace std::chrono_literals;

Verdict check_origin(const CompiledApi& api, std::string_view origin, Decisions& decisions) {
  const auto& allowed = api.def->policies().websocket().allowed_origins();
  if (allowed.empty()) return {};
  for (const auto& a : allowed) {
    if (net::iequals(a, origin)) {
      decisions.push_back({"origin", "allowed", "ok"});
      return {};
    }
  }
  decisions.push_back({"origin", "rejected", origin.empty() ? "missing_origin" : "origin_not_allowed"});
  std::string detail = origin.empty() ? "the upgrade carries no Origin header and API '" + api.name +
                                            "' admits only listed origins"
                                      : "origin '" + std::string(origin) + "' is not allowed for API '" + api.name + "'";
  return Verdict::refuse(403, "origin", origin.empty() ? "missing_origin" : "origin_not_allowed", std::move(detail));
}

bool valid_json(std::string_view text) {
  boost::system::error_code ec;
  (void)json::parse(text, ec);
  return !ec;
}

void apply_edit(const pv1::MessageEdit& edit, net::WsMessage& m) {
  if (!m.binary() && (edit.json_set_size() > 0 || edit.json_remove_size() > 0)) {
    boost::system::error_code ec;
    json::value v = json::parse(m.data, ec);
    if (!ec && v.is_object()) {
      auto& obj = v.as_object();
      for (const auto& k : edit.json_remove()) obj.erase(k);
      // Sorted, so the result does not depend on map order.
      std::map<std::string, std::string> sets(edit.json_set().begin(), edit.json_set().end());
      for (const auto& [k, text] : sets) {
        boost::system::error_code vec;
        json::value nv = json::parse(text, vec);
        obj[k] = vec ? json::value(json::string(text)) : std::move(nv);
      }
      m.data = json::serialize(v);
    }
  }
  if (!edit.prepend().empty()) m.data.insert(0, edit.prepend());
  m.data += edit.append();
}

// ---------------------------------------------------------------- session

namespace {

std::string session_fields(const WsSessionInfo& info, std::string_view event) {
  std::string out;
  json_member(out, "event", event);
  json_member(out, "request_id", info.request_id);
  if (!info.trace_id.empty()) json_member(out, "trace_id", info.trace_id);
  json_member(out, "api", info.api);
  json_member(out, "application", info.application);
  json_member(out, "client_ip", info.client_ip);
  json_member(out, "path", info.path);
  json_member(out, "enforced_by", info.enforced_by);
  return out;
}

const char* direction_name(net::WsDirection d) {
  return d == net::WsDirection::client_to_server ? "client_to_server" : "server_to_client";
}

}  // namespace

WsSessionPolicies::WsSessionPolicies(const pv1::Policies* pol, WsSessionInfo info, InvocationLog& log,
                                     MessageTransformer* transforms)
    : pol_(pol), info_(std::move(info)), log_(log), transforms_(transforms),
      started_(std::chrono::steady_clock::now()) {}

net::WsRelayOptions WsSessionPolicies::relay_options(const pv1::Policies* pol, prometheus::Counter& to_server,
                                                     prometheus::Counter& to_client) {
  net::WsRelayOptions o;
  o.on_sent = [&to_server, &to_client](net::WsDirection d, std::size_t n) {
    (d == net::WsDirection::client_to_server ? to_server : to_client).Increment(static_cast<double>(n));
  };
  if (pol) {
    o.idle_timeout = config::duration_or(pol->websocket().idle_timeout(), std::chrono::milliseconds(10min));
    o.max_lifetime = config::duration_or(pol->websocket().max_lifetime(), std::chrono::milliseconds(0));
  }
  return o;
}

std::chrono::milliseconds WsSessionPolicies::ping_interval(const pv1::Policies* pol) {
  if (!pol) return 30s;
  return config::duration_or(pol->websocket().ping_interval(), std::chrono::milliseconds(30s));
}

asio::awaitable<bool> WsSessionPolicies::on_message(net::WsDirection dir, net::WsMessage& m) {
  if (!pol_) co_return true;
  const int i = static_cast<int>(dir);
  const bool c2s = dir == net::WsDirection::client_to_server;
  // Log Invocation keeps the message as its sender sent it.
  if (pol_->has_log_invocation()) {
    const auto& li = pol_->log_invocation();
    if ((c2s ? li.store_client_messages() : li.store_server_messages()) && should_log(li, 101, false)) {
      const std::size_t cap = li.max_payload_bytes() ? li.max_payload_bytes() : 65536;
      Payload p;
      p.total = m.data.size();
      p.data = m.data.substr(0, cap);
      p.truncated = m.data.size() > cap;
      std::string f = session_fields(info_, "websocket_message");
      json_member(f, "direction", direction_name(dir));
      json_member(f, "type", m.binary() ? "binary" : "text");
      json_member_raw(f, "payload", payload_json(p, li.compress_payload()));
      log_.write_fields(f);
    }
  }
  const auto& mt = pol_->message_transformation();
  const auto& edits = c2s ? mt.client_to_server() : mt.server_to_client();
  for (const auto& e : edits) apply_edit(e, m);
  if (!edits.empty()) transformed_[i]++;
  if (mt.has_service() && !mt.service().address().empty() && transforms_) {
    const auto& svc = mt.service();
    const bool both = !svc.client_to_server() && !svc.server_to_client();
    if (both || (c2s ? svc.client_to_server() : svc.server_to_client())) {
      const auto r = co_await transforms_->transform(svc, info_.api, info_.request_id, info_.application, dir, m);
      if (!r.ok) {
        transform_failures_++;
        POSTERN_LOG(warn, "message transformation failed")
            .kv("request_id", info_.request_id)
            .kv("trace_id", info_.trace_id)
            .kv("api", info_.api)
            .kv("service", svc.address())
            .kv("direction", direction_name(dir))
            .kv("fail_open", svc.fail_open())
            .kv("error", r.error);
        if (!svc.fail_open()) throw net::WsStop{1011, "message transformation failed"};
      } else if (r.drop) {
        dropped_[i]++;
        co_return false;
      } else {
        transformed_[i]++;
      }
    }
  }
  co_return true;
}

void WsSessionPolicies::opened() {
  if (!pol_ || !pol_->has_log_invocation() || !should_log(pol_->log_invocation(), 101, false)) return;
  std::string f = session_fields(info_, "websocket_open");
  json_member_raw(f, "status", "101");
  if (!info_.subprotocol.empty()) json_member(f, "subprotocol", info_.subprotocol);
  log_.write_fields(f);
}

void WsSessionPolicies::closed(const net::WsRelayStats& s, const Decisions& decisions) {
  if (!pol_ || !pol_->has_log_invocation()) return;
  const bool failed = s.gateway_close_code == 1011 || s.client_close_code == 1006 || s.server_close_code == 1006 ||
                      s.server_close_code == 1011;
  if (!should_log(pol_->log_invocation(), 101, failed)) return;
  std::string f = session_fields(info_, "websocket_close");
  json_member_raw(f, "status", "101");
  json_member(f, "closed_by", s.closed_by);
  auto side = [](std::uint16_t code, const std::string& reason) {
    std::string o;
    json_member_raw(o, "code", std::to_string(code));
    json_member(o, "reason", reason);
    return "{" + o + "}";
  };
  json_member_raw(f, "client_close", side(s.client_close_code, s.client_close_reason));
  json_member_raw(f, "server_close", side(s.server_close_code, s.server_close_reason));
  if (s.closed_by == "gateway") json_member_raw(f, "gateway_close", side(s.gateway_close_code, s.gateway_close_reason));
  for (int i = 0; i < 2; ++i) {
    std::string d;
    json_member_raw(d, "messages", std::to_string(s.messages[i]));
    json_member_raw(d, "bytes", std::to_string(s.bytes[i]));
    json_member_raw(d, "transformed", std::to_string(transformed_[i]));
    json_member_raw(d, "dropped", std::to_string(dropped_[i]));
    json_member_raw(f, i == 0 ? "client_to_server" : "server_to_client", "{" + d + "}");
  }
  json_member_raw(f, "transform_failures", std::to_string(transform_failures_));
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.3f",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count());
  json_member_raw(f, "duration_ms", ms);
  json_member_raw(f, "decisions", decisions_json(decisions));
  log_.write_fields(f);
}

}  // namespace postern::policy
