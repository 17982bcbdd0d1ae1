#include "connector/metrics.hpp"

namespace postern::connector {

Metrics::Metrics(prometheus::Registry& r)
    : brokers_attached(prometheus::BuildGauge()
                           .Name("postern_connector_brokers_attached")
                           .Help("Distinct brokers this connector is attached to")
                           .Register(r)
                           .Add({})),
      brokers_expected(prometheus::BuildGauge()
                           .Name("postern_connector_brokers_expected")
                           .Help("Distinct brokers this connector means to be attached to (expected_brokers, or "
                                 "what the brokers say); more than brokers_attached: a broker is not reached yet")
                           .Register(r)
                           .Add({})),
      broker_lookups(prometheus::BuildCounter()
                         .Name("postern_connector_broker_lookups_total")
                         .Help("Passes over the broker addresses in DNS: every resolve_interval, and about a "
                               "second after a link lost its broker (it may have moved)")
                         .Register(r)
                         .Add({})),
      lanes(prometheus::BuildGauge()
                .Name("postern_connector_lanes")
                .Help("Lanes open to brokers (each carries many exchanges)")
                .Register(r)
                .Add({})),
      in_flight(prometheus::BuildGauge()
                    .Name("postern_connector_exchanges_in_flight")
                    .Help("Exchanges being served right now (HTTP requests and WebSocket sessions)")
                    .Register(r)
                    .Add({})),
      reconnects(prometheus::BuildCounter()
                     .Name("postern_connector_reconnects_total")
                     .Help("Attach attempts after the first, per broker link")
                     .Register(r)
                     .Add({})),
      refusals(prometheus::BuildCounter()
                   .Name("postern_connector_registration_refusals_total")
                   .Help("Attach attempts the broker refused")
                   .Register(r)
                   .Add({})),
      requests(prometheus::BuildCounter()
                   .Name("postern_connector_requests_total")
                   .Help("Requests served (not WebSocket sessions), by alias and the native status, or what failed")
                   .Register(r)),
      duration(prometheus::BuildHistogram()
                   .Name("postern_connector_native_duration_seconds")
                   .Help("Time from request head to end of the native response, by alias (not WebSocket sessions)")
                   .Register(r)),
      bytes_in(prometheus::BuildCounter()
                   .Name("postern_connector_request_bytes_total")
                   .Help("Request body bytes sent to native services")
                   .Register(r)
                   .Add({})),
      bytes_out(prometheus::BuildCounter()
                    .Name("postern_connector_response_bytes_total")
                    .Help("Response body bytes received from native services")
                    .Register(r)
                    .Add({})),
      credit_wait(prometheus::BuildCounter()
                      .Name("postern_connector_credit_wait_seconds_total")
                      .Help("Time responses waited for the far side's credit: clients reading slower than the "
                            "native service sends")
                      .Register(r)
                      .Add({})),
      config_version(prometheus::BuildGauge()
                         .Name("postern_connector_config_version")
                         .Help("Version of the policy snapshot in force (0: none)")
                         .Register(r)
                         .Add({})),
      config_updates(prometheus::BuildCounter()
                         .Name("postern_connector_config_updates_total")
                         .Help("Policy snapshots received from the policy service, by result: applied, unchanged, "
                               "untrusted (no valid signature by a trusted key), invalid")
                         .Register(r)),
      ws_sessions(prometheus::BuildGauge()
                      .Name("postern_connector_websocket_sessions")
                      .Help("WebSocket sessions open to native services right now")
                      .Register(r)
                      .Add({})),
      ws_duration(prometheus::BuildHistogram()
                      .Name("postern_connector_websocket_session_duration_seconds")
                      .Help("How long WebSocket sessions with native services lasted, by alias")
                      .Register(r)),
      ws_messages(prometheus::BuildCounter()
                      .Name("postern_connector_websocket_messages_total")
                      .Help("WebSocket messages relayed, by alias and direction")
                      .Register(r)),
      ws_bytes(prometheus::BuildCounter()
                   .Name("postern_connector_websocket_bytes_total")
                   .Help("WebSocket message bytes passed on (into the tunnel, or to the native service), by alias "
                         "and direction")
                   .Register(r)),
      frames_per_message(prometheus::BuildHistogram()
                             .Name("postern_connector_lane_frames_per_message")
                             .Help("Frames in each lane message written: how many exchanges share a gRPC message")
                             .Register(r)
                             .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512})) {}

}  // namespace postern::connector
