#include "common/policy/basic_verifier.hpp"

#include <boost/asio/thread_pool.hpp>

#include "common/policy/engine.hpp"

namespace postern::policy {

struct BasicVerifier::Impl {
  asio::thread_pool pool{1};
  std::size_t pending = 0;
  ~Impl() { pool.join(); }
};

BasicVerifier::BasicVerifier() : impl_(std::make_unique<Impl>()) {}
BasicVerifier::~BasicVerifier() = default;

asio::awaitable<void> BasicVerifier::prepare(const std::shared_ptr<const Catalog>& catalog, const CompiledApi& api,
                                             const tunnel::v1::RequestHead& head) {
  auto creds = basic_to_check(*catalog, api, head);
  if (!creds || impl_->pending >= kMaxPending) co_return;
  ++impl_->pending;
  struct Done {
    std::size_t& n;
    ~Done() { --n; }
  } done{impl_->pending};
  // Named, not a temporary of the co_await below: GCC 12 destroys such
  // temporaries twice, and this one holds a reference to the catalog.
  auto check = [keep = catalog, user = std::move(creds->first),
                password = std::move(creds->second)]() -> asio::awaitable<void> {
    keep->verify_basic(user, password);
    co_return;
  };
  co_await asio::co_spawn(impl_->pool, std::move(check), asio::use_awaitable);
}

}  // namespace postern::policy
