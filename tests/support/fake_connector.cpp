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

std::unique_ptr<FakeConnector::Pull> FakeConnector::open(const tv1::Frame& first) {
  auto p = std::make_unique<Pull>();
  p->ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  p->stream = stub_->Pull(&p->ctx);
  p->stream->Write(first);
  return p;
}

std::unique_ptr<FakeConnector::Pull> FakeConnector::park(const std::string& session) {
  tv1::Frame f;
  f.mutable_park()->set_session_id(session.empty() ? session_ : session);
  return open(f);
}

std::unique_ptr<FakeConnector::Pull> FakeConnector::sessions(const std::string& session) {
  auto p = std::make_unique<Pull>();
  p->ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  p->stream = stub_->Sessions(&p->ctx);
  tv1::Frame park;
  park.mutable_park()->set_session_id(session.empty() ? session_ : session);
  p->stream->Write(park);
  return p;
}

}  // namespace postern::testing
