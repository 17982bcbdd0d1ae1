#pragma once
// The gRPC <-> Asio coroutine bridge.
//
// Every async gRPC operation is started with a heap Tag that owns the
// completion handler. One Pump thread per CompletionQueue calls Next() and
// posts (ok) to the handler's executor, so coroutines never block on gRPC and
// gRPC never runs project code on its own threads.
//
//   bool ok = co_await grpc_bridge::op([&](void* tag) { stream->Read(&msg, tag); });
//
// Rules (the gRPC async API's, restated): at most one outstanding Read and
// one outstanding Write (Finish and WritesDone count as writes) per stream;
// cancellation is TryCancel() on the call's context, after which pending
// operations complete with ok == false.

#include <grpcpp/completion_queue.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/async_stream.h>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/asio.hpp"

namespace postern::grpc_bridge {

/// Completions the pump found ready together, to hand to their executors
/// in as few hand-offs as possible: one post per run of handlers bound to
/// the same executor, instead of one per completion.
class Ready {
 public:
  Ready() = default;
  Ready(const Ready&) = delete;
  Ready& operator=(const Ready&) = delete;

  template <class F>
  void add(const asio::any_io_executor& ex, F f) {
    if (groups_.empty() || groups_.back().ex != ex) groups_.push_back(Group{ex, {}});
    groups_.back().calls.push_back(std::make_unique<Call<F>>(std::move(f)));
    ++count_;
  }
  std::size_t size() const { return count_; }
  /// Posts every group to its executor, in order.
  void post_all();

 private:
  struct CallBase {
    virtual ~CallBase() = default;
    virtual void operator()() = 0;
  };
  template <class F>
  struct Call final : CallBase {
    explicit Call(F f) : f_(std::move(f)) {}
    void operator()() override { std::move(f_)(); }
    F f_;
  };
  struct Group {
    asio::any_io_executor ex;
    std::vector<std::unique_ptr<CallBase>> calls;
  };
  std::vector<Group> groups_;
  std::size_t count_ = 0;
};

/// What the pump finds on the queue. complete() runs on the pump thread,
/// exactly once, and must not block: it adds what is to run to `ready`.
class Tag {
 public:
  virtual void complete(bool ok, Ready& ready) = 0;

 protected:
  ~Tag() = default;
};

/// Owns one completion handler; hands it to the handler's executor.
template <class Handler>
class HandlerTag final : public Tag {
 public:
  explicit HandlerTag(Handler h)
      : handler_(std::move(h)), work_(asio::make_work_guard(asio::get_associated_executor(handler_))) {}

  void complete(bool ok, Ready& ready) override {
    ready.add(work_.get_executor(), [h = std::move(handler_), ok]() mutable { std::move(h)(ok); });
    delete this;
  }

 private:
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> work_;
};

/// Starts one gRPC operation with `init(tag)` and resumes the calling
/// coroutine, on its own executor, with the operation's `ok`.
template <class Init>
asio::awaitable<bool> op(Init init) {
  const bool ok = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(bool)>(
      [&init](auto handler) {
        auto* tag = new HandlerTag<decltype(handler)>(std::move(handler));
        init(static_cast<void*>(static_cast<Tag*>(tag)));
      },
      asio::use_awaitable);
  co_return ok;
}

/// Reads one message from a stream.
template <class Stream, class Message>
asio::awaitable<bool> read(Stream& stream, Message& message) {
  return op([&](void* tag) { stream.Read(&message, tag); });
}

/// Writes one message to a stream.
template <class Stream, class Message>
asio::awaitable<bool> write(Stream& stream, const Message& message) {
  return op([&](void* tag) { stream.Write(message, tag); });
}

/// Writes one message and half-closes the client side in one operation
/// (no WritesDone round trip after it).
template <class Stream, class Message>
asio::awaitable<bool> write_last(Stream& stream, const Message& message) {
  return op([&](void* tag) { stream.WriteLast(message, grpc::WriteOptions(), tag); });
}

/// Writes one message and finishes the server call with `status` in one
/// operation: the message and the trailers leave together.
template <class Stream, class Message>
asio::awaitable<bool> write_and_finish(Stream& stream, const Message& message, const grpc::Status& status) {
  return op([&](void* tag) { stream.WriteAndFinish(message, grpc::WriteOptions(), status, tag); });
}

/// A tag whose completion nobody awaits: it keeps `owned` (the call's
/// context and stream, say) alive until gRPC is done with the operation,
/// then frees it on the pump thread. Nothing is posted to any executor.
template <class Owned>
class DetachedTag final : public Tag {
 public:
  explicit DetachedTag(Owned owned) : owned_(std::move(owned)) {}
  void complete(bool, Ready&) override { delete this; }
  Owned& owned() { return owned_; }

 private:
  Owned owned_;
};

/// A tag that owns nothing and is never freed: for operations whose
/// completion, if there is one, nobody needs.
class IgnoredTag final : public Tag {
 public:
  void complete(bool, Ready&) override {}
};

/// Starts a client call without waiting for it: with the context's initial
/// metadata corked (`set_initial_metadata_corked(true)` before the call is
/// prepared), the headers leave with the first message, and a call that
/// failed to start fails that message's write. Saves a round trip through
/// the queue per call. A corked StartCall performs no operation and never
/// delivers its tag, so the tag must not be one that frees itself: a
/// DetachedTag here leaked 16 bytes per call.
template <class Stream>
void start_detached(Stream& stream) {
  static IgnoredTag ignored;
  stream.StartCall(static_cast<void*>(static_cast<Tag*>(&ignored)));
}

/// Finishes a client call whose outcome no longer matters (its response
/// was read to the end): `call` (a pointer-like owner of an object with
/// `stream` and `status` members, and of whatever the stream needs alive,
/// such as its ClientContext) lives until the Finish completes.
template <class CallPtr>
void finish_detached(CallPtr call) {
  auto* tag = new DetachedTag<CallPtr>(std::move(call));
  auto& c = *tag->owned();
  c.stream->Finish(&c.status, static_cast<void*>(static_cast<Tag*>(tag)));
}

/// Runs `on_done()` on `ex` once the server call behind `ctx` is over
/// (finished, or cancelled by the client). Call before RequestX, as gRPC
/// requires. Lets a handler that waits on something else notice a client
/// that went away.
template <class F>
void notify_when_done(grpc::ServerContext& ctx, asio::any_io_executor ex, F on_done) {
  auto handler = asio::bind_executor(ex, [f = std::move(on_done)](bool) mutable { f(); });
  auto* tag = new HandlerTag<decltype(handler)>(std::move(handler));
  ctx.AsyncNotifyWhenDone(static_cast<void*>(static_cast<Tag*>(tag)));
}

/// Drives one CompletionQueue on a thread of its own, and optionally side
/// queues from the same thread.
///
/// One polling thread per process matters: gRPC's epoll engine lets one
/// thread at a time wait in epoll and hands that role to another waiting
/// thread on every wake-up, a futex wake and a context switch each time.
/// A server whose calls were accepted on one queue but run on the main
/// queue (RequestX with the main queue as the call's queue) needs its own
/// queue only for notifications of new calls: a side queue, polled after
/// each batch and at least every kSideQueuePoll.
class Pump {
 public:
  /// Takes a queue (a ServerCompletionQueue from a ServerBuilder, or a plain
  /// one for client calls), and any side queues, and starts the pump thread.
  Pump(std::unique_ptr<grpc::CompletionQueue> cq, std::string name,
       std::vector<std::unique_ptr<grpc::CompletionQueue>> side = {});
  ~Pump();
  Pump(const Pump&) = delete;
  Pump& operator=(const Pump&) = delete;

  grpc::CompletionQueue* cq() const { return queues_.front().get(); }
  /// Shuts the queues down and joins the thread once every pending tag is
  /// delivered. Call after the server (if any) has shut down. Idempotent.
  void shutdown();

 private:
  void run();
  std::vector<std::unique_ptr<grpc::CompletionQueue>> queues_;
  std::thread thread_;
  bool shut_ = false;
};

}  // namespace postern::grpc_bridge
