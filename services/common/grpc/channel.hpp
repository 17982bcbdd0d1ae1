#pragma once
// Client channels the way every Postern hop dials another: keepalive pings
// so a dead peer is noticed in seconds, quick reconnects, bounded messages,
// and TLS from a ClientTls config block. Include only in .cpp files.

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
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

/// For links that stay inside the DMZ (edge <-> broker's relay port), on
/// both ends: no BDP probing, so each stream's flow-control window stays at
/// gRPC's 64 KiB (plus the message being read) instead of growing to the
/// estimated bandwidth-delay product. On a link with microseconds of delay
/// that window is enough for full speed, and a bulk transfer can no longer
/// queue megabytes in the connection ahead of small exchanges (the
/// small-request p99 during an upload: 6.3-20.6 ms before, 5.1-7.0 ms after,
/// 2.4-3.5 ms quiet). Not for the connector's link to the broker, which may
/// be long: at 20 ms round trip a transfer fell from 142 to 10 MB/s without
/// the probe.
void apply_dmz_link_args(grpc::ChannelArguments& args);
void apply_dmz_link_server_args(grpc::ServerBuilder& builder);

/// How often gRPC reads TLS files again by default (file_check_interval).
inline constexpr std::chrono::seconds kFileCheckInterval{10};

/// TLS credentials from `tls` (CA, or the system's; client certificate and
/// key when set), or insecure ones when `tls` is null. The server's name is
/// verified (tls.server_name, set as the name override in `args`, or the
/// host dialled). gRPC reads the files again every `refresh`: a renewed
/// certificate or CA bundle is used from the next connection on, and
/// established ones carry on. Throws std::runtime_error naming
/// `field`.tls.* when a file is unreadable, not PEM, or a key does not match
/// its certificate.
std::shared_ptr<grpc::ChannelCredentials> client_credentials(const config::v1::ClientTls* tls, std::string_view field,
                                                             grpc::ChannelArguments& args,
                                                             std::chrono::seconds refresh = kFileCheckInterval);

/// Server TLS credentials from `tls` (certificate and key; with
/// client_ca_file, clients must present a certificate it issued), read again
/// every `refresh` like client_credentials(). Throws std::runtime_error
/// naming `field`.tls.* for bad files.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const config::v1::ServerTls& tls, std::string_view field,
                                                            std::chrono::seconds refresh = kFileCheckInterval);

/// A Duration config field as whole seconds for gRPC's file refresh (at
/// least 1 s); `fallback` when unset.
std::chrono::seconds refresh_seconds(const google::protobuf::Duration& d, std::chrono::seconds fallback = kFileCheckInterval);

/// The server side of the same keepalive: pings every 10 s, and clients may
/// ping every 5 s, even without calls, without being sent away.
void apply_server_args(grpc::ServerBuilder& builder);

}  // namespace postern::grpc_bridge
