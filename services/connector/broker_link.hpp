#pragma once
// One broker address as a connector sees it: a channel, an Attach session
// (hello, heartbeats, drain, the signed config pushed to the broker), and
// the session's lanes, each an Endpoint whose exchanges the broker opens.
// The link reattaches with backoff while it is not stopped, and reopens a
// lane that ended while its session lives on.
//
// Single-threaded: the connector's executor.

#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/event.hpp"
#include "common/tunnel/endpoint.hpp"
#include "connector/metrics.hpp"
#include "postern/policy/v1/policy.pb.h"

namespace grpc {
class Channel;
class ChannelCredentials;
class CompletionQueue;
}  // namespace grpc

namespace postern::connector {

class BrokerLink {
 public:
  struct Settings {
    std::string connector_id;
    std::vector<std::string> aliases;
    std::uint32_t capacity = 10000;
    std::uint32_t lanes = 2;
    std::chrono::milliseconds connect_timeout{20000};
    std::chrono::steady_clock::duration reconnect_max = std::chrono::seconds(1);
    std::string server_name;  // empty: the host dialled
    tunnel::Endpoint::Options lane_options;
  };
  /// What the link needs of the connector: where new exchanges go, the
  /// signed snapshot to push (may be null), whether it is draining.
  struct Hooks {
    tunnel::Endpoint::OnOpen serve;
    std::function<std::shared_ptr<const policy::v1::SignedSnapshot>()> config;
    std::function<bool()> draining;
    std::function<void()> attached_changed;
    /// The broker welcomed the link: `instance` names the broker process,
    /// `count` how many brokers serve the address (0: not said). False:
    /// another link already holds that broker; this one detaches and dials
    /// again on a new connection (unless stopped meanwhile).
    std::function<bool(BrokerLink&, const std::string& instance, std::uint32_t count)> welcomed;
    /// An attach failed, or an attached session ended: the broker may have
    /// moved (a new address in DNS).
    std::function<void()> lost;
  };

  /// `name`: host:port as configured; `host`: the name part; `target`: the
  /// address dialled ("ipv4:a.b.c.d:port").
  BrokerLink(asio::any_io_executor ex, std::string name, const std::string& host, std::string target,
             std::shared_ptr<grpc::ChannelCredentials> creds, grpc::CompletionQueue* cq, Settings settings,
             Hooks hooks, Metrics& metrics);
  ~BrokerLink();

  /// Attaches, and again after each detach, until stop().
  void start();
  /// Detaches: ends the Attach stream and the lanes.
  void stop();
  /// Asks the broker to hand this session no new exchanges.
  void request_drain();
  /// Ends every lane after what is queued on it (the last responses of a
  /// drain), opening none again; lanes_up() is 0 once they have ended.
  void close_lanes();
  /// The signed config changed: push it.
  void config_changed() { wake_.set(); }

  bool attached() const { return attached_; }
  /// Attaches in a row that reached no broker (0 once one welcomed it).
  int failed_attaches() const { return failed_attaches_; }
  bool stopping() const { return stopping_; }
  /// Set once the run loop and its lanes' coroutines have ended (after
  /// stop()): the link may then be destroyed.
  Event& stopped() { return stopped_; }
  const std::string& name() const { return name_; }
  const std::string& target() const { return target_; }
  /// The broker process of the current session (empty while detached).
  const std::string& broker_instance() const { return instance_; }
  std::size_t lanes_up() const;
  /// After request_drain(): every lane has the broker's drain mark (or has
  /// ended), so no new exchange will come from this broker.
  bool lanes_drained() const;

 private:
  asio::awaitable<void> run();
  asio::awaitable<bool> attach_once();
  asio::awaitable<void> wait_before_attach(asio::steady_timer& timer, std::chrono::steady_clock::duration wait);
  asio::awaitable<void> run_lane(std::string session_id, std::string session_label);
  // A channel of its own (its own connection: through a load balancer, a
  // new connection may reach another broker).
  void new_channel();

  asio::any_io_executor ex_;
  std::string name_, host_, target_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  std::shared_ptr<grpc::Channel> channel_;
  struct Stub;
  std::unique_ptr<Stub> stub_;
  grpc::CompletionQueue* cq_;
  Settings settings_;
  Hooks hooks_;
  Metrics& metrics_;
  std::mt19937 rng_{std::random_device{}()};

  bool attached_ = false;
  bool stopping_ = false;
  int failed_attaches_ = 0;
  bool drain_requested_ = false;
  bool lanes_closing_ = false;
  std::string session_id_;
  std::string instance_;
  // The last attach reached a broker another link holds: dial again on a
  // new connection, after `redial_backoff_` (doubling while it repeats).
  bool redial_ = false;
  std::chrono::steady_clock::duration redial_backoff_{};
  std::function<void()> cancel_attach_;
  std::vector<std::shared_ptr<tunnel::Endpoint>> lanes_;
  Event wake_;     // the attach writer: a heartbeat, config or drain is due
  Event stopped_;  // the run loop and every run_lane have ended
  // run_lane coroutines under way: they touch this link when they resume,
  // so stopped_ waits for the last (the owner destroys a stopped link).
  int lanes_running_ = 0;
  Event lanes_gone_;
};

}  // namespace postern::connector
