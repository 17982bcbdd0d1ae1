#include "edge/metrics.hpp"

#include "common/observability/log.hpp"
#include "common/observability/tracing.hpp"
#include "common/policy/enforcement.hpp"

namespace postern::edge {

Metrics::Metrics(prometheus::Registry& r)
  : requests(prometheus::BuildCounter()
                   .Name("postern_edge_requests_total")
                   .Help("Requests (not WebSocket sessions) by API and status code")
                   .Register(r)),
      duration(prometheus::BuildHistogram()
                   .Name("postern_edge_request_duration_seconds")
                   .Help("Time from request head to the end of the response, by API")
                   .Register(r)),
      bytes_in(prometheus::BuildCounter()
                   .Name("postern_edge_request_bytes_total")
                   .Help("Request body bytes received from clients")
                   .Register(r)
                   .Add({})),
      bytes_out(prometheus::BuildCounter()
                    .Name("postern_edge_response_bytes_total")
                    .Help("Response body bytes sent to clients")
                    .Register(r)
                    .Add({})),
      connections(prometheus::BuildGauge()
                      .Name("postern_edge_connections")
                      .Help("Open client connections")
                      .Register(r)
                      .Add({})),
      in_flight(prometheus::BuildGauge()
                    .Name("postern_edge_requests_in_flight")
                    .Help("Requests being served right now")
                    .Register(r)
                    .Add({})),
      ws_sessions(prometheus::BuildGauge()
                      .Name("postern_edge_websocket_sessions")
                      .Help("WebSocket sessions open right now")
                      .Register(r)
                      .Add({})),
      ws_sessions_total(prometheus::BuildCounter()
                            .Name("postern_edge_websocket_sessions_total")
                            .Help("WebSocket sessions ended, by API and the close code the client got")
                            .Register(r)),
      ws_duration(prometheus::BuildHistogram()
                      .Name("postern_edge_websocket_session_duration_seconds")
                      .Help("How long WebSocket sessions lasted, from the upgrade request to the close, by API")
                      .Register(r)),
      ws_messages(prometheus::BuildCounter()
                      .Name("postern_edge_websocket_messages_total")
                      .Help("WebSocket messages relayed, by API and direction")
                      .Register(r)),
      ws_bytes(prometheus::BuildCounter()
                   .Name("postern_edge_websocket_bytes_total")
                   .Help("WebSocket message bytes passed on (to the client, or into the tunnel), by API and "
                         "direction")
                   .Register(r)) {}

void exchange_done(Metrics& metrics, policy::Enforcement& enforcement, const ExchangeSummary& s,
                   const policy::Decisions& decisions) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.started).count();
  const std::string api(s.api);
  if (s.websocket_session) {
    metrics.ws_duration.Add({{"api", api}}, kSessionBuckets).Observe(secs);
  } else {
    metrics.requests_by.get({s.api, std::to_string(s.status)}).Increment();
    metrics.duration_by.get({s.api}, kLatencyBuckets).Observe(secs);
  }
  enforcement.count(api, decisions);
  log::ExchangeRecord rec;
  rec.request_id = s.request_id;
  rec.client = s.client_ip;
  rec.method = s.method;
  rec.path = s.path;
  rec.api = s.api;
  rec.application = s.application;
  rec.status = s.status;
  rec.websocket = s.websocket_session;
  rec.duration_ms = secs * 1000.0;
  if (s.span) tracing::end_exchange(*s.span, rec);
  log::log_exchange(rec);
}

}  // namespace postern::edge
