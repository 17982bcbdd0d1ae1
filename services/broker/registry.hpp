#pragma once
// Which connectors are attached, for which aliases, and their lanes. Pure
// logic: no gRPC, so unit tests drive it directly.
// Not thread-safe: the broker uses it from its single io thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace postern::broker {

/// A connector lane as the registry sees it.
class SessionLane {
 public:
  virtual ~SessionLane() = default;
  /// New exchanges may go on it.
  virtual bool usable() const = 0;
  /// Exchanges it carries now (kept by the registry's pick/finished).
  std::size_t in_flight = 0;
};

/// One Attach stream: one connector instance.
struct Session {
  /// Secret: 128 random bits, named by the connector's lanes, which must
  /// come from `identity` too. Never logged.
  std::string id;
  /// For logs: "s7", the 7th session since the broker started.
  std::string label;
  std::string connector_id;
  std::string identity;
  std::vector<std::string> aliases;
  std::uint32_t in_flight = 0;
  /// Exchanges the connector runs at once at most (its Hello; 0: no
  /// bound). A session at its capacity is not picked: exchanges wait here.
  std::uint32_t capacity = 0;
  bool draining = false;
  // Its identity may relay policy snapshots (IdentityGrant.publish_config).
  bool may_publish = false;
  std::vector<SessionLane*> lanes;
  /// When it attached (for the status page).
  std::chrono::system_clock::time_point attached_at = std::chrono::system_clock::now();
};

class Registry {
 public:
  /// Called whenever sessions or lanes come, go or drain, so the wiring can
  /// update gauges (not per exchange: pick() and finished() do not call it).
  using Observer = std::function<void(const Registry&)>;
  void set_observer(Observer o) { observer_ = std::move(o); }

  std::shared_ptr<Session> add(std::string connector_id, std::string identity, std::vector<std::string> aliases);
  /// Removes the session (its lanes are the caller's to end).
  void remove(const std::shared_ptr<Session>& s);
  std::shared_ptr<Session> find(const std::string& session_id) const;
  /// The session takes no new exchanges.
  void drain(const std::shared_ptr<Session>& s);

  /// Adds a lane to the session; false if the session is gone or draining.
  /// Waiters for its aliases re-check.
  bool add_lane(const std::shared_ptr<Session>& s, SessionLane* lane);
  void remove_lane(const std::shared_ptr<Session>& s, SessionLane* lane);

  struct Pick {
    std::shared_ptr<Session> session;
    SessionLane* lane = nullptr;
    explicit operator bool() const { return lane != nullptr; }
  };
  /// The serving session with the fewest exchanges in flight that has a
  /// usable lane and room under its capacity (ties rotate, so idle
  /// connectors share the load), and its least busy lane; the exchange is
  /// counted against both.
  Pick pick(const std::string& alias);
  /// Call when an exchange taken with pick() ends. A session that was at
  /// its capacity wakes the waiters for its aliases.
  void finished(const Pick& p);

  /// True if a session that is not draining serves the alias.
  bool serves(const std::string& alias) const;
  /// When the alias' last serving session drained or went, if none serves
  /// it now; nullopt if one does, or none ever did.
  std::optional<std::chrono::steady_clock::time_point> lost_at(const std::string& alias) const;

  /// Callbacks run once when what a waiter for one of their aliases may
  /// get changes: a lane is added, a session at capacity finishes an
  /// exchange, or a serving session drains or goes.
  /// The waiter re-checks with pick() and serves().
  using Waiter = std::function<void()>;
  std::uint64_t add_waiter(const std::string& alias, Waiter w);
  void remove_waiter(std::uint64_t id);
  /// Runs and removes every waiter (the broker is draining).
  void wake_all();

  // Observability.
  std::map<std::string, std::size_t> connectors_per_alias() const;
  std::size_t in_flight() const;
  std::size_t sessions() const { return sessions_.size(); }
  std::vector<std::shared_ptr<Session>> all() const;

 private:
  void notify() {
    if (observer_) observer_(*this);
  }
  // Runs and removes the waiters for the aliases `s` serves.
  void wake(const Session& s);
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
