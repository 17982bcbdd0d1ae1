#include "common/grpc/channel.hpp"

#include <grpcpp/grpcpp.h>

#include <string>

#include "common/net/tls.hpp"

namespace postern::grpc_bridge {

grpc::ChannelArguments client_channel_args(std::chrono::milliseconds connect_timeout) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reconnect fast: 100 ms after a failed connect, growing to 1 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Despite its name this is the connect timeout: how long one attempt may
  // take, at least (gRPC gives it until the next backoff step if that is
  // later). It was 100 ms for every channel, which with the 1 s backoff cap
  // gave every attempt at most ~1.2 s: a connector 400 ms round trip away
  // from its broker (four round trips per connect) never attached.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(connect_timeout.count()));
  // No gRPC retries: every caller here already decides what to send again
  // (the edge's broker retry, the connector's re-park and re-attach), and
  // the retry filter costs each call a larger arena and a copy of what it
  // sends until the call commits.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // Nothing here compresses: no compression filter on any call.
  args.SetInt(GRPC_ARG_ENABLE_PER_MESSAGE_COMPRESSION, 0);
  args.SetInt(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  args.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  return args;
}

std::shared_ptr<grpc::ChannelCredentials> client_credentials(const config::v1::ClientTls* tls, std::string_view field,
                                                             grpc::ChannelArguments& args) {
  if (!tls) return grpc::InsecureChannelCredentials();
  const std::string f(field);
  grpc::SslCredentialsOptions o;
  if (!tls->ca_file().empty()) o.pem_root_certs = net::read_pem_file(tls->ca_file(), (f + ".tls.ca_file").c_str());
  if (!tls->cert_file().empty()) {
    o.pem_cert_chain = net::read_pem_file(tls->cert_file(), (f + ".tls.cert_file").c_str());
    o.pem_private_key = net::read_pem_file(tls->key_file(), (f + ".tls.key_file").c_str());
  }
  if (!tls->server_name().empty()) args.SetSslTargetNameOverride(tls->server_name());
  return grpc::SslCredentials(o);
}

void apply_dmz_link_args(grpc::ChannelArguments& args) { args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0); }

void apply_dmz_link_server_args(grpc::ServerBuilder& b) { b.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0); }

void apply_server_args(grpc::ServerBuilder& b) {
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_ENABLE_PER_MESSAGE_COMPRESSION, 0);
  b.AddChannelArgument(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
}

}  // namespace postern::grpc_bridge
