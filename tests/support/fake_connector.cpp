#include "support/fake_connector.hpp"

#include <chrono>
#include <stdexcept>

#include "support/files.hpp"

namespace postern::testing {

namespace tv1 = tunnel::v1;
using namespace std::chrono_literals;

FakeConnector::FakeConnector(const std::string& ca, const std::string& cert, const std::string& key,
                             std::uint16_t registration_port, const std::string& alias, const std::string& id) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = read_file(ca);
  o.pem_cert_chain = read_file(cert);
  o.pem_private_key = read_file(key);
  channel_ = grpc::CreateChannel("localhost:" + std::to_string(registration_port), grpc::SslCredentials(o));
  stub_ = tv1::Registration::NewStub(channel_);
  attach_ = stub_->Attach(&attach_ctx_);
  tv1::ConnectorMessage hello;
  hello.mutable_hello()->set_connector_id(id);
  hello.mutable_hello()->add_aliases(alias);
  hello.mutable_hello()->set_capacity(8);
  if (!attach_->Write(hello)) throw std::runtime_error("fake connector: cannot send hello");
  tv1::BrokerMessage welcome;
  if (!attach_->Read(&welcome) || !welcome.has_welcome()) {
    const auto st = attach_->Finish();
    throw std::runtime_error("fake connector: no welcome (" + st.error_message() + ")");
  }
  session_ = welcome.welcome().session_id();
  reader_ = std::thread([this] {
    tv1::BrokerMessage m;
    while (attach_->Read(&m)) {
    }
  });
  heartbeat_ = std::thread([this] {
    std::uint64_t seq = 0;
    std::unique_lock l(mu_);
    while (!stop_) {
      tv1::ConnectorMessage hb;
      hb.mutable_heartbeat()->set_seq(++seq);
      if (!attach_->Write(hb)) break;
      cv_.wait_for(l, 300ms);
    }
  });
}

FakeConnector::~FakeConnector() {
  {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  heartbeat_.join();
  attach_ctx_.TryCancel();
  reader_.join();
  attach_->Finish();
}

bool FakeConnector::send(const tv1::ConnectorMessage& m) {
  std::lock_guard l(mu_);
  return attach_->Write(m);
}

std::unique_ptr<FakeLane> FakeConnector::open(const tv1::LaneMessage& first) {
  auto l = std::make_unique<FakeLane>();
  l->ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  l->stream = stub_->Lane(&l->ctx);
  l->stream->Write(first);
  return l;
}

std::unique_ptr<FakeLane> FakeConnector::lane(const std::string& session) {
  tv1::LaneMessage hello;
  hello.mutable_hello()->set_session_id(session.empty() ? session_ : session);
  hello.mutable_hello()->set_peer("fake-connector");
  return open(hello);
}

// ------------------------------------------------------------ FakeLane

bool FakeLane::read(tv1::Frame& out) {
  while (buffered_.empty()) {
    tv1::LaneMessage m;
    if (!stream->Read(&m)) return false;
    if (m.drain()) drain_seen_ = true;
    for (auto& f : *m.mutable_frames()) buffered_.push_back(std::move(f));
  }
  out = std::move(buffered_.front());
  buffered_.pop_front();
  return true;
}

bool FakeLane::read_for(std::uint64_t id, tv1::Frame& out) {
  while (read(out)) {
    if (out.exchange() == id) return true;
  }
  return false;
}

bool FakeLane::write(std::vector<tv1::Frame> frames) {
  tv1::LaneMessage m;
  for (auto& f : frames) *m.add_frames() = std::move(f);
  return stream->Write(m);
}

grpc::Status FakeLane::finish() {
  if (finished_) return grpc::Status::OK;
  finished_ = true;
  ctx.TryCancel();
  return stream->Finish();
}

std::unique_ptr<FakeLane> open_edge_lane(tv1::Relay::Stub& relay) {
  auto l = std::make_unique<FakeLane>();
  l->ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  l->stream = relay.Lane(&l->ctx);
  tv1::LaneMessage hello;
  hello.mutable_hello()->set_peer("fake-edge");
  l->stream->Write(hello);
  return l;
}

}  // namespace postern::testing
