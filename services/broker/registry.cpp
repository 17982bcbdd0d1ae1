#include "broker/registry.hpp"

#include <algorithm>

#include "common/crypto/random.hpp"

namespace postern::broker {

namespace {

bool serves_alias(const Session& s, const std::string& alias) {
  return std::find(s.aliases.begin(), s.aliases.end(), alias) != s.aliases.end();
}

SessionLane* least_busy_lane(const Session& s) {
  SessionLane* best = nullptr;
  for (auto* l : s.lanes) {
    if (l->usable() && (!best || l->in_flight < best->in_flight)) best = l;
  }
  return best;
}

}  // namespace

std::shared_ptr<Session> Registry::add(std::string connector_id, std::string identity,
                                       std::vector<std::string> aliases) {
  auto s = std::make_shared<Session>();
  // The id is a bearer token (a lane names it): 128 bits from the CSPRNG,
  // never logged. Logs say the label.
  s->id = crypto::random_hex(16);
  s->label = "s" + std::to_string(next_id_++);
  s->connector_id = std::move(connector_id);
  s->identity = std::move(identity);
  s->aliases = std::move(aliases);
  sessions_[s->id] = s;
  notify();
  return s;
}

void Registry::remove(const std::shared_ptr<Session>& s) {
  sessions_.erase(s->id);
  stop_taking(*s);
}

std::shared_ptr<Session> Registry::find(const std::string& id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

void Registry::drain(const std::shared_ptr<Session>& s) { stop_taking(*s); }

void Registry::stop_taking(Session& s) {
  if (!s.draining) {
    s.draining = true;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& alias : s.aliases) {
      if (!serves(alias)) lost_[alias] = now;
    }
  }
  notify();
  // Requests waiting for this session's lanes learn at once that it serves
  // them no more, rather than when their wait runs out.
  wake(s);
}

void Registry::wake(const Session& s) {
  std::vector<Waiter> run;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (serves_alias(s, it->second.alias)) {
      run.push_back(std::move(it->second.fn));
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& w : run) w();
}

void Registry::wake_all() {
  auto all = std::move(waiters_);
  waiters_.clear();
  for (auto& [id, w] : all) w.fn();
}

bool Registry::add_lane(const std::shared_ptr<Session>& s, SessionLane* lane) {
  if (s->draining || !sessions_.contains(s->id)) return false;
  s->lanes.push_back(lane);
  notify();
  wake(*s);
  return true;
}

void Registry::remove_lane(const std::shared_ptr<Session>& s, SessionLane* lane) {
  std::erase(s->lanes, lane);
  notify();
}

Registry::Pick Registry::pick(const std::string& alias) {
  std::vector<std::pair<std::shared_ptr<Session>, SessionLane*>> tied;
  for (const auto& [id, s] : sessions_) {
    if (s->draining || !serves_alias(*s, alias)) continue;
    if (s->capacity > 0 && s->in_flight >= s->capacity) continue;
    SessionLane* lane = least_busy_lane(*s);
    if (!lane) continue;
    if (!tied.empty() && s->in_flight > tied.front().first->in_flight) continue;
    if (!tied.empty() && s->in_flight < tied.front().first->in_flight) tied.clear();
    tied.emplace_back(s, lane);
  }
  if (tied.empty()) return {};
  auto& [session, lane] = tied[rotation_++ % tied.size()];
  // In-flight counts are no observer's business: the gauges follow
  // sessions and lanes, and an exchange changes neither.
  session->in_flight++;
  lane->in_flight++;
  return Pick{session, lane};
}

void Registry::finished(const Pick& p) {
  const bool was_full = p.session && p.session->capacity > 0 && p.session->in_flight >= p.session->capacity;
  if (p.session && p.session->in_flight > 0) p.session->in_flight--;
  // The lane may be gone from the session; its object lives as long as
  // the exchanges it carries.
  if (p.lane && p.lane->in_flight > 0) p.lane->in_flight--;
  if (was_full && !p.session->draining) wake(*p.session);
}

bool Registry::serves(const std::string& alias) const {
  for (const auto& [id, s] : sessions_) {
    if (!s->draining && serves_alias(*s, alias)) return true;
  }
  return false;
}

std::optional<std::chrono::steady_clock::time_point> Registry::lost_at(const std::string& alias) const {
  auto it = lost_.find(alias);
  if (it == lost_.end() || serves(alias)) return std::nullopt;
  return it->second;
}

std::uint64_t Registry::add_waiter(const std::string& alias, Waiter w) {
  auto id = next_waiter_++;
  waiters_.emplace(id, WaiterEntry{alias, std::move(w)});
  return id;
}

void Registry::remove_waiter(std::uint64_t id) { waiters_.erase(id); }

std::map<std::string, std::size_t> Registry::connectors_per_alias() const {
  std::map<std::string, std::size_t> out;
  for (const auto& [id, s] : sessions_) {
    for (const auto& a : s->aliases) out[a] += s->draining ? 0 : 1;
  }
  return out;
}

std::size_t Registry::in_flight() const {
  std::size_t n = 0;
  for (const auto& [id, s] : sessions_) n += s->in_flight;
  return n;
}

std::vector<std::shared_ptr<Session>> Registry::all() const {
  std::vector<std::shared_ptr<Session>> out;
  for (const auto& [id, s] : sessions_) out.push_back(s);
  return out;
}

}  // namespace postern::broker
