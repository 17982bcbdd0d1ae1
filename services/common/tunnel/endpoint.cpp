#include "common/tunnel/endpoint.hpp"

namespace postern::tunnel {

// ------------------------------------------------------------ Exchange

Exchange::Exchange(std::shared_ptr<Endpoint> endpoint, std::uint64_t id, std::uint64_t receive_window)
    : endpoint_(std::move(endpoint)), id_(id), wake_(endpoint_->executor()),
      send_credit_(endpoint_->executor(), endpoint_->options_.credit_wait), window_(receive_window) {
  endpoint_->exchanges_[id_] = this;
  opened_at_write_ = endpoint_->lane_.writes_begun();
  if (endpoint_->over()) cut("the lane had ended");
}

Exchange::~Exchange() {
  if (!over_ && !cut_) endpoint_->lane_.send(error_frame(id_, tv1::ERROR_CODE_CLIENT_GONE, "the exchange was let go"));
  endpoint_->exchanges_.erase(id_);
}

void Exchange::send(tv1::Frame&& f) {
  if (over_ || cut_) return;
  f.set_exchange(id_);
  const auto kind = f.kind_case();
  if (kind == tv1::Frame::kError) {
    over_ = true;
  } else if (kind == tv1::Frame::kEnd || kind == tv1::Frame::kWsClose) {
    local_ended_ = true;
  }
  endpoint_->lane_.send(std::move(f));
  check_over();
}

void Exchange::deliver(tv1::Frame&& f) {
  switch (f.kind_case()) {
    case tv1::Frame::kCredit:
      send_credit_.grant(f.credit());
      return;
    case tv1::Frame::kError:
      over_ = true;
      send_credit_.release();  // a writer waiting for credit gives up now
      break;
    case tv1::Frame::kEnd:
    case tv1::Frame::kWsClose:
      remote_ended_ = true;
      check_over();
      break;
    default:
      break;
  }
  in_.push_back(std::move(f));
  wake_.set();
}

asio::awaitable<bool> Exchange::next(tv1::Frame& f) {
  if (in_next_ >= in_.size() && !window_open_ && !remote_ended_) open_window();
  while (in_next_ >= in_.size() && !cut_) {
    wake_.reset();
    co_await wake_.wait();
  }
  if (in_next_ >= in_.size()) co_return false;
  f = std::move(in_[in_next_++]);
  if (in_next_ == in_.size()) {
    in_.clear();
    in_next_ = 0;
  }
  co_return true;
}

bool Exchange::may_have_left() const { return endpoint_->lane_.writes_begun() > opened_at_write_; }

void Exchange::consumed(std::size_t n) {
  const std::uint64_t g = window_.consumed(n);
  if (g > 0 && !over_ && !cut_ && !remote_ended_) endpoint_->lane_.send(credit_frame(id_, g));
}

void Exchange::open_window() {
  if (window_open_) return;
  window_open_ = true;
  const std::uint64_t g = window_.opening_grant();
  if (g > 0 && !over_ && !cut_) endpoint_->lane_.send(credit_frame(id_, g));
}

void Exchange::abandon(tv1::ErrorCode code, std::string message) {
  if (!over_ && !cut_) send(error_frame(id_, code, std::move(message)));
  over_ = true;
  // Stopped here, but what was queued (the error) still goes.
  if (!cut_) {
    cut_ = true;
    cut_reason_ = "abandoned";
  }
  send_credit_.release();
  wake_.set();
}

void Exchange::cut(std::string reason) {
  if (cut_) return;
  cut_ = true;
  cut_reason_ = std::move(reason);
  endpoint_->lane_.drop(id_);
  wake_.set();
  send_credit_.release();
}

// ------------------------------------------------------------ Endpoint

Endpoint::Endpoint(asio::any_io_executor ex, std::unique_ptr<LaneIo> io, Options options, OnOpen on_open,
                   prometheus::Histogram* frames_per_message)
    : ex_(ex), lane_(ex, std::move(io), frames_per_message), options_(options), on_open_(std::move(on_open)),
      ended_(ex) {}

Endpoint::~Endpoint() = default;

asio::awaitable<void> Endpoint::run(std::optional<tv1::LaneMessage> first) {
  auto self = shared_from_this();
  co_await lane_.run(*this, std::move(first));
  // Every exchange still here learns at once; their owners see next()
  // return false and the credit released.
  for (auto& [_, x] : exchanges_) x->cut("the tunnel lane ended");
  ended_.set();
}

std::shared_ptr<Exchange> Endpoint::open(tv1::RequestHead head) {
  auto x = std::make_shared<Exchange>(shared_from_this(), next_id_++, options_.receive_window);
  tv1::Frame f;
  *f.mutable_request_head() = std::move(head);
  x->send(std::move(f));
  x->open_window();
  return x;
}

void Endpoint::on_frame(tv1::Frame&& f) {
  const auto it = exchanges_.find(f.exchange());
  if (it != exchanges_.end()) {
    it->second->deliver(std::move(f));
    return;
  }
  // A frame for an exchange that is over here is dropped; a head opens one.
  if (!f.has_request_head() || f.exchange() == 0) return;
  if (!on_open_) {
    refuse(f.exchange(), tv1::ERROR_CODE_BAD_REQUEST, "this side opens exchanges; it takes none");
    return;
  }
  if (exchanges_.size() >= options_.max_exchanges) {
    refuse(f.exchange(), tv1::ERROR_CODE_NO_CAPACITY,
           "runs " + std::to_string(options_.max_exchanges) + " exchanges already");
    return;
  }
  auto x = std::make_shared<Exchange>(shared_from_this(), f.exchange(), options_.receive_window);
  on_open_(std::move(x), std::move(*f.mutable_request_head()));
}

void Endpoint::refuse(std::uint64_t id, tv1::ErrorCode code, std::string message) {
  lane_.send(error_frame(id, code, std::move(message)));
}

}  // namespace postern::tunnel
