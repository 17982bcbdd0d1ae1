#pragma once
// Client channels the way every Postern hop dials another: keepalive pings
// so a dead peer is noticed in seconds, quick reconnects, bounded messages,
// and TLS from a ClientTls config block. Include only in .cpp files.

#include <grpcpp/security/credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <memory>
#include <string_view>

#include "postern/config/v1/config.pb.h"

namespace postern::grpc_bridge {

/// How long one connect attempt (TCP, TLS, HTTP/2 settings) may take by
/// default: gRPC's own 20 s, for links that may be long (a connector in
/// another region than its broker).
inline constexpr std::chrono::milliseconds kConnectTimeout{20000};

/// Keepalive every 10 s (5 s timeout, also without calls), reconnect backoff
/// 100 ms .. 1 s, connect attempts of `connect_timeout` at least, receive
/// limit 4 MiB.
grpc::ChannelArguments client_channel_args(std::chrono::milliseconds connect_timeout = kConnectTimeout);

/// TLS credentials from `tls` (CA; client certificate and key when set), or
/// insecure ones when `tls` is null. Sets the name override in `args` when
/// tls.server_name is set. Throws std::runtime_error naming `field`.tls.* for
/// unreadable PEM files.
std::shared_ptr<grpc::ChannelCredentials> client_credentials(const config::v1::ClientTls* tls, std::string_view field,
                                                             grpc::ChannelArguments& args);

/// The server side of the same keepalive: pings every 10 s, and clients may
/// ping every 5 s, even without calls, without being sent away.
void apply_server_args(grpc::ServerBuilder& builder);

}  // namespace postern::grpc_bridge
