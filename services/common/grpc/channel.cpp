#include "common/grpc/channel.hpp"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>

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
  // (the edge's broker retry, the connector's lane reopening and re-attach), and
  // the retry filter costs each call a larger arena and a copy of what it
  // sends until the call commits.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // Nothing here compresses: no compression filter on any call.
  args.SetInt(GRPC_ARG_ENABLE_PER_MESSAGE_COMPRESSION, 0);
  args.SetInt(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  args.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  return args;
}

namespace {

namespace gx = grpc::experimental;

unsigned refresh_arg(std::chrono::seconds refresh) { return static_cast<unsigned>(std::max<long>(1, refresh.count())); }

}  // namespace

std::chrono::seconds refresh_seconds(const google::protobuf::Duration& d, std::chrono::seconds fallback) {
  if (d.seconds() == 0 && d.nanos() == 0) return fallback;
  return std::chrono::seconds(std::max<std::int64_t>(1, d.seconds()));
}

std::shared_ptr<grpc::ChannelCredentials> client_credentials(const config::v1::ClientTls* tls, std::string_view field,
                                                             grpc::ChannelArguments& args, std::chrono::seconds refresh) {
  if (!tls) return grpc::InsecureChannelCredentials();
  const std::string f(field);
  // Checked here, so that a bad file stops the start with its name rather
  // than fail every handshake later.
  if (!tls->ca_file().empty()) net::make_client_tls(tls->ca_file(), f + ".tls.ca_file");
  const bool identity = !tls->cert_file().empty() || !tls->key_file().empty();
  if (identity) net::check_key_pair(tls->cert_file(), tls->key_file(), f + ".tls");
  gx::TlsChannelCredentialsOptions o;
  std::shared_ptr<gx::CertificateProviderInterface> provider;
  if (identity) {
    provider = std::make_shared<gx::FileWatcherCertificateProvider>(tls->key_file(), tls->cert_file(),
                                                                      tls->ca_file(), refresh_arg(refresh));
  } else if (!tls->ca_file().empty()) {
    provider = std::make_shared<gx::FileWatcherCertificateProvider>(tls->ca_file(), refresh_arg(refresh));
  }
  if (provider) {
    o.set_certificate_provider(provider);
    if (!tls->ca_file().empty()) o.watch_root_certs();
    if (identity) o.watch_identity_key_cert_pairs();
  }
  o.set_verify_server_certs(true);
  o.set_certificate_verifier(std::make_shared<gx::HostNameCertificateVerifier>());
  if (!tls->server_name().empty()) args.SetSslTargetNameOverride(tls->server_name());
  return gx::TlsCredentials(o);
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const config::v1::ServerTls& tls, std::string_view field,
                                                            std::chrono::seconds refresh) {
  const std::string f(field);
  if (tls.cert_file().empty() || tls.key_file().empty()) {
    throw std::runtime_error(f + ".tls: cert_file and key_file are required");
  }
  net::check_key_pair(tls.cert_file(), tls.key_file(), f + ".tls");
  const bool mutual = !tls.client_ca_file().empty();
  if (mutual) net::make_client_tls(tls.client_ca_file(), f + ".tls.client_ca_file");
  auto provider = std::make_shared<gx::FileWatcherCertificateProvider>(tls.key_file(), tls.cert_file(),
                                                                       tls.client_ca_file(), refresh_arg(refresh));
  gx::TlsServerCredentialsOptions o(provider);
  o.watch_identity_key_cert_pairs();
  if (mutual) o.watch_root_certs();
  o.set_cert_request_type(mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                 : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  return gx::TlsServerCredentials(o);
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
