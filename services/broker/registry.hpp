#pragma once
// Which connectors are attached, for which aliases, and their parked Pull
// streams. Pure logic: no gRPC, so unit tests drive it directly.
// Not thread-safe: the broker uses it from its single io thread.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace postern::broker {

/// A parked Pull stream as the registry sees it.
class PullSlot {
 public:
  virtual ~PullSlot() = default;
  /// Ends the parked stream without an exchange (session gone or draining).
  virtual void cancel() = 0;
  /// When it was last parked (set by Registry::park).
  std::chrono::steady_clock::time_point parked_at{};
};

/// Where Credit messages for a session's exchanges are written (the broker
/// defines it: its Attach stream, under a lock).
struct AttachWriter;

/// A connector's Registration.Sessions stream, where WebSocket sessions for
/// its Attach session go (the broker defines it).
struct SessionsCarrier;

/// One Attach stream: one connector instance.
struct Session {
  /// Secret: 128 random bits, named by the connector's Pull and Sessions
  /// calls, which must come from `identity` too. Never logged.
  std::string id;
  /// For logs: "s7", the 7th session since the broker started.
  std::string label;
  std::string connector_id;
  std::string identity;
  std::vector<std::string> aliases;
  std::uint32_t in_flight = 0;
  // Parked streams the connector wants at most (Hello.pool_size); 0: no limit.
  std::uint32_t pool_size = 0;
  bool draining = false;
  std::deque<PullSlot*> parked;
  // The connector paces response bodies by Credit (Hello.flow_control).
  bool flow_control = false;
  // Its identity may relay policy snapshots (IdentityGrant.publish_config).
  bool may_publish = false;
  std::shared_ptr<AttachWriter> attach;
  // The connector's Sessions stream, once it opened one (Hello.sessions).
  SessionsCarrier* carrier = nullptr;
};

class Registry {
 public:
  /// Called whenever counts change, so the wiring can update gauges.
  using Observer = std::function<void(const Registry&)>;
  void set_observer(Observer o) { observer_ = std::move(o); }

  std::shared_ptr<Session> add(std::string connector_id, std::string identity, std::vector<std::string> aliases);
  /// Removes the session and cancels its parked streams.
  void remove(const std::shared_ptr<Session>& s);
  std::shared_ptr<Session> find(const std::string& session_id) const;
  /// The session stops taking exchanges; its parked streams are cancelled.
  void drain(const std::shared_ptr<Session>& s);

  /// Parks a stream; false if the session is gone or draining.
  bool park(const std::shared_ptr<Session>& s, PullSlot* slot);
  /// Removes a slot that ended on its own.
  void unpark(const std::shared_ptr<Session>& s, PullSlot* slot);
  /// Removes and returns, from each session with more than its pool_size
  /// parked, the streams beyond pool_size parked since before
  /// `idle_before`, oldest first: a burst is over and nothing took them.
  /// The caller ends them.
  std::vector<PullSlot*> trim(std::chrono::steady_clock::time_point idle_before);

  struct Pick {
    std::shared_ptr<Session> session;
    PullSlot* slot = nullptr;
  };
  /// Takes a parked stream from the serving session with the fewest
  /// exchanges in flight and counts the exchange against it.
  Pick take(const std::string& alias);
  /// Call when an exchange taken with take() or take_carrier() ends.
  void finished(const std::shared_ptr<Session>& s);

  /// Sets (or, with null, clears) the session's Sessions stream; waiters
  /// for its aliases re-check. False if the session is gone or draining.
  bool set_carrier(const std::shared_ptr<Session>& s, SessionsCarrier* carrier);
  /// The serving session with a Sessions stream that has the fewest
  /// exchanges in flight, the new WebSocket session counted against it;
  /// null if none.
  std::shared_ptr<Session> take_carrier(const std::string& alias);

  /// True if a session that is not draining serves the alias.
  bool serves(const std::string& alias) const;
  /// When the alias' last serving session drained or went, if none serves
  /// it now; nullopt if one does, or none ever did.
  std::optional<std::chrono::steady_clock::time_point> lost_at(const std::string& alias) const;

  /// Callbacks run once when what a waiter for one of their aliases may
  /// get changes: a stream is parked, or a serving session drains or goes.
  /// The waiter re-checks with take() and serves().
  using Waiter = std::function<void()>;
  std::uint64_t add_waiter(const std::string& alias, Waiter w);
  void remove_waiter(std::uint64_t id);
  /// Runs and removes every waiter (the broker is draining).
  void wake_all();

  // Observability.
  std::map<std::string, std::size_t> connectors_per_alias() const;
  std::map<std::string, std::size_t> parked_per_alias() const;
  std::size_t in_flight() const;
  std::size_t sessions() const { return sessions_.size(); }
  std::vector<std::shared_ptr<Session>> all() const;

 private:
  void notify() {
    if (observer_) observer_(*this);
  }
  // The serving session (not draining, `usable`) with the fewest exchanges
  // in flight; ties rotate so idle connectors share the load.
  std::shared_ptr<Session> least_busy(const std::string& alias, bool (*usable)(const Session&));
  // Runs and removes the waiters for the aliases `s` serves.
  void wake(const Session& s);
  // Cancels the session's parked streams and wakes its waiters.
  void stop_taking(Session& s);

  std::map<std::string, std::shared_ptr<Session>> sessions_;
  std::uint64_t next_id_ = 1;
  std::uint64_t rotation_ = 0;
  struct WaiterEntry {
    std::string alias;
    Waiter fn;
  };
  std::map<std::uint64_t, WaiterEntry> waiters_;
  std::map<std::string, std::chrono::steady_clock::time_point> lost_;
  std::uint64_t next_waiter_ = 1;
  Observer observer_;
};

}  // namespace postern::broker
