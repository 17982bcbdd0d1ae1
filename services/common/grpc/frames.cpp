#include "common/grpc/frames.hpp"

namespace postern::grpc_bridge {

namespace tv1 = tunnel::v1;

namespace {

// Pre-order: a frame, then what it carries. Depth is bounded by protobuf's
// parse recursion limit.
void flatten(tv1::Frame&& f, std::vector<tv1::Frame>& out) {
  google::protobuf::RepeatedPtrField<tv1::Frame> rest;
  rest.Swap(f.mutable_then());
  out.push_back(std::move(f));
  for (auto& g : rest) flatten(std::move(g), out);
}

}  // namespace

void split_frames(tv1::Frame& f, std::vector<tv1::Frame>& out) {
  if (f.then_size() == 0) return;
  google::protobuf::RepeatedPtrField<tv1::Frame> rest;
  rest.Swap(f.mutable_then());
  for (auto& g : rest) flatten(std::move(g), out);
}

void FrameBatch::add(tv1::Frame&& f) {
  if (f.has_body()) bytes_ += f.body().data().size();
  if (f.has_ws_message()) bytes_ += f.ws_message().data().size();
  if (count_ == 0) {
    first_ = std::move(f);
  } else {
    *first_.add_then() = std::move(f);
  }
  ++count_;
}

void FrameBatch::clear() {
  first_.Clear();
  count_ = 0;
  bytes_ = 0;
}

}  // namespace postern::grpc_bridge
