#include "broker/registry.hpp"

#include <algorithm>

#include "common/crypto/random.hpp"

namespace postern::broker {

namespace {

bool serves_alias(const Session& s, const std::string& alias) {
  return std::find(s.aliases.begin(), s.aliases.end(), alias) != s.aliases.end();
}

}  // namespace

std::shared_ptr<Session> Registry::add(std::string connector_id, std::string identity,
                                       std::vector<std::string> aliases) {
  auto s = std::make_shared<Session>();
  // The id is a bearer token (a Pull or Sessions call names it): 128 bits
  // from the CSPRNG, never logged. Logs say the label.
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
  auto parked = std::move(s.parked);
  s.parked.clear();
  for (auto* slot : parked) slot->cancel();
  notify();
  // Requests waiting for this session's streams learn at once that it
  // serves them no more, rather than when their wait runs out.
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

bool Registry::park(const std::shared_ptr<Session>& s, PullSlot* slot) {
  if (s->draining || !sessions_.contains(s->id)) return false;
  slot->parked_at = std::chrono::steady_clock::now();
  s->parked.push_back(slot);
  notify();
  // Every waiter for an alias this session serves re-checks.
  wake(*s);
  return true;
}

void Registry::unpark(const std::shared_ptr<Session>& s, PullSlot* slot) {
  auto it = std::find(s->parked.begin(), s->parked.end(), slot);
  if (it != s->parked.end()) {
    s->parked.erase(it);
    notify();
  }
}

std::vector<PullSlot*> Registry::trim(std::chrono::steady_clock::time_point idle_before) {
  std::vector<PullSlot*> out;
  for (const auto& [id, s] : sessions_) {
    // take() hands out the oldest first: the front has been idle longest.
    while (s->pool_size && s->parked.size() > s->pool_size && s->parked.front()->parked_at < idle_before) {
      out.push_back(s->parked.front());
      s->parked.pop_front();
    }
  }
  if (!out.empty()) notify();
  return out;
}

std::shared_ptr<Session> Registry::least_busy(const std::string& alias, bool (*usable)(const Session&)) {
  std::vector<std::shared_ptr<Session>> tied;
  for (const auto& [id, s] : sessions_) {
    if (s->draining || !usable(*s) || !serves_alias(*s, alias)) continue;
    if (!tied.empty() && s->in_flight > tied.front()->in_flight) continue;
    if (!tied.empty() && s->in_flight < tied.front()->in_flight) tied.clear();
    tied.push_back(s);
  }
  if (tied.empty()) return nullptr;
  return tied[rotation_++ % tied.size()];
}

Registry::Pick Registry::take(const std::string& alias) {
  auto best = least_busy(alias, [](const Session& s) { return !s.parked.empty(); });
  if (!best) return {};
  // Oldest parked stream first: it has been idle longest.
  PullSlot* slot = best->parked.front();
  best->parked.pop_front();
  best->in_flight++;
  notify();
  return {best, slot};
}

std::shared_ptr<Session> Registry::take_carrier(const std::string& alias) {
  auto best = least_busy(alias, [](const Session& s) { return s.carrier != nullptr; });
  if (!best) return nullptr;
  best->in_flight++;
  notify();
  return best;
}

bool Registry::set_carrier(const std::shared_ptr<Session>& s, SessionsCarrier* carrier) {
  if (carrier && (s->draining || !sessions_.contains(s->id))) return false;
  s->carrier = carrier;
  if (carrier) wake(*s);
  return true;
}

void Registry::finished(const std::shared_ptr<Session>& s) {
  if (s->in_flight > 0) s->in_flight--;
  notify();
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

std::map<std::string, std::size_t> Registry::parked_per_alias() const {
  std::map<std::string, std::size_t> out;
  for (const auto& [id, s] : sessions_) {
    for (const auto& a : s->aliases) out[a] += s->parked.size();
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
